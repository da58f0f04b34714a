//! Comparing slot digests across the nodes of a group: which slots agree
//! with a majority, which do not, and where no majority exists.
//!
//! Each node decides for itself, from its own digest of a slot and the
//! digests its peers sent. A majority is a strict majority of every node
//! that applies the log (not only the voters): the question is what the
//! replicas hold, and every replica counts.
//!
//! Bounded: digests are kept for slots within `window` of the applied
//! index (peers' digests that arrive early wait there too); a slot leaves
//! once it is settled and every node reported it, or once it falls out
//! of the window.

use crate::paxos::ballot::{NodeId, Slot};
use std::collections::BTreeMap;

/// What the nodes' digests say about one slot, from this node's view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough digests yet.
    Pending,
    /// A majority holds this node's digest.
    Agreed,
    /// A majority holds another digest: this replica differs.
    Minority {
        /// This node's digest.
        ours: u64,
        /// The majority's.
        majority: u64,
    },
    /// Every node reported and no digest has a majority.
    NoMajority,
}

#[derive(Default)]
struct SlotDigests {
    own: Option<u64>,
    peers: BTreeMap<NodeId, u64>,
}

/// Settled slots kept for observers (the console) after `prune`.
const SETTLED_KEPT: usize = 256;

/// The digest table of one node (see the module comment).
pub struct Comparison {
    me: NodeId,
    nodes: usize,
    window: u64,
    slots: BTreeMap<Slot, SlotDigests>,
    /// The latest slots every node reported, oldest first: for observers
    /// only, no verdict reads them.
    settled: std::collections::VecDeque<(Slot, SlotDigests)>,
    /// Slots that every node reported since the last `prune`: it moves
    /// only these. (Scanning the whole table instead cost a pass over
    /// every slot in the window per slot applied whenever a node was down
    /// and no slot completed: 65,536 of them.)
    completed: Vec<Slot>,
}

impl Comparison {
    /// A table for node `me` in a group of `nodes` appliers.
    pub fn new(me: NodeId, nodes: usize, window: u64) -> Comparison {
        Comparison {
            me,
            nodes: nodes.max(1),
            window: window.max(1),
            slots: BTreeMap::new(),
            settled: Default::default(),
            completed: Vec::new(),
        }
    }

    /// Every node's digest of `slot` this node knows (its own included),
    /// if it still holds them: the slot is in the window, or one of the
    /// latest settled ones.
    pub fn digests(&self, slot: Slot) -> Vec<(NodeId, u64)> {
        let e = self.slots.get(&slot).or_else(|| {
            self.settled
                .iter()
                .find(|(s, _)| *s == slot)
                .map(|(_, e)| e)
        });
        let Some(e) = e else {
            return Vec::new();
        };
        let mut out: Vec<(NodeId, u64)> = e.peers.iter().map(|(n, d)| (*n, *d)).collect();
        if let Some(own) = e.own {
            out.push((self.me, own));
        }
        out.sort();
        out
    }

    fn majority(&self) -> usize {
        self.nodes / 2 + 1
    }

    /// Record this node's digest of `slot` (the first one stands: a
    /// re-application after a crash does not replace it).
    pub fn own(&mut self, slot: Slot, digest: u64) -> Verdict {
        let e = self.slots.entry(slot).or_default();
        if e.own.is_none() {
            e.own = Some(digest);
            self.note_complete(slot);
        }
        self.verdict(slot)
    }

    /// After a first report of `slot` (each can complete it only once, so
    /// `completed` holds at most one entry per slot held).
    fn note_complete(&mut self, slot: Slot) {
        let nodes = self.nodes;
        if self
            .slots
            .get(&slot)
            .is_some_and(|e| e.own.is_some() && e.peers.len() + 1 >= nodes)
        {
            self.completed.push(slot);
        }
    }

    /// Record peer `from`'s digest of `slot`, if the slot is within the
    /// window around `applied`. Returns the verdict if this node has its
    /// own digest of the slot.
    pub fn peer(&mut self, applied: Slot, from: NodeId, slot: Slot, digest: u64) -> Verdict {
        if from == self.me
            || slot == 0
            || slot + self.window <= applied
            || slot > applied + self.window
        {
            return Verdict::Pending;
        }
        if !self.slots.contains_key(&slot) && self.slots.len() as u64 >= 2 * self.window {
            return Verdict::Pending;
        }
        let first = self
            .slots
            .entry(slot)
            .or_default()
            .peers
            .insert(from, digest)
            .is_none();
        if first {
            self.note_complete(slot);
        }
        self.verdict(slot)
    }

    /// This node's digest of `slot`, if it is still in the table.
    pub fn own_digest(&self, slot: Slot) -> Option<u64> {
        self.slots.get(&slot).and_then(|e| e.own)
    }

