//! Every message the roles exchange, and which role handles it.
//!
//! postcard is not self-describing: the variant order of [`Message`] is
//! the wire protocol. Append new variants at the end; never reorder.

use super::ballot::{Ballot, NodeId, Slot, Update, UpdateId, Value};
use super::members::MemberOp;
use super::membership::Eras;
use serde::{Deserialize, Serialize};

/// The role a message is addressed to on its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Leads: elections, phase 1 and 2, forwarding, read indexes.
    Proposer,
    /// Votes: promises and accepts.
    Acceptor,
    /// Keeps the chosen log.
    Learner,
    /// Applies the log to the backend.
    Applier,
}

/// One accepted (ballot, value) pair an acceptor reports in a promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedEntry {
    /// The slot.
    pub slot: Slot,
    /// The ballot it was accepted at.
    pub ballot: Ballot,
    /// The value accepted.
    pub value: Value,
}

/// What an accepted entry costs a promise page, in bytes: the payloads
/// and client keys it carries, plus an allowance for the slot, ballot
/// and update ids (more than their postcard encoding needs), so a page
/// of many no-ops is bounded too.
pub fn entry_cost(value: &Value) -> usize {
    const ENTRY: usize = 32;
    const UPDATE: usize = 32;
    // A change: its node ids and its reason (bounded by REASON_MAX).
    const CONFIG: usize = 64 + super::membership::REASON_MAX;
    let config = if matches!(value, Value::Config(_)) {
        CONFIG
    } else {
        0
    };
    ENTRY
        + config
        + value
            .updates()
            .iter()
            .map(|u| UPDATE + u.payload.len() + u.key.as_ref().map_or(0, |k| k.len()))
            .sum::<usize>()
}

