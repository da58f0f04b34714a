//! [`HttpBackend`]: the production [`Backend`], which applies a chosen
//! update by sending its [`ProxiedRequest`] to the node's own backend
//! service over HTTP/1.1.
//!
//! The applier decides what a reply means (`apply::applier::is_retryable`);
//! this module only has to map every way a call can end onto a
//! [`BackendReply`] so that the same request gives the same decision on
//! every node:
//!
//! - the backend answered: `Response { status, body, digest }`, where
//!   `body` is an encoded [`StoredResponse`] (end-to-end headers and the
//!   body) and `digest` covers the status, the body and the headers named
//!   in `digest_headers` (see [`reply`]);
//! - no complete answer (refused, reset, connect or total timeout, a body
//!   cut short): `Unreachable`, retried by the applier (the
//!   `Idempotency-Key` makes the repeat harmless);
//! - the payload is not a request ordo can send (it does not decode, or
//!   its method, target or a header is invalid): `Response` 400, final.
//!   This depends only on the chosen bytes, so every node agrees;
//! - the answer's body is larger than `max_response_bytes`: a final
//!   [`TOO_LARGE_STATUS`] (507) made by ordo, saying so. Retrying would
//!   stall the log forever on a response that will be just as large next
//!   time, and a 502 would be retried; the backend has applied the update,
//!   so the slot is done and only its answer is lost. The backend's own
//!   status is kept in the `Ordo-Backend-Status` header. (If the backend's
//!   status was itself retryable, it is kept and the call is retried.)

use super::pipeline::{BoxFuture, Connect, Limits, Outcome, Pipeline, Stream, encode_request};
use super::reads::{self, Reads, encode_read};
use super::request::{Header, ProxiedRequest, StoredResponse, header, strip_hop_by_hop};
use crate::adapter::rewrite::Streaming;
use crate::adapter::{Adapter, Asked, Presenting, Roots};
use crate::apply::applier::is_retryable;
use crate::node::backend::{Backend, BackendFuture};
use crate::paxos::ballot::{Slot, Update};
use crate::paxos::command::BackendReply;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The status of ordo's own final answer when a backend response is
/// larger than the configured limit (see the module docs).
pub const TOO_LARGE_STATUS: u16 = 507;

/// The status of ordo's own final answer to a payload it cannot send.
pub const BAD_REQUEST_STATUS: u16 = 400;

/// The header carrying the applier's idempotency key to the backend.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Where ordo keeps the backend's status when it replaces the answer.
pub const BACKEND_STATUS: &str = "ordo-backend-status";

/// Request headers never sent to the backend besides the hop-by-hop ones:
/// the client's own idempotency key (replaced by the applier's) and
/// `Expect` (the whole body is sent at once; there is no 100-continue
/// exchange on the applier's hop).
const NOT_FORWARDED: &[&str] = &[IDEMPOTENCY_KEY, "expect"];

#[derive(Clone, Debug)]
pub struct HttpBackendConfig {
    /// Longest wait for a TCP connection to the backend.
    pub connect_timeout: Duration,
    /// Longest wait for one whole exchange: connect, send, status,
    /// headers and the full body.
    pub request_timeout: Duration,
    /// Largest response body kept (see [`TOO_LARGE_STATUS`]).
    pub max_response_bytes: usize,
    /// How long an unused pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Unused connections kept per backend.
    pub pool_max_idle: usize,
    /// Response headers that count in the digest the nodes compare
    /// (`apply::digest`), besides status and body: for example `etag`,
    /// when clients send it back in `If-Match`.
    pub digest_headers: Vec<String>,
    /// TLS for an `https://` backend (`crate::tls::backend`); required
    /// for one.
    pub tls: Option<rustls::ClientConfig>,
    /// What fixes up the service's kind (`crate::adapter`).
    pub adapter: Arc<dyn Adapter>,
    /// How a request's presented root is found.
    pub presenting: Presenting,
    /// Updates on one connection at once (`services[].backend_pipeline`);
    /// 1 sends each on a connection of its own.
    pub pipeline_depth: usize,
    /// Updates the applier has out at once, at most: with pipelining,
    /// they are spread over this divided by the depth connections.
    pub concurrency: usize,
}

