//! The deterministic simulation harness: a seeded scheduler that shells
//! the production driver (`crate::driver`) with models of the network,
//! clocks, disks, backends and clients, records client histories and
//! judges them.
//!
//! - `world`: the scheduler, its event queue and budget.
//! - `node`, `network`, `clock`, `disk`, `clients`, `faults`,
//!   `workload`: the models.
//! - `invariants/`: one file per check; `checker`: the linearizability
//!   checker.
//! - `scenario`: the scenario file format and the generator; `runner`:
//!   many seeds in parallel.

pub mod checker;
pub mod clients;
pub mod clock;
pub mod disk;
pub mod faults;
pub mod invariants;
pub mod network;
pub mod node;
pub mod report;
pub mod reseed;
pub mod runner;
pub mod scenario;
pub mod workload;
pub mod world;

pub use report::{Failure, FailureKind, Report};
pub use scenario::Scenario;
pub use world::{Checks, World};

/// Run one scenario.
pub fn run(scenario: &Scenario) -> Report {
    World::new(scenario.clone(), false).run()
}
