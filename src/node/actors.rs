//! The production drivers of the protocol roles: one actix actor per role.
//!
//! The actors are shells. Each handler passes its message to exactly one
//! role method and then executes the [`Command`]s the role returned, the
//! way `sim/world.rs` does (see the contract in `paxos::command`):
//!
//! - `Send { after_sync: false }` leaves at once: to a local actor when
//!   addressed to this node, else through the [`Transport`].
//! - `Send { after_sync: true }` is held until a `Kv::sync` that started
//!   after it was held has returned (group commit, below). If no write is
//!   outstanding at all (every write issued so far is already synced),
//!   it leaves at once, as in the sim (`disk.unsynced() == 0`).
//! - `SetTimer` replaces the actor's pending timer of that kind.
//! - `Apply` calls the [`Backend`]; `Answer`, `Refused`, `ReadReady` and
//!   `ReadRefused` go to the gateway.
//!
//! Group commit: a held message schedules a flush as a spawned ready
//! future, which actix polls only after it has drained the mailbox. So
//! every message already queued is handled (and its replies held) before
//! the flush. The flush syncs once, on the blocking pool so the actor
//! keeps handling messages meanwhile, and releases exactly the messages
//! held before the sync started. Messages held while a sync runs wait for
//! the next flush, which starts when that sync returns: one sync per
//! batch, at most one sync in flight per actor. A flush whose messages
//! are already covered by another actor's sync (one fjall journal for the
//! whole store) releases them without syncing again.

use super::backend::Backend;
use super::group_kv::GroupKv;
use super::now;
use super::transport::{Inbox, Transport};
use crate::apply::applier::{Applied, Applier};
use crate::paxos::acceptor::Acceptor;
use crate::paxos::ballot::{Ballot, NodeId, Slot, Update, UpdateId};
use crate::paxos::command::{Command, Ctx, Refusal, Timer};
use crate::paxos::learner::Learner;
use crate::paxos::message::{Message, Role};
use crate::paxos::proposer::Proposer;
use crate::rng::Rng;
use crate::storage::kv::Kv;
use actix::fut::{self, ActorFutureExt};
use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, Recipient, SpawnHandle,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Network messages a role's mailbox holds at most; more are dropped.
pub const MAILBOX_CAPACITY: usize = 4096;

/// A protocol message for the receiving role, from node `from` (this
/// node's id for a message between its own roles).
#[derive(Debug)]
pub struct Deliver {
    pub from: NodeId,
    pub msg: Message,
}

impl actix::Message for Deliver {
    type Result = ();
}

/// Client updates taken by this node's gateway, for the proposer.
#[derive(Debug)]
pub struct Submit {
    pub updates: Vec<Update>,
}

impl actix::Message for Submit {
    type Result = ();
}

/// What happened to a client's update, for the gateway of its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientOutcome {
    /// Applied here; the local backend's response.
    Answer {
        id: UpdateId,
        slot: Slot,
        status: u16,
        body: Bytes,
    },
    /// Never proposed and never will be.
    Refused { ids: Vec<UpdateId>, why: Refusal },
    /// A linearizable read may be served once `index` is applied here.
    ReadReady { id: UpdateId, index: Slot },
    /// No read index could be had (no leader); the read had no effect.
    ReadRefused { id: UpdateId, why: Refusal },
}

impl actix::Message for ClientOutcome {
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

/// Where an actor's commands go.
#[derive(Clone)]
pub(crate) struct Book {
    pub(crate) local: Inbox,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) gateway: Recipient<ClientOutcome>,
    pub(crate) status: Arc<super::status::GroupStatus>,
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

/// A message waiting for a sync. `mark`: the write count when it was
/// held; the writes it depends on are among those.
struct Held {
    mark: u64,
    to: NodeId,
    role: Role,
    msg: Message,
}

/// What every actor holds besides its role: storage, randomness, where
/// to send, and the driver's own state (timers, held messages).
pub(crate) struct Shell {
    kv: GroupKv,
    rng: Rng,
    book: Book,
    /// Commands the role returned while it recovered, run on start.
    init: Vec<Command>,
    timers: HashMap<Timer, SpawnHandle>,
    held: Vec<Held>,
    syncing: bool,
    flush_queued: bool,
}

impl Shell {
    pub(crate) fn new(kv: GroupKv, rng: Rng, book: Book, init: Vec<Command>) -> Shell {
        Shell {
            kv,
            rng,
            book,
            init,
            timers: HashMap::new(),
            held: Vec::new(),
            syncing: false,
            flush_queued: false,
        }
    }

