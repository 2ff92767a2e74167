//! A client: a local mirror of the points it subscribed to, with their quality.
//!
//! The mirror is authoritative about one thing itself: whether its own link to the hub is alive.
//! When the link closes or goes silent past the heartbeat timeout, every point of the mirror turns
//! stale at once (`UncertainNoCommunicationLastUsableValue`, keeping the last value, or
//! `BadNoCommunication` where there was none) without waiting for anyone; each change is also an
//! [`Event::Update`]. The client reconnects by itself and the hub's snapshot restores the mirror.
//!
//! ```no_run
//! # async fn f(cfg: pointhub_client::LinkConfig) {
//! use pointhub_client::{Client, Event, client::ClientOptions};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let opts = ClientOptions { patterns: vec!["plant1/**".into()], ..Default::default() };
//! let (client, mut events) = Client::spawn(cfg, opts, shutdown);
//! while let Some(ev) = events.recv().await {
//!     if let Event::Update(rec) = ev {
//!         println!("{}", rec.to_json());
//!     }
//! }
//! # }
//! ```

use dashmap::DashMap;
use pointhub_link::{self as link, Backoff, LinkConfig};
use pointhub_schemas::{
    json, DataType, DurableSubscribe, Msg, Quality, Rebirth, Subscribe, Timestamp, Update, Value,
    WriteRequest,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// One point as the client holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct PointRecord {
    /// The point's full name (`plant1/line2/temp`), from the hub's define.
    pub name: Arc<str>,
    /// The last value; `Null` if the point never had one.
    pub value: Value,
    /// The value's quality; the client itself turns it stale when its link to the hub drops.
    pub quality: Quality,
    /// When the device or source produced the value, µs since the epoch; zero for never.
    pub source_ts: Timestamp,
    /// When the hub took the update in, µs since the epoch.
    pub hub_ts: Timestamp,
    /// A replay of buffered history, not the live value.
    pub history: bool,
    /// The point's data type, from the hub's define.
    pub dtype: DataType,
    /// Whether the point accepts writes ([`Client::write`]), from the hub's define.
    pub writable: bool,
    /// The engineering unit, if the point has one.
    pub unit: Option<String>,
    /// The point's description, if its source gave one.
    pub description: Option<Arc<str>>,
    /// The client marked the point stale by itself because its own link to the hub dropped: the
    /// hub said nothing about the point (a historian does not record this as the point's state).
    pub link_lost: bool,
}

impl PointRecord {
    /// The JSON record (see [`pointhub_schemas::json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let mut r = json::record(
            &self.name,
            &self.value,
            self.quality,
            self.source_ts,
            self.hub_ts,
            self.history,
        );
        // With its engineering unit, as the console shows it.
        if let (Some(m), Some(unit)) = (r.as_object_mut(), self.unit.as_deref()) {
            m.insert("unit".into(), unit.into());
        }
        r
    }
}

/// What happens to a client, in order.
#[derive(Clone, Debug)]
pub enum Event {
    /// A hub welcomed the client; the subscription goes out next.
    Connected {
        /// The address dialled (`wss://host:port/path`).
        hub: String,
        /// The hub's name, from its welcome.
        hub_name: String,
    },
    /// A point changed: a live update, a history replay, or a point turned stale by a lost link.
    Update(PointRecord),
    /// Every point matching the subscription has been received once since connecting.
    SnapshotDone {
        /// How many points the snapshot sent.
        points: u32,
    },
    /// The link to the hub ended and the mirror was marked stale; the client reconnects by itself.
    Disconnected {
        /// Why the session ended (its close reason).
        reason: String,
    },
    /// On a durable subscription: the updates of one batch from the hub have all been handed
    /// over (as the `Update`s before this). Once they are stored, pass the mark to
    /// [`Client::ack`]; the hub forgets them then, and sends them again to the next session if
    /// they were not acknowledged.
    Stored(Mark),
}

/// The end of a batch of a durable subscription, for [`Client::ack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    session: u64,
    seq: u64,
}

/// What to subscribe to.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Patterns of point names to subscribe to (`plant1/**`); the hub limits them to the grants.
    pub patterns: Vec<String>,
    /// Also receive history replays (historians).
    pub history: bool,
    /// Take the points from the durable subscription of this name instead (made with
    /// `patterns` if the hub does not have it yet): the hub keeps what the client has not
    /// acknowledged ([`Event::Stored`], [`Client::ack`]) while it is away. Implies `history`.
    pub durable: Option<String>,
}

