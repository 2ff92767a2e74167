//! The pointhub edge: reads sources on the plant network, keeps the current state of every point,
//! and publishes it to its hub as the authority for those points.
//!
//! - [`config`]: the edge configuration, `edge.toml`, checked once when it loads.
//! - [`sources`]: every source behind one trait: the simulator, Modbus TCP/RTU, MQTT.
//! - [`mqtt_config`]: the configuration of an MQTT source (a broker and its topics).
//! - `points`: the edge's point table (sources' points, then its own `$sys` status points) and
//!   the birth that carries it.
//! - `forward`: store-and-forward: unacknowledged batches kept, the disk buffer while offline,
//!   the replay as history after the next birth.
//! - [`run`]: the run loop: dial (with backoff and jitter), birth on every connect, batches of
//!   changes, write-back to the sources, heartbeats, a death message when stopped.

pub mod config;
mod forward;
pub mod mqtt_config;
mod points;
mod run;
pub mod sources;

pub use config::{ConfigError, EdgeConfig};
pub use run::run;
pub use sources::{Sample, Source, SourceContext, SourceHandle, SourceWrite};

/// Why an edge cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The `[hub]` section or the node's key.
    #[error(transparent)]
    Link(#[from] pointhub_link::SectionError),
    /// The store-and-forward buffer cannot be opened.
    #[error(transparent)]
    Buffer(#[from] pointhub_spool::BufferError),
}
