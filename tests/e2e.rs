//! End-to-end tests: real processes, real sockets. Three `ordo run`
//! nodes (the binary under test) in front of three backend processes
//! (`ordo demo-backend`, or nginx with WebDAV), driven over HTTP the way
//! a user would. Each test is one promise to users (MISSION.md).
//!
//! The harness is `tests/common/mod.rs`. nginx is needed by
//! `nginx_webdav_files_are_replicated_through_every_node`: `.ci/run`
//! installs it; locally, `sudo apt-get install -y nginx`.

mod common;

use common::kv_model::{ArrayKv, KvOp};
use common::load::{self, ClientLog, Load, Op, converged_backends};
use common::{
    Backends, Cluster, NODES, Options, Proc, Resp, WAIT, call, get, get_fresh, must, put_json,
    wait_until,
};
use ordo::sim::checker::{Budget, Verdict, check};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn value_of(r: &Resp) -> Value {
    r.json()
}

/// A plain read of `path` at node `i` until it answers `want` (bounded):
/// plain reads may be refused (503) or stale while the node applies.
fn read_until(c: &Cluster, i: usize, path: &str, want: &Value) {
    let url = c.nodes[i].url(path);
    wait_until(&format!("GET {url} to answer {want}"), WAIT, || {
        let r = call("GET", &url, &[], None, Duration::from_secs(5))?;
        match r.status {
            200 if r.json() == *want => Ok(()),
            503 => {
                if r.header("retry-after").is_none() {
                    panic!("a 503 without Retry-After: {r:?}");
                }
                Err(format!("503 {}", r.body.trim()))
            }
            s => Err(format!("{s} {}", r.body.trim())),
        }
    });
}

// ---------------------------------------------------------------------
// 1, 2: reads and writes through every node
// ---------------------------------------------------------------------

#[test]
fn writes_through_every_node_are_read_through_every_node() {
    let c = Cluster::start(Options::default());
    let mut written = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let path = format!("/kv/from-{}", n.name);
        let value = json!({ "written-at": n.name, "n": i });
        let r = put_json(&n.url(&path), &value.to_string());
        assert_eq!(r.status, 201, "PUT {path} at {}: {r:?}", n.name);
        assert_eq!(value_of(&r), value);
        assert!(r.header("ordo-slot").is_some(), "no Ordo-Slot: {r:?}");
        written.push((path, value));
    }
    // Linearizable reads see every acknowledged write at once.
    for n in &c.nodes {
        for (path, value) in &written {
            let r = get_fresh(&n.url(path));
            assert_eq!(r.status, 200, "no-cache GET {path} at {}: {r:?}", n.name);
            assert_eq!(value_of(&r), *value, "no-cache GET {path} at {}", n.name);
        }
    }
    // Plain reads get there too (they may be refused or stale a moment).
    for i in 0..c.nodes.len() {
        for (path, value) in &written {
            read_until(&c, i, path, value);
        }
    }
    let data = converged_backends(&c);
    assert_eq!(data.len(), 3, "{data:?}");
}

#[test]
fn a_no_cache_read_sees_the_latest_write() {
    let c = Cluster::start(Options::default());
    for v in 1..=20 {
        let writer = v % 3;
        let reader = (v + 1) % 3;
        let value = json!(format!("v{v}"));
        let w = put_json(&c.nodes[writer].url("/kv/latest"), &value.to_string());
        assert!(
            w.status == 200 || w.status == 201,
            "write v{v} at {}: {w:?}",
            NODES[writer]
        );
        let r = get_fresh(&c.nodes[reader].url("/kv/latest"));
        assert_eq!(r.status, 200, "read after v{v} at {}: {r:?}", NODES[reader]);
        assert_eq!(
            value_of(&r),
            value,
            "a no-cache read at {} after write v{v} at {} acknowledged",
            NODES[reader],
            NODES[writer]
        );
    }
}