impl Default for HttpBackendConfig {
    fn default() -> Self {
        HttpBackendConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 64 << 20,
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle: 256,
            digest_headers: Vec::new(),
            tls: None,
            adapter: Arc::new(crate::adapter::http::Http),
            presenting: Presenting {
                scheme: "http",
                ..Presenting::default()
            },
            pipeline_depth: 1,
            concurrency: 1,
        }
    }
}

/// Why an [`HttpBackend`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpBackendError {
    #[error("backend URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{what} name {name:?}: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
}

type HyperClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn pooled(connector: HttpsConnector<HttpConnector>, cfg: &HttpBackendConfig) -> HyperClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cfg.pool_idle_timeout)
        .pool_max_idle_per_host(cfg.pool_max_idle)
        .build(connector)
}

thread_local! {
    /// This thread's clients for exchanges outside the log, by backend id.
    static READ_CLIENTS: std::cell::RefCell<std::collections::HashMap<usize, HyperClient>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The production backend: one service instance reached at a base URL.
///
/// The connection pool's tasks run on the tokio runtime of the first
/// call; make and use a backend inside the actix system that runs the
/// node (the futures it returns are `Send`, but pooled connections die
/// with the runtime that opened them).
pub struct HttpBackend {
    client: HyperClient,
    /// For exchanges outside the log (a reseed's export and import): each
    /// thread gets a client (and a connection pool) of its own, made from
    /// this connector. A pooled connection is driven by the thread that
    /// opened it; shared with the applier, such a connection could be one
    /// the actor thread opened, and the exchange would wait for that
    /// thread's Paxos work. (Plain reads have their own: `reads`.)
    connector: HttpsConnector<HttpConnector>,
    /// This backend among others, for the per-thread clients.
    id: usize,
    /// `http(s)://authority[/prefix]`, without a trailing `/`.
    base: String,
    /// `base`'s `http(s)://authority`: requests go to it with the
    /// backend's path (`target`).
    origin: String,
    /// `base`'s path: the backend's paths start with it.
    base_path: String,
    /// `{cluster}/{service}/`.
    key_prefix: String,
    /// The applier's updates, pipelined (`pipeline_depth` > 1), and the
    /// `Host` they carry.
    pipeline: Option<(Arc<Pipeline>, String)>,
    /// Plain reads, on each thread's own connections, and the `Host`
    /// they carry.
    reads: (Reads, String),
    cfg: HttpBackendConfig,
}

impl HttpBackend {
    /// A backend at `base_url` (`http://host:port` or `https://host:port`
    /// with an optional path prefix) for service `service` of cluster
    /// `cluster`. An https backend needs `cfg.tls`; its name is sent as
    /// SNI and checked against its certificate.
    pub fn new(
        base_url: &str,
        cluster: &str,
        service: &str,
        cfg: HttpBackendConfig,
    ) -> Result<HttpBackend, HttpBackendError> {
        let base = parse_base(base_url)?;
        check_name("cluster", cluster)?;
        check_name("service", service)?;
        let https = base.starts_with("https://");
        let tls = match (&cfg.tls, https) {
            (Some(tls), _) => tls.clone(),
            (None, true) => {
                return Err(HttpBackendError::BadUrl {
                    url: base_url.to_string(),
                    why: "an https backend needs TLS settings".into(),
                });
            }
            // Never used: the scheme is http.
            (None, false) => rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| HttpBackendError::BadUrl {
                    url: base_url.to_string(),
                    why: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        // The TLS layer above takes https; the base URL's scheme decides.
        http.enforce_http(false);
        let (origin, base_path) = crate::adapter::split_root(&base);
        let (origin, base_path) = (origin.to_string(), base_path.to_string());
        let pipeline = (cfg.pipeline_depth > 1)
            .then(|| lanes(&origin, https.then(|| tls.clone()), &cfg))
            .transpose()
            .map_err(|why| HttpBackendError::BadUrl {
                url: base_url.to_string(),
                why,
            })?;
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (dial, host) =
            dial(&origin, https.then(|| tls.clone())).map_err(|why| HttpBackendError::BadUrl {
                url: base_url.to_string(),
                why,
            })?;
        let limits = reads::Limits {
            connect: cfg.connect_timeout,
            stall: cfg.request_timeout,
            idle: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle,
        };
        let reads = (Reads::new(Arc::new(dial), id, limits), host);
        let connector = HttpsConnector::from((http, tls));
        let client = pooled(connector.clone(), &cfg);
        Ok(HttpBackend {
            client,
            connector,
            id,
            reads,
            origin,
            pipeline,
            base_path,
            base,
            key_prefix: format!("{cluster}/{service}/"),
            cfg,
        })
    }

    /// This thread's client for exchanges outside the log (reseeds), with
    /// a pool of its own.
    fn reader(&self) -> HyperClient {
        READ_CLIENTS.with(|c| {
            c.borrow_mut()
                .entry(self.id)
                .or_insert_with(|| pooled(self.connector.clone(), &self.cfg))
                .clone()
        })
    }

    /// The base URL requests are sent under.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The `Idempotency-Key` of update `index` of `slot`:
    /// `{cluster}/{service}/{slot}.{index}`.
    pub fn idempotency_key(&self, slot: Slot, index: u32) -> String {
        format!("{}{slot}.{index}", self.key_prefix)
    }

    /// The adapter of the service's kind.
    pub fn adapter(&self) -> &dyn Adapter {
        &*self.cfg.adapter
    }

    /// The roots a request with this `Host` maps between.
    pub fn roots(&self, host: Option<&[u8]>) -> Roots {
        Roots {
            presented: self.cfg.presenting.root(host),
            backend: self.base.clone(),
        }
    }

    /// The backend's path for a client's `path_and_query`: the base URL's
    /// path, then the client's without the stripped prefix.
    fn target(&self, path_and_query: &str) -> String {
        let stripped = self.cfg.presenting.stripped.trim_end_matches('/');
        let rest = path_and_query
            .strip_prefix(stripped)
            .unwrap_or(path_and_query);
        let base_path = self.base_path.as_str();
        if rest.is_empty() || rest.starts_with('?') {
            let root = if base_path.is_empty() { "/" } else { base_path };
            format!("{root}{rest}")
        } else {
            format!("{base_path}{rest}")
        }
    }

    /// `req` (from a client, hop-by-hop fields already gone or not) as
    /// the request for this node's backend: the target mapped, the
    /// adapter's rewriting done. Answers the roots used and what was
    /// asked, for the answer's rewriting.
    fn adapt(&self, mut req: ProxiedRequest) -> Result<(ProxiedRequest, Roots, Asked), String> {
        let roots = self.roots(header(&req.headers, "host"));
        strip_hop_by_hop(&mut req.headers);
        let asked = Asked {
            method: req.method.clone(),
            path_and_query: req.path_and_query.clone(),
        };
        req.path_and_query = self.target(&req.path_and_query);
        self.cfg.adapter.to_backend(&roots, &mut req)?;
        Ok((req, roots, asked))
    }

    /// The HTTP request for a payload, or why it cannot be sent (a
    /// deterministic verdict on the chosen bytes), with what the answer
    /// is rewritten by.
    fn build(
        &self,
        slot: Slot,
        index: u32,
        payload: &[u8],
    ) -> Result<(Request<Bytes>, Roots, Asked), String> {
        let req = ProxiedRequest::decode(payload)
            .map_err(|e| format!("ordo: the update's payload is not a request: {e}"))?;
        let method = Method::from_bytes(req.method.as_bytes())
            .map_err(|_| format!("ordo: invalid method {:?}", req.method))?;
        if method == Method::CONNECT {
            return Err("ordo: CONNECT cannot be applied to a backend".to_string());
        }
        if !req.path_and_query.starts_with('/') {
            return Err(format!(
                "ordo: request target {:?} is not a path",
                req.path_and_query
            ));
        }
        let (req, roots, asked) = self.adapt(req).map_err(|why| format!("ordo: {why}"))?;
        let uri: Uri = format!("{}{}", self.origin, req.path_and_query)
            .parse()
            .map_err(|e| format!("ordo: invalid request target {:?}: {e}", req.path_and_query))?;
        let headers: Vec<Header> = req.headers;
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in &headers {
            if NOT_FORWARDED.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                continue;
            }
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("ordo: invalid header name {name:?}"))?;
            let v = HeaderValue::from_bytes(value)
                .map_err(|_| format!("ordo: invalid value for header {name:?}"))?;
            builder = builder.header(n, v);
        }
        let key = self.idempotency_key(slot, index);
        builder = builder.header(IDEMPOTENCY_KEY, key);
        let request = builder
            .body(req.body)
            .map_err(|e| format!("ordo: cannot build the request: {e}"))?;
        Ok((request, roots, asked))
    }
}

impl HttpBackend {
    /// A read (GET, HEAD, OPTIONS) sent to the backend as it came and
    /// streamed back: the response head arrives within the request
    /// timeout; the body streams as the backend sends it, never held
    /// whole in memory. `Err` says why the backend could not be reached.
    ///
    /// `req`'s headers are the client's, with `Host` (it gives the
    /// presented root); the adapter rewrites the request and the answer,
    /// its body as it streams. A body in `req` is not sent.
    pub async fn read(&self, req: ProxiedRequest) -> Result<ReadAnswer, String> {
        let head = req.method == "HEAD";
        let (req, roots, asked) = self.adapt(req)?;
        let (reads, host) = &self.reads;
        let request = encode_read(&req, host)?;
        let total = self.cfg.request_timeout;
        let answer = match super::deadlines::within(total, reads.fetch(&request, head)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(why)) => return Err(why),
            Err(_) => return Err(format!("no response within {total:?}")),
        };
        let (status, body) = (answer.status, answer.body);
        let mut headers = header_list(&answer.headers);
        // The backend's length is kept (a HEAD answer keeps its size, a
        // body is not re-chunked) unless the body is rewritten.
        let mut length = content_length(&headers);
        strip_hop_by_hop(&mut headers);
        let adapter = &self.cfg.adapter;
        adapter.answer_headers(&roots, &asked, &mut headers);
        // A 204 or 304 has no body to rewrite; its headers stay whole. (A
        // HEAD answer's length is the GET's, which a rewrite would change
        // by an amount unknown here: it is dropped, as for the GET.)
        let bodiless = matches!(status, 204 | 304);
        let rewrite = adapter
            .answer_body(&roots, &asked, &headers)
            .filter(|_| !encoded(&headers) && !bodiless);
        if rewrite.is_some() {
            length = None;
            drop_body_checksums(&mut headers);
        }
        Ok(ReadAnswer {
            status,
            headers,
            length,
            body: ReadBody {
                body,
                rewrite: rewrite.map(|r| r.streaming()),
                ended: false,
            },
        })
    }
}

