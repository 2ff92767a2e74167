//! The edge's run loop: one task owns the point table, the store-and-forward state and the hub
//! link, and handles one event at a time: a new link, a batch of samples, the status tick, a
//! message from the hub. A connector task dials (with backoff and jitter) and hands links over.

use crate::config::EdgeConfig;
use crate::forward::Forward;
use crate::points::{Points, WriteTarget};
use crate::sources::{Sample, SourceWrite};
use crate::EdgeError;
use pointhub_link::{self as link, Backoff, Link, LinkConfig, SessionTx};
use pointhub_schemas::{
    Data, Death, ErrorCode, Msg, Quality, Role, Update, Value, WriteRequest, WriteResult,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Updates per data batch.
const BATCH: usize = 8192;

/// Runs an edge until `shutdown` fires.
pub async fn run(cfg: EdgeConfig, shutdown: CancellationToken) -> Result<(), EdgeError> {
    let link_cfg = cfg.hub.link_config(Role::Edge, &cfg.name)?;
    let forward = Forward::open(&cfg.buffer)?;
    let (points, mut samples) = Points::start(&cfg, &shutdown);
    info!(points = points.len(), "edge ready");
    let lost = Arc::new(Notify::new());
    let mut links = connector(link_cfg, lost.clone(), shutdown.clone());
    let mut edge = Edge {
        points,
        forward,
        current: None,
        seq: 0,
        lost,
        replaying: false,
    };
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            l = links.recv() => match l {
                Some(l) => edge.on_link(l).await,
                None => break,
            },
            batch = samples.recv() => match batch {
                Some(batch) => edge.on_samples(batch, &mut samples).await,
                None => break,
            },
            _ = status_tick.tick() => edge.on_tick().await,
            msg = recv(&mut edge.current) => edge.on_message(msg).await,
            // One batch of buffered history at a time, between the live batches.
            _ = std::future::ready(()), if edge.replaying && edge.current.is_some() => edge.replay_step().await,
        }
    }
    edge.close().await;
    Ok(())
}

