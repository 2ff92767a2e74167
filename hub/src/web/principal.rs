//! Who is asking, as the HTTP side sees it: console sessions, users and API tokens, and the
//! API's error answer.

use crate::store::{ApiTokenRecord, UserRecord, UserRole};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dashmap::DashMap;
use pointhub_schemas::Pattern;
use serde_json::json;
use std::time::{Duration, Instant};

/// Password checks (argon2, ≈ 19 MiB and tens of ms each) running at once; more wait.
pub(super) const LOGIN_CHECKS: usize = 2;
pub(super) const COOKIE: &str = "ph_session";
pub(super) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Console sessions.
pub(crate) struct WebState {
    pub(super) sessions: DashMap<String, ConsoleSession>,
    /// Open JSON WebSocket sessions per principal.
    pub(super) ws_sessions: DashMap<String, usize>,
    /// Every open JSON WebSocket session: whose it is, and what ends it.
    pub(super) json: DashMap<u64, (PrincipalKey, tokio_util::sync::CancellationToken)>,
    /// Password checks that may run at once.
    pub(super) login_checks: tokio::sync::Semaphore,
    /// Logins waiting for or in a password check.
    pub(super) login_queue: std::sync::atomic::AtomicUsize,
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
pub(crate) struct PrincipalKey(pub String);

impl PrincipalKey {
    pub(crate) fn user(name: &str) -> PrincipalKey {
        PrincipalKey(format!("user:{name}"))
    }
    pub(crate) fn token(id: &str) -> PrincipalKey {
        PrincipalKey(format!("api-token:{id}"))
    }
}

impl WebState {
    /// Ends every session of a principal at once: a user's console logins (a password reset,
    /// a removal) and the JSON WebSocket sessions of a user or an API token. Returns how many.
    pub(crate) fn end_sessions_of(&self, who: &PrincipalKey) -> usize {
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
pub(super) struct ConsoleSession {
    pub(super) user: String,
    pub(super) expires: Instant,
    /// Sent back by the console's script on every change request (`x-csrf-token`).
    pub(super) csrf: String,
}

/// Who is asking.
#[derive(Clone)]
pub(crate) enum Principal {
    User(UserRecord),
    Token(ApiTokenRecord),
}

impl Principal {
    pub(super) fn read(&self) -> Vec<Pattern> {
        let pats = match self {
            Principal::User(u) => &u.namespaces,
            Principal::Token(t) => &t.read,
        };
        pats.clone()
    }
    pub(super) fn write(&self) -> Vec<Pattern> {
        match self {
            Principal::User(_) => Vec::new(),
            Principal::Token(t) => t.write.clone(),
        }
    }
    /// Whether the points a node is the authority for may be shown (a user limited to some
    /// nodes sees theirs only); the read patterns still decide point by point.
    pub(super) fn sees_owner(&self, name: &str) -> bool {
        match self {
            Principal::User(u) => u.nodes.is_empty() || u.nodes.iter().any(|n| n == name),
            Principal::Token(_) => true,
        }
    }

    /// Whether a node itself (in the node list, in the audit log) may be shown: its owner
    /// is visible, and the read patterns reach into its namespace (`plant2/**` shows node
    /// `plant2`, not `plant1`; `**` or a pattern starting with a wildcard shows every node).
    pub(super) fn sees_node(&self, name: &str) -> bool {
        self.sees_owner(name)
            && self.read().iter().any(|p| {
                let mut segs = p.as_str().split('/');
                match segs.next() {
                    Some("*" | "**") => true,
                    Some(root) if root == pointhub_schemas::sys::ROOT => {
                        matches!(segs.next(), Some(s) if s == name || s == "*" || s == "**")
                    }
                    Some(first) => first == name,
                    None => false,
                }
            })
    }
    pub(super) fn is_admin(&self) -> bool {
        matches!(self, Principal::User(u) if u.role == UserRole::Admin && u.unrestricted())
    }
    pub(super) fn name(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{}", u.name),
            Principal::Token(t) => format!("api-token:{}", t.name),
        }
    }
    pub(super) fn key(&self) -> PrincipalKey {
        match self {
            Principal::User(u) => PrincipalKey::user(&u.name),
            Principal::Token(t) => PrincipalKey::token(&t.id),
        }
    }
}

/// An API error: a status and a sentence; internals are logged, never sent.
pub(crate) struct ApiError(pub(super) StatusCode, pub(super) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

pub(super) fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "log in, or send Authorization: Bearer <api token>".into(),
    )
}
