//! The HTTP backend seam over real sockets on 127.0.0.1: the demo
//! backend's REST semantics and idempotency, `HttpBackend` against it and
//! against tiny hand-written servers (over TLS too), and a three-node
//! cluster applying HTTP updates to three demo backends.

mod support;
use support::{Collector, fast_config};
#[path = "common/pki.rs"]
mod pki;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ordo::demo::{DemoBackend, DemoConfig, serve};
use ordo::http::client::{BACKEND_STATUS, TOO_LARGE_STATUS};
use ordo::http::{HttpBackend, HttpBackendConfig, ProxiedRequest, StoredResponse};
use ordo::node::{Backend, LoopbackTransport, NodeHandle, Submit, start_group};
use ordo::paxos::ballot::{NodeId, Update, UpdateId};
use ordo::paxos::command::BackendReply;
use ordo::paxos::command::ClientOutcome;
use ordo::paxos::membership::Membership;
use ordo::storage::fjall_kv::FjallStore;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------
// A plain client for talking to the demo backend directly.

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn replayed(&self) -> bool {
        self.headers.contains_key("idempotent-replayed")
    }
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = client.request(req).await.expect("demo backend answers");
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn demo() -> DemoBackend {
    serve("127.0.0.1:0", DemoConfig::default()).await.unwrap()
}

#[actix::test]
async fn demo_backend_rest_semantics() {
    let d = demo().await;
    let url = |k: &str| format!("{}/kv/{k}", d.url());

    let a = call("GET", &url("a"), &[], b"").await;
    assert_eq!(a.status, 404);
    assert!(a.json()["error"].as_str().unwrap().contains("no key"));

    let a = call("PUT", &url("a"), &[], br#"{"n": 1}"#).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.json(), json!({"n": 1}));
    assert_eq!(a.headers["content-type"], "application/json");
    let a = call("PUT", &url("a"), &[], b"2").await;
    assert_eq!(a.status, 200);
    let a = call("GET", &url("a"), &[], b"").await;
    assert_eq!((a.status, a.json()), (200, json!(2)));

    // Append: creates the array, then grows it, answering the array.
    let a = call("POST", &url("l"), &[], b"\"x\"").await;
    assert_eq!((a.status, a.json()), (201, json!(["x"])));
    let a = call("POST", &url("l"), &[], br#"{"y": true}"#).await;
    assert_eq!((a.status, a.json()), (200, json!(["x", {"y": true}])));
    // Appending to a non-array is a conflict, and changes nothing.
    let a = call("POST", &url("a"), &[], b"3").await;
    assert_eq!(a.status, 409);

    let a = call("GET", &format!("{}/kv/", d.url()), &[], b"").await;
    assert_eq!((a.status, a.json()), (200, json!(["a", "l"])));

    let a = call("DELETE", &url("a"), &[], b"").await;
    assert_eq!(a.status, 204);
    assert!(a.body.is_empty());
    let a = call("DELETE", &url("a"), &[], b"").await;
    assert_eq!(a.status, 404);

    // Bad JSON: 400 naming the problem; nothing stored.
    let a = call("PUT", &url("b"), &[], b"{\"n\": ").await;
    assert_eq!(a.status, 400);
    let msg = a.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("not valid JSON") && msg.contains("EOF"),
        "{msg}"
    );
    let a = call("POST", &url("b"), &[], b"nope").await;
    assert_eq!(a.status, 400);

    // Over the 1 MiB limit: 413; at the limit: accepted.
    let mut big = vec![b' '; (1 << 20) - 2];
    big.insert(0, b'1');
    let a = call("PUT", &url("big"), &[], &big).await;
    assert_eq!(a.status, 201);
    big.push(b' ');
    big.push(b' ');
    let a = call("PUT", &url("big"), &[], &big).await;
    assert_eq!(a.status, 413);
    assert!(a.json()["error"].as_str().unwrap().contains("larger than"));

    let a = call("PATCH", &url("l"), &[], b"1").await;
    assert_eq!(a.status, 405);

    assert_eq!(
        d.data(),
        BTreeMap::from([
            ("big".to_string(), json!(1)),
            ("l".to_string(), json!(["x", {"y": true}])),
        ])
    );
    assert_eq!(d.applied(), 6);
    d.stop().await;
}

#[actix::test]
async fn demo_backend_honours_idempotency_keys() {
    let d = serve(
        "127.0.0.1:0",
        DemoConfig {
            idempotency_keys: 3,
            ..DemoConfig::default()
        },
    )
    .await
    .unwrap();
    let url = format!("{}/kv/l", d.url());
    let k1 = [("Idempotency-Key", "c/s/1.0")];

    let first = call("POST", &url, &k1, b"1").await;
    assert_eq!((first.status, first.json()), (201, json!([1])));
    assert!(!first.replayed());
    let again = call("POST", &url, &k1, b"1").await;
    assert_eq!((again.status, again.json()), (201, json!([1])));
    assert!(again.replayed());
    assert_eq!(d.applied(), 1);
    assert_eq!(d.data()["l"], json!([1]));

    // The same key for another request is refused, not applied.
    let other = call("POST", &url, &k1, b"2").await;
    assert_eq!(other.status, 422);
    assert_eq!(d.data()["l"], json!([1]));

    // A failed update's answer is kept too: a repeat gets the same 400.
    let bad = [("Idempotency-Key", "c/s/2.0")];
    assert_eq!(call("PUT", &url, &bad, b"{").await.status, 400);
    let a = call("PUT", &url, &bad, b"{").await;
    assert_eq!(a.status, 400);
    assert!(a.replayed());

    // Only the last 3 keys are kept: c/s/1.0 is forgotten after 3 more.
    for i in 3..6 {
        let k = format!("c/s/{i}.0");
        call("POST", &url, &[("Idempotency-Key", &k)], b"0").await;
    }
    let late = call("POST", &url, &k1, b"1").await;
    assert!(!late.replayed());
    assert_eq!(d.data()["l"], json!([1, 0, 0, 0, 1]));
    assert_eq!(d.replays(), 2);
    d.stop().await;
}

/// The issue's report: the demo backend keeps its data in memory, so a
/// restarted one answered 404 for keys the others had. With a data file
/// it comes back with its data and its idempotency records.
#[actix::test]
async fn demo_backend_with_a_data_file_survives_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DemoConfig {
        data_file: Some(dir.path().join("north.json")),
        ..DemoConfig::default()
    };
    let d = serve("127.0.0.1:0", cfg.clone()).await.unwrap();
    let url = format!("{}/kv/l", d.url());
    let key = [("Idempotency-Key", "c/s/1.0")];
    assert_eq!(call("POST", &url, &key, b"1").await.status, 201);
    d.stop().await;

    let d = serve("127.0.0.1:0", cfg).await.unwrap();
    let url = format!("{}/kv/l", d.url());
    let got = call("GET", &url, &[], b"").await;
    assert_eq!((got.status, got.json()), (200, json!([1])));
    let again = call("POST", &url, &key, b"1").await;
    assert!(again.replayed(), "the idempotency record survived too");
    assert_eq!(d.data()["l"], json!([1]));
    d.stop().await;
}

