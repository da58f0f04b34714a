//! The admin actions on a node's state for one service: disable, enable,
//! clear a divergence (`POST /_ordo/admin/services/{service}/{action}`,
//! used by `ordo admin`).
//!
//! Guarded: with `admin.token` (or `admin.token_file`) configured, a
//! request must carry `Authorization: Bearer TOKEN`, compared in constant
//! time; without one, only clients on this machine (loopback) may act.
//! Anything else gets 401 and changes nothing. The answer comes once the
//! new state is on disk.

use super::{Gateway, plain};
use crate::apply::applier::Operator;
use crate::node::actors::Operate;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};

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
            let local = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
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

/// One admin action (see the module comment).
pub async fn action(
    gw: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<Reason>,
) -> HttpResponse {
    if let Some(why) = refused(&gw, &req) {
        return plain(StatusCode::UNAUTHORIZED, why);
    }
    let (service, action) = path.into_inner();
    let Some(s) = gw.service(&service) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("ordo: no service named {service:?} on this node"),
        );
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
