//! The hub's state: the point table, who is connected, writes on their way, the chain of hubs
//! around this one, access and audit, and the HTTP side's sessions. Built by [`crate::Hub::build`].

mod sessions;
mod writes;

pub(crate) use sessions::LiveNode;
pub(crate) use sessions::Sessions;
pub(crate) use writes::{Answer, PendingWrites};

use crate::config::HubConfig;
use crate::core::Core;
use dashmap::DashMap;
use pointhub_link::identity::Fingerprint;
use pointhub_schemas::ErrorCode;
use pointhub_schemas::{DataType, Limits, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// Who is on the other end of a TLS connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub fingerprint: Option<Fingerprint>,
}

/// The running hub. Its fields are its own; the hub's rooms reach them through the methods
/// below: the shared services by reference, the registries through their narrow methods.
pub struct Hub {
    name: Arc<str>,
    config: HubConfig,
    core: Core,
    /// Keys, tokens, pending keys and the audit log.
    access: crate::access::Access,
    /// Connections and live sessions, and the hubs below each child hub.
    sessions: Sessions,
    /// The hubs above this one, per upstream link: its parent and the parent's own ancestors
    /// (the parent's `Chain`). A child that claims one of them below it is refused: that is a
    /// loop, or a forged chain that would get this hub refused by its parent.
    above: DashMap<usize, Vec<String>>,
    /// Writes on their way to an authority.
    writes: PendingWrites,
    /// Durable subscriptions and their queues on disk.
    durables: crate::durable::registry::Durables,
    /// What must hold a batch before its sender gets it acknowledged.
    keepers: crate::keep::Keepers,
    limits: Limits,
    /// Fires when the hub shuts down; every session is a child of it.
    shutdown: CancellationToken,
    started: std::time::Instant,
    /// Every task the hub starts (connections, sessions, pumps, writes, its loops): shutdown
    /// waits for them, up to the grace period.
    tasks: TaskTracker,
    /// Figures for `/metrics`.
    stats: HubStats,
    /// Console sessions (cookie → operator).
    web: crate::web::principal::WebState,
}

/// Counters the hub keeps for `/metrics`.
#[derive(Default)]
pub(crate) struct HubStats {
    pub(crate) updates_out: std::sync::atomic::AtomicU64,
    pub(crate) refused: std::sync::atomic::AtomicU64,
    pub(crate) writes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl HubStats {
    pub(crate) fn count_write(&self, status: &str) {
        if let Ok(mut w) = self.writes.lock() {
            *w.entry(status.to_string()).or_default() += 1;
        }
    }
}

impl Hub {
    /// A hub with an empty registry, from what [`crate::Hub::build`] loaded and checked.
    pub(crate) fn new(
        config: HubConfig,
        access: crate::access::Access,
        durables: crate::durable::registry::Durables,
        limits: Limits,
    ) -> Self {
        Hub {
            name: config.name.as_str().into(),
            access,
            core: Core::new(config.limits.max_points_per_node),
            sessions: Sessions::default(),
            writes: PendingWrites::default(),
            durables,
            keepers: crate::keep::Keepers::default(),
            above: DashMap::new(),
            limits,
            shutdown: CancellationToken::new(),
            started: std::time::Instant::now(),
            tasks: TaskTracker::new(),
            stats: HubStats::default(),
            web: crate::web::principal::WebState::default(),
            config,
        }
    }

    /// The hub's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The point table and its subscribers.
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Keys, tokens, users and the audit log.
    pub fn access(&self) -> &crate::access::Access {
        &self.access
    }

    /// Connections and live sessions.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Writes waiting for their authority.
    pub(crate) fn writes(&self) -> &PendingWrites {
        &self.writes
    }

    /// Durable subscriptions and their queues on disk.
    pub(crate) fn durables(&self) -> &crate::durable::registry::Durables {
        &self.durables
    }

    /// The upstream spools and durable queues a batch must reach before it is acknowledged.
    pub(crate) fn keepers(&self) -> &crate::keep::Keepers {
        &self.keepers
    }

