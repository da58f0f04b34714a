//! A node's configuration file (TOML), and its validation.
//!
//! Every error names the key and the reason, e.g.
//! `services[0].backend: not an http URL: "htp://x"`. The reference for
//! every key is `docs/configuration.md`; keep the two in step.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a `Cache-Control: no-cache` read is made linearizable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// A quorum round, no log write, then a local read once applied.
    #[default]
    ReadIndex,
    /// The read goes through the log like an update (the original's way).
    Log,
}

/// Which adapter fixes up what does not proxy well for a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Adapter {
    /// Plain pass-through.
    #[default]
    Http,
    /// Azure Blob storage under an account of ordo's own.
    AzureStorage,
    /// OData: absolute URIs of the service root in Atom and JSON.
    Odata,
}

/// The `azure-storage` adapter's accounts.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    /// The account name clients use (made up, 3 to 24 of `a-z0-9`).
    pub presented_account: String,
    /// Its key, base64: what clients sign with.
    pub presented_key: String,
    /// This node's real account, and its key (base64).
    pub account: String,
    pub key: String,
}

impl std::fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AzureSettings {{ presented_account: {:?}, account: {:?}, keys hidden }}",
            self.presented_account, self.account
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Where clients connect (HTTP).
    pub client: SocketAddr,
    /// Where peers connect (TLS).
    pub peer: SocketAddr,
    /// The web console (and the admin API, also on the client port);
    /// with `[client_tls]`, over the same TLS.
    pub console: Option<SocketAddr>,
    /// Networks (`10.0.0.0/8`) or addresses the peer port takes
    /// connections from besides the addresses the nodes' names resolve
    /// to: for peers that connect from another address than the one they
    /// are known by (a second interface, NAT). `["0.0.0.0/0", "::/0"]`
    /// takes any.
    #[serde(default)]
    pub peer_sources: Vec<String>,
    /// Threads serving the client port; each runs its connections and its
    /// own pool of connections to the backends for reads. None: one per
    /// CPU this process may use ([`Listen::client_workers`]).
    #[serde(default)]
    pub client_workers: Option<usize>,
}

/// The most client workers a node starts.
pub const MAX_CLIENT_WORKERS: usize = 256;

impl Listen {
    /// Threads serving the client port: as configured, else one per CPU
    /// this process may use (as nginx's `worker_processes auto`). Reads
    /// are served by these threads alone, so a fixed count would leave
    /// the other CPUs of a larger machine idle under read load.
    pub fn client_workers(&self) -> usize {
        self.client_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(MAX_CLIENT_WORKERS)
        })
    }
}

/// The mesh's TLS: reloaded on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The cluster CA certificate bundle (PEM); peers must present a
    /// certificate it signed, unless their entry in `nodes` lists pins.
    /// May be left out when every node has pins.
    pub ca: Option<PathBuf>,
    /// This node's certificate and key (PEM), for its name.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS on the client port (and so for the admin API): reloaded on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The certificate (chain) and key the client port presents.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate this CA bundle signed.
    pub client_ca: Option<PathBuf>,
}

/// How a service's `https://` backend is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendTls {
    /// Trust this CA bundle (PEM) instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A client certificate and key to present to the backend.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// One entry of `nodes`: its peer address, as `"host:port"`, or a table
/// `{ addr = "host:port", pins = ["key-sha256:..."] }`. The host is an IP
/// address or a DNS name, looked up at every connection attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub addr: String,
    /// The node is trusted by these pins instead of the CA; two while
    /// its certificate is being replaced.
    pub pins: Vec<String>,
}