/// Dials until a hub welcomes the edge, hands the link over, and dials again once it is lost.
fn connector(
    cfg: LinkConfig,
    lost: Arc<Notify>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Link> {
    let (tx, rx) = mpsc::channel::<Link>(1);
    tokio::spawn(async move {
        let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        while let Some(link) = link::dial_any(&cfg, &mut backoff, &shutdown).await {
            backoff.reset();
            if tx.send(link).await.is_err() {
                return;
            }
            tokio::select! {
                _ = lost.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
    rx
}

async fn recv(current: &mut Option<Link>) -> Option<Msg> {
    match current {
        Some(l) => l.session.rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Edge {
    points: Points,
    forward: Forward,
    current: Option<Link>,
    seq: u64,
    lost: Arc<Notify>,
    /// Buffered history is being replayed on the current link, a batch at a time.
    replaying: bool,
}

impl Edge {
    async fn send(&mut self, l: &Link, updates: Vec<Update>) {
        self.seq += 1;
        l.session
            .tx
            .send(Msg::Data(Data {
                seq: self.seq,
                updates,
            }))
            .await;
    }

    /// A hub welcomed the edge: birth, then the buffered history, then the buffer's figures.
    async fn on_link(&mut self, l: Link) {
        info!(hub = %l.hub, namespace = %l.welcome.namespace, "sending birth");
        let st = self.points.status;
        self.points.set_status(&[
            (st.hub, Value::String(l.hub.to_string())),
            (st.rtt_ms, Value::Float(0.0)),
        ]);
        self.seq += 1;
        for part in self.points.birth(self.seq) {
            l.session.tx.send(Msg::Birth(part)).await;
        }
        if self.forward.start_replay() {
            info!(
                updates = self.forward.counts().map_or(0, |c| c.0),
                "replaying buffered history"
            );
            self.replaying = true;
        }
        if let Some(out) = self.buffer_status() {
            self.send(&l, out).await;
        }
        self.current = Some(l);
    }

    /// The next batch of buffered history; the buffer's figures once it is all sent.
    async fn replay_step(&mut self) {
        let Some(l) = self.current.take() else { return };
        let (seq, more) = self.forward.replay_step(&l, &self.points, self.seq).await;
        self.seq = seq;
        if !more {
            self.replaying = false;
            if let Some(out) = self.buffer_status() {
                self.send(&l, out).await;
            }
        }
        self.current = Some(l);
    }

    /// The buffer's figures as status updates, when there is a buffer.
    fn buffer_status(&mut self) -> Option<Vec<Update>> {
        let (q, d) = self.forward.counts()?;
        let st = self.points.status;
        Some(
            self.points
                .set_status(&[(st.queued, Value::UInt(q)), (st.dropped, Value::UInt(d))]),
        )
    }

    /// Changes from the sources: what is queued is drained into batches and sent, or buffered.
    async fn on_samples(&mut self, batch: Vec<Sample>, more: &mut mpsc::Receiver<Vec<Sample>>) {
        let mut out = Vec::new();
        self.points.apply(batch, &mut out);
        while let Ok(next) = more.try_recv() {
            self.points.apply(next, &mut out);
            if out.len() >= BATCH {
                break;
            }
        }
        if let Some(l) = self.current.take() {
            for chunk in out.chunks(BATCH) {
                self.forward.sent(self.seq + 1, chunk, &self.points);
                self.send(&l, chunk.to_vec()).await;
            }
            self.current = Some(l);
        } else if self.forward.offline(out, &self.points) {
            // The figures change on the edge's own table; the hub sees them after the birth.
            let _ = self.buffer_status();
        }
    }

    /// Once a second: the measured round trip to the hub.
    async fn on_tick(&mut self) {
        let Some(l) = self.current.take() else { return };
        let rtt = l.session.stats.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0;
        let out = self
            .points
            .set_status(&[(self.points.status.rtt_ms, Value::Float(rtt))]);
        self.send(&l, out).await;
        self.current = Some(l);
    }

    async fn on_message(&mut self, msg: Option<Msg>) {
        match msg {
            None => self.on_lost(),
            Some(Msg::Ack(a)) => self.forward.acked(a.seq),
            Some(Msg::Write(w)) => self.on_write(w).await,
            Some(Msg::Rebirth(r)) => {
                if let Some(l) = &self.current {
                    info!(reason = %r.reason, "hub asks for a rebirth");
                    self.seq += 1;
                    for part in self.points.birth(self.seq) {
                        l.session.tx.send(Msg::Birth(part)).await;
                    }
                }
            }
            Some(Msg::Error(e)) if e.code == ErrorCode::ShuttingDown => {
                info!(message = %e.message, "the hub is shutting down: reconnecting")
            }
            Some(Msg::Error(e)) => {
                warn!(code = ?e.code, message = %e.message, "hub reports an error")
            }
            Some(_) => {}
        }
    }

    /// The link ended: unacknowledged batches go to the buffer, and the connector dials again.
    fn on_lost(&mut self) {
        self.replaying = false;
        if let Some(l) = self.current.take() {
            warn!(hub = %l.hub, reason = %l.session.close_reason(), "link to hub lost; reconnecting");
        }
        self.forward.lost(&self.points);
        self.lost.notify_one();
    }

    /// A write from the hub: to the owning source, answered when the source has the outcome.
    async fn on_write(&mut self, w: WriteRequest) {
        let Some(tx) = self.current.as_ref().map(|l| l.session.tx.clone()) else {
            return;
        };
        match self.points.write_target(&w.point) {
            WriteTarget::Refused(status, message) => answer(tx, w.req, status, message).await,
            WriteTarget::Source(id, src) => {
                let (reply, rx) = oneshot::channel();
                tokio::spawn(async move {
                    let _ = src
                        .send(SourceWrite {
                            id,
                            value: w.value,
                            reply,
                        })
                        .await;
                    let (status, message) = rx
                        .await
                        .unwrap_or((Quality::BadInternalError, "source stopped".into()));
                    answer(tx, w.req, status, message).await;
                });
            }
        }
    }

    /// Stopping: the hub is told, so it marks the edge's points at once rather than at timeout.
    async fn close(self) {
        let Some(l) = self.current else { return };
        l.session
            .tx
            .send(Msg::Death(Death {
                reason: "edge shutting down".into(),
            }))
            .await;
        l.session.tx.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), l.session.closed.cancelled()).await;
    }
}

async fn answer(tx: SessionTx, req: u64, status: Quality, message: String) {
    tx.send(Msg::WriteResult(WriteResult {
        req,
        status,
        message,
    }))
    .await;
}
