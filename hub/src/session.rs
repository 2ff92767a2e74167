//! One node session on the hub, from hello to close.
//!
//! An edge session defines points (birth) and applies batches; when it ends — closed, silent past
//! the heartbeat timeout, or cut off for bad input — every point it was the authority for turns
//! stale at once. A client session subscribes and gets a snapshot then changes from its
//! conflating queue, and writes points it is granted.

use crate::config::NodeEntry;
use crate::core::Subscriber;
use crate::server::{Hub, LiveNode, Peer};
use crate::throttle::Throttle;
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pointhub_client::link::{spawn_session, FrameKind, Session, SessionOpts, SessionTx, WsMessage};
use pointhub_schemas::name::in_namespace;
use pointhub_schemas::{
    Data, DataType, Define, ErrorCode, Msg, Pattern, Quality, Rebirth, Role, SnapshotDone, Value,
    Welcome, WriteRequest, WriteResult,
};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{info, warn, Instrument};

/// Updates per frame from the hub to a client.
const BATCH: usize = 4096;
/// Subscribes and unsubscribes of one session per second (each scans the table); past it,
/// the session waits.
const SCANS_PER_SEC: u32 = 10;
/// A client's requests for a fresh snapshot (each sends every point it covers): one per this.
const REBIRTH_EVERY: Duration = Duration::from_secs(2);
/// Writes one client session may have waiting on devices at once.
const MAX_WRITES_IN_FLIGHT: usize = 64;

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
pub async fn run(hub: Arc<Hub>, entry: NodeEntry, peer: Peer, socket: WebSocket) {
    let span = tracing::info_span!("session", node = %entry.name, role = entry.role.as_str(), remote = %peer.addr);
    session(hub, entry, peer, socket).instrument(span).await
}