/// With `answer = "local"` a write is acknowledged as soon as its own
/// node's backend applied it, before the other nodes' backends have: a
/// no-cache read at another node at once still sees it. (Here the other
/// nodes have almost always heard of the write by then; the case where
/// one has not, and its early backend read must not be the answer, is
/// made on demand in `tests/gateway_reads.rs`.)
#[test]
fn a_no_cache_read_right_after_a_local_answer_sees_the_write() {
    let c = Cluster::start(Options {
        service_extra: "answer = \"local\"\n".into(),
        ..Options::default()
    });
    let leader = c.leader();
    for v in 1..=150 {
        let value = json!(format!("v{v}"));
        let w = put_json(&c.nodes[leader].url("/kv/latest"), &value.to_string());
        assert!(w.status == 200 || w.status == 201, "write v{v}: {w:?}");
        let reader = (leader + 1 + v % 2) % 3;
        let r = get_fresh(&c.nodes[reader].url("/kv/latest"));
        assert_eq!(r.status, 200, "read after v{v} at {}: {r:?}", NODES[reader]);
        assert_eq!(
            value_of(&r),
            value,
            "a no-cache read at {} after v{v}",
            NODES[reader]
        );
    }
}

// ---------------------------------------------------------------------
// 3: a node killed under load catches up; the history is linearizable
// ---------------------------------------------------------------------

fn pause(d: Duration) {
    std::thread::sleep(d);
}

#[test]
fn killed_node_under_load_catches_up_and_history_is_linearizable() {
    kill_under_load(Options::default());
}

/// The same with updates to different keys applied side by side: each
/// key's updates still reach every backend in log order (the appends'
/// arrays would differ otherwise), and a node killed in the middle of a
/// parallel window applies what it had started again, harmlessly.
#[test]
fn killed_node_under_load_with_parallel_apply_is_linearizable_and_converges() {
    kill_under_load(Options {
        service_extra: "resource_key = \"path\"\napply_concurrency = 8\n".into(),
        ..Options::default()
    });
}

/// The same with those updates pipelined on each node's connections to
/// its backend: a node killed with requests in flight on one applies
/// them again on restart, harmlessly, and nothing is applied twice.
#[test]
fn killed_node_under_load_with_pipelined_apply_is_linearizable_and_converges() {
    kill_under_load(Options {
        service_extra: "resource_key = \"path\"\napply_concurrency = 8\nbackend_pipeline = 4\n"
            .into(),
        ..Options::default()
    });
}

fn kill_under_load(opts: Options) {
    let mut c = Cluster::start(opts);
    let load = Load::start(&c, 4);
    let t0 = load.t0;

    pause(Duration::from_millis(800));
    // Round 1: the leader; round 2: a follower (not the node of round 1).
    let leader = c.leader();
    let mut killed = Vec::new();
    for round in 0..2 {
        let victim = if round == 0 {
            leader
        } else {
            let now_leader = c.leader();
            (0..3)
                .find(|i| *i != now_leader && *i != killed[0])
                .or_else(|| (0..3).find(|i| *i != now_leader))
                .expect("a follower")
        };
        eprintln!(
            "e2e: round {round}: kill -9 {} ({})",
            NODES[victim],
            if victim == leader && round == 0 {
                "the leader"
            } else {
                "a follower"
            }
        );
        load.set_alive(victim, false);
        c.kill_node(victim);
        pause(Duration::from_secs(2));
        c.restart_node(victim);
        load.set_alive(victim, true);
        killed.push(victim);
        pause(Duration::from_secs(2));
        if round == 0 {
            // Let the restarted node rejoin before the next fault.
            for i in 0..3 {
                c.wait_ready(i);
            }
        }
    }
    let logs: Vec<ClientLog> = load.stop();

    for i in 0..3 {
        c.wait_ready(i);
    }
    load::judge(&c, logs, t0);
}

