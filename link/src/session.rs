//! One WebSocket session between a node and a hub, driven the same way on both ends.
//!
//! [`spawn_session`] drives any WebSocket (the node's tungstenite stream or the hub's axum socket)
//! with the same rules on both ends: frames decoded within [`Limits`], a `Ping` every heartbeat
//! interval, the session declared dead when nothing is heard for the timeout, round trip measured
//! from `Pong`s, and queued outbound messages coalesced into one write. A bad frame ends the
//! session with an `Error` message that says why; it ends nothing else.

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use pointhub_schemas::{self as schemas, ErrorCode, ErrorMsg, Limits, Msg, Ping, Timestamp};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

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
    /// Size limits every received frame is decoded within; `Limits::default()` by default.
    pub limits: Limits,
    /// Frames read per second at most; past it, reading pauses (the peer is throttled, not cut).
    pub max_frames_per_sec: u32,
    /// Where the session's reader and writer tasks are tracked (the hub waits for them when it
    /// shuts down); `None`: plain tasks.
    pub tasks: Option<TaskTracker>,
}

impl Default for SessionOpts {
    fn default() -> Self {
        SessionOpts {
            heartbeat: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            limits: Limits::default(),
            max_frames_per_sec: 100_000,
            tasks: None,
        }
    }
}

/// What one WebSocket frame is, for the session driver.
pub enum FrameKind {
    /// A binary frame, with its bytes: an encoded message.
    Binary(Bytes),
    /// A close frame, with the peer's reason if it gave one.
    Close(Option<String>),
    /// A text frame: node sessions speak binary, so it ends the session with an error.
    Text,
    /// Any other frame (a WebSocket ping or pong); skipped.
    Control,
}

/// A WebSocket message type the session driver can use (tungstenite's and axum's).
pub trait WsMessage: Send + Sized + 'static {
    /// A binary message; `Bytes`, so a frame shared by many sessions goes out without a copy.
    fn binary(bytes: Bytes) -> Self;
    /// A close frame without a reason.
    fn close() -> Self;
    /// What the frame is, with its bytes if binary.
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
    /// A message, encoded by the writer.
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
    /// WebSocket frames read from the peer, of any kind.
    pub frames_in: AtomicU64,
    /// Frames written to the peer: queued messages and encoded frames, not heartbeat `Ping`s.
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
    /// Queues an already encoded frame; waits while the queue is full. `false` once the session has
    /// ended.
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
    /// Queues a close after everything queued before it; the session then ends.
    pub async fn close(&self) {
        let _ = self.tx.send(Outgoing::Close).await;
    }
}

/// A running session: messages in and out, figures, and how it ended.
pub struct Session {
    /// Sends on the session; clone it to send from several tasks.
    pub tx: SessionTx,
    /// Messages from the peer, except `Ping` and `Pong` (the driver answers those); `None` once the
    /// session has ended.
    pub rx: mpsc::Receiver<Msg>,
    /// Live figures: round trip, when last heard, frames in and out.
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

/// The reason held by a [`Session::reason_handle`], or `session closed` if none was set.
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
    E: std::error::Error + Send + 'static,
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
    let tasks = opts.tasks.clone();
    let writer = write_loop(
        sink,
        out_rx,
        opts.heartbeat,
        closed.clone(),
        reason.clone(),
        stats.clone(),
    );
    let reader = read_loop(
        stream,
        in_tx,
        tx.clone(),
        opts,
        closed.clone(),
        reason.clone(),
        stats.clone(),
    );
    match tasks {
        Some(t) => {
            t.spawn(writer);
            t.spawn(reader);
        }
        None => {
            tokio::spawn(writer);
            tokio::spawn(reader);
        }
    }
    Session {
        tx,
        rx: in_rx,
        stats,
        closed,
        reason,
    }
}

/// Whether a read failed because the peer's frame or message was past the size limit: the
/// WebSocket layer's capacity error, found by type anywhere in the error's chain (the hub's
/// WebSocket wraps it in its own error type).
fn past_size_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) = err.downcast_ref() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A connection that ended without a goodbye (the peer was killed, or the network path broke):
/// said plainly, rather than as the TLS layer's complaint about a missing `close_notify`.
fn abrupt_end(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::UnexpectedEof => Some(
                    "connection ended without a goodbye (the peer stopped, or the network path broke)",
                ),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Some(
                    "connection reset (the peer stopped, or the network path broke)",
                ),
                _ => None,
            };
        }
        if let Some(tokio_tungstenite::tungstenite::Error::Io(io)) = err.downcast_ref() {
            cur = Some(io);
            continue;
        }
        cur = err.source();
    }
    None
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
    E: std::error::Error + 'static,
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
                if past_size_limit(&e) {
                    out.fail(ErrorCode::LimitExceeded, format!("frame refused: {e}"))
                        .await;
                }
                break match abrupt_end(&e) {
                    Some(what) => what.to_string(),
                    None => format!("connection error: {e}"),
                };
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

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_schemas::Role;

    /// Both ends of one session over an in-memory stream: no socket, no TLS. The WebSocket layer
    /// refuses messages past `opts.limits.max_frame`, as on a real link.
    async fn pair(opts: SessionOpts) -> (Session, Session) {
        use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};
        use tokio_tungstenite::WebSocketStream;
        let (a, b) = tokio::io::duplex(1 << 16);
        let ws = || {
            Some(
                WebSocketConfig::default()
                    .max_message_size(Some(opts.limits.max_frame))
                    .max_frame_size(Some(opts.limits.max_frame)),
            )
        };
        let (a, b) = tokio::join!(
            WebSocketStream::from_raw_socket(a, WsRole::Client, ws()),
            WebSocketStream::from_raw_socket(b, WsRole::Server, ws())
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

    #[test]
    fn a_connection_cut_without_a_goodbye_is_said_plainly() {
        let eof = tokio_tungstenite::tungstenite::Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify",
        ));
        let said = abrupt_end(&eof).expect("an abrupt end");
        assert!(said.contains("without a goodbye"), "{said}");
        assert!(!said.contains("close_notify"), "{said}");
        let other = tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other("disk"));
        assert!(abrupt_end(&other).is_none());
    }

    #[tokio::test]
    async fn a_frame_past_the_size_limit_is_answered_limit_exceeded() {
        let mut opts = SessionOpts::default();
        opts.limits.max_frame = 1024;
        let (mut a, mut b) = pair(opts).await;
        assert!(b.tx.send_frame(Bytes::from(vec![0u8; 4096])).await);
        // The receiving end ends the session ...
        let ended = tokio::time::timeout(Duration::from_secs(5), a.rx.recv()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        assert!(
            a.close_reason().contains("connection error"),
            "{}",
            a.close_reason()
        );
        // ... and tells the sender why, by code.
        let mut told = None;
        while let Some(m) = tokio::time::timeout(Duration::from_secs(5), b.rx.recv())
            .await
            .expect("the sender's session ends in time")
        {
            if let Msg::Error(e) = m {
                told = Some(e);
            }
        }
        let told = told.expect("the sender is told why");
        assert_eq!(told.code, ErrorCode::LimitExceeded, "{told:?}");
    }
}
