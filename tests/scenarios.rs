//! The shipped scenarios replay and pass, through the real binary too;
//! and `ordo sim` catches every deliberate bug and writes a file that
//! replays the failure.

use ordo::sim::{Scenario, World};
use std::process::Command;

fn scenario_files() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("scenarios/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "scenario"))
        .collect();
    files.sort();
    files
}

/// The shipped scenario `name` (without `.scenario`).
fn shipped(name: &str) -> Scenario {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let file = dir.join(format!("{name}.scenario"));
    let text = std::fs::read_to_string(&file).expect("file");
    Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn every_shipped_scenario_passes() {
    let files = scenario_files();
    assert!(
        files.len() >= 6,
        "the issue asks for at least six scenarios"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let sc = Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!sc.timeline.is_empty(), "{}: no faults", file.display());
        let report = World::new(sc, false).run();
        assert!(
            report.failure().is_none(),
            "{}: {:?}",
            file.display(),
            report.failure()
        );
        assert!(report.ops_ok > 50, "{}: too little work", file.display());
    }
}

/// A backend that goes its own way: its node, and only its node, fences
/// itself; the others keep answering; no client saw the odd answers (the
/// run passes the history checker).
#[test]
fn a_node_whose_backend_diverges_finds_out_and_only_it() {
    let sc = shipped("backend-diverges");
    let report = World::new(sc, false).run();
    assert!(report.failure().is_none(), "{:?}", report.failure());
    assert_eq!(report.diverged, vec![ordo::paxos::ballot::NodeId(1)]);
    assert_eq!(report.linearizable, Some(true));
}

/// A node behind the compaction bound: needs-reseed, reseed, serving.
#[test]
fn a_node_behind_the_compacted_log_is_reseeded_and_converges() {
    let report = World::new(shipped("compacted-log-reseed"), true).run();
    assert!(report.failure().is_none(), "{:?}", report.failure());
    assert_eq!(report.reseeds, 1);
    assert!(
        report.trace.iter().any(|l| l.contains("NeedsReseed")),
        "it said it needs a reseed before it got one"
    );
    assert_eq!(report.linearizable, Some(true));
}

/// No false alarm: across many ordinary seeds (no backend fault), no
/// node ever calls itself diverged; the seeds that do make a backend
/// differ find it; and nodes behind a short log are reseeded.
#[test]
fn ordinary_seeds_raise_no_divergence_and_diverging_ones_are_found() {
    let mut diverging = 0;
    let mut reseeded = 0;
    for seed in 0..400 {
        let sc = Scenario::generate(seed);
        let faulted = sc
            .timeline
            .iter()
            .any(|(_, f)| matches!(f, ordo::sim::scenario::Fault::BackendDiverge(_)));
        let report = World::new(sc, false).run();
        assert!(
            report.failure().is_none(),
            "seed {seed}: {:?}",
            report.failure()
        );
        reseeded += u32::from(report.reseeds > 0);
        if faulted {
            diverging += 1;
        } else {
            assert!(
                report.diverged.is_empty(),
                "seed {seed}: {:?}",
                report.diverged
            );
        }
    }
    assert!(
        diverging >= 10,
        "only {diverging} seeds made a backend differ"
    );
    // And the seeds with a short log reseed the nodes that fell behind.
    assert!(reseeded >= 3, "only {reseeded} seeds reseeded a node");
}

#[test]
fn a_node_down_for_a_long_time_catches_up_by_fetching() {
    let sc = shipped("long-outage-catch-up");
    let report = World::new(sc, false).run();
    assert!(report.failure().is_none(), "{:?}", report.failure());
    // It missed hundreds of slots; it got them from its peers in batches.
    assert!(
        report.fetched_entries > 200,
        "only {} entries fetched",
        report.fetched_entries
    );
}

