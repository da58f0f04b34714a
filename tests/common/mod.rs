//! Harness for the end-to-end tests: real `ordo run` processes in front
//! of real backend processes (`ordo demo-backend`, or nginx with WebDAV),
//! on free ports of 127.0.0.1, in a temporary folder.
//!
//! - Every process writes stdout and stderr to `DIR/logs/LABEL.log`
//!   (appended across restarts, with a marker line per start). When a
//!   test fails, the tail of every log is printed and the folder is kept.
//! - Every child is killed with SIGKILL when the harness is dropped, and
//!   also asked to die with the test thread (`PR_SET_PDEATHSIG`), so a
//!   test that is itself killed leaves no process behind.
//! - Waits are bounded polls: they fail with what they last saw.

#![allow(dead_code)]

pub mod kv_model;
pub mod load;
pub mod pki;

use serde_json::Value;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The node names of every test cluster, in the order tests index them.
pub const NODES: [&str; 3] = ["north", "east", "west"];

/// Default bound of a wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `ordo` binary under test.
pub fn ordo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ordo")
}

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

/// One child process; SIGKILLed when dropped.
pub struct Proc {
    pub label: String,
    child: Child,
}

impl Proc {
    /// Start `cmd` with its output appended to `log`.
    pub fn spawn(label: &str, mut cmd: Command, log: &Path) -> Proc {
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let _ = writeln!(out, "===== e2e harness: starting {label}: {cmd:?} =====");
        let err = out.try_clone().expect("clone the log file handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec here.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        Proc {
            label: label.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------

/// `n` distinct ports that were free a moment ago (all bound at once,
/// then released). Another process may take one before we use it: the
/// cluster start retries with new ports when a process cannot bind.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A log says its process could not bind its port.
fn says_port_in_use(log: &Path) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.contains("in use") || text.contains("AddrInUse")
}

// ---------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------

/// A response, with the body read whole.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", self.status, self.body))
    }
}

/// One HTTP/1.1 call on a fresh connection (no pooling: a killed and
/// restarted process never meets a stale connection), no redirects, no
/// `Expect: 100-continue`. `Err` is a transport failure or a timeout.
/// How `call` speaks TLS to an `https://` authority (`host:port`): set
/// by the clusters that serve clients or backends over TLS.
fn tls_registry() -> &'static Mutex<std::collections::HashMap<String, ureq::tls::TlsConfig>> {
    static REG: OnceLock<Mutex<std::collections::HashMap<String, ureq::tls::TlsConfig>>> =
        OnceLock::new();
    REG.get_or_init(Default::default)
}

/// Calls to `https://AUTHORITY/...` trust and present what `tls` says.
pub fn use_tls_for(authority: &str, tls: ureq::tls::TlsConfig) {
    tls_registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(authority.to_string(), tls);
}

pub fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Resp, String> {
    let tls = url.strip_prefix("https://").and_then(|rest| {
        let authority = rest.split('/').next().unwrap_or("");
        tls_registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(authority)
            .cloned()
    });
    let mut config = ureq::Agent::config_builder();
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    let agent: ureq::Agent = config
        .http_status_as_error(false)
        .max_redirects(0)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let result = match body {
        Some(b) => agent.run(req.body(b.to_vec()).map_err(|e| e.to_string())?),
        None => agent.run(req.body(()).map_err(|e| e.to_string())?),
    };
    let resp = result.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .into_body()
        .read_to_string()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

const T: Duration = Duration::from_secs(10);

/// A call that must get an answer (panics on a transport failure).
pub fn must(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
    call(method, url, headers, body, T).unwrap_or_else(|e| panic!("{e}"))
}

pub fn get(url: &str) -> Resp {
    must("GET", url, &[], None)
}

/// A linearizable read.
pub fn get_fresh(url: &str) -> Resp {
    must("GET", url, &[("cache-control", "no-cache")], None)
}

pub fn put_json(url: &str, body: &str) -> Resp {
    must(
        "PUT",
        url,
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

/// Poll `probe` until it returns `Ok`, at most `limit`; panic with the
/// last `Err` it gave otherwise.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(20);
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("gave up after {limit:?} waiting for {what}; last: {last}");
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------

/// What every node's backend is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backends {
    /// `ordo demo-backend`, one process per node.
    Demo,
    /// nginx with WebDAV, one process per node, each with its own root.
    Nginx,
    /// The same, over TLS (`https://127.0.0.1:PORT`, a certificate from
    /// the cluster's test PKI, which the nodes trust by `backend_tls.ca`).
    NginxTls,
    /// Azurite's Blob service (npm), one process per node, each with its
    /// own folder; the backend URL names its account
    /// (`http://127.0.0.1:PORT/devstoreaccount1`).
    Azurite,
    /// `tests/odata/backend.py`, a small OData-shaped service (Python's
    /// standard library), one per node.
    OData,
}

/// The presented key of the `azure-storage` tests (made up, as an
/// operator would).
pub const PRESENTED_KEY: &str = "b3JkbyBwcmVzZW50cyB0aGlzIGtleSB0byBpdHMgY2xpZW50cyE=";

/// Azurite's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A tool `.ci/run` installs under `~/.cache/ordo`: `$env` if set, else
/// `~/.cache/ordo/<under>`; it must be there (`install` says how).
pub fn cached_tool(env: &str, under: &str, what: &str, install: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cache/ordo").join(under)
    });
    assert!(
        path.exists(),
        "{} is missing: this test needs {what}. .ci/run installs it ({install})",
        path.display()
    );
    path
}

