//! The node model: one simulated ordo node, its disk, clock and backend,
//! and the sim's shell around the production driver. This file plays the
//! part `node::actors` plays in production, and nothing more: it carries
//! out the driver's outputs with simulated time, disk and network.

use super::clock::Clock;
use super::disk::SimDisk;
use super::report::FailureKind;
use super::scenario::{CrashPoint, Scenario};
use super::workload::{SimBackend, SimOp};
use super::world::{Ev, World};
use crate::apply::applier::ApplierConfig;
use crate::apply::resource::{Resources, Touches};
use crate::driver::group::Bugs;
use crate::driver::{Group, GroupConfig, Input, Output};
use crate::gateway::readiness::Fence;
use crate::paxos::acceptor::AcceptorBugs;
use crate::paxos::ballot::{Ballot, NodeId, Slot, Update, UpdateId};
use crate::paxos::learner::LearnerConfig;
use crate::paxos::membership::ALPHA;
use crate::paxos::message::{Message, Role};
use crate::paxos::proposer::{ProposerBugs, ProposerConfig};
use crate::rng::Rng;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) struct SimNode {
    pub(super) id: NodeId,
    /// Incarnation: bumped by every start and crash, so that events of a
    /// previous incarnation (timers, syncs, local messages) are ignored.
    pub(super) inc: u64,
    pub(super) group: Option<Group>,
    pub(super) disk: SimDisk,
    pub(super) rng: Rng,
    pub(super) clock: Clock,
    /// A crash armed by a fault, waiting for its moment.
    pub(super) crash_point: Option<CrashPoint>,
    /// The backend is a separate service: it survives the node's crashes.
    pub(super) backend: SimBackend,
    /// When the backend first answered an update differently (a
    /// `backend-diverge` fault).
    pub(super) skewed_since: Option<Time>,
    /// The gateway's request ids: a boot nonce and a sequence.
    pub(super) boot: u64,
    pub(super) seq: u64,
    /// Client calls in flight at this node (updates and reads), by id.
    pub(super) waiting: BTreeMap<UpdateId, usize>,
    /// Reads with a read index, waiting for the applier to reach it.
    pub(super) parked: Vec<(Slot, UpdateId)>,
    /// The latest ballot for which its proposer received a partial
    /// promise page (for `Report::leaders_paged`).
    pub(super) paged: Option<Ballot>,
    /// Applier calls sent to the backend and not executed yet.
    pub(super) backend_calls_out: u64,
}

impl SimNode {
    pub(super) fn new(id: NodeId, rng: Rng) -> SimNode {
        SimNode {
            id,
            inc: 0,
            group: None,
            disk: SimDisk::default(),
            rng,
            clock: Clock::default(),
            crash_point: None,
            backend: SimBackend::default(),
            skewed_since: None,
            boot: 0,
            seq: 0,
            waiting: BTreeMap::new(),
            parked: Vec::new(),
            paged: None,
            backend_calls_out: 0,
        }
    }

    pub(super) fn up(&self) -> bool {
        self.group.is_some()
    }

    /// Its node state forbids serving (disabled, diverged, needs a
    /// reseed): its gateway takes no reads and no updates.
    pub(super) fn fenced(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| Fence::of(g.applier.role().node_state()).is_some())
    }

    /// It calls its replica diverged.
    pub(super) fn diverged(&self) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.applier.role().node_state().diverged.is_some())
    }
}

