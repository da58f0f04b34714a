//! Scenario files: a seed, a cluster, a timeline of faults, a workload.
//!
//! A readable line format, one directive per line, `#` starts a comment:
//!
//! ```text
//! seed 42
//! nodes 5
//! active 3                    # n0..n2 vote; n3, n4 are hot backups
//! clients 4
//! keys 3
//! run 10s
//! net loss=0.01 dup=0.01 delay=1ms..10ms
//! backend fail=0.01 fail-after-apply=0.01 delay=200us..2ms
//! fsync 250us                 # or a range: fsync 100us..2ms
//! reads max-lag=2 lease=600ms # the gateway's plain-read limits
//! client-timeout 3s
//! promise-bytes 160           # acceptors' promise page budget
//! batch wait                  # partial batches wait for the slot in flight (default: eager)
//! bug skip-phase1
//! at 1s crash leader
//! at 2500ms restart n0
//! at 3s partition n0 n1 | n2
//! at 4s cut n0 -> n1
//! at 5s heal
//! at 6s crash-after-sync leader       # after its next fsync, before the replies leave
//! at 6s crash-before-sync n1          # as its next fsync starts: unsynced writes at risk
//! at 6s crash-after-send n2 promise   # right after its next promise leaves
//! at 7s clock-jump n1 +2s
//! at 7s clock-jump all-but leader +1500ms
//! at 8s clock-drift n2 -3%            # runs 3% slow from now on
//! at 9s drop accepted                 # every vote is lost, until heal
//! expect answered >= 300       # availability during the faults
//! expect leader-changes <= 4   # no flapping
//! expect changes >= 2          # the active set changed (and back)
//! ```
//!
//! Everything random during the run derives from `seed`, so a file
//! replays its run exactly. After `run`, the sim heals every fault and
//! demands that the cluster converges (the liveness phase).

use crate::rng::Rng;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// Which node a fault hits. `leader` and `follower` are resolved when the
/// fault fires (deterministically, from the seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(u16),
    Leader,
    Follower,
}

/// A moment, chosen by what the node does, at which it crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Right after its next fsync, before the replies it covers leave.
    AfterSync,
    /// As its next fsync starts: what was not synced is at risk.
    BeforeSync,
    /// Right after its next message of this kind leaves.
    AfterSend(&'static str),
}

/// Message kinds a crash can wait for (`Message::kind`).
const SEND_KINDS: &[&str] = &[
    "change",
    "prepare",
    "promise",
    "accept",
    "accepted",
    "decided",
    "heartbeat",
];

/// Message kinds the network can be told to drop (`drop KIND`).
const DROP_KINDS: &[&str] = &[
    "accepted",
    "chosen",
    "confirmed",
    "decided",
    "heartbeat",
    "progress",
    "promise",
    "voted",
];

/// The most a node's clock may drift in the sim, in parts per million.
/// Leases assume clocks run at nearly the same rate; the plain-read
/// staleness bound allows for this much.
pub const DRIFT_PPM_MAX: i64 = 50_000;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    Crash(Target),
    /// Crash at a moment chosen by what the node does next.
    CrashAt(Target, CrashPoint),
    Restart(Target),
    RestartAll,
    /// Groups that cannot reach each other (symmetric).
    Partition(Vec<Vec<u16>>),
    Isolate(Target),
    /// Messages from `from` to `to` are lost; the other way still works.
    Cut {
        from: Target,
        to: Target,
    },
    Heal,
    Loss(f64),
    Dup(f64),
    ClockJump(Target, Duration),
    /// Every node's clock but the target's leaps forward: the others'
    /// timers and leases run out early, so two leaderships may overlap.
    ClockJumpOthers(Target, Duration),
    /// From now on the node's clock runs this many ppm fast (negative:
    /// slow), within `DRIFT_PPM_MAX`.
    ClockDrift(Target, i64),
    BackendFail(f64),
    /// The node's backend differs from the others from now on.
    BackendDiverge(Target),
    /// The node crashes and loses its whole disk (an empty `data_dir`).
    Wipe(Target),
    /// Every message of this kind between nodes is lost, until `heal`.
    Drop(&'static str),
}

/// A "sometimes" property a scenario demands beyond safety: a run in
/// which the cluster stalled or flapped throughout fails instead of
/// passing vacuously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// At least this many client operations answered.
    AnsweredAtLeast(u64),
    /// At most this many times a node became leader.
    LeaderChangesAtMost(u64),
    /// At least this many changes of the active set took effect.
    ChangesAtLeast(u64),
}

