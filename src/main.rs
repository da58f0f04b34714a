//! The `ordo` command line.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ordo::sim::scenario::Bugs;
use ordo::sim::{Scenario, World, runner};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ordo",
    version,
    about = "A Paxos availability proxy for REST services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deterministic simulation: run many seeds, or replay one scenario.
    Sim(SimArgs),
    /// Run a live three-node cluster on this machine, with the demo backend.
    Demo {
        /// Certificates, configuration files and data go here.
        #[arg(long, default_value = "ordo-demo")]
        dir: PathBuf,
        /// Clients use ports BASE..BASE+2, peers BASE+10.., backends BASE+20.., consoles BASE+30..
        #[arg(long, default_value_t = 7000, value_parser = clap::value_parser!(u16).range(1024..=65000))]
        base_port: u16,
    },
    /// Run one node from its configuration file.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// First start of a new cluster: a service whose store is empty
        /// starts fresh and votes at once. Without it, an empty store means
        /// this node lost its state, and it rebuilds before it votes. Use
        /// it once, on every node, when the cluster (or a service) is new;
        /// never in a unit file that restarts the node.
        #[arg(long)]
        init: bool,
        /// `text` (default) or `json`: one JSON object per line, with the
        /// node, and the service where there is one, on every line.
        #[arg(long, value_enum, default_value_t = ordo::logs::LogFormat::Text)]
        log_format: ordo::logs::LogFormat,
    },
    /// Validate a node's configuration file; every error names the key.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Run the built-in demo backend (a JSON key-value REST service).
    DemoBackend(DemoBackendArgs),
    /// Make a CA for a new cluster and a certificate for each node, or
    /// (with --ca) new node certificates signed by an existing CA.
    Certs(CertsArgs),
    /// Print a certificate's pins (for `nodes.NAME.pins`): the SHA-256 of
    /// the certificate and of its public key.
    Fingerprint {
        /// A PEM certificate file (the first certificate in it).
        cert: PathBuf,
    },
    /// Act on a running node: show its state, disable or enable it for a
    /// service, clear a divergence after repair.
    Admin(AdminArgs),
    /// Copy a healthy node's backend into another node's (a diverged one,
    /// or one whose backend lost its data): the donor pauses between two
    /// slots and exports; the target imports and applies from the next.
    Reseed(ReseedArgs),
}

#[derive(clap::Args)]
struct ReseedArgs {
    /// The service.
    #[arg(long)]
    service: String,
    /// The donor's client address (a node that serves).
    #[arg(long)]
    from: String,
    /// The target's client address.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    access: AccessArgs,
}

