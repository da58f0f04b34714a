//! The seeded scheduler: one thread, one event queue, and the run's
//! budget. It owns the models (`node`, `network`, `clients`, `faults`)
//! and the checks (`invariants`), and runs until the cluster has
//! converged after the faults, or until the first check fails.
//!
//! Every node runs the production role code through the production
//! driver (`crate::driver`); the sim only plays the world around it.

use super::clients::Clients;
use super::invariants::Invariants;
use super::network::Network;
use super::node::SimNode;
use super::report::{Failure, FailureKind, Report};
use super::scenario::Scenario;
use super::workload::BackendFaults;
use crate::driver::GroupConfig;
use crate::gateway::readiness::ReadLimits;
use crate::paxos::ballot::{NodeId, Slot, Update};
use crate::paxos::command::Timer;
use crate::paxos::membership::Membership;
use crate::paxos::message::{Message, Role};
use crate::rng::Rng;
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Something that happens at a moment of global time.
#[derive(Debug)]
pub(super) enum Ev {
    Deliver {
        to: NodeId,
        role: Role,
        from: NodeId,
        msg: Message,
        /// Local messages die with the incarnation that sent them.
        local_inc: Option<u64>,
    },
    Timer {
        node: NodeId,
        inc: u64,
        role: Role,
        timer: Timer,
        generation: u64,
    },
    /// A driver's `Output::Flush`: runs after the events already queued
    /// for this moment, as actix runs it after the mailbox drains.
    Flush {
        node: NodeId,
        inc: u64,
        role: Role,
    },
    SyncDone {
        node: NodeId,
        inc: u64,
        role: Role,
        mark: u64,
    },
    Backend {
        node: NodeId,
        inc: u64,
        slot: Slot,
        index: u32,
        update: Update,
    },
    ClientNext {
        client: u32,
    },
    ClientDeadline {
        op: usize,
        attempt: u32,
    },
    ClientRetry {
        op: usize,
    },
    Fault(usize),
    EndOfFaults,
    Check,
    FinalRead,
}

impl Ev {
    fn tag(&self) -> u64 {
        match self {
            Ev::Deliver { .. } => 1,
            Ev::Timer { .. } => 2,
            Ev::SyncDone { .. } => 3,
            Ev::Backend { .. } => 4,
            Ev::ClientNext { .. } => 5,
            Ev::ClientDeadline { .. } => 6,
            Ev::Fault(_) => 7,
            Ev::EndOfFaults => 8,
            Ev::Check => 9,
            Ev::FinalRead => 10,
            Ev::ClientRetry { .. } => 11,
            Ev::Flush { .. } => 12,
        }
    }
}

/// The event queue: a heap of small keys `(at, seq, slot)` over a slab
/// of events, so the heap moves 24 bytes, never a message.
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(Time, u64, usize)>>,
    slab: Vec<Option<Ev>>,
    free: Vec<usize>,
}

impl Queue {
    fn push(&mut self, at: Time, seq: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                self.slab.len() - 1
            }
        };
        self.heap.push(Reverse((at, seq, slot)));
    }

    fn pop(&mut self) -> Option<(Time, Ev)> {
        let Reverse((at, _, slot)) = self.heap.pop()?;
        self.free.push(slot);
        self.slab[slot].take().map(|ev| (at, ev))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Faults,
    Settle,
    FinalReads,
    Done,
}

/// Which checks a run applies. `All` is every run's; `HistoryOnly`
/// switches off everything but the linearizability checker, to show that
/// it alone catches a broken protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    All,
    HistoryOnly,
}

/// The most events one run may take: a run that keeps going (a livelock,
/// a check that stopped scheduling itself) ends as a liveness failure.
pub const EVENTS_MAX: u64 = 3_000_000;

/// Longest the healed cluster may take to converge.
pub(super) const LIVENESS_LIMIT: Duration = Duration::from_secs(60);

const FNV_PRIME: u64 = 0x100_0000_01b3;

