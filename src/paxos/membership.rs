//! Who votes and who learns in one Paxos group.

use super::ballot::NodeId;

/// The nodes of one group. `voters` are the active members (acceptors
/// whose majority decides); every node in `nodes` learns and applies.
/// `voters[0]` is the preferred leader. A static membership today; the
/// reconfiguration issue makes it a function of the slot, chosen through
/// the log, without changing this interface's users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The active members: acceptors whose majority decides.
    pub voters: Vec<NodeId>,
    /// Every node that learns and applies, voters included.
    pub nodes: Vec<NodeId>,
}

impl Membership {
    /// All `n` nodes vote.
    pub fn all_voting(n: u16) -> Membership {
        let nodes: Vec<NodeId> = (0..n).map(NodeId).collect();
        Membership {
            voters: nodes.clone(),
            nodes,
        }
    }

    /// Votes needed to decide: a strict majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is in the group at all.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.nodes.contains(&id)
    }

    /// The first voter: it takes leadership back when it can.
    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.voters.first().copied()
    }
}
