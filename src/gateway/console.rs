//! The web console, on `listen.console`: server-rendered HTML, no build
//! step, a little plain JavaScript for live updates and actions.
//!
//! - `GET /`: every service: each node with its role, state and reason,
//!   last contact, commit and applied index, lag; this node's actions
//!   (disable, enable, clear a divergence) and the membership actions
//!   (promote, demote, transfer), each asking for confirmation; the
//!   membership events. The page reloads its content every 2 s.
//! - `GET /services/{service}/log[?before=SLOT]`: the log, newest first,
//!   50 entries a page: slot, method, path, size, origin node, when this
//!   node learned it was chosen (while it remembers), and every
//!   node's digest of its backend's answer (while the applier holds them:
//!   the digest window and the latest settled slots).
//! - `GET /api/services/{service}/log`: the same as JSON.
//! - The admin API and status/metrics endpoints of the client port
//!   (`/_ordo/...`, `/healthz`, `/readyz`), and `/metrics`.
//!
//! Actions go to the admin API with the bearer token, which the page asks
//! for once and keeps for the browser tab (`sessionStorage`); without it
//! the API answers 401 and nothing changes. The pages need no token:
//! they show what `/_ordo/status` shows, and the log's paths without
//! their query strings. They may not be framed by another site.

use super::{Gateway, own_endpoints, status_json};
use actix_web::{HttpResponse, web};
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;

/// Log entries a page.
const LOG_PAGE: u64 = 50;

/// Mount the console on an actix-web app.
pub fn configure(gw: Arc<Gateway>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::from(gw))
            .configure(own_endpoints)
            .route("/", web::get().to(overview))
            .route("/metrics", web::get().to(super::metrics))
            .route("/services/{service}/log", web::get().to(log_page))
            .route("/api/services/{service}/log", web::get().to(log_json))
            .default_service(web::to(|| async {
                super::plain(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "ordo: no such console page".into(),
                )
            }));
    }
}

