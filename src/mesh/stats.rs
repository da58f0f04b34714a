//! The mesh's counters: connections refused by reason, frames sent,
//! received and dropped, as atomics the connection tasks bump and a
//! snapshot ([`MeshStats`]) for metrics and tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection was refused (incoming) or given up (outgoing, after
/// the TCP connection was made).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// The peer's certificate does not chain to the cluster CA (or the
    /// peer said ours does not).
    UnknownCa,
    /// The TLS handshake failed for another reason (not TLS, no client
    /// certificate, wrong protocol version, ...).
    Handshake,
    /// Handshake and Hello did not finish in time.
    Timeout,
    /// The certificate is valid for no configured node (or for several).
    UnknownName,
    /// The Hello names another node than the certificate.
    NameMismatch,
    /// The Hello names another cluster.
    ClusterMismatch,
    /// The peer's certificate is this node's own.
    SelfConnection,
    /// The first frame was not a readable Hello.
    BadHello,
    /// The Hello names another peer protocol than this build's
    /// (`frame::PROTOCOL`): a node of another release.
    Protocol,
    /// Not authenticated yet when the unauthenticated slots were full:
    /// closed to make room for a newer connection.
    Evicted,
    /// From an address that is no node's and in no `peer_sources`
    /// network: closed before any TLS work.
    Source,
    /// The certificate of a node whose entry lists pins matches none of
    /// them (or the peer said ours does not match its pins).
    Unpinned,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownCa => "unknown-ca",
            Refusal::Handshake => "handshake",
            Refusal::Timeout => "timeout",
            Refusal::UnknownName => "unknown-name",
            Refusal::NameMismatch => "name-mismatch",
            Refusal::ClusterMismatch => "cluster-mismatch",
            Refusal::SelfConnection => "self-connection",
            Refusal::BadHello => "bad-hello",
            Refusal::Protocol => "protocol-mismatch",
            Refusal::Evicted => "evicted",
            Refusal::Source => "source",
            Refusal::Unpinned => "unpinned",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mesh's counters at one moment (for metrics and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Frames written to peers.
    pub frames_sent: u64,
    /// Message frames read from authenticated peers.
    pub frames_received: u64,
    /// Outgoing messages dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Outgoing messages dropped: no such peer, mesh stopped, or queued
    /// while the peer could not be reached.
    pub dropped_unreachable: u64,
    /// Messages addressed to this node itself (never sent).
    pub dropped_to_self: u64,
    /// Outgoing messages that did not fit in a frame.
    pub dropped_too_large: u64,
    /// Incoming messages for a group with no registered inbox.
    pub dropped_no_group: u64,
    /// Outgoing connections established (TLS and Hello done).
    pub connections_out: u64,
    /// Incoming connections authenticated.
    pub connections_in: u64,
    /// Outgoing connection attempts that failed before TLS (refused,
    /// unreachable, timed out).
    pub connect_failures: u64,
    /// Authenticated connections closed because of a bad frame.
    pub bad_frames: u64,
    /// Connections refused, by reason.
    pub refused: BTreeMap<Refusal, u64>,
    /// TLS settings reloaded (each closes every connection).
    pub tls_reloads: u64,
}

impl MeshStats {
    /// Every message dropped, for whatever reason.
    pub fn frames_dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_unreachable
            + self.dropped_to_self
            + self.dropped_too_large
            + self.dropped_no_group
    }

    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused.get(&why).copied().unwrap_or(0)
    }

    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) frames_sent: AtomicU64,
    pub(super) frames_received: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    pub(super) dropped_unreachable: AtomicU64,
    pub(super) dropped_to_self: AtomicU64,
    pub(super) dropped_too_large: AtomicU64,
    pub(super) dropped_no_group: AtomicU64,
    pub(super) connections_out: AtomicU64,
    pub(super) connections_in: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) bad_frames: AtomicU64,
    pub(super) tls_reloads: AtomicU64,
    pub(super) refused: Mutex<BTreeMap<Refusal, u64>>,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn refuse(&self, why: Refusal) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }

    pub(super) fn snapshot(&self) -> MeshStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MeshStats {
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unreachable: get(&self.dropped_unreachable),
            dropped_to_self: get(&self.dropped_to_self),
            dropped_too_large: get(&self.dropped_too_large),
            dropped_no_group: get(&self.dropped_no_group),
            connections_out: get(&self.connections_out),
            connections_in: get(&self.connections_in),
            connect_failures: get(&self.connect_failures),
            bad_frames: get(&self.bad_frames),
            tls_reloads: get(&self.tls_reloads),
            refused: self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
