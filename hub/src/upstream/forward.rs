//! Store-and-forward on the hub → parent hop, as the edge does it on its own hop: what went up is
//! kept until the parent acknowledges it; when the link drops, what was not acknowledged goes to
//! a bounded spool on disk, and so does everything this hub forwards while the parent is out of
//! reach. After the next birth the spool is replayed, oldest first, flagged as history; the parent
//! drops replays it already had live, so nothing is lost and nothing doubled.

use crate::state::Hub;
use pointhub_link::SessionTx;
use pointhub_schemas::{Data, Msg, Update};
use pointhub_spool::{Buffer, BufferError, Unacked};
use std::path::Path;
use tracing::{info, warn};

/// Updates kept for a parent that has not acknowledged them; older ones are let go.
const MAX_UNACKED: usize = 200_000;
/// Updates per replayed batch.
const REPLAY_BATCH: usize = 4096;

pub(super) struct Forward {
    spool: Option<Buffer>,
    unacked: Unacked,
}

impl Forward {
    /// Opens the spool in `dir` (none when `max_bytes` is 0).
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<Forward, BufferError> {
        let spool = if max_bytes == 0 {
            None
        } else {
            Some(Buffer::open(dir, max_bytes)?)
        };
        if let Some(s) = spool.as_ref().filter(|s| !s.is_empty()) {
            info!(
                updates = s.len(),
                "spooled updates from before a restart go up when the parent is reachable"
            );
        }
        Ok(Forward {
            spool,
            unacked: Unacked::new(MAX_UNACKED),
        })
    }

    /// No spool (it could not be opened): unacknowledged batches are still let go in order.
    pub(super) fn none() -> Forward {
        Forward {
            spool: None,
            unacked: Unacked::new(MAX_UNACKED),
        }
    }

    /// Updates in the spool and updates dropped from it, if there is one.
    pub(super) fn counts(&self) -> Option<(u64, u64)> {
        self.spool.as_ref().map(|s| (s.len(), s.dropped))
    }

    /// A batch went up as `seq`: kept until the parent acknowledges it.
    pub(super) fn sent(&mut self, seq: u64, batch: &[Update]) {
        if self.spool.is_none() {
            return;
        }
        self.unacked.sent(seq, batch.to_vec());
    }

    /// The parent acknowledged everything through `seq`.
    pub(super) fn acked(&mut self, seq: u64) {
        self.unacked.acked(seq);
    }

    /// The link dropped: what the parent may not have applied goes to the spool first.
    pub(super) fn lost(&mut self) {
        let pending = self.unacked.take_all();
        self.offline(&pending);
    }

    /// Updates forwarded while the parent is out of reach: into the spool.
    pub(super) fn offline(&mut self, updates: &[Update]) {
        if let Some(s) = self.spool.as_mut() {
            if let Err(e) = s.push(updates) {
                warn!(error = %e, "cannot spool updates for the parent; they are lost");
            }
        }
    }

    /// After the birth: the spool goes up oldest first, flagged as history, leaving out the
    /// updates the birth carried live. Returns the last sequence number used.
    pub(super) async fn replay(&mut self, hub: &Hub, tx: &SessionTx, mut seq: u64) -> u64 {
        let Some(s) = self.spool.as_mut() else {
            return seq;
        };
        if s.is_empty() {
            return seq;
        }
        info!(updates = s.len(), "replaying spooled updates to the parent");
        loop {
            let chunk = match s.peek(REPLAY_BATCH) {
                Ok(c) if !c.is_empty() => c,
                Ok(_) => break,
                Err(e) => {
                    warn!(error = %e, "cannot read the spool");
                    break;
                }
            };
            let last = chunk.last().map(|(k, _)| *k).unwrap_or(0);
            let updates: Vec<Update> = {
                let table = hub.core().table_read();
                chunk
                    .into_iter()
                    .map(|(_, u)| u)
                    .filter(|u| {
                        table
                            .points
                            .get(u.id as usize)
                            .is_none_or(|p| p.source_ts != u.source_ts)
                    })
                    .map(|u| Update {
                        flags: u.flags | Update::HISTORY,
                        ..u
                    })
                    .collect()
            };
            if !updates.is_empty() {
                seq += 1;
                if !tx.send(Msg::Data(Data { seq, updates })).await {
                    break;
                }
            }
            if let Err(e) = s.remove_through(last) {
                warn!(error = %e, "cannot trim the spool");
                break;
            }
        }
        info!(left = s.len(), "spool replay done");
        seq
    }
}
