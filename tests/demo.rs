//! `ordo demo`, the README's first command, as a newcomer runs it: the
//! tour it prints works at once (the first update is not refused because
//! the first election is still under way), and the consoles it names
//! answer.

mod common;

use common::{Proc, call};
use std::process::Command;
use std::time::{Duration, Instant};

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
        let mut cmd = Command::new(common::ordo_bin());
        cmd.args(["demo", "--base-port", &base.to_string(), "--dir"])
            .arg(dir.path().join(format!("run{attempt}")));
        let mut demo = Proc::spawn("demo", cmd, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        let tour = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let run = text
                .rsplit("===== e2e harness")
                .next()
                .unwrap_or("")
                .to_string();
            if run.contains("Ctrl-C stops the demo") {
                break Some(run);
            }
            if demo.exited().is_some() || Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(tour) = tour else {
            eprintln!(
                "demo attempt {attempt} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            continue;
        };
        let first = format!("http://127.0.0.1:{base}");
        let third = format!("http://127.0.0.1:{}", base + 2);
        assert!(tour.contains(&first), "{tour}");
        // The tour's first command, at once.
        let r = call(
            "PUT",
            &format!("{first}/kv/hello"),
            &[("content-type", "application/json")],
            Some(b"\"world\""),
            Duration::from_secs(10),
        )
        .expect("an answer");
        assert_eq!(r.status, 201, "{r:?}");
        let r = call(
            "GET",
            &format!("{third}/kv/hello"),
            &[("cache-control", "no-cache")],
            None,
            Duration::from_secs(10),
        )
        .expect("an answer");
        assert_eq!((r.status, r.body.as_str()), (200, "\"world\""));
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
        let mut cmd = Command::new(common::ordo_bin());
        cmd.args(["demo", "--base-port", &base.to_string(), "--dir"])
            .arg(dir.path().join(format!("run{attempt}")));
        let mut again = Proc::spawn("demo-again", cmd, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let run = text.rsplit("===== e2e harness").next().unwrap_or("");
            if run.contains("Ctrl-C stops the demo") {
                break;
            }
            assert!(
                again.exited().is_none() && Instant::now() < deadline,
                "the demo did not start again: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = call(
            "GET",
            &format!("{third}/kv/hello"),
            &[("cache-control", "no-cache")],
            None,
            Duration::from_secs(10),
        )
        .expect("an answer");
        assert_eq!((r.status, r.body.as_str()), (200, "\"world\""));
        let r = call(
            "PUT",
            &format!("{first}/kv/hello"),
            &[("content-type", "application/json")],
            Some(b"\"again\""),
            Duration::from_secs(10),
        )
        .expect("an answer");
        assert_eq!(r.status, 200, "{r:?}");
        again.kill();
        return;
    }
    panic!("the demo did not start in 5 attempts");
}
