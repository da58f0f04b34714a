//! The one driver of the protocol roles, in production and in the sim.
//!
//! A role (`Proposer`, `Acceptor`, `Learner`, `Applier`) is a pure state
//! machine: a handler reads and writes the group's [`Kv`] and returns
//! [`Command`]s (see the contract in `paxos::command`). A [`Driver`] owns
//! one role and everything between it and the world that is a protocol
//! decision rather than a mechanism of the world:
//!
//! - dispatch of an [`Input`] to the role method that handles it;
//! - the held-message queue: a message that must wait for a sync is held
//!   at the [`Kv::write_mark`] of the moment, and released, in order,
//!   once [`Kv::durable_mark`] covers it (group commit, `commit.rs`);
//! - the timer table: which timers the role has set, and which wake-up is
//!   current (`timers.rs`);
//! - recovery of a whole group from its `Kv` in a fixed order (`group`).
//!
//! What is left to a shell is the world: the actix actors of
//! `node::actors` in production, the seeded scheduler of `sim` in tests.
//! A shell calls the driver and carries out its [`Output`]s:
//!
//! | output | the shell | and then calls |
//! |---|---|---|
//! | `Send` | delivers the message (locally or over the network) | |
//! | `Flush` | waits until the inputs already queued are handled | [`Driver::flush`] |
//! | `Sync` | syncs the `Kv` (off the handler's thread in production) | [`Driver::synced`] |
//! | `Timer` | wakes at `at` on the node's monotonic clock | [`Driver::fire`] |
//! | `Apply` | calls the backend | [`Driver::step`] with `Input::BackendReply` |
//! | `Client` | completes the client's request at the gateway | |
//!
//! The driver holds no clock, socket, thread or OS randomness: `now` and
//! the `Kv` come with every call, and its `Rng` is given at recovery.

#![deny(missing_docs)]

mod commit;
pub mod group;
mod timers;

pub use group::{Group, GroupConfig, StartError};

use crate::apply::applier::{Applier, Operator};
use crate::paxos::acceptor::Acceptor;
use crate::paxos::ballot::{NodeId, Slot, Update, UpdateId};
use crate::paxos::command::{BackendReply, ClientOutcome, Command, Ctx, Timer};
use crate::paxos::learner::Learner;
use crate::paxos::message::{Message, Role};
use crate::paxos::proposer::Proposer;
use crate::rng::Rng;
use crate::storage::kv::Kv;
use crate::time::Time;
use commit::GroupCommit;
use timers::{Timers, Wake};

