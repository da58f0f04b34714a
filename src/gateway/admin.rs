//! The admin actions on a node's state for one service: disable, enable,
//! clear a divergence (`POST /_ordo/admin/services/{service}/{action}`,
//! used by `ordo admin`), and the two halves of a reseed, `export` on
//! the donor and `import` on the target (used by `ordo reseed`; see
//! `apply::reseed`).
//!
//! Guarded: with `admin.token` (or `admin.token_file`) configured, a
//! request must carry `Authorization: Bearer TOKEN`, compared in constant
//! time; without one, only clients on this machine (loopback) may act.
//! Anything else gets 401 and changes nothing. The answer comes once the
//! new state is on disk.

use super::{Gateway, Service, plain};
use crate::apply::applier::Operator;
use crate::apply::reseed::Envelope;
use crate::node::actors::{CanReseed, Export, Operate};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use std::time::{Duration, Instant};

/// Whether `a` and `b` are equal, in time that depends only on their
/// lengths (so a guesser learns nothing from how fast it is refused).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why `req` may not act, if it may not.
fn refused(gw: &Gateway, req: &HttpRequest) -> Option<String> {
    // A browser says where a request comes from: a page of another site
    // (one that the operator happens to have open on this machine) must
    // not act through the loopback rule, nor ride a token. The console's
    // own requests come from its own origin; `ordo admin` sends none.
    if let Some(origin) = req.headers().get("origin") {
        let host = req.connection_info().host().to_string();
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(&host));
        if !same {
            return Some(format!(
                "ordo: admin actions are not taken for a page of another origin ({origin:?})"
            ));
        }
    }
    match &gw.admin_token {
        Some(token) => {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            (!same(given.as_bytes(), token.as_bytes())).then(|| {
                "ordo: admin actions need Authorization: Bearer with the admin token".into()
            })
        }
        None => {
            // Loopback, and addressed by a loopback name: a page whose DNS
            // name was rebound to 127.0.0.1 arrives with its own name as
            // Host (and as Origin, so the check above passes it).
            let host = req.connection_info().host().to_ascii_lowercase();
            let name = host
                .rsplit_once(':')
                .filter(|(_, port)| port.parse::<u16>().is_ok())
                .map_or(host.as_str(), |(name, _)| name);
            let loopback_name = matches!(name, "127.0.0.1" | "[::1]" | "localhost");
            let local = loopback_name && req.peer_addr().is_some_and(|a| a.ip().is_loopback());
            (!local).then(|| {
                "ordo: no admin token is configured, so admin actions are taken only from \
                 this machine"
                    .into()
            })
        }
    }
}

#[derive(serde::Deserialize)]
pub struct Reason {
    reason: Option<String>,
}

/// The service `req` may act on, or the answer why not (401, 404).
fn guarded<'a>(
    gw: &'a Gateway,
    req: &HttpRequest,
    service: &str,
) -> Result<&'a Service, Box<HttpResponse>> {
    if let Some(why) = refused(gw, req) {
        return Err(Box::new(plain(StatusCode::UNAUTHORIZED, why)));
    }
    gw.service(service).ok_or_else(|| {
        Box::new(plain(
            StatusCode::NOT_FOUND,
            format!("ordo: no service named {service:?} on this node"),
        ))
    })
}

/// One admin action (see the module comment).
pub async fn action(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<Reason>,
) -> HttpResponse {
    let (service, action) = path.into_inner();
    let s = match guarded(&gw, &req, &service) {
        Ok(s) => s,
        Err(answer) => return *answer,
    };
    let op = match action.as_str() {
        "disable" => Operator::Disable {
            reason: query
                .into_inner()
                .reason
                .unwrap_or_else(|| "no reason given".into()),
        },
        "enable" => Operator::Enable,
        "clear-divergence" => Operator::ClearDivergence,
        other => {
            return plain(
                StatusCode::NOT_FOUND,
                format!(
                    "ordo: no admin action {other:?}; there are disable, enable and \
                     clear-divergence"
                ),
            );
        }
    };
    if s.handle.applier.send(Operate(op)).await.is_err() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ordo: the applier of {service} is not running"),
        );
    }
    let st = s.handle.status.node_state();
    HttpResponse::Ok().json(serde_json::json!({
        "node": gw.node,
        "service": service,
        "action": action,
        "disabled": st.disabled,
        "diverged": st.diverged.map(|d| d.slot),
    }))
}

/// The largest reseed export taken or given.
pub const RESEED_BYTES_MAX: usize = 256 << 20;

