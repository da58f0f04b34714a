//! One running ordo node: storage, peer mesh, a Paxos group and a
//! backend client per service, and the HTTP gateway. `ordo run` starts
//! one per process; `ordo demo` starts three in one process.

use crate::config::Config;
use crate::driver::GroupConfig;
use crate::gateway::readiness::ReadLimits;
use crate::gateway::waiters::Waiters;
use crate::gateway::{self, Gateway, Service};
use crate::http::client::{HttpBackend, HttpBackendConfig};
use crate::mesh::{Mesh, MeshConfig};
use crate::node::{NodeHandle, start_group};
use crate::storage::fjall_kv::FjallStore;
use crate::tls::client_port::ClientPortTls;
use actix_web::{App, HttpServer};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;

// One value travels in one peer frame: a batch holds at most
// `batch_bytes_max` (checked by `start_group`) or one update of at most the
// largest body allowed; half the frame is left for headers and framing.
const _: () =
    assert!(crate::config::MAX_BODY_BYTES_LIMIT <= crate::mesh::frame::MAX_FRAME_BYTES / 2);

/// Applier attempts at one update before reads call the node stuck.
const STUCK_ATTEMPTS: u64 = 5;

/// A node that is up: stop it with [`RunningNode::stop`], or wait.
pub struct RunningNode {
    pub name: String,
    pub client_addr: std::net::SocketAddr,
    pub gateway: Arc<Gateway>,
    server: actix_web::dev::ServerHandle,
    task: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
    mesh: Option<Mesh>,
    handles: Vec<NodeHandle>,
    client_tls: Option<ClientPortTls>,
    /// The console's server, when `listen.console` is set, and where it
    /// listens.
    console: Option<actix_web::dev::ServerHandle>,
    pub console_addr: Option<std::net::SocketAddr>,
}

impl RunningNode {
    /// Until the HTTP server stops (a signal, or `stop`).
    pub async fn wait(self) -> Result<()> {
        let RunningNode {
            task,
            mesh,
            name,
            console,
            ..
        } = self;
        let served = task.await;
        if let Some(c) = console {
            c.stop(true).await;
        }
        if let Some(m) = mesh {
            m.shutdown();
        }
        served
            .with_context(|| format!("node {name}: HTTP server task failed"))?
            .with_context(|| format!("node {name}: HTTP server failed"))
    }

    /// A handle that reloads the node's TLS settings (SIGHUP).
    pub fn tls(&self) -> TlsReloader {
        TlsReloader {
            mesh: self.mesh.as_ref().map(Mesh::handle),
            client: self.client_tls.clone(),
        }
    }

    pub async fn stop(self) {
        self.server.stop(true).await;
        for h in &self.handles {
            h.stop();
        }
        let _ = self.wait().await;
    }
}

/// Reloads a running node's TLS files (mesh and client port); cheap to
/// clone.
#[derive(Clone)]
pub struct TlsReloader {
    mesh: Option<crate::mesh::MeshHandle>,
    client: Option<ClientPortTls>,
}

impl TlsReloader {
    /// Load the TLS files named in `cfg` again and use them for new
    /// connections; the mesh reconnects under them. All or nothing: a
    /// bad file changes neither. Other settings in `cfg` are not applied
    /// (they need a restart: `Config::needs_restart`).
    pub fn reload(&self, cfg: &Config) -> Result<()> {
        // Load and check everything first, once; then use exactly that.
        // A bad file changes nothing.
        let mesh = match &self.mesh {
            Some(m) => Some((m, m.prepare(&cfg.mesh_tls()).context("tls")?)),
            None => None,
        };
        let client = match (cfg.client_tls_files(), &self.client) {
            (Some(files), Some(tls)) => {
                Some((tls, ClientPortTls::prepare(&files).context("client_tls")?))
            }
            _ => None,
        };
        if let Some((m, next)) = mesh {
            m.apply(next);
        }
        if let Some((tls, next)) = client {
            tls.apply(next);
        }
        Ok(())
    }
}

