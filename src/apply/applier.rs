//! The applier: applies chosen slots to the local backend in slot order,
//! and never skips one.
//!
//! In slot order means: an update runs only once every earlier update it
//! does not commute with is done. A service that declared no resource
//! key rule commutes nothing, so its updates run one at a time, strictly
//! in order. One that did (`resource_key`, see [`super::resource`]) has
//! its updates to unrelated resources run side by side, up to
//! `concurrency` calls at once, while the applied index stays the
//! contiguous prefix of slots whose every update is done: reads and
//! read-index waits use it unchanged. [`super::order`] keeps the order.
//!
//! A retryable failure (no answer, 408, 429, 500, 502, 503, 504) is
//! retried with capped exponential backoff, forever: skipping would make
//! this backend differ from every other. Any other response is that
//! update's deterministic result. The applied index is written after each
//! slot but not synced on its own: after a crash the slots after it may
//! be applied again (with resource keys, any of them may have been), which the `Idempotency-Key` (cluster, service, slot, index)
//! makes harmless.
//!
//! Duplicate updates (the same `UpdateId` chosen twice, which forwarding
//! retries can cause) are skipped. That decision is replicated state: it
//! depends only on the log (ids seen in the last `dedupe_window_slots`
//! slots, as far back as keeps `dedupe_window_ids` ids: `dedupe`), so
//! every node skips the same ones.
//!
//! A client's own `Idempotency-Key` works the same way, across nodes and
//! failovers: an update whose key was applied in one of the last
//! `client_key_window_slots` slots is not applied again, and its origin
//! answers with the stored first answer. The records live in the node
//! table, written before the applied index moves past them (so a crash
//! cannot keep the index and lose the record), and are looked up by key;
//! whether one counts depends only on its slot, so a record whose delete
//! was lost in a crash changes nothing.
//!
//! Divergence (MISSION, Divergence): every response the backend gives is
//! digested (`digest`), a slot's digests are folded into one, kept on
//! disk, and sent to the other nodes' appliers; `compare` judges each
//! slot. A node whose digest differs from a majority's, or that sees no
//! majority at all, marks itself diverged in its durable [`NodeState`]:
//! the gateway then refuses its reads and updates; its Paxos roles go on,
//! since its log is still right. With `answer_after_agreement` the origin
//! holds its answers to a slot until the slot's verdict is in, and gives
//! a refusal instead of an answer the majority contradicts.

use super::compare::{Comparison, Verdict};
use super::dedupe::Recent;
use super::digest;
use super::order::{Order, Pos};
use super::resource::{Resources, Touches};
use crate::paxos::ballot::{NodeId, Slot, Update, UpdateId, Value};
use crate::paxos::command::{BackendReply, ClientOutcome, Command, Ctx, Timer};
use crate::paxos::message::{Message, Role};
use crate::paxos::state::{self, Divergence, Meta, NodeState};
use crate::storage::kv::Kv;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ApplierConfig {
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub dedupe_window_slots: u64,
    /// ...and ids at most (`dedupe::Recent`): what bounds its memory,
    /// about 40 bytes an id.
    pub dedupe_window_ids: usize,
    /// How long (in slots) a client idempotency key is remembered.
    pub client_key_window_slots: u64,
    /// Test-only breakage: apply every retry again, ignoring client keys.
    pub bug_ignore_client_keys: bool,
    /// Slots around the applied index whose digests are compared.
    pub digest_window_slots: u64,
    /// Digests wait this long to be sent together (unless answers wait
    /// for them, `answer_after_agreement`: then they leave at once).
    pub digest_flush: Duration,
    /// A peer's digest of a slot this node applied longer ago than this
    /// is answered with this node's own: the peer is late and may have
    /// missed it (it was down, or its connection was).
    pub digest_reply_after: Duration,
    /// The origin answers a client only once its response agrees with a
    /// majority of the nodes.
    pub answer_after_agreement: bool,
    /// Test-only breakage: drop the peers' digests (never compare).
    pub bug_ignore_digests: bool,
    /// Test-only breakage: every node's digests differ (a digest that
    /// covers something node-specific, like a `Date` header).
    pub bug_digest_names_node: bool,
    /// Which updates commute (the service's resource key rule).
    pub resources: Resources,
    /// Backend calls out at once, at most (retry waits included).
    pub concurrency: usize,
    /// Updates taken from the log ahead of the applied index, at most
    /// (at least one slot is always taken).
    pub window_updates_max: usize,
    /// Their payload bytes, at most.
    pub window_bytes_max: usize,
    /// Test-only breakage: every update commutes with every other, even
    /// two on the same resource.
    pub bug_ignore_resource_order: bool,
}

impl Default for ApplierConfig {
    fn default() -> Self {
        ApplierConfig {
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_secs(5),
            dedupe_window_slots: 100_000,
            // 20 MB; 45 s of updates at 11,000 a second, where a copy
            // comes within a forward's retries (seconds).
            dedupe_window_ids: 500_000,
            client_key_window_slots: 1_000_000,
            bug_ignore_client_keys: false,
            digest_window_slots: 65_536,
            digest_flush: Duration::from_millis(20),
            digest_reply_after: Duration::from_millis(500),
            answer_after_agreement: false,
            bug_ignore_digests: false,
            bug_digest_names_node: false,
            resources: Resources::sequential(),
            concurrency: 32,
            window_updates_max: 4096,
            window_bytes_max: 64 << 20,
            bug_ignore_resource_order: false,
        }
    }
}

