//! Property tests over seeds and fault mixes. Every run must keep all of
//! these, and a failing case prints the scenario file that replays it:
//!
//! - the client history is linearizable;
//! - no acknowledged update is lost (applied on every node);
//! - every node's applied sequence is a prefix of one sequence, and the
//!   logs agree slot by slot;
//! - once faults heal, every node catches up (liveness).
//!
//! `ORDO_SIM_CASES` sets the number of proptest cases (CI: the default),
//! `ORDO_SIM_SEEDS` the seeds of the generated sweep.

use ordo::sim::runner::{run_seeds, write_failure};
use ordo::sim::scenario::{CrashPoint, Fault, Target};
use ordo::sim::{Scenario, World};
use proptest::prelude::*;
use std::time::Duration;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        Just(Target::Leader),
        Just(Target::Follower),
        (0u16..3).prop_map(Target::Node),
    ]
}

/// One fault and, where it has one, its undoing a little later.
fn fault() -> impl Strategy<Value = Vec<(u64, Fault)>> {
    let at = 300u64..8_000;
    let gap = 100u64..3_000;
    prop_oneof![
        (at.clone(), gap.clone(), target())
            .prop_map(|(t, g, x)| vec![(t, Fault::Crash(x)), (t + g, Fault::RestartAll)]),
        (at.clone(), gap.clone(), target()).prop_map(|(t, g, x)| vec![
            (t, Fault::CrashAt(x, CrashPoint::AfterSync)),
            (t + g, Fault::RestartAll)
        ]),
        (at.clone(), gap.clone(), target())
            .prop_map(|(t, g, x)| vec![(t, Fault::Isolate(x)), (t + g, Fault::Heal)]),
        (at.clone(), gap.clone(), target(), target()).prop_map(|(t, g, a, b)| vec![
            (t, Fault::Cut { from: a, to: b }),
            (t + g, Fault::Heal)
        ]),
        (at.clone(), 100u64..3000, target())
            .prop_map(|(t, d, x)| vec![(t, Fault::ClockJump(x, Duration::from_millis(d)))]),
        (at.clone(), gap.clone(), 0.1f64..0.5)
            .prop_map(|(t, g, p)| vec![(t, Fault::Loss(p)), (t + g, Fault::Loss(0.0))]),
        (at, gap, 0.2f64..0.8).prop_map(|(t, g, p)| vec![
            (t, Fault::BackendFail(p)),
            (t + g, Fault::BackendFail(0.0))
        ]),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        1u32..5,
        1u32..4,
        0.0f64..0.08,
        0.0f64..0.08,
        1u64..30,
        0.0f64..0.05,
        prop::collection::vec(fault(), 0..6),
        prop::option::of(1usize..8),
    )
        .prop_map(
            |(seed, clients, keys, loss, dup, delay_max, backend_fail, faults, apply_keyed)| {
                let mut timeline: Vec<(Duration, Fault)> = faults
                    .into_iter()
                    .flatten()
                    .map(|(t, f)| (Duration::from_millis(t), f))
                    .collect();
                timeline.sort_by_key(|(t, _)| *t);
                Scenario {
                    seed,
                    clients,
                    keys,
                    run: Duration::from_secs(10),
                    loss,
                    dup,
                    delay: (Duration::from_millis(1), Duration::from_millis(delay_max)),
                    backend_fail,
                    backend_fail_after_apply: backend_fail,
                    timeline,
                    apply_keyed,
                    ..Scenario::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_or("ORDO_SIM_CASES", 200) as u32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_run_is_linearizable_loses_nothing_agrees_and_catches_up(sc in scenario()) {
        let report = World::new(sc.clone(), false).run();
        if let Some(f) = report.failure() {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-failures");
            let file = write_failure(&dir, &sc, &report);
            prop_assert!(
                false,
                "{:?} failure: {}\nREPRODUCE WITH: ordo sim replay {}",
                f.kind,
                f.message,
                file.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        prop_assert!(report.ops_ok > 0, "nothing was ever answered: a vacuous run");
    }
}

#[test]
fn generated_seeds_pass() {
    let n = env_or("ORDO_SIM_SEEDS", 2000);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-failures");
    let summary = run_seeds(0..n, 2, Some(&dir), false, &|_: &mut Scenario| {});
    println!(
        "{} seeds, {:.0} simulated client ops/s",
        summary.seeds,
        summary.ops_per_sec()
    );
    if let Some(f) = summary.failed.first() {
        panic!(
            "seed {} failed ({:?}): {}\nREPRODUCE WITH: ordo sim replay {}",
            f.seed,
            f.kind,
            f.message,
            f.file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    assert!(summary.ops > n * 10, "runs must do real work");
}

/// Updates to different keys run side by side when the service declared
/// that they commute, and one at a time when it did not. (Runs without
/// crashes: a call of a crashed incarnation may still be out.)
#[test]
fn keyed_runs_apply_side_by_side_and_sequential_ones_never_do() {
    let most = |keyed: Option<usize>| {
        (0..20)
            .map(|seed| {
                let sc = Scenario {
                    seed,
                    clients: 6,
                    keys: 4,
                    apply_keyed: keyed,
                    ..Scenario::default()
                };
                let report = World::new(sc, false).run();
                assert!(
                    report.failure().is_none(),
                    "seed {seed}: {:?}",
                    report.failure()
                );
                report.apply_calls_max
            })
            .max()
            .unwrap_or(0)
    };
    assert_eq!(most(None), 1);
    let keyed = most(Some(4));
    assert!(
        (2..=4).contains(&keyed),
        "at most {keyed} calls out at once"
    );
}
