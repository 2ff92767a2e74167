//! The hub's HTTP side for people and scripts, on the same TLS port as the nodes:
//!
//! - the operator console (`/`, `/login`), with accounts hashed by argon2 and a session cookie
//!   (`Secure`, `HttpOnly`, `SameSite=Strict`);
//! - the REST API under `/api/v1/` (points, nodes, keys, tokens, audit), described by
//!   `/api/v1/openapi.json`;
//! - the JSON WebSocket API at `/api/v1/ws` (subscribe by pattern, snapshot then changes with
//!   quality, writes where granted), for browser HMIs and scripts; its messages are described by
//!   JSON Schema in `schemas/json/`;
//! - Prometheus metrics at `/metrics` (OpenMetrics text).
//!
//! Who may do what: a console user sees the points matching its namespaces and the nodes it is
//! limited to; only an unrestricted admin manages keys and tokens. An API token (`phk_…`, made
//! with `pointhub hub api-tokens create`) reads and writes what its patterns allow, and may read
//! the REST API and `/metrics`.

use crate::access::{AdminRequest, Grant};
use crate::core::{Subscriber, CONFLATED_TOTAL};
use crate::server::Hub;
use crate::store::{ApiTokenRecord, UserRecord, UserRole};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use dashmap::DashMap;
use pointhub_client::Fingerprint;
use pointhub_schemas::{json as record, Pattern, Timestamp, Value, WriteRequest};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

const COOKIE: &str = "ph_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Console sessions.
#[derive(Default)]
pub struct WebState {
    sessions: DashMap<String, (String, Instant)>,
}

/// Who is asking.
#[derive(Clone)]
pub enum Principal {
    User(UserRecord),
    Token(ApiTokenRecord),
}

impl Principal {
    fn read(&self) -> Vec<Pattern> {
        let pats = match self {
            Principal::User(u) => &u.namespaces,
            Principal::Token(t) => &t.read,
        };
        pats.iter().filter_map(|p| Pattern::parse(p).ok()).collect()
    }
    fn write(&self) -> Vec<Pattern> {
        match self {
            Principal::User(_) => Vec::new(),
            Principal::Token(t) => t
                .write
                .iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect(),
        }
    }
    fn sees_node(&self, name: &str) -> bool {
        match self {
            Principal::User(u) => u.nodes.is_empty() || u.nodes.iter().any(|n| n == name),
            Principal::Token(_) => true,
        }
    }
    fn is_admin(&self) -> bool {
        matches!(self, Principal::User(u) if u.role == UserRole::Admin && u.unrestricted())
    }
    fn name(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{}", u.name),
            Principal::Token(t) => format!("api-token:{}", t.name),
        }
    }
}

/// An API error: a status and a sentence; internals are logged, never sent.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "log in, or send Authorization: Bearer <api token>".into(),
    )
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_string())
        })
}

/// Finds who is asking: a console session cookie, a bearer token, or `?token=`.
async fn principal(
    hub: &Arc<Hub>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Principal, ApiError> {
    if let Some(sid) = cookie(headers) {
        let user = hub
            .web
            .sessions
            .get(&sid)
            .filter(|s| s.1 > Instant::now())
            .map(|s| s.0.clone());
        if let Some(user) = user {
            if let Ok(Some(u)) = hub.access.store.user(&user) {
                return Ok(Principal::User(u));
            }
        }
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| query_token.map(str::to_string));
    if let Some(t) = bearer {
        let hash = crate::store::token_hash(t.trim());
        if let Ok(Some(rec)) = hub.access.store.api_token(&hash) {
            return Ok(Principal::Token(rec));
        }
    }
    Err(unauthorized())
}

pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/assets/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE_CSS) }),
        )
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/api/v1/me", get(api_me))
        .route("/api/v1/points", get(api_points))
        .route("/api/v1/nodes", get(api_nodes))
        .route("/api/v1/keys", get(api_keys))
        .route("/api/v1/keys/{fingerprint}/approve", post(api_approve))
        .route("/api/v1/keys/{fingerprint}/revoke", post(api_revoke))
        .route("/api/v1/tokens", post(api_tokens))
        .route("/api/v1/audit", get(api_audit))
        .route("/api/v1/ws", get(api_ws))
        .route("/metrics", get(metrics))
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const OPENAPI: &str = include_str!("../assets/openapi.json");

