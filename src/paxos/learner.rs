//! The learner: collects chosen values, keeps the contiguous log and the
//! commit index, and fills gaps by asking peers for the slots it missed.
//!
//! A slot is written to the log only once every slot below it is there,
//! so the log on disk is always a contiguous prefix and the commit index
//! is its last slot. Chosen values that arrive early wait in a bounded
//! buffer; beyond it they are dropped and fetched later.
//!
//! Compaction: the log drops slots that every node applied (the
//! applier's `AllApplied`, from the peers' digests), and slots more than
//! `retain_slots` below the commit index or beyond `retain_bytes`, but
//! never a slot this node has not applied, nor the applier's dedupe
//! window (`keep_applied` slots below the applied index), which it
//! rebuilds from the log after a restart. A fetch for dropped slots
//! is answered `Compacted`; a node that hears that from every peer can
//! no longer catch up from the log and asks its applier to fence it as
//! `needs-reseed`, until a reseed moves it past the gap.

use super::ballot::{Ballot, NodeId, Slot, Value};
use super::command::{Ctx, Timer};
use super::membership::{ALPHA, Eras, Membership};
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
    /// ...and their bytes (`state::log_cost`), beyond the next slot: a
    /// slot carries a batch of up to `batch_bytes_max`, so the slot bound
    /// alone allowed gigabytes. What does not fit is fetched once the log
    /// reaches it, as beyond `buffer_max`.
    pub buffer_bytes_max: u64,
    /// Slots of log kept below the commit index at least; older ones are
    /// dropped (compaction).
    pub retain_slots: u64,
    /// Bytes of log kept at most (`state::log_cost`); beyond, the oldest
    /// entries are dropped, down to nine tenths of it.
    pub retain_bytes: u64,
    /// Slots kept below the applied index at least (the applier's dedupe
    /// window, rebuilt from the log).
    pub keep_applied: u64,
    /// Slots between a change of the active set and its era: `ALPHA`.
    /// Only a deliberately broken node in the sim uses another.
    pub config_delay: Slot,
    /// Test-only breakage: have the store reclaim the log up to a
    /// compaction point before the point is durable.
    pub bug_reclaim_before_sync: bool,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            fetch_delay: Duration::from_millis(50),
            fetch_timeout: Duration::from_millis(500),
            fetch_batch: 256,
            fetch_bytes_max: 4 << 20,
            buffer_max: 4096,
            buffer_bytes_max: 32 << 20,
            retain_slots: 1_000_000,
            retain_bytes: 1 << 30,
            keep_applied: 100_000,
            config_delay: ALPHA,
            bug_reclaim_before_sync: false,
        }
    }
}

/// Slots read from the log at once to serve a fetch (see `serve_fetch`).
const FETCH_READ_SLOTS: usize = 16;

/// The votes a learner heard for one slot above its commit index.
///
/// A value is chosen once a majority of its slot's era voted for it at
/// one ballot; one proposer proposes one value per slot and ballot, so a
/// vote names its value by the ballot alone. Only this node's own vote
/// brings the value: a learner whose node did not vote waits for the
/// leader's `Decided`. Paxos also gives: once a value is chosen at a
/// ballot, every higher ballot proposes that value, so an own vote at a
/// ballot at least the chosen one holds the chosen value.
#[derive(Debug)]
struct Tally {
    /// This node's vote: the highest ballot it voted for and the value.
    own: Option<(Ballot, Value)>,
    /// The highest ballot heard voted for, and who voted for it.
    ballot: Ballot,
    voters: Vec<NodeId>,
}