async fn session(hub: Arc<Hub>, entry: NodeEntry, peer: Peer, socket: WebSocket) {
    let ws = socket
        .map(|r| r.map(AxumMsg))
        .with(|m: AxumMsg| futures_util::future::ready(Ok::<_, axum::Error>(m.0)));
    let opts = SessionOpts {
        heartbeat: hub.heartbeat(),
        timeout: hub.timeout(),
        limits: hub.limits.clone(),
        max_frames_per_sec: hub.config.limits.max_frames_per_sec,
    };
    // The connection is the key's from here on: registered before its hello, so a revocation
    // from now on ends it; and a revocation that came since it was admitted is seen now.
    let conn = hub.shutdown.child_token();
    let conn_id = hub.core.next_id();
    hub.conns.insert(conn_id, (entry.fingerprint, conn.clone()));
    let _registered = Registered(&hub, conn_id);
    let mut session = spawn_session(ws, opts, &conn);
    if hub.access.is_revoked(&entry.fingerprint) {
        warn!("refused: the key was revoked while it connected");
        session
            .tx
            .fail(
                ErrorCode::AccessDenied,
                "this node's key was revoked by the operator",
            )
            .await;
        session.finish().await;
        return;
    }
    let handshake = Duration::from_millis(hub.config.limits.handshake_timeout_ms);
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
    if hello.role != entry.role {
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
                    entry.role.as_str(),
                    entry.name,
                    hello.role.as_str()
                ),
            )
            .await;
        return;
    }
    let id = hub.core.next_id();
    let name = entry.name.clone();
    let sub = (entry.role == Role::Client).then(|| {
        let read = parse_patterns(&entry.read).unwrap_or_default();
        Arc::new(Subscriber::new(
            id,
            false,
            read,
            hub.config.limits.subscriber_queue,
        ))
    });
    // A client may have many sessions (counted); an authority has one (the old one is replaced).
    let (others, count) = if entry.role == Role::Client {
        (Vec::new(), hub.session_count(&name))
    } else {
        let o = hub.sessions_of(&name);
        let n = o.len();
        (o, n)
    };
    if entry.role == Role::Client && count >= hub.config.limits.max_sessions_per_key {
        warn!(sessions = count, "refused: too many sessions for this key");
        session
            .tx
            .fail(
                ErrorCode::LimitExceeded,
                format!(
                    "this key already has {} sessions (limit {}): give each client its own key",
                    count, hub.config.limits.max_sessions_per_key
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
        role: entry.role,
        tx: session.tx.clone(),
        remote: peer.addr,
        stats: session.stats.clone(),
        software: hello.software.clone(),
    };
    hub.live.insert(id, live);
    // A revocation committed before this point is seen here; one after it finds this session
    // in `live` and ends it. Either way no revoked key is welcomed.
    if hub.access.is_revoked(&entry.fingerprint) {
        hub.live.remove(&id);
        warn!("refused: the key was revoked while it connected");
        session
            .tx
            .fail(
                ErrorCode::AccessDenied,
                "this node's key was revoked by the operator",
            )
            .await;
        session.finish().await;
        return;
    }
    if entry.role != Role::Client {
        // An authority has one session: the newest wins (the old one may be half-open).
        for old in others {
            info!(
                old_session = old.session,
                "a new session of this node replaces its old one"
            );
            hub.live.remove(&old.session);
            old.tx
                .fail(
                    ErrorCode::Conflict,
                    "replaced by a newer session of the same node",
                )
                .await;
        }
    }
    let namespace = entry.namespace.clone().unwrap_or_else(|| name.clone());
    session
        .tx
        .send(Msg::Welcome(Welcome {
            major: pointhub_schemas::PROTOCOL_MAJOR,
            minor: pointhub_schemas::PROTOCOL_MINOR,
            hub: hub.name.to_string(),
            node: name.clone(),
            namespace: namespace.clone(),
            heartbeat_ms: hub.config.heartbeat.interval_ms,
            timeout_ms: hub.config.heartbeat.timeout_ms,
            software: pointhub_client::link::SOFTWARE.into(),
        }))
        .await;
    info!(software = %hello.software, "node connected");
    hub.access.audit.record(
        "connection.accepted",
        json!({"fingerprint": entry.fingerprint, "name": name, "role": entry.role, "remote": peer.addr.to_string(), "software": hello.software}),
    );
    let sys = |k: &str| format!("$sys/{name}/{k}");
    hub.set_sys(&sys("connected"), DataType::Bool, Value::Bool(true));
    hub.set_sys(
        &sys("role"),
        DataType::String,
        Value::String(entry.role.as_str().into()),
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

    match entry.role {
        Role::Edge => edge(&hub, &entry, &namespace, id, &mut session).await,
        Role::Client => {
            if let Some(sub) = sub {
                client(&hub, &entry, sub, &mut session).await
            }
        }
        Role::Hub => edge(&hub, &entry, &namespace, id, &mut session).await,
    }
    session.finish().await;
    hub.live.remove(&id);
    // A write routed here in the moment before the session left the list: answer it now.
    hub.writes.retain(|_, w| w.session != id);
    if hub.sessions_of(&name).is_empty() {
        hub.set_sys(&sys("connected"), DataType::Bool, Value::Bool(false));
    }
    let reason = session.close_reason();
    info!(reason = %reason, "node disconnected");
    hub.access.audit.record(
        "connection.closed",
        json!({"fingerprint": entry.fingerprint, "name": name, "role": entry.role, "remote": peer.addr.to_string(), "reason": reason}),
    );
}

/// Removes a connection from the hub's list when its session ends, however it ends.
struct Registered<'a>(&'a Hub, u64);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.conns.remove(&self.1);
    }
}