/// The roles' settings in the sim: short timings, small windows and
/// buffers (so that paging, buffering and catch-up happen often), and the
/// scenario's deliberate bugs.
pub(super) fn group_config(sc: &Scenario) -> GroupConfig {
    let b = sc.bugs;
    GroupConfig {
        proposer: ProposerConfig {
            election_timeout: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            retransmit_after: Duration::from_millis(100),
            window: 8,
            wait_to_batch: sc.wait_to_batch,
            batch_updates_max: 16,
            takeover_after: Duration::from_millis(1000),
            membership_check: Duration::from_millis(500),
            member_stale_after: Duration::from_millis(1500),
            promote_lag_max: 200,
            ..ProposerConfig::default()
        },
        learner: LearnerConfig {
            fetch_delay: Duration::from_millis(30),
            fetch_timeout: Duration::from_millis(200),
            fetch_batch: 32,
            buffer_max: 64,
            // About as many slots as `buffer_max` holds, or fewer when
            // batches are full: both bounds are met in the runs.
            buffer_bytes_max: 2048,
            retain_slots: sc.log_retain,
            // The deliberate bug: a change governs the very next slot, so
            // a leader proposing ahead of its log cannot know the voters.
            config_delay: if b.reconfig_at_once { 1 } else { ALPHA },
            bug_reclaim_before_sync: b.reclaim_before_sync,
            ..LearnerConfig::default()
        },
        applier: ApplierConfig {
            dedupe_window_slots: 1000.min(sc.log_retain),
            // Small, so that the id bound moves the window in nearly
            // every run and the sim checks that every node decides alike.
            // (Copies come within a few slots here: at 1 id, 448 seeds of
            // 3,000 applied an update twice; at 32, none of 20,000.)
            dedupe_window_ids: 32,
            client_key_window_slots: 1000,
            bug_ignore_client_keys: b.ignore_idempotency_keys,
            answer_after_agreement: sc.answer_agreed,
            bug_ignore_digests: b.ignore_digests,
            bug_digest_names_node: b.digest_names_node,
            resources: match sc.apply_keyed {
                Some(_) => Resources::custom(|u: &Update| match SimOp::decode(&u.payload) {
                    Some(op) => Touches::Paths(vec![format!("/{}/", op.key())]),
                    None => Touches::Everything,
                }),
                None => Resources::sequential(),
            },
            concurrency: sc.apply_keyed.unwrap_or(1),
            bug_ignore_resource_order: b.ignore_resource_order,
            ..ApplierConfig::default()
        },
        promise_bytes_max: sc.promise_bytes,
        new_cluster: true,
        name: "svc".into(),
        bugs: Bugs {
            proposer: ProposerBugs {
                skip_phase1: b.skip_phase1,
                reads_skip_confirm: b.stale_reads,
                reads_skip_round: b.read_index_without_round,
                round_not_persisted: b.round_not_persisted,
                prepare_before_sync: b.prepare_before_sync,
                lease_unconfirmed: b.lease_without_quorum,
                lease_beyond_knowledge: b.lease_beyond_knowledge,
                read_index_chosen_only: b.read_index_chosen_only,
            },
            acceptor: AcceptorBugs {
                forget_promise: b.forget_promise,
                promise_before_sync: b.promise_before_sync,
                vote_after_amnesia: b.vote_after_amnesia,
            },
        },
    }
}

impl World {
    pub(super) fn local_now(&self, i: usize) -> Time {
        self.nodes[i].clock.local(self.now)
    }

    /// Recover node `i` from its disk, as `node::start_group` does.
    pub(super) fn start_node(&mut self, i: usize) {
        let now = self.local_now(i);
        let members = self.members.clone();
        let node = &mut self.nodes[i];
        // Only the first start of a node may start a new cluster: a later
        // one that finds its disk empty (wiped) must rebuild.
        let mut cfg = self.cfg.clone();
        cfg.new_cluster = node.inc == 0;
        node.inc += 1;
        node.boot = node.rng.next_u64();
        node.seq = 0;
        let id = node.id;
        let whole = super::invariants::durability::log_is_whole(id, &node.disk);
        let group = Group::recover(id, members, &cfg, now, &mut node.disk, &mut node.rng);
        let mut group = match group {
            Ok(g) => g,
            Err(e) => panic!("sim node {id} cannot start: {e}"),
        };
        let starts = group.start();
        let recovered = self.checks.durable.check_recovered(id, &group);
        self.nodes[i].group = Some(group);
        self.trace(|| format!("start n{i}"));
        if let Err(e) = recovered.and(whole) {
            self.fail(FailureKind::Safety, "durability", e);
        }
        self.after_step(i, false);
        for (role, out) in starts {
            self.execute(i, role, out);
        }
    }

