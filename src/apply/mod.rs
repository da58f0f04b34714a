//! Applying the chosen log to the local backend.

pub mod applier;
