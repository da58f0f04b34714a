//! TLS on every hop, with real processes: clients over TLS (with and
//! without client certificates, TLS 1.2 through curl), a cluster in
//! front of HTTPS nginx backends, certificates rotated under load by
//! SIGHUP with no failed request, and `ordo check-config` on TLS files.
//! (Pinned peers are in `tests/mesh.rs`, with an in-process mesh.)
//!
//! Needs nginx and curl: `.ci/run` installs them.

mod common;

use common::load::Load;
use common::pki::Pki;
use common::{Backends, Cluster, NODES, Options, WAIT, call, get_fresh, must, wait_until};
use rustls::pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn curl() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("curl").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "curl is not installed, and this test uses it as a real TLS client. \
         .ci/run installs it; locally: sudo apt-get install -y curl"
    );
    Command::new("curl")
}

/// The certificate a TLS server at `addr` presents now, to a client that
/// trusts `roots` and presents `client` (cert, key), if given.
fn presented(
    addr: std::net::SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<CertificateDer<'static>, String> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate")?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    Ok(cert)
}

/// One keep-alive TLS connection to a client port, for requests before
/// and after a reload.
struct KeptAlive(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl KeptAlive {
    fn open(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> KeptAlive {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        KeptAlive(rustls::StreamOwned::new(conn, tcp))
    }

    /// `GET path` on this connection: the status line, or why not.
    fn get(&mut self, path: &str) -> Result<String, String> {
        use std::io::Read as _;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.0
            .write_all(req.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match self.0.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                Ok(_) => return Err("closed".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).map_err(|e| e.to_string())?;
        Ok(head.lines().next().unwrap_or("").to_string())
    }
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    ordo::tls::load_certs(path)
        .expect("a certificate")
        .remove(0)
}

/// A client configuration for the client port: trusts the test PKI and
/// presents its load client's certificate.
fn client_port_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(first_cert(&pki.ca())).expect("CA");
    let certs = ordo::tls::load_certs(&pki.dir.join("load-client.pem")).expect("cert");
    let key = ordo::tls::load_key(&pki.dir.join("load-client.key")).expect("key");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(ordo::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .expect("client cert"),
    )
}

#[test]
fn clients_speak_tls_and_a_client_certificate_is_required_where_configured() {
    let c = Cluster::start(Options {
        client_tls: true,
        require_client_cert: true,
        ..Options::default()
    });
    // The harness itself reached every node over TLS with its client
    // certificate; an update and a linearizable read through others.
    let r = must("PUT", &c.nodes[0].url("/kv/x"), &[], Some(b"\"over tls\""));
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    let r = get_fresh(&c.nodes[2].url("/kv/x"));
    assert_eq!((r.status, r.body.as_str()), (200, "\"over tls\""), "{r:?}");

    let pki = c.pki.as_ref().expect("pki");
    let dir = &pki.dir;
    let url = c.nodes[1].url("/kv/x");
    // A real client, forced to TLS 1.2, with the client certificate.
    let out = curl()
        .args(["-sS", "-v", "--tlsv1.2", "--tls-max", "1.2", "--cacert"])
        .arg(pki.ca())
        .arg("--cert")
        .arg(dir.join("load-client.pem"))
        .arg("--key")
        .arg(dir.join("load-client.key"))
        .args(["-H", "Cache-Control: no-cache", &url])
        .output()
        .expect("curl runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl with a certificate: {err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"over tls\"");
    assert!(err.contains("TLSv1.2"), "not TLS 1.2: {err}");

    // Without a client certificate: refused, no HTTP answer at all.
    let out = curl()
        .args(["-sS", "-v", "--cacert"])
        .arg(pki.ca())
        .arg(&url)
        .output()
        .expect("curl runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "answered without a client certificate: {err}"
    );
    assert!(
        !err.contains("< HTTP/"),
        "an HTTP answer without a certificate: {err}"
    );
    // A client certificate from another CA: refused the same way.
    let other = Pki::new(&c.dir().join("other-pki"));
    let stranger = other.client("stranger");
    let out = curl()
        .args(["-sS", "--cacert"])
        .arg(pki.ca())
        .arg("--cert")
        .arg(&stranger.cert)
        .arg("--key")
        .arg(&stranger.key)
        .arg(&url)
        .output()
        .expect("curl runs");
    assert!(!out.status.success(), "answered a stranger's certificate");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = format!("http://{}/readyz", c.nodes[1].client);
    assert!(call("GET", &plain, &[], None, Duration::from_secs(5)).is_err());

    // The admin CLI over TLS: with the CA and the certificate it works...
    let (ok, text) = c.admin(0, &["status"]);
    assert!(ok && text.contains("\"services\""), "{text}");
    // ...without the certificate it does not.
    let out = Command::new(common::ordo_bin())
        .args(["admin", "--node", &c.nodes[0].url(""), "--ca"])
        .arg(pki.ca())
        .arg("status")
        .output()
        .expect("ordo admin runs");
    assert!(!out.status.success(), "admin without a client certificate");
}

#[test]
fn a_cluster_in_front_of_https_nginx_backends_replicates_every_file() {
    let c = Cluster::start(Options {
        backends: Backends::NginxTls,
        prefix: "/files/".into(),
        ..Options::default()
    });
    let files = [
        ("/files/a.txt", "alpha over https\n"),
        ("/files/deep/b.txt", "beta over https\n"),
        ("/files/c.txt", "gamma over https\n"),
    ];
    for (i, (path, body)) in files.iter().enumerate() {
        let r = must("PUT", &c.nodes[i].url(path), &[], Some(body.as_bytes()));
        assert_eq!(r.status, 201, "PUT {path} at {}: {r:?}", NODES[i]);
    }
    let r = must("DELETE", &c.nodes[1].url("/files/c.txt"), &[], None);
    assert_eq!(r.status, 204, "{r:?}");
    for n in &c.nodes {
        let r = get_fresh(&n.url("/files/a.txt"));
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, files[0].1),
            "at {}",
            n.name
        );
        // A plain read, served by the node's own https backend.
        let url = n.url("/files/deep/b.txt");
        wait_until(&format!("plain GET {url}"), WAIT, || {
            let r = call("GET", &url, &[], None, Duration::from_secs(5))?;
            (r.status == 200 && r.body == files[1].1)
                .then_some(())
                .ok_or(format!("{} {:?}", r.status, r.body))
        });
    }
    c.wait_caught_up();
    let want: BTreeMap<String, Vec<u8>> = [
        ("files/a.txt", files[0].1),
        ("files/deep/b.txt", files[1].1),
    ]
    .into_iter()
    .map(|(p, b)| (p.to_string(), b.as_bytes().to_vec()))
    .collect();
    for n in NODES {
        let got = common::files_under(&common::nginx_root(c.dir(), n));
        assert_eq!(got, want, "the files in {n}'s nginx root");
    }
    // The backends only speak TLS: what reached them came over it.
    let plain = format!("http://127.0.0.1:{}/files/a.txt", c.nodes[0].backend_port);
    let r = call("GET", &plain, &[], None, Duration::from_secs(5)).expect("nginx answers");
    assert_eq!(r.status, 400, "plain HTTP to an ssl port: {r:?}");
}

