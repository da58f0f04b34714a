//! The seeded scheduler: one thread, one event queue, simulated network,
//! clocks, disks and backends around the real role code.
//!
//! Every node runs the production `Proposer`, `Acceptor`, `Learner` and
//! `Applier`; this file only plays the part the actix actors play in
//! production: it routes messages, fires timers, syncs disks (holding
//! back replies until the sync that covers them) and calls backends.

use super::checker::{self, Budget, Operation, Verdict};
use super::disk::SimDisk;
use super::scenario::{Expect, Fault, Scenario, Target};
use super::workload::{BackendFaults, KvModel, SimBackend, SimOp};
use crate::apply::applier::{Applied, Applier, ApplierConfig};
use crate::paxos::acceptor::{Acceptor, AcceptorBugs, AcceptorConfig};
use crate::paxos::ballot::{NodeId, Slot, Update, UpdateId, Value};
use crate::paxos::command::{Command, Ctx, Timer};
use crate::paxos::learner::{Learner, LearnerConfig};
use crate::paxos::membership::Membership;
use crate::paxos::message::{Message, Role};
use crate::paxos::proposer::{Proposer, ProposerBugs, ProposerConfig};
use crate::rng::Rng;
use crate::storage::kv::Table;
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// How a run went wrong. Distinct so a runner can exit distinctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A safety property broke: linearizability, agreement, a lost
    /// acknowledged update, applied sequences that are not prefixes.
    Safety,
    /// The healed cluster did not converge in time.
    Liveness,
    /// An assertion inside the role code fired.
    Assertion,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// What one run produced.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Everything that went wrong, first first. A safety failure seen
    /// during the run does not stop it, so the end-of-run checks (the
    /// linearizability checker among them) still judge the history.
    pub failures: Vec<Failure>,
    /// The checker's verdict on the client history: `None` if it ran out
    /// of budget.
    pub linearizable: Option<bool>,
    /// FNV-1a over every event processed, in order: equal for equal runs.
    pub trace_hash: u64,
    pub events: u64,
    /// Client operations answered (ok), unknown, refused.
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_refused: u64,
    /// Chosen entries that learners received by fetching (catch-up).
    pub fetched_entries: u64,
    /// How often a node became leader.
    pub leader_changes: u64,
    /// Promise pages that said more follow (paging at work).
    pub partial_pages: u64,
    /// Leaderships won by a candidate that received a partial page.
    pub leaders_paged: u64,
    pub sim_time: Time,
    /// Optional human-readable trace (when asked for).
    pub trace: Vec<String>,
}

impl Report {
    pub fn failure(&self) -> Option<&Failure> {
        self.failures.first()
    }

    /// Whether the linearizability checker itself found a violation.
    pub fn history_violated(&self) -> bool {
        self.linearizable == Some(false)
    }
}

#[derive(Debug)]
enum Ev {
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
    SyncDone {
        node: NodeId,
        inc: u64,
        writes: usize,
        held: usize,
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
            Ev::ClientRetry { .. } => 11,
            Ev::Fault(_) => 7,
            Ev::EndOfFaults => 8,
            Ev::Check => 9,
            Ev::FinalRead => 10,
        }
    }
}

