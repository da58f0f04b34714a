//! The checkers must bite: with a deliberately broken protocol (a
//! test-only switch in the real role code) they find a failure within a
//! bounded number of seeds. A checker that never fails proves nothing.

use ordo::sim::runner::{run_seeds, run_seeds_until};
use ordo::sim::{Checks, FailureKind, Scenario, World};
use std::time::Duration;

/// The shipped scenario `name` (without `.scenario`).
fn shipped(name: &str) -> Scenario {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let text = std::fs::read_to_string(dir.join(format!("{name}.scenario"))).expect("file");
    Scenario::parse(&text).expect("parses")
}

#[test]
fn a_proposer_that_skips_phase1_is_caught() {
    let summary = run_seeds(0..30, 2, None, false, &|sc: &mut Scenario| {
        sc.bugs.skip_phase1 = true
    });
    assert!(
        !summary.failed.is_empty(),
        "skipping phase 1 went unnoticed in 30 seeds"
    );
}

#[test]
fn an_acceptor_that_forgets_its_promise_is_caught() {
    let summary = run_seeds(0..300, 2, None, false, &|sc: &mut Scenario| {
        sc.bugs.forget_promise = true
    });
    assert!(
        !summary.failed.is_empty(),
        "forgetting promises went unnoticed in 300 seeds"
    );
}

/// The linearizability checker on its own (not the agreement oracle, not
/// the learners' assertions) sees the lost writes of a broken protocol.
#[test]
fn the_history_checker_alone_catches_a_proposer_that_skips_phase1() {
    let found = (0..300).find(|&seed| {
        let mut sc = Scenario::generate(seed);
        sc.bugs.skip_phase1 = true;
        World::with_checks(sc, false, Checks::HistoryOnly)
            .run()
            .history_violated()
    });
    assert!(found.is_some(), "no history violation in 300 broken seeds");
}

#[test]
fn the_correct_protocol_passes_the_same_seeds() {
    let summary = run_seeds(0..30, 2, None, false, &|_: &mut Scenario| {});
    let first = summary.failed.first().map(|f| (f.seed, f.message.clone()));
    assert!(summary.failed.is_empty(), "{first:?}");
}

/// Read-index without its quorum round (and without waiting for the new
/// leader's first entry) serves stale reads; the checker must say so.
#[test]
fn the_history_checker_catches_reads_that_skip_the_quorum_round() {
    let found = (0..300).find(|&seed| {
        let mut sc = Scenario::generate(seed);
        sc.bugs.stale_reads = true;
        World::with_checks(sc, false, Checks::HistoryOnly)
            .run()
            .history_violated()
    });
    assert!(found.is_some(), "no stale read caught in 300 seeds");
}

/// An applier that ignores the client's `Idempotency-Key` applies a
/// retried update twice; the exactly-once check must say so.
#[test]
fn an_applier_that_ignores_idempotency_keys_is_caught() {
    let summary = run_seeds(0..100, 2, None, false, &|sc: &mut Scenario| {
        sc.bugs.ignore_idempotency_keys = true
    });
    assert!(
        summary
            .failed
            .iter()
            .any(|f| f.message.contains("was applied in slots")),
        "double application went unnoticed in 100 seeds"
    );
}

/// A learner that has the store reclaim compacted log entries before
/// the compaction point is synced: a crash keeps the old point and loses
/// the entries above it (the store drops whole files at once, outside
/// the journal's order), which the check at every recovery sees.
#[test]
fn a_log_reclaimed_before_its_compaction_point_is_synced_is_caught() {
    const SEEDS: u64 = 300;
    let summary = run_seeds_until(0..SEEDS, 2, None, false, 1, &|sc: &mut Scenario| {
        sc.bugs.reclaim_before_sync = true;
        sc.log_retain = 50;
    });
    assert!(
        summary.failed.iter().any(|f| f
            .message
            .contains("before the compaction point was durable")),
        "a hole in the log went unnoticed in {SEEDS} seeds"
    );
}

/// An applier that runs updates to one key side by side (as if every
/// update commuted) lets a later one reach the backend first; the
/// backends' order check must say so, and so must the history checker
/// on its own (a client reads the older value back).
#[test]
fn an_applier_that_ignores_resource_order_is_caught() {
    let summary = run_seeds(0..100, 2, None, false, &|sc: &mut Scenario| {
        sc.bugs.ignore_resource_order = true;
        sc.apply_keyed = Some(4);
    });
    assert!(
        summary.failed.iter().any(|f| f.check == "same-key-order"),
        "updates to one key out of order went unnoticed in 100 seeds: {:?}",
        summary.failed.first().map(|f| &f.message)
    );
    let found = (0..300).find(|&seed| {
        let mut sc = Scenario::generate(seed);
        sc.bugs.ignore_resource_order = true;
        sc.apply_keyed = Some(4);
        World::with_checks(sc, false, Checks::HistoryOnly)
            .run()
            .history_violated()
    });
    assert!(found.is_some(), "no history violation in 300 seeds");
}