/// `GET /_snapshot` on one instance and `PUT /_snapshot` on another make
/// the second a copy of the first, idempotency records included.
#[actix::test]
async fn demo_backend_snapshot_copies_one_instance_into_another() {
    let a = demo().await;
    let b = demo().await;
    let key = [("Idempotency-Key", "c/s/9.0")];
    call("PUT", &format!("{}/kv/x", a.url()), &key, b"7").await;
    call("PUT", &format!("{}/kv/y", b.url()), &[], b"1").await;
    let snap = call("GET", &format!("{}/_snapshot", a.url()), &[], b"").await;
    assert_eq!(snap.status, 200);
    let put = call("PUT", &format!("{}/_snapshot", b.url()), &[], &snap.body).await;
    assert_eq!(put.status, 204, "{:?}", put.body);
    assert_eq!(b.data(), a.data(), "y is gone, x is there");
    let again = call("PUT", &format!("{}/kv/x", b.url()), &key, b"7").await;
    assert!(again.replayed());
    let bad = call("PUT", &format!("{}/_snapshot", b.url()), &[], b"{}x").await;
    assert_eq!(bad.status, 400);
    a.stop().await;
    b.stop().await;
}

// ---------------------------------------------------------------------
// HttpBackend.

fn update(payload: Bytes) -> Update {
    Update {
        id: UpdateId {
            origin: NodeId(0),
            boot: 1,
            seq: 1,
        },
        key: None,
        payload,
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> ProxiedRequest {
    ProxiedRequest {
        method: method.to_string(),
        path_and_query: path.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: Bytes::copy_from_slice(body),
    }
}

fn backend_with(url: &str, cfg: HttpBackendConfig) -> HttpBackend {
    HttpBackend::new(url, "test", "kv", cfg).unwrap()
}

fn backend(url: &str) -> HttpBackend {
    backend_with(url, HttpBackendConfig::default())
}

/// `cfg` as it is, and with its updates pipelined: every test of the
/// applier's hop runs both ways.
fn both(cfg: HttpBackendConfig) -> [HttpBackendConfig; 2] {
    let piped = HttpBackendConfig {
        pipeline_depth: 8,
        concurrency: 8,
        ..cfg.clone()
    };
    [cfg, piped]
}

/// A final response, decoded.
fn response(reply: BackendReply) -> (u16, StoredResponse) {
    match reply {
        BackendReply::Response { status, body, .. } => {
            (status, StoredResponse::decode(&body).unwrap())
        }
        other => panic!("expected a response, got {other:?}"),
    }
}

fn unreachable(reply: BackendReply) -> String {
    match reply {
        BackendReply::Unreachable { reason } => reason,
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[actix::test]
async fn http_backend_applies_once_per_slot_and_index() {
    for cfg in both(HttpBackendConfig::default()) {
        applies_once(cfg).await;
    }
}

async fn applies_once(cfg: HttpBackendConfig) {
    let d = demo().await;
    let b = backend_with(&d.url(), cfg);
    let append = request(
        "POST",
        "/kv/list",
        &[("Content-Type", "application/json")],
        b"\"a\"",
    )
    .encode();

    let (status, first) = response(b.call(5, 0, update(append.clone())).await);
    assert_eq!(status, 201);
    assert_eq!(first.body, Bytes::from_static(b"[\"a\"]"));
    assert_eq!(first.header("content-type"), Some(&b"application/json"[..]));
    // Content-Length is recomputed by whoever sends the answer on.
    assert_eq!(first.header("content-length"), None);

    // The same (slot, index) again, as after a crash: not applied again,
    // the same answer.
    let (status, again) = response(b.call(5, 0, update(append.clone())).await);
    assert_eq!(status, 201);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some(&b"true"[..]));
    assert_eq!(d.applied(), 1);

    // Another index of the same slot is another update.
    let (status, next) = response(b.call(5, 1, update(append.clone())).await);
    assert_eq!(status, 200);
    assert_eq!(next.body, Bytes::from_static(b"[\"a\",\"a\"]"));
    assert_eq!(d.data()["list"], json!(["a", "a"]));

    // The backend's deterministic refusal is a final answer, passed on.
    let bad = request("PUT", "/kv/x", &[], b"{").encode();
    let (status, r) = response(b.call(6, 0, update(bad)).await);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("not valid JSON"));

    // A payload that is no request: a final 400 from ordo, no call.
    let (status, r) = response(b.call(7, 0, update(Bytes::from_static(b"junk"))).await);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("not a request"));
    assert_eq!(d.applied(), 2);
    d.stop().await;
}

#[actix::test]
async fn http_backend_oversize_response_is_a_final_507() {
    for cfg in both(HttpBackendConfig {
        max_response_bytes: 10,
        ..HttpBackendConfig::default()
    }) {
        let d = demo().await;
        let b = backend_with(&d.url(), cfg);
        let put = request("PUT", "/kv/k", &[], b"\"0123456789abcdef\"").encode();
        let (status, r) = response(b.call(1, 0, update(put)).await);
        assert_eq!(status, TOO_LARGE_STATUS);
        assert_eq!(r.header(BACKEND_STATUS), Some(&b"201"[..]));
        assert!(String::from_utf8_lossy(&r.body).contains("larger than the limit of 10 bytes"));
        // It was applied all the same.
        assert_eq!(d.data()["k"], json!("0123456789abcdef"));
        d.stop().await;
    }
}

/// The request headers received, as `[[name, value], ...]`.
async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    HttpResponse::Ok().json(json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

#[actix::test]
async fn http_backend_sends_end_to_end_headers_and_the_idempotency_key() {
    let server = HttpServer::new(|| App::new().default_service(web::to(echo)))
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    for cfg in both(HttpBackendConfig::default()) {
        sends_headers(&backend_with(&format!("http://{addr}/base/"), cfg), addr).await;
    }
    handle.stop(false).await;
}

async fn sends_headers(b: &HttpBackend, addr: SocketAddr) {
    let req = request(
        "PATCH",
        "/items/7?x=1&y=two",
        &[
            ("Host", "client.example"),
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "hop only"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic eA=="),
            ("Proxy-Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "999"),
            ("Idempotency-Key", "the client's own"),
            ("Authorization", "Bearer t"),
            ("Content-Type", "text/plain"),
            ("X-Multi", "1"),
            ("X-Multi", "2"),
        ],
        b"hello",
    );
    let (status, r) = response(b.call(42, 3, update(req.encode())).await);
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(seen["method"], "PATCH");
    assert_eq!(seen["uri"], "/base/items/7?x=1&y=two");
    assert_eq!(seen["body"], "hello");
    let headers: Vec<(String, String)> = serde_json::from_value(seen["headers"].clone()).unwrap();
    let get = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get("idempotency-key"), ["test/kv/42.3"]);
    assert_eq!(get("authorization"), ["Bearer t"]);
    assert_eq!(get("content-type"), ["text/plain"]);
    let mut multi = get("x-multi");
    multi.sort();
    assert_eq!(multi, ["1", "2"]);
    assert_eq!(get("host"), [addr.to_string().as_str()]);
    assert_eq!(get("content-length"), ["5"]);
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert!(get(gone).is_empty(), "{gone} was forwarded: {headers:?}");
    }
}

/// A one-shot raw HTTP/1.1 server: answers each of `n` connections with
/// `response` after reading the request head and body.
fn raw_server(n: usize, response: &'static [u8], delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            read_request(&mut s);
            std::thread::sleep(delay);
            let _ = s.write_all(response);
            let _ = s.flush();
        }
    });
    addr
}

