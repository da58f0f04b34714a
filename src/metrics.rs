//! Prometheus metrics (`GET /metrics`), through the `prometheus-client`
//! crate: what a node serves, what its Paxos groups do, its disk, its
//! peers. `docs/operations.md#metrics` lists them with suggested alerts.
//!
//! Three kinds of source:
//! - request counters and latency histograms, fed by the gateway;
//! - per group counters and histograms (`GroupCounters`), fed by the
//!   actors through the group's `GroupStatus`;
//! - levels read at scrape time (indexes, lag, state, leadership, peer
//!   connections, the mesh's counters), copied from what the node already
//!   publishes, so nothing on the hot path changes for them.
//!
//! Every series carries the `node` label; group series carry `service`.

use crate::gateway::readiness::{self, ReadLimits};
use crate::mesh::{MeshStats, Refusal};
use crate::node::status::GroupStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// What a client request was.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Kind {
    /// A plain read, served locally.
    Read,
    /// A `Cache-Control: no-cache` read (linearizable).
    FreshRead,
    /// Anything else: ordered through the log.
    Update,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::FreshRead => "fresh_read",
            Kind::Update => "update",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    kind: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    service: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrameLabels {
    outcome: &'static str,
}

/// Every state a node reports for a service (`/_ordo/status` `state`).
pub const STATES: [&str; 7] = [
    "serving",
    "catching-up",
    "no-quorum",
    "stuck",
    "disabled",
    "needs-reseed",
    "diverged",
];

const REFUSALS: [Refusal; 12] = [
    Refusal::UnknownCa,
    Refusal::Handshake,
    Refusal::Timeout,
    Refusal::UnknownName,
    Refusal::NameMismatch,
    Refusal::ClusterMismatch,
    Refusal::SelfConnection,
    Refusal::BadHello,
    Refusal::Protocol,
    Refusal::Evicted,
    Refusal::Unpinned,
    Refusal::Source,
];

fn seconds_buckets() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// What one group's actors count, kept in its `GroupStatus`.
#[derive(Clone, Debug)]
pub struct GroupCounters {
    /// Values this node proposed as leader (batches, no-ops, changes).
    pub values_proposed: Counter,
    /// Client updates in the values it proposed.
    pub updates_proposed: Counter,
    /// Updates per proposed value.
    pub batch_updates: Histogram,
    /// Elections this node started.
    pub campaigns: Counter,
    /// Times the leader this node knows changed.
    pub leader_changes: Counter,
    /// Group-commit syncs of the log (fsync).
    pub fsync_seconds: Histogram,
    /// Updates applied to the backend, and duplicates skipped.
    pub updates_applied: Counter,
    pub duplicates_skipped: Counter,
}

impl Default for GroupCounters {
    fn default() -> Self {
        GroupCounters {
            values_proposed: Counter::default(),
            updates_proposed: Counter::default(),
            batch_updates: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            campaigns: Counter::default(),
            leader_changes: Counter::default(),
            fsync_seconds: seconds_buckets(),
            updates_applied: Counter::default(),
            duplicates_skipped: Counter::default(),
        }
    }
}

/// One service as the metrics see it.
pub struct ServiceSource {
    pub name: String,
    pub status: Arc<GroupStatus>,
}

/// Where the mesh's numbers come from at scrape time.
pub trait MeshSource: Send + Sync {
    fn stats(&self) -> MeshStats;
    /// (peer, incoming up, outgoing up).
    fn peers(&self) -> Vec<(String, bool, bool)>;
}

impl MeshSource for crate::mesh::MeshHandle {
    fn stats(&self) -> MeshStats {
        crate::mesh::MeshHandle::stats(self)
    }
    fn peers(&self) -> Vec<(String, bool, bool)> {
        crate::mesh::MeshHandle::peers(self)
    }
}

