//! Role tests: feed one input, compare the whole list of commands that
//! came out (the openraft style). The roles are the production structs.

use bytes::Bytes;
use ordo::apply::applier::{Applier, ApplierConfig};
use ordo::paxos::acceptor::{Acceptor, AcceptorBugs, AcceptorConfig, PROMISE_BYTES_MAX_DEFAULT};
use ordo::paxos::ballot::{Ballot, NodeId, Update, UpdateId, Value};
use ordo::paxos::command::{BackendReply, ClientOutcome, Command, Ctx, Refusal, Timer};
use ordo::paxos::learner::{Learner, LearnerConfig};
use ordo::paxos::membership::Membership;
use ordo::paxos::message::{AcceptedEntry, Message, Role, entry_cost};
use ordo::paxos::proposer::{Proposer, ProposerBugs, ProposerConfig};
use ordo::paxos::state;
use ordo::rng::Rng;
use ordo::sim::disk::SimDisk;
use ordo::storage::kv::{Kv, Table};
use ordo::time::Time;
use std::time::Duration;

const N0: NodeId = NodeId(0);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);

fn b(round: u64, node: NodeId) -> Ballot {
    Ballot { round, node }
}

fn update(origin: NodeId, seq: u64) -> Update {
    Update {
        id: UpdateId {
            origin,
            boot: 1,
            seq,
        },
        key: None,
        payload: Bytes::from(format!("u{seq}")),
    }
}

/// A disk and an RNG; `call` runs a handler and returns its commands.
struct Harness {
    disk: SimDisk,
    rng: Rng,
    now: Time,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            disk: SimDisk::default(),
            rng: Rng::new(1),
            now: Time::from_millis(1000),
        }
    }

    fn call<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> (R, Vec<Command>) {
        let mut out = Vec::new();
        let mut ctx = Ctx {
            now: self.now,
            kv: &mut self.disk,
            rng: &mut self.rng,
            out: &mut out,
        };
        let r = f(&mut ctx);
        (r, out)
    }

    /// `call`, for an applier: without its digest traffic.
    fn call_applier<R>(&mut self, f: impl FnOnce(&mut Ctx<'_>) -> R) -> (R, Vec<Command>) {
        let (r, out) = self.call(f);
        (r, applying(out))
    }
}

/// An applier's commands without its digest traffic (the digest timer
/// and `Digests` messages), which the divergence tests below check.
fn applying(out: Vec<Command>) -> Vec<Command> {
    out.into_iter()
        .filter(|c| {
            !matches!(
                c,
                Command::SetTimer {
                    timer: Timer::Digests,
                    ..
                } | Command::Send {
                    msg: Message::Digests { .. },
                    ..
                }
            )
        })
        .collect()
}

fn durable(to: NodeId, role: Role, msg: Message) -> Command {
    Command::Send {
        to,
        role,
        msg,
        after_sync: true,
    }
}

fn plain(to: NodeId, role: Role, msg: Message) -> Command {
    Command::Send {
        to,
        role,
        msg,
        after_sync: false,
    }
}

/// The messages sent, but for the progress reports every heartbeat gets
/// (what they say is tested on its own).
fn sends(out: &[Command]) -> Vec<(NodeId, Role, Message)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Send { to, role, msg, .. } if !matches!(msg, Message::Progress { .. }) => {
                Some((*to, *role, msg.clone()))
            }
            _ => None,
        })
        .collect()
}

// ---- acceptor (Paxos Made Simple §2.2) ----

fn acceptor(h: &mut Harness) -> Acceptor {
    acceptor_with_budget(h, PROMISE_BYTES_MAX_DEFAULT)
}

fn acceptor_with_budget(h: &mut Harness, promise_bytes_max: usize) -> Acceptor {
    let cfg = AcceptorConfig {
        leader_lease: Duration::from_secs(1),
        promise_bytes_max,
        learners: vec![N0, N2],
    };
    h.call(|ctx| Acceptor::recover(N1, ctx, cfg, AcceptorBugs::default()))
        .0
}

#[test]
fn acceptor_promises_a_higher_ballot_durably_and_repeats_the_same_answer() {
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    let prepare = Message::Prepare {
        ballot: b(1, N0),
        from_slot: 1,
        takeover: false,
    };
    let promise = Message::Promise {
        ballot: b(1, N0),
        chosen_upto: 0,
        accepted: vec![],
        from_slot: 1,
        next_page: None,
    };
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, prepare.clone()));
    assert_eq!(out, vec![durable(N0, Role::Proposer, promise.clone())]);
    assert!(h.disk.unsynced() > 0, "the promise must be written first");
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, prepare));
    assert_eq!(out, vec![durable(N0, Role::Proposer, promise)]);
}

#[test]
fn acceptor_rejects_a_lower_ballot_naming_the_promised_one() {
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    h.call(|ctx| {
        a.on_message(
            ctx,
            N2,
            Message::Prepare {
                ballot: b(5, N2),
                from_slot: 1,
                takeover: false,
            },
        )
    });
    let (_, out) = h.call(|ctx| {
        a.on_message(
            ctx,
            N0,
            Message::Prepare {
                ballot: b(4, N0),
                from_slot: 1,
                takeover: false,
            },
        )
    });
    let rejected = Message::Rejected {
        ballot: b(4, N0),
        promised: b(5, N2),
    };
    assert_eq!(out, vec![plain(N0, Role::Proposer, rejected.clone())]);
    let accept = Message::Accept {
        ballot: b(4, N0),
        slot: 1,
        value: Value::Noop,
    };
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, accept));
    assert_eq!(out, vec![plain(N0, Role::Proposer, rejected)]);
    assert!(a.accepted(1).is_none());
}

#[test]
fn acceptor_reports_accepted_values_in_its_promise_and_survives_a_crash() {
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    let v = Value::Batch(vec![update(N0, 1)]);
    let accept = Message::Accept {
        ballot: b(1, N0),
        slot: 3,
        value: v.clone(),
    };
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, accept));
    // The vote, once on disk: first to the leader (an answer waits for
    // it), then the value to its own learner and the vote to the other
    // learners but the proposer's (whose proposer has it).
    let voted = Message::Voted {
        ballot: b(1, N0),
        slot: 3,
    };
    assert_eq!(
        out,
        vec![
            durable(
                N0,
                Role::Proposer,
                Message::Accepted {
                    ballot: b(1, N0),
                    slot: 3
                }
            ),
            durable(
                N1,
                Role::Learner,
                Message::Vote {
                    ballot: b(1, N0),
                    slot: 3,
                    value: v.clone()
                }
            ),
            durable(N2, Role::Learner, voted),
        ]
    );
    h.disk.sync();
    h.disk.crash(&mut Rng::new(3));
    let mut a = acceptor(&mut h);
    assert_eq!(a.promised(), b(1, N0));
    let (_, out) = h.call(|ctx| {
        a.on_message(
            ctx,
            N2,
            Message::Prepare {
                ballot: b(2, N2),
                from_slot: 1,
                takeover: false,
            },
        )
    });
    let expected = Message::Promise {
        ballot: b(2, N2),
        chosen_upto: 0,
        accepted: vec![AcceptedEntry {
            slot: 3,
            ballot: b(1, N0),
            value: v,
        }],
        from_slot: 1,
        next_page: None,
    };
    assert_eq!(out, vec![durable(N2, Role::Proposer, expected)]);
}

#[test]
fn acceptor_forgets_chosen_entries_and_says_so_in_promises() {
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    for slot in 1..=3 {
        let m = Message::Accept {
            ballot: b(1, N0),
            slot,
            value: Value::Noop,
        };
        h.call(|ctx| a.on_message(ctx, N0, m));
    }
    h.call(|ctx| a.on_message(ctx, N1, Message::Committed { commit: 2 }));
    assert_eq!(a.held(), 1);
    h.disk.sync();
    h.disk.crash(&mut Rng::new(0));
    let mut a = acceptor(&mut h);
    let (_, out) = h.call(|ctx| {
        a.on_message(
            ctx,
            N2,
            Message::Prepare {
                ballot: b(2, N2),
                from_slot: 1,
                takeover: false,
            },
        )
    });
    let expected = Message::Promise {
        ballot: b(2, N2),
        chosen_upto: 2,
        accepted: vec![AcceptedEntry {
            slot: 3,
            ballot: b(1, N0),
            value: Value::Noop,
        }],
        from_slot: 1,
        next_page: None,
    };
    assert_eq!(out, vec![durable(N2, Role::Proposer, expected)]);
}

#[test]
fn acceptor_ignores_committed_from_the_network() {
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    h.call(|ctx| a.on_message(ctx, N0, Message::Committed { commit: 9 }));
    assert_eq!(a.dropped, 1);
}

// ---- proposer (Paxos Made Simple §3) ----

fn proposer(h: &mut Harness, id: NodeId) -> (Proposer, Vec<Command>) {
    proposer_with(h, id, ProposerConfig::default())
}

fn proposer_with(h: &mut Harness, id: NodeId, cfg: ProposerConfig) -> (Proposer, Vec<Command>) {
    proposer_of(h, id, Membership::all_voting(3), cfg)
}

fn proposer_of(
    h: &mut Harness,
    id: NodeId,
    members: Membership,
    cfg: ProposerConfig,
) -> (Proposer, Vec<Command>) {
    h.call(|ctx| Proposer::recover(id, members, cfg, ProposerBugs::default(), ctx))
}

/// What `p` sends once `voters` accepted `slot` at `ballot`.
fn accepted_by(
    h: &mut Harness,
    p: &mut Proposer,
    ballot: Ballot,
    slot: u64,
    voters: [NodeId; 2],
) -> Vec<Command> {
    let mut out = Vec::new();
    for n in voters {
        out.extend(
            h.call(|ctx| p.on_message(ctx, n, Message::Accepted { ballot, slot }))
                .1,
        );
    }
    out
}

/// The messages sent to learners, and to whom.
fn to_learners(out: &[Command]) -> Vec<(NodeId, Message)> {
    sends(out)
        .into_iter()
        .filter(|(_, role, _)| *role == Role::Learner)
        .map(|(n, _, m)| (n, m))
        .collect()
}

fn elect(h: &mut Harness, p: &mut Proposer) -> Ballot {
    h.now = h.now + Duration::from_secs(5);
    let (_, out) = h.call(|ctx| p.on_timer(ctx, Timer::Election));
    match &sends(&out)[0].2 {
        Message::Prepare { ballot, .. } => *ballot,
        m => panic!("expected a prepare, got {m:?}"),
    }
}

/// Elect `p` with empty promises from `voters` (a quorum): it leads.
fn lead(h: &mut Harness, p: &mut Proposer, voters: [NodeId; 2]) -> Ballot {
    let ballot = elect(h, p);
    for n in voters {
        let m = Message::Promise {
            ballot,
            chosen_upto: 0,
            accepted: vec![],
            from_slot: 1,
            next_page: None,
        };
        h.call(|ctx| p.on_message(ctx, n, m));
    }
    assert!(p.is_leader(), "a quorum of promises makes a leader");
    ballot
}

/// Elect `p` with promises from N1, which accepted a value in slot 1 at
/// ballot `old` under an earlier leader, and from N0 (nothing): it leads
/// and proposes slot 1 again. Its ballot, and the commands of the
/// promise that made it leader.
fn lead_taking_over_slot_1(
    h: &mut Harness,
    p: &mut Proposer,
    old: Ballot,
) -> (Ballot, Vec<Command>) {
    let ballot = elect(h, p);
    let promise = |accepted| Message::Promise {
        ballot,
        chosen_upto: 0,
        accepted,
        from_slot: 1,
        next_page: None,
    };
    let entry = AcceptedEntry {
        slot: 1,
        ballot: old,
        value: Value::Batch(vec![update(N2, 1)]),
    };
    h.call_applier(|ctx| p.on_message(ctx, N1, promise(vec![entry])));
    let (_, out) = h.call_applier(|ctx| p.on_message(ctx, N0, promise(vec![])));
    assert!(p.is_leader());
    (ballot, out)
}

/// Whether `out` answers read `id` with its index.
fn read_ready(out: &[Command], id: UpdateId) -> bool {
    out.iter()
        .any(|c| matches!(c, Command::Client(ClientOutcome::ReadReady { id: i, .. }) if *i == id))
}

#[test]
fn proposer_runs_phase1_with_a_persisted_fresh_ballot() {
    let mut h = Harness::new();
    let (mut p, out) = proposer(&mut h, N0);
    assert!(matches!(
        out[..],
        [Command::SetTimer {
            timer: Timer::Election,
            ..
        }]
    ));
    h.now = h.now + Duration::from_secs(5);
    let (_, out) = h.call(|ctx| p.on_timer(ctx, Timer::Election));
    let prepare = Message::Prepare {
        ballot: b(1, N0),
        from_slot: 1,
        takeover: false,
    };
    assert_eq!(
        sends(&out),
        vec![
            (N0, Role::Acceptor, prepare.clone()),
            (N1, Role::Acceptor, prepare.clone()),
            (N2, Role::Acceptor, prepare)
        ]
    );
    assert!(out.iter().all(|c| !matches!(
        c,
        Command::Send {
            after_sync: false,
            ..
        }
    )));
    assert_eq!(state::load_u64(&h.disk, state::Meta::Round), 1);
    // After a restart the next ballot is higher, never the same.
    let (mut p, _) = proposer(&mut h, N0);
    assert_eq!(elect(&mut h, &mut p), b(2, N0));
}

#[test]
fn new_leader_adopts_the_highest_accepted_value_and_fills_gaps_with_noops() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = elect(&mut h, &mut p);
    let old = Value::Batch(vec![update(N1, 1)]);
    let newer = Value::Batch(vec![update(N2, 1)]);
    let promise1 = Message::Promise {
        ballot,
        chosen_upto: 0,
        accepted: vec![AcceptedEntry {
            slot: 1,
            ballot: b(0, N1),
            value: old,
        }],
        from_slot: 1,
        next_page: None,
    };
    let promise2 = Message::Promise {
        ballot,
        chosen_upto: 0,
        accepted: vec![
            AcceptedEntry {
                slot: 1,
                ballot: b(0, N2),
                value: newer.clone(),
            },
            AcceptedEntry {
                slot: 3,
                ballot: b(0, N2),
                value: Value::Noop,
            },
        ],
        from_slot: 1,
        next_page: None,
    };
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, promise1));
    assert!(out.is_empty(), "one promise is not a majority");
    let (_, out) = h.call(|ctx| p.on_message(ctx, N2, promise2));
    assert!(p.is_leader());
    let accepts: Vec<(u64, Value)> = sends(&out)
        .into_iter()
        .filter(|(to, _, _)| *to == N1)
        .filter_map(|(_, _, m)| match m {
            Message::Accept { slot, value, .. } => Some((slot, value)),
            _ => None,
        })
        .collect();
    assert_eq!(
        accepts,
        vec![(1, newer), (2, Value::Noop), (3, Value::Noop)],
        "slot 1 takes the higher ballot's value; slot 2 had nothing: no-op"
    );
}