fn read_request(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

#[actix::test]
async fn http_backend_keeps_end_to_end_response_headers_only() {
    const RESPONSE: &[u8] = b"HTTP/1.1 201 Created\r\n\
        Content-Type: text/plain\r\n\
        Connection: X-Private, close\r\n\
        Keep-Alive: timeout=5\r\n\
        X-Private: hop only\r\n\
        Proxy-Authenticate: Basic\r\n\
        Trailer: X-Checksum\r\n\
        Set-Cookie: a=1\r\n\
        Set-Cookie: b=2\r\n\
        ETag: \"v1\"\r\n\
        Transfer-Encoding: chunked\r\n\
        \r\n\
        5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let addr = raw_server(4, RESPONSE, Duration::ZERO);
    for cfg in both(HttpBackendConfig::default()) {
        keeps_end_to_end(addr, cfg).await;
    }
}

async fn keeps_end_to_end(addr: SocketAddr, cfg: HttpBackendConfig) {
    let b = backend_with(&format!("http://{addr}"), cfg.clone());
    let put = request("PUT", "/x", &[], b"1").encode();
    let (status, r) = response(b.call(1, 0, update(put.clone())).await);
    assert_eq!(status, 201);
    assert_eq!(r.body, Bytes::from_static(b"hello world"));
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["content-type", "etag", "set-cookie", "set-cookie"]);
    let cookies: Vec<&[u8]> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_slice())
        .collect();
    assert_eq!(cookies, [&b"a=1"[..], &b"b=2"[..]]);

    // A chunked body (no Content-Length) over the limit: the final 507.
    let small = backend_with(
        &format!("http://{addr}"),
        HttpBackendConfig {
            max_response_bytes: 4,
            ..cfg
        },
    );
    let (status, r) = response(small.call(1, 0, update(put)).await);
    assert_eq!(status, TOO_LARGE_STATUS);
    assert_eq!(r.header(BACKEND_STATUS), Some(&b"201"[..]));
}

#[actix::test]
async fn http_backend_unreachable_on_closed_port_and_timeout() {
    for cfg in both(HttpBackendConfig::default()) {
        unreachable_and_timeouts(cfg).await;
    }
}

