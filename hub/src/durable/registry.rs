//! The hub's durable subscriptions, each with its queue on disk and what its attached reader has
//! sent and not had acknowledged.

use crate::config::DurableConfig;
use crate::named::Named;
use pointhub_link::Fingerprint;
use pointhub_schemas::{DurableSubscribe, Pattern};
use pointhub_spool::{Buffer, BufferError, Key};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Batches a reader may have sent and not had acknowledged; past it, it waits for acks.
const WINDOW: usize = 64;

/// A durable subscription's folder or queue cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The folder of durable subscriptions (or one of them) could not be made, read or removed.
    #[error("durable subscriptions: {path}: {source}")]
    Io {
        /// The folder or file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// A subscription's description (`meta.json`) does not parse.
    #[error("durable subscription {path}: meta.json: {source} (remove the folder to drop the subscription)")]
    Meta {
        /// The subscription's folder.
        path: PathBuf,
        /// What is wrong with it.
        source: serde_json::Error,
    },
    /// A subscription's queue could not be opened or written.
    #[error("durable subscription {path}: {source}")]
    Queue {
        /// The subscription's folder.
        path: PathBuf,
        /// Why.
        source: BufferError,
    },
}

/// Why a client's durable subscription is refused; each says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("durable subscriptions are off on this hub ([durable] max_bytes = 0): ask its operator, or subscribe without --durable")]
    Off,
    #[error("its name {0:?} does not do: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    Name(String),
    #[error("this key has {have} durable subscriptions already (limit: [durable] max_per_key = {max}): reuse one of them by name")]
    TooMany { have: usize, max: usize },
    #[error("the hub cannot keep it: {0}")]
    Store(#[from] DurableError),
}

/// What a subscription is, as kept in its folder's `meta.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) owner: Fingerprint,
    /// The owner's node name when it last attached (for `$sys` and logs).
    pub(crate) node: String,
    pub(crate) name: String,
    pub(crate) patterns: Vec<String>,
    /// What the owner's key may read, as of its last attach.
    pub(crate) grant: Vec<String>,
}

impl Meta {
    fn parsed(list: &[String]) -> Vec<Pattern> {
        list.iter()
            .filter_map(|p| match Pattern::parse(p) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(pattern = %p, error = %e, "durable subscription: pattern left out");
                    None
                }
            })
            .collect()
    }

    /// The patterns and the grant, parsed.
    pub(crate) fn wanted(&self) -> (Vec<Pattern>, Vec<Pattern>) {
        (Self::parsed(&self.patterns), Self::parsed(&self.grant))
    }
}

/// An attached reader's hold on the queue; a newer attach ends it.
pub(crate) struct Attachment {
    pub(crate) generation: u64,
    pub(crate) ended: CancellationToken,
}

#[derive(Default)]
struct Reader {
    /// The attached reader's generation; 0 when none is attached.
    attached: u64,
    generations: u64,
    ended: Option<CancellationToken>,
    /// The last entry sent to the attached reader.
    cursor: Option<Key>,
    /// Batches sent and not acknowledged: (seq, last entry).
    in_flight: VecDeque<(u64, Key)>,
}

/// One durable subscription.
pub(crate) struct Durable {
    meta: Mutex<Meta>,
    dir: PathBuf,
    queue: Mutex<Buffer<Named>>,
    reader: Mutex<Reader>,
    /// The feeder subscribes anew (the patterns or the grant changed).
    pub(crate) rewired: Notify,
    /// Entries were added to the queue.
    pub(crate) fed: Notify,
    /// The reader acknowledged batches.
    pub(crate) acked: Notify,
    /// The subscription is removed (its key revoked) or the hub stops.
    pub(crate) removed: CancellationToken,
    /// Updates lost before they reached the queue (the feeder fell behind the table).
    pub(crate) lost: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Durable {
    fn open(dir: PathBuf, meta: Meta, max_bytes: u64) -> Result<Durable, DurableError> {
        let queue = Buffer::open(&dir, max_bytes).map_err(|source| DurableError::Queue {
            path: dir.clone(),
            source,
        })?;
        Ok(Durable {
            meta: Mutex::new(meta),
            dir,
            queue: Mutex::new(queue),
            reader: Mutex::new(Reader::default()),
            rewired: Notify::new(),
            fed: Notify::new(),
            acked: Notify::new(),
            removed: CancellationToken::new(),
            lost: AtomicU64::new(0),
        })
    }

    /// What the subscription is now.
    pub(crate) fn meta(&self) -> Meta {
        lock(&self.meta).clone()
    }

    /// Adds entries to the queue, in the order given; a full queue drops its oldest.
    pub(crate) fn push(&self, entries: &[Named]) -> Result<(), BufferError> {
        if entries.is_empty() {
            return Ok(());
        }
        lock(&self.queue).push(entries)?;
        self.fed.notify_one();
        Ok(())
    }

    /// Entries in the queue, and entries dropped from it since the hub started.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let q = lock(&self.queue);
        (q.len(), q.dropped)
    }