    /// Send the first `count` held messages.
    fn release(&mut self, count: usize) {
        let n = count.min(self.held.len());
        for h in self.held.drain(..n) {
            self.book.route(h.to, h.role, h.msg);
        }
    }
}

/// An actor that drives one role. Implemented by the four actors; the
/// driving itself is the generic functions below, shared by all.
pub(crate) trait Driven: Actor<Context = Context<Self>> {
    type Role;

    fn parts(&mut self) -> (&mut Self::Role, &mut Shell);

    fn shell(&mut self) -> &mut Shell {
        self.parts().1
    }

    /// The role's `on_timer`, for roles that set timers.
    fn fire(role: &mut Self::Role, c: &mut Ctx<'_>, timer: Timer);

    /// Carry out `Command::Apply`: only the applier can.
    fn apply(&mut self, _ctx: &mut Context<Self>, slot: Slot, index: u32, _update: Update) {
        tracing::error!(
            slot,
            index,
            "apply command from a role that cannot apply; dropped"
        );
    }

    /// Called after every role handler, before its commands run.
    fn after_handler(&mut self) {}
}

/// Call one role handler with a fresh [`Ctx`], then execute its commands.
fn drive<A: Driven>(act: &mut A, ctx: &mut Context<A>, f: impl FnOnce(&mut A::Role, &mut Ctx<'_>)) {
    let mut out = Vec::new();
    {
        let (role, shell) = act.parts();
        let mut c = Ctx {
            now: now(),
            kv: &mut shell.kv,
            rng: &mut shell.rng,
            out: &mut out,
        };
        f(role, &mut c);
    }
    act.after_handler();
    execute(act, ctx, out);
}

/// Run the commands the role returned while it recovered.
fn begin<A: Driven>(act: &mut A, ctx: &mut Context<A>) {
    let init = std::mem::take(&mut act.shell().init);
    execute(act, ctx, init);
}

fn execute<A: Driven>(act: &mut A, ctx: &mut Context<A>, out: Vec<Command>) {
    for cmd in out {
        match cmd {
            Command::Send {
                to,
                role,
                msg,
                after_sync,
            } => {
                let shell = act.shell();
                let mark = shell.kv.write_mark();
                if !after_sync || (shell.held.is_empty() && shell.kv.is_durable(mark)) {
                    shell.book.route(to, role, msg);
                } else {
                    shell.held.push(Held {
                        mark,
                        to,
                        role,
                        msg,
                    });
                    queue_flush(act, ctx);
                }
            }
            Command::SetTimer { timer, at } => set_timer(act, ctx, timer, at),
            Command::Apply {
                slot,
                index,
                update,
            } => act.apply(ctx, slot, index, update),
            Command::Answer {
                id,
                slot,
                status,
                body,
            } => act.shell().book.gateway.do_send(ClientOutcome::Answer {
                id,
                slot,
                status,
                body,
            }),
            Command::Refused { ids, why } => act
                .shell()
                .book
                .gateway
                .do_send(ClientOutcome::Refused { ids, why }),
            Command::ReadReady { id, index } => act
                .shell()
                .book
                .gateway
                .do_send(ClientOutcome::ReadReady { id, index }),
            Command::ReadRefused { id, why } => act
                .shell()
                .book
                .gateway
                .do_send(ClientOutcome::ReadRefused { id, why }),
        }
    }
}

fn set_timer<A: Driven>(act: &mut A, ctx: &mut Context<A>, timer: Timer, at: crate::time::Time) {
    let delay: Duration = at.since(now());
    let handle = ctx.run_later(delay, move |act: &mut A, ctx: &mut Context<A>| {
        act.shell().timers.remove(&timer);
        drive(act, ctx, |role, c| A::fire(role, c, timer));
    });
    if let Some(old) = act.shell().timers.insert(timer, handle) {
        ctx.cancel_future(old);
    }
}

/// Flush once the mailbox is drained, unless a flush is queued already
/// or a sync is running (its completion queues the next flush).
fn queue_flush<A: Driven>(act: &mut A, ctx: &mut Context<A>) {
    let shell = act.shell();
    if shell.flush_queued || shell.syncing {
        return;
    }
    shell.flush_queued = true;
    ctx.spawn(fut::ready(()).map(|(), act: &mut A, ctx: &mut Context<A>| {
        act.shell().flush_queued = false;
        flush(act, ctx);
    }));
}

/// Sync once for every message held so far, then release them.
fn flush<A: Driven>(act: &mut A, ctx: &mut Context<A>) {
    let shell = act.shell();
    if shell.syncing || shell.held.is_empty() {
        return;
    }
    let count = shell.held.len();
    let newest = shell.held.iter().map(|h| h.mark).max().unwrap_or(0);
    if shell.kv.is_durable(newest) {
        // A sync by another actor of this node covered them.
        shell.release(count);
        return;
    }
    shell.syncing = true;
    let mut kv = shell.kv.clone();
    let job = tokio::task::spawn_blocking(move || kv.sync());
    ctx.spawn(
        fut::wrap_future::<_, A>(job).map(move |res, act: &mut A, ctx: &mut Context<A>| {
            let shell = act.shell();
            shell.syncing = false;
            match res {
                Ok(()) => shell.release(count),
                Err(e) if e.is_panic() => crate::storage::fatal("group commit sync", &e),
                Err(e) => {
                    // The runtime is shutting down: nothing is known to be
                    // durable, so nothing held may leave.
                    tracing::warn!(%e, "group commit sync cancelled; stopping");
                    shell.held.clear();
                    ctx.stop();
                    return;
                }
            }
            if !shell.held.is_empty() {
                queue_flush(act, ctx);
            }
        }),
    );
}

/// The `Actor`, `Deliver` and `Stop` implementations every shell shares.
macro_rules! shell_actor {
    ($actor:ty) => {
        impl Actor for $actor {
            type Context = Context<Self>;

            fn started(&mut self, ctx: &mut Context<Self>) {
                ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
                begin(self, ctx);
            }
        }

        impl Handler<Deliver> for $actor {
            type Result = ();

            fn handle(&mut self, m: Deliver, ctx: &mut Context<Self>) {
                drive(self, ctx, |role, c| role.on_message(c, m.from, m.msg));
            }
        }

        impl Handler<Stop> for $actor {
            type Result = ();

            fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                ctx.stop();
            }
        }
    };
}

/// Drives the [`Proposer`]: client submissions, protocol messages, the
/// election and tick timers.
pub struct ProposerActor {
    role: Proposer,
    shell: Shell,
}

impl ProposerActor {
    pub(crate) fn new(role: Proposer, shell: Shell) -> ProposerActor {
        ProposerActor { role, shell }
    }
}

impl Driven for ProposerActor {
    type Role = Proposer;

