//! The sender of a client session attached to a durable subscription: what the queue holds and
//! the client has not acknowledged goes out in order, in batches, each point defined before its
//! first update; then what the feeder adds. The client's `Ack`s trim the queue.

use super::registry::{Attachment, Durable};
use crate::delivery::definitions;
use crate::state::Hub;
use pointhub_link::SessionTx;
use pointhub_schemas::{Data, Define, Msg, Quality, Timestamp, Update};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Updates per batch.
const BATCH: usize = 4096;
/// A look at the queue at least this often, whatever woke the sender.
const RECHECK: Duration = Duration::from_millis(250);

/// Sends from the queue of `d` until the session closes or a newer session attaches.
pub(crate) async fn serve(
    hub: Arc<Hub>,
    d: Arc<Durable>,
    at: Attachment,
    tx: SessionTx,
    closed: CancellationToken,
) {
    let mut defined: FxHashSet<u32> = Default::default();
    // Each point's last value sent on this session: the same value again (a snapshot taken when
    // the subscription was made anew) is left out.
    let mut last: FxHashMap<u32, (Timestamp, Quality, u8)> = Default::default();
    let (mut seq, mut gone) = (0u64, 0u64);
    loop {
        let chunk = match d.next(at.generation, BATCH) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot read a durable subscription's queue; retrying");
                Vec::new()
            }
        };
        let Some(&(last_key, _)) = chunk.last() else {
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = at.ended.cancelled() => return,
                _ = d.fed.notified() => {}
                _ = d.acked.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
            continue;
        };
        let updates: Vec<Update> = {
            let table = hub.core().table_read();
            chunk
                .into_iter()
                .filter_map(|(_, n)| {
                    let Some(gid) = table.gid(&n.name) else {
                        gone += 1;
                        return None;
                    };
                    let u = n.update;
                    let this = (u.source_ts, u.quality, u.flags);
                    if last.insert(gid, this) == Some(this) {
                        return None;
                    }
                    Some(Update { id: gid, ..u })
                })
                .collect()
        };
        let new: Vec<u32> = updates
            .iter()
            .map(|u| u.id)
            .filter(|g| defined.insert(*g))
            .collect();
        for c in new.chunks(BATCH) {
            let points = definitions(&hub, c);
            if !tx.send(Msg::Define(Define { points })).await {
                return;
            }
        }
        seq += 1;
        // A batch with nothing left in it still goes, so its acknowledgement trims the queue.
        d.sent(at.generation, seq, last_key);
        if !tx.send(Msg::Data(Data { seq, updates })).await {
            return;
        }
        if gone > 0 {
            info!(
                updates = gone,
                "kept updates of points this hub no longer has were left out"
            );
            gone = 0;
        }
    }
}
