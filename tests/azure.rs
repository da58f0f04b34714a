//! The `azure-storage` adapter against the official Azure Storage Python
//! SDK (`azure-storage-blob` from PyPI) and Azurite (npm), both installed
//! by `.ci/run` under `~/.cache/ordo` (or where `ORDO_AZURE_PYTHON` and
//! `ORDO_AZURITE` say).
//!
//! - `signatures_match_the_sdk`: the SDK signs requests; ordo's adapter
//!   must accept exactly those signatures and compute the same ones.

mod common;

use ordo::adapter::azure::{Account, AzureStorage, Scheme, ToSign, http_date_now, string_to_sign};
use ordo::adapter::{Adapter, Head};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::PRESENTED_KEY;

/// The Python with the SDK.
pub fn sdk_python() -> PathBuf {
    common::cached_tool(
        "ORDO_AZURE_PYTHON",
        "azure-venv/bin/python",
        "the Azure Storage Python SDK",
        "python3 -m venv ~/.cache/ordo/azure-venv && \
         ~/.cache/ordo/azure-venv/bin/pip install azure-storage-blob",
    )
}

/// A request to sign: method, URL path and query, headers, body length.
struct Case {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    length: u64,
}

fn cases() -> Vec<Case> {
    let date = http_date_now();
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        v.push(("x-ms-date".into(), date.clone()));
        v.push(("x-ms-version".into(), "2021-08-06".into()));
        v
    };
    vec![
        Case {
            method: "PUT",
            target: "/mymovies/films?restype=container".into(),
            headers: h(&[("x-ms-client-request-id", "a1")]),
            length: 0,
        },
        Case {
            method: "PUT",
            target: "/mymovies/films/the%20third%20man.txt".into(),
            headers: h(&[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("x-ms-blob-type", "BlockBlob"),
                ("x-ms-meta-Director", "Reed"),
                ("x-ms-meta-a-b", "1"),
                ("x-ms-meta-ab", "2"),
                ("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ]),
            length: 42,
        },
        Case {
            method: "GET",
            target: "/mymovies/films?restype=container&comp=list&prefix=the%20&maxresults=5".into(),
            headers: h(&[("x-ms-range", "bytes=0-99")]),
            length: 0,
        },
        Case {
            method: "DELETE",
            target: "/mymovies/films/old.txt".into(),
            headers: h(&[
                ("If-Match", "\"0x8D1\""),
                ("x-ms-delete-snapshots", "include"),
            ]),
            length: 0,
        },
    ]
}

#[test]
fn signatures_match_the_sdk() {
    let cases = cases();
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let mut headers = c.headers.clone();
            if c.length > 0 {
                headers.push(("Content-Length".into(), c.length.to_string()));
            }
            serde_json::json!({
                "method": c.method,
                "url": format!("http://127.0.0.1:7700{}", c.target),
                "headers": headers,
                "account": "mymovies",
                "key": PRESENTED_KEY,
            })
        })
        .collect();
    let mut child = Command::new(sdk_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/azure/sdk_sign.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    serde_json::to_writer(child.stdin.take().expect("stdin"), &input).expect("write");
    let out = child.wait_with_output().expect("sdk_sign.py");
    assert!(out.status.success(), "sdk_sign.py failed");
    let signed: Vec<String> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(signed.len(), cases.len());

    let presented = Account::new("mymovies", PRESENTED_KEY).expect("key");
    let adapter = AzureStorage {
        presented: presented.clone(),
        real: Account::new("devstoreaccount1", PRESENTED_KEY).expect("key"),
    };
    for (c, auth) in cases.iter().zip(&signed) {
        let headers: Vec<(String, Vec<u8>)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .chain([("authorization".to_string(), auth.clone().into_bytes())])
            .collect();
        let to_sign = ToSign {
            method: c.method,
            path_and_query: &c.target,
            headers: &headers,
            content_length: Some(c.length),
        };
        // Ordo computes the SDK's very signature...
        let ours = presented.sign(&string_to_sign(Scheme::SharedKey, "mymovies", &to_sign));
        assert_eq!(
            *auth,
            format!("SharedKey mymovies:{ours}"),
            "{} {}",
            c.method,
            c.target
        );
        // ...and the adapter lets the request in, and refuses it with one
        // byte changed.
        let head = Head {
            method: c.method,
            path_and_query: &c.target,
            headers: &headers,
            content_length: Some(c.length),
        };
        assert_eq!(
            adapter.authenticate(&head),
            Ok(()),
            "{} {}",
            c.method,
            c.target
        );
        let tampered = format!("{}x", c.target);
        let refused = adapter.authenticate(&Head {
            path_and_query: &tampered,
            ..head
        });
        assert_eq!(refused.map_err(|r| r.status), Err(403));
    }
}

/// A signature for another account, an old date or another scheme is
/// refused with 403 and a reason.
#[test]
fn what_the_adapter_refuses() {
    let presented = Account::new("mymovies", PRESENTED_KEY).expect("key");
    let adapter = AzureStorage {
        presented: presented.clone(),
        real: presented.clone(),
    };
    let sign_as = |account: &str, date: &str| -> Vec<(String, Vec<u8>)> {
        let mut headers = vec![("x-ms-date".to_string(), date.as_bytes().to_vec())];
        let text = string_to_sign(
            Scheme::SharedKey,
            account,
            &ToSign {
                method: "GET",
                path_and_query: "/mymovies/c",
                headers: &headers,
                content_length: None,
            },
        );
        let auth = format!("SharedKey {account}:{}", presented.sign(&text));
        headers.push(("authorization".into(), auth.into_bytes()));
        headers
    };
    let check = |headers: &[(String, Vec<u8>)]| {
        adapter.authenticate(&Head {
            method: "GET",
            path_and_query: "/mymovies/c",
            headers,
            content_length: None,
        })
    };
    assert_eq!(check(&sign_as("mymovies", &http_date_now())), Ok(()));
    let other = check(&sign_as("devstoreaccount1", &http_date_now())).expect_err("refused");
    assert!(
        other.message.contains("account \"devstoreaccount1\""),
        "{other:?}"
    );
    let old = check(&sign_as("mymovies", "Tue, 01 Dec 2020 04:10:50 GMT")).expect_err("refused");
    assert!(old.message.contains("from this node's clock"), "{old:?}");
    let bearer = check(&[("authorization".into(), b"Bearer abc".to_vec())]).expect_err("refused");
    assert!(bearer.message.contains("SharedKey"), "{bearer:?}");
    // Unsigned: the backend decides (a public container).
    assert_eq!(check(&[]), Ok(()));
    // No node could sign a SAS again, and batches are answered with each
    // backend's own ids.
    for (target, status) in [
        ("/mymovies/c/b?sv=2021-08-06&sig=abc", 403),
        ("/mymovies/c?restype=container&comp=batch", 501),
    ] {
        let refused = adapter
            .authenticate(&Head {
                method: "PUT",
                path_and_query: target,
                headers: &[],
                content_length: None,
            })
            .expect_err(target);
        assert_eq!(refused.status, status, "{target}: {refused:?}");
    }
}

/// Run `tests/azure/client.py` with `args`; its JSON output.
fn sdk(args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(sdk_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/azure/client.py"
        ))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "client.py {:?} failed: {}",
            args.get(1),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The connection string of the presented account at node `i`.
fn through(c: &common::Cluster, i: usize) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName=mymovies;AccountKey={PRESENTED_KEY};\
         BlobEndpoint={}",
        c.nodes[i].url("/mymovies")
    )
}