/// How long a reseed waits for the applier to reach a slot boundary.
const PAUSE_WAIT: Duration = Duration::from_secs(30);

/// The service, and its backend's reseed path, if `req` may reseed it;
/// else the answer why not.
fn reseedable<'a>(
    gw: &'a Gateway,
    req: &HttpRequest,
    service: &str,
) -> Result<(&'a Service, String), Box<HttpResponse>> {
    if let Some(why) = refused(gw, req) {
        return Err(Box::new(plain(StatusCode::UNAUTHORIZED, why)));
    }
    let Some(s) = gw.service(service) else {
        return Err(Box::new(plain(
            StatusCode::NOT_FOUND,
            format!("ordo: no service named {service:?} on this node"),
        )));
    };
    let Some(path) = s.snapshot.clone() else {
        return Err(Box::new(plain(
            StatusCode::CONFLICT,
            format!(
                "ordo: service {service} names no snapshot path (services[].snapshot), so its \
                 backend cannot be exported or imported; see docs/operations.md for the \
                 manual procedure"
            ),
        )));
    };
    Ok((s, path))
}

/// Pause the applier and wait for its slot boundary: the replicated
/// state there, or why not (then it is resumed).
async fn pause(s: &Service) -> Result<Envelope, String> {
    let applier = &s.handle.applier;
    applier
        .send(Operate(Operator::Pause))
        .await
        .map_err(|_| "the applier is not running".to_string())?;
    let deadline = Instant::now() + PAUSE_WAIT;
    loop {
        match applier.send(Export).await {
            Ok(Some(e)) => return Ok(e),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(None) => {
                resume(s).await;
                return Err(format!(
                    "the applier did not finish its slot within {PAUSE_WAIT:?} (a backend that \
                     does not answer?)"
                ));
            }
            Err(_) => return Err("the applier is not running".into()),
        }
    }
}

async fn resume(s: &Service) {
    let _ = s.handle.applier.send(Operate(Operator::Resume)).await;
}

/// Donor side: pause at a slot boundary, export the backend and the
/// replicated state there, resume; answer the encoded `Envelope`.
pub async fn export(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let (s, snapshot) = match reseedable(&gw, &req, &path) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let mut envelope = match pause(s).await {
        Ok(e) => e,
        Err(why) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("ordo: {why}")),
    };
    let got = s
        .backend
        .whole("GET", &snapshot, bytes::Bytes::new(), RESEED_BYTES_MAX)
        .await;
    resume(s).await;
    match got {
        Ok((200, body)) => {
            envelope.backend = body.to_vec();
            tracing::info!(service = %s.name, slot = envelope.slot, bytes = body.len(), "reseed export");
            HttpResponse::Ok()
                .content_type("application/octet-stream")
                .insert_header(("Ordo-Slot", envelope.slot.to_string()))
                .body(envelope.encode())
        }
        Ok((status, body)) => plain(
            StatusCode::BAD_GATEWAY,
            format!(
                "ordo: the backend answered GET {snapshot} with {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        ),
        Err(why) => plain(
            StatusCode::BAD_GATEWAY,
            format!("ordo: the backend's export failed: {why}"),
        ),
    }
}

/// Target side: pause at a slot boundary, import the backend state, take
/// the replicated state and the slot, resume from the next slot.
pub async fn import(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let (s, snapshot) = match reseedable(&gw, &req, &path) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let mut envelope = match Envelope::decode(&body) {
        Ok(e) => e,
        Err(why) => return plain(StatusCode::BAD_REQUEST, format!("ordo: {why}")),
    };
    if let Err(why) = pause(s).await {
        return plain(StatusCode::SERVICE_UNAVAILABLE, format!("ordo: {why}"));
    }
    let slot = envelope.slot;
    let refuse = |status, why: String| plain(status, format!("ordo: {why}"));
    let answer = match s.handle.applier.send(CanReseed(slot)).await {
        Ok(Ok(())) => {
            let backend = std::mem::take(&mut envelope.backend);
            match s
                .backend
                .whole("PUT", &snapshot, backend.into(), 1 << 20)
                .await
            {
                Ok((status, _)) if (200..300).contains(&status) => {
                    let taken = s
                        .handle
                        .applier
                        .send(Operate(Operator::Reseed(Box::new(envelope))))
                        .await;
                    match taken {
                        Ok(()) => {
                            tracing::warn!(service = %s.name, slot, "reseeded: applying from the next slot");
                            HttpResponse::Ok().json(serde_json::json!({
                                "node": gw.node,
                                "service": s.name,
                                "reseeded_at": slot,
                            }))
                        }
                        Err(_) => refuse(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the applier is not running".into(),
                        ),
                    }
                }
                Ok((status, body)) => refuse(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "the backend answered PUT {snapshot} with {status}: {}; nothing changed in \
                         ordo (the backend may hold part of the import: reseed again)",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ),
                ),
                Err(why) => refuse(
                    StatusCode::BAD_GATEWAY,
                    format!("the backend's import failed: {why}; reseed again"),
                ),
            }
        }
        Ok(Err(why)) => refuse(StatusCode::CONFLICT, why),
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the applier is not running".into(),
        ),
    };
    resume(s).await;
    answer
}

