//! Rebuilding an acceptor that lost its state (an empty or wiped
//! `data_dir`), after Paxos Made Live (Chandra et al., 2007, §5.1): it
//! takes part as a non-voting member until it has seen a complete
//! instance of Paxos that began after it started rebuilding.
//!
//! What the lost state held: promises (ballots it must never act
//! against) and votes (values that may be chosen only thanks to them).
//! An acceptor that answered again at once could accept below a ballot it
//! promised, or help a quorum that has never seen a value it voted into
//! a chosen majority: an acknowledged write lost.
//!
//! In Multi-Paxos terms, the rebuilding node (its acceptor silent, its
//! proposer not campaigning) does this:
//!
//! 1. It asks every other node for the highest round it knows
//!    (`Rebuilding`); each answers with the highest round its proposer
//!    used or saw and its acceptor promised (`RebuildRound`). The
//!    `fence` is their maximum. Every ballot that existed before the
//!    wipe, in particular any ballot the lost acceptor promised, was used
//!    by some proposer, which reports at least its round (used rounds are
//!    on disk before use, so a restarted proposer reports them too); a
//!    ballot with a higher round was made after that report, so after
//!    the wipe. Every node is asked, backups too: with the active set
//!    in the log (`membership`), any node may have led in an earlier
//!    era. All must answer: with one of them down this waits, and the
//!    service may have no quorum meanwhile. That is the price:
//!    unavailable, never wrong.
//! 2. It waits for a leadership at a ballot whose round is above the
//!    fence to become established: its phase 1 began after the wipe, so
//!    it completed with a quorum of intact acceptors (this one was
//!    silent); such a quorum meets every majority that chose a value
//!    (with or without the lost acceptor's vote) in an intact acceptor,
//!    so the leader re-proposed and committed every such value. If no
//!    other leader gets there, the rebuilding node campaigns itself
//!    (a takeover, so that acceptors loyal to a live leader answer).
//! 3. Once its own log reaches that leader's commit index, it promises
//!    the leader's ballot and votes again: no ballot it promised before
//!    is above it, and every value its old votes helped choose is in its
//!    log, below the `chosen_upto` its promises report.

use super::ballot::{Ballot, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// The rebuilding state of one node's proposer (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuild {
    /// Nodes that have not reported their round yet.
    waiting: BTreeSet<NodeId>,
    /// The rounds reported: the first answer of each voter, only.
    rounds: BTreeMap<NodeId, u64>,
    /// This rebuild's random number, echoed by the answers. A report
    /// sent before the wipe (to an earlier rebuild of this node) could
    /// name a round older than the wipe, and must not count; nor may a
    /// late duplicate move the fence once it is complete.
    nonce: u64,
}

impl Rebuild {
    /// Node `me` rebuilds among `nodes` (every node of the group); `nonce` is fresh randomness.
    pub fn new(me: NodeId, nodes: &[NodeId], nonce: u64) -> Rebuild {
        Rebuild {
            waiting: nodes.iter().copied().filter(|&v| v != me).collect(),
            rounds: BTreeMap::new(),
            nonce,
        }
    }

    /// The number the requests carry and the answers must echo.
    pub fn nonce(&self) -> u64 {
        self.nonce
    }

    /// Voters still to report.
    pub fn waiting(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.waiting.iter().copied()
    }

    /// Voter `from` reports `round`, answering the request numbered
    /// `nonce`. Only a voter's first answer to this rebuild counts.
    pub fn report(&mut self, from: NodeId, nonce: u64, round: u64) {
        if nonce == self.nonce && self.waiting.remove(&from) {
            self.rounds.insert(from, round);
        }
    }

    /// The fence, once every other node has reported.
    pub fn fence(&self) -> Option<u64> {
        self.waiting
            .is_empty()
            .then(|| self.rounds.values().copied().max().unwrap_or(0))
    }

    /// Whether a leadership at `ballot` began after every report.
    pub fn after_fence(&self, ballot: Ballot) -> bool {
        self.fence().is_some_and(|f| ballot.round > f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_waits_for_every_other_voter_and_is_their_highest_round() {
        let mut r = Rebuild::new(NodeId(1), &[NodeId(0), NodeId(1), NodeId(2)], 77);
        assert_eq!(r.fence(), None);
        r.report(NodeId(0), 77, 7);
        assert_eq!(r.fence(), None, "node 2 has not reported");
        r.report(NodeId(2), 76, 50);
        assert_eq!(
            r.fence(),
            None,
            "an answer to another rebuild does not count"
        );
        r.report(NodeId(5), 77, 99);
        r.report(NodeId(2), 77, 4);
        assert_eq!(r.fence(), Some(7), "a stranger's report does not count");
        r.report(NodeId(0), 77, 60);
        assert_eq!(
            r.fence(),
            Some(7),
            "a late duplicate does not move the fence"
        );
        let b = |round| Ballot {
            round,
            node: NodeId(2),
        };
        assert!(!r.after_fence(b(7)));
        assert!(r.after_fence(b(8)));
    }
}