/// Text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => esc(s),
        v => esc(&v.to_string()),
    }
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:.8rem 1rem}
header h1{font-size:1.2rem;margin:0}
main{padding:1rem;max-width:70rem;margin:auto}
section{background:#fff;border-radius:8px;padding:1rem;margin-bottom:1rem;box-shadow:0 1px 3px #0002}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #e3e6eb;white-space:nowrap}
.role-leader{background:#1f6feb;color:#fff}.role-active{background:#8fb8ff}.role-backup{background:#d0d4db}
.state-serving{color:#137333}.state-diverged,.state-needs-reseed,.state-stuck{color:#b3261e;font-weight:bold}
.state-disabled,.state-no-quorum,.state-catching-up{color:#9a6700}
.tag{border-radius:4px;padding:.1rem .4rem}
button{margin:.15rem;padding:.35rem .7rem;border-radius:6px;border:1px solid #9aa3b0;background:#fff;cursor:pointer}
button.danger{border-color:#b3261e;color:#b3261e}
small{color:#5f6b7a}
"#;

const SCRIPT: &str = r#"
function token(){let t=sessionStorage.getItem('ordo-token');
 if(t===null){t=prompt('Admin token (empty if this node has none and you are on its machine):')||'';sessionStorage.setItem('ordo-token',t);}return t;}
async function act(url,question){
 if(!confirm(question))return;
 const t=token();const h=t?{'Authorization':'Bearer '+t}:{};
 const r=await fetch(url,{method:'POST',headers:h});const body=await r.text();
 if(r.status===401)sessionStorage.removeItem('ordo-token');
 document.getElementById('result').textContent=r.status+' '+body;refresh();}
async function refresh(){
 try{const r=await fetch(location.href,{cache:'no-store'});const d=new DOMParser().parseFromString(await r.text(),'text/html');
 const live=d.getElementById('live');if(live)document.getElementById('live').replaceWith(live);}catch(e){}}
setInterval(refresh,2000);
"#;

fn page(title: &str, node: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <title>{t} · ordo {n}</title><style>{STYLE}</style></head><body>\
         <header><h1>ordo · node <span id=node>{n}</span> · {t}</h1></header>\
         <main>{body}<p><small id=result></small></p></main><script>{SCRIPT}</script></body></html>",
        t = esc(title),
        n = esc(node),
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        // Never inside another site's frame (clickjacking the actions).
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Content-Security-Policy", "frame-ancestors 'none'"))
        .body(html)
}

/// A button that POSTs `url` after confirming `question`.
fn action(label: &str, url: &str, question: &str, danger: bool) -> String {
    format!(
        "<button{} onclick=\"act('{}','{}')\">{}</button>",
        if danger { " class=danger" } else { "" },
        esc(url),
        esc(&question.replace('\'', "’")),
        esc(label)
    )
}

async fn overview(gw: web::Data<Gateway>) -> HttpResponse {
    let status = status_json(&gw);
    let mut body = String::from("<div id=live>");
    for s in status["services"].as_array().into_iter().flatten() {
        service_section(&gw, s, &mut body);
    }
    body.push_str("</div>");
    page("overview", &gw.node, &body)
}

fn service_section(gw: &Gateway, s: &Value, out: &mut String) {
    let name = s["service"].as_str().unwrap_or("?");
    let m = &s["membership"];
    let leader = s["leader"].as_str();
    let active: Vec<&str> = m["active"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let known = s["known_commit"].as_u64().unwrap_or(0);
    let _ = write!(
        out,
        "<section><h2>{n}</h2><p>leader: <b id='leader-{n}'>{l}</b> · commit {c} · \
         <a href='/services/{n}/log'>log</a></p><div class=scroll><table><thead><tr>\
         <th>node</th><th>role</th><th>state</th><th>last contact</th><th>commit</th>\
         <th>applied</th><th>lag</th><th></th></tr></thead><tbody>",
        n = esc(name),
        l = leader.map_or("none known".into(), esc),
        c = known,
    );
    // What the leader reported of every node (only the leader knows).
    let peers: Vec<&Value> = m["nodes"].as_array().into_iter().flatten().collect();
    for node in &gw.node_names {
        let role = if Some(node.as_str()) == leader {
            "leader"
        } else if active.contains(&node.as_str()) {
            "active"
        } else {
            "backup"
        };
        let me = *node == gw.node;
        let peer = peers.iter().find(|p| p["node"] == node.as_str());
        let (state, reason, contact, commit, applied) = if me {
            (
                text(&s["state"]),
                text(&s["reason"]),
                "this node".to_string(),
                text(&s["commit"]),
                s["applied"].as_u64(),
            )
        } else if let Some(p) = peer {
            let fit = p["fit"].as_bool().unwrap_or(false);
            (
                if fit { "fit" } else { "unfit" }.to_string(),
                if fit {
                    String::new()
                } else {
                    "diverged, disabled, rebuilding or needs a reseed: see its console".into()
                },
                format!("{} ms ago", text(&p["heard_ms_ago"])),
                text(&p["commit"]),
                p["applied"].as_u64(),
            )
        } else {
            (
                "—".into(),
                "known to the leader's console".into(),
                "—".into(),
                "—".into(),
                None,
            )
        };
        let lag = applied.map_or("—".into(), |a| known.saturating_sub(a).to_string());
        let _ = write!(
            out,
            "<tr id='node-{n}'><td><b>{n}</b></td><td><span class='tag role-{role}'>{role}</span></td>\
             <td><span class='state-{state}'>{state}</span><br><small>{reason}</small></td>\
             <td>{contact}</td><td>{commit}</td><td>{applied}</td><td>{lag}</td><td>",
            n = esc(node),
            applied = applied.map_or("—".into(), |a| a.to_string()),
        );
        let base = format!("/_ordo/admin/services/{name}");
        if me {
            if s["disabled"].is_null() {
                out.push_str(&action(
                    "disable",
                    &format!("{base}/disable?reason=disabled+from+the+console"),
                    &format!(
                        "Disable {node} for {name}? It refuses reads and updates until enabled."
                    ),
                    true,
                ));
            } else {
                out.push_str(&action(
                    "enable",
                    &format!("{base}/enable"),
                    &format!("Enable {node} for {name}?"),
                    false,
                ));
            }
            if !s["diverged"].is_null() {
                out.push_str(&action(
                    "clear divergence",
                    &format!("{base}/clear-divergence"),
                    &format!("Was {node}'s backend repaired? Clear its divergence?"),
                    true,
                ));
            }
        }
        match role {
            "backup" => out.push_str(&action(
                "promote",
                &format!("{base}/members/promote?node={node}"),
                &format!("Make {node} an active member (a voter) of {name}?"),
                false,
            )),
            _ => {
                out.push_str(&action(
                    "demote",
                    &format!("{base}/members/demote?node={node}"),
                    &format!("Make {node} a backup of {name}? A backup takes its place."),
                    true,
                ));
                if role == "active" {
                    out.push_str(&action(
                        "make leader",
                        &format!("{base}/members/transfer?node={node}"),
                        &format!("Hand leadership of {name} to {node}?"),
                        false,
                    ));
                }
            }
        }
        out.push_str("</td></tr>");
    }
    let _ = write!(
        out,
        "</tbody></table></div><h3>Events</h3><ul id='events-{}'>",
        esc(name)
    );
    let events: Vec<&Value> = m["events"].as_array().into_iter().flatten().collect();
    if events.is_empty() {
        out.push_str("<li><small>none yet</small></li>");
    }
    for e in events.iter().rev() {
        let when = unix_ms_text(e["at_unix_ms"].as_u64().unwrap_or(0));
        let _ = write!(out, "<li><small>{when}</small> {}</li>", text(&e["event"]));
    }
    out.push_str("</ul></section>");
}

/// A Unix time in ms as `YYYY-MM-DD hh:mm:ss.mmm UTC`.
fn unix_ms_text(at: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        })
        .unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct Page {
    before: Option<u64>,
}

/// A page of log entries, as the console shows them, with every node's
/// digest of each as far as this node still holds them.
async fn entries(
    gw: &Gateway,
    service: &str,
    before: Option<u64>,
) -> Option<(Vec<Value>, u64, bool)> {
    let (mut out, first, older) = chosen_entries(gw, service, before)?;
    let s = gw.service(service)?;
    let slots: Vec<u64> = out.iter().filter_map(|e| e["slot"].as_u64()).collect();
    let digests = s
        .handle
        .applier
        .send(crate::node::actors::Digests(slots))
        .await
        .unwrap_or_default();
    for (e, (_, by_node)) in out.iter_mut().zip(digests) {
        let nodes: serde_json::Map<String, Value> = by_node
            .into_iter()
            .map(|(n, d)| (gw.node_name(n), Value::String(format!("{d:016x}"))))
            .collect();
        e["digests"] = Value::Object(nodes);
    }
    Some((out, first, older))
}

/// A page of the chosen log, newest first.
fn chosen_entries(
    gw: &Gateway,
    service: &str,
    before: Option<u64>,
) -> Option<(Vec<Value>, u64, bool)> {
    use crate::paxos::ballot::Value as Chosen;
    let s = gw.service(service)?;
    let last = crate::paxos::state::last_chosen_slot(&s.kv);
    // The log may be compacted below some slot: page down to it, no
    // further.
    let oldest = crate::paxos::state::load_chosen_range(&s.kv, 1, 1)
        .first()
        .map_or(1, |(slot, _)| *slot);
    let top = before.map_or(last, |b| b.saturating_sub(1)).min(last);
    let from = top.saturating_sub(LOG_PAGE - 1).max(oldest).max(1);
    let mut out = Vec::new();
    for (slot, value) in crate::paxos::state::load_chosen_range(&s.kv, from, LOG_PAGE as usize)
        .into_iter()
        .filter(|(slot, _)| *slot <= top)
        .rev()
    {
        let digest = crate::paxos::state::load_digest(&s.kv, slot).map(|d| format!("{d:016x}"));
        let kind = match &value {
            Chosen::Noop => "no-op",
            Chosen::Batch(_) => "updates",
            Chosen::Config(_) => "active set change",
        };
        let updates: Vec<Value> = value
            .updates()
            .iter()
            .map(|u| {
                let req = crate::http::ProxiedRequest::decode(&u.payload).ok();
                serde_json::json!({
                    "method": req.as_ref().map(|r| r.method.clone()),
                    // The path only: a query string may carry secrets,
                    // and these pages need no token.
                    "path": req.as_ref().map(|r| match r.path_and_query.split_once('?') {
                        Some((path, _)) => format!("{path}?…"),
                        None => r.path_and_query.clone(),
                    }),
                    "size": u.payload.len(),
                    "origin": gw.node_name(u.id.origin),
                })
            })
            .collect();
        let chosen_at = s.handle.status.chosen_at(slot).map(unix_ms_text);
        out.push(serde_json::json!({
            "slot": slot,
            "chosen_at": chosen_at,
            "kind": kind,
            "updates": updates,
            "digest": digest,
        }));
    }
    Some((out, from, from > oldest))
}

/// Every node's digest, a differing one marked; this node's alone when
/// the others' are not held (any more).
fn digests_cell(e: &Value) -> String {
    let by_node = e["digests"].as_object().cloned().unwrap_or_default();
    if by_node.is_empty() {
        return format!("<code>{}</code>", text(&e["digest"]));
    }
    let mut count: std::collections::BTreeMap<String, usize> = Default::default();
    for d in by_node.values() {
        *count
            .entry(d.as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    let most = count.values().copied().max().unwrap_or(0);
    by_node
        .iter()
        .map(|(n, d)| {
            let d = d.as_str().unwrap_or("");
            let odd = count.get(d).copied().unwrap_or(0) < most;
            format!(
                "<small>{}</small> <code{}>{}</code>",
                esc(n),
                if odd { " style='color:#b3261e'" } else { "" },
                esc(d)
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

async fn log_json(
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    q: web::Query<Page>,
) -> HttpResponse {
    match entries(&gw, &path, q.before).await {
        Some((e, _, _)) => HttpResponse::Ok().json(serde_json::json!({
            "node": gw.node,
            "service": *path,
            "entries": e,
        })),
        None => super::plain(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("ordo: no service {}", *path),
        ),
    }
}

async fn log_page(
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    q: web::Query<Page>,
) -> HttpResponse {
    let Some((entries, first, older)) = entries(&gw, &path, q.before).await else {
        return super::plain(
            actix_web::http::StatusCode::NOT_FOUND,
            format!("ordo: no service {}", *path),
        );
    };
    let name = esc(&path);
    let mut body = format!(
        "<section><p><a href='/'>overview</a> · log of <b>{name}</b> on this node, newest \
         first. A digest covers a backend's answer (status, body, digest headers); every \
         node's is shown while this node still holds it, a differing one in red</p>\
         <div class=scroll><table><thead><tr><th>slot</th><th>what</th><th>method</th>\
         <th>path</th><th>size</th><th>origin</th><th>chosen (seen here)</th><th>digests</th></tr></thead><tbody>"
    );
    for e in &entries {
        let updates = e["updates"].as_array().cloned().unwrap_or_default();
        let rows = updates.len().max(1);
        for (i, u) in updates
            .iter()
            .map(Some)
            .chain(std::iter::once(None))
            .take(rows)
            .enumerate()
        {
            body.push_str("<tr>");
            if i == 0 {
                let _ = write!(
                    body,
                    "<td rowspan={rows}>{}</td><td rowspan={rows}>{}</td>",
                    text(&e["slot"]),
                    text(&e["kind"])
                );
            }
            match u {
                Some(u) => {
                    let _ = write!(
                        body,
                        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
                        text(&u["method"]),
                        text(&u["path"]),
                        text(&u["size"]),
                        text(&u["origin"])
                    );
                }
                None => body.push_str("<td>—</td><td>—</td><td>—</td><td>—</td>"),
            }
            if i == 0 {
                let _ = write!(
                    body,
                    "<td rowspan={rows}><small>{}</small></td><td rowspan={rows}>{}</td>",
                    text(&e["chosen_at"]),
                    digests_cell(e)
                );
            }
            body.push_str("</tr>");
        }
    }
    body.push_str("</tbody></table></div>");
    if older {
        let _ = write!(
            body,
            "<p><a href='/services/{name}/log?before={first}'>older</a></p>"
        );
    }
    body.push_str("</section>");
    page(&format!("log of {}", *path), &gw.node, &body)
}
