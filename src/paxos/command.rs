//! What a role asks its driver to do, and the context it is called with.
//!
//! # The driving contract
//!
//! A driver (an actix actor in production, the sim scheduler in tests)
//! calls one handler at a time with a [`Ctx`]. The handler may read and
//! write the [`Kv`] and pushes [`Command`]s into `ctx.out`. After the
//! handler returns, the driver executes the commands in order:
//!
//! 1. `Send { after_sync: false }` may leave at once.
//! 2. `Send { after_sync: true }` leaves only after a `Kv::sync` that
//!    started after the handler returned. Many handlers' writes share one
//!    sync (group commit); their held messages are released together.
//!    A crash before that sync loses both the writes and the messages.
//! 3. `SetTimer` replaces the role's previous timer of the same kind; the
//!    driver calls `on_timer` once `now >= at`.
//! 4. `Apply`, `Answer`, `Refused`, `ReadReady` and `ReadRefused` go to
//!    the backend and the gateway.
//!
//! Handlers never block and never fail: a stale, duplicated or malformed
//! message is dropped (and counted), never a panic. An `assert!` in a role
//! guards a safety invariant; if one fires, that is a protocol bug.

use super::ballot::{NodeId, Slot, Update, UpdateId};
use super::message::{Message, Role};
use crate::rng::Rng;
use crate::storage::kv::Kv;
use crate::time::Time;
use bytes::Bytes;

/// A role's timers. One of each kind per role at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    /// Follower: no word from a leader for too long. Candidate: the
    /// election did not finish; try a higher ballot.
    Election,
    /// Leader: send heartbeats and retransmit unanswered accepts.
    /// Candidate: retransmit unanswered prepares.
    Tick,
    /// Learner: ask a peer for missing chosen slots.
    Fetch,
    /// Applier: retry a backend call that failed retryably.
    ApplyRetry,
    /// Applier: send the digests gathered since the last.
    Digests,
}

/// Why an update was refused before it was proposed. The client may
/// retry blindly: a refused update is never applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No leader is known (an election is under way).
    NoLeader,
    /// The leader's queue is full.
    Overloaded,
}

impl Refusal {
    /// The refusal in words, for the client's 503.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::NoLeader => "no leader elected yet",
            Refusal::Overloaded => "too many updates waiting to be ordered",
        }
    }
}

/// The outcome of one backend call for one update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendReply {
    /// The backend answered. Whether the status is final or retryable is
    /// the applier's decision.
    Response {
        /// The HTTP status.
        status: u16,
        /// The body (in production, an encoded `StoredResponse`).
        body: Bytes,
        /// The response's digest (`apply::digest::response`): what the
        /// nodes compare. Computed by the backend seam, which knows which
        /// parts of the response are the service's answer.
        digest: u64,
    },
    /// No answer (connection refused, reset, timeout): always retried.
    Unreachable {
        /// What went wrong, for the logs.
        reason: String,
    },
}

/// What happened to a client's request, for the gateway of the node that
/// took it (its origin). The one type from role to gateway: the driver
/// passes it on unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// Applier, at the origin: the update was applied here; this is the
    /// local backend's response to it (or, for a client retry, the stored
    /// first answer, with the slot it was first applied in).
    Answer {
        /// The update.
        id: UpdateId,
        /// The slot it was applied in.
        slot: Slot,
        /// The backend's status.
        status: u16,
        /// The backend's body (an encoded `StoredResponse` in production).
        body: Bytes,
    },
    /// Proposer: these updates were never proposed and never will be.
    Refused {
        /// The updates.
        ids: Vec<UpdateId>,
        /// Why.
        why: Refusal,
    },
    /// Proposer: linearizable read `id` may be served from the local
    /// backend once the applied index reaches `index`.
    ReadReady {
        /// The read.
        id: UpdateId,
        /// The read index.
        index: Slot,
    },
    /// Proposer: no read index for `id` (no leader); the read had no
    /// effect and may be retried.
    ReadRefused {
        /// The read.
        id: UpdateId,
        /// Why.
        why: Refusal,
    },
    /// Applier, at the origin, when answers wait for agreement: this
    /// node's response to the update's slot does not agree with a
    /// majority of the nodes (or no majority agrees), so it is not given.
    /// The update was applied.
    Disagreed {
        /// The update.
        id: UpdateId,
        /// Its slot.
        slot: Slot,
        /// A majority answered otherwise (else: no majority agrees).
        majority_differs: bool,
    },
}

impl ClientOutcome {
    /// The request ids this outcome completes.
    pub fn ids(&self) -> &[UpdateId] {
        match self {
            ClientOutcome::Answer { id, .. }
            | ClientOutcome::Disagreed { id, .. }
            | ClientOutcome::ReadReady { id, .. }
            | ClientOutcome::ReadRefused { id, .. } => std::slice::from_ref(id),
            ClientOutcome::Refused { ids, .. } => ids,
        }
    }
}

/// What a handler asks its driver to do (see the contract above).
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Send `msg` to `role` on node `to` (this node's own id for a
    /// message between its roles).
    Send {
        /// The receiving node.
        to: NodeId,
        /// The receiving role.
        role: Role,
        /// The message.
        msg: Message,
        /// Hold it until every write made so far is on disk.
        after_sync: bool,
    },
    /// Call the role's `on_timer(timer)` once `now >= at`, replacing the
    /// role's pending timer of that kind.
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// When, on the node's monotonic clock.
        at: Time,
    },
    /// Applier: send update `index` of `slot` to the local backend and
    /// report the reply with `Applier::on_backend_reply`.
    Apply {
        /// The slot.
        slot: Slot,
        /// The update's position in the slot's batch.
        index: u32,
        /// The update.
        update: Update,
    },
    /// Tell the gateway what became of a client's request.
    Client(ClientOutcome),
}

/// Everything a handler may touch besides its own state.
pub struct Ctx<'a> {
    /// The node's monotonic clock now.
    pub now: Time,
    /// The group's durable tables.
    pub kv: &'a mut dyn Kv,
    /// The role's only source of randomness.
    pub rng: &'a mut Rng,
    /// Where the handler's commands go, in order.
    pub out: &'a mut Vec<Command>,
}

impl Ctx<'_> {
    /// Send at once: the message depends on no write of this handler.
    pub fn send(&mut self, to: NodeId, role: Role, msg: Message) {
        self.out.push(Command::Send {
            to,
            role,
            msg,
            after_sync: false,
        });
    }

    /// Send once every write made so far is on disk.
    pub fn send_durable(&mut self, to: NodeId, role: Role, msg: Message) {
        self.out.push(Command::Send {
            to,
            role,
            msg,
            after_sync: true,
        });
    }

    /// Set (or replace) the role's timer of this kind.
    pub fn set_timer(&mut self, timer: Timer, at: Time) {
        self.out.push(Command::SetTimer { timer, at });
    }

    /// Tell the gateway what became of a client's request.
    pub fn client(&mut self, outcome: ClientOutcome) {
        self.out.push(Command::Client(outcome));
    }
}
