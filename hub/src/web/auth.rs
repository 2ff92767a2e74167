//! Who is asking: console logins (argon2, a session cookie, bounded password checks), API
//! tokens, and the Origin and CSRF checks on every change.

use super::principal::*;
use crate::state::Hub;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;
pub(super) fn cookie(headers: &HeaderMap) -> Option<String> {
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
pub(super) fn console_session(hub: &Hub, headers: &HeaderMap) -> Option<(String, String)> {
    let sid = cookie(headers)?;
    let s = hub.web().sessions.get(&sid)?;
    (s.expires > Instant::now()).then(|| (s.user.clone(), s.csrf.clone()))
}

/// Finds who is asking: a console session cookie, a bearer token, or `?token=`.
pub(super) async fn principal(
    hub: &Arc<Hub>,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Principal, ApiError> {
    if let Some((user, _)) = console_session(hub, headers) {
        if let Ok(Some(u)) = hub.access().store.user(&user) {
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
        if let Ok(Some(rec)) = hub.access().store.api_token(&hash) {
            return Ok(Principal::Token(rec));
        }
    }
    Err(unauthorized())
}

/// A browser names the page that makes a request in `Origin`; a request that changes something
/// (or opens the JSON WebSocket) from a page of any other origin — another site, or another
/// port of this host — is refused. Scripts and nodes send no `Origin` and are not affected.
pub(super) fn same_origin(_hub: &Hub, headers: &HeaderMap) -> Result<(), ApiError> {
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
pub(super) async fn changer(hub: &Arc<Hub>, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let d = |x: &[u8]| ring::digest::digest(&ring::digest::SHA256, x);
    d(a).as_ref() == d(b).as_ref()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    name: String,
    password: String,
}

/// Logins waiting for a check at once; more are refused at once (429), so a flood of wrong
/// passwords costs the hub a bounded amount of memory and CPU.
pub(super) const LOGIN_QUEUE: usize = 16;

/// An argon2 hash of a random password, checked for names that have no account, so a login
/// takes as long whether or not the user exists.
pub(super) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        crate::access::new_secret(16)
            .and_then(|pw| crate::access::hash_password(&pw))
            .unwrap_or_default()
    })
}

pub(super) async fn login(
    State(hub): State<Arc<Hub>>,
    Extension(peer): axum::Extension<crate::state::Peer>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Err(e) = same_origin(&hub, &headers) {
        return e.into_response();
    }
    let queued = hub.web().login_queue.fetch_add(1, Ordering::Relaxed);
    let _queued = Decrement(&hub.web().login_queue);
    if queued >= LOGIN_QUEUE {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "2")],
            "too many logins at once: go back and try again in a moment\n",
        )
            .into_response();
    }
    let user = hub.access().store.user(&f.name).ok().flatten();
    let ok = {
        let Ok(_check) = hub.web().login_checks.acquire().await else {
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
        hub.access().audit.record(crate::audit::Event::LoginFailed, json!({"user": f.name.chars().take(64).collect::<String>(), "remote": peer.addr.to_string()}));
        tokio::time::sleep(Duration::from_millis(500)).await;
        return Redirect::to("/login?failed=1").into_response();
    }
    let (Ok(sid), Ok(csrf)) = (crate::access::new_secret(32), crate::access::new_secret(32)) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no randomness").into_response();
    };
    hub.web().sessions.retain(|_, s| s.expires > Instant::now());
    hub.web().sessions.insert(
        sid.clone(),
        ConsoleSession {
            user: f.name.clone(),
            expires: Instant::now() + SESSION_TTL,
            csrf,
        },
    );
    hub.access().audit.record(
        crate::audit::Event::Login,
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
pub(super) struct Decrement<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

use axum::Extension;

pub(super) async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Response {
    if let Err(e) = same_origin(&hub, &headers) {
        return e.into_response();
    }
    if let Some(sid) = cookie(&headers) {
        hub.web().sessions.remove(&sid);
    }
    let c = format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, c)], Redirect::to("/login")).into_response()
}

pub(super) async fn api_me(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let csrf = console_session(&hub, &headers).map(|(_, c)| c);
    Ok(Json(match &p {
        Principal::User(u) => {
            json!({"kind": "user", "name": u.name, "role": u.role, "admin": p.is_admin(), "hub": hub.name(), "csrf": csrf})
        }
        Principal::Token(t) => {
            json!({"kind": "api-token", "name": t.name, "role": "viewer", "admin": false, "hub": hub.name()})
        }
    }))
}
