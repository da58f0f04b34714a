//! What one run produced, and how it went wrong.

use crate::time::Time;

/// How a run went wrong. Distinct so a runner can exit distinctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A safety property broke: linearizability, agreement, a lost
    /// acknowledged update, applied sequences that are not prefixes, a
    /// stale plain read, a reply whose durable state was lost.
    Safety,
    /// The healed cluster did not converge in time, a scenario's
    /// availability expectation failed, or the run exceeded its budget.
    Liveness,
    /// An assertion inside the role code fired.
    Assertion,
}

/// The first thing that went wrong; it ends the run.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// The check that failed (an invariant's name, "assertion", "budget").
    pub check: &'static str,
    pub message: String,
}

/// What one run produced.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The failure that ended the run, if any.
    pub failure: Option<Failure>,
    /// The checker's verdict on the client history: `None` if it ran out
    /// of budget or did not run (the run had already failed).
    pub linearizable: Option<bool>,
    /// FNV-1a over every event processed, in order: equal for equal runs.
    pub trace_hash: u64,
    pub events: u64,
    /// Client operations answered (ok), unknown, refused.
    pub ops_ok: u64,
    pub ops_unknown: u64,
    pub ops_refused: u64,
    /// Plain (not linearizable) reads served, and refused as not ready.
    pub plain_reads: u64,
    pub plain_refused: u64,
    /// Chosen entries that learners received by fetching (catch-up).
    pub fetched_entries: u64,
    /// How often a node became leader.
    pub leader_changes: u64,
    /// Promise pages that said more follow (paging at work).
    pub partial_pages: u64,
    /// Leaderships won by a candidate that received a partial page.
    pub leaders_paged: u64,
    /// Changes of the active set chosen (eras made).
    pub reconfigurations: u64,
    /// Syncs started by the drivers, over all nodes.
    pub syncs: u64,
    /// The most applier calls one node had out to its backend at once.
    pub apply_calls_max: u64,
    /// Reseeds the operator model made (nodes behind the compaction).
    pub reseeds: u64,
    /// The nodes that call their replica diverged at the end.
    pub diverged: Vec<crate::paxos::ballot::NodeId>,
    pub sim_time: Time,
    /// Optional human-readable trace (when asked for).
    pub trace: Vec<String>,
}

impl Report {
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether the linearizability checker itself found a violation.
    pub fn history_violated(&self) -> bool {
        self.linearizable == Some(false)
    }
}
