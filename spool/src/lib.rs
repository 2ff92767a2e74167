//! The store-and-forward spool, shared by the edge and the hub's upstream links: while the next
//! hop is unreachable, a node keeps every update in a bounded buffer on disk (redb), in order.
//! When the link returns, the birth restores the live mirror first, then the buffered updates
//! follow in order, flagged as history. When the buffer is full, the oldest updates are dropped
//! and counted.

mod replay;

pub use replay::Replay;

use pointhub_schemas::Update;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::path::Path;

/// The first layout: entries keyed by arrival only. Its entries move to [`ENTRIES`] on open.
const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");
/// Entries by key: an arrival counter in the low 64 bits, and for a buffer kept in order of
/// time ([`Buffer::push_in_time`]) the entry's time in the high 64 bits.
const ENTRIES: TableDefinition<u128, &[u8]> = TableDefinition::new("entries");

/// An entry's place in a buffer, as [`Buffer::peek`] gives it and [`Buffer::remove_through`]
/// takes it.
pub type Key = u128;

/// The bounded on-disk buffer of entries, in order: wire updates for the edge and the upstream
/// links (the default), rows for a sink that keeps its own records.
pub struct Buffer<T = Update> {
    db: Database,
    next: u64,
    bytes: u64,
    count: u64,
    max_bytes: u64,
    /// Updates dropped because the buffer was full, since start.
    pub dropped: u64,
    entry: PhantomData<fn() -> T>,
}

/// The buffer cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The buffer's folder could not be made, or it or its file could not be made owner-only.
    #[error("buffer {path}: {source}")]
    Io {
        /// The folder or file.
        path: std::path::PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The buffer file `buffer.redb` could not be created or opened (in use or damaged, say).
    #[error("buffer {path}: {source}")]
    Open {
        /// The buffer file.
        path: std::path::PathBuf,
        /// Why the store could not open it.
        source: redb::DatabaseError,
    },
    /// A transaction, table or read of the buffer's store failed.
    #[error("buffer store: {0}")]
    Store(#[from] redb::Error),
    /// An update could not be encoded for storage.
    #[error("buffer entry: {0}")]
    Encode(#[from] postcard::Error),
}

fn err<E: Into<redb::Error>>(e: E) -> BufferError {
    BufferError::Store(e.into())
}

impl<T: Serialize + DeserializeOwned> Buffer<T> {
    /// Opens or creates `buffer.redb` in `dir` (owner-only), keeping what an earlier run left.
    /// Past `max_bytes` bytes of encoded updates, the oldest are dropped.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Buffer<T>, BufferError> {
        std::fs::create_dir_all(dir).map_err(|source| BufferError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("buffer.redb");
        // A bounded cache: the buffer is written and read in order, and the edge stays small.
        let db = redb::Builder::new()
            .set_cache_size(16 << 20)
            .create(&path)
            .map_err(|source| BufferError::Open {
                path: path.clone(),
                source,
            })?;
        for p in [dir, path.as_path()] {
            pointhub_link::identity::owner_only(p).map_err(|source| BufferError::Io {
                path: p.to_path_buf(),
                source,
            })?;
        }
        let tx = db.begin_write().map_err(err)?;
        {
            // A buffer written by an earlier version: its entries move over, in order.
            let mut old = tx.open_table(HISTORY).map_err(err)?;
            let mut new = tx.open_table(ENTRIES).map_err(err)?;
            while let Some((k, v)) = old.pop_first().map_err(err)? {
                new.insert(u128::from(k.value()), v.value()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        let (mut next, mut bytes, mut count) = (0, 0, 0);
        {
            let rx = db.begin_read().map_err(err)?;
            let t = rx.open_table(ENTRIES).map_err(err)?;
            for item in t.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                next = next.max(k.value() as u64 + 1);
                bytes += v.value().len() as u64;
                count += 1;
            }
        }
        Ok(Buffer {
            db,
            next,
            bytes,
            count,
            max_bytes,
            dropped: 0,
            entry: PhantomData,
        })
    }

    /// Updates in the buffer now.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether the buffer holds no updates.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends updates in one transaction; drops the oldest past the size limit.
    pub fn push(&mut self, updates: &[T]) -> Result<(), BufferError> {
        self.insert(updates.iter().map(|u| (0, u)))
    }

    /// Adds entries, each with its time, in one transaction: [`Buffer::peek`] gives them back
    /// in order of time (then of arrival), and when the buffer is full the earliest in time go.
    /// A buffer is filled with [`Buffer::push`] or with this, not both.
    pub fn push_in_time<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a T)>,
    ) -> Result<(), BufferError>
    where
        T: 'a,
    {
        self.insert(entries)
    }

    fn insert<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a T)>,
    ) -> Result<(), BufferError>
    where
        T: 'a,
    {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(err)?;
            for (time, u) in entries {
                let bytes = postcard::to_stdvec(u)?;
                self.bytes += bytes.len() as u64;
                let key = (u128::from(time) << 64) | u128::from(self.next);
                t.insert(key, bytes.as_slice()).map_err(err)?;
                self.next += 1;
                self.count += 1;
            }
            while self.bytes > self.max_bytes {
                let Some((_, v)) = t.pop_first().map_err(err)? else {
                    break;
                };
                self.bytes = self.bytes.saturating_sub(v.value().len() as u64);
                self.count = self.count.saturating_sub(1);
                self.dropped += 1;
            }
        }
        tx.commit().map_err(err)
    }

    /// The oldest `n` updates, without removing them.
    pub fn peek(&self, n: usize) -> Result<Vec<(Key, T)>, BufferError> {
        self.peek_after(None, n)
    }

    /// The oldest `n` updates after `after` (from the start if `None`), without removing them:
    /// a reader that sends ahead of its acknowledgements goes on from where it got to.
    pub fn peek_after(&self, after: Option<Key>, n: usize) -> Result<Vec<(Key, T)>, BufferError> {
        let rx = self.db.begin_read().map_err(err)?;
        let t = rx.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::with_capacity(n.min(self.count as usize));
        let range = match after {
            None => t.iter().map_err(err)?,
            Some(Key::MAX) => return Ok(out),
            Some(k) => t.range(k + 1..).map_err(err)?,
        };
        for item in range.take(n) {
            let (k, v) = item.map_err(err)?;
            // An entry that does not decode (a damaged file) is skipped, not fatal.
            if let Ok(u) = postcard::from_bytes::<T>(v.value()) {
                out.push((k.value(), u));
            }
        }
        Ok(out)
    }

    /// Removes everything up to and including `seq`.
    pub fn remove_through(&mut self, seq: Key) -> Result<(), BufferError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(err)?;
            let keys: Vec<Key> = t
                .range(..=seq)
                .map_err(err)?
                .filter_map(|i| i.ok().map(|(k, _)| k.value()))
                .collect();
            for k in keys {
                if let Some(v) = t.remove(k).map_err(err)? {
                    self.bytes = self.bytes.saturating_sub(v.value().len() as u64);
                    self.count = self.count.saturating_sub(1);
                }
            }
            let _ = t.len();
        }
        tx.commit().map_err(err)
    }
}

