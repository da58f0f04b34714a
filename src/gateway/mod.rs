//! The HTTP gateway: what clients talk to.
//!
//! - **Reads** (GET, HEAD, OPTIONS) go to the local backend and stream
//!   back unchanged, unless this node may not serve them (lagging, no
//!   quorum within the lease, applier stuck): then 503 with `Retry-After`
//!   and the reason.
//! - **Linearizable reads** (`Cache-Control: no-cache` or
//!   `Pragma: no-cache`): a read index from the leader, then the local
//!   read once this node has applied that far (or, in log mode, through
//!   the log like an update).
//! - **Updates** (anything else): the whole request is proposed; the
//!   client gets this node's backend's response to it once it is applied
//!   here. 503 only for an update that was never proposed; once proposed,
//!   a timeout is 504 with "outcome unknown" (FOUNDATION, Updates).
//!
//! Requests under `/_ordo/` are ordo's own: `status`, and `/healthz`,
//! `/readyz` at the root.

pub mod admin;
pub mod console;
pub mod readiness;
pub mod server;
pub mod waiters;

use crate::config::ReadMode;
use crate::http::client::HttpBackend;
use crate::http::request::{Header, ProxiedRequest, StoredResponse, strip_hop_by_hop};
use crate::node::{NodeHandle, Read, Submit};
use crate::paxos::ballot::{NodeId, Update, UpdateId};
use crate::paxos::command::ClientOutcome;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use readiness::{NotReady, ReadLimits};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use waiters::Waiters;

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECS: &str = "1";

/// One replicated service as the gateway sees it.
pub struct Service {
    pub name: String,
    pub prefix: String,
    /// The `Host` this service answers (any, if none): a name, or a name
    /// and port, lower case.
    pub host: Option<String>,
    /// The backend's export/import path for reseeding, if it has one.
    pub snapshot: Option<String>,
    pub handle: NodeHandle,
    pub backend: Arc<HttpBackend>,
    pub waiters: Waiters,
    /// The service's store, read (never written) by the console's log
    /// pages.
    pub kv: crate::storage::fjall_kv::FjallKv,
    /// Whether no-cache reads read the backend early (`linearizable_read`).
    pub early_reads: EarlyReads,
    /// How far the log may move on before a waiting update is no longer
    /// sent again (`wait_resending`).
    pub resend: ResendBound,
}

/// How far past a request's first sending its copies may still be sent.
///
/// A copy of an update is skipped as a duplicate only while the first
/// copy's slot is in the applier's dedupe window of the copy's slot: at
/// most `dedupe_window_slots` slots back, holding at most
/// `dedupe_window_ids` ids. The first copy's slot is above the commit
/// index this node knew when it first sent (the update did not exist
/// before). A copy's slot is at most `ahead` past the leader's commit
/// index when it arrives: the leader's queue (`queue_max` updates, a slot
/// each at worst) and its pipeline (`window` slots of up to
/// `batch_updates_max` updates). So copies stop once the commit index has
/// moved on by half of what the window leaves after `ahead`, counted in
/// slots, and in ids at full slots; the other half covers the leader's
/// commit index running ahead of what this node has heard.
#[derive(Clone, Copy, Debug)]
pub struct ResendBound {
    /// Slots the commit index may have moved on since the first sending;
    /// 0: never send again (a window too small to leave room).
    pub slots: u64,
}

impl ResendBound {
    /// The bound for a group with these settings.
    pub fn of(
        applier: &crate::apply::applier::ApplierConfig,
        proposer: &crate::paxos::proposer::ProposerConfig,
    ) -> Self {
        let batch = proposer.batch_updates_max.max(1) as u64;
        let (queue, window) = (proposer.queue_max as u64, proposer.window as u64);
        let ahead_slots = queue + window;
        let ahead_ids = queue + window * batch;
        let by_slots = (applier.dedupe_window_slots / 2).saturating_sub(ahead_slots);
        let by_ids = (applier.dedupe_window_ids as u64 / 2).saturating_sub(ahead_ids) / batch;
        ResendBound {
            slots: by_slots.min(by_ids) / 2,
        }
    }
}

impl Default for ResendBound {
    fn default() -> Self {
        Self::of(&Default::default(), &Default::default())
    }
}

