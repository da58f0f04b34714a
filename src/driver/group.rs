//! One Paxos group on one node: its four role drivers, recovered from the
//! group's `Kv` in a fixed order, and the dispatch of inputs by role.
//!
//! Recovery order: acceptor (its promise and accepted entries), learner
//! (the log; it announces the commit index to the others), proposer (its
//! round; it arms the election timer), applier (the applied index; it may
//! call the backend at once). What each role asked for while recovering
//! waits in its driver until the shell calls `start`.

use super::{Driven, Driver, Input, Output};
use crate::apply::applier::{Applier, ApplierConfig};
use crate::paxos::acceptor::{Acceptor, AcceptorBugs, AcceptorConfig, PROMISE_BYTES_MAX_DEFAULT};
use crate::paxos::ballot::NodeId;
use crate::paxos::command::Timer;
use crate::paxos::learner::{Learner, LearnerConfig};
use crate::paxos::membership::Membership;
use crate::paxos::message::Role;
use crate::paxos::proposer::{Proposer, ProposerBugs, ProposerConfig};
use crate::paxos::state;
use crate::rng::Rng;
use crate::storage::kv::Kv;
use crate::time::Time;
use std::fmt;

/// The roles' settings for one group.
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Elections, heartbeats, batching, the window.
    pub proposer: ProposerConfig,
    /// Catch-up fetching and the early-value buffer.
    pub learner: LearnerConfig,
    /// Retries and the dedupe windows.
    pub applier: ApplierConfig,
    /// Bytes of accepted entries per promise page (`AcceptorConfig`).
    pub promise_bytes_max: usize,
    /// What an empty store means: `true`, this member starts a new
    /// cluster and votes at once (`ordo run --init`); `false`, it lost its
    /// state and rebuilds before it votes (`paxos::rebuild`). A store that
    /// holds anything is recovered as it is either way.
    pub new_cluster: bool,
    /// Deliberate protocol bugs, for showing that the checks catch them.
    /// Only the sim and tests set any.
    pub bugs: Bugs,
    /// The service's name, for the shells' logs (`service=` on every
    /// line of its actors).
    pub name: String,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            proposer: ProposerConfig::default(),
            learner: LearnerConfig::default(),
            applier: ApplierConfig::default(),
            promise_bytes_max: PROMISE_BYTES_MAX_DEFAULT,
            new_cluster: true,
            bugs: Bugs::default(),
            name: String::new(),
        }
    }
}

/// Test-only breakage of the roles (see `ProposerBugs`, `AcceptorBugs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The proposer's.
    pub proposer: ProposerBugs,
    /// The acceptor's.
    pub acceptor: AcceptorBugs,
}

impl GroupConfig {
    /// The settings the roles assert, checked up front instead.
    pub fn check(&self) -> Result<(), StartError> {
        let p = &self.proposer;
        if p.window == 0 || p.batch_updates_max == 0 {
            return Err(StartError::BadConfig(
                "proposer window and batch_updates_max must be positive",
            ));
        }
        if p.batch_bytes_max > crate::config::MAX_BODY_BYTES_LIMIT {
            // A batch must fit in one peer frame, like the largest update.
            return Err(StartError::BadConfig(
                "proposer batch_bytes_max must not exceed the largest body allowed",
            ));
        }
        Ok(())
    }
}