/// Nagle's rule for slots: what arrives while a slot is in phase 2
/// waits for it and goes in one slot; a slot's worth goes at once.
#[test]
fn a_partial_batch_waits_for_the_slot_in_flight() {
    let mut h = Harness::new();
    let cfg = ProposerConfig {
        batch_updates_max: 3,
        ..ProposerConfig::default()
    };
    assert!(cfg.wait_to_batch, "the default");
    let (mut p, _) = proposer_with(&mut h, N0, cfg);
    let ballot = lead(&mut h, &mut p, [N1, N2]);
    let accepts = |out: &[Command]| -> Vec<(u64, Value)> {
        sends(out)
            .into_iter()
            .filter(|(to, _, _)| *to == N1)
            .filter_map(|(_, _, m)| match m {
                Message::Accept { slot, value, .. } => Some((slot, value)),
                _ => None,
            })
            .collect()
    };
    // Slot 1 (the leader's no-op) is in flight: these wait.
    for i in 1..=2 {
        let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N0, i)]));
        assert_eq!(accepts(&out), vec![], "update {i} waits");
    }
    assert_eq!(p.queued(), 2);
    // Slot 1 is chosen: both go together in slot 2.
    h.call(|ctx| p.on_message(ctx, N1, Message::Accepted { ballot, slot: 1 }));
    let (_, out) = h.call(|ctx| p.on_message(ctx, N2, Message::Accepted { ballot, slot: 1 }));
    let both = Value::Batch(vec![update(N0, 1), update(N0, 2)]);
    assert_eq!(accepts(&out), vec![(2, both)]);
    assert_eq!(p.queued(), 0);
    // Slot 2 is in flight; a full slot's worth does not wait for it.
    for i in 3..=4 {
        h.call(|ctx| p.submit(ctx, vec![update(N0, i)]));
    }
    let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N0, 5)]));
    let full = Value::Batch(vec![update(N0, 3), update(N0, 4), update(N0, 5)]);
    assert_eq!(accepts(&out), vec![(3, full)]);
}

/// `batch_wait = false`: nothing waits for the slot in flight.
#[test]
fn without_batch_wait_an_update_goes_while_a_slot_is_in_flight() {
    let mut h = Harness::new();
    let cfg = ProposerConfig {
        wait_to_batch: false,
        ..ProposerConfig::default()
    };
    let (mut p, _) = proposer_with(&mut h, N0, cfg);
    lead(&mut h, &mut p, [N1, N2]);
    // Slot 1 (the leader's no-op) is in flight.
    let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N0, 1)]));
    let proposed: Vec<u64> = sends(&out)
        .into_iter()
        .filter_map(|(to, _, m)| match m {
            Message::Accept { slot, .. } if to == N1 => Some(slot),
            _ => None,
        })
        .collect();
    assert_eq!(proposed, vec![2]);
    assert_eq!(p.queued(), 0);
}

#[test]
fn a_value_is_decided_by_a_majority_of_accepted_votes_only() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = lead(&mut h, &mut p, [N0, N1]);
    assert!(p.is_leader());
    // The leader's no-op in slot 1 is chosen first: an update waits while
    // a slot is in flight (`a_partial_batch_waits_for_the_slot_in_flight`).
    for n in [N0, N1] {
        h.call(|ctx| p.on_message(ctx, n, Message::Accepted { ballot, slot: 1 }));
    }
    let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N0, 7)]));
    let value = Value::Batch(vec![update(N0, 7)]);
    let to_acceptors: Vec<_> = sends(&out)
        .into_iter()
        .filter(|(_, role, _)| *role == Role::Acceptor)
        .collect();
    assert_eq!(
        to_acceptors,
        [N0, N1, N2]
            .map(|n| (
                n,
                Role::Acceptor,
                Message::Accept {
                    ballot,
                    slot: 2,
                    value: value.clone()
                }
            ))
            .to_vec()
    );
    let accepted = Message::Accepted { ballot, slot: 2 };
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, accepted.clone()));
    assert!(out.is_empty());
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, accepted.clone()));
    assert!(out.is_empty(), "a duplicate vote is not a second vote");
    let (_, out) = h.call(|ctx| p.on_message(ctx, N2, accepted));
    // N0's own vote never came: its learner gets the value at once. The
    // other voters learn it from the votes; the leader's word follows
    // later (`voters_hear_that_a_slot_is_chosen_with_the_next_accept_or_tick`).
    assert_eq!(
        sends(&out),
        vec![(N0, Role::Learner, Message::Decided { slot: 2, value })]
    );
}

/// A leader that steps down sends the news it held: it is true whoever
/// leads next, and no Accept or tick of its own will carry it.
#[test]
fn a_leader_that_steps_down_sends_the_news_it_held() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = lead(&mut h, &mut p, [N0, N1]);
    accepted_by(&mut h, &mut p, ballot, 1, [N0, N1]);
    let higher = Message::Rejected {
        ballot,
        promised: b(ballot.round + 1, N2),
    };
    let (_, out) = h.call(|ctx| p.on_message(ctx, N2, higher));
    assert!(!p.is_leader());
    assert_eq!(
        to_learners(&out),
        vec![
            (N1, Message::Chosen { ballot, slot: 1 }),
            (
                N2,
                Message::Decided {
                    slot: 1,
                    value: Value::Noop
                }
            ),
        ]
    );
}

/// A backup holds no vote to learn from: it hears what is chosen at
/// once, with the value, while the voters' news waits.
#[test]
fn a_backup_hears_at_once_what_is_chosen() {
    let mut h = Harness::new();
    let n3 = NodeId(3);
    let members = Membership::with_backups(4, 3);
    let (mut p, _) = proposer_of(&mut h, N0, members, ProposerConfig::default());
    let ballot = lead(&mut h, &mut p, [N0, N1]);
    let out = accepted_by(&mut h, &mut p, ballot, 1, [N0, N1]);
    assert_eq!(
        to_learners(&out),
        vec![
            (N0, Message::Chosen { ballot, slot: 1 }),
            (
                n3,
                Message::Decided {
                    slot: 1,
                    value: Value::Noop
                }
            ),
        ]
    );
}

/// The leader's `Chosen`/`Decided` to a voter is a safety net (voters
/// learn from each other's votes, a hop sooner): it rides with the next
/// `Accept` to that voter, or goes at the next tick, not in a write and a
/// wake-up of its own per slot.
#[test]
fn voters_hear_that_a_slot_is_chosen_with_the_next_accept_or_tick() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = lead(&mut h, &mut p, [N0, N1]);
    // Slot 1 (the leader's no-op), chosen by N0 and N1: only N0's own
    // learner hears now.
    let out = accepted_by(&mut h, &mut p, ballot, 1, [N0, N1]);
    let chosen = |slot| Message::Chosen { ballot, slot };
    assert_eq!(to_learners(&out), vec![(N0, chosen(1))]);
    // The next slot's accepts carry it, each voter's just before its
    // Accept: N1 voted (it has the value), N2 did not (it gets it).
    let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N0, 7)]));
    let value = Value::Batch(vec![update(N0, 7)]);
    let accept = Message::Accept {
        ballot,
        slot: 2,
        value: value.clone(),
    };
    let decided_noop = Message::Decided {
        slot: 1,
        value: Value::Noop,
    };
    assert_eq!(
        sends(&out),
        vec![
            (N0, Role::Acceptor, accept.clone()),
            (N1, Role::Learner, chosen(1)),
            (N1, Role::Acceptor, accept.clone()),
            (N2, Role::Learner, decided_noop),
            (N2, Role::Acceptor, accept),
        ]
    );
    // Slot 2, chosen by N0 and N1 with nothing more to propose: the tick
    // tells the others (N0's own learner hears the leader's resends of
    // what it has not committed, every tick, as before).
    let out = accepted_by(&mut h, &mut p, ballot, 2, [N0, N1]);
    assert_eq!(to_learners(&out), vec![(N0, chosen(2))]);
    let others = |out: &[Command]| -> Vec<(NodeId, Message)> {
        to_learners(out)
            .into_iter()
            .filter(|(n, _)| *n != N0)
            .collect()
    };
    h.now = h.now + Duration::from_millis(100);
    let (_, out) = h.call(|ctx| p.on_timer(ctx, Timer::Tick));
    assert_eq!(
        others(&out),
        vec![(N1, chosen(2)), (N2, Message::Decided { slot: 2, value })]
    );
    // Told once.
    h.now = h.now + Duration::from_millis(100);
    let (_, out) = h.call(|ctx| p.on_timer(ctx, Timer::Tick));
    assert_eq!(others(&out), vec![]);
}

#[test]
fn a_rejected_leader_steps_down_and_refuses_what_it_never_proposed() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = lead(&mut h, &mut p, [N1, N2]);
    // The leader's own no-op is in flight, so an update waits in the
    // queue.
    h.call(|ctx| p.submit(ctx, vec![update(N0, 1)]));
    assert_eq!(p.queued(), 1);
    let rej = Message::Rejected {
        ballot,
        promised: b(9, N2),
    };
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, rej));
    assert!(!p.is_leader());
    assert!(out.contains(&Command::Client(ClientOutcome::Refused {
        ids: vec![update(N0, 1).id],
        why: Refusal::NoLeader
    })));
    // Its next ballot jumps past the one that beat it.
    assert_eq!(elect(&mut h, &mut p), b(10, N0));
}

#[test]
fn a_follower_without_a_leader_refuses_and_with_one_forwards() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N1);
    let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N1, 1)]));
    assert_eq!(
        out,
        vec![Command::Client(ClientOutcome::Refused {
            ids: vec![update(N1, 1).id],
            why: Refusal::NoLeader
        })]
    );
    let hb = Message::Heartbeat {
        ballot: b(3, N0),
        commit: 0,
        lease: true,
    };
    h.call(|ctx| p.on_message(ctx, N0, hb));
    let (_, out) = h.call(|ctx| p.submit(ctx, vec![update(N1, 2)]));
    assert_eq!(
        out,
        vec![plain(
            N0,
            Role::Proposer,
            Message::Forward {
                updates: vec![update(N1, 2)],
                hops: 0
            }
        )]
    );
}

// ---- learner ----

#[test]
fn learner_commits_contiguously_and_fetches_a_gap() {
    let mut h = Harness::new();
    let (mut l, _) = h.call(|ctx| {
        Learner::recover(
            N1,
            &Membership::all_voting(3),
            LearnerConfig::default(),
            ctx,
        )
    });
    let (_, out) = h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Decided {
                slot: 2,
                value: Value::Noop,
            },
        )
    });
    assert_eq!(l.commit(), 0, "slot 1 is missing");
    assert!(matches!(
        out[..],
        [Command::SetTimer {
            timer: Timer::Fetch,
            ..
        }]
    ));
    h.now = h.now + Duration::from_secs(1);
    let (_, out) = h.call(|ctx| l.on_timer(ctx, Timer::Fetch));
    let fetch = sends(&out);
    assert_eq!(fetch.len(), 1);
    assert!(matches!(fetch[0].2, Message::Fetch { from_slot: 1, .. }));
    let from = fetch[0].0;
    let entries = Message::Entries {
        entries: vec![(1, Value::Noop)],
        commit: 2,
    };
    let (_, out) = h.call(|ctx| l.on_message(ctx, from, entries));
    assert_eq!(l.commit(), 2);
    let told: Vec<Role> = sends(&out)
        .into_iter()
        .filter(|(_, _, m)| *m == Message::Committed { commit: 2 })
        .map(|(_, r, _)| r)
        .collect();
    assert_eq!(told, vec![Role::Applier, Role::Proposer, Role::Acceptor]);
    assert_eq!(state::last_chosen_slot(&h.disk), 2);
}

/// A fetch's reply was bounded in bytes, but the log was read a whole
/// `fetch_batch` (256 slots) at once first: now that slots carry
/// batches of up to 1 MiB, serving one fetch could hold hundreds of
/// megabytes to send four.
#[test]
fn serving_a_fetch_reads_about_what_it_sends() {
    let mut h = Harness::new();
    let cfg = LearnerConfig::default();
    let (mut l, _) = h.call(|ctx| Learner::recover(N0, &Membership::all_voting(3), cfg, ctx));
    let slot_bytes = 256 << 10;
    for slot in 1..=64 {
        let value = Value::Batch(vec![Update {
            id: UpdateId {
                origin: N1,
                boot: 1,
                seq: slot,
            },
            key: None,
            payload: Bytes::from(vec![1u8; slot_bytes]),
        }]);
        h.call(|ctx| l.on_message(ctx, N1, Message::Decided { slot, value }));
    }
    assert_eq!(l.commit(), 64);
    let before = h.disk.scanned_bytes.get();
    let fetch = Message::Fetch {
        from_slot: 1,
        max: 256,
    };
    let (_, out) = h.call(|ctx| l.on_message(ctx, N2, fetch));
    let sent = match &sends(&out)[..] {
        [(_, Role::Learner, Message::Entries { entries, .. })] => entries.len(),
        other => panic!("expected one Entries, got {other:?}"),
    };
    // 4 MiB of replies: 16 whole slots, and the one that passed the bound.
    assert_eq!(sent, 16);
    let read = h.disk.scanned_bytes.get() - before;
    assert!(
        read <= 2 * 16 * slot_bytes as u64 + (64 << 10),
        "read {read} bytes of log to send {sent} slots of {slot_bytes}"
    );
}

