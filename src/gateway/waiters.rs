//! Client requests waiting for their outcome: the gateway's end of the
//! [`Clients`] seam. Each waiting HTTP handler registers a one-shot
//! channel under its request id; the role actors complete it directly
//! with the role's own [`ClientOutcome`]. Outcomes for ids nobody waits
//! for (a timed-out request, a previous boot of this node) are dropped.

use crate::node::Clients;
use crate::paxos::ballot::UpdateId;
use crate::paxos::command::ClientOutcome;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

#[derive(Clone, Default)]
pub struct Waiters {
    inner: Arc<Mutex<HashMap<UpdateId, oneshot::Sender<ClientOutcome>>>>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<UpdateId, oneshot::Sender<ClientOutcome>>> {
        // Each operation is one map insert or remove: a panic elsewhere
        // cannot leave the map half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for the outcome of `id`. The registration ends when the
    /// returned `Waiting` is dropped, however the request ends (answer,
    /// timeout, or a client that went away), so nothing accumulates.
    pub fn register(&self, id: UpdateId) -> Waiting {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        Waiting {
            waiters: self.clone(),
            id,
            rx: Some(rx),
        }
    }

    /// Stop waiting (the request timed out or its client went away).
    fn forget(&self, id: UpdateId) {
        self.lock().remove(&id);
    }

    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn complete(&self, id: UpdateId, outcome: ClientOutcome) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(outcome);
        }
    }
}

/// One registered wait; see [`Waiters::register`].
pub struct Waiting {
    waiters: Waiters,
    id: UpdateId,
    rx: Option<oneshot::Receiver<ClientOutcome>>,
}

impl Waiting {
    /// The outcome, or `None` if none came within `limit`.
    pub async fn outcome(mut self, limit: std::time::Duration) -> Option<ClientOutcome> {
        let rx = self.rx.take()?;
        tokio::time::timeout(limit, rx).await.ok()?.ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiters.forget(self.id);
    }
}

impl Clients for Waiters {
    fn outcome(&self, outcome: ClientOutcome) {
        match outcome {
            ClientOutcome::Refused { ids, why } if ids.len() > 1 => {
                // One refusal per waiting request.
                for id in ids {
                    let one = ClientOutcome::Refused { ids: vec![id], why };
                    self.complete(id, one);
                }
            }
            outcome => {
                if let Some(&id) = outcome.ids().first() {
                    self.complete(id, outcome);
                }
            }
        }
    }
}
