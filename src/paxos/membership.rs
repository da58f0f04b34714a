//! Who votes and who learns in one Paxos group, and how that changes.
//!
//! Every configured node learns, applies and serves reads; the *active
//! set* (the voters, whose majority decides) is part of the replicated
//! state. A change is a value in the log ([`ConfigChange`]); one chosen
//! in slot `r` governs the slots from `r + ALPHA` on (Lamport's α window,
//! "Paxos Made Simple" §3). So the acceptors of slot `s` are a function of
//! the chosen values up to `s - ALPHA`, the same on every node, and each
//! slot is plain Paxos among one fixed set of acceptors. A proposer
//! proposes in slot `s` only once its log holds every slot up to
//! `s - ALPHA` and a majority of that slot's active set promised its
//! ballot: it never guesses a slot's voters (see `docs/membership.md`).
//!
//! A change names the era it replaces (`base`); a change chosen while
//! another is still waiting for its window, or against an era that is
//! no longer the latest, is void: the log holds it, nothing changes. So
//! two leaders that each propose a change never chain two changes in
//! one window, and consecutive eras differ by what one leader decided.

use super::ballot::{NodeId, Slot};
use serde::{Deserialize, Serialize};

/// Slots between a change being chosen and it taking effect. A protocol
/// constant: every node must use the same one. It also bounds how far a
/// leader proposes ahead of its own log (the pipelining depth).
pub const ALPHA: Slot = 64;

/// How many past eras a node keeps (for its events; the governing ones
/// are always the last two).
pub const ERAS_KEPT: usize = 16;

/// The longest reason a change carries, in bytes.
pub const REASON_MAX: usize = 200;

/// The nodes of one group as the configuration file gives them.
/// `voters` is the preferred active set, in order: the genesis era's
/// voters, and the order the automatic rules prefer (the first is the
/// preferred leader). The active set in force is [`Eras`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// The preferred active members, in order.
    pub voters: Vec<NodeId>,
    /// Every node that learns and applies, voters included.
    pub nodes: Vec<NodeId>,
}

impl Membership {
    /// All `n` nodes vote.
    pub fn all_voting(n: u16) -> Membership {
        let nodes: Vec<NodeId> = (0..n).map(NodeId).collect();
        Membership {
            voters: nodes.clone(),
            nodes,
        }
    }

    /// The first `active` of `n` nodes vote; the rest are backups.
    pub fn with_backups(n: u16, active: u16) -> Membership {
        Membership {
            voters: (0..active.min(n)).map(NodeId).collect(),
            nodes: (0..n).map(NodeId).collect(),
        }
    }

    /// Whether `id` is in the group at all.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.nodes.contains(&id)
    }

    /// The first preferred voter.
    pub fn preferred_leader(&self) -> Option<NodeId> {
        self.voters.first().copied()
    }
}

/// A strict majority of `n`.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// A change of the active set: the value a slot carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The `chosen_at` of the era this change replaces: void unless that
    /// era is still the latest when the change is chosen.
    pub base: Slot,
    /// The new active set, preferred leader first.
    pub voters: Vec<NodeId>,
    /// Nodes an operator demoted: the automatic rules leave them out
    /// until an operator promotes them again.
    pub held_out: Vec<NodeId>,
    /// Why, for the events (at most `REASON_MAX` bytes).
    pub reason: String,
}

/// One active set and the slots it governs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Era {
    /// The slot whose chosen change made it (0: the genesis era).
    pub chosen_at: Slot,
    /// The first slot it governs: `chosen_at + ALPHA` (1 for genesis).
    pub from: Slot,
    /// Its voters.
    pub voters: Vec<NodeId>,
    /// Nodes held out of automatic promotion.
    pub held_out: Vec<NodeId>,
    /// Why it was made.
    pub reason: String,
}

impl Era {
    /// Votes needed to decide in this era.
    pub fn quorum(&self) -> usize {
        quorum(self.voters.len())
    }

    /// Whether `id` votes in this era.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// How many of `ids` vote in this era.
    pub fn count<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> usize {
        ids.into_iter().filter(|n| self.voters.contains(n)).count()
    }
}

/// Why a change is void (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Void {
    /// It names an era that is not the latest.
    StaleBase,
    /// The latest era has not taken effect yet at the change's slot.
    ChangeInFlight,
    /// It names no voter, a node twice, or a node not in the group.
    Malformed,
}

/// The eras a node knows, oldest first: what its log says about who
/// votes in each slot. The last two govern every slot above the commit
/// index (a change waits for its window before the next may count).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eras {
    eras: Vec<Era>,
}

impl Eras {
    /// Before any change: the preferred voters govern from slot 1.
    pub fn genesis(voters: &[NodeId]) -> Eras {
        Eras {
            eras: vec![Era {
                chosen_at: 0,
                from: 1,
                voters: voters.to_vec(),
                held_out: Vec::new(),
                reason: "the configuration file's active set".into(),
            }],
        }
    }

    /// The era governing `slot`.
    pub fn at(&self, slot: Slot) -> &Era {
        self.eras
            .iter()
            .rev()
            .find(|e| e.from <= slot)
            .unwrap_or(&self.eras[0])
    }

    /// The latest era (perhaps not in effect yet).
    pub fn latest(&self) -> &Era {
        &self.eras[self.eras.len() - 1]
    }

    /// Every era known, oldest first.
    pub fn all(&self) -> &[Era] {
        &self.eras
    }