/// The buffer of slots above the commit index was bounded in slots
/// only (4,096), and a slot carries up to 1 MiB: a learner missing one
/// slot could hold gigabytes. Beyond its bytes, slots are fetched later.
#[test]
fn a_learner_buffers_a_bounded_number_of_bytes_above_its_commit() {
    let mut h = Harness::new();
    let one = |slot: u64| {
        Value::Batch(vec![Update {
            id: UpdateId {
                origin: N0,
                boot: 1,
                seq: slot,
            },
            key: None,
            payload: Bytes::from(vec![0u8; 1000]),
        }])
    };
    let cfg = LearnerConfig {
        buffer_bytes_max: 3 * state::log_cost(&one(0)),
        ..LearnerConfig::default()
    };
    let (mut l, _) = h.call(|ctx| Learner::recover(N1, &Membership::all_voting(3), cfg, ctx));
    let decide = |h: &mut Harness, l: &mut Learner, slot: u64| {
        let value = one(slot);
        h.call(|ctx| l.on_message(ctx, N0, Message::Decided { slot, value }));
    };
    // Slot 1 is missing: 2, 3, 4 are held, the rest only noted.
    for slot in 2..=10 {
        decide(&mut h, &mut l, slot);
    }
    assert_eq!((l.commit(), l.known_commit()), (0, 10));
    // Slot 1 arrives: the held ones follow it, and the others are
    // fetched from slot 5.
    decide(&mut h, &mut l, 1);
    assert_eq!(l.commit(), 4);
    h.now = h.now + Duration::from_secs(1);
    let (_, out) = h.call(|ctx| l.on_timer(ctx, Timer::Fetch));
    assert!(
        sends(&out)
            .iter()
            .any(|(_, _, m)| matches!(m, Message::Fetch { from_slot: 5, .. })),
        "{out:?}"
    );
}

fn learner_n1_of(voters: u16) -> (Harness, Learner) {
    let mut h = Harness::new();
    let (l, _) = h.call(|ctx| {
        Learner::recover(
            N1,
            &Membership::all_voting(voters),
            LearnerConfig::default(),
            ctx,
        )
    });
    (h, l)
}

fn own_vote(ballot: Ballot, slot: u64, value: Value) -> Message {
    Message::Vote {
        ballot,
        slot,
        value,
    }
}

/// A follower learns a slot from the votes, a hop before the leader's
/// word: its own vote (with the value) and another voter's make a
/// majority of three. One vote is not enough, nor a peer's vote alone.
#[test]
fn learner_learns_a_slot_from_a_majority_of_votes_with_its_own_value() {
    let (mut h, mut l) = learner_n1_of(3);
    let v = Value::Batch(vec![update(N0, 1)]);
    let ballot = b(1, N0);
    // The other follower's vote first: no value here yet.
    h.call(|ctx| l.on_message(ctx, N2, Message::Voted { ballot, slot: 1 }));
    assert_eq!(l.commit(), 0);
    h.call(|ctx| l.on_message(ctx, N1, own_vote(ballot, 1, v.clone())));
    assert_eq!(l.commit(), 1, "own vote and N2's: a majority");
    assert_eq!(state::load_chosen(&h.disk, 1), Some(v.clone()));

    // Slot 2: only its own vote.
    h.call(|ctx| l.on_message(ctx, N1, own_vote(ballot, 2, v.clone())));
    assert_eq!(l.commit(), 1, "one vote of three");
    // A vote at another ballot does not add up with it.
    let other = b(2, N2);
    h.call(|ctx| {
        l.on_message(
            ctx,
            N2,
            Message::Voted {
                ballot: other,
                slot: 2,
            },
        )
    });
    h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Voted {
                ballot: other,
                slot: 2,
            },
        )
    });
    assert_eq!(
        l.commit(),
        1,
        "a majority at ballot {other}, but the value held is of {ballot}"
    );
}

/// The leader's word without the value: taken from the node's own vote
/// when it holds it; otherwise the slot is fetched.
#[test]
fn learner_takes_a_chosen_slot_from_its_own_vote_or_fetches_it() {
    let (mut h, mut l) = learner_n1_of(3);
    let v = Value::Batch(vec![update(N0, 1)]);
    let ballot = b(1, N0);
    h.call(|ctx| l.on_message(ctx, N1, own_vote(ballot, 1, v.clone())));
    h.call(|ctx| l.on_message(ctx, N0, Message::Chosen { ballot, slot: 1 }));
    assert_eq!(l.commit(), 1);
    assert_eq!(state::load_chosen(&h.disk, 1), Some(v));
    // A claim must come from the ballot's own proposer.
    h.call(|ctx| l.on_message(ctx, N1, own_vote(ballot, 2, Value::Noop)));
    h.call(|ctx| l.on_message(ctx, N2, Message::Chosen { ballot, slot: 2 }));
    assert_eq!(l.commit(), 1, "N2 does not speak for N0's ballot");
    // Slot 3: no vote of its own, so nothing to take: fetched.
    let (_, out) = h.call(|ctx| l.on_message(ctx, N0, Message::Chosen { ballot, slot: 3 }));
    assert_eq!(l.commit(), 1);
    assert_eq!(l.known_commit(), 3);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::SetTimer {
                timer: Timer::Fetch,
                ..
            }
        )),
        "{out:?}"
    );
}

/// A learner leaves the slots its own node proposed to its proposer,
/// which tells it with the nodes that need the value: a leader's learner
/// that went ahead on the votes would leave them waiting.
#[test]
fn learner_does_not_count_votes_for_its_own_nodes_ballot() {
    let (mut h, mut l) = learner_n1_of(3);
    let mine = b(1, N1);
    h.call(|ctx| l.on_message(ctx, N1, own_vote(mine, 1, Value::Noop)));
    h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Voted {
                ballot: mine,
                slot: 1,
            },
        )
    });
    h.call(|ctx| {
        l.on_message(
            ctx,
            N2,
            Message::Voted {
                ballot: mine,
                slot: 1,
            },
        )
    });
    assert_eq!(l.commit(), 0);
    h.call(|ctx| {
        l.on_message(
            ctx,
            N1,
            Message::Chosen {
                ballot: mine,
                slot: 1,
            },
        )
    });
    assert_eq!(l.commit(), 1, "its proposer's word");
}

/// The same with one voter: its own vote for its own ballot is a
/// majority, and still the learner waits for its proposer, which tells
/// the backups too.
#[test]
fn a_lone_voters_learner_waits_for_its_proposer() {
    let mut h = Harness::new();
    let members = Membership {
        voters: vec![N0],
        nodes: vec![N0, N1],
    };
    let (mut l, _) = h.call(|ctx| Learner::recover(N0, &members, LearnerConfig::default(), ctx));
    let mine = b(1, N0);
    h.call(|ctx| l.on_message(ctx, N0, own_vote(mine, 1, Value::Noop)));
    assert_eq!(l.commit(), 0);
    h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Chosen {
                ballot: mine,
                slot: 1,
            },
        )
    });
    assert_eq!(l.commit(), 1);
}

#[test]
#[should_panic(expected = "chosen value of slot 1 changed")]
fn learner_asserts_a_chosen_value_never_changes() {
    let mut h = Harness::new();
    let (mut l, _) = h.call(|ctx| {
        Learner::recover(
            N1,
            &Membership::all_voting(2),
            LearnerConfig::default(),
            ctx,
        )
    });
    h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Decided {
                slot: 1,
                value: Value::Noop,
            },
        )
    });
    let other = Value::Batch(vec![update(N0, 1)]);
    h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Decided {
                slot: 1,
                value: other,
            },
        )
    });
}

#[test]
fn the_log_keeps_its_byte_bound_but_never_what_is_not_applied() {
    let mut h = Harness::new();
    let cfg = LearnerConfig {
        retain_slots: 1_000,
        retain_bytes: 10 * 1_032,
        keep_applied: 0,
        ..LearnerConfig::default()
    };
    let (mut l, _) = h.call(|ctx| Learner::recover(N1, &Membership::all_voting(3), cfg, ctx));
    let big = |seq| {
        let mut u = update(N0, seq);
        u.payload = Bytes::from(vec![b'x'; 1_000]);
        Value::Batch(vec![u])
    };
    // 30 slots of about 1 KiB each, 20 of them applied.
    state::store_u64(&mut h.disk, state::Meta::Applied, 20);
    for slot in 1..=30 {
        let value = big(slot);
        h.call(|ctx| l.on_message(ctx, N0, Message::Decided { slot, value }));
    }
    let kept = state::load_chosen_range(&h.disk, 1, 100);
    let first = kept.first().map(|(s, _)| *s).expect("some log");
    assert_eq!(
        first, 21,
        "dropped the applied slots only, though over the bound"
    );
    assert_eq!(state::last_chosen_slot(&h.disk), 30);
    // A fetch of a dropped slot is answered so, with the compaction point.
    assert_eq!(compacted_reply(&mut h, &mut l, 5), Ok((20, 30)));
    // Applied further: the oldest go until under nine tenths of the bound.
    state::store_u64(&mut h.disk, state::Meta::Applied, 30);
    h.call(|ctx| {
        l.on_message(
            ctx,
            N0,
            Message::Decided {
                slot: 31,
                value: big(31),
            },
        )
    });
    let kept = state::load_chosen_range(&h.disk, 1, 100).len();
    assert!(kept <= 9, "{kept} slots kept");
}

#[test]
fn the_log_drops_what_every_node_applied_before_its_bound() {
    let mut h = Harness::new();
    let cfg = LearnerConfig {
        retain_slots: 10,
        keep_applied: 0,
        ..LearnerConfig::default()
    };
    let (mut l, _) = h.call(|ctx| Learner::recover(N1, &Membership::all_voting(3), cfg, ctx));
    let mut decide = |h: &mut Harness, slots: std::ops::RangeInclusive<u64>| {
        for slot in slots {
            state::store_u64(&mut h.disk, state::Meta::Applied, slot - 1);
            let value = Value::Batch(vec![update(N0, slot)]);
            h.call(|ctx| l.on_message(ctx, N0, Message::Decided { slot, value }));
        }
    };
    decide(&mut h, 1..=30);
    assert_eq!(
        state::load_chosen_range(&h.disk, 1, 100)[0].0,
        21,
        "the bound"
    );
    // Every node has applied up to 37: the bound would keep 31..=40.
    state::store_u64(&mut h.disk, state::Meta::AllApplied, 37);
    decide(&mut h, 31..=40);
    // (Dropped in steps of a tenth of the bound, here 2 slots.)
    let first = state::load_chosen_range(&h.disk, 1, 100)[0].0;
    assert!((36..=38).contains(&first), "first kept: {first}");
}

/// A compaction step reads what it drops (the byte count), so it stops
/// after a mebibyte and the next commits go on: a whole step of 1024
/// slots was 15 MB read at once on the node's thread at 50 updates a
/// slot.
#[test]
fn the_log_is_dropped_a_mebibyte_a_step() {
    let mut h = Harness::new();
    let cfg = LearnerConfig {
        retain_slots: 1_000,
        keep_applied: 0,
        ..LearnerConfig::default()
    };
    let (mut l, _) = h.call(|ctx| Learner::recover(N1, &Membership::all_voting(3), cfg, ctx));
    let big = |seq| {
        let mut u = update(N0, seq);
        u.payload = Bytes::from(vec![b'x'; 64 << 10]);
        Value::Batch(vec![u])
    };
    let mut decide = |h: &mut Harness, slot: u64| {
        let value = big(slot);
        h.call(|ctx| l.on_message(ctx, N0, Message::Decided { slot, value }));
    };
    for slot in 1..=150 {
        decide(&mut h, slot);
    }
    let first = |h: &Harness| state::load_chosen_range(&h.disk, 1, 1)[0].0;
    assert_eq!(first(&h), 1, "nothing applied yet");
    // Every node applied all 150: they may go, 16 of 64 KiB a step (the
    // 16th crosses the mebibyte), a step a commit...
    state::store_u64(&mut h.disk, state::Meta::Applied, 150);
    state::store_u64(&mut h.disk, state::Meta::AllApplied, 150);
    decide(&mut h, 151);
    assert_eq!(first(&h), 17, "one step");
    decide(&mut h, 152);
    assert_eq!(first(&h), 33, "the next");
    // ...while a tenth of the slot bound (101) or more is due, as before.
    for slot in 153..=160 {
        decide(&mut h, slot);
    }
    assert_eq!(first(&h), 65);
}

/// A reseed whose slot this log already reached: the applier, whose view
/// of the commit index lagged, moved the compaction point to it anyway.
/// Reads skip the log up to the point now, so a fetch below it is
/// answered `Compacted`, not with entries that start after a gap.
#[test]
fn a_reseed_within_the_log_answers_fetches_below_its_slot_as_compacted() {
    let mut h = Harness::new();
    let members = Membership::all_voting(3);
    let cfg = LearnerConfig::default();
    let (mut l, _) = h.call(|ctx| Learner::recover(N1, &members, cfg, ctx));
    for slot in 1..=10 {
        let value = Value::Batch(vec![update(N0, slot)]);
        h.call(|ctx| l.on_message(ctx, N0, Message::Decided { slot, value }));
    }
    state::store_u64(&mut h.disk, state::Meta::Compacted, 8);
    let reseeded = Message::Reseeded {
        slot: 8,
        eras: None,
    };
    h.call(|ctx| l.on_message(ctx, N1, reseeded));
    assert_eq!(compacted_reply(&mut h, &mut l, 5), Ok((8, 10)));
}

/// Peer N2 asks learner `l` for the log from `from_slot`: the (upto,
/// commit) of its reply if that is one `Compacted` and nothing else,
/// else every command it answered with.
fn compacted_reply(h: &mut Harness, l: &mut Learner, from_slot: u64) -> Result<(u64, u64), String> {
    let fetch = Message::Fetch { from_slot, max: 10 };
    let (_, out) = h.call(|ctx| l.on_message(ctx, N2, fetch));
    match sends(&out)[..] {
        [(N2, Role::Learner, Message::Compacted { upto, commit })] => Ok((upto, commit)),
        _ => Err(format!("{out:?}")),
    }
}

/// A learner compacting its log, driven as the driver does: its messages
/// to itself go at once, or (`after_sync`) once the disk has synced.
struct Compacting {
    h: Harness,
    l: Learner,
    held: Vec<Message>,
}

impl Compacting {
    fn new(cfg: &LearnerConfig) -> Compacting {
        let mut h = Harness::new();
        let members = Membership::all_voting(3);
        let (l, _) = h.call(|ctx| Learner::recover(N1, &members, cfg.clone(), ctx));
        Compacting {
            h,
            l,
            held: Vec::new(),
        }
    }

    fn run(&mut self, from: NodeId, msg: Message) {
        let (_, out) = self.h.call(|ctx| self.l.on_message(ctx, from, msg));
        for c in out {
            if let Command::Send {
                to: N1,
                role: Role::Learner,
                msg,
                after_sync,
            } = c
            {
                if after_sync {
                    self.held.push(msg);
                } else {
                    self.run(N1, msg);
                }
            }
        }
    }

    fn decide(&mut self, slot: u64) {
        let value = Value::Batch(vec![update(N0, slot)]);
        self.run(N0, Message::Decided { slot, value });
    }

    fn sync(&mut self) {
        self.h.disk.sync();
        for msg in std::mem::take(&mut self.held) {
            self.run(N1, msg);
        }
    }

