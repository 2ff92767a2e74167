//! Dialling a hub: TCP, TLS 1.3, the WebSocket upgrade with the node's claims, hello and
//! welcome; and dialling the best of several hubs until one answers.

use crate::addr::HubAddr;
use crate::identity::Identity;
use crate::retry::{order_by_rtt, probe, Backoff};
use crate::session::{spawn_session, Session, SessionOpts, WS_READ_BUFFER};
use crate::tls::{client_config, ServerVerification, TlsError};
use pointhub_schemas::{self as schemas, ErrorCode, Hello, Msg, Role, Welcome};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The software string every node sends.
pub const SOFTWARE: &str = concat!("pointhub ", env!("CARGO_PKG_VERSION"));

/// Why dialling a hub failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP connection to the hub could not be made.
    #[error("cannot reach {hub}: {source}")]
    Connect {
        /// The hub dialled.
        hub: HubAddr,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The TCP connect took longer than `connect_timeout` (the path is down or blackholed);
    /// `secs` is that timeout in whole seconds, at least 1.
    #[error("{hub} did not accept a connection within {secs} s")]
    Unreachable {
        /// The hub dialled.
        hub: HubAddr,
        /// The connect timeout, in seconds.
        secs: u64,
    },
    /// The TLS handshake, WebSocket upgrade or welcome took longer than `connect_timeout`;
    /// `secs` is that timeout in whole seconds, at least 1.
    #[error("{hub} did not answer within {secs} s")]
    Timeout {
        /// The hub dialled.
        hub: HubAddr,
        /// The connect timeout, in seconds.
        secs: u64,
    },
    /// The hub's host is not a valid TLS server name, or the TLS handshake failed (wrong pin, say).
    #[error("TLS with {hub} failed: {detail}")]
    Tls {
        /// The hub dialled.
        hub: HubAddr,
        /// What the lower layer reported.
        detail: String,
    },
    /// The hub answered the WebSocket upgrade with an HTTP error: 401 without a client key, 403
    /// for a key it does not admit.
    #[error("{hub} refused this node (HTTP {status}): {message}")]
    Refused {
        /// The hub dialled.
        hub: HubAddr,
        /// The HTTP status code of the hub's answer.
        status: u16,
        /// The body of the hub's answer, trimmed; empty if it had none.
        message: String,
    },
    /// The hub answered the hello with an `Error` message instead of a welcome.
    #[error("{hub} ended the session: {code:?}: {message}")]
    Rejected {
        /// The hub dialled.
        hub: HubAddr,
        /// The error code the hub sent.
        code: ErrorCode,
        /// The hub's explanation.
        message: String,
    },
    /// The upgrade request could not be built, the upgrade failed other than by an HTTP answer, or
    /// the session ended or sent another message before the welcome.
    #[error("WebSocket with {hub} failed: {detail}")]
    WebSocket {
        /// The hub dialled.
        hub: HubAddr,
        /// What the lower layer reported.
        detail: String,
    },
    /// A TLS configuration could not be built.
    #[error(transparent)]
    Config(#[from] TlsError),
}

impl LinkError {
    /// Whether the hub could not be reached at all (no TCP connection): the path is down, not
    /// the hub refusing or failing. Only then does a dialler probe for the path's return.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            LinkError::Connect { .. } | LinkError::Unreachable { .. }
        )
    }
}

/// While no hub can be reached at all, a TCP connect checks this often whether a path is back,
/// so a link returns within about this long of its path, however long the backoff has grown.
/// (A hub that is up but refusing or failing gets the full backoff.)
pub const PATH_PROBE: Duration = Duration::from_millis(500);

