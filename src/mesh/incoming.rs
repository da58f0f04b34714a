//! Incoming connections. Each must finish its TLS handshake (the client
//! certificate trusted, by the cluster CA or by pins, for exactly one
//! configured node) and a Hello naming that node and this cluster within
//! the handshake timeout; then its frames are delivered as that node's
//! messages. Anything else closes that connection only, with a `warn!`.
//! A newer connection from the same peer replaces the older one, so
//! authenticated connections are at most one per peer.
//!
//! A connection from an address that is no node's (and in no
//! `peer_sources` network) is closed at once, before any TLS work
//! (`sources`).
//!
//! At most `max_incoming` connections wait to authenticate at once, and
//! at most `max_incoming_per_source` from one address. When a new one
//! comes and its source's share is full, that source's oldest waiting one
//! is closed (`evicted`); when all are full, the oldest of the source
//! that has the most. The new one is never refused: refusing newcomers
//! would let whoever holds idle connections lock out a real peer, whose
//! handshake takes a round trip or two; and a source that floods the port
//! only ever evicts its own connections while others have fewer, so a
//! member always gets in.

use super::frame::{self, Frame, FrameError, MAX_HELLO_BYTES};
use super::sources::Sources;
use super::stats::{Refusal, bump};
use super::{Shared, Timing, tls};
use crate::paxos::ballot::NodeId;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Connections waiting to authenticate, oldest first: each with its
/// source and the sender that closes it.
type Waiting = Arc<Mutex<VecDeque<(u64, IpAddr, oneshot::Sender<()>)>>>;

/// At most one line per this long about refused sources.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// At most one lookup of the nodes' names per this long, caused by
/// refused sources.
const LOOKUP_EVERY: Duration = Duration::from_secs(2);

/// How many connections may wait to authenticate.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    pub waiting: usize,
    pub per_source: usize,
}

/// Make room for one more waiting connection from `source` (module docs):
/// dropping a sender closes its connection.
fn make_room(w: &mut VecDeque<(u64, IpAddr, oneshot::Sender<()>)>, source: IpAddr, b: Bounds) {
    let oldest_of = |w: &VecDeque<(u64, IpAddr, oneshot::Sender<()>)>, ip: IpAddr| {
        w.iter().position(|(_, s, _)| *s == ip)
    };
    while w.iter().filter(|(_, s, _)| *s == source).count() >= b.per_source {
        match oldest_of(w, source) {
            Some(i) => drop(w.remove(i)),
            None => break,
        }
    }
    while w.len() >= b.waiting {
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for (_, s, _) in w.iter() {
            *counts.entry(*s).or_default() += 1;
        }
        // The most; among equals, the one whose oldest is oldest.
        let most = counts.values().copied().max().unwrap_or(0);
        let victim = w.iter().position(|(_, s, _)| counts[s] == most);
        match victim {
            Some(i) => drop(w.remove(i)),
            None => break,
        }
    }
}

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    timing: Timing,
    bounds: Bounds,
    sources: Arc<Sources>,
) {
    sources.refresh().await;
    let refresher = sources.clone();
    shared.spawn(async move {
        loop {
            tokio::time::sleep(super::sources::REFRESH).await;
            refresher.refresh().await;
        }
    });
    let waiting: Waiting = Arc::default();
    let mut next = 0u64;
    // Refused sources are logged once per LOG_EVERY, not once each: a
    // flood of them must not flood the log too.
    let mut last_logged: Option<tokio::time::Instant> = None;
    let mut unlogged = 0u64;
    let mut last_lookup: Option<tokio::time::Instant> = None;
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait, go on.
                tracing::warn!(node = shared.my_name(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = addr.ip().to_canonical();
        if !sources.allows(source) {
            shared.counters.refuse(Refusal::Source);
            drop(tcp);
            unlogged += 1;
            let now = tokio::time::Instant::now();
            // A node that moved (a pod rescheduled) may be knocking: look
            // its name up again now rather than at the next refresh; it
            // gets in at its next attempt.
            if last_lookup.is_none_or(|t| now.duration_since(t) >= LOOKUP_EVERY) {
                last_lookup = Some(now);
                let sources = sources.clone();
                tokio::spawn(async move { sources.refresh().await });
            }
            if last_logged.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                tracing::warn!(
                    node = shared.my_name(),
                    %addr,
                    reason = Refusal::Source.as_str(),
                    refused = unlogged,
                    "connections refused: from addresses that are no node's \
                     (listen.peer_sources lets in others)"
                );
                last_logged = Some(now);
                unlogged = 0;
            }
            continue;
        }
        next += 1;
        let id = next;
        let (evict_tx, evict) = oneshot::channel();
        {
            let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
            make_room(&mut w, source, bounds);
            w.push_back((id, source, evict_tx));
        }
        let _ = tcp.set_nodelay(true);
        let task_shared = shared.clone();
        let waiting = waiting.clone();
        shared.spawn(async move {
            let shared = task_shared;
            let done = |waiting: &Waiting| {
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                w.retain(|(i, _, _)| *i != id);
            };
            incoming(&shared, tcp, addr, timing, evict, || done(&waiting)).await;
        });
    }
}

