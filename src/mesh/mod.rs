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
//!   the cluster CA or a node's pins (`tls`); the certificate must be
//!   trusted for exactly one configured node name, and the Hello frame must name that node and
//!   this cluster. The sender of every later frame is that node: frames
//!   never say who sent them. Anything else closes that connection only,
//!   with a `warn!` naming the reason, and is counted.
//!
//! - Reload (`Mesh::reload`, on SIGHUP): the node's certificate, the CA
//!   and the pins are loaded again and swapped in at once; every
//!   connection, both ways, is closed and made again under the new ones,
//!   so none lives on under a trust that was withdrawn.
//!
//! The mesh runs its tasks on the tokio runtime it is started in (the
//! node's actix system: see [`Mesh`]); starting it outside one is an
//! error.

pub mod certs;
pub mod frame;
mod incoming;
mod outgoing;
mod queue;
pub mod sources;
pub mod stats;
pub mod tls;

pub use stats::{MeshStats, Refusal};

use crate::node::{Inbox, Transport};
use crate::paxos::ballot::NodeId;
use crate::paxos::message::{Message, Role};
use frame::{Frame, MAX_HELLO_BYTES};
use incoming::accept_loop;
use outgoing::peer_loop;
use stats::{Counters, bump};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tls::{PeerTls, TlsPaths};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// How one node joins the mesh.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    /// The cluster's name; peers must say the same in their Hello.
    pub cluster: String,
    /// This node's name; its certificate must be valid for it.
    pub node: String,
    /// Every node of the cluster, this one included, in configuration
    /// order: a node's [`NodeId`] is its index here. Addresses are
    /// `host:port`; a host name is resolved at every connection attempt,
    /// so a peer that moves (a Kubernetes pod rescheduled) is found again.
    pub nodes: Vec<(String, String)>,
    /// Where to accept peers' connections (port 0: any free port).
    pub listen: SocketAddr,
    pub tls: TlsPaths,
    /// The largest frame sent or accepted.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before new ones are dropped.
    pub queue_bound: usize,
    /// ...and bytes (beyond the first message: see `queue`).
    pub queue_bytes: usize,
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
    /// Incoming connections waiting to authenticate at once; beyond, the
    /// oldest waiting one of the source with the most is closed
    /// (authenticated ones are one per peer).
    pub max_incoming: usize,
    /// ...and from one source address; beyond, its oldest is closed.
    pub max_incoming_per_source: usize,
    /// Networks the peer port takes connections from besides the nodes'
    /// own addresses (`sources`).
    pub peer_sources: Vec<sources::Net>,
}