/// A read's answer from the backend, its head rewritten for the client.
pub struct ReadAnswer {
    pub status: u16,
    /// End-to-end headers only.
    pub headers: Vec<Header>,
    /// The body's length, when the backend gave one and it stays true.
    pub length: Option<u64>,
    pub body: ReadBody,
}

impl ReadAnswer {
    /// The whole body (for tests and small answers: a read's body is
    /// otherwise streamed).
    pub async fn bytes(mut self) -> Result<Bytes, std::io::Error> {
        use futures_core::Stream;
        let mut out = bytes::BytesMut::new();
        while let Some(chunk) =
            std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_next(cx)).await
        {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }
}

/// A backend's answer body as a stream of chunks, never held whole,
/// rewritten by the adapter as it goes if it must be.
pub struct ReadBody {
    body: reads::Body,
    rewrite: Option<Streaming>,
    ended: bool,
}

impl futures_core::Stream for ReadBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(data))) => match &mut this.rewrite {
                    None => return Poll::Ready(Some(Ok(data))),
                    Some(r) => {
                        let out = r.push(&data);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(out)));
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.ended = true;
                    let rest = this.rewrite.as_mut().map(|r| r.finish());
                    if let Some(rest) = rest.filter(|b| !b.is_empty()) {
                        return Poll::Ready(Some(Ok(rest)));
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The headers of an answer as a list.
fn header_list(headers: &http::HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

/// The `Content-Length` an answer declares.
fn content_length(headers: &[Header]) -> Option<u64> {
    header(headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Whether a body is encoded (gzip, ...): its bytes are not the text an
/// adapter would rewrite, so it is left alone.
fn encoded(headers: &[Header]) -> bool {
    header(headers, "content-encoding").is_some_and(|v| !v.eq_ignore_ascii_case(b"identity"))
}

/// Checksums of a body that rewriting makes false.
const BODY_CHECKSUMS: &[&str] = &["content-md5", "x-ms-content-crc64"];

fn drop_body_checksums(headers: &mut Vec<Header>) {
    headers.retain(|(n, _)| !BODY_CHECKSUMS.iter().any(|c| n.eq_ignore_ascii_case(c)));
}

impl HttpBackend {
    /// One whole exchange with the backend outside the log (a reseed's
    /// export or import): `method path` with `body`, and the status and
    /// body of the answer, at most `limit` bytes of it, within the
    /// request timeout.
    pub async fn whole(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
        limit: usize,
    ) -> Result<(u16, Bytes), String> {
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("invalid method {method:?}"))?;
        let uri: Uri = format!("{}{}", self.base, path)
            .parse()
            .map_err(|e| format!("invalid path {path:?}: {e}"))?;
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let total = self.cfg.request_timeout;
        let exchange = async {
            let resp = self.reader().request(req).await.map_err(|e| describe(&e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| format!("the answer was cut short or above {limit} bytes: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(total, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no complete answer within {total:?}")),
        }
    }
}

/// A client error with its causes, for a 502 body.
fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

impl Backend for HttpBackend {
    fn call(&self, slot: Slot, index: u32, update: Update) -> BackendFuture {
        let (req, roots, asked) = match self.build(slot, index, &update.payload) {
            Ok(built) => built,
            Err(why) => {
                tracing::warn!(slot, index, %why, "update cannot be sent to the backend");
                return Box::pin(std::future::ready(reply(
                    BAD_REQUEST_STATUS,
                    &StoredResponse::text(why),
                    &[],
                )));
            }
        };
        let limit = self.cfg.max_response_bytes;
        let total = self.cfg.request_timeout;
        let named = self.cfg.digest_headers.clone();
        let answer = Answering {
            adapter: self.cfg.adapter.clone(),
            roots,
            asked,
        };
        let via = match &self.pipeline {
            Some((pipeline, host)) => {
                let head = req.method() == Method::HEAD;
                // One path, one lane (`Pipeline::send`).
                let lane = xxhash_rust::xxh3::xxh3_64(req.uri().path().as_bytes());
                Via::Pipeline(pipeline.clone(), encode_request(&req, host), head, lane)
            }
            None => Via::Pool(self.client.clone(), Box::new(req.map(Full::new))),
        };
        Box::pin(async move {
            let exchange = async {
                match via {
                    Via::Pool(client, req) => exchange(client, *req, limit, &named, &answer).await,
                    Via::Pipeline(pipeline, bytes, head, lane) => {
                        match pipeline.send(bytes, head, lane).await {
                            Outcome::Answer(a) => {
                                let headers = header_list(&a.headers);
                                answered(a.status, headers, a.body, &named, &answer)
                            }
                            Outcome::TooLarge { status } => too_large(status, limit),
                            Outcome::Failed(reason) => BackendReply::Unreachable { reason },
                        }
                    }
                }
            };
            let reply = match tokio::time::timeout(total, exchange).await {
                Ok(reply) => reply,
                Err(_) => BackendReply::Unreachable {
                    reason: format!("no complete response within {total:?}"),
                },
            };
            // Retries back off to one every few seconds: one line each
            // says why the node is not applying (a refused certificate,
            // a backend down).
            if let BackendReply::Unreachable { reason } = &reply {
                tracing::warn!(slot, index, %reason, "backend unreachable; the update is retried");
            }
            reply
        })
    }
}

/// How an update goes to the backend.
enum Via {
    Pool(HyperClient, Box<Request<Full<Bytes>>>),
    /// The encoded request, whether it is a HEAD, and its lane.
    Pipeline(Arc<Pipeline>, Bytes, bool, u64),
}

/// The lanes of a pipelining backend at `origin` (`scheme://authority`).
fn lanes(
    origin: &str,
    tls: Option<rustls::ClientConfig>,
    cfg: &HttpBackendConfig,
) -> Result<(Arc<Pipeline>, String), String> {
    let (dial, host_header) = dial(origin, tls)?;
    let depth = cfg.pipeline_depth.max(1);
    let lanes = cfg.concurrency.max(1).div_ceil(depth);
    let limits = Limits {
        depth,
        queue: 2 * cfg.concurrency.max(depth),
        connect: cfg.connect_timeout,
        request: cfg.request_timeout,
        idle: cfg.pool_idle_timeout,
        max_body: cfg.max_response_bytes,
    };
    let pipeline = Pipeline::new(lanes, Arc::new(dial), limits);
    Ok((Arc::new(pipeline), host_header))
}

/// How connections to the backend at `origin` (`scheme://authority`) are
/// made, and the `Host` requests on them carry.
fn dial(origin: &str, tls: Option<rustls::ClientConfig>) -> Result<(Dial, String), String> {
    let authority: http::uri::Authority = origin
        .split_once("://")
        .map_or(origin, |(_, a)| a)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let default_port = if tls.is_some() { 443 } else { 80 };
    let port = authority.port_u16().unwrap_or(default_port);
    // As hyper's client names it: the host, and the port unless it is the
    // scheme's default.
    let host_header = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_string(),
    };
    let tls = match tls {
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        }
        None => None,
    };
    Ok((Dial { host, port, tls }, host_header))
}

/// Connections for the pipeline and the reads: TCP without Nagle's delay, TLS on top
/// for an https backend (its name sent and checked as for the pool's).
struct Dial {
    host: String,
    port: u16,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Connect for Dial {
    fn connect(&self) -> BoxFuture<std::io::Result<Box<dyn Stream>>> {
        let (host, port, tls) = (self.host.clone(), self.port, self.tls.clone());
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            Ok(match tls {
                Some((connector, name)) => {
                    Box::new(connector.connect(name, tcp).await?) as Box<dyn Stream>
                }
                None => Box::new(tcp),
            })
        })
    }
}

/// How an update's answer is rewritten before it is digested.
struct Answering {
    adapter: Arc<dyn Adapter>,
    roots: Roots,
    asked: Asked,
}

/// Send one request and read the whole response.
async fn exchange(
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    req: Request<Full<Bytes>>,
    limit: usize,
    digest_headers: &[String],
    answer: &Answering,
) -> BackendReply {
    let resp = match client.request(req).await {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(h) = find_hyper_error(&e).filter(|h| h.is_user()) {
                // hyper refused the request itself: the same on every
                // node and on every retry, so it is the final answer.
                let why = format!("ordo: cannot send the request: {h}");
                return reply(BAD_REQUEST_STATUS, &StoredResponse::text(why), &[]);
            }
            return BackendReply::Unreachable { reason: chain(&e) };
        }
    };
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    let headers = header_list(&parts.headers);
    if content_length(&headers).is_some_and(|n| n > limit as u64) {
        return too_large(status, limit);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => answered(
            status,
            headers,
            collected.to_bytes(),
            digest_headers,
            answer,
        ),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => too_large(status, limit),
        Err(e) => BackendReply::Unreachable {
            reason: format!("response body cut short: {}", chain(&*e)),
        },
    }
}

