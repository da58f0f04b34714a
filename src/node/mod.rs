//! The production node: actix actors that drive the protocol roles (see
//! `actors`), the transport seam between nodes, the backend seam, and
//! [`start_group`], which recovers one Paxos group from disk and starts
//! its four actors.

pub mod actors;
pub mod backend;
pub mod group_kv;
pub mod status;
pub mod transport;

pub use actors::{
    AcceptorActor, ApplierActor, ClientOutcome, Deliver, LearnerActor, ProposerActor, Read,
    RoleStatus, Status, Stop, Submit,
};
pub use backend::{Backend, BackendFuture, MemoryBackend};
pub use group_kv::{GroupKv, SyncStats};
pub use status::GroupStatus;
pub use transport::{Inbox, LoopbackTransport, Transport};

use crate::apply::applier::{Applier, ApplierConfig};
use crate::paxos::acceptor::{Acceptor, AcceptorBugs, AcceptorConfig};
use crate::paxos::ballot::{NodeId, Slot};
use crate::paxos::command::Ctx;
use crate::paxos::learner::{Learner, LearnerConfig};
use crate::paxos::membership::Membership;
use crate::paxos::proposer::{Proposer, ProposerBugs, ProposerConfig};
use crate::rng::Rng;
use crate::storage::fjall_kv::FjallKv;
use crate::time::Time;
use actix::{Addr, AsyncContext, Context, Recipient};
use actors::{Book, Shell};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// The roles' clock: microseconds since the process first asked.
pub fn now() -> Time {
    let start = *START.get_or_init(Instant::now);
    Time(start.elapsed().as_micros() as u64)
}

/// The roles' settings for one group.
#[derive(Clone, Debug, Default)]
pub struct GroupConfig {
    pub proposer: ProposerConfig,
    pub learner: LearnerConfig,
    pub applier: ApplierConfig,
}

/// Why a group could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    NotAMember(NodeId),
    BadConfig(&'static str),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NotAMember(id) => write!(f, "{id} is not a member of the group"),
            StartError::BadConfig(why) => write!(f, "bad group configuration: {why}"),
        }
    }
}

impl std::error::Error for StartError {}

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

/// Recover one group's roles from `kv` and start their actors on the
/// current actix arbiter (call from inside a running `actix::System`).
///
/// Recovery follows the sim's `start_node`: acceptor, learner, proposer,
/// applier. What each role asked for while recovering (the learner's
/// commit announcement, the proposer's election timer, the applier's
/// first backend call) runs when its actor starts. The node registers
/// with `transport` last.
pub fn start_group(
    id: NodeId,
    members: Membership,
    kv: FjallKv,
    transport: Arc<dyn Transport>,
    backend: Arc<dyn Backend>,
    gateway: Recipient<ClientOutcome>,
    cfg: GroupConfig,
) -> Result<NodeHandle, StartError> {
    // The roles assert these; refuse a bad configuration instead.
    if !members.is_member(id) {
        return Err(StartError::NotAMember(id));
    }
    if cfg.proposer.window == 0 || cfg.proposer.batch_updates_max == 0 {
        return Err(StartError::BadConfig(
            "proposer window and batch_updates_max must be positive",
        ));
    }
    if cfg.proposer.batch_bytes_max > crate::config::MAX_BODY_BYTES_LIMIT {
        // A batch must fit in one peer frame, like the largest update.
        return Err(StartError::BadConfig(
            "proposer batch_bytes_max must not exceed the largest body allowed",
        ));
    }

    let mut kv = GroupKv::new(kv);
    let now = now();
    let nodes = members.nodes.clone();

    let mut acceptor_rng = Rng::from_os();
    let mut acceptor_out = Vec::new();
    let acceptor = {
        let c = Ctx {
            now,
            kv: &mut kv,
            rng: &mut acceptor_rng,
            out: &mut acceptor_out,
        };
        let acfg = AcceptorConfig {
            leader_lease: cfg.proposer.election_timeout,
            ..AcceptorConfig::default()
        };
        Acceptor::recover(id, &c, acfg, AcceptorBugs::default())
    };

    let mut learner_rng = Rng::from_os();
    let mut learner_out = Vec::new();
    let learner = {
        let mut c = Ctx {
            now,
            kv: &mut kv,
            rng: &mut learner_rng,
            out: &mut learner_out,
        };
        Learner::recover(id, &nodes, cfg.learner, &mut c)
    };

    let mut proposer_rng = Rng::from_os();
    let mut proposer_out = Vec::new();
    let proposer = {
        let mut c = Ctx {
            now,
            kv: &mut kv,
            rng: &mut proposer_rng,
            out: &mut proposer_out,
        };
        Proposer::recover(id, members, cfg.proposer, ProposerBugs::default(), &mut c)
    };

    let mut applier_rng = Rng::from_os();
    let mut applier_out = Vec::new();
    let mut applier = {
        let mut c = Ctx {
            now,
            kv: &mut kv,
            rng: &mut applier_rng,
            out: &mut applier_out,
        };
        Applier::recover(id, cfg.applier, &mut c)
    };
    applier.journal.clear();

    let pctx = Context::<ProposerActor>::new();
    let actx = Context::<AcceptorActor>::new();
    let lctx = Context::<LearnerActor>::new();
    let apctx = Context::<ApplierActor>::new();
    let inbox = Inbox::new(
        id,
        pctx.address(),
        actx.address(),
        lctx.address(),
        apctx.address(),
    );
    let status = Arc::new(GroupStatus::default());
    status.set_learner(learner.commit(), learner.known_commit());
    status.set_applied(applier.applied(), 0);
    let book = Book {
        local: inbox.clone(),
        transport: transport.clone(),
        gateway,
        status: status.clone(),
    };
    let shell = |rng, init| Shell::new(kv.clone(), rng, book.clone(), init);

    let acceptor_addr = actx.run(AcceptorActor::new(
        acceptor,
        shell(acceptor_rng, acceptor_out),
    ));
    let learner_addr = lctx.run(LearnerActor::new(learner, shell(learner_rng, learner_out)));
    let proposer_addr = pctx.run(ProposerActor::new(
        proposer,
        shell(proposer_rng, proposer_out),
    ));
    let applier_addr = apctx.run(ApplierActor::new(
        applier,
        shell(applier_rng, applier_out),
        backend,
    ));
    transport.register(inbox.clone());

    Ok(NodeHandle {
        id,
        proposer: proposer_addr,
        acceptor: acceptor_addr,
        learner: learner_addr,
        applier: applier_addr,
        status,
        inbox,
        sync_stats: kv.stats().clone(),
        transport,
    })
}
