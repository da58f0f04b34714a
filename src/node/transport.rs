//! How messages reach other nodes, and where messages from other nodes
//! enter this one.

use super::actors::{AcceptorActor, ApplierActor, Deliver, LearnerActor, ProposerActor};
use crate::paxos::ballot::NodeId;
use crate::paxos::message::{Message, Role};
use actix::Addr;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

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
    pub(crate) proposer: Addr<ProposerActor>,
    pub(crate) acceptor: Addr<AcceptorActor>,
    pub(crate) learner: Addr<LearnerActor>,
    pub(crate) applier: Addr<ApplierActor>,
    refused: Arc<AtomicU64>,
}

impl Inbox {
    pub(crate) fn new(
        id: NodeId,
        proposer: Addr<ProposerActor>,
        acceptor: Addr<AcceptorActor>,
        learner: Addr<LearnerActor>,
        applier: Addr<ApplierActor>,
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
        let m = Deliver { from, msg };
        let sent = match role {
            Role::Proposer => self.proposer.try_send(m).is_ok(),
            Role::Acceptor => self.acceptor.try_send(m).is_ok(),
            Role::Learner => self.learner.try_send(m).is_ok(),
            Role::Applier => self.applier.try_send(m).is_ok(),
        };
        if !sent {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Network messages dropped by `receive`.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A message between two roles of this node.
    pub(crate) fn deliver_local(&self, role: Role, msg: Message) {
        self.deliver(self.id, role, msg);
    }

    fn deliver(&self, from: NodeId, role: Role, msg: Message) {
        let m = Deliver { from, msg };
        match role {
            Role::Proposer => self.proposer.do_send(m),
            Role::Acceptor => self.acceptor.do_send(m),
            Role::Learner => self.learner.do_send(m),
            Role::Applier => self.applier.do_send(m),
        }
    }
}

/// An in-process transport: every node's inbox in one registry, so a
/// whole cluster can run in one process (tests). Links can be cut.
#[derive(Default)]
pub struct LoopbackTransport {
    nodes: RwLock<HashMap<NodeId, Inbox>>,
    blocked: RwLock<BTreeSet<(NodeId, NodeId)>>,
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
            .contains(&(from, to));
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
