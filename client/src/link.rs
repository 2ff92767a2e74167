//! The node link: one WebSocket session over TLS between a node and a hub, and the dialer.
//!
//! [`spawn_session`] drives any WebSocket (the node's tungstenite stream or the hub's axum socket)
//! with the same rules on both ends: frames decoded within [`Limits`], a `Ping` every heartbeat
//! interval, the session declared dead when nothing is heard for the timeout, round trip measured
//! from `Pong`s, and queued outbound messages coalesced into one write. A bad frame ends the
//! session with an `Error` message that says why; it ends nothing else.

use crate::identity::Identity;
use crate::tls::{client_config, ServerVerification, TlsError};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use pointhub_schemas::{
    self as schemas, ErrorCode, ErrorMsg, Hello, Limits, Msg, Ping, Role, Timestamp, Welcome,
};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The software string every node sends.
pub const SOFTWARE: &str = concat!("pointhub ", env!("CARGO_PKG_VERSION"));

/// A hub address: `wss://host:port/node`, `host:port`, `[::1]:7420`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubAddr {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// The hub's default port.
pub const DEFAULT_PORT: u16 = 7420;

impl FromStr for HubAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("hub address {s:?}: {why} (write wss://HOST:PORT, e.g. wss://127.0.0.1:7420)")
        };
        let rest = s.trim();
        let rest = if let Some(r) = rest.strip_prefix("wss://") {
            r
        } else if rest.contains("://") {
            return Err(bad("only wss:// is spoken"));
        } else {
            rest
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/node"),
        };
        let path = if path == "/" { "/node" } else { path };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed '['"))?;
            let host = &r[..end];
            let port = match &r[end + 1..] {
                "" => DEFAULT_PORT,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| bad("bad port"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_string(), DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HubAddr {
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for HubAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "wss://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "wss://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl<'de> serde::Deserialize<'de> for HubAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Bytes the WebSocket layer reads at a time per session, on nodes and on the hub: one TLS
/// record. The layer zero-fills this much before every read, so its 128 KiB default cost a
/// 128 KiB memset per read (11 % of a client's CPU at 10,000 small frames/s); it also keeps an
/// idle session small, and costs big frames nothing measurable (docs/benchmarks.md).
pub const WS_READ_BUFFER: usize = 16 * 1024;

/// Timing and size rules of a session.
#[derive(Clone, Debug)]
pub struct SessionOpts {
    /// A `Ping` goes out this often.
    pub heartbeat: Duration,
    /// Nothing heard for this long ends the session.
    pub timeout: Duration,
    pub limits: Limits,
    /// Frames read per second at most; past it, reading pauses (the peer is throttled, not cut).
    pub max_frames_per_sec: u32,
}

impl Default for SessionOpts {
    fn default() -> Self {
        SessionOpts {
            heartbeat: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            limits: Limits::default(),
            max_frames_per_sec: 100_000,
        }
    }
}

/// What one WebSocket frame is, for the session driver.
pub enum FrameKind {
    Binary(Bytes),
    Close(Option<String>),
    Text,
    Control,
}

/// A WebSocket message type the session driver can use (tungstenite's and axum's).
pub trait WsMessage: Send + Sized + 'static {
    /// A binary message; `Bytes`, so a frame shared by many sessions goes out without a copy.
    fn binary(bytes: Bytes) -> Self;
    fn close() -> Self;
    fn kind(self) -> FrameKind;
}

impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn binary(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
    fn close() -> Self {
        Self::Close(None)
    }
    fn kind(self) -> FrameKind {
        use tokio_tungstenite::tungstenite::Message as M;
        match self {
            M::Binary(b) => FrameKind::Binary(b),
            M::Close(c) => FrameKind::Close(c.map(|c| c.reason.to_string())),
            M::Text(_) => FrameKind::Text,
            _ => FrameKind::Control,
        }
    }
}

/// What goes out on a session.
#[derive(Debug)]
pub enum Outgoing {
    Msg(Msg),
    /// An already encoded frame (one encode shared by many sessions).
    Frame(Bytes),
    /// Send a close frame after everything queued before it, then end the session.
    Close,
}

/// Live figures of a session.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Last measured round trip, microseconds (0 until the first `Pong`).
    pub rtt_us: AtomicU64,
    /// When the peer was last heard, microseconds since the epoch.
    pub last_heard: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
}

/// The sending half of a session; cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionTx {
    tx: mpsc::Sender<Outgoing>,
}

