//! Who is connected: every upgraded connection from before its hello (so a revocation reaches
//! it), the live sessions after their welcome, and the hubs each child hub reports below it.

use dashmap::DashMap;
use pointhub_link::identity::Fingerprint;
use pointhub_link::SessionTx;
use pointhub_schemas::Role;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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

/// The hub's registry of connections and sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    /// Live sessions by session id.
    live: DashMap<u64, LiveNode>,
    /// Every upgraded node connection, from before its hello to its end: (key, its token).
    /// A revocation cancels them all, so no connection admitted before it outlives it.
    conns: DashMap<u64, (Fingerprint, CancellationToken)>,
    /// The hubs below each child-hub session (their `Chain`), to refuse loops.
    below: DashMap<u64, Vec<String>>,
}

/// A connection registered with [`Sessions::connection`]: unregistered when dropped.
pub(crate) struct Connection<'a> {
    sessions: &'a Sessions,
    id: u64,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        self.sessions.conns.remove(&self.id);
    }
}

impl Sessions {
    /// Registers an upgraded connection of key `fp` until the returned guard drops.
    pub(crate) fn connection(
        &self,
        id: u64,
        fp: Fingerprint,
        token: CancellationToken,
    ) -> Connection<'_> {
        self.conns.insert(id, (fp, token));
        Connection { sessions: self, id }
    }

    /// The cancellation tokens of every connection of key `fp`.
    pub(crate) fn connections_of_key(&self, fp: &Fingerprint) -> Vec<CancellationToken> {
        self.conns
            .iter()
            .filter(|e| e.value().0 == *fp)
            .map(|e| e.value().1.clone())
            .collect()
    }

    /// A session is live from here on.
    pub(crate) fn insert(&self, node: LiveNode) {
        self.live.insert(node.session, node);
    }

    /// A session is no longer live (and no longer reports hubs below it).
    pub(crate) fn remove(&self, id: u64) {
        self.live.remove(&id);
        self.below.remove(&id);
    }

    /// Whether session `id` is live.
    pub(crate) fn is_live(&self, id: u64) -> bool {
        self.live.contains_key(&id)
    }

    /// The sending side of session `id`, if it is live.
    pub(crate) fn tx(&self, id: u64) -> Option<SessionTx> {
        self.live.get(&id).map(|l| l.tx.clone())
    }

    /// How many sessions are live.
    pub(crate) fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no session is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Copies of the live sessions that `keep` selects.
    pub(crate) fn filtered(&self, keep: impl Fn(&LiveNode) -> bool) -> Vec<LiveNode> {
        self.live
            .iter()
            .filter(|e| keep(e.value()))
            .map(|e| e.value().clone())
            .collect()
    }

    /// Copies of every live session.
    pub(crate) fn all(&self) -> Vec<LiveNode> {
        self.filtered(|_| true)
    }

    /// How many live sessions a node has, without copying them.
    pub(crate) fn count_of(&self, name: &str) -> usize {
        self.live.iter().filter(|e| e.name == name).count()
    }

    /// Copies of the live sessions of role `role`.
    pub(crate) fn of_role(&self, role: Role) -> Vec<LiveNode> {
        self.filtered(|n| n.role == role)
    }

    /// Child hub `id` reports these hubs below it.
    pub(crate) fn set_below(&self, id: u64, hubs: Vec<String>) {
        self.below.insert(id, hubs);
    }

    /// The first of `hubs` that child hub session `id` reports below it.
    pub(crate) fn below_clash(&self, id: u64, hubs: &[String]) -> Option<String> {
        self.below
            .get(&id)
            .and_then(|b| b.iter().find(|h| hubs.contains(h)).cloned())
    }

    /// Every hub any child hub reports below it, sorted, once each.
    pub(crate) fn all_below(&self) -> Vec<String> {
        let mut below: Vec<String> = self.below.iter().flat_map(|e| e.value().clone()).collect();
        below.sort();
        below.dedup();
        below
    }
}
