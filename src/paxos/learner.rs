//! The learner: collects chosen values, keeps the contiguous log and the
//! commit index, and fills gaps by asking peers for the slots it missed.
//!
//! A slot is written to the log only once every slot below it is there,
//! so the log on disk is always a contiguous prefix and the commit index
//! is its last slot. Chosen values that arrive early wait in a bounded
//! buffer; beyond it they are dropped and fetched later.

use super::ballot::{NodeId, Slot, Value};
use super::command::{Ctx, Timer};
use super::message::{Message, Role};
use crate::paxos::state;
use std::collections::BTreeMap;
use std::time::Duration;

/// The learner's settings.
#[derive(Clone, Debug)]
pub struct LearnerConfig {
    /// Wait this long for a gap to fill by itself before fetching.
    pub fetch_delay: Duration,
    /// Ask another peer if a fetch is not answered within this.
    pub fetch_timeout: Duration,
    /// Entries per fetch reply at most.
    pub fetch_batch: u32,
    /// Payload bytes per fetch reply at most (one entry always fits).
    pub fetch_bytes_max: usize,
    /// Chosen slots held above the commit index at most.
    pub buffer_max: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            fetch_delay: Duration::from_millis(50),
            fetch_timeout: Duration::from_millis(500),
            fetch_batch: 256,
            fetch_bytes_max: 4 << 20,
            buffer_max: 4096,
        }
    }
}

/// One node's learner (see the module comment).
pub struct Learner {
    id: NodeId,
    peers: Vec<NodeId>,
    cfg: LearnerConfig,
    commit: Slot,
    buffer: BTreeMap<Slot, Value>,
    /// Highest slot known to be chosen (from commit hints, fetch replies,
    /// or decided values beyond the buffer).
    known: Slot,
    leader: Option<NodeId>,
    fetch_armed: bool,
    /// Where the last fetch went, so a retry asks someone else.
    last_target: Option<NodeId>,
    /// Messages dropped as stale, malformed or from non-members.
    pub dropped: u64,
}

impl Learner {
    /// Recover the commit index from the log and tell the node's other
    /// roles where it stands.
    pub fn recover(id: NodeId, nodes: &[NodeId], cfg: LearnerConfig, ctx: &mut Ctx<'_>) -> Learner {
        let commit = state::last_chosen_slot(&*ctx.kv);
        let l = Learner {
            id,
            peers: nodes.iter().copied().filter(|&n| n != id).collect(),
            cfg,
            commit,
            buffer: BTreeMap::new(),
            known: commit,
            leader: None,
            fetch_armed: false,
            last_target: None,
            dropped: 0,
        };
        l.announce(ctx);
        l
    }

    /// The commit index: every slot up to it is in the local log.
    pub fn commit(&self) -> Slot {
        self.commit
    }

    /// The highest slot this learner knows to be chosen anywhere.
    pub fn known_commit(&self) -> Slot {
        self.known.max(self.commit)
    }

    /// Chosen values, commit hints, fetches and their replies.
    pub fn on_message(&mut self, ctx: &mut Ctx<'_>, from: NodeId, msg: Message) {
        // Chosen values only count from members of the group: a stray or
        // misconfigured node must not reach the assertions below.
        if from != self.id && !self.peers.contains(&from) {
            self.dropped += 1;
            return;
        }
        match msg {
            Message::Decided { slot, value } => {
                self.learn(ctx, slot, value);
                self.after_learning(ctx);
            }
            Message::CommitHint { commit, leader } if from == self.id => {
                self.leader = Some(leader).filter(|&l| l != self.id);
                self.known = self.known.max(commit);
                self.after_learning(ctx);
            }
            Message::Fetch { from_slot, max } => self.serve_fetch(ctx, from, from_slot, max),
            Message::Entries { entries, commit } => {
                let before = self.commit;
                self.known = self.known.max(commit);
                for (slot, value) in entries {
                    self.learn(ctx, slot, value);
                }
                if self.commit > before && self.commit < self.known_commit() {
                    // Catching up: ask the same peer for the next batch now.
                    self.send_fetch(ctx, from);
                } else {
                    self.after_learning(ctx);
                }
            }
            _ => self.dropped += 1,
        }
    }

