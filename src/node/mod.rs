//! The production node: actix actors that drive the protocol roles
//! through the shared driver (see `actors`), the transport seam between
//! nodes, the backend seam, the OS clock and randomness, and
//! [`start_group`], which recovers one Paxos group from disk and starts
//! its four actors.

pub mod actors;
pub mod backend;
pub mod os;
pub mod status;
pub mod transport;

pub use actors::{
    AcceptorActor, ApplierActor, Clients, LearnerActor, ProposerActor, Read, RoleStatus, Status,
    Stop, Submit,
};
pub use backend::{Backend, BackendFuture};
pub use os::{now, os_rng};
pub use status::GroupStatus;
pub use transport::{Deliver, Inbox, LoopbackTransport, Transport};

use crate::driver::{Group, GroupConfig, StartError};
use crate::paxos::ballot::{NodeId, Slot};
use crate::paxos::membership::Membership;
use crate::storage::fjall_kv::{FjallKv, SyncStats};
use actix::{Addr, AsyncContext, Context};
use actors::{Book, RoleActor};
use std::sync::Arc;

/// One running group on this node: its four actors.
#[derive(Clone)]
pub struct NodeHandle {
    pub id: NodeId,
    pub proposer: Addr<ProposerActor>,
    pub acceptor: Addr<AcceptorActor>,
    pub learner: Addr<LearnerActor>,
    pub applier: Addr<ApplierActor>,
    /// Applied index, commit index, leader and lease, as last published.
    pub status: Arc<GroupStatus>,
    inbox: Inbox,
    sync_stats: Arc<SyncStats>,
    transport: Arc<dyn Transport>,
}

impl NodeHandle {
    /// Where network messages for this node enter.
    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    /// The group's write and sync counters.
    pub fn sync_stats(&self) -> &Arc<SyncStats> {
        &self.sync_stats
    }

    /// Leave the transport and stop the four actors, dropping what they
    /// hold (held messages never leave): a crash, for the protocol.
    pub fn stop(&self) {
        self.transport.unregister(self.id);
        self.proposer.do_send(Stop);
        self.acceptor.do_send(Stop);
        self.learner.do_send(Stop);
        self.applier.do_send(Stop);
    }

    /// All four actors are gone.
    pub fn stopped(&self) -> bool {
        !self.proposer.connected()
            && !self.acceptor.connected()
            && !self.learner.connected()
            && !self.applier.connected()
    }

    /// `(is_leader, leader)` from the proposer; `None` if it is gone.
    pub async fn leader(&self) -> Option<(bool, Option<NodeId>)> {
        match self.proposer.send(Status).await {
            Ok(RoleStatus::Proposer {
                is_leader, leader, ..
            }) => Some((is_leader, leader)),
            _ => None,
        }
    }

    /// The learner's commit index; `None` if it is gone.
    pub async fn commit(&self) -> Option<Slot> {
        match self.learner.send(Status).await {
            Ok(RoleStatus::Learner { commit, .. }) => Some(commit),
            _ => None,
        }
    }

    /// The applier's applied index; `None` if it is gone.
    pub async fn applied(&self) -> Option<Slot> {
        match self.applier.send(Status).await {
            Ok(RoleStatus::Applier { applied, .. }) => Some(applied),
            _ => None,
        }
    }
}

/// Recover one group's roles from `kv` ([`Group::recover`], as the sim
/// does) and start their actors on the current actix arbiter (call from
/// inside a running `actix::System`). What each role asked for while
/// recovering (the learner's commit announcement, the proposer's election
/// timer, the applier's first backend call) runs when its actor starts.
/// The node registers with `transport` last.
pub fn start_group(
    id: NodeId,
    members: Membership,
    mut kv: FjallKv,
    transport: Arc<dyn Transport>,
    backend: Arc<dyn Backend>,
    clients: Arc<dyn Clients>,
    cfg: GroupConfig,
) -> Result<NodeHandle, StartError> {
    let mut group = Group::recover(id, members, &cfg, now(), &mut kv, &mut os_rng())?;
    // The journal is for observers of this incarnation's work.
    group.applier.role_mut().journal.clear();
    let Group {
        proposer,
        acceptor,
        learner,
        applier,
    } = group;

    let pctx = Context::<ProposerActor>::new();
    let actx = Context::<AcceptorActor>::new();
    let lctx = Context::<LearnerActor>::new();
    let apctx = Context::<ApplierActor>::new();
    let inbox = Inbox::new(
        id,
        pctx.address().recipient(),
        actx.address().recipient(),
        lctx.address().recipient(),
        apctx.address().recipient(),
    );
    let status = Arc::new(GroupStatus::default());
    status.recovered(learner.role().commit(), learner.role().known_commit());
    status.set_applied(applier.role().applied(), 0);
    let book = Book {
        local: inbox.clone(),
        transport: transport.clone(),
        clients,
        status: status.clone(),
        backend,
        span: tracing::info_span!("group", service = %cfg.name),
    };
    let sync_stats = kv.stats().clone();
    // In recovery order: the acceptor and learner are up before the
    // proposer's first election and the applier's first backend call.
    let acceptor = actx.run(RoleActor::new(acceptor, kv.clone(), book.clone()));
    let learner = lctx.run(RoleActor::new(learner, kv.clone(), book.clone()));
    let proposer = pctx.run(RoleActor::new(proposer, kv.clone(), book.clone()));
    let applier = apctx.run(RoleActor::new(applier, kv, book));
    transport.register(inbox.clone());

    Ok(NodeHandle {
        id,
        proposer,
        acceptor,
        learner,
        applier,
        status,
        inbox,
        sync_stats,
        transport,
    })
}