/// Azurite's Blob service command (`azurite-blob`).
pub fn azurite_binary() -> PathBuf {
    cached_tool(
        "ORDO_AZURITE",
        "azurite/node_modules/.bin/azurite-blob",
        "Azurite",
        "npm install --prefix ~/.cache/ordo/azurite azurite",
    )
}

fn start_odata(n: &Node) -> Proc {
    let mut cmd = Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/odata/backend.py"
    ))
    .arg(n.backend_port.to_string());
    Proc::spawn(&format!("{}-odata", n.name), cmd, &n.backend_log)
}

fn start_azurite(bin: &Path, root: &Path, n: &Node) -> Proc {
    let dir = root.join(format!("azurite-{}", n.name));
    std::fs::create_dir_all(&dir).expect("azurite dir");
    let mut cmd = Command::new(bin);
    cmd.arg("--blobHost")
        .arg("127.0.0.1")
        .arg("--blobPort")
        .arg(n.backend_port.to_string())
        .arg("--location")
        .arg(&dir)
        .arg("--skipApiVersionCheck")
        .arg("--silent");
    Proc::spawn(&format!("{}-azurite", n.name), cmd, &n.backend_log)
}

/// How to build a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub backends: Backends,
    /// The one service's prefix.
    pub prefix: String,
    pub max_body_bytes: usize,
    pub update_timeout_ms: u64,
    /// Extra `ordo demo-backend` arguments, by node index.
    pub demo_args: Vec<(usize, Vec<String>)>,
    /// Extra lines for the service's section of every node's config.
    pub service_extra: String,
    /// Extra lines for the `[limits]` section of every node's config.
    pub limits_extra: String,
    /// Hot backups besides the three active members (`b1`, `b2`, ...).
    pub backups: usize,
    /// A second service of another kind on every node: `movies` (prefix
    /// `/mymovies`, adapter `azure-storage`, presented account `mymovies`
    /// with [`PRESENTED_KEY`]), each node in front of its own Azurite at
    /// `Node::second_port`.
    pub azure_too: bool,
    /// Extra sections at the end of every node's config; `{backend_port}`
    /// in it is the node's own backend's port.
    pub extra_toml: String,
    /// Clients reach nodes over TLS (`[client_tls]`, certificates from
    /// the cluster's test PKI).
    pub client_tls: bool,
    /// ...and must present a client certificate (`client_ca`).
    pub require_client_cert: bool,
    /// Nodes log JSON lines (`--log-format json`).
    pub json_logs: bool,
    /// Nodes serve the web console (`listen.console`).
    pub console: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backends: Backends::Demo,
            prefix: "/kv/".into(),
            max_body_bytes: 256 << 10,
            update_timeout_ms: 3_000,
            demo_args: Vec::new(),
            service_extra: String::new(),
            limits_extra: String::new(),
            backups: 0,
            azure_too: false,
            extra_toml: String::new(),
            client_tls: false,
            require_client_cert: false,
            json_logs: false,
            console: false,
        }
    }
}

