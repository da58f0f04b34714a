//! The production shells of the protocol roles: one actix actor per role,
//! each holding the role's [`Driver`] (the same driver the sim uses).
//!
//! An actor does only what the world asks of a shell (see the table in
//! `driver`): it hands each mailbox message to its driver and carries out
//! the outputs.
//!
//! - `Send`: to a local actor when addressed to this node, else through
//!   the [`Transport`].
//! - `Flush`: a spawned ready future, which actix polls only once it has
//!   drained the mailbox, so every message already queued is handled (and
//!   its replies held) before the flush.
//! - `Sync`: `Kv::sync` on the blocking pool, so the actor keeps handling
//!   messages meanwhile; its return calls `Driver::synced`.
//! - `Timer`: `run_later`, cancelling the kind's previous one (the driver
//!   would ignore it, but it would sit in the actor until it came due).
//! - `Apply`: the [`Backend`]; its reply goes back to the driver.
//! - `Client`: the gateway's [`Clients`], called directly.
//!
//! After each input an actor publishes what the gateway reads (leader,
//! lease, commit and applied index) to the group's [`GroupStatus`].

use super::backend::Backend;
use super::now;
use super::status::{EVENTS_SHOWN, GroupStatus, PeerView};
use super::transport::{Deliver, Inbox, Transport};
use crate::apply::applier::{Applied, Applier, Operator};
use crate::driver::{Driven, Driver, Input, Output};
use crate::paxos::acceptor::Acceptor;
use crate::paxos::ballot::{Ballot, NodeId, Slot, Update, UpdateId};
use crate::paxos::command::{ClientOutcome, Timer};
use crate::paxos::learner::Learner;
use crate::paxos::message::{Message, Role};
use crate::paxos::proposer::Proposer;
use crate::storage::fjall_kv::FjallKv;
use crate::time::Time;
use actix::fut::{self, ActorFutureExt};
use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, SpawnHandle};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Network messages a role's mailbox holds at most; more are dropped.
pub const MAILBOX_CAPACITY: usize = 4096;

/// Where the roles' client outcomes go: the gateway's waiting requests.
pub trait Clients: Send + Sync + 'static {
    /// Complete the requests `outcome` names; one nobody waits for (timed
    /// out, or from a previous boot of this node) is dropped.
    fn outcome(&self, outcome: ClientOutcome);
}

/// Client updates taken by this node's gateway, for the proposer.
#[derive(Debug)]
pub struct Submit {
    /// The updates, in the order the gateway took them.
    pub updates: Vec<Update>,
}

impl actix::Message for Submit {
    type Result = ();
}

/// A linearizable read taken by this node's gateway (read-index).
#[derive(Debug)]
pub struct Read {
    /// The read's request id.
    pub id: UpdateId,
}

impl actix::Message for Read {
    type Result = ();
}

/// An operator's action on the node state, for the applier. Answered
/// once the new state is on disk.
#[derive(Debug)]
pub struct Operate(pub Operator);

impl actix::Message for Operate {
    type Result = ();
}

/// An operator's request about the active set, for the proposer; its
/// result shows in the group status under `id` (`MembershipView::ops`).
#[derive(Debug)]
pub struct Member {
    /// The request's number, chosen by the caller.
    pub id: u64,
    /// The request.
    pub op: crate::paxos::members::MemberOp,
}

impl actix::Message for Member {
    type Result = ();
}

/// Stop the actor at once, dropping whatever it holds (a crash, as far
/// as the protocol can tell: held messages never leave).
#[derive(Debug)]
pub struct Stop;

impl actix::Message for Stop {
    type Result = ();
}

/// Ask an actor for its role's state, for tests and diagnostics.
#[derive(Debug)]
pub struct Status;

impl actix::Message for Status {
    type Result = RoleStatus;
}

/// One role's state, as answered to [`Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleStatus {
    Proposer {
        is_leader: bool,
        leader: Option<NodeId>,
        queued: usize,
        dropped: u64,
    },
    Acceptor {
        promised: Ballot,
        held: usize,
        dropped: u64,
    },
    Learner {
        commit: Slot,
        known_commit: Slot,
        dropped: u64,
    },
    Applier {
        applied: Slot,
        /// Updates applied and duplicates skipped by this incarnation.
        updates: u64,
        duplicates: u64,
        dropped: u64,
    },
}