/// One node's learner (see the module comment).
pub struct Learner {
    id: NodeId,
    peers: Vec<NodeId>,
    /// Every node of the group, this one included.
    nodes: Vec<NodeId>,
    /// The eras of the active set, as the log up to the commit index
    /// made them (`membership`).
    eras: Eras,
    cfg: LearnerConfig,
    commit: Slot,
    buffer: BTreeMap<Slot, Value>,
    /// `log_cost` of the values in `buffer`.
    buffered_bytes: u64,
    /// The votes heard for slots above the commit index (see `Tally`).
    tallies: BTreeMap<Slot, Tally>,
    /// Highest slot known to be chosen (from commit hints, fetch replies,
    /// or decided values beyond the buffer).
    known: Slot,
    leader: Option<NodeId>,
    fetch_armed: bool,
    /// Where the last fetch went, so a retry asks someone else.
    last_target: Option<NodeId>,
    /// Log entries up to this slot are dropped here.
    compacted: Slot,
    /// The bytes the log holds (see `LearnerConfig::retain_bytes`).
    log_bytes: u64,
    /// Peers that said they dropped the slots this node needs next.
    gone_at: std::collections::BTreeSet<NodeId>,
    /// Peers that have no more of the log than this node (behind too).
    no_further: std::collections::BTreeSet<NodeId>,
    /// This node was reported as needing a reseed from this slot.
    reseed_from: Option<Slot>,
    /// Messages dropped as stale, malformed or from non-members.
    pub dropped: u64,
}

impl Learner {
    /// Recover the commit index from the log and tell the node's other
    /// roles where it stands.
    pub fn recover(
        id: NodeId,
        members: &Membership,
        cfg: LearnerConfig,
        ctx: &mut Ctx<'_>,
    ) -> Learner {
        let commit = state::last_chosen_slot(&*ctx.kv);
        let nodes = &members.nodes;
        let l = Learner {
            id,
            peers: nodes.iter().copied().filter(|&n| n != id).collect(),
            nodes: nodes.clone(),
            eras: state::load_eras(&*ctx.kv).unwrap_or_else(|| Eras::genesis(&members.voters)),
            cfg,
            commit,
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
            tallies: BTreeMap::new(),
            known: commit,
            leader: None,
            fetch_armed: false,
            last_target: None,
            // (What a restart reads back of the point may be only in the
            // OS's page cache: the store reclaims nothing below it until
            // the next compaction's point is synced, which covers it.)
            compacted: state::load_u64(&*ctx.kv, state::Meta::Compacted),
            log_bytes: state::load_u64(&*ctx.kv, state::Meta::LogBytes),
            gone_at: std::collections::BTreeSet::new(),
            no_further: std::collections::BTreeSet::new(),
            reseed_from: None,
            dropped: 0,
        };
        l.announce(ctx);
        l
    }

    /// The commit index: every slot up to it is in the local log.
    pub fn commit(&self) -> Slot {
        self.commit
    }

    /// The compaction point: the log holds the slots after it.
    pub fn compacted(&self) -> Slot {
        self.compacted
    }