async fn edge(hub: &Arc<Hub>, entry: &NodeEntry, namespace: &str, id: u64, session: &mut Session) {
    let owner: Arc<str> = entry.name.as_str().into();
    let sys_ns = format!("$sys/{}", entry.name);
    // A child hub forwards what lies below it: its namespace if it has one, or anything, and
    // the `$sys` points of its nodes; never the `$sys` points this hub publishes of itself.
    let own_sys = format!("$sys/{}", hub.name);
    let child_hub = entry.role == Role::Hub;
    let allowed = |n: &str| {
        if child_hub {
            !in_namespace(n, &own_sys)
                && (entry
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == crate::config::ANY_NAMESPACE)
                    || in_namespace(n, namespace)
                    || n.starts_with("$sys/"))
        } else {
            in_namespace(n, namespace) || in_namespace(n, &sys_ns)
        }
    };
    let mut local = LocalIds::new(hub.config.limits.max_points_per_node);
    let mut owned = crate::core::GidSet::default();
    let mut last_seq: Option<u64> = None;
    let mut unknown_ids = 0u64;
    let mut foreign_results = 0u64;
    let max_rate = hub.config.limits.max_updates_per_sec;
    let mut window_start = tokio::time::Instant::now();
    let mut window_updates = 0u64;
    let mut last_ack = tokio::time::Instant::now();
    let mut since_yield = 0u64;
    if child_hub {
        // A child hub learns which hubs are above it, so it refuses a child of its own that
        // claims one of them (rather than pass the claim up and be refused itself).
        session
            .tx
            .send(Msg::Chain(pointhub_schemas::Chain {
                hubs: hub.chain_down(),
            }))
            .await;
    }
    while let Some(msg) = session.rx.recv().await {
        match msg {
            Msg::Birth(b) => {
                if b.part == 0 {
                    local.clear();
                }
                match hub
                    .core
                    .define(&owner, id, &b.points, owned.len(), allowed, namespace)
                {
                    Ok(gids) => {
                        for (d, g) in b.points.iter().zip(gids) {
                            local.insert(d.id, g);
                            owned.insert(g);
                        }
                    }
                    Err(e) => {
                        // A child hub that sends back `$sys` points of this hub (or of a hub
                        // above it) has them from above: the chain is a loop, whatever the
                        // `Chain` messages have said so far.
                        let looped = match &e {
                            crate::core::BirthError::Namespace { name, .. } if child_hub => {
                                std::iter::once(hub.name.to_string())
                                    .chain(hub.ancestors())
                                    .find(|h| in_namespace(name, &format!("$sys/{h}")))
                            }
                            _ => None,
                        };
                        if let Some(h) = looped {
                            warn!(hub = %h, "refused: a loop in the hub chain (a child sends back points from above)");
                            hub.access.audit.record(
                                "chain.refused",
                                json!({"fingerprint": entry.fingerprint, "name": entry.name, "reason": "loop", "hub": h}),
                            );
                            session
                                .tx
                                .fail(
                                    ErrorCode::Conflict,
                                    crate::server::loop_message(&hub.name, &entry.name, &h),
                                )
                                .await;
                            break;
                        }
                        warn!(error = %e, "birth refused");
                        hub.access.audit.record(
                            "publish.refused",
                            json!({"fingerprint": entry.fingerprint, "name": entry.name, "reason": e.to_string()}),
                        );
                        let code = match e {
                            crate::core::BirthError::Namespace { .. } => ErrorCode::AccessDenied,
                            crate::core::BirthError::Conflict { .. } => ErrorCode::Conflict,
                            crate::core::BirthError::TooMany(_) => ErrorCode::LimitExceeded,
                        };
                        session.tx.fail(code, e.to_string()).await;
                        break;
                    }
                }
                let n = b.states.len() as u64;
                hub.core.apply(
                    b.states
                        .into_iter()
                        .filter_map(|u| local.get(u.id).map(|g| (g, u))),
                );
                yield_if_due(&mut since_yield, n, &session.rx).await;
                last_seq = Some(b.seq);
                if b.last {
                    info!(points = local.len(), "birth complete");
                }
            }
            Msg::Data(d) => {
                match last_seq {
                    Some(last) if d.seq != last.wrapping_add(1) => {
                        warn!(
                            expected = last.wrapping_add(1),
                            got = d.seq,
                            "sequence gap; asking the edge for a rebirth"
                        );
                        session
                            .tx
                            .send(Msg::Rebirth(Rebirth {
                                reason: format!(
                                    "gap: expected {} got {}",
                                    last.wrapping_add(1),
                                    d.seq
                                ),
                            }))
                            .await;
                    }
                    None => {
                        session
                            .tx
                            .fail(
                                ErrorCode::Malformed,
                                "data before birth: send a birth first",
                            )
                            .await;
                        break;
                    }
                    _ => {}
                }
                last_seq = Some(d.seq);
                let before = d.updates.len() as u64;
                let mut unknown = 0u64;
                hub.core
                    .apply(d.updates.into_iter().filter_map(|u| match local.get(u.id) {
                        Some(g) => Some((g, u)),
                        None => {
                            unknown += 1;
                            None
                        }
                    }));
                if unknown > 0 {
                    unknown_ids += unknown;
                    warn!(
                        count = unknown_ids,
                        "updates for ids the birth did not define were ignored"
                    );
                }
                let n = before - unknown;
                yield_if_due(&mut since_yield, n, &session.rx).await;
                if last_ack.elapsed() >= Duration::from_millis(100) {
                    last_ack = tokio::time::Instant::now();
                    let _ = session
                        .tx
                        .try_send(Msg::Ack(pointhub_schemas::Ack { seq: d.seq }));
                }
                // Throttle an edge past its update rate: stop reading it until the second is over.
                window_updates += n;
                if window_updates > max_rate {
                    let end = window_start + Duration::from_secs(1);
                    if end > tokio::time::Instant::now() {
                        warn!(limit = max_rate, "edge over its update rate: throttled");
                        tokio::time::sleep_until(end).await;
                    }
                    window_start = tokio::time::Instant::now();
                    window_updates = 0;
                } else if window_start.elapsed() >= Duration::from_secs(1) {
                    window_start = tokio::time::Instant::now();
                    window_updates = 0;
                }
            }
            Msg::WriteResult(r) => {
                // Only the session the request went to may answer it.
                match hub.writes.remove_if(&r.req, |_, w| w.session == id) {
                    Some((_, w)) => {
                        let _ = w.reply.send(r);
                    }
                    None if hub.writes.contains_key(&r.req) => {
                        foreign_results += 1;
                        warn!(
                            req = r.req,
                            count = foreign_results,
                            "refused a write result for a request sent to another node"
                        );
                        if foreign_results == 1 {
                            hub.access.audit.record(
                                "write.result_refused",
                                json!({"fingerprint": entry.fingerprint, "name": entry.name, "req": r.req, "reason": "the request went to another node"}),
                            );
                        }
                    }
                    None => {} // answered after its timeout, or never asked
                }
            }
            Msg::Chain(c) if child_hub => {
                let ancestors = hub.ancestors();
                let clash = c
                    .hubs
                    .iter()
                    .find(|h| *h == hub.name.as_ref() || ancestors.contains(h))
                    .cloned();
                if let Some(clash) = clash {
                    warn!(chain = ?c.hubs, clash = %clash, "refused: a loop in the hub chain");
                    hub.access.audit.record(
                        "chain.refused",
                        json!({"fingerprint": entry.fingerprint, "name": entry.name, "chain": c.hubs, "reason": "loop", "hub": clash}),
                    );
                    session
                        .tx
                        .fail(
                            ErrorCode::Conflict,
                            crate::server::loop_message(&hub.name, &entry.name, &clash),
                        )
                        .await;
                    break;
                }
                hub.below.insert(id, c.hubs);
            }
            Msg::Death(d) => {
                info!(reason = %d.reason, "edge leaves");
                break;
            }
            other => {
                session
                    .tx
                    .fail(
                        ErrorCode::Malformed,
                        format!("an edge session does not take {} messages", other.kind()),
                    )
                    .await;
                break;
            }
        }
    }
    hub.below.remove(&id);
    let owned: Vec<u32> = owned.iter().collect();
    hub.core.authority_lost(id, &owned);
    // Writes still waiting on this edge are answered now (BadNoCommunication), not at their
    // timeout: dropping their reply channel tells the writer the authority went away.
    hub.writes.retain(|_, w| w.session != id);
    info!(points = owned.len(), "authority lost: points marked stale");
}

