//! pointhub's OPC UA side.
//!
//! OPC UA's StatusCodes *are* pointhub's qualities, so a code passes unchanged from a device's
//! UA server, across the hubs, to a SCADA. This crate holds the conversions ([`convert`]) and
//! the edge's UA client source ([`source`], configured by [`OpcUaConfig`]).
//!
//! The UA stack is `async-opcua` (client and server in one maintained, pure-Rust project on
//! tokio, crypto by the RustCrypto crates, no OpenSSL): see `docs/opcua.md` for why.

pub mod config;
pub mod convert;
mod session;
pub mod source;

pub use config::{OpcUaConfig, OpcUaConfigError, OpcUaPoint};
pub use session::SessionError;
pub use source::{run, Change, Write};