    /// Whether a reader is attached now.
    pub(crate) fn is_attached(&self) -> bool {
        lock(&self.reader).attached != 0
    }

    /// A reader attaches: an earlier one is ended, and the new one starts from the oldest entry
    /// not acknowledged.
    pub(crate) fn attach(&self) -> Attachment {
        let mut r = lock(&self.reader);
        if let Some(old) = r.ended.take() {
            old.cancel();
        }
        r.generations += 1;
        r.attached = r.generations;
        r.cursor = None;
        r.in_flight.clear();
        let ended = CancellationToken::new();
        r.ended = Some(ended.clone());
        Attachment {
            generation: r.attached,
            ended,
        }
    }

    /// The reader of `generation` left; what it did not acknowledge goes to the next one.
    pub(crate) fn detach(&self, generation: u64) {
        let mut r = lock(&self.reader);
        if r.attached == generation {
            r.attached = 0;
            r.cursor = None;
            r.in_flight.clear();
            if let Some(t) = r.ended.take() {
                t.cancel();
            }
        }
    }

    /// The next entries for the reader of `generation`, at most `n`: `None` once it is no longer
    /// the attached one; empty when there is nothing new or its window of batches is full.
    pub(crate) fn next(
        &self,
        generation: u64,
        n: usize,
    ) -> Result<Option<Vec<(Key, Named)>>, BufferError> {
        let r = lock(&self.reader);
        if r.attached != generation {
            return Ok(None);
        }
        if r.in_flight.len() >= WINDOW {
            return Ok(Some(Vec::new()));
        }
        let q = lock(&self.queue);
        q.peek_after(r.cursor, n).map(Some)
    }

    /// The reader of `generation` was sent a batch `seq` ending with entry `last`.
    pub(crate) fn sent(&self, generation: u64, seq: u64, last: Key) {
        let mut r = lock(&self.reader);
        if r.attached == generation {
            r.cursor = Some(last);
            r.in_flight.push_back((seq, last));
        }
    }

    /// The reader of `generation` stored every batch through `seq`: the queue forgets them.
    pub(crate) fn ack(&self, generation: u64, seq: u64) -> Result<(), BufferError> {
        let through = {
            let mut r = lock(&self.reader);
            if r.attached != generation {
                return Ok(());
            }
            let mut through = None;
            while r.in_flight.front().is_some_and(|(s, _)| *s <= seq) {
                through = r.in_flight.pop_front().map(|(_, k)| k);
            }
            through
        };
        if let Some(k) = through {
            lock(&self.queue).remove_through(k)?;
            self.acked.notify_one();
        }
        Ok(())
    }
}

