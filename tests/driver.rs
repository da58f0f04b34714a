//! The driver's contract (`ordo::driver`), checked on real roles over
//! both stores: replies wait for the sync that covers them, a burst
//! shares one sync, another role's sync releases without a new one, and
//! only a timer's current setting reaches its role.

use ordo::driver::{Group, GroupConfig, Input, Output};
use ordo::paxos::ballot::{Ballot, NodeId, Value};
use ordo::paxos::command::Timer;
use ordo::paxos::membership::Membership;
use ordo::paxos::message::{Message, Role};
use ordo::rng::Rng;
use ordo::sim::disk::SimDisk;
use ordo::storage::fjall_kv::FjallStore;
use ordo::storage::kv::{Kv, Table};
use ordo::time::Time;

const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);

/// Node 0 of three, recovered from `disk`, and what its roles asked for
/// while recovering.
fn group(disk: &mut SimDisk) -> (Group, Vec<(Role, Vec<Output>)>) {
    let mut g = Group::recover(
        N0,
        Membership::all_voting(3),
        &GroupConfig::default(),
        Time::from_millis(1),
        disk,
        &mut Rng::new(7),
    )
    .expect("a valid group");
    let starts = g.start();
    (g, starts)
}

fn kinds(out: &[Output]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Output::Send { msg, .. } => msg.kind().to_string(),
            Output::Flush => "FLUSH".into(),
            Output::Sync { .. } => "SYNC".into(),
            Output::Timer { .. } => "timer".into(),
            Output::Apply { .. } => "apply".into(),
            Output::Client(_) => "client".into(),
        })
        .collect()
}

/// What an acceptor sends for one vote: the vote to the proposer (first:
/// the answer waits for it), the value to its own learner, and the vote
/// to the learner of the one node that did not propose it.
const VOTE: &[&str] = &["accepted", "vote", "voted"];

fn accept(slot: u64) -> Input {
    Input::Message {
        from: N1,
        msg: Message::Accept {
            ballot: Ballot { round: 3, node: N1 },
            slot,
            value: Value::Noop,
        },
    }
}

#[test]
fn replies_wait_for_the_sync_that_covers_them_and_a_burst_shares_one() {
    let mut disk = SimDisk::default();
    let (mut g, _) = group(&mut disk);
    let now = Time::from_millis(2);
    let step = |g: &mut Group, disk: &mut SimDisk, i| g.step(Role::Acceptor, now, disk, i);

    // Two votes: held; one flush asked for, not two.
    assert_eq!(kinds(&step(&mut g, &mut disk, accept(1))), ["FLUSH"]);
    assert_eq!(
        kinds(&step(&mut g, &mut disk, accept(2))),
        Vec::<String>::new()
    );
    // Each vote is four replies (`VOTE`), all held.
    assert_eq!(g.acceptor.held(), 2 * VOTE.len());
    // The flush starts one sync for both.
    let out = g.flush(Role::Acceptor, &disk);
    let [Output::Sync { mark }] = out[..] else {
        panic!("{:?}", kinds(&out))
    };
    assert_eq!(mark, disk.write_mark());
    // A vote during the sync waits for the next one, and a flush asked
    // for meanwhile does nothing: one sync in flight per role.
    assert!(step(&mut g, &mut disk, accept(3)).is_empty());
    assert!(g.flush(Role::Acceptor, &disk).is_empty());
    // The sync returns: it covered the writes made before it started.
    disk.sync_to(mark);
    let out = g.synced(Role::Acceptor, &disk);
    assert_eq!(kinds(&out), [VOTE, VOTE, &["FLUSH"]].concat());
    for o in &out {
        if let Output::Send {
            msg:
                Message::Accepted { slot, .. }
                | Message::Voted { slot, .. }
                | Message::Vote { slot, .. },
            ..
        } = o
        {
            assert!(*slot <= 2, "slot 3's vote is not covered yet");
        }
    }
    // Another role's sync (one store per group) covers vote 3: the flush
    // releases it without syncing again.
    disk.sync();
    assert_eq!(kinds(&g.flush(Role::Acceptor, &disk)), VOTE);
    assert_eq!(g.acceptor.held(), 0);
    // With nothing held and everything durable, a reply needing nothing
    // new leaves at once (a repeat of vote 1 writes nothing).
    assert_eq!(kinds(&step(&mut g, &mut disk, accept(1))), VOTE);
}