/// Everything a request handler needs; shared by all HTTP workers.
pub struct Gateway {
    pub node: String,
    pub node_id: NodeId,
    /// Node names by id, to name the leader in status output.
    pub node_names: Vec<String>,
    /// Longest prefix first.
    services: Vec<Service>,
    pub read_mode: ReadMode,
    pub read_limits: ReadLimits,
    pub update_timeout: Duration,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// ...and how slowly, on average after `BODY_GRACE` (0: any).
    pub body_min_rate: u64,
    pub max_inflight: usize,
    inflight: AtomicUsize,
    /// The bearer token the admin API wants; without one, the admin API
    /// answers only clients on this machine (loopback).
    pub admin_token: Option<String>,
    /// Request ids: a random boot nonce and a counter.
    boot: u64,
    seq: AtomicU64,
    /// What `/metrics` shows; requests are counted into it.
    pub metrics: Option<Arc<crate::metrics::NodeMetrics>>,
}

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: String,
        node_id: NodeId,
        node_names: Vec<String>,
        mut services: Vec<Service>,
        read_mode: ReadMode,
        read_limits: ReadLimits,
        update_timeout: Duration,
        max_body_bytes: usize,
        max_inflight: usize,
    ) -> Gateway {
        // Services bound to a host first, then the longest prefix.
        services.sort_by_key(|s| (s.host.is_none(), std::cmp::Reverse(s.prefix.len())));
        Gateway {
            node,
            node_id,
            node_names,
            services,
            read_mode,
            read_limits,
            update_timeout,
            max_body_bytes,
            body_timeout: Duration::from_millis(crate::config::Limits::default().body_timeout_ms),
            body_min_rate: crate::config::Limits::default().body_min_bytes_per_sec,
            max_inflight,
            inflight: AtomicUsize::new(0),
            admin_token: None,
            boot: crate::node::os_rng().next_u64(),
            seq: AtomicU64::new(0),
            metrics: None,
        }
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The service for a request: among those bound to its `Host`, else
    /// among those bound to none, the one with the longest prefix that
    /// matches whole path segments (`/movies` serves `/movies` and
    /// `/movies/1`, not `/movies-archive`).
    fn route(&self, host: Option<&str>, path: &str) -> Option<&Service> {
        self.services.iter().find(|s| {
            let host_ok = match &s.host {
                None => true,
                Some(want) => host.is_some_and(|h| host_matches(want, h)),
            };
            host_ok
                && path.strip_prefix(s.prefix.as_str()).is_some_and(|rest| {
                    s.prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                })
        })
    }

    /// The service `req` is for (see `route`).
    fn route_request(&self, req: &HttpRequest) -> Option<&Service> {
        self.route(request_host(req), req.path())
    }

    fn next_id(&self) -> UpdateId {
        UpdateId {
            origin: self.node_id,
            boot: self.boot,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// A place among the requests waiting on the log, if one is free.
    fn admit(&self) -> Option<InflightGuard<'_>> {
        if self.inflight.fetch_add(1, Ordering::Relaxed) >= self.max_inflight {
            self.inflight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InflightGuard(&self.inflight))
    }

    /// The 503 for a request that found no place (see `admit`).
    fn busy(&self) -> HttpResponse {
        unavailable(format!(
            "node {} has {} requests waiting on the log, the most it takes",
            self.node, self.max_inflight
        ))
    }

    pub(crate) fn node_name(&self, id: NodeId) -> String {
        self.node_names
            .get(id.0 as usize)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }

    fn node_names_of(&self, ids: &[NodeId]) -> Vec<String> {
        ids.iter().map(|&n| self.node_name(n)).collect()
    }

    /// The node a name (or an id like `n3`) means, if any.
    pub(crate) fn id_of(&self, name: &str) -> Option<NodeId> {
        self.node_names
            .iter()
            .position(|n| n == name)
            .map(|i| NodeId(i as u16))
            .or_else(|| {
                let i: u16 = name.strip_prefix('n')?.parse().ok()?;
                ((i as usize) < self.node_names.len()).then_some(NodeId(i))
            })
    }

    /// `text` with every node id (`n3`) written as the node's name: the
    /// protocol's events speak of ids.
    pub(crate) fn with_names(&self, text: &str) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < b.len() {
            let starts_word = i == 0 || !b[i - 1].is_ascii_alphanumeric();
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            let ends_word = b
                .get(i + 1 + digits)
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            if b[i] == b'n' && starts_word && digits > 0 && ends_word {
                let id = text[i + 1..i + 1 + digits].parse::<u16>().ok();
                if let Some(id) = id.filter(|&id| (id as usize) < self.node_names.len()) {
                    out.push_str(&self.node_name(NodeId(id)));
                    i += 1 + digits;
                    continue;
                }
            }
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }

    /// The membership of `s` as JSON, with node names.
    pub(crate) fn membership_json(&self, s: &Service) -> serde_json::Value {
        let m = s.handle.status.membership();
        let me = self.node_id;
        let era = |e: &crate::paxos::membership::Era| {
            serde_json::json!({
                "chosen_at": e.chosen_at,
                "from": e.from,
                "voters": self.node_names_of(&e.voters),
                "held_out": self.node_names_of(&e.held_out),
                "reason": self.with_names(&e.reason),
            })
        };
        let pending = m
            .eras
            .last()
            .filter(|e| !m.active.is_empty() && e.voters != m.active);
        serde_json::json!({
            "active": self.node_names_of(&m.active),
            "preferred_leader": m.active.first().map(|&n| self.node_name(n)),
            "this_node": if m.active.contains(&me) { "active" } else { "backup" },
            "pending": pending.map(era),
            "eras": m.eras.iter().map(era).collect::<Vec<_>>(),
            "transfer_to": m.transfer.map(|n| self.node_name(n)),
            "nodes": m.peers.iter().map(|p| serde_json::json!({
                "node": self.node_name(p.node),
                "active": m.active.contains(&p.node),
                "heard_ms_ago": p.heard_ms,
                "commit": p.commit,
                "applied": p.applied,
                "fit": p.fit,
            })).collect::<Vec<_>>(),
            "events": m.events.iter().map(|(at, e)| serde_json::json!({
                "at_unix_ms": at,
                "event": self.with_names(e),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Mount the gateway on an actix-web app: ordo's own endpoints, and
/// every other request proxied to a service.
pub fn configure(gw: Arc<Gateway>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = gw.max_body_bytes;
        cfg.app_data(web::Data::from(gw))
            .app_data(web::PayloadConfig::new(limit))
            .configure(own_endpoints)
            .default_service(web::to(handle));
    }
}

/// The endpoints ordo answers itself: health, status, metrics, admin
/// (on the client port and on the console's). Everything under
/// `/_ordo` is one scope, so a proxied request is matched against a
/// prefix and two fixed paths, not against each admin pattern; what
/// the scope does not match goes to the app's default service.
pub(crate) fn own_endpoints(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/healthz", web::head().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/readyz", web::head().to(readyz))
        .service(
            web::scope("/_ordo")
                .route("/status", web::get().to(status))
                .route("/status", web::head().to(status))
                .route("/metrics", web::get().to(metrics))
                .service(
                    web::resource("/admin/services/{service}/import")
                        .app_data(web::PayloadConfig::new(admin::RESEED_BYTES_MAX))
                        .route(web::post().to(admin::import)),
                )
                .route(
                    "/admin/services/{service}/export",
                    web::post().to(admin::export),
                )
                .route(
                    "/admin/services/{service}/members",
                    web::get().to(admin::members),
                )
                .route(
                    "/admin/services/{service}/members/{action}",
                    web::post().to(admin::member_op),
                )
                .route(
                    "/admin/services/{service}/{action}",
                    web::post().to(admin::action),
                ),
        );
}

/// An answer of ordo's own. Every refusal and error has the one shape
/// clients and operators can rely on: `text/plain`, one line
/// `ordo: <what and why>`.
pub(crate) fn plain(status: StatusCode, body: String) -> HttpResponse {
    let body = if status.is_success() || body.starts_with("ordo: ") {
        body
    } else {
        format!("ordo: {body}")
    };
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body + "\n")
}

fn unavailable(reason: String) -> HttpResponse {
    HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
        .insert_header(("Retry-After", RETRY_AFTER_SECS))
        .content_type("text/plain; charset=utf-8")
        .body(format!("ordo: {reason}\n"))
}

/// Whether a request's `Host` is the one a service is bound to: without
/// regard to case, and to the port unless the binding names one.
fn host_matches(want: &str, host: &str) -> bool {
    let host = host.trim().trim_end_matches('.');
    if want.contains(':') && !want.ends_with(']') {
        return host.eq_ignore_ascii_case(want);
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => name,
        _ => host,
    };
    name.eq_ignore_ascii_case(want)
}

/// Paths ordo answers itself (reaching `handle` means a wrong method).
fn is_reserved(path: &str) -> bool {
    path == "/healthz" || path == "/readyz" || path == "/_ordo" || path.starts_with("/_ordo/")
}

fn is_read(method: &actix_web::http::Method) -> bool {
    use actix_web::http::Method;
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

/// `Cache-Control: no-cache` or `Pragma: no-cache`.
fn wants_fresh(req: &HttpRequest) -> bool {
    let has = |name: &str| {
        req.headers().get_all(name).any(|v| {
            v.to_str()
                .map(|s| {
                    s.split(',')
                        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
                })
                .unwrap_or(false)
        })
    };
    has("cache-control") || has("pragma")
}

/// The client's end-to-end headers, and `Host`: the backend gets its own
/// `Host`, but the adapter maps addresses by the client's (on the apply
/// path too, on every node: so it is proposed with the request).
fn request_headers(req: &HttpRequest) -> Vec<Header> {
    let mut headers: Vec<Header> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    strip_hop_by_hop(&mut headers);
    if let Some(host) = request_host(req) {
        headers.push(("host".to_string(), host.as_bytes().to_vec()));
    }
    headers
}

/// The host a request names: the authority of an absolute-form target
/// (`GET http://b.test/x`), which wins over `Host` (RFC 9112 §3.2.2),
/// else `Host`.
fn request_host(req: &HttpRequest) -> Option<&str> {
    if let Some(authority) = req.uri().authority() {
        // Without userinfo (`http://u@b.test/`): it names no host.
        let a = authority.as_str();
        return Some(a.rsplit_once('@').map_or(a, |(_, host)| host));
    }
    req.headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
}

fn path_and_query(req: &HttpRequest) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.path().to_string())
}

/// Why a request is refused before anything is read of it: a tunnel or a
/// protocol upgrade (a connection ordo would have to hand over whole,
/// which cannot be ordered or replicated). Without this the body read
/// below waits for the end of a stream that never ends.
fn unproxiable(req: &HttpRequest) -> Option<HttpResponse> {
    let why = if req.method() == actix_web::http::Method::CONNECT {
        "ordo: CONNECT is not proxied: ordo is not a tunnel".to_string()
    } else if let Some(up) = req.headers().get(actix_web::http::header::UPGRADE) {
        format!(
            "ordo: protocol upgrades are not proxied (Upgrade: {})",
            String::from_utf8_lossy(up.as_bytes())
        )
    } else {
        return None;
    };
    Some(closing(StatusCode::NOT_IMPLEMENTED, why))
}

/// `plain`, and the connection is closed after it (what is left of the
/// request on it is not read).
fn closing(status: StatusCode, why: String) -> HttpResponse {
    let mut r = plain(status, why);
    r.head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    r
}

/// How long a body may take before its average rate counts.
const BODY_GRACE: Duration = Duration::from_secs(2);

/// The whole request body, within `limit` bytes and `timeout`, and on
/// average at `min_rate` bytes a second at least once `BODY_GRACE` is
/// over; else the answer why not (the connection is closed: the rest of
/// the body is not read). A client that announces a body and never
/// finishes it, or trickles it, would otherwise hold its connection and
/// the memory for as long as it likes.
async fn read_body(
    mut payload: web::Payload,
    declared: Option<u64>,
    limit: usize,
    timeout: Duration,
    min_rate: u64,
) -> Result<Bytes, HttpResponse> {
    use futures_core::Stream;
    let too_large = || {
        closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("ordo: the request body is larger than max_body_bytes ({limit} bytes)"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let start = tokio::time::Instant::now();
    let whole = start + timeout;
    let mut body = bytes::BytesMut::new();
    loop {
        // The next bytes must come before the average falls below the
        // floor (or the whole time is up).
        let by_rate = (min_rate > 0).then(|| {
            start + BODY_GRACE + Duration::from_secs_f64(body.len() as f64 / min_rate as f64)
        });
        let deadline = by_rate.map_or(whole, |r| r.min(whole));
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut payload).poll_next(cx));
        match tokio::time::timeout_at(deadline, next).await {
            Ok(None) => return Ok(body.freeze()),
            Ok(Some(Ok(chunk))) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Some(Err(e))) => {
                return Err(closing(
                    StatusCode::BAD_REQUEST,
                    format!("ordo: cannot read the request body: {e}"),
                ));
            }
            Err(_) if deadline < whole => {
                return Err(closing(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "ordo: the request body arrives slower than {min_rate} bytes/s \
                         (limits.body_min_bytes_per_sec): {} bytes in {} ms",
                        body.len(),
                        start.elapsed().as_millis()
                    ),
                ));
            }
            Err(_) => {
                return Err(closing(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "ordo: the request body did not arrive within {} ms (limits.body_timeout_ms)",
                        timeout.as_millis()
                    ),
                ));
            }
        }
    }
}

/// A client request: answered by [`serve`], and counted.
async fn handle(gw: web::Data<Gateway>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let Some(m) = gw.metrics.clone() else {
        return serve(gw, req, payload).await;
    };
    let start = std::time::Instant::now();
    let kind = match (is_read(req.method()), wants_fresh(&req)) {
        (true, false) => crate::metrics::Kind::Read,
        (true, true) => crate::metrics::Kind::FreshRead,
        (false, _) => crate::metrics::Kind::Update,
    };
    // The service's name is borrowed from the gateway, not copied.
    let gateway = gw.clone();
    let service = gateway.route_request(&req).map_or("", |s| s.name.as_str());
    let resp = serve(gw, req, payload).await;
    m.request(service, kind, resp.status().as_u16(), start.elapsed());
    resp
}

async fn serve(gw: web::Data<Gateway>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    if let Some(refusal) = unproxiable(&req) {
        return refusal;
    }
    if is_reserved(req.path()) {
        // ordo's own paths are never proxied, let alone replicated.
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("ordo: {} {} is not served", req.method(), req.path()),
        );
    }
    let Some(service) = gw.route_request(&req) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("ordo: no service serves {}", req.path()),
        );
    };
    // The request as the backend will get it (without its body, read
    // below for an update): made once for the adapter, the read and the
    // proposal.
    let mut proxied = ProxiedRequest {
        method: req.method().as_str().to_string(),
        path_and_query: path_and_query(&req),
        headers: request_headers(&req),
        body: Bytes::new(),
    };
    let head = crate::adapter::Head {
        method: &proxied.method,
        path_and_query: &proxied.path_and_query,
        headers: &proxied.headers,
        content_length: req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    };
    if let Err(refusal) = service.backend.adapter().authenticate(&head) {
        let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
        return plain(status, format!("ordo: {}", refusal.message));
    }
    if is_read(req.method()) {
        let ready = readiness::check(
            &service.handle.status.read_state(),
            crate::node::now(),
            &gw.read_limits,
        );
        let refuse = |why: NotReady| {
            unavailable(format!(
                "node {} cannot serve reads of {}: {}",
                gw.node,
                service.name,
                why.reason()
            ))
        };
        if !wants_fresh(&req) {
            return match ready {
                Ok(()) => proxy_read(service, proxied).await,
                Err(why) => refuse(why),
            };
        }
        if gw.read_mode == ReadMode::ReadIndex {
            // A fenced node's backend is not to be trusted (disabled,
            // diverged, awaiting a reseed), whatever the index. A node far
            // behind or stuck cannot answer soon: say so now rather than
            // hold a place among the waiting requests. (Out of lease is no
            // reason here: the read index asks a quorum.)
            if let Err(
                why @ (NotReady::Fenced(_) | NotReady::Lagging { .. } | NotReady::Stuck { .. }),
            ) = ready
            {
                return refuse(why);
            }
            return linearizable_read(&gw, service, proxied).await;
        }
    }
    let body = read_body(
        payload,
        head.content_length,
        gw.max_body_bytes,
        gw.body_timeout,
        gw.body_min_rate,
    );
    let body = match body.await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    proxied.body = body;
    update(&gw, service, &req, proxied).await
}