/// A protocol message. Every field is named for what it says; the
/// variant comments say who sends it to whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a, for every slot from `from_slot` on (Multi-Paxos: one
    /// prepare covers all open slots). `takeover`: the preferred leader
    /// taking leadership back from a live leader (see `Acceptor`).
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The first slot asked about.
        from_slot: Slot,
        /// The preferred leader takes over a live leader.
        takeover: bool,
    },
    /// Phase 1b, one page of it. `chosen_upto` is the acceptor's node's
    /// commit index: slots up to it are chosen, so the new leader must
    /// not propose there (the acceptor may have forgotten what it
    /// accepted there).
    ///
    /// Paging: a page answers the `Prepare` whose `from_slot` it echoes
    /// and reports, in slot order, what the acceptor accepted from that
    /// slot on, up to the acceptor's byte budget (at least one entry).
    /// `next_page: None` says the page reaches to the end (the promise is
    /// complete); `Some(s)` says every slot below `s` is reported and the
    /// candidate asks again, a `Prepare` at the same ballot from `s`.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The acceptor's node's commit index.
        chosen_upto: Slot,
        /// What it accepted in this page's slots, in slot order.
        accepted: Vec<AcceptedEntry>,
        /// The `from_slot` of the prepare this page answers.
        from_slot: Slot,
        /// Where the next page starts; `None`: this is the last.
        next_page: Option<Slot>,
    },
    /// Phase 2a.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The value proposed there.
        value: Value,
    },
    /// Phase 2b: the vote, sent once it is on disk.
    Accepted {
        /// The ballot voted for.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// A refusal of `ballot` (a prepare, accept or stale heartbeat) because
    /// `promised` is higher, so the sender can jump past it.
    Rejected {
        /// The ballot refused.
        ballot: Ballot,
        /// The higher ballot the refuser knows.
        promised: Ballot,
    },
    /// Leader to every proposer: "I lead at `ballot`; my commit is
    /// `commit`". `lease`: the leader has committed every slot an earlier
    /// leadership may have chosen, so `commit` covers everything chosen
    /// before its latest confirmed round, and a follower may date its
    /// read lease from this heartbeat. A fresh leader's heartbeats keep
    /// followers from campaigning but renew no lease.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index.
        commit: Slot,
        /// Whether a follower may renew its read lease from this.
        lease: bool,
    },
    /// Leader to every learner: `value` is chosen in `slot`.
    Decided {
        /// The slot.
        slot: Slot,
        /// Its chosen value.
        value: Value,
    },
    /// Learner to learner: send me the chosen slots from `from_slot` on.
    Fetch {
        /// The first slot wanted.
        from_slot: Slot,
        /// Entries wanted at most.
        max: u32,
    },
    /// Reply to `Fetch`: contiguous chosen entries, and the sender's commit.
    Entries {
        /// Chosen slots and values, contiguous from the one asked for.
        entries: Vec<(Slot, Value)>,
        /// The sender's commit index.
        commit: Slot,
    },
    /// A follower passes client updates to the leader. `hops` bounds how
    /// often an update is passed on.
    Forward {
        /// The updates, in the order their gateway took them.
        updates: Vec<Update>,
        /// How often they were passed on before.
        hops: u8,
    },
    /// The receiver of a `Forward` is not leader (any more). The origin
    /// may pass the updates on again; it must not tell the client they
    /// failed, because a duplicate of the forward may have been proposed.
    ForwardRejected {
        /// The updates, back to their origin.
        updates: Vec<Update>,
        /// How often they were passed on.
        hops: u8,
    },
    /// Local, proposer to learner: the leader says the commit index is
    /// at least `commit` (catch up if behind).
    CommitHint {
        /// A commit index known to be reached.
        commit: Slot,
        /// Who said so (a good peer to fetch from).
        leader: NodeId,
    },
    /// Local, learner to the node's other roles: every slot up to
    /// `commit` is chosen and in the local log.
    Committed {
        /// The learner's commit index.
        commit: Slot,
    },
    /// Read-index, leader to acceptors: "is `ballot` still the highest
    /// you promised?" Round `seq` started after the reads it confirms.
    Confirm {
        /// The leader's ballot.
        ballot: Ballot,
        /// The round.
        seq: u64,
    },
    /// Acceptor to leader: no higher ballot promised as of round `seq`.
    Confirmed {
        /// The leader's ballot.
        ballot: Ballot,
        /// The round.
        seq: u64,
    },
    /// Follower to leader: give me a read index for read `id`.
    ReadIndexRequest {
        /// The read.
        id: UpdateId,
    },
    /// Leader to follower: read `id` may be served once `index` is applied.
    ReadIndexReply {
        /// The read.
        id: UpdateId,
        /// The read index.
        index: Slot,
    },
    /// Reply to `ReadIndexRequest` from a node that is not leader (any
    /// more): no read index; the origin refuses the read at once (a read
    /// has no effect, so refusing it is always safe).
    ReadIndexRefused {
        /// The read.
        id: UpdateId,
    },
    /// Applier to applier: this node's digests of slots it applied (see
    /// `apply::compare`). The receiver answers with its own digests of
    /// those slots when asked, or when it applied them long before: a
    /// node that applies late (catching up, just restarted, cut off for a
    /// while) missed the others' digests, sent when they applied. An
    /// answer is never answered.
    Digests {
        /// (slot, digest of the slot's responses), in slot order.
        entries: Vec<(Slot, u64)>,
        /// Answer with your own digests of these slots.
        ask: bool,
        /// This is an answer.
        answer: bool,
    },
    /// Proposer to proposers, from a node that lost its state and
    /// rebuilds (`paxos::rebuild`): "tell me the highest round you know".
    Rebuilding {
        /// This rebuild's own random number: only answers that echo it
        /// count (an answer to an earlier rebuild may arrive late).
        nonce: u64,
    },
    /// Proposer to a rebuilding proposer: the highest round this node
    /// has used, seen, or promised (its acceptor's promise).
    RebuildRound {
        /// The nonce of the `Rebuilding` this answers.
        nonce: u64,
        /// That round.
        round: u64,
    },
    /// Learner to learner, answering a `Fetch`: the slots asked for were
    /// dropped from this log (compaction) up to `upto`.
    Compacted {
        /// Every slot up to this one is gone here.
        upto: Slot,
        /// The sender's commit index.
        commit: Slot,
    },
    /// Local, learner to applier: no peer has the log from `from` on any
    /// more; the node needs a reseed.
    NeedsReseed {
        /// The first slot missing.
        from: Slot,
    },
    /// Local, applier to learner: a reseed put the backend at `slot`;
    /// the log up to it is no longer needed here.
    Reseeded {
        /// The slot of the reseed.
        slot: Slot,
        /// The donor's eras, if it had any changes.
        eras: Option<Eras>,
    },
    /// Local, proposer to acceptor: rebuilding is over; promise `ballot`
    /// (a leadership begun after every node reported its round) and vote
    /// from now on.
    StartVoting {
        /// The ballot to promise.
        ballot: Ballot,
    },
    /// Local, learner to proposer and applier: the eras the log holds
    /// changed (a change was chosen, or a reseed brought them).
    Reconfigured {
        /// Every era known, oldest first.
        eras: Eras,
    },
    /// Any node to the leader, answering its heartbeat: how far this
    /// node is, and whether its replica may be trusted with a vote.
    Progress {
        /// The heartbeat's ballot.
        ballot: Ballot,
        /// This node's commit index.
        commit: Slot,
        /// This node's applied index.
        applied: Slot,
        /// Not diverged, disabled, needing a reseed, or rebuilding.
        fit: bool,
        /// Its acceptor votes (it is not rebuilding after losing its
        /// state): a voter that does not vote is as good as lost.
        voting: bool,
    },
    /// Leader to a voter: "campaign now" (a leader transfer). The leader
    /// has stopped proposing and its slots are decided.
    TimeoutNow {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index: campaign once the log reaches it.
        commit: Slot,
        /// An operator asked: keep leadership once won.
        by_operator: bool,
    },
    /// A node to the leader: an operator's request about the active set,
    /// numbered by the node that took it.
    MemberOp {
        /// The request's number at its node.
        id: u64,
        /// The request.
        op: MemberOp,
    },
    /// The leader to the node that passed it a `MemberOp`: what it did.
    MemberOpDone {
        /// The request's number.
        id: u64,
        /// What was done, or why not.
        result: Result<String, String>,
    },
    // Learning from the votes (appended: the order is the wire format).
    /// Acceptor to every other learner: its vote (an `Accepted`), once on
    /// disk. A learner that holds the value of the vote itself (its own
    /// acceptor's `Vote`) learns the slot is chosen when a majority of
    /// the slot's era voted for one ballot, without waiting for the
    /// leader's word: a hop sooner than `Decided` (Paxos Made Simple
    /// §2.3, acceptors informing learners directly).
    Voted {
        /// The ballot voted for.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// Acceptor to its own node's learner: what it accepted, once on disk.
    Vote {
        /// The ballot voted for.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The value accepted.
        value: Value,
    },
    /// Leader to a learner whose node voted for `ballot` in `slot`: that
    /// ballot's value is chosen there. The learner has the value (its own
    /// vote), so it does not travel twice; one that lacks it fetches.
    Chosen {
        /// The ballot whose value is chosen.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// Local, learner to itself, held until the sync that covers the
    /// compaction point it wrote: the point `upto` is on disk, so the
    /// store may reclaim the log's entries up to it (`Kv::drop_below`).
    Reclaim {
        /// The compaction point.
        upto: Slot,
    },
}

/// The highest of the numbers pushed into it (for `Message::absurd`).
#[derive(Default)]
struct Highest(u64);

impl Highest {
    fn push(&mut self, n: u64) {
        self.0 = self.0.max(n);
    }
}

impl Extend<u64> for Highest {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, ns: I) {
        for n in ns {
            self.push(n);
        }
    }
}