/// A leader killed with updates forwarded to it: the followers' clients
/// are answered once the next leader is elected, not left to time out with
/// an unknown outcome (a new user's report: "I killed the leader and every
/// update in flight at the other nodes hung for the whole timeout, then
/// got 504"). The updates the dead leader had not proposed are sent again,
/// under their ids, to the new leadership; the history stays
/// linearizable, so none applies twice.
#[test]
fn updates_forwarded_to_a_leader_that_dies_are_answered_by_the_next() {
    let mut c = Cluster::start(Options {
        // Shorter than the clients' own timeout (8 s): without the resend
        // the lost forwards come back as 504.
        update_timeout_ms: 6_000,
        ..Options::default()
    });
    let leader = c.leader();
    let t0 = Instant::now();
    let load = Load::start(&c, 8);
    // The clients call the followers only: what they send the leader is
    // forwarded.
    load.set_alive(leader, false);
    pause(Duration::from_secs(2));
    eprintln!("e2e: kill -9 the leader {}", NODES[leader]);
    c.kill_node(leader);
    pause(Duration::from_secs(5));
    let logs: Vec<ClientLog> = load.stop();

    // Refusals (503: no leader yet, during the election) are "not done",
    // and fine; an unknown outcome or no answer is what must not happen.
    let unknown: Vec<&String> = logs
        .iter()
        .flat_map(|l| &l.failures)
        .filter(|f| !f.contains(": 503 "))
        .collect();
    assert!(
        unknown.is_empty(),
        "{} requests at the followers got no answer across the leader's death: {:?}",
        unknown.len(),
        &unknown[..unknown.len().min(10)]
    );
    let appends: usize = logs.iter().map(|l| l.ops.len()).sum();
    assert!(appends > 50, "the load hardly ran: {appends} operations");

    c.restart_node(leader);
    for i in 0..3 {
        c.wait_ready(i);
    }
    load::judge(&c, logs, t0);
}

#[test]
fn the_array_model_catches_a_stale_read() {
    // The model and checker used above do reject a read that misses an
    // acknowledged append.
    let a = |call, ret, value, out: &[u64]| Op {
        client: 1,
        call,
        ret: Some(ret),
        input: KvOp::Append {
            key: "k".into(),
            value,
        },
        output: Some(out.to_vec()),
    };
    let read = |call, ret, out: &[u64]| Op {
        client: 2,
        call,
        ret: Some(ret),
        input: KvOp::Read { key: "k".into() },
        output: Some(out.to_vec()),
    };
    let good = vec![a(0, 10, 7, &[7]), read(5, 8, &[]), read(11, 12, &[7])];
    assert!(matches!(
        check(&ArrayKv, &good, &Budget::default()),
        Verdict::Ok
    ));
    let stale = vec![a(0, 10, 7, &[7]), read(11, 12, &[])];
    assert!(matches!(
        check(&ArrayKv, &stale, &Budget::default()),
        Verdict::Violation(_)
    ));
    let twice = vec![a(0, 10, 7, &[7]), a(11, 12, 8, &[7, 7, 8])];
    assert!(matches!(
        check(&ArrayKv, &twice, &Budget::default()),
        Verdict::Violation(_)
    ));
}

// ---------------------------------------------------------------------
// 4: a peer with a certificate from another CA
// ---------------------------------------------------------------------

fn log_has(path: &Path, needles: &[&str]) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

#[test]
fn a_peer_with_a_certificate_from_another_ca_is_refused() {
    let mut c = Cluster::start(Options::default());
    let west = 2;
    // The impostor: a certificate named "west" from a CA of its own, the
    // cluster's node list, west's very addresses (west is killed first)
    // and west's backend.
    let foreign = c.dir().join("foreign");
    ordo::mesh::certs::make_certs("e2e", &["west".to_string()], &foreign).expect("foreign certs");
    let config = c.write_config_with_certs(west, "foreign", "impostor.toml", "data/impostor");
    c.kill_node(west);
    let log: PathBuf = c.dir().join("logs/impostor.log");
    let mut cmd = Command::new(common::ordo_bin());
    cmd.arg("run").arg("--config").arg(&config);
    c.extra.push(Proc::spawn("impostor", cmd, &log));
    c.extra_logs.push(("impostor".into(), log.clone()));
    let impostor_url = c.nodes[west].url("");

    let impostor_not_ready = || {
        if let Ok(r) = call(
            "GET",
            &format!("{impostor_url}/readyz"),
            &[],
            None,
            Duration::from_secs(3),
        ) {
            assert_eq!(r.status, 503, "the impostor became ready: {r:?}");
        }
    };
    // Both honest nodes refuse its connections, and say why.
    for i in [0, 1] {
        let path = c.nodes[i].log.clone();
        wait_until(
            &format!("{} to log that it refused the impostor", NODES[i]),
            WAIT,
            || {
                impostor_not_ready();
                if log_has(&path, &["connection refused", "unknown-ca"]) {
                    Ok(())
                } else {
                    Err("no refusal logged yet".to_string())
                }
            },
        );
    }
    // The honest majority still works...
    let w = put_json(&c.nodes[0].url("/kv/after-impostor"), "\"honest\"");
    assert_eq!(w.status, 201, "{w:?}");
    let r = get_fresh(&c.nodes[1].url("/kv/after-impostor"));
    assert_eq!((r.status, value_of(&r)), (200, json!("honest")), "{r:?}");
    // ...and the impostor learned nothing and serves nothing.
    impostor_not_ready();
    let status = wait_until("the impostor's status", WAIT, || {
        let r = call(
            "GET",
            &format!("{impostor_url}/_ordo/status"),
            &[],
            None,
            Duration::from_secs(3),
        )?;
        Ok::<Value, String>(r.json())
    });
    assert_eq!(status["services"][0]["applied"], json!(0), "{status}");
    let plain = get(&format!("{impostor_url}/kv/after-impostor"));
    assert_eq!(plain.status, 503, "a read at the impostor: {plain:?}");
    let direct = get(&c.nodes[west].backend_url("/kv/after-impostor"));
    assert_eq!(
        direct.status, 404,
        "the write reached west's backend: {direct:?}"
    );
}