/// Stream a read from the local backend.
async fn proxy_read(service: &Service, request: ProxiedRequest) -> HttpResponse {
    respond(service, service.backend.read(request).await)
}

/// The client's answer to a read: the backend's, streamed.
fn respond(
    service: &Service,
    resp: Result<crate::http::client::ReadAnswer, String>,
) -> HttpResponse {
    let resp = match resp {
        Ok(r) => r,
        Err(why) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                format!("ordo: backend of {} unreachable: {why}", service.name),
            );
        }
    };
    let mut out =
        HttpResponse::build(StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY));
    // No content type is invented (a 304 keeps the one the client has
    // cached).
    add_headers(&mut out, &resp.headers);
    match resp.length {
        Some(n) => {
            out.no_chunking(n);
            out.body(actix_web::body::SizedStream::new(n, resp.body))
        }
        None => out.body(actix_web::body::BodyStream::new(resp.body)),
    }
}

fn add_headers(out: &mut HttpResponseBuilder, headers: &[Header]) {
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            out.append_header((n, v));
        }
    }
}

/// Read-index: ask for a read index, wait until applied, read locally.
async fn linearizable_read(
    gw: &Gateway,
    service: &Service,
    request: ProxiedRequest,
) -> HttpResponse {
    // Waiting reads are bounded like updates: they hold a waiter each.
    let Some(_guard) = gw.admit() else {
        return gw.busy();
    };
    // While the read index is asked for, the local backend is read
    // already if this node knows of nothing it has yet to apply. That
    // early answer is given if the index comes back at or below what was
    // applied when the read was sent: the backend's state then held every
    // write the index covers, that is every write acknowledged before
    // this request arrived (the read index is a commit index confirmed
    // after the arrival), and it held only chosen writes. Else it is
    // dropped and the backend read again once the index is applied. At
    // one client this takes the backend's time off the quorum round's.
    let status = &service.handle.status;
    let sent = EarlyRead {
        applied: status.applied(),
        known: status.known_commit().max(status.commit()),
    };
    let early = sent.worth_sending() && service.early_reads.try_one();
    let early_read = service.backend.read(request.clone());
    let asked = read_index(gw, service, gw.update_timeout);
    tokio::pin!(early_read, asked);
    let mut early_answer = None;
    let index = loop {
        tokio::select! {
            biased;
            index = &mut asked => break index,
            answer = &mut early_read, if early && early_answer.is_none() => {
                early_answer = Some(answer);
            }
        }
    };
    let index = match index {
        Ok(index) if early && sent.holds(index) => {
            let answer = match early_answer {
                Some(answer) => answer,
                None => early_read.await,
            };
            if answer.is_ok() {
                return respond(service, answer);
            }
            index
        }
        Ok(index) => {
            if early {
                service.early_reads.missed();
            }
            index
        }
        Err(Some(why)) => {
            return unavailable(format!("no linearizable read now: {}", why.reason()));
        }
        Err(None) => return unavailable("no read index from the leader in time".into()),
    };
    let mut applied = service.handle.status.watch_applied();
    // `wait_for` answers with a read guard on the watch channel: drop it
    // in this statement. Held across the backend read below, it blocks
    // the applier's next `set_applied` (a writer), and then every other
    // reader on this worker thread behind that writer: the node hangs.
    let reached = matches!(
        tokio::time::timeout(gw.update_timeout, applied.wait_for(|a| *a >= index)).await,
        Ok(Ok(_))
    );
    if !reached {
        return unavailable(format!(
            "node {} has not applied slot {index} yet (catching up)",
            gw.node
        ));
    }
    proxy_read(service, request).await
}

