//! The timer table: which timers a role has set, and which setting of
//! each is current. Setting a timer replaces the role's previous one of
//! that kind; a wake-up of a replaced setting is ignored, so a shell
//! never has to cancel one, and a late or duplicated wake-up is harmless.

use super::Output;
use crate::paxos::command::Timer;
use crate::time::Time;
use std::collections::BTreeMap;

#[derive(Default)]
pub(super) struct Timers {
    set: BTreeMap<Timer, (u64, Time)>,
    generation: u64,
}

impl Timers {
    pub(super) fn set(&mut self, timer: Timer, at: Time) -> Output {
        self.generation += 1;
        let generation = self.generation;
        self.set.insert(timer, (generation, at));
        Output::Timer {
            timer,
            at,
            generation,
        }
    }

    /// Whether this wake-up is the current setting of `timer`; if so the
    /// timer is no longer set.
    pub(super) fn take(&mut self, timer: Timer, generation: u64) -> bool {
        if self.set.get(&timer).map(|t| t.0) != Some(generation) {
            return false;
        }
        self.set.remove(&timer);
        true
    }

    pub(super) fn pending(&self) -> impl Iterator<Item = (Timer, u64, Time)> + '_ {
        self.set.iter().map(|(&t, &(g, at))| (t, g, at))
    }
}
