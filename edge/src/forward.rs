//! Store-and-forward on the edge → hub hop: nothing lost, nothing doubled.
//!
//! While a hub link is up, every live batch is kept until the hub acknowledges its sequence
//! number. When the link drops, what was not acknowledged goes to the disk buffer, and so does
//! every update made while offline, kept in order of device time. On the next link, after the
//! birth has restored the live mirror, the buffer is replayed oldest first, flagged as history,
//! and stays on disk until acknowledged (an edge killed mid-replay replays it again); the hub drops replays it already had, so a batch it applied but
//! did not acknowledge in time is not doubled.
//!
//! The buffer names each update's point: points are numbered in the order of the configuration,
//! and an engineer who adds or removes a point while the hub is away renumbers them at the next
//! start; a buffered number would then replay as the wrong point.

use crate::config::BufferConfig;
use crate::points::Points;
use pointhub_link::Link;
use pointhub_schemas::{Data, Msg, Update};
use pointhub_spool::{Buffer, BufferError, Replay, Unacked};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Updates kept in memory for a hub that has not acknowledged them; older ones go to the disk
/// buffer.
const MAX_UNACKED: usize = 200_000;

/// Updates per replayed data batch.
const REPLAY_BATCH: usize = 8192;

/// One buffered update and the name of its point.
#[derive(Serialize, Deserialize)]
struct Buffered {
    name: String,
    update: Update,
}

/// `updates` named, leaving out the edge's own `$sys` points (never buffered: they describe now).
fn named(updates: &[Update], points: &Points) -> Vec<Buffered> {
    updates
        .iter()
        .filter(|u| !points.is_sys(u))
        .filter_map(|u| {
            Some(Buffered {
                name: points.name_of(u.id)?.to_string(),
                update: u.clone(),
            })
        })
        .collect()
}

pub(crate) struct Forward {
    buffer: Option<Buffer<Buffered>>,
    /// Live batches the hub has not acknowledged yet (only with a buffer).
    unacked: Unacked,
    /// The replay on the current link: replayed batches leave the buffer when acknowledged.
    replay: Replay,
}

impl Forward {
    /// Opens the disk buffer if the configuration asks for one.
    pub(crate) fn open(cfg: &BufferConfig) -> Result<Forward, BufferError> {
        let buffer = match (&cfg.enabled, &cfg.dir) {
            (true, Some(dir)) => Some(Buffer::open(dir, cfg.max_bytes)?),
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
        Ok(Forward {
            buffer,
            unacked: Unacked::new(MAX_UNACKED),
            replay: Replay::new(),
        })
    }

    /// Updates in the disk buffer and updates dropped from it, if there is one.
    pub(crate) fn counts(&self) -> Option<(u64, u64)> {
        self.buffer.as_ref().map(|b| (b.len(), b.dropped))
    }

    /// A live batch went out as `seq`: kept until the hub acknowledges it.
    pub(crate) fn sent(&mut self, seq: u64, batch: &[Update], points: &Points) {
        if self.buffer.is_none() {
            return;
        }
        let keep: Vec<Update> = batch
            .iter()
            .filter(|u| !points.is_sys(u))
            .cloned()
            .collect();
        // Past its bound (a hub slow to acknowledge) the oldest go to the disk buffer: replayed
        // after the next birth, and dropped by the hub if it had them.
        if let Some((_, spilled)) = self.unacked.sent(seq, keep) {
            if let Some(b) = self.buffer.as_mut() {
                let named = named(&spilled, points);
                if let Err(e) = b.push_in_time(named.iter().map(|n| (n.update.source_ts.0, n))) {
                    warn!(error = %e, "cannot buffer unacknowledged updates");
                }
            }
        }
    }

    /// Updates made with no hub link: into the buffer. `false` when there is no buffer.
    pub(crate) fn offline(&mut self, updates: Vec<Update>, points: &Points) -> bool {
        let Some(b) = self.buffer.as_mut() else {
            return false;
        };
        let named = named(&updates, points);
        if let Err(e) = b.push_in_time(named.iter().map(|n| (n.update.source_ts.0, n))) {
            warn!(error = %e, "cannot buffer updates; they are lost");
        }
        true
    }

    /// The hub acknowledged everything through `seq`.
    pub(crate) fn acked(&mut self, seq: u64) {
        self.unacked.acked(seq);
        if let Some(b) = self.buffer.as_mut() {
            if let Err(e) = self.replay.acked(b, seq) {
                warn!(error = %e, "cannot trim the buffer");
            }
        }
    }

    /// The link dropped: what the hub may not have applied goes to the buffer first.
    pub(crate) fn lost(&mut self, points: &Points) {
        // Replayed batches not acknowledged are still in the buffer: the next link replays them.
        self.replay = Replay::new();
        let Some(b) = self.buffer.as_mut() else {
            return;
        };
        let pending = self.unacked.take_all();
        let named = named(&pending, points);
        if let Err(e) = b.push_in_time(named.iter().map(|n| (n.update.source_ts.0, n))) {
            warn!(error = %e, "cannot buffer unacknowledged updates");
        }
    }

    /// A new link: its replay reads the buffer from the start. Whether history waits.
    pub(crate) fn start_replay(&mut self) -> bool {
        self.replay = Replay::new();
        self.buffer.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// Sends the next batch of buffered history after a birth, oldest first, flagged as history;
    /// returns the last sequence number used and whether more waits. One batch at a time, so the
    /// run loop sends live values between them: a long replay does not hold them up.
    pub(crate) async fn replay_step(
        &mut self,
        l: &Link,
        points: &Points,
        mut seq: u64,
    ) -> (u64, bool) {
        let Some(b) = self.buffer.as_mut() else {
            return (seq, false);
        };
        loop {
            let chunk = match self.replay.next(b, REPLAY_BATCH) {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => {
                    info!("history replay sent; it leaves the buffer as the hub acknowledges it");
                    return (seq, false);
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the buffer");
                    return (seq, false);
                }
            };
            let last = chunk.last().map(|(k, _)| *k).unwrap_or(0);
            let mut gone = 0u64;
            // The birth already carried each point's latest update, live: it is not history. A
            // point the configuration no longer has is left out.
            let updates: Vec<Update> = chunk
                .into_iter()
                .filter_map(|(_, b)| {
                    let Some(id) = points.id_of(&b.name) else {
                        gone += 1;
                        return None;
                    };
                    Some(Update {
                        id,
                        flags: b.update.flags | Update::HISTORY,
                        ..b.update
                    })
                })
                .filter(|u| !points.is_latest(u))
                .collect();
            if gone > 0 {
                warn!(
                    updates = gone,
                    "buffered updates of points no longer in the configuration were left out"
                );
            }
            if updates.is_empty() {
                if let Err(e) = self.replay.skipped(b, last) {
                    warn!(error = %e, "cannot trim the buffer");
                    return (seq, false);
                }
                continue;
            }
            seq += 1;
            // Trimmed from the buffer when acknowledged: a link lost mid-replay, or an edge
            // killed, replays it again, and the hub passes on what it had not had yet.
            self.replay.sent(seq, last);
            let sent = l.session.tx.send(Msg::Data(Data { seq, updates })).await;
            return (seq, sent);
        }
    }
}