/// Promise paging is exercised: a leader crash under load leaves
/// accepted entries above the commit index, and with one entry per page
/// the next leader must page them in (and the run still passes).
#[test]
fn a_leader_crash_under_load_pages_the_promises_of_the_next_election() {
    let mut sc = shipped("leader-crash-under-load");
    sc.promise_bytes = 1;
    let report = World::new(sc, false).run();
    assert!(report.failure().is_none(), "{:?}", report.failure());
    assert!(report.partial_pages > 0, "no promise was split into pages");
    assert!(report.leaders_paged > 0, "no leader was elected over pages");
}

#[test]
fn ordo_sim_replay_runs_a_file_and_reports_ok() {
    let file = &scenario_files()[0];
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["sim", "replay"])
        .arg(file)
        .output()
        .expect("ordo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

#[test]
fn ordo_sim_replay_names_the_bad_line_of_a_broken_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.scenario");
    std::fs::write(&file, "seed 1\nnodes 3\nat 1s explode n0\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["sim", "replay"])
        .arg(&file)
        .output()
        .expect("ordo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3") && stderr.contains("explode"),
        "{stderr}"
    );
}

/// Run `ordo sim ARGS --out DIR`, which must fail and print a reproduce
/// line whose file replays the failure with the same exit code. Its
/// standard output and exit code.
fn failing_sim_replays(args: &[&str]) -> (String, Option<i32>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("sim")
        .args(args)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("ordo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{args:?}: {stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("REPRODUCE WITH: ordo sim replay "))
        .unwrap_or_else(|| panic!("{args:?}: no reproduce line in:\n{stdout}"));
    let file = line.rsplit(' ').next().expect("a path");
    let replay = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["sim", "replay", file])
        .output()
        .expect("ordo runs");
    assert_eq!(
        replay.status.code(),
        out.status.code(),
        "{args:?}: the replay fails the same way"
    );
    (stdout, out.status.code())
}

#[test]
fn ordo_sim_writes_a_replayable_file_for_a_failing_seed() {
    failing_sim_replays(&["--seeds", "0..10", "--bug", "skip-phase1"]);
}

/// Every deliberate bug, and the checks allowed to catch it first.
const BUGS: &[(&str, &[&str])] = &[
    // Two values chosen for one slot: the votes show it, or a learner
    // that commits the second value does (`learned-chosen`).
    (
        "skip-phase1",
        &[
            "one-value-per-slot",
            "learned-chosen",
            "assertion",
            "linearizable",
        ],
    ),
    // A broken promise also breaks what a learner takes from the votes
    // (a higher ballot's value is the chosen one): such a learner
    // commits a value the acceptors did not choose. (Before
    // `learned-chosen`, this showed only later, as logs that disagree or
    // a sound backend called diverged.)
    (
        "forget-promise",
        &[
            "one-value-per-slot",
            "assertion",
            "linearizable",
            "learned-chosen",
        ],
    ),
    ("stale-reads", &["linearizable"]),
    ("ignore-idempotency-keys", &["exactly-once"]),
    // A protocol review's mutations the simulator used to miss:
    ("read-index-without-round", &["linearizable"]),
    ("round-not-persisted", &["durability"]),
    ("promise-before-sync", &["durability"]),
    ("prepare-before-sync", &["durability"]),
    // And the plain-read staleness bound's own test.
    ("lease-without-quorum", &["stale-plain-read"]),
    ("lease-beyond-knowledge", &["stale-plain-read"]),
    (
        "vote-after-amnesia",
        &[
            "one-value-per-slot",
            "learned-chosen",
            "assertion",
            "linearizable",
            "logs-agree",
        ],
    ),
    // Divergence detection: a miss (with answers held for agreement, the
    // held answers never come either), and a false alarm.
    ("ignore-digests", &["divergence-found", "liveness"]),
    ("digest-names-node", &["no-false-divergence"]),
    // Membership: a change with no window lets a leader that proposes
    // ahead of its log use the old voters for slots the new ones govern.
    (
        "reconfig-at-once",
        &[
            "one-value-per-slot",
            "learned-chosen",
            "linearizable",
            "logs-agree",
            "eras-agree",
        ],
    ),
    // Parallel application: updates to one key that overtake each other
    // (the backend's order check, or a client reading an older value).
    ("ignore-resource-order", &["same-key-order", "linearizable"]),
    // Learners learn from each other's votes: a read index of only what
    // the leader knows is chosen misses updates answered elsewhere.
    ("read-index-chosen-only", &["linearizable"]),
    // Compaction: log files dropped before the point that says they may
    // go is durable leave a crash a hole in the log.
    ("reclaim-before-sync", &["durability"]),
];

