//! The pointhub wire protocol: everything two pointhub nodes say to each other, with no sockets.
//!
//! - [`quality`]: the OPC UA status codes pointhub uses for a point's quality.
//! - [`value`]: point values and data types.
//! - [`name`]: point names (`plant1/line2/pump3/speed`) and patterns (`plant1/**`).
//! - [`time`]: timestamps (microseconds since the Unix epoch) and their RFC 3339 form.
//! - [`msg`]: the messages of a node session.
//! - [`codec`]: the binary codec (postcard), bounded by [`codec::Limits`].
//! - [`json`]: the JSON record of a point, as the client CLI prints it.
//!
//! A node session is a WebSocket over TLS; each binary frame holds exactly one [`msg::Msg`].

pub mod codec;
pub mod json;
pub mod msg;
pub mod name;
pub mod quality;
pub mod sys;
pub mod time;
pub mod value;

pub use codec::{decode, encode, DecodeError, Limits};
pub use msg::*;
pub use name::{NameError, Pattern};
pub use quality::Quality;
pub use time::Timestamp;
pub use value::{DataType, Value};

/// Major version of the protocol: a peer with another major version is refused.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Minor version: additions that older peers of the same major can ignore.
pub const PROTOCOL_MINOR: u16 = 1;
