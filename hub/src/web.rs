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
use crate::throttle::Throttle;
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
pub struct WebState {
    sessions: DashMap<String, ConsoleSession>,
    /// Open JSON WebSocket sessions per principal.
    ws_sessions: DashMap<String, usize>,
    /// Every open JSON WebSocket session: whose it is, and what ends it.
    json: DashMap<u64, (PrincipalKey, tokio_util::sync::CancellationToken)>,
    /// Password checks that may run at once.
    login_checks: tokio::sync::Semaphore,
    /// Logins waiting for or in a password check.
    login_queue: std::sync::atomic::AtomicUsize,
}

impl Default for WebState {
    fn default() -> Self {
        WebState {
            sessions: DashMap::new(),
            ws_sessions: DashMap::new(),
            json: DashMap::new(),
            login_checks: tokio::sync::Semaphore::new(LOGIN_CHECKS),
            login_queue: Default::default(),
        }
    }
}

/// Names one principal for ending its sessions: `user:<name>` or `api-token:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PrincipalKey(pub String);

impl PrincipalKey {
    pub fn user(name: &str) -> PrincipalKey {
        PrincipalKey(format!("user:{name}"))
    }
    pub fn token(id: &str) -> PrincipalKey {
        PrincipalKey(format!("api-token:{id}"))
    }
}

impl WebState {
    /// Ends every session of a principal at once: a user's console logins (a password reset,
    /// a removal) and the JSON WebSocket sessions of a user or an API token. Returns how many.
    pub fn end_sessions_of(&self, who: &PrincipalKey) -> usize {
        let before = self.sessions.len();
        if let Some(user) = who.0.strip_prefix("user:") {
            self.sessions.retain(|_, s| s.user != user);
        }
        let mut n = before - self.sessions.len();
        for e in self.json.iter().filter(|e| e.value().0 == *who) {
            e.value().1.cancel();
            n += 1;
        }
        n
    }
}

/// A logged-in console session (its id is the cookie).
struct ConsoleSession {
    user: String,
    expires: Instant,
    /// Sent back by the console's script on every change request (`x-csrf-token`).
    csrf: String,
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
    /// Whether the points a node is the authority for may be shown (a user limited to some
    /// nodes sees theirs only); the read patterns still decide point by point.
    fn sees_owner(&self, name: &str) -> bool {
        match self {
            Principal::User(u) => u.nodes.is_empty() || u.nodes.iter().any(|n| n == name),
            Principal::Token(_) => true,
        }
    }

    /// Whether a node itself (in the node list, in the audit log) may be shown: its owner
    /// is visible, and the read patterns reach into its namespace (`plant2/**` shows node
    /// `plant2`, not `plant1`; `**` or a pattern starting with a wildcard shows every node).
    fn sees_node(&self, name: &str) -> bool {
        self.sees_owner(name)
            && self.read().iter().any(|p| {
                let mut segs = p.as_str().split('/');
                match segs.next() {
                    Some("*" | "**") => true,
                    Some("$sys") => {
                        matches!(segs.next(), Some(s) if s == name || s == "*" || s == "**")
                    }
                    Some(first) => first == name,
                    None => false,
                }
            })
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
    fn key(&self) -> PrincipalKey {
        match self {
            Principal::User(u) => PrincipalKey::user(&u.name),
            Principal::Token(t) => PrincipalKey::token(&t.id),
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

/// The console session of a request's cookie, if it is live: (user, CSRF token).
fn console_session(hub: &Hub, headers: &HeaderMap) -> Option<(String, String)> {
    let sid = cookie(headers)?;
    let s = hub.web.sessions.get(&sid)?;
    (s.expires > Instant::now()).then(|| (s.user.clone(), s.csrf.clone()))
}

/// Finds who is asking: a console session cookie, a bearer token, or `?token=`.
async fn principal(
    hub: &Arc<Hub>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Principal, ApiError> {
    if let Some((user, _)) = console_session(hub, headers) {
        if let Ok(Some(u)) = hub.access.store.user(&user) {
            return Ok(Principal::User(u));
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

/// A browser names the page that makes a request in `Origin`; a request that changes something
/// (or opens the JSON WebSocket) from a page of any other origin — another site, or another
/// port of this host — is refused. Scripts and nodes send no `Origin` and are not affected.
fn same_origin(_hub: &Hub, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let ok = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("https://"))
        .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
    if ok {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: use the console on this hub's own address".into(),
        ))
    }
}

/// Who asks for a change: the origin must be this hub's, and a console session must send its
/// CSRF token in `x-csrf-token` (an API token in `Authorization` needs none: a browser never
/// adds it by itself).
async fn changer(hub: &Arc<Hub>, headers: &HeaderMap) -> Result<Principal, ApiError> {
    same_origin(hub, headers)?;
    if let Some((_, csrf)) = console_session(hub, headers) {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token (x-csrf-token): reload the console".into(),
            ));
        }
    }
    principal(hub, headers, None).await
}

/// Compares secrets by their digests, so the time taken tells nothing of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let d = |x: &[u8]| ring::digest::digest(&ring::digest::SHA256, x);
    d(a).as_ref() == d(b).as_ref()
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
            "/assets/login.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], LOGIN_JS) }),
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
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers on every answer of the HTTP side: the console's pages load only their own scripts
/// and styles, are never framed, and are only ever spoken to over TLS.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(
            axum::http::HeaderName::from_static(k),
            axum::http::HeaderValue::from_static(v),
        );
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    set(h, "strict-transport-security", "max-age=31536000");
    set(h, "cache-control", "no-store");
    res
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");
const APP_JS: &str = include_str!("../assets/app.js");
const LOGIN_JS: &str = include_str!("../assets/login.js");
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

/// Password checks (argon2, ≈ 19 MiB and tens of ms each) running at once; more wait.
const LOGIN_CHECKS: usize = 2;
/// Logins waiting for a check at once; more are refused at once (429), so a flood of wrong
/// passwords costs the hub a bounded amount of memory and CPU.
const LOGIN_QUEUE: usize = 16;

/// An argon2 hash of a random password, checked for names that have no account, so a login
/// takes as long whether or not the user exists.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        crate::access::new_secret(16)
            .and_then(|pw| crate::access::hash_password(&pw))
            .unwrap_or_default()
    })
}

