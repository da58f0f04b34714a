//! A client load for the end-to-end tests, and its judgement: clients
//! append numbers to arrays and read them (`no-cache`) through random
//! running nodes; afterwards every acknowledged append must be on every
//! backend exactly once, an unknown one at most once, a refused one
//! never, and the history must be linearizable (`ordo::sim::checker`).

use super::kv_model::{ArrayKv, KvOp};
use super::{Cluster, call, get};
use ordo::sim::checker::{Budget, Operation, Verdict, check};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Every backend's data, read directly: key -> value.
pub fn backend_data(c: &Cluster, i: usize) -> BTreeMap<String, Value> {
    let keys = get(&c.nodes[i].backend_url("/kv/"));
    assert_eq!(keys.status, 200, "{keys:?}");
    let mut out = BTreeMap::new();
    for k in keys.json().as_array().expect("a key list") {
        let k = k.as_str().expect("a key").to_string();
        let r = get(&c.nodes[i].backend_url(&format!("/kv/{k}")));
        assert_eq!(r.status, 200, "{k}: {r:?}");
        out.insert(k, r.json());
    }
    out
}

/// Every node has applied everything, and the three demo backends hold
/// the same data; returns it.
pub fn converged_backends(c: &Cluster) -> BTreeMap<String, Value> {
    c.wait_caught_up();
    let first = backend_data(c, 0);
    for n in &c.nodes[1..] {
        let other = backend_data(c, n.index);
        assert_eq!(
            first, other,
            "the backends of {} and {} differ",
            c.nodes[0].name, n.name
        );
    }
    first
}

pub type Op = Operation<KvOp, Vec<u64>>;

/// What one load client saw.
#[derive(Default)]
pub struct ClientLog {
    /// Calls that may have had an effect (503s excluded).
    pub ops: Vec<Op>,
    /// Appends answered 503: never proposed, must never appear.
    pub refused: Vec<u64>,
    /// Answers no correct node gives.
    pub unexpected: Vec<String>,
    /// Every call that did not succeed (refused, timed out, cut, any
    /// status but 2xx and a read's 404), with why.
    pub failures: Vec<String>,
}

/// Record `r` among the failures unless it is one of the `ok` statuses.
fn note_failure(
    log: &mut ClientLog,
    method: &str,
    url: &str,
    r: &Result<super::Resp, String>,
    ok: &[u16],
) {
    match r {
        Ok(r) if ok.contains(&r.status) => {}
        Ok(r) => log
            .failures
            .push(format!("{method} {url}: {} {}", r.status, r.body.trim())),
        Err(e) => log.failures.push(e.clone()),
    }
}

pub fn parse_array(body: &str) -> Option<Vec<u64>> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.as_array()?.iter().map(Value::as_u64).collect()
}

/// A small seeded generator (splitmix64) per client.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const LOAD_KEYS: [&str; 3] = ["a", "b", "c"];

pub fn load_client(
    id: u64,
    urls: Vec<String>,
    alive: Arc<Vec<AtomicBool>>,
    stop: Arc<AtomicBool>,
    t0: Instant,
) -> ClientLog {
    let mut log = ClientLog::default();
    let mut g = Gen(id * 7919 + 17);
    let mut seq = 0u64;
    let micros = |t0: Instant| t0.elapsed().as_micros() as u64;
    while !stop.load(Ordering::SeqCst) {
        let up: Vec<usize> = (0..urls.len())
            .filter(|i| alive[*i].load(Ordering::SeqCst))
            .collect();
        let node = up[g.below(up.len() as u64) as usize];
        let key = LOAD_KEYS[g.below(LOAD_KEYS.len() as u64) as usize].to_string();
        let url = format!("{}/kv/{key}", urls[node]);
        let timeout = Duration::from_secs(8);
        if g.below(2) == 0 {
            seq += 1;
            let value = id * 1_000_000 + seq;
            let start = micros(t0);
            let r = call(
                "POST",
                &url,
                &[("content-type", "application/json")],
                Some(value.to_string().as_bytes()),
                timeout,
            );
            let end = micros(t0);
            note_failure(&mut log, "POST", &url, &r, &[200, 201]);
            let input = KvOp::Append {
                key: key.clone(),
                value,
            };
            let unknown = Op {
                client: id,
                call: start,
                ret: None,
                input: input.clone(),
                output: None,
            };
            match r {
                Ok(r) if r.status == 200 || r.status == 201 => match parse_array(&r.body) {
                    Some(array) => log.ops.push(Op {
                        ret: Some(end),
                        output: Some(array),
                        ..unknown
                    }),
                    None => {
                        log.unexpected.push(format!("POST {url}: {r:?}"));
                        log.ops.push(unknown);
                    }
                },
                Ok(r) if r.status == 503 => log.refused.push(value),
                Ok(r) if r.status == 504 => log.ops.push(unknown),
                Ok(r) => {
                    log.unexpected.push(format!("POST {url}: {r:?}"));
                    log.ops.push(unknown);
                }
                // Connection refused or cut, timeout: unknown.
                Err(_) => log.ops.push(unknown),
            }
        } else {
            let start = micros(t0);
            let r = call("GET", &url, &[("cache-control", "no-cache")], None, timeout);
            let end = micros(t0);
            note_failure(&mut log, "GET", &url, &r, &[200, 404]);
            let seen = match r {
                Ok(r) if r.status == 200 => match parse_array(&r.body) {
                    Some(a) => Some(a),
                    None => {
                        log.unexpected.push(format!("GET {url}: {r:?}"));
                        None
                    }
                },
                Ok(r) if r.status == 404 => Some(Vec::new()),
                // Refused or unanswered: a read has no effect; drop it.
                Ok(r) if r.status == 503 || r.status == 504 => None,
                Ok(r) => {
                    log.unexpected.push(format!("GET {url}: {r:?}"));
                    None
                }
                Err(_) => None,
            };
            if let Some(array) = seen {
                log.ops.push(Op {
                    client: id,
                    call: start,
                    ret: Some(end),
                    input: KvOp::Read { key },
                    output: Some(array),
                });
            }
        }
    }
    log
}