/// Deliberate protocol bugs, switched on by name (`bug NAME` in a file,
/// `ordo sim --bug NAME`), to show that the checks catch each one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    pub skip_phase1: bool,
    pub forget_promise: bool,
    pub stale_reads: bool,
    pub ignore_idempotency_keys: bool,
    pub read_index_without_round: bool,
    pub round_not_persisted: bool,
    pub promise_before_sync: bool,
    pub prepare_before_sync: bool,
    pub lease_without_quorum: bool,
    pub lease_beyond_knowledge: bool,
    pub vote_after_amnesia: bool,
    pub ignore_digests: bool,
    pub digest_names_node: bool,
    pub reconfig_at_once: bool,
    pub ignore_resource_order: bool,
    pub read_index_chosen_only: bool,
    pub reclaim_before_sync: bool,
}

type BugSwitch = fn(&mut Bugs) -> &mut bool;

/// Every bug's name and switch.
const BUGS: &[(&str, BugSwitch)] = &[
    ("skip-phase1", |b| &mut b.skip_phase1),
    ("forget-promise", |b| &mut b.forget_promise),
    ("stale-reads", |b| &mut b.stale_reads),
    ("ignore-idempotency-keys", |b| {
        &mut b.ignore_idempotency_keys
    }),
    ("read-index-without-round", |b| {
        &mut b.read_index_without_round
    }),
    ("round-not-persisted", |b| &mut b.round_not_persisted),
    ("promise-before-sync", |b| &mut b.promise_before_sync),
    ("prepare-before-sync", |b| &mut b.prepare_before_sync),
    ("lease-without-quorum", |b| &mut b.lease_without_quorum),
    ("lease-beyond-knowledge", |b| &mut b.lease_beyond_knowledge),
    ("vote-after-amnesia", |b| &mut b.vote_after_amnesia),
    ("ignore-digests", |b| &mut b.ignore_digests),
    ("digest-names-node", |b| &mut b.digest_names_node),
    ("reconfig-at-once", |b| &mut b.reconfig_at_once),
    ("ignore-resource-order", |b| &mut b.ignore_resource_order),
    ("read-index-chosen-only", |b| &mut b.read_index_chosen_only),
    ("reclaim-before-sync", |b| &mut b.reclaim_before_sync),
];

impl Bugs {
    /// Every bug's name.
    pub fn all() -> impl Iterator<Item = &'static str> {
        BUGS.iter().map(|(n, _)| *n)
    }

    /// Switch on the bug called `name`.
    pub fn set(&mut self, name: &str) -> Result<(), String> {
        let Some((_, switch)) = BUGS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = Bugs::all().collect();
            return Err(format!(
                "unknown bug {name:?} (known: {})",
                known.join(", ")
            ));
        };
        *switch(self) = true;
        Ok(())
    }

    /// The names of the bugs switched on.
    pub fn names(&self) -> Vec<&'static str> {
        let mut b = *self;
        BUGS.iter()
            .filter(|(_, switch)| *switch(&mut b))
            .map(|(n, _)| *n)
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub seed: u64,
    pub nodes: u16,
    /// The first `active` nodes are the preferred voters; the others are
    /// backups (`active N`; 0: every node votes).
    pub active: u16,
    pub clients: u32,
    pub keys: u32,
    pub run: Duration,
    pub loss: f64,
    pub dup: f64,
    pub delay: (Duration, Duration),
    pub backend_fail: f64,
    pub backend_fail_after_apply: f64,
    pub backend_delay: (Duration, Duration),
    /// How long one fsync takes, drawn per sync from this range.
    pub fsync: (Duration, Duration),
    /// The gateway's plain-read limits (`ReadLimits`).
    pub max_lag: u64,
    pub lease: Duration,
    pub client_timeout: Duration,
    /// The acceptors' promise page budget (`AcceptorConfig`): tiny in the
    /// sim, so that promises are split into pages whenever they can be.
    pub promise_bytes: usize,
    /// Origins answer updates only once a majority agrees (`answer
    /// agreed`; the default is `answer local`).
    pub answer_agreed: bool,
    /// Slots of log kept (`log retain=N`); older ones are compacted.
    pub log_retain: u64,
    /// Updates to different keys commute and apply side by side, this
    /// many at once (`apply keyed concurrency=N`); `None`: one at a time
    /// in slot order (`apply sequential`, the default).
    pub apply_keyed: Option<usize>,
    /// The leader holds partial batches while a slot is in flight
    /// (`batch wait`, production's default: `ProposerConfig::wait_to_batch`)
    /// or proposes each as the window allows (`batch eager`, the default
    /// here, which keeps many slots in flight at the sim's few clients).
    pub wait_to_batch: bool,
    pub bugs: Bugs,
    pub timeline: Vec<(Duration, Fault)>,
    pub expect: Vec<Expect>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 0,
            nodes: 3,
            active: 0,
            clients: 3,
            keys: 2,
            run: Duration::from_secs(10),
            loss: 0.0,
            dup: 0.0,
            delay: (ms(1), ms(5)),
            backend_fail: 0.0,
            backend_fail_after_apply: 0.0,
            backend_delay: (Duration::from_micros(200), ms(2)),
            fsync: (Duration::from_micros(250), Duration::from_micros(250)),
            max_lag: 2,
            lease: ms(600),
            client_timeout: Duration::from_secs(3),
            promise_bytes: 160,
            answer_agreed: false,
            log_retain: LOG_RETAIN_DEFAULT,
            apply_keyed: None,
            wait_to_batch: false,
            bugs: Bugs::default(),
            timeline: Vec::new(),
            expect: Vec::new(),
        }
    }
}