async fn index(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    match principal(&hub, &headers, None).await {
        Ok(Principal::User(_)) => Html(INDEX_HTML).into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}

async fn login_page() -> Html<&'static str> {
    Html(LOGIN_HTML)
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(
    State(hub): State<Arc<Hub>>,
    Extension(peer): axum::Extension<crate::server::Peer>,
    Form(f): Form<LoginForm>,
) -> Response {
    let user = hub.access.store.user(&f.name).ok().flatten();
    let ok = match &user {
        Some(u) => {
            let (pw, hash) = (f.password.clone(), u.hash.clone());
            tokio::task::spawn_blocking(move || crate::access::verify_password(&pw, &hash))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if !ok {
        hub.access.audit.record("login.failed", json!({"user": f.name.chars().take(64).collect::<String>(), "remote": peer.addr.to_string()}));
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Redirect::to("/login?failed=1").into_response();
    }
    let Ok(sid) = crate::access::new_secret(32) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
    };
    hub.web.sessions.retain(|_, s| s.1 > Instant::now());
    hub.web
        .sessions
        .insert(sid.clone(), (f.name.clone(), Instant::now() + SESSION_TTL));
    hub.access.audit.record(
        "login",
        json!({"user": f.name, "remote": peer.addr.to_string()}),
    );
    info!(user = %f.name, "console login");
    let c = format!(
        "{COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    ([(header::SET_COOKIE, c)], Redirect::to("/")).into_response()
}

use axum::Extension;

async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if let Some(sid) = cookie(&headers) {
        hub.web.sessions.remove(&sid);
    }
    let c = format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, c)], Redirect::to("/login")).into_response()
}

async fn api_me(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    Ok(Json(match &p {
        Principal::User(u) => {
            json!({"kind": "user", "name": u.name, "role": u.role, "admin": p.is_admin(), "hub": hub.name.as_ref()})
        }
        Principal::Token(t) => {
            json!({"kind": "api-token", "name": t.name, "role": "viewer", "admin": false, "hub": hub.name.as_ref()})
        }
    }))
}

#[derive(Deserialize)]
struct PointsQuery {
    pattern: Option<String>,
}

fn point_json(table: &crate::core::Table, p: &crate::core::PointEntry) -> serde_json::Value {
    let mut v = record::record(
        table.name(p),
        &p.value,
        p.quality,
        p.source_ts,
        p.hub_ts,
        false,
    );
    if let Some(m) = v.as_object_mut() {
        m.insert("unit".into(), json!(p.unit()));
        m.insert("writable".into(), json!(p.writable));
        m.insert("owner".into(), json!(table.owner(p).as_ref()));
        m.insert("connected".into(), json!(p.owner_session().is_some()));
    }
    v
}

async fn api_points(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<PointsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let pattern = Pattern::parse(q.pattern.as_deref().unwrap_or("**"))
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("pattern: {e}")))?;
    let read = p.read();
    let table = hub.core.table_read();
    let mut out: Vec<serde_json::Value> = table
        .points
        .iter()
        .filter(|pt| {
            let name = table.name(pt);
            pattern.matches(name)
                && read.iter().any(|r| r.matches(name))
                && p.sees_node(table.owner(pt))
        })
        .map(|pt| point_json(&table, pt))
        .collect();
    drop(table);
    out.sort_by(|a, b| a["point"].as_str().cmp(&b["point"].as_str()));
    Ok(Json(json!(out)))
}

async fn api_nodes(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let keys = hub
        .access
        .execute(AdminRequest::KeysList, "console")
        .unwrap_or_else(|_| json!([]));
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    {
        let table = hub.core.table_read();
        for pt in &table.points {
            *counts.entry(table.owner(pt).to_string()).or_default() += 1;
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in hub.live.iter() {
        if !p.sees_node(&e.name) {
            continue;
        }
        seen.insert(e.name.clone());
        out.push(json!({
            "name": e.name,
            "role": e.role.as_str(),
            "connected": true,
            "remote": e.remote.to_string(),
            "rtt_ms": e.stats.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "version": e.software,
            "points": counts.get(&e.name).copied().unwrap_or(0),
            "last_seen": Timestamp(e.stats.last_heard.load(Ordering::Relaxed)).to_rfc3339(),
            "fingerprint": e.fingerprint.to_string(),
        }));
    }
    for k in keys.as_array().into_iter().flatten() {
        let name = k["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() || seen.contains(&name) || !p.sees_node(&name) {
            continue;
        }
        seen.insert(name.clone());
        out.push(json!({
            "name": name,
            "role": k["role"],
            "connected": false,
            "remote": k["last_addr"],
            "rtt_ms": null,
            "version": null,
            "points": counts.get(&name).copied().unwrap_or(0),
            "last_seen": k["last_seen"],
            "fingerprint": k["fingerprint"],
        }));
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!(out)))
}

fn admin(p: &Principal) -> Result<(), ApiError> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "only an unrestricted admin may manage keys and tokens".into(),
        ))
    }
}

async fn run_admin(
    hub: &Arc<Hub>,
    req: AdminRequest,
    by: String,
) -> Result<serde_json::Value, ApiError> {
    let h = hub.clone();
    tokio::task::spawn_blocking(move || h.access.execute(req, &by))
        .await
        .map_err(|e| {
            warn!(error = %e, "admin task failed");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        })?
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))
}

