//! One value per slot, judged from the acceptors' side: a value is chosen
//! once a quorum of acceptors has sent `Accepted` for its (slot, ballot)
//! (a vote counts when it leaves, after the sync that made it durable),
//! whatever the proposers claim. Every `Decided` must carry that value,
//! every `Chosen` name a ballot that proposed it, and no two values may
//! ever be chosen for one slot. (`Voted` is the same vote, sent to the
//! learners.)
//!
//! It also keeps when each slot became chosen, so that other checks can
//! ask what was chosen by a given moment (`prefix_at`).
//!
//! Who may vote in a slot is the active set of its era, as the chosen
//! values up to `ALPHA` slots before it make it (`paxos::membership`, the
//! specification's window, whatever window the nodes use): only votes
//! of that era's voters count, a majority of them. A slot's votes are
//! judged once the chosen prefix tells its era. Every new era must keep
//! a majority of the one before (`era-overlap`).

use crate::paxos::ballot::{Ballot, NodeId, Slot, Value};
use crate::paxos::membership::{ALPHA, Eras, Membership, overlaps};
use crate::paxos::message::Message;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// A check's name and what broke it.
type Checked = Result<(), (&'static str, String)>;

const ONE_VALUE: &str = "one-value-per-slot";

pub(in crate::sim) struct Chosen {
    nodes: Vec<NodeId>,
    /// The eras the chosen prefix made.
    eras: Eras,
    /// The value chosen per slot, first seen.
    values: BTreeMap<Slot, Value>,
    /// The value proposed per (slot, ballot), and who voted for it.
    votes: BTreeMap<(Slot, Ballot), (Value, BTreeSet<NodeId>)>,
    /// Every slot up to this one is chosen.
    prefix: Slot,
    /// The eras know every change chosen up to this slot.
    era_upto: Slot,
    reconfigurations: u64,
    /// When the contiguous chosen prefix moved, and to where.
    timeline: Vec<(Time, Slot)>,
}

impl Chosen {
    pub(in crate::sim) fn new(members: &Membership) -> Chosen {
        Chosen {
            nodes: members.nodes.clone(),
            eras: Eras::genesis(&members.voters),
            values: BTreeMap::new(),
            votes: BTreeMap::new(),
            prefix: 0,
            era_upto: 0,
            reconfigurations: 0,
            timeline: Vec::new(),
        }
    }

    /// The value chosen in `slot`, if the votes showed it yet.
    pub(in crate::sim) fn value(&self, slot: Slot) -> Option<&Value> {
        self.values.get(&slot)
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

    /// The eras the chosen prefix made.
    pub(in crate::sim) fn eras(&self) -> &Eras {
        &self.eras
    }

    /// Changes of the active set that took effect (void ones do not).
    pub(in crate::sim) fn reconfigurations(&self) -> u64 {
        self.reconfigurations
    }

    pub(in crate::sim) fn observe(&mut self, now: Time, from: NodeId, msg: &Message) -> Checked {
        self.observe_one(now, from, msg)
    }

    /// Eras made by the newly chosen prefix: each must keep a majority
    /// of the last.
    fn learn_eras(&mut self) -> Checked {
        while self.era_upto < self.prefix {
            let slot = self.era_upto + 1;
            self.era_upto = slot;
            let Some(Value::Config(change)) = self.values.get(&slot) else {
                continue;
            };
            let old = self.eras.latest().voters.clone();
            if let Ok(era) = self.eras.learn(slot, change, &self.nodes, ALPHA) {
                self.reconfigurations += 1;
                if !overlaps(&old, &era.voters) {
                    return Err((
                        "era-overlap",
                        format!(
                            "the change chosen in slot {slot} makes voters {:?} from {:?}: not a majority of the old",
                            era.voters, old
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn observe_one(&mut self, now: Time, from: NodeId, msg: &Message) -> Checked {
        match msg {
            Message::Accept {
                ballot,
                slot,
                value,
            } => self.proposed(*slot, *ballot, value),
            Message::Accepted { ballot, slot } | Message::Voted { ballot, slot } => {
                self.voted(now, *slot, *ballot, from)
            }
            Message::Decided { slot, value } => self.decided(now, *slot, value),
            Message::Chosen { ballot, slot } => self.claimed(now, *slot, *ballot),
            _ => Ok(()),
        }
    }

    fn proposed(&mut self, slot: Slot, ballot: Ballot, value: &Value) -> Checked {
        match self.votes.get(&(slot, ballot)) {
            Some((v, _)) if v != value => Err((
                ONE_VALUE,
                format!("two values proposed for slot {slot} at ballot {ballot}"),
            )),
            Some(_) => Ok(()),
            None => {
                self.votes
                    .insert((slot, ballot), (value.clone(), BTreeSet::new()));
                Ok(())
            }
        }
    }

    fn voted(&mut self, now: Time, slot: Slot, ballot: Ballot, from: NodeId) -> Checked {
        let Some((_, voters)) = self.votes.get_mut(&(slot, ballot)) else {
            return Ok(());
        };
        if voters.insert(from) {
            self.judge(now, slot, ballot)?;
        }
        Ok(())
    }

    /// A leader says the value of `ballot` is chosen in `slot`: it must
    /// be the value chosen there. (Its learners take the value from
    /// their own votes.)
    fn claimed(&mut self, now: Time, slot: Slot, ballot: Ballot) -> Checked {
        let Some((value, _)) = self.votes.get(&(slot, ballot)) else {
            return Err((
                ONE_VALUE,
                format!(
                    "slot {slot} claimed chosen at ballot {ballot}, which proposed nothing there"
                ),
            ));
        };
        // Like a `Decided`: the value must be the one chosen.
        let value = value.clone();
        self.decided(now, slot, &value)
    }

    /// Whether the votes for `(slot, ballot)` are a majority of the
    /// slot's era, once the chosen prefix tells it.
    fn judge(&mut self, now: Time, slot: Slot, ballot: Ballot) -> Checked {
        if slot > self.prefix + ALPHA || self.values.contains_key(&slot) {
            return Ok(());
        }
        let Some((value, voters)) = self.votes.get(&(slot, ballot)) else {
            return Ok(());
        };
        let era = self.eras.at(slot);
        if era.count(voters) < era.quorum() {
            return Ok(());
        }
        let value = value.clone();
        self.decided(now, slot, &value)
    }

    fn decided(&mut self, now: Time, slot: Slot, value: &Value) -> Checked {
        match self.values.get(&slot) {
            Some(v) if v != value => Err((
                ONE_VALUE,
                format!("two values chosen for slot {slot}: {v:?} and {value:?}"),
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
                    // The eras of more slots are known now.
                    self.learn_eras()?;
                    let waiting: Vec<(Slot, Ballot)> = self
                        .votes
                        .range((before + ALPHA + 1, Ballot::ZERO)..)
                        .map(|(k, _)| *k)
                        .take_while(|(s, _)| *s <= self.prefix + ALPHA)
                        .collect();
                    for (s, b) in waiting {
                        self.judge(now, s, b)?;
                    }
                }
                Ok(())
            }
        }
    }
}