    /// Power loss at node `i`: its roles and whatever they held are gone,
    /// its disk keeps what was synced and a random prefix of the rest.
    pub(super) fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.group.take().is_none() {
            return;
        }
        node.inc += 1;
        node.disk.crash(&mut self.rng);
        node.parked.clear();
        node.crash_point = None;
        let waiting: Vec<usize> = std::mem::take(&mut node.waiting).into_values().collect();
        for op in waiting {
            // The client's connection dropped: the outcome is unknown.
            self.retry_or_give_up(op);
        }
        self.trace(|| format!("crash n{i}"));
    }

    /// Node `i` loses its whole disk (a crash, then an empty `data_dir`).
    pub(super) fn wipe(&mut self, i: usize) {
        self.crash(i);
        let node = &mut self.nodes[i];
        node.disk.wipe();
        let id = node.id;
        self.checks.durable.forget(id);
        self.trace(|| format!("wipe n{i}"));
    }

    /// Call node `i`'s driver of `role`, then carry out what it asked.
    pub(super) fn drive(
        &mut self,
        i: usize,
        role: Role,
        f: impl FnOnce(&mut Group, Time, &mut SimDisk) -> Vec<Output>,
    ) {
        let now = self.local_now(i);
        let node = &mut self.nodes[i];
        let Some(group) = node.group.as_mut() else {
            return;
        };
        let was_leader = group.proposer.role().is_leader();
        let out = f(group, now, &mut node.disk);
        self.after_step(i, was_leader);
        self.execute(i, role, out);
    }

    /// What observers note after every handler: leadership changes, the
    /// applier's journal, and reads that may now be served.
    fn after_step(&mut self, i: usize, was_leader: bool) {
        let node = &mut self.nodes[i];
        let Some(group) = node.group.as_mut() else {
            return;
        };
        if !was_leader && group.proposer.role().is_leader() {
            self.report.leader_changes += 1;
            let ballot = group.proposer.role().leader_ballot();
            if ballot.is_some() && node.paged == ballot {
                self.report.leaders_paged += 1;
            }
        }
        let id = node.id;
        let fresh = std::mem::take(&mut group.applier.role_mut().journal);
        self.checks.applied.record(id, fresh);
        self.serve_parked_reads(i);
    }

    /// Carry out the outputs of node `i`'s driver of `role`, in order.
    /// A crash on the way drops the rest: the node is gone.
    pub(super) fn execute(&mut self, i: usize, role: Role, out: Vec<Output>) {
        let inc = self.nodes[i].inc;
        let node_id = self.nodes[i].id;
        for o in out {
            if self.nodes[i].inc != inc {
                return;
            }
            match o {
                Output::Send { to, role: r, msg } => {
                    // A change of the active set can be waited for by
                    // itself (`crash-after-send leader change`).
                    let kind = match &msg {
                        Message::Accept {
                            value: crate::paxos::ballot::Value::Config(_),
                            ..
                        } => "change",
                        m => m.kind(),
                    };
                    self.transmit(node_id, to, r, msg);
                    if self.nodes[i].crash_point == Some(CrashPoint::AfterSend(kind)) {
                        self.crash(i);
                    }
                }
                Output::Flush => self.push(
                    self.now,
                    Ev::Flush {
                        node: node_id,
                        inc,
                        role,
                    },
                ),
                Output::Sync { mark } => {
                    if self.nodes[i].crash_point == Some(CrashPoint::BeforeSync) {
                        self.crash(i);
                        return;
                    }
                    self.report.syncs += 1;
                    let at = self.now + self.draw(self.sc.fsync);
                    let ev = Ev::SyncDone {
                        node: node_id,
                        inc,
                        role,
                        mark,
                    };
                    self.push(at, ev);
                }
                Output::Timer {
                    timer,
                    at,
                    generation,
                } => {
                    let global = self.nodes[i].clock.global(at);
                    let ev = Ev::Timer {
                        node: node_id,
                        inc,
                        role,
                        timer,
                        generation,
                    };
                    self.push(global, ev);
                }
                Output::Apply {
                    slot,
                    index,
                    update,
                } => {
                    let out = &mut self.nodes[i].backend_calls_out;
                    *out += 1;
                    self.report.apply_calls_max = self.report.apply_calls_max.max(*out);
                    let at = self.now + self.draw(self.sc.backend_delay);
                    let ev = Ev::Backend {
                        node: node_id,
                        inc,
                        slot,
                        index,
                        update,
                    };
                    self.push(at, ev);
                }
                Output::Client(outcome) => self.client_outcome(i, outcome),
            }
        }
    }

    /// Every timer node `i` has set, scheduled again after its clock
    /// changed (a jump, a new drift).
    pub(super) fn reschedule_timers(&mut self, i: usize) {
        let node = &self.nodes[i];
        let Some(group) = &node.group else {
            return;
        };
        let (id, inc, clock) = (node.id, node.inc, node.clock);
        for (role, timer, generation, at) in group.timers() {
            let ev = Ev::Timer {
                node: id,
                inc,
                role,
                timer,
                generation,
            };
            self.push(clock.global(at), ev);
        }
    }

    pub(super) fn deliver(
        &mut self,
        to: NodeId,
        role: Role,
        from: NodeId,
        msg: Message,
        local_inc: Option<u64>,
    ) {
        let i = to.0 as usize;
        if local_inc.is_some_and(|inc| inc != self.nodes[i].inc) {
            return;
        }
        if local_inc.is_none() && msg.is_local_only() {
            return;
        }
        if !self.nodes[i].up() {
            return;
        }
        match &msg {
            Message::Entries { entries, .. } => {
                self.report.fetched_entries += entries.len() as u64;
            }
            Message::Promise {
                ballot,
                next_page: Some(_),
                ..
            } if role == Role::Proposer => {
                self.report.partial_pages += 1;
                self.nodes[i].paged = Some(*ballot);
            }
            _ => {}
        }
        self.drive(i, role, |g, now, disk| {
            g.step(role, now, disk, Input::Message { from, msg })
        });
    }

    pub(super) fn sync_done(&mut self, i: usize, inc: u64, role: Role, mark: u64) {
        if self.nodes[i].inc != inc {
            return;
        }
        self.nodes[i].disk.sync_to(mark);
        if self.nodes[i].crash_point == Some(CrashPoint::AfterSync) {
            // Synced, but the replies it covers never leave.
            self.crash(i);
            return;
        }
        self.drive(i, role, |g, _, disk| g.synced(role, disk));
    }

    /// The backend executes the call whether or not the node that made
    /// it is still up; only the same incarnation hears the reply.
    pub(super) fn backend_call(
        &mut self,
        i: usize,
        inc: u64,
        slot: Slot,
        index: u32,
        update: Update,
    ) {
        let faults = self.backend_faults;
        let reply = self.nodes[i]
            .backend
            .execute(slot, index, &update, faults, &mut self.rng);
        let node = &mut self.nodes[i];
        node.backend_calls_out -= 1;
        if let Some(e) = node.backend.out_of_order.take() {
            self.fail(FailureKind::Safety, "same-key-order", e);
        }
        let node = &mut self.nodes[i];
        if node.backend.skewed_updates > 0 && node.skewed_since.is_none() {
            node.skewed_since = Some(self.now);
        }
        if self.nodes[i].inc == inc {
            self.drive(i, Role::Applier, |g, now, disk| {
                g.step(
                    Role::Applier,
                    now,
                    disk,
                    Input::BackendReply { slot, index, reply },
                )
            });
        }
    }
}