async fn api_keys(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    admin(&p)?;
    let pending = run_admin(&hub, AdminRequest::KeysPending, p.name()).await?;
    let keys = run_admin(&hub, AdminRequest::KeysList, p.name()).await?;
    let tokens = run_admin(&hub, AdminRequest::TokensList, p.name()).await?;
    Ok(Json(
        json!({"pending": pending, "keys": keys, "tokens": tokens}),
    ))
}

fn fingerprint(s: &str) -> Result<Fingerprint, ApiError> {
    s.parse().map_err(|e: pointhub_client::IdentityError| {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    })
}

async fn api_approve(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(grant): Json<Grant>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    admin(&p)?;
    Ok(Json(
        run_admin(
            &hub,
            AdminRequest::KeysApprove {
                fingerprint: fingerprint(&fp)?,
                grant,
            },
            p.name(),
        )
        .await?,
    ))
}

#[derive(Deserialize, Default)]
struct RevokeBody {
    reason: Option<String>,
}

async fn api_revoke(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    body: Option<Json<RevokeBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    admin(&p)?;
    let fp = fingerprint(&fp)?;
    let reason = body
        .and_then(|b| b.0.reason)
        .unwrap_or_else(|| format!("revoked in the console by {}", p.name()));
    let rec = run_admin(
        &hub,
        AdminRequest::KeysRevoke {
            fingerprint: fp,
            reason,
        },
        p.name(),
    )
    .await?;
    hub.end_sessions_of_key(&fp, "this node's key was revoked by the operator")
        .await;
    Ok(Json(rec))
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(flatten)]
    grant: Grant,
    #[serde(default = "hour")]
    ttl_s: u64,
}

fn hour() -> u64 {
    3600
}

async fn api_tokens(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    admin(&p)?;
    let grant = b.grant;
    Ok(Json(
        run_admin(
            &hub,
            AdminRequest::TokensCreate {
                grant,
                ttl_s: b.ttl_s,
            },
            p.name(),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct AuditQuery {
    event: Option<String>,
    node: Option<String>,
    last: Option<usize>,
}

async fn api_audit(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let dir = hub.config.data_dir.clone();
    let all = tokio::task::spawn_blocking(move || crate::audit::read_all(&dir))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))?
        .map_err(|e| {
            warn!(error = %e, "cannot read the audit log");
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the audit log".into(),
            )
        })?;
    let admin = p.is_admin();
    let matching: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|v| {
            q.event.as_ref().is_none_or(|e| {
                v["event"]
                    .as_str()
                    .is_some_and(|x| x.starts_with(e.as_str()))
            })
        })
        .filter(|v| {
            q.node
                .as_ref()
                .is_none_or(|n| v["name"].as_str() == Some(n.as_str()))
        })
        .filter(|v| {
            admin
                || v["name"]
                    .as_str()
                    .is_some_and(|n| p.sees_node(n) && !matches!(p, Principal::Token(_)))
        })
        .collect();
    let last = q.last.unwrap_or(500).min(10_000);
    let skip = matching.len().saturating_sub(last);
    Ok(Json(json!(matching
        .into_iter()
        .skip(skip)
        .collect::<Vec<_>>())))
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn api_ws(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    match principal(&hub, &headers, q.token.as_deref()).await {
        Ok(p) => ws
            .max_message_size(1 << 20)
            .on_upgrade(move |socket| json_session(hub, p, socket)),
        Err(e) => e.into_response(),
    }
}

/// One JSON WebSocket session: subscribe, snapshot then changes, writes.
async fn json_session(hub: Arc<Hub>, p: Principal, mut socket: WebSocket) {
    let id = hub.core.next_id();
    let sub = Arc::new(Subscriber::new(
        id,
        false,
        p.read(),
        hub.config.limits.subscriber_queue,
    ));
    hub.core.add_subscriber(sub.clone());
    let write = Arc::new(p.write());
    let who = p.name();
    let hello = json!({"type": "hello", "hub": hub.name.as_ref(), "as": who, "protocol": 1});
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let _ = out_tx.send(hello).await;
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            m = out_rx.recv() => {
                let Some(m) = m else { break };
                if socket.send(Message::Text(m.to_string().into())).await.is_err() {
                    break;
                }
            }
            _ = sub.notify.notified() => {
                let pending = sub.drain();
                if pending.overflow {
                    let _ = socket.send(Message::Text(json!({"type": "error", "message": "too slow: cut off; reconnect for a fresh snapshot"}).to_string().into())).await;
                    break;
                }
                let updates: Vec<serde_json::Value> = {
                    let table = hub.core.table_read();
                    pending
                        .entries
                        .iter()
                        .filter_map(|e| table.points.get(e.id as usize).map(|pt| record::record(table.name(pt), &e.value, e.quality, e.source_ts, e.hub_ts, e.flags & pointhub_schemas::Update::HISTORY != 0)))
                        .collect()
                };
                for chunk in updates.chunks(1000) {
                    let msg = json!({"type": "updates", "updates": chunk});
                    if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                        break;
                    }
                    hub.stats.updates_out.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                for n in pending.snapshots_done {
                    let _ = socket.send(Message::Text(json!({"type": "snapshot_done", "points": n}).to_string().into())).await;
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let req: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = out_tx.send(json!({"type": "error", "message": format!("not JSON: {e}")})).await;
                        continue;
                    }
                };
                match req["op"].as_str() {
                    Some("subscribe") | Some("unsubscribe") => {
                        let pats: Vec<String> = req["patterns"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
                        let parsed: Result<Vec<Pattern>, _> = pats.iter().map(|s| Pattern::parse(s)).collect();
                        match parsed {
                            Err(e) => { let _ = out_tx.send(json!({"type": "error", "message": format!("pattern: {e}")})).await; }
                            Ok(_) if pats.len() > 256 => { let _ = out_tx.send(json!({"type": "error", "message": "at most 256 patterns"})).await; }
                            Ok(parsed) if req["op"] == "subscribe" => hub.core.subscribe(&sub, parsed),
                            Ok(_) => hub.core.unsubscribe(&sub, &pats),
                        }
                    }
                    Some("write") => {
                        let (Some(point), Some(value)) = (req["point"].as_str(), Value::from_json(&req["value"])) else {
                            let _ = out_tx.send(json!({"type": "error", "message": "write needs point and value"})).await;
                            continue;
                        };
                        let id = req["id"].clone();
                        let (hub, write, who, tx) = (hub.clone(), write.clone(), who.clone(), out_tx.clone());
                        let w = WriteRequest { req: 0, point: point.to_string(), value };
                        tokio::spawn(async move {
                            let point = w.point.clone();
                            let new = w.value.to_json();
                            let (status, message) = crate::session::route_write(&hub, &who, &write, w).await;
                            hub.stats.count_write(&status.to_string());
                            hub.access.audit.record("write", json!({"name": who, "point": point, "new": new, "status": status.to_string(), "message": message}));
                            let _ = tx.send(json!({"type": "write_result", "id": id, "point": point, "status": status.to_string(), "status_code": status.0, "message": message})).await;
                        });
                    }
                    _ => {
                        let _ = out_tx.send(json!({"type": "error", "message": "unknown op: use subscribe, unsubscribe or write"})).await;
                    }
                }
            }
        }
    }
    hub.core.remove_subscriber(&sub);
}

