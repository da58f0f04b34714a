//! `ordo demo`, the README's first command, as a newcomer runs it: the
//! tour it prints works at once (the first update is not refused because
//! the first election is still under way), and the consoles it names
//! answer.

mod common;

use common::{Proc, call};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `ordo demo` in `dir` on ports from `base`, and its tour once printed;
/// or, if it did not start within 30 s, its log.
fn start_demo(dir: &Path, base: u16, log: &Path) -> Result<(Proc, String), String> {
    let mut cmd = Command::new(common::ordo_bin());
    cmd.args(["demo", "--base-port", &base.to_string(), "--dir"])
        .arg(dir);
    let mut demo = Proc::spawn("demo", cmd, log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let run = text.rsplit("===== e2e harness").next().unwrap_or("");
        if run.contains("Ctrl-C stops the demo") {
            return Ok((demo, run.to_string()));
        }
        if demo.exited().is_some() || Instant::now() > deadline {
            return Err(text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn get_fresh(url: &str) -> (u16, String) {
    let r = call(
        "GET",
        url,
        &[("cache-control", "no-cache")],
        None,
        Duration::from_secs(10),
    )
    .expect("an answer");
    (r.status, r.body)
}

fn put_json(url: &str, body: &[u8]) -> u16 {
    let r = call(
        "PUT",
        url,
        &[("content-type", "application/json")],
        Some(body),
        Duration::from_secs(10),
    )
    .expect("an answer");
    r.status
}

#[test]
fn the_demo_tour_works_as_soon_as_it_is_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("demo.log");
    // Ports BASE..BASE+32; another test may hold some: try a few bases.
    // All below 32768, where Linux's ephemeral ports begin: the outgoing
    // connections of the tests that run beside this one take those, and
    // a listener cannot bind a port one of them holds.
    for attempt in 0..5u16 {
        let base = 20_000 + (std::process::id() % 1_000) as u16 * 10 + attempt * 40;
        let folder = dir.path().join(format!("run{attempt}"));
        let (demo, tour) = match start_demo(&folder, base, &log) {
            Ok(started) => started,
            Err(text) => {
                eprintln!("demo attempt {attempt} did not start: {text}");
                continue;
            }
        };
        let first = format!("http://127.0.0.1:{base}");
        let third = format!("http://127.0.0.1:{}", base + 2);
        assert!(tour.contains(&first), "{tour}");
        // The tour's first command, at once.
        assert_eq!(put_json(&format!("{first}/kv/hello"), b"\"world\""), 201);
        let hello = format!("{third}/kv/hello");
        assert_eq!(get_fresh(&hello), (200, "\"world\"".to_string()));
        let console = format!("http://127.0.0.1:{}/", base + 30);
        assert!(tour.contains(&console[..console.len() - 1]), "{tour}");
        let r = call("GET", &console, &[], None, Duration::from_secs(10)).expect("the console");
        assert_eq!(r.status, 200);
        demo.kill();

        // The README's command again, in the same folder: the nodes'
        // stores and the backends' data are both as they were. (Before,
        // the stores were emptied and the backends kept: the new log's
        // first update carried an Idempotency-Key the backend had
        // recorded for another request, and the user got 422.)
        let (again, _) = start_demo(&folder, base, &log)
            .unwrap_or_else(|text| panic!("the demo did not start again: {text}"));
        assert_eq!(get_fresh(&hello), (200, "\"world\"".to_string()));
        assert_eq!(put_json(&format!("{first}/kv/hello"), b"\"again\""), 200);
        again.kill();
        return;
    }
    panic!("the demo did not start in 5 attempts");
}
