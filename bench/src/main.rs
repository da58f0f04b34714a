//! ordo side by side with etcd and nginx, on loopback, in one run.
//!
//! Starts three ordo nodes (separate processes) in front of three demo
//! backends, a three-member etcd (fsync on, as shipped), and nginx
//! `proxy_pass` with a keep-alive upstream in front of node 0's backend.
//! wrk is the client of all of them. Prints every figure next to its
//! reference from the same run, writes the table to `docs/performance.md`
//! and a chart of throughput against concurrency. `scripts/bench` builds
//! and runs it.

mod chart;
mod handler;
mod procs;
mod report;
mod wrk;

use anyhow::{Context, Result, bail};
use clap::Parser;
use procs::{Procs, agent, peak_rss_mb, wait_for};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    secs: u32,
    /// Client connections, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    conns: Vec<u32>,
    /// Updates a stopped node misses before it rejoins (the catch-up
    /// measurement); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    catchup: u64,
    /// The ordo binary.
    #[arg(long, default_value = "target/release/ordo")]
    ordo: PathBuf,
    /// Apply strictly in slot order (no `resource_key`), for comparison.
    #[arg(long)]
    sequential: bool,
    /// `backend_pipeline` of the nodes: updates on one connection to the
    /// backend at once (1: none pipelined).
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// `answer` of the nodes: `agreed` (the default: a client's answer
    /// waits for a majority of backends to agree) or `local`.
    #[arg(long, default_value = "agreed", value_parser = ["agreed", "local"])]
    answer: String,
    /// Where the table goes (nothing is written with `--no-write`).
    #[arg(long, default_value = "docs/performance.md")]
    out: PathBuf,
    /// Where the chart goes.
    #[arg(long, default_value = "docs/images/throughput.png")]
    chart: PathBuf,
    /// Print only; leave the docs alone.
    #[arg(long)]
    no_write: bool,
    /// `log_retain_slots` of the nodes. Below the default (1,000,000),
    /// so that the later write runs go on while the log compacts, as
    /// every node's does once it is that many slots old (100,000 at the
    /// default: the dedupe window's); above the catch-up's slots.
    #[arg(long, default_value_t = 20_000)]
    log_retain_slots: u64,
    /// Only the writes, only the reads, or only the catch-up (implies
    /// `--no-write`).
    #[arg(long, value_parser = ["writes", "reads", "catchup"])]
    only: Option<String>,
}

const BASE: u16 = 7700;
const NODES: [&str; 3] = ["n0", "n1", "n2"];

