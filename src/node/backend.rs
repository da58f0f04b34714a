//! The seam between the applier and the service it replicates.

use crate::paxos::ballot::{Slot, Update};
use crate::paxos::command::BackendReply;
use crate::rng::Rng;
use crate::sim::workload::{BackendFaults, SimBackend};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

/// What a backend call returns: resolves to the backend's reply.
pub type BackendFuture = Pin<Box<dyn Future<Output = BackendReply> + Send>>;

/// The local backend service. `(slot, index)` is the update's idempotency
/// key: a call repeated with the same key (after a crash or a lost answer)
/// must not apply the update twice.
pub trait Backend: Send + Sync + 'static {
    fn call(&self, slot: Slot, index: u32, update: Update) -> BackendFuture;
}

/// An in-memory backend for tests: the sim's key-value service (values are
/// lists of tokens; `SimOp` payloads), honouring the idempotency key.
pub struct MemoryBackend {
    inner: Mutex<(SimBackend, Rng)>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend {
            inner: Mutex::new((SimBackend::default(), Rng::new(0))),
        }
    }
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, (SimBackend, Rng)> {
        // A panic while holding the lock leaves the map consistent (each
        // call is one insert), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored key-value pairs.
    pub fn data(&self) -> BTreeMap<u32, String> {
        self.lock().0.data().clone()
    }

    /// Calls received, repeats included.
    pub fn calls(&self) -> u64 {
        self.lock().0.calls
    }
}

impl Backend for MemoryBackend {
    fn call(&self, slot: Slot, index: u32, update: Update) -> BackendFuture {
        let reply = {
            let mut guard = self.lock();
            let (backend, rng) = &mut *guard;
            // No injected faults: the rng is never consulted.
            backend.execute(slot, index, &update, BackendFaults::default(), rng)
        };
        Box::pin(std::future::ready(reply))
    }
}
