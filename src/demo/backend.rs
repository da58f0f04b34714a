//! The built-in demo backend: a small REST key-value store of JSON
//! values, in memory, that honours `Idempotency-Key` the way ordo asks
//! backend authors to.
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `PUT /kv/{key}` (JSON body) | store the value | 201 created / 200 replaced, the value |
//! | `GET /kv/{key}` | | 200 the value / 404 |
//! | `DELETE /kv/{key}` | remove it | 204 / 404 |
//! | `POST /kv/{key}` (JSON body) | append to the key's array (created if missing) | 201 created / 200 appended, the whole array; 409 if the key holds no array |
//! | `GET /kv/` | | 200, the keys as a JSON array |
//!
//! A body that is not JSON gets 400 naming the problem; a body over the
//! limit (1 MiB) gets 413.
//!
//! | `GET /_snapshot` | | 200, the whole state (data and idempotency records) as JSON |
//! | `PUT /_snapshot` (a snapshot, at most 256 MiB) | replace the whole state with it | 204 |
//!
//! With `data_file`, the whole state is written to that file (atomically,
//! with fsync) after every change and read back at start, so the backend
//! survives its own restart. It rewrites the whole file each time: fine
//! for a demo, not for a large data set.
//!
//! **Idempotency.** An update (PUT, POST, DELETE) carrying an
//! `Idempotency-Key` already seen is not applied again: it gets the first
//! answer to that key, marked `Idempotent-Replayed: true`. A key reused
//! for a different request (method, path or body) gets 422. The last
//! `idempotency_keys` keys are kept (FIFO), so a repeat must come within
//! that many updates; ordo repeats only the updates around a crash.

use super::snapshot::{Remembered, Snapshot};
use actix_web::dev::ServerHandle;
use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};

/// The largest snapshot `PUT /_snapshot` takes.
pub const SNAPSHOT_BYTES_MAX: usize = 256 << 20;

/// The answer marker on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";

#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Largest request body accepted (413 above).
    pub max_body: usize,
    /// Idempotency keys remembered, oldest forgotten first.
    pub idempotency_keys: usize,
    /// actix worker threads.
    pub workers: usize,
    /// Stop on SIGINT/SIGTERM (for the `ordo demo-backend` process).
    pub handle_signals: bool,
    /// Misbehave on purpose: every POST stores its item with a random
    /// id of this instance's own, as a backend that makes up ids (or lock
    /// tokens, or ETags) does. Replicas of it diverge; ordo notices.
    pub random_ids: bool,
    /// Keep the state in this file (see the module comment).
    pub data_file: Option<std::path::PathBuf>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            max_body: 1 << 20,
            idempotency_keys: 100_000,
            workers: 1,
            handle_signals: false,
            random_ids: false,
            data_file: None,
        }
    }
}

/// One answer, as kept for replays.
#[derive(Clone, Debug)]
struct Reply {
    status: u16,
    body: Bytes,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            body: Bytes::from(value.to_string()),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": message.into() }))
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: Bytes::new(),
        }
    }

    fn to_http(&self, replayed: bool) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = HttpResponse::build(status);
        if replayed {
            resp.insert_header((REPLAYED, "true"));
        }
        if self.body.is_empty() {
            resp.finish()
        } else {
            resp.content_type("application/json")
                .body(self.body.clone())
        }
    }
}

#[derive(Default)]
struct Store {
    data: BTreeMap<String, Value>,
    /// Idempotency key -> (request fingerprint, first answer).
    seen: HashMap<String, (u64, Reply)>,
    order: VecDeque<String>,
    cap: usize,
    /// Updates applied (changes made), replays excluded.
    applied: u64,
    replays: u64,
    /// See `DemoConfig::random_ids`.
    random_ids: Option<crate::rng::Rng>,
}

impl Store {
    fn snapshot(&self) -> Snapshot {
        let keys = self
            .order
            .iter()
            .filter_map(|k| {
                self.seen.get(k).map(|(fingerprint, reply)| Remembered {
                    key: k.clone(),
                    fingerprint: *fingerprint,
                    status: reply.status,
                    body: String::from_utf8_lossy(&reply.body).into_owned(),
                })
            })
            .collect();
        Snapshot {
            data: self.data.clone(),
            keys,
        }
    }

