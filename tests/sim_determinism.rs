//! Same seed, same run, event for event.

use ordo::sim::{Scenario, World};

#[test]
fn the_same_seed_gives_the_same_run_event_for_event() {
    for seed in [3, 17, 4242] {
        let sc = Scenario::generate(seed);
        let a = World::new(sc.clone(), true).run();
        let b = World::new(sc.clone(), true).run();
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.trace, b.trace, "seed {seed}: traces differ");
        assert_eq!(a.events, b.events);
        assert_eq!((a.ops_ok, a.ops_unknown), (b.ops_ok, b.ops_unknown));
        assert!(a.events > 1000, "a run that does nothing proves nothing");
        // The trace hash does not depend on whether a trace is kept.
        let c = World::new(sc, false).run();
        assert_eq!(a.trace_hash, c.trace_hash);
    }
}

#[test]
fn a_scenario_file_replays_the_run_it_was_written_from() {
    let sc = Scenario::generate(99);
    let text = sc.render();
    let back = Scenario::parse(&text).expect("rendered scenario parses");
    let a = World::new(sc, false).run();
    let b = World::new(back, false).run();
    assert_eq!(a.trace_hash, b.trace_hash);
}

#[test]
fn different_seeds_give_different_runs() {
    let mut sc = Scenario::generate(5);
    let a = World::new(sc.clone(), false).run();
    sc.seed += 1;
    let b = World::new(sc, false).run();
    assert_ne!(a.trace_hash, b.trace_hash);
}
