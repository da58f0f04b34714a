//! The leader's decisions about the active set: which voter is stale,
//! which backup may replace it, when a preferred member comes back, and
//! what an operator's request means. Pure functions of what the leader
//! heard (`Peer`), so each rule is tested on its own; the proposer turns
//! a decision into a `ConfigChange` in the log or a leader transfer.
//!
//! Every change swaps one voter for one other node, so the new active
//! set keeps all but one of the old (a majority of three or more), and
//! is made only if a majority of the new set was heard from recently:
//! a change never leaves the group without a reachable quorum.

use super::ballot::{NodeId, Slot};
use super::membership::{Era, overlaps, quorum};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the leader last heard from a node (answers to its heartbeats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// When.
    pub heard: Time,
    /// Its commit index then.
    pub commit: Slot,
    /// Its applied index then.
    pub applied: Slot,
    /// Whether its replica may be trusted with a vote: not diverged,
    /// disabled, needing a reseed, or rebuilding.
    pub fit: bool,
    /// Since when it has been fit and caught up with the leader, unbroken.
    pub caught_up_since: Option<Time>,
    /// Since when it has reported that its acceptor does not vote
    /// (rebuilding), unbroken.
    pub not_voting_since: Option<Time>,
}

/// An operator's request about the active set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// Make `node` a voter in place of `replace` (or of the voter the
    /// leader would replace first).
    Promote {
        /// The node to promote.
        node: NodeId,
        /// The voter it replaces.
        replace: Option<NodeId>,
    },
    /// Replace voter `node` by the best backup, and keep it out of the
    /// active set until promoted again.
    Demote {
        /// The voter.
        node: NodeId,
    },
    /// Hand leadership to voter `node`.
    Transfer {
        /// The voter.
        node: NodeId,
    },
}

/// A leader transfer under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The voter that is to lead.
    pub to: NodeId,
    /// When it began (it is given up after an election timeout).
    pub since: Time,
    /// Whether the target was told to campaign.
    pub told: bool,
    /// An operator asked for it: the new leader keeps leadership rather
    /// than handing it to the preferred leader.
    pub by_operator: bool,
}

/// What the leader knows when it decides.
pub struct View<'a> {
    /// Now.
    pub now: Time,
    /// The leader.
    pub me: NodeId,
    /// The leader's commit index.
    pub commit: Slot,
    /// What it heard from each node.
    pub peers: &'a BTreeMap<NodeId, Peer>,
    /// When its leadership began: silence is counted from there at most.
    pub since: Time,
    /// A voter silent this long is stale.
    pub stale_after: Duration,
    /// Heard within this: reachable.
    pub recent: Duration,
    /// A backup further behind than this is not promoted.
    pub lag_max: Slot,
    /// Every node of the group.
    pub nodes: &'a [NodeId],
    /// The preferred voters, in order (the configuration file's).
    pub preferred: &'a [NodeId],
}

