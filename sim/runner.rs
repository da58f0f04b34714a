//! Running many seeds: in parallel, with a progress line, writing a
//! scenario file for every failure so it can be replayed exactly.

use super::report::{FailureKind, Report};
use super::scenario::Scenario;
use super::world::World;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Process exit codes of `ordo sim`, one per kind of failure.
pub fn exit_code(kind: FailureKind) -> i32 {
    match kind {
        FailureKind::Safety => 10,
        FailureKind::Liveness => 11,
        FailureKind::Assertion => 12,
    }
}

/// One failed seed.
pub struct Failed {
    pub seed: u64,
    pub kind: FailureKind,
    /// The check that failed (see `sim::invariants`).
    pub check: &'static str,
    pub message: String,
    pub file: Option<PathBuf>,
}

pub struct Summary {
    pub seeds: u64,
    pub failed: Vec<Failed>,
    pub ops: u64,
    pub events: u64,
    /// Seeds whose history the checker could not decide within budget.
    pub checker_unknown: u64,
    /// Leaderships won, and those won over paged promises.
    pub leader_changes: u64,
    pub leaders_paged: u64,
    pub reconfigurations: u64,
    pub wall_secs: f64,
}

impl Summary {
    /// Simulated client operations answered per wall-clock second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall_secs.max(1e-9)
    }
}

/// Run the generated scenario of every seed in `seeds`, `jobs` at a time.
/// `tweak` may change each scenario (e.g. switch a test-only bug on).
pub fn run_seeds(
    seeds: std::ops::Range<u64>,
    jobs: usize,
    out_dir: Option<&Path>,
    progress: bool,
    tweak: &(dyn Fn(&mut Scenario) + Sync),
) -> Summary {
    run_seeds_until(seeds, jobs, out_dir, progress, usize::MAX, tweak)
}

/// As [`run_seeds`], but no new seed starts once `max_failures` seeds
/// have failed (the seeds already running finish).
pub fn run_seeds_until(
    seeds: std::ops::Range<u64>,
    jobs: usize,
    out_dir: Option<&Path>,
    progress: bool,
    max_failures: usize,
    tweak: &(dyn Fn(&mut Scenario) + Sync),
) -> Summary {
    let next = AtomicU64::new(seeds.start);
    let done = AtomicU64::new(0);
    let ops = AtomicU64::new(0);
    let events = AtomicU64::new(0);
    let undecided = AtomicU64::new(0);
    let leaders = AtomicU64::new(0);
    let paged = AtomicU64::new(0);
    let reconfigs = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    let failures = AtomicU64::new(0);
    let total = seeds.end.saturating_sub(seeds.start);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    if failures.load(Ordering::Relaxed) >= max_failures as u64 {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let mut sc = Scenario::generate(seed);
                    tweak(&mut sc);
                    let report = World::new(sc.clone(), false).run();
                    ops.fetch_add(report.ops_ok, Ordering::Relaxed);
                    events.fetch_add(report.events, Ordering::Relaxed);
                    leaders.fetch_add(report.leader_changes, Ordering::Relaxed);
                    paged.fetch_add(report.leaders_paged, Ordering::Relaxed);
                    reconfigs.fetch_add(report.reconfigurations, Ordering::Relaxed);
                    if report.linearizable.is_none() {
                        undecided.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(f) = report.failure() {
                        failures.fetch_add(1, Ordering::Relaxed);
                        let file = out_dir.and_then(|d| write_failure(d, &sc, &report));
                        if let Ok(mut v) = failed.lock() {
                            v.push(Failed {
                                seed,
                                kind: f.kind,
                                check: f.check,
                                message: f.message.clone(),
                                file,
                            });
                        }
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if progress && (n == total || n % (total / 100).max(1) == 0) {
                        let bad = failed.lock().map(|v| v.len()).unwrap_or(0);
                        draw_progress(n, total, bad, start);
                    }
                }
            });
        }
    });
    if progress {
        eprintln!();
    }
    let mut failed = failed.into_inner().unwrap_or_default();
    failed.sort_by_key(|f| f.seed);
    Summary {
        seeds: done.into_inner(),
        failed,
        ops: ops.into_inner(),
        events: events.into_inner(),
        checker_unknown: undecided.into_inner(),
        leader_changes: leaders.into_inner(),
        leaders_paged: paged.into_inner(),
        reconfigurations: reconfigs.into_inner(),
        wall_secs: start.elapsed().as_secs_f64(),
    }
}

fn draw_progress(done: u64, total: u64, failed: usize, start: Instant) {
    if !std::io::stderr().is_terminal() && done != total {
        return;
    }
    let width = 30;
    let filled = (done * width / total.max(1)) as usize;
    let bar: String = "#".repeat(filled) + &"-".repeat(width as usize - filled);
    let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
    eprint!("\r[{bar}] {done}/{total} seeds, {failed} failed, {rate:.0} seeds/s ");
    let _ = std::io::stderr().flush();
}

/// Write the scenario that reproduces a failure, with the failure as a
/// comment on top.
pub fn write_failure(dir: &Path, sc: &Scenario, report: &Report) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("seed-{}.scenario", sc.seed));
    let mut text = String::new();
    if let Some(f) = report.failure() {
        text.push_str(&format!("# failed: {:?} ({})\n", f.kind, f.check));
        for line in f.message.lines().take(20) {
            text.push_str(&format!("#   {line}\n"));
        }
    }
    text.push_str(&sc.render());
    std::fs::write(&path, text).ok()?;
    Some(path)
}
