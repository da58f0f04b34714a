//! The peer mesh: Paxos messages between nodes as postcard frames over
//! mutually authenticated TLS 1.3.
//!
//! - Every node keeps one outgoing connection to every other node and
//!   writes its messages for that node there; it reads the messages of
//!   others from their outgoing connections, which it accepts. A
//!   connection carries frames one way only (after the Hello exchange).
//! - Outgoing: a bounded queue per peer, filled with `try_send` (a full
//!   queue drops the message and counts it: Paxos retransmits), a
//!   connect that retries with capped exponential backoff and jitter,
//!   timeouts on connecting (TCP, TLS and Hello together) and writing.
//!   Any error drops the connection and starts over.
//! - Incoming: the TLS handshake verifies the client certificate against
//!   the cluster CA; the certificate must be valid for exactly one
//!   configured node name, and the Hello frame must name that node and
//!   this cluster. The sender of every later frame is that node: frames
//!   never say who sent them. Anything else closes that connection only,
//!   with a `warn!` naming the reason, and is counted.
//!
//! The mesh runs on its own tokio runtime (a thread that owns it), so it
//! works the same under actix, tokio or no runtime at all.

pub mod certs;
pub mod frame;
pub mod tls;

use crate::node::{Inbox, Transport};
use crate::paxos::ballot::NodeId;
use crate::paxos::message::{Message, Role};
use crate::rng::Rng;
use frame::{Frame, FrameError, MAX_HELLO_BYTES};
use rustls::pki_types::CertificateDer;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tls::TlsPaths;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Bytes gathered into one write before flushing.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// How one node joins the mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The cluster's name; peers must say the same in their Hello.
    pub cluster: String,
    /// This node's name; its certificate must be valid for it.
    pub node: String,
    /// Every node of the cluster, this one included, in configuration
    /// order: a node's [`NodeId`] is its index here.
    pub nodes: Vec<(String, SocketAddr)>,
    /// Where to accept peers' connections (port 0: any free port).
    pub listen: SocketAddr,
    pub tls: TlsPaths,
    /// The largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub queue_bound: usize,
    /// TCP connect, TLS handshake and Hello exchange, outgoing.
    pub connect_timeout: Duration,
    /// TLS handshake and Hello exchange, incoming.
    pub handshake_timeout: Duration,
    /// One batch of frames to a peer.
    pub write_timeout: Duration,
    /// Reconnect backoff: first and largest delay (jitter takes up to
    /// half of it off).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Incoming connections open at once (authenticated or not).
    pub max_incoming: usize,
}

