//! The proposer: leader election, phase 1 once per leadership, phase 2
//! per slot (Paxos Made Simple §3, "Implementing a State Machine").
//!
//! A follower that hears no leader for a randomised election timeout runs
//! phase 1 for every slot above its commit index with a fresh ballot whose
//! round is persisted first. With a majority of promises it re-proposes,
//! in every slot up to the highest one reported, the value with the
//! highest accepted ballot, or a no-op where nothing was accepted, and
//! only then takes new client values. It commits a no-op of its own
//! ballot at once, so a fresh leader has an entry of its own term.
//!
//! Who votes in a slot is the active set of its era (`membership`): the
//! proposer proposes in slot `s` only once its log reaches `s - ALPHA`
//! (so it knows the era) and a majority of that era promised its ballot;
//! a leader that learns of a new era asks the era's new voters for their
//! promises at the same ballot before it proposes there.
//!
//! The leader also keeps the active set healthy (`members`): it hears
//! every node's progress in answer to its heartbeats, replaces a voter
//! it has not heard from for `member_stale_after` with the most
//! up-to-date healthy backup, swaps preferred members back in, and hands
//! leadership to the preferred leader (a transfer: it stops proposing,
//! lets its slots be decided, and tells the target to campaign at once).

use super::ballot::{Ballot, NodeId, Slot, Update, UpdateId, Value};
use super::command::{ClientOutcome, Ctx, Refusal, Timer};
use super::members::{self, MemberOp, Peer, Transfer};
use super::membership::{ALPHA, ConfigChange, Era, Eras, Membership, quorum};
use super::message::{AcceptedEntry, Message, Role};
use super::rebuild::Rebuild;
use crate::paxos::state::{self, Meta};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The proposer's settings.
#[derive(Clone, Debug)]
pub struct ProposerConfig {
    /// A follower waits between one and two of these without a heartbeat
    /// before it runs for leader (the preferred leader: half to one).
    pub election_timeout: Duration,
    /// A leader's tick: heartbeats, a confirmation round, retransmits.
    pub heartbeat_interval: Duration,
    /// Resend an unanswered prepare or accept after this long.
    pub retransmit_after: Duration,
    /// Slots in phase 2 at once (pipelining depth).
    pub window: usize,
    /// Nagle's rule for slots: while a slot is in phase 2, queued
    /// updates wait for it to be chosen and go together in the next slot,
    /// unless they fill a slot already (then slots pipeline up to
    /// `window`). Off: every update is proposed as soon as the window has
    /// room, mostly one per slot below a window's worth of concurrent
    /// clients.
    pub wait_to_batch: bool,
    /// Updates per slot at most.
    pub batch_updates_max: usize,
    /// Payload bytes per slot at most (one update always fits).
    pub batch_bytes_max: usize,
    /// Updates waiting for a slot at the leader; beyond it, refuse.
    pub queue_max: usize,
    /// How often one update may be passed between proposers.
    pub forward_hops_max: u8,
    /// The leader hands leadership to the preferred leader once that
    /// one has kept up for this long.
    pub takeover_after: Duration,
    /// How often the leader checks the active set.
    pub membership_check: Duration,
    /// A voter not heard from for this long is replaced by a backup.
    pub member_stale_after: Duration,
    /// A backup more than this many slots behind the leader is not
    /// promoted.
    pub promote_lag_max: Slot,
    /// Whether the leader changes the active set by itself.
    pub auto_membership: bool,
}

impl ProposerConfig {
    /// How long a leader may go without knowing whether a slot it
    /// proposed is chosen and still renew read leases: half an election
    /// timeout (see `Proposer::knowledge_horizon`).
    pub fn knowledge_limit(&self) -> Duration {
        self.election_timeout / 2
    }
}

impl Default for ProposerConfig {
    fn default() -> Self {
        ProposerConfig {
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            retransmit_after: Duration::from_millis(200),
            window: 32,
            wait_to_batch: true,
            batch_updates_max: 256,
            batch_bytes_max: 1 << 20,
            queue_max: 4096,
            forward_hops_max: 3,
            takeover_after: Duration::from_millis(2000),
            membership_check: Duration::from_secs(10),
            member_stale_after: Duration::from_secs(30),
            promote_lag_max: 1000,
            auto_membership: true,
        }
    }
}

/// Test-only protocol breakage (see `AcceptorBugs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProposerBugs {
    /// Renew read leases however long ago an unconfirmed slot was
    /// proposed (no knowledge horizon).
    pub lease_beyond_knowledge: bool,
    /// Become leader without phase 1: never learns what may be chosen.
    pub skip_phase1: bool,
    /// Answer read-index requests at once, without a quorum round and
    /// without waiting for this leadership's first entry.
    pub reads_skip_confirm: bool,
    /// Answer read-index requests once this leadership's first entry is
    /// chosen, but without the confirming quorum round.
    pub reads_skip_round: bool,
    /// Never write the round: a restarted proposer may reuse a ballot.
    pub round_not_persisted: bool,
    /// Send a `Prepare` before the sync that covers its round.
    pub prepare_before_sync: bool,
    /// Date the leader's lease by the start of each confirmation round,
    /// answered or not (and so never notice a lost quorum).
    pub lease_unconfirmed: bool,
    /// Give reads the index of what this leader knows is chosen, not of
    /// what it proposed (learners may know more, from the votes).
    pub read_index_chosen_only: bool,
}

/// Phase 1 at one ballot: every voter's promise as its pages arrive. A
/// leader keeps it: when the log brings a new era, its new voters are
/// asked at the same ballot before the leader proposes in its slots.
struct Phase1 {
    ballot: Ballot,
    takeover: bool,
    /// Every asked voter's promise as its pages arrive.
    pages: BTreeMap<NodeId, Paging>,
    /// Voters whose every page has arrived: only these count.
    done: BTreeSet<NodeId>,
    /// The highest commit index any page reported.
    chosen_upto: Slot,
    /// The highest-ballot accepted value per slot across every page of
    /// every acceptor so far (P2c), not proposed yet.
    adopt: BTreeMap<Slot, (Ballot, Value)>,
}

impl Phase1 {
    fn new(ballot: Ballot, takeover: bool) -> Phase1 {
        Phase1 {
            ballot,
            takeover,
            pages: BTreeMap::new(),
            done: BTreeSet::new(),
            chosen_upto: 0,
            adopt: BTreeMap::new(),
        }
    }

    /// Whether a majority of `era` promised.
    fn covers(&self, era: &Era) -> bool {
        era.count(&self.done) >= era.quorum()
    }

    /// `covers` for an active set not yet in the log (a change's).
    fn covers_voters(&self, voters: &[NodeId]) -> bool {
        voters.iter().filter(|n| self.done.contains(n)).count() >= quorum(voters.len())
    }
}

struct Candidate {
    p1: Phase1,
    from_slot: Slot,
}

/// One acceptor's promise while it is being paged in.
struct Paging {
    /// The slot the next page must start at: every slot from the first
    /// one asked up to it is reported. `None`: complete.
    next: Option<Slot>,
    /// When the `Prepare` asking for that page was last sent.
    asked: Time,
}

struct Inflight {
    value: Value,
    votes: BTreeSet<NodeId>,
    /// Last sent (retransmissions move it).
    sent: Time,
    /// First proposed.
    proposed: Time,
}

struct Leading {
    p1: Phase1,
    next_slot: Slot,
    inflight: BTreeMap<Slot, Inflight>,
    /// The last slot this leadership re-proposes what its promises
    /// reported (or its own first no-op). Read indexes are handed out
    /// only once it is chosen: then every value an earlier leader may
    /// have chosen is at or below it. A new era's promises may raise it.
    ready_slot: Slot,
    ready: bool,
    /// Highest slot this leader saw chosen.
    max_decided: Slot,
    /// Read-index confirmation rounds: the latest round started, and the
    /// latest round each acceptor confirmed.
    confirm_seq: u64,
    confirmed: BTreeMap<NodeId, u64>,
    reads: Vec<PendingRead>,
    /// Chosen values our own learner has not committed yet. `Decided` can
    /// be lost, even locally (a learner drops values beyond its buffer),
    /// and once the in-flight entry is gone no one else may hold the
    /// value: resent to our learner every tick until it commits them.
    /// With each, when it was first proposed.
    decided: BTreeMap<Slot, (Value, Time)>,
    /// When this leadership began, for the quorum-contact check.
    since: Time,
    /// When recent rounds started, to date the quorum's confirmations.
    rounds: VecDeque<(u64, Time)>,
    /// The start of the latest round a quorum confirmed: the leader was
    /// still the leader, for a majority, at that moment.
    quorum_seen: Option<Time>,
    /// A change of the active set waiting for the next slot.
    change: Option<ConfigChange>,
    /// The slot of the last change this leadership proposed: it fills
    /// no-ops until the change's window has passed.
    change_at: Option<Slot>,
    /// What each node said in answer to the heartbeats.
    peers: BTreeMap<NodeId, Peer>,
    /// When the active set was last checked.
    checked: Time,
    /// A leader transfer under way.
    transfer: Option<Transfer>,
    /// When the last transfer was given up: the next waits a while.
    transfer_failed: Option<Time>,
    /// Since when this leader has had slots to propose but its log is
    /// too far behind to know their voters.
    blocked_since: Option<Time>,
    /// `Chosen`/`Decided` for voters of the slots, not sent yet. A voter
    /// learns a slot by itself from the votes (`Voted`), so the leader's
    /// word is only a safety net: it goes with the next `Accept` to that
    /// voter (the same write, no wake-up of its own) or at the next
    /// tick, and at most `UNTOLD_MAX` wait per voter. Sent at once, it
    /// cost every voter a message per slot it already knew about.
    untold: BTreeMap<NodeId, Vec<Message>>,
}

impl Leading {
    fn ballot(&self) -> Ballot {
        self.p1.ballot
    }
}

/// Confirmation rounds remembered for dating (older ones are settled).
const ROUNDS_KEPT: usize = 64;