/// A node's metrics.
pub struct NodeMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<KindLabels, Histogram>,
    commit: Family<ServiceLabels, Gauge>,
    known_commit: Family<ServiceLabels, Gauge>,
    applied: Family<ServiceLabels, Gauge>,
    lag: Family<ServiceLabels, Gauge>,
    log_compacted: Family<ServiceLabels, Gauge>,
    log_bytes: Family<ServiceLabels, Gauge>,
    is_leader: Family<ServiceLabels, Gauge>,
    state: Family<StateLabels, Gauge>,
    waiting: Family<ServiceLabels, Gauge>,
    peer_up: Family<PeerLabels, Gauge>,
    refusals: Family<ReasonLabels, Counter>,
    frames: Family<FrameLabels, Counter>,
    updates_in_flight: Gauge,
    services: Vec<ServiceSource>,
    mesh: Option<Box<dyn MeshSource>>,
    read_limits: ReadLimits,
    /// One scrape at a time: `catch_up` reads then adds, and two scrapes
    /// at once would both add the same difference.
    scraping: std::sync::Mutex<()>,
}

impl NodeMetrics {
    pub fn new(
        node: &str,
        services: Vec<ServiceSource>,
        mesh: Option<Box<dyn MeshSource>>,
        read_limits: ReadLimits,
    ) -> NodeMetrics {
        let mut registry = Registry::with_prefix_and_labels(
            "ordo",
            [("node".into(), node.to_string().into())].into_iter(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests answered, by service, kind and status",
            requests.clone(),
        );
        let request_seconds =
            Family::<KindLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        registry.register(
            "request_seconds",
            "Time to answer a client request, by service and kind",
            request_seconds.clone(),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str| {
            let f = Family::<ServiceLabels, Gauge>::default();
            r.register(name, help, f.clone());
            f
        };
        let commit = gauge(&mut registry, "commit_index", "This node's commit index");
        let known_commit = gauge(
            &mut registry,
            "known_commit_index",
            "The highest commit index this node has heard of",
        );
        let applied = gauge(
            &mut registry,
            "applied_index",
            "The last slot applied to this node's backend",
        );
        let lag = gauge(
            &mut registry,
            "lag_slots",
            "Known chosen slots not applied here yet (catch-up progress)",
        );
        let log_compacted = gauge(
            &mut registry,
            "log_compacted_slot",
            "Log entries up to this slot were dropped here (compaction)",
        );
        let log_bytes = gauge(
            &mut registry,
            "log_bytes",
            "What the log holds, as log_retain_bytes counts it (payloads, plus 32 a slot)",
        );
        let is_leader = gauge(
            &mut registry,
            "is_leader",
            "1 if this node leads the service",
        );
        let waiting = gauge(
            &mut registry,
            "waiting_requests",
            "Client requests waiting for their update to be applied here",
        );
        let state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "state",
            "1 for the state this node is in for the service (serving, catching-up, no-quorum, \
             stuck, disabled, needs-reseed, diverged), 0 for the others",
            state.clone(),
        );
        let peer_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_connected",
            "1 if the connection with the peer in this direction is up",
            peer_up.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "peer_refusals",
            "Peer connections refused (incoming) or given up (outgoing), by reason",
            refusals.clone(),
        );
        let frames = Family::<FrameLabels, Counter>::default();
        registry.register(
            "peer_frames",
            "Peer frames sent, received and dropped",
            frames.clone(),
        );
        let updates_in_flight = Gauge::default();
        registry.register(
            "updates_in_flight",
            "Updates taken by this node and not answered yet",
            updates_in_flight.clone(),
        );
        for s in &services {
            let c = &s.status.counters;
            let sub = registry.sub_registry_with_label(("service".into(), s.name.clone().into()));
            let counters = [
                (
                    "values_proposed",
                    "Values proposed by this node as leader",
                    &c.values_proposed,
                ),
                (
                    "updates_proposed",
                    "Client updates in the values this node proposed",
                    &c.updates_proposed,
                ),
                ("elections", "Elections this node started", &c.campaigns),
                (
                    "leader_changes",
                    "Times the leader this node knows changed",
                    &c.leader_changes,
                ),
                (
                    "updates_applied",
                    "Updates applied to this node's backend",
                    &c.updates_applied,
                ),
                (
                    "duplicates_skipped",
                    "Updates skipped as already applied (the same update chosen twice)",
                    &c.duplicates_skipped,
                ),
            ];
            for (name, help, counter) in counters {
                sub.register(name, help, counter.clone());
            }
            let histograms = [
                (
                    "batch_updates",
                    "Client updates per proposed value",
                    &c.batch_updates,
                ),
                (
                    "fsync_seconds",
                    "Group-commit syncs of the log",
                    &c.fsync_seconds,
                ),
            ];
            for (name, help, histogram) in histograms {
                sub.register(name, help, histogram.clone());
            }
        }
        NodeMetrics {
            registry,
            requests,
            request_seconds,
            commit,
            known_commit,
            applied,
            lag,
            log_compacted,
            log_bytes,
            is_leader,
            state,
            waiting,
            peer_up,
            refusals,
            frames,
            updates_in_flight,
            services,
            mesh,
            read_limits,
            scraping: std::sync::Mutex::new(()),
        }
    }

