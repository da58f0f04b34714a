//! What every run must keep, one file per invariant (as openraft's
//! `tests-turmoil/src/invariants/` does). Some are watched while the run
//! goes (a message leaving, a node recovering, a plain read served), the
//! rest judge the finished run. The first broken one ends the run.
//!
//! | check | file | what users rely on |
//! |---|---|---|
//! | `one-value-per-slot` | `chosen.rs` | a slot's chosen value never changes, counted from the votes of its era's voters |
//! | `era-overlap` | `chosen.rs` | every active set keeps a majority of the one before |
//! | `promoted-caught-up` | `promotion.rs` | a backup is promoted only when it runs and has kept up |
//! | `durability` | `durability.rs` | what a promise, vote or prepare said is still on disk after a crash |
//! | `stale-plain-read` | `staleness.rs` | a plain read is at most the documented bound behind |
//! | `learned-chosen` | `learned.rs` | every slot a learner commits holds the chosen value |
//! | `logs-agree`, `eras-agree` | `agreement.rs` | every node's log holds the same value in every slot, and makes the same active sets |
//! | `applied-prefix`, `exactly-once` | `applied.rs` | backends apply one sequence; no acknowledged update lost or applied twice |
//! | `linearizable` | `linearizable.rs` | the client history (updates, log reads, read-index reads) |
//! | `no-false-divergence`, `divergence-found` | `divergence.rs` | a node calls its replica diverged exactly when it differs |
//! | `liveness` | `liveness.rs` | the healed cluster converges; a scenario's `expect` lines |

pub mod agreement;
pub mod applied;
pub mod chosen;
pub mod divergence;
pub mod durability;
pub mod learned;
pub mod linearizable;
pub mod liveness;
pub mod promotion;
pub mod staleness;

use super::scenario::Scenario;
use super::world::Checks;
use crate::driver::GroupConfig;
use crate::gateway::readiness::ReadLimits;
use crate::paxos::ballot::NodeId;
use crate::paxos::message::Message;
use crate::time::Time;

/// The state the watched invariants keep while the run goes.
pub(super) struct Invariants {
    mode: Checks,
    pub(super) chosen: chosen::Chosen,
    pub(super) durable: durability::Durable,
    pub(super) applied: applied::AppliedLog,
    pub(super) stale: staleness::Staleness,
    pub(super) promotions: promotion::Promotions,
    pub(super) learned: learned::Learned,
}

impl Invariants {
    pub(super) fn new(
        mode: Checks,
        sc: &Scenario,
        cfg: &GroupConfig,
        limits: &ReadLimits,
        members: &crate::paxos::membership::Membership,
    ) -> Invariants {
        Invariants {
            mode,
            chosen: chosen::Chosen::new(members),
            durable: durability::Durable::default(),
            applied: applied::AppliedLog::default(),
            stale: staleness::Staleness::new(sc, cfg, limits),
            promotions: promotion::Promotions::default(),
            learned: learned::Learned::default(),
        }
    }

    /// Whether a failure of `check` counts in this run.
    pub(super) fn enabled(&self, check: &str) -> bool {
        match self.mode {
            Checks::All => true,
            Checks::HistoryOnly => matches!(check, "linearizable" | "assertion" | "budget"),
        }
    }

    pub(super) fn mode(&self) -> Checks {
        self.mode
    }

    /// A message leaves node `from` (after the sync that covers it, if it
    /// waited for one).
    pub(super) fn on_leave(
        &mut self,
        now: Time,
        from: NodeId,
        msg: &Message,
    ) -> Result<(), (&'static str, String)> {
        self.durable.note(from, msg);
        self.chosen.observe(now, from, msg)
    }
}

impl super::world::World {
    /// The end-of-run checks, in order; the first failure is the run's.
    /// A run that already failed is not judged further (it ended at
    /// once), except that `Checks::HistoryOnly` always judges the history.
    pub(super) fn judge(&mut self) {
        use super::report::FailureKind::{Liveness, Safety};
        self.report.diverged = self
            .nodes
            .iter()
            .filter(|n| n.diverged())
            .map(|n| n.id)
            .collect();
        self.report.reconfigurations = self.checks.chosen.reconfigurations();
        let failed = self.report.failure.is_some();
        if failed && self.checks.mode() == Checks::All {
            return;
        }
        if !failed {
            // Safety first: a run that broke agreement may also have
            // missed its expectations, but that is not the news.
            if let Err(e) = agreement::logs_agree(&self.nodes) {
                self.fail(Safety, "logs-agree", e);
            }
            if let Err(e) = agreement::eras_agree(&self.nodes, self.checks.chosen.eras()) {
                self.fail(Safety, "eras-agree", e);
            }
            if let Err(e) = self.expectations() {
                self.fail(Liveness, "liveness", e);
            }
            if let Err(e) = self.checks.applied.sequences_are_prefixes() {
                self.fail(Safety, "applied-prefix", e);
            }
            if let Err(e) = divergence::no_false_alarm(&self.nodes) {
                self.fail(Safety, "no-false-divergence", e);
            }
            if self.phase == super::world::Phase::Done {
                if let Err(e) = divergence::found(&self.nodes, self.now) {
                    self.fail(Liveness, "divergence-found", e);
                }
                // Only a converged cluster must have applied everything.
                let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                if let Err(e) = self.checks.applied.exactly_once(&ids, &self.clients.ops) {
                    self.fail(Safety, "exactly-once", e);
                }
            }
        }
        self.report.linearizable = match linearizable::check(&self.clients.ops) {
            Ok(Some(())) => Some(true),
            Ok(None) => None,
            Err(e) => {
                self.fail(Safety, "linearizable", e);
                Some(false)
            }
        };
    }
}
