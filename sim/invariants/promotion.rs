//! A backup is promoted only when it has kept up: when the leader first
//! proposes a change of the active set, every node it brings in that runs
//! has a commit index within `promote_lag_max` of the leader's (its
//! reported commit was, and a commit index only grows). One that is down
//! is not judged: it may have crashed after its last report, which is
//! all a real leader can know too.

use crate::paxos::ballot::{Ballot, NodeId, Slot, Value};
use crate::paxos::membership::Era;
use crate::paxos::message::Message;
use crate::sim::node::SimNode;
use std::collections::BTreeSet;

#[derive(Default)]
pub(in crate::sim) struct Promotions {
    /// The (slot, ballot) of every change already judged.
    seen: BTreeSet<(Slot, Ballot)>,
}

impl Promotions {
    /// `msg` leaves leader `from`; `eras` are those the chosen log made.
    pub(in crate::sim) fn check(
        &mut self,
        from: NodeId,
        msg: &Message,
        nodes: &[SimNode],
        eras: &[Era],
        lag_max: Slot,
    ) -> Result<(), String> {
        let Message::Accept {
            ballot,
            slot,
            value: Value::Config(change),
        } = msg
        else {
            return Ok(());
        };
        if !self.seen.insert((*slot, *ballot)) {
            return Ok(());
        }
        // The era it replaces (unknown here: void, or long gone).
        let Some(old) = eras.iter().find(|e| e.chosen_at == change.base) else {
            return Ok(());
        };
        let old = &old.voters;
        let commit = |n: NodeId| {
            nodes[n.0 as usize]
                .group
                .as_ref()
                .map(|g| g.learner.role().commit())
        };
        let leader = commit(from).unwrap_or(0);
        for &n in change.voters.iter().filter(|n| !old.contains(n)) {
            match commit(n) {
                None => {}
                Some(c) if c + lag_max >= leader => {}
                Some(c) => {
                    return Err(format!(
                        "{from} promotes {n} in slot {slot} with commit {c:?}, its own being {leader} (at most {lag_max} behind)"
                    ));
                }
            }
        }
        Ok(())
    }
}