/// Why a group could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// This node is not in the group's membership.
    NotAMember(NodeId),
    /// A setting the roles cannot work with.
    BadConfig(&'static str),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NotAMember(id) => write!(f, "{id} is not a member of the group"),
            StartError::BadConfig(why) => write!(f, "bad group configuration: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The four drivers of one group on one node.
pub struct Group {
    /// Elections, phase 1 and 2, forwarding, read indexes.
    pub proposer: Driver<Proposer>,
    /// Promises and votes.
    pub acceptor: Driver<Acceptor>,
    /// The chosen log and catch-up.
    pub learner: Driver<Learner>,
    /// Applies the log to the backend.
    pub applier: Driver<Applier>,
}

/// Call `$body` with `$d` bound to the driver of `$role`.
macro_rules! with_driver {
    ($group:expr, $role:expr, |$d:ident| $body:expr) => {
        match $role {
            Role::Proposer => {
                let $d = &mut $group.proposer;
                $body
            }
            Role::Acceptor => {
                let $d = &mut $group.acceptor;
                $body
            }
            Role::Learner => {
                let $d = &mut $group.learner;
                $body
            }
            Role::Applier => {
                let $d = &mut $group.applier;
                $body
            }
        }
    };
}

impl Group {
    /// Recover node `id`'s roles from `kv`, in the order above. Each role
    /// gets its own generator, forked from `rng`.
    pub fn recover(
        id: NodeId,
        members: Membership,
        cfg: &GroupConfig,
        now: Time,
        kv: &mut dyn Kv,
        rng: &mut Rng,
    ) -> Result<Group, StartError> {
        if !members.is_member(id) {
            return Err(StartError::NotAMember(id));
        }
        cfg.check()?;
        if state::is_empty(kv) && !cfg.new_cluster && !cfg.bugs.acceptor.vote_after_amnesia {
            // Written before any role reads it, and synced with the
            // first group commit: a crash before then leaves the store
            // empty, which rebuilds again.
            state::store_u64(kv, state::Meta::Rebuilding, 1);
        }
        let nodes = members.nodes.clone();
        let acceptor_cfg = AcceptorConfig {
            // Stickiness lasts as long as a follower waits for a leader.
            leader_lease: cfg.proposer.election_timeout,
            promise_bytes_max: cfg.promise_bytes_max,
            learners: nodes.iter().copied().filter(|&n| n != id).collect(),
        };
        let acceptor = Driver::recover(now, kv, rng.fork(), |c| {
            Acceptor::recover(id, c, acceptor_cfg, cfg.bugs.acceptor)
        });
        // The applier rebuilds its dedupe window from the log: it stays.
        let learner_cfg = LearnerConfig {
            keep_applied: cfg.applier.dedupe_window_slots,
            ..cfg.learner.clone()
        };
        let learner = Driver::recover(now, kv, rng.fork(), |c| {
            Learner::recover(id, &members, learner_cfg, c)
        });
        let proposer = Driver::recover(now, kv, rng.fork(), |c| {
            Proposer::recover(id, members, cfg.proposer.clone(), cfg.bugs.proposer, c)
        });
        let applier = Driver::recover(now, kv, rng.fork(), |c| {
            Applier::recover(id, &nodes, cfg.applier.clone(), c)
        });
        Ok(Group {
            proposer,
            acceptor,
            learner,
            applier,
        })
    }

    /// Every role's recovery outputs, in recovery order.
    pub fn start(&mut self) -> Vec<(Role, Vec<Output>)> {
        vec![
            (Role::Acceptor, self.acceptor.start()),
            (Role::Learner, self.learner.start()),
            (Role::Proposer, self.proposer.start()),
            (Role::Applier, self.applier.start()),
        ]
    }

    /// [`Driver::step`] of `role`'s driver.
    pub fn step(&mut self, role: Role, now: Time, kv: &mut dyn Kv, input: Input) -> Vec<Output> {
        with_driver!(self, role, |d| d.step(now, kv, input))
    }

    /// [`Driver::fire`] of `role`'s driver.
    pub fn fire(
        &mut self,
        role: Role,
        now: Time,
        kv: &mut dyn Kv,
        timer: Timer,
        generation: u64,
    ) -> Vec<Output> {
        with_driver!(self, role, |d| d.fire(now, kv, timer, generation))
    }

    /// [`Driver::flush`] of `role`'s driver.
    pub fn flush(&mut self, role: Role, kv: &dyn Kv) -> Vec<Output> {
        with_driver!(self, role, |d| d.flush(kv))
    }

    /// [`Driver::synced`] of `role`'s driver.
    pub fn synced(&mut self, role: Role, kv: &dyn Kv) -> Vec<Output> {
        with_driver!(self, role, |d| d.synced(kv))
    }

    /// Every timer set in the group: `(role, timer, generation, at)`.
    pub fn timers(&self) -> Vec<(Role, Timer, u64, Time)> {
        fn of<R: Driven>(d: &Driver<R>) -> impl Iterator<Item = (Role, Timer, u64, Time)> + '_ {
            d.timers().map(|(t, g, at)| (R::ROLE, t, g, at))
        }
        of(&self.proposer)
            .chain(of(&self.acceptor))
            .chain(of(&self.learner))
            .chain(of(&self.applier))
            .collect()
    }
}
