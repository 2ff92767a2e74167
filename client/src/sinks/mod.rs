//! Where a client's points go: one seam for every sink.
//!
//! The client keeps the mirror and its quality ([`Client`]); a sink only renders it for what sits
//! next to the client node: JSON lines for a script or a log shipper ([`lines`]), a local Modbus
//! TCP server for an HMI ([`modbus`]); an OPC UA server, an MQTT publisher and a SQL historian
//! plug in the same way. A sink names the points it needs; [`run`] starts a client subscribed to
//! them and hands the sink the client and its events until shutdown.

pub mod lines;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "mqtt")]
pub mod sparkplug;

use crate::client::{Client, ClientOptions, Event};
use pointhub_link::LinkConfig;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a sink stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink's own socket or file failed.
    #[error("{sink}: {source}")]
    Io {
        /// Which sink failed, for messages: `modbus server`.
        sink: &'static str,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The sink cannot go on (its database refused it, its buffer failed, …).
    #[error("{sink}: {source}")]
    Failed {
        /// Which sink failed.
        sink: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A sink's run, boxed so sinks of different kinds share one seam.
pub type SinkRun = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send>>;

/// Something fed from a client's mirror.
pub trait Sink: Send + 'static {
    /// What the sink is, for messages: `modbus server`, `json lines`.
    fn kind(&self) -> &'static str;
    /// The point patterns this sink needs the client subscribed to.
    fn patterns(&self) -> Vec<String>;
    /// Whether it wants replays of buffered history as well (flagged as such).
    fn history(&self) -> bool {
        false
    }
    /// The durable subscription it takes its points from, if any: then it acknowledges each
    /// batch ([`Event::Stored`]) once it has stored it.
    fn durable(&self) -> Option<String> {
        None
    }
    /// Runs with the client until `shutdown` fires or the sink ends by itself.
    fn run(
        self: Box<Self>,
        client: Client,
        events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> SinkRun;
}

/// Starts a client over `link` subscribed to what `sink` needs, and runs the sink.
pub async fn run(
    link: LinkConfig,
    sink: Box<dyn Sink>,
    shutdown: CancellationToken,
) -> Result<(), SinkError> {
    let opts = ClientOptions {
        patterns: sink.patterns(),
        history: sink.history(),
        durable: sink.durable(),
    };
    let (client, events) = Client::spawn(link, opts, shutdown.clone());
    sink.run(client, events, shutdown).await
}
