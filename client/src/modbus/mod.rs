//! Modbus on the client side of pointhub, and the register codec edges share.
//!
//! - [`map`]: register maps: tables, data types, word and byte orders, scale and offset; decoding
//!   registers into values and encoding values into registers; validation with the config line.
//! - [`server`]: a local Modbus TCP server that serves mirrored points to an HMI or SCADA, and
//!   turns its writes into write-backs through the hub.

pub mod map;
pub mod server;
