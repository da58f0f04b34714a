//! One load run with wrk, and what it printed.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers that were not 2xx/3xx, and socket errors.
    pub errors: u64,
    pub requests: u64,
}

/// Runs of one system under one load, as one figure: their mean rate,
/// and the worse of their p50s and of their p99s (percentiles of runs
/// cannot be merged; the worse is the honest side).
pub fn pooled(runs: &[Run]) -> Run {
    let n = runs.len().max(1) as f64;
    Run {
        rps: runs.iter().map(|r| r.rps).sum::<f64>() / n,
        p50_ms: runs.iter().map(|r| r.p50_ms).fold(0.0, f64::max),
        p99_ms: runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
        errors: runs.iter().map(|r| r.errors).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
    }
}

/// `wrk` at `conns` connections for `secs` seconds against `url`, with
/// the Lua script `script`.
pub fn run(url: &str, script: &Path, conns: u32, secs: u32) -> Result<Run> {
    let threads = conns.clamp(1, 2);
    let out = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{conns}"),
            format!("-d{secs}s"),
            "--timeout".into(),
            "10s".into(),
            "--latency".into(),
            "-s".into(),
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("wrk's output:\n{text}"))
}

pub fn parse(text: &str) -> Result<Run> {
    let mut run = Run::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => run.rps = v.parse()?,
            ["50%", v] => run.p50_ms = millis(v)?,
            ["99%", v] => run.p99_ms = millis(v)?,
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                for n in rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                {
                    run.errors += n;
                }
            }
            [n, "requests", "in", ..] => run.requests = n.parse()?,
            _ => {}
        }
    }
    if run.rps == 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(run)
}

/// wrk's durations: `812.00us`, `1.20ms`, `2.01s`.
fn millis(v: &str) -> Result<f64> {
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("not a duration: {v}")
    };
    Ok(n.parse::<f64>()? * scale)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_output() {
        let text = "Running 2s test @ http://127.0.0.1:1\n  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     90%    2.00ms\n     99%    1.50s\n  4000 requests in 2.00s, 1.00MB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 4\nRequests/sec:   2000.50\n";
        let r = super::parse(text).unwrap();
        assert_eq!(r.rps, 2000.5);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(r.p99_ms, 1500.0);
        assert_eq!((r.errors, r.requests), (10, 4000));
    }

    #[test]
    fn pooled_runs_keep_the_mean_rate_and_the_worse_percentiles() {
        let run = |rps, p50_ms, p99_ms, errors| super::Run {
            rps,
            p50_ms,
            p99_ms,
            errors,
            requests: 10,
        };
        let p = super::pooled(&[run(100.0, 0.5, 4.0, 1), run(300.0, 0.7, 2.0, 2)]);
        assert_eq!((p.rps, p.p50_ms, p.p99_ms), (200.0, 0.7, 4.0));
        assert_eq!((p.errors, p.requests), (3, 20));
    }
}