/// Start a node inside the current actix system. `init`: a service whose
/// store is empty starts a new cluster (its first start, `ordo run
/// --init`); without it, an empty store means lost state, and the node
/// rebuilds before it votes (`paxos::rebuild`).
pub async fn start(cfg: &Config, handle_signals: bool, init: bool) -> Result<RunningNode> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    let identity = crate::storage::identity::Identity {
        cluster: cfg.cluster.clone(),
        node: cfg.node.clone(),
    };
    identity.claim(&cfg.data_dir)?;
    // Take the client port (and the console's) first: failing here leaves
    // nothing started.
    let client_listener = crate::http::listen(cfg.listen.client)
        .with_context(|| format!("cannot listen for clients on {}", cfg.listen.client))?;
    let console_listener = match cfg.listen.console {
        Some(addr) => Some(
            crate::http::listen(addr)
                .with_context(|| format!("cannot listen for the console on {addr}"))?,
        ),
        None => None,
    };
    let store = FjallStore::open(&cfg.data_dir)
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    let node_id = cfg.node_id();
    let nodes: Vec<(String, String)> = cfg
        .nodes
        .iter()
        .map(|(n, e)| (n.clone(), e.addr.clone()))
        .collect();
    // The client port's TLS first: a bad file stops the start here.
    let client_tls = match cfg.client_tls_files() {
        Some(files) => Some(ClientPortTls::new(&files).context("client_tls")?),
        None => None,
    };
    let mut mesh_cfg = MeshConfig::new(
        &cfg.cluster,
        &cfg.node,
        nodes,
        cfg.listen.peer,
        cfg.mesh_tls(),
    );
    // Checked when the file was read.
    mesh_cfg.peer_sources = cfg
        .listen
        .peer_sources
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let mesh = Mesh::start(mesh_cfg).context("cannot start the peer mesh")?;

    let mut services = Vec::new();
    let mut handles = Vec::new();
    for s in &cfg.services {
        let kv = store
            .group(&s.name)
            .with_context(|| format!("cannot open the tables of service {}", s.name))?;
        let kv_view = kv.clone();
        let tls = if s.backend.starts_with("https://") {
            Some(
                crate::tls::backend::client_config(&cfg.backend_tls_files(s))
                    .with_context(|| format!("service {}: backend_tls", s.name))?,
            )
        } else {
            None
        };
        let backend_cfg = HttpBackendConfig {
            request_timeout: Duration::from_millis(cfg.limits.backend_timeout_ms),
            digest_headers: s.digest_headers.clone(),
            tls,
            adapter: crate::adapter::for_service(s)
                .map_err(|why| anyhow::anyhow!("services.{}: {why}", s.name))?,
            presenting: crate::adapter::Presenting {
                url: s
                    .presented_url
                    .as_ref()
                    .map(|u| u.trim_end_matches('/').to_string()),
                scheme: if cfg.client_tls.is_some() {
                    "https"
                } else {
                    "http"
                },
                stripped: if s.strip_prefix {
                    s.prefix.clone()
                } else {
                    String::new()
                },
            },
            pipeline_depth: s.backend_pipeline,
            // Without a resource key the applier has one update out.
            concurrency: if s.resource_key == crate::config::ResourceKey::Path {
                s.apply_concurrency
            } else {
                1
            },
            ..HttpBackendConfig::default()
        };
        let mut group_cfg = GroupConfig {
            new_cluster: init,
            name: s.name.clone(),
            ..GroupConfig::default()
        };
        let m = &cfg.membership;
        group_cfg.proposer.auto_membership = m.automatic;
        group_cfg.proposer.membership_check = Duration::from_millis(m.check_interval_ms);
        group_cfg.proposer.member_stale_after = Duration::from_millis(m.stale_after_ms);
        group_cfg.proposer.promote_lag_max = m.promote_lag_max_slots;
        group_cfg.proposer.takeover_after = Duration::from_millis(m.takeover_after_ms);
        let retain = cfg.limits.log_retain_slots;
        group_cfg.learner.retain_slots = retain;
        group_cfg.learner.retain_bytes = cfg.limits.log_retain_bytes;
        // The dedupe window lives in the retained log.
        group_cfg.applier.dedupe_window_slots = group_cfg.applier.dedupe_window_slots.min(retain);
        if crate::paxos::state::is_empty(&kv) {
            if init {
                tracing::info!(service = %s.name, "empty store: starting a new cluster (--init)");
            } else {
                tracing::warn!(
                    service = %s.name,
                    "empty store without --init: this node lost its state (or is new to a \
                     running cluster); it rebuilds and does not vote until every other node has \
                     reported and a leadership after that has committed the log"
                );
            }
        }
        let members = cfg.membership(s);
        if let Some(eras) = crate::paxos::state::load_eras(&kv) {
            // The log wins: the file's list only orders preference now.
            let in_log = &eras.latest().voters;
            let (mut a, mut b) = (in_log.clone(), members.voters.clone());
            a.sort();
            b.sort();
            if a != b {
                let names = cfg.node_names();
                let show = |ids: &[crate::paxos::ballot::NodeId]| {
                    ids.iter()
                        .map(|n| names.get(n.0 as usize).copied().unwrap_or("?"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                tracing::warn!(
                    service = %s.name,
                    "the active set in the log ([{}], chosen in slot {}) differs from the file's \
                     services.active ([{}]): the log's is in force; the file's list orders \
                     preference only",
                    show(in_log),
                    eras.latest().chosen_at,
                    show(&members.voters)
                );
            }
        }
        group_cfg.applier.answer_after_agreement = s.answer == crate::config::Answer::Agreed;
        group_cfg.proposer.wait_to_batch = s.batch_wait;
        if s.resource_key == crate::config::ResourceKey::Path {
            let rule = crate::apply::resource::PathRule {
                depth: s.resource_key_depth,
            };
            group_cfg.applier.resources = crate::apply::resource::Resources::by_path(rule);
            group_cfg.applier.concurrency = s.apply_concurrency;
        }
        let backend = Arc::new(
            HttpBackend::new(&s.backend, &cfg.cluster, &s.name, backend_cfg)
                .with_context(|| format!("services.{}.backend", s.name))?,
        );
        let waiters = Waiters::default();
        let resend = gateway::ResendBound::of(&group_cfg.applier, &group_cfg.proposer);
        let handle = start_group(
            node_id,
            members,
            kv,
            mesh.group(&s.name),
            backend.clone(),
            Arc::new(waiters.clone()),
            group_cfg,
        )
        .map_err(|e| anyhow::anyhow!("service {}: {e:?}", s.name))?;
        handles.push(handle.clone());
        services.push(Service {
            name: s.name.clone(),
            prefix: s.prefix.clone(),
            host: s.host.as_ref().map(|h| h.to_ascii_lowercase()),
            snapshot: s.snapshot.clone(),
            handle,
            backend,
            waiters,
            kv: kv_view,
            early_reads: Default::default(),
            resend,
        });
    }
    let admin_token = cfg.admin_token().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut gw = Gateway::new(
        cfg.node.clone(),
        node_id,
        cfg.node_names().iter().map(|n| n.to_string()).collect(),
        services,
        cfg.reads.linearizable,
        ReadLimits {
            max_lag_slots: cfg.limits.max_lag_slots,
            lease: Duration::from_millis(cfg.limits.lease_ms),
            stuck_attempts: STUCK_ATTEMPTS,
        },
        cfg.update_timeout(),
        cfg.limits.max_body_bytes,
        cfg.limits.max_inflight_updates,
    );
    gw.admin_token = admin_token;
    gw.metrics = Some(Arc::new(crate::metrics::NodeMetrics::new(
        &cfg.node,
        gw.services()
            .iter()
            .map(|s| crate::metrics::ServiceSource {
                name: s.name.clone(),
                status: s.handle.status.clone(),
            })
            .collect(),
        Some(Box::new(mesh.handle())),
        gw.read_limits,
    )));
    gw.body_timeout = Duration::from_millis(cfg.limits.body_timeout_ms);
    gw.body_min_rate = cfg.limits.body_min_bytes_per_sec;
    let gw = Arc::new(gw);
    let client_addr = client_listener.local_addr().unwrap_or(cfg.listen.client);
    let server = gateway::server::client_server(
        gw.clone(),
        client_listener,
        client_tls.as_ref().map(|t| Arc::new(t.server_config())),
        cfg.listen.client_workers(),
        handle_signals,
    )
    .with_context(|| format!("cannot serve clients on {}", cfg.listen.client))?;
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    // The console: its pages and the admin API, with the client port's TLS.
    let (console, console_addr) = match console_listener {
        Some(listener) => {
            let console_gw = gw.clone();
            let console = HttpServer::new(move || {
                App::new().configure(gateway::console::configure(console_gw.clone()))
            })
            .workers(1)
            .disable_signals()
            .shutdown_timeout(2);
            let console = match &client_tls {
                Some(tls) => console.listen_rustls_0_23(listener, tls.server_config()),
                None => console.listen(listener),
            }
            .context("cannot serve the console")?;
            let addr = console.addrs().first().copied();
            let console = console.run();
            let handle = console.handle();
            actix_web::rt::spawn(console);
            tracing::info!(node = %cfg.node, console = ?addr, "console started");
            (Some(handle), addr)
        }
        None => (None, None),
    };
    tracing::info!(
        node = %cfg.node,
        client = %client_addr,
        client_tls = client_tls.is_some(),
        peer = %cfg.listen.peer,
        "node started"
    );
    Ok(RunningNode {
        name: cfg.node.clone(),
        client_addr,
        gateway: gw,
        server: handle,
        task,
        mesh: Some(mesh),
        handles,
        client_tls,
        console,
        console_addr,
    })
}