impl SessionTx {
    /// Queues a message; waits while the queue is full. `false` once the session has ended.
    pub async fn send(&self, msg: Msg) -> bool {
        self.tx.send(Outgoing::Msg(msg)).await.is_ok()
    }
    pub async fn send_frame(&self, frame: Bytes) -> bool {
        self.tx.send(Outgoing::Frame(frame)).await.is_ok()
    }
    /// Queues a message unless the queue is full.
    pub fn try_send(&self, msg: Msg) -> bool {
        self.tx.try_send(Outgoing::Msg(msg)).is_ok()
    }
    /// Sends an error the peer can read, then closes.
    pub async fn fail(&self, code: ErrorCode, message: impl Into<String>) {
        let _ = self
            .tx
            .send(Outgoing::Msg(Msg::Error(ErrorMsg {
                code,
                message: message.into(),
            })))
            .await;
        let _ = self.tx.send(Outgoing::Close).await;
    }
    pub async fn close(&self) {
        let _ = self.tx.send(Outgoing::Close).await;
    }
}

/// A running session: messages in and out, figures, and how it ended.
pub struct Session {
    pub tx: SessionTx,
    pub rx: mpsc::Receiver<Msg>,
    pub stats: Arc<SessionStats>,
    /// Cancelled when the session ends, for whatever reason.
    pub closed: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Session {
    /// Sends what is queued (an error, say), closes, and waits a moment for the writer to finish.
    pub async fn finish(&self) {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.tx.close()).await;
        let _ = tokio::time::timeout(Duration::from_millis(1000), self.closed.cancelled()).await;
        self.closed.cancel();
    }

    /// Why the session ended (after `rx` returned `None` or `closed` fired).
    pub fn close_reason(&self) -> String {
        close_reason(&self.reason)
    }

    /// A handle that reads the close reason later.
    pub fn reason_handle(&self) -> Arc<Mutex<Option<String>>> {
        self.reason.clone()
    }
}

pub fn close_reason(r: &Mutex<Option<String>>) -> String {
    r.lock()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(|| "session closed".into())
}

fn set_reason(r: &Mutex<Option<String>>, why: impl Into<String>) {
    if let Ok(mut g) = r.lock() {
        if g.is_none() {
            *g = Some(why.into());
        }
    }
}

/// Decoded frames a session's reader may hold ahead of its consumer: enough to keep both busy,
/// few enough that a fast peer's big frames (birth parts) do not pile up in memory.
const IN_QUEUE: usize = 8;

/// Starts the reader and writer tasks of a session over `ws`. The session ends when `parent` is
/// cancelled, the peer closes or goes silent, a frame is bad, or every receiver is dropped.
pub fn spawn_session<S, M, E>(ws: S, opts: SessionOpts, parent: &CancellationToken) -> Session
where
    S: Stream<Item = Result<M, E>> + Sink<M> + Send + 'static,
    <S as Sink<M>>::Error: fmt::Display + Send + 'static,
    M: WsMessage,
    E: fmt::Display + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(64);
    let (in_tx, in_rx) = mpsc::channel::<Msg>(IN_QUEUE);
    let closed = parent.child_token();
    let stats = Arc::new(SessionStats::default());
    stats
        .last_heard
        .store(Timestamp::now().0, Ordering::Relaxed);
    let reason = Arc::new(Mutex::new(None));
    let tx = SessionTx { tx: out_tx };
    tokio::spawn(write_loop(
        sink,
        out_rx,
        opts.heartbeat,
        closed.clone(),
        reason.clone(),
        stats.clone(),
    ));
    tokio::spawn(read_loop(
        stream,
        in_tx,
        tx.clone(),
        opts,
        closed.clone(),
        reason.clone(),
        stats.clone(),
    ));
    Session {
        tx,
        rx: in_rx,
        stats,
        closed,
        reason,
    }
}

