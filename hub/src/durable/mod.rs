//! Durable subscriptions: the last hop of "nothing lost".
//!
//! A client (a historian) names a durable subscription and its patterns. From then on the hub
//! keeps, bounded and on disk (`<data_dir>/durable/`), every update the subscription covers —
//! live values, every one of them, and history replays — until the client says it has stored
//! them: while the client is connected, while it is away or restarting, and across restarts of
//! the hub. When the client attaches again, what it has not acknowledged goes out first, in the
//! order the hub took it in, then what comes live.
//!
//! Three parts: the registry of subscriptions and their on-disk queues ([`registry`]), a feeder
//! per subscription that moves what the hub's table passes on into its queue from the hub's
//! start on ([`feed`]), and the sender of an attached client session ([`send`]).

mod feed;
pub(crate) mod registry;
mod send;

pub(crate) use feed::start;
pub(crate) use send::serve;