// ---------------------------------------------------------------------
// 5: Idempotency-Key across nodes
// ---------------------------------------------------------------------

#[test]
fn an_update_with_the_same_idempotency_key_is_applied_once_across_nodes() {
    let c = Cluster::start(Options::default());
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "order-17"),
    ];
    let first = must("POST", &c.nodes[0].url("/kv/orders"), &headers, Some(b"17"));
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(value_of(&first), json!([17]));
    let retry = must("POST", &c.nodes[1].url("/kv/orders"), &headers, Some(b"17"));
    assert_eq!(
        (retry.status, value_of(&retry)),
        (first.status, value_of(&first)),
        "the retry at {} got another answer: {retry:?}",
        NODES[1]
    );
    let again = must("POST", &c.nodes[2].url("/kv/orders"), &headers, Some(b"17"));
    assert_eq!(
        (again.status, value_of(&again)),
        (201, json!([17])),
        "{again:?}"
    );
    let data = converged_backends(&c);
    assert_eq!(data.get("orders"), Some(&json!([17])), "{data:?}");
}

// ---------------------------------------------------------------------
// 6: limits and errors
// ---------------------------------------------------------------------

#[test]
fn limits_and_errors() {
    let opts = Options {
        max_body_bytes: 64 << 10,
        ..Options::default()
    };
    let limit = opts.max_body_bytes;
    let mut c = Cluster::start(opts);
    let (a, b, d) = (0, 1, 2);

    // 413: a body over limits.max_body_bytes, sent whole (no Expect).
    let big = format!("\"{}\"", "x".repeat(limit + 10));
    let r = call(
        "PUT",
        &c.nodes[a].url("/kv/big"),
        &[("content-type", "application/json")],
        Some(big.as_bytes()),
        Duration::from_secs(10),
    )
    .expect("an answer to an oversize body");
    assert_eq!(r.status, 413, "{r:?}");
    // Not applied anywhere.
    assert_eq!(get_fresh(&c.nodes[b].url("/kv/big")).status, 404);

    // 404: no service serves the path (the service's prefix is /kv/).
    for method in ["GET", "PUT"] {
        let r = must(method, &c.nodes[a].url("/elsewhere/x"), &[], Some(b"1"));
        assert_eq!(r.status, 404, "{method}: {r:?}");
        assert!(r.body.contains("no service serves"), "{r:?}");
    }

    // ordo's own paths are never proxied or replicated, whatever the method.
    // (Paths under /_ordo that no endpoint has fall through the scope
    // of ordo's own endpoints to the same refusal.)
    for (method, path) in [
        ("POST", "/healthz"),
        ("DELETE", "/_ordo/status"),
        ("PUT", "/readyz"),
        ("PUT", "/_ordo/nothing"),
        ("POST", "/_ordo/admin/services/kv/members/x/y"),
    ] {
        let r = must(method, &c.nodes[a].url(path), &[], Some(b"1"));
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert!(
            r.header("ordo-slot").is_none(),
            "{method} {path} was replicated: {r:?}"
        );
    }
    // GET and HEAD of them are ordo's own answers (docs/operations.md,
    // Health: they once said HEAD went to the service).
    for path in ["/_ordo/status", "/healthz", "/readyz"] {
        let r = must("HEAD", &c.nodes[a].url(path), &[], None);
        assert_eq!(r.status, 200, "HEAD {path}: {r:?}");
        assert!(r.header("ordo-slot").is_none());
    }
    // Prefixes match whole path segments: /kv/ does not serve /kvx/1
    // (docs/configuration.md once said a plain string prefix).
    let r = must("GET", &c.nodes[a].url("/kvx/1"), &[], None);
    assert_eq!(r.status, 404, "{r:?}");

    // A proxied read keeps the backend's length: HEAD included.
    let w = put_json(&c.nodes[a].url("/kv/sized"), "\"twelve chars\"");
    assert_eq!(w.status, 201, "{w:?}");
    let direct = must("HEAD", &c.nodes[a].backend_url("/kv/sized"), &[], None);
    let proxied = must(
        "HEAD",
        &c.nodes[a].url("/kv/sized"),
        &[("cache-control", "no-cache")],
        None,
    );
    assert_eq!(proxied.status, 200, "{proxied:?}");
    assert_eq!(
        proxied.header("content-length"),
        direct.header("content-length"),
        "{proxied:?} vs {direct:?}"
    );
    assert!(proxied.header("content-length").is_some(), "{direct:?}");

    // 502 with a reason: the node's backend is gone.
    let w = put_json(&c.nodes[a].url("/kv/here"), "1");
    assert_eq!(w.status, 201, "{w:?}");
    c.kill_backend(a);
    let r = get(&c.nodes[a].url("/kv/here"));
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("unreachable"), "no reason given: {r:?}");

    // 503 + Retry-After + a reason: node b alone, no quorum.
    c.kill_node(a);
    c.kill_node(d);
    let ready = wait_until("the lone node to say it is not ready", WAIT, || {
        let r = call(
            "GET",
            &c.nodes[b].url("/readyz"),
            &[],
            None,
            Duration::from_secs(3),
        )?;
        if r.status == 503 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
    assert!(ready.header("retry-after").is_some(), "{ready:?}");
    assert!(ready.body.contains("quorum"), "{ready:?}");
    // /readyz says so as soon as no read index comes (no-cache reads are
    // refused then); plain reads are refused once the lease runs out.
    let r = wait_until(
        "a plain read at a node without quorum to be refused",
        WAIT,
        || {
            let r = get(&c.nodes[b].url("/kv/here"));
            if r.status == 503 {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        },
    );
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.body.contains("quorum"), "no reason: {r:?}");
    let r = get_fresh(&c.nodes[b].url("/kv/here"));
    assert_eq!(
        r.status, 503,
        "a no-cache read at a node without quorum: {r:?}"
    );
    let r = call(
        "PUT",
        &c.nodes[b].url("/kv/here"),
        &[("content-type", "application/json")],
        Some(b"2"),
        Duration::from_secs(15),
    )
    .expect("an answer to an update without quorum");
    assert!(
        r.status == 503 || r.status == 504,
        "an update without quorum must get 503 or 504: {r:?}"
    );
    eprintln!(
        "e2e: an update without quorum: {} {}",
        r.status,
        r.body.trim()
    );
    if r.status == 503 {
        assert!(r.header("retry-after").is_some(), "{r:?}");
    } else {
        assert!(r.body.contains("unknown"), "{r:?}");
    }
}

// ---------------------------------------------------------------------
// 7: nginx with WebDAV as the backend
// ---------------------------------------------------------------------

#[test]
fn nginx_webdav_files_are_replicated_through_every_node() {
    let c = Cluster::start(Options {
        backends: Backends::Nginx,
        prefix: "/files/".into(),
        ..Options::default()
    });
    let files = [
        ("/files/a.txt", "alpha from north\n"),
        ("/files/deep/er/b.txt", "beta from east\n"),
        ("/files/c.txt", "gamma from west\n"),
    ];
    for (i, (path, body)) in files.iter().enumerate() {
        let r = must("PUT", &c.nodes[i].url(path), &[], Some(body.as_bytes()));
        assert_eq!(r.status, 201, "PUT {path} at {}: {r:?}", NODES[i]);
    }
    // Overwrite one (nginx answers 204).
    let r = must(
        "PUT",
        &c.nodes[1].url("/files/a.txt"),
        &[],
        Some(b"alpha again\n"),
    );
    assert_eq!(r.status, 204, "{r:?}");
    let expect = [
        ("/files/a.txt", "alpha again\n"),
        ("/files/deep/er/b.txt", "beta from east\n"),
        ("/files/c.txt", "gamma from west\n"),
    ];
    for n in &c.nodes {
        for (path, body) in expect {
            let r = get_fresh(&n.url(path));
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, body),
                "{path} at {}",
                n.name
            );
            let url = n.url(path);
            wait_until(&format!("plain GET {url}"), WAIT, || {
                let r = call("GET", &url, &[], None, Duration::from_secs(5))?;
                if r.status == 200 && r.body == body {
                    Ok(())
                } else {
                    Err(format!("{} {:?}", r.status, r.body))
                }
            });
        }
    }
    let r = must("DELETE", &c.nodes[2].url("/files/c.txt"), &[], None);
    assert_eq!(r.status, 204, "{r:?}");
    for n in &c.nodes {
        let r = get_fresh(&n.url("/files/c.txt"));
        assert_eq!(r.status, 404, "deleted file at {}: {r:?}", n.name);
    }
    c.wait_caught_up();
    let roots: Vec<BTreeMap<String, Vec<u8>>> = NODES
        .iter()
        .map(|n| common::files_under(&common::nginx_root(c.dir(), n)))
        .collect();
    let want: BTreeMap<String, Vec<u8>> = [
        ("files/a.txt", "alpha again\n"),
        ("files/deep/er/b.txt", "beta from east\n"),
    ]
    .into_iter()
    .map(|(p, b)| (p.to_string(), b.as_bytes().to_vec()))
    .collect();
    for (i, files) in roots.iter().enumerate() {
        assert_eq!(*files, want, "the files in {}'s nginx root", NODES[i]);
    }
}