/// A backend read sent while the read index was asked for: what the
/// node had applied, and knew to be committed, when it was sent.
#[derive(Clone, Copy, Debug)]
struct EarlyRead {
    applied: crate::paxos::ballot::Slot,
    known: crate::paxos::ballot::Slot,
}

impl EarlyRead {
    /// Only when nothing this node knows of waits to be applied: else
    /// the index would most likely be above what was applied, and the
    /// backend read twice for one answer.
    fn worth_sending(&self) -> bool {
        self.applied >= self.known
    }

    /// Whether its answer may be given for read index `index`: the
    /// backend had applied every slot up to it when the read was sent.
    fn holds(&self, index: crate::paxos::ballot::Slot) -> bool {
        self.applied >= index
    }
}

/// No-cache reads after an early read that could not be used, that read
/// the backend only once the index is applied.
const EARLY_READ_PAUSE: u32 = 16;

/// Whether early reads pay off now. Under a steady stream of updates the
/// leader's read index is above its commit index (it counts the slots in
/// flight), no early read can be used, and each would cost a backend
/// read and a connection (dropped half-read): after a miss the next
/// [`EARLY_READ_PAUSE`] reads go without, so at most one in seventeen is
/// wasted then, and reads alone always get one.
#[derive(Debug, Default)]
pub struct EarlyReads {
    pause: AtomicU32,
}