/// Every durable subscription of the hub.
pub(crate) struct Durables {
    dir: PathBuf,
    cfg: DurableConfig,
    subs: Mutex<HashMap<(Fingerprint, String), Arc<Durable>>>,
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<(), DurableError> {
    let path = dir.join("meta.json");
    let text = serde_json::to_vec_pretty(meta).map_err(|source| DurableError::Meta {
        path: dir.to_path_buf(),
        source,
    })?;
    let tmp = dir.join("meta.json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| DurableError::Io { path, source })
}

impl Durables {
    /// Opens every durable subscription kept in `<data_dir>/durable/`; those of keys `revoked`
    /// says are revoked are removed.
    pub(crate) fn open(
        data_dir: &Path,
        cfg: &DurableConfig,
        revoked: impl Fn(&Fingerprint) -> bool,
    ) -> Result<Durables, DurableError> {
        let dir = data_dir.join("durable");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DurableError::Io { path, source }
        };
        let mut subs = HashMap::new();
        if cfg.max_bytes == 0 && dir.exists() {
            warn!(dir = %dir.display(), "durable subscriptions are off ([durable] max_bytes = 0): those kept in this folder are left as they are");
        } else if dir.exists() {
            for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
                let path = e.map_err(io(&dir))?.path();
                let file = path.join("meta.json");
                if !file.exists() {
                    continue;
                }
                let text = std::fs::read(&file).map_err(io(&file))?;
                let meta: Meta =
                    serde_json::from_slice(&text).map_err(|source| DurableError::Meta {
                        path: path.clone(),
                        source,
                    })?;
                if revoked(&meta.owner) {
                    info!(name = %meta.name, node = %meta.node, "durable subscription of a revoked key removed");
                    std::fs::remove_dir_all(&path).map_err(io(&path))?;
                    continue;
                }
                let d = Durable::open(path, meta.clone(), cfg.max_bytes)?;
                let (queued, _) = d.counts();
                info!(name = %meta.name, node = %meta.node, queued, "durable subscription kept for its client");
                subs.insert((meta.owner, meta.name), Arc::new(d));
            }
        }
        Ok(Durables {
            dir,
            cfg: cfg.clone(),
            subs: Mutex::new(subs),
        })
    }

    /// Every durable subscription now.
    pub(crate) fn all(&self) -> Vec<Arc<Durable>> {
        lock(&self.subs).values().cloned().collect()
    }

    /// The subscription `name` of `owner`, made if new (then `true`): its patterns and grant
    /// become these if they changed.
    pub(crate) fn get_or_make(&self, want: Meta) -> Result<(Arc<Durable>, bool), Refused> {
        if self.cfg.max_bytes == 0 {
            return Err(Refused::Off);
        }
        if !DurableSubscribe::valid_name(&want.name) {
            return Err(Refused::Name(want.name));
        }
        let mut subs = lock(&self.subs);
        if let Some(d) = subs.get(&(want.owner, want.name.clone())) {
            let changed = {
                let mut m = lock(&d.meta);
                let changed = *m != want;
                if changed {
                    write_meta(&d.dir, &want)?;
                    *m = want;
                }
                changed
            };
            if changed {
                d.rewired.notify_one();
            }
            return Ok((d.clone(), false));
        }
        let have = subs.keys().filter(|(o, _)| *o == want.owner).count();
        if have >= self.cfg.max_per_key {
            return Err(Refused::TooMany {
                have,
                max: self.cfg.max_per_key,
            });
        }
        let hex = want.owner.hex();
        let dir = self
            .dir
            .join(format!("{}-{}", &hex[..16.min(hex.len())], want.name));
        let d = Durable::open(dir.clone(), want.clone(), self.cfg.max_bytes)?;
        write_meta(&dir, &want)?;
        let d = Arc::new(d);
        subs.insert((want.owner, want.name), d.clone());
        Ok((d, true))
    }

    /// Every subscription as `hub durable list` shows it, by owner then name.
    pub(crate) fn list(&self) -> serde_json::Value {
        let mut all: Vec<serde_json::Value> = self
            .all()
            .iter()
            .map(|d| {
                let m = d.meta();
                let (queued, dropped) = d.counts();
                serde_json::json!({
                    "node": m.node,
                    "name": m.name,
                    "owner": m.owner,
                    "patterns": m.patterns,
                    "queued": queued,
                    "dropped": dropped,
                    "connected": d.is_attached(),
                })
            })
            .collect();
        all.sort_by_key(|v| (v["node"].to_string(), v["name"].to_string()));
        serde_json::Value::Array(all)
    }

    /// Removes the subscription `name` of the node called `node`; what it was, or why not.
    pub(crate) fn remove_named(&self, node: &str, name: &str) -> Result<Meta, NotFound> {
        let found = self
            .all()
            .into_iter()
            .find(|d| {
                let m = d.meta();
                m.node == node && m.name == name
            })
            .ok_or_else(|| NotFound {
                node: node.to_string(),
                name: name.to_string(),
            })?;
        let meta = found.meta();
        self.remove(&found);
        Ok(meta)
    }

    /// Removes a subscription and its queue (its key was revoked).
    pub(crate) fn remove(&self, d: &Durable) {
        let meta = d.meta();
        lock(&self.subs).remove(&(meta.owner, meta.name.clone()));
        d.removed.cancel();
        if let Err(e) = std::fs::remove_dir_all(&d.dir) {
            warn!(error = %e, dir = %d.dir.display(), "cannot remove a durable subscription's folder");
        }
    }
}

