//! One node session on the hub, from hello to close.
//!
//! An edge session defines points (birth) and applies batches; when it ends — closed, silent past
//! the heartbeat timeout, or cut off for bad input — every point it was the authority for turns
//! stale at once. A client session subscribes and gets a snapshot then changes from its
//! conflating queue, and writes points it is granted.

use crate::config::NodeEntry;
use crate::core::Subscriber;
use crate::state::{Hub, LiveNode, Peer};
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pointhub_link::{spawn_session, FrameKind, Session, SessionOpts, WsMessage};
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{DataType, ErrorCode, Msg, Role, Value, Welcome};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn, Instrument};

mod authority;
mod client;
pub(crate) mod write;

use authority::edge;
use client::client;

struct AxumMsg(Message);

impl WsMessage for AxumMsg {
    fn binary(bytes: Bytes) -> Self {
        AxumMsg(Message::Binary(bytes))
    }
    fn close() -> Self {
        AxumMsg(Message::Close(None))
    }
    fn kind(self) -> FrameKind {
        match self.0 {
            Message::Binary(b) => FrameKind::Binary(b),
            Message::Close(c) => FrameKind::Close(c.map(|c| c.reason.to_string())),
            Message::Text(_) => FrameKind::Text,
            _ => FrameKind::Control,
        }
    }
}

/// Runs one node session on an upgraded WebSocket.
pub(crate) async fn run(hub: Arc<Hub>, entry: NodeEntry, peer: Peer, socket: WebSocket) {
    let span = tracing::info_span!("session", node = %entry.grant.name, role = entry.grant.role.as_str(), remote = %peer.addr);
    session(hub, entry, peer, socket).instrument(span).await
}

