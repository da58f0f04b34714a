//! The simulated clients' operations, the simulated backend that executes
//! them, and the model the linearizability checker judges them by.
//!
//! The backend is a key-value store whose values are lists of tokens:
//! `put` replaces, `append` adds a token and returns the whole list,
//! `get` returns it. Every token is unique, so a lost, duplicated or
//! reordered update shows in some later answer.

use super::checker::Model;
use crate::paxos::ballot::{Slot, Update};
use crate::paxos::command::BackendReply;
use crate::rng::Rng;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SimOp {
    Put { key: u32, token: String },
    Append { key: u32, token: String },
    Get { key: u32 },
}

impl SimOp {
    pub fn key(&self) -> u32 {
        match self {
            SimOp::Put { key, .. } | SimOp::Append { key, .. } | SimOp::Get { key } => *key,
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    pub fn decode(payload: &[u8]) -> Option<SimOp> {
        postcard::from_bytes(payload).ok()
    }
}

/// Failure knobs of a simulated backend.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackendFaults {
    /// Answer 503 without applying.
    pub fail: f64,
    /// Apply, then lose the answer (the applier retries; the
    /// idempotency key must make the retry harmless).
    pub fail_after_apply: f64,
}

/// One backend instance. It survives its ordo node's crashes: it is a
/// separate service. It honours the idempotency key (slot, index) like
/// the built-in demo backend does.
#[derive(Default)]
pub struct SimBackend {
    data: BTreeMap<u32, String>,
    done: BTreeMap<(Slot, u32), (u16, Bytes)>,
    /// The last update executed on each key: updates to one key must
    /// reach it in log order, whatever runs beside them.
    last: BTreeMap<u32, (Slot, u32)>,
    /// The first update that reached its key after a later one.
    pub out_of_order: Option<String>,
    pub calls: u64,
    /// A fault made this instance differ from the others: every update
    /// it executes from now on stores and answers something else (a
    /// backend that is not deterministic, or lost its data).
    pub skewed: bool,
    /// Updates executed while skewed.
    pub skewed_updates: u64,
    /// Its data was copied from a skewed (or tainted) instance: it
    /// differs from the sound ones too.
    pub tainted: bool,
}

impl SimBackend {
    pub fn execute(
        &mut self,
        slot: Slot,
        index: u32,
        update: &Update,
        faults: BackendFaults,
        rng: &mut Rng,
    ) -> BackendReply {
        self.calls += 1;
        if rng.chance(faults.fail) {
            return reply(503, Bytes::from_static(b"busy"));
        }
        let (status, body) = match self.done.get(&(slot, index)) {
            Some(done) => done.clone(),
            None => {
                if let Some(key) = SimOp::decode(&update.payload).map(|op| op.key()) {
                    let at = (slot, index);
                    match self.last.insert(key, at) {
                        Some(later) if later > at && self.out_of_order.is_none() => {
                            self.out_of_order = Some(format!(
                                "key {key}: the update of slot {slot} index {index} ran after \
                                 the one of slot {} index {}",
                                later.0, later.1
                            ));
                        }
                        _ => {}
                    }
                }
                let reply = self.apply(&update.payload);
                self.done.insert((slot, index), reply.clone());
                reply
            }
        };
        if rng.chance(faults.fail_after_apply) {
            return BackendReply::Unreachable {
                reason: "connection reset after the request was sent".into(),
            };
        }
        reply(status, body)
    }

    fn apply(&mut self, payload: &[u8]) -> (u16, Bytes) {
        let Some(op) = SimOp::decode(payload) else {
            return (400, Bytes::from_static(b"bad op"));
        };
        if self.skewed {
            self.skewed_updates += 1;
        }
        // A skewed instance keeps a token of its own in every value it
        // writes, so every answer it gives from then on differs.
        let skew = |t: String| if self.skewed { format!("{t}~") } else { t };
        match op {
            SimOp::Put { key, token } => {
                let t = skew(token);
                self.data.insert(key, t.clone());
                (
                    200,
                    Bytes::from(if self.skewed { t } else { String::new() }),
                )
            }
            SimOp::Append { key, token } => {
                let token = skew(token);
                let v = self.data.entry(key).or_default();
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(&token);
                (200, Bytes::from(v.clone()))
            }
            SimOp::Get { key } => {
                let v = self.data.get(&key).cloned().unwrap_or_default();
                (200, Bytes::from(skew(v)))
            }
        }
    }

    /// Become a copy of `donor`'s state (a reseed's export and import).
    pub fn copy_from(&mut self, donor: &SimBackend) {
        self.data = donor.data.clone();
        self.done = donor.done.clone();
        self.last = donor.last.clone();
        self.tainted = donor.skewed || donor.tainted;
    }

    /// Whether it may answer differently from a sound instance.
    pub fn unsound(&self) -> bool {
        self.skewed || self.tainted
    }

    pub fn data(&self) -> &BTreeMap<u32, String> {
        &self.data
    }
}

/// A simulated backend's response, digested as production digests one.
fn reply(status: u16, body: Bytes) -> BackendReply {
    BackendReply::Response {
        status,
        digest: crate::apply::digest::response(status, &body, &[]),
        body,
    }
}

/// The sequential specification the checker holds histories against.
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Input = SimOp;
    type Output = String;

    fn init(&self) -> String {
        String::new()
    }

    fn partition(&self, input: &SimOp) -> String {
        format!("key {}", input.key())
    }

    fn step(&self, state: &String, input: &SimOp, output: Option<&String>) -> Option<String> {
        let (next, answer) = match input {
            SimOp::Put { token, .. } => (token.clone(), String::new()),
            SimOp::Append { token, .. } => {
                let next = if state.is_empty() {
                    token.clone()
                } else {
                    format!("{state} {token}")
                };
                (next.clone(), next)
            }
            SimOp::Get { .. } => (state.clone(), state.clone()),
        };
        match output {
            Some(out) if *out != answer => None,
            _ => Some(next),
        }
    }
}