impl<'de> Deserialize<'de> for NodeEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            addr: String,
            #[serde(default)]
            pins: Vec<String>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NodeEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"an address "host:port", or a table { addr = "host:port", pins = [...] }"#,
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<NodeEntry, E> {
                Ok(NodeEntry {
                    addr: s.to_string(),
                    pins: Vec::new(),
                })
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, m: M) -> Result<NodeEntry, M::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(NodeEntry {
                    addr: t.addr,
                    pins: t.pins,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Names the service and its Paxos group: `[a-z0-9_-]`, 1 to 48.
    pub name: String,
    /// Requests whose path starts with this prefix go to this service
    /// (the longest matching prefix wins).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Requests whose `Host` is this name (any port), or this name and
    /// port, go to this service (then by prefix among those bound to the
    /// same host). Services bound to a host are chosen before those bound
    /// to none.
    pub host: Option<String>,
    /// With `true`, the backend gets the path without `prefix` (under the
    /// base URL's own path): `/movies/1` reaches `http://b/1` for prefix
    /// `/movies`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// The root URL clients use for the service (`https://movies.example`).
    /// Addresses of the backend in answers are rewritten to it, and it to
    /// the backend's in requests. Default: the scheme of the client port
    /// and the `Host` each request names (with `prefix` if stripped).
    pub presented_url: Option<String>,
    /// The local backend instance, `http://host:port`.
    pub backend: String,
    /// What fixes up the service's kind: `http` (the default; see
    /// docs/adapters.md).
    #[serde(default)]
    pub adapter: Adapter,
    /// The accounts of `adapter = "azure-storage"`.
    pub azure: Option<AzureSettings>,
    /// Preferred active members (voters), in order; the first is the
    /// preferred leader. Default: every node, in the order of `nodes`.
    pub active: Option<Vec<String>>,
    /// Response headers compared across nodes besides status and body
    /// (divergence detection), e.g. `["etag"]`.
    #[serde(default)]
    pub digest_headers: Vec<String>,
    /// The backend's path for reseeding: `GET` exports its whole state,
    /// `PUT` imports one (the demo backend's is `/_snapshot`).
    pub snapshot: Option<String>,
    /// TLS settings of an `https://` backend.
    pub backend_tls: Option<BackendTls>,
    /// When the origin answers an update: `agreed` (the default: once a
    /// majority of the nodes' backends answered the same; 502 if they did
    /// not) or `local` (as soon as its own backend answered).
    #[serde(default)]
    pub answer: Answer,
    /// Which updates commute, so that the applier may run them side by
    /// side: `none` (the default: strictly one at a time, in slot order)
    /// or `path` (updates to unrelated paths commute; see
    /// docs/configuration.md before turning it on).
    #[serde(default)]
    pub resource_key: ResourceKey,
    /// With `resource_key = "path"`: only the first this many path
    /// segments name a resource (e.g. 2 for `/kv/<key>/...`).
    pub resource_key_depth: Option<u32>,
    /// With a resource key rule: backend calls the applier has out at
    /// once, at most.
    #[serde(default = "default_apply_concurrency")]
    pub apply_concurrency: usize,
    /// Updates sent on one connection to the backend before the first
    /// is answered (HTTP/1.1 pipelining): 1, the default, sends each on
    /// a connection of its own (docs/configuration.md says when more is
    /// safe).
    #[serde(default = "default_backend_pipeline")]
    pub backend_pipeline: usize,
    /// Whether the leader holds a partial batch of updates while a slot
    /// is being decided, so that what arrives meanwhile shares the next
    /// slot (the default), or proposes each batch at once.
    #[serde(default = "default_batch_wait")]
    pub batch_wait: bool,
}

fn default_body_min_bytes_per_sec() -> u64 {
    1024
}

fn default_apply_concurrency() -> usize {
    32
}

fn default_backend_pipeline() -> usize {
    1
}

fn default_batch_wait() -> bool {
    true
}

/// The largest `backend_pipeline`.
pub const BACKEND_PIPELINE_MAX: usize = 256;

/// The largest `apply_concurrency`.
pub const APPLY_CONCURRENCY_MAX: usize = 1024;

/// How a service's paths name the resources its updates touch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKey {
    /// Nothing commutes: updates apply one at a time.
    #[default]
    None,
    /// Updates to unrelated paths (neither is a prefix of the other,
    /// segment by segment) commute.
    Path,
}

/// When the node that took an update answers its client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// With its own backend's response, at once.
    Local,
    /// Only once a majority of the nodes' responses agree with it: the
    /// default, since a client must not get an answer the majority
    /// contradicts (docs/operations.md measures what it costs).
    #[default]
    Agreed,
}

/// The admin API's guard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// The bearer token admin actions need. Without a token (here or in
    /// `token_file`), admin actions are taken only from loopback.
    pub token: Option<String>,
    /// A file holding the token (trailing white space ignored).
    pub token_file: Option<PathBuf>,
}

/// The shortest lease: three heartbeat intervals.
pub const LEASE_MS_MIN: u64 = 300;

/// The largest update body: it travels in one peer frame (16 MiB) with
/// its headers, inside Accept, Promise and Entries messages.
pub const MAX_BODY_BYTES_LIMIT: usize = 8 << 20;

fn default_prefix() -> String {
    "/".into()
}

/// Limits: every one of them bounds a queue, a wait or a size.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (bigger: 413).
    pub max_body_bytes: usize,
    /// Updates in flight at this node at once (more: 503 + Retry-After).
    pub max_inflight_updates: usize,
    /// How long a client waits for its update to be applied here before
    /// it gets 504 (outcome unknown).
    pub update_timeout_ms: u64,
    /// Timeout of every call to the backend.
    pub backend_timeout_ms: u64,
    /// How long a client may take to send a request body (beyond: 408,
    /// and the connection is closed).
    pub body_timeout_ms: u64,
    /// The slowest a request body may arrive, on average, after its first
    /// `BODY_GRACE_MS`: a client that trickles a large body holds a
    /// connection and memory as one that never finishes it. 0: no floor.
    #[serde(default = "default_body_min_bytes_per_sec")]
    pub body_min_bytes_per_sec: u64,
    /// A node whose applied index is more than this many slots behind
    /// the commit index it knows refuses reads (503).
    pub max_lag_slots: u64,
    /// A follower that has not heard from the leader for this long
    /// refuses reads (503).
    pub lease_ms: u64,
    /// Slots of log each service keeps; older ones are dropped. A node
    /// that falls further behind needs a reseed.
    pub log_retain_slots: u64,
    /// Bytes of log each service keeps at most (payloads and a small
    /// allowance per slot); the oldest slots beyond are dropped.
    pub log_retain_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 20,
            max_inflight_updates: 1024,
            update_timeout_ms: 10_000,
            backend_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            body_min_bytes_per_sec: default_body_min_bytes_per_sec(),
            max_lag_slots: 100,
            lease_ms: 2_000,
            log_retain_slots: 1_000_000,
            log_retain_bytes: 1 << 30,
        }
    }
}