async fn write_loop<K, M>(
    mut sink: K,
    mut out: mpsc::Receiver<Outgoing>,
    heartbeat: Duration,
    closed: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    stats: Arc<SessionStats>,
) where
    K: Sink<M> + Unpin,
    K::Error: fmt::Display,
    M: WsMessage,
{
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: Result<(), String> = async {
        loop {
            tokio::select! {
                biased;
                _ = closed.cancelled() => return Ok(()),
                item = out.recv() => {
                    let Some(mut item) = item else { return Ok(()) };
                    // Coalesce what is queued into one write.
                    let mut n = 0;
                    loop {
                        let frame = match item {
                            Outgoing::Msg(m) => M::binary(schemas::encode(&m).into()),
                            Outgoing::Frame(b) => M::binary(b),
                            Outgoing::Close => {
                                sink.flush().await.map_err(|e| e.to_string())?;
                                let _ = sink.send(M::close()).await;
                                return Err("closed by this side".to_string());
                            }
                        };
                        sink.feed(frame).await.map_err(|e| e.to_string())?;
                        stats.frames_out.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                        match out.try_recv() {
                            Ok(next) if n < 256 => item = next,
                            Ok(next) => {
                                sink.flush().await.map_err(|e| e.to_string())?;
                                n = 0;
                                item = next;
                            }
                            Err(_) => break,
                        }
                    }
                    sink.flush().await.map_err(|e| e.to_string())?;
                }
                _ = tick.tick() => {
                    let ping = Msg::Ping(Ping { t: Timestamp::now() });
                    sink.send(M::binary(schemas::encode(&ping).into())).await.map_err(|e| e.to_string())?;
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        set_reason(&reason, format!("send failed: {e}"));
    }
    closed.cancel();
}

async fn read_loop<T, M, E>(
    mut stream: T,
    in_tx: mpsc::Sender<Msg>,
    out: SessionTx,
    opts: SessionOpts,
    closed: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    stats: Arc<SessionStats>,
) where
    T: Stream<Item = Result<M, E>> + Unpin,
    M: WsMessage,
    E: fmt::Display,
{
    let mut window = tokio::time::Instant::now();
    let mut in_window = 0u32;
    let why: String = loop {
        in_window += 1;
        if in_window > opts.max_frames_per_sec {
            let end = window + Duration::from_secs(1);
            if end > tokio::time::Instant::now() {
                tokio::time::sleep_until(end).await;
            }
            window = tokio::time::Instant::now();
            in_window = 0;
        }
        let next = tokio::select! {
            _ = closed.cancelled() => break "session ended".into(),
            r = tokio::time::timeout(opts.timeout, stream.next()) => r,
        };
        let frame = match next {
            Err(_) => {
                break format!(
                    "peer silent for {} ms (heartbeat timeout)",
                    opts.timeout.as_millis()
                )
            }
            Ok(None) => break "connection closed by peer".into(),
            Ok(Some(Err(e))) => {
                let text = e.to_string();
                if text.contains("Space limit exceeded")
                    || text.contains("too long")
                    || text.contains("too big")
                {
                    out.fail(ErrorCode::LimitExceeded, format!("frame refused: {text}"))
                        .await;
                }
                break format!("connection error: {text}");
            }
            Ok(Some(Ok(m))) => m,
        };
        stats
            .last_heard
            .store(Timestamp::now().0, Ordering::Relaxed);
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let bytes = match frame.kind() {
            FrameKind::Binary(b) => b,
            FrameKind::Close(r) => {
                break format!(
                    "peer closed the session{}",
                    r.map(|r| format!(": {r}")).unwrap_or_default()
                )
            }
            FrameKind::Control => continue,
            FrameKind::Text => {
                out.fail(
                    ErrorCode::Malformed,
                    "text frame on a node session: node sessions speak binary frames",
                )
                .await;
                break "peer sent a text frame".into();
            }
        };
        let msg = match schemas::decode(&bytes, &opts.limits) {
            Ok(m) => m,
            Err(e) => {
                let code = match e {
                    schemas::DecodeError::Version { .. } => ErrorCode::ProtocolVersion,
                    schemas::DecodeError::TooLarge { .. }
                    | schemas::DecodeError::TooMany { .. } => ErrorCode::LimitExceeded,
                    _ => ErrorCode::Malformed,
                };
                out.fail(code, e.to_string()).await;
                break format!("bad frame from peer: {e}");
            }
        };
        match msg {
            Msg::Ping(p) => {
                let _ = out.try_send(Msg::Pong(p));
            }
            Msg::Pong(p) => {
                stats
                    .rtt_us
                    .store(Timestamp::now().micros_since(p.t).max(1), Ordering::Relaxed);
            }
            other => {
                if in_tx.send(other).await.is_err() {
                    break "session dropped by this side".into();
                }
            }
        }
    };
    debug!(reason = %why, "session reader ended");
    set_reason(&reason, why);
    // Let a queued error reach the peer before the writer stops.
    let _ = tokio::time::timeout(Duration::from_millis(200), out.close()).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), closed.cancelled()).await;
    closed.cancel();
}

/// Why dialling a hub failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach {hub}: {source}")]
    Connect {
        hub: HubAddr,
        source: std::io::Error,
    },
    #[error("{hub} did not answer within {secs} s")]
    Timeout { hub: HubAddr, secs: u64 },
    #[error("TLS with {hub} failed: {detail}")]
    Tls { hub: HubAddr, detail: String },
    #[error("{hub} refused this node (HTTP {status}): {message}")]
    Refused {
        hub: HubAddr,
        status: u16,
        message: String,
    },
    #[error("{hub} ended the session: {code:?}: {message}")]
    Rejected {
        hub: HubAddr,
        code: ErrorCode,
        message: String,
    },
    #[error("WebSocket with {hub} failed: {detail}")]
    WebSocket { hub: HubAddr, detail: String },
    #[error(transparent)]
    Config(#[from] TlsError),
}

/// Everything a node needs to dial its hubs.
#[derive(Clone)]
pub struct LinkConfig {
    /// Hubs to try, in order.
    pub hubs: Vec<HubAddr>,
    pub verify: ServerVerification,
    pub identity: Arc<Identity>,
    pub role: Role,
    pub name: String,
    pub session: SessionOpts,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A one-time enrollment token, sent while this node's key is not yet approved.
    pub enroll_token: Option<String>,
    tls: Arc<rustls::ClientConfig>,
}

impl LinkConfig {
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
    pub session: Session,
    pub welcome: Welcome,
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
    .map_err(|_| LinkError::Timeout {
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
    let url = hub.to_string();
    let request = build_request(&url, cfg).map_err(|detail| LinkError::WebSocket {
        hub: hub.clone(),
        detail,
    })?;
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
    url: &str,
    cfg: &LinkConfig,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, String> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    let value = |s: &str| {
        HeaderValue::from_str(s).map_err(|_| format!("{s:?} cannot go into an HTTP header"))
    };
    h.insert("x-pointhub-node", value(&cfg.name)?);
    h.insert("x-pointhub-role", value(cfg.role.as_str())?);
    if let Some(t) = &cfg.enroll_token {
        h.insert("x-pointhub-enroll", value(t)?);
    }
    Ok(req)
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, cur: min }
    }
    pub fn reset(&mut self) {
        self.cur = self.min;
    }
    /// The next wait: a random time between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let cur = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        let half = cur / 2;
        half + Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64))
    }
}