/// One incoming connection: authenticate it, then deliver its frames.
async fn incoming(
    shared: &Shared,
    tcp: TcpStream,
    addr: SocketAddr,
    timing: Timing,
    evict: oneshot::Receiver<()>,
    authenticated_or_not: impl FnOnce(),
) {
    let me = shared.my_name();
    // The generation first: a reload after it is seen below.
    let generation = *shared.tls_generation.borrow();
    let tls = shared.peer_tls();
    let handshake = tokio::time::timeout(timing.handshake, authenticate(shared, tcp, &tls, timing));
    let authenticated = tokio::select! {
        done = handshake => done.unwrap_or_else(|_| {
            Err((
                Refusal::Timeout,
                format!("handshake not done within {:?}", timing.handshake),
            ))
        }),
        _ = evict => Err((
            Refusal::Evicted,
            "closed before it authenticated, to make room for a newer connection".to_string(),
        )),
    };
    authenticated_or_not();
    let (peer, mut stream) = match authenticated {
        Ok(x) => x,
        Err((kind, why)) => {
            shared.counters.refuse(kind);
            tracing::warn!(node = me, %addr, reason = kind.as_str(), "connection refused: {why}");
            return;
        }
    };
    bump(&shared.counters.connections_in);
    let peer_name = shared.name(peer);
    tracing::info!(node = me, peer = peer_name, %addr, "peer connected");

    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (replaced_tx, mut replaced) = oneshot::channel::<()>();
    {
        let mut inbound = shared.inbound.lock().unwrap_or_else(|e| e.into_inner());
        // A reload bumps the generation before it takes this lock to close
        // what is registered: so it either finds this connection here, or
        // has bumped the generation that this check sees.
        if *shared.tls_generation.borrow() != generation {
            tracing::info!(node = me, peer = peer_name, %addr, "peer connection closed: TLS settings were reloaded during its handshake");
            return;
        }
        // Dropping the older sender closes the older connection.
        inbound[peer.0 as usize] = Some((conn, replaced_tx));
    }

    // Cancelled by `replaced` mid-frame, the reader keeps what it read,
    // and the drain below goes on from there.
    let mut frames = frame::FrameReader::new(shared.max_frame);
    let why = loop {
        let next = tokio::select! {
            f = frames.next(&mut stream) => Some(f),
            _ = &mut replaced => None,
        };
        let Some(next) = next else {
            break drain(shared, peer, generation, &mut stream, &mut frames).await;
        };
        match next {
            Ok(Some(Frame::Msg { group, role, msg })) => {
                bump(&shared.counters.frames_received);
                shared.deliver(peer, &group, role, msg);
            }
            Ok(Some(Frame::Hello { .. })) => {
                bump(&shared.counters.bad_frames);
                tracing::warn!(node = me, peer = peer_name, %addr, "closing connection: a second Hello");
                break "protocol error".into();
            }
            Ok(None) => break "the peer closed it".into(),
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break "the peer closed it (without close_notify)".into();
            }
            Err(FrameError::Io(e)) => break format!("read failed: {e}"),
            Err(e) => {
                bump(&shared.counters.bad_frames);
                tracing::warn!(node = me, peer = peer_name, %addr, "closing connection: {e}");
                break e.to_string();
            }
        }
    };
    tracing::info!(node = me, peer = peer_name, %addr, "peer connection closed: {why}");
    let mut inbound = shared.inbound.lock().unwrap_or_else(|e| e.into_inner());
    if inbound[peer.0 as usize]
        .as_ref()
        .is_some_and(|(c, _)| *c == conn)
    {
        inbound[peer.0 as usize] = None;
    }
}

/// How long a connection this node closes is read for what the peer
/// wrote before it knew.
const DRAIN: Duration = Duration::from_secs(2);

/// Close a connection without losing what is in flight on it: say so
/// (the peer's writer sees the end, stops, and connects again; what it
/// had not written stays queued for the new connection), and read and
/// deliver what it wrote before, up to its end or [`DRAIN`]. Dropped at
/// once, the frames in this side's buffers were lost: a client update
/// forwarded to the leader just then was never answered (a certificate
/// rotation under load, in `tests/tls.rs`).
///
/// After a reload (the generation moved past the one the connection was
/// made under), only a peer the new settings still trust is read on; one
/// they do not is dropped at once, as before. Answers why it closed.
async fn drain(
    shared: &Shared,
    peer: NodeId,
    generation: u64,
    stream: &mut tokio_rustls::server::TlsStream<TcpStream>,
    frames: &mut frame::FrameReader,
) -> String {
    if *shared.tls_generation.borrow() != generation {
        let chain = stream.get_ref().1.peer_certificates().unwrap_or(&[]);
        if shared.peer_tls().trust.identify(chain) != Ok(peer.0 as usize) {
            return "closed by a TLS reload: the new settings do not trust the peer".into();
        }
    }
    let deadline = tokio::time::Instant::now() + DRAIN;
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    let mut read = 0;
    while let Ok(Ok(Some(Frame::Msg { group, role, msg }))) =
        tokio::time::timeout_at(deadline, frames.next(stream)).await
    {
        bump(&shared.counters.frames_received);
        shared.deliver(peer, &group, role, msg);
        read += 1;
    }
    format!(
        "closed by this node (a TLS reload, or a newer connection from the peer); \
         {read} frames read after"
    )
}

