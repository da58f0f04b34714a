//! ordo: a Paxos availability proxy for REST services.
//!
//! `adapter` holds what each kind of service needs to proxy well,
//! `paxos` holds the protocol roles and their records, `apply` the
//! applier, `driver` the one driver of the roles, `storage` the durable
//! store, `node` the actix actors that shell the driver in production,
//! `http` the update encoding and the HTTP backend client, `gateway` the
//! client-facing HTTP server, `demo` the built-in demo service, `mesh` the
//! TLS peer transport, `tls` TLS material for every hop; `sim` (in the top-level `sim/` folder) shells the
//! same driver with a seeded deterministic scheduler.

pub mod adapter;
pub mod apply;
pub mod config;
pub mod demo;
pub mod driver;
pub mod gateway;
pub mod http;
pub mod logs;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod rng;
pub mod server;
pub mod storage;
pub mod time;
pub mod tls;

#[path = "../sim/mod.rs"]
pub mod sim;