/// A message's kind as a number, for the trace hash.
fn msg_tag(msg: &Message) -> u64 {
    msg.kind()
        .bytes()
        .fold(0u64, |h, b| h.rotate_left(5) ^ b as u64)
}

pub struct World {
    pub(super) sc: Scenario,
    pub(super) now: Time,
    seq: u64,
    queue: Queue,
    pub(super) rng: Rng,
    pub(super) nodes: Vec<SimNode>,
    pub(super) members: Membership,
    pub(super) net: Network,
    pub(super) backend_faults: BackendFaults,
    pub(super) clients: Clients,
    pub(super) phase: Phase,
    pub(super) settle_deadline: Time,
    pub(super) checks: Invariants,
    pub(super) report: Report,
    tracing: bool,
    pub(super) cfg: GroupConfig,
    pub(super) limits: ReadLimits,
}

impl World {
    pub fn new(sc: Scenario, tracing: bool) -> World {
        World::with_checks(sc, tracing, Checks::All)
    }

    pub fn with_checks(sc: Scenario, tracing: bool, checks: Checks) -> World {
        let mut rng = Rng::new(sc.seed);
        let members = match sc.active {
            0 => Membership::all_voting(sc.nodes),
            n => Membership::with_backups(sc.nodes, n),
        };
        let nodes = (0..sc.nodes)
            .map(|i| SimNode::new(NodeId(i), rng.fork()))
            .collect();
        let cfg = super::node::group_config(&sc);
        let limits = super::clients::read_limits(&sc);
        World {
            now: Time::ZERO,
            seq: 0,
            queue: Queue::default(),
            rng,
            nodes,
            net: Network::new(&sc),
            backend_faults: BackendFaults {
                fail: sc.backend_fail,
                fail_after_apply: sc.backend_fail_after_apply,
            },
            clients: Clients::default(),
            phase: Phase::Faults,
            settle_deadline: Time::ZERO,
            checks: Invariants::new(checks, &sc, &cfg, &limits, &members),
            members,
            report: Report {
                trace_hash: 0xcbf2_9ce4_8422_2325,
                ..Report::default()
            },
            tracing,
            cfg,
            limits,
            sc,
        }
    }