/// The connection string of the Azurite on `port`.
fn direct(port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={a};AccountKey={};\
         BlobEndpoint=http://127.0.0.1:{port}/{a}",
        common::AZURITE_KEY,
        a = common::AZURITE_ACCOUNT,
    )
}

/// Three ordo nodes, each in front of its own Azurite, driven by the
/// official SDK with the presented account: create a container, upload,
/// list, download, overwrite, copy, delete; every Azurite ends the same;
/// a node is killed and the SDK goes on through another.
#[test]
fn the_sdk_works_through_ordo_and_every_azurite_ends_the_same() {
    let mut c = common::Cluster::start(common::Options {
        backends: common::Backends::Azurite,
        prefix: "/mymovies".into(),
        service_extra: format!(
            "strip_prefix = true\nadapter = \"azure-storage\"\n\
             [services.azure]\npresented_account = \"mymovies\"\npresented_key = \"{PRESENTED_KEY}\"\n\
             account = \"{}\"\nkey = \"{}\"\n",
            common::AZURITE_ACCOUNT,
            common::AZURITE_KEY
        ),
        ..common::Options::default()
    });
    let steps = sdk(&[&through(&c, 0), "steps"]).unwrap_or_else(|e| panic!("{e}\n{}", c.report()));
    assert_eq!(
        steps,
        serde_json::json!({
            "listed": ["a.txt", "b.txt"],
            "downloaded": "alpha",
            "copy_status": "success",
            "listed_after": ["a.txt", "c.txt"],
            "c": "alpha again",
            "containers": ["films"],
        })
    );
    c.wait_caught_up();
    let want = serde_json::json!({"films": {"a.txt": "alpha again", "c.txt": "alpha again"}});
    for i in 0..3 {
        let dump = sdk(&[&direct(c.nodes[i].backend_port), "dump"]).expect("dump");
        assert_eq!(dump, want, "node {i}'s Azurite");
    }
    // The leader goes; the SDK goes on through another node.
    let leader = c.leader();
    c.kill_node(leader);
    let next = (leader + 1) % 3;
    let listed = common::wait_until("an upload through a surviving node", common::WAIT, || {
        sdk(&[&through(&c, next), "put", "d.txt", "delta"])
    });
    assert_eq!(listed, serde_json::json!(["a.txt", "c.txt", "d.txt"]));
    c.restart_node(leader);
    c.wait_caught_up();
    let want = serde_json::json!({
        "films": {"a.txt": "alpha again", "c.txt": "alpha again", "d.txt": "delta"}
    });
    for i in 0..3 {
        let dump = sdk(&[&direct(c.nodes[i].backend_port), "dump"]).expect("dump");
        assert_eq!(dump, want, "node {i}'s Azurite after the kill");
    }
}

