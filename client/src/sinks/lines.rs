//! A sink that prints every change of its points, with quality, one line each: JSON for scripts
//! and log shippers, aligned columns for a terminal (`pointhub client watch`). Link changes go to
//! the error stream, so the lines stay machine-readable.

use super::{Sink, SinkRun};
use crate::client::{Client, Event, PointRecord};
use std::io::Write;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How each change is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// One JSON object per change.
    Json,
    /// Aligned columns for a terminal.
    Table,
}

/// Prints changes of `patterns` to standard output until shutdown or until the output closes.
#[derive(Clone, Debug)]
pub struct Lines {
    /// Point patterns: `plant1/**`, `plant1/*/speed`.
    pub patterns: Vec<String>,
    /// Also print replays of buffered history, flagged `"history": true`.
    pub history: bool,
    /// How each line looks.
    pub format: LineFormat,
    /// Take the points from this durable subscription: each batch is acknowledged to the hub
    /// once its lines are written and flushed.
    pub durable: Option<String>,
}

/// One change as a terminal line: source time, name, value, quality.
pub fn table_line(r: &PointRecord) -> String {
    let ts = if r.source_ts.is_never() {
        "-".to_string()
    } else {
        r.source_ts.to_rfc3339()
    };
    format!(
        "{ts:<28} {:<40} {:>16} {}",
        r.name,
        r.value.to_string(),
        r.quality
    )
}

impl Sink for Lines {
    fn kind(&self) -> &'static str {
        "json lines"
    }

    fn patterns(&self) -> Vec<String> {
        self.patterns.clone()
    }

    fn history(&self) -> bool {
        self.history || self.durable.is_some()
    }

    fn durable(&self) -> Option<String> {
        self.durable.clone()
    }

    fn run(
        self: Box<Self>,
        client: Client,
        mut events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> SinkRun {
        Box::pin(async move {
            let stdout = std::io::stdout();
            loop {
                let ev = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    ev = events.recv() => ev,
                };
                let Some(ev) = ev else { break };
                match ev {
                    Event::Update(r) => {
                        let line = match self.format {
                            LineFormat::Json => r.to_json().to_string(),
                            LineFormat::Table => table_line(&r),
                        };
                        let mut out = stdout.lock();
                        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                            break; // the reader went away: a normal end for a pipe
                        }
                    }
                    Event::Connected { hub, hub_name } => {
                        eprintln!("connected to {hub_name} at {hub}")
                    }
                    Event::Disconnected { reason } => {
                        eprintln!("disconnected: {reason}; every point is now stale; reconnecting")
                    }
                    Event::SnapshotDone { .. } => {}
                    // Every line before it is written and flushed.
                    Event::Stored(mark) => client.ack(mark).await,
                }
            }
            Ok(())
        })
    }
}
