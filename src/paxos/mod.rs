//! Multi-Paxos as pure roles: no sockets, clocks, threads or OS
//! randomness. See `command` for the contract a driver follows, and
//! `crate::driver` for the one driver that keeps it.

#![deny(missing_docs)]

pub mod acceptor;
pub mod ballot;
pub mod command;
pub mod learner;
pub mod members;
pub mod membership;
pub mod message;
pub mod proposer;
pub mod rebuild;
pub mod state;
