//! What the in-process cluster tests share: bounded waits, a stand-in
//! gateway that records outcomes, an in-memory backend, and fast protocol
//! timings.
#![allow(dead_code)]

use ordo::driver::GroupConfig;
use ordo::node::{Backend, BackendFuture, Clients};
use ordo::paxos::ballot::{Slot, Update};
use ordo::paxos::command::ClientOutcome;
use ordo::paxos::learner::LearnerConfig;
use ordo::paxos::proposer::ProposerConfig;
use ordo::rng::Rng;
use ordo::sim::workload::{BackendFaults, SimBackend};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Longest any one wait in these tests may take.
pub const LIMIT: Duration = Duration::from_secs(15);

/// Poll `$cond` (which may `.await`) until it holds, for at most `LIMIT`.
#[macro_export]
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let deadline = std::time::Instant::now() + $crate::support::LIMIT;
        loop {
            if $cond {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "timed out after {:?} waiting for {}",
                    $crate::support::LIMIT,
                    $what
                );
            }
            actix::clock::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// The gateway stand-in: records every outcome.
#[derive(Clone, Default)]
pub struct Collector {
    pub seen: Arc<Mutex<Vec<ClientOutcome>>>,
}

impl Collector {
    pub fn take(&self) -> Vec<ClientOutcome> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Clients for Collector {
    fn outcome(&self, m: ClientOutcome) {
        self.seen.lock().unwrap().push(m);
    }
}

/// An in-memory backend: the sim's key-value service (values are lists
/// of tokens; `SimOp` payloads), honouring the idempotency key.
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

/// Protocol timings short enough for tests (elections in a few hundred
/// milliseconds), the production ones otherwise.
pub fn fast_config() -> GroupConfig {
    GroupConfig {
        proposer: ProposerConfig {
            election_timeout: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            retransmit_after: Duration::from_millis(100),
            takeover_after: Duration::from_millis(1000),
            ..ProposerConfig::default()
        },
        learner: LearnerConfig {
            fetch_delay: Duration::from_millis(30),
            fetch_timeout: Duration::from_millis(200),
            ..LearnerConfig::default()
        },
        ..GroupConfig::default()
    }
}

/// If every node has committed and applied the same index and every
/// backend holds the same data: that index.
pub async fn same_log_and_data(
    handles: &[&ordo::node::NodeHandle],
    backends: &[&MemoryBackend],
) -> Option<u64> {
    let mut indexes = Vec::new();
    for h in handles {
        indexes.push((h.commit().await, h.applied().await));
    }
    let first = *indexes.first()?;
    let data: Vec<_> = backends.iter().map(|b| b.data()).collect();
    let same = first.0.is_some()
        && first.0 == first.1
        && indexes.iter().all(|x| *x == first)
        && data.iter().all(|d| *d == data[0]);
    if same { first.1 } else { None }
}

/// Every append was answered (200) with its key's list up to its own
/// token, and every token is in the final list once.
pub fn check_append_answers(
    answered: &[(ordo::sim::workload::SimOp, u16, String)],
    data: &std::collections::BTreeMap<u32, String>,
) {
    use ordo::sim::workload::SimOp;
    let mut appends_per_key: std::collections::BTreeMap<u32, usize> = Default::default();
    for (op, status, body) in answered {
        assert_eq!(*status, 200, "{op:?}");
        let SimOp::Append { key, token } = op else {
            panic!("unexpected op {op:?}");
        };
        *appends_per_key.entry(*key).or_default() += 1;
        let list: Vec<&str> = data[key].split(' ').collect();
        let at = list.iter().position(|t| t == token).unwrap();
        assert_eq!(*body, list[..=at].join(" "), "answer to {op:?}");
    }
    for (key, n) in appends_per_key {
        assert_eq!(
            data[&key].split(' ').count(),
            n,
            "key {key}: {}",
            data[&key]
        );
    }
}