#[test]
fn only_the_current_setting_of_a_timer_reaches_its_role() {
    let mut disk = SimDisk::default();
    let (mut g, starts) = group(&mut disk);
    let (_, proposer) = starts
        .iter()
        .find(|(r, _)| *r == Role::Proposer)
        .expect("the proposer starts");
    let [
        Output::Timer {
            timer: Timer::Election,
            at,
            generation,
        },
    ] = proposer[..]
    else {
        panic!("the proposer arms its election timer first")
    };
    assert_eq!(
        g.timers(),
        vec![(Role::Proposer, Timer::Election, generation, at)]
    );
    // A wake-up before its time (a node's clock was slowed after it was
    // scheduled) is put off, not run and not lost.
    let early = g.fire(
        Role::Proposer,
        at - std::time::Duration::from_micros(1),
        &mut disk,
        Timer::Election,
        generation,
    );
    assert!(
        matches!(early[..], [Output::Timer { at: a, generation: n, .. }] if a == at && n == generation),
        "{:?}",
        kinds(&early)
    );
    let late = at + std::time::Duration::from_secs(5);
    // A stale generation is ignored.
    assert!(
        g.fire(
            Role::Proposer,
            late,
            &mut disk,
            Timer::Election,
            generation + 1
        )
        .is_empty()
    );
    // The current one runs an election: the round is written, so the
    // prepares wait for a flush and a sync.
    let out = g.fire(Role::Proposer, late, &mut disk, Timer::Election, generation);
    assert!(
        kinds(&out).contains(&"FLUSH".to_string()),
        "{:?}",
        kinds(&out)
    );
    // The same wake-up again (duplicated, or late) does nothing.
    let again = g.fire(Role::Proposer, late, &mut disk, Timer::Election, generation);
    assert!(again.is_empty());
}

/// Both stores answer the marks alike: each write counts one, a sync
/// raises the durable mark to the writes before it.
#[test]
fn fjall_and_the_sim_disk_count_writes_and_syncs_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FjallStore::open(dir.path()).expect("open");
    let mut fjall = store.group("svc").expect("group");
    let mut sim = SimDisk::default();
    fn script(kv: &mut dyn Kv) -> Vec<(u64, u64)> {
        let mut marks = vec![(kv.write_mark(), kv.durable_mark())];
        kv.put(Table::Log, b"a", b"1");
        kv.put(Table::Node, b"b", b"2");
        marks.push((kv.write_mark(), kv.durable_mark()));
        kv.sync();
        marks.push((kv.write_mark(), kv.durable_mark()));
        kv.delete(Table::Log, b"a");
        kv.delete(Table::Log, b"missing");
        marks.push((kv.write_mark(), kv.durable_mark()));
        kv.sync();
        kv.sync();
        marks.push((kv.write_mark(), kv.durable_mark()));
        // Dropping files is not a write (nor ordered with them).
        kv.drop_below(Table::Log, b"z");
        marks.push((kv.write_mark(), kv.durable_mark()));
        marks
    }
    let expected = vec![(0, 0), (2, 0), (2, 2), (4, 2), (4, 4), (4, 4)];
    assert_eq!(script(&mut fjall), expected);
    assert_eq!(script(&mut sim), expected);
}

/// Issue 16: an authenticated peer that sends absurd values (a promise
/// for slot 2^63, a round of u64::MAX) makes the receiver drop the
/// message; it does not loop, wrap or assert, and its state is unchanged.
#[test]
fn messages_with_absurd_values_are_dropped_before_any_role_sees_them() {
    let mut disk = SimDisk::default();
    let (mut g, _) = group(&mut disk);
    let now = Time::from_millis(2);
    let huge = Ballot {
        round: u64::MAX,
        node: N1,
    };
    let absurd = [
        (
            Role::Acceptor,
            Message::Prepare {
                ballot: huge,
                from_slot: 1,
                takeover: false,
            },
        ),
        (
            Role::Acceptor,
            Message::Accept {
                ballot: Ballot { round: 3, node: N1 },
                slot: 1 << 63,
                value: Value::Noop,
            },
        ),
        (
            Role::Proposer,
            Message::Promise {
                ballot: Ballot { round: 1, node: N0 },
                chosen_upto: 0,
                accepted: Vec::new(),
                from_slot: 1 << 63,
                next_page: Some(u64::MAX),
            },
        ),
        (
            Role::Proposer,
            Message::RebuildRound {
                nonce: 1,
                round: u64::MAX,
            },
        ),
        (
            Role::Learner,
            Message::Fetch {
                from_slot: u64::MAX,
                max: u32::MAX,
            },
        ),
        (
            Role::Learner,
            Message::Heartbeat {
                ballot: Ballot { round: 3, node: N1 },
                commit: u64::MAX,
                lease: true,
            },
        ),
        (
            Role::Learner,
            Message::Entries {
                entries: vec![(u64::MAX, Value::Noop)],
                commit: 1,
            },
        ),
        (
            Role::Applier,
            Message::Digests {
                entries: vec![(1 << 63, 7)],
                ask: true,
                answer: false,
            },
        ),
    ];
    for (role, msg) in absurd {
        let why = msg.absurd().expect("absurd");
        let out = g.step(role, now, &mut disk, Input::Message { from: N1, msg });
        assert!(out.is_empty(), "{why}: {:?}", kinds(&out));
    }
    // Nothing was promised: an accept at a small round is still taken.
    assert_eq!(
        kinds(&g.step(Role::Acceptor, now, &mut disk, accept(1))),
        ["FLUSH"]
    );
    disk.sync();
    assert_eq!(kinds(&g.flush(Role::Acceptor, &disk)), VOTE);
    // Real values are not absurd.
    let real = Message::Prepare {
        ballot: Ballot {
            round: 1 << 40,
            node: N1,
        },
        from_slot: 1 << 40,
        takeover: false,
    };
    assert_eq!(real.absurd(), None);
}