/// Where an actor's outputs go; shared by a group's four actors.
#[derive(Clone)]
pub struct Book {
    pub(crate) local: Inbox,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) clients: Arc<dyn Clients>,
    pub(crate) status: Arc<GroupStatus>,
    pub(crate) backend: Arc<dyn Backend>,
    /// Entered while the actors work: every line they log names the
    /// service.
    pub(crate) span: tracing::Span,
}

impl Book {
    fn route(&self, to: NodeId, role: Role, msg: Message) {
        if to == self.local.id() {
            self.local.deliver_local(role, msg);
        } else {
            self.transport.send(self.local.id(), to, role, msg);
        }
    }
}

/// What a role's actor adds to its driver: what it publishes for the
/// gateway and logs, and what it answers to [`Status`].
pub trait Shelled: Driven + Sized + Unpin + 'static {
    /// Counters and notes the actor keeps beside the role.
    type Notes: Default + Unpin + 'static;

    /// After each input: publish to the gateway, log, count.
    fn publish(_role: &mut Self, _notes: &mut Self::Notes, _book: &Book) {}

    /// The answer to [`Status`].
    fn status(role: &Driver<Self>, notes: &Self::Notes) -> RoleStatus;
}

/// The actor that drives one role.
pub struct RoleActor<R: Shelled> {
    driver: Driver<R>,
    kv: FjallKv,
    book: Book,
    notes: R::Notes,
    /// The pending wake-up of each timer kind. The driver ignores a
    /// replaced one anyway; cancelling it keeps the actor's list of
    /// spawned futures short (actix polls them all on every wake-up),
    /// which matters during catch-up, when the fetch timer is set per batch.
    timers: BTreeMap<Timer, SpawnHandle>,
}

/// Drives the [`Proposer`]: client submissions and reads, protocol
/// messages, the election and tick timers.
pub type ProposerActor = RoleActor<Proposer>;
/// Drives the [`Acceptor`]. It sets no timers.
pub type AcceptorActor = RoleActor<Acceptor>;
/// Drives the [`Learner`] and its fetch timer.
pub type LearnerActor = RoleActor<Learner>;
/// Drives the [`Applier`]: calls the backend and feeds its replies back.
pub type ApplierActor = RoleActor<Applier>;

impl<R: Shelled> RoleActor<R> {
    pub(crate) fn new(driver: Driver<R>, kv: FjallKv, book: Book) -> RoleActor<R> {
        RoleActor {
            driver,
            kv,
            book,
            notes: R::Notes::default(),
            timers: BTreeMap::new(),
        }
    }

    /// Hand `input` to the driver and carry out what it asks.
    fn step(&mut self, ctx: &mut Context<Self>, input: Input) {
        let out = self.driver.step(now(), &mut self.kv, input);
        self.after(ctx, out);
    }

    fn after(&mut self, ctx: &mut Context<Self>, out: Vec<Output>) {
        // Entered once per input: a span enter and exit cost about 1% of
        // the leader's CPU under load (perf), twice over when nested.
        let span = self.book.span.clone();
        let _in_span = span.enter();
        R::publish(self.driver.role_mut(), &mut self.notes, &self.book);
        self.carry_out(ctx, out);
    }

    /// `carry_out` in the group's span, for a callback outside `after`.
    fn execute(&mut self, ctx: &mut Context<Self>, out: Vec<Output>) {
        let span = self.book.span.clone();
        let _in_span = span.enter();
        self.carry_out(ctx, out);
    }

    fn carry_out(&mut self, ctx: &mut Context<Self>, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send { to, role, msg } => self.book.route(to, role, msg),
                Output::Flush => {
                    ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| {
                        let out = act.driver.flush(&act.kv);
                        act.execute(ctx, out);
                    }));
                }
                Output::Sync { .. } => self.sync(ctx),
                Output::Timer {
                    timer,
                    at,
                    generation,
                } => {
                    let delay: Duration = at.since(now());
                    let handle = ctx.run_later(delay, move |act: &mut Self, ctx| {
                        act.timers.remove(&timer);
                        let out = act.driver.fire(now(), &mut act.kv, timer, generation);
                        act.after(ctx, out);
                    });
                    if let Some(old) = self.timers.insert(timer, handle) {
                        ctx.cancel_future(old);
                    }
                }
                Output::Apply {
                    slot,
                    index,
                    update,
                } => {
                    let call = self.book.backend.call(slot, index, update);
                    ctx.spawn(fut::wrap_future::<_, Self>(call).map(
                        move |reply, act: &mut Self, ctx| {
                            act.step(ctx, Input::BackendReply { slot, index, reply });
                        },
                    ));
                }
                Output::Client(outcome) => self.book.clients.outcome(outcome),
            }
        }
    }

    /// Sync on the blocking pool; the driver releases what it covered.
    fn sync(&mut self, ctx: &mut Context<Self>) {
        let mut kv = self.kv.clone();
        let fsync = self.book.status.counters.fsync_seconds.clone();
        let job = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            crate::storage::kv::Kv::sync(&mut kv);
            fsync.observe(start.elapsed().as_secs_f64());
        });
        ctx.spawn(
            fut::wrap_future::<_, Self>(job).map(|res, act: &mut Self, ctx| match res {
                Ok(()) => {
                    let out = act.driver.synced(&act.kv);
                    act.execute(ctx, out);
                }
                Err(e) if e.is_panic() => crate::storage::fatal("group commit sync", &e),
                Err(e) => {
                    // The runtime is shutting down: nothing is known to be
                    // durable, so nothing held may leave.
                    tracing::warn!(%e, "group commit sync cancelled; stopping");
                    ctx.stop();
                }
            }),
        );
    }
}

