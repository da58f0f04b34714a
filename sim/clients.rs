//! The client model: simulated clients and the gateway's part in serving
//! them. Each client sends one operation at a time to a random node: a
//! put or an append (through the log, half of them with an idempotency
//! key, retried at another node when the outcome is unknown), or a get,
//! served one of three ways: through the log, by read-index, or as a
//! plain read from the node's backend if the node may serve reads
//! (`gateway::readiness`, the production decision). After the faults
//! heal, a final reader reads every key through the log.

use super::report::FailureKind;
use super::scenario::Scenario;
use super::workload::SimOp;
use super::world::{Ev, Phase, World};
use crate::driver::Input;
use crate::gateway::readiness::{self, Fence, ReadLimits, ReadState};
use crate::paxos::ballot::{NodeId, Slot, Update, UpdateId};
use crate::paxos::command::ClientOutcome;
use crate::paxos::message::Role;
use crate::time::Time;
use std::time::Duration;

/// A read waiting for its read index to be applied.
type Parked = (Slot, UpdateId);

/// Attempts per keyed client operation, the first one included.
const ATTEMPTS_MAX: u32 = 3;

/// Applier attempts at one update before a node calls itself stuck (as
/// `server.rs`).
const STUCK_ATTEMPTS: u64 = 5;

/// How an operation is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Via {
    /// Proposed and applied like any update (updates, log-mode reads).
    Log,
    /// A `no-cache` read by read-index.
    ReadIndex,
    /// A plain read from the node's backend: not linearizable, and
    /// judged by the staleness bound instead.
    Plain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpStatus {
    Pending,
    Ok,
    Unknown,
    Refused,
}

pub(super) struct OpRecord {
    pub(super) client: u32,
    pub(super) node: NodeId,
    pub(super) id: UpdateId,
    pub(super) call: Time,
    pub(super) ret: Option<Time>,
    pub(super) input: SimOp,
    pub(super) output: Option<String>,
    pub(super) status: OpStatus,
    pub(super) via: Via,
    /// The client's idempotency key: with one, an unknown outcome is
    /// retried, perhaps at another node, and must still apply once.
    pub(super) key: Option<String>,
    pub(super) attempts: u32,
    /// Every attempt's request id, the latest last.
    pub(super) ids: Vec<UpdateId>,
}

#[derive(Default)]
pub(super) struct Clients {
    pub(super) ops: Vec<OpRecord>,
    token: u64,
    /// Keys the final reader has still to read.
    final_reads: Vec<u32>,
}

/// The gateway's read limits in the sim.
pub(super) fn read_limits(sc: &Scenario) -> ReadLimits {
    ReadLimits {
        max_lag_slots: sc.max_lag,
        lease: sc.lease,
        stuck_attempts: STUCK_ATTEMPTS,
    }
}

impl World {
    pub(super) fn client_next(&mut self, client: u32) {
        if self.phase != Phase::Faults {
            return;
        }
        let node = self.rng.below(self.nodes.len() as u64) as usize;
        let key = self.rng.below(self.sc.keys as u64) as u32;
        self.clients.token += 1;
        let token = format!("c{client}.{}", self.clients.token);
        let idempotency_key = self.rng.chance(0.5).then(|| format!("key-{token}"));
        let (op, via) = match self.rng.below(10) {
            0..=1 => (SimOp::Put { key, token }, Via::Log),
            2..=6 => (SimOp::Append { key, token }, Via::Log),
            _ => {
                let via = [Via::Log, Via::ReadIndex, Via::Plain][self.rng.below(3) as usize];
                (SimOp::Get { key }, via)
            }
        };
        let idempotency_key = idempotency_key.filter(|_| !matches!(op, SimOp::Get { .. }));
        if !self.nodes[node].up() {
            // Connection refused: nothing was sent; try again soon.
            let at = self.now + Duration::from_millis(20);
            self.push(at, Ev::ClientNext { client });
            return;
        }
        self.submit(client, node, op, via, idempotency_key);
    }

