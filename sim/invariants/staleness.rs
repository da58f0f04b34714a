//! Plain reads are at most the documented bound behind (docs/operations.md,
//! "Linearizable reads and lag"): a node serves a plain read only while
//! its applied index is within `max_lag_slots` of the commit index it
//! knows and it had contact with a leader backed by a quorum within
//! `lease`. So a plain read that arrives at time `t` reflects every slot
//! chosen before `t - bound`, except at most `max_lag_slots` of them, with
//!
//! ```text
//! bound = (lease + election_timeout) / (1 - drift) + 2 * longest delay
//! ```
//!
//! where `drift` bounds how much slower than real time a node's clock may
//! run. Why: the node's last contact came at most `lease` (its clock) ago,
//! from a heartbeat sent at most one delay earlier by a leader that had
//! committed every slot an earlier leadership may have chosen, and that
//! a quorum had confirmed at most `election_timeout` (its clock) before
//! (else it steps down). A newer leader chooses nothing before that
//! confirmation. The leader itself had committed every slot it proposed
//! more than `knowledge_limit` (its clock) before the heartbeat, or it
//! would not have renewed the lease (`Proposer::knowledge_horizon`:
//! votes can be lost and resent many times, so "it knew of its choices
//! one delay after" does not hold by itself); `knowledge_limit` is half
//! an election timeout, so the same term covers both cases (a slot is
//! chosen either by a newer leader or by this one, never both). For the
//! leader itself, its lease is that confirmation, capped the same way.

use super::chosen::Chosen;
use crate::driver::GroupConfig;
use crate::gateway::readiness::ReadLimits;
use crate::paxos::ballot::{NodeId, Slot};
use crate::sim::scenario::{DRIFT_PPM_MAX, Scenario};
use crate::time::Time;
use std::time::Duration;

pub(in crate::sim) struct Staleness {
    bound: Duration,
    max_lag: u64,
}

impl Staleness {
    pub(in crate::sim) fn new(sc: &Scenario, cfg: &GroupConfig, limits: &ReadLimits) -> Staleness {
        assert!(cfg.proposer.knowledge_limit() <= cfg.proposer.election_timeout);
        let local = limits.lease + cfg.proposer.election_timeout;
        let slow = 1.0 - DRIFT_PPM_MAX as f64 / 1e6;
        let bound = local.div_f64(slow) + sc.delay.1 * 2;
        Staleness {
            bound,
            max_lag: limits.max_lag_slots,
        }
    }

    /// A plain read served at `now` by `node`, whose applied index was
    /// `applied`.
    pub(in crate::sim) fn check(
        &self,
        chosen: &Chosen,
        now: Time,
        node: NodeId,
        applied: Slot,
    ) -> Result<(), String> {
        let since = now - self.bound;
        let needed = chosen.prefix_at(since);
        if applied + self.max_lag < needed {
            return Err(format!(
                "plain read at {node} at {now} reflects slots up to {applied}, but every slot up to {needed} was chosen by {since} ({:?} earlier) and at most {} may be missing",
                self.bound, self.max_lag
            ));
        }
        Ok(())
    }
}