/// Lets the subscribers' writers that applied batches woke run. They sit in this worker's LIFO
/// slot, which no other worker may steal: if more frames wait, yield so the writers run now,
/// not after the next batches (measured 1→1: 0.5M → 5M updates/s delivered). If none waits,
/// this task parks on its queue anyway and the writers run next; yielding then would only cost
/// a wake-up of the other worker per frame. Small frames yield once per run's worth of updates:
/// a yield per one-update frame bounced the task between the two workers on one core (≈ 40 µs
/// a hop), slower than 10,000 frames/s arrive, so a short stall grew into a backlog.
async fn yield_if_due(since: &mut u64, applied: u64, rx: &tokio::sync::mpsc::Receiver<Msg>) {
    *since += applied;
    if *since >= crate::core::FANOUT_RUN as u64 && !rx.is_empty() {
        *since = 0;
        tokio::task::yield_now().await;
    }
}

fn parse_patterns(list: &[String]) -> Result<Vec<Pattern>, String> {
    list.iter()
        .map(|p| Pattern::parse(p).map_err(|e| e.to_string()))
        .collect()
}

async fn client(hub: &Arc<Hub>, entry: &NodeEntry, sub: Arc<Subscriber>, session: &mut Session) {
    // The config was validated at start, so the patterns parse.
    let write = parse_patterns(&entry.write).unwrap_or_default();
    hub.core.add_subscriber(sub.clone());
    let pump = tokio::spawn(pump(
        hub.clone(),
        sub.clone(),
        session.tx.clone(),
        session.closed.clone(),
    ));
    let write = Arc::new(write);
    let mut scans = Throttle::new(SCANS_PER_SEC, Duration::from_secs(1));
    let mut rebirths = Throttle::new(1, REBIRTH_EVERY);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_WRITES_IN_FLIGHT));
    while let Some(msg) = session.rx.recv().await {
        match msg {
            Msg::Subscribe(s) => match parse_patterns(&s.patterns) {
                Ok(p) => {
                    if s.history {
                        sub.history.store(true, Ordering::Relaxed);
                    }
                    info!(patterns = ?s.patterns, "subscribe");
                    if scans.wait().await {
                        warn!("subscribing faster than {SCANS_PER_SEC}/s: slowed down");
                    }
                    let (h, sb) = (hub.clone(), sub.clone());
                    let t0 = tokio::time::Instant::now();
                    let done = tokio::task::spawn_blocking(move || h.core.subscribe(&sb, p)).await;
                    // A session spends at most a fifth of a core scanning: after a scan it
                    // waits four times as long as the scan took.
                    tokio::time::sleep(t0.elapsed() * 4).await;
                    if let Ok(Err(e)) = done {
                        session
                            .tx
                            .fail(ErrorCode::LimitExceeded, format!("subscribe: {e}"))
                            .await;
                        break;
                    }
                }
                Err(e) => {
                    session
                        .tx
                        .fail(ErrorCode::InvalidName, format!("subscribe: {e}"))
                        .await;
                    break;
                }
            },
            Msg::Unsubscribe(u) => {
                scans.wait().await;
                let (h, sb) = (hub.clone(), sub.clone());
                let _ =
                    tokio::task::spawn_blocking(move || h.core.unsubscribe(&sb, &u.patterns)).await;
            }
            Msg::Rebirth(r) => {
                if rebirths.wait().await {
                    warn!("asking for fresh snapshots faster than one per {REBIRTH_EVERY:?}: slowed down");
                }
                info!(reason = %r.reason, "client asks for a fresh snapshot");
                hub.core.resnapshot(&sub);
            }
            Msg::Write(w) => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    session
                        .tx
                        .send(Msg::WriteResult(WriteResult {
                            req: w.req,
                            status: Quality::BadTooManyOperations,
                            message: format!("{MAX_WRITES_IN_FLIGHT} writes of this session are still waiting for their devices: wait for their results"),
                        }))
                        .await;
                    continue;
                };
                let hub = hub.clone();
                let tx = session.tx.clone();
                let write = write.clone();
                let who = entry.name.clone();
                let fp = entry.fingerprint;
                tokio::spawn(async move {
                    let _permit = permit;
                    let req = w.req;
                    let point = w.point.clone();
                    let new = w.value.to_json();
                    let old = {
                        let t = hub.core.table_read();
                        t.gid(&point)
                            .and_then(|g| t.points.get(g as usize))
                            .map(|p| p.value.to_json())
                    };
                    let (status, message) = route_write(&hub, &who, &write, w).await;
                    info!(node = %who, point = %point, status = %status, "write");
                    hub.stats.count_write(&status.to_string());
                    hub.access.audit.record(
                        "write",
                        json!({"name": who, "fingerprint": fp, "point": point, "old": old, "new": new, "status": status.to_string(), "message": message}),
                    );
                    tx.send(Msg::WriteResult(WriteResult {
                        req,
                        status,
                        message,
                    }))
                    .await;
                });
            }
            other => {
                session
                    .tx
                    .fail(
                        ErrorCode::AccessDenied,
                        format!("a client session does not take {} messages: publishing needs an edge key", other.kind()),
                    )
                    .await;
                break;
            }
        }
    }
    hub.core.remove_subscriber(&sub);
    pump.abort();
}

