//! Store-and-forward on the hub → parent hop, as the edge does it on its own hop: what went up is
//! kept until the parent acknowledges it; when the link drops, what was not acknowledged goes to
//! a bounded spool on disk, and so does everything this hub forwards while the parent is out of
//! reach. After the next birth the spool is replayed, oldest first, flagged as history; the parent
//! drops replays it already had live, so nothing is lost and nothing doubled.
//!
//! The spool names each update's point: a point's number in this hub's table is only good for
//! the life of the process, and a hub restarted during an outage numbers its points afresh.

use super::up::{Replay, Up};
use crate::delivery::{definitions, Delivery};
use crate::keep::Keeper;
use crate::named::{name_all, Named};
use crate::state::Hub;
use pointhub_schemas::{Birth, Data, Msg, Timestamp, Update};
use pointhub_spool::{Buffer, BufferError, Replay as SpoolReplay, Unacked};
use std::collections::VecDeque;
use std::path::Path;
use tracing::{info, warn};

/// Updates kept in memory for a parent that has not acknowledged them; older ones go to the
/// spool.
const MAX_UNACKED: usize = 200_000;
/// Updates per replayed batch.
const REPLAY_BATCH: usize = 4096;

pub(crate) struct Forward {
    spool: Option<Buffer<Named>>,
    /// Live batches the parent has not acknowledged yet.
    unacked: Unacked,
    /// The replay on the current link: replayed batches leave the spool when acknowledged.
    replayed: SpoolReplay,
    /// This link's mark among the hub's keepers (with a spool only): a batch from below is
    /// acknowledged once it is in the spool or the parent acknowledged it.
    keeper: Option<Keeper>,
    /// Live batches up to a sequence number hold what was drained up to an epoch; held once the
    /// parent acknowledges the batch.
    marks: VecDeque<(u64, u64)>,
    /// The parent's latest acknowledgement on this link.
    acked_seq: u64,
    /// Updates lost before they reached the spool (the table's queue for this link overflowed).
    overflowed: u64,
}