/// Batches sent to the next hop and not acknowledged yet, oldest first, bounded: past
/// `max_updates` the oldest are handed back to go to the disk buffer (a next hop slow to
/// acknowledge does not make the node drop what it may not have).
#[derive(Debug)]
pub struct Unacked {
    batches: std::collections::VecDeque<(u64, Vec<Update>)>,
    len: usize,
    max_updates: usize,
}

impl Unacked {
    /// An empty window of at most `max_updates` updates.
    pub fn new(max_updates: usize) -> Unacked {
        Unacked {
            batches: std::collections::VecDeque::new(),
            len: 0,
            max_updates,
        }
    }

    /// A batch went out as `seq`. Returns what no longer fits (the oldest batches), for the
    /// disk buffer, and the last sequence number among them.
    pub fn sent(&mut self, seq: u64, batch: Vec<Update>) -> Option<(u64, Vec<Update>)> {
        self.len += batch.len();
        self.batches.push_back((seq, batch));
        let mut spilled: Option<(u64, Vec<Update>)> = None;
        while self.len > self.max_updates {
            match self.batches.pop_front() {
                Some((s, old)) => {
                    self.len -= old.len();
                    match spilled.as_mut() {
                        Some((last, all)) => {
                            *last = s;
                            all.extend(old);
                        }
                        None => spilled = Some((s, old)),
                    }
                }
                None => break,
            }
        }
        spilled
    }

