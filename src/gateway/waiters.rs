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

    /// Wait again, for an outcome after the one taken (the request's
    /// update was sent twice, and the first answer was the copy's).
    pub fn renew(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(self.id, tx);
        self.rx = Some(rx);
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

    /// A wait goes on after a quiet interval, and after a renew takes the
    /// outcome that comes after the one taken (a copy's refusal, then the
    /// first copy's answer); once dropped, nothing waits.
    #[tokio::test]
    async fn a_wait_goes_on_after_a_quiet_interval_and_after_a_renew() {
        let waiters = Waiters::default();
        let mut waiting = waiters.register(id());
        assert_eq!(waiting.within(Duration::from_millis(5)).await, None);
        assert!(!waiting.ended());

        waiters.outcome(ClientOutcome::Refused {
            ids: vec![id()],
            why: Refusal::NoLeader,
        });
        assert!(matches!(
            waiting.within(Duration::from_secs(5)).await,
            Some(ClientOutcome::Refused { .. })
        ));
        assert!(waiting.ended());
        assert_eq!(waiters.waiting(), 0);

        waiting.renew();
        assert!(!waiting.ended());
        let answer = ClientOutcome::Answer {
            id: id(),
            slot: 9,
            status: 201,
            body: Default::default(),
        };
        waiters.outcome(answer.clone());
        assert_eq!(waiting.within(Duration::from_secs(5)).await, Some(answer));

        waiting.renew();
        drop(waiting);
        assert_eq!(waiters.waiting(), 0, "a dropped wait is forgotten");
    }
}
