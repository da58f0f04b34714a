//! Whether a node may serve plain reads for a service, and if not, why
//! (MISSION, Lag): a reason a person can read, for the 503 and /readyz.
//!
//! Pure: the gateway decides from a [`ReadState`] snapshot of its
//! group's published status, and the sim's gateway model decides from
//! the same snapshot of its roles, with this same function.

use crate::paxos::ballot::Slot;
use crate::paxos::state::NodeState;
use crate::time::Time;
use std::time::Duration;

/// What the durable node state forbids: this node serves neither reads
/// nor updates, whatever its lag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fence {
    /// An operator disabled the node.
    Disabled {
        /// The operator's reason.
        reason: String,
    },
    /// The log this node needs from `slot` on was compacted away on
    /// every peer: it waits for a reseed.
    NeedsReseed {
        /// The first slot it lacks.
        slot: Slot,
    },
    /// The replica differs from the others from `slot` on.
    Diverged {
        /// The first slot found to differ.
        slot: Slot,
        /// No majority agreed there (else: a majority differs from us).
        no_majority: bool,
    },
}

impl Fence {
    /// The fence a node state puts up; divergence first, as the graver.
    pub fn of(state: &NodeState) -> Option<Fence> {
        if let Some(d) = &state.diverged {
            return Some(Fence::Diverged {
                slot: d.slot,
                no_majority: d.majority.is_none(),
            });
        }
        if let Some(slot) = state.needs_reseed {
            return Some(Fence::NeedsReseed { slot });
        }
        state.disabled.as_ref().map(|reason| Fence::Disabled {
            reason: reason.clone(),
        })
    }

    /// The fence in words, for 503 bodies and /_ordo/status.
    pub fn reason(&self) -> String {
        match self {
            Fence::Disabled { reason } => format!("disabled by an operator: {reason}"),
            Fence::NeedsReseed { slot } => format!(
                "needs reseed: slot {slot} and later were dropped from every peer's log \
                 (compaction) before this node got them; copy a healthy node's backend \
                 (ordo reseed)"
            ),
            Fence::Diverged {
                slot,
                no_majority: false,
            } => format!(
                "diverged: this node's backend answered slot {slot} differently from a \
                 majority of the nodes; repair its data, then clear the divergence"
            ),
            Fence::Diverged {
                slot,
                no_majority: true,
            } => format!(
                "diverged: the nodes' backends answered slot {slot} in ways no majority \
                 agrees on; repair the backends, then clear the divergence"
            ),
        }
    }

    /// The state name, for /_ordo/status.
    pub fn state(&self) -> &'static str {
        match self {
            Fence::Disabled { .. } => "disabled",
            Fence::NeedsReseed { .. } => "needs-reseed",
            Fence::Diverged { .. } => "diverged",
        }
    }
}

/// What the decision needs to know about one group on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadState {
    /// The applier's applied index.
    pub applied: Slot,
    /// The highest commit index this node has heard of (its learner's,
    /// or a leader's heartbeat).
    pub known_commit: Slot,
    /// The proposer's last contact with a leader backed by a quorum.
    pub lease_contact: Option<Time>,
    /// Attempts at the update the applier is stuck on (0: not stuck).
    pub apply_attempts: u64,
    /// What the durable node state forbids.
    pub fence: Option<Fence>,
}

/// Why reads are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// Applied index too far behind the commit index this node knows.
    Lagging { applied: u64, known: u64 },
    /// No leader confirmed within the lease (a partition, an election).
    NoQuorum { since_ms: Option<u64> },
    /// The applier keeps failing on one update (backend down or refusing).
    Stuck { slot: u64, attempts: u64 },
    /// The node state forbids serving (disabled, diverged).
    Fenced(Fence),
}

impl NotReady {
    pub fn reason(&self) -> String {
        match self {
            NotReady::Lagging { applied, known } => format!(
                "catching up: applied {applied} of {known} known chosen slots ({} behind)",
                known - applied
            ),
            NotReady::NoQuorum { since_ms: None } => {
                "no contact with a quorum: no leader known yet".into()
            }
            NotReady::NoQuorum { since_ms: Some(ms) } => {
                format!("no contact with a quorum for {ms} ms")
            }
            NotReady::Stuck { slot, attempts } => {
                format!("the backend keeps failing to apply slot {slot} ({attempts} attempts)")
            }
            NotReady::Fenced(f) => f.reason(),
        }
    }