/// The log kept by default in the sim: more than any run chooses.
pub const LOG_RETAIN_DEFAULT: u64 = 1_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A line of a scenario file that could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} has no unit (use us, ms or s)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let micros = match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => {
            return Err(format!(
                "duration {s:?}: unknown unit {unit:?} (use us, ms or s)"
            ));
        }
    };
    Ok(Duration::from_micros(micros.round() as u64))
}

pub fn format_duration(d: Duration) -> String {
    let us = d.as_micros() as u64;
    if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn parse_range(s: &str) -> Result<(Duration, Duration), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a range like 1ms..10ms"))?;
    let (a, b) = (parse_duration(a)?, parse_duration(b)?);
    if a > b {
        return Err(format!("range {s:?} goes backwards"));
    }
    Ok((a, b))
}

fn parse_prob(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a probability between 0 and 1")),
    }
}

fn parse_target(s: &str, nodes: u16) -> Result<Target, String> {
    match s {
        "leader" => Ok(Target::Leader),
        "follower" => Ok(Target::Follower),
        _ => {
            let n = s
                .strip_prefix('n')
                .and_then(|n| n.parse::<u16>().ok())
                .ok_or_else(|| format!("{s:?} is not a node (n0, n1, ..., leader, follower)"))?;
            if n >= nodes {
                return Err(format!(
                    "node {s} does not exist: the cluster has {nodes} nodes"
                ));
            }
            Ok(Target::Node(n))
        }
    }
}

/// `+3%`, `-0.5%`: within `DRIFT_PPM_MAX`.
fn parse_drift(s: &str) -> Result<i64, String> {
    let pct = s
        .strip_suffix('%')
        .and_then(|p| p.parse::<f64>().ok())
        .ok_or_else(|| format!("clock drift {s:?} is not a percentage like -3% or +1.5%"))?;
    let ppm = (pct * 10_000.0).round() as i64;
    if ppm.abs() > DRIFT_PPM_MAX {
        return Err(format!(
            "clock drift {s} is beyond {}%, the most the sim allows",
            DRIFT_PPM_MAX as f64 / 10_000.0
        ));
    }
    Ok(ppm)
}

fn format_drift(ppm: i64) -> String {
    format!("{:+}%", ppm as f64 / 10_000.0)
}