    /// The next hop acknowledged everything through `seq`.
    pub fn acked(&mut self, seq: u64) {
        while self.batches.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, u)) = self.batches.pop_front() {
                self.len -= u.len();
            }
        }
    }

    /// Everything still unacknowledged, oldest first, leaving the window empty (the link broke).
    pub fn take_all(&mut self) -> Vec<Update> {
        self.len = 0;
        self.batches.drain(..).flat_map(|(_, u)| u).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_schemas::{Quality, Timestamp, Value};

    /// An update of point 1 with value and source time `i`.
    pub(crate) fn up(i: u64) -> Update {
        Update {
            id: 1,
            value: Value::UInt(i),
            quality: Quality::Good,
            source_ts: Timestamp(i),
            hub_ts: Timestamp::NEVER,
            flags: 0,
        }
    }

    #[test]
    fn peek_after_goes_on_from_a_key_and_remove_through_forgets_up_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
        let all: Vec<Update> = (1..=5).map(up).collect();
        b.push(&all).expect("push");
        let first = b.peek_after(None, 2).expect("peek");
        assert_eq!(first.len(), 2);
        let next = b.peek_after(Some(first[1].0), 10).expect("peek after");
        let times: Vec<u64> = next.iter().map(|(_, u)| u.source_ts.0).collect();
        assert_eq!(times, vec![3, 4, 5]);
        assert!(b
            .peek_after(Some(next[2].0), 10)
            .expect("at the end")
            .is_empty());
        b.remove_through(first[1].0).expect("remove");
        assert_eq!(b.len(), 3);
        assert_eq!(b.peek(1).expect("peek")[0].1.source_ts.0, 3);
    }

    #[test]
    fn a_buffer_in_time_gives_entries_back_by_time_and_drops_the_earliest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
        // A birth value (50) arrives before the history (10..=12) it follows, and 11 twice.
        let arrived: Vec<Update> = [50, 10, 11, 11, 12].into_iter().map(up).collect();
        b.push_in_time(arrived.iter().map(|u| (u.source_ts.0, u)))
            .expect("push");
        let times = |b: &Buffer| -> Vec<u64> {
            b.peek(100)
                .expect("peek")
                .iter()
                .map(|(_, u)| u.source_ts.0)
                .collect()
        };
        assert_eq!(times(&b), vec![10, 11, 11, 12, 50]);
        drop(b);
        // Reopened, later arrivals still sort among the kept ones by time.
        let mut b = Buffer::open(dir.path(), 1 << 20).expect("reopen");
        let later = up(20);
        b.push_in_time([(20, &later)]).expect("push");
        assert_eq!(times(&b), vec![10, 11, 11, 12, 20, 50]);
        // Full: the earliest in time go first.
        let one = postcard::to_stdvec(&up(1)).expect("encode").len() as u64;
        let mut b2 = Buffer::open(&dir.path().join("small"), one * 3).expect("open");
        b2.push_in_time(arrived.iter().map(|u| (u.source_ts.0, u)))
            .expect("push");
        assert_eq!(times(&b2), vec![11, 12, 50]);
        assert_eq!(b2.dropped, 2);
    }

    #[test]
    fn keeps_order_drops_oldest_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut b = Buffer::open(dir.path(), 1 << 20).expect("open");
            b.push(&(0..100).map(up).collect::<Vec<_>>()).expect("push");
            let first = b.peek(10).expect("peek");
            assert_eq!(
                first
                    .iter()
                    .map(|(_, u)| u.value.clone())
                    .collect::<Vec<_>>(),
                (0..10).map(Value::UInt).collect::<Vec<_>>()
            );
            b.remove_through(first[9].0).expect("remove");
            assert_eq!(b.len(), 90);
        }
        let mut b = Buffer::open(dir.path(), 300).expect("reopen");
        assert_eq!(b.len(), 90);
        b.push(&[up(1000)]).expect("push");
        assert!(b.dropped > 0, "over the limit the oldest go");
        let all = b.peek(1000).expect("peek");
        assert_eq!(
            all.last().map(|(_, u)| u.value.clone()),
            Some(Value::UInt(1000))
        );
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[cfg(unix)]
    #[test]
    fn the_buffer_is_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("buf");
        let _b: Buffer = Buffer::open(&sub, 1 << 20).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("buffer.redb")), 0o600);
    }

    #[test]
    fn the_unacked_window_lets_go_of_what_is_acknowledged_and_hands_back_the_oldest_past_its_bound()
    {
        let mut w = Unacked::new(25);
        let mut spilled = Vec::new();
        for seq in 1..=3 {
            spilled.extend(w.sent(seq, (seq * 10..seq * 10 + 10).map(up).collect()));
        }
        // 30 updates past a bound of 25: the oldest batch is handed back for the disk.
        assert_eq!(spilled.len(), 1);
        assert_eq!(spilled[0].0, 1);
        assert_eq!(
            spilled[0]
                .1
                .iter()
                .map(|u| u.source_ts.0)
                .collect::<Vec<_>>(),
            (10..20).collect::<Vec<_>>()
        );
        w.acked(2);
        let left: Vec<u64> = w.take_all().iter().map(|u| u.source_ts.0).collect();
        assert_eq!(left, (30..40).collect::<Vec<_>>());
        assert!(w.take_all().is_empty());
    }
}