struct Queued {
    at: Time,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

struct Roles {
    proposer: Proposer,
    acceptor: Acceptor,
    learner: Learner,
    applier: Applier,
}

struct Node {
    id: NodeId,
    inc: u64,
    roles: Option<Roles>,
    disk: SimDisk,
    rng: Rng,
    clock_offset: u64,
    timers: BTreeMap<(Role, Timer), (u64, Time)>,
    held: Vec<(NodeId, Role, Message)>,
    syncing: bool,
    crash_after_sync: bool,
    /// Client calls in flight at this node (updates and reads), by id.
    waiting: BTreeMap<UpdateId, usize>,
    /// Reads with a read index, waiting for the applier to reach it.
    parked: Vec<(Slot, UpdateId)>,
    backend: SimBackend,
    boot: u64,
    seq: u64,
    /// Every update applied here, by slot (a re-application after a crash
    /// must match what was recorded).
    applied: BTreeMap<Slot, Vec<Applied>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpStatus {
    Pending,
    Ok,
    Unknown,
    Refused,
}

struct OpRecord {
    client: u32,
    node: NodeId,
    id: UpdateId,
    call: Time,
    ret: Option<Time>,
    input: SimOp,
    output: Option<String>,
    status: OpStatus,
    /// A read served by read-index: it is not in the log.
    read_index: bool,
    /// The client's idempotency key: with one, an unknown outcome is
    /// retried, perhaps at another node, and must still apply once.
    key: Option<String>,
    attempts: u32,
    /// Every attempt's request id, the latest last.
    ids: Vec<UpdateId>,
}

/// Attempts per keyed client operation, the first one included.
const ATTEMPTS_MAX: u32 = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Faults,
    Settle,
    FinalReads,
    Done,
}

pub struct World {
    sc: Scenario,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    rng: Rng,
    nodes: Vec<Node>,
    members: Membership,
    blocked: BTreeSet<(u16, u16)>,
    loss: f64,
    dup: f64,
    backend_faults: BackendFaults,
    ops: Vec<OpRecord>,
    token: u64,
    phase: Phase,
    settle_deadline: Time,
    final_reads: Vec<u32>,
    /// The first value seen decided per slot, across all nodes.
    chosen: BTreeMap<Slot, Value>,
    /// The acceptors' side of the same question, independent of what
    /// proposers claim: the value proposed per (slot, ballot), and who
    /// replied `Accepted` to it. A quorum of replies means chosen.
    votes: BTreeMap<(Slot, crate::paxos::ballot::Ballot), (Value, BTreeSet<NodeId>)>,
    /// Per node, the latest ballot for which its proposer received a
    /// partial promise page (for `Report::leaders_paged`).
    paged: BTreeMap<NodeId, crate::paxos::ballot::Ballot>,
    report: Report,
    tracing: bool,
    pcfg: ProposerConfig,
    lcfg: LearnerConfig,
    acfg: ApplierConfig,
}

const FNV_PRIME: u64 = 0x100_0000_01b3;

/// Longest the healed cluster may take to converge.
const LIVENESS_LIMIT: Duration = Duration::from_secs(60);

impl World {
    pub fn new(sc: Scenario, tracing: bool) -> World {
        let mut rng = Rng::new(sc.seed);
        let members = Membership::all_voting(sc.nodes);
        let nodes = (0..sc.nodes)
            .map(|i| Node {
                id: NodeId(i),
                inc: 0,
                roles: None,
                disk: SimDisk::default(),
                rng: rng.fork(),
                clock_offset: 0,
                timers: BTreeMap::new(),
                held: Vec::new(),
                syncing: false,
                crash_after_sync: false,
                waiting: BTreeMap::new(),
                parked: Vec::new(),
                backend: SimBackend::default(),
                boot: 0,
                seq: 0,
                applied: BTreeMap::new(),
            })
            .collect();
        let acfg = ApplierConfig {
            dedupe_window_slots: 1000,
            client_key_window_slots: 1000,
            bug_ignore_client_keys: sc.bugs.ignore_idempotency_keys,
            ..ApplierConfig::default()
        };
        World {
            now: Time::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes,
            members,
            blocked: BTreeSet::new(),
            loss: sc.loss,
            dup: sc.dup,
            backend_faults: BackendFaults {
                fail: sc.backend_fail,
                fail_after_apply: sc.backend_fail_after_apply,
            },
            ops: Vec::new(),
            token: 0,
            phase: Phase::Faults,
            settle_deadline: Time::ZERO,
            final_reads: Vec::new(),
            chosen: BTreeMap::new(),
            votes: BTreeMap::new(),
            paged: BTreeMap::new(),
            report: Report {
                trace_hash: 0xcbf2_9ce4_8422_2325,
                ..Report::default()
            },
            tracing,
            pcfg: ProposerConfig {
                election_timeout: Duration::from_millis(300),
                heartbeat_interval: Duration::from_millis(50),
                retransmit_after: Duration::from_millis(100),
                window: 8,
                batch_updates_max: 16,
                takeover_after: Duration::from_millis(1000),
                ..ProposerConfig::default()
            },
            lcfg: LearnerConfig {
                fetch_delay: Duration::from_millis(30),
                fetch_timeout: Duration::from_millis(200),
                fetch_batch: 32,
                buffer_max: 64,
                ..LearnerConfig::default()
            },
            acfg,
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
        while self.phase != Phase::Done && !self.stopped() {
            let Some(Reverse(q)) = self.queue.pop() else {
                self.fail(FailureKind::Liveness, "event queue ran dry".into());
                break;
            };
            self.now = q.at;
            self.hash_event(&q);
            self.report.events += 1;
            let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(q.ev)));
            if let Err(panic) = step {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                self.fail(FailureKind::Assertion, format!("at {}: {what}", self.now));
            }
        }
        self.report.sim_time = self.now;
        self.judge();
        self.report
    }