/// The result of a write the hub or the device answered.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOutcome {
    /// `Good` if the write was done, else the OPC UA code of the refusal or failure.
    pub status: Quality,
    /// A sentence on what happened, from the hub or the device.
    pub message: String,
}

impl WriteOutcome {
    /// Whether the write was done (`status` is good).
    pub fn is_ok(&self) -> bool {
        self.status.is_good()
    }
}

/// Why [`Client::write`] got no answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClientError {
    /// There was no link to the hub when the write was asked, or it dropped before the answer.
    #[error("not connected to a hub")]
    NotConnected,
    /// No answer came within the timeout given (held here).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The client's task has ended (after shutdown), so nothing can be written.
    #[error("the client has stopped")]
    Stopped,
}

enum Command {
    Write {
        point: String,
        value: Value,
        reply: oneshot::Sender<WriteOutcome>,
    },
    Ack(Mark),
}

/// A handle to a running client; cheap to clone.
#[derive(Clone)]
pub struct Client {
    cmd: mpsc::Sender<Command>,
    mirror: Arc<DashMap<Arc<str>, PointRecord>>,
    connected: Arc<AtomicBool>,
    rtt_us: Arc<AtomicU64>,
}

impl Client {
    /// Starts the client. Events arrive on the returned receiver; when nobody reads them, the
    /// client stops reading from the hub and the hub conflates for it.
    pub fn spawn(
        cfg: LinkConfig,
        opts: ClientOptions,
        shutdown: CancellationToken,
    ) -> (Client, mpsc::Receiver<Event>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(4096);
        let client = Client {
            cmd: cmd_tx,
            mirror: Arc::new(DashMap::new()),
            connected: Arc::new(AtomicBool::new(false)),
            rtt_us: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(run(cfg, opts, client.clone(), cmd_rx, ev_tx, shutdown));
        (client, ev_rx)
    }

    /// The mirror now, sorted by name.
    pub fn mirror(&self) -> Vec<PointRecord> {
        let mut v: Vec<PointRecord> = self.mirror.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One point of the mirror by its full name; `None` if the client has not received it.
    pub fn get(&self, name: &str) -> Option<PointRecord> {
        self.mirror.get(name).map(|e| e.value().clone())
    }

    /// Whether the client has a welcomed link to the hub now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Round trip to the hub, last measured.
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_us.load(Ordering::Relaxed))
    }

    /// Tells the hub that everything of a durable subscription up to `mark` is stored. A mark
    /// of a session that has ended is let go: its batches come again on the next session.
    pub async fn ack(&self, mark: Mark) {
        let _ = self.cmd.send(Command::Ack(mark)).await;
    }

    /// Writes a point and waits for the device's (or the hub's) answer.
    pub async fn write(
        &self,
        point: &str,
        value: Value,
        timeout: Duration,
    ) -> Result<WriteOutcome, ClientError> {
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Write {
                point: point.to_string(),
                value,
                reply,
            })
            .await
            .map_err(|_| ClientError::Stopped)?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(ClientError::Timeout(timeout)),
            Ok(Err(_)) => Err(ClientError::NotConnected),
            Ok(Ok(outcome)) => Ok(outcome),
        }
    }
}

struct Meta {
    name: Arc<str>,
    dtype: DataType,
    writable: bool,
    unit: Option<String>,
    description: Option<Arc<str>>,
}

