//! Replica truth, with real processes: the nodes compare what their
//! backends answered and fence a node whose replica went its own way;
//! `/readyz` follows the backend; an operator disables, enables and
//! clears a node with `ordo admin`.

mod common;

use common::{Cluster, Options, WAIT, call, get, must, ordo_bin, wait_until};
use std::process::Command;
use std::time::{Duration, Instant};

fn post(c: &Cluster, i: usize, path: &str, body: &str) -> common::Resp {
    must(
        "POST",
        &c.nodes[i].url(path),
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

/// `ordo reseed` of the service from node `from` to node `to`; its
/// output (the test fails if it fails).
fn reseed(c: &Cluster, from: usize, to: usize) -> String {
    let out = Command::new(ordo_bin())
        .args(["reseed", "--service", "kv", "--from"])
        .arg(c.nodes[from].url(""))
        .arg("--to")
        .arg(c.nodes[to].url(""))
        .output()
        .expect("ordo reseed");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    text
}

/// Wait (bounded) until node `i` reports `state` for the service.
fn wait_state(c: &Cluster, i: usize, state: &str) {
    wait_until(&format!("node {i} to be {state}"), WAIT, || {
        let s = c.status(i)?;
        if s["state"] == state {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
}

fn admin(c: &Cluster, i: usize, args: &[&str]) -> (bool, String) {
    c.admin(i, args)
}

/// The report: a backend that makes up a random id on POST, in
/// front of which the node said `serving` with lag 0 while its data went
/// its own way. Now the node finds out within a few updates, says so on
/// its status page and in every refusal, refuses reads and updates; the
/// other two keep serving; an operator's clear lets it serve again until
/// the next difference.
#[test]
fn a_backend_that_makes_up_ids_is_found_and_its_node_fenced() {
    let mut c = Cluster::start(Options {
        demo_args: vec![(2, vec!["--random-ids".into()])],
        ..Options::default()
    });
    c.leader();
    let started = Instant::now();
    let mut posts = 0;
    let diverged = wait_until("node 2 to find its replica diverged", WAIT, || {
        posts += 1;
        let r = post(&c, 0, "/kv/list", &format!("{{\"n\":{posts}}}"));
        if r.status >= 300 {
            return Err(format!("POST: {} {}", r.status, r.body));
        }
        let s = c.status(2)?;
        if s["state"] == "diverged" {
            Ok(s)
        } else {
            Err(format!("node 2 is {}", s["state"]))
        }
    });
    let took = started.elapsed();
    let slot = diverged["diverged"]["slot"]
        .as_u64()
        .expect("the first slot");
    eprintln!(
        "replica_truth: divergence found after {posts} POSTs, in {} ms, at slot {slot}",
        took.as_millis()
    );
    assert!(posts <= 5, "took {posts} updates");
    assert!(
        diverged["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("slot {slot}"))
    );

    // Reads and updates at the diverged node: 503 naming the reason.
    let r = get(&c.nodes[2].url("/kv/list"));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("diverged") && r.body.contains(&format!("slot {slot}")),
        "{r:?}"
    );
    assert!(r.header("retry-after").is_some());
    let r = post(&c, 2, "/kv/list", "{\"n\":0}");
    assert_eq!(r.status, 503, "updates are not taken there: {r:?}");
    let r = call("GET", &c.nodes[2].url("/readyz"), &[], None, WAIT).expect("readyz");
    assert_eq!(r.status, 503, "{r:?}");
    // The others agree with each other and serve.
    for i in [0, 1] {
        let s = c.status(i).expect("status");
        assert_eq!(s["state"], "serving", "node {i}: {s}");
        assert_eq!(get(&c.nodes[i].url("/kv/list")).status, 200);
    }

    // Cleared by an operator (say the backend was repaired; this one was
    // not): it serves again, and the next POST fences it again.
    let (ok, out) = admin(&c, 2, &["clear-divergence", "kv"]);
    assert!(ok, "{out}");
    wait_state(&c, 2, "serving");
    post(&c, 0, "/kv/list", "{\"n\":-1}");
    wait_until("node 2 to diverge again", WAIT, || {
        let s = c.status(2)?;
        let again = s["diverged"]["slot"].as_u64().unwrap_or(0);
        if again > slot {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    // And the state survives a restart of the node.
    c.kill_node(2);
    c.restart_node(2);
    let s = c.status(2).expect("status after restart");
    assert_eq!(s["state"], "diverged", "{s}");
}

/// The report: `/readyz` said 200 while reads got 502 because the
/// backend was down. Now it follows the backend within a second or two.
#[test]
fn readyz_follows_the_backend_down_and_up() {
    let mut c = Cluster::start(Options::default());
    c.leader();
    c.kill_backend(1);
    let down = Instant::now();
    let r = wait_until("/readyz 503 with the backend down", WAIT, || {
        let r = call("GET", &c.nodes[1].url("/readyz"), &[], None, WAIT)?;
        if r.status == 503 {
            Ok(r)
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
    let took = down.elapsed();
    assert!(r.body.contains("backend"), "{r:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    c.restart_backend(1);
    c.wait_ready(1);
    let r = call("GET", &c.nodes[1].url("/readyz"), &[], None, WAIT).expect("readyz");
    assert_eq!(r.status, 200, "{r:?}");
}

/// `ordo admin disable` fences a node for reads and updates, with the
/// operator's reason; it survives a restart; `enable` undoes it. Without
/// a token, only callers on the node's own machine may act (loopback
/// here, so it works).
#[test]
fn an_operator_disables_and_enables_a_node() {
    let mut c = Cluster::start(Options::default());
    c.leader();
    let (ok, out) = admin(&c, 1, &["disable", "kv", "--reason", "backend upgrade"]);
    assert!(ok, "{out}");
    let r = get(&c.nodes[1].url("/kv/x"));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("backend upgrade"), "{r:?}");
    // A linearizable read is no exception: the node's backend is not
    // to be trusted now (it may be mid-upgrade, or diverged).
    let r = must(
        "GET",
        &c.nodes[1].url("/kv/x"),
        &[("cache-control", "no-cache")],
        None,
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("backend upgrade"), "{r:?}");
    let r = must(
        "PUT",
        &c.nodes[1].url("/kv/x"),
        &[("content-type", "application/json")],
        Some(b"1"),
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        call("GET", &c.nodes[1].url("/readyz"), &[], None, WAIT)
            .expect("readyz")
            .status,
        503
    );
    c.kill_node(1);
    c.restart_node(1);
    assert_eq!(c.status(1).expect("status")["state"], "disabled");
    let (ok, out) = admin(&c, 1, &["enable", "kv"]);
    assert!(ok, "{out}");
    c.wait_ready(1);
    // A wrong action, a wrong service: named.
    let (ok, out) = admin(&c, 1, &["enable", "nope"]);
    assert!(!ok && out.contains("no service named \"nope\""), "{out}");
}

/// With `answer = "agreed"` (the default), the client of a node whose
/// backend answers differently from the majority gets a 502 that says
/// so, not that backend's answer; with `answer = "local"` it gets the
/// odd answer (and the node is fenced right after).
#[test]
fn an_origin_whose_backend_disagrees_does_not_pass_its_answer_on() {
    let c = Cluster::start(Options {
        demo_args: vec![(2, vec!["--random-ids".into()])],
        ..Options::default()
    });
    c.leader();
    let r = post(&c, 2, "/kv/list", "{\"n\":1}");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.body.contains("was applied in slot") && r.body.contains("differently from a majority"),
        "{r:?}"
    );
    assert!(r.header("ordo-slot").is_some(), "{r:?}");
    // The update was applied: the majority has it.
    let got = get(&c.nodes[0].url("/kv/list"));
    assert_eq!(got.body.trim(), "[{\"n\":1}]", "{got:?}");
    drop(c);

    let c = Cluster::start(Options {
        demo_args: vec![(2, vec!["--random-ids".into()])],
        service_extra: "answer = \"local\"".into(),
        ..Options::default()
    });
    c.leader();
    let r = post(&c, 2, "/kv/list", "{\"n\":1}");
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        r.body.contains("\"id\""),
        "the odd backend's own answer: {r:?}"
    );
    wait_state(&c, 2, "diverged");
}

fn put(c: &Cluster, i: usize, path: &str, body: &str) -> Result<common::Resp, String> {
    call(
        "PUT",
        &c.nodes[i].url(path),
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
        Duration::from_secs(5),
    )
}

/// The report: a node whose `data_dir` was wiped while another
/// member was down rejoined at once, and an acknowledged write was lost
/// for good. Now it does not vote until that is safe: with the only
/// other holder of the log down there is no quorum (unavailable, never
/// wrong); once every voter is back it rebuilds, and no acknowledged
/// write is lost, even after the node that held them goes away again.
#[test]
fn a_wiped_node_does_not_vote_until_safe_and_no_acknowledged_write_is_lost() {
    let mut c = Cluster::start(Options::default());
    c.leader();
    // west goes down; north and east acknowledge these between them.
    c.kill_node(2);
    let mut acked = Vec::new();
    for k in 0..20 {
        let r = put(&c, 0, &format!("/kv/w{k}"), &k.to_string()).expect("put");
        assert!(r.status == 200 || r.status == 201, "{r:?}");
        acked.push(k);
    }
    // east loses its disk just as north (the other holder) goes down.
    c.kill_node(1);
    c.kill_node(0);
    std::fs::remove_dir_all(c.data_dir(1)).expect("wipe east's data_dir");
    c.restart_node(1);
    c.restart_node(2);
    // east says it rebuilds and waits for north; no update is taken.
    wait_until("east to say it rebuilds", WAIT, || {
        let s = c.status(1)?;
        let waiting = s["rebuilding"]["waiting_for"].to_string();
        if waiting.contains("north") {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    let r = put(&c, 2, "/kv/during", "1");
    assert!(
        r.as_ref().is_err() || r.as_ref().is_ok_and(|r| r.status == 503 || r.status == 504),
        "an update with no safe quorum: {r:?}"
    );
    // north comes back: east rebuilds and votes again.
    c.restart_node(0);
    wait_until("east to vote again", WAIT, || {
        let s = c.status(1)?;
        if s["rebuilding"].is_null() {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    c.wait_caught_up();
    // north goes away again: east and west alone hold every write.
    c.kill_node(0);
    for k in acked {
        let r = wait_until(&format!("w{k} from west"), WAIT, || {
            let r = call(
                "GET",
                &c.nodes[2].url(&format!("/kv/w{k}")),
                &[("cache-control", "no-cache")],
                None,
                Duration::from_secs(5),
            )?;
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        });
        assert_eq!(r.body.trim(), k.to_string(), "w{k}");
    }
}

/// A `data_dir` written by another node is refused at start, naming both.
#[test]
fn a_data_dir_of_another_node_is_refused() {
    let mut c = Cluster::start(Options::default());
    c.kill_node(1);
    let east = c.data_dir(1);
    std::fs::remove_dir_all(&east).expect("remove east's data");
    copy_dir(&c.data_dir(0), &east);
    let out = Command::new(ordo_bin())
        .arg("run")
        .arg("--config")
        .arg(&c.nodes[1].config)
        .output()
        .expect("ordo run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("belongs to node \"north\""), "{err}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// The report: a node whose backend lost its data (the demo
/// backend kept it in memory) answered 404 for keys the others had and
/// said `serving`. Now the next update shows the difference and fences
/// it; `ordo reseed` copies a healthy node's backend into it (the donor
/// pauses between two slots), and it serves the same data again.
#[test]
fn a_node_whose_backend_lost_its_data_is_fenced_then_reseeded_from_a_donor() {
    let mut c = Cluster::start(Options {
        service_extra: "snapshot = \"/_snapshot\"".into(),
        ..Options::default()
    });
    c.leader();
    for k in 0..10 {
        let r = post(&c, 0, "/kv/list", &format!("{{\"n\":{k}}}"));
        assert!(r.status < 300, "{r:?}");
        let r = put(&c, 0, &format!("/kv/k{k}"), &k.to_string()).expect("put");
        assert!(r.status < 300, "{r:?}");
    }
    c.wait_caught_up();
    // west's backend loses everything.
    c.kill_backend(2);
    c.restart_backend(2);
    assert_eq!(get(&c.nodes[2].backend_url("/kv/k1")).status, 404);
    // The next update is answered differently there (a new list of one
    // item, not the eleventh): west fences itself.
    post(&c, 0, "/kv/list", "{\"n\":10}");
    wait_state(&c, 2, "diverged");
    let r = get(&c.nodes[2].url("/kv/k1"));
    assert_eq!(r.status, 503, "not the 404 of an empty backend: {r:?}");

    let text = reseed(&c, 0, 2);
    assert!(text.contains("reseeded_at"), "{text}");
    wait_state(&c, 2, "serving");
    // Same data as the donor's, and later updates agree.
    post(&c, 1, "/kv/list", "{\"n\":11}");
    c.wait_caught_up();
    let want = get(&c.nodes[0].backend_url("/kv/list")).body;
    assert_eq!(get(&c.nodes[2].backend_url("/kv/list")).body, want);
    assert_eq!(get(&c.nodes[2].url("/kv/k1")).body.trim(), "1");
    let s = c.status(2).expect("status");
    assert_eq!(s["state"], "serving", "{s}");
    assert!(s["diverged"].is_null(), "{s}");
}

/// A node down while the others chose more slots than the log keeps:
/// it cannot catch up from any peer's log, says `needs-reseed` (and
/// refuses reads and updates) instead of waiting for ever or serving old
/// data; `ordo reseed` brings it back.
#[test]
fn a_node_behind_the_compacted_log_needs_a_reseed_and_gets_one() {
    let mut c = Cluster::start(Options {
        service_extra: "snapshot = \"/_snapshot\"".into(),
        limits_extra: "log_retain_slots = 30".into(),
        ..Options::default()
    });
    c.leader();
    c.kill_node(2);
    for k in 0..120 {
        let r = put(&c, 0, &format!("/kv/c{}", k % 7), &k.to_string()).expect("put");
        assert!(r.status < 300, "{r:?}");
    }
    // The others show how far their logs were dropped, and what the
    // logs hold.
    let s = c.status(0).expect("status");
    let compacted = s["log"]["compacted"].as_u64().expect("log.compacted");
    assert!(compacted >= 60, "{s}");
    assert!(s["log"]["bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
    c.restart_node(2);
    wait_state(&c, 2, "needs-reseed");
    let r = get(&c.nodes[2].url("/kv/c1"));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("needs reseed"), "{r:?}");
    reseed(&c, 1, 2);
    wait_state(&c, 2, "serving");
    let r = put(&c, 2, "/kv/after", "1").expect("put");
    assert!(r.status < 300, "{r:?}");
    c.wait_caught_up();
    for k in 0..7 {
        let path = format!("/kv/c{k}");
        assert_eq!(
            get(&c.nodes[2].backend_url(&path)).body,
            get(&c.nodes[0].backend_url(&path)).body,
            "{path}"
        );
    }
}