/// No durable subscription of that name and node.
#[derive(Debug, thiserror::Error)]
#[error(
    "no durable subscription {name:?} of node {node:?}: `pointhub hub durable list` shows them"
)]
pub(crate) struct NotFound {
    node: String,
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_schemas::{Quality, Timestamp, Update, Value};

    fn named(i: u64) -> Named {
        Named {
            name: "plant1/tick".into(),
            update: Update {
                id: 0,
                value: Value::UInt(i),
                quality: Quality::Good,
                source_ts: Timestamp(i),
                hub_ts: Timestamp(i),
                flags: 0,
            },
        }
    }

    fn meta(owner: u8, name: &str) -> Meta {
        Meta {
            owner: Fingerprint([owner; 32]),
            node: "historian".into(),
            name: name.into(),
            patterns: vec!["plant1/**".into()],
            grant: vec!["**".into()],
        }
    }

    fn values(batch: &[(Key, Named)]) -> Vec<u64> {
        batch
            .iter()
            .filter_map(|(_, n)| match n.update.value {
                Value::UInt(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reader_goes_on_from_what_it_was_sent_and_the_next_one_from_what_was_not_acked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DurableConfig::default();
        let all = Durables::open(dir.path(), &cfg, |_| false).expect("open");
        let (d, made) = all.get_or_make(meta(1, "hist")).expect("made");
        assert!(made);
        d.push(&(1..=6).map(named).collect::<Vec<_>>())
            .expect("push");
        let a = d.attach();
        let first = d.next(a.generation, 2).expect("read").expect("attached");
        assert_eq!(values(&first), vec![1, 2]);
        d.sent(a.generation, 1, first[1].0);
        let second = d.next(a.generation, 2).expect("read").expect("attached");
        assert_eq!(values(&second), vec![3, 4]);
        d.sent(a.generation, 2, second[1].0);
        d.ack(a.generation, 1).expect("ack");
        assert_eq!(d.counts().0, 4, "the acknowledged batch is forgotten");
        // A newer reader ends the old one and starts from the first entry not acknowledged.
        let b = d.attach();
        assert!(a.ended.is_cancelled());
        assert!(d.next(a.generation, 10).expect("read").is_none());
        let again = d.next(b.generation, 10).expect("read").expect("attached");
        assert_eq!(values(&again), vec![3, 4, 5, 6]);
        // An ack of the old reader changes nothing.
        d.ack(a.generation, 2).expect("ack");
        assert_eq!(d.counts().0, 4);
        drop(d);
        drop(all);
        // Reopened (a hub restart): the queue and the subscription are still there.
        let all = Durables::open(dir.path(), &cfg, |_| false).expect("reopen");
        let (d, made) = all.get_or_make(meta(1, "hist")).expect("found");
        assert!(!made);
        assert_eq!(d.counts().0, 4);
        // A revoked key's subscriptions go at the next start.
        drop(d);
        drop(all);
        let all = Durables::open(dir.path(), &cfg, |_| true).expect("reopen");
        assert!(all.all().is_empty());
    }

    #[test]
    fn names_limits_and_a_hub_that_keeps_none_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = DurableConfig {
            max_bytes: 1 << 20,
            max_per_key: 1,
        };
        let all = Durables::open(dir.path(), &cfg, |_| false).expect("open");
        for bad in ["", "..", "a/b", &"x".repeat(65)] {
            assert!(
                matches!(all.get_or_make(meta(1, bad)), Err(Refused::Name(_))),
                "{bad:?}"
            );
        }
        all.get_or_make(meta(1, "one")).expect("first");
        let e = all
            .get_or_make(meta(1, "two"))
            .err()
            .expect("over the limit");
        assert!(e.to_string().contains("max_per_key = 1"), "{e}");
        // Another key has its own allowance; the same name of the same key is the same one.
        all.get_or_make(meta(2, "two")).expect("another key");
        assert!(!all.get_or_make(meta(1, "one")).expect("again").1);
        let off = DurableConfig {
            max_bytes: 0,
            max_per_key: 4,
        };
        let other = tempfile::tempdir().expect("tempdir");
        let none = Durables::open(other.path(), &off, |_| false).expect("open");
        assert!(matches!(none.get_or_make(meta(3, "x")), Err(Refused::Off)));
    }
}
