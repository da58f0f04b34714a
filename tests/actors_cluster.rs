//! The production actors, end to end in one process: a three-node cluster
//! over the loopback transport with fjall stores and in-memory backends,
//! and the group commit of a single acceptor.

mod support;
use support::{Collector, MemoryBackend, fast_config};

use ordo::node::{
    LoopbackTransport, NodeHandle, Read, RoleStatus, Status, Submit, Transport, start_group,
};
use ordo::paxos::ballot::{Ballot, NodeId, Update, UpdateId, Value};
use ordo::paxos::command::ClientOutcome;
use ordo::paxos::membership::Membership;
use ordo::paxos::message::{Message, Role};
use ordo::sim::workload::SimOp;
use ordo::storage::fjall_kv::FjallStore;
use ordo::storage::fjall_kv::SyncStats;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tempfile::TempDir;

fn open_store(dir: &TempDir) -> FjallStore {
    FjallStore::open(dir.path()).unwrap()
}

struct TestNode {
    id: NodeId,
    dir: TempDir,
    store: Option<FjallStore>,
    handle: Option<NodeHandle>,
    backend: Arc<MemoryBackend>,
    /// Boot nonce of the running incarnation.
    boot: u64,
}

struct Cluster {
    nodes: Vec<TestNode>,
    transport: Arc<LoopbackTransport>,
    collector: Collector,
    next_seq: u64,
    /// Submitted and not yet answered: id -> (node index, op).
    pending: HashMap<UpdateId, (usize, SimOp)>,
    answered: Vec<(SimOp, u16, String)>,
    refusals: usize,
    /// Read-index outcomes, in arrival order.
    reads: Vec<ClientOutcome>,
}

impl Cluster {
    fn new(n: u16) -> Cluster {
        let collector = Collector::default();
        let mut c = Cluster {
            nodes: Vec::new(),
            transport: LoopbackTransport::new(),
            collector,
            next_seq: 0,
            pending: HashMap::new(),
            answered: Vec::new(),
            refusals: 0,
            reads: Vec::new(),
        };
        for i in 0..n {
            c.nodes.push(TestNode {
                id: NodeId(i),
                dir: tempfile::tempdir().unwrap(),
                store: None,
                handle: None,
                backend: Arc::new(MemoryBackend::default()),
                boot: 0,
            });
        }
        c
    }

    fn start(&mut self, i: usize, store: FjallStore) {
        let n = self.nodes.len() as u16;
        let node = &mut self.nodes[i];
        let kv = store.group("svc").unwrap();
        let handle = start_group(
            node.id,
            Membership::all_voting(n),
            kv,
            self.transport.clone(),
            node.backend.clone(),
            Arc::new(self.collector.clone()),
            fast_config(),
        )
        .unwrap();
        node.store = Some(store);
        node.handle = Some(handle);
        node.boot += 1;
    }

    fn handle(&self, i: usize) -> &NodeHandle {
        self.nodes[i].handle.as_ref().unwrap()
    }

    fn submit(&mut self, i: usize, op: SimOp) {
        self.next_seq += 1;
        let id = UpdateId {
            origin: self.nodes[i].id,
            boot: self.nodes[i].boot,
            seq: self.next_seq,
        };
        let update = Update {
            id,
            key: None,
            payload: op.encode(),
        };
        self.pending.insert(id, (i, op));
        self.handle(i).proposer.do_send(Submit {
            updates: vec![update],
        });
    }

    /// Collect outcomes until nothing is pending. A refused update was
    /// never proposed, so it is submitted again (as a new update).
    async fn settle(&mut self) {
        wait_for!(format!("{} pending answers", self.pending.len()), {
            for outcome in self.collector.take() {
                match outcome {
                    ClientOutcome::Answer {
                        id, status, body, ..
                    } => {
                        if let Some((_, op)) = self.pending.remove(&id) {
                            let body = String::from_utf8(body.to_vec()).unwrap();
                            self.answered.push((op, status, body));
                        }
                    }
                    ClientOutcome::Refused { ids, .. } => {
                        for id in ids {
                            if let Some((i, op)) = self.pending.remove(&id) {
                                self.refusals += 1;
                                self.submit(i, op);
                            }
                        }
                    }
                    other => self.reads.push(other),
                }
            }
            self.pending.is_empty()
        });
    }