    /// The fetch timer: ask a peer for the slots still missing.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        if timer != Timer::Fetch {
            return;
        }
        self.fetch_armed = false;
        if !self.behind() {
            return;
        }
        let target = match self.leader {
            Some(l) if self.last_target != Some(l) => Some(l),
            _ if self.peers.is_empty() => None,
            _ => {
                let i = ctx.rng.below(self.peers.len() as u64) as usize;
                Some(self.peers[i])
            }
        };
        if let Some(t) = target {
            self.send_fetch(ctx, t);
        }
    }

    fn behind(&self) -> bool {
        self.commit < self.known_commit() || !self.buffer.is_empty()
    }

    fn send_fetch(&mut self, ctx: &mut Ctx<'_>, to: NodeId) {
        self.last_target = Some(to);
        let msg = Message::Fetch {
            from_slot: self.commit + 1,
            max: self.cfg.fetch_batch,
        };
        ctx.send(to, Role::Learner, msg);
        self.fetch_armed = true;
        ctx.set_timer(Timer::Fetch, ctx.now + self.cfg.fetch_timeout);
    }

    fn learn(&mut self, ctx: &mut Ctx<'_>, slot: Slot, value: Value) {
        if slot == 0 {
            self.dropped += 1;
            return;
        }
        if slot <= self.commit {
            let have = state::load_chosen(&*ctx.kv, slot);
            assert!(
                have.as_ref().is_none_or(|h| *h == value),
                "chosen value of slot {slot} changed: had {have:?}, now {value:?}"
            );
            return;
        }
        if slot > self.commit + self.cfg.buffer_max {
            self.known = self.known.max(slot);
            return;
        }
        if let Some(had) = self.buffer.get(&slot) {
            assert!(
                *had == value,
                "chosen value of slot {slot} changed: had {had:?}, now {value:?}"
            );
            return;
        }
        self.buffer.insert(slot, value);
        let before = self.commit;
        while let Some(v) = self.buffer.remove(&(self.commit + 1)) {
            self.commit += 1;
            state::store_chosen(ctx.kv, self.commit, &v);
        }
        if self.commit > before {
            self.announce(ctx);
        }
    }

    /// Tell the acceptor, proposer and applier the new commit index.
    fn announce(&self, ctx: &mut Ctx<'_>) {
        for role in [Role::Acceptor, Role::Proposer, Role::Applier] {
            let msg = Message::Committed {
                commit: self.commit,
            };
            ctx.send(self.id, role, msg);
        }
    }

    fn after_learning(&mut self, ctx: &mut Ctx<'_>) {
        if self.behind() && !self.fetch_armed {
            self.fetch_armed = true;
            self.last_target = None;
            ctx.set_timer(Timer::Fetch, ctx.now + self.cfg.fetch_delay);
        }
    }

    fn serve_fetch(&mut self, ctx: &mut Ctx<'_>, to: NodeId, from_slot: Slot, max: u32) {
        if from_slot == 0 {
            self.dropped += 1;
            return;
        }
        let mut entries = Vec::new();
        if from_slot <= self.commit {
            let limit = max.min(self.cfg.fetch_batch) as usize;
            let mut bytes = 0;
            for (slot, value) in state::load_chosen_range(&*ctx.kv, from_slot, limit) {
                if slot > self.commit {
                    break;
                }
                bytes += value.payload_bytes();
                if !entries.is_empty() && bytes > self.cfg.fetch_bytes_max {
                    break;
                }
                entries.push((slot, value));
            }
        }
        let msg = Message::Entries {
            entries,
            commit: self.commit,
        };
        ctx.send(to, Role::Learner, msg);
    }
}
