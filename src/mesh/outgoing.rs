//! Outgoing connections: one per peer, kept up forever. Connect (TCP,
//! TLS with the peer's name checked, Hello each way) within a timeout,
//! then write the peer's queue in batches, each within a timeout; on any
//! error drop the connection, wait a capped exponential backoff with
//! jitter, and start over. Messages queued while the peer cannot be
//! reached are dropped (Paxos retransmits).

use super::frame::{self, Frame, FrameError, MAX_HELLO_BYTES};
use super::queue::QueueRx;
use super::stats::{Refusal, bump};
use super::{Shared, Timing, tls};
use crate::paxos::ballot::NodeId;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

/// Bytes gathered into one write before flushing.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// Why an outgoing attempt failed.
enum ConnectError {
    /// No TCP connection (peer down, unreachable, timed out).
    Unreachable(String),
    /// TCP was fine; TLS or the Hello exchange refused it.
    Refused(Refusal, String),
}

/// Keep a connection to `peer` and write its queue into it, forever.
pub(super) async fn peer_loop(
    shared: Arc<Shared>,
    peer: NodeId,
    addr: String,
    mut rx: QueueRx,
    timing: Timing,
) {
    let me = shared.my_name().to_string();
    let peer_name = shared.name(peer).to_string();
    let mut rng = crate::node::os_rng();
    let mut backoff = timing.backoff_min;
    let mut last_problem: Option<String> = None;
    loop {
        // Subscribed before the settings are read: a reload after this
        // closes the connection made with them.
        let mut reloaded = shared.tls_generation.subscribe();
        reloaded.borrow_and_update();
        let connector = shared.peer_tls().connector;
        let attempt = tokio::time::timeout(
            timing.connect,
            connect(&shared, peer, &addr, &connector, timing),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Unreachable(format!(
                "no connection within {:?}",
                timing.connect
            )))
        });
        match attempt {
            Ok(stream) => {
                bump(&shared.counters.connections_out);
                tracing::info!(node = me, peer = peer_name, %addr, "connected to peer");
                backoff = timing.backoff_min;
                last_problem = None;
                let up = &shared.outbound_up[peer.0 as usize];
                up.store(true, Ordering::Relaxed);
                let why = write_queue(&shared, stream, &mut rx, &mut reloaded, timing).await;
                up.store(false, Ordering::Relaxed);
                tracing::info!(node = me, peer = peer_name, %addr, "connection to peer closed: {why}");
            }
            Err(e) => {
                let problem = match e {
                    ConnectError::Unreachable(why) => {
                        bump(&shared.counters.connect_failures);
                        why
                    }
                    ConnectError::Refused(kind, why) => {
                        shared.counters.refuse(kind);
                        why
                    }
                };
                // Say it once, not at every retry.
                if last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(node = me, peer = peer_name, %addr, "cannot connect to peer: {problem}");
                } else {
                    tracing::debug!(node = me, peer = peer_name, %addr, "cannot connect to peer: {problem}");
                }
                last_problem = Some(problem);
                // What waited for this peer is stale by the next attempt.
                while rx.try_recv().is_some() {
                    bump(&shared.counters.dropped_unreachable);
                }
            }
        }
        let half = backoff.as_micros() as u64 / 2;
        let delay = Duration::from_micros(half + rng.below(half + 1));
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(timing.backoff_max);
    }
}