/// TLS handshake, the peer's name from its certificate, its Hello, and
/// ours in answer.
async fn authenticate(
    shared: &Shared,
    tcp: TcpStream,
    peer_tls: &tls::PeerTls,
    timing: Timing,
) -> Result<(NodeId, tokio_rustls::server::TlsStream<TcpStream>), (Refusal, String)> {
    let mut stream = peer_tls
        .acceptor
        .accept(tcp)
        .await
        .map_err(|e| tls::handshake_reason(&e))?;
    let chain = stream.get_ref().1.peer_certificates().unwrap_or(&[]);
    let peer = NodeId(peer_tls.trust.identify(chain)? as u16);
    let peer_name = shared.name(peer);
    if peer == shared.me {
        return Err((
            Refusal::SelfConnection,
            format!("the peer presents this node's own certificate ({peer_name:?})"),
        ));
    }
    let hello = frame::encode(&shared.hello(), MAX_HELLO_BYTES)
        .map_err(|e| (Refusal::BadHello, e.to_string()))?;
    match frame::read_frame(&mut stream, MAX_HELLO_BYTES).await {
        Ok(Some(Frame::Hello {
            cluster,
            node,
            protocol,
        })) => {
            if let Some(why) = frame::protocol_mismatch(protocol) {
                // Answer with this node's Hello all the same, so that the
                // peer (authenticated: it is a cluster member) can say
                // which protocol it met, and then close.
                let _ = tokio::time::timeout(timing.write, frame::write_frame(&mut stream, &hello))
                    .await;
                return Err((Refusal::Protocol, format!("peer {peer_name:?}: {why}")));
            }
            if cluster != shared.cluster {
                return Err((
                    Refusal::ClusterMismatch,
                    format!(
                        "cluster mismatch: peer {peer_name:?} says cluster {cluster:?}, this is {:?}",
                        shared.cluster
                    ),
                ));
            }
            if node != peer_name {
                return Err((
                    Refusal::NameMismatch,
                    format!(
                        "certificate name {peer_name:?} does not match the node the peer claims to be ({node:?})"
                    ),
                ));
            }
        }
        Ok(Some(Frame::Msg { .. })) => {
            return Err((
                Refusal::BadHello,
                format!("peer {peer_name:?}: the first frame is not a Hello"),
            ));
        }
        Ok(None) => {
            return Err((
                Refusal::BadHello,
                format!("peer {peer_name:?} closed the connection before its Hello"),
            ));
        }
        Err(e) => {
            return Err((
                Refusal::BadHello,
                format!("peer {peer_name:?}: bad Hello: {e}"),
            ));
        }
    }
    tokio::time::timeout(timing.write, frame::write_frame(&mut stream, &hello))
        .await
        .map_err(|_| (Refusal::Timeout, "writing the Hello timed out".to_string()))?
        .map_err(|e| (Refusal::BadHello, format!("writing the Hello: {e}")))?;
    Ok((peer, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn queue(sources: &[u8]) -> VecDeque<(u64, IpAddr, oneshot::Sender<()>)> {
        sources
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u64, ip(s), oneshot::channel().0))
            .collect()
    }

    fn left(w: &VecDeque<(u64, IpAddr, oneshot::Sender<()>)>) -> Vec<u64> {
        w.iter().map(|(i, _, _)| *i).collect()
    }

    #[test]
    fn a_source_over_its_share_loses_its_own_oldest() {
        let b = Bounds {
            waiting: 10,
            per_source: 3,
        };
        let mut w = queue(&[1, 2, 1, 1]);
        make_room(&mut w, ip(1), b);
        assert_eq!(left(&w), [1, 2, 3], "1's oldest (0) went, 2's stayed");
    }

    #[test]
    fn when_full_the_source_with_the_most_gives_way() {
        let b = Bounds {
            waiting: 5,
            per_source: 5,
        };
        // A member (2) waits behind a flood from 1.
        let mut w = queue(&[2, 1, 1, 1, 1]);
        make_room(&mut w, ip(3), b);
        assert_eq!(left(&w), [0, 2, 3, 4], "the member's connection stays");
        make_room(&mut w, ip(2), b);
        assert_eq!(left(&w), [0, 2, 3, 4]);
    }
}
