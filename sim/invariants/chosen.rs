//! One value per slot, judged from the acceptors' side: a value is chosen
//! once a quorum of acceptors has sent `Accepted` for its (slot, ballot)
//! (a vote counts when it leaves, after the sync that made it durable),
//! whatever the proposers claim. Every `Decided` must carry that value,
//! and no two values may ever be chosen for one slot.
//!
//! It also keeps when each slot became chosen, so that other checks can
//! ask what was chosen by a given moment (`prefix_at`).

use crate::paxos::ballot::{Ballot, NodeId, Slot, Value};
use crate::paxos::message::Message;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

pub(in crate::sim) struct Chosen {
    quorum: usize,
    /// The value chosen per slot, first seen.
    values: BTreeMap<Slot, Value>,
    /// The value proposed per (slot, ballot), and who voted for it.
    votes: BTreeMap<(Slot, Ballot), (Value, BTreeSet<NodeId>)>,
    /// Every slot up to this one is chosen.
    prefix: Slot,
    /// When the contiguous chosen prefix moved, and to where.
    timeline: Vec<(Time, Slot)>,
}

impl Chosen {
    pub(in crate::sim) fn new(quorum: usize) -> Chosen {
        Chosen {
            quorum,
            values: BTreeMap::new(),
            votes: BTreeMap::new(),
            prefix: 0,
            timeline: Vec::new(),
        }
    }

    /// The highest slot known chosen.
    pub(in crate::sim) fn top(&self) -> Slot {
        self.values.keys().next_back().copied().unwrap_or(0)
    }

    /// The longest prefix of slots that was chosen by time `t`.
    pub(in crate::sim) fn prefix_at(&self, t: Time) -> Slot {
        let after = self.timeline.partition_point(|(at, _)| *at <= t);
        after.checked_sub(1).map_or(0, |i| self.timeline[i].1)
    }

    pub(in crate::sim) fn observe(
        &mut self,
        now: Time,
        from: NodeId,
        msg: &Message,
    ) -> Result<(), String> {
        match msg {
            Message::Accept {
                ballot,
                slot,
                value,
            } => self.proposed(*slot, *ballot, value),
            Message::Accepted { ballot, slot } => self.voted(now, *slot, *ballot, from),
            Message::Decided { slot, value } => self.decided(now, *slot, value),
            _ => Ok(()),
        }
    }

    fn proposed(&mut self, slot: Slot, ballot: Ballot, value: &Value) -> Result<(), String> {
        match self.votes.get(&(slot, ballot)) {
            Some((v, _)) if v != value => Err(format!(
                "two values proposed for slot {slot} at ballot {ballot}"
            )),
            Some(_) => Ok(()),
            None => {
                self.votes
                    .insert((slot, ballot), (value.clone(), BTreeSet::new()));
                Ok(())
            }
        }
    }

    fn voted(&mut self, now: Time, slot: Slot, ballot: Ballot, from: NodeId) -> Result<(), String> {
        let Some((value, voters)) = self.votes.get_mut(&(slot, ballot)) else {
            return Ok(());
        };
        if voters.insert(from) && voters.len() == self.quorum {
            let value = value.clone();
            return self.decided(now, slot, &value);
        }
        Ok(())
    }

    fn decided(&mut self, now: Time, slot: Slot, value: &Value) -> Result<(), String> {
        match self.values.get(&slot) {
            Some(v) if v != value => Err(format!(
                "two values chosen for slot {slot}: {v:?} and {value:?}"
            )),
            Some(_) => Ok(()),
            None => {
                self.values.insert(slot, value.clone());
                let before = self.prefix;
                while self.values.contains_key(&(self.prefix + 1)) {
                    self.prefix += 1;
                }
                if self.prefix > before {
                    self.timeline.push((now, self.prefix));
                }
                Ok(())
            }
        }
    }
}