impl MeshConfig {
    /// A configuration with the default limits and timeouts.
    pub fn new(
        cluster: impl Into<String>,
        node: impl Into<String>,
        nodes: Vec<(String, SocketAddr)>,
        listen: SocketAddr,
        tls: TlsPaths,
    ) -> MeshConfig {
        MeshConfig {
            cluster: cluster.into(),
            node: node.into(),
            nodes,
            listen,
            tls,
            max_frame_bytes: frame::MAX_FRAME_BYTES,
            queue_bound: 4096,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            max_incoming: 256,
        }
    }
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("mesh configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the mesh runtime: {0}")]
    Runtime(std::io::Error),
}

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
    /// Too many incoming connections open.
    TooMany,
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
            Refusal::TooMany => "too-many-connections",
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
struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_to_self: AtomicU64,
    dropped_too_large: AtomicU64,
    dropped_no_group: AtomicU64,
    connections_out: AtomicU64,
    connections_in: AtomicU64,
    connect_failures: AtomicU64,
    bad_frames: AtomicU64,
    refused: Mutex<BTreeMap<Refusal, u64>>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn refuse(&self, why: Refusal) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(why)
            .or_default() += 1;
    }

    fn snapshot(&self) -> MeshStats {
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
            refused: self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// An incoming connection's number and the sender whose drop closes it.
type LiveConn = (u64, oneshot::Sender<()>);

/// What the transports and the connection tasks share.
struct Shared {
    cluster: String,
    me: NodeId,
    names: Vec<String>,
    max_frame: usize,
    /// The queue to each peer; `None` for this node.
    peers: Vec<Option<mpsc::Sender<Vec<u8>>>>,
    groups: RwLock<HashMap<String, Inbox>>,
    /// The live incoming connection per peer: (connection number, the
    /// sender whose drop closes it). A newer connection from the same
    /// peer replaces (and so closes) the older one.
    inbound: Mutex<Vec<Option<LiveConn>>>,
    next_conn: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn name(&self, id: NodeId) -> &str {
        self.names.get(id.0 as usize).map_or("?", |s| s.as_str())
    }

    fn my_name(&self) -> &str {
        self.name(self.me)
    }

    fn hello(&self) -> Frame {
        Frame::Hello {
            cluster: self.cluster.clone(),
            node: self.my_name().to_string(),
        }
    }

    fn deliver(&self, from: NodeId, group: &str, role: Role, msg: Message) {
        let inbox = self
            .groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .cloned();
        match inbox {
            Some(inbox) => inbox.receive(from, role, msg),
            None => {
                bump(&self.counters.dropped_no_group);
                tracing::debug!(
                    node = self.my_name(),
                    group,
                    "message for an unknown group dropped"
                );
            }
        }
    }
}

/// Timeouts and backoff, copied into every connection task.
#[derive(Clone, Copy)]
struct Timing {
    connect: Duration,
    handshake: Duration,
    write: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
}

/// A running mesh node. Dropping it closes every connection and the
/// listener; transports handed out keep working but drop what they are
/// given.
pub struct Mesh {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mesh {
    /// Check the configuration, load the TLS material, bind the listener
    /// and start connecting to every peer.
    pub fn start(cfg: MeshConfig) -> Result<Mesh, MeshError> {
        let listener =
            std::net::TcpListener::bind(cfg.listen).map_err(|source| MeshError::Bind {
                addr: cfg.listen,
                source,
            })?;
        Mesh::start_on(cfg, listener)
    }

    /// [`Mesh::start`] on a listener bound by the caller (socket
    /// activation, or a test that holds its ports); `cfg.listen` only
    /// names it in errors.
    pub fn start_on(cfg: MeshConfig, listener: std::net::TcpListener) -> Result<Mesh, MeshError> {
        let names = validate(&cfg)?;
        let me = names
            .iter()
            .position(|n| *n == cfg.node)
            .map(|i| NodeId(i as u16))
            .ok_or_else(|| {
                MeshError::Config(format!(
                    "this node {:?} is not in the node list {names:?}",
                    cfg.node
                ))
            })?;
        let server = tls::server_config(&cfg.tls)?;
        let client = tls::client_config(&cfg.tls)?;
        tls::check_own_cert(&cfg.tls)?;
        let own = tls::load_certs(&cfg.tls.cert)?;
        if !tls::cert_node(&own[0], &names).contains(&(me.0 as usize)) {
            return Err(MeshError::Config(format!(
                "{}: the certificate is for {:?}, not for this node {:?}",
                cfg.tls.cert.display(),
                tls::presented_names(&own[0]),
                cfg.node
            )));
        }

        let local_addr = listener.local_addr().map_err(|source| MeshError::Bind {
            addr: cfg.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| MeshError::Bind {
                addr: cfg.listen,
                source,
            })?;

        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("mesh-{}", cfg.node))
            .enable_io()
            .enable_time()
            .build()
            .map_err(MeshError::Runtime)?;

        let mut peers = Vec::new();
        let mut receivers = Vec::new();
        for (i, (_, addr)) in cfg.nodes.iter().enumerate() {
            if i == me.0 as usize {
                peers.push(None);
            } else {
                let (tx, rx) = mpsc::channel(cfg.queue_bound);
                peers.push(Some(tx));
                receivers.push((NodeId(i as u16), *addr, rx));
            }
        }
        let shared = Arc::new(Shared {
            cluster: cfg.cluster.clone(),
            me,
            names: names.clone(),
            max_frame: cfg.max_frame_bytes,
            peers,
            groups: RwLock::new(HashMap::new()),
            inbound: Mutex::new((0..names.len()).map(|_| None).collect()),
            next_conn: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let timing = Timing {
            connect: cfg.connect_timeout,
            handshake: cfg.handshake_timeout,
            write: cfg.write_timeout,
            backoff_min: cfg.backoff_min,
            backoff_max: cfg.backoff_max,
        };

        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(listener).map_err(|source| MeshError::Bind {
                addr: cfg.listen,
                source,
            })?
        };
        rt.spawn(accept_loop(
            shared.clone(),
            listener,
            TlsAcceptor::from(server),
            timing,
            Arc::new(Semaphore::new(cfg.max_incoming)),
        ));
        let connector = TlsConnector::from(client);
        for (peer, addr, rx) in receivers {
            rt.spawn(peer_loop(
                shared.clone(),
                peer,
                addr,
                connector.clone(),
                rx,
                timing,
            ));
        }

        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("mesh-{}", cfg.node))
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(MeshError::Runtime)?;
        tracing::info!(node = cfg.node, %local_addr, cluster = cfg.cluster, "mesh listening");
        Ok(Mesh {
            shared,
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where the mesh accepts connections (the port, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id: its index in the node list.
    pub fn id(&self) -> NodeId {
        self.shared.me
    }

    /// A transport for one Paxos group: messages sent through it are
    /// tagged with `group`, and incoming messages for `group` go to the
    /// inbox registered through it.
    pub fn group(&self, group: &str) -> Arc<dyn Transport> {
        Arc::new(MeshTransport {
            shared: self.shared.clone(),
            group: group.to_string(),
        })
    }

    pub fn stats(&self) -> MeshStats {
        self.shared.counters.snapshot()
    }

    /// Close every connection and the listener, and wait for the mesh's
    /// thread to end. Dropping the mesh does the same.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// The node names, checked.
fn validate(cfg: &MeshConfig) -> Result<Vec<String>, MeshError> {
    let bad = |m: String| MeshError::Config(m);
    certs::validate_cluster_name(&cfg.cluster).map_err(|e| bad(e.to_string()))?;
    if cfg.nodes.is_empty() {
        return Err(bad("the node list is empty".into()));
    }
    if cfg.nodes.len() > u16::MAX as usize {
        return Err(bad(format!("{} nodes: at most 65535", cfg.nodes.len())));
    }
    let mut names: Vec<String> = Vec::new();
    for (name, _) in &cfg.nodes {
        certs::validate_node_name(name).map_err(|e| bad(e.to_string()))?;
        if names.contains(name) {
            return Err(bad(format!("node {name:?} is listed twice")));
        }
        names.push(name.clone());
    }
    if cfg.max_frame_bytes < MAX_HELLO_BYTES || cfg.max_frame_bytes > u32::MAX as usize {
        return Err(bad(format!(
            "max_frame_bytes {}: must be between {MAX_HELLO_BYTES} and {}",
            cfg.max_frame_bytes,
            u32::MAX
        )));
    }
    if cfg.queue_bound == 0 {
        return Err(bad("queue_bound must be positive".into()));
    }
    if cfg.max_incoming == 0 {
        return Err(bad("max_incoming must be positive".into()));
    }
    if cfg.backoff_min.is_zero() || cfg.backoff_min > cfg.backoff_max {
        return Err(bad(format!(
            "backoff {:?}..{:?}: must be positive and increasing",
            cfg.backoff_min, cfg.backoff_max
        )));
    }
    for (what, d) in [
        ("connect_timeout", cfg.connect_timeout),
        ("handshake_timeout", cfg.handshake_timeout),
        ("write_timeout", cfg.write_timeout),
    ] {
        if d.is_zero() {
            return Err(bad(format!("{what} must be positive")));
        }
    }
    Ok(names)
}

/// One group's view of the mesh.
struct MeshTransport {
    shared: Arc<Shared>,
    group: String,
}

impl Transport for MeshTransport {
    fn send(&self, from: NodeId, to: NodeId, role: Role, msg: Message) {
        let s = &self.shared;
        if to == s.me || from != s.me {
            // The actors route their own node's messages locally; a node
            // only ever sends as itself.
            bump(&s.counters.dropped_to_self);
            tracing::debug!(node = s.my_name(), %from, %to, kind = msg.kind(), "message not sent: not from this node to another");
            return;
        }
        let Some(Some(tx)) = s.peers.get(to.0 as usize) else {
            bump(&s.counters.dropped_unreachable);
            tracing::debug!(node = s.my_name(), %to, "message for an unknown node dropped");
            return;
        };
        let kind = msg.kind();
        let frame = Frame::Msg {
            group: self.group.clone(),
            role,
            msg,
        };
        let bytes = match frame::encode(&frame, s.max_frame) {
            Ok(b) => b,
            Err(e) => {
                bump(&s.counters.dropped_too_large);
                tracing::warn!(
                    node = s.my_name(),
                    peer = s.name(to),
                    kind,
                    "message not sent: {e}"
                );
                return;
            }
        };
        match tx.try_send(bytes) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => bump(&s.counters.dropped_queue_full),
            Err(mpsc::error::TrySendError::Closed(_)) => bump(&s.counters.dropped_unreachable),
        }
    }

    fn register(&self, inbox: Inbox) {
        let s = &self.shared;
        if inbox.id() != s.me {
            tracing::warn!(node = s.my_name(), id = %inbox.id(), group = self.group, "inbox of another node not registered with the mesh");
            return;
        }
        s.groups
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.group.clone(), inbox);
    }

    fn unregister(&self, id: NodeId) {
        let mut groups = self
            .shared
            .groups
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if groups.get(&self.group).is_some_and(|i| i.id() == id) {
            groups.remove(&self.group);
        }
    }
}

// ---------------------------------------------------------------------
// Outgoing

/// Why an outgoing attempt failed.
enum ConnectError {
    /// No TCP connection (peer down, unreachable, timed out).
    Unreachable(String),
    /// TCP was fine; TLS or the Hello exchange refused it.
    Refused(Refusal, String),
}

/// Keep a connection to `peer` and write its queue into it, forever.
async fn peer_loop(
    shared: Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    connector: TlsConnector,
    mut rx: mpsc::Receiver<Vec<u8>>,
    timing: Timing,
) {
    let me = shared.my_name().to_string();
    let peer_name = shared.name(peer).to_string();
    let mut rng = Rng::from_os();
    let mut backoff = timing.backoff_min;
    let mut last_problem: Option<String> = None;
    loop {
        let attempt = tokio::time::timeout(
            timing.connect,
            connect(&shared, peer, addr, &connector, timing),
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
                let why = write_queue(&shared, stream, &mut rx, timing).await;
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
                while rx.try_recv().is_ok() {
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
    addr: SocketAddr,
    connector: &TlsConnector,
    timing: Timing,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let peer_name = shared.name(peer);
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
        Ok(Some(Frame::Hello { cluster, node })) => {
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
    rx: &mut mpsc::Receiver<Vec<u8>>,
    timing: Timing,
) -> String {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else {
                    return "mesh stopped".into();
                };
                let batch = async {
                    let mut n = 1;
                    let mut bytes = first.len();
                    wr.write_all(&first).await?;
                    while bytes < WRITE_BATCH_BYTES {
                        let Ok(next) = rx.try_recv() else { break };
                        bytes += next.len();
                        n += 1;
                        wr.write_all(&next).await?;
                    }
                    wr.flush().await?;
                    Ok::<u64, std::io::Error>(n)
                };
                match tokio::time::timeout(timing.write, batch).await {
                    Ok(Ok(n)) => {
                        shared.counters.frames_sent.fetch_add(n, Ordering::Relaxed);
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

// ---------------------------------------------------------------------
// Incoming

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    timing: Timing,
    slots: Arc<Semaphore>,
) {
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            shared.counters.refuse(Refusal::TooMany);
            tracing::warn!(node = shared.my_name(), %addr, "connection refused: too many incoming connections");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            incoming(&shared, tcp, addr, acceptor, timing).await;
            drop(permit);
        });
    }
}

/// One incoming connection: authenticate it, then deliver its frames.
async fn incoming(
    shared: &Shared,
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    timing: Timing,
) {
    let me = shared.my_name();
    let authenticated = tokio::time::timeout(
        timing.handshake,
        authenticate(shared, tcp, &acceptor, timing),
    )
    .await
    .unwrap_or_else(|_| {
        Err((
            Refusal::Timeout,
            format!("handshake not done within {:?}", timing.handshake),
        ))
    });
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
    acceptor: &TlsAcceptor,
    timing: Timing,
) -> Result<(NodeId, tokio_rustls::server::TlsStream<TcpStream>), (Refusal, String)> {
    let mut stream = acceptor
        .accept(tcp)
        .await
        .map_err(|e| tls::handshake_reason(&e))?;
    let cert: CertificateDer<'static> = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or((Refusal::Handshake, "no client certificate".to_string()))?;
    let presented = tls::presented_names(&cert);
    let matches = tls::cert_node(&cert, &shared.names);
    let peer = match matches.as_slice() {
        [one] => NodeId(*one as u16),
        [] => {
            return Err((
                Refusal::UnknownName,
                format!(
                    "certificate name {presented:?} does not match configured node names {:?}",
                    shared.names
                ),
            ));
        }
        several => {
            return Err((
                Refusal::UnknownName,
                format!(
                    "certificate name {presented:?} matches several configured nodes {:?}",
                    several
                        .iter()
                        .map(|i| shared.name(NodeId(*i as u16)))
                        .collect::<Vec<_>>()
                ),
            ));
        }
    };
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