async fn unreachable_and_timeouts(cfg: HttpBackendConfig) {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let b = backend_with(&format!("http://{addr}"), cfg.clone());
    let put = request("PUT", "/kv/a", &[], b"1").encode();
    let reason = unreachable(b.call(1, 0, update(put.clone())).await);
    assert!(reason.to_lowercase().contains("connect"), "{reason}");

    // A server that answers too late.
    let slow = raw_server(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Duration::from_secs(2),
    );
    let b = backend_with(
        &format!("http://{slow}"),
        HttpBackendConfig {
            request_timeout: Duration::from_millis(300),
            ..cfg.clone()
        },
    );
    let started = Instant::now();
    let reason = unreachable(b.call(1, 0, update(put.clone())).await);
    assert!(reason.contains("within"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A server that sends its head, then stalls in the body: the total
    // timeout covers the body too.
    let stalls = raw_server(
        1,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
        Duration::ZERO,
    );
    let b = backend_with(
        &format!("http://{stalls}"),
        HttpBackendConfig {
            request_timeout: Duration::from_millis(300),
            ..cfg.clone()
        },
    );
    let reason = unreachable(b.call(1, 0, update(put)).await);
    assert!(
        reason.contains("within") || reason.contains("cut short"),
        "{reason}"
    );
}

// ---------------------------------------------------------------------
// The whole path: three nodes, three demo backends.

static NEXT_SEQ: AtomicU64 = AtomicU64::new(1);

fn submit(
    nodes: &[NodeHandle],
    sent: &mut BTreeMap<UpdateId, (usize, ProxiedRequest)>,
    origin: usize,
    req: ProxiedRequest,
) {
    let id = UpdateId {
        origin: NodeId(origin as u16),
        boot: 1,
        seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
    };
    nodes[origin].proposer.do_send(Submit {
        updates: vec![Update {
            id,
            key: None,
            payload: req.encode(),
        }],
    });
    sent.insert(id, (origin, req));
}

/// Wait for an answer to every update sent. A refused update was never
/// proposed: it is sent again as a new update.
async fn settle(
    nodes: &[NodeHandle],
    collector: &Collector,
    sent: &mut BTreeMap<UpdateId, (usize, ProxiedRequest)>,
    answers: &mut BTreeMap<UpdateId, (u16, StoredResponse)>,
) {
    wait_for!(format!("{} answers", sent.len()), {
        let outcomes = std::mem::take(&mut *collector.seen.lock().unwrap());
        for o in outcomes {
            match o {
                ClientOutcome::Answer {
                    id, status, body, ..
                } => {
                    let r = StoredResponse::decode(&body).unwrap();
                    assert!(answers.insert(id, (status, r)).is_none(), "answered twice");
                }
                ClientOutcome::Refused { ids, .. } => {
                    for id in ids {
                        if let Some((origin, req)) = sent.remove(&id) {
                            submit(nodes, sent, origin, req);
                        }
                    }
                }
                _ => {}
            }
        }
        sent.keys().all(|id| answers.contains_key(id))
    });
}

#[actix::test]
async fn three_nodes_apply_http_updates_to_their_demo_backends() {
    let transport = LoopbackTransport::new();
    let collector = Collector::default();
    let mut demos = Vec::new();
    let mut dirs = Vec::new();
    let mut stores = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3u16 {
        let d = demo().await;
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let http = Arc::new(backend(&d.url()));
        let h = start_group(
            NodeId(i),
            Membership::all_voting(3),
            store.group("kv").unwrap(),
            transport.clone(),
            http,
            Arc::new(collector.clone()),
            fast_config(),
        )
        .unwrap();
        demos.push(d);
        dirs.push(dir);
        stores.push(store);
        nodes.push(h);
    }
    wait_for!("a leader known by all", {
        let mut leaders = Vec::new();
        for h in &nodes {
            leaders.push(h.leader().await.and_then(|(_, l)| l));
        }
        leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0])
    });

    // What each submitted update is: (origin node, request).
    let mut sent: BTreeMap<UpdateId, (usize, ProxiedRequest)> = BTreeMap::new();
    let json_ct = [("Content-Type", "application/json")];
    submit(
        &nodes,
        &mut sent,
        0,
        request("PUT", "/kv/config", &json_ct, br#"{"v": 1}"#),
    );
    for n in 0..12 {
        let body = format!("{n}");
        let req = request("POST", "/kv/log", &json_ct, body.as_bytes());
        submit(&nodes, &mut sent, n % 3, req);
    }
    submit(
        &nodes,
        &mut sent,
        1,
        request("PUT", "/kv/bad", &json_ct, b"{not json"),
    );
    submit(
        &nodes,
        &mut sent,
        2,
        request("PUT", "/kv/gone", &json_ct, b"true"),
    );
    let mut answers = BTreeMap::new();
    settle(&nodes, &collector, &mut sent, &mut answers).await;
    // After the PUT was answered, so it applies after it everywhere.
    submit(
        &nodes,
        &mut sent,
        0,
        request("DELETE", "/kv/gone", &[], b""),
    );
    settle(&nodes, &collector, &mut sent, &mut answers).await;

    // Every node applied every slot; every demo backend holds the same.
    wait_for!("every node applied the whole log", {
        let mut done = true;
        let commit = nodes[0].commit().await;
        for h in &nodes {
            done &= commit.is_some() && h.applied().await == commit && h.commit().await == commit;
        }
        done
    });
    let data = demos[0].data();
    for d in &demos {
        assert_eq!(d.data(), data);
        assert_eq!(d.applied(), demos[0].applied());
    }
    assert_eq!(data["config"], json!({"v": 1}));
    assert!(!data.contains_key("bad") && !data.contains_key("gone"));
    let log: Vec<i64> = data["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut sorted = log.clone();
    sorted.sort();
    assert_eq!(sorted, (0..12).collect::<Vec<i64>>());

    // Each origin got its own backend's answer to its update.
    for (id, (origin, req)) in &sent {
        let (status, r) = &answers[id];
        assert_eq!(id.origin, NodeId(*origin as u16));
        match (req.method.as_str(), req.path_and_query.as_str()) {
            ("PUT", "/kv/config") => {
                assert_eq!(*status, 201);
                assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
                assert_eq!(
                    serde_json::from_slice::<Value>(&r.body).unwrap(),
                    json!({"v": 1})
                );
            }
            ("POST", "/kv/log") => {
                assert!(*status == 201 || *status == 200, "{status}");
                let mine: i64 = std::str::from_utf8(&req.body).unwrap().parse().unwrap();
                let got: Vec<i64> = serde_json::from_slice(&r.body).unwrap();
                // The array up to and including this append, in log order.
                let at = log.iter().position(|v| *v == mine).unwrap();
                assert_eq!(got, log[..=at]);
                assert_eq!(*status == 201, at == 0);
            }
            ("PUT", "/kv/bad") => {
                assert_eq!(*status, 400);
                assert!(String::from_utf8_lossy(&r.body).contains("not valid JSON"));
            }
            ("PUT", "/kv/gone") => assert_eq!(*status, 201),
            ("DELETE", "/kv/gone") => {
                assert_eq!(*status, 204);
                assert!(r.body.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for h in &nodes {
        h.stop();
    }
    for d in demos {
        d.stop().await;
    }
}

#[actix::test]
async fn the_applier_retries_until_the_backend_comes_up() {
    // A port to start the backend on later.
    let reserved = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);

    let collector = Collector::default();
    let dir = tempfile::tempdir().unwrap();
    let store = FjallStore::open(dir.path()).unwrap();
    let mut cfg = fast_config();
    cfg.applier.retry_max = Duration::from_millis(100);
    let node = start_group(
        NodeId(0),
        Membership::all_voting(1),
        store.group("kv").unwrap(),
        LoopbackTransport::new(),
        Arc::new(backend(&format!("http://{addr}"))),
        Arc::new(collector.clone()),
        cfg,
    )
    .unwrap();
    let nodes = [node];
    wait_for!("the single node to lead", {
        nodes[0].leader().await == Some((true, Some(NodeId(0))))
    });
    let mut sent = BTreeMap::new();
    submit(&nodes, &mut sent, 0, request("POST", "/kv/l", &[], b"1"));
    wait_for!("the update to be chosen", {
        nodes[0].commit().await.unwrap_or(0) >= 2
    });
    actix::clock::sleep(Duration::from_millis(300)).await;
    assert!(
        collector.seen.lock().unwrap().is_empty(),
        "answered without a backend"
    );
    let applied = nodes[0].applied().await.unwrap();
    let commit = nodes[0].commit().await.unwrap();
    assert!(
        applied < commit,
        "applied {applied} of {commit} without a backend"
    );

    let d = serve(addr, DemoConfig::default()).await.unwrap();
    let mut answers = BTreeMap::new();
    settle(&nodes, &collector, &mut sent, &mut answers).await;
    let (status, r) = answers.into_values().next().unwrap();
    assert_eq!((status, &r.body[..]), (201, &b"[1]"[..]));
    assert_eq!(d.applied(), 1);
    nodes[0].stop();
    d.stop().await;
}

// ---------------------------------------------------------------------
// https backends

/// Records the SNI of every handshake, then resolves the one certificate.
#[derive(Debug)]
struct SniRecorder {
    seen: std::sync::Mutex<Vec<Option<String>>>,
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for SniRecorder {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.seen
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_string));
        Some(self.key.clone())
    }
}

/// An echo server on 127.0.0.1 over TLS with a certificate for
/// `localhost` only, from `pki`; with `client_ca`, clients must present a
/// certificate it signed.
fn tls_echo(
    pki: &pki::Pki,
    client_ca: bool,
) -> (SocketAddr, Arc<SniRecorder>, actix_web::dev::ServerHandle) {
    let issued = pki.server_for(if client_ca { "echo-mtls" } else { "echo" }, &["localhost"]);
    let key = ordo::tls::files::certified_key(&issued.cert, &issued.key).unwrap();
    let sni = Arc::new(SniRecorder {
        seen: Default::default(),
        key,
    });
    let builder = rustls::ServerConfig::builder_with_provider(ordo::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_ca {
        let roots = ordo::tls::files::roots(&pki.ca()).unwrap();
        builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots,
                ordo::tls::provider(),
            )
            .build()
            .unwrap(),
        )
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_cert_resolver(sni.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(|| App::new().default_service(web::to(echo)))
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, config)
        .unwrap()
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (addr, sni, handle)
}

fn https_backend(
    url: &str,
    files: ordo::tls::backend::BackendTlsFiles,
    piped: bool,
) -> HttpBackend {
    let [plain, pipelined] = both(HttpBackendConfig {
        tls: Some(ordo::tls::backend::client_config(&files).unwrap()),
        ..HttpBackendConfig::default()
    });
    backend_with(url, if piped { pipelined } else { plain })
}

/// An https backend: SNI is the URL's host, the certificate is checked
/// against it and against the configured CA (never only "some CA"), and
/// a client certificate is presented where the backend asks for one.
#[actix::test]
async fn https_backends_get_sni_and_a_checked_certificate() {
    for piped in [false, true] {
        https_checks(piped).await;
    }
}

async fn https_checks(piped: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let (addr, sni, server) = tls_echo(&pki, false);
    let trust_pki = ordo::tls::backend::BackendTlsFiles {
        ca: Some(pki.ca()),
        ..Default::default()
    };
    let put = request("PUT", "/kv/a", &[], b"over https").encode();

    // By name: SNI sent, certificate valid for it.
    let url = format!("https://localhost:{}", addr.port());
    let b = https_backend(&url, trust_pki.clone(), piped);
    let (status, answer) = response(b.call(1, 0, update(put.clone())).await);
    assert_eq!(status, 200);
    let echoed: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(echoed["body"], "over https");
    assert_eq!(
        *sni.seen.lock().unwrap(),
        vec![Some("localhost".to_string())]
    );
    // A plain read goes over a connection of its own, checked the same.
    let read = b.read(request("GET", "/kv/a?x=1", &[], b"")).await.unwrap();
    let echoed: Value = serde_json::from_slice(&read.bytes().await.unwrap()).unwrap();
    assert_eq!(
        (&echoed["method"], &echoed["uri"]),
        (&json!("GET"), &json!("/kv/a?x=1"))
    );
    assert_eq!(sni.seen.lock().unwrap().len(), 2);
    assert_eq!(sni.seen.lock().unwrap()[1].as_deref(), Some("localhost"));

    // The same server by an address its certificate is not for: the
    // name check stays on.
    let wrong_name = format!("https://127.0.0.1:{}", addr.port());
    let refused = https_backend(&wrong_name, trust_pki.clone(), piped)
        .read(request("GET", "/kv/a", &[], b""))
        .await;
    assert!(
        matches!(&refused, Err(why) if why.contains("certificate not valid for name")),
        "{:?}",
        refused.map(|r| r.status)
    );
    let reason = unreachable(
        https_backend(&wrong_name, trust_pki.clone(), piped)
            .call(2, 0, update(put.clone()))
            .await,
    );
    assert!(
        reason.contains("certificate not valid for name"),
        "{reason}"
    );
    // Another CA does not trust it.
    let other = pki::Pki::new(&dir.path().join("other"));
    let reason = unreachable(
        https_backend(
            &url,
            ordo::tls::backend::BackendTlsFiles {
                ca: Some(other.ca()),
                ..Default::default()
            },
            piped,
        )
        .call(3, 0, update(put.clone()))
        .await,
    );
    assert!(reason.contains("invalid peer certificate"), "{reason}");
    server.stop(false).await;

    // A backend that wants a client certificate.
    let (addr, _, server) = tls_echo(&pki, true);
    let url = format!("https://localhost:{}", addr.port());
    let reason = unreachable(
        https_backend(&url, trust_pki.clone(), piped)
            .call(4, 0, update(put.clone()))
            .await,
    );
    assert!(reason.contains("CertificateRequired"), "{reason}");
    let client = pki.client("ordo-node");
    let with_cert = ordo::tls::backend::BackendTlsFiles {
        ca: Some(pki.ca()),
        cert: Some(client.cert.clone()),
        key: Some(client.key.clone()),
    };
    let (status, _) = response(
        https_backend(&url, with_cert, piped)
            .call(5, 0, update(put))
            .await,
    );
    assert_eq!(status, 200);
    server.stop(false).await;
}

/// A keep-alive server on its own threads that answers every request
/// with the client's port: which connection carried it.
fn peer_port_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let port = s.peer_addr().map(|a| a.port()).unwrap_or(0).to_string();
                loop {
                    read_request(&mut s);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{port}",
                        port.len()
                    );
                    if s.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads never ride on a connection another thread opened: the applier's
/// connections are driven by the actor thread, and a read on one of them
/// would wait while that thread works (here: while it is blocked).
#[actix::test]
async fn http_backend_reads_use_connections_of_their_own_thread() {
    let addr = peer_port_server();
    let cfg = HttpBackendConfig {
        request_timeout: Duration::from_secs(2),
        ..HttpBackendConfig::default()
    };
    let b = Arc::new(backend_with(&format!("http://{addr}"), cfg));
    let payload = request("PUT", "/kv/a", &[], b"{}").encode();
    let (status, applied) = response(b.call(1, 0, update(payload)).await);
    assert_eq!(status, 200);
    let reader = b.clone();
    // This thread (the "actor thread") blocks until the read is done.
    let read = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let resp = reader.read(request("GET", "/kv/a", &[], b"")).await?;
            let body = resp.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(body)
        })
    })
    .join()
    .unwrap();
    let read = read.expect("the read is answered while the applier's thread is busy");
    assert_ne!(read, applied.body, "the read took the applier's connection");
}

