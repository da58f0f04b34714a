//! Applying the chosen log to the local backend, and comparing what the
//! replicas answered.

pub mod applier;
pub mod compare;
pub mod dedupe;
pub mod digest;
pub mod order;
pub mod reseed;
pub mod resource;