/// One node slot of the cluster: its addresses, files and process.
pub struct Node {
    pub name: String,
    pub index: usize,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub backend_port: u16,
    pub config: PathBuf,
    pub log: PathBuf,
    pub proc: Option<Proc>,
    pub backend: Option<Proc>,
    pub backend_log: PathBuf,
    /// `http` or `https` (client TLS).
    pub scheme: &'static str,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub backend_base: String,
    /// The web console's address (`Options::console`).
    pub console: Option<SocketAddr>,
    /// The second service's backend port (`Options::azure_too`).
    pub second_port: u16,
}

impl Node {
    /// This node's names and addresses, without its processes.
    fn clone_addresses(&self) -> Node {
        Node {
            name: self.name.clone(),
            index: self.index,
            client: self.client,
            peer: self.peer,
            backend_port: self.backend_port,
            config: self.config.clone(),
            log: self.log.clone(),
            proc: None,
            backend: None,
            backend_log: self.backend_log.clone(),
            scheme: self.scheme,
            backend_base: self.backend_base.clone(),
            console: self.console,
            second_port: self.second_port,
        }
    }

    /// `http(s)://client/` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.client)
    }

    /// The backend, directly (not through ordo).
    pub fn backend_url(&self, path: &str) -> String {
        format!("{}{path}", self.backend_base)
    }
}

/// Three `ordo run` processes (and any backups), their backends, one
/// temp folder.
pub struct Cluster {
    pub opts: Options,
    pub dir: Option<tempfile::TempDir>,
    pub nodes: Vec<Node>,
    /// Extra logs to print on failure (an impostor's, ...).
    pub extra_logs: Vec<(String, PathBuf)>,
    /// Extra processes to kill with the cluster.
    pub extra: Vec<Proc>,
    /// The client-port and backend PKI (`DIR/pki`), when used.
    pub pki: Option<pki::Pki>,
}

/// Why a start attempt failed.
enum StartError {
    /// A process could not bind its port: try again with other ports.
    PortInUse(String),
    Other(String),
}