/// The reply for the backend's whole answer: its end-to-end headers and
/// its body rewritten, then digested.
fn answered(
    status: u16,
    mut headers: Vec<Header>,
    mut body: Bytes,
    digest_headers: &[String],
    answer: &Answering,
) -> BackendReply {
    strip_hop_by_hop(&mut headers);
    // Rewritten before the digest: answers that differ only by each
    // backend's own address must agree.
    let Answering {
        adapter,
        roots,
        asked,
    } = answer;
    adapter.answer_headers(roots, asked, &mut headers);
    if let Some(new) = adapter
        .answer_body(roots, asked, &headers)
        .filter(|_| !encoded(&headers))
        .and_then(|r| r.whole(&body))
    {
        body = new;
        drop_body_checksums(&mut headers);
    }
    let body = adapter.settle_answer(status, body);
    reply(status, &StoredResponse { headers, body }, digest_headers)
}

/// ordo's answer to a response body over the limit (module docs).
fn too_large(status: u16, limit: usize) -> BackendReply {
    let text = format!(
        "ordo: the backend answered {status} with a body larger than the limit of {limit} bytes; \
         the update was applied, its response was dropped"
    );
    if is_retryable(status) {
        // Not an answer: retried, like any other retryable status.
        return reply(status, &StoredResponse::text(text), &[]);
    }
    let mut resp = StoredResponse::text(text);
    resp.headers
        .push((BACKEND_STATUS.to_string(), status.to_string().into_bytes()));
    reply(TOO_LARGE_STATUS, &resp, &[BACKEND_STATUS.to_string()])
}