    fn submit(&mut self, client: u32, i: usize, input: SimOp, via: Via, key: Option<String>) {
        let op = self.clients.ops.len();
        self.clients.ops.push(OpRecord {
            client,
            node: self.nodes[i].id,
            id: UpdateId::default(),
            call: self.now,
            ret: None,
            input,
            output: None,
            status: OpStatus::Pending,
            via,
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
        let rec = &mut self.clients.ops[op];
        rec.node = node.id;
        rec.id = id;
        rec.ids.push(id);
        rec.attempts += 1;
        let attempt = rec.attempts;
        let input = match rec.via {
            Via::Plain => {
                self.plain_read(op, i);
                return;
            }
            Via::ReadIndex => Input::Read(id),
            Via::Log => Input::Submit(vec![Update {
                id,
                key: rec.key.as_ref().map(|k| bytes::Bytes::from(k.clone())),
                payload: rec.input.encode(),
            }]),
        };
        if node.fenced() {
            // The gateway of a disabled or diverged node takes nothing.
            if attempt == 1 {
                self.finish_op(op, OpStatus::Refused, None);
            } else {
                self.retry_or_give_up(op);
            }
            return;
        }
        node.waiting.insert(id, op);
        self.drive(i, Role::Proposer, |g, now, disk| {
            g.step(Role::Proposer, now, disk, input)
        });
        let deadline = self.now + self.sc.client_timeout;
        self.push(deadline, Ev::ClientDeadline { op, attempt });
    }

    /// The gateway's plain read: served at once from the local backend if
    /// the node may serve reads, else refused (503).
    fn plain_read(&mut self, op: usize, i: usize) {
        let now = self.local_now(i);
        let Some(g) = &self.nodes[i].group else {
            return;
        };
        let (p, l, a) = (g.proposer.role(), g.learner.role(), g.applier.role());
        let state = ReadState {
            applied: a.applied(),
            known_commit: l.known_commit().max(p.leader_commit()),
            lease_contact: p.lease_contact(),
            apply_attempts: a.stuck_attempts() as u64,
            fence: Fence::of(a.node_state()),
        };
        if readiness::check(&state, now, &self.limits).is_err() {
            self.report.plain_refused += 1;
            self.finish_op(op, OpStatus::Refused, None);
            return;
        }
        self.report.plain_reads += 1;
        let id = self.nodes[i].id;
        if let Err(e) = self
            .checks
            .stale
            .check(&self.checks.chosen, self.now, id, state.applied)
        {
            self.fail(FailureKind::Safety, "stale-plain-read", e);
        }
        let key = self.clients.ops[op].input.key();
        let value = self.nodes[i].backend.data().get(&key).cloned();
        self.finish_op(op, OpStatus::Ok, Some(value.unwrap_or_default()));
    }

    pub(super) fn client_deadline(&mut self, op: usize, attempt: u32) {
        let rec = &self.clients.ops[op];
        if rec.status == OpStatus::Pending && rec.attempts == attempt {
            let (node, id) = (rec.node.0 as usize, rec.id);
            self.nodes[node].waiting.remove(&id);
            self.retry_or_give_up(op);
        }
    }

    pub(super) fn client_retry(&mut self, op: usize) {
        if self.clients.ops[op].status != OpStatus::Pending {
            return;
        }
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up())
            .collect();
        if up.is_empty() {
            self.push(self.now + Duration::from_millis(50), Ev::ClientRetry { op });
        } else {
            let i = up[self.rng.below(up.len() as u64) as usize];
            self.attempt(op, i);
        }
    }

    /// The outcome of the latest attempt is unknown: a keyed operation is
    /// tried again (the key makes that safe), any other one is unknown.
    pub(super) fn retry_or_give_up(&mut self, op: usize) {
        let rec = &self.clients.ops[op];
        if rec.key.is_some() && rec.attempts < ATTEMPTS_MAX {
            let at = self.now + Duration::from_millis(self.rng.range(10, 100));
            self.push(at, Ev::ClientRetry { op });
        } else {
            self.finish_op(op, OpStatus::Unknown, None);
        }
    }

    fn finish_op(&mut self, op: usize, mut status: OpStatus, output: Option<String>) {
        let rec = &mut self.clients.ops[op];
        if rec.status != OpStatus::Pending {
            return;
        }
        let skewed = self
            .nodes
            .iter()
            .any(|n| n.id == rec.node && n.backend.skewed);
        if status == OpStatus::Ok && skewed && rec.via != Via::Log {
            // A read from a backend a fault made differ, before ordo
            // could know: wrong by the fault, not by ordo. Not judged.
            status = OpStatus::Refused;
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
                self.clients.final_reads.remove(0);
            }
            if !self.clients.final_reads.is_empty() {
                let at = self.now + Duration::from_millis(50);
                self.push(at, Ev::FinalRead);
            }
            return;
        }
        let think = Duration::from_millis(self.rng.range(0, 30));
        self.push(self.now + think, Ev::ClientNext { client });
    }

