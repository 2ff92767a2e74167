//! Dialling out to a parent hub (plant DMZ hub → cloud hub).
//!
//! This hub becomes a node of role `hub` on its parent, with its own key. It forwards what its
//! `forward` patterns cover, as an authority does: births (all points, and later additions) and
//! batches of changes, quality included — so a point that turns stale here (its edge is gone)
//! turns stale up there too, and the parent marks everything from here stale when this link
//! closes or goes silent. History replays pass through. Writes from the parent to points covered
//! by `writes` go down to the owning edge and their results go back up. A `Chain` message tells
//! the parent which hubs are at and below this one, so a loop is refused.
//!
//! Nothing is lost on this hop either (`forward.rs`): what went up is kept until the parent
//! acknowledges it, and while the parent is out of reach what this hub forwards goes to a spool
//! on disk, replayed as history after the next birth. One subscription serves every link, from
//! the hub's start on, so the spool sees every update of an outage, also one that began before
//! this hub (re)started.

mod forward;
mod up;

use crate::config::UpstreamConfig;
use crate::core::Subscriber;
use crate::delivery::{definitions, Delivery, Step};
use crate::session::write::{Via, Writer};
use crate::state::Hub;
pub(crate) use forward::Forward;
use pointhub_link::{self as link, Backoff, Link, LinkConfig};
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{Birth, Chain, Data, DataType, Msg, Pattern, Update, Value, WriteResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use up::Up;

const BATCH: usize = 4096;

/// How often a link with nothing to forward says it holds what was applied meanwhile.
const KEEP_TICK: Duration = Duration::from_millis(50);

/// A link up at least this long counts as held: its next retry starts from the shortest wait.
const STABLE: Duration = Duration::from_secs(10);

/// Runs the upstream link `index` until `shutdown` fires.
pub(crate) async fn run(
    hub: Arc<Hub>,
    index: usize,
    cfg: UpstreamConfig,
    link_cfg: LinkConfig,
    mut fwd: Forward,
    shutdown: CancellationToken,
) {
    let mut link_cfg = link_cfg;
    // The link's reader and writer are the hub's tasks too: shutdown waits for them.
    link_cfg.session.tasks = Some(hub.tasks().clone());
    let patterns: Vec<Pattern> = cfg.forward.clone();
    let writes: Arc<Vec<Pattern>> = Arc::new(cfg.writes.clone());
    let own_sys = SysNamespace::of(hub.name());
    let status = |k: &str| own_sys.point(&format!("upstream/{index}/{k}"));
    hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(false));
    // With history, so every update, not the latest of each point: the parent's historians
    // are owed them all.
    let sub = Arc::new(Subscriber::new(
        hub.core().next_id(),
        true,
        patterns.clone(),
        hub.config().limits.subscriber_queue,
    ));
    let own = own_sys.clone();
    // This hub's own `$sys` is its own: never forwarded.
    let mut delivery = Delivery::new(sub.clone())
        .keeping(move |table, pt| !own.contains(table.name(pt)))
        .recovering();
    // Subscribed from the start, not from the first connection: a hub restarted while its
    // parent is out of reach spools what its edges send (their own replays included) as well.
    hub.core().add_subscriber(sub.clone());
    // Without a snapshot: the values restored at a start are no updates to spool (the birth
    // carries them when the parent is reached).
    if let Err(e) = hub.core().subscribe_from_now(&sub, patterns.clone()) {
        warn!(error = %e, "upstream {index}: forward patterns refused");
    }
    fwd.keep_for(&hub);
    let lost = Arc::new(Notify::new());
    let mut links = connector(hub.tasks(), link_cfg, lost.clone(), shutdown.clone());
    let mut current: Option<Up> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // With nothing to forward, what was applied meanwhile is held all the same.
    let mut keep_tick = tokio::time::interval(KEEP_TICK);
    keep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drained = false;
    loop {
        let ended: Option<String> = tokio::select! {
            _ = shutdown.cancelled() => break,
            l = links.recv() => {
                let Some(link) = l else { break };
                info!(parent = %link.welcome.hub, url = %link.hub, "connected upstream");
                // The parent is above this hub; its own `Chain` names the hubs above it.
                hub.set_above(index, vec![link.welcome.hub.clone()]);
                hub.ancestors_changed().await;
                hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(true));
                hub.set_sys(&status("hub"), DataType::String, Value::String(link.hub.to_string()));
                let chain_sent = hub.chain();
                link.session.tx.send(Msg::Chain(Chain { hubs: chain_sent.clone() })).await;
                // The birth: every forwarded point, defined again, with its current value.
                // What was queued while the parent was out of reach goes to the spool first: it
                // replays as history after the birth, which carries the current values live.
                let epoch = hub.core().epoch();
                if let Step::Send(batch) = delivery.take(&hub) {
                    fwd.offline(&hub, &batch.updates);
                }
                fwd.kept(epoch);
                delivery.forget_definitions();
                hub.core().resnapshot(&sub);
                current = Some(Up { link, seq: 0, part: 0, chain_sent, replay_pending: true, first_live: Default::default(), replay: None });
                None
            }
            _ = delivery.ready() => { let epoch = hub.core().epoch(); let step = delivery.take(&hub); fwd.lost_to_overflow(delivery.take_lost()); match step {
                Step::Overflow => Some("the parent fell too far behind".to_string()),
                Step::Send(batch) => {
                    match current.as_mut() {
                        Some(up) => {
                            let tx = up.link.session.tx.clone();
                            for chunk in definitions(&hub, &batch.new).chunks(BATCH) {
                                up.seq += 1;
                                tx.send(Msg::Birth(Birth { seq: up.seq, part: up.part, last: true, points: chunk.to_vec(), states: Vec::new() })).await;
                                up.part += 1;
                            }
                            if up.replay_pending {
                                for u in batch.updates.iter().filter(|u| u.flags & Update::HISTORY == 0) {
                                    up.first_live.entry(u.id).or_insert((u.source_ts, u.quality));
                                }
                            }
                            // History from below while this link's own replay is due or under
                            // way joins the spool in its place in time: sent straight up it
                            // would fill the parent's gap ahead of older spooled values, and the
                            // parent would take those for doubles.
                            let mut updates = batch.updates;
                            if up.replay_pending || up.replay.is_some() {
                                let (history, live): (Vec<Update>, Vec<Update>) = updates.into_iter().partition(|u| u.flags & Update::HISTORY != 0);
                                fwd.offline(&hub, &history);
                                updates = live;
                            }
                            for chunk in updates.chunks(BATCH) {
                                up.seq += 1;
                                fwd.sent(&hub, up.seq, chunk);
                                tx.send(Msg::Data(Data { seq: up.seq, updates: chunk.to_vec() })).await;
                            }
                            fwd.up_through(up.seq, epoch);
                            if up.replay_pending && !batch.snapshots_done.is_empty() {
                                up.replay_pending = false;
                                fwd.start_replay(up);
                            }
                            behind(&sub, hub.config().limits.subscriber_queue)
                        }
                        None => {
                            fwd.offline(&hub, &batch.updates);
                            fwd.kept(epoch);
                            None
                        }
                    }
                }
            }},
            // The hub shuts down: what the parent has not acknowledged goes to the spool, so
            // the batches from below are held and acknowledged before the nodes are told.
            _ = hub.keepers().draining().cancelled(), if !drained => {
                drained = true;
                fwd.spool_unacked(&hub);
                None
            }
            _ = keep_tick.tick() => {
                let epoch = hub.core().epoch();
                // An empty queue after reading the epoch: all through it was drained and handled.
                if sub.queue_len() == 0 {
                    match current.as_ref() {
                        Some(up) => fwd.up_through(up.seq, epoch),
                        None => fwd.kept(epoch),
                    }
                }
                None
            }
            // One batch of the spool at a time, between the live batches.
            _ = std::future::ready(()), if current.as_ref().is_some_and(|u| u.replay.is_some()) => {
                if let Some(up) = current.as_mut() {
                    fwd.replay_step(&hub, up, &mut delivery).await;
                }
                None
            }
            _ = tick.tick() => {
                if let Some((queued, dropped)) = fwd.counts() {
                    hub.set_sys(&status("buffer/queued"), DataType::UInt, Value::UInt(queued));
                    hub.set_sys(&status("buffer/dropped"), DataType::UInt, Value::UInt(dropped));
                }
                if let Some(up) = current.as_mut() {
                    let chain = hub.chain();
                    if chain != up.chain_sent {
                        up.link.session.tx.send(Msg::Chain(Chain { hubs: chain.clone() })).await;
                        up.chain_sent = chain;
                    }
                    let rtt = up.link.session.stats.rtt_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
                    hub.set_sys(&status("rtt_ms"), DataType::Float, Value::Float(rtt));
                }
                None
            }
            msg = recv(&mut current) => match (msg, current.as_mut()) {
                (None, Some(up)) => Some(up.link.session.close_reason()),
                (None, None) => None,
                (Some(Msg::Ack(a)), _) => {
                    fwd.acked(a.seq);
                    None
                }
                (Some(Msg::Write(w)), Some(up)) => {
                    let (hub, tx, writes) = (hub.clone(), up.link.session.tx.clone(), writes.clone());
                    let by = Writer { name: up.link.welcome.hub.clone(), via: Via::Upstream, fingerprint: None };
                    hub.tasks().clone().spawn(async move {
                        let req = w.req;
                        let (status, message) = crate::session::write::write(&hub, &by, &writes, w).await;
                        tx.send(Msg::WriteResult(WriteResult { req, status, message })).await;
                    });
                    None
                }
                (Some(Msg::Rebirth(r)), Some(up)) => {
                    info!(reason = %r.reason, "parent asks for a rebirth");
                    delivery.forget_definitions();
                    up.part = 0;
                    hub.core().resnapshot(&sub);
                    None
                }
                (Some(Msg::Chain(c)), Some(up)) => {
                    if c.hubs.iter().any(|h| h == hub.name()) {
                        Some(format!(
                            "loop in the hub chain: this hub {} is already above its parent {} ({}); remove one of the upstream links",
                            hub.name(), up.link.welcome.hub, c.hubs.join(" > ")
                        ))
                    } else {
                        hub.set_above(index, c.hubs);
                        hub.ancestors_changed().await;
                        None
                    }
                }
                (Some(Msg::Error(e)), _) => {
                    warn!(code = ?e.code, message = %e.message, "parent reports an error");
                    None
                }
                (Some(_), _) => None,
            },
        };
        if let Some(reason) = ended {
            if let Some(up) = current.take() {
                up.link.session.finish().await;
                hub.clear_above(index);
                hub.ancestors_changed().await;
                hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(false));
                warn!(reason = %reason, "upstream link lost; reconnecting");
                fwd.lost(&hub);
                lost.notify_one();
            } else {
                warn!(reason = %reason, "upstream {index}: forwarding stopped");
            }
        }
    }
    if let Some(up) = current.take() {
        up.link.session.finish().await;
    }
    // What the parent never acknowledged goes up again after the restart.
    fwd.lost(&hub);
    hub.core().remove_subscriber(&sub);
}

