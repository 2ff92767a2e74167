//! The historian sink: the client's records become rows ([`Recorder`]), the rows go to an
//! on-disk buffer at once (live rows and history replays in two buffers), and a writer moves
//! them to PostgreSQL in batches, live rows first, forgetting a batch only once the database
//! committed it. A database that is down or slow costs nothing but buffer space; a long backfill
//! delays live rows by one batch at most.

use crate::db::Db;
use crate::row::{Recorder, Row};
use crate::target::Target;
use crate::HistorianError;
use pointhub_client::client::{Client, Event, Mark};
use pointhub_client::config::HistorianSection;
use pointhub_client::sinks::{Sink, SinkError, SinkRun};
use pointhub_spool::Buffer;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often rows received are put in the buffer, at the latest.
const FLUSH: Duration = Duration::from_millis(100);
/// Longest wait between two attempts to reach the database.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A batch the database has not committed within this is given up and retried.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Records points in PostgreSQL (`[historian]` in `client.toml`).
pub struct Historian {
    section: HistorianSection,
    database: Target,
}

impl Historian {
    /// A historian for `section`; refuses a connection string that does not parse.
    pub fn new(section: HistorianSection) -> Result<Historian, HistorianError> {
        let mut database = Target::new(&section)?;
        if database.config.get_connect_timeout().is_none() {
            database.config.connect_timeout(Duration::from_secs(5));
        }
        Ok(Historian { section, database })
    }
}

/// The two buffers: live rows and history replays, each bounded.
struct Buffers {
    live: Mutex<Buffer<Row>>,
    history: Mutex<Buffer<Row>>,
}

/// Which buffer a batch came from.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Live,
    History,
}

impl Buffers {
    fn open(section: &HistorianSection) -> Result<Buffers, HistorianError> {
        let half = section.buffer_max_bytes / 2;
        Ok(Buffers {
            live: Mutex::new(Buffer::open(&section.buffer_dir.join("live"), half)?),
            history: Mutex::new(Buffer::open(&section.buffer_dir.join("history"), half)?),
        })
    }

    fn of(&self, kind: Kind) -> &Mutex<Buffer<Row>> {
        match kind {
            Kind::Live => &self.live,
            Kind::History => &self.history,
        }
    }

    /// Appends rows; returns how many old rows a full buffer dropped.
    fn push(&self, kind: Kind, rows: &[Row]) -> Result<u64, HistorianError> {
        let mut b = self.of(kind).lock().unwrap_or_else(|p| p.into_inner());
        let before = b.dropped;
        b.push(rows)?;
        Ok(b.dropped - before)
    }

    /// The oldest batch, live rows first.
    fn next_batch(
        &self,
        n: usize,
    ) -> Result<Option<(Kind, pointhub_spool::Key, Vec<Row>)>, HistorianError> {
        for kind in [Kind::Live, Kind::History] {
            let b = self.of(kind).lock().unwrap_or_else(|p| p.into_inner());
            let batch = b.peek(n)?;
            if let Some(&(last, _)) = batch.last() {
                return Ok(Some((
                    kind,
                    last,
                    batch.into_iter().map(|(_, r)| r).collect(),
                )));
            }
        }
        Ok(None)
    }

    fn forget_through(&self, kind: Kind, seq: pointhub_spool::Key) -> Result<(), HistorianError> {
        let mut b = self.of(kind).lock().unwrap_or_else(|p| p.into_inner());
        Ok(b.remove_through(seq)?)
    }

    fn waiting(&self) -> (u64, u64) {
        let len = |m: &Mutex<Buffer<Row>>| m.lock().map_or(0, |b| b.len());
        (len(&self.live), len(&self.history))
    }
}

/// Runs blocking buffer work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HistorianError> + Send + 'static,
) -> Result<T, HistorianError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HistorianError::Output(std::io::Error::other(e)))?
}

impl Sink for Historian {
    fn kind(&self) -> &'static str {
        "historian"
    }

    fn patterns(&self) -> Vec<String> {
        self.section.points.clone()
    }

    fn history(&self) -> bool {
        true
    }

    fn durable(&self) -> Option<String> {
        Some(self.section.durable.clone()).filter(|d| !d.is_empty())
    }

    fn run(
        self: Box<Self>,
        client: Client,
        events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> SinkRun {
        Box::pin(async move {
            self.serve(client, events, shutdown)
                .await
                .map_err(|e| SinkError::Failed {
                    sink: "historian",
                    source: Box::new(e),
                })
        })
    }
}