    /// After the faults healed: read every key once more through the log,
    /// one at a time. An acknowledged update that was lost shows here.
    pub(super) fn start_final_reads(&mut self) {
        self.clients.final_reads = (0..self.sc.keys).collect();
        self.final_read();
    }

    pub(super) fn final_reads_done(&self) -> bool {
        self.clients.final_reads.is_empty()
    }

    pub(super) fn final_read(&mut self) {
        let reader = self.sc.clients;
        let reading = self
            .clients
            .ops
            .iter()
            .any(|o| o.client == reader && o.status == OpStatus::Pending);
        if reading {
            return;
        }
        if let Some(&key) = self.clients.final_reads.first() {
            // Through a node that takes updates: a diverged one does not.
            let n = self.nodes.len();
            let first = key as usize % n;
            let node = (0..n)
                .map(|k| (first + k) % n)
                .find(|&i| !self.nodes[i].fenced())
                .unwrap_or(first);
            self.submit(reader, node, SimOp::Get { key }, Via::Log, None);
        }
    }

    /// Serve each read whose index the local applier has reached, from
    /// the local backend (as the gateway does).
    pub(super) fn serve_parked_reads(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(applied) = node.group.as_ref().map(|g| g.applier.role().applied()) else {
            return;
        };
        if node.parked.iter().all(|(index, _)| *index > applied) {
            return;
        }
        let (ready, waiting): (Vec<Parked>, Vec<Parked>) = node
            .parked
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        node.parked = waiting;
        for (_, id) in ready {
            let Some(op) = self.nodes[i].waiting.remove(&id) else {
                continue;
            };
            let key = self.clients.ops[op].input.key();
            let value = self.nodes[i].backend.data().get(&key).cloned();
            self.finish_op(op, OpStatus::Ok, Some(value.unwrap_or_default()));
        }
    }

    /// What the roles of node `i` told its gateway.
    pub(super) fn client_outcome(&mut self, i: usize, outcome: ClientOutcome) {
        match outcome {
            ClientOutcome::Answer { id, body, .. } => {
                if let Some(op) = self.nodes[i].waiting.remove(&id) {
                    let out = String::from_utf8_lossy(&body).into_owned();
                    self.finish_op(op, OpStatus::Ok, Some(out));
                }
            }
            ClientOutcome::Refused { ids, .. } => {
                for id in ids {
                    if let Some(op) = self.nodes[i].waiting.remove(&id) {
                        if self.clients.ops[op].attempts == 1 {
                            self.finish_op(op, OpStatus::Refused, None);
                        } else {
                            // An earlier attempt may still apply.
                            self.retry_or_give_up(op);
                        }
                    }
                }
            }
            ClientOutcome::ReadReady { id, index } => {
                self.nodes[i].parked.push((index, id));
                self.serve_parked_reads(i);
            }
            ClientOutcome::ReadRefused { id, .. } => {
                if let Some(op) = self.nodes[i].waiting.remove(&id) {
                    self.finish_op(op, OpStatus::Refused, None);
                }
            }
            ClientOutcome::Disagreed { id, .. } => {
                // Applied, but this node's answer is not the majority's:
                // the client gets a 502 and does not know what happened.
                if let Some(op) = self.nodes[i].waiting.remove(&id) {
                    self.finish_op(op, OpStatus::Unknown, None);
                }
            }
        }
    }
}