async fn run(
    cfg: LinkConfig,
    opts: ClientOptions,
    client: Client,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut next_req: u64 = 1;
    let mut session_no = 0u64;
    loop {
        let Some(mut link) = link::dial_any(&cfg, &mut backoff, &shutdown).await else {
            break;
        };
        backoff.reset();
        client.connected.store(true, Ordering::Relaxed);
        let _ = events
            .send(Event::Connected {
                hub: link.hub.to_string(),
                hub_name: link.welcome.hub.clone(),
            })
            .await;
        session_no += 1;
        let subscribe = match &opts.durable {
            Some(name) => Msg::Durable(DurableSubscribe {
                name: name.clone(),
                patterns: opts.patterns.clone(),
            }),
            None => Msg::Subscribe(Subscribe {
                patterns: opts.patterns.clone(),
                history: opts.history,
            }),
        };
        link.session.tx.send(subscribe).await;
        let mut ids: HashMap<u32, Meta> = HashMap::new();
        let mut pending: HashMap<u64, oneshot::Sender<WriteOutcome>> = HashMap::new();
        // Set when the hub says it is shutting down.
        let mut said: Option<String> = None;
        let mut last_seq: Option<u64> = None;
        let tx = link.session.tx.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tx.close().await;
                    break;
                }
                msg = link.session.rx.recv() => {
                    let Some(msg) = msg else { break };
                    match msg {
                        Msg::Define(d) => {
                            for p in d.points {
                                ids.insert(p.id, Meta { name: p.name.into(), dtype: p.dtype, writable: p.writable, unit: p.unit, description: p.description.map(Arc::from) });
                            }
                        }
                        Msg::Data(d) => {
                            if let Some(last) = last_seq {
                                if d.seq != last.wrapping_add(1) {
                                    warn!(expected = last.wrapping_add(1), got = d.seq, "sequence gap from hub; asking for a fresh snapshot");
                                    tx.send(Msg::Rebirth(Rebirth { reason: format!("gap: expected {} got {}", last.wrapping_add(1), d.seq) })).await;
                                }
                            }
                            last_seq = Some(d.seq);
                            for u in d.updates {
                                if let Some(rec) = apply(&client, &ids, u) {
                                    if events.send(Event::Update(rec)).await.is_err() {
                                        debug!("event receiver dropped");
                                    }
                                }
                            }
                            if opts.durable.is_some() {
                                let _ = events.send(Event::Stored(Mark { session: session_no, seq: d.seq })).await;
                            }
                        }
                        Msg::SnapshotDone(s) => {
                            let _ = events.send(Event::SnapshotDone { points: s.points }).await;
                        }
                        Msg::WriteResult(r) => {
                            if let Some(reply) = pending.remove(&r.req) {
                                let _ = reply.send(WriteOutcome { status: r.status, message: r.message });
                            }
                        }
                        Msg::Error(e) if e.code == pointhub_schemas::ErrorCode::ShuttingDown => {
                            info!(message = %e.message, "the hub is shutting down: reconnecting");
                            said = Some(e.message.clone());
                        }
                        Msg::Error(e) => warn!(code = ?e.code, message = %e.message, "hub reports an error"),
                        other => debug!(kind = other.kind(), "ignored message from hub"),
                    }
                    client.rtt_us.store(link.session.stats.rtt_us.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                cmd = cmds.recv() => match cmd {
                    Some(Command::Write { point, value, reply }) => {
                        let req = next_req;
                        next_req += 1;
                        pending.insert(req, reply);
                        tx.send(Msg::Write(WriteRequest { req, point, value })).await;
                    }
                    Some(Command::Ack(m)) if m.session == session_no => {
                        tx.send(Msg::Ack(pointhub_schemas::Ack { seq: m.seq })).await;
                    }
                    Some(Command::Ack(_)) | None => {}
                }
            }
        }
        client.connected.store(false, Ordering::Relaxed);
        link.session.closed.cancel();
        // That the hub said it is shutting down says more than the socket's close.
        let reason = said.unwrap_or_else(|| link.session.close_reason());
        info!(hub = %link.hub, reason = %reason, "link to hub lost; marking the mirror stale");
        for rec in mark_stale(&client) {
            let _ = events.send(Event::Update(rec)).await;
        }
        let _ = events.send(Event::Disconnected { reason }).await;
        drop(pending);
        if shutdown.is_cancelled() {
            break;
        }
    }
}

fn apply(client: &Client, ids: &HashMap<u32, Meta>, u: Update) -> Option<PointRecord> {
    let Some(meta) = ids.get(&u.id) else {
        warn!(id = u.id, "update for an id the hub never defined; ignored");
        return None;
    };
    let rec = PointRecord {
        name: meta.name.clone(),
        value: u.value,
        quality: u.quality,
        source_ts: u.source_ts,
        hub_ts: u.hub_ts,
        history: u.flags & Update::HISTORY != 0,
        dtype: meta.dtype,
        writable: meta.writable,
        unit: meta.unit.clone(),
        description: meta.description.clone(),
        link_lost: false,
    };
    if !rec.history {
        client.mirror.insert(rec.name.clone(), rec.clone());
    }
    Some(rec)
}

/// Marks every point of the mirror stale; returns the records that changed.
fn mark_stale(client: &Client) -> Vec<PointRecord> {
    let mut changed = Vec::new();
    for mut e in client.mirror.iter_mut() {
        let rec = e.value_mut();
        let q = Quality::stale_from(rec.quality, !rec.value.is_null());
        if rec.quality != q {
            rec.quality = q;
            rec.link_lost = true;
            changed.push(rec.clone());
        }
    }
    changed.sort_by(|a, b| a.name.cmp(&b.name));
    changed
}