impl<R: Shelled> Actor for RoleActor<R> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        let out = self.driver.start();
        self.after(ctx, out);
    }
}

impl<R: Shelled> Handler<Deliver> for RoleActor<R> {
    type Result = ();

    fn handle(&mut self, m: Deliver, ctx: &mut Context<Self>) {
        self.step(
            ctx,
            Input::Message {
                from: m.from,
                msg: m.msg,
            },
        );
    }
}

impl<R: Shelled> Handler<Stop> for RoleActor<R> {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl<R: Shelled> Handler<Status> for RoleActor<R> {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(R::status(&self.driver, &self.notes))
    }
}

impl Handler<Submit> for ProposerActor {
    type Result = ();

    fn handle(&mut self, m: Submit, ctx: &mut Context<Self>) {
        self.step(ctx, Input::Submit(m.updates));
    }
}

impl Handler<Member> for ProposerActor {
    type Result = ();

    fn handle(&mut self, m: Member, ctx: &mut Context<Self>) {
        self.step(ctx, Input::Member { id: m.id, op: m.op });
    }
}

impl Handler<Read> for ProposerActor {
    type Result = ();

    fn handle(&mut self, m: Read, ctx: &mut Context<Self>) {
        self.step(ctx, Input::Read(m.id));
    }
}

/// For a reseed export: the applier's replicated state at the slot where
/// it is paused (`None` while not paused at a slot boundary).
#[derive(Debug)]
pub struct Export;

impl actix::Message for Export {
    type Result = Option<crate::apply::reseed::Envelope>;
}

impl Handler<Export> for ApplierActor {
    type Result = MessageResult<Export>;

    fn handle(&mut self, _: Export, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.driver.role().export(&self.kv))
    }
}

/// Every node's digests of these slots, as far as this node still holds
/// them (the console's log pages).
#[derive(Debug)]
pub struct Digests(pub Vec<Slot>);

impl actix::Message for Digests {
    type Result = Vec<(Slot, Vec<(NodeId, u64)>)>;
}

impl Handler<Digests> for ApplierActor {
    type Result = Vec<(Slot, Vec<(NodeId, u64)>)>;

    fn handle(&mut self, m: Digests, _: &mut Context<Self>) -> Self::Result {
        let r = self.driver.role();
        m.0.into_iter().map(|s| (s, r.digests(s))).collect()
    }
}

/// For a reseed import: whether the applier may take one at `slot` now.
#[derive(Debug)]
pub struct CanReseed(pub Slot);

impl actix::Message for CanReseed {
    type Result = Result<(), String>;
}

impl Handler<CanReseed> for ApplierActor {
    type Result = Result<(), String>;

    fn handle(&mut self, m: CanReseed, _: &mut Context<Self>) -> Self::Result {
        self.driver.role().can_reseed(&self.kv, m.0)
    }
}

impl Handler<Operate> for ApplierActor {
    type Result = ();

    fn handle(&mut self, m: Operate, ctx: &mut Context<Self>) {
        self.step(ctx, Input::Operator(m.0));
        // Rare, and the operator waits for it: sync here rather than
        // leave the change to the next group commit, which an idle node
        // may not have for a long time.
        crate::storage::kv::Kv::sync(&mut self.kv);
    }
}

