//! The pointhub client library: a local mirror of subscribed points with their quality, and the
//! sinks that feed what sits next to a client node.
//!
//! - [`client`]: a client that keeps a local mirror of subscribed points with their quality,
//!   marks the whole mirror stale by itself when its hub link closes or goes silent, and writes.
//! - [`sinks`]: one seam for what the mirror feeds: JSON lines, a local Modbus TCP server.
//! - [`config`]: a client node's configuration file.
//!
//! The link to the hub (identity, TLS, dialling, reconnect) is the `pointhub-link` crate, which
//! every node shares; the types a client's user needs from it are re-exported here.

pub mod client;
pub mod config;
pub mod sinks;

pub use client::{Client, ClientError, ClientOptions, Event, Mark, PointRecord, WriteOutcome};
pub use config::{ClientConfig, ConfigError};
pub use pointhub_link::{
    Fingerprint, HubAddr, HubSection, Identity, IdentityError, LinkConfig, LinkError,
    ServerVerification,
};