    /// The verdict on `slot` now.
    pub fn verdict(&self, slot: Slot) -> Verdict {
        let Some(e) = self.slots.get(&slot) else {
            return Verdict::Pending;
        };
        let Some(own) = e.own else {
            return Verdict::Pending;
        };
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        *counts.entry(own).or_default() += 1;
        for d in e.peers.values() {
            *counts.entry(*d).or_default() += 1;
        }
        let (top, n) = counts
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(d, n)| (*d, *n))
            .unwrap_or((own, 0));
        if n >= self.majority() {
            return if top == own {
                Verdict::Agreed
            } else {
                Verdict::Minority {
                    ours: own,
                    majority: top,
                }
            };
        }
        if e.peers.len() + 1 >= self.nodes {
            return Verdict::NoMajority;
        }
        Verdict::Pending
    }

    /// Forget slots that are settled and complete, or out of the window.
    pub fn prune(&mut self, applied: Slot) {
        let oldest = applied.saturating_sub(self.window);
        self.slots = self.slots.split_off(&oldest.max(1));
        let mut completed = std::mem::take(&mut self.completed);
        completed.sort_unstable();
        completed.dedup();
        for s in completed {
            // Gone already if it left the window.
            let Some(e) = self.slots.remove(&s) else {
                continue;
            };
            if self.settled.len() >= SETTLED_KEPT {
                self.settled.pop_front();
            }
            self.settled.push_back((s, e));
        }
    }

    /// Slots held (for bounds checks).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(i: u16) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn two_of_three_agreeing_settle_a_slot_either_way() {
        let mut c = Comparison::new(n(0), 3, 100);
        assert_eq!(c.own(1, 7), Verdict::Pending);
        assert_eq!(c.peer(1, n(1), 1, 7), Verdict::Agreed);
        let mut d = Comparison::new(n(0), 3, 100);
        d.own(1, 9);
        assert_eq!(d.peer(1, n(1), 1, 7), Verdict::Pending);
        assert_eq!(
            d.peer(1, n(2), 1, 7),
            Verdict::Minority {
                ours: 9,
                majority: 7
            }
        );
    }

    #[test]
    fn three_different_answers_have_no_majority() {
        let mut c = Comparison::new(n(0), 3, 100);
        c.own(4, 1);
        c.peer(4, n(1), 4, 2);
        assert_eq!(c.peer(4, n(2), 4, 3), Verdict::NoMajority);
    }

    #[test]
    fn early_digests_wait_for_our_own_and_the_window_bounds_the_table() {
        let mut c = Comparison::new(n(0), 3, 10);
        assert_eq!(c.peer(0, n(1), 5, 7), Verdict::Pending);
        assert_eq!(c.own(5, 7), Verdict::Agreed);
        // Beyond the window, or from ourselves: not kept.
        c.peer(0, n(1), 11, 7);
        c.peer(0, n(0), 3, 7);
        assert_eq!(c.len(), 1);
        // Settled by two of three but not complete: kept for the third.
        c.prune(5);
        assert_eq!(c.len(), 1);
        c.peer(5, n(2), 5, 7);
        c.prune(5);
        assert!(c.is_empty());
    }

    #[test]
    fn observers_see_every_digest_of_the_latest_settled_slots_bounded() {
        let mut c = Comparison::new(n(0), 3, 10);
        c.own(5, 7);
        c.peer(5, n(1), 5, 7);
        c.peer(5, n(2), 5, 8);
        assert_eq!(c.digests(5), vec![(n(0), 7), (n(1), 7), (n(2), 8)]);
        c.prune(5);
        assert!(c.is_empty(), "verdicts no longer hold it");
        assert_eq!(c.digests(5).len(), 3, "observers still see it");
        for slot in 6..6 + SETTLED_KEPT as u64 {
            c.own(slot, 1);
            c.peer(slot, n(1), slot, 1);
            c.peer(slot, n(2), slot, 1);
            c.prune(slot);
        }
        assert!(c.digests(5).is_empty(), "the oldest went first");
        assert_eq!(c.settled.len(), SETTLED_KEPT);
    }

    /// With a node down no slot completes: each prune must then cost
    /// nothing beyond the window's edge, not a pass over the window (it
    /// did, 65,536 slots per slot applied, while any node was down).
    #[test]
    fn with_a_node_down_prune_looks_only_at_what_completed() {
        let mut c = Comparison::new(n(0), 3, 65_536);
        for slot in 1..=5_000 {
            c.own(slot, 1);
            c.peer(slot, n(1), slot, 1);
            c.prune(slot);
            assert!(c.completed.is_empty(), "nothing completed at slot {slot}");
        }
        assert_eq!(c.len(), 5_000, "kept for the node that is down");
        // It comes back and reports: those slots complete, and go.
        for slot in 1..=5_000 {
            c.peer(5_000, n(2), slot, 1);
        }
        assert_eq!(c.completed.len(), 5_000);
        c.prune(5_000);
        assert!(c.is_empty() && c.completed.is_empty());
    }
}
