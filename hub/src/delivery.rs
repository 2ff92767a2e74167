//! One delivery step for every subscriber, whatever it speaks.
//!
//! A binary client session, a JSON WebSocket session and an upstream link each drain a
//! subscriber's conflating queue. What a drain means is the same for all three and is done here:
//! a subscriber that fell past its queue limit is cut off (a keeper goes on, counting what it
//! lost); updates it may not see are dropped;
//! the points it has not had defined yet are picked out; the updates handed on are counted. The
//! renderers only turn a [`Batch`] into their frames: `Define` and `Data` (binary), JSON records
//! (the API), `Birth` parts and `Data` (a parent hub).

use crate::core::{GidSet, PointEntry, Subscriber, Table};
use crate::state::Hub;
use pointhub_schemas::{PointDef, Update};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Which updates a renderer may hand on.
type Keep = Box<dyn Fn(&Table, &PointEntry) -> bool + Send + Sync>;

/// What one drain gives a renderer.
pub(crate) enum Step {
    /// The subscriber fell more than its queue limit behind: cut it off (it reconnects for a
    /// fresh snapshot).
    Overflow,
    /// What to send, in this order.
    Send(Batch),
}

/// Changes to send, in order: new points' definitions, the updates, the snapshots completed.
pub(crate) struct Batch {
    /// Global ids of points this subscriber has not had defined yet, in order of first update.
    pub(crate) new: Vec<u32>,
    /// The updates, each with the point's global id.
    pub(crate) updates: Vec<Update>,
    /// Snapshots completed since the last drain: the number of points each covered.
    pub(crate) snapshots_done: Vec<u32>,
}

/// A subscriber's delivery state.
pub(crate) struct Delivery {
    sub: Arc<Subscriber>,
    /// Points defined to the peer so far; `None` when the renderer names points itself.
    defined: Option<GidSet>,
    keep: Option<Keep>,
    /// A keeper (an upstream spool, a durable queue) is never cut off: past its queue limit it
    /// goes on with what was queued, and counts here what it turned away meanwhile.
    keeper: Option<u64>,
}

impl Delivery {
    /// Delivery for a peer that is told each point's definition before its first update.
    pub(crate) fn new(sub: Arc<Subscriber>) -> Delivery {
        Delivery {
            sub,
            defined: Some(GidSet::default()),
            keep: None,
            keeper: None,
        }
    }

    /// For a keeper of every update: an overflow is recovered from, not cut off; the updates
    /// lost to it are counted ([`Delivery::take_lost`]).
    pub(crate) fn recovering(mut self) -> Delivery {
        self.keeper = Some(0);
        self
    }

    /// Updates a keeper lost to overflows since the last call.
    pub(crate) fn take_lost(&mut self) -> u64 {
        self.keeper.as_mut().map_or(0, std::mem::take)
    }

    /// For a renderer that names each point in every update (JSON): no definitions.
    pub(crate) fn without_definitions(mut self) -> Delivery {
        self.defined = None;
        self
    }

    /// Hands on only the updates of points `keep` accepts.
    pub(crate) fn keeping(
        mut self,
        keep: impl Fn(&Table, &PointEntry) -> bool + Send + Sync + 'static,
    ) -> Delivery {
        self.keep = Some(Box::new(keep));
        self
    }

    /// Resolves when the subscriber's queue has something.
    pub(crate) async fn ready(&self) {
        self.sub.notify.notified().await
    }

    /// The peer asked for a fresh start: every point is defined again.
    pub(crate) fn forget_definitions(&mut self) {
        if let Some(d) = self.defined.as_mut() {
            *d = GidSet::default();
        }
    }

    /// Marks `gids` defined to the peer; returns those that were not yet, in order.
    pub(crate) fn define(&mut self, gids: impl IntoIterator<Item = u32>) -> Vec<u32> {
        match self.defined.as_mut() {
            Some(d) => gids.into_iter().filter(|g| d.insert(*g)).collect(),
            None => Vec::new(),
        }
    }

    /// Takes what the queue holds now.
    pub(crate) fn take(&mut self, hub: &Hub) -> Step {
        let pending = self.sub.drain();
        if pending.overflow {
            match self.keeper.as_mut() {
                Some(lost) => *lost += self.sub.recover(),
                None => return Step::Overflow,
            }
        }
        let mut updates = pending.entries;
        if let Some(keep) = &self.keep {
            let table = hub.core().table_read();
            updates.retain(|e| {
                table
                    .points
                    .get(e.id as usize)
                    .is_some_and(|pt| keep(&table, pt))
            });
        }
        let new = match self.defined.as_mut() {
            Some(d) => updates
                .iter()
                .map(|e| e.id)
                .filter(|g| d.insert(*g))
                .collect(),
            None => Vec::new(),
        };
        hub.stats()
            .updates_out
            .fetch_add(updates.len() as u64, Ordering::Relaxed);
        Step::Send(Batch {
            new,
            updates,
            snapshots_done: pending.snapshots_done,
        })
    }
}

/// The definitions of `gids`, built under one short read lock of the table.
pub(crate) fn definitions(hub: &Hub, gids: &[u32]) -> Vec<PointDef> {
    let table = hub.core().table_read();
    gids.iter()
        .filter_map(|&g| table.points.get(g as usize).map(|p| p.def(&table, g)))
        .collect()
}