/// Judge a finished load run on `c` (see the module comment); `t0` is
/// the clients' time origin.
pub fn judge(c: &Cluster, logs: Vec<ClientLog>, t0: Instant) {
    let data = converged_backends(c);

    let mut history: Vec<Op> = Vec::new();
    let mut refused = Vec::new();
    let mut unexpected = Vec::new();
    for l in logs {
        history.extend(l.ops);
        refused.extend(l.refused);
        unexpected.extend(l.unexpected);
    }
    assert!(
        unexpected.is_empty(),
        "answers no node should give:\n{}",
        unexpected.join("\n")
    );
    let acked = history
        .iter()
        .filter(|o| matches!(o.input, KvOp::Append { .. }) && o.output.is_some())
        .count();
    let unknown = history.iter().filter(|o| o.output.is_none()).count();
    let reads = history.len() - acked - unknown;
    eprintln!(
        "e2e: load: {acked} appends acknowledged, {unknown} unknown, {} refused (503), {reads} no-cache reads",
        refused.len()
    );
    assert!(acked >= 20, "too little load got through: {acked} appends");
    assert!(reads >= 20, "too few reads got through: {reads}");

    // Every acknowledged append is there exactly once, an unknown one at
    // most once, a refused one never; nothing else is there.
    let arrays: BTreeMap<&str, Vec<u64>> = LOAD_KEYS
        .iter()
        .map(|k| {
            let a = data
                .get(*k)
                .map(|v| parse_array(&v.to_string()).expect("an array of numbers"))
                .unwrap_or_default();
            (*k, a)
        })
        .collect();
    let count = |key: &str, value: u64| arrays[key].iter().filter(|x| **x == value).count();
    let mut issued = std::collections::BTreeSet::new();
    for op in &history {
        if let KvOp::Append { key, value } = &op.input {
            issued.insert(*value);
            let n = count(key, *value);
            if op.output.is_some() {
                assert_eq!(
                    n, 1,
                    "acknowledged append {value} to {key} is there {n} times"
                );
            } else {
                assert!(
                    n <= 1,
                    "append {value} to {key} (unknown outcome) is there {n} times"
                );
            }
        }
    }
    for value in &refused {
        for key in LOAD_KEYS {
            assert_eq!(
                count(key, *value),
                0,
                "append {value} was answered 503 (not done) but was applied to {key}"
            );
        }
    }
    for (key, a) in &arrays {
        for v in a {
            assert!(
                issued.contains(v),
                "{key} holds {v}, which no client appended"
            );
        }
    }

    // The final state is one more read, after everything.
    let end = t0.elapsed().as_micros() as u64;
    for (key, a) in &arrays {
        history.push(Op {
            client: 0,
            call: end,
            ret: Some(end + 1),
            input: KvOp::Read {
                key: key.to_string(),
            },
            output: Some(a.clone()),
        });
    }
    let budget = Budget {
        max_steps: 20_000_000,
        deadline: Some(Instant::now() + Duration::from_secs(20)),
    };
    let started = Instant::now();
    match check(&ArrayKv, &history, &budget) {
        Verdict::Ok => eprintln!(
            "e2e: {} ops linearizable (checked in {:?})",
            history.len(),
            started.elapsed()
        ),
        Verdict::Violation(e) => panic!("the history is not linearizable:\n{e}"),
        Verdict::Unknown { reason } => {
            panic!(
                "the checker could not decide ({} ops): {reason}",
                history.len()
            )
        }
    }
}

/// `clients` load clients running against every node of a cluster.
pub struct Load {
    /// Which nodes the clients may call (a killed node is marked down).
    pub alive: Arc<Vec<AtomicBool>>,
    stop: Arc<AtomicBool>,
    /// The clients' time origin: operation times are micros since it.
    pub t0: Instant,
    clients: Vec<std::thread::JoinHandle<ClientLog>>,
}

impl Load {
    /// Start `clients` clients (ids from 1) against every node of `c`.
    pub fn start(c: &Cluster, clients: u64) -> Load {
        let urls: Vec<String> = c.nodes.iter().map(|n| n.url("")).collect();
        let alive: Arc<Vec<AtomicBool>> =
            Arc::new((0..urls.len()).map(|_| AtomicBool::new(true)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let clients = (1..=clients)
            .map(|id| {
                let (urls, alive, stop) = (urls.clone(), alive.clone(), stop.clone());
                std::thread::spawn(move || load_client(id, urls, alive, stop, t0))
            })
            .collect();
        Load {
            alive,
            stop,
            t0,
            clients,
        }
    }

    /// Mark node `i` up or down for the clients.
    pub fn set_alive(&self, i: usize, up: bool) {
        self.alive[i].store(up, Ordering::SeqCst);
    }

    /// Stop the clients and collect what each saw.
    pub fn stop(self) -> Vec<ClientLog> {
        self.stop.store(true, Ordering::SeqCst);
        self.clients
            .into_iter()
            .map(|h| h.join().expect("a load client panicked"))
            .collect()
    }
}