/// A new user's report: "`Location` in answers names the backend's own
/// address, so a client that follows it bypasses ordo; a WebDAV
/// `Destination` names ordo's address while the backend expects its
/// own". nginx answers a created file with `Location` at its own address,
/// and refuses a `MOVE` whose `Destination` names another host (400).
#[test]
fn webdav_addresses_name_ordo_to_clients_and_each_backend_to_itself() {
    let c = Cluster::start(Options {
        backends: Backends::Nginx,
        prefix: "/files/".into(),
        ..Options::default()
    });
    let r = must("PUT", &c.nodes[0].url("/files/new.txt"), &[], Some(b"n\n"));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(c.nodes[0].url("/files/new.txt").as_str()),
        "Location names the node the client asked: {r:?}"
    );
    // The client knows the service by a name of its own.
    let port = c.nodes[1].client.port();
    let host = format!("files.test:{port}");
    let status = raw_status(
        c.nodes[1].client,
        format!(
            "MOVE /files/new.txt HTTP/1.1\r\nHost: {host}\r\n\
             Destination: http://{host}/files/moved.txt\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(
        status.as_deref(),
        Ok("HTTP/1.1 204 No Content"),
        "MOVE through east (nginx refuses another host's Destination with 400)"
    );
    let r = get_fresh(&c.nodes[1].url("/files/moved.txt"));
    assert_eq!((r.status, r.body.as_str()), (200, "n\n"), "{r:?}");
    // Reads too: nginx redirects a directory to its name with a slash.
    let r = must("PUT", &c.nodes[2].url("/files/d/x.txt"), &[], Some(b"x"));
    assert_eq!(r.status, 201, "{r:?}");
    let r = get_fresh(&c.nodes[2].url("/files/d"));
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(c.nodes[2].url("/files/d/").as_str()),
        "{r:?}"
    );
    c.wait_caught_up();
    for n in NODES {
        let files = common::files_under(&common::nginx_root(c.dir(), n));
        let names: Vec<&String> = files.keys().collect();
        assert_eq!(
            names,
            ["files/d/x.txt", "files/moved.txt"],
            "the files in {n}'s nginx root"
        );
    }
}