/// Issue 16's end-to-end test: two services of different kinds on one
/// three-node cluster (the demo key-value store behind the `http`
/// adapter, and Azure Blob storage behind `azure-storage`), under load on
/// both, and the leader killed and restarted. The key-value history is
/// linearizable and its backends converge; every blob the SDK was told is
/// stored is on every Azurite, and the three Azurites end the same.
#[test]
fn two_services_of_different_kinds_under_load_survive_a_kill() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    let mut c = common::Cluster::start(common::Options {
        azure_too: true,
        ..common::Options::default()
    });
    sdk(&[&through(&c, 0), "create", "films"]).unwrap_or_else(|e| panic!("{e}\n{}", c.report()));
    let load = common::load::Load::start(&c, 3);
    let t0 = load.t0;
    let stop = Arc::new(AtomicBool::new(false));
    let stored_count = Arc::new(AtomicUsize::new(0));
    let urls: Vec<String> = (0..3).map(|i| through(&c, i)).collect();
    let uploads = {
        let stop = stop.clone();
        let stored_count = stored_count.clone();
        std::thread::spawn(move || {
            let mut stored = Vec::new();
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("blob-{k}");
                if sdk(&[&urls[k % 3], "put", &name, &format!("v{k}")]).is_ok() {
                    stored.push(name);
                    stored_count.fetch_add(1, Ordering::SeqCst);
                }
                k += 1;
            }
            (stored, k)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let victim = c.leader();
    eprintln!("azure: kill -9 node {victim} under load on both services");
    load.set_alive(victim, false);
    c.kill_node(victim);
    std::thread::sleep(Duration::from_secs(3));
    c.restart_node(victim);
    load.set_alive(victim, true);
    std::thread::sleep(Duration::from_secs(2));
    // Each upload is a Python process: on a busy machine (CI runs two
    // tests at once) only a few fit in the time above, and those near
    // the kill fail. Go on until three went through, for at most 30 s.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while stored_count.load(Ordering::SeqCst) < 3 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let logs = load.stop();
    let (stored, tried) = uploads.join().expect("uploads");
    eprintln!(
        "azure: {} of {tried} uploads answered as stored",
        stored.len()
    );
    assert!(
        stored.len() >= 3,
        "too few uploads went through: {stored:?}"
    );
    for i in 0..3 {
        c.wait_ready(i);
    }
    common::load::judge(&c, logs, t0);
    let dumps = common::wait_until(
        "the three Azurites to hold the same blobs",
        common::WAIT,
        || {
            let dumps: Vec<serde_json::Value> = (0..3)
                .map(|i| sdk(&[&direct(c.nodes[i].second_port), "dump"]))
                .collect::<Result<_, _>>()?;
            if dumps.iter().all(|d| *d == dumps[0]) {
                Ok(dumps)
            } else {
                Err(format!("{dumps:?}"))
            }
        },
    );
    for name in &stored {
        assert!(
            dumps[0]["films"].get(name).is_some(),
            "{name} was answered as stored but is missing: {}",
            dumps[0]
        );
    }
}