/// A slot applied this far behind the commit index is applied late: its
/// digest asks the peers for theirs.
const LATE_SLOTS: u64 = 8;

/// Slots applied this soon after recovery are late too.
const LATE_AFTER_RECOVERY: Duration = Duration::from_secs(2);

/// True for backend statuses that say "try again", not "this is the
/// answer" (MISSION, Applying).
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// A slot taken from the log and not yet applied in full.
struct InSlot {
    slot: Slot,
    /// Not an update batch (a no-op, a configuration): nothing to apply,
    /// no digest.
    empty: bool,
    updates: Vec<Update>,
    /// Each update's outcome once it has one: its journal entry and the
    /// digest of the backend's answer (`None`: skipped).
    done: Vec<Option<(Applied, Option<u64>)>>,
    left: usize,
    /// The origin's answers to this slot's updates, if they wait for
    /// agreement.
    answers: Vec<ClientOutcome>,
    /// Stored first answers to client retries, with their first slots.
    retries: Vec<(Slot, ClientOutcome)>,
    /// Client keys of this slot's applied updates: their records are
    /// written when the slot finishes.
    keys: Vec<(Vec<u8>, state::ClientKeyRecord)>,
    /// Payload bytes counted in `Applier::window_bytes`.
    bytes: usize,
}

/// Slot `slot` in the window (which starts right after the applied
/// index), if it was taken from the log.
fn window_slot(window: &mut VecDeque<InSlot>, slot: Slot) -> Option<&mut InSlot> {
    let front = window.front()?.slot;
    window.get_mut(slot.checked_sub(front)? as usize)
}

/// An update whose backend call is out, or waits to be tried again.
struct Call {
    attempts: u32,
    /// When to try again; `None` while the call is out.
    retry_at: Option<Time>,
}

/// An operator's action on this node's state (admin API, `ordo` CLI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    /// Refuse reads and updates until enabled again.
    Disable {
        /// Why, for the status page and the 503s.
        reason: String,
    },
    /// Serve again (if nothing else stops it).
    Enable,
    /// The replica was repaired: forget the divergence found so far.
    ClearDivergence,
    /// Stop applying at the next slot boundary (for a reseed export or
    /// import); `Resume` goes on.
    Pause,
    /// Go on applying after a `Pause`.
    Resume,
    /// The backend now holds the state of slot `slot` (a reseed): take
    /// the replicated state that goes with it and apply from `slot + 1`.
    /// Only while paused at a slot boundary, with `slot` in the log (see
    /// `Applier::can_reseed`).
    Reseed(Box<super::reseed::Envelope>),
}

/// The first application of client key `key`, if it is within the
/// window and before update `index` of `slot`: then this one is a retry.
/// A record at this very (slot, index) is a re-application after a crash,
/// not a retry: it is applied again (the backend's idempotency covers it).
///
/// `unwritten` holds the records of updates done in slots not finished
/// yet: they reach the disk with their slot, in slot order, so that a
/// crash keeps a prefix of them as it keeps a prefix of the applied
/// slots. (Written as each update finished, a record from beyond the
/// applied index could survive a crash and overwrite the one an earlier
/// slot's re-application decides by.)
fn first_use(
    kv: &dyn Kv,
    unwritten: &BTreeMap<Vec<u8>, state::ClientKeyRecord>,
    key: &[u8],
    window: u64,
    slot: Slot,
    index: usize,
) -> Option<state::ClientKeyRecord> {
    let oldest = slot.saturating_sub(window);
    unwritten
        .get(key)
        .cloned()
        .or_else(|| state::load_client_key(kv, key))
        .filter(|r| r.slot >= oldest && (r.slot, r.index as usize) < (slot, index))
}

/// One applied update, for observers (the sim's prefix checks, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Update {
        slot: Slot,
        id: UpdateId,
        status: u16,
    },
    Duplicate {
        slot: Slot,
        id: UpdateId,
    },
}