    /// An assertion or a liveness failure ends the run; a safety failure
    /// observed on the way does not.
    fn stopped(&self) -> bool {
        self.report
            .failures
            .iter()
            .any(|f| f.kind != FailureKind::Safety)
    }

    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        let at = at.max(self.now);
        self.queue.push(Reverse(Queued {
            at,
            seq: self.seq,
            ev,
        }));
    }

    fn hash_event(&mut self, q: &Queued) {
        let mut h = self.report.trace_hash;
        let mut mix = |w: u64| {
            for b in w.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(FNV_PRIME);
            }
        };
        mix(q.at.as_micros());
        mix(q.ev.tag());
        match &q.ev {
            Ev::Deliver {
                to,
                from,
                msg,
                role,
                ..
            } => {
                mix(to.0 as u64 | (from.0 as u64) << 16 | (*role as u64) << 32);
                msg.kind().bytes().for_each(|b| mix(b as u64));
            }
            Ev::Timer { node, timer, .. } => mix(node.0 as u64 | (*timer as u64) << 16),
            Ev::SyncDone { node, writes, .. } => mix(node.0 as u64 | (*writes as u64) << 16),
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
            let line = match &q.ev {
                Ev::Deliver { to, from, msg, .. } => format!("{} {from}->{to} {msg:?}", q.at),
                ev => format!("{} {ev:?}", q.at),
            };
            let mut line = line;
            line.truncate(300);
            self.report.trace.push(line);
        }
    }

    fn fail(&mut self, kind: FailureKind, message: String) {
        if self.report.failures.len() < 16 {
            self.report.failures.push(Failure { kind, message });
        }
    }

    fn trace(&mut self, what: impl FnOnce() -> String) {
        if self.tracing {
            let line = format!("{} {}", self.now, what());
            self.report.trace.push(line);
        }
    }

    fn local_now(&self, i: usize) -> Time {
        Time(self.now.as_micros() + self.nodes[i].clock_offset)
    }

    /// Call one role handler on node `i`, then execute what it asked for.
    fn with_roles(&mut self, i: usize, f: impl FnOnce(&mut Roles, &mut Ctx<'_>)) {
        let now = self.local_now(i);
        let node = &mut self.nodes[i];
        let Some(roles) = node.roles.as_mut() else {
            return;
        };
        let was_leader = roles.proposer.is_leader();
        let mut out = Vec::new();
        let mut ctx = Ctx {
            now,
            kv: &mut node.disk,
            rng: &mut node.rng,
            out: &mut out,
        };
        f(roles, &mut ctx);
        if !was_leader && roles.proposer.is_leader() {
            self.report.leader_changes += 1;
            if roles.proposer.leader_ballot() == self.paged.get(&node.id).copied() {
                self.report.leaders_paged += 1;
            }
        }
        let fresh: Vec<Applied> = roles.applier.journal.drain(..).collect();
        self.record_applied(i, fresh);
        self.execute(i, out);
        self.serve_parked_reads(i);
    }

    /// Serve each read whose index the local applier has reached, from
    /// the local backend (as the gateway will).
    fn serve_parked_reads(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(applied) = node.roles.as_ref().map(|r| r.applier.applied()) else {
            return;
        };
        if node.parked.iter().all(|(index, _)| *index > applied) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = node
            .parked
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        node.parked = waiting;
        for (_, id) in ready {
            let Some(op) = self.nodes[i].waiting.remove(&id) else {
                continue;
            };
            let key = self.ops[op].input.key();
            let value = self.nodes[i].backend.data().get(&key).cloned();
            self.finish_op(op, OpStatus::Ok, Some(value.unwrap_or_default()));
        }
    }

    fn start_node(&mut self, i: usize) {
        let now = self.local_now(i);
        let (pcfg, lcfg, acfg) = (self.pcfg.clone(), self.lcfg.clone(), self.acfg.clone());
        let members = self.members.clone();
        let bugs = self.sc.bugs;
        let promise_bytes = self.sc.promise_bytes;
        let node = &mut self.nodes[i];
        node.inc += 1;
        node.boot = node.rng.next_u64();
        node.seq = 0;
        node.timers.clear();
        let id = node.id;
        let mut out = Vec::new();
        let mut ctx = Ctx {
            now,
            kv: &mut node.disk,
            rng: &mut node.rng,
            out: &mut out,
        };
        let acceptor_cfg = AcceptorConfig {
            leader_lease: pcfg.election_timeout,
            promise_bytes_max: promise_bytes,
        };
        let acceptor = Acceptor::recover(
            id,
            &ctx,
            acceptor_cfg,
            AcceptorBugs {
                forget_promise: bugs.forget_promise,
            },
        );
        let learner = Learner::recover(id, &members.nodes, lcfg, &mut ctx);
        let proposer = Proposer::recover(
            id,
            members,
            pcfg,
            ProposerBugs {
                skip_phase1: bugs.skip_phase1,
                reads_skip_confirm: bugs.stale_reads,
            },
            &mut ctx,
        );
        let mut applier = Applier::recover(id, acfg, &mut ctx);
        let fresh: Vec<Applied> = applier.journal.drain(..).collect();
        node.roles = Some(Roles {
            proposer,
            acceptor,
            learner,
            applier,
        });
        self.record_applied(i, fresh);
        self.trace(|| format!("start n{i}"));
        self.execute(i, out);
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.roles.is_none() {
            return;
        }
        node.roles = None;
        node.inc += 1;
        node.disk.crash(&mut self.rng);
        node.held.clear();
        node.parked.clear();
        node.syncing = false;
        node.crash_after_sync = false;
        node.timers.clear();
        let waiting: Vec<usize> = std::mem::take(&mut node.waiting).into_values().collect();
        for op in waiting {
            // The client's connection dropped: the outcome is unknown.
            self.retry_or_give_up(op);
        }
        self.trace(|| format!("crash n{i}"));
    }

    fn execute(&mut self, i: usize, out: Vec<Command>) {
        for cmd in out {
            match cmd {
                Command::Send {
                    to,
                    role,
                    msg,
                    after_sync,
                } => {
                    match &msg {
                        Message::Decided { slot, value } => self.observe_decided(*slot, value),
                        Message::Accept {
                            ballot,
                            slot,
                            value,
                        } => self.observe_accept(*slot, *ballot, value),
                        _ => {}
                    }
                    if after_sync && self.nodes[i].disk.unsynced() > 0 {
                        self.nodes[i].held.push((to, role, msg));
                        self.start_sync(i);
                    } else {
                        self.transmit(NodeId(i as u16), to, role, msg);
                    }
                }
                Command::SetTimer { timer, at } => {
                    let role = match timer {
                        Timer::Election | Timer::Tick => Role::Proposer,
                        Timer::Fetch => Role::Learner,
                        Timer::ApplyRetry => Role::Applier,
                    };
                    let node = &mut self.nodes[i];
                    let generation = node.timers.get(&(role, timer)).map_or(1, |(g, _)| g + 1);
                    node.timers.insert((role, timer), (generation, at));
                    let (inc, offset) = (node.inc, node.clock_offset);
                    let global = Time(at.as_micros().saturating_sub(offset));
                    let ev = Ev::Timer {
                        node: NodeId(i as u16),
                        inc,
                        role,
                        timer,
                        generation,
                    };
                    self.push(global, ev);
                }
                Command::Apply {
                    slot,
                    index,
                    update,
                } => {
                    let (lo, hi) = self.sc.backend_delay;
                    let d = self.rng.range(lo.as_micros() as u64, hi.as_micros() as u64);
                    let inc = self.nodes[i].inc;
                    let ev = Ev::Backend {
                        node: NodeId(i as u16),
                        inc,
                        slot,
                        index,
                        update,
                    };
                    self.push(self.now + Duration::from_micros(d), ev);
                }
                Command::Answer { id, body, .. } => {
                    if let Some(op) = self.nodes[i].waiting.remove(&id) {
                        let out = String::from_utf8_lossy(&body).into_owned();
                        self.finish_op(op, OpStatus::Ok, Some(out));
                    }
                }
                Command::Refused { ids, .. } => {
                    for id in ids {
                        if let Some(op) = self.nodes[i].waiting.remove(&id) {
                            if self.ops[op].attempts == 1 {
                                self.finish_op(op, OpStatus::Refused, None);
                            } else {
                                // An earlier attempt may still apply.
                                self.retry_or_give_up(op);
                            }
                        }
                    }
                }
                Command::ReadReady { id, index } => self.nodes[i].parked.push((index, id)),
                Command::ReadRefused { id, .. } => {
                    if let Some(op) = self.nodes[i].waiting.remove(&id) {
                        self.finish_op(op, OpStatus::Refused, None);
                    }
                }
            }
        }
    }

    fn observe_decided(&mut self, slot: Slot, value: &Value) {
        match self.chosen.get(&slot) {
            Some(v) if v != value => {
                let msg = format!("two values chosen for slot {slot}: {v:?} and {value:?}");
                self.fail(FailureKind::Safety, msg);
            }
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value.clone());
            }
        }
    }

    fn observe_accept(&mut self, slot: Slot, ballot: crate::paxos::ballot::Ballot, value: &Value) {
        match self.votes.get(&(slot, ballot)) {
            Some((v, _)) if v != value => {
                let msg = format!("two values proposed for slot {slot} at ballot {ballot}");
                self.fail(FailureKind::Safety, msg);
            }
            Some(_) => {}
            None => {
                self.votes
                    .insert((slot, ballot), (value.clone(), BTreeSet::new()));
            }
        }
    }

    /// An acceptor's `Accepted` leaves (after its sync): count it.
    fn observe_vote(&mut self, slot: Slot, ballot: crate::paxos::ballot::Ballot, from: NodeId) {
        let quorum = self.members.quorum();
        let Some((value, voters)) = self.votes.get_mut(&(slot, ballot)) else {
            return;
        };
        if voters.insert(from) && voters.len() == quorum {
            let value = value.clone();
            self.observe_decided(slot, &value);
        }
    }

    fn start_sync(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.syncing {
            return;
        }
        node.syncing = true;
        let ev = Ev::SyncDone {
            node: node.id,
            inc: node.inc,
            writes: node.disk.unsynced(),
            held: node.held.len(),
        };
        let at = self.now + self.sc.fsync;
        self.push(at, ev);
    }

    fn connected(&self, from: NodeId, to: NodeId) -> bool {
        !self.blocked.contains(&(from.0, to.0))
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, role: Role, mut msg: Message) {
        // A vote counts once it leaves: after the sync that made it
        // durable. One held back by a crash before its sync never was.
        if let Message::Accepted { ballot, slot } = &msg {
            self.observe_vote(*slot, *ballot, from);
        }
        if from == to {
            let local_inc = Some(self.nodes[from.0 as usize].inc);
            let ev = Ev::Deliver {
                to,
                role,
                from,
                msg,
                local_inc,
            };
            self.push(self.now, ev);
            return;
        }
        if !self.connected(from, to) || self.rng.chance(self.loss) {
            return;
        }
        let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
        let (lo, hi) = (
            self.sc.delay.0.as_micros() as u64,
            self.sc.delay.1.as_micros() as u64,
        );
        for c in 0..copies {
            let d = Duration::from_micros(self.rng.range(lo, hi));
            let msg = if c + 1 == copies {
                std::mem::replace(&mut msg, Message::Committed { commit: 0 })
            } else {
                msg.clone()
            };
            let ev = Ev::Deliver {
                to,
                role,
                from,
                msg,
                local_inc: None,
            };
            self.push(self.now + d, ev);
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
            } => {
                let i = to.0 as usize;
                if local_inc.is_some_and(|inc| inc != self.nodes[i].inc) {
                    return;
                }
                if local_inc.is_none() && msg.is_local_only() {
                    return;
                }
                if let Message::Entries { entries, .. } = &msg {
                    if self.nodes[i].roles.is_some() {
                        self.report.fetched_entries += entries.len() as u64;
                    }
                }
                if let Message::Promise {
                    ballot,
                    next_page: Some(_),
                    ..
                } = &msg
                {
                    if role == Role::Proposer && self.nodes[i].roles.is_some() {
                        self.report.partial_pages += 1;
                        self.paged.insert(to, *ballot);
                    }
                }
                self.with_roles(i, |r, ctx| match role {
                    Role::Proposer => r.proposer.on_message(ctx, from, msg),
                    Role::Acceptor => r.acceptor.on_message(ctx, from, msg),
                    Role::Learner => r.learner.on_message(ctx, from, msg),
                    Role::Applier => r.applier.on_message(ctx, from, msg),
                });
            }
            Ev::Timer {
                node,
                inc,
                role,
                timer,
                generation,
            } => {
                let i = node.0 as usize;
                let n = &self.nodes[i];
                if n.inc != inc || n.timers.get(&(role, timer)).map(|t| t.0) != Some(generation) {
                    return;
                }
                self.with_roles(i, |r, ctx| match role {
                    Role::Proposer => r.proposer.on_timer(ctx, timer),
                    Role::Learner => r.learner.on_timer(ctx, timer),
                    Role::Applier => r.applier.on_timer(ctx, timer),
                    Role::Acceptor => {}
                });
            }
            Ev::SyncDone {
                node,
                inc,
                writes,
                held,
            } => self.sync_done(node.0 as usize, inc, writes, held),
            Ev::Backend {
                node,
                inc,
                slot,
                index,
                update,
            } => {
                let i = node.0 as usize;
                let faults = self.backend_faults;
                let reply =
                    self.nodes[i]
                        .backend
                        .execute(slot, index, &update, faults, &mut self.rng);
                if self.nodes[i].inc == inc {
                    self.with_roles(i, |r, ctx| {
                        r.applier.on_backend_reply(ctx, slot, index, reply)
                    });
                }
            }
            Ev::ClientNext { client } => self.client_next(client),
            Ev::ClientDeadline { op, attempt } => {
                let rec = &self.ops[op];
                if rec.status == OpStatus::Pending && rec.attempts == attempt {
                    let (node, id) = (rec.node.0 as usize, rec.id);
                    self.nodes[node].waiting.remove(&id);
                    self.retry_or_give_up(op);
                }
            }
            Ev::ClientRetry { op } => {
                if self.ops[op].status == OpStatus::Pending {
                    let up: Vec<usize> = (0..self.nodes.len())
                        .filter(|&i| self.nodes[i].roles.is_some())
                        .collect();
                    if up.is_empty() {
                        self.push(self.now + Duration::from_millis(50), Ev::ClientRetry { op });
                    } else {
                        let i = up[self.rng.below(up.len() as u64) as usize];
                        self.attempt(op, i);
                    }
                }
            }
            Ev::Fault(k) => {
                let fault = self.sc.timeline[k].1.clone();
                self.apply_fault(fault);
            }
            Ev::EndOfFaults => self.end_of_faults(),
            Ev::Check => self.check_progress(),
            Ev::FinalRead => self.final_read(),
        }
    }

    fn sync_done(&mut self, i: usize, inc: u64, writes: usize, held: usize) {
        if self.nodes[i].inc != inc {
            return;
        }
        let node = &mut self.nodes[i];
        node.disk.sync_prefix(writes);
        node.syncing = false;
        let released: Vec<_> = node.held.drain(..held.min(node.held.len())).collect();
        if node.crash_after_sync {
            // Synced, but the replies it covers never leave.
            self.crash(i);
            return;
        }
        for (to, role, msg) in released {
            self.transmit(NodeId(i as u16), to, role, msg);
        }
        if !self.nodes[i].held.is_empty() {
            self.start_sync(i);
        }
    }

    fn resolve(&mut self, t: Target) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].roles.is_some())
            .collect();
        let leader = up.iter().copied().find(|&i| {
            self.nodes[i]
                .roles
                .as_ref()
                .is_some_and(|r| r.proposer.is_leader())
        });
        match t {
            Target::Node(n) => Some(n as usize),
            Target::Leader => leader.or_else(|| up.first().copied()),
            Target::Follower => {
                let f: Vec<usize> = up.into_iter().filter(|&i| Some(i) != leader).collect();
                if f.is_empty() {
                    None
                } else {
                    Some(f[self.rng.below(f.len() as u64) as usize])
                }
            }
        }
    }

    fn apply_fault(&mut self, fault: Fault) {
        if self.phase != Phase::Faults {
            return;
        }
        self.trace(|| format!("fault {fault:?}"));
        let n = self.nodes.len() as u16;
        match fault {
            Fault::Crash(t) => {
                if let Some(i) = self.resolve(t) {
                    self.crash(i);
                }
            }
            Fault::CrashAfterSync(t) => {
                if let Some(i) = self.resolve(t) {
                    if self.nodes[i].roles.is_some() {
                        self.nodes[i].crash_after_sync = true;
                    }
                }
            }
            Fault::Restart(t) => {
                if let Some(i) = self.resolve(t) {
                    if self.nodes[i].roles.is_none() {
                        self.start_node(i);
                    }
                }
            }
            Fault::RestartAll => self.restart_all(),
            Fault::Partition(groups) => {
                for a in 0..groups.len() {
                    for b in 0..groups.len() {
                        if a != b {
                            for &x in &groups[a] {
                                for &y in &groups[b] {
                                    self.blocked.insert((x, y));
                                }
                            }
                        }
                    }
                }
            }
            Fault::Isolate(t) => {
                if let Some(i) = self.resolve(t) {
                    for o in 0..n {
                        if o != i as u16 {
                            self.blocked.insert((i as u16, o));
                            self.blocked.insert((o, i as u16));
                        }
                    }
                }
            }
            Fault::Cut { from, to } => {
                if let (Some(a), Some(b)) = (self.resolve(from), self.resolve(to)) {
                    if a != b {
                        self.blocked.insert((a as u16, b as u16));
                    }
                }
            }
            Fault::Heal => self.blocked.clear(),
            Fault::Loss(p) => self.loss = p,
            Fault::Dup(p) => self.dup = p,
            Fault::BackendFail(p) => self.backend_faults.fail = p,
            Fault::ClockJump(t, d) => {
                if let Some(i) = self.resolve(t) {
                    self.clock_jump(i, d);
                }
            }
        }
    }

    fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].roles.is_none() {
                self.start_node(i);
            }
        }
    }

    /// The node's monotonic clock leaps forward (a VM pause, a suspended
    /// process): every timer it set is now due sooner.
    fn clock_jump(&mut self, i: usize, d: Duration) {
        self.nodes[i].clock_offset += d.as_micros() as u64;
        let timers: Vec<((Role, Timer), Time)> = self.nodes[i]
            .timers
            .iter()
            .map(|(k, (_, at))| (*k, *at))
            .collect();
        for ((_, timer), at) in timers {
            self.execute(i, vec![Command::SetTimer { timer, at }]);
        }
    }

    fn end_of_faults(&mut self) {
        self.phase = Phase::Settle;
        self.blocked.clear();
        self.loss = 0.0;
        self.dup = 0.0;
        self.backend_faults = BackendFaults::default();
        for node in &mut self.nodes {
            node.crash_after_sync = false;
        }
        self.restart_all();
        self.settle_deadline = self.now + LIVENESS_LIMIT;
        self.push(self.now + Duration::from_millis(100), Ev::Check);
    }

    /// Whether every node applied everything chosen, and no client waits.
    fn converged(&self) -> Result<(), String> {
        if self.ops.iter().any(|o| o.status == OpStatus::Pending) {
            return Err("client operations still pending".into());
        }
        let top = self.chosen.keys().next_back().copied().unwrap_or(0);
        let mut lagging = Vec::new();
        for n in &self.nodes {
            let Some(r) = &n.roles else {
                lagging.push(format!("{} down", n.id));
                continue;
            };
            let (c, a) = (r.learner.commit(), r.applier.applied());
            if c < top || a < top {
                lagging.push(format!("{} commit {c} applied {a} of {top}", n.id));
            }
        }
        if !self
            .nodes
            .iter()
            .any(|n| n.roles.as_ref().is_some_and(|r| r.proposer.is_leader()))
        {
            lagging.push("no leader".into());
        }
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(lagging.join(", "))
        }
    }

    fn check_progress(&mut self) {
        match self.converged() {
            Ok(()) if self.phase == Phase::Settle => {
                // Read every key once more through the log: an
                // acknowledged update that was lost shows here.
                self.phase = Phase::FinalReads;
                self.final_reads = (0..self.sc.keys).collect();
                self.final_read();
            }
            Ok(()) if self.phase == Phase::FinalReads && self.final_reads.is_empty() => {
                self.phase = Phase::Done;
            }
            Ok(()) => {}
            Err(why) if self.now >= self.settle_deadline => {
                let msg = format!("cluster did not converge after faults healed: {why}");
                self.fail(FailureKind::Liveness, msg);
                return;
            }
            Err(_) => {}
        }
        self.push(self.now + Duration::from_millis(100), Ev::Check);
    }

    fn final_read(&mut self) {
        let reading = self
            .ops
            .iter()
            .any(|o| o.client == self.sc.clients && o.status == OpStatus::Pending);
        if reading {
            return;
        }
        if let Some(&key) = self.final_reads.first() {
            let node = key as usize % self.nodes.len();
            self.submit(self.sc.clients, node, SimOp::Get { key }, false, None);
        }
    }

    fn client_next(&mut self, client: u32) {
        if self.phase != Phase::Faults {
            return;
        }
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        let key = self.rng.below(self.sc.keys as u64) as u32;
        self.token += 1;
        let token = format!("c{client}.{}", self.token);
        let idempotency_key = self.rng.chance(0.5).then(|| format!("key-{token}"));
        let op = match self.rng.below(10) {
            0..=1 => SimOp::Put { key, token },
            2..=6 => SimOp::Append { key, token },
            _ => SimOp::Get { key },
        };
        let idempotency_key = idempotency_key.filter(|_| !matches!(op, SimOp::Get { .. }));
        // Half the reads go through the log, half by read-index.
        let by_read_index = matches!(op, SimOp::Get { .. }) && self.rng.chance(0.5);
        if self.nodes[node].roles.is_none() {
            // Connection refused: nothing was sent; try again soon.
            let at = self.now + Duration::from_millis(20);
            self.push(at, Ev::ClientNext { client });
            return;
        }
        self.submit(client, node, op, by_read_index, idempotency_key);
    }

    fn submit(
        &mut self,
        client: u32,
        i: usize,
        input: SimOp,
        by_read_index: bool,
        key: Option<String>,
    ) {
        let op = self.ops.len();
        self.ops.push(OpRecord {
            client,
            node: self.nodes[i].id,
            id: UpdateId::default(),
            call: self.now,
            ret: None,
            input,
            output: None,
            status: OpStatus::Pending,
            read_index: by_read_index,
            key,
            attempts: 0,
            ids: Vec::new(),
        });
        self.attempt(op, i);
    }

    /// Send operation `op` (again) through node `i`, as a new request.
    fn attempt(&mut self, op: usize, i: usize) {
        let node = &mut self.nodes[i];
        node.seq += 1;
        let id = UpdateId {
            origin: node.id,
            boot: node.boot,
            seq: node.seq,
        };
        node.waiting.insert(id, op);
        let rec = &mut self.ops[op];
        rec.node = node.id;
        rec.id = id;
        rec.ids.push(id);
        rec.attempts += 1;
        let attempt = rec.attempts;
        if rec.read_index {
            self.with_roles(i, |r, ctx| r.proposer.read(ctx, id));
        } else {
            let update = Update {
                id,
                key: rec.key.as_ref().map(|k| bytes::Bytes::from(k.clone())),
                payload: rec.input.encode(),
            };
            self.with_roles(i, |r, ctx| r.proposer.submit(ctx, vec![update]));
        }
        let deadline = self.now + self.sc.client_timeout;
        self.push(deadline, Ev::ClientDeadline { op, attempt });
    }

    /// The outcome of the latest attempt is unknown: a keyed operation is
    /// tried again (the key makes that safe), any other one is unknown.
    fn retry_or_give_up(&mut self, op: usize) {
        let rec = &self.ops[op];
        if rec.key.is_some() && rec.attempts < ATTEMPTS_MAX {
            let at = self.now + Duration::from_millis(self.rng.range(10, 100));
            self.push(at, Ev::ClientRetry { op });
        } else {
            self.finish_op(op, OpStatus::Unknown, None);
        }
    }

    fn finish_op(&mut self, op: usize, status: OpStatus, output: Option<String>) {
        let rec = &mut self.ops[op];
        if rec.status != OpStatus::Pending {
            return;
        }
        rec.status = status;
        match status {
            OpStatus::Ok => {
                rec.ret = Some(self.now);
                rec.output = output;
                self.report.ops_ok += 1;
            }
            OpStatus::Unknown => self.report.ops_unknown += 1,
            OpStatus::Refused => self.report.ops_refused += 1,
            OpStatus::Pending => unreachable!("finish_op to pending"),
        }
        let client = rec.client;
        if client == self.sc.clients {
            // The final reader: move on once this key was read.
            if status == OpStatus::Ok {
                self.final_reads.remove(0);
            }
            if !self.final_reads.is_empty() {
                let at = self.now + Duration::from_millis(50);
                self.push(at, Ev::FinalRead);
            }
            return;
        }
        let think = Duration::from_millis(self.rng.range(0, 30));
        self.push(self.now + think, Ev::ClientNext { client });
    }

    fn record_applied(&mut self, i: usize, fresh: Vec<Applied>) {
        for a in fresh {
            let slot = match a {
                Applied::Update { slot, .. } | Applied::Duplicate { slot, .. } => slot,
            };
            self.nodes[i].applied.entry(slot).or_default().push(a);
        }
    }

    /// The end-of-run checks. Each names the property it guards.
    fn judge(&mut self) {
        for e in self.sc.expect.clone() {
            let r = &self.report;
            match e {
                Expect::AnsweredAtLeast(n) if r.ops_ok < n => {
                    let msg = format!(
                        "expected at least {n} operations answered, got {}",
                        r.ops_ok
                    );
                    self.fail(FailureKind::Liveness, msg);
                }
                Expect::LeaderChangesAtMost(n) if r.leader_changes > n => {
                    let msg = format!(
                        "expected at most {n} leader changes, got {}",
                        r.leader_changes
                    );
                    self.fail(FailureKind::Liveness, msg);
                }
                _ => {}
            }
        }
        if let Err(e) = self.logs_agree() {
            self.fail(FailureKind::Safety, e);
        }
        if let Err(e) = self.applied_sequences_are_prefixes() {
            self.fail(FailureKind::Safety, e);
        }
        if self.phase == Phase::Done {
            // Only a converged cluster must have applied everything.
            if let Err(e) = self.updates_apply_exactly_once() {
                self.fail(FailureKind::Safety, e);
            }
        }
        let history: Vec<Operation<SimOp, String>> = self
            .ops
            .iter()
            .filter(|o| o.status != OpStatus::Refused)
            .map(|o| Operation {
                client: o.client as u64,
                call: o.call.as_micros(),
                ret: o.ret.map(|t| t.as_micros()),
                input: o.input.clone(),
                output: o.output.clone(),
            })
            .collect();
        let budget = Budget {
            max_steps: 2_000_000,
            deadline: None,
        };
        self.report.linearizable = match checker::check(&KvModel, &history, &budget) {
            Verdict::Ok => Some(true),
            Verdict::Unknown { .. } => None,
            Verdict::Violation(e) => {
                self.fail(
                    FailureKind::Safety,
                    format!("history is not linearizable:\n{e}"),
                );
                Some(false)
            }
        };
    }

    /// Agreement: every node's log holds the same value in every slot.
    fn logs_agree(&self) -> Result<(), String> {
        let mut first: BTreeMap<&[u8], (NodeId, &[u8])> = BTreeMap::new();
        for n in &self.nodes {
            for (k, v) in n.disk.table(Table::Log) {
                match first.get(k.as_slice()) {
                    Some((other, w)) if *w != v.as_slice() => {
                        return Err(format!(
                            "logs disagree: {} and {} hold different values at key {k:?}",
                            other, n.id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        first.insert(k, (n.id, v));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every node applied the same updates in the same order; a slot
    /// applied twice (after a crash) was applied the same way.
    fn applied_sequences_are_prefixes(&self) -> Result<(), String> {
        let mut reference: BTreeMap<Slot, (NodeId, Vec<UpdateId>)> = BTreeMap::new();
        for n in &self.nodes {
            for (slot, entries) in &n.applied {
                let ids: Vec<UpdateId> = entries
                    .iter()
                    .filter_map(|a| match a {
                        Applied::Update { id, .. } => Some(*id),
                        Applied::Duplicate { .. } => None,
                    })
                    .collect();
                let once = dedup_reapplied(&ids);
                match reference.get(slot) {
                    Some((other, r)) if *r != once => {
                        return Err(format!(
                            "slot {slot}: {} applied {r:?} but {} applied {once:?}",
                            other, n.id
                        ));
                    }
                    Some(_) => {}
                    None => {
                        reference.insert(*slot, (n.id, once));
                    }
                }
            }
        }
        Ok(())
    }

    /// No acknowledged update lost, none applied twice: on every node an
    /// acknowledged update was applied in exactly one slot, whichever of
    /// its attempts (retries with the same idempotency key) got there;
    /// an update with an unknown outcome in at most one.
    fn updates_apply_exactly_once(&self) -> Result<(), String> {
        let mut slots_of: BTreeMap<UpdateId, BTreeSet<Slot>> = BTreeMap::new();
        for n in &self.nodes {
            slots_of.clear();
            for a in n.applied.values().flatten() {
                if let Applied::Update { slot, id, .. } = a {
                    slots_of.entry(*id).or_default().insert(*slot);
                }
            }
            for o in self.ops.iter().filter(|o| !o.read_index) {
                if o.status == OpStatus::Refused && slots_of.contains_key(&o.id) {
                    return Err(format!(
                        "update {:?} ({:?}) was refused (503, never applied) but applied on {}",
                        o.id, o.input, n.id
                    ));
                }
                let slots: BTreeSet<Slot> = o
                    .ids
                    .iter()
                    .filter_map(|id| slots_of.get(id))
                    .flatten()
                    .copied()
                    .collect();
                if slots.len() > 1 {
                    return Err(format!(
                        "update {:?} (key {:?}) was applied in slots {slots:?} on {}",
                        o.input, o.key, n.id
                    ));
                }
                if o.status == OpStatus::Ok && slots.is_empty() {
                    return Err(format!(
                        "acknowledged update {:?} ({:?}) was never applied on {}",
                        o.id, o.input, n.id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A slot's updates as applied once: a re-application after a crash
/// repeats a prefix of the slot's updates from its start.
fn dedup_reapplied(ids: &[UpdateId]) -> Vec<UpdateId> {
    let mut out: Vec<UpdateId> = Vec::new();
    for id in ids {
        if !out.contains(id) {
            out.push(*id);
        }
    }
    out
}