async fn session(hub: Arc<Hub>, entry: NodeEntry, peer: Peer, socket: WebSocket) {
    let ws = socket
        .map(|r| r.map(AxumMsg))
        .with(|m: AxumMsg| futures_util::future::ready(Ok::<_, axum::Error>(m.0)));
    let opts = SessionOpts {
        heartbeat: hub.heartbeat(),
        timeout: hub.timeout(),
        limits: hub.limits().clone(),
        max_frames_per_sec: hub.config().limits.max_frames_per_sec,
        tasks: Some(hub.tasks().clone()),
    };
    // The connection is the key's from here on: registered before its hello, so a revocation
    // from now on ends it; and a revocation that came since it was admitted is seen now.
    let conn = hub.shutdown().child_token();
    let conn_id = hub.core().next_id();
    let _registered = hub
        .sessions()
        .connection(conn_id, entry.fingerprint, conn.clone());
    let mut session = spawn_session(ws, opts, &conn);
    if refused_as_revoked(&hub, &entry, &session).await {
        return;
    }
    let handshake = Duration::from_millis(hub.config().limits.handshake_timeout_ms);
    let hello = match tokio::time::timeout(handshake, session.rx.recv()).await {
        Ok(Some(Msg::Hello(h))) => h,
        Ok(Some(other)) => {
            warn!(kind = other.kind(), "first message was not hello");
            session
                .tx
                .fail(
                    ErrorCode::Malformed,
                    format!("the first message must be hello, not {}", other.kind()),
                )
                .await;
            return;
        }
        Ok(None) => {
            info!(reason = %session.close_reason(), "session ended before hello");
            return;
        }
        Err(_) => {
            session
                .tx
                .fail(
                    ErrorCode::Malformed,
                    "no hello within the handshake timeout",
                )
                .await;
            return;
        }
    };
    if hello.role != entry.grant.role {
        warn!(
            asked = hello.role.as_str(),
            "refused: key approved for another role"
        );
        session
            .tx
            .fail(
                ErrorCode::AccessDenied,
                format!(
                    "this key is approved as {} {:?}, not as {}: use the node's own key for each role",
                    entry.grant.role.as_str(),
                    entry.grant.name,
                    hello.role.as_str()
                ),
            )
            .await;
        return;
    }
    let id = hub.core().next_id();
    let name = entry.grant.name.clone();
    let sub = (entry.grant.role == Role::Client).then(|| {
        let read = entry.grant.read.clone();
        Arc::new(Subscriber::new(
            id,
            false,
            read,
            hub.config().limits.subscriber_queue,
        ))
    });
    // A client may have many sessions (counted); an authority has one (the old one is replaced).
    let (others, count) = if entry.grant.role == Role::Client {
        (Vec::new(), hub.session_count(&name))
    } else {
        let o = hub.sessions_of(&name);
        let n = o.len();
        (o, n)
    };
    if entry.grant.role == Role::Client && count >= hub.config().limits.max_sessions_per_key {
        warn!(sessions = count, "refused: too many sessions for this key");
        session
            .tx
            .fail(
                ErrorCode::LimitExceeded,
                format!(
                    "this key already has {} sessions (limit {}): give each client its own key",
                    count,
                    hub.config().limits.max_sessions_per_key
                ),
            )
            .await;
        return;
    }
    let live = LiveNode {
        name: name.clone(),
        fingerprint: entry.fingerprint,
        sub: sub.clone(),
        session: id,
        role: entry.grant.role,
        tx: session.tx.clone(),
        remote: peer.addr,
        stats: session.stats.clone(),
        software: hello.software.clone(),
    };
    hub.sessions().insert(live);
    // A revocation committed before this point is seen here; one after it finds this session
    // in `live` and ends it. Either way no revoked key is welcomed.
    if refused_as_revoked(&hub, &entry, &session).await {
        hub.sessions().remove(id);
        return;
    }
    if entry.grant.role != Role::Client {
        // An authority has one session: the newest wins (the old one may be half-open).
        for old in others {
            info!(
                old_session = old.session,
                "a new session of this node replaces its old one"
            );
            hub.sessions().remove(old.session);
            old.tx
                .fail(
                    ErrorCode::Conflict,
                    "replaced by a newer session of the same node",
                )
                .await;
        }
    }
    let namespace = entry
        .grant
        .namespace
        .clone()
        .unwrap_or_else(|| name.clone());
    session
        .tx
        .send(Msg::Welcome(Welcome {
            major: pointhub_schemas::PROTOCOL_MAJOR,
            minor: pointhub_schemas::PROTOCOL_MINOR,
            hub: hub.name().to_string(),
            node: name.clone(),
            namespace: namespace.clone(),
            heartbeat_ms: hub.config().heartbeat.interval_ms,
            timeout_ms: hub.config().heartbeat.timeout_ms,
            software: pointhub_link::SOFTWARE.into(),
        }))
        .await;
    info!(software = %hello.software, "node connected");
    hub.access().audit.record(
        crate::audit::Event::ConnectionAccepted,
        json!({"fingerprint": entry.fingerprint, "name": name, "role": entry.grant.role, "remote": peer.addr.to_string(), "software": hello.software}),
    );
    let own = SysNamespace::of(&name);
    let sys = |k: &str| own.point(k);
    hub.set_sys(&sys("connected"), DataType::Bool, Value::Bool(true));
    hub.set_sys(
        &sys("role"),
        DataType::String,
        Value::String(entry.grant.role.as_str().into()),
    );
    hub.set_sys(
        &sys("remote"),
        DataType::String,
        Value::String(peer.addr.to_string()),
    );
    hub.set_sys(
        &sys("version"),
        DataType::String,
        Value::String(hello.software.clone()),
    );

    match entry.grant.role {
        Role::Edge => edge(&hub, &entry, &namespace, id, &mut session).await,
        Role::Client => {
            if let Some(sub) = sub {
                client(&hub, &entry, sub, &mut session).await
            }
        }
        Role::Hub => edge(&hub, &entry, &namespace, id, &mut session).await,
    }
    session.finish().await;
    hub.sessions().remove(id);
    // A write routed here in the moment before the session left the list: answer it now.
    hub.writes().session_gone(id);
    if hub.sessions_of(&name).is_empty() {
        hub.set_sys(&sys("connected"), DataType::Bool, Value::Bool(false));
    }
    let reason = session.close_reason();
    info!(reason = %reason, "node disconnected");
    hub.access().audit.record(
        crate::audit::Event::ConnectionClosed,
        json!({"fingerprint": entry.fingerprint, "name": name, "role": entry.grant.role, "remote": peer.addr.to_string(), "reason": reason}),
    );
}

/// Whether the key was revoked since it was admitted; if so the session is told and ended.
async fn refused_as_revoked(hub: &Hub, entry: &NodeEntry, session: &Session) -> bool {
    if !hub.access().is_revoked(&entry.fingerprint) {
        return false;
    }
    warn!("refused: the key was revoked while it connected");
    session
        .tx
        .fail(
            ErrorCode::AccessDenied,
            "this node's key was revoked by the operator",
        )
        .await;
    session.finish().await;
    true
}