pub struct Applier {
    id: NodeId,
    /// The other nodes that apply this group's log.
    peers: Vec<NodeId>,
    cfg: ApplierConfig,
    applied: Slot,
    commit: Slot,
    /// Slots after the applied index taken from the log, in order.
    window: VecDeque<InSlot>,
    /// Client key records of updates done in slots not finished yet.
    unwritten_keys: BTreeMap<Vec<u8>, state::ClientKeyRecord>,
    window_updates: usize,
    window_bytes: usize,
    order: Order,
    calls: BTreeMap<Pos, Call>,
    /// The retry timer is set for this time.
    retry_armed: Option<Time>,
    /// Update ids applied in recent slots, for dedupe.
    recent: Recent,
    /// Stored client keys by slot, oldest first, to delete expired ones.
    client_keys: VecDeque<(Slot, Vec<u8>)>,
    /// What was applied since the driver last drained it.
    pub journal: Vec<Applied>,
    pub dropped: u64,
    /// The durable node state (operator switch, divergence).
    state: NodeState,
    compare: Comparison,
    /// When each recently applied slot's digest was made, oldest first.
    applied_at: VecDeque<(Slot, Time)>,
    /// Answers waiting for their slot's verdict.
    held: BTreeMap<Slot, Vec<ClientOutcome>>,
    /// Own digests not yet sent.
    outbox: Vec<(Slot, u64)>,
    /// Peers whose clients wait for a digest in the outbox (they took an
    /// update of its slots, and answer only once a majority agrees): they
    /// get the outbox at once, the others with the next batch.
    waiting: BTreeSet<NodeId>,
    /// How much of the outbox each peer got early (its first entries):
    /// the batch sends it only the rest.
    sent_early: BTreeMap<NodeId, usize>,
    /// Some digest in the outbox is late: ask the peers for theirs.
    ask: bool,
    /// Digests of slots applied before this are late (the peers sent
    /// theirs while this node was down).
    late_until: Time,
    flush_armed: bool,
    /// Times this node found itself diverged.
    pub divergences: u64,
    /// An operator paused applying (a reseed in progress).
    paused: bool,
    /// The highest slot each peer sent a digest of: it applied that far.
    peer_applied: BTreeMap<NodeId, Slot>,
    /// The slot every node applied, as last written.
    all_applied: Slot,
}

impl Applier {
    pub fn recover(id: NodeId, nodes: &[NodeId], cfg: ApplierConfig, ctx: &mut Ctx<'_>) -> Applier {
        let applied = state::load_u64(&*ctx.kv, Meta::Applied);
        let commit = state::last_chosen_slot(&*ctx.kv);
        assert!(
            applied <= commit,
            "applied {applied} beyond the log's {commit}"
        );
        let compare = Comparison::new(id, nodes.len(), cfg.digest_window_slots);
        let (dedupe_window, dedupe_ids) = (cfg.dedupe_window_slots, cfg.dedupe_window_ids);
        let mut a = Applier {
            id,
            peers: nodes.iter().copied().filter(|&n| n != id).collect(),
            state: state::load_node_state(&*ctx.kv),
            compare,
            applied_at: VecDeque::new(),
            held: BTreeMap::new(),
            outbox: Vec::new(),
            waiting: BTreeSet::new(),
            sent_early: BTreeMap::new(),
            ask: false,
            late_until: ctx.now + LATE_AFTER_RECOVERY,
            flush_armed: false,
            divergences: 0,
            paused: false,
            peer_applied: BTreeMap::new(),
            all_applied: state::load_u64(&*ctx.kv, Meta::AllApplied),
            cfg,
            applied,
            commit,
            window: VecDeque::new(),
            unwritten_keys: BTreeMap::new(),
            window_updates: 0,
            window_bytes: 0,
            order: Order::default(),
            calls: BTreeMap::new(),
            retry_armed: None,
            recent: Recent::new(dedupe_window, dedupe_ids),
            client_keys: VecDeque::new(),
            journal: Vec::new(),
            dropped: 0,
        };
        // Rebuild the dedupe window exactly as live application built it:
        // from what the last reseed brought, then from the log.
        let first = (applied + 1)
            .saturating_sub(a.cfg.dedupe_window_slots)
            .max(1);
        if let Some(seeded) = state::load_seeded_window(&*ctx.kv) {
            if seeded.last().is_some_and(|&(slot, _)| slot >= first) {
                for (slot, id) in seeded.into_iter().filter(|&(s, _)| s >= first) {
                    a.remember(slot, id);
                }
            } else {
                state::forget_seeded_window(ctx.kv);
            }
        }
        let mut from = first;
        while from <= applied {
            let page = state::load_chosen_range(&*ctx.kv, from, 256);
            let Some(last) = page.last().map(|e| e.0) else {
                break;
            };
            for (slot, value) in page.into_iter().take_while(|(s, _)| *s <= applied) {
                for u in value.updates() {
                    a.remember(slot, u.id);
                }
            }
            from = last + 1;
            // As live application did before each slot: memory stays
            // within the id bound while a whole window of slots is read.
            a.recent.expire(from.min(applied + 1));
        }
        let mut keys = state::load_client_keys(&*ctx.kv);
        keys.sort_by_key(|(_, slot)| *slot);
        a.client_keys = keys.into_iter().map(|(k, s)| (s, k)).collect();
        a.resume(ctx);
        a
    }

    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// Update ids the dedupe window holds in memory.
    pub fn dedupe_ids(&self) -> usize {
        self.recent.len()
    }

    /// Retrying a slot the backend keeps refusing.
    pub fn stuck_attempts(&self) -> u32 {
        self.calls.values().map(|c| c.attempts).max().unwrap_or(0)
    }

    /// The durable node state: operator switch and divergence.
    pub fn node_state(&self) -> &NodeState {
        &self.state
    }