/// Measures how long a TCP connect to each hub takes (about one round trip), concurrently.
pub async fn probe(hubs: &[HubAddr], timeout: Duration) -> Vec<Option<Duration>> {
    let probes = hubs.iter().map(|h| async move {
        let t0 = tokio::time::Instant::now();
        match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((h.host.as_str(), h.port)),
        )
        .await
        {
            Ok(Ok(_)) => Some(t0.elapsed()),
            _ => None,
        }
    });
    futures_util::future::join_all(probes).await
}

/// The order to try hubs in: the reachable ones by round trip (within a margin of the fastest,
/// the configured order decides, so equal hubs do not flap), then the unreachable ones.
pub fn order_by_rtt(rtts: &[Option<Duration>]) -> Vec<usize> {
    let best = rtts.iter().flatten().min().copied().unwrap_or_default();
    let margin = best * 2 + Duration::from_millis(2);
    let mut idx: Vec<usize> = (0..rtts.len()).collect();
    idx.sort_by_key(|&i| match rtts[i] {
        Some(r) if r <= margin => (0, Duration::ZERO, i),
        Some(r) => (1, r, i),
        None => (2, Duration::ZERO, i),
    });
    idx
}

/// Dials the configured hubs — the one with the lowest round trip first — waiting with backoff
/// between rounds, until one welcomes this node or `shutdown` fires.
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
                Err(e) => warn!(error = %e, "cannot connect; will retry"),
            }
        }
        let wait = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_addresses() {
        let a: HubAddr = "wss://127.0.0.1:9000".parse().expect("parses");
        assert_eq!(
            (a.host.as_str(), a.port, a.path.as_str()),
            ("127.0.0.1", 9000, "/node")
        );
        let b: HubAddr = "[::1]:9001".parse().expect("parses");
        assert_eq!((b.host.as_str(), b.port), ("::1", 9001));
        assert_eq!(b.to_string(), "wss://[::1]:9001/node");
        let c: HubAddr = "hub.example.com".parse().expect("parses");
        assert_eq!(c.port, DEFAULT_PORT);
        assert!("http://x:1".parse::<HubAddr>().is_err());
        assert!("x:notaport".parse::<HubAddr>().is_err());
    }

    #[test]
    fn hubs_are_ordered_by_round_trip_with_a_margin() {
        let ms = |m: u64| Some(Duration::from_millis(m));
        assert_eq!(order_by_rtt(&[ms(50), ms(5), None]), vec![1, 0, 2]);
        assert_eq!(
            order_by_rtt(&[ms(1), ms(1), ms(2)]),
            vec![0, 1, 2],
            "near-equal hubs keep their order"
        );
        assert_eq!(order_by_rtt(&[None, ms(30)]), vec![1, 0]);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[5] >= Duration::from_millis(400) && d[5] <= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    /// Both ends of one session over an in-memory stream: no socket, no TLS.
    async fn pair(opts: SessionOpts) -> (Session, Session) {
        use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
        use tokio_tungstenite::WebSocketStream;
        let (a, b) = tokio::io::duplex(1 << 16);
        let (a, b) = tokio::join!(
            WebSocketStream::from_raw_socket(a, WsRole::Client, None),
            WebSocketStream::from_raw_socket(b, WsRole::Server, None)
        );
        let token = CancellationToken::new();
        (
            spawn_session(a, opts.clone(), &token),
            spawn_session(b, opts, &token),
        )
    }

    #[tokio::test]
    async fn a_session_over_an_in_memory_stream_carries_messages_and_ends_on_a_bad_frame() {
        let opts = SessionOpts {
            heartbeat: Duration::from_millis(50),
            timeout: Duration::from_millis(2000),
            ..SessionOpts::default()
        };
        let (a, mut b) = pair(opts).await;
        let hello = Msg::Hello(pointhub_schemas::Hello {
            major: pointhub_schemas::PROTOCOL_MAJOR,
            minor: pointhub_schemas::PROTOCOL_MINOR,
            role: Role::Edge,
            name: "e1".into(),
            software: "test".into(),
        });
        assert!(a.tx.send(hello.clone()).await);
        let got = tokio::time::timeout(Duration::from_secs(5), b.rx.recv())
            .await
            .expect("in time");
        assert_eq!(got, Some(hello));
        // Heartbeats keep an idle session alive past its timeout.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!a.closed.is_cancelled() && !b.closed.is_cancelled());
        assert!(
            a.stats.rtt_us.load(Ordering::Relaxed) > 0,
            "a round trip was measured"
        );
        // A frame that does not decode ends the session: the receiver tells the sender why.
        let mut a = a;
        assert!(
            b.tx.send_frame(Bytes::from_static(b"\xff\xffnot a message"))
                .await
        );
        let mut err = None;
        while let Some(m) = tokio::time::timeout(Duration::from_secs(5), b.rx.recv())
            .await
            .expect("the session ends in time")
        {
            if let Msg::Error(e) = m {
                err = Some(e);
            }
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), a.rx.recv()).await;
        assert!(matches!(ended, Ok(None)), "the receiving end closed too");
        let err = err.expect("an error before the end");
        assert_eq!(err.code, pointhub_schemas::ErrorCode::Malformed, "{err:?}");
    }
}