/// A new user's report: "a request target with a fragment
/// (`DELETE /coll/#frag`) reaches every backend without it, so a request
/// the backend would refuse with 400 deletes the collection". It is
/// refused with 400, alone or after another request on the connection,
/// and nothing is deleted.
#[test]
fn a_request_target_with_a_fragment_is_refused_and_nothing_is_applied() {
    let c = Cluster::start(Options::default());
    let r = put_json(&c.nodes[0].url("/kv/coll"), r#"{"keep":true}"#);
    assert_eq!(r.status, 201, "{r:?}");
    let addr = c.nodes[1].client;
    let wait = Duration::from_secs(5);
    let alone = b"DELETE /kv/coll#frag HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        raw_status(addr, alone, wait).as_deref(),
        Ok("HTTP/1.1 400 Bad Request")
    );
    // Behind a request with a body (and a `#` in it), on the same
    // connection.
    let first = b"PUT /kv/other HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 5\r\n\r\n\"#x#\"";
    let then = b"DELETE /kv/coll#frag HTTP/1.1\r\nHost: x\r\n\r\n";
    let answers = raw_statuses(addr, &[first, then], wait);
    assert_eq!(
        answers,
        ["HTTP/1.1 201 Created", "HTTP/1.1 400 Bad Request"],
        "the PUT is served, the DELETE refused"
    );
    for n in &c.nodes {
        let r = get_fresh(&n.url("/kv/coll"));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, r#"{"keep":true}"#),
            "at {}",
            n.name
        );
    }
}