async fn login(
    State(hub): State<Arc<Hub>>,
    Extension(peer): axum::Extension<crate::server::Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Err(e) = same_origin(&hub, &headers) {
        return e.into_response();
    }
    let queued = hub.web.login_queue.fetch_add(1, Ordering::Relaxed);
    let _queued = Decrement(&hub.web.login_queue);
    if queued >= LOGIN_QUEUE {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "2")],
            "too many logins at once: go back and try again in a moment\n",
        )
            .into_response();
    }
    let user = hub.access.store.user(&f.name).ok().flatten();
    let ok = {
        let Ok(_check) = hub.web.login_checks.acquire().await else {
            return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
        };
        let exists = user.is_some();
        let hash = user
            .as_ref()
            .map(|u| u.hash.clone())
            .unwrap_or_else(|| decoy_hash().to_string());
        let pw = f.password.clone();
        tokio::task::spawn_blocking(move || crate::access::verify_password(&pw, &hash))
            .await
            .unwrap_or(false)
            && exists
    };
    if !ok {
        hub.access.audit.record("login.failed", json!({"user": f.name.chars().take(64).collect::<String>(), "remote": peer.addr.to_string()}));
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Redirect::to("/login?failed=1").into_response();
    }
    let (Ok(sid), Ok(csrf)) = (crate::access::new_secret(32), crate::access::new_secret(32)) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
    };
    hub.web.sessions.retain(|_, s| s.expires > Instant::now());
    hub.web.sessions.insert(
        sid.clone(),
        ConsoleSession {
            user: f.name.clone(),
            expires: Instant::now() + SESSION_TTL,
            csrf,
        },
    );
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

/// Takes one off a counter when dropped.
struct Decrement<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

use axum::Extension;