/// Something for a role to handle.
#[derive(Debug)]
pub enum Input {
    /// A protocol message from node `from` (this node, for a message
    /// between its own roles).
    Message {
        /// The sending node.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// Proposer: client updates taken by this node's gateway.
    Submit(Vec<Update>),
    /// Proposer: a linearizable read taken by this node's gateway.
    Read(UpdateId),
    /// Applier: the backend's reply to `Output::Apply`.
    BackendReply {
        /// The slot of the call.
        slot: Slot,
        /// The update's index in the slot.
        index: u32,
        /// What the backend said.
        reply: BackendReply,
    },
    /// Applier: an operator's action on the node state.
    Operator(Operator),
    /// Proposer: an operator's request about the active set, numbered
    /// by the caller (`Proposer::member_op`).
    Member {
        /// The request's number.
        id: u64,
        /// The request.
        op: crate::paxos::members::MemberOp,
    },
}

/// What the driver asks its shell to do (see the table above).
#[derive(Debug)]
pub enum Output {
    /// Deliver `msg` to `role` on node `to` now.
    Send {
        /// The receiving node.
        to: NodeId,
        /// The receiving role.
        role: Role,
        /// The message.
        msg: Message,
    },
    /// Call [`Driver::flush`] once the inputs already waiting for this
    /// role are handled, so that their held messages share one sync.
    Flush,
    /// Sync the `Kv`, at least up to write mark `mark`, then call
    /// [`Driver::synced`]. At most one is outstanding per driver.
    Sync {
        /// The write mark when the sync was asked for.
        mark: u64,
    },
    /// Call [`Driver::fire`] with `timer` and `generation` once the node's
    /// clock reaches `at`. A wake-up whose generation is no longer
    /// current is ignored, so a shell need not cancel replaced timers.
    Timer {
        /// Which timer.
        timer: Timer,
        /// When, on the node's monotonic clock.
        at: Time,
        /// Which setting of the timer this is.
        generation: u64,
    },
    /// Send update `index` of `slot` to the local backend; report the
    /// reply as `Input::BackendReply`.
    Apply {
        /// The slot.
        slot: Slot,
        /// The update's index in the slot.
        index: u32,
        /// The update.
        update: Update,
    },
    /// Tell the gateway what became of a client's request.
    Client(ClientOutcome),
}

/// A protocol role as the driver sees it.
pub trait Driven {
    /// The role's name on the wire: messages for it carry this.
    const ROLE: Role;
    /// Handle one input; an input the role does not take is dropped and
    /// counted.
    fn handle(&mut self, ctx: &mut Ctx<'_>, input: Input);
    /// A timer the role set is due.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer);
}

/// One role and its driving state.
pub struct Driver<R> {
    role: R,
    rng: Rng,
    commit: GroupCommit,
    timers: Timers,
    /// What the role asked for while it recovered, until `start`.
    init: Vec<Output>,
    /// Messages dropped for an absurd value (`Message::absurd`).
    absurd: u64,
}

impl<R: Driven> Driver<R> {
    /// Wrap a role built by `build`, which may read the `Kv` and ask for
    /// things (a timer, a first backend call) as any handler does; those
    /// outputs wait for [`Driver::start`].
    pub(crate) fn recover(
        now: Time,
        kv: &mut dyn Kv,
        mut rng: Rng,
        build: impl FnOnce(&mut Ctx<'_>) -> R,
    ) -> Driver<R> {
        let mut cmds = Vec::new();
        let role = {
            let mut ctx = Ctx {
                now,
                kv,
                rng: &mut rng,
                out: &mut cmds,
            };
            build(&mut ctx)
        };
        let mut d = Driver {
            role,
            rng,
            commit: GroupCommit::default(),
            timers: Timers::default(),
            init: Vec::new(),
            absurd: 0,
        };
        let mut init = Vec::with_capacity(cmds.len());
        d.execute(kv, cmds, &mut init);
        d.init = init;
        d
    }

    /// The role, for reading its state.
    pub fn role(&self) -> &R {
        &self.role
    }

    /// The role, for observers that drain what it recorded (the applier's
    /// journal). Protocol inputs go through [`Driver::step`].
    pub fn role_mut(&mut self) -> &mut R {
        &mut self.role
    }

    /// What the role asked for while it recovered: run these first.
    pub fn start(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.init)
    }

    /// Hand one input to the role and execute its commands. A message
    /// with an absurd value (`Message::absurd`) is dropped here, before
    /// the role sees it.
    pub fn step(&mut self, now: Time, kv: &mut dyn Kv, input: Input) -> Vec<Output> {
        if let Input::Message { from, msg } = &input
            && let Some(why) = msg.absurd()
        {
            self.absurd += 1;
            // The first, then one in a thousand: a peer that sends many
            // must not flood the log.
            if self.absurd % 1000 == 1 {
                let dropped = self.absurd;
                tracing::warn!(%from, role = ?R::ROLE, dropped, "dropped a message from a peer: {why}");
            }
            return Vec::new();
        }
        self.run(now, kv, |role, ctx| role.handle(ctx, input))
    }

    /// Messages dropped so far for an absurd value.
    pub fn absurd(&self) -> u64 {
        self.absurd
    }

    /// A wake-up the shell scheduled for `Output::Timer` is due. Only the
    /// current setting of the timer reaches the role, and only once `now`
    /// has reached it; a wake-up before that is asked for again (the same
    /// `Output::Timer`), so the role never sees a timer early.
    pub fn fire(
        &mut self,
        now: Time,
        kv: &mut dyn Kv,
        timer: Timer,
        generation: u64,
    ) -> Vec<Output> {
        match self.timers.take(timer, generation, now) {
            Wake::Due => self.run(now, kv, |role, ctx| role.on_timer(ctx, timer)),
            Wake::Early(again) => vec![again],
            Wake::Stale => Vec::new(),
        }
    }

