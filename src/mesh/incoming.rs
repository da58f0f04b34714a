//! Incoming connections. Each must finish its TLS handshake (the client
//! certificate trusted, by the cluster CA or by pins, for exactly one
//! configured node) and a Hello naming that node and this cluster within
//! the handshake timeout; then its frames are delivered as that node's
//! messages. Anything else closes that connection only, with a `warn!`.
//! A newer connection from the same peer replaces the older one, so
//! authenticated connections are at most one per peer.
//!
//! At most `max_incoming` connections wait to authenticate at once. When
//! a new one comes and they are full, the oldest waiting one is closed
//! (`evicted`) rather than the new one refused: anyone who can reach the
//! port can open idle connections, and refusing newcomers would let them
//! lock out a real peer, whose handshake takes a round trip or two.

use super::frame::{self, Frame, FrameError, MAX_HELLO_BYTES};
use super::stats::{Refusal, bump};
use super::{Shared, Timing, tls};
use crate::paxos::ballot::NodeId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Connections waiting to authenticate, oldest first: each with the
/// sender that closes it.
type Waiting = Arc<Mutex<VecDeque<(u64, oneshot::Sender<()>)>>>;

pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    timing: Timing,
    max_waiting: usize,
) {
    let waiting: Waiting = Arc::default();
    let mut next = 0u64;
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
        next += 1;
        let id = next;
        let (evict_tx, evict) = oneshot::channel();
        {
            let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
            while w.len() >= max_waiting {
                // Dropping its sender closes the oldest waiting one.
                w.pop_front();
            }
            w.push_back((id, evict_tx));
        }
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let waiting = waiting.clone();
        tokio::spawn(async move {
            let done = |waiting: &Waiting| {
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                w.retain(|(i, _)| *i != id);
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

    let why = loop {
        let next = tokio::select! {
            f = frame::read_frame(&mut stream, shared.max_frame) => f,
            _ = &mut replaced => break "a newer connection from the same peer replaced it".to_string(),
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
    match frame::read_frame(&mut stream, MAX_HELLO_BYTES).await {
        Ok(Some(Frame::Hello { cluster, node })) => {
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
    let hello = frame::encode(&shared.hello(), MAX_HELLO_BYTES)
        .map_err(|e| (Refusal::BadHello, e.to_string()))?;
    tokio::time::timeout(timing.write, frame::write_frame(&mut stream, &hello))
        .await
        .map_err(|_| (Refusal::Timeout, "writing the Hello timed out".to_string()))?
        .map_err(|e| (Refusal::BadHello, format!("writing the Hello: {e}")))?;
    Ok((peer, stream))
}