/// How `ordo admin` and `ordo reseed` reach nodes.
#[derive(clap::Args)]
struct AccessArgs {
    /// A file holding the admin token (the nodes' admin.token_file); not
    /// needed on a node's own machine when it has no token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// For https:// nodes: the CA (PEM) that signed their client-port
    /// certificate (default: the system's trust roots).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// For nodes that ask for a client certificate: it, and its key.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

impl AccessArgs {
    fn access(&self) -> Result<ordo::http::admin_client::Access> {
        Ok(ordo::http::admin_client::Access {
            token: read_token(self.token_file.as_ref())?,
            tls: ordo::tls::backend::BackendTlsFiles {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
        })
    }
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The node's client address.
    #[arg(long, default_value = "http://127.0.0.1:7000")]
    node: String,
    #[command(flatten)]
    access: AccessArgs,
    #[command(subcommand)]
    action: AdminAction,
}

#[derive(Subcommand)]
enum AdminAction {
    /// Print the node's /_ordo/status.
    Status,
    /// Refuse reads and updates of SERVICE on this node.
    Disable {
        service: String,
        /// Shown in the status and in every refusal.
        #[arg(long, default_value = "disabled by ordo admin")]
        reason: String,
    },
    /// Serve SERVICE again on this node.
    Enable { service: String },
    /// The backend of SERVICE on this node was repaired: forget the
    /// divergence found so far and serve again.
    ClearDivergence { service: String },
    /// Show the active set of SERVICE, its changes, and (asked of the
    /// leader) what every node last reported.
    Members { service: String },
    /// Make NODE an active member (a voter) of SERVICE, in place of
    /// --replace (default: a voter not heard from, else the least
    /// preferred one). Asked of the leader through --node.
    Promote {
        service: String,
        node: String,
        #[arg(long)]
        replace: Option<String>,
    },
    /// Replace voter NODE of SERVICE by the best backup, and keep NODE
    /// out of the active set until it is promoted again.
    Demote { service: String, node: String },
    /// Hand leadership of SERVICE to voter NODE.
    Transfer { service: String, node: String },
}

#[derive(clap::Args)]
struct DemoBackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Idempotency keys remembered (oldest forgotten first).
    #[arg(long, default_value_t = 100_000)]
    idempotency_keys: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body: usize,
    /// Misbehave on purpose, to see ordo find a diverged replica: every
    /// POST stores its item with a random id of this instance's own.
    #[arg(long)]
    random_ids: bool,
    /// Keep the data (and idempotency records) in this file, so the
    /// backend survives its own restart. Without it, data is in memory.
    #[arg(long)]
    data_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CertsArgs {
    /// The cluster's name (a-z, 0-9, '-').
    #[arg(long)]
    cluster: String,
    /// The node names, comma separated: --nodes north,east,west
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// The folder to write ca.pem, ca.key, NODE.pem and NODE.key into
    /// (created if missing; existing files are never overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Sign with the CA `ordo certs` made in this folder (its ca.pem and
    /// ca.key) instead of making a new one: new certificates for a
    /// rotation, or for nodes added later. Writes only NODE.pem and NODE.key.
    #[arg(long)]
    ca: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SimArgs {
    #[command(subcommand)]
    replay: Option<SimCommand>,
    /// Seeds to run, as A..B (B excluded).
    #[arg(long, default_value = "0..100")]
    seeds: String,
    /// Seeds run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Where failing scenarios are written.
    #[arg(long, default_value = "sim-failures")]
    out: PathBuf,
    /// Start no new seed once this many have failed.
    #[arg(long)]
    max_failures: Option<usize>,
    /// Switch on a deliberate protocol bug (to see the checkers catch it):
    /// skip-phase1, forget-promise, stale-reads, ignore-idempotency-keys,
    /// read-index-without-round, round-not-persisted, promise-before-sync,
    /// prepare-before-sync, lease-without-quorum, lease-beyond-knowledge,
    /// vote-after-amnesia, ignore-digests, digest-names-node,
    /// reconfig-at-once, ignore-resource-order or read-index-chosen-only.
    #[arg(long)]
    bug: Option<String>,
}

#[derive(Subcommand)]
enum SimCommand {
    /// Replay one scenario file exactly.
    Replay {
        file: PathBuf,
        /// Print every event.
        #[arg(long)]
        trace: bool,
    },
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>> {
    let (a, b) = s
        .split_once("..")
        .with_context(|| format!("--seeds {s:?}: expected A..B, e.g. 0..1000"))?;
    let a: u64 = a
        .parse()
        .with_context(|| format!("--seeds: {a:?} is not a number"))?;
    let b: u64 = b
        .parse()
        .with_context(|| format!("--seeds: {b:?} is not a number"))?;
    if a >= b {
        bail!("--seeds {s}: the range is empty");
    }
    Ok(a..b)
}

fn sim_main(args: SimArgs) -> Result<i32> {
    if let Some(SimCommand::Replay { file, trace }) = args.replay {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let sc = Scenario::parse(&text).with_context(|| format!("{}", file.display()))?;
        let report = World::new(sc.clone(), trace).run();
        for line in &report.trace {
            println!("{line}");
        }
        println!(
            "seed {}: {} events, {} ops answered, {} unknown, {} refused, {} plain reads served, {} refused as not ready, {} entries fetched, {} partial promise pages, {} leaders elected over pages, {} changes of the active set, {} syncs, sim time {}, trace {:016x}",
            sc.seed,
            report.events,
            report.ops_ok,
            report.ops_unknown,
            report.ops_refused,
            report.plain_reads,
            report.plain_refused,
            report.fetched_entries,
            report.partial_pages,
            report.leaders_paged,
            report.reconfigurations,
            report.syncs,
            report.sim_time,
            report.trace_hash
        );
        return Ok(match report.failure() {
            None => {
                println!("ok");
                0
            }
            Some(f) => {
                println!("FAILED ({:?}, {}): {}", f.kind, f.check, f.message);
                runner::exit_code(f.kind)
            }
        });
    }
    let seeds = parse_seeds(&args.seeds)?;
    let mut bugs = Bugs::default();
    if let Some(b) = args.bug.as_deref() {
        if let Err(e) = bugs.set(b) {
            bail!("--bug: {e}");
        }
    }
    let tweak = move |sc: &mut Scenario| sc.bugs = bugs;
    let summary = runner::run_seeds_until(
        seeds,
        args.jobs,
        Some(&args.out),
        true,
        args.max_failures.unwrap_or(usize::MAX),
        &tweak,
    );
    println!(
        "{} seeds, {} failed, {} client ops answered in {:.1}s: {:.0} simulated ops/s, {:.0} events/s",
        summary.seeds,
        summary.failed.len(),
        summary.ops,
        summary.wall_secs,
        summary.ops_per_sec(),
        summary.events as f64 / summary.wall_secs.max(1e-9)
    );
    println!(
        "{} leaderships won, {} of them after paged promises; {} changes of the active set",
        summary.leader_changes, summary.leaders_paged, summary.reconfigurations
    );
    if summary.checker_unknown > 0 {
        println!(
            "{} seeds' histories were too large for the checker's budget (not judged)",
            summary.checker_unknown
        );
    }
    for f in summary.failed.iter().take(10) {
        let first = f.message.lines().next().unwrap_or("");
        println!(
            "seed {} failed ({:?}, {}): {first}",
            f.seed, f.kind, f.check
        );
        if let Some(file) = &f.file {
            println!("  REPRODUCE WITH: ordo sim replay {}", file.display());
        }
    }
    Ok(summary
        .failed
        .first()
        .map_or(0, |f| runner::exit_code(f.kind)))
}

fn check_config(file: &std::path::Path) -> Result<i32> {
    let cfg = ordo::config::Config::load(file).map_err(|e| anyhow::anyhow!("config: {e}"))?;
    cfg.check_files()
        .map_err(|e| anyhow::anyhow!("config: {e} (in {})", file.display()))?;
    println!(
        "{}: ok: node {} of cluster {} ({} nodes, {} services)",
        file.display(),
        cfg.node,
        cfg.cluster,
        cfg.nodes.len(),
        cfg.services.len()
    );
    Ok(0)
}

fn demo_backend_main(args: DemoBackendArgs) -> Result<i32> {
    let cfg = ordo::demo::DemoConfig {
        max_body: args.max_body,
        idempotency_keys: args.idempotency_keys,
        handle_signals: true,
        random_ids: args.random_ids,
        data_file: args.data_file.clone(),
        ..Default::default()
    };
    actix::System::new().block_on(async move {
        let backend = ordo::demo::serve(args.listen.as_str(), cfg)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        println!("demo backend listening on {}", backend.url());
        backend.wait().await?;
        Ok(0)
    })
}

fn certs_main(args: CertsArgs) -> Result<i32> {
    if let Some(ca) = &args.ca {
        ordo::mesh::certs::issue(ca, &args.cluster, &args.nodes, &args.out)?;
        println!(
            "wrote certificates for {} signed by the CA in {} into {}",
            args.nodes.join(", "),
            ca.display(),
            args.out.display()
        );
        for n in &args.nodes {
            println!("  {n}.pem, {n}.key: node {n}'s new certificate and key");
        }
        return Ok(0);
    }
    ordo::mesh::certs::make_certs(&args.cluster, &args.nodes, &args.out)?;
    println!(
        "wrote a CA for cluster {:?} and certificates for {} into {}",
        args.cluster,
        args.nodes.join(", "),
        args.out.display()
    );
    println!("  ca.pem: the cluster CA, for every node");
    println!("  ca.key: the CA's key, only needed to make certificates: keep it offline");
    for n in &args.nodes {
        println!("  {n}.pem, {n}.key: node {n}'s certificate and key, for that node only");
    }
    Ok(0)
}

fn read_token(file: Option<&PathBuf>) -> Result<Option<String>> {
    match file {
        Some(f) => Ok(Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?
                .trim_end()
                .to_string(),
        )),
        None => Ok(None),
    }
}

fn reseed_main(args: ReseedArgs) -> Result<i32> {
    let access = args.access.access()?;
    let url = |base: &str, what: &str| {
        format!(
            "{}/_ordo/admin/services/{}/{what}",
            base.trim_end_matches('/'),
            args.service
        )
    };
    let export = url(&args.from, "export");
    let (status, body) =
        ordo::http::admin_client::call_bytes("POST", &export, &access, Default::default())?;
    if status != 200 {
        bail!(
            "{export}: {status}: {}",
            String::from_utf8_lossy(&body).trim_end()
        );
    }
    let slot = ordo::apply::reseed::Envelope::decode(&body)
        .map_err(|e| anyhow::anyhow!("{export}: {e}"))?
        .slot;
    println!(
        "exported {} bytes at slot {slot} from {}",
        body.len(),
        args.from
    );
    let import = url(&args.to, "import");
    let (status, answer) = ordo::http::admin_client::call_bytes("POST", &import, &access, body)?;
    let answer = String::from_utf8_lossy(&answer);
    if status != 200 {
        bail!("{import}: {status}: {}", answer.trim_end());
    }
    println!("{}", answer.trim_end());
    Ok(0)
}

fn admin_main(args: AdminArgs) -> Result<i32> {
    let access = args.access.access()?;
    let base = args.node.trim_end_matches('/');
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let (method, url) = match &args.action {
        AdminAction::Status => ("GET", format!("{base}/_ordo/status")),
        AdminAction::Disable { service, reason } => (
            "POST",
            format!(
                "{base}/_ordo/admin/services/{}/disable?reason={}",
                enc(service),
                enc(reason)
            ),
        ),
        AdminAction::Enable { service } => (
            "POST",
            format!("{base}/_ordo/admin/services/{}/enable", enc(service)),
        ),
        AdminAction::ClearDivergence { service } => (
            "POST",
            format!(
                "{base}/_ordo/admin/services/{}/clear-divergence",
                enc(service)
            ),
        ),
        AdminAction::Members { service } => (
            "GET",
            format!("{base}/_ordo/admin/services/{}/members", enc(service)),
        ),
        AdminAction::Promote {
            service,
            node,
            replace,
        } => (
            "POST",
            format!(
                "{base}/_ordo/admin/services/{}/members/promote?node={}{}",
                enc(service),
                enc(node),
                replace
                    .as_deref()
                    .map(|r| format!("&replace={}", enc(r)))
                    .unwrap_or_default()
            ),
        ),
        AdminAction::Demote { service, node } => (
            "POST",
            format!(
                "{base}/_ordo/admin/services/{}/members/demote?node={}",
                enc(service),
                enc(node)
            ),
        ),
        AdminAction::Transfer { service, node } => (
            "POST",
            format!(
                "{base}/_ordo/admin/services/{}/members/transfer?node={}",
                enc(service),
                enc(node)
            ),
        ),
    };
    let (status, body) = ordo::http::admin_client::call(method, &url, &access)?;
    println!("{}", body.trim_end());
    if !(200..300).contains(&status) {
        bail!("{method} {url}: {status}");
    }
    Ok(0)
}

fn init_logs(default: &str) {
    ordo::logs::init(default, ordo::logs::LogFormat::Text, None);
}

fn fingerprint_main(cert: &std::path::Path) -> Result<i32> {
    let certs = ordo::tls::load_certs(cert)?;
    let (whole, key) = ordo::tls::pins::Pin::of(&certs[0]);
    println!("{whole}");
    if let Some(key) = key {
        println!("{key}");
    }
    Ok(0)
}

fn run_node(file: &std::path::Path, init: bool, log_format: ordo::logs::LogFormat) -> Result<i32> {
    let cfg = ordo::config::Config::load(file).map_err(|e| anyhow::anyhow!("config: {e}"))?;
    ordo::logs::init("ordo=info", log_format, Some(&cfg.node));
    let file = file.to_path_buf();
    actix::System::new().block_on(async move {
        // Before the node starts: SIGHUP's default action ends the process.
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot handle SIGHUP")?;
        let node = ordo::server::start(&cfg, true, init).await?;
        let tls = node.tls();
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                reload(&tls, &cfg, &file);
            }
        });
        node.wait().await?;
        Ok(0)
    })
}