impl View<'_> {
    /// Whether `n` was heard from recently (the leader always is).
    pub fn reachable(&self, n: NodeId) -> bool {
        n == self.me
            || self
                .peers
                .get(&n)
                .is_some_and(|p| self.now.since(p.heard) < self.recent)
    }

    /// Whether voter `n` has been silent, or has not voted (it rebuilds
    /// after losing its state, and may wait long), for the stale time.
    pub fn stale(&self, n: NodeId) -> bool {
        if n == self.me {
            return false;
        }
        let p = self.peers.get(&n);
        let last = p.map_or(self.since, |p| p.heard.max(self.since));
        let not_voting = p
            .and_then(|p| p.not_voting_since)
            .is_some_and(|t| self.now.since(t.max(self.since)) >= self.stale_after);
        self.now.since(last) >= self.stale_after || not_voting
    }

    /// Whether `n` may vote: reachable, fit and within the lag bound.
    pub fn healthy(&self, n: NodeId) -> bool {
        self.reachable(n)
            && (n == self.me
                || self
                    .peers
                    .get(&n)
                    .is_some_and(|p| p.fit && p.commit + self.lag_max >= self.commit))
    }

    /// Whether `n` is healthy and has kept up with the leader (within a
    /// window of slots) for at least `for_at_least`.
    pub fn caught_up(&self, n: NodeId, for_at_least: Duration) -> bool {
        n == self.me
            || (self.healthy(n)
                && self.peers.get(&n).is_some_and(|p| {
                    p.caught_up_since
                        .is_some_and(|t| self.now.since(t) >= for_at_least)
                }))
    }

    fn rank(&self, n: NodeId) -> usize {
        self.preferred
            .iter()
            .position(|&p| p == n)
            .unwrap_or(self.preferred.len() + n.0 as usize)
    }

    /// `voters` in the order of preference: preferred members in the
    /// file's order, then the others by id. The first is the era's
    /// preferred leader.
    pub fn ordered(&self, mut voters: Vec<NodeId>) -> Vec<NodeId> {
        voters.sort_by_key(|&n| self.rank(n));
        voters
    }

    /// The healthy backup with the most applied, not held out.
    pub fn best_backup(&self, era: &Era) -> Option<NodeId> {
        self.nodes
            .iter()
            .copied()
            .filter(|n| !era.is_voter(*n) && !era.held_out.contains(n) && self.healthy(*n))
            .max_by_key(|n| {
                let p = self.peers.get(n);
                (p.map_or(0, |p| p.applied), std::cmp::Reverse(self.rank(*n)))
            })
    }

    /// Whether swapping `old` for `new` keeps the rules (module comment).
    pub fn check(&self, old: &[NodeId], new: &[NodeId]) -> Result<(), String> {
        if !overlaps(old, new) {
            return Err(format!(
                "{} would keep fewer than a majority of {}",
                names(new),
                names(old)
            ));
        }
        let reachable = new.iter().filter(|&&n| self.reachable(n)).count();
        if reachable < quorum(new.len()) {
            return Err(format!(
                "only {reachable} of {} would be reachable",
                names(new)
            ));
        }
        Ok(())
    }

    fn swap(&self, era: &Era, out: NodeId, into: NodeId) -> Vec<NodeId> {
        let voters = era
            .voters
            .iter()
            .map(|&v| if v == out { into } else { v })
            .collect();
        self.ordered(voters)
    }

    /// The automatic change the active set needs now, if any: a stale
    /// voter replaced by the best backup, else a preferred member that is
    /// back and caught up swapped in for a non-preferred voter.
    pub fn plan(&self, era: &Era, settle: Duration) -> Option<(Vec<NodeId>, String)> {
        let stale = era.voters.iter().copied().find(|&v| self.stale(v));
        if let Some(out) = stale {
            let into = self.best_backup(era)?;
            let new = self.swap(era, out, into);
            self.check(&era.voters, &new).ok()?;
            let silent = self
                .peers
                .get(&out)
                .is_none_or(|p| p.not_voting_since.is_none());
            let what = if silent {
                "not heard from"
            } else {
                "not voting (rebuilding)"
            };
            let why = format!(
                "{out} {what} for {}s; {into} promoted (applied {})",
                self.stale_after.as_secs(),
                self.peers.get(&into).map_or(0, |p| p.applied)
            );
            return Some((new, why));
        }
        let back = self.preferred.iter().copied().find(|&p| {
            !era.is_voter(p) && !era.held_out.contains(&p) && self.caught_up(p, settle)
        })?;
        let out = era
            .voters
            .iter()
            .rev()
            .copied()
            .find(|v| !self.preferred.contains(v) && *v != self.me)?;
        let new = self.swap(era, out, back);
        self.check(&era.voters, &new).ok()?;
        Some((
            new,
            format!("preferred member {back} is back and caught up; {out} steps down"),
        ))
    }

    /// What an operator's request changes: the new voters, held-out set
    /// and reason, or why it cannot be done.
    pub fn operate(&self, era: &Era, op: &MemberOp) -> Result<Change, String> {
        let known = |n: NodeId| {
            if self.nodes.contains(&n) {
                Ok(())
            } else {
                Err(format!("{n} is not a node of this service"))
            }
        };
        match *op {
            MemberOp::Promote { node, replace } => {
                known(node)?;
                if era.is_voter(node) {
                    return Err(format!("{node} is already active"));
                }
                let out = match replace {
                    Some(r) if !era.is_voter(r) => return Err(format!("{r} is not active")),
                    Some(r) => r,
                    None => era
                        .voters
                        .iter()
                        .copied()
                        .find(|&v| self.stale(v))
                        .or_else(|| era.voters.iter().rev().copied().find(|&v| v != self.me))
                        .ok_or("no voter to replace")?,
                };
                let new = self.swap(era, out, node);
                self.check(&era.voters, &new)?;
                let held_out = era
                    .held_out
                    .iter()
                    .copied()
                    .filter(|&h| h != node)
                    .collect();
                Ok(Change::Voters {
                    voters: new,
                    held_out,
                    reason: format!("operator promoted {node} in place of {out}"),
                })
            }
            MemberOp::Demote { node } => {
                known(node)?;
                if !era.is_voter(node) {
                    return Err(format!("{node} is not active"));
                }
                let into = self
                    .best_backup(era)
                    .ok_or("no healthy backup to take its place")?;
                let new = self.swap(era, node, into);
                self.check(&era.voters, &new)?;
                let mut held_out = era.held_out.clone();
                held_out.push(node);
                Ok(Change::Voters {
                    voters: new,
                    held_out,
                    reason: format!("operator demoted {node}; {into} promoted"),
                })
            }
            MemberOp::Transfer { node } => {
                known(node)?;
                if !era.is_voter(node) {
                    return Err(format!("{node} is not active"));
                }
                if !self.healthy(node) {
                    return Err(format!("{node} is not reachable, fit and caught up"));
                }
                Ok(Change::Leader(node))
            }
        }
    }
}

