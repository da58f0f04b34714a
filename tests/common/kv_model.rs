//! The demo backend's array semantics as a sequential model for the
//! linearizability checker (`ordo::sim::checker`):
//!
//! - `POST /kv/{key}` with a JSON number appends it to the key's array
//!   (created if missing) and answers the whole array;
//! - `GET /kv/{key}` answers the array, or 404, which is the empty array.
//!
//! Keys are independent resources: the checker checks each alone.

use ordo::sim::checker::Model;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    Append { key: String, value: u64 },
    Read { key: String },
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Append { key, .. } | KvOp::Read { key } => key,
        }
    }
}

/// Arrays of numbers per key.
pub struct ArrayKv;

impl Model for ArrayKv {
    type State = Vec<u64>;
    type Input = KvOp;
    /// The array the call answered (a 404 read answered `[]`).
    type Output = Vec<u64>;

    fn init(&self) -> Vec<u64> {
        Vec::new()
    }

    fn partition(&self, input: &KvOp) -> String {
        input.key().to_string()
    }

    fn step(&self, state: &Vec<u64>, input: &KvOp, output: Option<&Vec<u64>>) -> Option<Vec<u64>> {
        let next = match input {
            KvOp::Append { value, .. } => {
                let mut next = state.clone();
                next.push(*value);
                next
            }
            KvOp::Read { .. } => state.clone(),
        };
        match output {
            None => Some(next),
            Some(seen) if *seen == next => Some(next),
            Some(_) => None,
        }
    }
}