fn parse_fault(words: &[&str], nodes: u16) -> Result<Fault, String> {
    let arg = |i: usize| -> Result<&str, String> {
        words
            .get(i)
            .copied()
            .ok_or_else(|| format!("{:?} needs more arguments", words[0]))
    };
    let fault = match words[0] {
        "crash" => Fault::Crash(parse_target(arg(1)?, nodes)?),
        "crash-after-sync" => Fault::CrashAt(parse_target(arg(1)?, nodes)?, CrashPoint::AfterSync),
        "crash-before-sync" => {
            Fault::CrashAt(parse_target(arg(1)?, nodes)?, CrashPoint::BeforeSync)
        }
        "crash-after-send" => {
            let kind = arg(2)?;
            let Some(kind) = SEND_KINDS.iter().find(|k| **k == kind) else {
                return Err(format!(
                    "crash-after-send: unknown message kind {kind:?} (use {})",
                    SEND_KINDS.join(", ")
                ));
            };
            Fault::CrashAt(parse_target(arg(1)?, nodes)?, CrashPoint::AfterSend(kind))
        }
        "restart" if arg(1)? == "all" => Fault::RestartAll,
        "restart" => Fault::Restart(parse_target(arg(1)?, nodes)?),
        "isolate" => Fault::Isolate(parse_target(arg(1)?, nodes)?),
        "heal" => Fault::Heal,
        "loss" => Fault::Loss(parse_prob(arg(1)?)?),
        "dup" => Fault::Dup(parse_prob(arg(1)?)?),
        "backend-fail" => Fault::BackendFail(parse_prob(arg(1)?)?),
        "backend-diverge" => Fault::BackendDiverge(parse_target(arg(1)?, nodes)?),
        "wipe" => Fault::Wipe(parse_target(arg(1)?, nodes)?),
        "drop" => {
            let kind = arg(1)?;
            let Some(kind) = DROP_KINDS.iter().find(|k| **k == kind) else {
                return Err(format!(
                    "drop: unknown message kind {kind:?} (use {})",
                    DROP_KINDS.join(", ")
                ));
            };
            Fault::Drop(kind)
        }
        "cut" => {
            if arg(2)? != "->" {
                return Err("cut wants: cut nA -> nB".into());
            }
            Fault::Cut {
                from: parse_target(arg(1)?, nodes)?,
                to: parse_target(arg(3)?, nodes)?,
            }
        }
        "clock-jump" if arg(1)? == "all-but" => {
            let d = arg(3)?
                .strip_prefix('+')
                .ok_or("clock-jump wants a forward jump like +2s")?;
            Fault::ClockJumpOthers(parse_target(arg(2)?, nodes)?, parse_duration(d)?)
        }
        "clock-jump" => {
            let d = arg(2)?
                .strip_prefix('+')
                .ok_or("clock-jump wants a forward jump like +2s")?;
            Fault::ClockJump(parse_target(arg(1)?, nodes)?, parse_duration(d)?)
        }
        "clock-drift" => Fault::ClockDrift(parse_target(arg(1)?, nodes)?, parse_drift(arg(2)?)?),
        "partition" => {
            let mut groups = vec![Vec::new()];
            for w in &words[1..] {
                if *w == "|" {
                    groups.push(Vec::new());
                } else {
                    match parse_target(w, nodes)? {
                        Target::Node(n) => groups.last_mut().map(|g| g.push(n)).unwrap_or(()),
                        _ => return Err("partition takes node names (n0 n1 | n2)".into()),
                    }
                }
            }
            if groups.len() < 2 || groups.iter().any(|g| g.is_empty()) {
                return Err("partition wants groups separated by |, none empty".into());
            }
            Fault::Partition(groups)
        }
        other => return Err(format!("unknown fault {other:?}")),
    };
    let expected = match &fault {
        Fault::Heal => 1,
        Fault::Cut { .. } | Fault::ClockJumpOthers(..) => 4,
        Fault::ClockJump(..) | Fault::ClockDrift(..) => 3,
        Fault::CrashAt(_, CrashPoint::AfterSend(_)) => 3,
        Fault::Partition(_) => words.len(),
        _ => 2,
    };
    if words.len() != expected {
        return Err(format!("too many words for {:?}", words[0]));
    }
    Ok(fault)
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Scenario, ParseError> {
        let mut s = Scenario::default();
        let mut seen_seed = false;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |message: String| ParseError {
                line: i + 1,
                message,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let one = || -> Result<&str, ParseError> {
                match words.as_slice() {
                    [_, v] => Ok(v),
                    _ => Err(err(format!("{:?} takes exactly one value", words[0]))),
                }
            };
            let num = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| err(format!("{v:?} is not a number")))
            };
            match words[0] {
                "seed" => {
                    s.seed = num(one()?)?;
                    seen_seed = true;
                }
                "nodes" => {
                    let n = num(one()?)?;
                    if !(1..=9).contains(&n) {
                        return Err(err(format!("nodes must be 1 to 9, not {n}")));
                    }
                    s.nodes = n as u16;
                }
                "active" => {
                    let n = num(one()?)?;
                    if !(1..=9).contains(&n) {
                        return Err(err(format!("active must be 1 to 9, not {n}")));
                    }
                    s.active = n as u16;
                }
                "clients" => s.clients = num(one()?)?.min(64) as u32,
                "keys" => s.keys = num(one()?)?.clamp(1, 64) as u32,
                "run" => s.run = parse_duration(one()?).map_err(err)?,
                "fsync" => {
                    let v = one()?;
                    s.fsync = if v.contains("..") {
                        parse_range(v).map_err(err)?
                    } else {
                        let d = parse_duration(v).map_err(err)?;
                        (d, d)
                    };
                }
                "client-timeout" => s.client_timeout = parse_duration(one()?).map_err(err)?,
                "promise-bytes" => s.promise_bytes = num(one()?)? as usize,
                "bug" => s.bugs.set(one()?).map_err(err)?,
                "log" => {
                    for kv in &words[1..] {
                        match kv.split_once('=') {
                            Some(("retain", v)) if num(v)? > 0 => s.log_retain = num(v)?,
                            _ => {
                                return Err(err(format!("log wants retain=N (N > 0), not {kv:?}")));
                            }
                        }
                    }
                }
                "apply" => match words.get(1..) {
                    Some(["sequential"]) => s.apply_keyed = None,
                    Some(["keyed", n]) => match n.strip_prefix("concurrency=") {
                        Some(v) if num(v)? > 0 => s.apply_keyed = Some(num(v)? as usize),
                        _ => {
                            return Err(err(format!("apply keyed wants concurrency=N, not {n:?}")));
                        }
                    },
                    _ => {
                        return Err(err(
                            "apply is `sequential` or `keyed concurrency=N`".to_string()
                        ));
                    }
                },
                "batch" => {
                    s.wait_to_batch = match one()? {
                        "wait" => true,
                        "eager" => false,
                        v => return Err(err(format!("batch is wait or eager, not {v:?}"))),
                    }
                }
                "answer" => {
                    s.answer_agreed = match one()? {
                        "agreed" => true,
                        "local" => false,
                        v => return Err(err(format!("answer is agreed or local, not {v:?}"))),
                    }
                }
                "net" | "backend" | "reads" => {
                    for kv in &words[1..] {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| err(format!("{kv:?} is not key=value")))?;
                        match (words[0], k) {
                            ("net", "loss") => s.loss = parse_prob(v).map_err(err)?,
                            ("net", "dup") => s.dup = parse_prob(v).map_err(err)?,
                            ("net", "delay") => s.delay = parse_range(v).map_err(err)?,
                            ("backend", "fail") => s.backend_fail = parse_prob(v).map_err(err)?,
                            ("backend", "fail-after-apply") => {
                                s.backend_fail_after_apply = parse_prob(v).map_err(err)?
                            }
                            ("backend", "delay") => {
                                s.backend_delay = parse_range(v).map_err(err)?
                            }
                            ("reads", "max-lag") => s.max_lag = num(v)?,
                            ("reads", "lease") => s.lease = parse_duration(v).map_err(err)?,
                            _ => return Err(err(format!("unknown {} setting {k:?}", words[0]))),
                        }
                    }
                }
                "expect" => {
                    let bad = || {
                        err(format!(
                            "expect wants e.g. 'answered >= 300', 'leader-changes <= 4' or 'changes >= 1', not {line:?}"
                        ))
                    };
                    let [_, what, op, n] = words.as_slice() else {
                        return Err(bad());
                    };
                    let n = num(n)?;
                    s.expect.push(match (*what, *op) {
                        ("answered", ">=") => Expect::AnsweredAtLeast(n),
                        ("leader-changes", "<=") => Expect::LeaderChangesAtMost(n),
                        ("changes", ">=") => Expect::ChangesAtLeast(n),
                        _ => return Err(bad()),
                    });
                }
                "at" => {
                    if words.len() < 3 {
                        return Err(err("at wants: at TIME FAULT ...".into()));
                    }
                    let t = parse_duration(words[1]).map_err(err)?;
                    let f = parse_fault(&words[2..], s.nodes).map_err(err)?;
                    s.timeline.push((t, f));
                }
                other => return Err(err(format!("unknown directive {other:?}"))),
            }
        }
        if !seen_seed {
            return Err(ParseError {
                line: 0,
                message: "no seed line".into(),
            });
        }
        s.timeline.sort_by_key(|(t, _)| *t);
        if s.active > s.nodes {
            return Err(ParseError {
                line: 0,
                message: format!("active {} is more than nodes {}", s.active, s.nodes),
            });
        }
        Ok(s)
    }

    /// The file text; `parse(render())` gives back the same scenario.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let d = format_duration;
        let _ = writeln!(o, "seed {}", self.seed);
        let _ = writeln!(o, "nodes {}", self.nodes);
        if self.active != 0 {
            let _ = writeln!(o, "active {}", self.active);
        }
        let _ = writeln!(o, "clients {}", self.clients);
        let _ = writeln!(o, "keys {}", self.keys);
        let _ = writeln!(o, "run {}", d(self.run));
        let _ = writeln!(
            o,
            "net loss={} dup={} delay={}..{}",
            self.loss,
            self.dup,
            d(self.delay.0),
            d(self.delay.1)
        );
        let _ = writeln!(
            o,
            "backend fail={} fail-after-apply={} delay={}..{}",
            self.backend_fail,
            self.backend_fail_after_apply,
            d(self.backend_delay.0),
            d(self.backend_delay.1)
        );
        if self.fsync.0 == self.fsync.1 {
            let _ = writeln!(o, "fsync {}", d(self.fsync.0));
        } else {
            let _ = writeln!(o, "fsync {}..{}", d(self.fsync.0), d(self.fsync.1));
        }
        let _ = writeln!(o, "reads max-lag={} lease={}", self.max_lag, d(self.lease));
        let _ = writeln!(o, "client-timeout {}", d(self.client_timeout));
        let _ = writeln!(o, "promise-bytes {}", self.promise_bytes);
        if self.answer_agreed {
            let _ = writeln!(o, "answer agreed");
        }
        if let Some(n) = self.apply_keyed {
            let _ = writeln!(o, "apply keyed concurrency={n}");
        }
        if self.wait_to_batch {
            let _ = writeln!(o, "batch wait");
        }
        if self.log_retain != LOG_RETAIN_DEFAULT {
            let _ = writeln!(o, "log retain={}", self.log_retain);
        }
        for bug in self.bugs.names() {
            let _ = writeln!(o, "bug {bug}");
        }
        for (t, f) in &self.timeline {
            let _ = writeln!(o, "at {} {}", d(*t), render_fault(f));
        }
        for e in &self.expect {
            let _ = match e {
                Expect::AnsweredAtLeast(n) => writeln!(o, "expect answered >= {n}"),
                Expect::LeaderChangesAtMost(n) => writeln!(o, "expect leader-changes <= {n}"),
                Expect::ChangesAtLeast(n) => writeln!(o, "expect changes >= {n}"),
            };
        }
        o
    }

    /// A random scenario derived from `seed` alone: the cluster, the
    /// workload and a timeline of faults.
    pub fn generate(seed: u64) -> Scenario {
        let mut r = Rng::new(seed ^ 0x5ce9_a210_0000_0000);
        let nodes = if r.chance(0.25) { 5 } else { 3 };
        let run_ms = r.range(6_000, 12_000);
        let mut s = Scenario {
            seed,
            nodes,
            clients: r.range(2, 5) as u32,
            keys: r.range(1, 3) as u32,
            run: ms(run_ms),
            loss: [0.0, 0.01, 0.05][r.below(3) as usize],
            dup: [0.0, 0.01, 0.05][r.below(3) as usize],
            delay: (ms(r.range(0, 2)), ms(r.range(3, 25))),
            backend_fail: [0.0, 0.02][r.below(2) as usize],
            backend_fail_after_apply: [0.0, 0.02][r.below(2) as usize],
            ..Scenario::default()
        };
        let target = |r: &mut Rng| match r.below(4) {
            0 => Target::Leader,
            1 => Target::Follower,
            _ => Target::Node(r.below(nodes as u64) as u16),
        };
        let faults = r.range(1, 8);
        for _ in 0..faults {
            let at = r.range(300, run_ms - 500);
            let later = |r: &mut Rng| ms(r.range(at + 100, run_ms.min(at + 4_000)));
            match r.below(14) {
                0 | 1 => {
                    let t = target(&mut r);
                    s.timeline.push((ms(at), Fault::Crash(t)));
                    s.timeline.push((later(&mut r), Fault::RestartAll));
                }
                2 => {
                    let t = target(&mut r);
                    let point =
                        [CrashPoint::AfterSync, CrashPoint::BeforeSync][r.below(2) as usize];
                    s.timeline.push((ms(at), Fault::CrashAt(t, point)));
                    s.timeline.push((later(&mut r), Fault::RestartAll));
                }
                3 | 4 => {
                    let t = target(&mut r);
                    s.timeline.push((ms(at), Fault::Isolate(t)));
                    s.timeline.push((later(&mut r), Fault::Heal));
                }
                5 => {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    for n in 0..nodes {
                        if r.chance(0.5) { a.push(n) } else { b.push(n) }
                    }
                    if !a.is_empty() && !b.is_empty() {
                        s.timeline.push((ms(at), Fault::Partition(vec![a, b])));
                        s.timeline.push((later(&mut r), Fault::Heal));
                    }
                }
                6 => {
                    let (from, to) = (target(&mut r), target(&mut r));
                    s.timeline.push((ms(at), Fault::Cut { from, to }));
                    s.timeline.push((later(&mut r), Fault::Heal));
                }
                7 => {
                    let t = target(&mut r);
                    s.timeline
                        .push((ms(at), Fault::ClockJump(t, ms(r.range(500, 3000)))));
                }
                8 => {
                    s.timeline.push((ms(at), Fault::Loss(0.3)));
                    let back = [0.0, 0.01][r.below(2) as usize];
                    s.timeline.push((later(&mut r), Fault::Loss(back)));
                }
                9 => {
                    s.timeline.push((ms(at), Fault::BackendFail(0.5)));
                    s.timeline.push((later(&mut r), Fault::BackendFail(0.0)));
                }
                10 => {
                    // Overlapping leaderships: the old leader is cut off
                    // and has not noticed yet, while the others' clocks
                    // leap past their leases and elect a new one.
                    let jump = ms(r.range(1_000, 2_000));
                    s.timeline.push((ms(at), Fault::Isolate(Target::Leader)));
                    s.timeline
                        .push((ms(at), Fault::ClockJumpOthers(Target::Leader, jump)));
                    s.timeline.push((later(&mut r), Fault::Heal));
                }
                11 => {
                    let n = Target::Node(r.below(nodes as u64) as u16);
                    let ppm = r.range(5_000, DRIFT_PPM_MAX as u64) as i64;
                    let ppm = if r.chance(0.5) { ppm } else { -ppm };
                    s.timeline.push((ms(at), Fault::ClockDrift(n, ppm)));
                    s.timeline.push((later(&mut r), Fault::ClockDrift(n, 0)));
                }
                12 => {
                    // A crash timed around an election: the leader goes,
                    // and a node dies right after its next prepare or
                    // promise leaves.
                    let t = target(&mut r);
                    let kind = ["prepare", "promise"][r.below(2) as usize];
                    s.timeline
                        .push((ms(at), Fault::CrashAt(t, CrashPoint::AfterSend(kind))));
                    s.timeline.push((ms(at), Fault::Crash(Target::Leader)));
                    s.timeline.push((later(&mut r), Fault::RestartAll));
                }
                _ => {
                    let t = target(&mut r);
                    s.timeline
                        .push((ms(at), Fault::CrashAt(t, CrashPoint::BeforeSync)));
                    s.timeline.push((later(&mut r), Fault::RestartAll));
                }
            }
        }
        s.timeline.sort_by_key(|(t, _)| *t);
        // Drawn last, so the rest of a seed's scenario is as before. 1:
        // one entry per page; the others cut pages of several entries (a
        // no-op costs 32 bytes, a one-update batch about 80).
        s.promise_bytes = [1, 100, 160, 400][r.below(4) as usize];
        let us = Duration::from_micros;
        s.fsync = [
            (us(50), us(50)),
            (us(250), us(250)),
            (us(100), ms(2)),
            (ms(1), ms(10)),
        ][r.below(4) as usize];
        s.max_lag = [0, 2, 8][r.below(3) as usize];
        // Answers wait for agreement in half the seeds; in some of those,
        // one backend starts to differ (with answers given at once, its
        // clients would get its wrong answers, which the checker flags).
        s.answer_agreed = r.chance(0.5);
        let diverging = s.answer_agreed && r.chance(0.2);
        if diverging {
            let at = ms(r.range(300, run_ms - 500));
            let n = Target::Node(r.below(nodes as u64) as u16);
            s.timeline.push((at, Fault::BackendDiverge(n)));
            s.timeline.sort_by_key(|(t, _)| *t);
        }
        // Some seeds keep a short log: a node down for long falls behind
        // the compaction, needs a reseed, and the operator gives it one.
        // (Not with a diverging backend: then the only donor left may be
        // the one a fault broke, and no reseed can be right.)
        if r.chance(0.25) && !diverging {
            s.log_retain = 50;
        }
        // Some seeds lose a node's whole disk; it comes back empty and
        // must rebuild before it votes. (Not with a short log: there the
        // wiped node may have been the only one with the state the others
        // need a reseed from, and nothing can bring that back.)
        if r.chance(0.15) && s.log_retain == LOG_RETAIN_DEFAULT {
            let at = r.range(300, run_ms - 500);
            let back = ms(r.range(at + 50, run_ms.min(at + 3_000)));
            s.timeline.push((ms(at), Fault::Wipe(target(&mut r))));
            s.timeline.push((back, Fault::RestartAll));
            s.timeline.sort_by_key(|(t, _)| *t);
        }
        // Some seeds run hot backups: the voters are the first nodes, and
        // up to three more learn, apply, serve, and replace a voter the
        // leader has not heard from for a while.
        if r.chance(0.3) {
            s.active = s.nodes;
            s.nodes += r.range(1, 4) as u16;
        }
        // Some seeds lose every message of one kind for a while: votes
        // (slots chosen that the leader does not hear of), decisions,
        // confirmations, heartbeats or progress reports.
        if r.chance(0.15) {
            let at = r.range(300, run_ms - 500);
            let back = ms(r.range(at + 500, run_ms.min(at + 3_500)));
            let kind = DROP_KINDS[r.below(DROP_KINDS.len() as u64) as usize];
            s.timeline.push((ms(at), Fault::Drop(kind)));
            s.timeline.push((back, Fault::Heal));
            s.timeline.sort_by_key(|(t, _)| *t);
        }
        // Half the seeds declare that updates to different keys commute:
        // the applier runs them side by side (drawn last, so the other
        // draws of a seed stay what they were).
        if r.chance(0.5) {
            s.apply_keyed = Some([2, 4, 16][r.below(3) as usize]);
        }
        // Half the seeds hold partial batches while a slot is in flight,
        // as production does; the others keep up to the window's slots in
        // flight (drawn last too).
        s.wait_to_batch = r.chance(0.5);
        s
    }
}