    /// A crash of a copy of the disk must leave the log holding every
    /// slot from the compaction point up; the point it came back with.
    fn crash(&self, seed: u64) -> Result<u64, String> {
        let mut disk = self.h.disk.clone();
        disk.crash(&mut Rng::new(seed));
        let point = state::load_u64(&disk, state::Meta::Compacted);
        let commit = state::last_chosen_slot(&disk);
        match (point + 1..=commit).find(|&s| state::load_chosen(&disk, s).is_none()) {
            Some(slot) => Err(format!(
                "seed {seed}: slot {slot} is below the commit index {commit} and above the \
                 compaction point {point}, but not in the log"
            )),
            None => Ok(point),
        }
    }
}

/// Compact a log of 40 slots to 31, crashing copies of the disk before
/// and after the sync that covers the point; how many crashes lost the
/// point, or the first crash that left a hole in the log.
fn compact_and_crash(cfg: &LearnerConfig) -> Result<u32, String> {
    let mut lost = 0;
    for seed in 0..20 {
        let mut c = Compacting::new(cfg);
        for slot in 1..=40 {
            c.decide(slot);
        }
        c.sync();
        state::store_u64(&mut c.h.disk, state::Meta::Applied, 40);
        c.decide(41);
        let point = state::load_u64(&c.h.disk, state::Meta::Compacted);
        assert_eq!(point, 31, "compacted to the slot bound");
        // Reads skip the dropped slots at once.
        assert_eq!(state::load_chosen_range(&c.h.disk, 1, 1)[0].0, 32);
        c.decide(42);
        if c.crash(seed)? == 0 {
            lost += 1;
        }
        // Synced: the store drops what is below the point (all but a
        // straddling file here).
        c.sync();
        let held = c.h.disk.table(Table::Log).len();
        assert!(held < 20, "{held} entries still held");
        // What the store still holds below the point stays unread.
        let slot_31 = [&[1u8][..], &31u64.to_be_bytes()].concat();
        assert!(c.h.disk.get(Table::Log, &slot_31).is_some(), "straddles");
        assert_eq!(state::load_chosen(&c.h.disk, 31), None);
        assert_eq!(state::load_chosen_range(&c.h.disk, 1, 1)[0].0, 32);
        assert_eq!(c.crash(seed)?, 31);
    }
    Ok(lost)
}

/// Compaction only writes its point; the store reclaims the entries
/// below it once the point is durable. A crash before that must not keep
/// an older point without the entries it says the log holds (the store
/// drops files at once, not in the journal's order). A learner that has
/// them dropped first is caught.
#[test]
fn the_log_is_reclaimed_only_once_its_compaction_point_is_durable() {
    let cfg = LearnerConfig {
        retain_slots: 10,
        keep_applied: 0,
        ..LearnerConfig::default()
    };
    let lost = compact_and_crash(&cfg).expect("no hole in the log");
    assert!(lost > 0, "some crash lost the unsynced compaction point");
    let broken = LearnerConfig {
        bug_reclaim_before_sync: true,
        ..cfg
    };
    let caught = compact_and_crash(&broken).expect_err("a hole in the log");
    assert!(caught.contains("not in the log"), "{caught}");
}

// ---- applier ----

/// An update `PUT path` from `origin`, encoded as the gateway does.
fn put(origin: NodeId, seq: u64, path: &str) -> Update {
    let request = ordo::http::request::ProxiedRequest {
        method: "PUT".into(),
        path_and_query: path.into(),
        headers: Vec::new(),
        body: Bytes::from(format!("v{seq}")),
    };
    Update {
        payload: request.encode(),
        ..update(origin, seq)
    }
}

fn keyed(concurrency: usize) -> ApplierConfig {
    let rule = ordo::apply::resource::PathRule { depth: None };
    ApplierConfig {
        resources: ordo::apply::resource::Resources::by_path(rule),
        concurrency,
        ..ApplierConfig::default()
    }
}

fn ok(status: u16) -> BackendReply {
    BackendReply::Response {
        status,
        body: Bytes::new(),
        digest: status as u64,
    }
}

/// The backend calls among `out`, as (slot, index).
fn calls(out: &[Command]) -> Vec<(u64, u32)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Apply { slot, index, .. } => Some((*slot, *index)),
            _ => None,
        })
        .collect()
}

fn answered(out: &[Command]) -> Vec<u64> {
    out.iter()
        .filter_map(|c| match c {
            Command::Client(ClientOutcome::Answer { slot, .. }) => Some(*slot),
            _ => None,
        })
        .collect()
}

#[test]
fn keyed_applier_runs_other_resources_while_one_retries_and_keeps_each_in_order() {
    let mut h = Harness::new();
    let slots = [
        vec![put(N1, 1, "/kv/a")],
        vec![put(N1, 2, "/kv/b"), put(N1, 3, "/kv/a/x")],
        vec![put(N1, 4, "/kv/a?v=2")],
        vec![put(N1, 5, "/kv/c")],
    ];
    for (i, batch) in slots.iter().enumerate() {
        state::store_chosen(&mut h.disk, i as u64 + 1, &Value::Batch(batch.clone()));
    }
    let (mut a, out) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], keyed(8), ctx));
    // /kv/a/x and the second /kv/a wait for the first /kv/a; the rest go.
    assert_eq!(calls(&out), vec![(1, 0), (2, 0), (4, 0)]);
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, ok(503)));
    assert!(calls(&out).is_empty(), "nothing new may start: {out:?}");
    let (_, out) = h.call_applier(|ctx| {
        a.on_backend_reply(ctx, 4, 0, ok(201));
        a.on_backend_reply(ctx, 2, 0, ok(201))
    });
    assert_eq!(answered(&out), vec![4, 2], "answered while /kv/a retries");
    assert_eq!(a.applied(), 0, "the applied index is the contiguous prefix");
    let (_, out) = h.call_applier(|ctx| a.on_timer(ctx, Timer::ApplyRetry));
    assert_eq!(calls(&out), vec![(1, 0)], "the retry");
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, ok(204)));
    assert_eq!(answered(&out), vec![1]);
    assert_eq!(
        calls(&out),
        vec![(2, 1)],
        "then /kv/a/x, before the next /kv/a"
    );
    assert_eq!(a.applied(), 1);
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 2, 1, ok(201)));
    assert_eq!(calls(&out), vec![(3, 0)]);
    assert_eq!(a.applied(), 2);
    h.call_applier(|ctx| a.on_backend_reply(ctx, 3, 0, ok(204)));
    assert_eq!(a.applied(), 4, "slot 4 was done already");
    let order: Vec<u64> = a
        .journal
        .iter()
        .map(|j| match j {
            ordo::apply::applier::Applied::Update { slot, .. } => *slot,
            ordo::apply::applier::Applied::Duplicate { slot, .. } => *slot,
        })
        .collect();
    assert_eq!(order, vec![1, 2, 2, 3, 4], "the journal is in log order");
}

#[test]
fn keyed_applier_keeps_to_its_concurrency_and_unkeyed_runs_one_at_a_time() {
    for (cfg, first) in [(keyed(3), 3), (ApplierConfig::default(), 1)] {
        let mut h = Harness::new();
        for slot in 1..=10 {
            let u = put(N0, slot, &format!("/kv/{slot}"));
            state::store_chosen(&mut h.disk, slot, &Value::Batch(vec![u]));
        }
        let (mut a, out) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], cfg, ctx));
        let mut out_now = calls(&out);
        assert_eq!(out_now.len(), first);
        let mut done = Vec::new();
        while let Some((slot, index)) = out_now.pop() {
            let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, slot, index, ok(201)));
            done.push(slot);
            out_now.extend(calls(&out));
            assert!(out_now.len() <= first, "{} calls out", out_now.len());
        }
        assert_eq!(a.applied(), 10);
        done.sort();
        assert_eq!(done, (1..=10).collect::<Vec<_>>(), "each applied once");
    }
}

/// A client's `Idempotency-Key` orders across resources: the retry must
/// find the first use's record, so it waits for it.
#[test]
fn keyed_applier_answers_a_client_retry_on_another_path_with_the_first_answer() {
    let mut h = Harness::new();
    let key = Some(Bytes::from_static(b"client-key"));
    let first = Update {
        key: key.clone(),
        ..put(N1, 1, "/kv/a")
    };
    let retry = Update {
        key,
        ..put(N1, 2, "/kv/b")
    };
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![first]));
    state::store_chosen(&mut h.disk, 2, &Value::Batch(vec![retry.clone()]));
    let (mut a, out) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], keyed(8), ctx));
    assert_eq!(
        calls(&out),
        vec![(1, 0)],
        "the retry waits for the first use"
    );
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, ok(201)));
    assert!(calls(&out).is_empty(), "the retry is not applied: {out:?}");
    let again = out.iter().any(|c| {
        matches!(c, Command::Client(ClientOutcome::Answer { id, slot: 1, status: 201, .. }) if *id == retry.id)
    });
    assert!(again, "the retry gets the first answer: {out:?}");
    assert_eq!(a.applied(), 2);
}

#[test]
fn applier_retries_a_retryable_failure_and_never_skips_the_slot() {
    let mut h = Harness::new();
    let u = update(N1, 1);
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![u.clone()]));
    let (mut a, out) =
        h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], ApplierConfig::default(), ctx));
    assert_eq!(
        out,
        vec![Command::Apply {
            slot: 1,
            index: 0,
            update: u.clone()
        }]
    );
    let busy = BackendReply::Response {
        status: 503,
        body: Bytes::new(),
        digest: 503,
    };
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, busy));
    assert!(matches!(
        out[..],
        [Command::SetTimer {
            timer: Timer::ApplyRetry,
            ..
        }]
    ));
    assert_eq!(a.applied(), 0);
    let (_, out) = h.call_applier(|ctx| a.on_timer(ctx, Timer::ApplyRetry));
    assert_eq!(
        out,
        vec![Command::Apply {
            slot: 1,
            index: 0,
            update: u.clone()
        }]
    );
    let done = BackendReply::Response {
        status: 404,
        body: Bytes::from_static(b"nope"),
        digest: 404,
    };
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, done));
    assert_eq!(
        out,
        vec![Command::Client(ClientOutcome::Answer {
            id: u.id,
            slot: 1,
            status: 404,
            body: Bytes::from_static(b"nope")
        })],
        "404 is the deterministic answer of this slot"
    );
    assert_eq!(a.applied(), 1);
}

#[test]
fn applier_skips_an_update_chosen_twice_and_rebuilds_that_memory_after_restart() {
    let mut h = Harness::new();
    let u = update(N0, 1);
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![u.clone()]));
    state::store_chosen(&mut h.disk, 2, &Value::Batch(vec![u.clone()]));
    let (mut a, _) =
        h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], ApplierConfig::default(), ctx));
    let ok = BackendReply::Response {
        status: 200,
        body: Bytes::new(),
        digest: 200,
    };
    let (_, out) = h.call_applier(|ctx| {
        a.on_message(ctx, N1, Message::Committed { commit: 1 });
        a.on_backend_reply(ctx, 1, 0, ok)
    });
    assert!(out.is_empty(), "another node's update is not answered here");
    let (_, out) = h.call_applier(|ctx| a.on_message(ctx, N1, Message::Committed { commit: 2 }));
    assert!(out.is_empty(), "the duplicate in slot 2 is not applied");
    assert_eq!(a.applied(), 2);
    // A node that restarts after slot 1 must skip slot 2 the same way.
    state::store_u64(&mut h.disk, state::Meta::Applied, 1);
    let (a, out) =
        h.call_applier(|ctx| Applier::recover(N2, &[N0, N1, N2], ApplierConfig::default(), ctx));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.applied(), 2);
}

#[test]
fn a_client_retry_with_the_same_key_gets_the_first_answer_and_is_not_applied_again() {
    let mut h = Harness::new();
    let mut first = update(N0, 1);
    first.key = Some(Bytes::from_static(b"order-17"));
    // The retry went to another node after a failover: another id.
    let mut retry = update(N1, 1);
    retry.key = first.key.clone();
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![first.clone()]));
    state::store_chosen(&mut h.disk, 2, &Value::Batch(vec![retry.clone()]));
    let (mut a, out) =
        h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], ApplierConfig::default(), ctx));
    assert!(matches!(out[..], [Command::Apply { slot: 1, .. }]));
    let created = BackendReply::Response {
        status: 201,
        body: Bytes::from_static(b"created"),
        digest: 201,
    };
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, created));
    assert_eq!(
        out,
        vec![Command::Client(ClientOutcome::Answer {
            id: retry.id,
            slot: 1,
            status: 201,
            body: Bytes::from_static(b"created")
        })],
        "slot 2 is not sent to the backend; the retry's origin gets the first answer"
    );
    assert_eq!(a.applied(), 2);
    // A node that restarts between the two slots decides the same way.
    state::store_u64(&mut h.disk, state::Meta::Applied, 1);
    let (a, out) =
        h.call_applier(|ctx| Applier::recover(N2, &[N0, N1, N2], ApplierConfig::default(), ctx));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(a.applied(), 2);
}

#[test]
fn a_client_key_is_forgotten_after_its_window() {
    let mut h = Harness::new();
    let cfg = ApplierConfig {
        client_key_window_slots: 2,
        ..ApplierConfig::default()
    };
    let mut u = update(N1, 1);
    u.key = Some(Bytes::from_static(b"k"));
    let mut again = update(N1, 2);
    again.key = u.key.clone();
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![u]));
    for slot in 2..=3 {
        state::store_chosen(&mut h.disk, slot, &Value::Noop);
    }
    state::store_chosen(&mut h.disk, 4, &Value::Batch(vec![again.clone()]));
    let (mut a, _) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], cfg, ctx));
    let ok = BackendReply::Response {
        status: 200,
        body: Bytes::new(),
        digest: 200,
    };
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, ok));
    assert!(
        matches!(
            &out[..],
            [
                Command::Client(ClientOutcome::Answer { .. }),
                Command::Apply { slot: 4, .. }
            ]
        ),
        "three slots later the key is new again: {out:?}"
    );
}

