//! The pointhub edge: reads sources (the simulator; Modbus comes next), keeps the current state
//! of every point, and publishes it to its hub as the authority for those points.
//!
//! - [`config`]: the edge configuration, `edge.toml`.
//! - [`sim`]: the built-in simulator source (sine, ramp, random walk, on/off, writable setpoints).
//! - [`run`]: the outbound session: dial (with backoff and jitter), birth on every connect,
//!   batches of changes, write-back to the sources, heartbeats.

pub mod buffer;
pub mod config;
pub mod modbus;
pub mod sim;

use pointhub_client::link::{self, Backoff, Link};
use pointhub_schemas::{
    Birth, Data, DataType, Death, Msg, PointDef, Quality, Timestamp, Update, Value, WriteResult,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::EdgeConfig;

/// Updates kept for a hub that has not acknowledged them; older ones are let go.
const MAX_UNACKED: usize = 200_000;

fn is_sys(states: &[State], u: &Update) -> bool {
    states
        .get(u.id as usize)
        .is_some_and(|s| s.def.name.starts_with("$sys/"))
}

/// Points per birth part.
const BIRTH_PART: usize = 8192;
/// Updates per data batch.
const BATCH: usize = 8192;

/// A change a source reports: local point id, value, quality, when the device said it.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: u32,
    pub value: Value,
    pub quality: Quality,
    pub ts: Timestamp,
}

/// A write handed to a source; it answers with the outcome.
pub struct SourceWrite {
    pub id: u32,
    pub value: Value,
    pub reply: oneshot::Sender<(Quality, String)>,
}

/// A running source: its points, and where its writes go.
pub struct SourceHandle {
    pub points: Vec<PointDef>,
    pub writes: mpsc::Sender<SourceWrite>,
}

struct State {
    def: PointDef,
    value: Value,
    quality: Quality,
    ts: Timestamp,
    /// Which source owns it (index into the sources' write channels).
    source: usize,
}

