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
    inner: Arc<Mutex<HashMap<UpdateId, Entry>>>,
}

/// One waiting request.
struct Entry {
    tx: oneshot::Sender<ClientOutcome>,
    /// Sent more than once ([`Waiting::sent_again`]): a refusal then
    /// concerns one copy only, and ends nothing.
    sent_again: bool,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<UpdateId, Entry>> {
        // Each operation is one map insert or remove: a panic elsewhere
        // cannot leave the map half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for the outcome of `id`. The registration ends when the
    /// returned `Waiting` is dropped, however the request ends (answer,
    /// timeout, or a client that went away), so nothing accumulates.
    pub fn register(&self, id: UpdateId) -> Waiting {
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            tx,
            sent_again: false,
        };
        self.lock().insert(id, entry);
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
        let mut map = self.lock();
        let refusal = matches!(
            outcome,
            ClientOutcome::Refused { .. } | ClientOutcome::ReadRefused { .. }
        );
        // Decided under the lock: the first copy's answer may come at any
        // moment, and must find the wait still there.
        if refusal && map.get(&id).is_some_and(|e| e.sent_again) {
            return;
        }
        if let Some(e) = map.remove(&id) {
            let _ = e.tx.send(outcome);
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
    /// The outcome if it comes within `limit`; after a `None` the wait
    /// goes on (unless [`Waiting::ended`]).
    pub async fn within(&mut self, limit: std::time::Duration) -> Option<ClientOutcome> {
        let rx = self.rx.as_mut()?;
        match tokio::time::timeout(limit, rx).await {
            Ok(got) => {
                self.rx = None;
                got.ok()
            }
            Err(_) => None,
        }
    }

    /// Whether nothing more can come: an outcome was taken.
    pub fn ended(&self) -> bool {
        self.rx.is_none()
    }

    /// The request is being sent again: from now on a refusal (of either
    /// copy: the first may still be chosen) ends nothing, and the wait
    /// goes on for an answer or its limit.
    pub fn sent_again(&self) {
        if let Some(e) = self.waiters.lock().get_mut(&self.id) {
            e.sent_again = true;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::ballot::NodeId;
    use crate::paxos::command::Refusal;
    use std::time::Duration;

    fn id() -> UpdateId {
        UpdateId {
            origin: NodeId(1),
            boot: 2,
            seq: 3,
        }
    }

    fn refused() -> ClientOutcome {
        ClientOutcome::Refused {
            ids: vec![id()],
            why: Refusal::NoLeader,
        }
    }

    fn answer() -> ClientOutcome {
        ClientOutcome::Answer {
            id: id(),
            slot: 9,
            status: 201,
            body: Default::default(),
        }
    }

    /// A wait goes on after a quiet interval; a refusal ends it, unless
    /// the request was sent again, and then the answer still finds it.
    #[tokio::test]
    async fn a_refusal_ends_a_wait_only_if_the_request_was_sent_once() {
        let waiters = Waiters::default();
        let mut waiting = waiters.register(id());
        assert_eq!(waiting.within(Duration::from_millis(5)).await, None);
        assert!(!waiting.ended());
        waiters.outcome(refused());
        assert_eq!(
            waiting.within(Duration::from_secs(5)).await,
            Some(refused())
        );
        assert!(waiting.ended());
        assert_eq!(waiters.waiting(), 0);

        let mut waiting = waiters.register(id());
        waiting.sent_again();
        waiters.outcome(refused());
        assert_eq!(waiting.within(Duration::from_millis(5)).await, None);
        assert!(!waiting.ended(), "a copy's refusal ended the wait");
        waiters.outcome(answer());
        assert_eq!(waiting.within(Duration::from_secs(5)).await, Some(answer()));
        drop(waiting);
        assert_eq!(waiters.waiting(), 0, "a finished wait is forgotten");
    }
}
