//! Typed durable state over [`Kv`]: the one encoding of every record,
//! shared by production (fjall) and the sim (its simulated disk).
//!
//! Keys: slot-indexed records use the slot in big-endian after a one-byte
//! prefix, so byte order is slot order; singletons use other prefixes.
//! Values are postcard. A record that does not decode is corruption of
//! our own disk, which is fatal.

use crate::paxos::ballot::{Ballot, Slot, Value};
use crate::storage::kv::{Kv, Table};
use serde::Serialize;
use serde::de::DeserializeOwned;

const META: u8 = 0;
const SLOT: u8 = 1;
const CLIENT_KEY: u8 = 2;
const DIGEST: u8 = 3;

/// Singleton records in the node table and the acceptor table.
#[derive(Clone, Copy, Debug)]
pub enum Meta {
    /// Acceptor: the highest ballot promised.
    Promised,
    /// Proposer: the highest round it has used; never reused.
    Round,
    /// Applier: every slot up to this one was applied to the backend.
    Applied,
    /// Acceptor: entries up to this slot are chosen and were forgotten.
    /// Written before the deletes, so a surviving delete implies it.
    ChosenUpto,
    /// Node: the [`NodeState`] (operator switch, divergence).
    NodeState,
    /// Acceptor: 1 while this acceptor rebuilds after losing its state
    /// (see `paxos::rebuild`): it does not vote.
    Rebuilding,
    /// Learner: log entries up to this slot were dropped (compaction, or
    /// a reseed); they were chosen, and applied here. Reads skip them
    /// from the moment this is written; the store reclaims them once it
    /// is durable (`drop_log_upto`).
    Compacted,
    /// Learner: the bytes of the entries the log holds (`log_cost` each).
    LogBytes,
    /// Applier: every node of the group has applied every slot up to
    /// this one (as their digests showed): the log below it may go.
    AllApplied,
    /// Learner: the eras of the active set the log made
    /// (`membership::Eras`), kept past compaction.
    Eras,
    /// Applier: the dedupe window a reseed brought (the donor's ids of
    /// the slots up to the export's), which this node's log may not hold:
    /// a restart within the window rebuilds from it too.
    SeededWindow,
}

impl Meta {
    fn key(self) -> [u8; 2] {
        [META, self as u8]
    }
    fn table(self) -> Table {
        match self {
            Meta::Promised | Meta::ChosenUpto | Meta::Rebuilding => Table::Acceptor,
            Meta::Round
            | Meta::Applied
            | Meta::NodeState
            | Meta::Compacted
            | Meta::LogBytes
            | Meta::AllApplied
            | Meta::Eras
            | Meta::SeededWindow => Table::Node,
        }
    }
}

fn slot_key(slot: Slot) -> [u8; 9] {
    prefixed_slot_key(SLOT, slot)
}

fn prefixed_slot_key(prefix: u8, slot: Slot) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = prefix;
    k[1..].copy_from_slice(&slot.to_be_bytes());
    k
}