impl<'a> Extend<&'a u64> for Highest {
    fn extend<I: IntoIterator<Item = &'a u64>>(&mut self, ns: I) {
        for n in ns {
            self.push(*n);
        }
    }
}

/// The highest slot a message may name. No log reaches it (a billion
/// slots a second for 146 years); above it, the roles' `slot + n` could
/// wrap.
pub const SLOT_MAX: Slot = 1 << 62;

/// The highest ballot round a message may carry: a round of `u64::MAX`
/// promised would leave no higher ballot to campaign with.
pub const ROUND_MAX: u64 = 1 << 62;

impl Message {
    /// Why this message cannot come from a correct peer, if it cannot: a
    /// slot beyond [`SLOT_MAX`] or a round beyond [`ROUND_MAX`]. The
    /// driver drops such a message before any role sees it, so that no
    /// peer can make a role's `slot + n` or `round + 1` wrap, or take a
    /// promise that leaves no higher ballot. (Values within the bounds
    /// that a correct peer would never send, a commit index far ahead of
    /// the log, are not caught here: Paxos trusts its peers not to lie;
    /// they are authenticated.) Checked on every message: no allocation
    /// unless it is absurd.
    pub fn absurd(&self) -> Option<String> {
        let mut slots = Highest::default();
        let mut rounds = Highest::default();
        let eras = |e: &Eras, slots: &mut Highest| {
            for era in e.all() {
                slots.extend([era.chosen_at, era.from]);
            }
        };
        match self {
            Message::Prepare {
                ballot, from_slot, ..
            } => {
                rounds.push(ballot.round);
                slots.push(*from_slot);
            }
            Message::Promise {
                ballot,
                chosen_upto,
                accepted,
                from_slot,
                next_page,
            } => {
                rounds.push(ballot.round);
                slots.extend([*chosen_upto, *from_slot]);
                slots.extend(next_page);
                for a in accepted {
                    slots.push(a.slot);
                    rounds.push(a.ballot.round);
                }
            }
            Message::Accept { ballot, slot, .. }
            | Message::Accepted { ballot, slot }
            | Message::Voted { ballot, slot }
            | Message::Vote { ballot, slot, .. }
            | Message::Chosen { ballot, slot } => {
                rounds.push(ballot.round);
                slots.push(*slot);
            }
            Message::Rejected { ballot, promised } => {
                rounds.extend([ballot.round, promised.round]);
            }
            Message::Heartbeat { ballot, commit, .. }
            | Message::TimeoutNow { ballot, commit, .. } => {
                rounds.push(ballot.round);
                slots.push(*commit);
            }
            Message::Decided { slot, .. } => slots.push(*slot),
            Message::Fetch { from_slot, .. } => slots.push(*from_slot),
            Message::Entries { entries, commit } => {
                slots.push(*commit);
                slots.extend(entries.iter().map(|(s, _)| *s));
            }
            Message::CommitHint { commit, .. } | Message::Committed { commit } => {
                slots.push(*commit)
            }
            Message::Confirm { ballot, .. }
            | Message::Confirmed { ballot, .. }
            | Message::StartVoting { ballot } => rounds.push(ballot.round),
            Message::ReadIndexReply { index, .. } => slots.push(*index),
            Message::Digests { entries, .. } => slots.extend(entries.iter().map(|(s, _)| *s)),
            Message::RebuildRound { round, .. } => rounds.push(*round),
            Message::Compacted { upto, commit } => slots.extend([*upto, *commit]),
            Message::NeedsReseed { from } => slots.push(*from),
            Message::Reclaim { upto } => slots.push(*upto),
            Message::Reseeded { slot, eras: e } => {
                slots.push(*slot);
                if let Some(e) = e {
                    eras(e, &mut slots);
                }
            }
            Message::Reconfigured { eras: e } => eras(e, &mut slots),
            Message::Progress {
                ballot,
                commit,
                applied,
                ..
            } => {
                rounds.push(ballot.round);
                slots.extend([*commit, *applied]);
            }
            Message::Forward { .. }
            | Message::ForwardRejected { .. }
            | Message::ReadIndexRequest { .. }
            | Message::ReadIndexRefused { .. }
            | Message::Rebuilding { .. }
            | Message::MemberOp { .. }
            | Message::MemberOpDone { .. } => {}
        }
        if slots.0 > SLOT_MAX {
            let s = slots.0;
            return Some(format!("{} names slot {s}, beyond {SLOT_MAX}", self.kind()));
        }
        if rounds.0 > ROUND_MAX {
            let r = rounds.0;
            return Some(format!(
                "{} carries round {r}, beyond {ROUND_MAX}",
                self.kind()
            ));
        }
        None
    }