/// `Chosen`/`Decided` messages held for one voter at most (`untold`).
const UNTOLD_MAX: usize = 64;

/// Events kept until the shell drains them (older ones are dropped).
const EVENTS_KEPT: usize = 64;

/// Operator requests' results kept for the node's status.
const OP_RESULTS_KEPT: usize = 16;

/// A read waiting for its confirmation round at the leader.
struct PendingRead {
    id: UpdateId,
    origin: NodeId,
    index: Slot,
    seq: u64,
}

enum Phase {
    Follower,
    Candidate(Candidate),
    /// Boxed: a leader's state is large, and there is one per node.
    Leader(Box<Leading>),
}

/// An update waiting at the leader, with how often it was forwarded.
struct Queued {
    update: Update,
    hops: u8,
    /// Came straight from the local gateway and was never sent anywhere:
    /// only such an update may be refused (FOUNDATION: 503 means not
    /// done). One that was forwarded may have a proposed duplicate.
    fresh: bool,
}

/// A proposer's counts, for observers; the shells read and drain them.
#[derive(Clone, Debug, Default)]
pub struct ProposerCounts {
    /// Elections started.
    pub campaigns: u64,
    /// Values proposed (first proposals, not retransmissions).
    pub values: u64,
    /// Client updates in them.
    pub updates: u64,
    /// Updates per value of the latest proposals (at most
    /// `RECENT_VALUES_MAX`; the oldest go first when no shell drains it).
    pub recent_values: VecDeque<u32>,
}

/// Sizes of proposed values kept for a shell that drains them.
pub const RECENT_VALUES_MAX: usize = 256;

impl ProposerCounts {
    fn note_value(&mut self, updates: usize) {
        self.values += 1;
        self.updates += updates as u64;
        if self.recent_values.len() >= RECENT_VALUES_MAX {
            self.recent_values.pop_front();
        }
        self.recent_values.push_back(updates as u32);
    }
}

/// One node's proposer (see the module comment).
pub struct Proposer {
    id: NodeId,
    /// The configuration file's nodes and preferred voters.
    members: Membership,
    /// The eras of the active set the log made.
    eras: Eras,
    cfg: ProposerConfig,
    bugs: ProposerBugs,
    /// Highest round seen anywhere or used here. Used rounds are on disk.
    round: u64,
    /// The local learner's commit index.
    commit: Slot,
    /// The last leader heard of, when, and its commit index then.
    leader: Option<(NodeId, Ballot)>,
    leader_seen: Time,
    /// The highest commit index a leader's heartbeat reported.
    leader_commit: Slot,
    /// The last heartbeat that renewed this follower's read lease (one
    /// from an established leader; see `Message::Heartbeat`).
    lease_seen: Option<Time>,
    phase: Phase,
    queue: VecDeque<Queued>,
    /// Our own updates that came back from a former leader while no
    /// leader was known, waiting for one (see `on_forward_rejected`).
    bounced: VecDeque<Bounced>,
    /// Messages dropped as stale, duplicated or misaddressed.
    pub dropped: u64,
    /// What this proposer did, for observers (metrics): counts only, and
    /// the sizes of the latest proposed values, bounded.
    pub counts: ProposerCounts,
    /// This node lost its state and rebuilds (`paxos::rebuild`).
    rebuild: Option<Rebuild>,
    /// A heartbeat's established leader and its commit index, heard while
    /// rebuilding: the rebuild may end there once the log reaches it.
    rebuild_seen: Option<(Ballot, Slot)>,
    /// An operator made this node leader (a transfer): while it leads, it
    /// does not hand leadership to the preferred leader.
    chosen_by_operator: bool,
    /// Operators' requests taken here, and what became of them.
    op_results: VecDeque<(u64, Option<Result<String, String>>)>,
    /// What this node did about leadership and the active set, for the
    /// logs: drained by the shell.
    pub events: Vec<String>,
    /// Moves whenever what `eras`, `op_results` or `events` show changes.
    version: u64,
    /// After stepping down for a log too far behind: until this time, do
    /// not campaign before the log reaches within `ALPHA` of this slot.
    hold: Option<(Time, Slot)>,
    /// Elections this node started since it last heard a leader.
    campaigns: u32,
}

/// A bounced update waiting for a leader, and since when.
struct Bounced {
    update: Update,
    hops: u8,
    since: Time,
}

impl Proposer {
    /// Rebuild from the disk (its round, the log's last slot, the eras
    /// the log made) and arm the election timer.
    pub fn recover(
        id: NodeId,
        members: Membership,
        cfg: ProposerConfig,
        bugs: ProposerBugs,
        ctx: &mut Ctx<'_>,
    ) -> Proposer {
        assert!(members.is_member(id), "{id} is not a member");
        assert!(cfg.window > 0 && cfg.batch_updates_max > 0);
        let eras = state::load_eras(&*ctx.kv).unwrap_or_else(|| Eras::genesis(&members.voters));
        let mut p = Proposer {
            id,
            round: state::load_u64(&*ctx.kv, Meta::Round),
            commit: state::last_chosen_slot(&*ctx.kv),
            members,
            eras,
            cfg,
            bugs,
            leader: None,
            leader_seen: ctx.now,
            leader_commit: 0,
            lease_seen: None,
            phase: Phase::Follower,
            queue: VecDeque::new(),
            bounced: VecDeque::new(),
            dropped: 0,
            counts: ProposerCounts::default(),
            rebuild: None,
            rebuild_seen: None,
            chosen_by_operator: false,
            op_results: VecDeque::new(),
            events: Vec::new(),
            version: 0,
            hold: None,
            campaigns: 0,
        };
        if state::load_u64(&*ctx.kv, Meta::Rebuilding) == 1 {
            // Every node is asked, not only the voters: any of them may
            // have led in an earlier era, with rounds this one promised.
            let r = Rebuild::new(id, &p.members.nodes, ctx.rng.next_u64());
            p.ask_rounds(ctx, &r);
            p.rebuild = Some(r);
        }
        p.arm_election(ctx);
        p
    }

    /// The eras of the active set this node knows.
    pub fn eras(&self) -> &Eras {
        &self.eras
    }

    /// The active set governing the next slot.
    pub fn active(&self) -> &Era {
        self.eras.at(self.commit + 1)
    }

    /// Whether this node votes in any slot it may see proposed next.
    fn votes(&self) -> bool {
        self.eras
            .votes_in(self.id, self.commit + 1, self.commit + ALPHA)
    }

    /// Operators' requests taken here: (number, what became of it so far).
    pub fn op_results(&self) -> impl Iterator<Item = &(u64, Option<Result<String, String>>)> {
        self.op_results.iter()
    }

    /// While leading: what each node last reported, and the transfer
    /// under way if any.
    pub fn peers(&self) -> Option<(&BTreeMap<NodeId, Peer>, Option<Transfer>)> {
        match &self.phase {
            Phase::Leader(l) => Some((&l.peers, l.transfer)),
            _ => None,
        }
    }

    /// While this node rebuilds: the voters it still waits for, and the
    /// fence once all reported (see `paxos::rebuild`).
    pub fn rebuilding(&self) -> Option<(Vec<NodeId>, Option<u64>)> {
        self.rebuild
            .as_ref()
            .map(|r| (r.waiting().collect(), r.fence()))
    }

    fn ask_rounds(&self, ctx: &mut Ctx<'_>, r: &Rebuild) {
        for n in r.waiting() {
            let nonce = r.nonce();
            ctx.send(n, Role::Proposer, Message::Rebuilding { nonce });
        }
    }

    /// A rebuilding node's report of the highest round known here: used
    /// or seen by the proposer, or promised by the acceptor.
    fn report_round(&mut self, ctx: &mut Ctx<'_>, to: NodeId, nonce: u64) {
        let promised = state::load_promised(&*ctx.kv).round;
        let round = self.round.max(promised);
        ctx.send(to, Role::Proposer, Message::RebuildRound { nonce, round });
    }

    /// End the rebuild if a leadership after the fence is established
    /// and the local log has reached what it committed.
    fn check_rebuild(&mut self, ctx: &mut Ctx<'_>) {
        let Some(r) = &self.rebuild else {
            return;
        };
        let ballot = match &self.phase {
            Phase::Leader(l) if self.established(l) && r.after_fence(l.ballot()) => {
                Some(l.ballot())
            }
            Phase::Follower => self
                .rebuild_seen
                .filter(|(b, commit)| r.after_fence(*b) && self.commit >= *commit)
                .map(|(b, _)| b),
            _ => None,
        };
        if let Some(ballot) = ballot {
            self.rebuild = None;
            self.rebuild_seen = None;
            ctx.send(self.id, Role::Acceptor, Message::StartVoting { ballot });
        }
    }

    /// Whether this node leads (phase 1 done at its ballot).
    pub fn is_leader(&self) -> bool {
        matches!(self.phase, Phase::Leader(_))
    }

    /// The leader this node would forward to, if it heard from one
    /// recently enough to believe it.
    pub fn leader(&self, now: Time) -> Option<NodeId> {
        self.believed_leader(now).map(|(n, _)| n)
    }

    /// The ballot of the leadership [`Proposer::leader`] names: a new one
    /// means a new leadership, even of the same node (it may have
    /// restarted and lost what it was sent).
    pub fn leadership(&self, now: Time) -> Option<Ballot> {
        self.believed_leader(now).map(|(_, b)| b)
    }

    /// This node if it leads, else the last leader heard of recently
    /// enough to believe it; with its ballot.
    fn believed_leader(&self, now: Time) -> Option<(NodeId, Ballot)> {
        match &self.phase {
            Phase::Leader(l) => Some((self.id, l.ballot())),
            Phase::Candidate(_) => None,
            Phase::Follower => self
                .leader
                .filter(|_| now.since(self.leader_seen) < self.cfg.election_timeout),
        }
    }

