//! The hub's core: the point table, subscribers with conflating queues, and authority.
//!
//! Sessions call into the core directly, each in its own task: an edge's reader applies its
//! batch to the table and appends it to the queue of every subscriber of each point, under
//! short critical sections (the table lock, then one subscriber's queue lock, never across an
//! `.await`). The publisher therefore does its own fan-out on its own core, and nothing ever waits
//! on a subscriber: a subscriber's writer task drains its queue when its socket can take more.
//!
//! A subscriber's queue conflates: while the writer is behind, a newer update of a point replaces
//! the queued one, unless the quality differs — a quality change is never dropped. The queue
//! holds at most one entry per point and quality change, and a subscriber whose queue passes its
//! limit anyway is cut off (`SlowConsumer`) and may reconnect for a fresh snapshot.

use gaps::Gaps;
use pointhub_schemas::{DataType, PointDef, Quality, Timestamp, Update, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

mod fanout;
mod gaps;
mod gids;
mod sets;
mod subscriber;
mod table;

pub(crate) use fanout::*;
pub(crate) use gids::*;
pub(crate) use sets::*;
pub(crate) use subscriber::*;
pub(crate) use table::*;

/// The shared state of a hub.
pub(crate) struct Core {
    pub table: RwLock<Table>,
    subs: Mutex<HashMap<u64, Arc<Subscriber>>>,
    next_id: AtomicU64,
    pub updates_in: AtomicU64,
    /// Batches applied (see [`crate::keep`]): a batch's number is counted once every
    /// subscriber has it queued.
    epoch: AtomicU64,
    pub max_points_per_node: usize,
}

/// Most patterns one subscriber holds at once, over all its subscribes.
pub(crate) const MAX_PATTERNS: usize = 256;

/// Points matched per hold of the table lock while an unsubscribe scans.
pub(crate) const SCAN_SLICE: usize = 16_384;
/// Name-against-pattern matches per hold of the table lock while a subscribe scans: a slice
/// holds the lock for well under a millisecond however many patterns a subscribe brings.
const SCAN_WORK: usize = 65_536;

/// Why a subscribe was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscribeError {
    #[error("a session may hold at most {max} patterns (this subscribe would make {total}): use fewer, wider patterns (`plant1/**`), or unsubscribe some first")]
    TooManyPatterns { total: usize, max: usize },
}

/// Why a birth was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BirthError {
    #[error("point {name:?} lies outside this node's namespace {namespace:?}")]
    Namespace { name: String, namespace: String },
    #[error("point {name:?} is already published by {owner:?}, which is connected")]
    Conflict { name: String, owner: String },
    #[error("this node may publish at most {0} points")]
    TooMany(usize),
}

impl Core {
    pub(crate) fn new(max_points_per_node: usize) -> Core {
        Core {
            table: RwLock::new(Table::default()),
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            updates_in: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            max_points_per_node,
        }
    }

    /// The number of the last batch applied: a subscriber drained after reading it holds every
    /// update of that batch and of those before.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn table_write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn table_read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn all_subs(&self) -> Vec<Arc<Subscriber>> {
        self.subs
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn point_count(&self) -> usize {
        self.table_read().points.len()
    }