impl EarlyReads {
    /// Whether this read may go early (one fewer paused read if not).
    fn try_one(&self) -> bool {
        self.pause
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1))
            .is_err()
    }

    fn missed(&self) {
        self.pause.store(EARLY_READ_PAUSE, Ordering::Relaxed);
    }
}

/// Ask the proposer for a read index and wait for it at most `limit`:
/// `Err(Some(why))` if refused, `Err(None)` if none came in time. The
/// caller holds a place among the waiting requests (`Gateway::admit`).
async fn read_index(
    gw: &Gateway,
    service: &Service,
    limit: Duration,
) -> Result<crate::paxos::ballot::Slot, Option<crate::paxos::command::Refusal>> {
    let id = gw.next_id();
    let waiting = service.waiters.register(id);
    let send = || service.handle.proposer.do_send(Read { id });
    match wait_resending(service, waiting, limit, send).await {
        Some(ClientOutcome::ReadReady { index, .. }) => Ok(index),
        Some(ClientOutcome::ReadRefused { why, .. }) => Err(Some(why)),
        _ => Err(None),
    }
}

/// Decrements the in-flight count when the request is done, however.
struct InflightGuard<'a>(&'a AtomicUsize);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Propose the request and answer with this node's backend's response.
async fn update(
    gw: &Gateway,
    service: &Service,
    req: &HttpRequest,
    proxied: ProxiedRequest,
) -> HttpResponse {
    if let Some(fence) = service.handle.status.fence() {
        // Never proposed, so a blind retry elsewhere is safe.
        return unavailable(format!(
            "node {} takes no updates for {}: {}",
            gw.node,
            service.name,
            fence.reason()
        ));
    }
    let Some(_guard) = gw.admit() else {
        return gw.busy();
    };
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let retry_advice = if key.is_some() {
        "Retry with the same Idempotency-Key header: it is applied at most once."
    } else {
        "Retrying may apply it twice; send an Idempotency-Key header to retry safely."
    };
    let id = gw.next_id();
    let waiting = service.waiters.register(id);
    let update = Update {
        id,
        key,
        payload: proxied.encode(),
    };
    let send = || {
        service.handle.proposer.do_send(Submit {
            updates: vec![update.clone()],
        })
    };
    match wait_resending(service, waiting, gw.update_timeout, send).await {
        Some(ClientOutcome::Answer {
            status, body, slot, ..
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let stored = StoredResponse::decode(&body)
                .unwrap_or_else(|e| StoredResponse::text(format!("ordo: bad stored answer: {e}")));
            let mut out = HttpResponse::build(status);
            add_headers(&mut out, &stored.headers);
            out.insert_header(("Ordo-Slot", slot.to_string()));
            out.body(stored.body)
        }
        Some(ClientOutcome::Refused { why, .. }) => {
            unavailable(format!("update not accepted: {}", why.reason()))
        }
        Some(ClientOutcome::Disagreed {
            slot,
            majority_differs,
            ..
        }) => {
            let what = if majority_differs {
                "this node's backend answered it differently from a majority of the nodes"
            } else {
                "the nodes' backends answered it in ways no majority agrees on"
            };
            let mut out = plain(
                StatusCode::BAD_GATEWAY,
                format!(
                    "ordo: the update was applied in slot {slot}, but {what}, so node {} \
                     does not pass its answer on. Read the result back from a serving node.",
                    gw.node
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&slot.to_string()) {
                out.headers_mut()
                    .insert(HeaderName::from_static("ordo-slot"), v);
            }
            out
        }
        _ => plain(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "ordo: the outcome of this update is unknown: it was proposed but not applied \
                     on node {} within {:?}; it may still be applied. {retry_advice}",
                gw.node, gw.update_timeout
            ),
        ),
    }
}

/// How often a request still waiting looks whether the leadership changed.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(200);

/// The most times one request is sent again to a new leadership.
const RESENDS_MAX: u32 = 3;

/// Send a request to the proposer with `send`, and wait up to `limit` for
/// its outcome.
///
/// A forward to the leader (an update, a read-index request) is sent
/// once, and a leader that crashes takes with it what it had not acted on
/// yet: those clients would wait for `limit` and get an unknown outcome.
/// So a request still waiting when a new leadership is known is sent
/// again, under the same id, at most [`RESENDS_MAX`] times. A read index
/// has no effect. An update's copies cannot apply twice: the applier
/// skips any copy of an id it has applied (the dedupe window, which is
/// replicated state), and the client gets the first copy's answer.
///
/// Copies stop once the commit index has moved [`ResendBound`] slots
/// past the first sending, well inside the dedupe window.
///
/// Once a request is sent again a refusal (no leader, a full queue) ends
/// nothing: for an update, the refused copy says nothing of the other,
/// which may still be chosen. The wait goes on, and ends as unknown at
/// `limit` if nothing else comes.
async fn wait_resending(
    service: &Service,
    mut waiting: waiters::Waiting,
    limit: Duration,
    send: impl Fn(),
) -> Option<ClientOutcome> {
    let status = &service.handle.status;
    let mut sent_under = status.leadership();
    let first_commit = status.known_commit();
    send();
    let deadline = tokio::time::Instant::now() + limit;
    let mut resends = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Some(outcome) = waiting.within(left.min(LEADERSHIP_CHECK)).await {
            return Some(outcome);
        }
        if waiting.ended() {
            return None;
        }
        let now = status.leadership();
        let moved = status.known_commit().saturating_sub(first_commit);
        if now.is_some()
            && now != sent_under
            && resends < RESENDS_MAX
            && moved < service.resend.slots
        {
            sent_under = now;
            resends += 1;
            waiting.sent_again();
            tracing::debug!(?now, "a waiting request sent again to a new leadership");
            send();
        }
    }
}