/// Everything a node needs to dial its hubs.
#[derive(Clone)]
pub struct LinkConfig {
    /// Hubs to try, in order.
    pub hubs: Vec<HubAddr>,
    /// How the hub's certificate is checked: a pinned fingerprint or CA roots.
    pub verify: ServerVerification,
    /// This node's certificate and key, shown to the hub as its client certificate.
    pub identity: Arc<Identity>,
    /// The role this node claims, in the upgrade request and the hello.
    pub role: Role,
    /// This node's name, sent in the upgrade request and the hello.
    pub name: String,
    /// Timing and size rules of the session; `SessionOpts::default()` unless set.
    pub session: SessionOpts,
    /// How long each step of a dial (TCP, TLS, WebSocket upgrade, welcome) may take; 5 s default.
    pub connect_timeout: Duration,
    /// The first wait of the reconnect backoff between dialling rounds; 100 ms by default.
    pub backoff_min: Duration,
    /// The longest wait of the reconnect backoff; 10 s by default, set from `backoff_max_ms`.
    pub backoff_max: Duration,
    /// A one-time enrollment token, sent while this node's key is not yet approved.
    pub enroll_token: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

impl LinkConfig {
    /// A configuration for `hubs` with the defaults above and no enrollment token. Fails if the TLS
    /// client configuration cannot be built (a certificate and key that do not fit, say).
    pub fn new(
        hubs: Vec<HubAddr>,
        verify: ServerVerification,
        identity: Identity,
        role: Role,
        name: impl Into<String>,
    ) -> Result<LinkConfig, TlsError> {
        let tls = client_config(&identity, &verify)?;
        Ok(LinkConfig {
            hubs,
            verify,
            identity: Arc::new(identity),
            role,
            name: name.into(),
            session: SessionOpts::default(),
            connect_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            enroll_token: None,
            tls,
        })
    }
}

/// A dialled, welcomed session.
pub struct Link {
    /// The running session with the hub.
    pub session: Session,
    /// The hub's answer to this node's hello: its name, the node's name and namespace, the timing.
    pub welcome: Welcome,
    /// The hub that answered.
    pub hub: HubAddr,
}

/// Dials one hub: TCP, TLS 1.3, WebSocket, hello and welcome.
pub async fn dial(
    cfg: &LinkConfig,
    hub: &HubAddr,
    shutdown: &CancellationToken,
) -> Result<Link, LinkError> {
    let tcp = tokio::time::timeout(
        cfg.connect_timeout,
        tokio::net::TcpStream::connect((hub.host.as_str(), hub.port)),
    )
    .await
    .map_err(|_| LinkError::Unreachable {
        hub: hub.clone(),
        secs: cfg.connect_timeout.as_secs().max(1),
    })?
    .map_err(|source| LinkError::Connect {
        hub: hub.clone(),
        source,
    })?;
    dial_over(cfg, hub, tcp, shutdown).await
}

/// Like [`dial`], over a TCP connection the caller made (to set socket options, say).
pub async fn dial_over(
    cfg: &LinkConfig,
    hub: &HubAddr,
    tcp: tokio::net::TcpStream,
    shutdown: &CancellationToken,
) -> Result<Link, LinkError> {
    let secs = cfg.connect_timeout.as_secs().max(1);
    let timeout = |hub: &HubAddr| LinkError::Timeout {
        hub: hub.clone(),
        secs,
    };
    let _ = tcp.set_nodelay(true);
    let server_name =
        rustls::pki_types::ServerName::try_from(hub.host.clone()).map_err(|e| LinkError::Tls {
            hub: hub.clone(),
            detail: format!("bad host name: {e}"),
        })?;
    let tls = tokio::time::timeout(
        cfg.connect_timeout,
        tokio_rustls::TlsConnector::from(cfg.tls.clone()).connect(server_name, tcp),
    )
    .await
    .map_err(|_| timeout(hub))?
    .map_err(|e| LinkError::Tls {
        hub: hub.clone(),
        detail: e.to_string(),
    })?;
    let ws_cfg = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(cfg.session.limits.max_frame))
        .max_frame_size(Some(cfg.session.limits.max_frame));
    let request = build_request(hub, cfg)?;
    let (ws, _resp) = tokio::time::timeout(
        cfg.connect_timeout,
        tokio_tungstenite::client_async_with_config(request, tls, Some(ws_cfg)),
    )
    .await
    .map_err(|_| timeout(hub))?
    .map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let message = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            LinkError::Refused {
                hub: hub.clone(),
                status: resp.status().as_u16(),
                message,
            }
        }
        other => LinkError::WebSocket {
            hub: hub.clone(),
            detail: other.to_string(),
        },
    })?;
    let mut session = spawn_session(ws, cfg.session.clone(), shutdown);
    session
        .tx
        .send(Msg::Hello(Hello {
            major: schemas::PROTOCOL_MAJOR,
            minor: schemas::PROTOCOL_MINOR,
            role: cfg.role,
            name: cfg.name.clone(),
            software: SOFTWARE.into(),
        }))
        .await;
    let first = tokio::time::timeout(cfg.connect_timeout, session.rx.recv())
        .await
        .map_err(|_| timeout(hub))?;
    match first {
        Some(Msg::Welcome(welcome)) => Ok(Link {
            session,
            welcome,
            hub: hub.clone(),
        }),
        Some(Msg::Error(e)) => Err(LinkError::Rejected {
            hub: hub.clone(),
            code: e.code,
            message: e.message,
        }),
        Some(other) => Err(LinkError::WebSocket {
            hub: hub.clone(),
            detail: format!("expected welcome, got {}", other.kind()),
        }),
        None => Err(LinkError::WebSocket {
            hub: hub.clone(),
            detail: session.close_reason(),
        }),
    }
}