/// Runs an edge until `shutdown` fires.
pub async fn run(cfg: EdgeConfig, shutdown: CancellationToken) -> Result<(), String> {
    let link_cfg = cfg
        .hub
        .link_config(pointhub_schemas::Role::Edge, &cfg.name)?;
    let (sample_tx, mut samples) = mpsc::channel::<Vec<Sample>>(1024);
    let mut states: Vec<State> = Vec::new();
    let mut writers = Vec::new();
    for (i, src) in cfg.sources.iter().enumerate() {
        let base = states.len() as u32;
        let handle = match src {
            config::SourceConfig::Simulator(s) => sim::spawn(
                &cfg.namespace(),
                s,
                base,
                sample_tx.clone(),
                shutdown.clone(),
            ),
            config::SourceConfig::Modbus(m) => modbus::spawn(
                &cfg.name,
                &cfg.namespace(),
                m,
                base,
                sample_tx.clone(),
                shutdown.clone(),
            ),
        };
        for def in handle.points {
            states.push(State {
                def,
                value: Value::Null,
                quality: Quality::BadWaitingForInitialData,
                ts: Timestamp::NEVER,
                source: i,
            });
        }
        writers.push(handle.writes);
    }
    drop(sample_tx);
    // The edge's own status points.
    let status_base = states.len() as u32;
    for (i, (k, dtype)) in [
        ("buffer/queued", DataType::UInt),
        ("buffer/dropped", DataType::UInt),
        ("link/hub", DataType::String),
        ("link/rtt_ms", DataType::Float),
    ]
    .into_iter()
    .enumerate()
    {
        states.push(State {
            def: PointDef {
                id: status_base + i as u32,
                name: format!("$sys/{}/{k}", cfg.name),
                dtype,
                unit: None,
                description: None,
                writable: false,
            },
            value: Value::Null,
            quality: Quality::Good,
            ts: Timestamp::now(),
            source: usize::MAX,
        });
    }
    let (q_id, d_id, hub_id, rtt_id) = (
        status_base,
        status_base + 1,
        status_base + 2,
        status_base + 3,
    );
    let mut buffer = match (&cfg.buffer.enabled, &cfg.buffer.dir) {
        (true, Some(dir)) => Some(buffer::Buffer::open(dir, cfg.buffer.max_bytes)?),
        _ => None,
    };
    if let Some(b) = &buffer {
        if !b.is_empty() {
            info!(
                updates = b.len(),
                "buffered history from before a restart will be sent when the hub is reachable"
            );
        }
    }
    let mut status_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let by_name: HashMap<String, u32> = states
        .iter()
        .map(|s| (s.def.name.clone(), s.def.id))
        .collect();
    info!(points = states.len(), "edge ready");

    // A connector task dials; the core loop below owns the link once it is up.
    let (link_tx, mut link_rx) = mpsc::channel::<Link>(1);
    let lost = Arc::new(Notify::new());
    {
        let lost = lost.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(link_cfg.backoff_min, link_cfg.backoff_max);
            while let Some(link) = link::dial_any(&link_cfg, &mut backoff, &shutdown).await {
                backoff.reset();
                if link_tx.send(link).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = lost.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }

    let mut current: Option<Link> = None;
    let mut seq: u64 = 0;
    // Live batches the hub has not acknowledged yet (only with a buffer).
    let mut unacked: std::collections::VecDeque<(u64, Vec<Update>)> =
        std::collections::VecDeque::new();
    let mut unacked_len = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            l = link_rx.recv() => {
                let Some(l) = l else { break };
                info!(hub = %l.hub, namespace = %l.welcome.namespace, "sending birth");
                let now = Timestamp::now();
                for (id, v) in [(hub_id, Value::String(l.hub.to_string())), (rtt_id, Value::Float(0.0))] {
                    let st = &mut states[id as usize];
                    st.value = v;
                    st.ts = now;
                }
                seq += 1;
                send_birth(&l, &states, seq).await;
                if let Some(b) = buffer.as_mut() {
                    seq = replay(&l, b, &states, seq).await;
                    let (q, d) = (b.len(), b.dropped);
                    let mut out = Vec::new();
                    apply(&mut states, vec![
                        Sample { id: q_id, value: Value::UInt(q), quality: Quality::Good, ts: Timestamp::now() },
                        Sample { id: d_id, value: Value::UInt(d), quality: Quality::Good, ts: Timestamp::now() },
                    ], &mut out);
                    seq += 1;
                    l.session.tx.send(Msg::Data(Data { seq, updates: out })).await;
                }
                current = Some(l);
            }
            batch = samples.recv() => {
                let Some(batch) = batch else { break };
                let mut out = Vec::new();
                apply(&mut states, batch, &mut out);
                while let Ok(more) = samples.try_recv() {
                    apply(&mut states, more, &mut out);
                    if out.len() >= BATCH {
                        break;
                    }
                }
                if let Some(l) = &current {
                    for chunk in out.chunks(BATCH) {
                        seq += 1;
                        if buffer.is_some() {
                            let keep: Vec<Update> = chunk.iter().filter(|u| !is_sys(&states, u)).cloned().collect();
                            unacked_len += keep.len();
                            unacked.push_back((seq, keep));
                            while unacked_len > MAX_UNACKED {
                                if let Some((_, old)) = unacked.pop_front() {
                                    unacked_len -= old.len();
                                }
                            }
                        }
                        l.session.tx.send(Msg::Data(Data { seq, updates: chunk.to_vec() })).await;
                    }
                } else if let Some(b) = buffer.as_mut() {
                    let keep: Vec<Update> = out.into_iter().filter(|u| !is_sys(&states, u)).collect();
                    if let Err(e) = b.push(&keep) {
                        warn!(error = %e, "cannot buffer updates; they are lost");
                    }
                    let (q, d) = (b.len(), b.dropped);
                    let mut ignored = Vec::new();
                    apply(&mut states, vec![
                        Sample { id: q_id, value: Value::UInt(q), quality: Quality::Good, ts: Timestamp::now() },
                        Sample { id: d_id, value: Value::UInt(d), quality: Quality::Good, ts: Timestamp::now() },
                    ], &mut ignored);
                }
            }
            _ = status_tick.tick() => {
                if let Some(l) = &current {
                    let rtt = l.session.stats.rtt_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
                    let mut out = Vec::new();
                    apply(&mut states, vec![Sample { id: rtt_id, value: Value::Float(rtt), quality: Quality::Good, ts: Timestamp::now() }], &mut out);
                    seq += 1;
                    l.session.tx.send(Msg::Data(Data { seq, updates: out })).await;
                }
            }
            msg = recv(&mut current) => {
                match msg {
                    None => {
                        if let Some(l) = current.take() {
                            warn!(hub = %l.hub, reason = %l.session.close_reason(), "link to hub lost; reconnecting");
                        }
                        // What the hub may not have applied goes to the buffer first: the hub
                        // drops replays it already has, so nothing is lost and nothing doubled.
                        if let Some(b) = buffer.as_mut() {
                            let pending: Vec<Update> = unacked.drain(..).flat_map(|(_, u)| u).collect();
                            unacked_len = 0;
                            if let Err(e) = b.push(&pending) {
                                warn!(error = %e, "cannot buffer unacknowledged updates");
                            }
                        }
                        lost.notify_one();
                    }
                    Some(Msg::Ack(a)) => {
                        while unacked.front().is_some_and(|(s, _)| *s <= a.seq) {
                            if let Some((_, u)) = unacked.pop_front() {
                                unacked_len -= u.len();
                            }
                        }
                    }
                    Some(Msg::Write(w)) => {
                        let tx = current.as_ref().map(|l| l.session.tx.clone());
                        let target = by_name.get(&w.point).map(|&id| (id, &states[id as usize]));
                        let Some(tx) = tx else { continue };
                        match target {
                            None => {
                                tx.send(Msg::WriteResult(WriteResult { req: w.req, status: Quality::BadNodeIdUnknown, message: format!("edge has no point {:?}", w.point) })).await;
                            }
                            Some((_, st)) if !st.def.writable => {
                                tx.send(Msg::WriteResult(WriteResult { req: w.req, status: Quality::BadNotWritable, message: format!("point {:?} is not writable", w.point) })).await;
                            }
                            Some((id, st)) => {
                                let (reply, rx) = oneshot::channel();
                                let src = writers[st.source].clone();
                                tokio::spawn(async move {
                                    let _ = src.send(SourceWrite { id, value: w.value, reply }).await;
                                    let (status, message) = rx.await.unwrap_or((Quality::BadInternalError, "source stopped".into()));
                                    tx.send(Msg::WriteResult(WriteResult { req: w.req, status, message })).await;
                                });
                            }
                        }
                    }
                    Some(Msg::Rebirth(r)) => {
                        if let Some(l) = &current {
                            info!(reason = %r.reason, "hub asks for a rebirth");
                            seq += 1;
                            send_birth(l, &states, seq).await;
                        }
                    }
                    Some(Msg::Error(e)) if e.code == pointhub_schemas::ErrorCode::ShuttingDown => info!(message = %e.message, "the hub is shutting down: reconnecting"),
                    Some(Msg::Error(e)) => warn!(code = ?e.code, message = %e.message, "hub reports an error"),
                    Some(_) => {}
                }
            }
        }
    }
    if let Some(l) = current {
        l.session
            .tx
            .send(Msg::Death(Death {
                reason: "edge shutting down".into(),
            }))
            .await;
        l.session.tx.close().await;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            l.session.closed.cancelled(),
        )
        .await;
    }
    Ok(())
}