impl Forward {
    /// Opens the spool in `dir` (none when `max_bytes` is 0).
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Forward, BufferError> {
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
            replayed: SpoolReplay::new(),
            keeper: None,
            marks: VecDeque::new(),
            acked_seq: 0,
            overflowed: 0,
        })
    }

    /// With a spool, this link counts among the keepers of `hub` from now on.
    pub(super) fn keep_for(&mut self, hub: &Hub) {
        if self.spool.is_some() {
            self.keeper = Some(hub.keepers().add(hub.core().epoch()));
        }
    }

    /// What was drained through `epoch` is in the spool (or there was nothing).
    pub(super) fn kept(&self, epoch: u64) {
        if let Some(k) = &self.keeper {
            k.kept(epoch);
        }
    }

    /// What was drained through `epoch` went up in batches through `seq`: held once the parent
    /// acknowledges `seq`.
    pub(super) fn up_through(&mut self, seq: u64, epoch: u64) {
        if self.keeper.is_none() {
            return;
        }
        if seq <= self.acked_seq {
            self.kept(epoch);
            return;
        }
        match self.marks.back_mut() {
            Some((s, e)) if *s == seq => *e = epoch,
            _ => self.marks.push_back((seq, epoch)),
        }
    }

    /// Updates in the spool and updates dropped from it or before it, if there is one.
    pub(super) fn counts(&self) -> Option<(u64, u64)> {
        self.spool
            .as_ref()
            .map(|s| (s.len(), s.dropped + self.overflowed))
    }

    /// `n` updates never reached this link: its queue in the table overflowed (the hub took in
    /// more than the spool could write for a while).
    pub(super) fn lost_to_overflow(&mut self, n: u64) {
        if n > 0 {
            self.overflowed += n;
            warn!(updates = n, "upstream queue overflowed: updates lost before the spool (counted in buffer/dropped)");
        }
    }

    /// A batch went up as `seq`: kept until the parent acknowledges it.
    pub(super) fn sent(&mut self, hub: &Hub, seq: u64, batch: &[Update]) {
        if self.spool.is_none() {
            return;
        }
        // Past its bound (a parent slow to acknowledge) the oldest go to the spool: replayed
        // after the next birth, and dropped by the parent if it had them. What they held from
        // below is held now.
        if let Some((through, spilled)) = self.unacked.sent(seq, batch.to_vec()) {
            self.offline(hub, &spilled);
            self.held_through(through);
        }
    }

    /// What went up in batches through `seq` is held (acknowledged, or in the spool).
    fn held_through(&mut self, seq: u64) {
        let mut held = None;
        while let Some(&(s, e)) = self.marks.front() {
            if s > seq {
                break;
            }
            held = Some(e);
            self.marks.pop_front();
        }
        if let Some(e) = held {
            self.kept(e);
        }
    }

    /// The parent acknowledged everything through `seq`.
    pub(super) fn acked(&mut self, seq: u64) {
        self.unacked.acked(seq);
        self.acked_seq = self.acked_seq.max(seq);
        self.held_through(seq);
        if let Some(s) = self.spool.as_mut() {
            if let Err(e) = self.replayed.acked(s, seq) {
                warn!(error = %e, "cannot trim the spool");
            }
        }
    }

    /// The link dropped: what the parent may not have applied goes to the spool first.
    pub(super) fn lost(&mut self, hub: &Hub) {
        // Replayed batches not acknowledged are still in the spool: the next link replays them.
        self.replayed = SpoolReplay::new();
        self.spool_unacked(hub);
        self.acked_seq = 0;
    }

    /// What the parent has not acknowledged goes to the spool now, and so counts as held (the
    /// parent drops what it had already when the spool replays).
    pub(super) fn spool_unacked(&mut self, hub: &Hub) {
        let pending = self.unacked.take_all();
        self.offline(hub, &pending);
        if let Some(&(_, e)) = self.marks.back() {
            self.kept(e);
        }
        self.marks.clear();
    }

    /// Updates forwarded while the parent is out of reach: into the spool, by point name.
    pub(super) fn offline(&mut self, hub: &Hub, updates: &[Update]) {
        let Some(s) = self.spool.as_mut() else {
            return;
        };
        if updates.is_empty() {
            return;
        }
        let named = name_all(&hub.core().table_read(), updates);
        // In order of source time: a lower hop's replay that arrives after its birth value
        // goes up before it, and a value that came twice (a lower hop that did not see this
        // hub's acknowledgement before a crash sends it again) lies next to its twin.
        if let Err(e) = s.push_in_time(named.iter().map(|n| (n.update.source_ts.0, n))) {
            warn!(error = %e, "cannot spool updates for the parent; they are lost");
        }
    }

    /// After the birth: the replay of the spool starts, if it holds anything.
    pub(super) fn start_replay(&mut self, up: &mut Up) {
        let first_live = std::mem::take(&mut up.first_live);
        self.replayed = SpoolReplay::new();
        let Some(s) = self.spool.as_ref().filter(|s| !s.is_empty()) else {
            return;
        };
        info!(updates = s.len(), "replaying spooled updates to the parent");
        up.replay = Some(Replay {
            first_live,
            sent: Default::default(),
            gone: 0,
            twins: 0,
        });
    }

    /// The next batch of the spool goes up, oldest first, flagged as history, leaving out what
    /// went up live on this link already (a point's birth value is the last it spooled). A
    /// spooled point the parent has not had defined on this link is defined first; one this hub
    /// no longer has is left out. One batch at a time, so live batches go up between them.
    pub(super) async fn replay_step(&mut self, hub: &Hub, up: &mut Up, delivery: &mut Delivery) {
        let done = self.replay_batch(hub, up, delivery).await;
        if done {
            if let Some(r) = up.replay.take() {
                if r.twins > 0 {
                    info!(
                        updates = r.twins,
                        "spooled twins (the same point and source time) went up once"
                    );
                }
                if r.gone > 0 {
                    warn!(
                        updates = r.gone,
                        "spooled updates of points this hub no longer has were left out"
                    );
                }
            }
            info!(
                left = self.counts().map_or(0, |c| c.0),
                "spool replay sent; it leaves the spool as the parent acknowledges it"
            );
        }
    }

    /// Sends one batch; `true` when the replay is over (or cannot go on).
    async fn replay_batch(&mut self, hub: &Hub, up: &mut Up, delivery: &mut Delivery) -> bool {
        let (Some(s), Some(r)) = (self.spool.as_mut(), up.replay.as_mut()) else {
            return true;
        };
        let chunk = match self.replayed.next(s, REPLAY_BATCH) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return true,
            Err(e) => {
                warn!(error = %e, "cannot read the spool");
                return true;
            }
        };
        let last = chunk.last().map(|(k, _)| *k).unwrap_or(0);
        let updates: Vec<Update> = {
            let table = hub.core().table_read();
            chunk
                .into_iter()
                .filter_map(|(_, sp)| {
                    let Some(gid) = table.gid(&sp.name) else {
                        r.gone += 1;
                        return None;
                    };
                    // Sent live on this link already (the birth's value) or after it. A birth
                    // value gone stale here (its edge is away) is not the good value spooled
                    // at the same time: that one still goes up. History from below never went
                    // up live (it joins the spool during a replay): it goes, and the parent
                    // drops what it had.
                    let history = sp.update.flags & Update::HISTORY != 0;
                    if !history
                        && r.first_live.get(&gid).is_some_and(|&(t, q)| {
                            sp.update.source_ts > t
                                || (sp.update.source_ts == t && sp.update.quality == q)
                        })
                    {
                        return None;
                    }
                    // The same point and time again: a twin, sent once.
                    let last = r.sent.entry(gid).or_insert(Timestamp::NEVER);
                    if *last != Timestamp::NEVER && sp.update.source_ts <= *last {
                        r.twins += 1;
                        return None;
                    }
                    *last = sp.update.source_ts;
                    Some(Update {
                        id: gid,
                        flags: sp.update.flags | Update::HISTORY,
                        ..sp.update
                    })
                })
                .collect()
        };
        let tx = up.link.session.tx.clone();
        let new = delivery.define(updates.iter().map(|u| u.id));
        if !new.is_empty() {
            up.seq += 1;
            let points = definitions(hub, &new);
            tx.send(Msg::Birth(Birth {
                seq: up.seq,
                part: up.part,
                last: true,
                points,
                states: Vec::new(),
            }))
            .await;
            up.part += 1;
        }
        if updates.is_empty() {
            if let Err(e) = self.replayed.skipped(s, last) {
                warn!(error = %e, "cannot trim the spool");
                return true;
            }
            return false;
        }
        up.seq += 1;
        // Trimmed from the spool when acknowledged: a link lost mid-replay, or this hub killed,
        // replays it again, and the parent passes on what it had not had yet.
        self.replayed.sent(up.seq, last);
        !tx.send(Msg::Data(Data {
            seq: up.seq,
            updates,
        }))
        .await
    }
}