/// How the leader keeps the active set healthy (`docs/membership.md`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipSettings {
    /// Whether the leader replaces lost voters and swaps preferred
    /// members back by itself. Operators' commands work either way.
    pub automatic: bool,
    /// How often the leader checks the active set.
    pub check_interval_ms: u64,
    /// A voter not heard from for this long is replaced by a backup.
    pub stale_after_ms: u64,
    /// A backup further behind the leader than this is not promoted.
    pub promote_lag_max_slots: u64,
    /// How long a preferred leader must have kept up before leadership
    /// is handed back to it.
    pub takeover_after_ms: u64,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        MembershipSettings {
            automatic: true,
            check_interval_ms: 10_000,
            stale_after_ms: 30_000,
            promote_lag_max_slots: 1_000,
            takeover_after_ms: 2_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reads {
    pub linearizable: ReadMode,
}

/// A node's whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster's name: part of every `Idempotency-Key` and checked
    /// when peers meet.
    pub cluster: String,
    /// This node's name; must be a key of `nodes`.
    pub node: String,
    /// Where this node keeps its durable state.
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub tls: Tls,
    /// TLS on the client port; plain HTTP without it.
    pub client_tls: Option<ClientTls>,
    /// Every node of the cluster: name = peer address (or a table with
    /// its pins). Node ids are the positions in name order, so every node
    /// derives the same ids.
    pub nodes: BTreeMap<String, NodeEntry>,
    pub services: Vec<Service>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub reads: Reads,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub membership: MembershipSettings,
}

/// A configuration problem: the key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// `value` is a count from 1 to `max`, or the error for `key`.
fn one_to(max: usize, value: usize, key: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if (1..=max).contains(&value) {
        return Ok(());
    }
    Err(err(key(), format!("{value} is not between 1 and {max}")))
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Names of nodes, services and clusters: lower-case letters, digits,
/// `-` and `_`, 1 to `max` long (they end up in certificate names, file
/// names and keyspace names).
fn check_name(key: &str, name: &str, max: usize) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            format!("{name:?} is not a valid name: use a-z, 0-9, - and _, 1 to {max} characters"),
        ))
    }
}

/// Node and cluster names follow the certificate rules (DNS labels).
fn check_label(key: &str, name: &str, max: usize) -> Result<(), ConfigError> {
    crate::mesh::certs::check_label(name, max)
        .map_err(|why| err(key, format!("{name:?} is not a valid name: {why}")))
}

