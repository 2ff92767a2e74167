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

use crate::state::Hub;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

mod auth;
mod metrics;
pub(crate) mod principal;
mod rest;
mod ws;

use auth::*;
use metrics::*;
pub(crate) use principal::Principal;
use rest::*;
use ws::*;

pub(crate) fn routes() -> Router<Arc<Hub>> {
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

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const LOGIN_HTML: &str = include_str!("../../assets/login.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const LOGIN_JS: &str = include_str!("../../assets/login.js");
const STYLE_CSS: &str = include_str!("../../assets/style.css");
const OPENAPI: &str = include_str!("../../assets/openapi.json");

async fn index(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    match principal(&hub, &headers, None).await {
        Ok(Principal::User(_)) => Html(INDEX_HTML).into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}

async fn login_page() -> Html<&'static str> {
    Html(LOGIN_HTML)
}
