//! What a reply says is on disk stays on disk (FOUNDATION, Durability):
//! a `Promise` or an `Accepted` leaves only once the promise or the vote
//! is synced, and a `Prepare` only once its round is; so a node that
//! crashes and recovers has promised at least every ballot it promised
//! or voted for, still holds every vote it sent (unless the slot is
//! chosen and forgotten), and never uses a round again.
//!
//! Checked at every recovery against what the node's earlier
//! incarnations sent. A reply that left before its sync, and a crash that
//! lost the write, show here at once, long before two values are chosen.

use crate::driver::Group;
use crate::paxos::ballot::{Ballot, NodeId, Slot};
use crate::paxos::message::Message;
use crate::paxos::state;
use crate::sim::disk::SimDisk;
use std::collections::BTreeMap;

#[derive(Default)]
pub(in crate::sim) struct Durable {
    /// Per node, the highest ballot it sent a `Promise` or `Accepted` for.
    promised: BTreeMap<NodeId, Ballot>,
    /// Per node and slot, the highest ballot it voted for.
    voted: BTreeMap<(NodeId, Slot), Ballot>,
    /// Per node, the highest round it sent a `Prepare` with.
    rounds: BTreeMap<NodeId, u64>,
}

impl Durable {
    pub(in crate::sim) fn note(&mut self, from: NodeId, msg: &Message) {
        match msg {
            Message::Promise { ballot, .. } => raise(&mut self.promised, from, *ballot),
            Message::Accepted { ballot, slot } => {
                raise(&mut self.promised, from, *ballot);
                raise(&mut self.voted, (from, *slot), *ballot);
            }
            Message::Prepare { ballot, .. } if ballot.node == from => {
                raise(&mut self.rounds, from, ballot.round);
            }
            _ => {}
        }
    }

    /// Node `id` lost its disk: what it promised, voted and used is gone
    /// by the fault, not by ordo (the rebuild guards what follows).
    pub(in crate::sim) fn forget(&mut self, id: NodeId) {
        self.promised.remove(&id);
        self.rounds.remove(&id);
        self.voted.retain(|(n, _), _| *n != id);
    }

    /// Node `id` just recovered into `group`.
    pub(in crate::sim) fn check_recovered(
        &mut self,
        id: NodeId,
        group: &Group,
    ) -> Result<(), String> {
        let acceptor = group.acceptor.role();
        let promised = acceptor.promised();
        if let Some(&sent) = self.promised.get(&id) {
            if promised < sent {
                return Err(format!(
                    "{id} recovered with promise {promised}, but it had promised or voted at {sent} before it crashed: a reply left before its sync"
                ));
            }
        }
        let upto = acceptor.chosen_upto();
        let voted: Vec<(Slot, Ballot)> = self
            .voted
            .range((id, upto + 1)..=(id, Slot::MAX))
            .map(|(&(_, s), &b)| (s, b))
            .collect();
        for (slot, sent) in voted {
            let have = acceptor.accepted(slot).map(|(b, _)| *b);
            if have.is_none_or(|b| b < sent) {
                return Err(format!(
                    "{id} voted for slot {slot} at ballot {sent} before it crashed, but recovered with {have:?} there: a vote left before its sync"
                ));
            }
        }
        // Chosen and forgotten: nothing to hold any more.
        let forgotten: Vec<(NodeId, Slot)> = self
            .voted
            .range((id, 0)..=(id, upto))
            .map(|(k, _)| *k)
            .collect();
        for k in forgotten {
            self.voted.remove(&k);
        }
        let round = group.proposer.role().round();
        if let Some(&used) = self.rounds.get(&id) {
            if round < used {
                return Err(format!(
                    "{id} recovered with round {round}, but it had sent prepares in round {used}: it may use a ballot twice"
                ));
            }
        }
        Ok(())
    }
}

/// The log of node `id`, as it found its disk at a recovery, holds every
/// slot from its compaction point up to its highest. The store reclaims
/// what is below the point with no regard to the journal's order
/// (`Kv::drop_below`): a drop that went ahead of the point's sync leaves a
/// crash with an old point and a hole above it.
pub(in crate::sim) fn log_is_whole(id: NodeId, disk: &SimDisk) -> Result<(), String> {
    let point = state::load_u64(disk, state::Meta::Compacted);
    let top = state::last_chosen_slot(disk);
    let mut next = point + 1;
    'pages: while next <= top {
        let page = state::load_chosen_range(disk, next, 256);
        if page.is_empty() {
            break;
        }
        for (slot, _) in page {
            if slot != next {
                break 'pages;
            }
            next += 1;
        }
    }
    if next <= top {
        return Err(format!(
            "{id} recovered with its log compacted up to slot {point} and reaching slot {top}, \
             but slot {next} is not in it: the store dropped entries before the compaction point was durable"
        ));
    }
    Ok(())
}

fn raise<K: Ord, V: Ord + Copy>(map: &mut BTreeMap<K, V>, k: K, v: V) {
    let e = map.entry(k).or_insert(v);
    if *e < v {
        *e = v;
    }
}
