//! What a group's actors publish about themselves for the gateway: the
//! applied index (which reads wait on), the commit index, the leader and
//! the lease. Written by the actors after every handler; read anywhere.

use crate::gateway::readiness::{Fence, ReadState};
use crate::paxos::ballot::{NodeId, Slot};
use crate::paxos::membership::Era;
use crate::paxos::state::NodeState;
use crate::time::Time;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use tokio::sync::watch;

/// What one node last told the leader (`paxos::members::Peer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub node: NodeId,
    /// Milliseconds since it was heard from.
    pub heard_ms: u64,
    pub commit: Slot,
    pub applied: Slot,
    /// Not diverged, disabled, needing a reseed or rebuilding.
    pub fit: bool,
}

/// The active set and what the proposer did about it, as published.
#[derive(Clone, Debug, Default)]
pub struct MembershipView {
    /// The eras of the active set this node knows, oldest first.
    pub eras: Vec<Era>,
    /// The active set governing the next slot, preferred leader first.
    pub active: Vec<NodeId>,
    /// While leading: what every node reported.
    pub peers: Vec<PeerView>,
    /// While leading: the voter leadership is being handed to.
    pub transfer: Option<NodeId>,
    /// Operators' requests taken here, and their results so far.
    pub ops: Vec<(u64, Option<Result<String, String>>)>,
    /// Recent events about leadership and the active set: (Unix ms, what).
    pub events: VecDeque<(u64, String)>,
}

/// Events kept in `MembershipView::events`.
pub const EVENTS_SHOWN: usize = 64;

pub struct GroupStatus {
    applied: watch::Sender<Slot>,
    commit: AtomicU64,
    known_commit: AtomicU64,
    /// The log's compaction point and bytes (`Learner::compacted`,
    /// `Learner::log_bytes`).
    log_compacted: AtomicU64,
    log_bytes: AtomicU64,
    /// The leader's ballot, in one word so that it is read whole: its
    /// round (modulo 2^47) + 1 above 16 bits, the NodeId below; 0 when
    /// none is known.
    leadership: AtomicU64,
    is_leader: AtomicBool,
    /// Micros + 1; 0 when there is no contact to speak of.
    lease_contact: AtomicU64,
    /// Attempts at the update the applier is stuck on (0: not stuck).
    apply_attempts: AtomicU64,
    /// Whether `node_state` fences the node (read on every request; the
    /// lock only when it does).
    fenced: AtomicBool,
    node_state: RwLock<NodeState>,
    /// While rebuilding: the voters not reported yet, and the fence.
    rebuilding: RwLock<Option<(Vec<NodeId>, Option<u64>)>>,
    membership: RwLock<MembershipView>,
    /// What the actors count, for `/metrics`.
    pub counters: crate::metrics::GroupCounters,
    /// When this node learned its commit index reached a slot: (commit,
    /// Unix ms), oldest first, at most `COMMIT_TIMES_KEPT`. In memory
    /// only: the console's "chosen at" (the log stores no times).
    commit_times: Mutex<VecDeque<(Slot, u64)>>,
    /// Slots up to here have no time: recovered from disk, or their
    /// advance was forgotten.
    untimed_upto: AtomicU64,
}

/// Wall-clock time in Unix ms, for what operators read (events, chosen
/// times); 0 if the clock is before 1970.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Commit advances remembered for the console.
pub const COMMIT_TIMES_KEPT: usize = 4096;

impl Default for GroupStatus {
    fn default() -> Self {
        GroupStatus {
            applied: watch::Sender::new(0),
            commit: AtomicU64::new(0),
            known_commit: AtomicU64::new(0),
            log_compacted: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            leadership: AtomicU64::new(0),
            is_leader: AtomicBool::new(false),
            lease_contact: AtomicU64::new(0),
            apply_attempts: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            node_state: RwLock::new(NodeState::default()),
            rebuilding: RwLock::new(None),
            membership: RwLock::new(MembershipView::default()),
            counters: Default::default(),
            commit_times: Mutex::new(VecDeque::new()),
            untimed_upto: AtomicU64::new(0),
        }
    }
}

impl GroupStatus {
    pub fn applied(&self) -> Slot {
        *self.applied.borrow()
    }