    /// Defines (or takes over) points for `owner`, and returns their global ids in order.
    /// `allowed` says whether the owner may publish a name.
    pub(crate) fn define(
        &self,
        owner: &Arc<str>,
        session: u64,
        defs: &[PointDef],
        owned_already: usize,
        allowed: impl Fn(&str) -> bool,
        namespace: &str,
    ) -> Result<Vec<u32>, BirthError> {
        let table = &mut *self.table_write();
        let owner_id = table.owner_id(owner);
        let mut gids = Vec::with_capacity(defs.len());
        let mut new_gids = Vec::new();
        for d in defs {
            if !allowed(&d.name) {
                return Err(BirthError::Namespace {
                    name: d.name.clone(),
                    namespace: namespace.to_string(),
                });
            }
            let gid = match table.gid(&d.name) {
                Some(gid) => {
                    let p = &table.points[gid as usize];
                    if p.owner != owner_id && p.owner_session != NO_SESSION {
                        return Err(BirthError::Conflict {
                            name: d.name.clone(),
                            owner: table.owner(p).to_string(),
                        });
                    }
                    let p = &mut table.points[gid as usize];
                    if p.owner_session != NO_SESSION && p.owner_session != session {
                        // The node's older session has not ended here yet (a half-open link it
                        // gave up on): this takeover is its end. What it sent and the hub
                        // never had comes again as history, and must fill a gap.
                        p.gaps.lost(p.source_ts);
                    }
                    p.owner = owner_id;
                    p.owner_session = session;
                    p.dtype = d.dtype;
                    p.meta = meta(&d.unit, &d.description);
                    p.writable = d.writable;
                    p.mark_dirty(gid, &mut table.dirty);
                    gid
                }
                None => {
                    if owned_already + new_gids.len() >= self.max_points_per_node {
                        return Err(BirthError::TooMany(self.max_points_per_node));
                    }
                    let gid = table.points.len() as u32;
                    let Some(name) = table.add_name(&d.name) else {
                        return Err(BirthError::TooMany(table.points.len()));
                    };
                    table.points.push(PointEntry {
                        name,
                        dtype: d.dtype,
                        meta: meta(&d.unit, &d.description),
                        writable: d.writable,
                        owner: owner_id,
                        owner_session: session,
                        value: Value::Null,
                        quality: Quality::BadWaitingForInitialData,
                        source_ts: Timestamp::NEVER,
                        hub_ts: Timestamp::now(),
                        subs: SubSet::default(),
                        dirty: true,
                        gaps: Gaps::new(),
                    });
                    table.dirty.push(gid);
                    table.index(gid);
                    new_gids.push(gid);
                    gid
                }
            };
            gids.push(gid);
        }
        if !new_gids.is_empty() {
            let mut changes = SetChanges::default();
            for sub in self.all_subs() {
                let Ok(mut st) = sub.state.lock() else {
                    continue;
                };
                for &gid in &new_gids {
                    let p = &mut table.points[gid as usize];
                    if sub.wants(&st, name_in(&table.names, p)) && st.member.insert(gid) {
                        p.subs = changes.with(&p.subs, &sub);
                    }
                }
            }
        }
        Ok(gids)
    }

    /// Applies updates `(gid, update)` of the hub's own and fans them out; returns the batch's
    /// number (its epoch).
    pub(crate) fn apply(&self, updates: impl Iterator<Item = (u32, Update)>) -> u64 {
        self.apply_as(None, updates)
    }

    /// Applies a batch from the authority session `session`: updates of points another
    /// session has taken over since (frames of a replaced session, read before it ended) are
    /// left out. Returns the batch's number (its epoch).
    pub(crate) fn apply_from(
        &self,
        session: u64,
        updates: impl Iterator<Item = (u32, Update)>,
    ) -> u64 {
        self.apply_as(Some(session), updates)
    }