    /// Node 0 (the preferred leader) leads and every running node knows.
    async fn wait_for_leader(&self) {
        wait_for!("node 0 to lead, known by all", {
            let mut ok = true;
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(h) = &node.handle {
                    let status = h.leader().await;
                    ok &= if i == 0 {
                        status == Some((true, Some(NodeId(0))))
                    } else {
                        status == Some((false, Some(NodeId(0))))
                    };
                }
            }
            ok
        });
    }

    /// Every node has applied the same prefix and holds the same data.
    async fn wait_converged(&self) -> u64 {
        let mut top: Option<u64>;
        wait_for!("all nodes applied the same log and hold the same data", {
            let handles: Vec<&NodeHandle> = self
                .nodes
                .iter()
                .filter_map(|n| n.handle.as_ref())
                .collect();
            let backends: Vec<&MemoryBackend> = self.nodes.iter().map(|n| &*n.backend).collect();
            top = support::same_log_and_data(&handles, &backends).await;
            handles.len() == self.nodes.len() && top.is_some()
        });
        top.unwrap_or(0)
    }

    /// Every append was answered with its key's list up to its own token,
    /// every token is in the final list once.
    fn check_answers(&self) {
        support::check_append_answers(&self.answered, &self.nodes[0].backend.data());
    }
}

#[actix::test]
async fn three_nodes_replicate_and_a_restarted_node_catches_up() {
    let mut c = Cluster::new(3);
    for i in 0..3 {
        let store = open_store(&c.nodes[i].dir);
        c.start(i, store);
    }
    c.wait_for_leader().await;

    for n in 0..100u32 {
        let op = SimOp::Append {
            key: n % 4,
            token: format!("a{n}"),
        };
        c.submit(n as usize % 3, op);
    }
    c.settle().await;
    assert_eq!(c.answered.len(), 100);
    c.check_answers();
    let before_crash = c.wait_converged().await;

    // A linearizable read at a follower: its read index covers every
    // answered write, and the follower's backend has them once applied.
    let id = UpdateId {
        origin: NodeId(1),
        boot: c.nodes[1].boot,
        seq: 1_000_000,
    };
    c.handle(1).proposer.do_send(Read { id });
    let mut ready: Option<u64>;
    wait_for!("a read index", {
        for outcome in c.collector.take() {
            c.reads.push(outcome);
        }
        ready = c.reads.iter().find_map(|o| match o {
            ClientOutcome::ReadReady { id: got, index } if *got == id => Some(*index),
            _ => None,
        });
        ready.is_some()
    });
    let index = ready.unwrap();
    assert!(index >= before_crash, "read index {index} < {before_crash}");
    wait_for!("node 1 to apply the read index", {
        c.handle(1).applied().await.unwrap_or(0) >= index
    });
    assert_eq!(c.nodes[1].backend.data(), c.nodes[0].backend.data());

    // Crash node 2: stop its actors, close its store, keep its directory.
    let down = c.nodes[2].handle.take().unwrap();
    down.stop();
    wait_for!("node 2 to stop", down.stopped());
    drop(down);
    drop(c.nodes[2].store.take());

    for n in 100..150u32 {
        let op = SimOp::Append {
            key: n % 4,
            token: format!("b{n}"),
        };
        c.submit(n as usize % 2, op);
    }
    c.settle().await;
    assert_eq!(c.answered.len(), 150);
    c.check_answers();

    // Restart node 2 from its directory. Its old database may still be
    // closing (the lock is released once the last handle is dropped).
    let mut reopened;
    wait_for!("node 2's store to reopen", {
        reopened = FjallStore::open(c.nodes[2].dir.path()).ok();
        reopened.is_some()
    });
    c.start(2, reopened.unwrap());
    // It recovered its log from disk (the clean stop closed the store).
    let recovered = c.handle(2).commit().await.unwrap();
    assert!(recovered >= before_crash, "{recovered} < {before_crash}");
    let after = c.wait_converged().await;
    assert!(after > before_crash, "{after} <= {before_crash}");
    c.check_answers();
    println!("applied {after} slots; {} refusals resubmitted", c.refusals);
}

