//! What this hub has promised to keep, and how far it has kept it: the hub acknowledges a batch
//! to the edge or child hub that sent it only once every keeper holds it, so a hub killed with
//! `kill -9` loses nothing it had acknowledged.
//!
//! A keeper is an upstream link with a spool (it holds a batch once its parent acknowledged it,
//! or once it is in the spool on disk) or a durable subscription (once the batch is in its queue
//! on disk). Every batch the table applies gets the next number of the table's epoch when its
//! hand-over to the subscribers is complete; a keeper that has read the epoch, then
//! drained its subscriber and kept what it drained, holds everything through that epoch.

//!
//! A hub that shuts down drains first: its authorities stop having batches applied, and each
//! gets its last acknowledgement once the keepers hold what it sent; what came later the node
//! keeps for the next hub. A graceful restart so doubles nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

type Marks = Arc<Mutex<Vec<Arc<AtomicU64>>>>;

/// Every keeper of this hub, and the drain before a shutdown.
#[derive(Default)]
pub(crate) struct Keepers {
    marks: Marks,
    draining: CancellationToken,
    /// Authority sessions not drained yet.
    undrained: Arc<AtomicUsize>,
}

/// An authority session's place in the drain; it counts as drained when dropped.
pub(crate) struct Owing {
    undrained: Option<Arc<AtomicUsize>>,
}

impl Owing {
    /// The session has had its last acknowledgement: it takes no more batches.
    pub(crate) fn drained(&mut self) {
        if let Some(u) = self.undrained.take() {
            u.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether the session has drained.
    pub(crate) fn is_drained(&self) -> bool {
        self.undrained.is_none()
    }
}

impl Drop for Owing {
    fn drop(&mut self) {
        self.drained();
    }
}

/// One keeper's mark; it stops counting when dropped.
pub(crate) struct Keeper {
    through: Arc<AtomicU64>,
    marks: Marks,
}

impl Keepers {
    /// A keeper that owes nothing before `epoch` (it did not exist then).
    pub(crate) fn add(&self, epoch: u64) -> Keeper {
        let through = Arc::new(AtomicU64::new(epoch));
        if let Ok(mut m) = self.marks.lock() {
            m.push(through.clone());
        }
        Keeper {
            through,
            marks: self.marks.clone(),
        }
    }

    /// An authority session joins the drain.
    pub(crate) fn owing(&self) -> Owing {
        self.undrained.fetch_add(1, Ordering::AcqRel);
        Owing {
            undrained: Some(self.undrained.clone()),
        }
    }

    /// Fires when the hub starts to shut down.
    pub(crate) fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Starts the drain and waits until every authority session has drained, up to `limit`.
    pub(crate) async fn drain(&self, limit: Duration) {
        self.draining.cancel();
        let deadline = tokio::time::Instant::now() + limit;
        while self.undrained.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every applied batch through this epoch is held by every keeper (all of them with none).
    pub(crate) fn kept_through(&self) -> u64 {
        match self.marks.lock() {
            Ok(m) => m
                .iter()
                .map(|t| t.load(Ordering::Acquire))
                .min()
                .unwrap_or(u64::MAX),
            Err(_) => 0,
        }
    }
}

impl Keeper {
    /// This keeper holds every batch through `epoch`.
    pub(crate) fn kept(&self, epoch: u64) {
        self.through.fetch_max(epoch, Ordering::AcqRel);
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Ok(mut m) = self.marks.lock() {
            m.retain(|t| !Arc::ptr_eq(t, &self.through));
        }
    }
}

/// Batches an authority sent that wait for their acknowledgement: their sequence number and the
/// epoch the table applied them in.
#[derive(Default)]
pub(crate) struct Owed {
    batches: std::collections::VecDeque<(u64, u64)>,
}

/// Batches remembered one by one; past this, the oldest are forgotten (an acknowledgement is
/// cumulative: a later one covers them).
const MAX_OWED: usize = 65_536;

impl Owed {
    /// Batch `seq` was applied in `epoch`.
    pub(crate) fn applied(&mut self, seq: u64, epoch: u64) {
        self.batches.push_back((seq, epoch));
        if self.batches.len() > MAX_OWED {
            self.batches.pop_front();
        }
    }

    /// Whether any batch waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// The latest batch every keeper holds, now acknowledged, if any.
    pub(crate) fn due(&mut self, kept_through: u64) -> Option<u64> {
        let mut seq = None;
        while let Some(&(s, e)) = self.batches.front() {
            if e > kept_through {
                break;
            }
            seq = Some(s);
            self.batches.pop_front();
        }
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_due_once_every_keeper_holds_it() {
        let keepers = Keepers::default();
        assert_eq!(keepers.kept_through(), u64::MAX, "no keeper: all kept");
        let spool = keepers.add(0);
        let durable = keepers.add(0);
        let mut owed = Owed::default();
        owed.applied(7, 1);
        owed.applied(8, 2);
        assert_eq!(owed.due(keepers.kept_through()), None);
        spool.kept(2);
        assert_eq!(owed.due(keepers.kept_through()), None, "one keeper lags");
        durable.kept(1);
        assert_eq!(owed.due(keepers.kept_through()), Some(7));
        drop(durable);
        assert_eq!(
            owed.due(keepers.kept_through()),
            Some(8),
            "a removed keeper owes nothing"
        );
        assert!(owed.is_empty());
        spool.kept(1);
        assert_eq!(keepers.kept_through(), 2, "a mark never goes back");
    }
}