fn port(offset: u16) -> u16 {
    BASE + offset
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ordo = std::fs::canonicalize(&args.ordo).with_context(|| {
        format!(
            "{}: build it first (scripts/bench does)",
            args.ordo.display()
        )
    })?;
    for tool in ["wrk", "etcd", "nginx"] {
        if which(tool).is_none() {
            bail!("{tool} is not installed: apt-get install -y wrk etcd-server nginx");
        }
    }
    let work = std::env::temp_dir().join(format!("ordo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = run(&args, &ordo, &work);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        eprintln!("logs kept in {}", work.display());
    }
    result
}

fn run(args: &Args, ordo: &Path, work: &Path) -> Result<()> {
    // A bench killed before it could clean up may have left processes on
    // these ports; measuring them instead would be quietly wrong.
    for offset in (0..3)
        .chain(10..13)
        .chain(20..24)
        .chain([30])
        .chain(40..43)
        .chain(50..53)
    {
        if std::net::TcpListener::bind(("127.0.0.1", port(offset))).is_err() {
            bail!(
                "port {} is in use: is an earlier bench still running? (pkill -f 'ordo run'; pkill etcd; pkill nginx)",
                port(offset)
            );
        }
    }
    let mut procs = Procs::new(work);
    let mut m = report::Measured {
        secs: args.secs,
        conns: args.conns.clone(),
        sequential: args.sequential,
        pipeline: args.pipeline,
        answer: args.answer.clone(),
        log_retain_slots: args.log_retain_slots,
        ..report::Measured::default()
    };
    write_scripts(work)?;

    // ---- ordo: three backends, three nodes ----
    let status = Command::new(ordo)
        .args([
            "certs",
            "--cluster",
            "bench",
            "--nodes",
            "n0,n1,n2",
            "--out",
        ])
        .arg(work.join("certs"))
        .output()?;
    if !status.status.success() {
        bail!("ordo certs: {}", String::from_utf8_lossy(&status.stderr));
    }
    for i in 0..3u16 {
        let listen = format!("127.0.0.1:{}", port(20 + i));
        procs.spawn(
            &format!("backend-{i}"),
            Command::new(ordo).args(["demo-backend", "--listen", &listen]),
        )?;
    }
    let mut pids = [0u32; 3];
    for (i, pid) in pids.iter_mut().enumerate() {
        let config = node_config(i, args);
        std::fs::write(work.join(format!("n{i}.toml")), config)?;
        *pid = start_node(&mut procs, ordo, i, true)?;
    }
    for i in 0..3u16 {
        wait_for(&url(i, "/readyz"), 200, Duration::from_secs(30))?;
        wait_for(
            &format!("http://127.0.0.1:{}/kv/", port(20 + i)),
            200,
            Duration::from_secs(10),
        )?;
    }
    let leader = ordo_leader()?;
    let follower = (leader + 1) % 3;
    eprintln!(
        "bench: ordo leader {}, follower {}",
        NODES[leader], NODES[follower]
    );
    // The 1 KiB value the reads fetch, through the log to every backend.
    let value = format!("{{\"v\":\"{}\"}}", "r".repeat(1024 - 8));
    let put = agent()
        .put(&url(leader as u16, "/kv/read"))
        .header("Content-Type", "application/json")
        .send(value.as_str())?;
    if put.status().as_u16() >= 300 {
        bail!("seeding the read value: {}", put.status());
    }
    wait_for(&backend_url(0, "/kv/read"), 200, Duration::from_secs(10))?;

    // ---- etcd: three members, fsync on ----
    start_etcd(&mut procs)?;
    let etcd_leader = etcd_leader()?;
    let etcd_follower = (etcd_leader + 1) % 3;

    // ---- nginx in front of node 0's backend ----
    std::fs::write(work.join("nginx.conf"), nginx_config(work))?;
    std::fs::create_dir_all(work.join("nginx-tmp"))?;
    procs.spawn_group(
        "nginx",
        Command::new(which("nginx").context("nginx")?)
            .arg("-p")
            .arg(work)
            .arg("-c")
            .arg(work.join("nginx.conf"))
            .args(["-g", "daemon off;"]),
    )?;
    wait_for(
        &format!("http://127.0.0.1:{}/kv/read", port(30)),
        200,
        Duration::from_secs(10),
    )?;

    // ---- the runs, interleaved so that drift hits every system alike ----
    let s = args.secs;
    let only = args.only.as_deref();
    for &c in args
        .conns
        .iter()
        .filter(|_| only.is_none() || only == Some("writes"))
    {
        eprintln!("bench: writes at c={c}");
        m.commit_before_writes
            .insert(c, status_of(leader as u16)?.1);
        let (put, etcd_put) = (work.join("put.lua"), work.join("etcd-put.lua"));
        let targets = [
            ("ordo leader", url(leader as u16, ""), &put),
            ("etcd leader", etcd_url(etcd_leader), &etcd_put),
            ("ordo follower", url(follower as u16, ""), &put),
            ("etcd follower", etcd_url(etcd_follower), &etcd_put),
        ];
        // Two rounds, the second in the mirrored order, each figure the
        // pool of its two runs: one write run's rate moved by half within
        // an hour here, and a drift over the four runs would otherwise
        // favour whichever system ran first.
        let mut runs: Vec<Vec<wrk::Run>> = vec![Vec::new(); targets.len()];
        let order = (0..targets.len()).chain((0..targets.len()).rev());
        for i in order {
            let (_, target, script) = &targets[i];
            runs[i].push(wrk::run(target, script, c, s)?);
        }
        for ((system, _, _), runs) in targets.iter().zip(&runs) {
            m.put(system, c, wrk::pooled(runs));
        }
    }
    for &c in args
        .conns
        .iter()
        .filter(|_| only.is_none() || only == Some("reads"))
    {
        eprintln!("bench: reads at c={c}");
        let get = work.join("get.lua");
        m.get("backend", c, wrk::run(&backend_url(0, ""), &get, c, s)?);
        // nginx, ordo, no-cache, no-cache, ordo, nginx: each pair of
        // figures that a target compares (ordo to nginx, no-cache to
        // plain) sits symmetric about the middle, so a steady drift of
        // this machine's speed (a fifth over minutes) hits both alike.
        let nginx = format!("http://127.0.0.1:{}", port(30));
        let (plain, fresh) = (url(0, ""), work.join("get-fresh.lua"));
        let first = wrk::run(&nginx, &get, c, s)?;
        let before = metrics_of(0)?;
        let ordo_first = wrk::run(&plain, &get, c, s)?;
        let fresh_runs = [
            wrk::run(&plain, &fresh, c, s)?,
            wrk::run(&plain, &fresh, c, s)?,
        ];
        let ordo_last = wrk::run(&plain, &get, c, s)?;
        let after = metrics_of(0)?;
        let last = wrk::run(&nginx, &get, c, s)?;
        m.get("nginx", c, wrk::pooled(&[first, last]));
        m.get("ordo", c, wrk::pooled(&[ordo_first, ordo_last]));
        m.get("ordo no-cache", c, wrk::pooled(&fresh_runs));
        // The no-cache reads between count as kind "fresh_read": the
        // "read" histogram below covers the two plain runs alone.
        if let Some(p99) = handler::quantile_bound_ms(
            &handler::buckets(&before, "read"),
            &handler::buckets(&after, "read"),
            0.99,
        ) {
            m.handler_p99_ms.insert(c, p99);
        }
    }

    // ---- catch-up: a node stopped while the others take N updates ----
    if args.catchup > 0 && (only.is_none() || only == Some("catchup")) {
        m.catchup = Some(catch_up(args, &mut procs, ordo, work, leader, &mut pids)?);
    }
    for (i, pid) in pids.iter().enumerate() {
        m.rss_mb
            .push((NODES[i].to_string(), peak_rss_mb(*pid).unwrap_or(f64::NAN)));
    }
    drop(procs);

    let text = report::render(&m);
    println!("{text}");
    if !args.no_write && only.is_none() {
        std::fs::write(&args.out, report::document(&m, &text, &args.chart))?;
        chart::draw(&m, &args.chart)?;
        eprintln!(
            "bench: wrote {} and {}",
            args.out.display(),
            args.chart.display()
        );
    }
    Ok(())
}

/// Stop a follower, put `args.catchup` updates through the leader, start
/// the follower again and time it until it has applied them all. The
/// reference: the backend's own rate of sequential writes.
fn catch_up(
    args: &Args,
    procs: &mut Procs,
    ordo: &Path,
    work: &Path,
    leader: usize,
    pids: &mut [u32; 3],
) -> Result<report::CatchUp> {
    let lagger = (leader + 2) % 3;
    let name = NODES[lagger];
    eprintln!(
        "bench: catch-up: stopping {name}, writing {} updates",
        args.catchup
    );
    // The reference: a demo backend of its own (writing to one of the
    // nodes' backends would make it differ from the others).
    let listen = format!("127.0.0.1:{}", port(23));
    procs.spawn(
        "backend-reference",
        Command::new(ordo).args(["demo-backend", "--listen", &listen]),
    )?;
    wait_for(&backend_url(3, "/kv/"), 200, Duration::from_secs(10))?;
    let reference = wrk::run(
        &backend_url(3, ""),
        &work.join("put.lua"),
        1,
        args.secs.min(5),
    )?;
    if reference.errors > 0 {
        bail!("the reference backend refused {} writes", reference.errors);
    }
    let rss_before = peak_rss_mb(pids[lagger]).unwrap_or(f64::NAN);
    procs.kill(name)?;
    // wrk cannot stop at a count (its thread:stop() hangs 4.2.0 here): it
    // runs in rounds of a few seconds until enough went through.
    let mut written = 0;
    while written < args.catchup {
        let load = wrk::run(&url(leader as u16, ""), &work.join("put.lua"), 64, 3)?;
        let ok = load.requests.saturating_sub(load.errors);
        if ok == 0 {
            bail!("the leader takes no more updates");
        }
        written += ok;
    }
    let target = status_of(leader as u16)?.1;
    eprintln!("bench: catch-up: {written} updates in, commit {target}; starting {name}");
    let start = Instant::now();
    pids[lagger] = start_node(procs, ordo, lagger, false)?;
    let behind_from = loop {
        if let Ok((applied, _)) = status_of(lagger as u16) {
            break applied;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("{name} did not answer its status within a minute of its start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    loop {
        let (applied, _) = status_of(lagger as u16).unwrap_or((0, 0));
        if applied >= target {
            break;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("{name} did not catch up in 30 minutes: applied {applied} of {target}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    Ok(report::CatchUp {
        updates: written,
        slots: target.saturating_sub(behind_from),
        seconds: took.as_secs_f64(),
        backend_sequential_rps: reference.rps,
        rss_before_mb: rss_before,
    })
}

/// Node `i`; `init` on its first start (an empty store is a new cluster).
fn start_node(procs: &mut Procs, ordo: &Path, i: usize, init: bool) -> Result<u32> {
    let mut cmd = Command::new(ordo);
    cmd.args(["run", "--config", &format!("n{i}.toml")]);
    if init {
        cmd.arg("--init");
    }
    procs.spawn(NODES[i], &mut cmd)
}

/// Node `i`'s `/metrics` text.
fn metrics_of(i: u16) -> Result<String> {
    let mut r = agent().get(&url(i, "/_ordo/metrics")).call()?;
    Ok(r.body_mut().read_to_string()?)
}

/// (applied, commit) of node `i`'s one service.
fn status_of(i: u16) -> Result<(u64, u64)> {
    let mut r = agent().get(&url(i, "/_ordo/status")).call()?;
    let v: serde_json::Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
    let s = &v["services"][0];
    let applied = s["applied"].as_u64().context("applied")?;
    let commit = s["known_commit"].as_u64().context("known_commit")?;
    Ok((applied, commit))
}

fn ordo_leader() -> Result<usize> {
    let start = Instant::now();
    loop {
        for i in 0..3u16 {
            let Ok(mut r) = agent().get(&url(i, "/_ordo/status")).call() else {
                continue;
            };
            let v: serde_json::Value =
                serde_json::from_str(&r.body_mut().read_to_string()?).unwrap_or_default();
            let name = v["services"][0]["leader"].as_str();
            if let Some(n) = name.and_then(|name| NODES.iter().position(|n| *n == name)) {
                return Ok(n);
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("no ordo leader after 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn url(node: u16, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", port(node))
}

fn backend_url(i: u16, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", port(20 + i))
}

fn etcd_url(i: usize) -> String {
    format!("http://127.0.0.1:{}", port(40 + i as u16))
}

fn node_config(i: usize, args: &Args) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "cluster = \"bench\"\nnode = \"n{i}\"\ndata_dir = \"data-n{i}\""
    );
    let _ = writeln!(t, "[listen]\nclient = \"127.0.0.1:{}\"", port(i as u16));
    let _ = writeln!(t, "peer = \"127.0.0.1:{}\"", port(10 + i as u16));
    let _ = writeln!(t, "[tls]\nca = \"certs/ca.pem\"");
    let _ = writeln!(t, "cert = \"certs/n{i}.pem\"\nkey = \"certs/n{i}.key\"");
    let _ = writeln!(t, "[nodes]");
    for j in 0..3u16 {
        let _ = writeln!(t, "n{j} = \"127.0.0.1:{}\"", port(10 + j));
    }
    let _ = writeln!(t, "[[services]]\nname = \"kv\"\nprefix = \"/kv/\"");
    let _ = writeln!(t, "backend = \"http://127.0.0.1:{}\"", port(20 + i as u16));
    if !args.sequential {
        let _ = writeln!(t, "resource_key = \"path\"");
    }
    let _ = writeln!(t, "backend_pipeline = {}", args.pipeline);
    let _ = writeln!(t, "answer = \"{}\"", args.answer);
    let _ = writeln!(t, "[limits]\nlog_retain_slots = {}", args.log_retain_slots);
    t
}

fn start_etcd(procs: &mut Procs) -> Result<()> {
    let cluster: Vec<String> = (0..3u16)
        .map(|i| format!("e{i}=http://127.0.0.1:{}", port(50 + i)))
        .collect();
    for i in 0..3u16 {
        let client = format!("http://127.0.0.1:{}", port(40 + i));
        let peer = format!("http://127.0.0.1:{}", port(50 + i));
        procs.spawn(
            &format!("etcd-{i}"),
            Command::new(which("etcd").context("etcd")?).args([
                "--name",
                &format!("e{i}"),
                "--data-dir",
                &format!("etcd-{i}"),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "ordo-bench",
                "--log-level",
                "warn",
            ]),
        )?;
    }
    for i in 0..3 {
        wait_for(
            &format!("{}/health", etcd_url(i)),
            200,
            Duration::from_secs(30),
        )?;
    }
    Ok(())
}

/// Which etcd member leads (by its maintenance status).
fn etcd_leader() -> Result<usize> {
    let start = Instant::now();
    loop {
        for i in 0..3 {
            let r = agent()
                .post(&format!("{}/v3/maintenance/status", etcd_url(i)))
                .send("{}");
            let Ok(mut r) = r else { continue };
            let v: serde_json::Value =
                serde_json::from_str(&r.body_mut().read_to_string()?).unwrap_or_default();
            let (me, leader) = (&v["header"]["member_id"], &v["leader"]);
            if !leader.is_null() && me == leader {
                return Ok(i);
            }
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("no etcd leader after 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn nginx_config(work: &Path) -> String {
    let tmp = work.join("nginx-tmp");
    let tmp = tmp.display();
    format!(
        "worker_processes auto;\npid {work}/nginx.pid;\nerror_log {work}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {tmp};\n  proxy_temp_path {tmp};\n\
           fastcgi_temp_path {tmp};\n  uwsgi_temp_path {tmp};\n  scgi_temp_path {tmp};\n\
           upstream backend {{ server 127.0.0.1:{be}; keepalive 256; }}\n\
           server {{\n    listen 127.0.0.1:{listen};\n    location / {{\n\
               proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        work = work.display(),
        be = port(20),
        listen = port(30),
    )
}

/// wrk's request scripts: 256-byte JSON PUTs to keys spread over 100,000
/// (each connection its own sequence), etcd's JSON-gateway puts of the
/// same size, and 1 KiB GETs with and without `Cache-Control: no-cache`.
fn write_scripts(work: &Path) -> Result<()> {
    std::fs::write(work.join("put.lua"), PUT)?;
    // etcd's gateway takes base64 keys and values: 256 value bytes.
    let value = base64(&[b'x'; 256]);
    let keys: Vec<String> = (0..1000)
        .map(|k| format!("\"{}\"", base64(format!("k{k}").as_bytes())))
        .collect();
    std::fs::write(
        work.join("etcd-put.lua"),
        format!(
            "local keys = {{{}}}\nlocal n = 0\nrequest = function()\n  n = n + 1\n  \
             return wrk.format(\"POST\", \"/v3/kv/put\", {{[\"Content-Type\"] = \"application/json\"}}, \
             '{{\"key\":\"' .. keys[(n % 1000) + 1] .. '\",\"value\":\"{value}\"}}')\nend\n",
            keys.join(",")
        ),
    )?;
    std::fs::write(
        work.join("get.lua"),
        "wrk.method = \"GET\"\nwrk.path = \"/kv/read\"\n",
    )?;
    std::fs::write(
        work.join("get-fresh.lua"),
        "wrk.method = \"GET\"\nwrk.path = \"/kv/read\"\nwrk.headers[\"Cache-Control\"] = \"no-cache\"\n",
    )?;
    Ok(())
}

/// PUTs of 256-byte JSON bodies to keys spread over 100,000.
const PUT: &str = "local body = '{\"v\":\"' .. string.rep(\"x\", 248) .. '\"}'
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
request = function()
  return wrk.format(\"PUT\", \"/kv/k\" .. math.random(0, 99999), {[\"Content-Type\"] = \"application/json\"}, body)
end
";

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(super::base64(i.as_bytes()), o);
        }
    }
}
