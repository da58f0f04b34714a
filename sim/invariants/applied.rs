//! What the backends were given: every node applied the same updates in
//! the same order (a slot applied again after a crash, the same way), and
//! once the cluster converged, every acknowledged update was applied
//! exactly once on every node, whichever of its attempts got there; an
//! update with an unknown outcome at most once; a refused one never.

use crate::apply::applier::Applied;
use crate::paxos::ballot::{NodeId, Slot, UpdateId};
use crate::sim::clients::{OpRecord, OpStatus, Via};
use std::collections::{BTreeMap, BTreeSet};

/// Every update each node applied, by slot, as its applier's journal
/// reported them.
#[derive(Default)]
pub(in crate::sim) struct AppliedLog {
    by_node: BTreeMap<NodeId, BTreeMap<Slot, Vec<Applied>>>,
}

impl AppliedLog {
    pub(in crate::sim) fn record(&mut self, node: NodeId, fresh: Vec<Applied>) {
        if fresh.is_empty() {
            return;
        }
        let log = self.by_node.entry(node).or_default();
        for a in fresh {
            let slot = match a {
                Applied::Update { slot, .. } | Applied::Duplicate { slot, .. } => slot,
            };
            log.entry(slot).or_default().push(a);
        }
    }

    /// A reseed made `to`'s backend a copy of `from`'s at slot `upto`:
    /// for those slots, `to` applied what `from` applied.
    pub(in crate::sim) fn copied(&mut self, from: NodeId, to: NodeId, upto: Slot) {
        let donor: BTreeMap<Slot, Vec<Applied>> = self
            .by_node
            .get(&from)
            .map(|log| log.range(..=upto).map(|(s, a)| (*s, a.clone())).collect())
            .unwrap_or_default();
        let log = self.by_node.entry(to).or_default();
        let mut kept = log.split_off(&(upto + 1));
        kept.extend(donor);
        *log = kept;
    }

    pub(in crate::sim) fn sequences_are_prefixes(&self) -> Result<(), String> {
        let mut reference: BTreeMap<Slot, (NodeId, Vec<UpdateId>)> = BTreeMap::new();
        for (node, log) in &self.by_node {
            for (slot, entries) in log {
                let ids: Vec<UpdateId> = entries
                    .iter()
                    .filter_map(|a| match a {
                        Applied::Update { id, .. } => Some(*id),
                        Applied::Duplicate { .. } => None,
                    })
                    .collect();
                let once = dedup_reapplied(&ids);
                match reference.get(slot) {
                    Some((other, r)) if *r != once => {
                        return Err(format!(
                            "slot {slot}: {other} applied {r:?} but {node} applied {once:?}"
                        ));
                    }
                    Some(_) => {}
                    None => {
                        reference.insert(*slot, (*node, once));
                    }
                }
            }
        }
        Ok(())
    }

    /// Judged on `nodes`, once every one of them has applied everything.
    pub(in crate::sim) fn exactly_once(
        &self,
        nodes: &[NodeId],
        ops: &[OpRecord],
    ) -> Result<(), String> {
        let empty = BTreeMap::new();
        for node in nodes {
            let log = self.by_node.get(node).unwrap_or(&empty);
            let mut slots_of: BTreeMap<UpdateId, BTreeSet<Slot>> = BTreeMap::new();
            for a in log.values().flatten() {
                if let Applied::Update { slot, id, .. } = a {
                    slots_of.entry(*id).or_default().insert(*slot);
                }
            }
            for o in ops.iter().filter(|o| o.via == Via::Log) {
                if o.status == OpStatus::Refused && slots_of.contains_key(&o.id) {
                    return Err(format!(
                        "update {:?} ({:?}) was refused (503, never applied) but applied on {node}",
                        o.id, o.input
                    ));
                }
                let slots: BTreeSet<Slot> = o
                    .ids
                    .iter()
                    .filter_map(|id| slots_of.get(id))
                    .flatten()
                    .copied()
                    .collect();
                if slots.len() > 1 {
                    return Err(format!(
                        "update {:?} (key {:?}) was applied in slots {slots:?} on {node}",
                        o.input, o.key
                    ));
                }
                if o.status == OpStatus::Ok && slots.is_empty() {
                    return Err(format!(
                        "acknowledged update {:?} ({:?}) was never applied on {node}",
                        o.id, o.input
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A slot's updates as applied once: a re-application after a crash
/// repeats a prefix of the slot's updates from its start.
fn dedup_reapplied(ids: &[UpdateId]) -> Vec<UpdateId> {
    let mut out: Vec<UpdateId> = Vec::new();
    for id in ids {
        if !out.contains(id) {
            out.push(*id);
        }
    }
    out
}