impl Cluster {
    /// Start a cluster with `opts` and wait until every node is ready.
    pub fn start(opts: Options) -> Cluster {
        let mut last = String::new();
        for attempt in 1..=4 {
            match Cluster::try_start(opts.clone()) {
                Ok(c) => return c,
                Err(StartError::PortInUse(why)) => {
                    eprintln!("e2e: start attempt {attempt}: a port was taken ({why}); retrying");
                    last = why;
                }
                Err(StartError::Other(why)) => panic!("cannot start the test cluster: {why}"),
            }
        }
        panic!("cannot start the test cluster: ports kept being taken; last: {last}");
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    fn try_start(opts: Options) -> Result<Cluster, StartError> {
        let nginx = match opts.backends {
            Backends::Nginx | Backends::NginxTls => Some(nginx_binary()),
            Backends::Demo | Backends::Azurite | Backends::OData => None,
        };
        let azurite = (opts.backends == Backends::Azurite).then(azurite_binary);
        let backend_tls = opts.backends == Backends::NginxTls;
        let dir = tempfile::Builder::new()
            .prefix("ordo-e2e-")
            .tempdir()
            .map_err(|e| StartError::Other(format!("temp dir: {e}")))?;
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("logs")).expect("logs dir");
        let names: Vec<String> = NODES
            .iter()
            .map(|n| n.to_string())
            .chain((1..=opts.backups).map(|b| format!("b{b}")))
            .collect();
        ordo::mesh::certs::make_certs("e2e", &names, &root.join("certs"))
            .map_err(|e| StartError::Other(format!("certs: {e}")))?;
        let pki = (opts.client_tls || backend_tls).then(|| pki::Pki::new(&root.join("pki")));
        let client_cert = pki.as_ref().map(|p| p.client("load-client"));
        let total = names.len();
        let ports = free_ports(5 * total);
        let mut nodes: Vec<Node> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Node {
                name: name.to_string(),
                index: i,
                client: addr(ports[i]),
                peer: addr(ports[total + i]),
                backend_port: ports[2 * total + i],
                config: root.join(format!("{name}.toml")),
                log: root.join(format!("logs/{name}.log")),
                proc: None,
                backend: None,
                backend_log: root.join(format!("logs/{name}-backend.log")),
                scheme: if opts.client_tls { "https" } else { "http" },
                console: opts.console.then(|| addr(ports[3 * total + i])),
                second_port: ports[4 * total + i],
                backend_base: if backend_tls {
                    format!("https://127.0.0.1:{}", ports[2 * total + i])
                } else {
                    format!("http://127.0.0.1:{}", ports[2 * total + i])
                },
            })
            .collect();
        if let Some(pki) = &pki {
            for n in &nodes {
                if opts.client_tls {
                    pki.server(&format!("{}-client-port", n.name));
                    use_tls_for(
                        &n.client.to_string(),
                        pki::ureq_tls(&pki.ca(), client_cert.as_ref()),
                    );
                }
                if backend_tls {
                    pki.server(&format!("{}-backend", n.name));
                    use_tls_for(
                        &format!("127.0.0.1:{}", n.backend_port),
                        pki::ureq_tls(&pki.ca(), None),
                    );
                }
            }
        }
        for n in &nodes {
            let text = node_config(&opts, &nodes, n.index, "certs");
            std::fs::write(&n.config, text).expect("write config");
        }
        let mut cluster = Cluster {
            opts,
            dir: Some(dir),
            nodes: Vec::new(),
            extra_logs: Vec::new(),
            extra: Vec::new(),
            pki,
        };
        for n in &mut nodes {
            n.backend = Some(match (&nginx, &azurite) {
                (Some(bin), _) => start_nginx(bin, &root, n, backend_tls),
                (_, Some(bin)) => start_azurite(bin, &root, n),
                _ if cluster.opts.backends == Backends::OData => start_odata(n),
                _ => start_demo_backend(n, &cluster.opts),
            });
        }
        if cluster.opts.azure_too {
            let bin = azurite_binary();
            for n in &nodes {
                let second = Node {
                    name: format!("{}-second", n.name),
                    backend_port: n.second_port,
                    backend_log: root.join(format!("logs/{}-second-backend.log", n.name)),
                    ..n.clone_addresses()
                };
                cluster.extra.push(start_azurite(&bin, &root, &second));
                cluster
                    .extra_logs
                    .push((second.name.clone(), second.backend_log.clone()));
            }
        }
        cluster.nodes = nodes;
        for i in 0..cluster.nodes.len() {
            cluster.wait_backend_up(i)?;
        }
        for i in 0..cluster.nodes.len() {
            // A new cluster: the first start of each node says so.
            cluster.spawn_node(i, true);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..cluster.nodes.len() {
            match cluster.wait_ready_until(i, deadline) {
                Ok(()) => {}
                Err(StartError::Other(why)) => {
                    return Err(StartError::Other(format!("{why}\n{}", cluster.report())));
                }
                Err(port) => return Err(port),
            }
        }
        Ok(cluster)
    }

    fn check_alive(&mut self, i: usize) -> Result<(), StartError> {
        let n = &mut self.nodes[i];
        for (p, log) in [(&mut n.backend, &n.backend_log), (&mut n.proc, &n.log)] {
            if let Some(proc) = p
                && let Some(status) = proc.exited()
            {
                let why = format!("{} exited ({status}): {}", proc.label, tail(log, 20));
                return Err(if says_port_in_use(log) {
                    StartError::PortInUse(why)
                } else {
                    StartError::Other(why)
                });
            }
        }
        Ok(())
    }

