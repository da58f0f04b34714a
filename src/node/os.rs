//! The operating system's clock and randomness, for the production
//! drivers only: the roles and the driver get both as arguments, and the
//! sim passes its own.

use crate::rng::Rng;
use crate::time::Time;
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// The roles' clock: microseconds since the process first asked.
pub fn now() -> Time {
    let start = *START.get_or_init(Instant::now);
    Time(start.elapsed().as_micros() as u64)
}

/// A generator seeded from the OS, once per group (the driver forks one
/// per role from it) or per gateway boot.
pub fn os_rng() -> Rng {
    Rng::new(rand::random::<u64>())
}
