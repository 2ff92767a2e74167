//! The hub's one TLS port: TLS 1.3 with client keys asked for, HTTP/1.1, and the router.

use crate::access::Claim;
use crate::config::HubConfig;
use crate::core::Core;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use dashmap::DashMap;
use hyper_util::rt::TokioIo;
use pointhub_client::identity::{self, Fingerprint};
use pointhub_client::link::{SessionTx, WS_READ_BUFFER};
use pointhub_client::tls;
use pointhub_schemas::ErrorCode;
use pointhub_schemas::{DataType, Limits, Value, WriteResult};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// Why a hub could not be built or served. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub configuration: {0}")]
    Config(String),
    #[error("hub identity: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Store(String),
    #[error("upstream {index} ({url}): {message}")]
    Upstream {
        index: usize,
        url: String,
        message: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Who is on the other end of a TLS connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub fingerprint: Option<Fingerprint>,
}

/// A connected node, as the hub sees it.
#[derive(Clone)]
pub struct LiveNode {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub session: u64,
    pub role: pointhub_schemas::Role,
    pub tx: SessionTx,
    pub remote: SocketAddr,
    pub stats: Arc<pointhub_client::link::SessionStats>,
    pub software: String,
    /// A client's subscription, for its queue figures.
    pub sub: Option<Arc<crate::core::Subscriber>>,
}

/// The running hub.
pub struct Hub {
    pub name: Arc<str>,
    pub config: HubConfig,
    pub core: Core,
    pub fingerprint: Fingerprint,
    /// Keys, tokens, pending keys and the audit log.
    pub access: crate::access::Access,
    /// Live sessions by session id.
    pub live: DashMap<u64, LiveNode>,
    /// The hubs below each child-hub session (their `Chain`), to refuse loops.
    pub below: DashMap<u64, Vec<String>>,
    /// The hubs above this one, per upstream link: its parent and the parent's own ancestors
    /// (the parent's `Chain`). A child that claims one of them below it is refused: that is a
    /// loop, or a forged chain that would get this hub refused by its parent.
    pub above: DashMap<usize, Vec<String>>,
    /// Writes on their way to an edge: hub request id → the edge session asked and where the
    /// answer goes. Only that session may answer.
    pub writes: DashMap<u64, PendingWrite>,
    /// Every upgraded node connection, from before its hello to its end: (key, its token).
    /// A revocation cancels them all, so no connection admitted before it outlives it.
    pub conns: DashMap<u64, (Fingerprint, CancellationToken)>,
    pub limits: Limits,
    /// Fires when the hub shuts down; every session is a child of it.
    pub shutdown: CancellationToken,
    pub started: std::time::Instant,
    /// Figures for `/metrics`.
    pub stats: HubStats,
    /// Console sessions (cookie → operator).
    pub web: crate::web::WebState,
}

/// A write sent to an edge, waiting for its answer.
pub struct PendingWrite {
    /// The edge session the request went to: a result from any other session is refused.
    pub session: u64,
    pub reply: oneshot::Sender<WriteResult>,
}

/// Counters the hub keeps for `/metrics`.
#[derive(Default)]
pub struct HubStats {
    pub updates_out: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub writes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl HubStats {
    pub fn count_write(&self, status: &str) {
        if let Ok(mut w) = self.writes.lock() {
            *w.entry(status.to_string()).or_default() += 1;
        }
    }
}

impl Hub {
    /// Live sessions of a node.
    /// How many sessions a node has, without copying them.
    pub fn session_count(&self, name: &str) -> usize {
        self.live.iter().filter(|e| e.name == name).count()
    }

    pub fn sessions_of(&self, name: &str) -> Vec<LiveNode> {
        self.live
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.value().clone())
            .collect()
    }

    /// This hub and every hub below it.
    pub fn chain(&self) -> Vec<String> {
        let mut below: Vec<String> = self.below.iter().flat_map(|e| e.value().clone()).collect();
        below.sort();
        below.dedup();
        below.retain(|h| h != self.name.as_ref());
        let mut out = vec![self.name.to_string()];
        out.extend(below);
        out
    }

    /// Every hub above this one, over all its upstream links.
    pub fn ancestors(&self) -> Vec<String> {
        let mut above: Vec<String> = self.above.iter().flat_map(|e| e.value().clone()).collect();
        above.sort();
        above.dedup();
        above
    }

    /// What this hub tells a child hub: itself and every hub above it.
    pub fn chain_down(&self) -> Vec<String> {
        let mut out = vec![self.name.to_string()];
        out.extend(self.ancestors());
        out
    }

