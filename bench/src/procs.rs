//! The processes a benchmark starts: each logs to its own file under the
//! work directory and is killed when the set is dropped.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Procs {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Procs {
    pub fn new(dir: &Path) -> Procs {
        Procs {
            dir: dir.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Start `cmd` as `name` (its output goes to `NAME.log`); its pid.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<u32> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        // Its own process group, so that killing it kills what it forked
        // (nginx's workers would outlive their master and keep the port).
        let child = cmd
            .process_group(0)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// SIGKILL `name` and wait for it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("no process {name}"))?;
        let (_, mut child) = self.children.remove(i);
        kill_group(&mut child);
        child.wait()?;
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            kill_group(c);
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// SIGKILL the process group of `child` (it leads its own).
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let killed = Command::new("kill").args(["-KILL", "--", &group]).status();
    if !killed.is_ok_and(|s| s.success()) {
        let _ = child.kill();
    }
}

/// GET `url` until it answers `want`, for at most `limit`.
pub fn wait_for(url: &str, want: u16, limit: Duration) -> Result<()> {
    let agent = agent();
    let start = Instant::now();
    loop {
        let status = agent.get(url).call().map(|r| r.status().as_u16());
        if status.as_ref().ok() == Some(&want) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("{url} did not answer {want} within {limit:?} (last: {status:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that takes every status as an answer, with timeouts.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Peak resident set size of process `pid`, in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