async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if let Err(e) = same_origin(&hub, &headers) {
        return e.into_response();
    }
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
    let csrf = console_session(&hub, &headers).map(|(_, c)| c);
    Ok(Json(match &p {
        Principal::User(u) => {
            json!({"kind": "user", "name": u.name, "role": u.role, "admin": p.is_admin(), "hub": hub.name.as_ref(), "csrf": csrf})
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
                && p.sees_owner(table.owner(pt))
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
    let p = changer(&hub, &headers).await?;
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
    Json(body): Json<RevokeBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = changer(&hub, &headers).await?;
    admin(&p)?;
    let fp = fingerprint(&fp)?;
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
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
    let p = changer(&hub, &headers).await?;
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

/// Updates per JSON message, rendered one message at a time so a big snapshot never exists
/// as JSON all at once.
const JSON_CHUNK: usize = 1000;
/// A message the peer does not take within this is a peer that stopped reading: cut off.
const JSON_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Invalid requests a session may send in [`BAD_WINDOW`] before it is closed.
const MAX_BAD: u32 = 20;
const BAD_WINDOW: Duration = Duration::from_secs(10);
/// Writes one JSON session may have waiting on devices at once.
const MAX_WRITES_IN_FLIGHT: usize = 16;

async fn api_ws(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = same_origin(&hub, &headers) {
        return e.into_response();
    }
    let p = match principal(&hub, &headers, q.token.as_deref()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let limit = hub.config.limits.max_sessions_per_key;
    let Some(slot) = WsSlot::take(&hub, p.name(), limit) else {
        return ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} already has {limit} JSON WebSocket sessions open: close one first",
                p.name()
            ),
        )
        .into_response();
    };
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| json_session(hub, p, socket, slot))
}

/// One of a principal's JSON WebSocket sessions, counted while it lives.
struct WsSlot {
    hub: Arc<Hub>,
    who: String,
}

impl WsSlot {
    fn take(hub: &Arc<Hub>, who: String, limit: usize) -> Option<WsSlot> {
        let mut n = hub.web.ws_sessions.entry(who.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(n);
        Some(WsSlot {
            hub: hub.clone(),
            who,
        })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.hub.web.ws_sessions.remove_if_mut(&self.who, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Takes a JSON session off the hub's list when it ends.
struct JsonRegistered(Arc<Hub>, u64);

impl Drop for JsonRegistered {
    fn drop(&mut self) {
        self.0.web.json.remove(&self.1);
    }
}

/// Whether a principal's token or user is still in the store.
fn principal_still_valid(hub: &Hub, p: &Principal) -> bool {
    match p {
        Principal::User(u) => {
            matches!(hub.access.store.user(&u.name), Ok(Some(now)) if now.hash == u.hash)
        }
        Principal::Token(t) => hub
            .access
            .store
            .api_tokens()
            .is_ok_and(|all| all.iter().any(|x| x.id == t.id)),
    }
}

/// Removes a subscriber from the table when its session ends, however it ends.
struct Subscribed(Arc<Hub>, Arc<Subscriber>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.core.remove_subscriber(&self.1);
    }
}

async fn send_json(socket: &mut WebSocket, v: &serde_json::Value) -> bool {
    send_text(socket, v.to_string()).await
}

async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(JSON_SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// One JSON WebSocket session: subscribe, snapshot then changes, writes.
async fn json_session(hub: Arc<Hub>, p: Principal, mut socket: WebSocket, _slot: WsSlot) {
    let id = hub.core.next_id();
    let sub = Arc::new(Subscriber::new(
        id,
        false,
        p.read(),
        hub.config.limits.subscriber_queue,
    ));
    hub.core.add_subscriber(sub.clone());
    let _subscribed = Subscribed(hub.clone(), sub.clone());
    // Registered so that revoking its token (or resetting its user) ends it at once; and
    // checked again now, for a revocation between the upgrade and here.
    let ended = hub.shutdown.child_token();
    hub.web.json.insert(id, (p.key(), ended.clone()));
    let _registered = JsonRegistered(hub.clone(), id);
    if !principal_still_valid(&hub, &p) {
        return;
    }
    let write = Arc::new(p.write());
    let who = p.name();
    let hello = json!({"type": "hello", "hub": hub.name.as_ref(), "as": who, "protocol": 1});
    if !send_json(&mut socket, &hello).await {
        return;
    }
    // Write results come back from tasks of their own; everything else this loop sends itself,
    // so a peer that floods requests slows only its own session.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_WRITES_IN_FLIGHT));
    let mut bad = Throttle::new(MAX_BAD, BAD_WINDOW);
    let mut scans = Throttle::new(SCANS_PER_SEC, Duration::from_secs(1));
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    loop {
        let mut error: Option<String> = None;
        tokio::select! {
            _ = ended.cancelled() => {
                let why = if hub.shutdown.is_cancelled() {
                    "the hub is shutting down: reconnect in a moment"
                } else {
                    "this session's API token was revoked, or its user reset or removed"
                };
                let _ = send_json(&mut socket, &json!({"type": "error", "message": why})).await;
                break;
            }
            m = out_rx.recv() => {
                let Some(m) = m else { break };
                if !send_json(&mut socket, &m).await {
                    break;
                }
            }
            _ = sub.notify.notified() => {
                let pending = sub.drain();
                if pending.overflow {
                    let _ = send_json(&mut socket, &json!({"type": "error", "message": "too slow: cut off; reconnect for a fresh snapshot"})).await;
                    break;
                }
                let mut ok = true;
                for chunk in pending.entries.chunks(JSON_CHUNK) {
                    let (text, n) = {
                        let table = hub.core.table_read();
                        let updates: Vec<serde_json::Value> = chunk
                            .iter()
                            .filter_map(|e| {
                                let pt = table.points.get(e.id as usize)?;
                                // A user limited to some nodes sees only their points.
                                if !p.sees_owner(table.owner(pt)) {
                                    return None;
                                }
                                let mut r = record::record(table.name(pt), &e.value, e.quality, e.source_ts, e.hub_ts, e.flags & pointhub_schemas::Update::HISTORY != 0);
                                if let (Some(m), Some(unit)) = (r.as_object_mut(), pt.unit()) {
                                    m.insert("unit".into(), json!(unit));
                                }
                                Some(r)
                            })
                            .collect();
                        let n = updates.len();
                        (json!({"type": "updates", "updates": updates}).to_string(), n)
                    };
                    if n == 0 {
                        continue;
                    }
                    if !send_text(&mut socket, text).await {
                        ok = false;
                        break;
                    }
                    hub.stats.updates_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                if !ok {
                    break;
                }
                for n in pending.snapshots_done {
                    if !send_json(&mut socket, &json!({"type": "snapshot_done", "points": n})).await {
                        break;
                    }
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
                    Some(Ok(Message::Binary(_))) => {
                        error = Some("binary messages are for node sessions (/node): send JSON text".into());
                        String::new()
                    }
                    Some(Ok(_)) => continue,
                };
                if error.is_none() {
                    match serde_json::from_str::<serde_json::Value>(&text) {
                        Err(e) => error = Some(format!("not JSON: {e}")),
                        Ok(req) => {
                            error = json_request(&hub, &p, &sub, &write, &who, &out_tx, &in_flight, &mut scans, req).await;
                        }
                    }
                }
            }
        }
        if let Some(message) = error {
            if bad.over() {
                let _ = send_json(&mut socket, &json!({"type": "error", "message": format!("more than {MAX_BAD} invalid requests in {} s: closed; fix the client and reconnect", BAD_WINDOW.as_secs())})).await;
                warn!(who = %who, "JSON session closed: too many invalid requests");
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::POLICY,
                        reason: "too many invalid requests".into(),
                    })))
                    .await;
                break;
            }
            if !send_json(&mut socket, &json!({"type": "error", "message": message})).await {
                break;
            }
        }
    }
}

/// Subscribes and unsubscribes of one session per second; past it, the session waits.
const SCANS_PER_SEC: u32 = 10;

/// Carries out one request of a JSON session; `Some(message)` if it was invalid.
#[allow(clippy::too_many_arguments)]
async fn json_request(
    hub: &Arc<Hub>,
    p: &Principal,
    sub: &Arc<Subscriber>,
    write: &Arc<Vec<Pattern>>,
    who: &str,
    out_tx: &tokio::sync::mpsc::Sender<serde_json::Value>,
    in_flight: &Arc<tokio::sync::Semaphore>,
    scans: &mut Throttle,
    req: serde_json::Value,
) -> Option<String> {
    let _ = p;
    match req["op"].as_str() {
        Some(op @ ("subscribe" | "unsubscribe")) => {
            let pats: Vec<String> = req["patterns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if pats.len() > 256 {
                return Some("at most 256 patterns".into());
            }
            let parsed: Vec<Pattern> = match pats.iter().map(|s| Pattern::parse(s)).collect() {
                Ok(p) => p,
                Err(e) => return Some(format!("pattern: {e}")),
            };
            scans.wait().await;
            let (h, s) = (hub.clone(), sub.clone());
            let t0 = tokio::time::Instant::now();
            let done = if op == "subscribe" {
                tokio::task::spawn_blocking(move || h.core.subscribe(&s, parsed)).await
            } else {
                tokio::task::spawn_blocking(move || {
                    h.core.unsubscribe(&s, &pats);
                    Ok(())
                })
                .await
            };
            // A session spends at most a fifth of a core scanning.
            tokio::time::sleep(t0.elapsed() * 4).await;
            match done {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("internal error".into()),
            }
        }
        Some("write") => {
            let (Some(point), Some(value)) =
                (req["point"].as_str(), Value::from_json(&req["value"]))
            else {
                return Some("write needs point and value".into());
            };
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                return Some(format!(
                    "{MAX_WRITES_IN_FLIGHT} writes of this session are still waiting for their devices: wait for their results"
                ));
            };
            let id = req["id"].clone();
            let (hub, write, who, tx) =
                (hub.clone(), write.clone(), who.to_string(), out_tx.clone());
            let w = WriteRequest {
                req: 0,
                point: point.to_string(),
                value,
            };
            tokio::spawn(async move {
                let _permit = permit;
                let point = w.point.clone();
                let new = w.value.to_json();
                let (status, message) = crate::session::route_write(&hub, &who, &write, w).await;
                hub.stats.count_write(&status.to_string());
                hub.access.audit.record("write", json!({"name": who, "point": point, "new": new, "status": status.to_string(), "message": message}));
                let _ = tx.send(json!({"type": "write_result", "id": id, "point": point, "status": status.to_string(), "status_code": status.0, "message": message})).await;
            });
            None
        }
        _ => Some("unknown op: use subscribe, unsubscribe or write".into()),
    }
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
