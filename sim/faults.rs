//! The fault model: the scenario's timeline, applied to the network,
//! clocks, disks, processes and backends. When the timeline's run is over,
//! every fault heals and every node restarts (the liveness phase).

use super::scenario::{Fault, Target};
use super::workload::BackendFaults;
use super::world::{Ev, LIVENESS_LIMIT, Phase, World};
use std::time::Duration;

impl World {
    /// The node a fault hits: `leader` and `follower` are resolved when
    /// the fault fires (deterministically, from the seed).
    fn resolve(&mut self, t: Target) -> Option<usize> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up())
            .collect();
        let leader = up.iter().copied().find(|&i| {
            self.nodes[i]
                .group
                .as_ref()
                .is_some_and(|g| g.proposer.role().is_leader())
        });
        match t {
            Target::Node(n) => Some(n as usize),
            Target::Leader => leader.or_else(|| up.first().copied()),
            Target::Follower => {
                let f: Vec<usize> = up.into_iter().filter(|&i| Some(i) != leader).collect();
                if f.is_empty() {
                    None
                } else {
                    Some(f[self.rng.below(f.len() as u64) as usize])
                }
            }
        }
    }

    pub(super) fn apply_fault(&mut self, fault: Fault) {
        if self.phase != Phase::Faults {
            return;
        }
        self.trace(|| format!("fault {fault:?}"));
        let n = self.nodes.len() as u16;
        match fault {
            Fault::Crash(t) => {
                if let Some(i) = self.resolve(t) {
                    self.crash(i);
                }
            }
            Fault::CrashAt(t, point) => {
                if let Some(i) = self.resolve(t) {
                    if self.nodes[i].up() {
                        self.nodes[i].crash_point = Some(point);
                    }
                }
            }
            Fault::Restart(t) => {
                if let Some(i) = self.resolve(t) {
                    if !self.nodes[i].up() {
                        self.start_node(i);
                    }
                }
            }
            Fault::RestartAll => self.restart_all(),
            Fault::Partition(groups) => {
                for a in 0..groups.len() {
                    for b in 0..groups.len() {
                        if a != b {
                            for &x in &groups[a] {
                                for &y in &groups[b] {
                                    self.net.cut(x, y);
                                }
                            }
                        }
                    }
                }
            }
            Fault::Isolate(t) => {
                if let Some(i) = self.resolve(t) {
                    self.net.isolate(i as u16, n);
                }
            }
            Fault::Cut { from, to } => {
                if let (Some(a), Some(b)) = (self.resolve(from), self.resolve(to)) {
                    self.net.cut(a as u16, b as u16);
                }
            }
            Fault::Heal => self.net.heal(),
            Fault::Drop(kind) => self.net.drop_kind(kind),
            Fault::Loss(p) => self.net.loss = p,
            Fault::Dup(p) => self.net.dup = p,
            Fault::BackendFail(p) => self.backend_faults.fail = p,
            Fault::Wipe(t) => {
                if let Some(i) = self.resolve(t) {
                    self.wipe(i);
                }
            }
            Fault::BackendDiverge(t) => {
                if let Some(i) = self.resolve(t) {
                    self.nodes[i].backend.skewed = true;
                }
            }
            Fault::ClockJump(t, d) => {
                if let Some(i) = self.resolve(t) {
                    self.clock_jump(i, d);
                }
            }
            Fault::ClockJumpOthers(t, d) => {
                let skip = self.resolve(t);
                for i in 0..self.nodes.len() {
                    if Some(i) != skip {
                        self.clock_jump(i, d);
                    }
                }
            }
            Fault::ClockDrift(t, ppm) => {
                if let Some(i) = self.resolve(t) {
                    self.nodes[i].clock.set_drift(self.now, ppm);
                    self.reschedule_timers(i);
                }
            }
        }
    }

    fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up() {
                self.start_node(i);
            }
        }
    }

    /// The node's monotonic clock leaps forward (a VM pause, a suspended
    /// process): every timer it set is now due sooner.
    fn clock_jump(&mut self, i: usize, d: Duration) {
        self.nodes[i].clock.jump(self.now, d);
        self.reschedule_timers(i);
    }

    /// The timeline is over: heal everything and demand convergence.
    pub(super) fn end_of_faults(&mut self) {
        self.phase = Phase::Settle;
        self.net.heal();
        self.net.loss = 0.0;
        self.net.dup = 0.0;
        self.backend_faults = BackendFaults::default();
        for node in &mut self.nodes {
            node.crash_point = None;
        }
        self.restart_all();
        self.settle_deadline = self.now + LIVENESS_LIMIT;
        self.push(self.now + Duration::from_millis(100), Ev::Check);
    }
}