/// Which node a membership request names, and the voter it replaces.
#[derive(serde::Deserialize)]
pub struct MemberQuery {
    node: Option<String>,
    replace: Option<String>,
}

/// How long a membership request waits for the leader's answer.
const MEMBER_WAIT: Duration = Duration::from_secs(5);

/// `GET /_ordo/admin/services/{service}/members`: the active set, its
/// eras, and (from the leader) what every node reported. Read-only, like
/// `/_ordo/status`.
pub async fn members(gw: web::Data<Gateway>, path: web::Path<String>) -> HttpResponse {
    let service = path.into_inner();
    let Some(s) = gw.service(&service) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("ordo: no service named {service:?} on this node"),
        );
    };
    let st = &s.handle.status;
    HttpResponse::Ok().json(serde_json::json!({
        "node": gw.node,
        "service": service,
        "leader": st.leader().map(|n| gw.node_name(n)),
        "membership": gw.membership_json(s),
    }))
}

/// `POST /_ordo/admin/services/{service}/members/{promote|demote|transfer}?node=NAME`
/// (`promote` may name `&replace=VOTER`): asks the leader, through this
/// node's proposer, and answers with what the leader did (200), why it
/// did not (409), or that no answer came (504).
pub async fn member_op(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<MemberQuery>,
) -> HttpResponse {
    use crate::paxos::members::MemberOp;
    let (service, action) = path.into_inner();
    let s = match guarded(&gw, &req, &service) {
        Ok(s) => s,
        Err(answer) => return *answer,
    };
    let q = query.into_inner();
    let id_of = |name: Option<&str>, what: &str| {
        let name = name.ok_or_else(|| format!("ordo: {action} needs ?{what}=NODE"))?;
        gw.id_of(name).ok_or_else(|| {
            format!(
                "ordo: no node named {name:?}; the nodes are {}",
                gw.node_names.join(", ")
            )
        })
    };
    let node = match id_of(q.node.as_deref(), "node") {
        Ok(n) => n,
        Err(why) => return plain(StatusCode::BAD_REQUEST, why),
    };
    let replace = match q.replace.as_deref() {
        None => None,
        Some(r) => match id_of(Some(r), "replace") {
            Ok(n) => Some(n),
            Err(why) => return plain(StatusCode::BAD_REQUEST, why),
        },
    };
    let op = match action.as_str() {
        "promote" => MemberOp::Promote { node, replace },
        "demote" => MemberOp::Demote { node },
        "transfer" => MemberOp::Transfer { node },
        other => {
            return plain(
                StatusCode::NOT_FOUND,
                format!(
                    "ordo: no membership action {other:?}; there are promote, demote and transfer"
                ),
            );
        }
    };
    let id = rand::random::<u64>();
    let asked = s
        .handle
        .proposer
        .send(crate::node::actors::Member { id, op });
    if asked.await.is_err() {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ordo: the proposer of {service} is not running"),
        );
    }
    let deadline = Instant::now() + MEMBER_WAIT;
    loop {
        let m = s.handle.status.membership();
        let done = m
            .ops
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, r)| r.clone());
        match done {
            Some(Ok(what)) => {
                return HttpResponse::Ok().json(serde_json::json!({
                    "node": gw.node,
                    "service": service,
                    "result": gw.with_names(&what),
                    "membership": gw.membership_json(s),
                }));
            }
            Some(Err(why)) => {
                return plain(
                    StatusCode::CONFLICT,
                    format!("ordo: {}", gw.with_names(&why)),
                );
            }
            None if Instant::now() >= deadline => {
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "ordo: no answer from the leader within {}s; the request may still be \
                         acted on: see /_ordo/status",
                        MEMBER_WAIT.as_secs()
                    ),
                );
            }
            None => actix_web::rt::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