    /// What the log holds, counted against `retain_bytes`.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// The eras of the active set the log made.
    pub fn eras(&self) -> &Eras {
        &self.eras
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
            Message::Vote {
                ballot,
                slot,
                value,
            } if from == self.id => {
                self.on_vote(from, ballot, slot, Some(value));
                self.decide_by_votes(ctx, slot);
            }
            Message::Voted { ballot, slot } => {
                self.on_vote(from, ballot, slot, None);
                self.decide_by_votes(ctx, slot);
            }
            Message::Chosen { ballot, slot } if ballot.node == from => {
                self.on_chosen(ctx, ballot, slot);
                self.after_learning(ctx);
            }
            Message::CommitHint { commit, leader } if from == self.id => {
                self.leader = Some(leader).filter(|&l| l != self.id);
                self.known = self.known.max(commit);
                self.after_learning(ctx);
            }
            Message::Fetch { from_slot, max } => self.serve_fetch(ctx, from, from_slot, max),
            Message::Compacted { upto, commit } => self.on_compacted(ctx, from, upto, commit),
            Message::Reseeded { slot, eras } if from == self.id => {
                self.on_reseeded(ctx, slot, eras)
            }
            Message::Reclaim { upto } if from == self.id => state::drop_log_upto(ctx.kv, upto),
            Message::Entries { entries, commit } => {
                if entries.is_empty() && commit <= self.commit {
                    self.no_further.insert(from);
                    self.check_gone(ctx);
                }
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

    /// Note `from`'s vote for `ballot` in `slot` (with the value if it is
    /// this node's own). Kept only for slots this learner could buffer,
    /// and a peer's only where the era of the slot is known (up to the
    /// change window past the commit index) and the ballot is another
    /// node's.
    fn on_vote(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Option<Value>) {
        let reach = if value.is_some() {
            self.cfg.buffer_max
        } else {
            self.cfg.config_delay
        };
        if slot <= self.commit || slot > self.commit + reach || self.buffer.contains_key(&slot) {
            return;
        }
        if value.is_none() && ballot.node == self.id {
            return;
        }
        let t = self.tallies.entry(slot).or_insert(Tally {
            own: None,
            ballot: Ballot::ZERO,
            voters: Vec::new(),
        });
        if let Some(v) = value {
            if t.own.as_ref().is_none_or(|(b, _)| ballot >= *b) {
                t.own = Some((ballot, v));
            }
        }
        if ballot.node == self.id {
            // This node's proposer proposed it and tells this learner
            // itself, with the nodes that must hear from it: a learner
            // ahead of its own leader would leave them waiting. (Its own
            // vote's value is kept for that word, `Chosen`, but no vote
            // for its ballot is counted: with one voter, its own would
            // be a majority.)
            return;
        }
        if ballot > t.ballot {
            t.ballot = ballot;
            t.voters.clear();
        }
        if ballot == t.ballot && !t.voters.contains(&from) {
            t.voters.push(from);
        }
    }

    /// Learn `slot` if a majority of its era voted for one ballot and
    /// this node's own vote holds that ballot's value (see `Tally`).
    fn decide_by_votes(&mut self, ctx: &mut Ctx<'_>, slot: Slot) {
        if slot > self.commit + self.cfg.config_delay {
            // The era of the slot is not known yet.
            return;
        }
        let Some(t) = self.tallies.get(&slot) else {
            return;
        };
        let era = self.eras.at(slot);
        if era.count(&t.voters) < era.quorum() {
            return;
        }
        let Some((_, value)) = t.own.as_ref().filter(|(b, _)| *b >= t.ballot) else {
            return;
        };
        let value = value.clone();
        self.learn(ctx, slot, value);
        self.after_learning(ctx);
    }

    /// The leader says `ballot`'s value is chosen in `slot`: learn it
    /// from this node's own vote, or note the slot as chosen (and fetch
    /// it) if this node has no vote that holds it.
    fn on_chosen(&mut self, ctx: &mut Ctx<'_>, ballot: Ballot, slot: Slot) {
        if slot <= self.commit || self.buffer.contains_key(&slot) {
            // Known already (perhaps from the votes).
            return;
        }
        let own = self
            .tallies
            .get(&slot)
            .and_then(|t| t.own.as_ref())
            .filter(|(b, _)| *b >= ballot)
            .map(|(_, v)| v.clone());
        match own {
            Some(value) => self.learn(ctx, slot, value),
            None => self.known = self.known.max(slot),
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

    /// Peer `from` dropped the slots this node asked for.
    fn on_compacted(&mut self, ctx: &mut Ctx<'_>, from: NodeId, upto: Slot, commit: Slot) {
        self.known = self.known.max(commit);
        if upto <= self.commit {
            // It has what we need now (our commit moved meanwhile).
            self.after_learning(ctx);
            return;
        }
        self.gone_at.insert(from);
        let next = self
            .peers
            .iter()
            .copied()
            .find(|p| !self.gone_at.contains(p) && !self.no_further.contains(p));
        match next {
            Some(p) => self.send_fetch(ctx, p),
            None => self.check_gone(ctx),
        }
    }

    /// Whether no peer can send the next slot any more: some dropped it,
    /// the others have no more than this node. Then only a reseed helps.
    fn check_gone(&mut self, ctx: &mut Ctx<'_>) {
        let stuck = !self.gone_at.is_empty()
            && self
                .peers
                .iter()
                .all(|p| self.gone_at.contains(p) || self.no_further.contains(p));
        let from_slot = self.commit + 1;
        if stuck && self.reseed_from != Some(from_slot) {
            self.reseed_from = Some(from_slot);
            ctx.send(
                self.id,
                Role::Applier,
                Message::NeedsReseed { from: from_slot },
            );
        }
    }

    /// A reseed put the backend at `slot`: the log up to it is not
    /// needed; commit from there if the log was behind.
    fn on_reseeded(&mut self, ctx: &mut Ctx<'_>, slot: Slot, eras: Option<Eras>) {
        // The applier moves the point on disk to `slot` when its own view
        // of the commit index was behind it, though this log may reach
        // it: reads skip up to the point, so fetches below it are
        // answered `Compacted` (not entries that start after a gap).
        self.compacted = self
            .compacted
            .max(state::load_u64(&*ctx.kv, state::Meta::Compacted));
        if let Some(theirs) = eras.filter(|_| slot > self.commit) {
            let before = self.eras.latest().chosen_at;
            self.eras.adopt(&theirs, slot);
            if self.eras.latest().chosen_at != before {
                state::store_eras(ctx.kv, &self.eras);
                self.tell_eras(ctx);
            }
        }
        self.gone_at.clear();
        self.no_further.clear();
        self.reseed_from = None;
        if slot > self.commit {
            // The gap is behind us: slots up to `slot` count as dropped
            // here, and the store reclaims the ones this log held below
            // it once the point is durable.
            self.compacted = slot;
            state::store_u64(ctx.kv, state::Meta::Compacted, slot);
            self.reclaim_once_durable(ctx, slot);
            self.log_bytes = 0;
            self.commit = slot;
            self.buffer = self.buffer.split_off(&(slot + 1));
            self.buffered_bytes = self.buffer.values().map(state::log_cost).sum();
            self.commit_buffered(ctx);
            state::store_u64(ctx.kv, state::Meta::LogBytes, self.log_bytes);
            self.announce(ctx);
        }
        self.after_learning(ctx);
    }

    /// Drop log entries older than the bound (at most a batch per call).
    fn compact(&mut self, ctx: &mut Ctx<'_>) {
        const BATCH: u64 = 1024;
        let applied = state::load_u64(&*ctx.kv, state::Meta::Applied);
        let limit = applied.saturating_sub(self.cfg.keep_applied);
        // Older than the bound, or applied by every node already.
        let everywhere = state::load_u64(&*ctx.kv, state::Meta::AllApplied);
        let by_slots = self
            .commit
            .saturating_sub(self.cfg.retain_slots)
            .max(everywhere)
            .min(limit)
            .min(self.commit);
        let over_bytes = self.log_bytes > self.cfg.retain_bytes;
        // In steps of a tenth of the bound (at most a batch), not a slot
        // at a time.
        let step = BATCH.min(self.cfg.retain_slots / 10 + 1);
        let slots_due = by_slots >= self.compacted + step;
        if !over_bytes && !slots_due {
            return;
        }
        // Which slots go: those below the slot bound, then the oldest
        // while the log is over nine tenths of its byte bound.
        //
        // A step reads what it drops (for the byte count), so it stops
        // after `STEP_READ_BYTES` of it, and the next commit goes on:
        // 1024 slots of 50 updates are 15 MB, read on the node's thread
        // at once (with the log compacting under c=256 writes, a node
        // peaked at 96 MB RSS with whole steps, 75 MB with these).
        const PAGE: usize = 32;
        const STEP_READ_BYTES: u64 = 1 << 20;
        let floor = self.cfg.retain_bytes / 10 * 9;
        let mut bytes = self.log_bytes;
        let mut upto = self.compacted;
        let mut read = 0;
        'pages: while upto < self.compacted + BATCH && read < STEP_READ_BYTES {
            let page = state::load_chosen_range(&*ctx.kv, upto + 1, PAGE);
            let full = page.len() == PAGE;
            for (slot, value) in page {
                let cost = state::log_cost(&value);
                if slot > limit || (slot > by_slots && bytes <= floor) || read >= STEP_READ_BYTES {
                    break 'pages;
                }
                bytes = bytes.saturating_sub(cost);
                read += cost;
                upto = slot;
            }
            if !full {
                break;
            }
        }
        if upto == self.compacted {
            return;
        }
        // The point is all it takes: reads skip what is below it, and
        // the store reclaims the entries once it is durable.
        state::store_u64(ctx.kv, state::Meta::Compacted, upto);
        self.reclaim_once_durable(ctx, upto);
        self.compacted = upto;
        self.log_bytes = bytes;
        state::store_u64(ctx.kv, state::Meta::LogBytes, bytes);
    }

    /// Have the store reclaim the log up to the compaction point `upto`,
    /// just written, once a sync has made the point durable: a crash must
    /// not keep an older point without the entries it says the log
    /// holds. The message to itself waits for that sync, and asks for one
    /// on a node that writes no votes to wait for.
    fn reclaim_once_durable(&self, ctx: &mut Ctx<'_>, upto: Slot) {
        let msg = Message::Reclaim { upto };
        if self.cfg.bug_reclaim_before_sync {
            ctx.send(self.id, Role::Learner, msg);
        } else {
            ctx.send_durable(self.id, Role::Learner, msg);
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
        let cost = state::log_cost(&value);
        let full = slot > self.commit + 1 && self.buffered_bytes + cost > self.cfg.buffer_bytes_max;
        if slot > self.commit + self.cfg.buffer_max || full {
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
        self.buffered_bytes += cost;
        self.tallies.remove(&slot);
        let before = self.commit;
        self.commit_buffered(ctx);
        if self.commit > before {
            state::store_u64(ctx.kv, state::Meta::LogBytes, self.log_bytes);
            self.gone_at.clear();
            self.no_further.clear();
            self.announce(ctx);
            self.compact(ctx);
        }
    }

    /// Write the buffered values that continue the log; a change of the
    /// active set among them makes a new era, which the proposer and the
    /// applier hear of before the commit index that covers it.
    fn commit_buffered(&mut self, ctx: &mut Ctx<'_>) {
        let mut reconfigured = false;
        while let Some(v) = self.buffer.remove(&(self.commit + 1)) {
            self.buffered_bytes = self.buffered_bytes.saturating_sub(state::log_cost(&v));
            self.commit += 1;
            self.log_bytes += state::log_cost(&v);
            if let Value::Config(change) = &v {
                // A void change (`membership::Void`) stays in the log and
                // changes nothing. A valid one: its era first, so a crash
                // that keeps the entry keeps the era too (and an era
                // without its entry is dropped at recovery,
                // `state::load_eras`).
                let delay = self.cfg.config_delay;
                if self
                    .eras
                    .learn(self.commit, change, &self.nodes, delay)
                    .is_ok()
                {
                    state::store_eras(ctx.kv, &self.eras);
                    reconfigured = true;
                }
            }
            state::store_chosen(ctx.kv, self.commit, &v);
        }
        while let Some(t) = self.tallies.first_entry() {
            if *t.key() > self.commit {
                break;
            }
            t.remove();
        }
        if reconfigured {
            self.tell_eras(ctx);
        }
    }

    fn tell_eras(&self, ctx: &mut Ctx<'_>) {
        for role in [Role::Proposer, Role::Applier] {
            let eras = self.eras.clone();
            ctx.send(self.id, role, Message::Reconfigured { eras });
        }
    }

    /// Tell the acceptor, proposer and applier the new commit index.
    fn announce(&self, ctx: &mut Ctx<'_>) {
        // The applier first: its backend call is what an update's client
        // waits for next.
        for role in [Role::Applier, Role::Proposer, Role::Acceptor] {
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
        if from_slot <= self.compacted {
            let msg = Message::Compacted {
                upto: self.compacted,
                commit: self.commit,
            };
            ctx.send(to, Role::Learner, msg);
            return;
        }
        let mut entries = Vec::new();
        if from_slot <= self.commit {
            let limit = max.min(self.cfg.fetch_batch) as usize;
            let mut bytes = 0;
            let mut next = from_slot;
            // Read a few slots at a time: the byte bound must hold while
            // the log is read, not only in the reply. Slots carry batches
            // (up to 1 MiB each), and reading the whole `fetch_batch` at
            // once held hundreds of them in memory to send a few.
            'read: while entries.len() < limit && next <= self.commit {
                let want = (limit - entries.len()).min(FETCH_READ_SLOTS);
                let chunk = state::load_chosen_range(&*ctx.kv, next, want);
                let got = chunk.len();
                for (slot, value) in chunk {
                    if slot > self.commit {
                        break 'read;
                    }
                    bytes += value.payload_bytes();
                    if !entries.is_empty() && bytes > self.cfg.fetch_bytes_max {
                        break 'read;
                    }
                    next = slot + 1;
                    entries.push((slot, value));
                }
                if got < want {
                    break;
                }
            }
        }
        let msg = Message::Entries {
            entries,
            commit: self.commit,
        };
        ctx.send(to, Role::Learner, msg);
    }
}
