//! The pointhub hub: accepts node sessions on one TLS port, owns the point table, fans out,
//! and tracks authority and liveness.
//!
//! Modules, by job (none imports one that imports it back; only the store, access, audit, admin,
//! config and lifecycle modules are public, the rest are the hub's own):
//! - [`lifecycle`]: [`Hub::build`] (loads and checks everything, binds nothing), then
//!   [`Built::serve`] on bound listeners, and the orderly shutdown.
//! - `state`: the hub's state ([`Hub`]): who is connected, writes on their way, the hubs
//!   above and below.
//! - `server`: the TLS accept loop, the HTTP router (`/node` for node sessions) and the hub's
//!   own `$sys` figures.
//! - `session`: one node session from hello to close: admission and registration
//!   (`session/mod.rs`), an authority's loop (`authority.rs`), a client's loop and its pump
//!   (`client.rs`), write routing (`write.rs`).
//! - `web`: the HTTP side for people and scripts: who is asking (`principal.rs`, `auth.rs`),
//!   REST (`rest.rs`), the JSON WebSocket (`ws.rs`), metrics (`metrics.rs`).
//! - `upstream`: this hub as a node of a parent hub.
//! - `core`: the point table, subscribers and their conflating queues.
//! - `delivery`: the one delivery step every subscriber's renderer (binary, JSON, upstream) uses.
//! - [`access`], [`store`], [`audit`] (and `audit_limit`), [`admin`]: keys, tokens, users, the
//!   embedded store, the audit log, the operator's socket.
//! - `operator`: an operator's request carried out on the running hub, and the one place a
//!   revocation ends sessions.
//! - [`grant`]: the one grant type (role, name, namespace, read, write) every approval carries.
//! - [`config`]: `hub.toml`; `throttle`: per-session limits on costly requests; `saver`: last
//!   values to the store every second, on a low-priority thread.
//!
//! Entry point: [`Hub::build`] then [`Built::serve`] (or [`run`], both at once) with bound
//! listeners and a cancellation token.

pub mod access;
pub mod admin;
pub mod audit;
mod audit_event;
mod audit_limit;
pub mod config;
mod core;
mod delivery;
mod durable;
pub mod grant;
mod keep;
pub mod lifecycle;
mod named;
mod operator;
mod saver;
mod server;
mod session;
mod state;
pub mod store;
mod throttle;
mod upstream;
mod web;

pub use config::HubConfig;
pub use durable::registry::DurableError;
pub use lifecycle::{run, Built, HubError};
pub use state::Hub;