/// Records what leaves the node, with the sync counters at that moment.
#[derive(Default)]
struct Recorder {
    stats: OnceLock<Arc<SyncStats>>,
    sent: Mutex<Vec<Sent>>,
}

struct Sent {
    msg: Message,
    /// Writes known durable when the message left.
    durable: u64,
}

impl Transport for Recorder {
    fn send(&self, _from: NodeId, _to: NodeId, _role: Role, msg: Message) {
        let durable = self.stats.get().map_or(0, |s| s.durable());
        self.sent.lock().unwrap().push(Sent { msg, durable });
    }
    fn register(&self, _: ordo::node::Inbox) {}
    fn unregister(&self, _: NodeId) {}
}

impl Recorder {
    fn take_kind(&self, kind: &str) -> Vec<Sent> {
        let mut sent = self.sent.lock().unwrap();
        let (hit, rest) = sent.drain(..).partition(|s| s.msg.kind() == kind);
        *sent = rest;
        hit
    }
}

#[actix::test]
async fn acceptor_replies_leave_only_after_a_covering_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir);
    let recorder = Arc::new(Recorder::default());
    let collector = Collector::default();
    let mut cfg = fast_config();
    // No election: only the acceptor writes in this test.
    cfg.proposer.election_timeout = Duration::from_secs(3600);
    let h = start_group(
        NodeId(0),
        Membership::all_voting(3),
        store.group("svc").unwrap(),
        recorder.clone(),
        Arc::new(MemoryBackend::default()),
        Arc::new(collector),
        cfg,
    )
    .unwrap();
    let stats = h.sync_stats().clone();
    assert!(recorder.stats.set(stats.clone()).is_ok());
    let ballot = Ballot {
        round: 7,
        node: NodeId(1),
    };

    // A prepare writes the promise; the promise leaves after a sync.
    assert_eq!(stats.writes(), 0);
    h.inbox().receive(
        NodeId(1),
        Role::Acceptor,
        Message::Prepare {
            ballot,
            from_slot: 1,
            takeover: false,
        },
    );
    let mut promises = Vec::new();
    wait_for!("the promise", {
        promises.extend(recorder.take_kind("promise"));
        !promises.is_empty()
    });
    assert_eq!(stats.writes(), 1);
    assert!(promises[0].durable >= 1, "promise left before its sync");
    assert!(stats.syncs() >= 1);

    // A burst of accepts: each reply leaves only once its own write is
    // durable, and the burst shares a few syncs.
    let base = stats.writes();
    let syncs_before = stats.syncs();
    const N: u64 = 200;
    for slot in 1..=N {
        h.inbox().receive(
            NodeId(1),
            Role::Acceptor,
            Message::Accept {
                ballot,
                slot,
                value: Value::Noop,
            },
        );
    }
    let mut accepted = Vec::new();
    wait_for!("every accepted", {
        accepted.extend(recorder.take_kind("accepted"));
        accepted.len() as u64 == N
    });
    for s in &accepted {
        let Message::Accepted { slot, .. } = s.msg else {
            unreachable!()
        };
        // The accept for `slot` made write number base + slot.
        assert!(
            s.durable >= base + slot,
            "accepted({slot}) left with {} writes durable, needs {}",
            s.durable,
            base + slot
        );
    }
    let syncs = stats.syncs() - syncs_before;
    println!("{N} accepts, {syncs} syncs");
    assert!(
        (1..N / 10).contains(&syncs),
        "{syncs} syncs for {N} accepts"
    );

    // Local-only messages, or any claiming to come from this node, are
    // refused at the network edge.
    h.inbox()
        .receive(NodeId(1), Role::Learner, Message::Committed { commit: 5 });
    h.inbox()
        .receive(NodeId(0), Role::Acceptor, Message::Committed { commit: N });
    assert_eq!(h.inbox().refused(), 2);
    match h.acceptor.send(Status).await.unwrap() {
        RoleStatus::Acceptor { held, promised, .. } => {
            assert_eq!(held, N as usize);
            assert_eq!(promised, ballot);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.commit().await, Some(0));
}
