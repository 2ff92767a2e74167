//! The pointhub client library, and the node link every pointhub node shares.
//!
//! - [`identity`]: a node's key pair and certificate (`pointhub keygen`), and fingerprints.
//! - [`tls`]: rustls configurations: a node verifies its hub by a pinned fingerprint or a CA; the
//!   hub accepts any client key at the TLS layer and decides by fingerprint per route.
//! - [`link`]: dial a hub (TCP, TLS 1.3, WebSocket, hello/welcome), heartbeats and round trip,
//!   reconnect with exponential backoff and jitter. Edges, clients and hubs that chain all use it.
//! - [`client`]: a client that keeps a local mirror of subscribed points with their quality,
//!   marks the whole mirror stale by itself when its hub link closes or goes silent, and writes.

pub mod client;
pub mod config;
pub mod identity;
pub mod link;
pub mod tls;

pub use client::{Client, ClientError, Event, PointRecord, WriteOutcome};
pub use identity::{Fingerprint, Identity, IdentityError};
pub use link::{HubAddr, LinkConfig, LinkError};
pub use tls::ServerVerification;
pub mod modbus;