impl Config {
    /// Parse and validate. Errors name the key and the reason.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_default();
            err(at, reason)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a file; relative paths in it are taken
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
        let mut cfg = Config::parse(&text)
            .map_err(|e| err(e.key, format!("{} (in {})", e.reason, path.display())))?;
        if let Some(dir) = path.parent() {
            let mut paths: Vec<&mut PathBuf> =
                vec![&mut cfg.data_dir, &mut cfg.tls.cert, &mut cfg.tls.key];
            paths.extend(cfg.tls.ca.as_mut());
            paths.extend(cfg.admin.token_file.as_mut());
            if let Some(c) = cfg.client_tls.as_mut() {
                paths.push(&mut c.cert);
                paths.push(&mut c.key);
                paths.extend(c.client_ca.as_mut());
            }
            for s in &mut cfg.services {
                if let Some(b) = s.backend_tls.as_mut() {
                    paths.extend(b.ca.as_mut());
                    paths.extend(b.cert.as_mut());
                    paths.extend(b.key.as_mut());
                }
            }
            for p in paths {
                if p.is_relative() {
                    *p = dir.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_label("cluster", &self.cluster, 48)?;
        check_label("node", &self.node, 32)?;
        if self.nodes.is_empty() {
            return Err(err("nodes", "lists no node"));
        }
        if self.nodes.len() > u16::MAX as usize {
            return Err(err("nodes", "too many nodes"));
        }
        for name in self.nodes.keys() {
            check_label(&format!("nodes.{name}"), name, 32)?;
        }
        let Some(me) = self.nodes.get(&self.node) else {
            let known: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
            return Err(err(
                "node",
                format!("{:?} is not in nodes ({})", self.node, known.join(", ")),
            ));
        };
        let my_port = peer_port(&format!("nodes.{}", self.node), &me.addr)?;
        if my_port != self.listen.peer.port() {
            return Err(err(
                "listen.peer",
                format!(
                    "port {} differs from this node's address in nodes.{} ({})",
                    self.listen.peer.port(),
                    self.node,
                    me.addr
                ),
            ));
        }
        if let Some(n) = self.listen.client_workers
            && !(1..=MAX_CLIENT_WORKERS).contains(&n)
        {
            return Err(err(
                "listen.client_workers",
                format!("{n} is not between 1 and {MAX_CLIENT_WORKERS}"),
            ));
        }
        for (j, net) in self.listen.peer_sources.iter().enumerate() {
            net.parse::<crate::mesh::sources::Net>()
                .map_err(|why| err(format!("listen.peer_sources[{j}]"), why))?;
        }
        let mut seen = BTreeMap::new();
        for (name, entry) in &self.nodes {
            peer_port(&format!("nodes.{name}"), &entry.addr)?;
            let addr = &entry.addr;
            for (j, pin) in entry.pins.iter().enumerate() {
                pin.parse::<crate::tls::pins::Pin>()
                    .map_err(|why| err(format!("nodes.{name}.pins[{j}]"), why))?;
            }
            if self.tls.ca.is_none() && entry.pins.is_empty() {
                return Err(err(
                    format!("nodes.{name}"),
                    "has no pins, and there is no tls.ca to trust it by: give one or the other",
                ));
            }
            if let Some(other) = seen.insert(addr.to_ascii_lowercase(), name) {
                return Err(err(
                    format!("nodes.{name}"),
                    format!("address {addr} is also nodes.{other}'s"),
                ));
            }
        }
        if self.services.is_empty() {
            return Err(err("services", "lists no service"));
        }
        let mut names = BTreeSet::new();
        let mut prefixes = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = |k: &str| format!("services[{i}].{k}");
            check_name(&key("name"), &s.name, 48)?;
            if !names.insert(&s.name) {
                return Err(err(key("name"), format!("{:?} is used twice", s.name)));
            }
            if !s.prefix.starts_with('/') {
                return Err(err(
                    key("prefix"),
                    format!("{:?} must start with /", s.prefix),
                ));
            }
            if let Some(h) = &s.host {
                check_host(&key("host"), h)?;
            }
            if !prefixes.insert((s.host.as_deref().map(str::to_ascii_lowercase), &s.prefix)) {
                return Err(err(
                    key("prefix"),
                    format!(
                        "{:?} is another service's prefix (on the same host)",
                        s.prefix
                    ),
                ));
            }
            if s.strip_prefix && s.prefix == "/" {
                return Err(err(key("strip_prefix"), "is set, but the prefix is \"/\""));
            }
            match (&s.adapter, &s.azure) {
                (Adapter::AzureStorage, None) => {
                    return Err(err(key("azure"), "adapter \"azure-storage\" needs it"));
                }
                (Adapter::AzureStorage, Some(a)) => {
                    let ok = |n: &str| {
                        (3..=24).contains(&n.len())
                            && n.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    };
                    for (k, name) in [
                        ("presented_account", &a.presented_account),
                        ("account", &a.account),
                    ] {
                        if !ok(name) {
                            return Err(err(
                                key(&format!("azure.{k}")),
                                format!(
                                    "{name:?} is not a storage account name: 3 to 24 of a-z and 0-9"
                                ),
                            ));
                        }
                    }
                    for (k, v) in [("presented_key", &a.presented_key), ("key", &a.key)] {
                        use base64::Engine as _;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(v.trim())
                            .map_err(|_| err(key(&format!("azure.{k}")), "is not base64"))?;
                        // An empty or short key would let anyone sign.
                        if bytes.len() < 16 {
                            return Err(err(
                                key(&format!("azure.{k}")),
                                format!(
                                    "{} bytes is too short a key: 16 at least (Azure's are 64)",
                                    bytes.len()
                                ),
                            ));
                        }
                    }
                }
                (_, Some(_)) => {
                    return Err(err(
                        key("azure"),
                        "is set, but the adapter is not \"azure-storage\"",
                    ));
                }
                (_, None) => {}
            }
            if let Some(url) = &s.presented_url {
                check_presented_url(&key("presented_url"), url)?;
            }
            let https = check_backend_url(&key("backend"), &s.backend)?;
            if let Some(b) = &s.backend_tls {
                if !https {
                    return Err(err(
                        key("backend_tls"),
                        format!("is set, but the backend {:?} is not https://", s.backend),
                    ));
                }
                if b.cert.is_some() != b.key.is_some() {
                    return Err(err(key("backend_tls"), "cert and key go together"));
                }
            }
            if let Some(p) = &s.snapshot {
                if !p.starts_with('/') {
                    return Err(err(key("snapshot"), format!("{p:?} must start with /")));
                }
            }
            if s.resource_key_depth.is_some() && s.resource_key != ResourceKey::Path {
                return Err(err(
                    key("resource_key_depth"),
                    "is set, but resource_key is not \"path\"",
                ));
            }
            if s.resource_key_depth == Some(0) {
                return Err(err(
                    key("resource_key_depth"),
                    "0 would make every path one resource: leave resource_key out instead",
                ));
            }
            one_to(APPLY_CONCURRENCY_MAX, s.apply_concurrency, || {
                key("apply_concurrency")
            })?;
            one_to(BACKEND_PIPELINE_MAX, s.backend_pipeline, || {
                key("backend_pipeline")
            })?;
            for (j, h) in s.digest_headers.iter().enumerate() {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(err(
                        key(&format!("digest_headers[{j}]")),
                        format!("{h:?} is not a header name"),
                    ));
                }
            }
            if let Some(active) = &s.active {
                if active.is_empty() {
                    return Err(err(key("active"), "lists no node"));
                }
                let mut once = BTreeSet::new();
                for n in active {
                    if !self.nodes.contains_key(n) {
                        return Err(err(key("active"), format!("{n:?} is not in nodes")));
                    }
                    if !once.insert(n) {
                        return Err(err(key("active"), format!("{n:?} is listed twice")));
                    }
                }
            }
        }
        let l = &self.limits;
        if l.lease_ms < LEASE_MS_MIN {
            return Err(err(
                "limits.lease_ms",
                format!(
                    "{} is below {LEASE_MS_MIN}: leases are renewed every 100 ms, \
                     so a shorter one makes reads flap between served and refused",
                    l.lease_ms
                ),
            ));
        }
        if l.max_body_bytes > MAX_BODY_BYTES_LIMIT {
            return Err(err(
                "limits.max_body_bytes",
                format!(
                    "{} is above {MAX_BODY_BYTES_LIMIT}: an update must fit in one peer frame",
                    l.max_body_bytes
                ),
            ));
        }
        for (k, v) in [
            ("limits.max_body_bytes", l.max_body_bytes as u64),
            ("limits.max_inflight_updates", l.max_inflight_updates as u64),
            ("limits.update_timeout_ms", l.update_timeout_ms),
            ("limits.backend_timeout_ms", l.backend_timeout_ms),
            ("limits.body_timeout_ms", l.body_timeout_ms),
            ("limits.lease_ms", l.lease_ms),
            ("limits.log_retain_slots", l.log_retain_slots),
            ("limits.log_retain_bytes", l.log_retain_bytes),
            (
                "membership.check_interval_ms",
                self.membership.check_interval_ms,
            ),
            ("membership.stale_after_ms", self.membership.stale_after_ms),
            (
                "membership.takeover_after_ms",
                self.membership.takeover_after_ms,
            ),
        ] {
            if v == 0 {
                return Err(err(k, "must be more than 0"));
            }
        }
        Ok(())
    }

