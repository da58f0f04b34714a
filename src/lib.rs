//! ordo: a Paxos availability proxy for REST services.
//!
//! `paxos` holds the protocol roles, `apply` the applier, `storage` the
//! durable state, `node` the actix actors that drive the roles in
//! production, `http` the update encoding and the HTTP backend client,
//! `demo` the built-in demo service, `mesh` the TLS peer transport; `sim` (in the top-level `sim/`
//! folder) drives the same roles with a seeded deterministic scheduler.

pub mod apply;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod http;
pub mod mesh;
pub mod node;
pub mod paxos;
pub mod rng;
pub mod server;
pub mod storage;
pub mod time;

#[path = "../sim/mod.rs"]
pub mod sim;
