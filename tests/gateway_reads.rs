//! The gateway's no-cache read over an in-process cluster (three nodes,
//! three demo backends on real sockets, the loopback transport), where
//! what a node hears can be cut message by message: the case that the
//! real-process tests cannot make on demand.

mod support;
use support::fast_config;

use actix_web::{App, test as web_test};
use ordo::config::ReadMode;
use ordo::demo::{DemoConfig, serve};
use ordo::gateway::readiness::ReadLimits;
use ordo::gateway::waiters::Waiters;
use ordo::gateway::{Gateway, Service, configure};
use ordo::http::{HttpBackend, HttpBackendConfig, ProxiedRequest};
use ordo::node::{LoopbackTransport, NodeHandle, Submit, start_group};
use ordo::paxos::ballot::{NodeId, Update, UpdateId};
use ordo::paxos::command::ClientOutcome;
use ordo::paxos::membership::Membership;
use ordo::paxos::message::Role;
use ordo::storage::fjall_kv::FjallStore;
use std::sync::Arc;
use std::time::Duration;

/// Submit `PUT /kv/x` with `value` at `node` and wait for its answer.
async fn put(node: &NodeHandle, waiters: &Waiters, seq: u64, value: &str) {
    let id = UpdateId {
        origin: NodeId(0),
        boot: 7,
        seq,
    };
    let mut waiting = waiters.register(id);
    let req = ProxiedRequest {
        method: "PUT".into(),
        path_and_query: "/kv/x".into(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: bytes::Bytes::from(value.to_string()),
    };
    node.proposer.do_send(Submit {
        updates: vec![Update {
            id,
            key: None,
            payload: req.encode(),
        }],
    });
    match waiting.within(Duration::from_secs(10)).await {
        Some(ClientOutcome::Answer { status, .. }) => {
            assert!(status < 300, "PUT {value}: {status}")
        }
        other => panic!("PUT {value}: {other:?}"),
    }
}

/// A follower that has heard nothing of the latest write takes a no-cache
/// read: it reads its backend early (it knows of nothing to apply), but
/// the read index it gets from the leader is above what it had applied,
/// so that early answer is dropped and the read waits for the write.
#[actix::test]
async fn an_early_read_behind_the_read_index_is_not_the_answer() {
    let transport = LoopbackTransport::new();
    let mut demos = Vec::new();
    let mut dirs = Vec::new();
    let mut nodes = Vec::new();
    let mut sinks = Vec::new();
    let mut kvs = Vec::new();
    let mut backends = Vec::new();
    for i in 0..3u16 {
        let demo = serve("127.0.0.1:0", DemoConfig::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let kv = store.group("kv").unwrap();
        let backend = Arc::new(
            HttpBackend::new(&demo.url(), "test", "kv", HttpBackendConfig::default()).unwrap(),
        );
        let waiters = Waiters::default();
        let mut cfg = fast_config();
        // n0 leads; its heartbeats (which carry its commit index) come
        // seconds apart, so n2 hears of a commit only from what is cut.
        cfg.proposer.heartbeat_interval = Duration::from_secs(4);
        cfg.proposer.election_timeout = if i == 0 {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(120)
        };
        let h = start_group(
            NodeId(i),
            Membership::all_voting(3),
            kv.clone(),
            transport.clone(),
            backend.clone(),
            Arc::new(waiters.clone()),
            cfg,
        )
        .unwrap();
        demos.push(demo);
        dirs.push((dir, store));
        nodes.push(h);
        sinks.push(waiters);
        kvs.push(kv);
        backends.push(backend);
    }
    wait_for!("n0 leads, known by all", {
        let mut all = true;
        for h in &nodes {
            all &= h.leader().await.and_then(|(_, l)| l) == Some(NodeId(0));
        }
        all
    });
    let service = Service {
        name: "kv".into(),
        prefix: "/kv/".into(),
        host: None,
        snapshot: None,
        handle: nodes[2].clone(),
        backend: backends[2].clone(),
        waiters: sinks[2].clone(),
        kv: kvs[2].clone(),
        early_reads: Default::default(),
        resend: Default::default(),
    };
    let gw = Gateway::new(
        "n2".into(),
        NodeId(2),
        vec!["n0".into(), "n1".into(), "n2".into()],
        vec![service],
        ReadMode::ReadIndex,
        ReadLimits {
            max_lag_slots: 1000,
            lease: Duration::from_secs(60),
            stuck_attempts: 100,
        },
        Duration::from_secs(15),
        1 << 20,
        100,
    );
    let app = web_test::init_service(App::new().configure(configure(Arc::new(gw)))).await;
    let fresh_read = || {
        web_test::TestRequest::get()
            .uri("/kv/x")
            .insert_header(("cache-control", "no-cache"))
            .to_request()
    };

    put(&nodes[0], &sinks[0], 1, "1").await;
    wait_for!("n2 applied the first write", {
        nodes[2].applied().await == nodes[0].commit().await
    });
    let body = web_test::call_and_read_body(&app, fresh_read()).await;
    assert_eq!(&body[..], b"1");

    // n2 now hears nothing of what is chosen (no accepts, votes,
    // decisions, digests); its proposer still talks to the leader.
    let cut = |blocked| {
        for from in [0, 1] {
            for role in [Role::Acceptor, Role::Learner, Role::Applier] {
                transport.set_blocked_role(NodeId(from), NodeId(2), role, blocked);
            }
        }
    };
    cut(true);
    put(&nodes[0], &sinks[0], 2, "2").await;
    let read = web_test::call_and_read_body(&app, fresh_read());
    let heal = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cut(false);
    };
    let (body, ()) = tokio::join!(read, heal);
    assert_eq!(
        &body[..],
        b"2",
        "a no-cache read after the second write was acknowledged"
    );
}