#[test]
fn certificates_rotated_by_sighup_under_load_fail_no_request() {
    let c = Cluster::start(Options {
        client_tls: true,
        ..Options::default()
    });
    let t0 = Instant::now();
    let load = Load::start(&c, 3);
    std::thread::sleep(Duration::from_secs(2));
    let pki = c.pki.as_ref().expect("pki");
    // A connection opened before the rotation lives on through it.
    let mut kept = KeptAlive::open(c.nodes[0].client, client_port_client(pki));
    assert_eq!(kept.get("/readyz"), Ok("HTTP/1.1 200 OK".to_string()));

    // New certificates for every node, from the same CAs, swapped into
    // the files the configurations name.
    let dir = c.dir().to_path_buf();
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    let mut olds = Vec::new();
    for n in NODES {
        olds.push((
            first_cert(&pki.dir.join(format!("{n}-client-port.pem"))),
            first_cert(&dir.join(format!("certs/{n}.pem"))),
        ));
        pki.server(&format!("{n}-client-port"));
    }
    let out = Command::new(common::ordo_bin())
        .args([
            "certs",
            "--cluster",
            "e2e",
            "--nodes",
            "north,east,west",
            "--ca",
        ])
        .arg(dir.join("certs"))
        .arg("--out")
        .arg(dir.join("certs-new"))
        .output()
        .expect("ordo certs runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in NODES {
        for ext in ["key", "pem"] {
            std::fs::rename(
                dir.join(format!("certs-new/{n}.{ext}")),
                dir.join(format!("certs/{n}.{ext}")),
            )
            .expect("swap in the new file");
        }
    }
    for n in &c.nodes {
        let pid = n.proc.as_ref().expect("running").pid();
        // SAFETY: kill(2) on a child process this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    }

    // Every node presents its new certificates, to clients and to peers.
    let client = client_port_client(pki);
    for (i, n) in c.nodes.iter().enumerate() {
        let want = first_cert(&pki.dir.join(format!("{}-client-port.pem", n.name)));
        assert_ne!(want, olds[i].0);
        wait_until(
            &format!("{}'s client port to present its new certificate", n.name),
            WAIT,
            || {
                (presented(n.client, "localhost", client.clone())? == want)
                    .then_some(())
                    .ok_or("still the old one".to_string())
            },
        );
        let want = first_cert(&dir.join(format!("certs/{}.pem", n.name)));
        assert_ne!(want, olds[i].1);
        // A peer's view: the neighbour's (new) certificate as the client.
        let me = (i + 1) % NODES.len();
        let paths = ordo::mesh::tls::TlsPaths::in_dir(&dir.join("certs"), NODES[me]);
        let trust = ordo::mesh::tls::Trust::load(&paths, &names).expect("trust");
        let key = ordo::tls::files::certified_key(&paths.cert, &paths.key).expect("key");
        let mesh = ordo::mesh::tls::client_config(key, &trust).expect("mesh client");
        wait_until(
            &format!("{}'s peer port to present its new certificate", n.name),
            WAIT,
            || {
                (presented(n.peer, &n.name, mesh.clone())? == want)
                    .then_some(())
                    .ok_or("still the old one".to_string())
            },
        );
    }
    assert_eq!(
        kept.get("/readyz"),
        Ok("HTTP/1.1 200 OK".to_string()),
        "the connection opened before the reload"
    );
    // Updates go on through every node after the mesh reconnected.
    std::thread::sleep(Duration::from_secs(3));
    for n in &c.nodes {
        let r = must("POST", &n.url("/kv/after"), &[], Some(b"1"));
        assert!(r.status == 200 || r.status == 201, "{}: {r:?}", n.name);
    }
    let logs = load.stop();
    let failures: Vec<&String> = logs.iter().flat_map(|l| &l.failures).collect();
    let done: usize = logs.iter().map(|l| l.ops.len()).sum();
    assert!(done > 50, "the load hardly ran: {done} operations");
    assert!(
        failures.is_empty(),
        "{} of the load's requests failed across the rotation: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    common::load::judge(&c, logs, t0);
    for n in &c.nodes {
        let log = std::fs::read_to_string(&n.log).expect("log");
        assert!(log.contains("mesh TLS reloaded"), "{}: {log}", n.name);
    }
}

/// `ordo check-config FILE`: success, and stdout and stderr.
fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(common::ordo_bin())
        .arg("check-config")
        .arg(file)
        .output()
        .expect("ordo check-config runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_config_reads_every_tls_file_and_names_the_key_that_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    ordo::mesh::certs::make_certs("chk", &names, &d.join("certs")).expect("certs");
    let pki = Pki::new(&d.join("pki"));
    pki.server("port");
    pki.server("other");
    std::fs::write(d.join("pki/garbage.pem"), "not a certificate\n").expect("write");
    let north_pin = ordo::tls::pins::Pin::of(&first_cert(&d.join("certs/north.pem"))).1;
    let east_pin = ordo::tls::pins::Pin::of(&first_cert(&d.join("certs/east.pem"))).1;
    let good = format!(
        r#"cluster = "chk"
node = "north"
data_dir = "data"

[listen]
client = "127.0.0.1:1"
peer = "127.0.0.1:2"

[tls]
ca = "certs/ca.pem"
cert = "certs/north.pem"
key = "certs/north.key"

[client_tls]
cert = "pki/port.pem"
key = "pki/port.key"
client_ca = "pki/ca.pem"

[nodes]
north = {{ addr = "127.0.0.1:2", pins = ["{north}"] }}
east = "127.0.0.1:3"
west = "127.0.0.1:4"

[[services]]
name = "kv"
backend = "https://localhost:8443"
backend_tls = {{ ca = "pki/ca.pem" }}
"#,
        north = north_pin.expect("a key pin")
    );
    let file = d.join("node.toml");
    let try_with = |from: &str, to: &str| {
        let text = good.replace(from, to);
        assert_ne!(text, good, "the edit {from:?} did not apply");
        std::fs::write(&file, text).expect("write config");
        check_config(&file)
    };
    std::fs::write(&file, &good).expect("write config");
    let (ok, text) = check_config(&file);
    assert!(ok, "{text}");

    let cases = [
        (
            "cert = \"certs/north.pem\"",
            "cert = \"certs/missing.pem\"",
            "tls.cert: ",
            "cannot read",
        ),
        (
            "key = \"certs/north.key\"",
            "key = \"certs/east.key\"",
            "tls.key: ",
            "is not the key of the certificate",
        ),
        (
            "cert = \"certs/north.pem\"\nkey = \"certs/north.key\"",
            "cert = \"certs/east.pem\"\nkey = \"certs/east.key\"",
            "tls.cert: ",
            "not for this node \"north\"",
        ),
        (
            "key = \"pki/port.key\"",
            "key = \"pki/other.key\"",
            "client_tls.key: ",
            "is not the key of the certificate",
        ),
        (
            "client_ca = \"pki/ca.pem\"",
            "client_ca = \"pki/garbage.pem\"",
            "client_tls.client_ca: ",
            "no CERTIFICATE",
        ),
        (
            "backend_tls = { ca = \"pki/ca.pem\" }",
            "backend_tls = { ca = \"pki/nowhere.pem\" }",
            "services[0].backend_tls.ca: ",
            "cannot read",
        ),
    ];
    for (from, to, key, why) in cases {
        let (ok, text) = try_with(from, to);
        assert!(!ok, "{to}: accepted");
        assert!(text.contains(key) && text.contains(why), "{to}: {text}");
    }
    // This node's certificate must match its own pins.
    let (ok, text) = try_with(
        &north_pin.expect("pin").to_string(),
        &east_pin.expect("pin").to_string(),
    );
    assert!(!ok && text.contains("matches none of the pins"), "{text}");
    let _ = std::io::stderr().flush();
}

/// `ordo fingerprint` prints the pins openssl computes independently: the
/// SHA-256 of the certificate and of its public key, both DER.
#[test]
fn fingerprint_pins_are_what_openssl_computes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let names: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
    ordo::mesh::certs::make_certs("fp", &names, dir.path()).expect("certs");
    let cert = dir.path().join("west.pem");
    let out = Command::new(common::ordo_bin())
        .arg("fingerprint")
        .arg(&cert)
        .output()
        .expect("ordo fingerprint runs");
    assert!(out.status.success());
    let ours = String::from_utf8_lossy(&out.stdout).into_owned();
    let openssl = |args: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(args)
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let c = cert.display();
    let whole = openssl(&format!("openssl x509 -in {c} -noout -fingerprint -sha256"));
    let hex: String = whole
        .trim()
        .rsplit('=')
        .next()
        .expect("a fingerprint")
        .replace(':', "")
        .to_lowercase();
    let key = openssl(&format!(
        "openssl x509 -in {c} -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r"
    ));
    let key_hex = key.split_whitespace().next().expect("a digest");
    assert_eq!(ours, format!("cert-sha256:{hex}\nkey-sha256:{key_hex}\n"));
}