    fn wait_backend_up(&mut self, i: usize) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.check_alive(i)?;
            let url = self.nodes[i].backend_url("/");
            if call("GET", &url, &[], None, Duration::from_secs(2)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!("backend {url} never answered")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready_until(&mut self, i: usize, deadline: Instant) -> Result<(), StartError> {
        let mut last: String;
        loop {
            self.check_alive(i)?;
            match call(
                "GET",
                &self.nodes[i].url("/readyz"),
                &[],
                None,
                Duration::from_secs(2),
            ) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => last = format!("{} {}", r.status, r.body.trim()),
                Err(e) => last = e,
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(format!(
                    "node {} not ready in time; last /readyz: {last}",
                    self.nodes[i].name
                )));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn spawn_node(&mut self, i: usize, init: bool) {
        let n = &mut self.nodes[i];
        let mut cmd = Command::new(ordo_bin());
        cmd.arg("run").arg("--config").arg(&n.config);
        if init {
            cmd.arg("--init");
        }
        if self.opts.json_logs {
            cmd.args(["--log-format", "json"]);
        }
        n.proc = Some(Proc::spawn(&n.name, cmd, &n.log));
    }

    /// Wait (bounded) until node `i` answers /readyz with 200.
    pub fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + WAIT;
        if let Err(StartError::Other(e) | StartError::PortInUse(e)) =
            self.wait_ready_until(i, deadline)
        {
            panic!("{e}");
        }
    }

    /// `kill -9` node `i` (its ordo process; the backend stays).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].proc.take() {
            p.kill();
        }
    }

    /// `kill -9` node `i`'s backend process.
    pub fn kill_backend(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].backend.take() {
            p.kill();
        }
    }

    /// Node `i`'s `data_dir`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir().join(format!("data/{}", self.nodes[i].name))
    }

    /// Start node `i`'s demo backend again (empty: it keeps its data in
    /// memory).
    pub fn restart_backend(&mut self, i: usize) {
        assert!(self.nodes[i].backend.is_none(), "backend {i} is running");
        self.nodes[i].backend = Some(start_demo_backend(&self.nodes[i], &self.opts));
        if let Err(StartError::Other(e) | StartError::PortInUse(e)) = self.wait_backend_up(i) {
            panic!("backend {i} did not come back: {e}");
        }
    }

    /// Start node `i` again with the same configuration and data folder.
    /// Its ports were free until the kill; should something else have
    /// taken one meanwhile (an outgoing connection's ephemeral port), the
    /// start is retried a few times.
    pub fn restart_node(&mut self, i: usize) {
        assert!(self.nodes[i].proc.is_none(), "node {i} is running");
        for _ in 0..10 {
            self.spawn_node(i, false);
            // Up when its status answers; retry if it could not bind.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match self.check_alive(i) {
                    Err(StartError::PortInUse(_)) => break,
                    Err(StartError::Other(e)) => panic!("restart of node {i}: {e}"),
                    Ok(()) => {}
                }
                if call(
                    "GET",
                    &self.nodes[i].url("/healthz"),
                    &[],
                    None,
                    Duration::from_secs(1),
                )
                .is_ok_and(|r| r.status == 200)
                {
                    return;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "restarted node {} never answered /healthz",
                        self.nodes[i].name
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.nodes[i].proc = None;
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("node {i} could not get its ports back after a restart");
    }

    /// `ordo admin ARGS --node URL` against node `i`: whether it
    /// succeeded, and its output (stdout and stderr).
    pub fn admin(&self, i: usize, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(ordo_bin());
        cmd.arg("admin").arg("--node").arg(self.nodes[i].url(""));
        if let (true, Some(pki)) = (self.opts.client_tls, &self.pki) {
            let dir = &pki.dir;
            cmd.arg("--ca").arg(pki.ca());
            cmd.arg("--cert").arg(dir.join("load-client.pem"));
            cmd.arg("--key").arg(dir.join("load-client.key"));
        }
        let out = cmd.args(args).output().expect("ordo admin runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// Node `i`'s `/_ordo/status` (the first service), or why not.
    pub fn status(&self, i: usize) -> Result<Value, String> {
        let r = call(
            "GET",
            &self.nodes[i].url("/_ordo/status"),
            &[],
            None,
            Duration::from_secs(3),
        )?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.body));
        }
        let v: Value = serde_json::from_str(&r.body).map_err(|e| e.to_string())?;
        Ok(v["services"][0].clone())
    }

    /// The index of the node that a majority of running nodes name as
    /// leader (bounded wait).
    pub fn leader(&self) -> usize {
        wait_until("a leader known to every running node", WAIT, || {
            let mut named = Vec::new();
            for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
                let s = self.status(n.index)?;
                let l = s["leader"]
                    .as_str()
                    .ok_or_else(|| format!("{} knows no leader", n.name))?
                    .to_string();
                named.push(l);
            }
            let first = named.first().ok_or("no node runs")?.clone();
            if named.iter().any(|l| *l != first) {
                return Err(format!("nodes disagree on the leader: {named:?}"));
            }
            self.nodes
                .iter()
                .position(|n| n.name == first)
                .ok_or_else(|| format!("unknown leader {first}"))
        })
    }

    /// Wait until every running node has applied the same slot, equal to
    /// the commit index, and return it.
    pub fn wait_caught_up(&self) -> u64 {
        wait_until("every node to apply the same slot", WAIT, || {
            let mut seen = Vec::new();
            for n in self.nodes.iter().filter(|n| n.proc.is_some()) {
                let s = self.status(n.index)?;
                let applied = s["applied"].as_u64().ok_or("no applied")?;
                let commit = s["known_commit"].as_u64().ok_or("no known_commit")?;
                seen.push((n.name.clone(), applied, commit));
            }
            let first = seen[0].1;
            if seen.iter().all(|(_, a, c)| *a == first && *c == first) {
                Ok(first)
            } else {
                Err(format!("(node, applied, known commit): {seen:?}"))
            }
        })
    }

    /// Write a node configuration into this cluster's folder, as node
    /// `i` but with other certificates and another data folder (an
    /// impostor), and return its path.
    pub fn write_config_with_certs(
        &self,
        i: usize,
        certs: &str,
        file: &str,
        data: &str,
    ) -> PathBuf {
        let text = node_config(&self.opts, &self.nodes, i, certs)
            .replace(&format!("data/{}", NODES[i]), data);
        let path = self.dir().join(file);
        std::fs::write(&path, text).expect("write config");
        path
    }
}

