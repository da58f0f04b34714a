//! Ballots, node ids, slots and the values the log carries.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's compact identity inside one cluster: its index in the
/// configured node list. Names live in the configuration; the protocol
/// only ever sees the index.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A position in a group's log. Slot 0 is never used: a commit index of 0
/// means "nothing chosen yet".
pub type Slot = u64;

/// A Paxos ballot (proposal number). Ordered by round, then node, so two
/// proposers never share one (Paxos Made Simple, §2.2: "disjoint sets of
/// numbers"). A proposer persists the round before using it, so a ballot
/// is never reused across restarts either.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Raised past every round seen; persisted before use.
    pub round: u64,
    /// The proposer that owns the ballot.
    pub node: NodeId,
}

impl Ballot {
    /// Below every real ballot: what an acceptor has promised before it
    /// promised anything.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}

/// Names one client update for its whole life: the node that took it
/// (the origin, which answers the client), that node's boot nonce (so ids
/// stay unique across restarts without a disk write) and a sequence.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct UpdateId {
    /// The node whose gateway took the request, and answers it.
    pub origin: NodeId,
    /// That node's boot nonce: ids of different boots never collide.
    pub boot: u64,
    /// A sequence within the boot.
    pub seq: u64,
}

/// One client update: an opaque payload (an encoded HTTP request in
/// production, a key-value operation in the sim). The Paxos core never
/// looks inside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The request id.
    pub id: UpdateId,
    /// The client's own `Idempotency-Key`, if it sent one: an update whose
    /// key was applied in the last `client_key_window_slots` slots is not
    /// applied again; its origin answers with the first answer.
    pub key: Option<Bytes>,
    /// The request itself, opaque to the protocol.
    pub payload: Bytes,
}

/// What one slot carries. A batch lets one Paxos instance order many
/// client updates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a slot that a new leader found empty (Paxos Made Simple §3:
    /// gaps are filled with no-ops) and lets a new leader commit an entry
    /// of its own ballot.
    Noop,
    /// Client updates, applied in order.
    Batch(Vec<Update>),
    /// A change of the active set (`paxos::membership`); applies nothing
    /// to the backend.
    Config(super::membership::ConfigChange),
}

impl Value {
    /// The updates carried (none for a no-op).
    pub fn updates(&self) -> &[Update] {
        match self {
            Value::Noop | Value::Config(_) => &[],
            Value::Batch(updates) => updates,
        }
    }

    /// Payload bytes carried, for batch and frame limits.
    pub fn payload_bytes(&self) -> usize {
        self.updates().iter().map(|u| u.payload.len()).sum()
    }
}