    /// Node names in id order: `NodeId(i)` is `node_names()[i]`.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.keys().map(String::as_str).collect()
    }

    /// This node's id.
    pub fn node_id(&self) -> crate::paxos::ballot::NodeId {
        let i = self.nodes.keys().position(|n| *n == self.node).unwrap_or(0);
        crate::paxos::ballot::NodeId(i as u16)
    }

    /// A service's Paxos membership: its active members vote (the first
    /// is the preferred leader); every node learns.
    pub fn membership(&self, service: &Service) -> crate::paxos::membership::Membership {
        use crate::paxos::ballot::NodeId;
        let id = |name: &str| NodeId(self.nodes.keys().position(|n| n == name).unwrap_or(0) as u16);
        let nodes: Vec<NodeId> = (0..self.nodes.len() as u16).map(NodeId).collect();
        let voters = match &service.active {
            Some(active) => active.iter().map(|n| id(n)).collect(),
            None => nodes.clone(),
        };
        crate::paxos::membership::Membership { voters, nodes }
    }

    /// The admin token, read from `admin.token_file` if that is given.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        if self.admin.token.is_some() && self.admin.token_file.is_some() {
            return Err(err("admin", "give token or token_file, not both"));
        }
        let token = match &self.admin.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| err("admin.token_file", format!("{}: {e}", path.display())))?
                    .trim_end()
                    .to_string(),
            ),
            None => self.admin.token.clone(),
        };
        match token {
            Some(t) if t.len() < 16 => Err(err(
                "admin.token",
                "is shorter than 16 characters: too easy to guess",
            )),
            t => Ok(t),
        }
    }

    pub fn update_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.update_timeout_ms)
    }

    /// The mesh's TLS files and pins (pins were checked by `validate`).
    pub fn mesh_tls(&self) -> crate::mesh::tls::TlsPaths {
        let pins = self
            .nodes
            .iter()
            .filter(|(_, e)| !e.pins.is_empty())
            .map(|(n, e)| {
                (
                    n.clone(),
                    // `validate` refused bad pins; should one get here
                    // anyway, it fails closed (a pin nothing matches),
                    // never open (the node trusted by the CA instead).
                    e.pins
                        .iter()
                        .map(|p| {
                            p.parse().unwrap_or(crate::tls::pins::Pin {
                                kind: crate::tls::pins::PinKind::Cert,
                                sha256: [0; 32],
                            })
                        })
                        .collect(),
                )
            })
            .collect();
        crate::mesh::tls::TlsPaths {
            ca: self.tls.ca.clone(),
            cert: self.tls.cert.clone(),
            key: self.tls.key.clone(),
            pins,
        }
    }

    /// The client port's TLS files, if it speaks TLS.
    pub fn client_tls_files(&self) -> Option<crate::tls::client_port::ClientTlsFiles> {
        self.client_tls
            .as_ref()
            .map(|c| crate::tls::client_port::ClientTlsFiles {
                cert: c.cert.clone(),
                key: c.key.clone(),
                client_ca: c.client_ca.clone(),
            })
    }

    /// A service's backend TLS settings (defaults: the system's roots, no
    /// client certificate).
    pub fn backend_tls_files(&self, s: &Service) -> crate::tls::backend::BackendTlsFiles {
        let b = s.backend_tls.clone().unwrap_or_default();
        crate::tls::backend::BackendTlsFiles {
            ca: b.ca,
            cert: b.cert,
            key: b.key,
        }
    }

    /// The key whose value is `path` (for errors about a file).
    fn key_of(&self, path: &Path) -> String {
        let mut keys: Vec<(String, &Path)> = vec![
            ("tls.cert".into(), &self.tls.cert),
            ("tls.key".into(), &self.tls.key),
        ];
        keys.extend(self.tls.ca.as_deref().map(|p| ("tls.ca".into(), p)));
        if let Some(c) = &self.client_tls {
            keys.push(("client_tls.cert".into(), &c.cert));
            keys.push(("client_tls.key".into(), &c.key));
            keys.extend(
                c.client_ca
                    .as_deref()
                    .map(|p| ("client_tls.client_ca".into(), p)),
            );
        }
        for (i, s) in self.services.iter().enumerate() {
            if let Some(b) = &s.backend_tls {
                for (k, p) in [("ca", &b.ca), ("cert", &b.cert), ("key", &b.key)] {
                    if let Some(p) = p {
                        keys.push((format!("services[{i}].backend_tls.{k}"), p));
                    }
                }
            }
        }
        keys.into_iter()
            .find(|(_, p)| *p == path)
            .map(|(k, _)| k)
            .unwrap_or_default()
    }

    fn tls_error(&self, fallback: &str, e: crate::tls::TlsError) -> ConfigError {
        let key = e.path().map(|p| self.key_of(p)).unwrap_or_default();
        err(
            if key.is_empty() {
                fallback.to_string()
            } else {
                key
            },
            e.to_string(),
        )
    }

    /// What `validate` cannot see without reading files: every TLS file
    /// exists and parses, every certificate goes with its key, the mesh
    /// certificate names this node and is trusted as its peers will
    /// trust it, backends' CA bundles load, and the admin token file
    /// reads. Errors name the key and the reason.
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let me = self.node_id().0 as usize;
        crate::mesh::tls::PeerTls::load(&self.mesh_tls(), &names, me)
            .map_err(|e| self.tls_error("tls", e))?;
        if let Some(files) = self.client_tls_files() {
            crate::tls::client_port::ClientPortTls::new(&files)
                .map_err(|e| self.tls_error("client_tls", e))?;
        }
        for (i, s) in self.services.iter().enumerate() {
            if s.backend.starts_with("https://") {
                crate::tls::backend::client_config(&self.backend_tls_files(s))
                    .map_err(|e| self.tls_error(&format!("services[{i}].backend_tls"), e))?;
            }
        }
        self.admin_token()?;
        Ok(())
    }

    /// What a reload (SIGHUP) does not apply: every difference from
    /// `next` outside the TLS settings, by top-level key.
    pub fn needs_restart(&self, next: &Config) -> Vec<&'static str> {
        let mut a = self.clone();
        let mut b = next.clone();
        for c in [&mut a, &mut b] {
            c.tls = Tls {
                ca: None,
                cert: PathBuf::new(),
                key: PathBuf::new(),
            };
            c.client_tls = None;
            for e in c.nodes.values_mut() {
                e.pins.clear();
            }
        }
        let mut out = Vec::new();
        let (a, b) = (&a, &b);
        if a.cluster != b.cluster || a.node != b.node || a.data_dir != b.data_dir {
            out.push("cluster, node or data_dir");
        }
        if a.listen != b.listen {
            out.push("listen");
        }
        if a.nodes != b.nodes {
            out.push("nodes");
        }
        if a.services != b.services {
            out.push("services");
        }
        if a.limits != b.limits || a.reads != b.reads || a.membership != b.membership {
            out.push("limits, reads or membership");
        }
        if a.admin != b.admin {
            out.push("admin");
        }
        if self.client_tls.is_some() != next.client_tls.is_some() {
            out.push("client_tls (turning TLS on or off)");
        }
        out
    }
}