/// TCP, TLS (the server's certificate must be valid for the peer's
/// name), then Hello each way.
async fn connect(
    shared: &Shared,
    peer: NodeId,
    addr: &str,
    connector: &TlsConnector,
    timing: Timing,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let peer_name = shared.name(peer);
    // A host name is looked up again at every attempt.
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name = tls::server_name(peer_name)
        .map_err(|e| ConnectError::Refused(Refusal::Handshake, e.to_string()))?;
    let mut stream = connector.connect(name, tcp).await.map_err(|e| {
        let (kind, why) = tls::handshake_reason(&e);
        ConnectError::Refused(kind, why)
    })?;
    let hello = frame::encode(&shared.hello(), MAX_HELLO_BYTES)
        .map_err(|e| ConnectError::Refused(Refusal::BadHello, e.to_string()))?;
    tokio::time::timeout(timing.write, frame::write_frame(&mut stream, &hello))
        .await
        .map_err(|_| ConnectError::Unreachable("writing the Hello timed out".into()))?
        .map_err(|e| refused_by_peer(&e))?;
    match frame::read_frame(&mut stream, MAX_HELLO_BYTES).await {
        Ok(Some(Frame::Hello {
            cluster,
            node,
            protocol,
        })) => {
            if let Some(why) = frame::protocol_mismatch(protocol) {
                return Err(ConnectError::Refused(Refusal::Protocol, why));
            }
            if cluster != shared.cluster {
                return Err(ConnectError::Refused(
                    Refusal::ClusterMismatch,
                    format!(
                        "cluster mismatch: the peer is in {cluster:?}, this node in {:?}",
                        shared.cluster
                    ),
                ));
            }
            if node != peer_name {
                return Err(ConnectError::Refused(
                    Refusal::NameMismatch,
                    format!("the peer says it is {node:?}, not {peer_name:?}"),
                ));
            }
            Ok(stream)
        }
        Ok(Some(Frame::Msg { .. })) => Err(ConnectError::Refused(
            Refusal::BadHello,
            "the peer's first frame is not a Hello".into(),
        )),
        Ok(None) => Err(ConnectError::Refused(
            Refusal::BadHello,
            "the peer closed the connection instead of answering the Hello".into(),
        )),
        Err(FrameError::Io(e)) => Err(refused_by_peer(&e)),
        Err(e) => Err(ConnectError::Refused(
            Refusal::BadHello,
            format!("the peer's Hello: {e}"),
        )),
    }
}

/// An I/O error right after the handshake: in TLS 1.3 the server checks
/// the client's certificate after the client finished, so its verdict
/// arrives as an alert on the first read.
fn refused_by_peer(e: &std::io::Error) -> ConnectError {
    let (kind, why) = tls::handshake_reason(e);
    if kind == Refusal::Handshake && e.get_ref().is_none() {
        ConnectError::Unreachable(e.to_string())
    } else {
        ConnectError::Refused(kind, why)
    }
}

/// Write queued frames to the peer until something goes wrong. The peer
/// never writes on this connection after its Hello: a read that returns
/// means it closed (or broke the protocol).
async fn write_queue<S: AsyncRead + AsyncWrite>(
    shared: &Shared,
    stream: S,
    rx: &mut QueueRx,
    reloaded: &mut watch::Receiver<u64>,
    timing: Timing,
) -> String {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut probe = [0u8; 64];
    let mut gathered = Vec::new();
    loop {
        tokio::select! {
            _ = reloaded.changed() => {
                return "TLS settings reloaded: reconnecting under them".into();
            }
            first = rx.recv() => {
                let Some(first) = first else {
                    return "mesh stopped".into();
                };
                // The frames waiting are gathered into one buffer and
                // written once: a TLS stream turns every write into its
                // own record and its own send, and under load a peer's
                // queue holds dozens of small frames.
                let mut n = 1;
                if let Some(next) = rx.try_recv() {
                    gathered.clear();
                    gathered.extend_from_slice(&first);
                    gathered.extend_from_slice(&next);
                    n += 1;
                    while gathered.len() < WRITE_BATCH_BYTES {
                        let Some(next) = rx.try_recv() else { break };
                        gathered.extend_from_slice(&next);
                        n += 1;
                    }
                }
                let bytes: &[u8] = if n == 1 { &first } else { &gathered };
                let batch = async {
                    wr.write_all(bytes).await?;
                    wr.flush().await?;
                    Ok::<u64, std::io::Error>(n)
                };
                match tokio::time::timeout(timing.write, batch).await {
                    Ok(Ok(n)) => {
                        shared.counters.frames_sent.fetch_add(n, Ordering::Relaxed);
                        // A batch that ended in a large frame does not
                        // keep its memory for the connection's life.
                        if gathered.capacity() > 2 * WRITE_BATCH_BYTES {
                            gathered = Vec::new();
                        }
                    }
                    Ok(Err(e)) => return format!("write failed: {e}"),
                    Err(_) => return format!("write timed out after {:?}", timing.write),
                }
            }
            read = rd.read(&mut probe) => {
                return match read {
                    Ok(0) => "the peer closed it".into(),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                        "the peer closed it (without close_notify)".into()
                    }
                    Ok(_) => "the peer sent data on an outgoing connection".into(),
                    Err(e) => format!("read failed: {e}"),
                };
            }
        }
    }
}