/// The reply for a response: the encoded response and its digest over
/// the status, the body and the headers named (the first value of each,
/// absent ones count as empty, so a header missing on one node and
/// present on another differs).
pub fn reply(status: u16, resp: &StoredResponse, digest_headers: &[String]) -> BackendReply {
    let named: Vec<(&str, &[u8])> = digest_headers
        .iter()
        .map(|n| (n.as_str(), resp.header(n).unwrap_or(b"")))
        .collect();
    BackendReply::Response {
        status,
        body: resp.encode(),
        digest: crate::apply::digest::response(status, &resp.body, &named),
    }
}

fn find_hyper_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a hyper::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return Some(h);
        }
        cur = err.source();
    }
    None
}

/// An error and its causes, on one line.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = err.source();
    }
    text
}

fn parse_base(url: &str) -> Result<String, HttpBackendError> {
    let bad = |why: &str| HttpBackendError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s,
        _ => return Err(bad("expected http://host:port or https://host:port")),
    };
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if uri.query().is_some() {
        return Err(bad("a base URL has no query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{prefix}"))
}

fn check_name(what: &'static str, name: &str) -> Result<(), HttpBackendError> {
    let bad = |why| HttpBackendError::BadName {
        what,
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        return Err(bad("use letters, digits, '-', '_', '.' or '~'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::ballot::{NodeId, UpdateId};

    fn backend(url: &str) -> HttpBackend {
        match HttpBackend::new(url, "prod", "movies", HttpBackendConfig::default()) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

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

    #[test]
    fn base_urls() {
        assert_eq!(backend("http://127.0.0.1:80").base(), "http://127.0.0.1:80");
        assert_eq!(backend("http://h:8/api/").base(), "http://h:8/api");
        // https needs TLS settings; with them it is a base like another.
        for bad in ["https://h", "h:80", "ftp://h", "http://h/?q", "/x"] {
            assert!(
                HttpBackend::new(bad, "c", "s", HttpBackendConfig::default()).is_err(),
                "{bad}"
            );
        }
        for name in ["", "a/b", "a b", "é"] {
            assert!(HttpBackend::new("http://h", name, "s", HttpBackendConfig::default()).is_err());
            assert!(HttpBackend::new("http://h", "c", name, HttpBackendConfig::default()).is_err());
        }
    }

    /// With `strip_prefix`, the backend gets the path under the prefix,
    /// below its base URL's own path.
    #[test]
    fn stripped_prefixes_map_onto_the_base_path() {
        let cfg = |stripped: &str| HttpBackendConfig {
            presenting: Presenting {
                stripped: stripped.into(),
                ..HttpBackendConfig::default().presenting
            },
            ..HttpBackendConfig::default()
        };
        let b = HttpBackend::new("http://h:8/acct", "c", "s", cfg("/movies")).expect("backend");
        assert_eq!(b.target("/movies/c/b?x=1"), "/acct/c/b?x=1");
        assert_eq!(b.target("/movies"), "/acct");
        assert_eq!(b.target("/movies?comp=list"), "/acct?comp=list");
        let b = HttpBackend::new("http://h:8", "c", "s", cfg("/movies/")).expect("backend");
        assert_eq!(b.target("/movies/c"), "/c");
        assert_eq!(b.target("/movies"), "/");
        let b = HttpBackend::new("http://h:8/api", "c", "s", cfg("")).expect("backend");
        assert_eq!(b.target("/movies/c"), "/api/movies/c");
    }

    #[test]
    fn the_request_sent() {
        let b = backend("http://h:8/api");
        let req = ProxiedRequest {
            method: "PATCH".into(),
            path_and_query: "/kv/a?x=1".into(),
            headers: vec![
                ("Content-Type".into(), b"application/json".to_vec()),
                ("Connection".into(), b"x-hop".to_vec()),
                ("X-Hop".into(), b"1".to_vec()),
                ("Host".into(), b"client".to_vec()),
                ("Idempotency-Key".into(), b"client-key".to_vec()),
                ("Expect".into(), b"100-continue".to_vec()),
                ("X-E2e".into(), b"a".to_vec()),
                ("x-e2e".into(), b"b".to_vec()),
            ],
            body: Bytes::from_static(b"[1]"),
        };
        let (built, roots, asked) = match b.build(7, 2, &req.encode()) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        // Answers are mapped by the client's Host, the backend gets its own.
        assert_eq!(roots.presented.as_deref(), Some("http://client"));
        assert_eq!(roots.backend, "http://h:8/api");
        assert_eq!(asked.path_and_query, "/kv/a?x=1");
        assert_eq!(built.method(), Method::PATCH);
        assert_eq!(built.uri(), "http://h:8/api/kv/a?x=1");
        let h = built.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["idempotency-key"], "prod/movies/7.2");
        assert_eq!(h.get_all("idempotency-key").iter().count(), 1);
        let e2e: Vec<_> = h.get_all("x-e2e").iter().collect();
        assert_eq!(e2e, ["a", "b"]);
        for gone in ["connection", "x-hop", "host", "expect"] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    fn final_400(b: &HttpBackend, payload: Bytes) -> String {
        let fut = b.call(3, 0, update(payload));
        let reply = futures_ready(fut);
        match reply {
            BackendReply::Response { status, body, .. } => {
                assert_eq!(status, BAD_REQUEST_STATUS);
                let r = match StoredResponse::decode(&body) {
                    Ok(r) => r,
                    Err(e) => panic!("{e}"),
                };
                String::from_utf8_lossy(&r.body).into_owned()
            }
            other => panic!("{other:?}"),
        }
    }

    /// The deterministic failures resolve at once, without a runtime.
    fn futures_ready(fut: BackendFuture) -> BackendReply {
        let mut fut = fut;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("not ready"),
        }
    }

    #[test]
    fn undecodable_or_invalid_payloads_get_a_final_400() {
        let b = backend("http://127.0.0.1:1");
        assert!(final_400(&b, Bytes::from_static(b"\x01garbage")).contains("not a request"));
        assert!(final_400(&b, Bytes::new()).contains("empty payload"));
        let mut req = ProxiedRequest {
            method: "P UT".into(),
            path_and_query: "/x".into(),
            ..Default::default()
        };
        assert!(final_400(&b, req.encode()).contains("invalid method"));
        req.method = "PUT".into();
        req.path_and_query = "x".into();
        assert!(final_400(&b, req.encode()).contains("not a path"));
        req.path_and_query = "/a b".into();
        assert!(final_400(&b, req.encode()).contains("invalid request target"));
        req.path_and_query = "/ok".into();
        req.headers = vec![("bad name".into(), b"v".to_vec())];
        assert!(final_400(&b, req.encode()).contains("invalid header name"));
        req.headers = vec![("x-v".into(), b"a\nb".to_vec())];
        assert!(final_400(&b, req.encode()).contains("invalid value"));
        req.headers = vec![];
        req.method = "CONNECT".into();
        assert!(final_400(&b, req.encode()).contains("CONNECT"));
    }

    #[test]
    fn oversize_answers_are_final_unless_retryable() {
        match too_large(201, 10) {
            BackendReply::Response { status, body, .. } => {
                assert_eq!(status, TOO_LARGE_STATUS);
                assert!(!is_retryable(status));
                let r = StoredResponse::decode(&body).ok();
                assert_eq!(
                    r.as_ref().and_then(|r| r.header(BACKEND_STATUS)),
                    Some(&b"201"[..])
                );
            }
            other => panic!("{other:?}"),
        }
        match too_large(503, 10) {
            BackendReply::Response { status, .. } => assert_eq!(status, 503),
            other => panic!("{other:?}"),
        }
    }
}
