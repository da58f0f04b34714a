//! Learned values: each slot a node's learner commits holds the value
//! the acceptors chose (`chosen.rs`), checked when the learner tells its
//! own roles the new commit index. A learner may learn from the votes
//! (`paxos/learner.rs`, "Learning from the votes"); a wrong rule there
//! showed up before only as logs that disagree at the end of the run, or
//! as a sound backend called diverged. This names the node and the slot
//! at the moment it happens.

use super::chosen::Chosen;
use crate::paxos::ballot::{NodeId, Slot};
use crate::paxos::state;
use crate::sim::node::SimNode;
use std::collections::BTreeMap;

/// Per node, the highest slot checked.
#[derive(Default)]
pub(in crate::sim) struct Learned {
    checked: BTreeMap<NodeId, Slot>,
}

impl Learned {
    /// `node` says it committed every slot up to `commit`: compare the
    /// slots of its log not checked yet with the chosen values. A slot
    /// the acceptors' votes have not shown chosen is left alone (a
    /// reseed's jump leaves no log entries; every value a learner takes
    /// from a log or a leader was chosen first).
    pub(in crate::sim) fn check(
        &mut self,
        node: &SimNode,
        commit: Slot,
        chosen: &Chosen,
    ) -> Result<(), String> {
        let checked = self.checked.entry(node.id).or_insert(0);
        // A crash may have taken unsynced log entries: they are learned
        // again, and checked again.
        *checked = (*checked).min(commit);
        let mut from = *checked + 1;
        while from <= commit {
            let page = state::load_chosen_range(&node.disk, from, 256);
            let Some(last) = page.last().map(|(s, _)| *s) else {
                break;
            };
            for (slot, value) in page.iter().take_while(|(s, _)| *s <= commit) {
                if let Some(want) = chosen.value(*slot) {
                    if want != value {
                        return Err(format!(
                            "{} committed slot {slot} with {value:?}; the acceptors chose {want:?}",
                            node.id
                        ));
                    }
                }
            }
            from = last + 1;
        }
        *checked = commit;
        Ok(())
    }
}