/// Dials the parent until it welcomes this hub, hands the link over, and dials again once it is
/// lost. A link that held a while starts its retries afresh; one the parent ended at once (a
/// refusal, a loop) waits a growing time first, so a refused hub does not hammer it.
fn connector(
    tasks: &tokio_util::task::TaskTracker,
    cfg: LinkConfig,
    lost: Arc<Notify>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<Link> {
    let (tx, rx) = mpsc::channel::<Link>(1);
    tasks.spawn(async move {
        let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        while let Some(link) = link::dial_any(&cfg, &mut backoff, &shutdown).await {
            let connected_at = tokio::time::Instant::now();
            if tx.send(link).await.is_err() {
                return;
            }
            tokio::select! {
                _ = lost.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            if connected_at.elapsed() >= STABLE {
                backoff.reset();
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    });
    rx
}

/// Why the link must start anew, if the parent takes updates slower than this hub forwards
/// them: past half its queue's limit the backlog goes to the spool instead (and up again
/// after the next birth), before the queue overflows.
fn behind(sub: &Subscriber, limit: usize) -> Option<String> {
    let waiting = sub.queue_len();
    (waiting > limit / 2).then(|| {
        format!("the parent takes updates slower than this hub forwards them ({waiting} waiting): the link starts anew, and the backlog goes up through the spool")
    })
}

async fn recv(current: &mut Option<Up>) -> Option<Msg> {
    match current {
        Some(up) => up.link.session.rx.recv().await,
        None => std::future::pending().await,
    }
}