/// The WebSocket upgrade request, with the node's claims: its name, role and any enrollment token.
fn build_request(
    hub: &HubAddr,
    cfg: &LinkConfig,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, LinkError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let bad = |detail: String| LinkError::WebSocket {
        hub: hub.clone(),
        detail,
    };
    let mut req = hub
        .to_string()
        .into_client_request()
        .map_err(|e| bad(e.to_string()))?;
    let h = req.headers_mut();
    let value = |s: &str| {
        HeaderValue::from_str(s).map_err(|_| bad(format!("{s:?} cannot go into an HTTP header")))
    };
    h.insert("x-pointhub-node", value(&cfg.name)?);
    h.insert("x-pointhub-role", value(cfg.role.as_str())?);
    if let Some(t) = &cfg.enroll_token {
        h.insert("x-pointhub-enroll", value(t)?);
    }
    Ok(req)
}

/// Dials the configured hubs — the one with the lowest round trip first — waiting with backoff
/// between rounds, until one welcomes this node or `shutdown` fires. While no hub can be reached
/// at all, the wait is cut short as soon as a TCP probe finds one again ([`PATH_PROBE`]).
pub async fn dial_any(
    cfg: &LinkConfig,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Option<Link> {
    loop {
        let order: Vec<usize> = if cfg.hubs.len() > 1 {
            let rtts = tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = probe(&cfg.hubs, cfg.connect_timeout.min(Duration::from_secs(2))) => r,
            };
            order_by_rtt(&rtts)
        } else {
            vec![0]
        };
        // Whether every hub of this round failed for want of a path (no TCP connection).
        let mut unreachable = true;
        for i in order {
            let Some(hub) = cfg.hubs.get(i) else { continue };
            if shutdown.is_cancelled() {
                return None;
            }
            match dial(cfg, hub, shutdown).await {
                Ok(link) => {
                    info!(hub = %hub, node = %link.welcome.node, "connected");
                    return Some(link);
                }
                Err(e) => {
                    unreachable &= e.is_unreachable();
                    warn!(error = %e, "cannot connect; will retry");
                }
            }
        }
        let wait = backoff.next_delay();
        let until = tokio::time::Instant::now() + wait;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            let step = if unreachable {
                (until - now).min(PATH_PROBE)
            } else {
                until - now
            };
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(step) => {}
            }
            if unreachable
                && tokio::time::Instant::now() < until
                && probe(&cfg.hubs, PATH_PROBE)
                    .await
                    .iter()
                    .any(Option::is_some)
            {
                info!("a hub is reachable again: dialling now");
                break;
            }
        }
    }
}