impl Cluster {
    /// The tail of every process's log.
    pub fn report(&self) -> String {
        let mut report = String::new();
        let mut logs: Vec<(String, PathBuf)> = Vec::new();
        for n in &self.nodes {
            logs.push((n.name.clone(), n.log.clone()));
            logs.push((format!("{}'s backend", n.name), n.backend_log.clone()));
        }
        logs.extend(self.extra_logs.iter().cloned());
        for (label, path) in logs {
            let _ = writeln!(
                report,
                "----- {label}: {} (last 60 lines) -----\n{}",
                path.display(),
                tail(&path, 60)
            );
        }
        report
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill first, so the logs are complete.
        self.extra.clear();
        for n in &mut self.nodes {
            n.proc = None;
            n.backend = None;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.report());
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "e2e: the test folder is kept for inspection: {}",
                    kept.display()
                );
            }
        }
    }
}

/// Node `i`'s configuration file (paths relative to the cluster folder).
fn node_config(opts: &Options, nodes: &[Node], i: usize, certs: &str) -> String {
    let n = &nodes[i];
    // west by a DNS name (looked up at every connection attempt), the
    // others by IP address.
    let mut peers = String::new();
    for m in nodes {
        if m.name == "west" {
            let _ = writeln!(peers, "west = \"localhost:{}\"", m.peer.port());
        } else {
            let _ = writeln!(peers, "{} = \"{}\"", m.name, m.peer);
        }
    }
    let mut tls_sections = String::new();
    if opts.client_tls {
        let _ = writeln!(
            tls_sections,
            "[client_tls]\ncert = \"pki/{0}-client-port.pem\"\nkey = \"pki/{0}-client-port.key\"",
            n.name
        );
        if opts.require_client_cert {
            let _ = writeln!(tls_sections, "client_ca = \"pki/ca.pem\"");
        }
    }
    let console = match n.console {
        Some(a) => format!("console = \"{a}\""),
        None => String::new(),
    };
    let backend = if opts.backends == Backends::NginxTls {
        format!(
            "backend = \"https://127.0.0.1:{}\"\nbackend_tls = {{ ca = \"pki/ca.pem\" }}",
            n.backend_port
        )
    } else if opts.backends == Backends::Azurite {
        format!(
            "backend = \"http://127.0.0.1:{}/{AZURITE_ACCOUNT}\"",
            n.backend_port
        )
    } else {
        format!("backend = \"http://127.0.0.1:{}\"", n.backend_port)
    };
    format!(
        r#"cluster = "e2e"
node = "{name}"
data_dir = "data/{name}"

[listen]
client = "{client}"
peer = "{peer}"
{console}

[tls]
ca = "{certs}/ca.pem"
cert = "{certs}/{name}.pem"
key = "{certs}/{name}.key"

{tls_sections}
[nodes]
{peers}
[[services]]
name = "kv"
prefix = "{prefix}"
{backend}
active = ["north", "east", "west"]
{service_extra}

[limits]
max_body_bytes = {max_body}
update_timeout_ms = {timeout}
{limits_extra}
{extra_toml}
"#,
        name = n.name,
        client = n.client,
        peer = n.peer,
        prefix = opts.prefix,
        max_body = opts.max_body_bytes,
        timeout = opts.update_timeout_ms,
        service_extra = opts.service_extra,
        limits_extra = opts.limits_extra,
        extra_toml = opts
            .extra_toml
            .replace("{backend_port}", &n.backend_port.to_string()),
    ) + &if opts.azure_too {
        format!(
            r#"
[[services]]
name = "movies"
prefix = "/mymovies"
strip_prefix = true
backend = "http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
adapter = "azure-storage"
active = ["north", "east", "west"]

[services.azure]
presented_account = "mymovies"
presented_key = "{PRESENTED_KEY}"
account = "{AZURITE_ACCOUNT}"
key = "{AZURITE_KEY}"
"#,
            port = n.second_port
        )
    } else {
        String::new()
    }
}