    /// The inputs that were waiting are handled: sync once for every
    /// message held so far, or release them if a sync already covered
    /// them.
    pub fn flush(&mut self, kv: &dyn Kv) -> Vec<Output> {
        let mut out = Vec::new();
        self.commit.flush(kv, &mut out);
        out
    }

    /// The sync asked for by `Output::Sync` has returned: release every
    /// held message it covers.
    pub fn synced(&mut self, kv: &dyn Kv) -> Vec<Output> {
        let mut out = Vec::new();
        self.commit.synced(kv, &mut out);
        out
    }

    /// Messages waiting for a sync.
    pub fn held(&self) -> usize {
        self.commit.held()
    }

    /// The timers set and not yet fired: `(timer, generation, at)`. A
    /// shell whose clock jumps schedules them again.
    pub fn timers(&self) -> impl Iterator<Item = (Timer, u64, Time)> + '_ {
        self.timers.pending()
    }

    fn run(
        &mut self,
        now: Time,
        kv: &mut dyn Kv,
        f: impl FnOnce(&mut R, &mut Ctx<'_>),
    ) -> Vec<Output> {
        let mut cmds = Vec::new();
        {
            let mut ctx = Ctx {
                now,
                kv: &mut *kv,
                rng: &mut self.rng,
                out: &mut cmds,
            };
            f(&mut self.role, &mut ctx);
        }
        let mut out = Vec::with_capacity(cmds.len());
        self.execute(kv, cmds, &mut out);
        out
    }

    /// The commands of one handler, in order, into outputs.
    fn execute(&mut self, kv: &dyn Kv, cmds: Vec<Command>, out: &mut Vec<Output>) {
        for cmd in cmds {
            match cmd {
                Command::Send {
                    to,
                    role,
                    msg,
                    after_sync: false,
                } => out.push(Output::Send { to, role, msg }),
                Command::Send {
                    to,
                    role,
                    msg,
                    after_sync: true,
                } => self.commit.send_durable(kv, to, role, msg, out),
                Command::SetTimer { timer, at } => out.push(self.timers.set(timer, at)),
                Command::Apply {
                    slot,
                    index,
                    update,
                } => out.push(Output::Apply {
                    slot,
                    index,
                    update,
                }),
                Command::Client(outcome) => out.push(Output::Client(outcome)),
            }
        }
    }
}

impl Driven for Proposer {
    const ROLE: Role = Role::Proposer;

    fn handle(&mut self, ctx: &mut Ctx<'_>, input: Input) {
        match input {
            Input::Message { from, msg } => self.on_message(ctx, from, msg),
            Input::Submit(updates) => self.submit(ctx, updates),
            Input::Read(id) => self.read(ctx, id),
            Input::Member { id, op } => self.member_op(ctx, id, op),
            Input::BackendReply { .. } | Input::Operator(_) => self.dropped += 1,
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        Proposer::on_timer(self, ctx, timer);
    }
}

impl Driven for Acceptor {
    const ROLE: Role = Role::Acceptor;

    fn handle(&mut self, ctx: &mut Ctx<'_>, input: Input) {
        match input {
            Input::Message { from, msg } => self.on_message(ctx, from, msg),
            _ => self.dropped += 1,
        }
    }

    /// The acceptor sets no timers.
    fn on_timer(&mut self, _: &mut Ctx<'_>, _: Timer) {
        self.dropped += 1;
    }
}

impl Driven for Learner {
    const ROLE: Role = Role::Learner;

    fn handle(&mut self, ctx: &mut Ctx<'_>, input: Input) {
        match input {
            Input::Message { from, msg } => self.on_message(ctx, from, msg),
            _ => self.dropped += 1,
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        Learner::on_timer(self, ctx, timer);
    }
}

impl Driven for Applier {
    const ROLE: Role = Role::Applier;

    fn handle(&mut self, ctx: &mut Ctx<'_>, input: Input) {
        match input {
            Input::Message { from, msg } => self.on_message(ctx, from, msg),
            Input::BackendReply { slot, index, reply } => {
                self.on_backend_reply(ctx, slot, index, reply)
            }
            Input::Operator(op) => self.operate(ctx, op),
            _ => self.dropped += 1,
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, timer: Timer) {
        Applier::on_timer(self, ctx, timer);
    }
}