#[test]
fn a_leader_dates_its_lease_by_the_latest_round_a_quorum_confirmed() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = lead(&mut h, &mut p, [N0, N1]);
    assert_eq!(p.lease_contact(), None, "no round confirmed yet");
    h.now = h.now + Duration::from_millis(100);
    let tick = h.now;
    let (_, out) = h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    let confirm = Message::Confirm { ballot, seq: 1 };
    let asked: Vec<NodeId> = sends(&out)
        .into_iter()
        .filter(|(_, r, m)| *r == Role::Acceptor && *m == confirm)
        .map(|(n, _, _)| n)
        .collect();
    assert_eq!(asked, vec![N0, N1, N2]);
    h.now = h.now + Duration::from_millis(5);
    let ok = Message::Confirmed { ballot, seq: 1 };
    h.call_applier(|ctx| p.on_message(ctx, N2, ok.clone()));
    assert_eq!(p.lease_contact(), None, "one acceptor is not a quorum");
    // Its no-op (slot 1) is committed: the leadership is established.
    h.call_applier(|ctx| p.on_message(ctx, N0, Message::Committed { commit: 1 }));
    h.call_applier(|ctx| p.on_message(ctx, N0, ok));
    assert_eq!(p.lease_contact(), Some(tick), "dated by the round's start");
}

/// Sim finding (the plain-read staleness check): after a restart of the
/// whole cluster a new leader's commit index was behind slots chosen
/// before the restart, its heartbeats renewed the followers' read
/// leases, and a follower served plain reads without acknowledged
/// updates. A leader renews no lease, its own or its followers', until it
/// has committed every slot it took over.
#[test]
fn a_new_leader_renews_no_read_lease_until_it_has_committed_what_it_took_over() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    // N1 accepted a value in slot 1 under an earlier leader.
    let (ballot, out) = lead_taking_over_slot_1(&mut h, &mut p, b(1, N2));
    let heartbeats = |out: &[Command]| -> Vec<bool> {
        sends(out)
            .into_iter()
            .filter_map(|(_, _, m)| match m {
                Message::Heartbeat { lease, .. } => Some(lease),
                _ => None,
            })
            .collect()
    };
    assert_eq!(heartbeats(&out), vec![false, false], "not established yet");
    h.now = h.now + Duration::from_millis(100);
    let tick = h.now;
    let (_, out) = h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    assert_eq!(heartbeats(&out), vec![false, false]);
    for n in [N0, N1] {
        let ok = Message::Confirmed { ballot, seq: 1 };
        h.call_applier(|ctx| p.on_message(ctx, n, ok));
    }
    assert_eq!(p.lease_contact(), None, "slot 1 is not committed");
    h.call_applier(|ctx| p.on_message(ctx, N0, Message::Committed { commit: 1 }));
    assert_eq!(p.lease_contact(), Some(tick));
    h.now = h.now + Duration::from_millis(100);
    let (_, out) = h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    assert_eq!(heartbeats(&out), vec![true, true]);

    // A follower dates its lease only from heartbeats that say so.
    let (mut f, _) = proposer(&mut h, N1);
    let hb = |lease| Message::Heartbeat {
        ballot,
        commit: 0,
        lease,
    };
    h.call_applier(|ctx| f.on_message(ctx, N0, hb(false)));
    assert_eq!(f.lease_contact(), None);
    let at = h.now;
    h.call_applier(|ctx| f.on_message(ctx, N0, hb(true)));
    assert_eq!(f.lease_contact(), Some(at));
}

/// A harness whose disk holds `log` from slot 1 on.
fn with_log(log: &[Value]) -> Harness {
    let mut h = Harness::new();
    for (i, v) in log.iter().enumerate() {
        state::store_chosen(&mut h.disk, i as u64 + 1, v);
    }
    h
}

/// Apply `log` from a node that had applied `applied_before` slots of
/// it (a restart), answering every call; what the last slot did.
fn applied_journal(cfg: &ApplierConfig, log: &[Value], applied_before: u64) -> Vec<String> {
    let mut h = with_log(log);
    state::store_u64(&mut h.disk, state::Meta::Applied, applied_before);
    let (mut a, mut out) =
        h.call_applier(|ctx| Applier::recover(N0, &[N0, N1, N2], cfg.clone(), ctx));
    let mut journal = Vec::new();
    loop {
        journal.append(&mut a.journal);
        let Some(pos) = out.iter().position(|c| matches!(c, Command::Apply { .. })) else {
            break;
        };
        let Command::Apply { slot, index, .. } = out.remove(pos) else {
            unreachable!("matched above")
        };
        let ok = BackendReply::Response {
            status: 200,
            body: Bytes::new(),
            digest: 200,
        };
        out.extend(
            h.call_applier(|ctx| a.on_backend_reply(ctx, slot, index, ok))
                .1,
        );
    }
    let last = log.len() as u64;
    assert_eq!(a.applied(), last);
    let slot = format!("slot: {last}");
    journal
        .into_iter()
        .map(|e| format!("{e:?}"))
        .filter(|e| e.contains(&slot))
        .collect()
}

/// Review finding: the dedupe rule must depend on the log alone, or a
/// node that restarts decides a duplicate differently from one that
/// did not, and their backends diverge.
#[test]
fn the_dedupe_decision_is_the_same_live_and_after_a_restart() {
    let cfg = ApplierConfig {
        dedupe_window_slots: 3,
        ..ApplierConfig::default()
    };
    let x = update(N1, 7);
    let log = [
        Value::Batch(vec![x.clone()]),
        Value::Batch(vec![x.clone()]),
        Value::Noop,
        Value::Noop,
        Value::Batch(vec![x.clone()]),
    ];
    let live = applied_journal(&cfg, &log, 0);
    let restarted = applied_journal(&cfg, &log, 4);
    assert_eq!(
        live, restarted,
        "slot 5 decided differently after a restart"
    );
}

/// The dedupe window is bounded in ids too (its memory: a node's RSS
/// grew past 100 MB under `scripts/bench` with a window of slots alone),
/// and that bound is the log's as well: whole slots leave it, oldest
/// first, and a restart decides as a node that went on.
#[test]
fn the_dedupe_window_bounded_in_ids_decides_the_same_after_a_restart() {
    let bounded = ApplierConfig {
        dedupe_window_ids: 2,
        ..ApplierConfig::default()
    };
    let x = update(N1, 7);
    let log = [
        Value::Batch(vec![x.clone()]),
        Value::Batch(vec![update(N1, 8), update(N2, 1)]),
        Value::Batch(vec![update(N2, 2)]),
        Value::Batch(vec![x.clone()]),
    ];
    // Before slot 4: x (latest slot 1), two ids of slot 2 and one of
    // slot 3 make four; slots 1 and 2 leave, and x is not a duplicate.
    let live = applied_journal(&bounded, &log, 0);
    assert!(
        live.iter().any(|e| e.starts_with("Update")),
        "slot 4's x is applied: {live:?}"
    );
    for applied_before in 1..=3 {
        assert_eq!(
            applied_journal(&bounded, &log, applied_before),
            live,
            "slot 4 decided differently after a restart at {applied_before}"
        );
    }
    // Within the bound, it is one.
    let wide = applied_journal(&ApplierConfig::default(), &log, 0);
    assert!(
        wide.iter().any(|e| e.starts_with("Duplicate")),
        "slot 4's x is a duplicate: {wide:?}"
    );
}

/// A restart reads the window's slots of log a page at a time, and the
/// id bound holds while it does (not only once the next slot comes):
/// a whole window of slots was in memory at once before.
#[test]
fn a_restart_rebuilds_the_dedupe_window_within_its_id_bound() {
    let bounded = ApplierConfig {
        dedupe_window_ids: 10,
        ..ApplierConfig::default()
    };
    let x = update(N1, 7);
    // x, then 698 slots of one new id each (three pages), then x again.
    let mut log = vec![Value::Batch(vec![x.clone()])];
    log.extend((2..700).map(|seq| Value::Batch(vec![update(N2, seq)])));
    log.push(Value::Batch(vec![x]));
    // A node that applied all of the log it has (so it takes no slot,
    // whose admission would trim the window anyway) holds the last ten
    // slots' ids, not all 699.
    let mut h = with_log(&log[..699]);
    state::store_u64(&mut h.disk, state::Meta::Applied, 699);
    let (a, _) = h.call_applier(|ctx| Applier::recover(N0, &[N0, N1, N2], bounded.clone(), ctx));
    assert_eq!(a.dedupe_ids(), 10);
    // And it decides slot 700 as a node that never stopped: x is out.
    let live = applied_journal(&bounded, &log, 0);
    assert!(live.iter().all(|e| e.starts_with("Update")), "{live:?}");
    assert_eq!(applied_journal(&bounded, &log, 699), live);
}

/// Review finding: an update of ours that came back from a forward may
/// have a proposed duplicate somewhere, so stepping down must not refuse
/// it (503 means "never applied"); the client's deadline decides.
#[test]
fn a_returned_forward_is_never_refused_on_step_down() {
    let mut h = Harness::new();
    let cfg = ProposerConfig {
        window: 1,
        ..ProposerConfig::default()
    };
    let (mut p, _) = h.call_applier(|ctx| {
        Proposer::recover(
            N1,
            Membership::all_voting(3),
            cfg,
            ProposerBugs::default(),
            ctx,
        )
    });
    let ballot = lead(&mut h, &mut p, [N1, N2]);
    assert!(p.is_leader());
    // The window holds the leader's no-op; this waits in the queue.
    let u = update(N1, 42);
    let back = Message::ForwardRejected {
        updates: vec![u.clone()],
        hops: 0,
    };
    h.call_applier(|ctx| p.on_message(ctx, N2, back));
    assert_eq!(p.queued(), 1);
    let rej = Message::Rejected {
        ballot,
        promised: b(5, N0),
    };
    let (_, out) = h.call_applier(|ctx| p.on_message(ctx, N0, rej));
    let refused = out.iter().any(
        |c| matches!(c, Command::Client(ClientOutcome::Refused { ids, .. }) if ids.contains(&u.id)),
    );
    assert!(!refused, "{out:?}");
}

/// Leader stickiness: an acceptor that hears from its leader refuses a
/// rival's prepare, but not the preferred leader's takeover.
#[test]
fn an_acceptor_that_hears_its_leader_refuses_rivals_but_not_a_takeover() {
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    let accept = Message::Accept {
        ballot: b(1, N2),
        slot: 1,
        value: Value::Noop,
    };
    h.call_applier(|ctx| a.on_message(ctx, N2, accept));
    let rival = Message::Prepare {
        ballot: b(2, N1),
        from_slot: 1,
        takeover: false,
    };
    let (_, out) = h.call_applier(|ctx| a.on_message(ctx, N1, rival.clone()));
    let rejected = Message::Rejected {
        ballot: b(2, N1),
        promised: b(1, N2),
    };
    assert_eq!(out, vec![plain(N1, Role::Proposer, rejected)]);
    let takeover = Message::Prepare {
        ballot: b(3, N0),
        from_slot: 1,
        takeover: true,
    };
    let (_, out) = h.call_applier(|ctx| a.on_message(ctx, N0, takeover));
    assert!(
        matches!(&sends(&out)[0].2, Message::Promise { .. }),
        "{out:?}"
    );
    // Once the leader has been silent for the lease, anyone may prepare.
    h.now = h.now + Duration::from_secs(2);
    let later = Message::Prepare {
        ballot: b(4, N1),
        from_slot: 1,
        takeover: false,
    };
    let (_, out) = h.call_applier(|ctx| a.on_message(ctx, N1, later));
    assert!(
        matches!(&sends(&out)[0].2, Message::Promise { .. }),
        "{out:?}"
    );
}

// ---- divergence ----

fn ok_reply(body: &'static [u8]) -> BackendReply {
    BackendReply::Response {
        status: 200,
        body: Bytes::from_static(body),
        digest: ordo::apply::digest::response(200, body, &[]),
    }
}

/// Node `me` applies slot 1 (one update of its own) with `body`.
fn applied_slot_1(h: &mut Harness, me: NodeId, cfg: ApplierConfig, body: &'static [u8]) -> Applier {
    let u = update(me, 1);
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![u]));
    let (mut a, _) = h.call(|ctx| Applier::recover(me, &[N0, N1, N2], cfg, ctx));
    h.call(|ctx| a.on_backend_reply(ctx, 1, 0, ok_reply(body)));
    a
}

fn digest_of(body: &'static [u8]) -> u64 {
    ordo::apply::digest::fold(
        ordo::apply::digest::EMPTY,
        ordo::apply::digest::response(200, body, &[]),
    )
}

fn digests(slot: u64, d: u64) -> Message {
    Message::Digests {
        entries: vec![(slot, d)],
        ask: false,
        answer: false,
    }
}

#[test]
fn an_applier_sends_its_digests_to_every_peer_soon_after_applying() {
    let mut h = Harness::new();
    let u = update(N0, 1);
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![u]));
    let (mut a, _) =
        h.call(|ctx| Applier::recover(N0, &[N0, N1, N2], ApplierConfig::default(), ctx));
    // Long after its recovery, and not behind: its digests do not ask.
    h.now = h.now + Duration::from_secs(3);
    let (_, out) = h.call(|ctx| a.on_backend_reply(ctx, 1, 0, ok_reply(b"one")));
    let at = h.now + Duration::from_millis(20);
    assert!(out.contains(&Command::SetTimer {
        timer: Timer::Digests,
        at
    }));
    h.now = at;
    let (_, out) = h.call(|ctx| a.on_timer(ctx, Timer::Digests));
    let msg = digests(1, digest_of(b"one"));
    assert_eq!(
        out,
        vec![
            plain(N1, Role::Applier, msg.clone()),
            plain(N2, Role::Applier, msg)
        ]
    );
}

/// With answers after agreement, the node whose client waits (the
/// update's origin) gets the digest at once; the other peers get it with
/// the next batch, as without agreement: only the origin waits on it.
/// Nobody gets a digest twice (a repeat of a settled slot would be taken
/// for a late one, and answered).
#[test]
fn with_answers_after_agreement_the_origin_gets_the_digest_at_once_the_others_batched() {
    let mut h = Harness::new();
    for slot in [1, 2] {
        let u = update(N1, slot);
        state::store_chosen(&mut h.disk, slot, &Value::Batch(vec![u]));
    }
    let cfg = ApplierConfig {
        answer_after_agreement: true,
        ..ApplierConfig::default()
    };
    let (mut a, _) = h.call(|ctx| Applier::recover(N0, &[N0, N1, N2], cfg, ctx));
    h.now = h.now + Duration::from_secs(3);
    let sent = |out: &[Command]| -> Vec<Command> {
        out.iter()
            .filter(|c| matches!(c, Command::Send { .. }))
            .cloned()
            .collect()
    };
    let entries = |e: Vec<(u64, u64)>| Message::Digests {
        entries: e,
        ask: false,
        answer: false,
    };
    let (one, two) = (digest_of(b"one"), digest_of(b"two"));
    let (_, out) = h.call(|ctx| a.on_backend_reply(ctx, 1, 0, ok_reply(b"one")));
    assert_eq!(
        sent(&out),
        vec![plain(N1, Role::Applier, entries(vec![(1, one)]))]
    );
    let at = h.now + Duration::from_millis(20);
    assert!(out.contains(&Command::SetTimer {
        timer: Timer::Digests,
        at
    }));
    let (_, out) = h.call(|ctx| a.on_backend_reply(ctx, 2, 0, ok_reply(b"two")));
    assert_eq!(
        sent(&out),
        vec![plain(N1, Role::Applier, entries(vec![(2, two)]))],
        "only what N1 has not had"
    );
    h.now = at;
    let (_, out) = h.call(|ctx| a.on_timer(ctx, Timer::Digests));
    assert_eq!(
        out,
        vec![plain(N2, Role::Applier, entries(vec![(1, one), (2, two)]))]
    );
}