/// A body trickled below `limits.body_min_bytes_per_sec` gets 408 with
/// the reason, long before `body_timeout_ms`: it would otherwise hold its
/// connection and memory for the whole timeout, and a few such clients
/// every connection.
#[test]
fn a_body_trickled_below_the_minimum_rate_is_refused() {
    use std::io::{Read, Write};
    let c = Cluster::start(Options {
        limits_extra: "body_min_bytes_per_sec = 1000\nbody_timeout_ms = 60000".into(),
        ..Options::default()
    });
    let mut s = std::net::TcpStream::connect(c.nodes[0].client).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(
        b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n\"",
    )
    .expect("head");
    let mut trickle = s.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        // 100 bytes a second, until the node closes the connection.
        for _ in 0..200 {
            if trickle.write_all(&[b'a'; 50]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("bytes/s") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout"), "{text}");
    assert!(
        text.contains("slower than 1000 bytes/s (limits.body_min_bytes_per_sec)"),
        "{text}"
    );
    drop(s);
    let _ = writer.join();
}

/// The status lines of the answers to `requests`, sent one after the
/// other on one raw connection, each once the one before is answered.
fn raw_statuses(addr: std::net::SocketAddr, requests: &[&[u8]], wait: Duration) -> Vec<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // A status line may follow a body without a line break.
    let statuses = |got: &[u8]| -> Vec<String> {
        let text = String::from_utf8_lossy(got);
        text.match_indices("HTTP/1.1 ")
            .map(|(i, _)| text[i..].lines().next().unwrap_or("").to_string())
            .collect()
    };
    for (i, request) in requests.iter().enumerate() {
        if s.write_all(request).is_err() {
            break;
        }
        while statuses(&got).len() <= i {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return statuses(&got),
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
    }
    statuses(&got)
}

/// Two services on one cluster, told apart by `Host`: each has its own
/// log, and a host's service wins over the one bound to no host.
#[test]
fn services_are_routed_by_host_then_by_prefix() {
    let c = Cluster::start(Options {
        extra_toml: r#"
[[services]]
name = "hosted"
host = "b.test"
prefix = "/kv/"
backend = "http://127.0.0.1:{backend_port}"
"#
        .into(),
        ..Options::default()
    });
    let commits = |c: &Cluster| -> BTreeMap<String, u64> {
        let s = must("GET", &c.nodes[0].url("/_ordo/status"), &[], None).json();
        s["services"]
            .as_array()
            .expect("services")
            .iter()
            .map(|s| {
                let name = s["service"].as_str().unwrap_or("").to_string();
                (name, s["commit"].as_u64().unwrap_or(0))
            })
            .collect()
    };
    let before = commits(&c);
    for host in ["b.test", "B.Test:1234"] {
        let r = must(
            "PUT",
            &c.nodes[0].url("/kv/h"),
            &[("host", host), ("content-type", "application/json")],
            Some(br#"{"via":"hosted"}"#),
        );
        assert!(r.status == 200 || r.status == 201, "Host {host}: {r:?}");
    }
    let r = put_json(&c.nodes[0].url("/kv/plain"), r#"{"via":"kv"}"#);
    assert_eq!(r.status, 201, "{r:?}");
    let after = commits(&c);
    let grew = |s: &str| after[s] - before[s];
    assert!(grew("hosted") >= 2, "{before:?} -> {after:?}");
    assert!(
        (1..2).contains(&grew("kv")),
        "only the request without the host went to kv: {before:?} -> {after:?}"
    );
    // An absolute-form target names its host, whatever Host says.
    let status = raw_status(
        c.nodes[2].client,
        b"PUT http://b.test/kv/abs HTTP/1.1\r\nHost: elsewhere.test\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        Duration::from_secs(10),
    );
    assert_eq!(status.as_deref(), Ok("HTTP/1.1 201 Created"));
    // (Node 0 learns of the commit soon after node 2 answered.)
    let last = wait_until("node 0 to learn the hosted commit", WAIT, || {
        let last = commits(&c);
        if last["hosted"] > after["hosted"] {
            Ok(last)
        } else {
            Err(format!("{after:?} -> {last:?}"))
        }
    });
    assert_eq!(last["hosted"], after["hosted"] + 1, "{after:?} -> {last:?}");
    assert_eq!(last["kv"], after["kv"], "{after:?} -> {last:?}");
    // Both services front the same backend here: each sees both writes.
    let r = must("GET", &c.nodes[1].url("/kv/h"), &[("host", "b.test")], None);
    assert_eq!(r.status, 200, "{r:?}");
}

/// Send `request` on a raw connection to `addr` and read the answer's
/// status line, waiting at most `wait` (a hang is an error).
fn raw_status(
    addr: std::net::SocketAddr,
    request: &[u8],
    wait: Duration,
) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer within {wait:?}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Tried as a new user would (issue 16): a request with `Upgrade:` or a
/// `CONNECT` hung until the client gave up, and a client that announced a
/// 4 MiB body and never finished it held its connection and memory for
/// good. Now: 501 at once for the first two, 408 after
/// `limits.body_timeout_ms` for the last, and nothing is applied.
#[test]
fn tunnels_upgrades_and_unfinished_bodies_are_answered_not_held() {
    let c = Cluster::start(Options {
        limits_extra: "body_timeout_ms = 1000".into(),
        ..Options::default()
    });
    let addr = c.nodes[0].client;
    let wait = Duration::from_secs(5);
    let connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    assert_eq!(
        raw_status(addr, connect, wait).as_deref(),
        Ok("HTTP/1.1 501 Not Implemented")
    );
    let upgrade = b"GET /kv/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(
        raw_status(addr, upgrade, wait).as_deref(),
        Ok("HTTP/1.1 501 Not Implemented")
    );
    // Announced above max_body_bytes: refused at once, nothing read.
    let oversize = b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                     Content-Length: 4194304\r\n\r\n\"abc";
    assert_eq!(
        raw_status(addr, oversize, wait).as_deref(),
        Ok("HTTP/1.1 413 Payload Too Large")
    );
    let started = Instant::now();
    let unfinished = b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                       Content-Length: 200000\r\n\r\n\"abc";
    assert_eq!(
        raw_status(addr, unfinished, wait).as_deref(),
        Ok("HTTP/1.1 408 Request Timeout")
    );
    eprintln!(
        "e2e: an unfinished body was answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        get_fresh(&c.nodes[1].url("/kv/slow")).status,
        404,
        "nothing applied"
    );
    // The node serves on.
    assert_eq!(put_json(&c.nodes[0].url("/kv/after"), "1").status, 201);
}