    /// When this node last knew the cluster was behind a live leader that
    /// had committed everything earlier leaders may have chosen: a leader,
    /// the start of its latest round that a quorum of acceptors confirmed,
    /// once it is established; a follower, the last heartbeat from an
    /// established leader. The gateway refuses plain reads when this is
    /// older than the lease. (A fresh leader's commit index can be far
    /// behind what its predecessors chose; until it has committed the
    /// slots it took over, a read dated by it could miss acknowledged
    /// updates for a whole lease.)
    pub fn lease_contact(&self) -> Option<Time> {
        match &self.phase {
            Phase::Leader(l) => {
                let horizon = self.knowledge_horizon(l);
                l.quorum_seen
                    .filter(|_| self.established(l))
                    .map(|q| horizon.map_or(q, |h| q.min(h)))
            }
            Phase::Candidate(_) => None,
            Phase::Follower => self.leader.and(self.lease_seen),
        }
    }

    /// Until when this leader's commit index is known to cover every
    /// slot it chose: `knowledge_limit` after it first proposed the
    /// oldest slot it has not committed yet (`None`: it has none). A
    /// leader learns of a choice only from votes, which can be lost and
    /// resent many times; past this horizon it renews no read lease, its
    /// own or its followers', so a plain read never misses a slot chosen
    /// longer ago than the documented bound (`sim/invariants/staleness`).
    fn knowledge_horizon(&self, l: &Leading) -> Option<Time> {
        let oldest = l
            .inflight
            .values()
            .map(|f| f.proposed)
            .chain(l.decided.values().map(|(_, t)| *t))
            .min()?;
        if self.bugs.lease_beyond_knowledge {
            return None;
        }
        Some(oldest + self.cfg.knowledge_limit())
    }

    /// This leadership has committed every slot it took over: every
    /// value an earlier leadership may have chosen is in the local log.
    ///
    /// And a majority of every era that may govern its next slots has
    /// promised (a leader that learned of a new era has not, until the
    /// era's new voters answer): until then a rival may choose there
    /// with that era's voters, and neither reads nor leases may be
    /// dated by this leadership (`docs/membership.md`).
    fn established(&self, l: &Leading) -> bool {
        l.ready_slot > 0 && self.commit >= l.ready_slot && self.covered(l)
    }

    /// Whether a majority of every era governing the slots this leader
    /// may propose in next promised its ballot.
    ///
    /// And of the active set of every change it proposed and has not seen
    /// in its log: that set governs slots beyond these once the change is
    /// chosen, and a leader of a lower ballot that learned the change
    /// first may already choose there with that set's voters. Confirmed
    /// alone shows no higher ballot; only their promises report what they
    /// accepted at a lower one (a reviewer's reading, not yet seen in
    /// the sim).
    fn covered(&self, l: &Leading) -> bool {
        self.bugs.skip_phase1
            || (self
                .eras
                .governing(self.commit + 1, self.commit + ALPHA)
                .all(|e| l.p1.covers(e))
                && Self::pending_change_voters(l).all(|voters| l.p1.covers_voters(voters)))
    }

    /// The highest commit index heard from a leader: what this node knows
    /// is chosen, whether or not its learner has heard yet.
    pub fn leader_commit(&self) -> Slot {
        self.leader_commit
    }

    /// The ballot this node leads at, if it leads.
    pub fn leader_ballot(&self) -> Option<Ballot> {
        match &self.phase {
            Phase::Leader(l) => Some(l.ballot()),
            _ => None,
        }
    }

    /// Updates waiting for a slot at this leader.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The highest round used here or seen anywhere: every round this
    /// node used is at most this, and on disk.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Client updates from the local gateway.
    pub fn submit(&mut self, ctx: &mut Ctx<'_>, updates: Vec<Update>) {
        if self.is_leader() {
            if self.queue.len() + updates.len() > self.cfg.queue_max {
                let ids = updates.iter().map(|u| u.id).collect();
                ctx.client(ClientOutcome::Refused {
                    ids,
                    why: Refusal::Overloaded,
                });
                return;
            }
            self.queue.extend(updates.into_iter().map(|update| Queued {
                update,
                hops: 0,
                fresh: true,
            }));
            self.advance(ctx);
        } else if let Some(leader) = self.leader(ctx.now) {
            let msg = Message::Forward { updates, hops: 0 };
            ctx.send(leader, Role::Proposer, msg);
        } else {
            let ids = updates.iter().map(|u| u.id).collect();
            ctx.client(ClientOutcome::Refused {
                ids,
                why: Refusal::NoLeader,
            });
        }
    }

    /// Promises, votes, rejections, heartbeats, forwards, confirmation
    /// rounds and read indexes.
    pub fn on_message(&mut self, ctx: &mut Ctx<'_>, from: NodeId, msg: Message) {
        match msg {
            Message::Promise {
                ballot,
                chosen_upto,
                accepted,
                from_slot,
                next_page,
            } => self.on_promise(
                ctx,
                from,
                ballot,
                chosen_upto,
                accepted,
                from_slot,
                next_page,
            ),
            Message::Accepted { ballot, slot } => self.on_accepted(ctx, from, ballot, slot),
            Message::Rejected { ballot, promised } => self.on_rejected(ctx, ballot, promised),
            Message::Heartbeat {
                ballot,
                commit,
                lease,
            } => self.on_heartbeat(ctx, from, ballot, commit, lease),
            Message::Forward { updates, hops } => self.on_forward(ctx, from, updates, hops),
            Message::ForwardRejected { updates, hops } => {
                self.on_forward_rejected(ctx, from, updates, hops)
            }
            Message::Committed { commit } if from == self.id => {
                self.on_committed(ctx, commit);
                self.check_rebuild(ctx);
            }
            Message::Reconfigured { eras } if from == self.id => {
                let before = self.eras.latest().chosen_at;
                self.eras = eras;
                let new: Vec<String> = self
                    .eras
                    .all()
                    .iter()
                    .filter(|e| e.chosen_at > before)
                    .map(|e| {
                        format!(
                            "active set {} chosen in slot {}, voting from slot {}: {}",
                            members::names(&e.voters),
                            e.chosen_at,
                            e.from,
                            e.reason
                        )
                    })
                    .collect();
                for event in new {
                    self.note(event);
                }
                self.after_commit(ctx);
            }
            Message::Progress {
                ballot,
                commit,
                applied,
                fit,
                voting,
            } => self.on_progress(ctx, from, ballot, (commit, applied), fit, voting),
            Message::TimeoutNow {
                ballot,
                commit,
                by_operator,
            } => self.on_timeout_now(ctx, from, ballot, commit, by_operator),
            Message::MemberOp { id, op } => {
                let result = self.operate(ctx, &op);
                ctx.send(from, Role::Proposer, Message::MemberOpDone { id, result });
            }
            Message::MemberOpDone { id, result } => self.record_op(id, Some(result)),
            Message::Rebuilding { nonce } if from != self.id && self.members.is_member(from) => {
                self.report_round(ctx, from, nonce)
            }
            Message::RebuildRound { nonce, round } if from != self.id => {
                self.round = self.round.max(round);
                if let Some(r) = self.rebuild.as_mut() {
                    r.report(from, nonce, round);
                }
            }
            Message::Confirmed { ballot, seq } => self.on_confirmed(ctx, from, ballot, seq),
            Message::ReadIndexRequest { id } if id.origin == from => {
                if self.is_leader() {
                    self.start_read(ctx, id, from);
                } else {
                    ctx.send(from, Role::Proposer, Message::ReadIndexRefused { id });
                }
            }
            Message::ReadIndexReply { id, index } if id.origin == self.id => {
                ctx.client(ClientOutcome::ReadReady { id, index });
            }
            Message::ReadIndexRefused { id } if id.origin == self.id => {
                ctx.client(ClientOutcome::ReadRefused {
                    id,
                    why: Refusal::NoLeader,
                });
            }
            _ => self.dropped += 1,
        }
    }

