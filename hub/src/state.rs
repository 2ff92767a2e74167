//! The hub's state: the point table, who is connected, writes on their way, the chain of hubs
//! around this one, access and audit, and the HTTP side's sessions. Built by [`crate::Hub::build`].

use crate::config::HubConfig;
use crate::core::Core;
use dashmap::DashMap;
use pointhub_link::identity::Fingerprint;
use pointhub_link::SessionTx;
use pointhub_schemas::ErrorCode;
use pointhub_schemas::{DataType, Limits, Value, WriteResult};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Who is on the other end of a TLS connection.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    pub fingerprint: Option<Fingerprint>,
}

/// A connected node, as the hub sees it.
#[derive(Clone)]
pub struct LiveNode {
    pub name: String,
    pub fingerprint: Fingerprint,
    pub session: u64,
    pub role: pointhub_schemas::Role,
    pub tx: SessionTx,
    pub remote: SocketAddr,
    pub stats: Arc<pointhub_link::SessionStats>,
    pub software: String,
    /// A client's subscription, for its queue figures.
    pub sub: Option<Arc<crate::core::Subscriber>>,
}

/// The running hub.
pub struct Hub {
    pub(crate) name: Arc<str>,
    pub(crate) config: HubConfig,
    pub(crate) core: Core,
    /// Keys, tokens, pending keys and the audit log.
    pub(crate) access: crate::access::Access,
    /// Live sessions by session id.
    pub(crate) live: DashMap<u64, LiveNode>,
    /// The hubs below each child-hub session (their `Chain`), to refuse loops.
    pub(crate) below: DashMap<u64, Vec<String>>,
    /// The hubs above this one, per upstream link: its parent and the parent's own ancestors
    /// (the parent's `Chain`). A child that claims one of them below it is refused: that is a
    /// loop, or a forged chain that would get this hub refused by its parent.
    pub(crate) above: DashMap<usize, Vec<String>>,
    /// Writes on their way to an edge: hub request id → the edge session asked and where the
    /// answer goes. Only that session may answer.
    pub(crate) writes: DashMap<u64, PendingWrite>,
    /// Every upgraded node connection, from before its hello to its end: (key, its token).
    /// A revocation cancels them all, so no connection admitted before it outlives it.
    pub(crate) conns: DashMap<u64, (Fingerprint, CancellationToken)>,
    pub(crate) limits: Limits,
    /// Fires when the hub shuts down; every session is a child of it.
    pub(crate) shutdown: CancellationToken,
    pub(crate) started: std::time::Instant,
    /// Every task the hub starts (connections, sessions, pumps, writes, its loops): shutdown
    /// waits for them, up to the grace period.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Figures for `/metrics`.
    pub(crate) stats: HubStats,
    /// Console sessions (cookie → operator).
    pub(crate) web: crate::web::principal::WebState,
}

/// A write sent to an edge, waiting for its answer.
pub(crate) struct PendingWrite {
    /// The edge session the request went to: a result from any other session is refused.
    pub(crate) session: u64,
    pub(crate) reply: oneshot::Sender<WriteResult>,
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
    /// How many sessions a node has, without copying them.
    pub fn session_count(&self, name: &str) -> usize {
        self.live.iter().filter(|e| e.name == name).count()
    }

    /// Copies of the live sessions of the node named `name` (a client may have several).
    pub fn sessions_of(&self, name: &str) -> Vec<LiveNode> {
        self.live
            .iter()
            .filter(|e| e.name == name)
            .map(|e| e.value().clone())
            .collect()
    }

    /// This hub and every hub below it.
    pub fn chain(&self) -> Vec<String> {
        let mut below: Vec<String> = self.below.iter().flat_map(|e| e.value().clone()).collect();
        below.sort();
        below.dedup();
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
        let children: Vec<LiveNode> = self
            .live
            .iter()
            .filter(|e| e.role == pointhub_schemas::Role::Hub)
            .map(|e| e.value().clone())
            .collect();
        for c in children {
            let clash = self
                .below
                .get(&c.session)
                .and_then(|b| b.iter().find(|h| ancestors.contains(h)).cloned());
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
        let victims: Vec<LiveNode> = self
            .live
            .iter()
            .filter(|e| e.fingerprint == *fp)
            .map(|e| e.value().clone())
            .collect();
        for v in &victims {
            v.tx.fail(ErrorCode::AccessDenied, why.to_string()).await;
        }
        let conns: Vec<CancellationToken> = self
            .conns
            .iter()
            .filter(|e| e.value().0 == *fp)
            .map(|e| e.value().1.clone())
            .collect();
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