impl Historian {
    async fn serve(
        self,
        client: Client,
        mut events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> Result<(), HistorianError> {
        let buffers = Arc::new(Buffers::open(&self.section)?);
        let (live, history) = buffers.waiting();
        if live + history > 0 {
            info!(live, history, "rows from an earlier run wait in the buffer");
        }
        let stop = shutdown.child_token();
        let wake = Arc::new(Notify::new());
        let writer = tokio::spawn(write_loop(
            buffers.clone(),
            self.database.clone(),
            self.section.batch_rows,
            wake.clone(),
            stop.clone(),
        ));
        let mut recorder = Recorder::default();
        let (mut live, mut history): (Vec<Row>, Vec<Row>) = (Vec::new(), Vec::new());
        let mut tick = tokio::time::interval(FLUSH);
        let batch = self.section.batch_rows;
        let mut result = Ok(());
        // The hub's batches whose rows are all received: acknowledged once those rows are in
        // the buffer on disk.
        let mut received: Option<Mark> = None;
        loop {
            let flush = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => true,
                ev = events.recv() => match ev {
                    None => break,
                    Some(Event::Update(r)) => {
                        if let Some(row) = recorder.row(&r) {
                            if row.history { history.push(row) } else { live.push(row) }
                        }
                        // A full batch goes to the buffer at once, not at the next tick.
                        live.len() + history.len() >= batch
                    }
                    Some(Event::Connected { hub, hub_name }) => {
                        info!(hub = %hub, name = %hub_name, "historian connected to its hub");
                        false
                    }
                    Some(Event::Disconnected { reason }) => {
                        warn!(reason = %reason, "historian lost its hub; reconnecting");
                        false
                    }
                    Some(Event::SnapshotDone { .. }) => false,
                    Some(Event::Stored(mark)) => {
                        received = Some(mark);
                        false
                    }
                },
            };
            if flush {
                if let Err(e) = store(&buffers, &mut live, &mut history).await {
                    result = Err(e);
                    break;
                }
                if let Some(mark) = received.take() {
                    client.ack(mark).await;
                }
                wake.notify_one();
            }
        }
        // Whatever arrived is kept for the next run, then the writer stops.
        let kept = store(&buffers, &mut live, &mut history).await;
        stop.cancel();
        let written = writer
            .await
            .map_err(|e| HistorianError::Output(std::io::Error::other(e)))??;
        let (live, history) = buffers.waiting();
        info!(
            written,
            waiting_live = live,
            waiting_history = history,
            "historian stopped"
        );
        result.and(kept)
    }
}

/// Puts the rows received in the buffers.
async fn store(
    buffers: &Arc<Buffers>,
    live: &mut Vec<Row>,
    history: &mut Vec<Row>,
) -> Result<(), HistorianError> {
    if live.is_empty() && history.is_empty() {
        return Ok(());
    }
    let (l, h) = (std::mem::take(live), std::mem::take(history));
    let b = buffers.clone();
    let dropped =
        blocking(move || Ok(b.push(Kind::Live, &l)? + b.push(Kind::History, &h)?)).await?;
    if dropped > 0 {
        warn!(
            dropped,
            "historian buffer full: the oldest rows were dropped (raise historian.buffer_max_bytes, or bring the database back)"
        );
    }
    Ok(())
}

/// Moves batches from the buffers to the database until `stop`; returns the rows written.
async fn write_loop(
    buffers: Arc<Buffers>,
    cfg: Target,
    batch: usize,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> Result<u64, HistorianError> {
    let mut db: Option<Db> = None;
    let mut backoff = Duration::from_millis(250);
    let mut written = 0u64;
    while !stop.is_cancelled() {
        let Some(conn) = db.as_mut() else {
            match Db::connect(&cfg).await {
                Ok(d) => {
                    info!("historian database connected; schema up to date");
                    db = Some(d);
                    backoff = Duration::from_millis(250);
                }
                Err(e @ HistorianError::SchemaTooNew { .. }) => return Err(e),
                Err(e) => {
                    let (live, history) = buffers.waiting();
                    warn!(error = %e, retry_ms = backoff.as_millis() as u64, live, history, "historian database unreachable; rows wait in the buffer");
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            continue;
        };
        let b = buffers.clone();
        let Some((kind, last, rows)) = blocking(move || b.next_batch(batch)).await? else {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            continue;
        };
        match tokio::time::timeout(WRITE_TIMEOUT, conn.write(&rows)).await {
            Ok(Ok(_new)) => {
                let b = buffers.clone();
                blocking(move || b.forget_through(kind, last)).await?;
                written += rows.len() as u64;
            }
            Ok(Err(e)) => {
                warn!(error = %e, batch = ?kind, rows = rows.len(), "historian batch not committed; it stays in the buffer and is retried");
                db = None;
            }
            Err(_) => {
                warn!(
                    timeout_s = WRITE_TIMEOUT.as_secs(),
                    "historian batch not committed in time; reconnecting"
                );
                db = None;
            }
        }
    }
    Ok(written)
}