async fn metrics(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !hub.config.web.metrics_public {
        principal(&hub, &headers, None).await?;
    }
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct RoleL {
        role: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct NodeL {
        node: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StatusL {
        status: String,
    }
    let mut reg = Registry::with_prefix("pointhub");
    let sessions = Family::<RoleL, Gauge>::default();
    for r in ["edge", "client", "hub"] {
        sessions.get_or_create(&RoleL { role: r.into() }).set(0);
    }
    let queue = Family::<NodeL, Gauge>::default();
    for e in hub.live.iter() {
        sessions
            .get_or_create(&RoleL {
                role: e.role.as_str().into(),
            })
            .inc();
        if let Some(s) = &e.sub {
            queue
                .get_or_create(&NodeL {
                    node: e.name.clone(),
                })
                .set(s.queue_len() as i64);
        }
    }
    reg.register("sessions", "Node sessions by role", sessions);
    reg.register(
        "subscriber_queue_depth",
        "Updates queued for each client session",
        queue,
    );
    let points = Gauge::<i64>::default();
    points.set(hub.core.point_count() as i64);
    reg.register("points", "Points in the table", points);
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "updates_in",
        "Point updates received from authorities",
        counter(hub.core.updates_in.load(Ordering::Relaxed)),
    );
    reg.register(
        "updates_out",
        "Point updates sent to subscribers",
        counter(hub.stats.updates_out.load(Ordering::Relaxed)),
    );
    reg.register(
        "conflated",
        "Updates replaced by a newer one for a lagging subscriber",
        counter(CONFLATED_TOTAL.load(Ordering::Relaxed)),
    );
    reg.register(
        "connections_refused",
        "Node connections refused",
        counter(hub.stats.refused.load(Ordering::Relaxed)),
    );
    let writes = Family::<StatusL, Counter<u64>>::default();
    if let Ok(w) = hub.stats.writes.lock() {
        for (k, v) in w.iter() {
            writes
                .get_or_create(&StatusL { status: k.clone() })
                .inc_by(*v);
        }
    }
    reg.register("writes", "Writes by result", writes);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg)
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "encoding".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
