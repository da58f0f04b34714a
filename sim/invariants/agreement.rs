//! Agreement: every node's log holds the same value in every slot it
//! has (the logs on the simulated disks, compared at the end), and every
//! node's eras of the active set are the ones the chosen log made.

use crate::paxos::ballot::NodeId;
use crate::paxos::membership::Eras;
use crate::sim::node::SimNode;
use crate::storage::kv::Table;
use std::collections::BTreeMap;

/// Every running node knows exactly the eras the chosen log made, as far
/// as its log reaches (its learner's and its proposer's eras; the
/// oracle's are `chosen`), none missing, none extra.
pub(in crate::sim) fn eras_agree(nodes: &[SimNode], chosen: &Eras) -> Result<(), String> {
    // The oracle keeps as many eras as a node: older ones a lagging node
    // still holds may have left it.
    let oldest = chosen.all().first().map_or(0, |e| e.chosen_at);
    for n in nodes {
        let Some(g) = &n.group else {
            continue;
        };
        let commit = g.learner.role().commit();
        let want: Vec<_> = chosen
            .all()
            .iter()
            .filter(|e| e.chosen_at <= commit)
            .collect();
        for (whose, eras) in [
            ("learner", g.learner.role().eras()),
            ("proposer", g.proposer.role().eras()),
        ] {
            let have: Vec<_> = eras
                .all()
                .iter()
                .filter(|e| e.chosen_at >= oldest)
                .collect();
            if have != want {
                return Err(format!(
                    "{}'s {whose} holds eras {have:?} at commit {commit}; the chosen log made {want:?}",
                    n.id
                ));
            }
        }
    }
    Ok(())
}

pub(in crate::sim) fn logs_agree(nodes: &[SimNode]) -> Result<(), String> {
    let mut first: BTreeMap<&[u8], (NodeId, &[u8])> = BTreeMap::new();
    for n in nodes {
        for (k, v) in n.disk.table(Table::Log) {
            match first.get(&**k) {
                Some((other, w)) if *w != &**v => {
                    return Err(format!(
                        "logs disagree: {} and {} hold different values at key {k:?}",
                        other, n.id
                    ));
                }
                Some(_) => {}
                None => {
                    first.insert(k, (n.id, &**v));
                }
            }
        }
    }
    Ok(())
}