/// A peer address, `ip:port`, `[ipv6]:port` or `dns-name:port`: its port.
fn peer_port(key: &str, addr: &str) -> Result<u16, ConfigError> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(a.port());
    }
    let bad = |why: &str| {
        err(
            key,
            format!(
                "{addr:?} is not a peer address like \"10.0.1.10:9080\" or \"north.ordo.svc:9080\": {why}"
            ),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number up to 65535"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err(bad("the host is neither an IP address nor a DNS name"));
    }
    Ok(port)
}

/// A `host` a service is bound to: a DNS name, or a name and a port.
fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty()
        || !name.split('.').all(label_ok)
        || port.is_some_and(|p| p.parse::<u16>().is_err())
    {
        return Err(err(
            key,
            format!(
                "{host:?} is not a host name (and port), like movies.example or movies.example:8080"
            ),
        ));
    }
    Ok(())
}

/// A `presented_url`: `http(s)://authority[/path]`, nothing after.
fn check_presented_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let ok = rest.is_some_and(|rest| {
        let authority = rest.split('/').next().unwrap_or("");
        !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
            && !rest.contains(['?', '#', ' '])
    });
    if !ok {
        return Err(err(
            key,
            format!("not an http(s) URL like https://movies.example: {url:?}"),
        ));
    }
    Ok(())
}