    fn parts(&mut self) -> (&mut Proposer, &mut Shell) {
        (&mut self.role, &mut self.shell)
    }

    fn fire(role: &mut Proposer, c: &mut Ctx<'_>, timer: Timer) {
        role.on_timer(c, timer);
    }

    fn after_handler(&mut self) {
        let r = &self.role;
        let leader = r.leader(now());
        // The commit index a heartbeat reported goes out before the lease
        // it renewed, so a reader never sees a fresh lease without it.
        self.shell.book.status.raise_known_commit(r.leader_commit());
        self.shell
            .book
            .status
            .set_proposer(leader, r.is_leader(), r.lease_contact());
    }
}

shell_actor!(ProposerActor);

/// A linearizable read taken by this node's gateway (read-index).
#[derive(Debug)]
pub struct Read {
    pub id: UpdateId,
}

impl actix::Message for Read {
    type Result = ();
}

impl Handler<Read> for ProposerActor {
    type Result = ();

    fn handle(&mut self, m: Read, ctx: &mut Context<Self>) {
        drive(self, ctx, |role, c| role.read(c, m.id));
    }
}

impl Handler<Submit> for ProposerActor {
    type Result = ();

    fn handle(&mut self, m: Submit, ctx: &mut Context<Self>) {
        drive(self, ctx, |role, c| role.submit(c, m.updates));
    }
}

impl Handler<Status> for ProposerActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RoleStatus::Proposer {
            is_leader: self.role.is_leader(),
            leader: self.role.leader(now()),
            queued: self.role.queued(),
            dropped: self.role.dropped,
        })
    }
}

/// Drives the [`Acceptor`]. It sets no timers.
pub struct AcceptorActor {
    role: Acceptor,
    shell: Shell,
}

impl AcceptorActor {
    pub(crate) fn new(role: Acceptor, shell: Shell) -> AcceptorActor {
        AcceptorActor { role, shell }
    }
}