    /// The eras governing any slot in `from..=to`, oldest first.
    pub fn governing(&self, from: Slot, to: Slot) -> impl Iterator<Item = &Era> + '_ {
        let first = self.at(from).from;
        self.eras
            .iter()
            .filter(move |e| e.from >= first && e.from <= to)
    }

    /// Whether `id` votes in any slot of `from..=to`.
    pub fn votes_in(&self, id: NodeId, from: Slot, to: Slot) -> bool {
        self.governing(from, to).any(|e| e.is_voter(id))
    }

    /// Whether `change`, chosen in `slot`, would take effect (see
    /// [`Void`]). `nodes` is the group.
    pub fn check(&self, slot: Slot, change: &ConfigChange, nodes: &[NodeId]) -> Result<(), Void> {
        let mut seen = change.voters.clone();
        seen.sort();
        seen.dedup();
        if change.voters.is_empty()
            || seen.len() != change.voters.len()
            || !change.voters.iter().all(|v| nodes.contains(v))
        {
            return Err(Void::Malformed);
        }
        let latest = self.latest();
        if change.base != latest.chosen_at {
            return Err(Void::StaleBase);
        }
        if latest.from > slot {
            return Err(Void::ChangeInFlight);
        }
        Ok(())
    }

    /// `change` was chosen in `slot`: a new era from `slot + delay`
    /// (`ALPHA`; only a deliberately broken node in a test uses another),
    /// unless it is void. Slots must come in order.
    pub fn learn(
        &mut self,
        slot: Slot,
        change: &ConfigChange,
        nodes: &[NodeId],
        delay: Slot,
    ) -> Result<&Era, Void> {
        self.check(slot, change, nodes)?;
        self.eras.push(Era {
            chosen_at: slot,
            from: slot + delay,
            voters: change.voters.clone(),
            held_out: change.held_out.clone(),
            reason: change.reason.clone(),
        });
        if self.eras.len() > ERAS_KEPT {
            self.eras.remove(0);
        }
        Ok(self.latest())
    }

    /// Forget the eras made by changes chosen after `slot` (the genesis
    /// era stays).
    pub fn forget_after(&mut self, slot: Slot) {
        let keep = self
            .eras
            .iter()
            .filter(|e| e.chosen_at <= slot)
            .count()
            .max(1);
        self.eras.truncate(keep);
    }

    /// Take `other`'s eras if they reach further (a reseed skipped the
    /// log that made them): only those chosen at or below `upto`.
    pub fn adopt(&mut self, other: &Eras, upto: Slot) {
        let theirs: Vec<Era> = other
            .eras
            .iter()
            .filter(|e| e.chosen_at <= upto)
            .cloned()
            .collect();
        let ours = self.latest().chosen_at;
        if theirs.last().is_some_and(|e| e.chosen_at > ours) {
            self.eras = theirs;
        }
    }

    /// The change that makes `voters` the active set after the latest era.
    pub fn change(&self, voters: Vec<NodeId>, held_out: Vec<NodeId>, reason: &str) -> ConfigChange {
        let mut reason = reason.to_string();
        if reason.len() > REASON_MAX {
            let mut end = REASON_MAX;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        ConfigChange {
            base: self.latest().chosen_at,
            voters,
            held_out,
            reason,
        }
    }
}

/// Whether `new` keeps a majority of `old`: the rule every change the
/// leader makes follows (one voter at a time), so that the old era's
/// majority that holds the log meets the new one.
pub fn overlaps(old: &[NodeId], new: &[NodeId]) -> bool {
    old.iter().filter(|n| new.contains(n)).count() >= quorum(old.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u16]) -> Vec<NodeId> {
        v.iter().map(|&n| NodeId(n)).collect()
    }

    #[test]
    fn a_change_governs_from_its_window_on_and_void_ones_change_nothing() {
        let nodes = ids(&[0, 1, 2, 3, 4]);
        let mut e = Eras::genesis(&ids(&[0, 1, 2]));
        let c = e.change(ids(&[0, 1, 3]), vec![], "n2 lost");
        assert_eq!(
            e.learn(10, &c, &nodes, ALPHA).map(|e| e.from),
            Ok(10 + ALPHA)
        );
        assert_eq!(e.at(10 + ALPHA - 1).voters, ids(&[0, 1, 2]));
        assert_eq!(e.at(10 + ALPHA).voters, ids(&[0, 1, 3]));
        assert_eq!(e.governing(11, 10 + ALPHA).count(), 2);
        assert_eq!(e.governing(10 + ALPHA, 10 + 2 * ALPHA).count(), 1);
        // Against the genesis era again: stale. Against the new one, but
        // inside its window: in flight.
        assert_eq!(e.learn(12, &c, &nodes, ALPHA), Err(Void::StaleBase));
        let next = e.change(ids(&[0, 1, 4]), vec![], "n3 lost");
        assert_eq!(e.learn(11, &next, &nodes, ALPHA), Err(Void::ChangeInFlight));
        assert_eq!(
            e.learn(10 + ALPHA, &next, &nodes, ALPHA)
                .map(|e| e.chosen_at),
            Ok(10 + ALPHA)
        );
        let bad = e.change(ids(&[0, 0, 9]), vec![], "typo");
        assert_eq!(e.check(500, &bad, &nodes), Err(Void::Malformed));
    }

    #[test]
    fn one_voter_at_a_time_keeps_a_majority_of_the_old_set() {
        assert!(overlaps(&ids(&[0, 1, 2]), &ids(&[0, 1, 3])));
        assert!(!overlaps(&ids(&[0, 1, 2]), &ids(&[0, 3, 4])));
        assert!(!overlaps(&ids(&[0]), &ids(&[1])));
        assert!(overlaps(&ids(&[0, 1, 2, 3, 4]), &ids(&[0, 1, 2, 5, 6])));
    }
}