#[test]
fn a_node_that_differs_from_a_majority_marks_itself_diverged_durably() {
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, ApplierConfig::default(), b"mine");
    let theirs = digest_of(b"theirs");
    h.call(|ctx| a.on_message(ctx, N1, digests(1, theirs)));
    assert_eq!(a.node_state().diverged, None, "one peer is not a majority");
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, digests(1, theirs)));
    let d = a.node_state().diverged.clone().expect("diverged");
    assert_eq!(
        (d.slot, d.ours, d.majority),
        (1, digest_of(b"mine"), Some(theirs))
    );
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Send {
                after_sync: true,
                ..
            }
        )),
        "the mark asks for a sync: {out:?}"
    );
    assert_eq!(state::load_node_state(&h.disk), *a.node_state());
    // A restart keeps it.
    let (b, _) = h.call(|ctx| Applier::recover(N0, &[N0, N1, N2], ApplierConfig::default(), ctx));
    assert_eq!(b.node_state(), a.node_state());
}

#[test]
fn a_node_that_agrees_with_one_peer_is_not_diverged_and_three_answers_are_no_majority() {
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, ApplierConfig::default(), b"same");
    h.call(|ctx| a.on_message(ctx, N1, digests(1, digest_of(b"same"))));
    h.call(|ctx| a.on_message(ctx, N2, digests(1, digest_of(b"other"))));
    assert_eq!(a.node_state().diverged, None);
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, ApplierConfig::default(), b"a");
    h.call(|ctx| a.on_message(ctx, N1, digests(1, digest_of(b"b"))));
    h.call(|ctx| a.on_message(ctx, N2, digests(1, digest_of(b"c"))));
    let d = a
        .node_state()
        .diverged
        .clone()
        .expect("no majority is a divergence too");
    assert_eq!((d.slot, d.majority), (1, None));
}

#[test]
fn with_answers_after_agreement_the_origin_waits_for_a_majority_and_refuses_a_minority_answer() {
    let cfg = ApplierConfig {
        answer_after_agreement: true,
        ..ApplierConfig::default()
    };
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, cfg.clone(), b"mine");
    let id = update(N0, 1).id;
    let (_, out) = h.call(|ctx| a.on_message(ctx, N1, digests(1, digest_of(b"mine"))));
    assert_eq!(
        applying(out),
        vec![Command::Client(ClientOutcome::Answer {
            id,
            slot: 1,
            status: 200,
            body: Bytes::from_static(b"mine"),
        })],
        "held until a peer agreed"
    );
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, cfg, b"mine");
    let (_, out) = h.call(|ctx| a.on_message(ctx, N1, digests(1, digest_of(b"theirs"))));
    assert!(
        applying(out).is_empty(),
        "one differing peer settles nothing"
    );
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, digests(1, digest_of(b"theirs"))));
    assert!(
        out.contains(&Command::Client(ClientOutcome::Disagreed {
            id,
            slot: 1,
            majority_differs: true,
        })),
        "{out:?}"
    );
}

#[test]
fn an_operator_clears_a_divergence_and_disables_and_enables_a_node_durably() {
    use ordo::apply::applier::Operator;
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, ApplierConfig::default(), b"mine");
    let theirs = digest_of(b"theirs");
    h.call(|ctx| {
        a.on_message(ctx, N1, digests(1, theirs));
        a.on_message(ctx, N2, digests(1, theirs))
    });
    assert!(a.node_state().diverged.is_some());
    h.call(|ctx| a.operate(ctx, Operator::ClearDivergence));
    assert_eq!(a.node_state().diverged, None);
    assert_eq!(a.node_state().cleared_upto, 1);
    // A late copy of the old digests does not bring it back.
    h.call(|ctx| a.on_message(ctx, N2, digests(1, theirs)));
    assert_eq!(a.node_state().diverged, None);
    h.call(|ctx| {
        a.operate(
            ctx,
            Operator::Disable {
                reason: "maintenance".into(),
            },
        )
    });
    assert_eq!(
        state::load_node_state(&h.disk).disabled.as_deref(),
        Some("maintenance")
    );
    h.call(|ctx| a.operate(ctx, Operator::Enable));
    assert_eq!(state::load_node_state(&h.disk), *a.node_state());
    assert_eq!(a.node_state().disabled, None);
}

#[test]
fn a_late_node_asks_for_the_digests_it_missed_and_a_peer_answers_once() {
    let mut h = Harness::new();
    let mut a = applied_slot_1(&mut h, N0, ApplierConfig::default(), b"one");
    // Just recovered: its digests ask.
    let (_, out) = h.call(|ctx| a.on_timer(ctx, Timer::Digests));
    assert!(
        out.iter().all(|c| matches!(
            c,
            Command::Send {
                msg: Message::Digests { ask: true, .. },
                ..
            }
        )),
        "{out:?}"
    );
    let ask = Message::Digests {
        entries: vec![(1, digest_of(b"one"))],
        ask: true,
        answer: false,
    };
    let (_, out) = h.call(|ctx| a.on_message(ctx, N1, ask));
    let answer = Message::Digests {
        entries: vec![(1, digest_of(b"one"))],
        ask: false,
        answer: true,
    };
    assert_eq!(out, vec![plain(N1, Role::Applier, answer.clone())]);
    // An answer is never answered.
    let (_, out) = h.call(|ctx| a.on_message(ctx, N1, answer));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_paused_applier_stops_at_a_slot_boundary_and_a_reseed_moves_its_applied_index() {
    use ordo::apply::applier::Operator;
    let mut h = Harness::new();
    for slot in 1..=3 {
        state::store_chosen(&mut h.disk, slot, &Value::Batch(vec![update(N0, slot)]));
    }
    let (mut a, _) =
        h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], ApplierConfig::default(), ctx));
    h.call(|ctx| a.on_message(ctx, N1, Message::Committed { commit: 3 }));
    // Slot 1 is out to the backend when the pause comes: it finishes.
    h.call(|ctx| a.operate(ctx, Operator::Pause));
    assert_eq!(a.paused_at(), None, "slot 1 is half applied");
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, ok_reply(b"one")));
    assert!(
        !out.iter().any(|c| matches!(c, Command::Apply { .. })),
        "paused: slot 2 is not sent: {out:?}"
    );
    assert_eq!(a.paused_at(), Some(1));
    assert!(
        a.can_reseed(&h.disk, 4)
            .unwrap_err()
            .contains("reaches slot 3")
    );
    state::store_u64(&mut h.disk, state::Meta::Compacted, 2);
    assert!(
        a.can_reseed(&h.disk, 1)
            .unwrap_err()
            .contains("log starts after slot 2"),
        "an export older than this log is refused"
    );
    state::store_u64(&mut h.disk, state::Meta::Compacted, 0);
    let mut e = a.export(&h.disk).expect("paused");
    assert_eq!(e.slot, 1);
    e.slot = 2;
    e.client_keys = vec![(
        b"k".to_vec(),
        state::ClientKeyRecord {
            slot: 2,
            index: 0,
            status: 201,
            body: Bytes::from_static(b"x"),
        },
    )];
    h.call(|ctx| a.operate(ctx, Operator::Reseed(Box::new(e))));
    assert_eq!(a.applied(), 2);
    assert_eq!(state::load_u64(&h.disk, state::Meta::Applied), 2);
    assert!(state::load_client_key(&h.disk, b"k").is_some());
    // Resumed: it goes on at slot 3, not 2.
    let (_, out) = h.call_applier(|ctx| a.operate(ctx, Operator::Resume));
    assert!(
        matches!(out[..], [Command::Apply { slot: 3, .. }]),
        "{out:?}"
    );
}

/// Review finding: a reseeded node's dedupe window came only from the
/// export, in memory. Its log does not hold the slots before the export's
/// (it jumped a gap), so after a restart within the window it applied a
/// duplicate every other node skipped: its backend alone diverged.
#[test]
fn a_reseeded_node_skips_the_same_duplicates_after_a_restart() {
    use ordo::apply::applier::Operator;
    use ordo::apply::reseed::Envelope;
    let x = update(N0, 9);
    // Both the live node and the restarted one decide slot 6 (a copy of
    // an update applied at slot 4, which this log never held).
    let decide = |restart: bool| {
        let mut h = Harness::new();
        let (mut a, _) = h
            .call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], ApplierConfig::default(), ctx));
        h.call(|ctx| a.on_message(ctx, N1, Message::NeedsReseed { from: 1 }));
        h.call(|ctx| a.operate(ctx, Operator::Pause));
        let e = Envelope {
            slot: 5,
            recent: vec![(4, x.id)],
            client_keys: Vec::new(),
            backend: Vec::new(),
            eras: None,
        };
        h.call(|ctx| a.operate(ctx, Operator::Reseed(Box::new(e))));
        assert_eq!(state::load_u64(&h.disk, state::Meta::Compacted), 5);
        state::store_chosen(&mut h.disk, 6, &Value::Batch(vec![x.clone()]));
        let (a, out) = if restart {
            h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], ApplierConfig::default(), ctx))
        } else {
            let out = h
                .call_applier(|ctx| {
                    a.operate(ctx, Operator::Resume);
                    a.on_message(ctx, N1, Message::Committed { commit: 6 })
                })
                .1;
            (a, out)
        };
        let applies = out
            .iter()
            .filter(|c| matches!(c, Command::Apply { .. }))
            .count();
        (applies, a.applied())
    };
    assert_eq!(decide(false), (0, 6), "live: the copy is skipped");
    assert_eq!(
        decide(true),
        (0, 6),
        "after a restart: skipped the same way"
    );
}

// ---- rebuilding after lost state (paxos/rebuild.rs) ----

#[test]
fn a_rebuilding_acceptor_stays_silent_until_told_to_vote_and_then_promises_that_ballot() {
    let mut h = Harness::new();
    state::store_u64(&mut h.disk, state::Meta::Rebuilding, 1);
    let mut a = acceptor(&mut h);
    assert!(a.rebuilding());
    let prepare = Message::Prepare {
        ballot: b(3, N0),
        from_slot: 1,
        takeover: false,
    };
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, prepare.clone()));
    assert!(out.is_empty(), "no promise while rebuilding: {out:?}");
    let accept = Message::Accept {
        ballot: b(3, N0),
        slot: 1,
        value: Value::Noop,
    };
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, accept));
    assert!(out.is_empty(), "no vote while rebuilding: {out:?}");
    // Only its own proposer may end it.
    h.call(|ctx| a.on_message(ctx, N0, Message::StartVoting { ballot: b(7, N2) }));
    assert!(a.rebuilding());
    h.call(|ctx| a.on_message(ctx, N1, Message::StartVoting { ballot: b(7, N2) }));
    assert!(!a.rebuilding());
    assert_eq!(a.promised(), b(7, N2));
    assert_eq!(state::load_promised(&h.disk), b(7, N2));
    assert_eq!(state::load_u64(&h.disk, state::Meta::Rebuilding), 0);
    // Below the ballot it was told to promise: refused.
    let (_, out) = h.call(|ctx| a.on_message(ctx, N0, prepare));
    assert!(
        matches!(
            sends(&out)[..],
            [(N0, Role::Proposer, Message::Rejected { .. })]
        ),
        "{out:?}"
    );
}

#[test]
fn a_rebuilding_proposer_campaigns_only_above_every_voters_round() {
    let mut h = Harness::new();
    state::store_u64(&mut h.disk, state::Meta::Rebuilding, 1);
    let (mut p, out) = proposer(&mut h, N1);
    let nonce = match &sends(&out)[0].2 {
        Message::Rebuilding { nonce } => *nonce,
        m => panic!("expected Rebuilding, got {m:?}"),
    };
    let ask = Message::Rebuilding { nonce };
    let asks = vec![(N0, Role::Proposer, ask.clone()), (N2, Role::Proposer, ask)];
    assert_eq!(sends(&out), asks);
    // However long it waits, no campaign before every voter reported.
    h.now = h.now + Duration::from_secs(5);
    let (_, out) = h.call(|ctx| p.on_timer(ctx, Timer::Election));
    assert_eq!(sends(&out), asks, "asks again, does not campaign");
    h.call(|ctx| p.on_message(ctx, N0, Message::RebuildRound { nonce, round: 9 }));
    assert_eq!(p.rebuilding(), Some((vec![N2], None)));
    // An answer to another rebuild (sent before a wipe) does not count.
    let stale = Message::RebuildRound {
        nonce: nonce ^ 1,
        round: 2,
    };
    h.call(|ctx| p.on_message(ctx, N2, stale));
    assert_eq!(p.rebuilding(), Some((vec![N2], None)));
    h.call(|ctx| p.on_message(ctx, N2, Message::RebuildRound { nonce, round: 4 }));
    assert_eq!(p.rebuilding(), Some((vec![], Some(9))));
    let ballot = elect(&mut h, &mut p);
    assert_eq!(ballot, b(10, N1), "above the fence");
}

#[test]
fn a_proposer_reports_the_higher_of_its_round_and_its_acceptors_promise() {
    let mut h = Harness::new();
    state::store_promised(&mut h.disk, b(12, N2));
    let (mut p, _) = proposer(&mut h, N0);
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, Message::Rebuilding { nonce: 5 }));
    let answer = Message::RebuildRound {
        nonce: 5,
        round: 12,
    };
    assert_eq!(sends(&out), vec![(N1, Role::Proposer, answer)]);
}

// ---- promise paging ----

/// A one-update value with a 100-byte payload: it costs
/// `entry_cost` = 164 bytes of a promise page.
fn big(origin: NodeId, seq: u64) -> Value {
    let mut u = update(origin, seq);
    u.payload = Bytes::from(vec![b'x'; 100]);
    Value::Batch(vec![u])
}