/// SIGHUP: read the configuration file again and apply its TLS settings
/// (mesh and client port); say what else changed and needs a restart. A
/// file with an error changes nothing.
fn reload(tls: &ordo::server::TlsReloader, running: &ordo::config::Config, file: &std::path::Path) {
    tracing::info!(file = %file.display(), "SIGHUP: reloading TLS settings");
    let next = match ordo::config::Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("reload refused, nothing changed: config: {e}");
            return;
        }
    };
    match tls.reload(&next) {
        Ok(()) => tracing::info!("TLS settings reloaded"),
        Err(e) => {
            tracing::error!("reload refused, nothing changed: {e:#}");
            return;
        }
    }
    let ignored = running.needs_restart(&next);
    if !ignored.is_empty() {
        tracing::warn!(
            "the file also changed {}: those take effect at the next restart",
            ignored.join("; ")
        );
    }
}

/// jemalloc, not glibc's malloc: under scripts/bench's write load a
/// node spent about a fifth of its CPU in glibc's malloc and free
/// (perf), and writes went from 8,300 to 11,000 a second with jemalloc.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (`_RJEM_MALLOC_CONF` in the environment overrides
/// them). Two arenas for a node's handful of busy threads; freed pages
/// go back to the system after a second, from a thread of jemalloc's
/// own, so that RSS follows the load down (its default keeps them ten
/// seconds, and only returns them when the process allocates).
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8] =
    b"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => {
            // Role assertions are reported per seed; keep stderr readable.
            std::panic::set_hook(Box::new(|_| {}));
            sim_main(args)
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Run {
            config,
            init,
            log_format,
        } => run_node(&config, init, log_format),
        Command::Demo { dir, base_port } => {
            init_logs("ordo=error");
            let opts = ordo::demo::cluster::DemoOptions { dir, base_port };
            actix::System::new()
                .block_on(ordo::demo::cluster::run(opts))
                .map(|()| 0)
        }
        Command::DemoBackend(args) => demo_backend_main(args),
        Command::Certs(args) => certs_main(args),
        Command::Fingerprint { cert } => fingerprint_main(&cert),
        Command::Admin(args) => admin_main(args),
        Command::Reseed(args) => reseed_main(args),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ordo: {e:#}");
            std::process::exit(2);
        }
    }
}