/// An edge's point ids (its own numbering) → global ids. Edges number their points from 0, so
/// the map is an array (4 bytes a point); ids far past the point limit go to a hash map.
struct LocalIds {
    dense: Vec<u32>,
    sparse: rustc_hash::FxHashMap<u32, u32>,
    dense_limit: u32,
    len: usize,
}

impl LocalIds {
    const NONE: u32 = u32::MAX;

    fn new(max_points: usize) -> LocalIds {
        LocalIds {
            dense: Vec::new(),
            sparse: Default::default(),
            dense_limit: u32::try_from(max_points.saturating_mul(2)).unwrap_or(u32::MAX),
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
        self.len = 0;
    }

    fn insert(&mut self, id: u32, gid: u32) {
        let fresh = if id < self.dense_limit {
            let i = id as usize;
            if i >= self.dense.len() {
                self.dense.resize(i + 1, Self::NONE);
            }
            std::mem::replace(&mut self.dense[i], gid) == Self::NONE
        } else {
            self.sparse.insert(id, gid).is_none()
        };
        self.len += usize::from(fresh);
    }

    fn get(&self, id: u32) -> Option<u32> {
        if id < self.dense_limit {
            self.dense
                .get(id as usize)
                .copied()
                .filter(|&g| g != Self::NONE)
        } else {
            self.sparse.get(&id).copied()
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// Drains a subscriber's queue into its session whenever the socket can take more.
async fn pump(
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    tx: SessionTx,
    closed: tokio_util::sync::CancellationToken,
) {
    let mut seq = 0u64;
    // The points this session has had defined to it.
    let mut defined = crate::core::GidSet::default();
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = sub.notify.notified() => {}
        }
        let p = sub.drain();
        if p.overflow {
            warn!(
                limit = hub.config.limits.subscriber_queue,
                "client too slow: cut off"
            );
            tx.fail(
                ErrorCode::SlowConsumer,
                format!(
                    "this client fell more than {} updates behind and was cut off; it reconnects for a fresh snapshot",
                    hub.config.limits.subscriber_queue
                ),
            )
            .await;
            return;
        }
        let new: Vec<u32> = p
            .entries
            .iter()
            .map(|e| e.id)
            .filter(|g| defined.insert(*g))
            .collect();
        // Definitions go out a frame at a time, built under a short read lock each, so a big
        // snapshot never holds a second copy of every name.
        for chunk in new.chunks(BATCH) {
            let points: Vec<_> = {
                let table = hub.core.table_read();
                chunk
                    .iter()
                    .filter_map(|&g| table.points.get(g as usize).map(|p| p.def(&table, g)))
                    .collect()
            };
            if !tx.send(Msg::Define(Define { points })).await {
                return;
            }
        }
        // A small drain (the common case) goes out as the queue's own vector; a big one is
        // moved out a frame at a time.
        let (mut whole, mut rest) = if p.entries.len() <= BATCH {
            (Some(p.entries), Vec::new().into_iter())
        } else {
            (None, p.entries.into_iter())
        };
        loop {
            let updates: Vec<_> = match whole.take() {
                Some(all) => all,
                None => rest.by_ref().take(BATCH).collect(),
            };
            if updates.is_empty() {
                break;
            }
            seq += 1;
            let n = updates.len() as u64;
            if !tx.send(Msg::Data(Data { seq, updates })).await {
                return;
            }
            hub.stats.updates_out.fetch_add(n, Ordering::Relaxed);
        }
        for points in p.snapshots_done {
            if !tx.send(Msg::SnapshotDone(SnapshotDone { points })).await {
                return;
            }
        }
    }
}

pub(crate) async fn route_write(
    hub: &Hub,
    who: &str,
    grant: &[Pattern],
    w: WriteRequest,
) -> (Quality, String) {
    if !grant.iter().any(|g| g.matches(&w.point)) {
        return (
            Quality::BadUserAccessDenied,
            format!("node {who:?} may not write {:?}: it is not in the node's write patterns on the hub", w.point),
        );
    }
    let (value, owner, owner_session) = {
        let table = hub.core.table_read();
        let Some(gid) = table.gid(&w.point) else {
            return (
                Quality::BadNodeIdUnknown,
                format!("no point named {:?} on this hub", w.point),
            );
        };
        let p = &table.points[gid as usize];
        if !p.writable {
            return (
                Quality::BadNotWritable,
                format!("point {:?} is not writable", w.point),
            );
        }
        let value = match w.value.coerce(p.dtype) {
            Ok(v) => v,
            Err(e) => {
                return (
                    Quality::BadTypeMismatch,
                    format!("point {:?}: {e}", w.point),
                )
            }
        };
        (value, table.owner(p).to_string(), p.owner_session())
    };
    let Some(owner_session) = owner_session else {
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    };
    let Some(edge_tx) = hub.live.get(&owner_session).map(|l| l.tx.clone()) else {
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    };
    let req = hub.core.next_id();
    let (reply_tx, reply_rx) = oneshot::channel();
    hub.writes.insert(
        req,
        crate::server::PendingWrite {
            session: owner_session,
            reply: reply_tx,
        },
    );
    // The authority may have gone between the look-up and the insert: then nobody would
    // answer, so check again.
    if !hub.live.contains_key(&owner_session) {
        hub.writes.remove(&req);
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    }
    if !edge_tx
        .send(Msg::Write(WriteRequest {
            req,
            point: w.point.clone(),
            value,
        }))
        .await
    {
        hub.writes.remove(&req);
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} disconnected"),
        );
    }
    let timeout = Duration::from_millis(hub.config.limits.write_timeout_ms);
    match tokio::time::timeout(timeout, reply_rx).await {
        Ok(Ok(r)) => (r.status, r.message),
        Ok(Err(_)) => (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} disconnected"),
        ),
        Err(_) => {
            hub.writes.remove(&req);
            (
                Quality::BadTimeout,
                format!("{owner:?} did not answer within {} ms", timeout.as_millis()),
            )
        }
    }
}
