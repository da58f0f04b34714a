//! Liveness: once the faults heal, every node comes back, one leads, and
//! every node commits and applies everything chosen, every client call
//! ends, the active set is back to the preferred members (those that
//! are fit to vote) with the preferred leader leading, and the final
//! reads through the log complete, all within `LIVENESS_LIMIT`. And a scenario's `expect` lines: a run that stalled
//! or flapped throughout its faults fails instead of passing vacuously.

use crate::sim::clients::OpStatus;
use crate::sim::report::FailureKind;
use crate::sim::scenario::Expect;
use crate::sim::world::{Ev, Phase, World};
use std::time::Duration;

impl World {
    /// Whether every node applied everything chosen, and no client waits.
    fn converged(&self) -> Result<(), String> {
        if self
            .clients
            .ops
            .iter()
            .any(|o| o.status == OpStatus::Pending)
        {
            return Err("client operations still pending".into());
        }
        let top = self.checks.chosen.top();
        let mut lagging = Vec::new();
        for n in &self.nodes {
            let Some(g) = &n.group else {
                lagging.push(format!("{} down", n.id));
                continue;
            };
            let (c, a) = (g.learner.role().commit(), g.applier.role().applied());
            if c < top || a < top {
                lagging.push(format!("{} commit {c} applied {a} of {top}", n.id));
            }
            if let Some((waiting, fence)) = g.proposer.role().rebuilding() {
                lagging.push(format!(
                    "{} still rebuilding (waiting for {waiting:?}, fence {fence:?})",
                    n.id
                ));
            }
        }
        let leads = |n: &crate::sim::node::SimNode| {
            n.group
                .as_ref()
                .is_some_and(|g| g.proposer.role().is_leader())
        };
        if !self.nodes.iter().any(leads) {
            lagging.push("no leader".into());
        }
        // Membership: every fit preferred member votes again, and the
        // first of them leads (a node fenced for its replica cannot).
        let fit = |id: crate::paxos::ballot::NodeId| !self.nodes[id.0 as usize].fenced();
        let era = self.checks.chosen.eras().latest();
        for &p in self.members.voters.iter().filter(|&&p| fit(p)) {
            if !era.voters.contains(&p) {
                lagging.push(format!(
                    "preferred member {p} is not active ({:?})",
                    era.voters
                ));
            }
        }
        if let Some(&first) = self.members.voters.iter().find(|&&p| fit(p)) {
            if !leads(&self.nodes[first.0 as usize]) {
                lagging.push(format!("preferred leader {first} does not lead"));
            }
        }
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(lagging.join(", "))
        }
    }

    /// Every 100 ms after the faults: converged yet? Then the final
    /// reads, then done. Past the deadline, a liveness failure (which
    /// ends the run).
    pub(in crate::sim) fn check_progress(&mut self) {
        // A false alarm fences a sound node for good: say so as what it
        // is, before it shows as a cluster that does not converge.
        if let Err(e) = super::divergence::no_false_alarm(&self.nodes) {
            self.fail(FailureKind::Safety, "no-false-divergence", e);
            return;
        }
        // The operator's part: a node whose log was compacted away
        // everywhere is reseeded from a healthy one.
        self.reseed_where_needed();
        let state = self.converged();
        match state {
            Ok(()) if self.phase == Phase::Settle => {
                self.phase = Phase::FinalReads;
                self.start_final_reads();
            }
            Ok(()) if self.phase == Phase::FinalReads && self.final_reads_done() => {
                self.phase = Phase::Done;
                return;
            }
            _ => {}
        }
        if self.now >= self.settle_deadline {
            let why = match state {
                Ok(()) => "the final reads through the log did not complete".to_string(),
                Err(why) => why,
            };
            let msg = format!("cluster did not converge after faults healed: {why}");
            self.fail(FailureKind::Liveness, "liveness", msg);
            return;
        }
        self.push(self.now + Duration::from_millis(100), Ev::Check);
    }

    /// The scenario's availability expectations.
    pub(in crate::sim) fn expectations(&self) -> Result<(), String> {
        for e in &self.sc.expect {
            let r = &self.report;
            match *e {
                Expect::AnsweredAtLeast(n) if r.ops_ok < n => {
                    return Err(format!(
                        "expected at least {n} operations answered, got {}",
                        r.ops_ok
                    ));
                }
                Expect::LeaderChangesAtMost(n) if r.leader_changes > n => {
                    return Err(format!(
                        "expected at most {n} leader changes, got {}",
                        r.leader_changes
                    ));
                }
                Expect::ChangesAtLeast(n) if self.checks.chosen.reconfigurations() < n => {
                    return Err(format!(
                        "expected at least {n} changes of the active set, got {}",
                        self.checks.chosen.reconfigurations()
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
