//! How messages reach other nodes, and where messages from other nodes
//! enter this one.

use crate::paxos::ballot::NodeId;
use crate::paxos::message::{Message, Role};
use actix::Recipient;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A protocol message for the receiving role, from node `from` (this
/// node's id for a message between its own roles).
#[derive(Debug)]
pub struct Deliver {
    /// The sending node.
    pub from: NodeId,
    /// The message.
    pub msg: Message,
}

impl actix::Message for Deliver {
    type Result = ();
}

/// Carries messages between nodes. Sending never blocks and never fails:
/// a message that cannot be delivered is dropped (Paxos retransmits).
pub trait Transport: Send + Sync {
    fn send(&self, from: NodeId, to: NodeId, role: Role, msg: Message);
    /// Messages for `inbox.id()` go to `inbox` from now on.
    fn register(&self, inbox: Inbox);
    /// Messages for `id` are dropped from now on.
    fn unregister(&self, id: NodeId);
}

/// One node's actors as seen from outside: the entry point for messages
/// that arrived over the network, and for local ones between its roles.
#[derive(Clone)]
pub struct Inbox {
    id: NodeId,
    proposer: Recipient<Deliver>,
    acceptor: Recipient<Deliver>,
    learner: Recipient<Deliver>,
    applier: Recipient<Deliver>,
    refused: Arc<AtomicU64>,
}

impl Inbox {
    /// The entry of node `id`, whose roles' actors take `Deliver`.
    pub fn new(
        id: NodeId,
        proposer: Recipient<Deliver>,
        acceptor: Recipient<Deliver>,
        learner: Recipient<Deliver>,
        applier: Recipient<Deliver>,
    ) -> Inbox {
        Inbox {
            id,
            proposer,
            acceptor,
            learner,
            applier,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    fn to(&self, role: Role) -> &Recipient<Deliver> {
        match role {
            Role::Proposer => &self.proposer,
            Role::Acceptor => &self.acceptor,
            Role::Learner => &self.learner,
            Role::Applier => &self.applier,
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// A message from node `from` that came over the network. Local-only
    /// messages, and messages claiming to come from this very node, never
    /// cross the network: they are dropped and counted, as are messages
    /// that find the role's mailbox full (`MAILBOX_CAPACITY`).
    pub fn receive(&self, from: NodeId, role: Role, msg: Message) {
        if msg.is_local_only() || from == self.id {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node = %self.id, %from, kind = msg.kind(), "dropped network message");
            return;
        }
        // Bounded: a peer that floods us loses its messages (Paxos
        // retransmits), it never grows our memory. Local messages between
        // our own roles use the unbounded path: they are ours.
        if self.to(role).try_send(Deliver { from, msg }).is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Network messages dropped by `receive`.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A message between two roles of this node.
    pub(crate) fn deliver_local(&self, role: Role, msg: Message) {
        self.to(role).do_send(Deliver { from: self.id, msg });
    }
}

/// An in-process transport: every node's inbox in one registry, so a
/// whole cluster can run in one process (tests). Links can be cut.
#[derive(Default)]
pub struct LoopbackTransport {
    nodes: RwLock<HashMap<NodeId, Inbox>>,
    blocked: RwLock<BTreeSet<(NodeId, NodeId)>>,
    /// Links cut for messages to one role only.
    blocked_roles: RwLock<BTreeSet<(NodeId, NodeId, Role)>>,
    dropped: AtomicU64,
}

impl LoopbackTransport {
    pub fn new() -> Arc<LoopbackTransport> {
        Arc::new(LoopbackTransport::default())
    }

    /// Cut (or restore) the one-way link `from -> to`.
    pub fn set_blocked(&self, from: NodeId, to: NodeId, blocked: bool) {
        let mut set = self.blocked.write().unwrap_or_else(|e| e.into_inner());
        if blocked {
            set.insert((from, to));
        } else {
            set.remove(&(from, to));
        }
    }

    /// Cut (or restore) the one-way link `from -> to` for messages to
    /// `role` only: a node can then, say, lead and answer read indexes
    /// while hearing nothing of what was chosen.
    pub fn set_blocked_role(&self, from: NodeId, to: NodeId, role: Role, blocked: bool) {
        let mut set = self
            .blocked_roles
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if blocked {
            set.insert((from, to, role));
        } else {
            set.remove(&(from, to, role));
        }
    }

    /// Messages dropped: cut link or unknown destination.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Transport for LoopbackTransport {
    fn send(&self, from: NodeId, to: NodeId, role: Role, msg: Message) {
        let cut = self
            .blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(from, to))
            || self
                .blocked_roles
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(from, to, role));
        let inbox = if cut {
            None
        } else {
            self.nodes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&to)
                .cloned()
        };
        match inbox {
            Some(inbox) => inbox.receive(from, role, msg),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn register(&self, inbox: Inbox) {
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(inbox.id(), inbox);
    }

    fn unregister(&self, id: NodeId) {
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
