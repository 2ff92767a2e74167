//! A durable subscription's feeder: subscribed to the hub's table from the hub's start (or the
//! subscription's making) on, with history and without conflation, it moves every update it is
//! passed into the subscription's queue on disk, and keeps the subscription's `$sys` points.

use super::registry::Durable;
use crate::core::Subscriber;
use crate::delivery::{Delivery, Step};
use crate::named::name_all;
use crate::state::Hub;
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{DataType, Update, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How often a feeder with nothing to store says it holds what was applied meanwhile.
const KEEP_TICK: Duration = Duration::from_millis(50);

/// Starts the feeder of `d`; it runs until the hub stops or the subscription is removed.
pub(crate) fn start(hub: &Arc<Hub>, d: Arc<Durable>) {
    hub.tasks().spawn(feed(hub.clone(), d));
}

fn subscribe(hub: &Hub, d: &Durable) -> Arc<Subscriber> {
    let (patterns, grant) = d.meta().wanted();
    // With history: every update, not the latest of each point.
    let sub = Arc::new(Subscriber::new(
        hub.core().next_id(),
        true,
        grant,
        hub.config().limits.subscriber_queue,
    ));
    hub.core().add_subscriber(sub.clone());
    if let Err(e) = hub.core().subscribe(&sub, patterns) {
        warn!(error = %e, "durable subscription: patterns refused");
    }
    sub
}

/// Moves what the table passed on into the queue.
fn store(hub: &Hub, d: &Durable, updates: &[Update]) {
    let named = name_all(&hub.core().table_read(), updates);
    if let Err(e) = d.push(&named) {
        d.lost.fetch_add(named.len() as u64, Ordering::Relaxed);
        warn!(error = %e, updates = named.len(), "cannot keep updates for a durable subscription; they are lost");
    }
}

async fn feed(hub: Arc<Hub>, d: Arc<Durable>) {
    let meta = d.meta();
    let sys = SysNamespace::of(hub.name());
    let status = |k: &str| sys.point(&format!("durable/{}/{}/{k}", meta.node, meta.name));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A batch from an edge is acknowledged once it is in this queue on disk.
    let keeper = hub.keepers().add(hub.core().epoch());
    let mut keep_tick = tokio::time::interval(KEEP_TICK);
    keep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sub = subscribe(&hub, &d);
        let mut delivery = Delivery::new(sub.clone())
            .without_definitions()
            .recovering();
        let again = loop {
            tokio::select! {
                _ = hub.shutdown().cancelled() => break false,
                _ = d.removed.cancelled() => break false,
                _ = d.rewired.notified() => {
                    info!(name = %meta.name, node = %meta.node, "durable subscription changed: subscribing anew");
                    break true;
                }
                _ = delivery.ready() => {
                    let epoch = hub.core().epoch();
                    let step = delivery.take(&hub);
                    let lost = delivery.take_lost();
                    if lost > 0 {
                        d.lost.fetch_add(lost, Ordering::Relaxed);
                        warn!(name = %meta.name, updates = lost, "durable subscription fell behind the hub's table: updates were lost before its queue (counted in dropped)");
                    }
                    match step {
                        Step::Send(batch) => {
                            store(&hub, &d, &batch.updates);
                            keeper.kept(epoch);
                        }
                        Step::Overflow => {
                            d.lost.fetch_add(1, Ordering::Relaxed);
                            warn!(name = %meta.name, "durable subscription fell behind the hub's table: updates were lost; subscribing anew");
                            break true;
                        }
                    }
                }
                _ = keep_tick.tick() => {
                    // An empty queue after reading the epoch: everything through it is stored.
                    let epoch = hub.core().epoch();
                    if sub.queue_len() == 0 {
                        keeper.kept(epoch);
                    }
                }
                _ = tick.tick() => {
                    let (queued, dropped) = d.counts();
                    hub.set_sys(&status("queued"), DataType::UInt, Value::UInt(queued));
                    hub.set_sys(&status("dropped"), DataType::UInt, Value::UInt(dropped + d.lost.load(Ordering::Relaxed)));
                    hub.set_sys(&status("connected"), DataType::Bool, Value::Bool(d.is_attached()));
                    if hub.access().is_revoked(&meta.owner) {
                        info!(name = %meta.name, node = %meta.node, "durable subscription removed: its key was revoked");
                        hub.durables().remove(&d);
                    }
                }
            }
        };
        // What the table passed on meanwhile is kept too.
        if let Step::Send(batch) = delivery.take(&hub) {
            store(&hub, &d, &batch.updates);
        }
        hub.core().remove_subscriber(&sub);
        if !again {
            break;
        }
    }
}
