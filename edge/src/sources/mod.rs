//! Where an edge's points come from: every source behind one trait.
//!
//! A source owns a run of consecutive point ids from the base it is given, reports changes as
//! [`Sample`]s on one channel the edge drains, and answers writes to its writable points on its
//! own channel. The simulator ([`sim`]), Modbus ([`modbus`]), MQTT ([`mqtt`]) and OPC UA
//! ([`opcua`]) are sources; another plugs in the same way: a config type, an `impl Source`, a
//! variant of [`SourceConfig`].

pub mod modbus;
pub mod mqtt;
pub mod opcua;
pub mod sim;

use crate::config::SourceConfig;
use pointhub_schemas::{PointDef, Quality, Timestamp, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// A change a source reports: local point id, value, quality, when the device said it.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The point's id, from the base the source was given.
    pub id: u32,
    /// The value read.
    pub value: Value,
    /// Its quality, as the source judges it (a device that does not answer: bad).
    pub quality: Quality,
    /// When the device said it (or when it was read).
    pub ts: Timestamp,
}

/// A write handed to a source; it answers with the outcome.
pub struct SourceWrite {
    /// The point's id.
    pub id: u32,
    /// The value to write.
    pub value: Value,
    /// The outcome: `Good` once the device took it, or why not.
    pub reply: oneshot::Sender<(Quality, String)>,
}

/// A running source: its points, and where its writes go.
pub struct SourceHandle {
    /// The points it owns, ids from its base in order.
    pub points: Vec<PointDef>,
    /// Writes to its writable points.
    pub writes: mpsc::Sender<SourceWrite>,
}

/// What a source is given when it starts.
#[derive(Clone)]
pub struct SourceContext {
    /// The edge's name (its `$sys` points live below `$sys/<edge>/`).
    pub edge: String,
    /// The namespace the edge's points live below.
    pub namespace: String,
    /// The id of the source's first point.
    pub base: u32,
    /// Where changes go.
    pub samples: mpsc::Sender<Vec<Sample>>,
    /// Fires when the edge stops.
    pub shutdown: CancellationToken,
}

/// A source of points.
pub trait Source {
    /// Its name, the segment below the edge's namespace.
    fn name(&self) -> &str;
    /// Starts reading; its points are numbered from `ctx.base`, in order.
    fn start(&self, ctx: SourceContext) -> SourceHandle;
}

impl SourceConfig {
    /// The configured source.
    pub fn source(&self) -> &dyn Source {
        match self {
            SourceConfig::Simulator(s) => s,
            SourceConfig::Modbus(m) => m,
            SourceConfig::Mqtt(m) => m,
            SourceConfig::Opcua(u) => u,
        }
    }
}