    /// The ancestors changed: tells every child hub, and ends a child that claims an ancestor
    /// below it (a loop, or a forged chain).
    pub async fn ancestors_changed(&self) {
        let ancestors = self.ancestors();
        let down = self.chain_down();
        let children: Vec<LiveNode> = self
            .live
            .iter()
            .filter(|e| e.role == pointhub_schemas::Role::Hub)
            .map(|e| e.value().clone())
            .collect();
        for c in children {
            let clash = self
                .below
                .get(&c.session)
                .and_then(|b| b.iter().find(|h| ancestors.contains(h)).cloned());
            match clash {
                Some(h) => {
                    warn!(child = %c.name, hub = %h, "a child hub claims a hub above this one: ended");
                    c.tx.fail(ErrorCode::Conflict, loop_message(&self.name, &c.name, &h))
                        .await;
                }
                None => {
                    c.tx.send(pointhub_schemas::Msg::Chain(pointhub_schemas::Chain {
                        hubs: down.clone(),
                    }))
                    .await;
                }
            }
        }
    }

    /// Ends every session of a key at once (after a revocation): live ones are told why, and
    /// every connection of the key, also one upgraded but still before its hello, is cancelled
    /// a moment later (the moment lets the reason reach the live ones).
    pub async fn end_sessions_of_key(&self, fp: &Fingerprint, why: &str) -> usize {
        let victims: Vec<LiveNode> = self
            .live
            .iter()
            .filter(|e| e.fingerprint == *fp)
            .map(|e| e.value().clone())
            .collect();
        for v in &victims {
            v.tx.fail(ErrorCode::AccessDenied, why.to_string()).await;
        }
        let conns: Vec<CancellationToken> = self
            .conns
            .iter()
            .filter(|e| e.value().0 == *fp)
            .map(|e| e.value().1.clone())
            .collect();
        let n = conns.len().max(victims.len());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for c in conns {
                c.cancel();
            }
        });
        n
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.heartbeat.interval_ms))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.heartbeat.timeout_ms))
    }

    /// Sets one of the hub's own `$sys/…` points.
    pub fn set_sys(&self, path: &str, dtype: DataType, value: Value) {
        self.core.set_local(&self.name, path, dtype, value);
    }
}

/// Why a child hub is refused: it claims a hub below it that is this hub or above it.
pub fn loop_message(hub: &str, child: &str, clash: &str) -> String {
    if clash == hub {
        format!("loop in the hub chain: hub {hub} is already below {child}; remove one of the upstream links")
    } else {
        format!(
            "loop in the hub chain: hub {child} reports hub {clash} below it, but {clash} is above hub {hub}; \
             remove one of the upstream links (a child that forges its chain is refused, not its parents)"
        )
    }
}

/// The HTTP side of the hub: `/node` for node sessions, `/healthz`.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/node", get(node_endpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(crate::web::routes())
        .with_state(hub)
}

async fn node_endpoint(
    State(hub): State<Arc<Hub>>,
    Extension(peer): Extension<Peer>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(fp) = peer.fingerprint else {
        warn!(remote = %peer.addr, reason = "no client key", "refused node");
        hub.access.audit.record(
            "connection.refused",
            json!({"remote": peer.addr.to_string(), "reason": "no client key"}),
        );
        return (
            StatusCode::UNAUTHORIZED,
            "a node session needs a client key: make one with `pointhub keygen` and set key and cert in the node's config\n",
        )
            .into_response();
    };
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(128).collect::<String>())
    };
    let claim = Claim {
        name: header("x-pointhub-node").unwrap_or_default(),
        role: header("x-pointhub-role").and_then(|r| r.parse().ok()),
        token: header("x-pointhub-enroll"),
    };
    let addr = peer.addr.to_string();
    let decision = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.access.admit(&fp, &claim, &addr, &hub.name)).await
    };
    let entry = match decision {
        Ok(Ok(entry)) => entry,
        Ok(Err(refusal)) => {
            hub.stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(remote = %peer.addr, fingerprint = %fp, reason = refusal.reason, "refused node");
            return (StatusCode::FORBIDDEN, format!("{}\n", refusal.message)).into_response();
        }
        Err(e) => {
            warn!(error = %e, "admission task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
    };
    let max = hub.limits.max_frame;
    // The read buffer is the WebSocket layer's per-session allocation (128 KiB by default);
    // one TLS record's worth keeps an idle session small and costs big frames nothing
    // measurable (docs/benchmarks.md).
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| crate::session::run(hub, entry, peer, socket))
}

/// Connections in their TLS handshake, oldest first, each with the token that closes it.
#[derive(Default)]
pub(crate) struct Handshakes {
    pending: std::sync::Mutex<(u64, std::collections::BTreeMap<u64, CancellationToken>)>,
}