    fn restore(&mut self, s: Snapshot) {
        self.data = s.data;
        self.seen.clear();
        self.order.clear();
        for r in s.keys {
            let reply = Reply {
                status: r.status,
                body: Bytes::from(r.body.into_bytes()),
            };
            self.remember(r.key, r.fingerprint, reply);
        }
    }

    fn remember(&mut self, key: String, fingerprint: u64, reply: Reply) {
        if self.cap == 0 {
            return;
        }
        while self.order.len() >= self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.seen.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.seen.insert(key, (fingerprint, reply));
    }

    /// Apply one update (`body` already within the limit).
    fn update(&mut self, method: &str, key: &str, body: &[u8]) -> Reply {
        let parse = || {
            serde_json::from_slice::<Value>(body)
                .map_err(|e| Reply::error(400, format!("the body is not valid JSON: {e}")))
        };
        match method {
            "PUT" => {
                let value = match parse() {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                self.applied += 1;
                let reply = Reply::json(0, &value);
                let created = self.data.insert(key.to_string(), value).is_none();
                Reply {
                    status: if created { 201 } else { 200 },
                    ..reply
                }
            }
            "POST" => {
                let value = match parse() {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let value = match self.random_ids.as_mut() {
                    Some(rng) => json!({ "id": format!("{:016x}", rng.next_u64()), "item": value }),
                    None => value,
                };
                match self.data.get_mut(key) {
                    None => {
                        self.applied += 1;
                        let array = Value::Array(vec![value]);
                        let reply = Reply::json(201, &array);
                        self.data.insert(key.to_string(), array);
                        reply
                    }
                    Some(Value::Array(items)) => {
                        self.applied += 1;
                        items.push(value);
                        Reply::json(200, &Value::Array(items.clone()))
                    }
                    Some(_) => Reply::error(409, format!("key {key:?} does not hold an array")),
                }
            }
            "DELETE" => match self.data.remove(key) {
                Some(_) => {
                    self.applied += 1;
                    Reply::empty(204)
                }
                None => Reply::error(404, format!("no key {key:?}")),
            },
            other => Reply::error(405, format!("method {other} is not allowed here")),
        }
    }
}

struct Shared {
    store: Mutex<Store>,
    max_body: usize,
    data_file: Option<std::path::PathBuf>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // Every change is one map operation: a panic cannot leave the
        // store half-changed, so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a change, with the lock held (so files are written in the
    /// order of the changes): keep the state in the data file. The answer
    /// waits for it; if it fails, the client gets 500 (and ordo retries
    /// the update, which the idempotency record then answers).
    fn persist(&self, store: &Store) -> Result<(), String> {
        let Some(path) = &self.data_file else {
            return Ok(());
        };
        store.snapshot().save(path)
    }
}

async fn export(shared: web::Data<Shared>) -> HttpResponse {
    let snapshot = shared.lock().snapshot();
    HttpResponse::Ok().json(snapshot)
}

async fn import(body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let snapshot: Snapshot = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return Reply::error(400, format!("the body is not a snapshot: {e}")).to_http(false);
        }
    };
    let mut store = shared.lock();
    store.restore(snapshot);
    if let Err(why) = shared.persist(&store) {
        return Reply::error(500, why).to_http(false);
    }
    HttpResponse::NoContent().finish()
}

fn fingerprint(method: &str, path: &str, body: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    (method, path, body).hash(&mut h);
    h.finish()
}

async fn list(shared: web::Data<Shared>) -> HttpResponse {
    let keys: Vec<String> = shared.lock().data.keys().cloned().collect();
    Reply::json(200, &json!(keys)).to_http(false)
}

