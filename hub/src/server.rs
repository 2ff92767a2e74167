//! The hub's one TLS port: TLS 1.3 with client keys asked for, HTTP/1.1, the router, and the
//! hub's own `$sys` figures.

use crate::access::Claim;
use crate::state::{Hub, Peer};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use pointhub_link::identity::Fingerprint;
use pointhub_link::WS_READ_BUFFER;
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{DataType, Value};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

/// The HTTP side of the hub: `/node` for node sessions, `/healthz`.
pub(crate) fn router(hub: Arc<Hub>) -> Router {
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
        hub.access().audit.record(
            crate::audit::Event::ConnectionRefused,
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
        tokio::task::spawn_blocking(move || hub.access().admit(&fp, &claim, &addr, hub.name()))
            .await
    };
    let entry = match decision {
        Ok(Ok(entry)) => entry,
        Ok(Err(refusal)) => {
            hub.stats().refused.fetch_add(1, Ordering::Relaxed);
            warn!(remote = %peer.addr, fingerprint = %fp, reason = refusal.reason, "refused node");
            return (StatusCode::FORBIDDEN, format!("{}\n", refusal.message)).into_response();
        }
        Err(e) => {
            warn!(error = %e, "admission task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
    };
    let max = hub.limits().max_frame;
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
    let handshake_timeout = Duration::from_millis(hub.config().limits.handshake_timeout_ms);
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
            unauthenticated.admit(hub.config().limits.max_unauthenticated);
        if let Some(old) = evicted {
            debug!(remote = %addr, pending = pending_now, "connections in their TLS handshake at the limit: the oldest closed");
            old.cancel();
        }
        let unauthenticated = unauthenticated.clone();
        let header_timeout = handshake_timeout;
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("conn", remote = %addr);
        hub.tasks().spawn(
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
        hub.access().audit.flush_suppressed();
        let own = SysNamespace::of(hub.name());
        hub.set_sys(
            &own.point("uptime_s"),
            DataType::UInt,
            Value::UInt(hub.uptime().as_secs()),
        );
        hub.set_sys(
            &own.point("sessions"),
            DataType::UInt,
            Value::UInt(hub.sessions().len() as u64),
        );
        hub.set_sys(
            &own.point("points"),
            DataType::UInt,
            Value::UInt(hub.core().point_count() as u64),
        );
        hub.set_sys(
            &own.point("updates_in"),
            DataType::UInt,
            Value::UInt(hub.core().updates_in.load(Ordering::Relaxed)),
        );
        let nodes: Vec<(String, u64, u64, Option<Arc<crate::core::Subscriber>>)> = hub
            .sessions()
            .all()
            .into_iter()
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
            let sys = SysNamespace::of(&name);
            if let Some(sub) = sub {
                hub.set_sys(
                    &sys.point("queue"),
                    DataType::UInt,
                    Value::UInt(sub.queue_len() as u64),
                );
                hub.set_sys(
                    &sys.point("conflated"),
                    DataType::UInt,
                    Value::UInt(sub.conflated.load(Ordering::Relaxed)),
                );
            }
            hub.set_sys(
                &sys.point("rtt_ms"),
                DataType::Float,
                Value::Float(rtt as f64 / 1000.0),
            );
            hub.set_sys(
                &sys.point("last_seen"),
                DataType::String,
                Value::String(pointhub_schemas::Timestamp(heard).to_rfc3339()),
            );
        }
    }
}