/// Whether the backend URL is https.
fn check_backend_url(key: &str, url: &str) -> Result<bool, ConfigError> {
    let bad = || {
        err(
            key,
            format!(
                "not an http(s) URL like http://127.0.0.1:8000 or https://backend.example:443: {url:?}"
            ),
        )
    };
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(bad()),
    };
    if rest.contains('?') || rest.contains('#') {
        return Err(err(
            key,
            format!("a backend URL has no query or fragment: {url:?}"),
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(https)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster = "demo"
node = "north"
data_dir = "data/north"

[listen]
client = "127.0.0.1:8080"
peer = "127.0.0.1:9080"

[tls]
ca = "certs/ca.pem"
cert = "certs/north.pem"
key = "certs/north.key"

[nodes]
north = "127.0.0.1:9080"
east = "127.0.0.1:9081"
west = "127.0.0.1:9082"

[[services]]
name = "kv"
backend = "http://127.0.0.1:8000"
active = ["north", "east", "west"]
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.node_names(), vec!["east", "north", "west"]);
        assert_eq!(c.node_id().0, 1);
        assert_eq!(c.services[0].prefix, "/");
        assert_eq!(c.reads.linearizable, ReadMode::ReadIndex);
        let m = c.membership(&c.services[0]);
        assert_eq!(m.preferred_leader().map(|n| n.0), Some(1), "north leads");
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn batch_wait_is_on_unless_turned_off() {
        let c = Config::parse(GOOD).expect("valid");
        assert!(c.services[0].batch_wait);
        let text = GOOD.replace(
            "active = [\"north\", \"east\", \"west\"]",
            "active = [\"north\", \"east\", \"west\"]\nbatch_wait = false",
        );
        let c = Config::parse(&text).expect("valid");
        assert!(!c.services[0].batch_wait);
        assert_eq!(
            error_of(
                "active = [\"north\", \"east\", \"west\"]",
                "batch_wait = \"no\"",
            ),
            "line 23: invalid type: string \"no\", expected a boolean"
        );
    }

    #[test]
    fn client_workers_default_to_the_cpus_and_may_be_set() {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.listen.client_workers(), cpus.min(MAX_CLIENT_WORKERS));
        let text = GOOD.replace(
            "peer = \"127.0.0.1:9080\"",
            "peer = \"127.0.0.1:9080\"\nclient_workers = 7",
        );
        let c = Config::parse(&text).expect("valid");
        assert_eq!(c.listen.client_workers(), 7);
    }

    #[test]
    fn nodes_may_list_pins_and_tls_sections_are_optional() {
        let pin = format!("key-sha256:{}", "ab".repeat(32));
        let text = GOOD.replace(
            "west = \"127.0.0.1:9082\"",
            &format!("west = {{ addr = \"127.0.0.1:9082\", pins = [\"{pin}\"] }}"),
        ) + "[client_tls]\ncert = \"c.pem\"\nkey = \"c.key\"\n";
        let c = Config::parse(&text).expect("valid");
        assert_eq!(c.nodes["west"].addr, "127.0.0.1:9082");
        let tls = c.mesh_tls();
        assert_eq!(tls.pins.len(), 1);
        assert_eq!(tls.pins["west"][0].to_string(), pin);
        let files = c.client_tls_files().expect("client TLS");
        assert_eq!(files.client_ca, None);
        // Only TLS settings changed: a reload applies all of it.
        let plain = Config::parse(GOOD).expect("valid");
        assert_eq!(
            plain.needs_restart(&c),
            vec!["client_tls (turning TLS on or off)"]
        );
        let mut other = c.clone();
        other.tls.cert = "new.pem".into();
        other.limits.lease_ms += 1;
        assert_eq!(c.needs_restart(&other), vec!["limits, reads or membership"]);
    }

    #[test]
    fn node_addresses_may_be_dns_names() {
        let text = GOOD
            .replace("127.0.0.1:9082", "west-0.ordo.shop.svc.cluster.local:9082")
            .replace("north = \"127.0.0.1:9080\"", "north = \"[::1]:9080\"");
        let c = Config::parse(&text).expect("valid");
        assert_eq!(
            c.nodes["west"].addr,
            "west-0.ordo.shop.svc.cluster.local:9082"
        );
        assert_eq!(c.nodes["north"].addr, "[::1]:9080");
    }

    fn error_of(from: &str, to: &str) -> String {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "test edit {from:?} did not apply");
        Config::parse(&text)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn every_error_names_the_key_and_the_reason() {
        let cases = [
            (
                "http://127.0.0.1:8000",
                "htp://x",
                "services[0].backend: not an http(s) URL",
            ),
            (
                "node = \"north\"",
                "node = \"south\"",
                "node: \"south\" is not in nodes",
            ),
            (
                "\"north\", \"east\"",
                "\"north\", \"sky\"",
                "services[0].active: \"sky\"",
            ),
            (
                "name = \"kv\"",
                "name = \"KV\"",
                "services[0].name: \"KV\" is not a valid name",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nresource_key_depth = 2",
                "services[0].resource_key_depth: is set, but resource_key is not \"path\"",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nresource_key = \"path\"\napply_concurrency = 0",
                "services[0].apply_concurrency: 0 is not between 1 and 1024",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nbackend_pipeline = 0",
                "services[0].backend_pipeline: 0 is not between 1 and 256",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nresource_key = \"paths\"",
                "unknown variant `paths`",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nhost = \"movies.example/x\"",
                "services[0].host: \"movies.example/x\" is not a host name",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nstrip_prefix = true",
                "services[0].strip_prefix: is set, but the prefix is \"/\"",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\npresented_url = \"movies.example\"",
                "services[0].presented_url: not an http(s) URL",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nadapter = \"soap\"",
                "unknown variant `soap`",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nadapter = \"azure-storage\"",
                "services[0].azure: adapter \"azure-storage\" needs it",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nadapter = \"azure-storage\"\nazure = { presented_account = \"My_Movies\", \
                 presented_key = \"a2V5a2V5a2V5a2V5a2V5a2V5\", account = \"real1\", key = \"a2V5\" }",
                "services[0].azure.presented_account: \"My_Movies\" is not a storage account name",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nadapter = \"azure-storage\"\nazure = { presented_account = \"movies\", \
                 presented_key = \"a2V5a2V5a2V5a2V5a2V5a2V5\", account = \"real1\", key = \"not base64!\" }",
                "services[0].azure.key: is not base64",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nadapter = \"azure-storage\"\nazure = { presented_account = \"movies\", \
                 presented_key = \"\", account = \"real1\", key = \"a2V5a2V5a2V5a2V5a2V5a2V5\" }",
                "services[0].azure.presented_key: 0 bytes is too short a key",
            ),
            (
                "name = \"kv\"",
                "name = \"kv\"\nazure = { presented_account = \"movies\", \
                 presented_key = \"a2V5\", account = \"real1\", key = \"a2V5\" }",
                "services[0].azure: is set, but the adapter is not \"azure-storage\"",
            ),
            (
                "peer = \"127.0.0.1:9080\"",
                "peer = \"127.0.0.1:9080\"\npeer_sources = [\"10.0.0.0/8\", \"10.1/16\"]",
                "listen.peer_sources[1]: \"10.1/16\" is not an address or a network",
            ),
            (
                "peer = \"127.0.0.1:9080\"",
                "peer = \"127.0.0.1:9999\"",
                "listen.peer: port 9999",
            ),
            (
                "peer = \"127.0.0.1:9080\"",
                "peer = \"127.0.0.1:9080\"\nclient_workers = 0",
                "listen.client_workers: 0 is not between 1 and 256",
            ),
            (
                "west = \"127.0.0.1:9082\"",
                "west = \"127.0.0.1:9081\"",
                "is also nodes.",
            ),
            (
                "[[services]]",
                "[limits]\nmax_body_bytes = 0\n[[services]]",
                "limits.max_body_bytes",
            ),
            (
                "cluster = \"demo\"",
                "cluster = \"demo\"\ncolour = 1",
                "unknown field `colour`",
            ),
            (
                "[[services]]",
                "[limits]\nlease_ms = 50\n[[services]]",
                "limits.lease_ms: 50 is below 300",
            ),
            (
                "node = \"north\"",
                "node = \"-north\"",
                "must not start or end with '-'",
            ),
            (
                "client = \"127.0.0.1:8080\"",
                "client = \"nowhere\"",
                "invalid socket address",
            ),
            (
                "backend = \"http://127.0.0.1:8000\"",
                "backend = \"http://127.0.0.1:8000/api?x=1\"",
                "a backend URL has no query or fragment",
            ),
            (
                "[[services]]",
                "[membership]\nstale_after_ms = 0\n[[services]]",
                "membership.stale_after_ms: must be more than 0",
            ),
            (
                "[[services]]",
                "[membership]\nautomatic = \"yes\"\n[[services]]",
                "invalid type: string \"yes\", expected a boolean",
            ),
            (
                "west = \"127.0.0.1:9082\"",
                "west = { addr = \"127.0.0.1:9082\", pins = [\"sha1:00\"] }",
                "nodes.west.pins[0]: \"sha1:00\" is not a pin",
            ),
            (
                "west = \"127.0.0.1:9082\"",
                "west = { addr = \"127.0.0.1:9082\", pin = [] }",
                "unknown field `pin`",
            ),
            (
                "west = \"127.0.0.1:9082\"",
                "west = \"west ordo:9082\"",
                "nodes.west: \"west ordo:9082\" is not a peer address",
            ),
            (
                "west = \"127.0.0.1:9082\"",
                "west = \"west.ordo.svc\"",
                "nodes.west: \"west.ordo.svc\" is not a peer address like",
            ),
            (
                "west = \"127.0.0.1:9082\"",
                "west = 9082",
                "expected an address \"host:port\", or a table",
            ),
            (
                "ca = \"certs/ca.pem\"\n",
                "",
                "nodes.east: has no pins, and there is no tls.ca",
            ),
            (
                "active = [\"north\", \"east\", \"west\"]",
                "active = [\"north\", \"east\", \"west\"]\nbackend_tls = { ca = \"ca.pem\" }",
                "services[0].backend_tls: is set, but the backend \"http://127.0.0.1:8000\" is not https://",
            ),
            (
                "backend = \"http://127.0.0.1:8000\"",
                "backend = \"https://b.example:8443\"\nbackend_tls = { cert = \"c.pem\" }",
                "services[0].backend_tls: cert and key go together",
            ),
        ];
        for (from, to, want) in cases {
            let got = error_of(from, to);
            assert!(got.contains(want), "{to:?}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn a_syntax_error_names_the_line() {
        let got = Config::parse("cluster = \"demo\"\nnode = \n").expect_err("bad");
        assert!(got.to_string().starts_with("line 2"), "{got}");
    }
}