async fn healthz() -> HttpResponse {
    plain(StatusCode::OK, "ok".into())
}

/// How long /readyz waits for a backend or a read index.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why service `s` would refuse a read now, if it would: the read
/// decision, then (since that cannot see them) a backend that does not
/// answer and, in read-index mode, a leader that gives no read index.
async fn probe(gw: &Gateway, s: &Service) -> Option<String> {
    let now = crate::node::now();
    if let Err(why) = readiness::check(&s.handle.status.read_state(), now, &gw.read_limits) {
        return Some(why.reason());
    }
    // Any answer, even a 404, shows the backend is there to read from.
    let head = s.backend.read(ProxiedRequest {
        method: "HEAD".into(),
        path_and_query: s.prefix.clone(),
        headers: Vec::new(),
        body: Bytes::new(),
    });
    match tokio::time::timeout(PROBE_TIMEOUT, head).await {
        Ok(Ok(_)) => {}
        Ok(Err(why)) => return Some(format!("the backend does not answer: {why}")),
        Err(_) => {
            return Some(format!(
                "the backend does not answer within {PROBE_TIMEOUT:?}"
            ));
        }
    }
    if gw.read_mode != ReadMode::ReadIndex {
        return None;
    }
    let Some(_guard) = gw.admit() else {
        return Some("too many requests waiting on the log to ask for a read index".into());
    };
    match read_index(gw, s, PROBE_TIMEOUT).await {
        Ok(_) => None,
        Err(Some(why)) => Some(format!(
            "no read index for linearizable reads: {}",
            why.reason()
        )),
        Err(None) => Some(format!(
            "no read index for linearizable reads within {PROBE_TIMEOUT:?}: no leader, \
             or no quorum behind it, answers this node"
        )),
    }
}

