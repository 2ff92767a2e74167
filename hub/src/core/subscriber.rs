//! A subscriber: what it asked for and may see, and its conflating queue.

use super::gids::GidSet;
use pointhub_schemas::Update;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// A queued update for one subscriber: the update as it goes on the wire, its id the point's
/// global id, so that a drained queue becomes a data frame without a copy.
pub(crate) type Entry = Update;

pub(crate) fn is_history(e: &Entry) -> bool {
    e.flags & Update::HISTORY != 0
}

#[derive(Default)]
pub struct Pending {
    pub entries: Vec<Entry>,
    pub(crate) last: rustc_hash::FxHashMap<u32, u32>,
    /// Snapshots completed since the last drain (point counts), sent after the entries.
    pub snapshots_done: Vec<u32>,
    pub overflow: bool,
    /// Updates turned away since the queue overflowed.
    pub(crate) turned_away: u64,
}

/// What a subscriber has asked for and what it may see.
pub struct SubState {
    pub patterns: Vec<pointhub_schemas::Pattern>,
    pub member: GidSet,
}

/// Updates replaced in a queue by a newer one, over all subscribers, since start.
pub(crate) static CONFLATED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// A client session's subscription and its conflating queue.
pub struct Subscriber {
    pub id: u64,
    /// Also send history replays.
    pub history: std::sync::atomic::AtomicBool,
    /// What the node may read at all.
    pub grant: Vec<pointhub_schemas::Pattern>,
    pub state: Mutex<SubState>,
    pub(crate) queue: Mutex<Pending>,
    pub notify: Notify,
    pub(crate) limit: usize,
    pub conflated: AtomicU64,
}

impl Subscriber {
    pub fn new(
        id: u64,
        history: bool,
        grant: Vec<pointhub_schemas::Pattern>,
        limit: usize,
    ) -> Subscriber {
        Subscriber {
            id,
            history: history.into(),
            grant,
            state: Mutex::new(SubState {
                patterns: Vec::new(),
                member: GidSet::default(),
            }),
            queue: Mutex::new(Pending::default()),
            notify: Notify::new(),
            limit,
            conflated: AtomicU64::new(0),
        }
    }

    pub(crate) fn wants(&self, state: &SubState, name: &str) -> bool {
        self.grant.iter().any(|g| g.matches(name)) && state.patterns.iter().any(|p| p.matches(name))
    }

    /// Queues an update; conflates with a queued update of the same point and quality.
    pub fn push(&self, e: Entry) {
        self.push_many(std::iter::once(e));
    }

    /// Queues updates under one lock, then wakes the writer once.
    pub fn push_many(&self, entries: impl IntoIterator<Item = Entry>) {
        let history_ok = self.history.load(Ordering::Relaxed);
        {
            let Ok(mut q) = self.queue.lock() else { return };
            let mut conflated = 0u64;
            for e in entries {
                if q.overflow {
                    // The session is being cut off (a keeper recovers): memory stays flat
                    // meanwhile, and what is turned away is counted.
                    q.turned_away += 1;
                    continue;
                }
                let history = is_history(&e);
                if history && !history_ok {
                    continue;
                }
                // A subscriber that takes history (a historian, a store-and-forward link to a
                // parent hub) is owed every value: only the others get the latest of each point.
                if !history && !history_ok {
                    if let Some(&i) = q.last.get(&e.id) {
                        let prev = &mut q.entries[i as usize];
                        if prev.quality == e.quality && !is_history(prev) {
                            *prev = e;
                            conflated += 1;
                            continue;
                        }
                    }
                    let i = q.entries.len() as u32;
                    q.last.insert(e.id, i);
                }
                q.entries.push(e);
                // One entry per point is the conflated floor; the limit bounds what a lagging
                // writer piles up beyond it (quality changes, history replays).
                if q.entries.len() - q.last.len() > self.limit {
                    q.overflow = true;
                }
            }
            if conflated > 0 {
                self.conflated.fetch_add(conflated, Ordering::Relaxed);
                CONFLATED_TOTAL.fetch_add(conflated, Ordering::Relaxed);
            }
        }
        self.notify.notify_one();
    }

    pub(crate) fn push_done(&self, points: u32) {
        if let Ok(mut q) = self.queue.lock() {
            q.snapshots_done.push(points);
        }
        self.notify.notify_one();
    }

    /// Takes the subscriber out of overflow; returns how many updates it turned away since.
    pub(crate) fn recover(&self) -> u64 {
        match self.queue.lock() {
            Ok(mut q) => {
                q.overflow = false;
                std::mem::take(&mut q.turned_away)
            }
            Err(_) => 0,
        }
    }

    /// Updates queued now.
    pub fn queue_len(&self) -> usize {
        self.queue.lock().map(|q| q.entries.len()).unwrap_or(0)
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Pending {
        match self.queue.lock() {
            Ok(mut q) => {
                // The conflation index keeps its allocation for the next round, unless a big
                // snapshot or backlog grew it: that memory goes back. A few entries leave it
                // one by one: clearing writes over its whole capacity (16 KiB after a
                // 10,000-point snapshot, 1 % of the hub's CPU at 10,000 one-update frames/s),
                // which costs about as much as removing one entry per 512 slots.
                let entries = std::mem::take(&mut q.entries);
                if q.last.capacity() > 1 << 16 {
                    q.last = Default::default();
                } else if entries.len() * 512 < q.last.capacity() {
                    for e in &entries {
                        q.last.remove(&e.id);
                    }
                } else {
                    q.last.clear();
                }
                Pending {
                    entries,
                    last: Default::default(),
                    snapshots_done: std::mem::take(&mut q.snapshots_done),
                    overflow: q.overflow,
                    turned_away: 0,
                }
            }
            Err(_) => Pending {
                overflow: true,
                ..Pending::default()
            },
        }
    }
}