    /// Run the scenario to the end and judge it.
    pub fn run(mut self) -> Report {
        for i in 0..self.nodes.len() {
            self.start_node(i);
        }
        for c in 0..self.sc.clients {
            let at = self.now + Duration::from_millis(self.rng.range(0, 50));
            self.push(at, Ev::ClientNext { client: c });
        }
        for i in 0..self.sc.timeline.len() {
            let at = Time::ZERO + self.sc.timeline[i].0;
            self.push(at, Ev::Fault(i));
        }
        let end = Time::ZERO + self.sc.run;
        self.push(end, Ev::EndOfFaults);
        let time_limit = end + LIVENESS_LIMIT * 2;
        while self.phase != Phase::Done && self.report.failure.is_none() {
            let Some((at, ev)) = self.queue.pop() else {
                self.fail(
                    FailureKind::Liveness,
                    "liveness",
                    "event queue ran dry".into(),
                );
                break;
            };
            if self.report.events >= EVENTS_MAX || at > time_limit {
                let msg = format!(
                    "run budget exhausted ({} events, sim time {at}): a livelock, or a check that never ends",
                    self.report.events
                );
                self.fail(FailureKind::Liveness, "budget", msg);
                break;
            }
            self.now = at;
            self.hash_event(at, &ev);
            self.report.events += 1;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(ev)));
            if let Err(panic) = step {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let msg = format!("at {}: {what}", self.now);
                self.fail(FailureKind::Assertion, "assertion", msg);
            }
        }
        self.report.sim_time = self.now;
        self.judge();
        self.report
    }

    /// The first failure ends the run (`run` stops at once). A check
    /// switched off by `Checks` is not a failure.
    pub(super) fn fail(&mut self, kind: FailureKind, check: &'static str, message: String) {
        if self.report.failure.is_none() && self.checks.enabled(check) {
            self.trace(|| format!("FAILED {check}: {message}"));
            self.report.failure = Some(Failure {
                kind,
                check,
                message,
            });
        }
    }

    /// A duration drawn uniformly from `range`.
    pub(super) fn draw(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        Duration::from_micros(self.rng.range(lo.as_micros() as u64, hi.as_micros() as u64))
    }

    pub(super) fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        let at = at.max(self.now);
        self.queue.push(at, self.seq, ev);
    }

    fn hash_event(&mut self, at: Time, ev: &Ev) {
        let mut h = self.report.trace_hash;
        let mut mix = |w: u64| {
            for b in w.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(FNV_PRIME);
            }
        };
        mix(at.as_micros());
        mix(ev.tag());
        match ev {
            Ev::Deliver {
                to,
                from,
                msg,
                role,
                ..
            } => {
                mix(to.0 as u64 | (from.0 as u64) << 16 | (*role as u64) << 32);
                mix(msg_tag(msg));
            }
            Ev::Timer {
                node, timer, role, ..
            } => mix(node.0 as u64 | (*timer as u64) << 16 | (*role as u64) << 32),
            Ev::Flush { node, role, .. } => mix(node.0 as u64 | (*role as u64) << 32),
            Ev::SyncDone {
                node, role, mark, ..
            } => {
                mix(node.0 as u64 | (*role as u64) << 32);
                mix(*mark);
            }
            Ev::Backend {
                node, slot, index, ..
            } => {
                mix(node.0 as u64 | (*index as u64) << 16);
                mix(*slot);
            }
            Ev::ClientNext { client } => mix(*client as u64),
            Ev::ClientDeadline { op, attempt } => mix(*op as u64 | (*attempt as u64) << 32),
            Ev::ClientRetry { op } => mix(*op as u64),
            Ev::Fault(i) => mix(*i as u64),
            Ev::EndOfFaults | Ev::Check | Ev::FinalRead => {}
        }
        self.report.trace_hash = h;
        if self.tracing {
            let mut line = match ev {
                Ev::Deliver { to, from, msg, .. } => format!("{at} {from}->{to} {msg:?}"),
                ev => format!("{at} {ev:?}"),
            };
            line.truncate(300);
            self.report.trace.push(line);
        }
    }

    pub(super) fn trace(&mut self, what: impl FnOnce() -> String) {
        if self.tracing {
            let line = format!("{} {}", self.now, what());
            self.report.trace.push(line);
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                role,
                from,
                msg,
                local_inc,
            } => self.deliver(to, role, from, msg, local_inc),
            Ev::Timer {
                node,
                inc,
                role,
                timer,
                generation,
            } => {
                let i = node.0 as usize;
                if self.nodes[i].inc == inc {
                    self.drive(i, role, |g, now, disk| {
                        g.fire(role, now, disk, timer, generation)
                    });
                }
            }
            Ev::Flush { node, inc, role } => {
                let i = node.0 as usize;
                if self.nodes[i].inc == inc {
                    self.drive(i, role, |g, _, disk| g.flush(role, disk));
                }
            }
            Ev::SyncDone {
                node,
                inc,
                role,
                mark,
            } => self.sync_done(node.0 as usize, inc, role, mark),
            Ev::Backend {
                node,
                inc,
                slot,
                index,
                update,
            } => self.backend_call(node.0 as usize, inc, slot, index, update),
            Ev::ClientNext { client } => self.client_next(client),
            Ev::ClientDeadline { op, attempt } => self.client_deadline(op, attempt),
            Ev::ClientRetry { op } => self.client_retry(op),
            Ev::Fault(k) => {
                let fault = self.sc.timeline[k].1.clone();
                self.apply_fault(fault);
            }
            Ev::EndOfFaults => self.end_of_faults(),
            Ev::Check => self.check_progress(),
            Ev::FinalRead => self.final_read(),
        }
    }
}
