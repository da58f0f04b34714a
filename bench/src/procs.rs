//! The processes a benchmark starts: each logs to its own file under the
//! work directory and is killed when the set is dropped.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Procs {
    dir: PathBuf,
    /// Each with whether it leads its own process group.
    children: Vec<(String, Child, bool)>,
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
        self.start(name, cmd, false)
    }

    /// The same for a process that forks workers (nginx): it leads a
    /// process group of its own, killed whole, or its workers would
    /// outlive it and keep the port. (The others stay in the bench's
    /// group, so that Ctrl-C reaches them too.)
    pub fn spawn_group(&mut self, name: &str, cmd: &mut Command) -> Result<u32> {
        self.start(name, cmd, true)
    }

    fn start(&mut self, name: &str, cmd: &mut Command, group: bool) -> Result<u32> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        if group {
            cmd.process_group(0);
        }
        let child = cmd
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        self.children.push((name.to_string(), child, group));
        Ok(pid)
    }

    /// SIGKILL `name` and wait for it.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let i = self
            .children
            .iter()
            .position(|(n, ..)| n == name)
            .with_context(|| format!("no process {name}"))?;
        let (_, mut child, group) = self.children.remove(i);
        kill(&mut child, group);
        child.wait()?;
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c, group) in &mut self.children {
            kill(c, *group);
        }
        for (_, c, _) in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// SIGKILL `child`, and its process group if it leads one.
fn kill(child: &mut Child, group: bool) {
    if group {
        let group = format!("-{}", child.id());
        let killed = Command::new("kill").args(["-KILL", "--", &group]).status();
        if killed.is_ok_and(|s| s.success()) {
            return;
        }
    }
    let _ = child.kill();
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

/// Peak resident set size of process `pid`, in MB (`VmHWM`, 10^6 bytes:
/// the target is stated in MB).
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}
