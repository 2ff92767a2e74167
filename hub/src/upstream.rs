//! Dialling out to a parent hub (plant DMZ hub → cloud hub).
//!
//! This hub becomes a node of role `hub` on its parent, with its own key. It forwards what its
//! `forward` patterns cover, as an authority does: births (all points, and later additions) and
//! batches of changes, quality included — so a point that turns stale here (its edge is gone)
//! turns stale up there too, and the parent marks everything from here stale when this link
//! closes or goes silent. History replays pass through. Writes from the parent to points covered
//! by `writes` go down to the owning edge and their results go back up. A `Chain` message tells
//! the parent which hubs are at and below this one, so a loop is refused.

use crate::config::UpstreamConfig;
use crate::core::Subscriber;
use crate::delivery::{definitions, Delivery, Step};
use crate::session::write::{Via, Writer};
use crate::state::Hub;
use pointhub_link::LinkConfig;
use pointhub_link::{self as link, Backoff};
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{Birth, Chain, Data, DataType, Msg, Pattern, Value, WriteResult};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

const BATCH: usize = 4096;

/// A link up at least this long counts as held: its next retry starts from the shortest wait.
const STABLE: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    hub: Arc<Hub>,
    index: usize,
    cfg: UpstreamConfig,
    link_cfg: LinkConfig,
    shutdown: CancellationToken,
) {
    let forward: Vec<Pattern> = cfg.forward.clone();
    let writes: Vec<Pattern> = cfg.writes.clone();
    let own_sys = SysNamespace::of(&hub.name);
    let status = |k: &str| own_sys.point(&format!("upstream/{index}/{k}"));
    hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(false));
    let mut backoff = Backoff::new(link_cfg.backoff_min, link_cfg.backoff_max);
    while let Some(mut link) = link::dial_any(&link_cfg, &mut backoff, &shutdown).await {
        let connected_at = tokio::time::Instant::now();
        info!(parent = %link.welcome.hub, url = %link.hub, "connected upstream");
        // The parent is above this hub; its own `Chain` names the hubs above it.
        hub.above.insert(index, vec![link.welcome.hub.clone()]);
        hub.ancestors_changed().await;
        hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(true));
        hub.set_sys(
            &status("hub"),
            DataType::String,
            Value::String(link.hub.to_string()),
        );
        let tx = link.session.tx.clone();
        let mut chain_sent = hub.chain();
        tx.send(Msg::Chain(Chain {
            hubs: chain_sent.clone(),
        }))
        .await;

        let sub = Arc::new(Subscriber::new(
            hub.core.next_id(),
            true,
            forward.clone(),
            hub.config.limits.subscriber_queue,
        ));
        hub.core.add_subscriber(sub.clone());
        if let Err(e) = hub.core.subscribe(&sub, forward.clone()) {
            warn!(error = %e, "upstream {index}: forward patterns refused");
        }
        let mut seq = 0u64;
        let mut part = 0u32;
        // This hub's own `$sys` is its own: never forwarded.
        let own = own_sys.clone();
        let mut delivery =
            Delivery::new(sub.clone()).keeping(move |table, pt| !own.contains(table.name(pt)));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let reason = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break "shutting down".to_string(),
                _ = delivery.ready() => {
                    let batch = match delivery.take(&hub) {
                        Step::Send(batch) => batch,
                        Step::Overflow => break "the parent fell too far behind".to_string(),
                    };
                    for chunk in definitions(&hub, &batch.new).chunks(BATCH) {
                        seq += 1;
                        tx.send(Msg::Birth(Birth { seq, part, last: true, points: chunk.to_vec(), states: Vec::new() })).await;
                        part += 1;
                    }
                    for chunk in batch.updates.chunks(BATCH) {
                        seq += 1;
                        tx.send(Msg::Data(Data { seq, updates: chunk.to_vec() })).await;
                    }
                }
                _ = tick.tick() => {
                    let chain = hub.chain();
                    if chain != chain_sent {
                        tx.send(Msg::Chain(Chain { hubs: chain.clone() })).await;
                        chain_sent = chain;
                    }
                    let rtt = link.session.stats.rtt_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1000.0;
                    hub.set_sys(&status("rtt_ms"), DataType::Float, Value::Float(rtt));
                }
                msg = link.session.rx.recv() => match msg {
                    None => break link.session.close_reason(),
                    Some(Msg::Write(w)) => {
                        let hub = hub.clone();
                        let tx = tx.clone();
                        let writes = writes.clone();
                        let parent = link.welcome.hub.clone();
                        let by = Writer { name: parent, via: Via::Upstream, fingerprint: None };
                        hub.tasks.clone().spawn(async move {
                            let req = w.req;
                            let (status, message) = crate::session::write::write(&hub, &by, &writes, w).await;
                            tx.send(Msg::WriteResult(WriteResult { req, status, message })).await;
                        });
                    }
                    Some(Msg::Rebirth(r)) => {
                        info!(reason = %r.reason, "parent asks for a rebirth");
                        delivery.forget_definitions();
                        part = 0;
                        hub.core.resnapshot(&sub);
                    }
                    Some(Msg::Chain(c)) => {
                        if c.hubs.iter().any(|h| h == hub.name.as_ref()) {
                            break format!(
                                "loop in the hub chain: this hub {} is already above its parent {} ({}); remove one of the upstream links",
                                hub.name, link.welcome.hub, c.hubs.join(" > ")
                            );
                        }
                        hub.above.insert(index, c.hubs);
                        hub.ancestors_changed().await;
                    }
                    Some(Msg::Error(e)) => warn!(code = ?e.code, message = %e.message, "parent reports an error"),
                    Some(_) => {}
                },
            }
        };
        hub.core.remove_subscriber(&sub);
        link.session.finish().await;
        hub.above.remove(&index);
        hub.ancestors_changed().await;
        hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(false));
        warn!(reason = %reason, "upstream link lost; reconnecting");
        if shutdown.is_cancelled() {
            return;
        }
        // A link that held a while starts its retries afresh; one the parent ended at once (a
        // refusal, a loop) waits a growing time first, so a refused hub does not hammer it.
        if connected_at.elapsed() >= STABLE {
            backoff.reset();
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}