// ---------------------------------------------------------------------
// Pipelining (`backend_pipeline`).

/// A raw HTTP/1.1 server that answers each request with its path. It
/// holds its answers until `batch` requests have arrived on a
/// connection, then answers them in one write; after `per_conn` answers
/// (the last saying `Connection: close`) it closes the connection,
/// whatever it has read beyond them. Answered paths are recorded.
fn scripted_server(
    batch: usize,
    per_conn: usize,
) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = answered.clone();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut pending: Vec<String> = Vec::new();
                let mut budget = per_conn;
                let mut chunk = [0u8; 4096];
                loop {
                    // Every whole request in the buffer.
                    loop {
                        let mut headers = [httparse::EMPTY_HEADER; 32];
                        let mut req = httparse::Request::new(&mut headers);
                        let Ok(httparse::Status::Complete(n)) = req.parse(&buf) else {
                            break;
                        };
                        let len = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                            .unwrap_or(0usize);
                        if buf.len() < n + len {
                            break;
                        }
                        pending.push(req.path.unwrap_or("").to_string());
                        buf.drain(..n + len);
                    }
                    if pending.len() >= batch.min(budget) {
                        let mut out = Vec::new();
                        for path in pending.drain(..) {
                            budget -= 1;
                            let close = if budget == 0 {
                                "connection: close\r\n"
                            } else {
                                ""
                            };
                            out.extend_from_slice(
                                format!(
                                    "HTTP/1.1 200 OK\r\n{close}content-length: {}\r\n\r\n{path}",
                                    path.len()
                                )
                                .as_bytes(),
                            );
                            seen.lock().unwrap().push(path);
                            if budget == 0 {
                                break;
                            }
                        }
                        if s.write_all(&out).is_err() || budget == 0 {
                            return;
                        }
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, answered)
}