fn render_target(t: &Target) -> String {
    match t {
        Target::Node(n) => format!("n{n}"),
        Target::Leader => "leader".into(),
        Target::Follower => "follower".into(),
    }
}

fn render_fault(f: &Fault) -> String {
    let t = render_target;
    match f {
        Fault::Crash(x) => format!("crash {}", t(x)),
        Fault::CrashAt(x, CrashPoint::AfterSync) => format!("crash-after-sync {}", t(x)),
        Fault::CrashAt(x, CrashPoint::BeforeSync) => format!("crash-before-sync {}", t(x)),
        Fault::CrashAt(x, CrashPoint::AfterSend(kind)) => {
            format!("crash-after-send {} {kind}", t(x))
        }
        Fault::Restart(x) => format!("restart {}", t(x)),
        Fault::RestartAll => "restart all".into(),
        Fault::Partition(groups) => {
            let gs: Vec<String> = groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|n| format!("n{n}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            format!("partition {}", gs.join(" | "))
        }
        Fault::Isolate(x) => format!("isolate {}", t(x)),
        Fault::Cut { from, to } => format!("cut {} -> {}", t(from), t(to)),
        Fault::Heal => "heal".into(),
        Fault::Loss(p) => format!("loss {p}"),
        Fault::Dup(p) => format!("dup {p}"),
        Fault::ClockJump(x, d) => format!("clock-jump {} +{}", t(x), format_duration(*d)),
        Fault::ClockJumpOthers(x, d) => {
            format!("clock-jump all-but {} +{}", t(x), format_duration(*d))
        }
        Fault::ClockDrift(x, ppm) => format!("clock-drift {} {}", t(x), format_drift(*ppm)),
        Fault::BackendFail(p) => format!("backend-fail {p}"),
        Fault::BackendDiverge(x) => format!("backend-diverge {}", t(x)),
        Fault::Wipe(x) => format!("wipe {}", t(x)),
        Fault::Drop(kind) => format!("drop {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_scenarios_round_trip_through_text() {
        for seed in 0..200 {
            let s = Scenario::generate(seed);
            let text = s.render();
            let back = Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(back, s, "{text}");
        }
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = Scenario::parse("seed 1\nnodes 3\nat 1s crash n7\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("n7"), "{e}");
        let e = Scenario::parse("seed 1\nrun 10 s\n").unwrap_err();
        assert!(e.message.contains("exactly one value"), "{e}");
        let e = Scenario::parse("seed 1\nrun 10x\n").unwrap_err();
        assert!(e.message.contains("unknown unit"), "{e}");
        let e = Scenario::parse("nodes 3\n").unwrap_err();
        assert!(e.message.contains("seed"), "{e}");
        let e = Scenario::parse("seed 1\nat 1s partition n0 n1\n").unwrap_err();
        assert!(e.message.contains("groups"), "{e}");
    }
}
