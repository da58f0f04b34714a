//! The network model: links that can be cut (both ways or one way),
//! message loss, duplication, reordering and delay, all drawn from the
//! seed. Messages between a node's own roles never cross it.

use super::scenario::Scenario;
use super::world::{Ev, World};
use crate::paxos::ballot::NodeId;
use crate::paxos::message::{Message, Role};
use std::collections::BTreeSet;

pub(super) struct Network {
    /// Cut one-way links `(from, to)`.
    blocked: BTreeSet<(u16, u16)>,
    /// Message kinds lost on every link (`drop KIND`).
    dropped: BTreeSet<&'static str>,
    pub(super) loss: f64,
    pub(super) dup: f64,
}

impl Network {
    pub(super) fn new(sc: &Scenario) -> Network {
        Network {
            blocked: BTreeSet::new(),
            dropped: BTreeSet::new(),
            loss: sc.loss,
            dup: sc.dup,
        }
    }

    pub(super) fn cut(&mut self, from: u16, to: u16) {
        if from != to {
            self.blocked.insert((from, to));
        }
    }

    /// Cut every link between `group` and the rest of `n` nodes.
    pub(super) fn isolate(&mut self, node: u16, n: u16) {
        for o in 0..n {
            self.cut(node, o);
            self.cut(o, node);
        }
    }

    pub(super) fn drop_kind(&mut self, kind: &'static str) {
        self.dropped.insert(kind);
    }

    pub(super) fn heal(&mut self) {
        self.blocked.clear();
        self.dropped.clear();
    }

    fn connected(&self, from: NodeId, to: NodeId, msg: &Message) -> bool {
        !self.blocked.contains(&(from.0, to.0)) && !self.dropped.contains(msg.kind())
    }
}

impl World {
    /// A message leaves node `from`: the checks note it, then the network
    /// delivers it (or not) after a delay.
    pub(super) fn transmit(&mut self, from: NodeId, to: NodeId, role: Role, mut msg: Message) {
        if let Err((check, e)) = self.checks.on_leave(self.now, from, &msg) {
            self.fail(super::report::FailureKind::Safety, check, e);
        }
        let lag = self.cfg.proposer.promote_lag_max;
        let eras = self.checks.chosen.eras().all().to_vec();
        let promoted = self
            .checks
            .promotions
            .check(from, &msg, &self.nodes, &eras, lag);
        if let Err(e) = promoted {
            self.fail(super::report::FailureKind::Safety, "promoted-caught-up", e);
        }
        if let (true, Role::Acceptor, Message::Committed { commit }) = (from == to, role, &msg) {
            // The learner tells its acceptor (and its other roles) the
            // new commit index: the slots it committed are in its log.
            let node = &self.nodes[from.0 as usize];
            if let Err(e) = self
                .checks
                .learned
                .check(node, *commit, &self.checks.chosen)
            {
                self.fail(super::report::FailureKind::Safety, "learned-chosen", e);
            }
        }
        if from == to {
            let local_inc = Some(self.nodes[from.0 as usize].inc);
            let ev = Ev::Deliver {
                to,
                role,
                from,
                msg,
                local_inc,
            };
            self.push(self.now, ev);
            return;
        }
        if !self.net.connected(from, to, &msg) || self.rng.chance(self.net.loss) {
            return;
        }
        let copies = if self.rng.chance(self.net.dup) { 2 } else { 1 };
        for c in 0..copies {
            let d = self.draw(self.sc.delay);
            let msg = if c + 1 == copies {
                std::mem::replace(&mut msg, Message::Committed { commit: 0 })
            } else {
                msg.clone()
            };
            let ev = Ev::Deliver {
                to,
                role,
                from,
                msg,
                local_inc: None,
            };
            self.push(self.now + d, ev);
        }
    }
}