fn page(
    ballot: Ballot,
    chosen_upto: u64,
    accepted: Vec<(u64, Ballot, Value)>,
    from_slot: u64,
    next_page: Option<u64>,
) -> Message {
    let accepted = accepted
        .into_iter()
        .map(|(slot, ballot, value)| AcceptedEntry {
            slot,
            ballot,
            value,
        })
        .collect();
    Message::Promise {
        ballot,
        chosen_upto,
        accepted,
        from_slot,
        next_page,
    }
}

fn prepare(ballot: Ballot, from_slot: u64) -> Message {
    Message::Prepare {
        ballot,
        from_slot,
        takeover: false,
    }
}

/// The accepts a leader sent to `to`, as (slot, value).
fn accepts_to(out: &[Command], to: NodeId) -> Vec<(u64, Value)> {
    sends(out)
        .into_iter()
        .filter(|(n, r, _)| *n == to && *r == Role::Acceptor)
        .filter_map(|(_, _, m)| match m {
            Message::Accept { slot, value, .. } => Some((slot, value)),
            _ => None,
        })
        .collect()
}

#[test]
fn acceptor_splits_a_promise_into_pages_within_its_byte_budget() {
    assert_eq!(entry_cost(&big(N0, 1)), 164);
    let mut h = Harness::new();
    // Two entries fit (328 bytes), a third would not (492).
    let mut a = acceptor_with_budget(&mut h, 400);
    let old = b(1, N0);
    for slot in 1..=4 {
        let m = Message::Accept {
            ballot: old,
            slot,
            value: big(N0, slot),
        };
        h.call(|ctx| a.on_message(ctx, N0, m));
    }
    // The old leader went quiet (no stickiness).
    h.now = h.now + Duration::from_secs(2);
    let ballot = b(2, N2);
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, prepare(ballot, 1)));
    let first = page(
        ballot,
        0,
        vec![(1, old, big(N0, 1)), (2, old, big(N0, 2))],
        1,
        Some(3),
    );
    assert_eq!(out, vec![durable(N2, Role::Proposer, first.clone())]);
    // A repeat gets the same page.
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, prepare(ballot, 1)));
    assert_eq!(out, vec![durable(N2, Role::Proposer, first)]);
    // The next page is a Prepare at the promised ballot from slot 3. The
    // node committed slot 3 meanwhile: the page says so, and starts after.
    h.call(|ctx| a.on_message(ctx, N1, Message::Committed { commit: 3 }));
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, prepare(ballot, 3)));
    let last = page(ballot, 3, vec![(4, old, big(N0, 4))], 3, None);
    assert_eq!(out, vec![durable(N2, Role::Proposer, last)]);
    assert_eq!(a.promised(), ballot, "a page request is not a new promise");
}

#[test]
fn acceptor_always_sends_at_least_one_entry_per_page() {
    let mut h = Harness::new();
    let mut a = acceptor_with_budget(&mut h, 10);
    for slot in [5, 9] {
        let m = Message::Accept {
            ballot: b(1, N0),
            slot,
            value: big(N0, slot),
        };
        h.call(|ctx| a.on_message(ctx, N0, m));
    }
    // The old leader went quiet (no stickiness).
    h.now = h.now + Duration::from_secs(2);
    let ballot = b(2, N2);
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, prepare(ballot, 1)));
    let one = page(ballot, 0, vec![(5, b(1, N0), big(N0, 5))], 1, Some(9));
    assert_eq!(out, vec![durable(N2, Role::Proposer, one)]);
    let (_, out) = h.call(|ctx| a.on_message(ctx, N2, prepare(ballot, 9)));
    let two = page(ballot, 0, vec![(9, b(1, N0), big(N0, 9))], 9, None);
    assert_eq!(out, vec![durable(N2, Role::Proposer, two)]);
}

#[test]
fn a_candidate_leads_only_once_a_quorum_sent_its_last_page() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = elect(&mut h, &mut p);
    let old = b(0, N1);
    // N1's first page: more follows from slot 3. The candidate asks for
    // it at once, and its election timer is pushed back (progress).
    let first = page(
        ballot,
        0,
        vec![(1, old, big(N1, 1)), (2, old, big(N1, 2))],
        1,
        Some(3),
    );
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, first.clone()));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], durable(N1, Role::Acceptor, prepare(ballot, 3)));
    assert!(matches!(
        out[1],
        Command::SetTimer {
            timer: Timer::Election,
            ..
        }
    ));
    // N2 is complete, N1 is not: one promise is not a majority.
    let (_, out) = h.call(|ctx| p.on_message(ctx, N2, page(ballot, 0, vec![], 1, None)));
    assert!(out.is_empty(), "{out:?}");
    assert!(!p.is_leader());
    // A duplicate of N1's first page, a page of an older ballot and a
    // page that does not start where N1 is expected to continue are
    // dropped without effect.
    let stale = page(b(0, N0), 0, vec![], 3, None);
    let skipping = page(ballot, 0, vec![], 4, None);
    for m in [first, stale, skipping] {
        let (_, out) = h.call(|ctx| p.on_message(ctx, N1, m));
        assert!(out.is_empty(), "{out:?}");
        assert!(!p.is_leader());
    }
    assert_eq!(p.dropped, 3);
    // The retransmission timer asks again whoever is incomplete, from
    // where each one stands: N0 from the start, N1 from slot 3.
    h.now = h.now + ProposerConfig::default().retransmit_after;
    let (_, out) = h.call(|ctx| p.on_timer(ctx, Timer::Tick));
    assert_eq!(
        sends(&out),
        vec![
            (N0, Role::Acceptor, prepare(ballot, 1)),
            (N1, Role::Acceptor, prepare(ballot, 3)),
        ]
    );
    // N1's last page; its node committed up to slot 2 meanwhile, which
    // counts: the leader leaves slots 1 and 2 alone.
    let last = page(ballot, 2, vec![(3, old, big(N1, 3))], 3, None);
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, last));
    assert!(p.is_leader());
    assert_eq!(accepts_to(&out, N1), vec![(3, big(N1, 3))]);
    assert!(out.contains(&plain(
        N0,
        Role::Learner,
        Message::CommitHint {
            commit: 2,
            leader: N0
        }
    )));
}

#[test]
fn the_highest_ballot_value_is_adopted_across_pages_and_acceptors() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let ballot = elect(&mut h, &mut p);
    let (lo, mid, hi) = (b(0, N1), b(0, N2), b(1, N2));
    let n1_pages = [
        page(
            ballot,
            0,
            vec![(1, lo, big(N1, 1)), (2, hi, big(N1, 2))],
            1,
            Some(4),
        ),
        page(ballot, 0, vec![(4, lo, big(N1, 4))], 4, Some(5)),
        page(ballot, 0, vec![(5, hi, big(N1, 5))], 5, None),
    ];
    let n2_pages = [
        page(
            ballot,
            0,
            vec![(1, mid, big(N2, 1)), (2, lo, big(N2, 2))],
            1,
            Some(4),
        ),
        page(
            ballot,
            0,
            vec![(4, hi, big(N2, 4)), (5, mid, big(N2, 5))],
            4,
            None,
        ),
    ];
    // Interleaved, as they might arrive.
    h.call(|ctx| p.on_message(ctx, N1, n1_pages[0].clone()));
    h.call(|ctx| p.on_message(ctx, N2, n2_pages[0].clone()));
    h.call(|ctx| p.on_message(ctx, N1, n1_pages[1].clone()));
    h.call(|ctx| p.on_message(ctx, N2, n2_pages[1].clone()));
    assert!(!p.is_leader(), "N1 has one page to go");
    let (_, out) = h.call(|ctx| p.on_message(ctx, N1, n1_pages[2].clone()));
    assert!(p.is_leader());
    assert_eq!(
        accepts_to(&out, N2),
        vec![
            (1, big(N2, 1)),
            (2, big(N1, 2)),
            (3, Value::Noop),
            (4, big(N2, 4)),
            (5, big(N1, 5)),
        ],
        "per slot, the value of the highest ballot any page reported"
    );
}

#[test]
fn pages_of_an_abandoned_election_do_not_count_for_the_next() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let first = elect(&mut h, &mut p);
    let old = b(0, N1);
    h.call(|ctx| {
        p.on_message(
            ctx,
            N1,
            page(first, 0, vec![(1, old, big(N1, 1))], 1, Some(2)),
        )
    });
    // The election times out: a higher ballot, every acceptor from the
    // start again.
    let second = elect(&mut h, &mut p);
    assert!(second > first);
    for n in [N1, N2] {
        let late = page(first, 0, vec![(2, old, big(N1, 2))], 2, None);
        h.call(|ctx| p.on_message(ctx, n, late));
    }
    assert!(!p.is_leader());
    h.call(|ctx| p.on_message(ctx, N2, page(second, 0, vec![], 1, None)));
    assert!(!p.is_leader(), "N1's pages were for the old ballot");
    let (_, out) = h.call(|ctx| {
        p.on_message(
            ctx,
            N1,
            page(second, 0, vec![(1, old, big(N1, 1))], 1, None),
        )
    });
    assert!(p.is_leader());
    assert_eq!(accepts_to(&out, N1), vec![(1, big(N1, 1))]);
}

/// The problem paging solves: a promise of the largest updates must not
/// outgrow a peer frame. With the default budget every page fits.
#[test]
fn every_page_of_a_promise_of_the_largest_updates_fits_in_a_peer_frame() {
    use ordo::config::MAX_BODY_BYTES_LIMIT;
    use ordo::mesh::frame::{Frame, MAX_FRAME_BYTES, encode};
    let mut h = Harness::new();
    let mut a = acceptor(&mut h);
    let value = |size: usize, seq: u64| {
        let mut u = update(N0, seq);
        u.payload = Bytes::from(vec![b'x'; size]);
        Value::Batch(vec![u])
    };
    // The largest body with headers, and some smaller ones.
    let sizes: Vec<usize> = [MAX_BODY_BYTES_LIMIT + (16 << 10); 3]
        .into_iter()
        .chain([3 << 20; 4])
        .chain([1 << 20; 4])
        .collect();
    let total: usize = sizes.iter().sum();
    assert!(total > MAX_FRAME_BYTES, "one promise would not fit");
    for (i, &size) in sizes.iter().enumerate() {
        let slot = i as u64 + 1;
        let m = Message::Accept {
            ballot: b(1, N0),
            slot,
            value: value(size, slot),
        };
        h.call(|ctx| a.on_message(ctx, N0, m));
    }
    h.now = h.now + Duration::from_secs(2);
    let ballot = b(2, N2);
    let mut from = Some(1);
    let mut seen = Vec::new();
    while let Some(from_slot) = from {
        let (_, out) = h.call(|ctx| a.on_message(ctx, N2, prepare(ballot, from_slot)));
        let [(_, _, msg)] = &sends(&out)[..] else {
            panic!("one page expected: {out:?}")
        };
        let frame = Frame::Msg {
            group: "svc".into(),
            role: Role::Proposer,
            msg: msg.clone(),
        };
        if let Err(e) = encode(&frame, MAX_FRAME_BYTES) {
            panic!("page from {from_slot}: {e}");
        }
        let Message::Promise {
            accepted,
            next_page,
            ..
        } = msg
        else {
            panic!("a promise expected: {msg:?}")
        };
        seen.extend(accepted.iter().map(|e| e.slot));
        from = *next_page;
    }
    assert_eq!(seen, (1..=sizes.len() as u64).collect::<Vec<_>>());
}

/// Review of the isolated-leader scenario: a read index asked of a node
/// that stopped leading was dropped, and the client waited out its whole
/// deadline. The former leader says no at once, and the origin refuses
/// the read (a read has no effect, so a refusal is always safe).
#[test]
fn a_read_index_asked_of_a_node_that_no_longer_leads_is_refused_at_once() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N1);
    let hb = Message::Heartbeat {
        ballot: b(3, N0),
        commit: 0,
        lease: true,
    };
    h.call(|ctx| p.on_message(ctx, N0, hb));
    let id = update(N1, 9).id;
    let (_, out) = h.call(|ctx| p.read(ctx, id));
    assert_eq!(
        sends(&out),
        vec![(N0, Role::Proposer, Message::ReadIndexRequest { id })]
    );
    // N0 is a follower now (here: a fresh one that knows no leader).
    let (mut former, _) = proposer(&mut h, N0);
    let (_, out) = h.call(|ctx| former.on_message(ctx, N1, Message::ReadIndexRequest { id }));
    assert_eq!(
        sends(&out),
        vec![(N1, Role::Proposer, Message::ReadIndexRefused { id })]
    );
    let (_, out) = h.call(|ctx| p.on_message(ctx, N0, Message::ReadIndexRefused { id }));
    assert_eq!(
        out,
        vec![Command::Client(ClientOutcome::ReadRefused {
            id,
            why: Refusal::NoLeader
        })]
    );
}

/// Review of the isolated-leader scenario: updates forwarded to a leader
/// that had just stepped down came back while no leader was known, were
/// dropped, and their clients waited out their deadlines for a 504. They
/// wait for the next leader instead, for at most two election timeouts.
#[test]
fn forwarded_updates_that_bounce_while_no_leader_is_known_go_to_the_next_leader() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N1);
    let heartbeat = |round, from| Message::Heartbeat {
        ballot: b(round, from),
        commit: 0,
        lease: true,
    };
    h.call(|ctx| p.on_message(ctx, N0, heartbeat(3, N0)));
    let (u, late) = (update(N1, 1), update(N1, 2));
    h.call(|ctx| p.submit(ctx, vec![u.clone()]));
    // N0 stepped down and no one leads yet: the forward comes back.
    h.now = h.now + ProposerConfig::default().election_timeout;
    let back = Message::ForwardRejected {
        updates: vec![u.clone()],
        hops: 0,
    };
    let (_, out) = h.call(|ctx| p.on_message(ctx, N0, back));
    assert!(
        out.is_empty(),
        "nowhere to send it, and no refusal: {out:?}"
    );
    // N2 is elected: the update goes there.
    let (_, out) = h.call(|ctx| p.on_message(ctx, N2, heartbeat(4, N2)));
    assert_eq!(
        sends(&out),
        vec![(
            N2,
            Role::Proposer,
            Message::Forward {
                updates: vec![u],
                hops: 1
            }
        )]
    );
    // One that waited longer than two election timeouts is dropped: its
    // client has long had its 504.
    h.now = h.now + ProposerConfig::default().election_timeout;
    let back = Message::ForwardRejected {
        updates: vec![late],
        hops: 0,
    };
    h.call(|ctx| p.on_message(ctx, N2, back));
    h.now = h.now + ProposerConfig::default().election_timeout * 3;
    let (_, out) = h.call(|ctx| p.on_message(ctx, N0, heartbeat(5, N0)));
    assert!(sends(&out).is_empty(), "{out:?}");
}