/// 503 exactly when reads would be refused, for load balancers.
async fn readyz(gw: web::Data<Gateway>) -> HttpResponse {
    let mut problems = Vec::new();
    for s in &gw.services {
        if let Some(why) = probe(&gw, s).await {
            problems.push(format!("{}: {why}", s.name));
        }
    }
    if problems.is_empty() {
        plain(StatusCode::OK, "ready".into())
    } else {
        unavailable(problems.join("; "))
    }
}

/// The node's view of each service, as JSON.
/// `GET /_ordo/metrics`: the Prometheus (OpenMetrics) text exposition
/// (read-only, like
/// `/_ordo/status`).
pub(crate) async fn metrics(gw: web::Data<Gateway>) -> HttpResponse {
    let Some(m) = &gw.metrics else {
        return plain(
            StatusCode::NOT_FOUND,
            "ordo: no metrics on this node".into(),
        );
    };
    let text = m.render(
        |name| {
            gw.services
                .iter()
                .find(|s| s.name == name)
                .map_or(0, |s| s.waiters.waiting())
        },
        gw.inflight.load(Ordering::Relaxed),
    );
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

async fn status(gw: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok().json(status_json(&gw))
}

/// What `/_ordo/status` shows (the console renders the same).
pub(crate) fn status_json(gw: &Gateway) -> serde_json::Value {
    let now = crate::node::now();
    let services: Vec<serde_json::Value> = gw
        .services
        .iter()
        .map(|s| {
            let st = &s.handle.status;
            let ready = readiness::check(&st.read_state(), now, &gw.read_limits);
            let known = st.known_commit().max(st.commit());
            let (log_compacted, log_bytes) = st.log();
            let node_state = st.node_state();
            let membership = gw.membership_json(s);
            let role = if st.is_leader() {
                "leader"
            } else {
                membership["this_node"].as_str().unwrap_or("backup")
            };
            serde_json::json!({
                "service": s.name,
                "prefix": s.prefix,
                "role": role,
                "active": membership["active"],
                "membership": membership,
                "leader": st.leader().map(|n| gw.node_name(n)),
                "commit": st.commit(),
                "known_commit": known,
                "applied": st.applied(),
                "lag": known.saturating_sub(st.applied()),
                "log": { "compacted": log_compacted, "bytes": log_bytes },
                "lease_age_ms": st.lease_contact().map(|t| now.since(t).as_millis() as u64),
                "state": match &ready { Ok(()) => "serving", Err(w) => w.state() },
                "reason": ready.err().map(|w: NotReady| w.reason()),
                "waiting_requests": s.waiters.waiting(),
                "rebuilding": st.rebuilding().map(|(waiting, fence)| serde_json::json!({
                    "waiting_for": waiting.iter().map(|n| gw.node_name(*n)).collect::<Vec<_>>(),
                    "fence": fence,
                })),
                "disabled": node_state.disabled,
                "diverged": node_state.diverged.map(|d| serde_json::json!({
                    "slot": d.slot,
                    "ours": format!("{:016x}", d.ours),
                    "majority": d.majority.map(|m| format!("{m:016x}")),
                })),
            })
        })
        .collect();
    serde_json::json!({
        "node": gw.node,
        "updates_in_flight": gw.inflight.load(Ordering::Relaxed),
        "services": services,
    })
}

#[cfg(test)]
mod tests {
    use super::{EarlyRead, EarlyReads, host_matches};

    #[test]
    fn an_early_read_answers_only_for_an_index_it_had_applied() {
        let caught_up = EarlyRead {
            applied: 7,
            known: 7,
        };
        assert!(caught_up.worth_sending());
        assert!(caught_up.holds(7) && caught_up.holds(3));
        // The leader's index says a slot this node had not applied (or
        // not heard of) was chosen before the read came: the early
        // answer may lack it.
        assert!(!caught_up.holds(8));
        let behind = EarlyRead {
            applied: 5,
            known: 7,
        };
        assert!(!behind.worth_sending());
    }

    #[test]
    fn after_a_useless_early_read_the_next_sixteen_go_without() {
        let early = EarlyReads::default();
        assert!((0..5).all(|_| early.try_one()), "reads alone: always early");
        early.missed();
        let tried: Vec<bool> = (0..18).map(|_| early.try_one()).collect();
        assert_eq!(tried.iter().filter(|t| !**t).count(), 16);
        assert!(tried[16] && tried[17]);
    }

    /// Copies of an update stop while the first copy is still sure to
    /// be in the dedupe window of the copy's slot, and never start with a
    /// window too small to leave room for the leader's queue.
    #[test]
    fn copies_stop_well_inside_the_dedupe_window() {
        use crate::apply::applier::ApplierConfig;
        use crate::paxos::proposer::ProposerConfig;
        let of = |slots, ids| {
            let applier = ApplierConfig {
                dedupe_window_slots: slots,
                dedupe_window_ids: ids,
                ..ApplierConfig::default()
            };
            super::ResendBound::of(&applier, &ProposerConfig::default()).slots
        };
        // The defaults: 500,000 ids, less a queue of 4,096 and a pipeline
        // of 32 full slots, at 256 ids a slot, is the tighter bound.
        let ahead_ids = 4096 + 32 * 256;
        assert_eq!(
            super::ResendBound::default().slots,
            (250_000 - ahead_ids) / 256 / 2
        );
        assert_eq!(of(100_000, 500_000), 464);
        // A short log (`log_retain_slots`) shortens the window in slots.
        assert_eq!(of(10_000, 500_000), (5_000 - 4096 - 32) / 2);
        assert_eq!(of(8_000, 500_000), 0, "no room: never sent again");
        assert_eq!(of(100_000, 20_000), 0);
    }

    /// Every error answer of ordo's own has the one short format.
    #[test]
    fn error_answers_have_one_format() {
        use actix_web::body::MessageBody;
        use actix_web::http::StatusCode;
        let answers = [
            super::plain(StatusCode::BAD_REQUEST, "no node \"x\"".into()),
            super::plain(StatusCode::NOT_FOUND, "ordo: no service serves /x".into()),
            super::unavailable("node north is behind".into()),
            super::closing(StatusCode::REQUEST_TIMEOUT, "too slow".into()),
        ];
        for a in answers {
            let kind = a.headers().get("content-type").cloned();
            let body = a.into_body().try_into_bytes().expect("a whole body");
            let text = String::from_utf8(body.to_vec()).expect("utf-8");
            assert!(
                text.starts_with("ordo: ") && text.ends_with('\n'),
                "{text:?}"
            );
            assert_eq!(text.lines().count(), 1, "{text:?}");
            assert_eq!(
                kind.as_ref().and_then(|v| v.to_str().ok()),
                Some("text/plain; charset=utf-8")
            );
        }
    }

    #[test]
    fn hosts_match_without_case_and_port_unless_the_binding_names_one() {
        assert!(host_matches("movies.example", "Movies.Example"));
        assert!(host_matches("movies.example", "movies.example:8080"));
        assert!(host_matches("movies.example", "movies.example."));
        assert!(!host_matches("movies.example", "movies.example.evil"));
        assert!(!host_matches("movies.example", "other.example"));
        assert!(host_matches("movies.example:8080", "MOVIES.example:8080"));
        assert!(!host_matches("movies.example:8080", "movies.example:8081"));
        assert!(!host_matches("movies.example:8080", "movies.example"));
    }
}