fn key_slot(key: &[u8]) -> Slot {
    match <[u8; 8]>::try_from(&key[1..]) {
        Ok(b) if key[0] == SLOT => u64::from_be_bytes(b),
        _ => crate::storage::fatal("decode slot key", &format!("{key:?}")),
    }
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> T {
    match postcard::from_bytes(bytes) {
        Ok(v) => v,
        Err(e) => crate::storage::fatal(what, &e),
    }
}

fn encode<T: Serialize>(what: &str, value: &T) -> Vec<u8> {
    match postcard::to_stdvec(value) {
        Ok(v) => v,
        Err(e) => crate::storage::fatal(what, &e),
    }
}

/// A singleton counter; 0 if never written.
pub fn load_u64(kv: &dyn Kv, meta: Meta) -> u64 {
    kv.get(meta.table(), &meta.key())
        .map(|b| decode(&format!("{meta:?}"), &b))
        .unwrap_or(0)
}

/// Write a singleton counter.
pub fn store_u64(kv: &mut dyn Kv, meta: Meta, value: u64) {
    kv.put(meta.table(), &meta.key(), &encode("u64", &value));
}

/// The acceptor's promised ballot; `Ballot::ZERO` if none.
pub fn load_promised(kv: &dyn Kv) -> Ballot {
    kv.get(Table::Acceptor, &Meta::Promised.key())
        .map(|b| decode("promised ballot", &b))
        .unwrap_or(Ballot::ZERO)
}

/// Write the acceptor's promised ballot.
pub fn store_promised(kv: &mut dyn Kv, ballot: Ballot) {
    kv.put(
        Table::Acceptor,
        &Meta::Promised.key(),
        &encode("ballot", &ballot),
    );
}

/// Write what the acceptor accepted in `slot`.
pub fn store_accepted(kv: &mut dyn Kv, slot: Slot, ballot: Ballot, value: &Value) {
    kv.put(
        Table::Acceptor,
        &slot_key(slot),
        &encode("accepted", &(ballot, value)),
    );
}

/// Forget what was accepted in `slot` (it is chosen and in the log).
pub fn forget_accepted(kv: &mut dyn Kv, slot: Slot) {
    kv.delete(Table::Acceptor, &slot_key(slot));
}

/// Accepted entries from `from` on, at most `limit`.
pub fn load_accepted(kv: &dyn Kv, from: Slot, limit: usize) -> Vec<(Slot, Ballot, Value)> {
    kv.scan(Table::Acceptor, &slot_key(from), limit)
        .into_iter()
        .map(|(k, v)| {
            let (ballot, value): (Ballot, Value) = decode("accepted entry", &v);
            (key_slot(&k), ballot, value)
        })
        .collect()
}

/// Write `slot`'s chosen value into the log.
pub fn store_chosen(kv: &mut dyn Kv, slot: Slot, value: &Value) {
    kv.put(Table::Log, &slot_key(slot), &encode("chosen", value));
}

/// `slot`'s chosen value, if the log has it.
///
/// Slots up to the compaction point are gone, whatever the store still
/// holds of them: it drops them a file at a time (`drop_log_upto`).
pub fn load_chosen(kv: &dyn Kv, slot: Slot) -> Option<Value> {
    if slot <= load_u64(kv, Meta::Compacted) {
        return None;
    }
    kv.get(Table::Log, &slot_key(slot))
        .map(|b| decode("chosen entry", &b))
}

/// Chosen entries from `from` on, at most `limit`, in slot order (none
/// up to the compaction point, as `load_chosen`).
pub fn load_chosen_range(kv: &dyn Kv, from: Slot, limit: usize) -> Vec<(Slot, Value)> {
    let from = from.max(load_u64(kv, Meta::Compacted) + 1);
    kv.scan(Table::Log, &slot_key(from), limit)
        .into_iter()
        .map(|(k, v)| (key_slot(&k), decode("chosen entry", &v)))
        .collect()
}

/// Where a client idempotency key was first applied, and the answer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientKeyRecord {
    /// The slot of the first application.
    pub slot: Slot,
    /// The update's index in that slot.
    pub index: u32,
    /// The backend's status then.
    pub status: u16,
    /// The backend's body then.
    pub body: bytes::Bytes,
}

fn client_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(CLIENT_KEY);
    k.extend_from_slice(key);
    k
}

/// Where and how client key `key` was first applied.
pub fn load_client_key(kv: &dyn Kv, key: &[u8]) -> Option<ClientKeyRecord> {
    kv.get(Table::Node, &client_key(key))
        .map(|b| decode("client key record", &b))
}

/// Record the first application of client key `key`.
pub fn store_client_key(kv: &mut dyn Kv, key: &[u8], rec: &ClientKeyRecord) {
    kv.put(Table::Node, &client_key(key), &encode("client key", rec));
}

/// Forget client key `key` (it left the window).
pub fn forget_client_key(kv: &mut dyn Kv, key: &[u8]) {
    kv.delete(Table::Node, &client_key(key));
}

/// Every stored client key with the slot it was applied in.
pub fn load_client_keys(kv: &dyn Kv) -> Vec<(Vec<u8>, Slot)> {
    let mut out = Vec::new();
    let mut from = vec![CLIENT_KEY];
    loop {
        let page = kv.scan(Table::Node, &from, 1024);
        let done = page.len() < 1024;
        for (k, v) in page {
            if k.first() != Some(&CLIENT_KEY) {
                return out;
            }
            let rec: ClientKeyRecord = decode("client key record", &v);
            from = k.clone();
            from.push(0);
            out.push((k[1..].to_vec(), rec.slot));
        }
        if done {
            return out;
        }
    }
}

/// Whether this group's store holds nothing at all: no promise, no
/// round, no log, nothing applied. A member that starts so either starts
/// a new cluster (`--init`) or lost its state, and must rebuild.
pub fn is_empty(kv: &dyn Kv) -> bool {
    crate::storage::kv::Table::ALL
        .iter()
        .all(|&t| kv.last(t).is_none())
}

/// The highest slot in the local log, or the compaction point if that
/// is higher (every slot up to either is chosen); 0 if neither.
pub fn last_chosen_slot(kv: &dyn Kv) -> Slot {
    let last = kv.last(Table::Log).map(|(k, _)| key_slot(&k)).unwrap_or(0);
    last.max(load_u64(kv, Meta::Compacted))
}

