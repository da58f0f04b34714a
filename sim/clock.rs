//! A node's monotonic clock: the sim's global time, shifted by forward
//! jumps (a paused VM, a suspended process) and stretched by a drift
//! rate. Timers are set on the local clock and scheduled in global time.

use crate::time::Time;

/// Parts per million.
const PPM: i128 = 1_000_000;

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    /// The local reading at global time `base_global`.
    base_local: u64,
    base_global: u64,
    /// How much faster than global time it runs, in ppm (negative:
    /// slower).
    drift_ppm: i64,
}

impl Clock {
    /// The local reading at global time `now`.
    pub fn local(&self, now: Time) -> Time {
        let dt = now.as_micros().saturating_sub(self.base_global) as i128;
        let scaled = dt * (PPM + self.drift_ppm as i128) / PPM;
        Time(self.base_local.saturating_add(scaled.max(0) as u64))
    }

    /// The first global time at which the local clock reads `at` or more.
    pub fn global(&self, at: Time) -> Time {
        let dl = at.as_micros().saturating_sub(self.base_local) as i128;
        let rate = PPM + self.drift_ppm as i128;
        let dg = (dl * PPM + rate - 1) / rate;
        Time(self.base_global.saturating_add(dg as u64))
    }

    fn rebase(&mut self, now: Time) {
        self.base_local = self.local(now).as_micros();
        self.base_global = now.as_micros();
    }

    /// The clock leaps forward by `by` at global time `now`.
    pub fn jump(&mut self, now: Time, by: std::time::Duration) {
        self.rebase(now);
        self.base_local += by.as_micros() as u64;
    }

    /// From `now` on the clock runs `ppm` parts per million fast (or slow).
    pub fn set_drift(&mut self, now: Time, ppm: i64) {
        self.rebase(now);
        self.drift_ppm = ppm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_timer_fires_when_the_local_clock_reaches_it() {
        let mut c = Clock::default();
        c.jump(Time::from_millis(100), Duration::from_millis(50));
        c.set_drift(Time::from_millis(200), -30_000);
        for at in [250u64, 251, 400, 1234, 99_999] {
            let at = Time(at * 1000 + 7);
            let g = c.global(at);
            assert!(c.local(g) >= at, "{at} -> {g} reads {}", c.local(g));
            assert!(c.local(Time(g.as_micros() - 1)) < at, "{at}: fired late");
        }
        // 3% slow: a local second takes longer than a global one.
        let a = c.local(Time::from_millis(1_000));
        let b = c.local(Time::from_millis(2_000));
        assert_eq!(b.as_micros() - a.as_micros(), 970_000);
    }
}
