//! Saving last values: every second the points changed since the last save go to the store,
//! so a restarted hub serves them at once (marked stale until their edge is back).
//!
//! The work is split by what it needs. Copying a changed point out of the table needs the
//! table lock, which every session needs too; that part is short (a slice of [`TAKE_SLICE`]
//! points under the lock, a few tens of microseconds) and runs in a task at normal priority,
//! so it never holds the lock while the OS runs someone else. Encoding and writing the points
//! is most of the CPU (≈ 2 µs a point: 20 ms a second at 10,000 changed points) and needs no
//! lock; it runs on a thread of its own at the lowest CPU priority, so a session that wakes
//! takes the core at once. On an ordinary thread the save took a core for tens of
//! milliseconds once a second, and updates that arrived then waited (docs/benchmarks.md).
//! The store is a copy of last values: a late save costs its lateness and nothing else.

use crate::core::{Core, SavedPoint};
use crate::store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Points copied out of the table under one hold of its lock.
const TAKE_SLICE: usize = 250;

/// Slices the saver task may copy ahead of the thread that writes them.
const AHEAD: usize = 8;

/// What the writing thread is asked to do.
#[derive(Debug)]
pub(crate) enum SaveJob {
    /// Changed points, to write (not yet durable).
    Points(Vec<SavedPoint>),
    /// Make every write before it durable, and say how it went (the first failure since the
    /// last commit, if any).
    Commit(oneshot::Sender<Result<(), StoreError>>),
}

/// Starts the thread that writes to `store`; it ends when every sender is dropped.
pub(crate) fn spawn_writer<S>(store: S) -> std::io::Result<mpsc::Sender<SaveJob>>
where
    S: std::ops::Deref<Target = Store> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(AHEAD);
    std::thread::Builder::new()
        .name("pointhub-saver".into())
        .spawn(move || write_saves(&store, rx))?;
    Ok(tx)
}

fn write_saves(store: &Store, mut jobs: mpsc::Receiver<SaveJob>) {
    background_priority();
    let mut failed: Option<StoreError> = None;
    while let Some(job) = jobs.blocking_recv() {
        match job {
            SaveJob::Points(points) => {
                if let Err(e) = store.save_points(&points, false) {
                    failed.get_or_insert(e);
                }
            }
            SaveJob::Commit(done) => {
                let r = match failed.take() {
                    Some(e) => Err(e),
                    None => store.sync(),
                };
                let _ = done.send(r);
            }
        }
    }
}

/// Puts the calling thread at the lowest CPU priority (nice 19), where the OS allows it.
fn background_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        debug!(error = %e, "cannot lower the saver thread's priority");
    }
}

/// Why a save did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SaveError {
    #[error("the saver thread has ended")]
    WriterGone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Saves the points that were changed when it is called, with one disk flush; returns how many.
///
/// Only what was changed when the call began: points that change while it saves wait for the
/// next call (else steady updates keep it going without end). A big birth goes a slice at a
/// time, so the table is never copied whole.
pub(crate) async fn save_changed(
    core: &Core,
    writer: &mpsc::Sender<SaveJob>,
) -> Result<usize, SaveError> {
    let mut left = core.dirty_len();
    let mut saved = 0;
    while left > 0 {
        let points = core.take_dirty(TAKE_SLICE.min(left));
        if points.is_empty() {
            break;
        }
        left = left.saturating_sub(points.len());
        saved += points.len();
        writer
            .send(SaveJob::Points(points))
            .await
            .map_err(|_| SaveError::WriterGone)?;
        // Let the sessions on this worker run between two holds of the table lock.
        tokio::task::yield_now().await;
    }
    if saved > 0 {
        let (done_tx, done) = oneshot::channel();
        writer
            .send(SaveJob::Commit(done_tx))
            .await
            .map_err(|_| SaveError::WriterGone)?;
        done.await.map_err(|_| SaveError::WriterGone)??;
    }
    Ok(saved)
}

/// Saves changed points every second, and once more at shutdown.
pub(crate) async fn run(
    hub: std::sync::Arc<crate::Hub>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let writer = match spawn_writer(Access(hub.clone())) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the saver thread: last values are not saved");
            return;
        }
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let h = hub.clone();
        let seen = tokio::task::spawn_blocking(move || h.access().flush_seen()).await;
        if let Ok(Err(e)) = seen {
            warn!(error = %e, "cannot record when keys were last seen");
        }
        if let Err(e) = save_changed(hub.core(), &writer).await {
            warn!(error = %e, "cannot save last values");
            if matches!(e, SaveError::WriterGone) {
                return;
            }
        }
        if last {
            return;
        }
    }
}

/// The hub's store, for the writing thread.
struct Access(std::sync::Arc<crate::Hub>);

impl std::ops::Deref for Access {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.0.access().store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pointhub_schemas::{DataType, PointDef, Quality, Timestamp, Update, Value};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_save_ends_under_steady_updates_and_keeps_every_last_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path()).expect("store"));
        let core = Arc::new(Core::new(100_000));
        let owner: Arc<str> = "e".into();
        let defs: Vec<PointDef> = (0..5_000)
            .map(|i| PointDef {
                id: i,
                name: format!("e/p{i}"),
                dtype: DataType::UInt,
                unit: None,
                description: None,
                writable: false,
            })
            .collect();
        let gids = core
            .define(&owner, 1, &defs, 0, |_| true, "e")
            .expect("defined");
        let up = |v: u64| Update {
            id: 0,
            value: Value::UInt(v),
            quality: Quality::Good,
            source_ts: Timestamp::now(),
            hub_ts: Timestamp::NEVER,
            flags: 0,
        };
        // A writer keeps changing every point while saves run.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let changer = {
            let (core, stop, gids) = (core.clone(), stop.clone(), gids.clone());
            std::thread::spawn(move || {
                let mut v = 0;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    core.apply(gids.iter().map(|&g| (g, up(v))));
                    std::thread::sleep(Duration::from_millis(1));
                }
                v
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let writer = spawn_writer(store.clone()).expect("saver thread");
        rt.block_on(async {
            // A call saves each point at most once and returns: an earlier saver looped as long
            // as points kept changing.
            for _ in 0..3 {
                let saved =
                    tokio::time::timeout(Duration::from_secs(60), save_changed(&core, &writer))
                        .await
                        .expect("a save that ends while points keep changing")
                        .expect("save");
                assert!(saved > 0 && saved <= 5_000, "saved {saved}");
            }
            stop.store(true, Ordering::Relaxed);
        });
        let last = changer.join().expect("changer");
        rt.block_on(async {
            let saved = save_changed(&core, &writer).await.expect("final save");
            assert!(saved <= 5_000, "saved {saved}");
            assert_eq!(core.dirty_len(), 0);
            assert_eq!(save_changed(&core, &writer).await.expect("empty save"), 0);
        });
        drop(writer);
        // The writing thread ends with its last sender; then the store can be reopened.
        let (mut store, t) = (store, std::time::Instant::now());
        let store = loop {
            match Arc::try_unwrap(store) {
                Ok(s) => break s,
                Err(s) if t.elapsed() < Duration::from_secs(10) => {
                    store = s;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => panic!("the saver thread did not end with its last sender"),
            }
        };
        drop(store);
        // Reopened, the store holds every point with its last value.
        let store = Store::open(dir.path()).expect("reopen");
        let points = store.points().expect("points");
        assert_eq!(points.len(), 5_000);
        assert!(
            points.iter().all(|p| p.value == Value::UInt(last)),
            "every point has its last value {last}"
        );
    }
}