fn piped(depth: usize, concurrency: usize) -> HttpBackendConfig {
    HttpBackendConfig {
        pipeline_depth: depth,
        concurrency,
        ..HttpBackendConfig::default()
    }
}

/// The answer's body of each of `n` PUTs to `/p{i}`, sent at once.
async fn put_all(b: &HttpBackend, n: u32) -> Vec<String> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let put = request("PUT", &format!("/p{i}"), &[], b"1").encode();
            tokio::spawn(b.call(1, i, update(put)))
        })
        .collect();
    let mut bodies = Vec::new();
    for call in calls {
        let reply = call.await.unwrap();
        bodies.push(String::from_utf8(response(reply).1.body.to_vec()).unwrap());
    }
    bodies
}

/// Several updates go out on one connection before the first is
/// answered, and each gets its own answer back. The server answers
/// nothing until five requests are in: one at a time, it would wait
/// forever.
#[actix::test]
async fn pipelined_updates_leave_together_and_each_gets_its_own_answer() {
    let (addr, answered) = scripted_server(5, usize::MAX);
    let b = backend_with(&format!("http://{addr}"), piped(5, 5));
    let bodies = tokio::time::timeout(Duration::from_secs(5), put_all(&b, 5))
        .await
        .expect("five requests in flight on one connection");
    let paths: Vec<String> = (0..5).map(|i| format!("/p{i}")).collect();
    assert_eq!(bodies, paths);
    assert_eq!(answered.lock().unwrap().len(), 5);
}

