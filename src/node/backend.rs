//! The seam between the applier and the service it replicates.

use crate::paxos::ballot::{Slot, Update};
use crate::paxos::command::BackendReply;
use std::future::Future;
use std::pin::Pin;

/// What a backend call returns: resolves to the backend's reply.
pub type BackendFuture = Pin<Box<dyn Future<Output = BackendReply> + Send>>;

/// The local backend service. `(slot, index)` is the update's idempotency
/// key: a call repeated with the same key (after a crash or a lost answer)
/// must not apply the update twice.
pub trait Backend: Send + Sync + 'static {
    fn call(&self, slot: Slot, index: u32, update: Update) -> BackendFuture;
}
