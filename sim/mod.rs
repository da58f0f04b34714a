//! The deterministic simulation harness: a seeded scheduler that drives
//! the production role code with a simulated network, clock, disk and
//! backend, records client histories and judges them.

pub mod checker;
pub mod disk;
pub mod runner;
pub mod scenario;
pub mod workload;
pub mod world;

pub use scenario::Scenario;
pub use world::{Failure, FailureKind, Report, World};

/// Run one scenario.
pub fn run(scenario: &Scenario) -> Report {
    World::new(scenario.clone(), false).run()
}