impl MeshConfig {
    /// A configuration with the default limits and timeouts.
    pub fn new(
        cluster: impl Into<String>,
        node: impl Into<String>,
        nodes: Vec<(String, String)>,
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
            queue_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            max_incoming: 256,
            max_incoming_per_source: 16,
            peer_sources: Vec::new(),
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
    #[error("the mesh must start inside the node's tokio runtime")]
    NoRuntime,
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
    peers: Vec<Option<queue::QueueTx>>,
    groups: RwLock<HashMap<String, Inbox>>,
    /// The live incoming connection per peer: (connection number, the
    /// sender whose drop closes it). A newer connection from the same
    /// peer replaces (and so closes) the older one.
    inbound: Mutex<Vec<Option<LiveConn>>>,
    next_conn: AtomicU64,
    counters: Counters,
    /// What this node presents and trusts; swapped by a reload.
    tls: RwLock<PeerTls>,
    /// Bumped by every reload: connections made before it close.
    tls_generation: watch::Sender<u64>,
    /// Per peer: whether this node's outgoing connection to it is up.
    outbound_up: Vec<std::sync::atomic::AtomicBool>,
    /// Set once by `Mesh::shutdown`: every task of the mesh ends.
    stop: watch::Sender<bool>,
}

impl Shared {
    /// Run `task` on the mesh's runtime until it ends or the mesh stops.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                () = task => {}
            }
        });
    }

    fn name(&self, id: NodeId) -> &str {
        self.names.get(id.0 as usize).map_or("?", |s| s.as_str())
    }

    fn my_name(&self) -> &str {
        self.name(self.me)
    }

    fn peer_tls(&self) -> PeerTls {
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn hello(&self) -> Frame {
        Frame::Hello {
            cluster: self.cluster.clone(),
            node: self.my_name().to_string(),
            protocol: frame::PROTOCOL,
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
///
/// Its tasks run on the tokio runtime it was started in: the node's actix
/// system, whose thread also runs the role actors. A message then goes
/// from an actor to its peer's socket, and from a socket to an actor,
/// without waking another thread: on the bench's two cores, a c=1 write
/// took 12% less time than with a mesh runtime of its own, and c=16
/// writes went 15% faster (`docs/performance.md`). The price: while that
/// thread is stalled (fjall holds a lock through a flush's fsync), frames
/// wait in the sockets rather than in the actors' mailboxes. Either way
/// the roles handle them only once the thread runs again.
pub struct Mesh {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
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
        let peer_tls = PeerTls::load(&cfg.tls, &names, me.0 as usize)?;

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

        // The caller's runtime (see `Mesh`).
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MeshError::NoRuntime)?;

        let mut peers = Vec::new();
        let mut receivers = Vec::new();
        for (i, (_, addr)) in cfg.nodes.iter().enumerate() {
            if i == me.0 as usize {
                peers.push(None);
            } else {
                let (tx, rx) = queue::channel(cfg.queue_bound, cfg.queue_bytes);
                peers.push(Some(tx));
                receivers.push((NodeId(i as u16), addr.clone(), rx));
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
            tls: RwLock::new(peer_tls),
            tls_generation: watch::Sender::new(0),
            outbound_up: (0..names.len())
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            stop: watch::Sender::new(false),
        });
        let timing = Timing {
            connect: cfg.connect_timeout,
            handshake: cfg.handshake_timeout,
            write: cfg.write_timeout,
            backoff_min: cfg.backoff_min,
            backoff_max: cfg.backoff_max,
        };

        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(listener).map_err(|source| MeshError::Bind {
                addr: cfg.listen,
                source,
            })?
        };
        let addrs: Vec<String> = cfg.nodes.iter().map(|(_, a)| a.clone()).collect();
        let sources = Arc::new(sources::Sources::new(&addrs, cfg.peer_sources.clone()));
        shared.spawn(accept_loop(
            shared.clone(),
            listener,
            timing,
            incoming::Bounds {
                waiting: cfg.max_incoming,
                per_source: cfg.max_incoming_per_source,
            },
            sources,
        ));
        for (peer, addr, rx) in receivers {
            shared.spawn(peer_loop(shared.clone(), peer, addr, rx, timing));
        }
        tracing::info!(node = cfg.node, %local_addr, cluster = cfg.cluster, "mesh listening");
        Ok(Mesh { shared, local_addr })
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

    /// Every other node's connections now (`MeshHandle::peers`).
    pub fn peers(&self) -> Vec<(String, bool, bool)> {
        self.handle().peers()
    }

    /// A handle on this mesh: reloads its TLS settings
    /// (`MeshHandle::reload`), reads its counters and connections.
    pub fn handle(&self) -> MeshHandle {
        MeshHandle {
            shared: self.shared.clone(),
        }
    }

    /// Close every connection and the listener: each task of the mesh
    /// ends (and drops its socket) at its next turn on the runtime.
    /// Dropping the mesh does the same.
    pub fn shutdown(self) {}
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

/// A handle on a running mesh: reloads its TLS settings, reads its
/// counters and connections; cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    shared: Arc<Shared>,
}

impl MeshHandle {
    pub fn stats(&self) -> MeshStats {
        self.shared.counters.snapshot()
    }

    /// Every other node's connections now: (name, incoming authenticated
    /// connection up, outgoing connection up).
    pub fn peers(&self) -> Vec<(String, bool, bool)> {
        let s = &self.shared;
        let inbound = s.inbound.lock().unwrap_or_else(|e| e.into_inner());
        s.names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != s.me.0 as usize)
            .map(|(i, name)| {
                (
                    name.clone(),
                    inbound[i].is_some(),
                    s.outbound_up[i].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Load this node's certificate, key, CA and pins again (the node
    /// list stays) and use them from now on: every connection is closed
    /// and made again under them. On error nothing changes.
    pub fn reload(&self, paths: &TlsPaths) -> Result<(), MeshError> {
        let next = self.prepare(paths)?;
        self.apply(next);
        Ok(())
    }

    /// Load and check what [`MeshHandle::apply`] would use, for this node
    /// of this mesh, without using it yet.
    pub fn prepare(&self, paths: &TlsPaths) -> Result<PeerTls, MeshError> {
        let s = &self.shared;
        Ok(PeerTls::load(paths, &s.names, s.me.0 as usize)?)
    }

    /// Use `next` from now on; close every connection.
    pub fn apply(&self, next: PeerTls) {
        let s = &self.shared;
        *s.tls.write().unwrap_or_else(|e| e.into_inner()) = next;
        s.tls_generation.send_modify(|g| *g += 1);
        // Dropping their senders closes the incoming connections; the
        // outgoing ones see the generation change.
        for conn in s
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter_mut()
        {
            conn.take();
        }
        bump(&s.counters.tls_reloads);
        tracing::info!(
            node = s.my_name(),
            "mesh TLS reloaded; reconnecting to every peer"
        );
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
    if cfg.queue_bound == 0 || cfg.queue_bytes == 0 {
        return Err(bad("queue_bound and queue_bytes must be positive".into()));
    }
    if cfg.max_incoming == 0 || cfg.max_incoming_per_source == 0 {
        return Err(bad(
            "max_incoming and max_incoming_per_source must be positive".into(),
        ));
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
            Err(queue::Refused::Full) => bump(&s.counters.dropped_queue_full),
            Err(queue::Refused::Closed) => bump(&s.counters.dropped_unreachable),
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
