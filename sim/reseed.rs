//! The operator's `ordo reseed` in the sim: a node that needs a reseed
//! (its log was compacted away on every peer) gets a healthy node's
//! backend and replicated state, through the same applier operations
//! production uses (`Pause`, `export`, `Reseed`, `Resume`).

use super::world::World;
use crate::apply::applier::Operator;
use crate::driver::Input;
use crate::paxos::message::Role;

impl World {
    fn operate(&mut self, i: usize, op: Operator) {
        self.drive(i, Role::Applier, |g, now, disk| {
            g.step(Role::Applier, now, disk, Input::Operator(op))
        });
    }

    /// Reseed every node that needs it from the serving node that has
    /// applied most. Both pause first; the copy happens at a later check
    /// once both stand at a slot boundary. The operator picks a donor
    /// whose backend is sound (a fault's skew is not copied around: one
    /// bad backend stays one).
    pub(in crate::sim) fn reseed_where_needed(&mut self) {
        let needs: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .group
                    .as_ref()
                    .is_some_and(|g| g.applier.role().node_state().needs_reseed.is_some())
            })
            .collect();
        let mut pairs = Vec::new();
        for &target in &needs {
            let donor = (0..self.nodes.len())
                .filter(|&i| i != target)
                .filter_map(|i| {
                    let g = self.nodes[i].group.as_ref()?;
                    let a = g.applier.role();
                    let n = &self.nodes[i];
                    (!n.backend.unsound() && !n.fenced()).then_some((a.applied(), i))
                })
                .max();
            if let Some((_, donor)) = donor {
                pairs.push((target, donor));
            }
        }
        // A node paused for an earlier attempt that is no longer on (its
        // target went down, or another donor was chosen) goes on applying.
        for i in 0..self.nodes.len() {
            let chosen = pairs.iter().any(|&(t, d)| i == t || i == d);
            let paused = self.nodes[i]
                .group
                .as_ref()
                .is_some_and(|g| g.applier.role().is_paused());
            if paused && !chosen {
                self.operate(i, Operator::Resume);
            }
        }
        for (target, donor) in pairs {
            self.reseed(target, donor);
        }
    }

    fn reseed(&mut self, target: usize, donor: usize) {
        self.operate(donor, Operator::Pause);
        self.operate(target, Operator::Pause);
        let paused = |w: &World, i: usize| {
            w.nodes[i]
                .group
                .as_ref()
                .and_then(|g| g.applier.role().paused_at())
        };
        if paused(self, donor).is_none() || paused(self, target).is_none() {
            return;
        }
        let envelope = {
            let d = &self.nodes[donor];
            d.group
                .as_ref()
                .and_then(|g| g.applier.role().export(&d.disk))
        };
        let Some(envelope) = envelope else { return };
        let slot = envelope.slot;
        let ok = self.nodes[target].group.as_ref().is_some_and(|g| {
            g.applier
                .role()
                .can_reseed(&self.nodes[target].disk, slot)
                .is_ok()
        });
        if ok {
            let (d, t) = if donor < target {
                let (a, b) = self.nodes.split_at_mut(target);
                (&a[donor], &mut b[0])
            } else {
                let (a, b) = self.nodes.split_at_mut(donor);
                (&b[0], &mut a[target])
            };
            t.backend.copy_from(&d.backend);
            let (from, to) = (d.id, t.id);
            self.checks.applied.copied(from, to, slot);
            self.operate(target, Operator::Reseed(Box::new(envelope)));
            self.report.reseeds += 1;
            self.trace(|| format!("reseed n{target} from n{donor} at slot {slot}"));
        }
        self.operate(donor, Operator::Resume);
        self.operate(target, Operator::Resume);
    }
}
