//! The pointhub hub: accepts node sessions on one TLS port, owns the point table, fans out,
//! and tracks authority and liveness.
//!
//! - [`config`]: the hub configuration, `hub.toml`.
//! - [`core`]: the point table, subscribers and their conflating queues.
//! - [`server`]: the TLS listener, the HTTP router (`/node` for node sessions), and [`run`].
//! - [`session`]: one node session (edge or client) from hello to close.
//! - `saver`: last values to the store every second, on a low-priority thread.
//!
//! Entry point: [`run`] with bound listeners and a cancellation token.

pub mod access;
pub mod admin;
pub mod audit;
mod audit_limit;
pub mod config;
pub mod core;
mod saver;
pub mod server;
pub mod session;
pub mod store;
pub mod throttle;
pub mod upstream;
pub mod web;

pub use config::HubConfig;
pub use server::{run, Hub, HubError};
