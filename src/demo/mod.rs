//! The built-in demo service: what `ordo demo` replicates, and what the
//! tests use as a real HTTP backend.

pub mod backend;
pub mod snapshot;

pub use backend::{DemoBackend, DemoConfig, serve};
pub mod cluster;