/// Sends the buffered history after a birth, oldest first, flagged as history; returns the last
/// sequence number used.
async fn replay(l: &Link, b: &mut buffer::Buffer, states: &[State], mut seq: u64) -> u64 {
    let total = b.len();
    if total == 0 {
        return seq;
    }
    info!(updates = total, "replaying buffered history");
    loop {
        let chunk = match b.peek(BATCH) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => break,
            Err(e) => {
                warn!(error = %e, "cannot read the buffer");
                break;
            }
        };
        let last = chunk.last().map(|(k, _)| *k).unwrap_or(0);
        // The birth already carried each point's latest update, live: it is not history.
        let updates: Vec<Update> = chunk
            .into_iter()
            .map(|(_, u)| u)
            .filter(|u| {
                states
                    .get(u.id as usize)
                    .is_none_or(|st| st.ts != u.source_ts)
            })
            .map(|u| Update {
                flags: u.flags | Update::HISTORY,
                ..u
            })
            .collect();
        if updates.is_empty() {
            if let Err(e) = b.remove_through(last) {
                warn!(error = %e, "cannot trim the buffer");
                break;
            }
            continue;
        }
        seq += 1;
        if !l.session.tx.send(Msg::Data(Data { seq, updates })).await {
            break;
        }
        if let Err(e) = b.remove_through(last) {
            warn!(error = %e, "cannot trim the buffer");
            break;
        }
    }
    info!(left = b.len(), "history replay done");
    seq
}

async fn recv(current: &mut Option<Link>) -> Option<Msg> {
    match current {
        Some(l) => l.session.rx.recv().await,
        None => std::future::pending().await,
    }
}

fn apply(states: &mut [State], batch: Vec<Sample>, out: &mut Vec<Update>) {
    for s in batch {
        let Some(st) = states.get_mut(s.id as usize) else {
            continue;
        };
        st.value = s.value.clone();
        st.quality = s.quality;
        st.ts = s.ts;
        out.push(Update {
            id: s.id,
            value: s.value,
            quality: s.quality,
            source_ts: s.ts,
            hub_ts: Timestamp::NEVER,
            flags: 0,
        });
    }
}

async fn send_birth(l: &Link, states: &[State], seq: u64) {
    let parts: Vec<&[State]> = if states.is_empty() {
        vec![&[]]
    } else {
        states.chunks(BIRTH_PART).collect()
    };
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let birth = Birth {
            seq,
            part: i as u32,
            last: i + 1 == n,
            points: part.iter().map(|s| s.def.clone()).collect(),
            states: part
                .iter()
                .map(|s| Update {
                    id: s.def.id,
                    value: s.value.clone(),
                    quality: s.quality,
                    source_ts: s.ts,
                    hub_ts: Timestamp::NEVER,
                    flags: 0,
                })
                .collect(),
        };
        l.session.tx.send(Msg::Birth(birth)).await;
    }
}