    /// Updates are collected per subscriber and handed over in runs of [`FANOUT_RUN`], one
    /// queue lock and one wake-up per run: the subscriber's writer starts on the first run
    /// while the rest of a big batch is still being applied.
    fn apply_as(&self, session: Option<u64>, updates: impl Iterator<Item = (u32, Update)>) -> u64 {
        let now = Timestamp::now();
        let table = &mut *self.table_write();
        let Table { points, dirty, .. } = table;
        let mut n = 0u64;
        let mut out = Fanout::new(FANOUT_RUN);
        for (gid, u) in updates {
            let Some(p) = points.get_mut(gid as usize) else {
                continue;
            };
            if session.is_some_and(|s| s != p.owner_session) {
                continue;
            }
            n += 1;
            if u.flags & Update::HISTORY == 0 {
                p.value = u.value;
                p.quality = u.quality;
                p.source_ts = u.source_ts;
                // A hop below lost the authority (a child hub forwards the point gone stale):
                // what comes later as history fills that gap too.
                if matches!(
                    u.quality,
                    Quality::UncertainNoCommunicationLastUsableValue | Quality::BadNoCommunication
                ) {
                    p.gaps.lost(u.source_ts);
                } else {
                    p.gaps.live(u.source_ts);
                }
                p.hub_ts = now;
                p.mark_dirty(gid, dirty);
                if p.subs.is_empty() {
                    continue;
                }
                let e = p.entry(gid);
                out.add_set(&p.subs, e);
            } else {
                if !p.gaps.take(u.source_ts) {
                    continue; // delivered live, or replayed already
                }
                let e = Update {
                    id: gid,
                    value: u.value,
                    quality: u.quality,
                    source_ts: u.source_ts,
                    hub_ts: now,
                    flags: Update::HISTORY,
                };
                for s in p.subs.iter().filter(|s| s.history.load(Ordering::Relaxed)) {
                    out.add(s, e.clone());
                }
            }
        }
        out.finish();
        self.updates_in.fetch_add(n, Ordering::Relaxed);
        // Still under the table's lock: batches are numbered in the order they were handed over.
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The authority of `gids` is gone: every one turns stale, in one pass, to every subscriber.
    pub(crate) fn authority_lost(&self, session: u64, gids: &[u32]) {
        let now = Timestamp::now();
        let table = &mut *self.table_write();
        let Table { points, dirty, .. } = table;
        // Every subscriber learns of the whole loss in one hand-over.
        let mut out = Fanout::new(usize::MAX);
        for &gid in gids {
            let Some(p) = points.get_mut(gid as usize) else {
                continue;
            };
            if p.owner_session != session {
                continue; // someone else took it over meanwhile
            }
            p.owner_session = NO_SESSION;
            p.gaps.lost(p.source_ts);
            let q = Quality::stale_from(p.quality, !p.value.is_null());
            if q == p.quality {
                continue;
            }
            p.quality = q;
            p.hub_ts = now;
            p.mark_dirty(gid, dirty);
            let e = p.entry(gid);
            out.add_set(&p.subs, e);
        }
        out.finish();
    }

    /// How many points changed since they were last saved.
    pub(crate) fn dirty_len(&self) -> usize {
        self.table_read().dirty.len()
    }

    /// Takes up to `max` of the points changed since the last call, for the store. The table
    /// lock is held for cheap copies of the changed points only; the records are built after it
    /// is released.
    pub(crate) fn take_dirty(&self, max: usize) -> Vec<SavedPoint> {
        struct Changed {
            /// Where the name is in `names` below: one buffer, not an allocation per point,
            /// while the table lock is held.
            name: (usize, usize),
            owner: Arc<str>,
            dtype: DataType,
            meta: Option<(Option<String>, Option<String>)>,
            writable: bool,
            value: Value,
            quality: Quality,
            source_ts: Timestamp,
            hub_ts: Timestamp,
        }
        let mut names = String::new();
        let changed: Vec<Changed> = {
            let table = &mut *self.table_write();
            let keep = table.dirty.len().saturating_sub(max);
            let list = table.dirty.split_off(keep);
            list.iter()
                .filter_map(|&gid| {
                    table.points.get_mut(gid as usize)?.dirty = false;
                    let p = &table.points[gid as usize];
                    let name = table.name(p);
                    names.push_str(name);
                    Some(Changed {
                        name: (names.len() - name.len(), name.len()),
                        owner: table.owner(p).clone(),
                        dtype: p.dtype,
                        meta: p
                            .meta
                            .as_ref()
                            .map(|m| (m.unit.clone(), m.description.clone())),
                        writable: p.writable,
                        value: p.value.clone(),
                        quality: p.quality,
                        source_ts: p.source_ts,
                        hub_ts: p.hub_ts,
                    })
                })
                .collect()
        };
        changed
            .into_iter()
            .map(|c| {
                let (unit, description) = c.meta.unwrap_or_default();
                SavedPoint {
                    name: names
                        .get(c.name.0..c.name.0 + c.name.1)
                        .unwrap_or_default()
                        .to_string(),
                    dtype: c.dtype,
                    unit,
                    description,
                    writable: c.writable,
                    owner: c.owner.to_string(),
                    value: c.value,
                    quality: c.quality,
                    source_ts: c.source_ts,
                    hub_ts: c.hub_ts,
                }
            })
            .collect()
    }

    /// Loads points saved before a restart. Their authorities are not connected yet, so each
    /// turns stale: the last value stays, its quality says it is not live.
    pub(crate) fn restore(&self, saved: Vec<SavedPoint>) {
        let table = &mut *self.table_write();
        for s in saved {
            if table.gid(&s.name).is_some() {
                continue;
            }
            let gid = table.points.len() as u32;
            let Some(name) = table.add_name(&s.name) else {
                continue;
            };
            let owner = table.owner_id(&s.owner.as_str().into());
            let quality = Quality::stale_from(s.quality, !s.value.is_null());
            table.points.push(PointEntry {
                name,
                dtype: s.dtype,
                meta: meta(&s.unit, &s.description),
                writable: s.writable,
                owner,
                owner_session: NO_SESSION,
                value: s.value,
                quality,
                source_ts: s.source_ts,
                hub_ts: s.hub_ts,
                subs: SubSet::default(),
                dirty: quality != s.quality,
                // This process has passed on none of its history: what the authority sends
                // again after the restart is what this hub had not acknowledged (not kept
                // for its parent and durable subscriptions), and goes on; a hop above drops
                // what it had had.
                gaps: Gaps::since(Timestamp::NEVER),
            });
            if quality != s.quality {
                table.dirty.push(gid);
            }
            table.index(gid);
        }
    }

    /// Registers a subscriber.
    pub(crate) fn add_subscriber(&self, sub: Arc<Subscriber>) {
        if let Ok(mut s) = self.subs.lock() {
            s.insert(sub.id, sub);
        }
    }

    /// Adds patterns to a subscription and queues a snapshot of every point they cover.
    ///
    /// A subscriber holds at most [`MAX_PATTERNS`] patterns over all its subscribes (a pattern
    /// it holds already is not added twice). The table is scanned against the new patterns
    /// only, `SCAN_WORK` matches per hold of its lock, so a subscribe on a big table never
    /// holds up the authorities' batches for more than a slice. Points defined meanwhile are
    /// matched by [`Core::define`], which sees the patterns from the first slice on.
    pub(crate) fn subscribe(
        &self,
        sub: &Arc<Subscriber>,
        patterns: Vec<pointhub_schemas::Pattern>,
    ) -> Result<(), SubscribeError> {
        self.subscribe_with(sub, patterns, true)
    }

    /// Adds patterns without a snapshot: the subscriber sees what changes from now on (an
    /// upstream link's spool, whose birth carries the current values when it connects).
    pub(crate) fn subscribe_from_now(
        &self,
        sub: &Arc<Subscriber>,
        patterns: Vec<pointhub_schemas::Pattern>,
    ) -> Result<(), SubscribeError> {
        self.subscribe_with(sub, patterns, false)
    }

    fn subscribe_with(
        &self,
        sub: &Arc<Subscriber>,
        patterns: Vec<pointhub_schemas::Pattern>,
        with_snapshot: bool,
    ) -> Result<(), SubscribeError> {
        {
            // The patterns go in under the table lock, as `define` reads them under it.
            let _table = self.table_write();
            let Ok(mut st) = sub.state.lock() else {
                return Ok(());
            };
            let fresh: Vec<&pointhub_schemas::Pattern> = patterns
                .iter()
                .filter(|p| !st.patterns.iter().any(|q| q.as_str() == p.as_str()))
                .collect();
            let total = st.patterns.len() + fresh.len();
            if total > MAX_PATTERNS {
                return Err(SubscribeError::TooManyPatterns {
                    total,
                    max: MAX_PATTERNS,
                });
            }
            let fresh: Vec<pointhub_schemas::Pattern> = fresh.into_iter().cloned().collect();
            st.patterns.extend(fresh);
        }
        let covers = |name: &str| {
            sub.grant.iter().any(|g| g.matches(name)) && patterns.iter().any(|p| p.matches(name))
        };
        let slice = (SCAN_WORK / (patterns.len() + sub.grant.len()).max(1)).max(64);
        let mut from = 0usize;
        let mut total = 0u32;
        loop {
            let mut snapshot = Vec::new();
            {
                let table = &mut *self.table_write();
                let Ok(mut st) = sub.state.lock() else {
                    return Ok(());
                };
                let Table { points, names, .. } = table;
                let to = points.len().min(from + slice);
                let mut changes = SetChanges::default();
                for (gid, p) in points.iter_mut().enumerate().take(to).skip(from) {
                    let gid = gid as u32;
                    if covers(name_in(names, p)) {
                        if st.member.insert(gid) {
                            p.subs = changes.with(&p.subs, sub);
                        }
                        if with_snapshot {
                            snapshot.push(p.entry(gid));
                        }
                    }
                }
                from = to;
                if to >= points.len() {
                    from = usize::MAX;
                }
            }
            total += snapshot.len() as u32;
            sub.push_many(snapshot);
            if from == usize::MAX {
                break;
            }
            // Let the authorities' batches that waited for the lock take it before the next
            // slice (a released lock is not handed over by itself).
            std::thread::yield_now();
        }
        if with_snapshot {
            sub.push_done(total);
        }
        Ok(())
    }

    /// Removes patterns; points no longer covered stop flowing. Only points a removed pattern
    /// matched can leave, so only those are checked against the rest, a slice at a time.
    pub(crate) fn unsubscribe(&self, sub: &Arc<Subscriber>, patterns: &[String]) {
        let (removed, members) = {
            let _table = self.table_write();
            let Ok(mut st) = sub.state.lock() else { return };
            let removed: Vec<pointhub_schemas::Pattern> = st
                .patterns
                .iter()
                .filter(|p| patterns.iter().any(|x| x == p.as_str()))
                .cloned()
                .collect();
            if removed.is_empty() {
                return;
            }
            st.patterns
                .retain(|p| !patterns.iter().any(|x| x == p.as_str()));
            (removed, st.member.iter().collect::<Vec<u32>>())
        };
        for slice in members.chunks(SCAN_SLICE) {
            let table = &mut *self.table_write();
            let Ok(mut st) = sub.state.lock() else { return };
            let mut changes = SetChanges::default();
            let Table { points, names, .. } = table;
            for &gid in slice {
                let Some(p) = points.get_mut(gid as usize) else {
                    continue;
                };
                let name = name_in(names, p);
                if removed.iter().any(|r| r.matches(name)) && !sub.wants(&st, name) {
                    st.member.remove(gid);
                    p.subs = changes.without(&p.subs, sub.id);
                }
            }
        }
    }

    /// Queues a fresh snapshot of everything the subscriber covers.
    pub(crate) fn resnapshot(&self, sub: &Arc<Subscriber>) {
        let table = self.table_read();
        let Ok(st) = sub.state.lock() else { return };
        let snapshot: Vec<Entry> = st
            .member
            .iter()
            .filter_map(|gid| table.points.get(gid as usize).map(|p| p.entry(gid)))
            .collect();
        drop(st);
        let n = snapshot.len() as u32;
        sub.push_many(snapshot);
        sub.push_done(n);
    }

    pub(crate) fn remove_subscriber(&self, sub: &Arc<Subscriber>) {
        if let Ok(mut s) = self.subs.lock() {
            s.remove(&sub.id);
        }
        let table = &mut *self.table_write();
        let Ok(st) = sub.state.lock() else { return };
        let mut changes = SetChanges::default();
        for gid in st.member.iter() {
            if let Some(p) = table.points.get_mut(gid as usize) {
                p.subs = changes.without(&p.subs, sub.id);
            }
        }
    }

    /// Sets a point the hub itself is the authority for (`$sys/…`), defining it if needed.
    pub(crate) fn set_local(&self, owner: &Arc<str>, name: &str, dtype: DataType, value: Value) {
        let gid = {
            let table = self.table_read();
            table.gid(name)
        };
        let gid = match gid {
            Some(g) => g,
            None => {
                let def = PointDef {
                    id: 0,
                    name: name.into(),
                    dtype,
                    unit: None,
                    description: None,
                    writable: false,
                };
                match self.define(owner, 0, &[def], 0, |_| true, "") {
                    Ok(g) => g[0],
                    Err(_) => return,
                }
            }
        };
        let u = Update {
            id: gid,
            value,
            quality: Quality::Good,
            source_ts: Timestamp::now(),
            hub_ts: Timestamp::NEVER,
            flags: 0,
        };
        self.apply(std::iter::once((gid, u)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_schemas::Pattern;

    fn def(name: &str) -> PointDef {
        PointDef {
            id: 0,
            name: name.into(),
            dtype: DataType::Float,
            unit: None,
            description: None,
            writable: false,
        }
    }

    /// Subscriber `id` (queue limit `limit`) to the points matching `pattern`.
    fn subscriber(core: &Core, id: u64, pattern: &str, limit: usize) -> Arc<Subscriber> {
        let sub = Arc::new(Subscriber::new(
            id,
            false,
            vec![Pattern::parse("**").expect("p")],
            limit,
        ));
        core.add_subscriber(sub.clone());
        core.subscribe(&sub, vec![Pattern::parse(pattern).expect("p")])
            .expect("subscribe");
        sub
    }

    /// A subscriber (queue limit `limit`) to every point under `e/`.
    fn subscribe_all(core: &Core, limit: usize) -> Arc<Subscriber> {
        subscriber(core, 9, "e/**", limit)
    }

    fn up(v: f64, q: Quality) -> Update {
        Update {
            id: 0,
            value: Value::Float(v),
            quality: q,
            source_ts: Timestamp(1),
            hub_ts: Timestamp::NEVER,
            flags: 0,
        }
    }

    #[test]
    fn one_batch_over_points_with_different_subscribers_reaches_each_its_own() {
        let core = Core::new(1000);
        let owner: Arc<str> = "e".into();
        let defs: Vec<PointDef> = ["e/a/1", "e/b/1", "e/a/2"]
            .iter()
            .enumerate()
            .map(|(i, n)| PointDef {
                id: i as u32,
                ..def(n)
            })
            .collect();
        let gids = core
            .define(&owner, 1, &defs, 0, |_| true, "e")
            .expect("defined");
        let all = subscribe_all(&core, 1000);
        let only_a = subscriber(&core, 10, "e/a/**", 1000);
        all.drain();
        only_a.drain();
        // Sets alternate within one batch: a/1 {all, a}, b/1 {all}, a/2 {all, a}.
        core.apply(
            [0usize, 1, 2, 1, 0]
                .iter()
                .enumerate()
                .map(|(v, &i)| (gids[i], up(v as f64, Quality::Good))),
        );
        let ids = |p: Pending| -> Vec<(u32, Value)> {
            p.entries.iter().map(|e| (e.id, e.value.clone())).collect()
        };
        assert_eq!(
            ids(all.drain()),
            vec![
                (gids[0], Value::Float(4.0)),
                (gids[1], Value::Float(3.0)),
                (gids[2], Value::Float(2.0))
            ]
        );
        assert_eq!(
            ids(only_a.drain()),
            vec![(gids[0], Value::Float(4.0)), (gids[2], Value::Float(2.0))]
        );
    }

    #[test]
    fn small_drains_after_a_big_snapshot_still_conflate() {
        let core = Core::new(10_000);
        let owner: Arc<str> = "e".into();
        let defs: Vec<PointDef> = (0..2_000)
            .map(|i| PointDef {
                id: i,
                ..def(&format!("e/p{i}"))
            })
            .collect();
        let gids = core
            .define(&owner, 1, &defs, 0, |_| true, "e")
            .expect("defined");
        let sub = subscribe_all(&core, 100_000);
        // The snapshot grows the conflation index; small drains then empty it entry by entry.
        assert_eq!(sub.drain().entries.len(), 2_000);
        let mut v = 0.0;
        for round in 0..3 {
            for _ in 0..3 {
                v += 1.0;
                core.apply(
                    [
                        (gids[7], up(v, Quality::Good)),
                        (gids[9], up(v, Quality::Good)),
                    ]
                    .into_iter(),
                );
            }
            let p = sub.drain();
            let seen: Vec<(u32, Value)> =
                p.entries.iter().map(|e| (e.id, e.value.clone())).collect();
            assert_eq!(
                seen,
                vec![(gids[7], Value::Float(v)), (gids[9], Value::Float(v))],
                "round {round}: one entry per point, the latest value"
            );
        }
    }

    #[test]
    fn conflation_keeps_latest_and_every_quality_change() {
        let core = Core::new(1000);
        let owner: Arc<str> = "e".into();
        let gids = core
            .define(&owner, 1, &[def("e/a")], 0, |_| true, "e")
            .expect("defined");
        let sub = subscribe_all(&core, 100);
        let snap = sub.drain();
        assert_eq!(snap.entries.len(), 1);
        assert_eq!(snap.snapshots_done, vec![1]);
        for i in 0..100 {
            core.apply(std::iter::once((gids[0], up(f64::from(i), Quality::Good))));
        }
        core.authority_lost(1, &gids);
        let p = sub.drain();
        let seen: Vec<(Value, Quality)> = p
            .entries
            .iter()
            .map(|e| (e.value.clone(), e.quality))
            .collect();
        assert_eq!(
            seen,
            vec![
                (Value::Float(99.0), Quality::Good),
                (
                    Value::Float(99.0),
                    Quality::UncertainNoCommunicationLastUsableValue
                )
            ]
        );
        assert_eq!(sub.conflated.load(Ordering::Relaxed), 99);
    }

    #[test]
    fn names_and_owners_are_kept_once_and_entries_stay_small() {
        // A hub holds millions of entries: 96 bytes each is part of the memory budget.
        assert!(std::mem::size_of::<PointEntry>() <= 96);
        let core = Core::new(1000);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let names = ["a/x", "a/ü/长い名前", "a/y"];
        let defs: Vec<PointDef> = names.iter().map(|n| def(n)).collect();
        let gids = core.define(&a, 1, &defs, 0, |_| true, "").expect("a");
        core.define(&b, 2, &[def("b/z")], 0, |_| true, "")
            .expect("b");
        core.authority_lost(1, &gids);
        // b takes over a/y; a's other points keep their owner.
        core.define(&b, 2, &[def("a/y")], 0, |_| true, "")
            .expect("free once a is gone");
        let t = core.table_read();
        for (gid, name) in gids.iter().zip(names) {
            assert_eq!(t.gid(name), Some(*gid));
            assert_eq!(t.name(&t.points[*gid as usize]), name);
        }
        let owner = |n: &str| t.gid(n).map(|g| t.owner(&t.points[g as usize]).to_string());
        assert_eq!(owner("a/x").as_deref(), Some("a"));
        assert_eq!(owner("a/y").as_deref(), Some("b"));
        assert_eq!(owner("b/z").as_deref(), Some("b"));
        assert_eq!(t.owners.len(), 2);
        assert_eq!(t.points[gids[0] as usize].owner_session(), None);
        assert_eq!(t.points[gids[2] as usize].owner_session(), Some(2));
        assert_eq!(t.gid("a/none"), None);
        // Saved and restored points keep their names and owners.
        drop(t);
        let saved = core.take_dirty(usize::MAX);
        let again = Core::new(1000);
        again.restore(saved.clone());
        let t = again.table_read();
        for s in &saved {
            let g = t.gid(&s.name).expect("restored");
            assert_eq!(t.owner(&t.points[g as usize]).as_ref(), s.owner);
        }
    }

    #[test]
    fn namespace_and_conflict_are_refused() {
        let core = Core::new(1000);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        assert!(matches!(
            core.define(&a, 1, &[def("b/x")], 0, |n| n.starts_with("a/"), "a"),
            Err(BirthError::Namespace { .. })
        ));
        core.define(&a, 1, &[def("shared/x")], 0, |_| true, "")
            .expect("a owns it");
        assert!(matches!(
            core.define(&b, 2, &[def("shared/x")], 0, |_| true, ""),
            Err(BirthError::Conflict { .. })
        ));
        core.authority_lost(1, &[0]);
        core.define(&b, 2, &[def("shared/x")], 0, |_| true, "")
            .expect("free once a is gone");
        assert!(matches!(
            core.define(&b, 2, &[def("b/1"), def("b/2")], 999, |_| true, ""),
            Err(BirthError::TooMany(_))
        ));
    }

    #[test]
    fn shared_subscriber_sets_follow_subscribe_and_unsubscribe() {
        let core = Core::new(10_000);
        let owner: Arc<str> = "e".into();
        let defs: Vec<PointDef> = (0..1000)
            .map(|i| def(&format!("e/{}/p{i}", if i < 100 { "a" } else { "b" })))
            .collect();
        let gids = core
            .define(&owner, 1, &defs, 0, |_| true, "e")
            .expect("defined");
        assert_eq!(core.table_read().gid("e/b/p999"), Some(gids[999]));
        assert_eq!(core.table_read().gid("e/none"), None);
        let sub = |id| {
            let s = Arc::new(Subscriber::new(
                id,
                false,
                vec![Pattern::parse("**").expect("p")],
                100_000,
            ));
            core.add_subscriber(s.clone());
            s
        };
        let (a, b) = (sub(7), sub(8));
        core.subscribe(&a, vec![Pattern::parse("e/**").expect("p")])
            .expect("subscribe");
        core.subscribe(&b, vec![Pattern::parse("e/a/**").expect("p")])
            .expect("subscribe");
        assert_eq!(a.state.lock().expect("lock").member.len(), 1000);
        assert_eq!(b.state.lock().expect("lock").member.len(), 100);
        {
            // Points with the same subscribers share one set.
            let t = core.table_read();
            let both = t.points[gids[1] as usize].subs.key();
            assert_eq!(t.points[gids[99] as usize].subs.key(), both);
            assert_ne!(t.points[gids[100] as usize].subs.key(), both);
        }
        a.drain();
        b.drain();
        let all = gids.iter().map(|&g| (g, up(1.0, Quality::Good)));
        core.apply(all);
        assert_eq!(a.drain().entries.len(), 1000);
        assert_eq!(b.drain().entries.len(), 100);
        core.unsubscribe(&b, &["e/a/**".to_string()]);
        core.remove_subscriber(&a);
        core.apply(gids.iter().map(|&g| (g, up(2.0, Quality::Good))));
        assert_eq!(a.drain().entries.len(), 0, "removed");
        assert_eq!(b.drain().entries.len(), 0, "unsubscribed");
        assert!(core.table_read().points.iter().all(|p| p.subs.is_empty()));
    }

    #[test]
    fn subscribes_scan_in_slices_cap_their_patterns_and_unsubscribe_keeps_what_others_cover() {
        let core = Core::new(100_000);
        let owner: Arc<str> = "e".into();
        let n = 2 * SCAN_SLICE + 100;
        let defs: Vec<PointDef> = (0..n).map(|i| def(&format!("e/{}/p{i}", i % 2))).collect();
        core.define(&owner, 1, &defs, 0, |_| true, "e")
            .expect("defined");
        let sub = Arc::new(Subscriber::new(
            5,
            false,
            vec![Pattern::parse("**").expect("p")],
            1_000_000,
        ));
        core.add_subscriber(sub.clone());
        let pat = |p: &str| Pattern::parse(p).expect("p");
        core.subscribe(&sub, vec![pat("e/0/*")]).expect("subscribe");
        let first = sub.drain();
        assert_eq!(first.entries.len(), n / 2, "every slice scanned");
        assert_eq!(first.snapshots_done, vec![(n / 2) as u32]);
        // A second pattern: its own points in the snapshot, not the first pattern's again.
        core.subscribe(&sub, vec![pat("e/1/*"), pat("e/0/*")])
            .expect("subscribe");
        assert_eq!(
            sub.state.lock().expect("lock").patterns.len(),
            2,
            "no duplicate"
        );
        assert_eq!(sub.drain().entries.len(), n, "both patterns' points");
        // Overlapping patterns: removing one keeps what the other still covers.
        core.subscribe(&sub, vec![pat("e/**")]).expect("subscribe");
        core.unsubscribe(&sub, &["e/0/*".to_string(), "e/1/*".to_string()]);
        assert_eq!(sub.state.lock().expect("lock").member.len(), n);
        core.unsubscribe(&sub, &["e/**".to_string()]);
        assert_eq!(sub.state.lock().expect("lock").member.len(), 0);
        // The cap counts every pattern the subscriber holds.
        let many: Vec<Pattern> = (0..MAX_PATTERNS).map(|i| pat(&format!("x/{i}"))).collect();
        core.subscribe(&sub, many).expect("up to the cap");
        assert!(matches!(
            core.subscribe(&sub, vec![pat("y/1")]),
            Err(SubscribeError::TooManyPatterns { .. })
        ));
        core.subscribe(&sub, vec![pat("x/1")])
            .expect("a pattern it holds already adds nothing");
    }

    #[test]
    fn gid_sets_count_and_iterate() {
        let mut s = GidSet::default();
        assert!(s.insert(3) && s.insert(200) && !s.insert(3));
        assert_eq!((s.len(), s.iter().collect::<Vec<_>>()), (2, vec![3, 200]));
        s.remove(3);
        s.remove(4);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![200]);
    }

    #[test]
    fn a_newer_session_taking_over_opens_a_gap_and_the_older_is_no_longer_heard() {
        let core = Core::new(1000);
        let owner: Arc<str> = "e".into();
        let gids = core
            .define(&owner, 1, &[def("e/a")], 0, |_| true, "e")
            .expect("defined");
        let sub = Arc::new(Subscriber::new(
            9,
            true,
            vec![Pattern::parse("**").expect("p")],
            1000,
        ));
        core.add_subscriber(sub.clone());
        core.subscribe(&sub, vec![Pattern::parse("e/**").expect("p")])
            .expect("subscribe");
        let at = |ts: u64, flags: u8| Update {
            source_ts: Timestamp(ts),
            flags,
            ..up(ts as f64, Quality::Good)
        };
        // Session 1 is lost once (a gap after 5), session 2 comes back at 10.
        core.apply_from(1, std::iter::once((gids[0], at(5, 0))));
        core.authority_lost(1, &gids);
        core.define(&owner, 2, &[def("e/a")], 0, |_| true, "e")
            .expect("back");
        core.apply_from(2, std::iter::once((gids[0], at(10, 0))));
        // The node redials; session 3 takes the point over before session 2 has ended here.
        core.define(&owner, 3, &[def("e/a")], 0, |_| true, "e")
            .expect("taken over");
        // A frame session 2 had read before it ended: not applied.
        core.apply_from(2, std::iter::once((gids[0], at(11, 0))));
        core.apply_from(3, std::iter::once((gids[0], at(20, 0))));
        core.authority_lost(2, &gids);
        // What session 2 carried and the hub never had comes again as history, and is new.
        core.apply_from(3, (11..20).map(|ts| (gids[0], at(ts, Update::HISTORY))));
        let seen: Vec<(u64, bool)> = sub
            .drain()
            .entries
            .iter()
            .filter(|e| e.quality == Quality::Good)
            .map(|e| (e.source_ts.0, e.flags & Update::HISTORY != 0))
            .collect();
        let mut want = vec![(5, false), (10, false), (20, false)];
        want.extend((11..20).map(|ts| (ts, true)));
        assert_eq!(seen, want);
        assert_eq!(
            core.table_read().points[gids[0] as usize].quality,
            Quality::Good,
            "the older session's end leaves the newer one's point alone"
        );
    }

    #[test]
    fn a_keeper_recovers_from_an_overflow_and_counts_what_it_turned_away() {
        let core = Core::new(1000);
        let owner: Arc<str> = "e".into();
        let gids = core
            .define(&owner, 1, &[def("e/a")], 0, |_| true, "e")
            .expect("defined");
        // With history, as an upstream link and a durable queue are: every update queued.
        let sub = Arc::new(Subscriber::new(
            9,
            true,
            vec![Pattern::parse("**").expect("p")],
            10,
        ));
        core.add_subscriber(sub.clone());
        core.subscribe_from_now(&sub, vec![Pattern::parse("e/**").expect("p")])
            .expect("subscribe");
        for i in 0..30 {
            core.apply(std::iter::once((gids[0], up(f64::from(i), Quality::Good))));
        }
        let p = sub.drain();
        assert!(p.overflow);
        let queued = p.entries.len() as u64;
        assert!(queued > 0 && queued < 30, "{queued} queued");
        assert_eq!(
            sub.recover(),
            30 - queued,
            "the rest was turned away, and counted"
        );
        core.apply(std::iter::once((gids[0], up(99.0, Quality::Good))));
        let p = sub.drain();
        assert!(!p.overflow, "recovered");
        assert_eq!(p.entries.len(), 1);
        assert_eq!(sub.recover(), 0);
    }

    #[test]
    fn never_valued_points_go_bad_not_uncertain() {
        let core = Core::new(10);
        let a: Arc<str> = "a".into();
        let gids = core
            .define(&a, 1, &[def("a/x")], 0, |_| true, "")
            .expect("ok");
        core.authority_lost(1, &gids);
        assert_eq!(
            core.table_read().points[0].quality,
            Quality::BadNoCommunication
        );
    }
}