    /// One answered client request.
    pub fn request(&self, service: &str, kind: Kind, status: u16, took: Duration) {
        let service = service.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                service: service.clone(),
                kind: kind.as_str(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&KindLabels {
                service,
                kind: kind.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition of every metric now. `waiting(service)` and
    /// `inflight` are the gateway's own levels.
    pub fn render(&self, waiting: impl Fn(&str) -> usize, inflight: usize) -> String {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        let now = crate::node::now();
        for s in &self.services {
            let l = ServiceLabels {
                service: s.name.clone(),
            };
            let st = &s.status;
            let known = st.known_commit().max(st.commit());
            self.commit.get_or_create(&l).set(st.commit() as i64);
            self.known_commit.get_or_create(&l).set(known as i64);
            self.applied.get_or_create(&l).set(st.applied() as i64);
            self.lag
                .get_or_create(&l)
                .set(known.saturating_sub(st.applied()) as i64);
            let (compacted, log_bytes) = st.log();
            self.log_compacted.get_or_create(&l).set(compacted as i64);
            self.log_bytes.get_or_create(&l).set(log_bytes as i64);
            self.is_leader.get_or_create(&l).set(st.is_leader() as i64);
            self.waiting.get_or_create(&l).set(waiting(&s.name) as i64);
            let current = match readiness::check(&st.read_state(), now, &self.read_limits) {
                Ok(()) => "serving",
                Err(why) => why.state(),
            };
            for state in STATES {
                self.state
                    .get_or_create(&StateLabels {
                        service: s.name.clone(),
                        state,
                    })
                    .set((state == current) as i64);
            }
        }
        self.updates_in_flight.set(inflight as i64);
        if let Some(mesh) = &self.mesh {
            for (peer, incoming, outgoing) in mesh.peers() {
                for (direction, up) in [("in", incoming), ("out", outgoing)] {
                    self.peer_up
                        .get_or_create(&PeerLabels {
                            peer: peer.clone(),
                            direction,
                        })
                        .set(up as i64);
                }
            }
            let stats = mesh.stats();
            for r in REFUSALS {
                let c = self
                    .refusals
                    .get_or_create(&ReasonLabels { reason: r.as_str() });
                catch_up(&c, stats.refused(r));
            }
            for (outcome, v) in [
                ("sent", stats.frames_sent),
                ("received", stats.frames_received),
                ("dropped", stats.frames_dropped()),
            ] {
                catch_up(&self.frames.get_or_create(&FrameLabels { outcome }), v);
            }
        }
        let mut out = String::new();
        // Writing into a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Bring a counter up to a monotonic total counted elsewhere.
fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}