    /// Local messages pass between the roles of one node and are never
    /// accepted from the network.
    pub fn is_local_only(&self) -> bool {
        matches!(
            self,
            Message::CommitHint { .. }
                | Message::Committed { .. }
                | Message::StartVoting { .. }
                | Message::NeedsReseed { .. }
                | Message::Reseeded { .. }
                | Message::Reclaim { .. }
                | Message::Reconfigured { .. }
                | Message::Vote { .. }
        )
    }

    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Rejected { .. } => "rejected",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Decided { .. } => "decided",
            Message::Voted { .. } => "voted",
            Message::Vote { .. } => "vote",
            Message::Chosen { .. } => "chosen",
            Message::Fetch { .. } => "fetch",
            Message::Entries { .. } => "entries",
            Message::Forward { .. } => "forward",
            Message::ForwardRejected { .. } => "forward-rejected",
            Message::CommitHint { .. } => "commit-hint",
            Message::Committed { .. } => "committed",
            Message::Confirm { .. } => "confirm",
            Message::Confirmed { .. } => "confirmed",
            Message::ReadIndexRequest { .. } => "read-index-request",
            Message::ReadIndexReply { .. } => "read-index-reply",
            Message::ReadIndexRefused { .. } => "read-index-refused",
            Message::Digests { .. } => "digests",
            Message::Rebuilding { .. } => "rebuilding",
            Message::RebuildRound { .. } => "rebuild-round",
            Message::StartVoting { .. } => "start-voting",
            Message::Compacted { .. } => "compacted",
            Message::NeedsReseed { .. } => "needs-reseed",
            Message::Reseeded { .. } => "reseeded",
            Message::Reclaim { .. } => "reclaim",
            Message::Reconfigured { .. } => "reconfigured",
            Message::Progress { .. } => "progress",
            Message::TimeoutNow { .. } => "timeout-now",
            Message::MemberOp { .. } => "member-op",
            Message::MemberOpDone { .. } => "member-op-done",
        }
    }
}
