//! The node link every pointhub node shares: the hub, its edges, its clients and hubs that chain.
//!
//! - [`identity`]: a node's key pair and certificate (`pointhub keygen`), and fingerprints.
//! - [`tls`]: rustls configurations for both ends, with one signature-checking core: a node
//!   verifies its hub by a pinned fingerprint or a CA; the hub accepts any client key at the TLS
//!   layer and decides by fingerprint per route.
//! - [`addr`]: hub addresses (`wss://host:port/node`).
//! - [`session`]: the session driver both ends run over a WebSocket: decoding within limits,
//!   heartbeats and round trip, coalesced writes, a bad frame answered with a coded error.
//! - [`mod@dial`]: dialling a hub (TCP, TLS 1.3, WebSocket, hello/welcome), and the best of several.
//! - [`retry`]: exponential backoff with jitter, and the order to try hubs in.
//! - [`config`]: the `[hub]` section of a node's configuration, and the settings an `[[upstream]]`
//!   gives, built into a [`LinkConfig`] in one place.

pub mod addr;
pub mod config;
pub mod dial;
pub mod identity;
pub mod retry;
pub mod session;
pub mod tls;

pub use addr::{AddrError, HubAddr, DEFAULT_PORT};
pub use config::{HubSection, LinkSettings, SectionError};
pub use dial::{dial, dial_any, dial_over, Link, LinkConfig, LinkError, SOFTWARE};
pub use identity::{Fingerprint, Identity, IdentityError};
pub use retry::{order_by_rtt, probe, Backoff};
pub use session::{
    close_reason, spawn_session, FrameKind, Outgoing, Session, SessionOpts, SessionStats,
    SessionTx, WsMessage, WS_READ_BUFFER,
};
pub use tls::{ServerVerification, TlsError};
