//! What operators watch, with real processes: `/_ordo/metrics` parsed by
//! the OpenMetrics parser of the Prometheus project's Python client
//! (Debian's `python3-prometheus-client`, installed by `.ci/run`), and
//! JSON log lines with the node and the service.

mod common;

use common::{Cluster, NODES, Options, WAIT, get, get_fresh, must, wait_until};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// One sample: (metric name, labels) -> value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Scrape node `i` and parse the text with prometheus_client's parser
/// (it raises on anything that is not valid OpenMetrics).
fn scrape(c: &Cluster, i: usize) -> Result<Samples, String> {
    let r = common::call(
        "GET",
        &c.nodes[i].url("/_ordo/metrics"),
        &[],
        None,
        std::time::Duration::from_secs(5),
    )?;
    if r.status != 200 {
        return Err(format!("{} {}", r.status, r.body));
    }
    let content_type = r
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let python = "/usr/bin/python3";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e} (.ci/run installs python3-prometheus-client)"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(r.body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser runs");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.body
    );
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    Ok(parsed.into_iter().map(|(n, l, v)| ((n, l), v)).collect())
}

/// The value of `name` with (at least) these labels, summed.
fn value(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn metrics_parse_as_openmetrics_and_count_what_happened() {
    let mut c = Cluster::start(Options {
        json_logs: true,
        ..Options::default()
    });
    for k in 0..10 {
        let r = must(
            "PUT",
            &c.nodes[0].url(&format!("/kv/m{k}")),
            &[],
            Some(b"1"),
        );
        assert!(r.status == 200 || r.status == 201, "{r:?}");
    }
    c.wait_caught_up();
    for k in 0..5 {
        assert_eq!(get(&c.nodes[1].url(&format!("/kv/m{k}"))).status, 200);
        assert_eq!(get_fresh(&c.nodes[2].url(&format!("/kv/m{k}"))).status, 200);
    }
    let s: Vec<Samples> = (0..3).map(|i| scrape(&c, i).expect("scrape")).collect();
    let svc = [("service", "kv")];
    for (i, n) in NODES.iter().enumerate() {
        let m = &s[i];
        // Every series names its node.
        assert!(
            m.keys()
                .all(|(_, l)| l.get("node").map(String::as_str) == Some(*n))
        );
        assert_eq!(value(m, "ordo_state", &[("state", "serving")]), 1.0, "{n}");
        assert_eq!(value(m, "ordo_state", &[]), 1.0, "{n}: one state at a time");
        let applied = value(m, "ordo_applied_index", &svc);
        assert!(applied >= 10.0, "{n}: applied {applied}");
        assert_eq!(value(m, "ordo_lag_slots", &svc), 0.0, "{n}");
        // Ten small updates: all in the log, nothing dropped.
        let log = value(m, "ordo_log_bytes", &svc);
        assert!((10.0 * 32.0..100_000.0).contains(&log), "{n}: log {log}");
        assert_eq!(value(m, "ordo_log_compacted_slot", &svc), 0.0, "{n}");
        assert!(value(m, "ordo_updates_applied_total", &svc) >= 10.0, "{n}");
        assert!(value(m, "ordo_fsync_seconds_count", &svc) > 0.0, "{n}");
        for peer in NODES.iter().filter(|p| *p != n) {
            for dir in ["in", "out"] {
                let up = value(
                    m,
                    "ordo_peer_connected",
                    &[("peer", peer), ("direction", dir)],
                );
                assert_eq!(up, 1.0, "{n} {dir} {peer}");
            }
        }
    }
    let update = [("kind", "update"), ("status", "201")];
    assert_eq!(value(&s[0], "ordo_requests_total", &update), 10.0);
    assert_eq!(
        value(&s[1], "ordo_requests_total", &[("kind", "read")]),
        5.0
    );
    assert_eq!(
        value(&s[2], "ordo_requests_total", &[("kind", "fresh_read")]),
        5.0
    );
    assert_eq!(
        value(&s[0], "ordo_request_seconds_count", &[("kind", "update")]),
        10.0
    );
    // One leader; it proposed the updates, in batches it counted.
    let leaders: Vec<usize> = (0..3)
        .filter(|&i| value(&s[i], "ordo_is_leader", &svc) == 1.0)
        .collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let l = &s[leaders[0]];
    assert!(value(l, "ordo_updates_proposed_total", &svc) >= 10.0);
    assert!(value(l, "ordo_batch_updates_count", &svc) >= 1.0);
    assert!(value(l, "ordo_elections_total", &svc) >= 1.0);
    let changes: f64 = s
        .iter()
        .map(|m| value(m, "ordo_leader_changes_total", &svc))
        .sum();
    assert!(changes >= 3.0, "every node saw the first leader: {changes}");

    // A node goes away: the others' gauges say so.
    c.kill_node(2);
    wait_until("west's connections to go down at north", WAIT, || {
        let m = scrape(&c, 0)?;
        let up = value(&m, "ordo_peer_connected", &[("peer", "west")]);
        (up == 0.0).then_some(()).ok_or(format!("{up} still up"))
    });

    // Every log line is JSON with the node; the groups' lines name the
    // service.
    let log = std::fs::read_to_string(&c.nodes[0].log).expect("log");
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.starts_with("====="))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for l in &lines {
        assert_eq!(l["node"], "north", "{l}");
    }
    assert!(
        lines.iter().any(|l| l["span"]["service"] == "kv"),
        "no line from the service's actors: {log}"
    );
}