    pub fn on_message(&mut self, ctx: &mut Ctx<'_>, from: NodeId, msg: Message) {
        match msg {
            Message::Committed { commit } if from == self.id => {
                self.commit = self.commit.max(commit);
                self.resume(ctx);
            }
            Message::NeedsReseed { from: slot } if from == self.id => {
                if self.state.needs_reseed.is_none() {
                    self.state.needs_reseed = Some(slot);
                    self.store_state_soon(ctx);
                }
            }
            Message::Digests {
                entries,
                ask,
                answer,
            } if self.peers.contains(&from) && !self.cfg.bug_ignore_digests => {
                self.on_digests(ctx, from, entries, ask && !answer, !answer)
            }
            _ => self.dropped += 1,
        }
        self.send_digests(ctx);
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        match timer {
            Timer::ApplyRetry => {
                // The timer was set for the earliest retry: those due by
                // then go (the firing, not this node's clock, says when).
                let by = self.retry_armed.take().unwrap_or(ctx.now).max(ctx.now);
                let due: Vec<Pos> = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.retry_at.is_some_and(|at| at <= by))
                    .map(|(p, _)| *p)
                    .collect();
                for pos in due {
                    self.call(ctx, pos);
                }
                self.arm_retry(ctx);
                self.send_digests(ctx);
            }
            Timer::Digests => {
                self.flush_armed = false;
                self.flush_digests(ctx);
            }
            _ => {}
        }
    }

    /// An operator's action; written at once (the shell syncs it before
    /// it reports the action done).
    pub fn operate(&mut self, ctx: &mut Ctx<'_>, op: Operator) {
        match op {
            Operator::Disable { reason } => self.state.disabled = Some(reason),
            Operator::Enable => self.state.disabled = None,
            Operator::ClearDivergence => {
                self.state.diverged = None;
                self.state.cleared_upto = self.state.cleared_upto.max(self.applied);
            }
            Operator::Pause => {
                self.paused = true;
                return;
            }
            Operator::Resume => {
                self.paused = false;
                self.resume(ctx);
                return;
            }
            Operator::Reseed(e) => {
                if self.can_reseed(&*ctx.kv, e.slot).is_err() {
                    self.dropped += 1;
                    return;
                }
                self.reseed(ctx, *e);
            }
        }
        state::store_node_state(ctx.kv, &self.state);
    }

    /// An operator paused applying (it may still finish a slot).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The slot at which applying is paused, once it is (no slot half
    /// applied).
    pub fn paused_at(&self) -> Option<Slot> {
        (self.paused && self.window.is_empty()).then_some(self.applied)
    }

    /// Every node's digest of `slot` this node still holds (for the
    /// console).
    pub fn digests(&self, slot: Slot) -> Vec<(NodeId, u64)> {
        self.compare.digests(slot)
    }

    /// Whether a reseed to `slot` may be taken now, and if not, why.
    pub fn can_reseed(&self, kv: &dyn Kv, slot: Slot) -> Result<(), String> {
        if self.paused_at().is_none() {
            return Err("applying is not paused at a slot boundary".into());
        }
        if slot > crate::paxos::message::SLOT_MAX {
            // No log gets there, and the learner would never hear of it
            // (the driver drops a message naming such a slot).
            return Err(format!("the export's slot {slot} is not a real slot"));
        }
        // After the reseed it applies `slot + 1` on from its own log, or
        // fetches them: they must not be dropped here already.
        let compacted = state::load_u64(kv, Meta::Compacted);
        if slot < compacted {
            return Err(format!(
                "the export is at slot {slot}, but this node's log starts after slot \
                 {compacted}: reseed from a node that has applied at least that far"
            ));
        }
        if slot > self.commit && self.state.needs_reseed.is_none() {
            return Err(format!(
                "this node's log reaches slot {}, not the export's slot {slot}: \
                 let it catch up, then reseed again",
                self.commit
            ));
        }
        Ok(())
    }

    /// The replicated state at the paused slot, for a reseed export:
    /// the dedupe window and every client key record.
    pub fn export(&self, kv: &dyn Kv) -> Option<super::reseed::Envelope> {
        let slot = self.paused_at()?;
        let client_keys = state::load_client_keys(kv)
            .into_iter()
            .filter_map(|(k, _)| state::load_client_key(kv, &k).map(|r| (k, r)))
            .collect();
        Some(super::reseed::Envelope {
            slot,
            recent: self.recent.export(slot + 1),
            client_keys,
            backend: Vec::new(),
            eras: state::load_eras(kv),
        })
    }

    /// Take a reseed (see `Operator::Reseed`): the applied index, the
    /// replicated state, a clean slate for the digests after `slot`.
    fn reseed(&mut self, ctx: &mut Ctx<'_>, e: super::reseed::Envelope) {
        let old = self.applied;
        // Slots after `slot` are applied again, to the new state: their
        // first digests (of the old state's answers) must not stand.
        for s in e.slot + 1..=old {
            state::forget_digest(ctx.kv, s);
        }
        for (k, _) in state::load_client_keys(&*ctx.kv) {
            state::forget_client_key(ctx.kv, &k);
        }
        self.client_keys.clear();
        let mut keys: Vec<(Slot, Vec<u8>)> = Vec::new();
        for (k, r) in &e.client_keys {
            state::store_client_key(ctx.kv, k, r);
            keys.push((r.slot, k.clone()));
        }
        keys.sort();
        self.client_keys = keys.into_iter().collect();
        // The window is kept on disk too: this node's log may not hold
        // those slots (it jumps past a gap below, or a reseed back to an
        // older slot meets a log compacted after it), and a restart
        // within the window must skip the same duplicates.
        state::store_seeded_window(ctx.kv, &e.recent);
        self.recent.clear();
        for (slot, id) in e.recent {
            self.remember(slot, id);
        }
        if e.slot > self.commit {
            // A node that needed the reseed jumps its log past the gap.
            // The donor's eras go first (the changes in the gap are never
            // learned here): a crash before the compaction point is
            // written drops them again (`state::load_eras`), one after
            // keeps both. Then the compaction point: a crash must not
            // leave the applied index beyond the log.
            if let Some(theirs) = &e.eras {
                let mut theirs = theirs.clone();
                theirs.forget_after(e.slot);
                let ours = state::load_eras(&*ctx.kv).map_or(0, |m| m.latest().chosen_at);
                if theirs.latest().chosen_at > ours {
                    state::store_eras(ctx.kv, &theirs);
                }
            }
            self.commit = e.slot;
            let compacted = state::load_u64(&*ctx.kv, Meta::Compacted).max(e.slot);
            state::store_u64(ctx.kv, Meta::Compacted, compacted);
        }
        self.applied = e.slot;
        state::store_u64(ctx.kv, Meta::Applied, e.slot);
        let reseeded = Message::Reseeded {
            slot: e.slot,
            eras: e.eras,
        };
        ctx.send(self.id, Role::Learner, reseeded);
        self.state.needs_reseed = None;
        self.compare = Comparison::new(self.id, self.peers.len() + 1, self.cfg.digest_window_slots);
        self.held.clear();
        self.outbox.clear();
        self.waiting.clear();
        self.sent_early.clear();
        self.state.diverged = None;
        // Slots after `slot` are judged again as they are applied again.
        self.state.cleared_upto = self.state.cleared_upto.max(e.slot);
    }

    /// Peer `from`'s digests: judge the slots this node applied, keep the
    /// others for later, and answer a peer that asks, or that is late (it
    /// may have been down when this node sent its own).
    fn on_digests(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        entries: Vec<(Slot, u64)>,
        ask: bool,
        may_answer: bool,
    ) {
        if let Some(top) = entries.iter().map(|e| e.0).max() {
            let seen = self.peer_applied.entry(from).or_default();
            *seen = (*seen).max(top);
        }
        let mut answer = Vec::new();
        for (slot, d) in entries
            .into_iter()
            .take(self.cfg.digest_window_slots as usize)
        {
            let mut late = false;
            if slot <= self.applied && self.reload_own(&*ctx.kv, slot).is_some() {
                late = true;
            }
            let verdict = self.compare.peer(self.applied, from, slot, d);
            self.judge(ctx, slot, verdict);
            late = late || self.applied_long_ago(ctx.now, slot);
            if may_answer && (ask || late) {
                if let Some(own) = self.compare.own_digest(slot) {
                    answer.push((slot, own));
                }
            }
        }
        if !answer.is_empty() {
            let msg = Message::Digests {
                entries: answer,
                ask: false,
                answer: true,
            };
            ctx.send(from, Role::Applier, msg);
        }
    }

    fn applied_long_ago(&self, now: Time, slot: Slot) -> bool {
        // In slot order, and only recent slots are kept (`digested`).
        let i = self.applied_at.partition_point(|(s, _)| *s < slot);
        match self.applied_at.get(i) {
            Some((s, at)) if *s == slot => now.since(*at) > self.cfg.digest_reply_after,
            _ => slot <= self.applied,
        }
    }

    /// Give a stored first answer (a client retry), from `slot`: at once,
    /// or once `slot`'s verdict is in, or refused if `slot` disagreed.
    fn answer_stored(&mut self, ctx: &mut Ctx<'_>, slot: Slot, answer: ClientOutcome) {
        if !self.cfg.answer_after_agreement {
            ctx.client(answer);
            return;
        }
        // Judged again, with the peers' digests (asked for).
        if let Some(own) = self.reload_own(&*ctx.kv, slot) {
            self.outbox.push((slot, own));
            self.ask = true;
        }
        let majority_differs = match self.compare.verdict(slot) {
            Verdict::Agreed => {
                ctx.client(answer);
                return;
            }
            Verdict::Pending if self.compare.own_digest(slot).is_some() => {
                self.held.entry(slot).or_default().push(answer);
                return;
            }
            // Not even on disk any more (out of the window): it
            // disagreed only if the node is diverged from there on.
            Verdict::Pending => match &self.state.diverged {
                Some(d) if d.slot <= slot => d.majority.is_some(),
                _ => {
                    ctx.client(answer);
                    return;
                }
            },
            Verdict::Minority { .. } => true,
            Verdict::NoMajority => false,
        };
        for &id in answer.ids() {
            ctx.client(ClientOutcome::Disagreed {
                id,
                slot,
                majority_differs,
            });
        }
    }

    /// Act on a slot's verdict: release or refuse held answers, and mark
    /// this node diverged if it differs.
    fn judge(&mut self, ctx: &mut Ctx<'_>, slot: Slot, verdict: Verdict) {
        let majority = match verdict {
            Verdict::Pending => return,
            Verdict::Agreed => {
                for a in self.held.remove(&slot).unwrap_or_default() {
                    ctx.client(a);
                }
                return;
            }
            Verdict::Minority { majority, .. } => Some(majority),
            Verdict::NoMajority => None,
        };
        for a in self.held.remove(&slot).unwrap_or_default() {
            for &id in a.ids() {
                ctx.client(ClientOutcome::Disagreed {
                    id,
                    slot,
                    majority_differs: majority.is_some(),
                });
            }
        }
        if slot <= self.state.cleared_upto || self.state.diverged.is_some() {
            return;
        }
        let ours = self.compare.own_digest(slot).unwrap_or(digest::EMPTY);
        self.state.diverged = Some(Divergence {
            slot,
            ours,
            majority,
        });
        self.divergences += 1;
        self.store_state_soon(ctx);
    }

    /// Write the node state, and have it on disk soon even on an idle
    /// node: a message held for the sync that covers the write makes the
    /// driver sync (the message itself changes nothing).
    fn store_state_soon(&self, ctx: &mut Ctx<'_>) {
        state::store_node_state(ctx.kv, &self.state);
        let commit = self.commit;
        ctx.send_durable(self.id, Role::Applier, Message::Committed { commit });
    }

    /// This node's digest of `slot` from the disk, into the table, if the
    /// table had forgotten it (settled, or from before a restart).
    fn reload_own(&mut self, kv: &dyn Kv, slot: Slot) -> Option<u64> {
        if self.compare.own_digest(slot).is_some() {
            return None;
        }
        let own = state::load_digest(kv, slot)?;
        self.compare.own(slot, own);
        Some(own)
    }

    /// Send own digests soon, batched; at once to the peers whose answers
    /// wait on them (the setting is the service's, the same on every
    /// node), and to all when asking the peers for theirs, as a late node
    /// does (or one judging a client's retry).
    fn send_digests(&mut self, ctx: &mut Ctx<'_>) {
        if self.outbox.is_empty() {
            return;
        }
        if self.cfg.answer_after_agreement && self.ask {
            self.flush_digests(ctx);
            return;
        }
        for p in std::mem::take(&mut self.waiting) {
            let sent = self.sent_early.entry(p).or_default();
            let Some(entries) = self.outbox.get(*sent..).filter(|e| !e.is_empty()) else {
                continue;
            };
            let msg = Message::Digests {
                entries: entries.to_vec(),
                ask: false,
                answer: false,
            };
            *sent = self.outbox.len();
            ctx.send(p, Role::Applier, msg);
        }
        if !self.flush_armed {
            self.flush_armed = true;
            ctx.set_timer(Timer::Digests, ctx.now + self.cfg.digest_flush);
        }
    }

    fn flush_digests(&mut self, ctx: &mut Ctx<'_>) {
        // What every node has applied, for the learner's compaction (a
        // peer not heard from counts as having applied nothing).
        let all = self
            .peers
            .iter()
            .map(|p| self.peer_applied.get(p).copied().unwrap_or(0))
            .fold(self.applied, Slot::min);
        if all > self.all_applied {
            self.all_applied = all;
            state::store_u64(ctx.kv, Meta::AllApplied, all);
        }
        if self.outbox.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.outbox);
        let ask = std::mem::take(&mut self.ask);
        let early = std::mem::take(&mut self.sent_early);
        self.waiting.clear();
        for &p in &self.peers {
            // A digest that asks goes whole: the peer answers what it
            // is asked with.
            let from = if ask {
                0
            } else {
                early.get(&p).copied().unwrap_or(0)
            };
            let Some(rest) = entries.get(from..).filter(|e| !e.is_empty()) else {
                continue;
            };
            let msg = Message::Digests {
                entries: rest.to_vec(),
                ask,
                answer: false,
            };
            ctx.send(p, Role::Applier, msg);
        }
    }

    /// The backend's reply to `Command::Apply { slot, index, .. }`.
    pub fn on_backend_reply(
        &mut self,
        ctx: &mut Ctx<'_>,
        slot: Slot,
        index: u32,
        reply: BackendReply,
    ) {
        let pos = (slot, index);
        let Some(call) = self.calls.get_mut(&pos).filter(|c| c.retry_at.is_none()) else {
            self.dropped += 1;
            return;
        };
        let (status, body, d) = match reply {
            BackendReply::Response {
                status,
                body,
                digest: d,
            } if !is_retryable(status) => (status, body, d),
            _ => {
                call.attempts += 1;
                let base = self.cfg.retry_base.as_micros() as u64;
                let cap = self.cfg.retry_max.as_micros() as u64;
                let backoff = base.saturating_mul(1 << call.attempts.min(20)).min(cap);
                let wait = Duration::from_micros(ctx.rng.range(backoff / 2, backoff));
                call.retry_at = Some(ctx.now + wait);
                self.arm_retry(ctx);
                self.send_digests(ctx);
                return;
            }
        };
        self.calls.remove(&pos);
        let Some(w) = window_slot(&mut self.window, slot) else {
            self.dropped += 1;
            return;
        };
        let u = &w.updates[index as usize];
        let id = u.id;
        if id.origin == self.id {
            let answer = ClientOutcome::Answer {
                id,
                slot,
                status,
                body: body.clone(),
            };
            if self.cfg.answer_after_agreement {
                w.answers.push(answer);
            } else {
                ctx.client(answer);
            }
        }
        if let Some(key) = &u.key {
            let rec = state::ClientKeyRecord {
                slot,
                index,
                status,
                body,
            };
            // Same-key updates run in log order: this is the latest.
            self.unwritten_keys.insert(key.to_vec(), rec.clone());
            w.keys.push((key.to_vec(), rec));
        }
        w.done[index as usize] = Some((Applied::Update { slot, id, status }, Some(d)));
        w.left -= 1;
        self.order.done(pos);
        self.resume(ctx);
        self.send_digests(ctx);
    }

    /// Set the retry timer for the earliest call that waits for one.
    fn arm_retry(&mut self, ctx: &mut Ctx<'_>) {
        let next = self.calls.values().filter_map(|c| c.retry_at).min();
        if let Some(at) = next {
            if self.retry_armed.is_none_or(|armed| at < armed) {
                self.retry_armed = Some(at);
                ctx.set_timer(Timer::ApplyRetry, at);
            }
        }
    }

    /// The rule, live and on rebuild alike: an id is a duplicate at slot
    /// `s` if any copy of it is in a slot within the window before `s`;
    /// the map holds each id's latest slot.
    fn remember(&mut self, slot: Slot, id: UpdateId) {
        self.recent.remember(slot, id);
    }

    /// Forget client keys no pending update can count any more: those
    /// from before the window of the earliest slot not applied. (Not of
    /// the latest slot taken from the log: an earlier one still waiting
    /// may count them, and how far ahead a node reads must not change
    /// what it decides.)
    fn expire_client_keys(&mut self, kv: &mut dyn Kv) {
        let oldest_key = (self.applied + 1).saturating_sub(self.cfg.client_key_window_slots);
        while let Some((s, _)) = self.client_keys.front() {
            if *s >= oldest_key {
                break;
            }
            if let Some((s, key)) = self.client_keys.pop_front() {
                // Overwritten by a later use of the same key: keep it.
                if state::load_client_key(kv, &key).is_some_and(|r| r.slot == s) {
                    state::forget_client_key(kv, &key);
                }
            }
        }
    }

    /// Take slots from the log, start what may run, and finish the
    /// slots that are done, until none of these can go further.
    fn resume(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            let admitted = self.admit(ctx);
            let started = self.start(ctx);
            let finished = self.finish_done(ctx);
            if !(admitted || started || finished) {
                return;
            }
        }
    }

    /// Take committed slots into the window while it has room. Duplicate
    /// ids are decided here, in log order: the rule depends only on the
    /// log. Returns whether it took any.
    fn admit(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let mut took = false;
        loop {
            let slot = self.applied + self.window.len() as u64 + 1;
            if slot > self.commit || self.paused {
                return took;
            }
            // Strict order has nothing to gain from reading ahead.
            let full = if self.cfg.resources.is_sequential() {
                !self.window.is_empty()
            } else {
                self.window_updates >= self.cfg.window_updates_max
                    || self.window_bytes >= self.cfg.window_bytes_max
            };
            if full && !self.window.is_empty() {
                return took;
            }
            self.recent.expire(slot);
            let Some(value) = state::load_chosen(&*ctx.kv, slot) else {
                panic!("slot {slot} is committed but not in the log");
            };
            let (empty, updates) = match value {
                Value::Noop | Value::Config(_) => (true, Vec::new()),
                Value::Batch(updates) => (false, updates),
            };
            let mut w = InSlot {
                slot,
                empty,
                keys: Vec::new(),
                bytes: 0,
                done: vec![None; updates.len()],
                left: 0,
                answers: Vec::new(),
                retries: Vec::new(),
                updates,
            };
            for (i, u) in w.updates.iter().enumerate() {
                let index = i as u32;
                if self.recent.seen(&u.id, slot) {
                    // Seen within the window: remember this latest copy
                    // too, as a rebuild from the log would.
                    self.remember(slot, u.id);
                    w.done[i] = Some((Applied::Duplicate { slot, id: u.id }, None));
                    continue;
                }
                self.remember(slot, u.id);
                let touches = if self.cfg.bug_ignore_resource_order {
                    Touches::Paths(vec![format!("/{slot}/{index}/")])
                } else {
                    self.cfg.resources.touches(u)
                };
                let client = u.key.clone().filter(|_| !self.cfg.bug_ignore_client_keys);
                self.order.admit((slot, index), touches, client);
                w.left += 1;
                w.bytes += u.payload.len();
            }
            self.window_bytes += w.bytes;
            self.window_updates += w.updates.len();
            self.window.push_back(w);
            took = true;
        }
    }

    /// Call the backend for every update that may run, while calls are
    /// below the bound. A client retry is recognised here, once every
    /// earlier update with its key is done. Returns whether it started
    /// (or skipped) any.
    fn start(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let mut any = false;
        while self.calls.len() < self.cfg.concurrency.max(1) {
            let Some(pos) = self.order.take_ready() else {
                break;
            };
            any = true;
            let (slot, index) = pos;
            let Some(w) = window_slot(&mut self.window, slot) else {
                break;
            };
            let u = &w.updates[index as usize];
            let window = self.cfg.client_key_window_slots;
            let first = u
                .key
                .as_ref()
                .filter(|_| !self.cfg.bug_ignore_client_keys)
                .and_then(|k| {
                    first_use(
                        &*ctx.kv,
                        &self.unwritten_keys,
                        k,
                        window,
                        slot,
                        index as usize,
                    )
                });
            let Some(first) = first else {
                self.calls.insert(
                    pos,
                    Call {
                        attempts: 0,
                        retry_at: None,
                    },
                );
                self.call(ctx, pos);
                continue;
            };
            // A client retry: answered with the first answer, judged by
            // its own slot, not by this retry's (skipped alike
            // everywhere).
            let id = u.id;
            if id.origin == self.id {
                let answer = ClientOutcome::Answer {
                    id,
                    slot: first.slot,
                    status: first.status,
                    body: first.body,
                };
                w.retries.push((first.slot, answer));
            }
            w.done[index as usize] = Some((Applied::Duplicate { slot, id }, None));
            w.left -= 1;
            self.order.done(pos);
        }
        any
    }

    /// Finish the slots at the front of the window whose every update is
    /// done, in slot order. Returns whether it finished any.
    fn finish_done(&mut self, ctx: &mut Ctx<'_>) -> bool {
        let mut any = false;
        while self.window.front().is_some_and(|w| w.left == 0) {
            let Some(w) = self.window.pop_front() else {
                break;
            };
            any = true;
            self.window_updates -= w.updates.len();
            self.window_bytes -= w.bytes;
            let slot = w.slot;
            if w.empty {
                self.finish(ctx, slot);
                continue;
            }
            let mut d = digest::EMPTY;
            for (applied, answer) in w.done.into_iter().flatten() {
                d = match answer {
                    Some(a) => digest::fold(d, a),
                    None => digest::fold_skipped(d),
                };
                self.journal.push(applied);
            }
            // The slot's client key records, then its digest, are written
            // before the applied index passes the slot: a crash keeps a
            // prefix of the writes, so a slot known applied after a
            // restart has them on disk (a client retry's stored answer is
            // judged by its digest).
            for (key, rec) in w.keys {
                state::store_client_key(ctx.kv, &key, &rec);
                // A later slot's use of the key (past the window) stays
                // unwritten until that slot finishes.
                if self.unwritten_keys.get(&key) == Some(&rec) {
                    self.unwritten_keys.remove(&key);
                }
                self.client_keys.push_back((slot, key));
            }
            if self.cfg.answer_after_agreement {
                let origins = w.updates.iter().map(|u| u.id.origin);
                let peers = &self.peers;
                self.waiting
                    .extend(origins.filter(|o| *o != self.id && peers.contains(o)));
            }
            self.digested(ctx, slot, d, w.answers);
            self.finish(ctx, slot);
            for (first, answer) in w.retries {
                self.answer_stored(ctx, first, answer);
            }
        }
        any
    }

    /// Send (again) the call for the update at `pos`.
    fn call(&mut self, ctx: &mut Ctx<'_>, pos: Pos) {
        let (slot, index) = pos;
        let Some(update) = window_slot(&mut self.window, slot)
            .and_then(|w| w.updates.get(index as usize))
            .cloned()
        else {
            return;
        };
        if let Some(c) = self.calls.get_mut(&pos) {
            c.retry_at = None;
        }
        ctx.out.push(Command::Apply {
            slot,
            index,
            update,
        });
    }

    /// Slot `slot` is applied with digest `d`: keep it (the first one
    /// stands, so a re-application after a crash compares what the
    /// backend first said), queue it for the peers, and judge the slot.
    fn digested(&mut self, ctx: &mut Ctx<'_>, slot: Slot, d: u64, answers: Vec<ClientOutcome>) {
        let d = if self.cfg.bug_digest_names_node {
            digest::fold(d, self.id.0 as u64)
        } else {
            d
        };
        let d = match state::load_digest(&*ctx.kv, slot) {
            Some(first) => first,
            None => {
                state::store_digest(ctx.kv, slot, d);
                d
            }
        };
        let window = self.cfg.digest_window_slots;
        if slot > window {
            state::forget_digest(ctx.kv, slot - window);
        }
        // Only recent times matter: an older slot counts as long ago.
        let keep = self.cfg.digest_reply_after;
        while self
            .applied_at
            .front()
            .is_some_and(|(_, at)| ctx.now.since(*at) > keep)
        {
            self.applied_at.pop_front();
        }
        self.applied_at.push_back((slot, ctx.now));
        // Held answers of slots that left the window will never settle:
        // their clients have long had a timeout.
        self.held = self.held.split_off(&slot.saturating_sub(window));
        if !answers.is_empty() {
            self.held.insert(slot, answers);
        }
        // Far behind the commit index, or just recovered: the peers sent
        // their digests of this slot long ago, maybe while we were away.
        self.ask |= self.commit > slot + LATE_SLOTS || ctx.now < self.late_until;
        self.outbox.push((slot, d));
        let verdict = self.compare.own(slot, d);
        self.judge(ctx, slot, verdict);
        self.compare.prune(self.applied);
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>, slot: Slot) {
        assert_eq!(slot, self.applied + 1, "slots apply in order");
        assert!(slot <= self.commit, "applied must not pass commit");
        self.applied = slot;
        state::store_u64(ctx.kv, Meta::Applied, slot);
        self.expire_client_keys(ctx.kv);
    }
}