    /// The frame and name limits sessions are held to.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Fires when the hub shuts down.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// How long the hub has run.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every task the hub starts.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Figures for `/metrics`.
    pub(crate) fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Console sessions.
    pub(crate) fn web(&self) -> &crate::web::principal::WebState {
        &self.web
    }

    /// Upstream link `index` is connected to a parent whose chain is `hubs` (the parent first).
    pub(crate) fn set_above(&self, index: usize, hubs: Vec<String>) {
        self.above.insert(index, hubs);
    }

    /// Upstream link `index` is down.
    pub(crate) fn clear_above(&self, index: usize) {
        self.above.remove(&index);
    }

    /// How many sessions a node has, without copying them.
    pub fn session_count(&self, name: &str) -> usize {
        self.sessions.count_of(name)
    }

    /// Copies of the live sessions of the node named `name` (a client may have several).
    pub fn sessions_of(&self, name: &str) -> Vec<LiveNode> {
        self.sessions.filtered(|n| n.name == name)
    }

    /// This hub and every hub below it.
    pub fn chain(&self) -> Vec<String> {
        let mut below = self.sessions.all_below();
        below.retain(|h| h != self.name.as_ref());
        let mut out = vec![self.name.to_string()];
        out.extend(below);
        out
    }

    /// Every hub above this one, over all its upstream links.
    pub fn ancestors(&self) -> Vec<String> {
        let mut above: Vec<String> = self.above.iter().flat_map(|e| e.value().clone()).collect();
        above.sort();
        above.dedup();
        above
    }

    /// What this hub tells a child hub: itself and every hub above it.
    pub fn chain_down(&self) -> Vec<String> {
        let mut out = vec![self.name.to_string()];
        out.extend(self.ancestors());
        out
    }

    /// The ancestors changed: tells every child hub, and ends a child that claims an ancestor
    /// below it (a loop, or a forged chain).
    pub async fn ancestors_changed(&self) {
        let ancestors = self.ancestors();
        let down = self.chain_down();
        let children = self.sessions.of_role(pointhub_schemas::Role::Hub);
        for c in children {
            let clash = self.sessions.below_clash(c.session, &ancestors);
            match clash {
                Some(h) => {
                    warn!(child = %c.name, hub = %h, "a child hub claims a hub above this one: ended");
                    c.tx.fail(ErrorCode::Conflict, loop_message(&self.name, &c.name, &h))
                        .await;
                }
                None => {
                    c.tx.send(pointhub_schemas::Msg::Chain(pointhub_schemas::Chain {
                        hubs: down.clone(),
                    }))
                    .await;
                }
            }
        }
    }

    /// Ends every session of a key at once (after a revocation): live ones are told why, and
    /// every connection of the key, also one upgraded but still before its hello, is cancelled
    /// a moment later (the moment lets the reason reach the live ones).
    pub async fn end_sessions_of_key(&self, fp: &Fingerprint, why: &str) -> usize {
        let victims = self.sessions.filtered(|n| n.fingerprint == *fp);
        for v in &victims {
            v.tx.fail(ErrorCode::AccessDenied, why.to_string()).await;
        }
        let conns = self.sessions.connections_of_key(fp);
        let n = conns.len().max(victims.len());
        self.tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for c in conns {
                c.cancel();
            }
        });
        n
    }

    /// How often pings go out: `[heartbeat] interval_ms`.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.heartbeat.interval_ms))
    }

    /// How long a silent link lives: `[heartbeat] timeout_ms`.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.heartbeat.timeout_ms))
    }

    /// Sets one of the hub's own `$sys/…` points.
    pub fn set_sys(&self, path: &str, dtype: DataType, value: Value) {
        self.core.set_local(&self.name, path, dtype, value);
    }
}

/// Why a child hub is refused: it claims a hub below it that is this hub or above it.
pub(crate) fn loop_message(hub: &str, child: &str, clash: &str) -> String {
    if clash == hub {
        format!("loop in the hub chain: hub {hub} is already below {child}; remove one of the upstream links")
    } else {
        format!(
            "loop in the hub chain: hub {child} reports hub {clash} below it, but {clash} is above hub {hub}; \
             remove one of the upstream links (a child that forges its chain is refused, not its parents)"
        )
    }
}