    /// A short machine-readable state name, for /_ordo/status.
    pub fn state(&self) -> &'static str {
        match self {
            NotReady::Lagging { .. } => "catching-up",
            NotReady::NoQuorum { .. } => "no-quorum",
            NotReady::Stuck { .. } => "stuck",
            NotReady::Fenced(f) => f.state(),
        }
    }
}

/// The limits the decision uses (from the configuration).
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub max_lag_slots: u64,
    pub lease: Duration,
    /// Applier attempts at one update before the node calls itself stuck.
    pub stuck_attempts: u64,
}

/// May this node serve a plain read now?
pub fn check(state: &ReadState, now: Time, limits: &ReadLimits) -> Result<(), NotReady> {
    if let Some(f) = &state.fence {
        return Err(NotReady::Fenced(f.clone()));
    }
    let applied = state.applied;
    let known = state.known_commit.max(applied);
    if known > applied + limits.max_lag_slots {
        return Err(NotReady::Lagging { applied, known });
    }
    match state.lease_contact {
        None => return Err(NotReady::NoQuorum { since_ms: None }),
        Some(t) if now.since(t) > limits.lease => {
            let since_ms = now.since(t).as_millis() as u64;
            return Err(NotReady::NoQuorum {
                since_ms: Some(since_ms),
            });
        }
        Some(_) => {}
    }
    let attempts = state.apply_attempts;
    if attempts >= limits.stuck_attempts {
        return Err(NotReady::Stuck {
            slot: applied + 1,
            attempts,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReadLimits = ReadLimits {
        max_lag_slots: 10,
        lease: Duration::from_secs(2),
        stuck_attempts: 5,
    };

    fn status(applied: u64, known: u64, lease: Option<Time>, attempts: u64) -> ReadState {
        ReadState {
            applied,
            known_commit: known,
            lease_contact: lease,
            apply_attempts: attempts,
            fence: None,
        }
    }

    #[test]
    fn a_caught_up_node_in_touch_with_a_quorum_serves_reads() {
        let now = Time::from_millis(10_000);
        let s = status(100, 105, Some(Time::from_millis(9_500)), 0);
        assert_eq!(check(&s, now, &LIMITS), Ok(()));
    }

    #[test]
    fn each_reason_to_refuse_reads_is_named() {
        let now = Time::from_millis(10_000);
        let fresh = Some(Time::from_millis(9_900));
        let lagging = check(&status(100, 111, fresh, 0), now, &LIMITS).unwrap_err();
        assert_eq!(
            lagging.reason(),
            "catching up: applied 100 of 111 known chosen slots (11 behind)"
        );
        let lost = check(
            &status(5, 5, Some(Time::from_millis(7_000)), 0),
            now,
            &LIMITS,
        )
        .unwrap_err();
        assert_eq!(lost.reason(), "no contact with a quorum for 3000 ms");
        let never = check(&status(0, 0, None, 0), now, &LIMITS).unwrap_err();
        assert_eq!(never.state(), "no-quorum");
        let stuck = check(&status(7, 8, fresh, 5), now, &LIMITS).unwrap_err();
        assert_eq!(
            stuck.reason(),
            "the backend keeps failing to apply slot 8 (5 attempts)"
        );
    }

    #[test]
    fn a_fenced_node_refuses_reads_however_fresh_it_is() {
        let now = Time::from_millis(10_000);
        let mut s = status(100, 100, Some(Time::from_millis(9_900)), 0);
        s.fence = Fence::of(&NodeState {
            disabled: Some("maintenance".into()),
            ..NodeState::default()
        });
        let why = check(&s, now, &LIMITS).unwrap_err();
        assert_eq!(why.state(), "disabled");
        assert_eq!(why.reason(), "disabled by an operator: maintenance");
        s.fence = Fence::of(&NodeState {
            disabled: Some("maintenance".into()),
            diverged: Some(crate::paxos::state::Divergence {
                slot: 42,
                ours: 1,
                majority: Some(2),
            }),
            cleared_upto: 0,
            needs_reseed: None,
        });
        let why = check(&s, now, &LIMITS).unwrap_err();
        assert_eq!(why.state(), "diverged");
        assert!(why.reason().contains("slot 42"), "{}", why.reason());
    }
}
