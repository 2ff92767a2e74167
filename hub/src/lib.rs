//! The pointhub hub: accepts node sessions on one TLS port, owns the point table, fans out,
//! and tracks authority and liveness.
//!
//! - [`config`]: the hub configuration, `hub.toml`.
//! - [`core`]: the point table, subscribers and their conflating queues.
//! - [`lifecycle`]: [`Hub::build`] (loads and checks everything, binds nothing), then
//!   [`Built::serve`] on bound listeners, and the orderly shutdown.
//! - [`server`]: the hub's state, the TLS accept loop and the HTTP router (`/node` for node
//!   sessions).
//! - [`session`]: one node session (edge or client) from hello to close.
//! - `saver`: last values to the store every second, on a low-priority thread.
//!
//! Entry point: [`Hub::build`] then [`Built::serve`] (or [`run`], both at once) with bound
//! listeners and a cancellation token.

pub mod access;
pub mod admin;
pub mod audit;
mod audit_limit;
pub mod config;
pub mod core;
pub mod lifecycle;
mod saver;
pub mod server;
pub mod session;
pub mod store;
pub mod throttle;
pub mod upstream;
pub mod web;

pub use config::HubConfig;
pub use lifecycle::{run, Built};
pub use server::{Hub, HubError};