/// A safety failure ends the run at once: it does not run on to the end
/// of its timeline (where more failures would pile up).
#[test]
fn the_first_failure_ends_the_run() {
    let mut sc = Scenario::generate(4);
    sc.bugs.skip_phase1 = true;
    let full = World::new(Scenario::generate(4), false).run();
    let report = World::new(sc.clone(), false).run();
    let f = report.failure().expect("skip-phase1 fails seed 4");
    // Two values chosen for a slot: the votes show it, or a learner
    // that commits the second one does, whichever comes first.
    assert!(
        ["one-value-per-slot", "learned-chosen"].contains(&f.check),
        "{}: {}",
        f.check,
        f.message
    );
    assert!(
        report.sim_time < ordo::time::Time::ZERO + sc.run && report.events < full.events,
        "ran on after its failure: {} events to {}",
        report.events,
        report.sim_time
    );
}

/// A run that would never end (here: a timeline far longer than the
/// budget) ends as a liveness failure of its budget, not as a hang.
#[test]
fn a_run_that_never_ends_is_cut_by_its_budget() {
    let mut sc = Scenario::generate(3);
    sc.run = Duration::from_secs(100_000);
    let report = World::new(sc, false).run();
    let f = report.failure().expect("the budget ends it");
    assert_eq!((f.kind, f.check), (FailureKind::Liveness, "budget"));
    assert!(report.events <= ordo::sim::world::EVENTS_MAX);
}

fn diverging_backend(answer: &str, bug: Option<&str>) -> ordo::sim::Report {
    let mut sc = shipped("backend-diverges");
    sc.answer_agreed = answer == "agreed";
    if let Some(b) = bug {
        sc.bugs.set(b).expect("a known bug");
    }
    World::new(sc, false).run()
}

/// With answers given at once, the clients of a node whose backend went
/// its own way get its answers before anyone can know: the history
/// checker sees them. (So the option to wait for agreement matters.)
#[test]
fn answers_given_before_agreement_let_a_diverged_backend_be_seen() {
    let report = diverging_backend("local", None);
    let f = report
        .failure()
        .expect("the odd backend's answers are seen");
    assert_eq!(f.check, "linearizable", "{}", f.message);
    assert!(f.message.contains('~'), "the skewed answers: {}", f.message);
}

/// An applier that never compares digests never notices.
#[test]
fn an_applier_that_ignores_digests_is_caught() {
    let report = diverging_backend("local", Some("ignore-digests"));
    let f = report.failure().expect("the missed divergence is caught");
    assert_eq!(
        (f.kind, f.check),
        (FailureKind::Liveness, "divergence-found")
    );
}

/// Digests that differ between sound backends (a digest that covered a
/// `Date` header would) fence sound nodes: a false alarm, caught.
#[test]
fn digests_that_differ_between_sound_backends_are_caught() {
    let report = diverging_backend("agreed", Some("digest-names-node"));
    let f = report.failure().expect("the false alarm is caught");
    assert_eq!(
        (f.kind, f.check),
        (FailureKind::Safety, "no-false-divergence"),
        "{}",
        f.message
    );
}

/// A leader that renews read leases while its followers' votes for a
/// slot keep getting lost vouches for a commit index that misses slots
/// chosen long before: a follower's plain read is staler than the bound.
#[test]
fn a_leader_that_renews_leases_beyond_its_knowledge_is_caught() {
    let mut sc = shipped("votes-lost-plain-reads");
    assert!(World::new(sc.clone(), false).run().failure().is_none());
    sc.bugs.lease_beyond_knowledge = true;
    let report = World::new(sc, false).run();
    let f = report.failure().expect("the stale read is caught");
    assert_eq!(f.check, "stale-plain-read", "{}", f.message);
}

/// A node that lost its disk and votes at once lets a quorum that never
/// saw an acknowledged write choose something else in its slot.
#[test]
fn an_acceptor_that_votes_right_after_losing_its_disk_is_caught() {
    let mut sc = shipped("wiped-acceptor-rebuilds");
    assert!(World::new(sc.clone(), false).run().failure().is_none());
    sc.bugs.vote_after_amnesia = true;
    let report = World::new(sc, false).run();
    let f = report.failure().expect("the lost write is caught");
    assert_eq!(f.kind, FailureKind::Safety, "{}", f.message);
    assert!(
        ["one-value-per-slot", "learned-chosen"].contains(&f.check),
        "{}: {}",
        f.check,
        f.message
    );
}

/// A change of the active set that governs the very next slot, without
/// the ALPHA window: the nodes' eras no longer follow from the chosen
/// log as the protocol defines them (and a leader that proposes ahead of
/// its log may send a slot to the voters it knows while others decide
/// it; random seeds have shown two values chosen that way).
#[test]
fn a_change_without_its_window_is_caught() {
    let mut sc = shipped("lose-one-voter-of-three");
    let fine = World::new(sc.clone(), false).run();
    assert!(fine.failure().is_none(), "{:?}", fine.failure());
    assert!(fine.reconfigurations >= 2, "replaced, and swapped back");
    sc.bugs.reconfig_at_once = true;
    let report = World::new(sc, false).run();
    let f = report.failure().expect("the broken window is caught");
    assert!(
        [
            "eras-agree",
            "one-value-per-slot",
            "learned-chosen",
            "linearizable"
        ]
        .contains(&f.check),
        "{}: {}",
        f.check,
        f.message
    );
}
