//! A client's session: subscribe, a snapshot then changes from its conflating queue (the pump),
//! writes it is granted.

use super::write::{Via, Writer};
use crate::config::NodeEntry;
use crate::core::Subscriber;
use crate::delivery::{definitions, Delivery, Step};
use crate::durable::registry::{Durable, Meta, Refused};
use crate::state::Hub;
use crate::throttle::{paced_scan, Throttle, SCANS_PER_SEC};
use pointhub_link::{Session, SessionTx};
use pointhub_schemas::{
    Data, Define, DurableSubscribe, ErrorCode, Msg, Pattern, Quality, SnapshotDone, WriteResult,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Updates per frame from the hub to a client.
pub(super) const BATCH: usize = 4096;
/// A client's requests for a fresh snapshot (each sends every point it covers): one per this.
pub(super) const REBIRTH_EVERY: Duration = Duration::from_secs(2);
/// Writes one client session may have waiting on devices at once.
pub(super) const MAX_WRITES_IN_FLIGHT: usize = 64;

pub(super) async fn client(
    hub: &Arc<Hub>,
    entry: &NodeEntry,
    sub: Arc<Subscriber>,
    session: &mut Session,
) {
    // The config was validated at start, so the patterns parse.
    let write = entry.grant.write.clone();
    hub.core().add_subscriber(sub.clone());
    let pump = hub.tasks().spawn(pump(
        hub.clone(),
        sub.clone(),
        session.tx.clone(),
        session.closed.clone(),
    ));
    let write = Arc::new(write);
    let mut scans = Throttle::scans();
    let mut rebirths = Throttle::new(1, REBIRTH_EVERY);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_WRITES_IN_FLIGHT));
    // A session takes its points either from subscribes or from one durable subscription.
    let mut subscribed = false;
    let mut durable: Option<Attached> = None;
    while let Some(msg) = session.rx.recv().await {
        match msg {
            Msg::Subscribe(_) if durable.is_some() => {
                session
                    .tx
                    .fail(
                        ErrorCode::Malformed,
                        "this session takes its points from a durable subscription: subscribe on another session",
                    )
                    .await;
                break;
            }
            Msg::Durable(ds) => {
                if durable.is_some() || subscribed {
                    session
                        .tx
                        .fail(
                            ErrorCode::Malformed,
                            "a session takes one durable subscription, and no subscribe besides it: open another session",
                        )
                        .await;
                    break;
                }
                match attach(hub, entry, ds, session) {
                    Ok(a) => durable = Some(a),
                    Err((code, message)) => {
                        session.tx.fail(code, message).await;
                        break;
                    }
                }
            }
            Msg::Ack(a) => {
                if let Some(at) = &durable {
                    if let Err(e) = at.durable.ack(at.generation, a.seq) {
                        warn!(error = %e, "cannot trim a durable subscription's queue");
                    }
                }
            }
            Msg::Subscribe(s) => match s
                .patterns
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => {
                    subscribed = true;
                    if s.history {
                        sub.history.store(true, Ordering::Relaxed);
                    }
                    info!(patterns = ?s.patterns, "subscribe");
                    let (h, sb) = (hub.clone(), sub.clone());
                    let (waited, done) =
                        paced_scan(&mut scans, move || h.core().subscribe(&sb, p)).await;
                    if waited {
                        warn!("subscribing faster than {SCANS_PER_SEC}/s: slowed down");
                    }
                    if let Some(Err(e)) = done {
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
                let (h, sb) = (hub.clone(), sub.clone());
                paced_scan(&mut scans, move || h.core().unsubscribe(&sb, &u.patterns)).await;
            }
            Msg::Rebirth(r) => {
                if rebirths.wait().await {
                    warn!("asking for fresh snapshots faster than one per {REBIRTH_EVERY:?}: slowed down");
                }
                info!(reason = %r.reason, "client asks for a fresh snapshot");
                hub.core().resnapshot(&sub);
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
                let by = Writer {
                    name: entry.grant.name.clone(),
                    via: Via::Node,
                    fingerprint: Some(entry.fingerprint),
                };
                hub.tasks().clone().spawn(async move {
                    let _permit = permit;
                    let req = w.req;
                    let (status, message) = super::write::write(&hub, &by, &write, w).await;
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
    hub.core().remove_subscriber(&sub);
    pump.abort();
    if let Some(at) = durable {
        at.durable.detach(at.generation);
        at.sender.abort();
    }
}

/// A session attached to a durable subscription.
struct Attached {
    durable: Arc<Durable>,
    generation: u64,
    sender: tokio::task::JoinHandle<()>,
}

/// Attaches the session to the key's durable subscription `ds.name` (made if new) and starts
/// sending from its queue; or the code and sentence it is refused with.
fn attach(
    hub: &Arc<Hub>,
    entry: &NodeEntry,
    ds: DurableSubscribe,
    session: &Session,
) -> Result<Attached, (ErrorCode, String)> {
    if let Err(e) = ds
        .patterns
        .iter()
        .try_for_each(|p| Pattern::parse(p).map(drop))
    {
        return Err((ErrorCode::InvalidName, format!("durable subscription: {e}")));
    }
    let want = Meta {
        owner: entry.fingerprint,
        node: entry.grant.name.clone(),
        name: ds.name.clone(),
        patterns: ds.patterns.clone(),
        grant: entry
            .grant
            .read
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
    };
    let (d, made) = hub.durables().get_or_make(want).map_err(|e| {
        let code = match e {
            Refused::Name(_) => ErrorCode::InvalidName,
            Refused::TooMany { .. } => ErrorCode::LimitExceeded,
            Refused::Off => ErrorCode::AccessDenied,
            Refused::Store(_) => ErrorCode::Internal,
        };
        (
            code,
            format!("durable subscription {:?} refused: {e}", ds.name),
        )
    })?;
    if made {
        crate::durable::start(hub, d.clone());
    }
    let (queued, _) = d.counts();
    info!(name = %ds.name, patterns = ?ds.patterns, queued, made, "durable subscription attached");
    let at = d.attach();
    let generation = at.generation;
    let sender = hub.tasks().spawn(crate::durable::serve(
        hub.clone(),
        d.clone(),
        at,
        session.tx.clone(),
        session.closed.clone(),
    ));
    Ok(Attached {
        durable: d,
        generation,
        sender,
    })
}

/// Drains a subscriber's queue into its session whenever the socket can take more.
pub(super) async fn pump(
    hub: Arc<Hub>,
    sub: Arc<Subscriber>,
    tx: SessionTx,
    closed: tokio_util::sync::CancellationToken,
) {
    let mut seq = 0u64;
    let mut delivery = Delivery::new(sub);
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            _ = delivery.ready() => {}
        }
        let batch = match delivery.take(&hub) {
            Step::Send(batch) => batch,
            Step::Overflow => {
                let limit = hub.config().limits.subscriber_queue;
                warn!(limit, "client too slow: cut off");
                tx.fail(
                    ErrorCode::SlowConsumer,
                    format!(
                        "this client fell more than {limit} updates behind and was cut off; it reconnects for a fresh snapshot"
                    ),
                )
                .await;
                return;
            }
        };
        // Definitions go out a frame at a time, built under a short read lock each, so a big
        // snapshot never holds a second copy of every name.
        for chunk in batch.new.chunks(BATCH) {
            let points = definitions(&hub, chunk);
            if !tx.send(Msg::Define(Define { points })).await {
                return;
            }
        }
        // A small drain (the common case) goes out as the queue's own vector; a big one is
        // moved out a frame at a time.
        let (mut whole, mut rest) = if batch.updates.len() <= BATCH {
            (Some(batch.updates), Vec::new().into_iter())
        } else {
            (None, batch.updates.into_iter())
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
            if !tx.send(Msg::Data(Data { seq, updates })).await {
                return;
            }
        }
        for points in batch.snapshots_done {
            if !tx.send(Msg::SnapshotDone(SnapshotDone { points })).await {
                return;
            }
        }
    }
}