/// What a log entry counts against `log_retain_bytes`: its payloads and
/// a fixed allowance for the key and the encoding.
pub fn log_cost(value: &Value) -> u64 {
    32 + value.payload_bytes() as u64
}

/// Let the store reclaim the log's entries up to `upto`: the compaction
/// point must be at least `upto` already, and durable (`Kv::drop_below`).
pub fn drop_log_upto(kv: &mut dyn Kv, upto: Slot) {
    kv.drop_below(Table::Log, &slot_key(upto.saturating_add(1)));
}

/// Why a replica of this node differs from the others (see
/// `apply::compare`): found at `slot`, durable until an operator clears
/// it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    /// The first slot found to differ.
    pub slot: Slot,
    /// This node's digest of it.
    pub ours: u64,
    /// The majority's digest; `None` when no digest had a majority.
    pub majority: Option<u64>,
}

/// What this node's replica of the service may be trusted with, beyond
/// the Paxos roles' own state: durable, so it survives restarts
/// (MISSION, Node state). Fields are only ever appended (postcard).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeState {
    /// An operator disabled this node, with this reason.
    pub disabled: Option<String>,
    /// The replica differs from the others.
    pub diverged: Option<Divergence>,
    /// An operator cleared divergence up to this slot: digests of slots
    /// at or below it no longer count.
    pub cleared_upto: Slot,
    /// The log this node needs from this slot on was compacted away on
    /// every peer: only a reseed brings it back.
    pub needs_reseed: Option<Slot>,
}

/// The node state; the default if never written.
pub fn load_node_state(kv: &dyn Kv) -> NodeState {
    kv.get(Table::Node, &Meta::NodeState.key())
        .map(|b| decode("node state", &b))
        .unwrap_or_default()
}

/// Write the node state.
pub fn store_node_state(kv: &mut dyn Kv, s: &NodeState) {
    kv.put(
        Table::Node,
        &Meta::NodeState.key(),
        &encode("node state", s),
    );
}

/// Write this node's digest of `slot` (see `apply::digest`).
pub fn store_digest(kv: &mut dyn Kv, slot: Slot, digest: u64) {
    kv.put(
        Table::Node,
        &prefixed_slot_key(DIGEST, slot),
        &encode("digest", &digest),
    );
}

/// This node's digest of `slot`, if kept.
pub fn load_digest(kv: &dyn Kv, slot: Slot) -> Option<u64> {
    kv.get(Table::Node, &prefixed_slot_key(DIGEST, slot))
        .map(|b| decode("digest", &b))
}

/// Forget this node's digest of `slot` (it left the window).
pub fn forget_digest(kv: &mut dyn Kv, slot: Slot) {
    kv.delete(Table::Node, &prefixed_slot_key(DIGEST, slot));
}

/// The eras the log made; `None` before the first change was chosen
/// (the configuration file's active set governs). The learner writes a
/// change's era before the log entry that holds it, so a crash between
/// the two can leave an era whose slot is not in the log: it is dropped
/// here, and made again when the slot is learned again.
pub fn load_eras(kv: &dyn Kv) -> Option<crate::paxos::membership::Eras> {
    let mut eras: crate::paxos::membership::Eras = kv
        .get(Table::Node, &Meta::Eras.key())
        .map(|b| decode("eras", &b))?;
    eras.forget_after(last_chosen_slot(kv));
    Some(eras)
}

/// Write the eras.
pub fn store_eras(kv: &mut dyn Kv, eras: &crate::paxos::membership::Eras) {
    kv.put(Table::Node, &Meta::Eras.key(), &encode("eras", eras));
}

/// The dedupe window the last reseed brought: each update id with its
/// latest slot, all at or before the export's slot.
pub type SeededWindow = Vec<(Slot, crate::paxos::ballot::UpdateId)>;

/// The window the last reseed brought, if it is still kept.
pub fn load_seeded_window(kv: &dyn Kv) -> Option<SeededWindow> {
    kv.get(Table::Node, &Meta::SeededWindow.key())
        .map(|b| decode("seeded window", &b))
}

/// Keep the window a reseed brought (it replaces the last one's).
pub fn store_seeded_window(kv: &mut dyn Kv, window: &SeededWindow) {
    kv.put(
        Table::Node,
        &Meta::SeededWindow.key(),
        &encode("seeded window", window),
    );
}

/// Forget the window a reseed brought (every id left the window).
pub fn forget_seeded_window(kv: &mut dyn Kv) {
    kv.delete(Table::Node, &Meta::SeededWindow.key());
}
