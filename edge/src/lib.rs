//! The pointhub edge: reads sources (the simulator; Modbus comes next), keeps the current state
//! of every point, and publishes it to its hub as the authority for those points.
//!
//! - [`config`]: the edge configuration, `edge.toml`.
//! - [`sim`]: the built-in simulator source (sine, ramp, random walk, on/off, writable setpoints).
//! - [`run`]: the outbound session: dial (with backoff and jitter), birth on every connect,
//!   batches of changes, write-back to the sources, heartbeats.

pub mod config;
pub mod modbus;
pub mod sim;

use pointhub_client::link::{self, Backoff, Link};
use pointhub_schemas::{
    Birth, Data, Death, Msg, PointDef, Quality, Timestamp, Update, Value, WriteResult,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::EdgeConfig;

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
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            l = link_rx.recv() => {
                let Some(l) = l else { break };
                info!(hub = %l.hub, namespace = %l.welcome.namespace, "sending birth");
                seq += 1;
                send_birth(&l, &states, seq).await;
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
                        l.session.tx.send(Msg::Data(Data { seq, updates: chunk.to_vec() })).await;
                    }
                }
            }
            msg = recv(&mut current) => {
                match msg {
                    None => {
                        if let Some(l) = current.take() {
                            warn!(hub = %l.hub, reason = %l.session.close_reason(), "link to hub lost; reconnecting");
                        }
                        lost.notify_one();
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