async fn one(req: HttpRequest, payload: web::Payload, shared: web::Data<Shared>) -> HttpResponse {
    let key = req.match_info().get("key").unwrap_or("").to_string();
    let method = req.method().as_str().to_string();
    if method == "GET" || method == "HEAD" {
        let store = shared.lock();
        return match store.data.get(&key) {
            Some(v) => Reply::json(200, v),
            None => Reply::error(404, format!("no key {key:?}")),
        }
        .to_http(false);
    }
    if !matches!(method.as_str(), "PUT" | "POST" | "DELETE") {
        let mut resp =
            Reply::error(405, format!("method {method} is not allowed here")).to_http(false);
        resp.headers_mut().insert(
            header::ALLOW,
            header::HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE"),
        );
        return resp;
    }
    let limit = shared.max_body;
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large =
        || Reply::error(413, format!("the body is larger than {limit} bytes")).to_http(false);
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let body = match payload.to_bytes_limited(limit).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            return Reply::error(400, format!("cannot read the body: {e}")).to_http(false);
        }
        Err(_) => return too_large(),
    };
    let idem = req
        .headers()
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut store = shared.lock();
    let Some(idem) = idem else {
        let reply = store.update(&method, &key, &body);
        if let Err(why) = shared.persist(&store) {
            return Reply::error(500, why).to_http(false);
        }
        return reply.to_http(false);
    };
    let print = fingerprint(&method, req.path(), &body);
    if let Some((seen_print, reply)) = store.seen.get(&idem) {
        if *seen_print != print {
            return Reply::error(
                422,
                format!("Idempotency-Key {idem:?} was used for a different request"),
            )
            .to_http(false);
        }
        let reply = reply.clone();
        store.replays += 1;
        return reply.to_http(true);
    }
    let reply = store.update(&method, &key, &body);
    store.remember(idem, print, reply.clone());
    if let Err(why) = shared.persist(&store) {
        return Reply::error(500, why).to_http(false);
    }
    reply.to_http(false)
}

/// A running demo backend.
pub struct DemoBackend {
    addr: SocketAddr,
    handle: ServerHandle,
    shared: web::Data<Shared>,
    task: Option<actix_web::rt::task::JoinHandle<io::Result<()>>>,
}

impl DemoBackend {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of the stored data.
    pub fn data(&self) -> BTreeMap<String, Value> {
        self.shared.lock().data.clone()
    }

    /// Updates applied (replays excluded).
    pub fn applied(&self) -> u64 {
        self.shared.lock().applied
    }

    /// Updates answered from the idempotency store instead.
    pub fn replays(&self) -> u64 {
        self.shared.lock().replays
    }

    /// Stop serving and wait until it has stopped.
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serve until stopped (by a signal, with `handle_signals`).
    pub async fn wait(mut self) -> io::Result<()> {
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| io::Error::other(format!("demo backend server task: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        // Sends the stop command at once; nothing to wait for here.
        drop(self.handle.stop(false));
    }
}

/// Start the demo backend on `addr` (port 0 picks a free port). Call
/// inside a running actix system (`#[actix::test]`, `actix::System`):
/// the server runs on it until stopped or dropped.
pub async fn serve(addr: impl ToSocketAddrs, cfg: DemoConfig) -> io::Result<DemoBackend> {
    let mut store = Store {
        cap: cfg.idempotency_keys,
        random_ids: cfg.random_ids.then(crate::node::os_rng),
        ..Store::default()
    };
    if let Some(path) = &cfg.data_file {
        if let Some(s) = Snapshot::load(path).map_err(io::Error::other)? {
            store.restore(s);
        }
    }
    let shared = web::Data::new(Shared {
        store: Mutex::new(store),
        max_body: cfg.max_body,
        data_file: cfg.data_file.clone(),
    });
    let data = shared.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/kv", web::get().to(list))
            .route("/kv/", web::get().to(list))
            .route("/kv/{key}", web::route().to(one))
            .service(
                web::resource("/_snapshot")
                    // A whole data set in one body: bounded, but larger
                    // than an update may be.
                    .app_data(web::PayloadConfig::new(SNAPSHOT_BYTES_MAX))
                    .route(web::get().to(export))
                    .route(web::put().to(import)),
            )
    })
    .workers(cfg.workers.max(1))
    .shutdown_timeout(1)
    .listen(crate::http::listen(addr)?)?;
    if !cfg.handle_signals {
        server = server.disable_signals();
    }
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("bound to no address"))?;
    let server = server.run();
    let handle = server.handle();
    let task = actix_web::rt::spawn(server);
    Ok(DemoBackend {
        addr,
        handle,
        shared,
        task: Some(task),
    })
}
