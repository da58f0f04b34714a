//! `ordo demo`: a live three-node cluster on this machine, each node in
//! front of its own instance of the demo backend, with generated
//! certificates and real configuration files a person can read and reuse.

use crate::config::Config;
use crate::server::{self, RunningNode};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const NODES: [&str; 3] = ["north", "east", "west"];

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Certificates, configuration files and data go here.
    pub dir: PathBuf,
    /// Node i listens for clients on base+i, for peers on base+10+i, and
    /// its backend on base+20+i.
    pub base_port: u16,
}

/// The configuration file of demo node `i`.
pub fn node_config(opts: &DemoOptions, i: usize) -> String {
    let p = opts.base_port;
    let mut nodes = String::new();
    for (j, n) in NODES.iter().enumerate() {
        let _ = writeln!(nodes, "{n} = \"127.0.0.1:{}\"", p + 10 + j as u16);
    }
    format!(
        r#"# ordo demo: node {name}. Run it alone with: ordo run --config {name}.toml
cluster = "demo"
node = "{name}"
data_dir = "data/{name}"

[listen]
client = "127.0.0.1:{client}"
peer = "127.0.0.1:{peer}"
console = "127.0.0.1:{console}"

[tls]
ca = "certs/ca.pem"
cert = "certs/{name}.pem"
key = "certs/{name}.key"

[nodes]
{nodes}
[[services]]
name = "kv"
prefix = "/"
backend = "http://127.0.0.1:{backend}"
active = ["north", "east", "west"]
"#,
        name = NODES[i],
        client = p + i as u16,
        peer = p + 10 + i as u16,
        backend = p + 20 + i as u16,
        console = p + 30 + i as u16,
    )
}

/// Certificates and configuration files. The nodes' stores are kept
/// between runs, as the backends' data files are (`run`): emptied while
/// the backends kept their data, a second run's new log gave its first
/// update an `Idempotency-Key` the backend had recorded for another
/// request, and the user a 422.
pub fn prepare(opts: &DemoOptions) -> Result<Vec<Config>> {
    // A demo already running here would have its files rewritten below:
    // find out first, by its ports.
    for offset in [0u16, 10, 20] {
        for i in 0..NODES.len() as u16 {
            let port = opts.base_port + offset + i;
            std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!("port {port} is taken (another ordo demo? try --base-port)")
            })?;
        }
    }
    let certs = opts.dir.join("certs");
    if !certs.join("ca.pem").exists() {
        let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        crate::mesh::certs::make_certs("demo", &names, &certs)
            .with_context(|| format!("cannot make certificates in {}", certs.display()))?;
    }
    let mut configs = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let path = opts.dir.join(format!("{name}.toml"));
        std::fs::write(&path, node_config(opts, i))
            .with_context(|| format!("cannot write {}", path.display()))?;
        configs.push(Config::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    Ok(configs)
}

/// Run the demo until Ctrl-C.
pub async fn run(opts: DemoOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let configs = prepare(&opts)?;
    let mut backends = Vec::new();
    for (i, name) in NODES.iter().enumerate() {
        let addr = format!("127.0.0.1:{}", opts.base_port + 20 + i as u16);
        // The backends keep their data beside the nodes' stores: a second
        // run of the demo finds both as they were (with the data in
        // memory only, the logs would say "applied" over empty backends).
        let cfg = super::DemoConfig {
            data_file: Some(opts.dir.join(format!("{name}-backend.json"))),
            ..super::DemoConfig::default()
        };
        let b = super::serve(addr.as_str(), cfg)
            .await
            .with_context(|| format!("cannot start the demo backend on {addr}"))?;
        backends.push(b);
    }
    let mut nodes: Vec<RunningNode> = Vec::new();
    for cfg in &configs {
        // The demo's cluster is new the first time; a later run finds
        // its stores and recovers them (`init` only acts on empty ones).
        nodes.push(server::start(cfg, false, true).await?);
    }
    // The tour's first command is an update: print it once a leader is
    // known everywhere, not while the first election is still under way
    // (an update then gets 503). Bounded: the tour comes anyway.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline
        && !nodes.iter().all(|n| {
            n.gateway.services().iter().all(|s| {
                s.handle.status.leader().is_some() && s.handle.status.lease_contact().is_some()
            })
        })
    {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    print_tour(&opts.dir, &nodes, &backends);
    actix_web::rt::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("\nstopping the demo");
    for n in nodes {
        n.stop().await;
    }
    for b in backends {
        b.stop().await;
    }
    Ok(())
}

fn print_tour(dir: &Path, nodes: &[RunningNode], backends: &[super::DemoBackend]) {
    let url = |i: usize| format!("http://{}", nodes[i].client_addr);
    println!("ordo demo: cluster \"demo\", three nodes on this machine\n");
    for (i, n) in nodes.iter().enumerate() {
        println!(
            "  {:<6} {}   (its backend: {}, its console: http://{})",
            n.name,
            url(i),
            backends[i].url(),
            n.console_addr.map_or("-".into(), |a| a.to_string())
        );
    }
    println!(
        "\nWrite through one node, read through another:\n\
         \x20 curl -i -X PUT {0}/kv/hello -H 'content-type: application/json' -d '\"world\"'\n\
         \x20 curl -i {1}/kv/hello\n\
         \x20 curl -i -X POST {2}/kv/log -d '{{\"n\": 1}}'\n\
         \x20 curl -i -H 'Cache-Control: no-cache' {2}/kv/hello     # linearizable read\n\
         \x20 curl -i -X POST {1}/kv/orders -H 'Idempotency-Key: order-17' -d '1'   # twice: applied once\n\
         \nEach node's view (leader, commit and applied index, lag):\n\
         \x20 curl {0}/_ordo/status      (or open it in a browser)\n\
         \x20 curl -i {0}/readyz\n\
         \nConfiguration files, certificates and data are in {3}.\n\
         Ctrl-C stops the demo.",
        url(0),
        url(1),
        url(2),
        dir.display()
    );
}
