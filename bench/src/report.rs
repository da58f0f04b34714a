//! The figures of one run, as a table with each figure's reference from
//! the same run, and the targets they are held to.

use crate::wrk::Run;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Default)]
pub struct Measured {
    pub secs: u32,
    pub conns: Vec<u32>,
    pub sequential: bool,
    /// The nodes' `backend_pipeline`.
    pub pipeline: usize,
    /// The nodes' `answer`.
    pub answer: String,
    /// The nodes' `log_retain_slots`: their logs compact past it.
    pub log_retain_slots: u64,
    /// connections → the leader's commit index when its write runs began.
    pub commit_before_writes: BTreeMap<u32, u64>,
    /// (system, connections) → run.
    pub puts: BTreeMap<(String, u32), Run>,
    pub gets: BTreeMap<(String, u32), Run>,
    /// connections → the p99 bound of ordo's own time per plain GET
    /// (its request histogram over the same run), ms.
    pub handler_p99_ms: BTreeMap<u32, f64>,
    pub catchup: Option<CatchUp>,
    /// Peak RSS per ordo node.
    pub rss_mb: Vec<(String, f64)>,
}

pub struct CatchUp {
    pub updates: u64,
    pub slots: u64,
    pub seconds: f64,
    pub backend_sequential_rps: f64,
    /// The stopped node's peak RSS before it was stopped (under the
    /// write load).
    pub rss_before_mb: f64,
}

impl Measured {
    pub fn put(&mut self, system: &str, c: u32, run: Run) {
        eprintln!(
            "  {system:<14} c={c:<4} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}",
            run.rps, run.p50_ms, run.p99_ms, run.errors
        );
        self.puts.insert((system.into(), c), run);
    }

    pub fn get(&mut self, system: &str, c: u32, run: Run) {
        eprintln!(
            "  {system:<14} c={c:<4} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>8.2} ms  errors {}",
            run.rps, run.p50_ms, run.p99_ms, run.errors
        );
        self.gets.insert((system.into(), c), run);
    }

    pub fn put_rps(&self, system: &str, c: u32) -> Option<f64> {
        self.puts.get(&(system.into(), c)).map(|r| r.rps)
    }