/// What the leader does about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Propose a new active set.
    Voters {
        /// The voters, preferred leader first.
        voters: Vec<NodeId>,
        /// Nodes held out of automatic promotion.
        held_out: Vec<NodeId>,
        /// Why.
        reason: String,
    },
    /// Hand leadership to this voter.
    Leader(NodeId),
}

/// `[n0, n2, n3]`.
pub fn names(ids: &[NodeId]) -> String {
    let v: Vec<String> = ids.iter().map(|n| n.to_string()).collect();
    format!("[{}]", v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::membership::Eras;

    fn ids(v: &[u16]) -> Vec<NodeId> {
        v.iter().map(|&n| NodeId(n)).collect()
    }

    fn at(s: u64) -> Time {
        Time::ZERO + Duration::from_secs(s)
    }

    fn peer(heard: u64, commit: Slot, fit: bool) -> Peer {
        Peer {
            heard: at(heard),
            commit,
            applied: commit,
            fit,
            caught_up_since: Some(at(0)),
            not_voting_since: None,
        }
    }

    struct Fixture {
        peers: BTreeMap<NodeId, Peer>,
        nodes: Vec<NodeId>,
        preferred: Vec<NodeId>,
    }

    impl Fixture {
        fn view(&self, now: u64) -> View<'_> {
            View {
                now: at(now),
                me: NodeId(0),
                commit: 5000,
                peers: &self.peers,
                since: at(0),
                stale_after: Duration::from_secs(30),
                recent: Duration::from_secs(1),
                lag_max: 1000,
                nodes: &self.nodes,
                preferred: &self.preferred,
            }
        }
    }

    fn fixture() -> Fixture {
        let mut peers = BTreeMap::new();
        peers.insert(NodeId(1), peer(100, 5000, true));
        peers.insert(NodeId(2), peer(60, 3000, true)); // silent since 60 s
        peers.insert(NodeId(3), peer(100, 3500, true)); // too far behind
        peers.insert(NodeId(4), peer(100, 4990, false)); // diverged
        peers.insert(NodeId(5), peer(100, 4900, true));
        Fixture {
            peers,
            nodes: ids(&[0, 1, 2, 3, 4, 5]),
            preferred: ids(&[0, 1, 2]),
        }
    }

    #[test]
    fn a_stale_voter_is_replaced_by_the_best_healthy_backup_only() {
        let f = fixture();
        let era = Eras::genesis(&f.preferred).latest().clone();
        let (voters, why) = f.view(100).plan(&era, Duration::ZERO).expect("a change");
        assert_eq!(voters, ids(&[0, 1, 5]), "n3 lags, n4 is unfit: n5");
        assert!(why.contains("n2") && why.contains("n5"), "{why}");
        assert_eq!(
            f.view(80).plan(&era, Duration::ZERO),
            None,
            "silent 20 s only"
        );
    }

    /// Review finding: a voter that lost its disk rebuilds, and waits for
    /// every node's round; with one node down for good it never votes,
    /// yet answers every heartbeat, so it was never replaced.
    #[test]
    fn a_voter_that_does_not_vote_for_the_stale_time_is_replaced() {
        let mut f = fixture();
        f.peers.insert(NodeId(2), peer(100, 5000, false));
        f.peers.get_mut(&NodeId(2)).unwrap().not_voting_since = Some(at(80));
        let era = Eras::genesis(&f.preferred).latest().clone();
        assert_eq!(f.view(100).plan(&era, Duration::ZERO), None, "20 s only");
        for p in f.peers.values_mut() {
            p.heard = at(110);
        }
        let (voters, why) = f.view(110).plan(&era, Duration::ZERO).expect("a change");
        assert_eq!(voters, ids(&[0, 1, 5]));
        assert!(why.contains("not voting"), "{why}");
    }

    #[test]
    fn no_change_leaves_fewer_than_a_majority_reachable() {
        let mut f = fixture();
        for n in [1, 2, 3, 4] {
            f.peers.get_mut(&NodeId(n)).unwrap().heard = at(60);
        }
        f.nodes.extend(ids(&[6]));
        f.peers.insert(NodeId(6), peer(100, 5000, true));
        // Five voters, four silent: swapping one in leaves two of five.
        let era = Eras::genesis(&ids(&[0, 1, 2, 3, 4])).latest().clone();
        assert_eq!(f.view(100).plan(&era, Duration::ZERO), None);
        let e = f.view(100).check(&era.voters, &ids(&[0, 6, 2, 3, 4]));
        assert!(e.as_ref().is_err_and(|e| e.contains("only 2 of")), "{e:?}");
    }

    #[test]
    fn a_preferred_member_that_is_back_replaces_a_non_preferred_voter() {
        let mut f = fixture();
        f.peers.insert(NodeId(2), peer(100, 5000, true));
        let era = Eras::genesis(&ids(&[0, 1, 5])).latest().clone();
        let (voters, _) = f
            .view(100)
            .plan(&era, Duration::from_secs(2))
            .expect("a swap");
        assert_eq!(voters, ids(&[0, 1, 2]));
        let mut held = era.clone();
        held.held_out.push(NodeId(2));
        assert_eq!(f.view(100).plan(&held, Duration::ZERO), None, "held out");
    }

    #[test]
    fn operator_requests_are_checked_and_explained() {
        let f = fixture();
        let era = Eras::genesis(&f.preferred).latest().clone();
        let v = f.view(100);
        let promote = MemberOp::Promote {
            node: NodeId(5),
            replace: Some(NodeId(1)),
        };
        match v.operate(&era, &promote) {
            Ok(Change::Voters { voters, .. }) => assert_eq!(voters, ids(&[0, 2, 5])),
            other => panic!("{other:?}"),
        }
        let e = v.operate(
            &era,
            &MemberOp::Promote {
                node: NodeId(1),
                replace: None,
            },
        );
        assert_eq!(e, Err("n1 is already active".into()));
        let e = v.operate(&era, &MemberOp::Transfer { node: NodeId(2) });
        assert!(e.is_err(), "n2 is silent");
        match v.operate(&era, &MemberOp::Demote { node: NodeId(1) }) {
            Ok(Change::Voters {
                held_out, voters, ..
            }) => {
                assert_eq!(held_out, ids(&[1]));
                assert_eq!(voters, ids(&[0, 2, 5]));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            v.operate(&era, &MemberOp::Demote { node: NodeId(9) })
                .is_err()
        );
    }
}