impl Driven for AcceptorActor {
    type Role = Acceptor;

    fn parts(&mut self) -> (&mut Acceptor, &mut Shell) {
        (&mut self.role, &mut self.shell)
    }

    fn fire(_: &mut Acceptor, _: &mut Ctx<'_>, timer: Timer) {
        tracing::error!(?timer, "acceptor timer fired; the acceptor sets none");
    }
}

shell_actor!(AcceptorActor);

impl Handler<Status> for AcceptorActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RoleStatus::Acceptor {
            promised: self.role.promised(),
            held: self.role.held(),
            dropped: self.role.dropped,
        })
    }
}

/// Drives the [`Learner`] and its fetch timer.
pub struct LearnerActor {
    role: Learner,
    shell: Shell,
    /// When catch-up progress was last logged.
    progress_logged: Option<crate::time::Time>,
}

/// Slots behind before a learner logs its catch-up progress, and how often.
const CATCH_UP_LOG_SLOTS: u64 = 100;
const CATCH_UP_LOG_EVERY: Duration = Duration::from_secs(2);

impl LearnerActor {
    pub(crate) fn new(role: Learner, shell: Shell) -> LearnerActor {
        LearnerActor {
            role,
            shell,
            progress_logged: None,
        }
    }
}

impl Driven for LearnerActor {
    type Role = Learner;

    fn parts(&mut self) -> (&mut Learner, &mut Shell) {
        (&mut self.role, &mut self.shell)
    }

    fn fire(role: &mut Learner, c: &mut Ctx<'_>, timer: Timer) {
        role.on_timer(c, timer);
    }

    fn after_handler(&mut self) {
        let r = &self.role;
        let (commit, known) = (r.commit(), r.known_commit());
        self.shell.book.status.set_learner(commit, known);
        let now = now();
        let due = self
            .progress_logged
            .is_none_or(|t| now.since(t) >= CATCH_UP_LOG_EVERY);
        if known > commit + CATCH_UP_LOG_SLOTS && due {
            self.progress_logged = Some(now);
            let node = self.shell.book.local.id();
            tracing::info!(%node, commit, known, behind = known - commit, "catching up");
        }
    }
}

shell_actor!(LearnerActor);

impl Handler<Status> for LearnerActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RoleStatus::Learner {
            commit: self.role.commit(),
            known_commit: self.role.known_commit(),
            dropped: self.role.dropped,
        })
    }
}

/// Drives the [`Applier`]: calls the backend and feeds its replies back.
pub struct ApplierActor {
    role: Applier,
    shell: Shell,
    backend: Arc<dyn Backend>,
    updates: u64,
    duplicates: u64,
}

impl ApplierActor {
    pub(crate) fn new(role: Applier, shell: Shell, backend: Arc<dyn Backend>) -> ApplierActor {
        ApplierActor {
            role,
            shell,
            backend,
            updates: 0,
            duplicates: 0,
        }
    }
}

impl Driven for ApplierActor {
    type Role = Applier;

    fn parts(&mut self) -> (&mut Applier, &mut Shell) {
        (&mut self.role, &mut self.shell)
    }

    fn fire(role: &mut Applier, c: &mut Ctx<'_>, timer: Timer) {
        role.on_timer(c, timer);
    }

    fn apply(&mut self, ctx: &mut Context<Self>, slot: Slot, index: u32, update: Update) {
        let call = self.backend.call(slot, index, update);
        ctx.spawn(fut::wrap_future::<_, Self>(call).map(
            move |reply, act: &mut Self, ctx: &mut Context<Self>| {
                drive(act, ctx, |role, c| {
                    role.on_backend_reply(c, slot, index, reply)
                });
            },
        ));
    }

    /// The journal is for observers; keep only counts.
    fn after_handler(&mut self) {
        for a in self.role.journal.drain(..) {
            match a {
                Applied::Update { .. } => self.updates += 1,
                Applied::Duplicate { .. } => self.duplicates += 1,
            }
        }
        let (applied, stuck) = (self.role.applied(), self.role.stuck_attempts());
        self.shell.book.status.set_applied(applied, stuck);
    }
}

shell_actor!(ApplierActor);

impl Handler<Status> for ApplierActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RoleStatus::Applier {
            applied: self.role.applied(),
            updates: self.updates,
            duplicates: self.duplicates,
            dropped: self.role.dropped,
        })
    }
}