    pub fn get_rps(&self, system: &str, c: u32) -> Option<f64> {
        self.gets.get(&(system.into(), c)).map(|r| r.rps)
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn lat(r: &Run) -> String {
    format!("{:.1} / {:.1}", r.p50_ms, r.p99_ms)
}

pub fn render(m: &Measured) -> String {
    let mut t = String::new();
    let apply = if m.sequential {
        "applied strictly in slot order (no `resource_key`)".to_string()
    } else {
        "`resource_key = \"path\"`: updates to different keys applied side by side".to_string()
    };
    let apply = if m.pipeline > 1 {
        format!(
            "{apply}; `backend_pipeline = {}`: up to {} on one connection to the backend",
            m.pipeline, m.pipeline
        )
    } else {
        apply
    };
    let apply = if m.answer == "local" {
        format!("{apply}; `answer = \"local\"`: answered once the node's own backend answered")
    } else {
        apply
    };
    let _ = writeln!(t, "### Writes: 256-byte PUT ({apply})\n");
    let _ = writeln!(
        t,
        "| c | via | ordo req/s | etcd req/s | ordo ÷ etcd | target | ordo p50 / p99 ms | etcd p50 / p99 ms | p99 ≤ etcd's | errors ordo / etcd |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|");
    for &c in &m.conns {
        for via in ["leader", "follower"] {
            let (Some(o), Some(e)) = (
                m.puts.get(&(format!("ordo {via}"), c)),
                m.puts.get(&(format!("etcd {via}"), c)),
            ) else {
                continue;
            };
            let ratio = o.rps / e.rps;
            let want = if c == 1 { 1.2 } else { 1.0 };
            // wrk counts refusals as requests: a figure with any is no
            // figure at all.
            let clean = o.errors == 0;
            let _ = writeln!(
                t,
                "| {c} | {via} | {:.0} | {:.0} | {ratio:.2}× | ≥ {want:.1}×: {} | {} | {} | {} | {} / {} |",
                o.rps,
                e.rps,
                mark(clean && ratio >= want),
                lat(o),
                lat(e),
                mark(clean && o.p99_ms <= e.p99_ms),
                o.errors,
                e.errors
            );
        }
    }
    if !m.commit_before_writes.is_empty() {
        let each: Vec<String> = m
            .commit_before_writes
            .iter()
            .map(|(c, slot)| {
                let state = if *slot > m.log_retain_slots {
                    "compacting"
                } else {
                    "not yet"
                };
                format!("c={c} at slot {slot} ({state})")
            })
            .collect();
        let _ = writeln!(
            t,
            "\nThe nodes keep `log_retain_slots = {}`: their logs compact once the commit index passes it, as every node's does past 100,000 slots at the default. The runs began: {}.",
            m.log_retain_slots,
            each.join(", ")
        );
    }
    let _ = writeln!(t, "\n### Reads: GET of a 1 KiB value\n");
    let _ = writeln!(
        t,
        "| c | backend direct | nginx `proxy_pass` | ordo | ordo ÷ nginx (≥ 1.0×) | p99 ms ordo / nginx (≤ 2×) | ordo no-cache | no-cache ÷ plain (≥ 0.5×) | errors ordo / no-cache / nginx |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|");
    for &c in &m.conns {
        let get = |s: &str| m.gets.get(&(s.to_string(), c));
        let (Some(b), Some(n), Some(o), Some(f)) = (
            get("backend"),
            get("nginx"),
            get("ordo"),
            get("ordo no-cache"),
        ) else {
            continue;
        };
        let _ = writeln!(
            t,
            "| {c} | {:.0} (p99 {:.1} ms) | {:.0} | {:.0} | {:.2}×: {} | {:.1} / {:.1}: {} | {:.0} (p99 {:.1} ms) | {:.2}×: {} | {} / {} / {} |",
            b.rps,
            b.p99_ms,
            n.rps,
            o.rps,
            o.rps / n.rps,
            mark(o.errors == 0 && o.rps >= n.rps),
            o.p99_ms,
            n.p99_ms,
            mark(o.errors == 0 && o.p99_ms <= 2.0 * n.p99_ms),
            f.rps,
            f.p99_ms,
            f.rps / o.rps,
            mark(f.errors == 0 && f.rps >= 0.5 * o.rps),
            o.errors,
            f.errors,
            n.errors
        );
    }
    if !m.handler_p99_ms.is_empty() {
        let each: Vec<String> = m
            .handler_p99_ms
            .iter()
            .map(|(c, ms)| format!("≤ {ms:.1} ms at c={c}"))
            .collect();
        let _ = writeln!(
            t,
            "\nordo's own time per plain GET, from its handler's start to the backend's answer head (node `n0`'s `ordo_request_seconds` histogram over the same runs), p99: {}. What wrk's p99 adds to it is spent outside ordo's handler: in the kernel, waiting for a CPU, in wrk itself.",
            each.join(", ")
        );
    }
    if let Some(c) = &m.catchup {
        let rate = c.updates as f64 / c.seconds;
        let ratio = rate / c.backend_sequential_rps;
        let _ = writeln!(t, "\n### Catch-up\n");
        let _ = writeln!(
            t,
            "A follower stopped while {} updates ({} slots) went through the leader at 64 connections, then started again: caught up in {:.1} s, **{rate:.0} updates/s**. The backend's own sequential write rate (wrk, one connection, straight to it): {:.0}/s. Ratio {ratio:.2}× (target ≥ 0.8×: {}).",
            c.updates,
            c.slots,
            c.seconds,
            c.backend_sequential_rps,
            mark(ratio >= 0.8)
        );
    }
    let _ = writeln!(t, "\n### Memory\n");
    let _ = writeln!(t, "| node | peak RSS (MB) | < 100 MB |");
    let _ = writeln!(t, "|---|---|---|");
    for (n, mib) in &m.rss_mb {
        let _ = writeln!(t, "| {n} | {mib:.1} | {} |", mark(*mib < 100.0));
    }
    if let Some(c) = &m.catchup {
        let _ = writeln!(
            t,
            "| the catch-up node, under the write runs, before it was stopped | {:.1} | {} |",
            c.rss_before_mb,
            mark(c.rss_before_mb < 100.0)
        );
    }
    t
}

/// The whole `docs/performance.md`.
pub fn document(m: &Measured, tables: &str, chart: &Path) -> String {
    let chart_name = chart
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(
        "# Performance\n\n\
         Written by `scripts/bench` (the `ordo-bench` tool in `bench/`); run it\n\
         again to measure your machine. Everything runs on loopback on one\n\
         machine, in one run, so each figure stands next to its reference:\n\n\
         - **ordo**: three `ordo run` processes, TLS between them, each in front\n  \
           of its own `ordo demo-backend`; every update is fsynced by a majority\n  \
           before it is answered (group commit), and answered once a majority of\n  \
           the backends agree (`answer = \"agreed\"`, the default).\n\
         - **etcd**: a three-member etcd {etcd} (Debian's `etcd-server`), fsync on,\n  \
           taking puts of the same size through its JSON gateway (`/v3/kv/put`).\n\
         - **nginx**: `proxy_pass` with a keep-alive upstream, in front of node\n  \
           `n0`'s backend, the backend that ordo's `n0` reads from.\n\
         - **wrk** is the client of all of them, {secs} s per run; `c` is its\n  \
           connections. Every figure but the backend's pools two runs: their\n  \
           mean rate, and the worse of their p50s and of their p99s. The runs\n  \
           go in an order that a steady drift of the machine's speed hits both\n  \
           sides of each comparison alike: writes ordo leader, etcd leader, ordo\n  \
           follower, etcd follower, then the same backwards; reads nginx, ordo,\n  \
           no-cache, no-cache, ordo, nginx.\n\n\
         The machine: {cpus} CPUs, shared by every process above and by wrk.\n\n\
         {tables}\n\
         ![Throughput against concurrency](images/{chart_name})\n",
        etcd = tool_version("etcd"),
        secs = m.secs,
        cpus = std::thread::available_parallelism().map_or(0, |n| n.get()),
    )
}

fn tool_version(tool: &str) -> String {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().last().map(String::from))
        })
        .unwrap_or_default()
}