/// Checks whose failures are liveness failures (exit code 11).
const LIVENESS_CHECKS: &[&str] = &["divergence-found", "liveness"];

/// The seeds CI runs (`generated_seeds_pass` in `sim_properties.rs`).
const CI_SEEDS: &str = "0..2000";

/// Bugs the generated seeds reach only rarely, and the seeds that
/// reach them. `lease-without-quorum` needs a leader cut off while it
/// proposes nothing (else its knowledge horizon ends its lease anyway)
/// and reads served there: one seed in 2,000 made that before learners
/// learned from the votes, none of 0..2000 after (5455 does).
const RARE: &[(&str, &str)] = &[("lease-without-quorum", "0..8000")];

/// Bugs the generated seeds no longer reach, each shown caught by its
/// shipped scenario in `broken_protocol.rs` instead.
/// `lease-beyond-knowledge` needs a follower that misses slots chosen
/// long ago while the leader's votes are lost: since followers learn
/// from each other's votes, none of 10,000 seeds made one (one in
/// 2,000 did before); `votes-lost-plain-reads` drops every vote.
const BY_SCENARIO: &[&str] = &["lease-beyond-knowledge"];

/// `ordo sim --bug NAME` catches each bug within the seeds CI runs, ends
/// on its own with the failure's exit code, names the check, and writes a
/// scenario file whose replay fails the same way.
#[test]
fn ordo_sim_catches_every_deliberate_bug_within_the_seeds_ci_runs() {
    assert_eq!(
        BUGS.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        ordo::sim::scenario::Bugs::all().collect::<Vec<_>>(),
        "every bug switch is tested here"
    );
    for (bug, checks) in BUGS.iter().filter(|(b, _)| !BY_SCENARIO.contains(b)) {
        let seeds = RARE
            .iter()
            .find(|(b, _)| b == bug)
            .map_or(CI_SEEDS, |r| r.1);
        let args = ["--seeds", seeds, "--max-failures", "1", "--bug", bug];
        let (stdout, code) = failing_sim_replays(&args);
        let liveness = checks.iter().all(|c| LIVENESS_CHECKS.contains(c));
        assert!(
            matches!(code, Some(10) | Some(12)) || (liveness && code == Some(11)),
            "--bug {bug}: exit {code:?}, not a safety or assertion failure:\n{stdout}"
        );
        let failed = stdout
            .lines()
            .find(|l| l.contains(" failed ("))
            .unwrap_or_else(|| panic!("--bug {bug}: no failed seed in:\n{stdout}"));
        assert!(
            checks.iter().any(|c| failed.contains(&format!(", {c}): "))),
            "--bug {bug} was caught by another check than {checks:?}: {failed}"
        );
    }
}

/// A wiped preferred leader, cut off from one voter while it restarts,
/// on an idle cluster: it must keep asking that voter for its round (a
/// takeover at every heartbeat used to put its asking off for ever), and
/// finish rebuilding once the cut heals. (Found by review; the liveness
/// check now also requires every rebuild to end.)
#[test]
fn a_wiped_preferred_leader_cut_off_from_a_voter_still_finishes_rebuilding() {
    let text = "seed 7\nnodes 3\nclients 0\nkeys 2\nrun 20s\n\
                net loss=0 dup=0 delay=1ms..4ms\n\
                at 1s wipe n0\nat 1200ms cut n0 -> n2\nat 1200ms restart n0\nat 5s heal\n";
    let sc = Scenario::parse(text).expect("parses");
    let report = World::new(sc, false).run();
    assert!(report.failure().is_none(), "{:?}", report.failure());
}