    /// Wakes whenever the applied index moves.
    pub fn watch_applied(&self) -> watch::Receiver<Slot> {
        self.applied.subscribe()
    }

    pub fn commit(&self) -> Slot {
        self.commit.load(Ordering::Relaxed)
    }

    /// The highest commit index this node has heard of.
    pub fn known_commit(&self) -> Slot {
        self.known_commit.load(Ordering::Relaxed)
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leadership().map(|(_, node)| node)
    }

    /// The leader's ballot as (round modulo 2^47, node): another value is
    /// another leadership (the same node may lead again after a restart,
    /// at a higher round).
    pub fn leadership(&self) -> Option<(u64, NodeId)> {
        let word = self.leadership.load(Ordering::Relaxed);
        let round = (word >> 16).checked_sub(1)?;
        Some((round, NodeId((word & 0xffff) as u16)))
    }

    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Relaxed)
    }

    pub fn lease_contact(&self) -> Option<Time> {
        // Acquire: pairs with the Release in `set_proposer`, so whoever
        // sees a lease also sees the commit index published before it.
        match self.lease_contact.load(Ordering::Acquire) {
            0 => None,
            t => Some(Time(t - 1)),
        }
    }

    pub fn apply_attempts(&self) -> u64 {
        self.apply_attempts.load(Ordering::Relaxed)
    }

    /// A snapshot for the read decision (`gateway::readiness`). The
    /// lease is read first: the proposer publishes the commit index a
    /// heartbeat reported before the lease it renewed, so a fresh lease
    /// read here comes with at least that commit index. (Read the other
    /// way round, a reader could pair the old commit index with the new
    /// lease and serve far beyond `max_lag_slots` right after a heal.)
    pub fn read_state(&self) -> ReadState {
        let lease_contact = self.lease_contact();
        ReadState {
            known_commit: self.known_commit().max(self.commit()),
            applied: self.applied(),
            lease_contact,
            apply_attempts: self.apply_attempts(),
            fence: self.fence(),
        }
    }

    /// What the node state forbids, if anything.
    pub fn fence(&self) -> Option<Fence> {
        if !self.fenced.load(Ordering::Acquire) {
            return None;
        }
        Fence::of(&self.node_state())
    }

    /// The durable node state, as the applier last published it.
    pub fn node_state(&self) -> NodeState {
        match self.node_state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// While this node rebuilds its acceptor: the voters it waits for,
    /// and the fence once they all reported (`paxos::rebuild`).
    pub fn rebuilding(&self) -> Option<(Vec<NodeId>, Option<u64>)> {
        match self.rebuilding.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The active set and the proposer's membership events.
    pub fn membership(&self) -> MembershipView {
        match self.membership.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Add an event to the ones shown (the oldest go beyond
    /// `EVENTS_SHOWN`), stamped now.
    pub(crate) fn push_event(&self, event: String) {
        let at_ms = unix_ms();
        self.update_membership(|m| {
            if m.events.len() >= EVENTS_SHOWN {
                m.events.pop_front();
            }
            m.events.push_back((at_ms, event));
        });
    }

    pub(crate) fn update_membership(&self, f: impl FnOnce(&mut MembershipView)) {
        match self.membership.write() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub(crate) fn set_rebuilding(&self, r: Option<(Vec<NodeId>, Option<u64>)>) {
        match self.rebuilding.write() {
            Ok(mut s) => *s = r,
            Err(poisoned) => *poisoned.into_inner() = r,
        }
    }

    pub(crate) fn set_node_state(&self, state: &NodeState) {
        match self.node_state.write() {
            Ok(mut s) => *s = state.clone(),
            Err(poisoned) => *poisoned.into_inner() = state.clone(),
        }
        self.fenced
            .store(Fence::of(state).is_some(), Ordering::Release);
    }

    pub(crate) fn set_applied(&self, applied: Slot, attempts: u32) {
        self.applied.send_if_modified(|a| {
            let moved = *a != applied;
            *a = applied;
            moved
        });
        self.apply_attempts
            .store(attempts as u64, Ordering::Relaxed);
    }

    /// The log's compaction point and the bytes it holds.
    pub fn log(&self) -> (Slot, u64) {
        (
            self.log_compacted.load(Ordering::Relaxed),
            self.log_bytes.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn set_log(&self, compacted: Slot, bytes: u64) {
        self.log_compacted.store(compacted, Ordering::Relaxed);
        self.log_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn set_learner(&self, commit: Slot, known: Slot) {
        let before = self.commit.swap(commit, Ordering::Relaxed);
        if commit > before {
            let at_ms = unix_ms();
            let mut times = self.commit_times.lock().unwrap_or_else(|e| e.into_inner());
            if times.len() >= COMMIT_TIMES_KEPT {
                if let Some((forgotten, _)) = times.pop_front() {
                    self.untimed_upto.fetch_max(forgotten, Ordering::Relaxed);
                }
            }
            times.push_back((commit, at_ms));
        }
        self.known_commit.fetch_max(known, Ordering::Relaxed);
    }

    /// When this node learned `slot` was chosen (Unix ms), if it still
    /// remembers: the first commit advance that reached it.
    pub fn chosen_at(&self, slot: Slot) -> Option<u64> {
        let times = self.commit_times.lock().unwrap_or_else(|e| e.into_inner());
        if slot <= self.untimed_upto.load(Ordering::Relaxed) {
            return None;
        }
        let i = times.partition_point(|(c, _)| *c < slot);
        times.get(i).map(|(_, at)| *at)
    }

    /// The commit index recovered at start: its slots have no time.
    pub(crate) fn recovered(&self, commit: Slot, known: Slot) {
        self.commit.store(commit, Ordering::Relaxed);
        self.known_commit.fetch_max(known, Ordering::Relaxed);
        self.untimed_upto.fetch_max(commit, Ordering::Relaxed);
    }

    pub(crate) fn raise_known_commit(&self, known: Slot) {
        self.known_commit.fetch_max(known, Ordering::Relaxed);
    }

    pub(crate) fn set_proposer(
        &self,
        leadership: Option<crate::paxos::ballot::Ballot>,
        is_leader: bool,
        lease: Option<Time>,
    ) {
        let word = leadership.map_or(0, |b| (((b.round % (1 << 47)) + 1) << 16) | b.node.0 as u64);
        self.leadership.store(word, Ordering::Relaxed);
        self.is_leader.store(is_leader, Ordering::Relaxed);
        // Release, last: see `read_state`.
        self.lease_contact
            .store(lease.map_or(0, |t| t.0 + 1), Ordering::Release);
    }
}

#[cfg(test)]
mod commit_time_tests {
    use super::*;

    /// The leadership reads back whole, node 0 and round 0 included.
    #[test]
    fn the_leadership_reads_back_as_it_was_set() {
        use crate::paxos::ballot::Ballot;
        let s = GroupStatus::default();
        assert_eq!(s.leadership(), None);
        for (round, node) in [(0, 0), (5, 2), (u64::MAX, u16::MAX)] {
            let b = Ballot {
                round,
                node: NodeId(node),
            };
            s.set_proposer(Some(b), false, None);
            assert_eq!(s.leadership(), Some((round % (1 << 47), NodeId(node))));
            assert_eq!(s.leader(), Some(NodeId(node)));
        }
        s.set_proposer(None, false, None);
        assert_eq!((s.leadership(), s.leader()), (None, None));
    }

    #[test]
    fn chosen_times_are_known_for_advances_seen_here_only() {
        let s = GroupStatus::default();
        s.recovered(5, 5);
        s.set_learner(8, 8);
        assert_eq!(s.chosen_at(3), None, "recovered from disk: no time");
        assert_eq!(s.chosen_at(5), None);
        let t = s.chosen_at(6).expect("learned here");
        assert_eq!(s.chosen_at(8), Some(t));
        assert_eq!(s.chosen_at(9), None, "not chosen yet");
        for c in 9..9 + COMMIT_TIMES_KEPT as u64 {
            s.set_learner(c, c);
        }
        assert_eq!(s.chosen_at(8), None, "forgotten, not guessed");
        assert!(s.chosen_at(9 + COMMIT_TIMES_KEPT as u64 - 1).is_some());
    }
}