/// What the proposer last published: its rebuild state (see
/// `paxos::rebuild`), its membership version, and when it last
/// published what the nodes reported (at most twice a second).
#[derive(Default)]
pub struct ProposerNotes {
    rebuilding: Option<(Vec<NodeId>, Option<u64>)>,
    version: Option<u64>,
    peers_at: Option<std::time::Instant>,
    /// The active set published: it changes when the log reaches an era.
    active: Vec<NodeId>,
    /// The counts already added to the metrics, and the leader last seen.
    counted: crate::paxos::proposer::ProposerCounts,
    leader: Option<NodeId>,
}

/// How often a leader publishes what the nodes reported.
const PEERS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Publish the active set, the operators' results and the events (and
/// log the events), when they changed; what the nodes reported, at most
/// every `PEERS_EVERY`.
fn publish_membership(r: &mut Proposer, notes: &mut ProposerNotes, book: &Book) {
    let changed = notes.version != Some(r.version()) || notes.active != r.active().voters;
    let peers_due = r.is_leader() && notes.peers_at.is_none_or(|t| t.elapsed() >= PEERS_EVERY);
    let stepped_down = notes.peers_at.is_some() && !r.is_leader();
    if !changed && !peers_due && !stepped_down {
        return;
    }
    notes.version = Some(r.version());
    notes.active = r.active().voters.clone();
    notes.peers_at = r.is_leader().then(std::time::Instant::now);
    let at_ms = super::status::unix_ms();
    let events: Vec<String> = r.events.drain(..).collect();
    for e in &events {
        tracing::info!(event = %e, "membership");
    }
    let now = now();
    let peers: Vec<PeerView> = r
        .peers()
        .map(|(peers, _)| {
            peers
                .iter()
                .map(|(&node, p)| PeerView {
                    node,
                    heard_ms: now.since(p.heard).as_millis() as u64,
                    commit: p.commit,
                    applied: p.applied,
                    fit: p.fit,
                })
                .collect()
        })
        .unwrap_or_default();
    let transfer = r.peers().and_then(|(_, t)| t).map(|t| t.to);
    book.status.update_membership(|m| {
        if changed {
            m.eras = r.eras().all().to_vec();
            m.active = r.active().voters.clone();
            m.ops = r.op_results().cloned().collect();
            for e in events {
                if m.events.len() >= EVENTS_SHOWN {
                    m.events.pop_front();
                }
                m.events.push_back((at_ms, e));
            }
        }
        m.peers = peers;
        m.transfer = transfer;
    });
}

impl Shelled for Proposer {
    type Notes = ProposerNotes;

    fn publish(r: &mut Proposer, notes: &mut ProposerNotes, book: &Book) {
        publish_membership(r, notes, book);
        let leader = r.leader(now());
        let c = &book.status.counters;
        let counts = &mut r.counts;
        c.campaigns
            .inc_by(counts.campaigns - notes.counted.campaigns);
        c.values_proposed
            .inc_by(counts.values - notes.counted.values);
        c.updates_proposed
            .inc_by(counts.updates - notes.counted.updates);
        for n in counts.recent_values.drain(..) {
            c.batch_updates.observe(n as f64);
        }
        notes.counted = crate::paxos::proposer::ProposerCounts {
            recent_values: Default::default(),
            ..counts.clone()
        };
        // A change between two known leaders (a lapse between them, an
        // election that re-elects the same node, is no change).
        if let Some(l) = leader {
            if notes.leader.is_some_and(|old| old != l) || notes.leader.is_none() {
                c.leader_changes.inc();
            }
            notes.leader = Some(l);
        }
        // The commit index a heartbeat reported goes out before the lease
        // it renewed, so a reader never sees a fresh lease without it.
        book.status.raise_known_commit(r.leader_commit());
        book.status
            .set_proposer(r.leadership(now()), r.is_leader(), r.lease_contact());
        let rebuilding = r.rebuilding();
        if rebuilding != notes.rebuilding {
            match &rebuilding {
                Some((waiting, None)) => tracing::warn!(
                    ?waiting,
                    "rebuilding: not voting until every other node has reported its round"
                ),
                Some((_, Some(fence))) => tracing::warn!(
                    fence,
                    "rebuilding: every node reported; waiting for a leadership above the fence"
                ),
                None => tracing::info!("rebuilt: voting again"),
            }
            book.status.set_rebuilding(rebuilding.clone());
            notes.rebuilding = rebuilding;
        }
    }

    fn status(d: &Driver<Proposer>, _: &ProposerNotes) -> RoleStatus {
        let r = d.role();
        RoleStatus::Proposer {
            is_leader: r.is_leader(),
            leader: r.leader(now()),
            queued: r.queued(),
            dropped: r.dropped,
        }
    }
}