impl Handshakes {
    /// Adds a connection; past `max`, takes out the oldest one to be closed. Returns the new
    /// connection's number, the token of the one to close, and how many are pending.
    fn admit(&self, max: usize) -> (u64, Option<CancellationToken>, usize) {
        let Ok(mut g) = self.pending.lock() else {
            return (0, None, 0);
        };
        let (next, map) = &mut *g;
        *next += 1;
        let seq = *next;
        let evicted = if map.len() >= max.max(1) {
            map.pop_first().map(|(_, t)| t)
        } else {
            None
        };
        map.insert(seq, CancellationToken::new());
        (seq, evicted, map.len())
    }

    fn token(&self, seq: u64) -> CancellationToken {
        self.pending
            .lock()
            .ok()
            .and_then(|g| g.1.get(&seq).cloned())
            .unwrap_or_else(|| {
                let t = CancellationToken::new();
                t.cancel();
                t
            })
    }

    fn done(&self, seq: u64) {
        if let Ok(mut g) = self.pending.lock() {
            g.1.remove(&seq);
        }
    }
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    hub: Arc<Hub>,
    unauthenticated: Arc<Handshakes>,
    shutdown: CancellationToken,
) {
    let handshake_timeout = Duration::from_millis(hub.config.limits.handshake_timeout_ms);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        // A full pool of connections in their TLS handshake makes room by closing its oldest:
        // a legitimate handshake takes milliseconds, so the oldest are the idle ones, and a
        // flood of idle connections cycles itself out instead of locking everyone else out.
        let (seq, evicted, pending_now) =
            unauthenticated.admit(hub.config.limits.max_unauthenticated);
        if let Some(old) = evicted {
            debug!(remote = %addr, pending = pending_now, "connections in their TLS handshake at the limit: the oldest closed");
            old.cancel();
        }
        let unauthenticated = unauthenticated.clone();
        let header_timeout = handshake_timeout;
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("conn", remote = %addr);
        tokio::spawn(
            async move {
                let evict = unauthenticated.token(seq);
                let tls = tokio::select! {
                    r = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)) => Some(r),
                    _ = evict.cancelled() => None,
                };
                unauthenticated.done(seq);
                let tls = match tls {
                    Some(Ok(Ok(t))) => t,
                    Some(Ok(Err(e))) => {
                        info!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Some(Err(_)) => {
                        info!("TLS handshake timed out");
                        return;
                    }
                    None => {
                        debug!("closed to make room for newer connections");
                        return;
                    }
                };
                let fingerprint = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| Fingerprint::of_cert(c).ok());
                let peer = Peer { addr, fingerprint };
                let service = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        let mut app = app.clone();
                        async move { tower_service::Service::call(&mut app, req).await }
                    },
                );
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades();
                tokio::select! {
                    r = conn => if let Err(e) = r { debug!(error = %e, "connection ended") },
                    _ = shutdown.cancelled() => {}
                }
            }
            .instrument(span),
        );
    }
}

/// Publishes the hub's own status and each live node's round trip every heartbeat interval.
pub(crate) async fn sys_ticker(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(hub.heartbeat());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        hub.access.audit.flush_suppressed();
        let n = &hub.name;
        hub.set_sys(
            &format!("$sys/{n}/uptime_s"),
            DataType::UInt,
            Value::UInt(hub.started.elapsed().as_secs()),
        );
        hub.set_sys(
            &format!("$sys/{n}/sessions"),
            DataType::UInt,
            Value::UInt(hub.live.len() as u64),
        );
        hub.set_sys(
            &format!("$sys/{n}/points"),
            DataType::UInt,
            Value::UInt(hub.core.point_count() as u64),
        );
        hub.set_sys(
            &format!("$sys/{n}/updates_in"),
            DataType::UInt,
            Value::UInt(hub.core.updates_in.load(Ordering::Relaxed)),
        );
        let nodes: Vec<(String, u64, u64, Option<Arc<crate::core::Subscriber>>)> = hub
            .live
            .iter()
            .map(|e| {
                let s = &e.stats;
                (
                    e.name.clone(),
                    s.rtt_us.load(Ordering::Relaxed),
                    s.last_heard.load(Ordering::Relaxed),
                    e.sub.clone(),
                )
            })
            .collect();
        for (name, rtt, heard, sub) in nodes {
            if let Some(sub) = sub {
                hub.set_sys(
                    &format!("$sys/{name}/queue"),
                    DataType::UInt,
                    Value::UInt(sub.queue_len() as u64),
                );
                hub.set_sys(
                    &format!("$sys/{name}/conflated"),
                    DataType::UInt,
                    Value::UInt(sub.conflated.load(Ordering::Relaxed)),
                );
            }
            hub.set_sys(
                &format!("$sys/{name}/rtt_ms"),
                DataType::Float,
                Value::Float(rtt as f64 / 1000.0),
            );
            hub.set_sys(
                &format!("$sys/{name}/last_seen"),
                DataType::String,
                Value::String(pointhub_schemas::Timestamp(heard).to_rfc3339()),
            );
        }
    }
}