fn start_demo_backend(n: &Node, opts: &Options) -> Proc {
    let mut cmd = Command::new(ordo_bin());
    cmd.arg("demo-backend")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", n.backend_port));
    for (i, args) in &opts.demo_args {
        if *i == n.index {
            cmd.args(args);
        }
    }
    Proc::spawn(&format!("{}-backend", n.name), cmd, &n.backend_log)
}

// ---------------------------------------------------------------------
// nginx with WebDAV
// ---------------------------------------------------------------------

/// Where nginx is; fails the test (never skips) when it is missing.
pub fn nginx_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("nginx")).collect())
        .unwrap_or_default();
    candidates.push("/usr/sbin/nginx".into());
    candidates.push("/usr/local/sbin/nginx".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed, and this test needs it as the WebDAV backend. \
                 .ci/run installs it; to run the test locally: \
                 sudo apt-get install -y nginx (Debian 12's nginx has the WebDAV module)"
            )
        })
}

/// Every file under `root`: relative path -> content.
pub fn files_under(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let p = entry.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.insert(
                    rel.to_string_lossy().into_owned(),
                    std::fs::read(&p).expect("read file"),
                );
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The WebDAV root of node `i`'s nginx.
pub fn nginx_root(cluster_dir: &Path, name: &str) -> PathBuf {
    cluster_dir.join(format!("nginx-{name}/root"))
}

/// One nginx in the foreground, one process, everything under
/// `DIR/nginx-NAME/`: works as root and as any other user.
fn start_nginx(bin: &Path, dir: &Path, n: &Node, tls: bool) -> Proc {
    let prefix = dir.join(format!("nginx-{}", n.name));
    std::fs::create_dir_all(prefix.join("root")).expect("nginx root");
    let p = prefix.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {log} info;
events {{ worker_connections 256; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    client_max_body_size 1m;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {certs}
        root {p}/root;
        location / {{
            dav_methods PUT DELETE MKCOL COPY MOVE;
            create_full_put_path on;
        }}
    }}
}}
"#,
        log = n.backend_log.display(),
        port = n.backend_port,
        ssl = if tls { " ssl" } else { "" },
        certs = if tls {
            format!(
                "ssl_certificate {pki}/{name}-backend.pem; ssl_certificate_key {pki}/{name}-backend.key;",
                pki = dir.join("pki").display(),
                name = n.name
            )
        } else {
            String::new()
        },
    );
    let conf_path = prefix.join("nginx.conf");
    let mut f = File::create(&conf_path).expect("nginx.conf");
    f.write_all(conf.as_bytes()).expect("write nginx.conf");
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(&n.backend_log);
    Proc::spawn(&format!("{}-nginx", n.name), cmd, &n.backend_log)
}