// ---- membership: eras in the log ----

/// Review: the learner wrote a change's era after the log entry that
/// holds it, so a crash between the two writes kept the entry and lost
/// the era, for good (the slot is never learned again). Whatever prefix
/// of the writes survives, a log that holds the change has its era.
#[test]
fn a_crash_never_keeps_a_change_in_the_log_without_its_era() {
    use ordo::paxos::membership::{ALPHA, Eras};
    let members = Membership::with_backups(4, 3);
    let change = Eras::genesis(&members.voters).change(
        vec![N0, NodeId(1), NodeId(3)],
        Vec::new(),
        "n2 lost",
    );
    let mut h = Harness::new();
    let (mut l, _) = h.call(|ctx| Learner::recover(N1, &members, LearnerConfig::default(), ctx));
    h.call(|ctx| {
        let value = Value::Config(change.clone());
        l.on_message(ctx, N0, Message::Decided { slot: 1, value })
    });
    assert!(h.disk.unsynced() >= 2, "the entry and the era are written");
    let mut seen_entry = false;
    let mut seen_without = false;
    for seed in 0..200 {
        let mut disk = h.disk.clone();
        disk.crash(&mut Rng::new(seed));
        let entry = state::load_chosen(&disk, 1).is_some();
        let eras = state::load_eras(&disk);
        seen_entry |= entry;
        seen_without |= !entry;
        let era_there =
            eras.is_some_and(|e| e.latest().chosen_at == 1 && e.latest().from == 1 + ALPHA);
        assert_eq!(
            entry, era_there,
            "crash seed {seed}: entry {entry}, era {era_there}"
        );
    }
    assert!(seen_entry && seen_without, "both outcomes were tried");
}

/// Review finding: a leader that learns of a new era (its log reaches a
/// change) counted as established before the era's new voters promised
/// its ballot, so it renewed leases and answered reads while a rival
/// could choose in that era's slots with voters it had not heard from.
/// Until a majority of every era governing its next slots promised, it
/// dates no lease and answers no read; once they have, it does.
#[test]
fn a_leader_dates_no_lease_until_a_new_eras_voters_promised() {
    use ordo::paxos::membership::Eras;
    let mut h = Harness::new();
    let members = Membership::with_backups(4, 3);
    let (mut p, _) = h.call(|ctx| {
        Proposer::recover(
            N0,
            members.clone(),
            ProposerConfig::default(),
            ProposerBugs::default(),
            ctx,
        )
    });
    let ballot = lead(&mut h, &mut p, [N0, N2]);
    h.call_applier(|ctx| p.on_message(ctx, N0, Message::Committed { commit: 1 }));
    let confirm_all = |h: &mut Harness, p: &mut Proposer, seq| {
        for n in [N0, N1, N2, NodeId(3)] {
            let ok = Message::Confirmed { ballot, seq };
            h.call_applier(|ctx| p.on_message(ctx, n, ok));
        }
    };
    h.now = h.now + Duration::from_millis(100);
    h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    confirm_all(&mut h, &mut p, 1);
    assert!(p.lease_contact().is_some(), "established in the first era");

    // The log brings a change chosen in slot 2: n3 votes in place of n2
    // from slot 2 + ALPHA, within the slots this leader proposes next.
    // Of the new voters only n0 has promised.
    let mut eras = Eras::genesis(&members.voters);
    let change = eras.change(vec![N0, N1, NodeId(3)], vec![], "test");
    eras.learn(2, &change, &members.nodes, ordo::paxos::membership::ALPHA)
        .expect("a valid change");
    h.call_applier(|ctx| p.on_message(ctx, N0, Message::Reconfigured { eras }));
    let (_, out) = h.call_applier(|ctx| p.on_message(ctx, N0, Message::Committed { commit: 2 }));
    // (The leader fills idle slots with no-ops to bring the change into
    // effect: it asks n3 from the first slot it has not proposed yet.)
    let asked: Vec<(NodeId, Ballot, u64)> = sends(&out)
        .into_iter()
        .filter_map(|(n, _, m)| match m {
            Message::Prepare {
                ballot, from_slot, ..
            } => Some((n, ballot, from_slot)),
            _ => None,
        })
        .collect();
    let [(NodeId(3), asked_ballot, from_slot)] = asked[..] else {
        panic!("only the new voter is asked: {asked:?}");
    };
    assert_eq!(asked_ballot, ballot, "at the same ballot");
    assert!(from_slot > 2, "from a slot not proposed yet: {from_slot}");
    h.now = h.now + Duration::from_millis(100);
    h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    confirm_all(&mut h, &mut p, 2);
    assert_eq!(p.lease_contact(), None, "n3 has not promised");
    let read = update(N0, 77).id;
    let (_, out) = h.call_applier(|ctx| p.read(ctx, read));
    confirm_all(&mut h, &mut p, 3);
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::Client(ClientOutcome::ReadReady { .. }))),
        "no read index yet"
    );

    let promise = Message::Promise {
        ballot,
        chosen_upto: 2,
        accepted: vec![],
        from_slot,
        next_page: None,
    };
    // Its confirmation of the read's round came already: the promise
    // completes the read.
    let (_, out) = h.call_applier(|ctx| p.on_message(ctx, NodeId(3), promise));
    assert!(
        read_ready(&out, read),
        "the read is answered once n3 promised: {out:?}"
    );
    assert!(p.lease_contact().is_some());
}

/// Review finding (7324414): a leader that proposed a change of the
/// active set has not seen it in its log, so the new voters' era is not
/// among those it checked. A leader of a lower ballot that learned the
/// change first may choose in that era's slots with the new voters, who
/// were never asked for this ballot: `Confirmed` shows only that no
/// higher ballot exists. So the proposing leader asks the new voters at
/// once, and answers no read and dates no lease until a majority of
/// them promised.
#[test]
fn a_leader_with_a_change_in_flight_answers_no_read_until_the_new_voters_promised() {
    use ordo::paxos::members::MemberOp;
    let mut h = Harness::new();
    let n3 = NodeId(3);
    let members = Membership::with_backups(4, 3);
    let (mut p, _) = proposer_of(&mut h, N0, members, ProposerConfig::default());
    // Elected by n1 and n2: of the active set n0 n1 n3 to come, only n1
    // has promised (n0's own promise is still on its way).
    let ballot = lead(&mut h, &mut p, [N1, N2]);
    for n in [N1, N2] {
        let m = Message::Accepted { ballot, slot: 1 };
        h.call_applier(|ctx| p.on_message(ctx, n, m));
    }
    h.call_applier(|ctx| p.on_message(ctx, N0, Message::Committed { commit: 1 }));
    for n in [N1, N2, n3] {
        let m = Message::Progress {
            ballot,
            commit: 1,
            applied: 1,
            fit: true,
            voting: true,
        };
        h.call_applier(|ctx| p.on_message(ctx, n, m));
    }
    let confirm = |h: &mut Harness, p: &mut Proposer, seq, from: &[NodeId]| {
        let mut out = Vec::new();
        for &n in from {
            let ok = Message::Confirmed { ballot, seq };
            out.extend(h.call_applier(|ctx| p.on_message(ctx, n, ok)).1);
        }
        out
    };
    h.now = h.now + Duration::from_millis(100);
    h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    confirm(&mut h, &mut p, 1, &[N1, N2]);
    assert!(p.lease_contact().is_some(), "established");

    let op = MemberOp::Promote {
        node: n3,
        replace: Some(N2),
    };
    let (_, out) = h.call_applier(|ctx| p.member_op(ctx, 1, op));
    let change_sent = sends(&out).iter().any(|(to, _, m)| {
        *to == N1
            && matches!(m, Message::Accept { slot: 2, value: Value::Config(c), .. } if c.voters.contains(&n3))
    });
    assert!(change_sent, "the change goes in slot 2: {out:?}");
    let asked: Vec<(NodeId, u64)> = sends(&out)
        .into_iter()
        .filter_map(|(n, _, m)| match m {
            Message::Prepare {
                ballot: b,
                from_slot,
                ..
            } if b == ballot => Some((n, from_slot)),
            _ => None,
        })
        .collect();
    let [(asked_n3, from_slot)] = asked[..] else {
        panic!("the new voter is asked at once: {asked:?}");
    };
    assert_eq!(asked_n3, n3);

    // A read: n0 and n1 confirm its round, a majority of both sets, but
    // only n1 of the new set has promised.
    let read = update(N0, 77).id;
    let (_, mut out) = h.call_applier(|ctx| p.read(ctx, read));
    let seq = sends(&out)
        .iter()
        .find_map(|(_, _, m)| match m {
            Message::Confirm { seq, .. } => Some(*seq),
            _ => None,
        })
        .expect("the read starts a round");
    out.extend(confirm(&mut h, &mut p, seq, &[N0, N1]));
    let answered = |out: &[Command]| read_ready(out, read);
    assert!(!answered(&out), "no read index before n3 promised: {out:?}");
    h.now = h.now + Duration::from_millis(100);
    h.call_applier(|ctx| p.on_timer(ctx, Timer::Tick));
    confirm(&mut h, &mut p, seq + 1, &[N0, N1, N2]);
    assert_eq!(p.lease_contact(), None, "no lease either");

    let promise = Message::Promise {
        ballot,
        chosen_upto: 1,
        accepted: vec![],
        from_slot,
        next_page: None,
    };
    let (_, out) = h.call_applier(|ctx| p.on_message(ctx, n3, promise));
    assert!(answered(&out), "answered once n3 promised: {out:?}");
}

/// Review finding: a read whose round is confirmed waits until the slots
/// the leader took over are chosen. When its log reaches them by another
/// path than its own votes (a catch-up, another node's `Decided`), the
/// read is answered then, not at the next vote or confirmation (up to a
/// tick later).
#[test]
fn a_read_waiting_for_the_takeover_is_answered_when_the_log_reaches_it() {
    let mut h = Harness::new();
    let (mut p, _) = proposer(&mut h, N0);
    let (ballot, _) = lead_taking_over_slot_1(&mut h, &mut p, b(0, N2));
    let read = update(N0, 9).id;
    let answered = |out: &[Command]| read_ready(out, read);
    let (_, out) = h.call_applier(|ctx| p.read(ctx, read));
    assert!(!answered(&out));
    for n in [N0, N1] {
        let ok = Message::Confirmed { ballot, seq: 1 };
        let (_, out) = h.call_applier(|ctx| p.on_message(ctx, n, ok));
        assert!(!answered(&out), "slot 1 (taken over) is not chosen yet");
    }
    let (_, out) = h.call_applier(|ctx| p.on_message(ctx, N0, Message::Committed { commit: 1 }));
    assert!(
        answered(&out),
        "answered as the log reaches slot 1: {out:?}"
    );
}

/// An update id chosen twice in one slot (a forwarding retry) is skipped,
/// and the window's byte count stays right: slots after it still run side
/// by side.
#[test]
fn keyed_applier_skips_a_duplicate_in_one_slot_and_goes_on_in_parallel() {
    let mut h = Harness::new();
    let u = put(N1, 1, "/kv/a");
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![u.clone(), u]));
    state::store_chosen(&mut h.disk, 2, &Value::Batch(vec![put(N1, 2, "/kv/b")]));
    state::store_chosen(&mut h.disk, 3, &Value::Batch(vec![put(N1, 3, "/kv/c")]));
    let (mut a, out) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], keyed(8), ctx));
    assert_eq!(calls(&out), vec![(1, 0), (2, 0), (3, 0)]);
    h.call_applier(|ctx| {
        a.on_backend_reply(ctx, 1, 0, ok(201));
        a.on_backend_reply(ctx, 2, 0, ok(201));
        a.on_backend_reply(ctx, 3, 0, ok(201))
    });
    assert_eq!(a.applied(), 3);
    for slot in 4..=5 {
        let u = put(N1, slot, &format!("/kv/{slot}"));
        state::store_chosen(&mut h.disk, slot, &Value::Batch(vec![u]));
    }
    let (_, out) = h.call_applier(|ctx| a.on_message(ctx, N1, Message::Committed { commit: 5 }));
    assert_eq!(calls(&out), vec![(4, 0), (5, 0)], "still side by side");
}

/// A client key's record is written with its slot, in slot order: a crash
/// while an unrelated update holds the applied index back must not leave
/// a later slot's record on disk, where it would make a re-applied retry
/// look like a first use (and every other node skipped it).
#[test]
fn keyed_applier_decides_client_retries_the_same_after_a_crash() {
    let mut h = Harness::new();
    let key = Some(Bytes::from_static(b"k"));
    let keyed_put = |seq, path| Update {
        key: key.clone(),
        ..put(N1, seq, path)
    };
    state::store_chosen(&mut h.disk, 1, &Value::Batch(vec![keyed_put(1, "/kv/a")]));
    state::store_chosen(&mut h.disk, 2, &Value::Noop);
    state::store_chosen(&mut h.disk, 3, &Value::Noop);
    let slow = put(N1, 2, "/kv/slow");
    state::store_chosen(
        &mut h.disk,
        4,
        &Value::Batch(vec![slow, keyed_put(3, "/kv/b")]),
    );
    state::store_chosen(&mut h.disk, 5, &Value::Batch(vec![keyed_put(4, "/kv/c")]));
    let cfg = || ApplierConfig {
        client_key_window_slots: 3,
        ..keyed(8)
    };
    let (mut a, out) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], cfg(), ctx));
    assert_eq!(calls(&out), vec![(1, 0), (4, 0)]);
    h.call_applier(|ctx| a.on_backend_reply(ctx, 4, 0, ok(503)));
    let (_, out) = h.call_applier(|ctx| a.on_backend_reply(ctx, 1, 0, ok(201)));
    // (4,1) is a retry of slot 1 (in its window) and is skipped; (5,0)
    // is past the window of slot 1: a first use, applied.
    assert_eq!(calls(&out), vec![(5, 0)]);
    h.call_applier(|ctx| a.on_backend_reply(ctx, 5, 0, ok(201)));
    assert_eq!(a.applied(), 3, "the slow update holds slot 4");
    // Crash (with every write on disk: the worst case) and recover.
    let (_, out) = h.call_applier(|ctx| Applier::recover(N1, &[N0, N1, N2], cfg(), ctx));
    assert_eq!(
        calls(&out),
        vec![(4, 0), (5, 0)],
        "the same decisions again: (4,1) skipped, (5,0) applied"
    );
}
