//! The timer table: which timers a role has set, and which setting of
//! each is current. Setting a timer replaces the role's previous one of
//! that kind; a wake-up of a replaced setting is ignored, so a late or
//! duplicated wake-up is harmless, and one that comes before its time
//! (a clock that was slowed after the wake-up was scheduled) is put off
//! until then: a role never sees its timer before `now >= at`.

use super::Output;
use crate::paxos::command::Timer;
use crate::time::Time;
use std::collections::BTreeMap;

/// See [`Timers::take`].
pub(super) enum Wake {
    /// The current setting, due: the role's `on_timer` runs.
    Due,
    /// The current setting, before its time: schedule it again.
    Early(Output),
    /// A replaced or already fired setting: nothing to do.
    Stale,
}

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

    /// What a wake-up of `timer`'s setting `generation` at `now` means.
    pub(super) fn take(&mut self, timer: Timer, generation: u64, now: Time) -> Wake {
        match self.set.get(&timer) {
            Some(&(g, at)) if g == generation && now < at => Wake::Early(Output::Timer {
                timer,
                at,
                generation,
            }),
            Some(&(g, _)) if g == generation => {
                self.set.remove(&timer);
                Wake::Due
            }
            _ => Wake::Stale,
        }
    }

    pub(super) fn pending(&self) -> impl Iterator<Item = (Timer, u64, Time)> + '_ {
        self.set.iter().map(|(&t, &(g, at))| (t, g, at))
    }
}
