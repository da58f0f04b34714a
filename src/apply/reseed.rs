//! Reseeding a node's backend from a healthy node's (`ordo reseed`): the
//! donor pauses applying between two slots, at slot `S`; its backend's
//! state is exported, with the applier's replicated state at `S` (the
//! update ids of the dedupe window and the client `Idempotency-Key`
//! records, which every node must hold alike to skip the same updates);
//! the donor resumes. The target pauses, its backend imports the state,
//! its applier takes the replicated state and sets its applied index to
//! `S`, forgets what it judged of its old answers, and resumes at `S+1`.
//!
//! The target must already hold the log up to `S` (it has the whole log
//! unless it is far behind; then it catches up first and the reseed is
//! tried again): it then applies `S+1` on from its own log.

use crate::paxos::ballot::{Slot, UpdateId};
use crate::paxos::state::ClientKeyRecord;
use serde::{Deserialize, Serialize};

/// What travels from the donor to the target (postcard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Every slot up to this one is in the backend state below; none after.
    pub slot: Slot,
    /// The dedupe window: update ids and the slot of their latest copy,
    /// oldest first.
    pub recent: Vec<(Slot, UpdateId)>,
    /// Client idempotency keys and their records.
    pub client_keys: Vec<(Vec<u8>, ClientKeyRecord)>,
    /// The backend's own export, as it gave it.
    pub backend: Vec<u8>,
    /// The donor's eras of the active set: a target whose log jumps the
    /// gap learns from these the changes it did not see.
    pub eras: Option<crate::paxos::membership::Eras>,
}

/// The marker of an encoded envelope, and its version.
const TAG: &[u8; 6] = b"ordo2\n";

impl Envelope {
    /// Encode for the wire.
    pub fn encode(&self) -> Vec<u8> {
        // Into memory: it cannot fail for these field types.
        postcard::to_extend(self, TAG.to_vec()).unwrap_or_default()
    }

    /// Decode what `encode` made; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, String> {
        let body = bytes
            .strip_prefix(TAG.as_slice())
            .ok_or("not an ordo reseed export (wrong header)")?;
        postcard::from_bytes(body).map_err(|e| format!("a damaged ordo reseed export: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::ballot::NodeId;

    #[test]
    fn an_envelope_round_trips_and_garbage_is_named() {
        let e = Envelope {
            slot: 9,
            recent: vec![(
                8,
                UpdateId {
                    origin: NodeId(1),
                    boot: 2,
                    seq: 3,
                },
            )],
            client_keys: vec![(
                b"k".to_vec(),
                ClientKeyRecord {
                    slot: 7,
                    index: 0,
                    status: 201,
                    body: bytes::Bytes::from_static(b"x"),
                },
            )],
            backend: b"{}".to_vec(),
            eras: None,
        };
        assert_eq!(Envelope::decode(&e.encode()), Ok(e));
        assert!(
            Envelope::decode(b"{}")
                .unwrap_err()
                .contains("wrong header")
        );
    }
}