    /// The election timer and the leader's (or candidate's) tick.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        match (timer, &self.phase) {
            (Timer::Election, Phase::Leader(_)) => {}
            (Timer::Election, Phase::Candidate(c)) => {
                let takeover = c.p1.takeover;
                self.start_election(ctx, takeover)
            }
            (Timer::Election, Phase::Follower) if self.rebuild.is_some() => {
                // Rebuilding: ask again for the rounds not reported; once
                // all are in, campaign above the fence (a takeover) unless
                // a leader after the fence is already heard.
                let r = self.rebuild.clone();
                match r.as_ref().and_then(Rebuild::fence) {
                    None => {
                        if let Some(r) = r {
                            self.ask_rounds(ctx, &r);
                        }
                        self.arm_election(ctx);
                    }
                    Some(_) if self.rebuild_seen.is_some() || self.held(ctx) => {
                        self.arm_election(ctx)
                    }
                    Some(_) => self.start_election(ctx, true),
                }
            }
            (Timer::Election, Phase::Follower) => {
                let quiet = ctx.now.since(self.leader_seen) >= self.cfg.election_timeout;
                if (self.leader.is_none() || quiet) && self.votes() && !self.held(ctx) {
                    self.start_election(ctx, false);
                } else {
                    self.arm_election(ctx);
                }
            }
            (Timer::Tick, Phase::Candidate(_)) => {
                self.retransmit_prepare(ctx);
                ctx.set_timer(Timer::Tick, ctx.now + self.cfg.retransmit_after);
            }
            (Timer::Tick, Phase::Leader(_)) => self.leader_tick(ctx),
            _ => {}
        }
    }

    /// Whether this node stepped down for a lagging log lately and has
    /// not caught up since: it lets others lead meanwhile.
    fn held(&self, ctx: &Ctx<'_>) -> bool {
        self.hold
            .is_some_and(|(until, need)| ctx.now < until && self.commit + ALPHA < need)
    }

    /// Randomised, and doubled after each election this node started
    /// that brought no leader (up to eight times): an election whose
    /// promises come in many pages can last longer than a timeout, and
    /// candidates that keep pre-empting each other would otherwise
    /// never let one finish.
    fn election_timeout(&self, ctx: &mut Ctx<'_>) -> Duration {
        let backoff = 1u64 << self.campaigns.saturating_sub(1).min(3);
        let base = self.cfg.election_timeout.as_micros() as u64 * backoff;
        let (lo, hi) = if self.active().voters.first() == Some(&self.id) {
            (base / 2, base)
        } else {
            (base, 2 * base)
        };
        Duration::from_micros(ctx.rng.range(lo, hi))
    }

    fn arm_election(&mut self, ctx: &mut Ctx<'_>) {
        let at = ctx.now + self.election_timeout(ctx);
        ctx.set_timer(Timer::Election, at);
    }

    fn start_election(&mut self, ctx: &mut Ctx<'_>, takeover: bool) {
        if let Some(r) = &self.rebuild {
            let Some(fence) = r.fence() else {
                // No ballot is safe before every voter reported.
                self.arm_election(ctx);
                return;
            };
            self.round = self.round.max(fence);
        }
        self.round += 1;
        self.campaigns += 1;
        if !self.bugs.round_not_persisted {
            state::store_u64(ctx.kv, Meta::Round, self.round);
        }
        let ballot = Ballot {
            round: self.round,
            node: self.id,
        };
        self.refuse_queue(ctx);
        let from_slot = self.commit + 1;
        let c = Candidate {
            p1: Phase1::new(ballot, takeover),
            from_slot,
        };
        if self.bugs.skip_phase1 {
            self.become_leader(ctx, c);
            return;
        }
        self.counts.campaigns += 1;
        self.phase = Phase::Candidate(c);
        self.ask_missing(ctx);
        self.arm_election(ctx);
        ctx.set_timer(Timer::Tick, ctx.now + self.cfg.retransmit_after);
    }

    /// Ask for a promise at this ballot every voter of the eras governing
    /// the slots this node may propose in next (up to `ALPHA` past its
    /// log) that was not asked yet: a candidate's first prepares, and a
    /// leader's when its log brings an era with new voters. A leader asks
    /// from its next slot: it proposed below it already.
    fn ask_missing(&mut self, ctx: &mut Ctx<'_>) {
        let mut voters: BTreeSet<NodeId> = self
            .eras
            .governing(self.commit + 1, self.commit + ALPHA)
            .flat_map(|e| e.voters.iter().copied())
            .collect();
        if let Phase::Leader(l) = &self.phase {
            voters.extend(Self::pending_change_voters(l).flatten());
        }
        let bugs = self.bugs;
        let (p1, from_slot) = match &mut self.phase {
            Phase::Candidate(c) => (&mut c.p1, c.from_slot),
            Phase::Leader(l) => (&mut l.p1, l.next_slot),
            Phase::Follower => return,
        };
        for v in voters {
            if p1.pages.contains_key(&v) {
                continue;
            }
            let msg = Message::Prepare {
                ballot: p1.ballot,
                from_slot,
                takeover: p1.takeover,
            };
            send_prepare(bugs, ctx, v, msg);
            let next = Some(from_slot);
            p1.pages.insert(
                v,
                Paging {
                    next,
                    asked: ctx.now,
                },
            );
        }
    }

    /// Ask again every voter whose promise is incomplete and whose last
    /// request (for its first page or a later one) is unanswered for
    /// `retransmit_after`: the request or its page may have been lost.
    fn retransmit_prepare(&mut self, ctx: &mut Ctx<'_>) {
        let bugs = self.bugs;
        let p1 = match &mut self.phase {
            Phase::Candidate(c) => &mut c.p1,
            Phase::Leader(l) => &mut l.p1,
            Phase::Follower => return,
        };
        let (ballot, takeover) = (p1.ballot, p1.takeover);
        for (&v, p) in p1.pages.iter_mut() {
            let Some(from_slot) = p.next else {
                continue;
            };
            if ctx.now.since(p.asked) < self.cfg.retransmit_after {
                continue;
            }
            p.asked = ctx.now;
            let msg = Message::Prepare {
                ballot,
                from_slot,
                takeover,
            };
            send_prepare(bugs, ctx, v, msg);
        }
    }

    /// One page of a voter's promise.
    ///
    /// # Why paging keeps phase 1 exact
    ///
    /// One acceptor's pages together say what a single unpaged promise
    /// would have said at the moment it promised `ballot`:
    ///
    /// 1. Its first page leaves only once the promise is on disk, and it
    ///    answers a request for a later page only while its promised
    ///    ballot is still exactly `ballot` (higher: it rejects, and we
    ///    step down). So from its first page to its last it accepts
    ///    nothing below `ballot`.
    /// 2. Nor at `ballot`: only this proposer proposes at `ballot` (the
    ///    node is part of the ballot, the round is persisted before use)
    ///    and it proposes only as leader, after the last page it counts.
    ///    An `Accept` at `ballot` reaching the acceptor later is our own
    ///    and changes nothing we relied on. So above its commit index its
    ///    accepted entries are the same at every page: the pages are
    ///    slices of one snapshot, whatever time passes between them.
    /// 3. What can change between pages is its commit index: entries at
    ///    or below it are forgotten. Every page's `chosen_upto` is a true
    ///    "chosen up to here", so we take the highest over all pages and
    ///    propose nothing at or below it, exactly as for one promise.
    /// 4. A page counts only if it starts exactly where that acceptor's
    ///    previous page said to continue, and `next_page` only moves
    ///    forward; so its counted pages cover every slot from our
    ///    `from_slot` on with no gap, and its promise counts toward the
    ///    quorum only once a page says it reaches the end. A duplicated,
    ///    reordered or retransmitted page (another start), a page of an
    ///    old ballot, and any page after a restarted election (a new
    ///    `Candidate` at a higher ballot) are dropped.
    /// 5. Entries of acceptors whose promise is not complete yet are
    ///    merged too. That is safe: each is a value its acceptor accepted
    ///    below `ballot`. If `v` was chosen in slot `s` at `b0 < ballot`,
    ///    every value accepted in `s` at a ballot in `[b0, ballot)` is `v`
    ///    (the Paxos invariant), and the complete quorum holds an entry
    ///    with a ballot at least `b0`; so the highest ballot over any
    ///    superset of the quorum's reports still carries `v`.
    #[allow(clippy::too_many_arguments)]
    fn on_promise(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        ballot: Ballot,
        chosen_upto: Slot,
        accepted: Vec<AcceptedEntry>,
        from_slot: Slot,
        next_page: Option<Slot>,
    ) {
        let bugs = self.bugs;
        // A leader takes nothing below its next slot: it proposed there.
        let (p1, floor, candidate) = match &mut self.phase {
            Phase::Candidate(c) => (&mut c.p1, c.from_slot, true),
            Phase::Leader(l) => (&mut l.p1, l.next_slot, false),
            Phase::Follower => {
                self.dropped += 1;
                return;
            }
        };
        if p1.ballot != ballot {
            self.dropped += 1;
            return;
        }
        let Some(p) = p1.pages.get_mut(&from) else {
            // Not asked: not a voter.
            self.dropped += 1;
            return;
        };
        // Not the page we wait for: a duplicate, a reordered one, or one
        // of an acceptor already complete.
        if p.next != Some(from_slot) {
            self.dropped += 1;
            return;
        }
        // A page reports exactly [from_slot, next_page): anything else is
        // malformed, and a page that does not move forward would stall.
        let end = next_page.unwrap_or(Slot::MAX);
        let in_page = accepted.iter().all(|e| e.slot >= from_slot && e.slot < end);
        if next_page.is_some_and(|n| n <= from_slot) || !in_page {
            self.dropped += 1;
            return;
        }
        p.next = next_page;
        if next_page.is_some() {
            p.asked = ctx.now;
        }
        let raised = chosen_upto > p1.chosen_upto;
        p1.chosen_upto = p1.chosen_upto.max(chosen_upto);
        if candidate && raised && chosen_upto > self.commit {
            // A candidate whose log lags may need eras it has not learned
            // (its next slots may be governed by voters it does not know
            // yet): its learner catches up meanwhile.
            let msg = Message::CommitHint {
                commit: chosen_upto,
                leader: from,
            };
            ctx.send(self.id, Role::Learner, msg);
        }
        for e in accepted {
            if e.slot < floor {
                continue;
            }
            match p1.adopt.get(&e.slot) {
                Some((b, _)) if *b >= e.ballot => {}
                _ => {
                    p1.adopt.insert(e.slot, (e.ballot, e.value));
                }
            }
        }
        if let Some(next) = next_page {
            let msg = Message::Prepare {
                ballot,
                from_slot: next,
                takeover: p1.takeover,
            };
            send_prepare(bugs, ctx, from, msg);
            if candidate {
                // The election is progressing: give it the time it needs.
                // One acceptor has finitely many pages (by 2, it adds no
                // entries meanwhile), so this postpones the timer boundedly.
                self.arm_election(ctx);
            }
            return;
        }
        p1.done.insert(from);
        self.after_promise(ctx);
    }

    /// A promise is complete. A candidate leads once a majority of every
    /// era governing its next slots promised; a leader re-proposes first
    /// whatever a new era's voters reported.
    fn after_promise(&mut self, ctx: &mut Ctx<'_>) {
        let (lo, hi) = (self.commit + 1, self.commit + ALPHA);
        match &mut self.phase {
            Phase::Candidate(c) => {
                if !self.eras.governing(lo, hi).all(|e| c.p1.covers(e)) {
                    return;
                }
                let Phase::Candidate(c) = std::mem::replace(&mut self.phase, Phase::Follower)
                else {
                    unreachable!("matched above");
                };
                self.become_leader(ctx, c);
            }
            Phase::Leader(l) => {
                // What the new voters reported, and what they say is
                // chosen, is committed before reads and leases resume.
                let top = l.p1.adopt.keys().next_back().copied().unwrap_or(0);
                let top = top.max(l.p1.chosen_upto);
                if top > l.ready_slot {
                    l.ready_slot = top;
                    l.ready = self.commit >= top;
                }
                if l.p1.chosen_upto > self.commit {
                    let msg = Message::CommitHint {
                        commit: l.p1.chosen_upto,
                        leader: self.id,
                    };
                    ctx.send(self.id, Role::Learner, msg);
                }
                self.advance(ctx);
                // Reads may have waited for these promises.
                self.complete_reads(ctx);
            }
            Phase::Follower => {}
        }
    }

    /// Phase 1 is done: adopt what may be chosen, fill the gaps with
    /// no-ops, then lead.
    fn become_leader(&mut self, ctx: &mut Ctx<'_>, c: Candidate) {
        let mut p1 = c.p1;
        let chosen_upto = p1.chosen_upto.max(self.commit);
        // Highest-ballot value per open slot (P2c), merged page by page.
        p1.adopt.retain(|&slot, _| slot > chosen_upto);
        let top = p1.adopt.keys().next_back().copied().unwrap_or(0);
        // Everything reported is re-proposed first; with nothing
        // reported, a no-op of our own ballot.
        let ready_slot = top.max(chosen_upto + 1);
        let ballot = p1.ballot;
        self.phase = Phase::Leader(Box::new(Leading {
            p1,
            next_slot: chosen_upto + 1,
            inflight: BTreeMap::new(),
            ready_slot,
            ready: false,
            max_decided: 0,
            confirm_seq: 0,
            confirmed: BTreeMap::new(),
            reads: Vec::new(),
            decided: BTreeMap::new(),
            since: ctx.now,
            rounds: VecDeque::new(),
            quorum_seen: None,
            change: None,
            change_at: None,
            peers: BTreeMap::new(),
            checked: ctx.now,
            transfer: None,
            transfer_failed: None,
            blocked_since: None,
            untold: BTreeMap::new(),
        }));
        self.leader = Some((self.id, ballot));
        self.leader_seen = ctx.now;
        self.campaigns = 0;
        self.note(format!("leads at ballot {ballot}"));
        if chosen_upto > self.commit {
            let msg = Message::CommitHint {
                commit: chosen_upto,
                leader: self.id,
            };
            ctx.send(self.id, Role::Learner, msg);
        }
        // Voters of an era the candidate did not need yet (beyond its
        // first slots) are asked now, so the leader can go on there.
        if !self.bugs.skip_phase1 {
            self.ask_missing(ctx);
        }
        self.advance(ctx);
        self.heartbeat(ctx);
        ctx.set_timer(Timer::Tick, ctx.now + self.cfg.heartbeat_interval);
        self.resend_bounced(ctx);
    }

    /// What the leader proposes next, if it may propose now.
    fn next_value(&mut self) -> Option<Value> {
        let fill_to = self.fill_to();
        let Phase::Leader(l) = &mut self.phase else {
            return None;
        };
        let slot = l.next_slot;
        // The era of `slot` is known only once the log reaches
        // `slot - ALPHA`; a majority of it must have promised.
        let promised = l.p1.covers(self.eras.at(slot)) || self.bugs.skip_phase1;
        if slot > self.commit + ALPHA || !promised {
            return None;
        }
        if slot <= l.ready_slot {
            return Some(l.p1.adopt.remove(&slot).map_or(Value::Noop, |(_, v)| v));
        }
        if l.transfer.is_some() || l.inflight.len() >= self.cfg.window {
            return None;
        }
        if let Some(change) = l.change.take() {
            l.change_at = Some(slot);
            return Some(Value::Config(change));
        }
        if !self.queue.is_empty() {
            // Every slot costs each node its messages, its records and
            // its share of the memtable flushes, whatever it carries: at
            // 16 clients on two cores, one update a slot spent the CPU
            // that bounded the rate, and the flushes, coming at once on
            // every node, made the tail. Waiting for the slot in flight
            // gathers what arrives meanwhile: +20% updates a second at 16
            // clients and +30% at 256 through the leader, p99 -30% (wrk,
            // three nodes on loopback). What the wait costs is latency at
            // light load on a slow network: up to one round more.
            if self.cfg.wait_to_batch && !l.inflight.is_empty() && !self.queue_fills_a_slot() {
                return None;
            }
            return Some(Value::Batch(self.take_batch()));
        }
        // A change waits for its window: no-ops bring it into effect.
        (slot < fill_to).then_some(Value::Noop)
    }

    /// The first slot of the newest era known or proposed: until then the
    /// leader fills idle slots with no-ops.
    fn fill_to(&self) -> Slot {
        let proposed = match &self.phase {
            Phase::Leader(l) => l.change_at.map_or(0, |r| r + ALPHA),
            _ => 0,
        };
        self.eras.latest().from.max(proposed)
    }

    /// Propose in the next slots while the rules allow: what phase 1
    /// reported first, then a waiting change, then client updates, then
    /// no-ops while a change waits for its window.
    fn advance(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            if let Phase::Leader(l) = &mut self.phase {
                l.next_slot = l.next_slot.max(self.commit + 1).max(l.p1.chosen_upto + 1);
                // Reports for slots chosen meanwhile are not needed.
                if l.p1
                    .adopt
                    .first_key_value()
                    .is_some_and(|(s, _)| *s < l.next_slot)
                {
                    l.p1.adopt = l.p1.adopt.split_off(&l.next_slot);
                }
            }
            let Some(value) = self.next_value() else {
                return;
            };
            let Phase::Leader(l) = &mut self.phase else {
                return;
            };
            let slot = l.next_slot;
            l.next_slot += 1;
            self.propose(ctx, slot, value);
        }
    }

    fn propose(&mut self, ctx: &mut Ctx<'_>, slot: Slot, value: Value) {
        let Phase::Leader(l) = &mut self.phase else {
            unreachable!("only a leader proposes");
        };
        let ballot = l.ballot();
        self.counts.note_value(value.updates().len());
        for &v in &self.eras.at(slot).voters {
            Self::tell(ctx, l, v);
            let msg = Message::Accept {
                ballot,
                slot,
                value: value.clone(),
            };
            ctx.send(v, Role::Acceptor, msg);
        }
        let change = matches!(value, Value::Config(_));
        let fresh = Inflight {
            value,
            votes: BTreeSet::new(),
            sent: ctx.now,
            proposed: ctx.now,
        };
        assert!(
            l.inflight.insert(slot, fresh).is_none(),
            "slot {slot} proposed twice"
        );
        if change && !self.bugs.skip_phase1 {
            // Its voters' promises, which reads wait for (`covered`).
            self.ask_missing(ctx);
        }
    }

    /// Whether the queue holds a slot's worth: as many updates or bytes
    /// as `take_batch` puts in one slot.
    fn queue_fills_a_slot(&self) -> bool {
        if self.queue.len() >= self.cfg.batch_updates_max {
            return true;
        }
        let mut bytes = 0;
        self.queue.iter().any(|q| {
            bytes += q.update.payload.len();
            bytes > self.cfg.batch_bytes_max
        })
    }

    /// Queued updates for one slot, up to the batch bounds.
    fn take_batch(&mut self) -> Vec<Update> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(q) = self.queue.front() {
            let size = q.update.payload.len();
            let full = batch.len() >= self.cfg.batch_updates_max
                || (!batch.is_empty() && bytes + size > self.cfg.batch_bytes_max);
            if full {
                break;
            }
            bytes += size;
            if let Some(q) = self.queue.pop_front() {
                batch.push(q.update);
            }
        }
        batch
    }

    fn on_accepted(&mut self, ctx: &mut Ctx<'_>, from: NodeId, ballot: Ballot, slot: Slot) {
        let era = self.eras.at(slot);
        let (quorum, voter) = (era.quorum(), era.is_voter(from));
        let Phase::Leader(l) = &mut self.phase else {
            self.dropped += 1;
            return;
        };
        let current = l.ballot() == ballot;
        let Some(entry) = l.inflight.get_mut(&slot) else {
            self.dropped += 1;
            return;
        };
        if !current || !voter {
            self.dropped += 1;
            return;
        }
        entry.votes.insert(from);
        if entry.votes.len() < quorum {
            return;
        }
        // Chosen: a majority of the slot's era accepted this ballot's
        // value in this slot.
        let Some(entry) = l.inflight.remove(&slot) else {
            unreachable!("looked up above");
        };
        l.max_decided = l.max_decided.max(slot);
        if slot == l.ready_slot {
            l.ready = true;
        }
        if slot > self.commit {
            l.decided
                .insert(slot, (entry.value.clone(), entry.proposed));
        }
        // A node that voted for the value has it: it hears only that it
        // is chosen (its learner may know already, from the votes).
        let voters = &self.eras.at(slot).voters;
        for &n in &self.members.nodes {
            let msg = if entry.votes.contains(&n) {
                Message::Chosen { ballot, slot }
            } else {
                Message::Decided {
                    slot,
                    value: entry.value.clone(),
                }
            };
            // Our own learner and nodes that learn only from the leader
            // (non-voters hold no vote to learn from) hear it now.
            if n == self.id || !voters.contains(&n) {
                ctx.send(n, Role::Learner, msg);
                continue;
            }
            let held = l.untold.entry(n).or_default();
            held.push(msg);
            if held.len() >= UNTOLD_MAX {
                Self::send_held(ctx, n, held);
            }
        }
        self.advance(ctx);
        self.complete_reads(ctx);
        self.drive_transfer(ctx);
    }

    /// Send voter `n` the news held for it (`untold`).
    fn tell(ctx: &mut Ctx<'_>, l: &mut Leading, n: NodeId) {
        if let Some(held) = l.untold.get_mut(&n) {
            Self::send_held(ctx, n, held);
        }
    }

    fn tell_all(ctx: &mut Ctx<'_>, l: &mut Leading) {
        for (&n, held) in l.untold.iter_mut() {
            Self::send_held(ctx, n, held);
        }
    }

    fn send_held(ctx: &mut Ctx<'_>, n: NodeId, held: &mut Vec<Message>) {
        for msg in held.drain(..) {
            ctx.send(n, Role::Learner, msg);
        }
    }

    fn on_rejected(&mut self, ctx: &mut Ctx<'_>, ballot: Ballot, promised: Ballot) {
        if promised <= ballot {
            self.dropped += 1;
            return;
        }
        self.round = self.round.max(promised.round);
        let mine = match &self.phase {
            Phase::Candidate(c) => c.p1.ballot == ballot,
            Phase::Leader(l) => l.ballot() == ballot,
            Phase::Follower => false,
        };
        if mine {
            self.step_down(ctx);
        }
    }

    fn step_down(&mut self, ctx: &mut Ctx<'_>) {
        self.chosen_by_operator = false;
        if let Phase::Leader(l) = &self.phase {
            let ballot = l.ballot();
            self.note(format!("stops leading at ballot {ballot}"));
        }
        if let Phase::Leader(l) = &mut self.phase {
            self.leader = None;
            // True whoever leads next.
            Self::tell_all(ctx, l);
            // Reads have no effect, so refusing them is always safe;
            // remote ones are left to their origin's deadline.
            for r in l.reads.drain(..) {
                if r.origin == self.id {
                    ctx.client(ClientOutcome::ReadRefused {
                        id: r.id,
                        why: Refusal::NoLeader,
                    });
                }
            }
        }
        self.phase = Phase::Follower;
        self.refuse_queue(ctx);
        self.arm_election(ctx);
    }

    /// Queued updates were never proposed by us: fresh local ones are
    /// refused, others go back to their origin, which may pass them on.
    fn refuse_queue(&mut self, ctx: &mut Ctx<'_>) {
        let mut local = Vec::new();
        let mut remote: BTreeMap<NodeId, (Vec<Update>, u8)> = BTreeMap::new();
        for q in self.queue.drain(..) {
            if q.fresh {
                local.push(q.update.id);
            } else if q.update.id.origin == self.id {
                // Ours, but it was forwarded once: its fate is unknown, so
                // the client's deadline answers (504), never a refusal.
                self.dropped += 1;
            } else {
                let e = remote.entry(q.update.id.origin).or_default();
                e.0.push(q.update);
                e.1 = e.1.max(q.hops);
            }
        }
        if !local.is_empty() {
            ctx.client(ClientOutcome::Refused {
                ids: local,
                why: Refusal::NoLeader,
            });
        }
        for (origin, (updates, hops)) in remote {
            ctx.send(
                origin,
                Role::Proposer,
                Message::ForwardRejected { updates, hops },
            );
        }
    }

    fn on_heartbeat(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        lease: bool,
    ) {
        if ballot.node != from || from == self.id {
            self.dropped += 1;
            return;
        }
        self.round = self.round.max(ballot.round);
        let known = match &self.phase {
            Phase::Leader(l) => Some(l.ballot()),
            Phase::Candidate(c) => Some(c.p1.ballot),
            Phase::Follower => self.leader.map(|(_, b)| b),
        };
        if let Some(known) = known.filter(|k| *k > ballot) {
            // A deposed leader: tell it, so it stops forwarding to itself.
            ctx.send(
                from,
                Role::Proposer,
                Message::Rejected {
                    ballot,
                    promised: known,
                },
            );
            return;
        }
        if !matches!(self.phase, Phase::Follower) {
            self.step_down(ctx);
        }
        if self.leader.map(|(n, _)| n) != Some(from) {
            self.chosen_by_operator = false;
        }
        self.campaigns = 0;
        self.leader = Some((from, ballot));
        self.leader_seen = ctx.now;
        self.leader_commit = self.leader_commit.max(commit);
        if lease {
            self.lease_seen = Some(ctx.now);
            if self.rebuild.is_some() {
                self.rebuild_seen = Some((ballot, commit))
                    .filter(|(b, _)| self.rebuild.as_ref().is_some_and(|r| r.after_fence(*b)));
                self.check_rebuild(ctx);
            }
        }
        self.resend_bounced(ctx);
        if commit > self.commit {
            ctx.send(
                self.id,
                Role::Learner,
                Message::CommitHint {
                    commit,
                    leader: from,
                },
            );
        }
        self.report_progress(ctx, from, ballot);
    }

    /// Answer a leader's heartbeat with this node's progress and fitness
    /// (the leader's membership decisions rest on these).
    fn report_progress(&mut self, ctx: &mut Ctx<'_>, to: NodeId, ballot: Ballot) {
        let applied = state::load_u64(&*ctx.kv, Meta::Applied);
        let fit = self.fit(ctx);
        let msg = Message::Progress {
            ballot,
            commit: self.commit,
            applied,
            fit,
            voting: self.rebuild.is_none(),
        };
        ctx.send(to, Role::Proposer, msg);
    }

    /// Whether this node's replica may be trusted with a vote (and with
    /// leadership): not diverged, disabled, needing a reseed, or
    /// rebuilding.
    fn fit(&self, ctx: &Ctx<'_>) -> bool {
        let s = state::load_node_state(&*ctx.kv);
        s.disabled.is_none()
            && s.diverged.is_none()
            && s.needs_reseed.is_none()
            && self.rebuild.is_none()
    }

    fn on_progress(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        ballot: Ballot,
        (commit, applied): (Slot, Slot),
        fit: bool,
        voting: bool,
    ) {
        let member = self.members.is_member(from) && from != self.id;
        let Phase::Leader(l) = &mut self.phase else {
            self.dropped += 1;
            return;
        };
        if l.ballot() != ballot || !member {
            self.dropped += 1;
            return;
        }
        // Kept up: close enough to propose at once if it led (`ALPHA`).
        let kept_up = fit && commit + ALPHA >= self.commit;
        let before = l.peers.get(&from);
        let since = before.and_then(|p| p.caught_up_since);
        let not_voting = before.and_then(|p| p.not_voting_since);
        let peer = Peer {
            heard: ctx.now,
            commit,
            applied,
            fit,
            caught_up_since: kept_up.then(|| since.unwrap_or(ctx.now)),
            not_voting_since: (!voting).then(|| not_voting.unwrap_or(ctx.now)),
        };
        l.peers.insert(from, peer);
    }

    /// The leader told this node to campaign (a transfer).
    fn on_timeout_now(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        ballot: Ballot,
        commit: Slot,
        by_operator: bool,
    ) {
        let from_leader = self.leader == Some((from, ballot));
        let follower = matches!(self.phase, Phase::Follower);
        // Too far behind the leader's last slot, it could not propose once
        // elected (`next_value`): it does not take leadership then.
        let close = self.commit + ALPHA >= commit;
        if !from_leader || !follower || !self.votes() || self.rebuild.is_some() || !close {
            self.dropped += 1;
            return;
        }
        self.chosen_by_operator = by_operator;
        self.note(format!("{from} hands leadership over; campaigning"));
        self.start_election(ctx, true);
    }

    fn note(&mut self, event: String) {
        self.version += 1;
        if self.events.len() < EVENTS_KEPT {
            self.events.push(event);
        }
    }

    /// Moves whenever the eras, the operators' results or the events
    /// change (the shell publishes them then).
    pub fn version(&self) -> u64 {
        self.version
    }

    fn leader_tick(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        // Check-quorum: a leader no majority has confirmed for an
        // election timeout steps down, so its node's clients are refused
        // quickly instead of waiting on a leader that cannot decide.
        let contact = l.quorum_seen.unwrap_or(l.since).max(l.since);
        if ctx.now.since(contact) >= self.cfg.election_timeout {
            self.step_down(ctx);
            return;
        }
        for (&slot, (value, _)) in &l.decided {
            let msg = Message::Decided {
                slot,
                value: value.clone(),
            };
            ctx.send(self.id, Role::Learner, msg);
        }
        // A leader whose log is too far behind to know the voters of the
        // slots it must propose in next (it won an election with a
        // lagging log: a node that lost its disk, or was cut off) holds
        // up every write while it catches up, which may take long (or
        // need a reseed). It lets a node with a fuller log lead.
        let gated = l.next_slot > self.commit + ALPHA;
        let work = l.next_slot <= l.ready_slot || !self.queue.is_empty() || l.change.is_some();
        l.blocked_since = (gated && work).then(|| l.blocked_since.unwrap_or(ctx.now));
        if l.blocked_since
            .is_some_and(|t| ctx.now.since(t) >= self.cfg.election_timeout * 2)
        {
            let need = l.next_slot;
            self.hold = Some((ctx.now + self.cfg.election_timeout * 10, need));
            self.note(format!(
                "steps down: its log ends at {} and it must propose in slot {need}; catching up first",
                self.commit
            ));
            self.step_down(ctx);
            return;
        }
        self.heartbeat(ctx);
        let sets = self.confirm_sets();
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        Self::tell_all(ctx, l);
        Self::start_round(ctx, l, &sets, self.bugs);
        let ballot = l.ballot();
        for (&slot, entry) in l.inflight.iter_mut() {
            if ctx.now.since(entry.sent) < self.cfg.retransmit_after {
                continue;
            }
            entry.sent = ctx.now;
            for &v in &self.eras.at(slot).voters {
                if !entry.votes.contains(&v) {
                    let msg = Message::Accept {
                        ballot,
                        slot,
                        value: entry.value.clone(),
                    };
                    ctx.send(v, Role::Acceptor, msg);
                }
            }
        }
        self.retransmit_prepare(ctx);
        self.check_members(ctx);
        self.drive_transfer(ctx);
        ctx.set_timer(Timer::Tick, ctx.now + self.cfg.heartbeat_interval);
    }

    /// What the leader knows for its membership decisions.
    fn view(&self, now: Time) -> Option<members::View<'_>> {
        let Phase::Leader(l) = &self.phase else {
            return None;
        };
        Some(members::View {
            now,
            me: self.id,
            commit: self.commit,
            peers: &l.peers,
            since: l.since,
            stale_after: self.cfg.member_stale_after,
            recent: self.cfg.election_timeout,
            lag_max: self.cfg.promote_lag_max,
            nodes: &self.members.nodes,
            preferred: &self.members.voters,
        })
    }

    /// Why no change of the active set may be made now, if one may not:
    /// one is waiting for its window, or being decided.
    fn change_pending(&self) -> Option<String> {
        let latest = self.eras.latest();
        if latest.from > self.commit + 1 {
            return Some(format!(
                "the change chosen in slot {} takes effect from slot {}",
                latest.chosen_at, latest.from
            ));
        }
        let Phase::Leader(l) = &self.phase else {
            return None;
        };
        let proposed = l.change.is_some() || Self::pending_change_voters(l).next().is_some();
        proposed.then(|| "a change is being decided".to_string())
    }

    /// The leader's periodic look at the active set (module comment): a
    /// leader that is no longer a voter hands over at once; a stale voter
    /// is replaced, a preferred member swapped back (every
    /// `membership_check`); the preferred leader gets leadership back.
    fn check_members(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Leader(l) = &self.phase else {
            return;
        };
        if !self.established(l) || l.transfer.is_some() || self.change_pending().is_some() {
            return;
        }
        let due = ctx.now.since(l.checked) >= self.cfg.membership_check;
        let era = self.active().clone();
        let Some(view) = self.view(ctx.now) else {
            return;
        };
        if !era.is_voter(self.id) {
            let to = era
                .voters
                .iter()
                .copied()
                .find(|&v| view.caught_up(v, Duration::ZERO));
            if let Some(to) = to {
                self.start_transfer(ctx, to, false);
            }
            return;
        }
        // The preferred leader: the first voter, in the era's order of
        // preference, that is fit and has kept up (this node: fit).
        let me_fit = self.fit(ctx);
        let preferred = era.voters.iter().copied().find(|&v| {
            if v == self.id {
                me_fit
            } else {
                view.caught_up(v, self.cfg.takeover_after)
            }
        });
        // After a transfer that did not take, wait before the next one:
        // each holds writes back for up to an election timeout.
        let backoff = l.transfer_failed.is_some_and(|t| {
            ctx.now.since(t) < self.cfg.membership_check.max(self.cfg.election_timeout * 5)
        });
        let hand_over = preferred.filter(|&p| p != self.id && !self.chosen_by_operator && !backoff);
        let plan = (due && self.cfg.auto_membership)
            .then(|| view.plan(&era, self.cfg.takeover_after))
            .flatten();
        if due {
            if let Phase::Leader(l) = &mut self.phase {
                l.checked = ctx.now;
            }
        }
        if let Some((voters, why)) = plan {
            self.queue_change(ctx, voters, era.held_out.clone(), why);
        } else if let Some(to) = hand_over {
            self.start_transfer(ctx, to, false);
        }
    }

    /// Put a change of the active set in the next slot.
    fn queue_change(
        &mut self,
        ctx: &mut Ctx<'_>,
        voters: Vec<NodeId>,
        held_out: Vec<NodeId>,
        why: String,
    ) {
        let change = self.eras.change(voters, held_out, &why);
        self.note(format!(
            "proposes active set {}: {why}",
            members::names(&change.voters)
        ));
        if let Phase::Leader(l) = &mut self.phase {
            l.change = Some(change);
        }
        self.advance(ctx);
    }

    /// Begin handing leadership to `to`: stop proposing new values.
    fn start_transfer(&mut self, ctx: &mut Ctx<'_>, to: NodeId, by_operator: bool) {
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        if to == self.id || l.transfer.is_some() {
            return;
        }
        l.transfer = Some(Transfer {
            to,
            since: ctx.now,
            told: false,
            by_operator,
        });
        self.note(format!("hands leadership to {to}"));
        self.drive_transfer(ctx);
    }

    /// Once every slot this leader proposed is decided, tell the target
    /// to campaign; give up after an election timeout and lead on.
    fn drive_transfer(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        let ballot = l.ballot();
        let proposed = l.next_slot - 1;
        let idle = l.inflight.is_empty() && l.next_slot > l.ready_slot;
        let Some(t) = &mut l.transfer else {
            return;
        };
        if ctx.now.since(t.since) >= self.cfg.election_timeout {
            let to = t.to;
            l.transfer = None;
            l.transfer_failed = Some(ctx.now);
            self.note(format!("{to} did not take leadership; leading on"));
            self.advance(ctx);
            return;
        }
        if !t.told && idle {
            t.told = true;
            let to = t.to;
            let msg = Message::TimeoutNow {
                ballot,
                commit: proposed,
                by_operator: t.by_operator,
            };
            // What is chosen first: the target campaigns knowing it (no
            // Accept follows to carry it).
            Self::tell(ctx, l, to);
            ctx.send(to, Role::Proposer, msg);
        }
    }

    /// An operator's request taken by this node's admin API: acted on
    /// here if this node leads, else passed to the leader. Its result
    /// shows in `op_results` under `id`.
    pub fn member_op(&mut self, ctx: &mut Ctx<'_>, id: u64, op: MemberOp) {
        self.record_op(id, None);
        if self.is_leader() {
            let result = self.operate(ctx, &op);
            self.record_op(id, Some(result));
        } else if let Some(leader) = self.leader(ctx.now) {
            ctx.send(leader, Role::Proposer, Message::MemberOp { id, op });
        } else {
            let why = "no leader is known right now; try again in a moment".to_string();
            self.record_op(id, Some(Err(why)));
        }
    }

    fn record_op(&mut self, id: u64, result: Option<Result<String, String>>) {
        self.version += 1;
        if let Some(e) = self.op_results.iter_mut().find(|(i, _)| *i == id) {
            e.1 = result;
            return;
        }
        if result.is_some() {
            // An answer to a request this node did not take (or forgot).
            self.dropped += 1;
            return;
        }
        if self.op_results.len() >= OP_RESULTS_KEPT {
            self.op_results.pop_front();
        }
        self.op_results.push_back((id, result));
    }

    /// Act on an operator's request, as the leader.
    fn operate(&mut self, ctx: &mut Ctx<'_>, op: &MemberOp) -> Result<String, String> {
        let Phase::Leader(l) = &self.phase else {
            return Err(format!(
                "{} is not the leader (any more); try again",
                self.id
            ));
        };
        if !self.established(l) {
            return Err("the leader is still taking over; try again in a moment".into());
        }
        if let Some(t) = l.transfer {
            return Err(format!("leadership is being handed to {}", t.to));
        }
        if let Some(why) = self.change_pending() {
            return Err(format!("one change at a time: {why}"));
        }
        let era = self.active().clone();
        let view = self.view(ctx.now).ok_or("not the leader")?;
        match view.operate(&era, op)? {
            members::Change::Voters {
                voters,
                held_out,
                reason,
            } => {
                let names = members::names(&voters);
                self.queue_change(ctx, voters, held_out, reason.clone());
                Ok(format!("proposed active set {names}: {reason}"))
            }
            members::Change::Leader(n) if n == self.id => Ok(format!("{n} leads already")),
            members::Change::Leader(n) => {
                self.start_transfer(ctx, n, true);
                Ok(format!("handing leadership to {n}"))
            }
        }
    }

    fn heartbeat(&mut self, ctx: &mut Ctx<'_>) {
        let Phase::Leader(l) = &self.phase else {
            return;
        };
        let knows = self.knowledge_horizon(l).is_none_or(|h| ctx.now <= h);
        let msg = Message::Heartbeat {
            ballot: l.ballot(),
            commit: self.commit,
            lease: self.established(l) && knows,
        };
        for &n in &self.members.nodes {
            if n != self.id {
                ctx.send(n, Role::Proposer, msg.clone());
            }
        }
    }

    fn on_forward(&mut self, ctx: &mut Ctx<'_>, from: NodeId, updates: Vec<Update>, hops: u8) {
        if updates.iter().any(|u| u.id.origin != from) && hops == 0 {
            self.dropped += 1;
            return;
        }
        if self.is_leader() && self.queue.len() + updates.len() <= self.cfg.queue_max {
            self.queue.extend(updates.into_iter().map(|update| Queued {
                update,
                hops,
                fresh: false,
            }));
            self.advance(ctx);
            return;
        }
        match self.leader(ctx.now) {
            Some(next) if next != self.id && next != from && hops < self.cfg.forward_hops_max => {
                let msg = Message::Forward {
                    updates,
                    hops: hops + 1,
                };
                ctx.send(next, Role::Proposer, msg);
            }
            _ => {
                let msg = Message::ForwardRejected { updates, hops };
                ctx.send(from, Role::Proposer, msg);
            }
        }
    }

    /// Our forwarded updates came back. We may not refuse them: a
    /// duplicate of the forward may have been proposed. Pass them on to
    /// the leader we know; if we know none (the leader we forwarded to has
    /// just stepped down), keep them until one is known, for at most two
    /// election timeouts, so that the client is answered once the new
    /// leader is elected rather than at its deadline (an unknown outcome).
    fn on_forward_rejected(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: NodeId,
        updates: Vec<Update>,
        hops: u8,
    ) {
        let updates: Vec<Update> = updates
            .into_iter()
            .filter(|u| u.id.origin == self.id)
            .collect();
        if updates.is_empty() || hops >= self.cfg.forward_hops_max {
            self.dropped += 1;
            return;
        }
        if self.is_leader() {
            if self.queue.len() + updates.len() <= self.cfg.queue_max {
                self.queue.extend(updates.into_iter().map(|update| Queued {
                    update,
                    hops,
                    fresh: false,
                }));
                self.advance(ctx);
            }
            return;
        }
        if let Some(next) = self.leader(ctx.now).filter(|&n| n != from) {
            let msg = Message::Forward {
                updates,
                hops: hops + 1,
            };
            ctx.send(next, Role::Proposer, msg);
            return;
        }
        for update in updates {
            if self.bounced.len() >= self.cfg.queue_max {
                self.dropped += 1;
                continue;
            }
            let since = ctx.now;
            self.bounced.push_back(Bounced {
                update,
                hops,
                since,
            });
        }
    }

    /// A leader is known again: pass on the bounced updates that have not
    /// waited too long (their clients may have had 504 by now, and a
    /// retry with an idempotency key is applied once either way). Each
    /// keeps its own hop count.
    fn resend_bounced(&mut self, ctx: &mut Ctx<'_>) {
        if self.bounced.is_empty() {
            return;
        }
        let Some(to) = self.leader(ctx.now) else {
            return;
        };
        let max_wait = self.cfg.election_timeout * 2;
        let mut by_hops: BTreeMap<u8, Vec<Update>> = BTreeMap::new();
        for b in self.bounced.drain(..) {
            if ctx.now.since(b.since) <= max_wait {
                by_hops.entry(b.hops).or_default().push(b.update);
            } else {
                self.dropped += 1;
            }
        }
        if self.is_leader() {
            for (hops, updates) in by_hops {
                for update in updates {
                    if self.queue.len() >= self.cfg.queue_max {
                        self.dropped += 1;
                        continue;
                    }
                    self.queue.push_back(Queued {
                        update,
                        hops,
                        fresh: false,
                    });
                }
            }
            self.advance(ctx);
        } else {
            for (hops, updates) in by_hops {
                let msg = Message::Forward {
                    updates,
                    hops: hops + 1,
                };
                ctx.send(to, Role::Proposer, msg);
            }
        }
    }

    /// A linearizable read from the local gateway (read-index, FOUNDATION
    /// "Reads"): the leader notes its commit index, confirms with a quorum
    /// round started after the read arrived that no newer leader exists,
    /// and the node serves the read once it has applied that index.
    pub fn read(&mut self, ctx: &mut Ctx<'_>, id: UpdateId) {
        if self.is_leader() {
            self.start_read(ctx, id, self.id);
        } else if let Some(leader) = self.leader(ctx.now) {
            ctx.send(leader, Role::Proposer, Message::ReadIndexRequest { id });
        } else {
            ctx.client(ClientOutcome::ReadRefused {
                id,
                why: Refusal::NoLeader,
            });
        }
    }

    fn start_read(&mut self, ctx: &mut Ctx<'_>, id: UpdateId, origin: NodeId) {
        let commit = self.commit;
        let sets = self.confirm_sets();
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        if self.bugs.reads_skip_confirm {
            let index = commit;
            Self::answer_read(ctx, self.id, id, origin, index);
            return;
        }
        let index = Self::read_index(commit, l, self.bugs);
        let seq = Self::start_round(ctx, l, &sets, self.bugs);
        l.reads.push(PendingRead {
            id,
            origin,
            index,
            seq,
        });
    }

    /// What a read must see: every slot this leadership proposed, not
    /// only those it knows are chosen (learners learn from each other's
    /// votes, so a slot may be chosen, applied and answered elsewhere
    /// before the votes reach this leader), and everything its promises
    /// reported.
    fn read_index(commit: Slot, l: &Leading, bugs: ProposerBugs) -> Slot {
        let index = commit
            .max(l.max_decided)
            .max(l.ready_slot)
            .max(l.p1.chosen_upto);
        if bugs.read_index_chosen_only {
            index
        } else {
            index.max(l.next_slot - 1)
        }
    }

    /// The voter sets a confirmation round must each hear a majority of:
    /// the eras governing the slots up to `ALPHA` past the log, and the
    /// active set of every change this leadership proposed or will
    /// re-propose (its slots may be chosen already, and its era govern
    /// slots a rival could reach). A rival leader needs a majority of
    /// the era of every slot it chooses in, so a round that each of these
    /// confirmed shows no rival chose anything this leader cannot see
    /// (`docs/membership.md`).
    fn confirm_sets(&self) -> Vec<Vec<NodeId>> {
        let mut sets: Vec<Vec<NodeId>> = self
            .eras
            .governing(self.commit + 1, self.commit + ALPHA)
            .map(|e| e.voters.clone())
            .collect();
        if let Phase::Leader(l) = &self.phase {
            for voters in Self::pending_change_voters(l) {
                if !sets.contains(voters) {
                    sets.push(voters.clone());
                }
            }
        }
        sets
    }

    /// The active set of every change this leadership proposed or will
    /// re-propose and has not seen in its log yet.
    /// (Borrowed: `covered` runs whenever reads or leases are dated.)
    fn pending_change_voters(l: &Leading) -> impl Iterator<Item = &Vec<NodeId>> {
        l.inflight
            .values()
            .map(|f| &f.value)
            .chain(l.decided.values().map(|(v, _)| v))
            .chain(l.p1.adopt.values().map(|(_, v)| v))
            .filter_map(|v| match v {
                Value::Config(c) => Some(&c.voters),
                _ => None,
            })
    }

    /// Ask every voter of `sets` to confirm this leadership.
    fn start_round(
        ctx: &mut Ctx<'_>,
        l: &mut Leading,
        sets: &[Vec<NodeId>],
        bugs: ProposerBugs,
    ) -> u64 {
        l.confirm_seq += 1;
        let seq = l.confirm_seq;
        if bugs.lease_unconfirmed {
            l.quorum_seen = Some(ctx.now);
        }
        l.rounds.push_back((seq, ctx.now));
        if l.rounds.len() > ROUNDS_KEPT {
            l.rounds.pop_front();
        }
        let ballot = l.ballot();
        let voters: BTreeSet<NodeId> = sets.iter().flatten().copied().collect();
        for v in voters {
            ctx.send(v, Role::Acceptor, Message::Confirm { ballot, seq });
        }
        seq
    }

    fn answer_read(ctx: &mut Ctx<'_>, me: NodeId, id: UpdateId, origin: NodeId, index: Slot) {
        if origin == me {
            ctx.client(ClientOutcome::ReadReady { id, index });
        } else {
            ctx.send(
                origin,
                Role::Proposer,
                Message::ReadIndexReply { id, index },
            );
        }
    }

    fn on_confirmed(&mut self, ctx: &mut Ctx<'_>, from: NodeId, ballot: Ballot, seq: u64) {
        let sets = self.confirm_sets();
        let Phase::Leader(l) = &mut self.phase else {
            self.dropped += 1;
            return;
        };
        let voter = sets.iter().any(|set| set.contains(&from));
        if l.ballot() != ballot || !voter || seq > l.confirm_seq {
            self.dropped += 1;
            return;
        }
        let e = l.confirmed.entry(from).or_insert(0);
        *e = (*e).max(seq);
        // The newest round a majority of every set confirmed dates the
        // leader's contact.
        let settled = sets
            .iter()
            .map(|set| {
                let mut seqs: Vec<u64> = set
                    .iter()
                    .filter_map(|n| l.confirmed.get(n).copied())
                    .collect();
                seqs.sort_unstable_by(|a, b| b.cmp(a));
                seqs.get(quorum(set.len()) - 1).copied().unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        if settled > 0 {
            if let Some(&(_, started)) = l.rounds.iter().rev().find(|(s, _)| *s <= settled) {
                l.quorum_seen = Some(l.quorum_seen.map_or(started, |t| t.max(started)));
            }
        }
        self.complete_reads(ctx);
    }

    /// Answer every read whose round a majority of every voter set
    /// confirmed, once this leadership's first entries are chosen.
    fn complete_reads(&mut self, ctx: &mut Ctx<'_>) {
        // Called at every chosen slot: the voter sets are worked out only
        // when a read waits.
        let covered = match &self.phase {
            Phase::Leader(l) if !l.reads.is_empty() && l.ready => self.covered(l),
            _ => return,
        };
        let sets = self.confirm_sets();
        let me = self.id;
        let Phase::Leader(l) = &mut self.phase else {
            return;
        };
        if !l.ready || !covered {
            return;
        }
        // What the promises reported is taken again now, not only when
        // the read came: a leader elected with a log behind the others'
        // learns of eras it did not know, and their voters' promises
        // report slots chosen at a lower ballot before the read came
        // (seed 59738: a leader elected by two nodes of the old active
        // set answered at slot 84 while the previous leader, with the
        // new set's voters, had chosen up to 114). Reads wait for
        // `ready`, which covers those slots. (Slots proposed since the
        // read came are not added: the read need not wait for them.)
        let now_index = l.ready_slot.max(l.p1.chosen_upto);
        let confirmed = &l.confirmed;
        let skip_round = self.bugs.reads_skip_round;
        l.reads.retain(|r| {
            let confirmed_by = |set: &Vec<NodeId>| {
                set.iter()
                    .filter(|n| confirmed.get(n).is_some_and(|&s| s >= r.seq))
                    .count()
            };
            let all = sets
                .iter()
                .all(|set| confirmed_by(set) >= quorum(set.len()));
            if !all && !skip_round {
                return true;
            }
            Self::answer_read(ctx, me, r.id, r.origin, r.index.max(now_index));
            false
        });
    }

    fn on_committed(&mut self, ctx: &mut Ctx<'_>, commit: Slot) {
        if commit <= self.commit {
            return;
        }
        self.commit = commit;
        if let Phase::Leader(l) = &mut self.phase {
            // Chosen by a path other than our own votes (a catch-up): by
            // Paxos it is the value we proposed there, so stop pushing it.
            l.inflight.retain(|&slot, _| slot > commit);
            l.decided.retain(|&slot, _| slot > commit);
            l.next_slot = l.next_slot.max(commit + 1);
            if commit >= l.ready_slot {
                l.ready = true;
            }
        }
        self.after_commit(ctx);
        // Reads whose rounds are confirmed may have waited for the log
        // to reach what this leadership took over.
        self.complete_reads(ctx);
    }

    /// The log grew or its eras changed: a candidate may now have the
    /// promises it needs, a leader may ask an era's new voters and
    /// propose further.
    fn after_commit(&mut self, ctx: &mut Ctx<'_>) {
        match self.phase {
            Phase::Follower => {}
            Phase::Candidate(_) => {
                self.ask_missing(ctx);
                self.after_promise(ctx);
            }
            Phase::Leader(_) => {
                self.ask_missing(ctx);
                self.advance(ctx);
                self.drive_transfer(ctx);
            }
        }
    }
}

/// A `Prepare` leaves once its round is on disk (unless a test breaks it).
fn send_prepare(bugs: ProposerBugs, ctx: &mut Ctx<'_>, to: NodeId, msg: Message) {
    if bugs.prepare_before_sync {
        ctx.send(to, Role::Acceptor, msg);
    } else {
        ctx.send_durable(to, Role::Acceptor, msg);
    }
}
