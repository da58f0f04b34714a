//! Agreement: every node's log holds the same value in every slot it
//! has (the logs on the simulated disks, compared at the end).

use crate::paxos::ballot::NodeId;
use crate::sim::node::SimNode;
use crate::storage::kv::Table;
use std::collections::BTreeMap;

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