/// A backend that closes after a few answers (as nginx does after
/// `keepalive_requests`) has read nothing after the one that said so:
/// the rest go again on a new connection, and every update is applied
/// exactly once.
#[actix::test]
async fn requests_behind_a_closing_answer_are_sent_again_and_applied_once() {
    let (addr, answered) = scripted_server(1, 3);
    let b = backend_with(&format!("http://{addr}"), piped(8, 8));
    let bodies = put_all(&b, 8).await;
    let paths: Vec<String> = (0..8).map(|i| format!("/p{i}")).collect();
    assert_eq!(bodies, paths);
    let mut applied = answered.lock().unwrap().clone();
    applied.sort();
    let mut want = paths.clone();
    want.sort();
    assert_eq!(applied, want, "an update applied twice or not at all");
}

/// Without the pipeline's own connections the same backend is reached
/// through the pool: the first test's server never answers it.
#[actix::test]
async fn without_pipelining_one_request_waits_alone() {
    let (addr, _) = scripted_server(2, usize::MAX);
    let b = backend_with(
        &format!("http://{addr}"),
        HttpBackendConfig {
            request_timeout: Duration::from_millis(300),
            ..HttpBackendConfig::default()
        },
    );
    let put = request("PUT", "/p0", &[], b"1").encode();
    let reason = unreachable(b.call(1, 0, update(put)).await);
    assert!(reason.contains("within"), "{reason}");
}

/// Bytes the backend sends while nothing is asked (here the 408 some
/// servers send when they drop an idle connection) are nobody's answer:
/// the next update gets its own, on a new connection.
#[actix::test]
async fn an_answer_nobody_asked_for_is_not_the_next_updates() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut first, _)) = listener.accept() else {
            return;
        };
        read_request(&mut first);
        let _ = first.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n/p0");
        std::thread::sleep(Duration::from_millis(100));
        let _ = first.write_all(
            b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        );
        drop(first);
        let Ok((mut second, _)) = listener.accept() else {
            return;
        };
        read_request(&mut second);
        let _ = second.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n/p1");
    });
    let b = backend_with(&format!("http://{addr}"), piped(4, 4));
    let put = |i: u32| update(request("PUT", &format!("/p{i}"), &[], b"1").encode());
    let (status, first) = response(b.call(1, 0, put(0)).await);
    assert_eq!((status, &first.body[..]), (200, &b"/p0"[..]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, second) = response(b.call(1, 1, put(1)).await);
    assert_eq!((status, &second.body[..]), (200, &b"/p1"[..]));
}

// ---------------------------------------------------------------------
// Plain reads, on connections of the reading thread (`http::reads`).

/// What a [`read_server`] does for one request: the writes it makes (a
/// short pause between them), and whether it then closes the connection.
type Script = fn(&str, usize) -> (Vec<Vec<u8>>, bool);