impl Shelled for Acceptor {
    type Notes = ();

    fn status(d: &Driver<Acceptor>, _: &()) -> RoleStatus {
        let r = d.role();
        RoleStatus::Acceptor {
            promised: r.promised(),
            held: r.held(),
            dropped: r.dropped,
        }
    }
}

/// When the learner last logged its catch-up progress.
#[derive(Default)]
pub struct LearnerNotes {
    progress_logged: Option<Time>,
}

/// Slots behind before a learner logs its catch-up progress, and how often.
const CATCH_UP_LOG_SLOTS: u64 = 100;
const CATCH_UP_LOG_EVERY: Duration = Duration::from_secs(2);

impl Shelled for Learner {
    type Notes = LearnerNotes;

    fn publish(r: &mut Learner, notes: &mut LearnerNotes, book: &Book) {
        let (commit, known) = (r.commit(), r.known_commit());
        book.status.set_learner(commit, known);
        book.status.set_log(r.compacted(), r.log_bytes());
        let now = now();
        let due = notes
            .progress_logged
            .is_none_or(|t| now.since(t) >= CATCH_UP_LOG_EVERY);
        if known > commit + CATCH_UP_LOG_SLOTS && due {
            notes.progress_logged = Some(now);
            let node = book.local.id();
            tracing::info!(%node, commit, known, behind = known - commit, "catching up");
        }
    }

    fn status(d: &Driver<Learner>, _: &LearnerNotes) -> RoleStatus {
        let r = d.role();
        RoleStatus::Learner {
            commit: r.commit(),
            known_commit: r.known_commit(),
            dropped: r.dropped,
        }
    }
}

/// Updates applied and duplicates skipped by this incarnation.
#[derive(Default)]
pub struct ApplierNotes {
    updates: u64,
    duplicates: u64,
    /// The node state last published.
    state: crate::paxos::state::NodeState,
}

/// What changed between two node states, as events for the console.
fn state_events(
    old: &crate::paxos::state::NodeState,
    new: &crate::paxos::state::NodeState,
) -> Vec<String> {
    let mut out = Vec::new();
    match (&old.disabled, &new.disabled) {
        (None, Some(why)) => out.push(format!("disabled: {why}")),
        (Some(_), None) => out.push("enabled".to_string()),
        _ => {}
    }
    match (&old.diverged, &new.diverged) {
        (None, Some(d)) => out.push(format!("diverged at slot {}", d.slot)),
        (Some(_), None) => out.push(format!(
            "divergence cleared (up to slot {})",
            new.cleared_upto
        )),
        _ => {}
    }
    match (old.needs_reseed, new.needs_reseed) {
        (None, Some(s)) => out.push(format!("needs a reseed: slot {s} on was compacted away")),
        (Some(_), None) => out.push("reseeded".to_string()),
        _ => {}
    }
    out
}

impl Shelled for Applier {
    type Notes = ApplierNotes;

    /// The journal is for observers; keep only counts.
    fn publish(r: &mut Applier, notes: &mut ApplierNotes, book: &Book) {
        let c = &book.status.counters;
        for a in r.journal.drain(..) {
            match a {
                Applied::Update { .. } => {
                    notes.updates += 1;
                    c.updates_applied.inc();
                }
                Applied::Duplicate { .. } => {
                    notes.duplicates += 1;
                    c.duplicates_skipped.inc();
                }
            }
        }
        book.status.set_applied(r.applied(), r.stuck_attempts());
        if notes.state != *r.node_state() {
            for e in state_events(&notes.state, r.node_state()) {
                tracing::info!(event = %e, "node state");
                book.status.push_event(e);
            }
            notes.state = r.node_state().clone();
            if let Some(d) = &notes.state.diverged {
                tracing::error!(
                    slot = d.slot,
                    ours = format!("{:016x}", d.ours),
                    majority = d.majority.map(|m| format!("{m:016x}")),
                    "this node's backend answered differently from the others: diverged, \
                     refusing reads and updates until an operator clears it"
                );
            }
            book.status.set_node_state(&notes.state);
        }
    }

    fn status(d: &Driver<Applier>, notes: &ApplierNotes) -> RoleStatus {
        let r = d.role();
        RoleStatus::Applier {
            applied: r.applied(),
            updates: notes.updates,
            duplicates: notes.duplicates,
            dropped: r.dropped,
        }
    }
}