/// A raw HTTP/1.1 server for reads: connections are numbered from 1, and
/// each request (a head, no body) is answered as `script` says for its
/// target and its connection's number.
fn read_server(script: Script) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut conns = 0;
        while let Ok((mut s, _)) = listener.accept() {
            conns += 1;
            let conn = conns;
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut headers);
                    if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                        let target = format!("{} {}", req.method.unwrap(), req.path.unwrap());
                        buf.drain(..n);
                        let (writes, close) = script(&target, conn);
                        for (i, w) in writes.iter().enumerate() {
                            if i > 0 {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            if s.write_all(w).is_err() {
                                return;
                            }
                        }
                        if close {
                            return;
                        }
                        continue;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

fn text(status: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn reads_script(target: &str, conn: usize) -> (Vec<Vec<u8>>, bool) {
    let s = |v: &str| v.as_bytes().to_vec();
    match target {
        "GET /conn" => (vec![text("200 OK", "", &conn.to_string())], false),
        "GET /len" => (
            vec![
                s("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe"),
                s("llo"),
            ],
            false,
        ),
        "HEAD /len" => (
            vec![s("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")],
            false,
        ),
        "GET /chunked" => (
            vec![
                s("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"),
                s("lo\r\n6;x=1\r\n world\r"),
                s("\n0\r\nx-sum: 1\r\n\r\n"),
            ],
            false,
        ),
        "GET /early" => (
            vec![
                s("HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"),
                text("200 OK", "", "ok"),
            ],
            false,
        ),
        "GET /big" => (vec![text("200 OK", "", &"x".repeat(300_000))], false),
        "GET /close" => (vec![s("HTTP/1.1 200 OK\r\n\r\nuntil the "), s("end")], true),
        // Keep-alive by its head, closed all the same once answered.
        "GET /gone" => (vec![text("200 OK", "", &conn.to_string())], true),
        "GET /stall" => (
            vec![s("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")],
            false,
        ),
        "GET /silent" => (vec![], false),
        "GET /empty" => (vec![text("200 OK", "", "")], false),
        // Bytes nobody asked for, after a whole answer.
        "GET /extra" => (
            vec![
                text("200 OK", "", "ok"),
                s("HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n"),
            ],
            false,
        ),
        _ => (vec![text("404 Not Found", "", "")], false),
    }
}

async fn read_text(b: &HttpBackend, method: &str, path: &str) -> Result<(u16, String), String> {
    let resp = b.read(request(method, path, &[], b"")).await?;
    let status = resp.status;
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[actix::test]
async fn reads_stream_every_framing_and_keep_their_connection_when_they_can() {
    let b = backend(&format!("http://{}", read_server(reads_script)));
    let ok = |body: &str| Ok((200, body.to_string()));
    assert_eq!(read_text(&b, "GET", "/len").await, ok("hello"));
    assert_eq!(read_text(&b, "GET", "/chunked").await, ok("hello world"));
    assert_eq!(read_text(&b, "HEAD", "/len").await, ok(""));
    assert_eq!(read_text(&b, "GET", "/early").await, ok("ok"));
    let big = read_text(&b, "GET", "/big").await.unwrap();
    assert_eq!(big.1.len(), 300_000);
    // All of those on the first connection, one after the other.
    assert_eq!(read_text(&b, "GET", "/conn").await, ok("1"));
    // A body that ends with the connection; the next read opens another.
    assert_eq!(read_text(&b, "GET", "/close").await, ok("until the end"));
    assert_eq!(read_text(&b, "GET", "/conn").await, ok("2"));
}

/// A backend that closes an idle keep-alive connection: the read that
/// finds it closed goes again on a new connection, not back as a 502.
#[actix::test]
async fn a_read_on_a_connection_the_backend_closed_while_idle_goes_again() {
    let b = backend(&format!("http://{}", read_server(reads_script)));
    assert_eq!(read_text(&b, "GET", "/gone").await, Ok((200, "1".into())));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(read_text(&b, "GET", "/conn").await, Ok((200, "2".into())));
}

/// Every wait is bounded: a backend that never answers, and one that
/// stalls in a body. A connection left in the middle of an answer is not
/// used again.
#[actix::test]
async fn a_read_waits_for_its_answer_no_longer_than_the_request_timeout() {
    let cfg = HttpBackendConfig {
        request_timeout: Duration::from_millis(300),
        ..HttpBackendConfig::default()
    };
    let b = backend_with(&format!("http://{}", read_server(reads_script)), cfg);
    let started = Instant::now();
    let silent = read_text(&b, "GET", "/silent").await;
    assert!(
        matches!(&silent, Err(why) if why.contains("no response within")),
        "{silent:?}"
    );
    let stalled = read_text(&b, "GET", "/stall").await;
    assert!(
        matches!(&stalled, Err(why) if why.contains("no more of the answer within")),
        "{stalled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(read_text(&b, "GET", "/conn").await, Ok((200, "3".into())));
}

/// An answer with no body is never polled by actix-web: its connection
/// goes back to the pool at once, not closed (which would cost a connect,
/// and a TLS handshake, per such read).
#[actix::test]
async fn an_answer_without_a_body_gives_its_connection_back_unread() {
    let b = backend(&format!("http://{}", read_server(reads_script)));
    let empty = b.read(request("GET", "/empty", &[], b"")).await.unwrap();
    assert_eq!((empty.status, empty.length), (200, Some(0)));
    drop(empty);
    assert_eq!(read_text(&b, "GET", "/conn").await, Ok((200, "1".into())));
}

/// Bytes that come on an idle connection are nobody's answer: the next
/// read does not take them for its own, it goes on another connection.
#[actix::test]
async fn bytes_on_an_idle_connection_are_not_the_next_reads_answer() {
    let b = backend(&format!("http://{}", read_server(reads_script)));
    assert_eq!(read_text(&b, "GET", "/extra").await, Ok((200, "ok".into())));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(read_text(&b, "GET", "/conn").await, Ok((200, "2".into())));
}
