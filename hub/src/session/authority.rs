//! An authority's session (an edge, or a child hub): births and batches into the table, write
//! results back to their writers, the chain of hubs below; when it ends, its points turn stale.

use crate::config::NodeEntry;
use crate::state::{Answer, Hub};
use pointhub_link::Session;
use pointhub_schemas::name::in_namespace;
use pointhub_schemas::sys::{self, SysNamespace};
use pointhub_schemas::{ErrorCode, Msg, Rebirth, Role};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// The hub is shutting down: everything applied so far is acknowledged once the keepers hold
/// it (they are given a second).
async fn last_ack(hub: &Hub, session: &Session, owed: &mut crate::keep::Owed) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut acked = None;
    loop {
        if let Some(seq) = owed.due(hub.keepers().kept_through()) {
            acked = Some(seq);
        }
        if owed.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(seq) = acked {
        session
            .tx
            .send(Msg::Ack(pointhub_schemas::Ack { seq }))
            .await;
    }
}

pub(super) async fn edge(
    hub: &Arc<Hub>,
    entry: &NodeEntry,
    namespace: &str,
    id: u64,
    session: &mut Session,
) {
    let owner: Arc<str> = entry.grant.name.as_str().into();
    let sys_ns = SysNamespace::of(&entry.grant.name);
    // A child hub forwards what lies below it: its namespace if it has one, or anything, and
    // the `$sys` points of its nodes; never the `$sys` points this hub publishes of itself.
    let own_sys = SysNamespace::of(hub.name());
    let child_hub = entry.grant.role == Role::Hub;
    let allowed = |n: &str| {
        if child_hub {
            !own_sys.contains(n)
                && (entry
                    .grant
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == crate::config::ANY_NAMESPACE)
                    || in_namespace(n, namespace)
                    || sys::is_sys(n))
        } else {
            in_namespace(n, namespace) || sys_ns.contains(n)
        }
    };
    let mut local = LocalIds::new(hub.config().limits.max_points_per_node);
    let mut owned = crate::core::GidSet::default();
    let mut last_seq: Option<u64> = None;
    let mut unknown_ids = 0u64;
    let mut foreign_results = 0u64;
    let max_rate = hub.config().limits.max_updates_per_sec;
    let mut window_start = tokio::time::Instant::now();
    let mut window_updates = 0u64;
    // A batch is acknowledged once every upstream spool and durable queue of this hub holds it.
    let mut owed = crate::keep::Owed::default();
    let mut ack_tick = tokio::time::interval(Duration::from_millis(100));
    ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owing = hub.keepers().owing();
    let mut since_yield = 0u64;
    if child_hub {
        // A child hub learns which hubs are above it, so it refuses a child of its own that
        // claims one of them (rather than pass the claim up and be refused itself).
        session
            .tx
            .send(Msg::Chain(pointhub_schemas::Chain {
                hubs: hub.chain_down(),
            }))
            .await;
    }
    loop {
        let msg = tokio::select! {
            m = session.rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = ack_tick.tick(), if !owed.is_empty() => {
                if let Some(seq) = owed.due(hub.keepers().kept_through()) {
                    let _ = session.tx.try_send(Msg::Ack(pointhub_schemas::Ack { seq }));
                }
                continue;
            }
            _ = hub.keepers().draining().cancelled(), if !owing.is_drained() => {
                last_ack(hub, session, &mut owed).await;
                owing.drained();
                continue;
            }
        };
        if owing.is_drained() && matches!(msg, Msg::Birth(_) | Msg::Data(_)) {
            continue; // not applied, not acknowledged: the node keeps it for the next hub
        }
        match msg {
            Msg::Birth(b) => {
                if b.part == 0 {
                    local.clear();
                }
                match hub
                    .core()
                    .define(&owner, id, &b.points, owned.len(), allowed, namespace)
                {
                    Ok(gids) => {
                        for (d, g) in b.points.iter().zip(gids) {
                            local.insert(d.id, g);
                            owned.insert(g);
                        }
                    }
                    Err(e) => {
                        // A child hub that sends back `$sys` points of this hub (or of a hub
                        // above it) has them from above: the chain is a loop, whatever the
                        // `Chain` messages have said so far.
                        let looped = match &e {
                            crate::core::BirthError::Namespace { name, .. } if child_hub => {
                                std::iter::once(hub.name().to_string())
                                    .chain(hub.ancestors())
                                    .find(|h| SysNamespace::of(h).contains(name))
                            }
                            _ => None,
                        };
                        if let Some(h) = looped {
                            warn!(hub = %h, "refused: a loop in the hub chain (a child sends back points from above)");
                            hub.access().audit.record(
                                crate::audit::Event::ChainRefused,
                                json!({"fingerprint": entry.fingerprint, "name": entry.grant.name, "reason": "loop", "hub": h}),
                            );
                            session
                                .tx
                                .fail(
                                    ErrorCode::Conflict,
                                    crate::state::loop_message(hub.name(), &entry.grant.name, &h),
                                )
                                .await;
                            break;
                        }
                        warn!(error = %e, "birth refused");
                        hub.access().audit.record(
                            crate::audit::Event::PublishRefused,
                            json!({"fingerprint": entry.fingerprint, "name": entry.grant.name, "reason": e.to_string()}),
                        );
                        let code = match e {
                            crate::core::BirthError::Namespace { .. } => ErrorCode::AccessDenied,
                            crate::core::BirthError::Conflict { .. } => ErrorCode::Conflict,
                            crate::core::BirthError::TooMany(_) => ErrorCode::LimitExceeded,
                        };
                        session.tx.fail(code, e.to_string()).await;
                        break;
                    }
                }
                let n = b.states.len() as u64;
                let epoch = hub.core().apply_from(
                    id,
                    b.states
                        .into_iter()
                        .filter_map(|u| local.get(u.id).map(|g| (g, u))),
                );
                owed.applied(b.seq, epoch);
                yield_if_due(&mut since_yield, n, &session.rx).await;
                last_seq = Some(b.seq);
                if b.last {
                    info!(points = local.len(), "birth complete");
                }
            }
            Msg::Data(d) => {
                match last_seq {
                    Some(last) if d.seq != last.wrapping_add(1) => {
                        warn!(
                            expected = last.wrapping_add(1),
                            got = d.seq,
                            "sequence gap; asking the edge for a rebirth"
                        );
                        session
                            .tx
                            .send(Msg::Rebirth(Rebirth {
                                reason: format!(
                                    "gap: expected {} got {}",
                                    last.wrapping_add(1),
                                    d.seq
                                ),
                            }))
                            .await;
                    }
                    None => {
                        session
                            .tx
                            .fail(
                                ErrorCode::Malformed,
                                "data before birth: send a birth first",
                            )
                            .await;
                        break;
                    }
                    _ => {}
                }
                last_seq = Some(d.seq);
                let before = d.updates.len() as u64;
                let mut unknown = 0u64;
                let epoch = hub.core().apply_from(
                    id,
                    d.updates.into_iter().filter_map(|u| match local.get(u.id) {
                        Some(g) => Some((g, u)),
                        None => {
                            unknown += 1;
                            None
                        }
                    }),
                );
                if unknown > 0 {
                    unknown_ids += unknown;
                    warn!(
                        count = unknown_ids,
                        "updates for ids the birth did not define were ignored"
                    );
                }
                let n = before - unknown;
                owed.applied(d.seq, epoch);
                yield_if_due(&mut since_yield, n, &session.rx).await;
                // Throttle an edge past its update rate: stop reading it until the second is over.
                window_updates += n;
                if window_updates > max_rate {
                    let end = window_start + Duration::from_secs(1);
                    if end > tokio::time::Instant::now() {
                        warn!(limit = max_rate, "edge over its update rate: throttled");
                        tokio::time::sleep_until(end).await;
                    }
                    window_start = tokio::time::Instant::now();
                    window_updates = 0;
                } else if window_start.elapsed() >= Duration::from_secs(1) {
                    window_start = tokio::time::Instant::now();
                    window_updates = 0;
                }
            }
            Msg::WriteResult(r) => {
                // Only the session the request went to may answer it.
                let req = r.req;
                match hub.writes().answer(id, r) {
                    // Unknown: answered after its timeout, or never asked.
                    Answer::Delivered | Answer::Unknown => {}
                    Answer::Foreign => {
                        foreign_results += 1;
                        warn!(
                            req,
                            count = foreign_results,
                            "refused a write result for a request sent to another node"
                        );
                        if foreign_results == 1 {
                            hub.access().audit.record(
                                crate::audit::Event::WriteResultRefused,
                                json!({"fingerprint": entry.fingerprint, "name": entry.grant.name, "req": req, "reason": "the request went to another node"}),
                            );
                        }
                    }
                }
            }
            Msg::Chain(c) if child_hub => {
                let ancestors = hub.ancestors();
                let clash = c
                    .hubs
                    .iter()
                    .find(|h| *h == hub.name() || ancestors.contains(h))
                    .cloned();
                if let Some(clash) = clash {
                    warn!(chain = ?c.hubs, clash = %clash, "refused: a loop in the hub chain");
                    hub.access().audit.record(
                        crate::audit::Event::ChainRefused,
                        json!({"fingerprint": entry.fingerprint, "name": entry.grant.name, "chain": c.hubs, "reason": "loop", "hub": clash}),
                    );
                    session
                        .tx
                        .fail(
                            ErrorCode::Conflict,
                            crate::state::loop_message(hub.name(), &entry.grant.name, &clash),
                        )
                        .await;
                    break;
                }
                hub.sessions().set_below(id, c.hubs);
            }
            Msg::Death(d) => {
                info!(reason = %d.reason, "edge leaves");
                break;
            }
            other => {
                session
                    .tx
                    .fail(
                        ErrorCode::Malformed,
                        format!("an edge session does not take {} messages", other.kind()),
                    )
                    .await;
                break;
            }
        }
    }
    let owned: Vec<u32> = owned.iter().collect();
    hub.core().authority_lost(id, &owned);
    // Writes still waiting on this edge are answered now (BadNoCommunication), not at their
    // timeout: dropping their reply channel tells the writer the authority went away.
    hub.writes().session_gone(id);
    info!(points = owned.len(), "authority lost: points marked stale");
}

/// Lets the subscribers' writers that applied batches woke run. They sit in this worker's LIFO
/// slot, which no other worker may steal: if more frames wait, yield so the writers run now,
/// not after the next batches (measured 1→1: 0.5M → 5M updates/s delivered). If none waits,
/// this task parks on its queue anyway and the writers run next; yielding then would only cost
/// a wake-up of the other worker per frame. Small frames yield once per run's worth of updates:
/// a yield per one-update frame bounced the task between the two workers on one core (≈ 40 µs
/// a hop), slower than 10,000 frames/s arrive, so a short stall grew into a backlog.
pub(super) async fn yield_if_due(
    since: &mut u64,
    applied: u64,
    rx: &tokio::sync::mpsc::Receiver<Msg>,
) {
    *since += applied;
    if *since >= crate::core::FANOUT_RUN as u64 && !rx.is_empty() {
        *since = 0;
        tokio::task::yield_now().await;
    }
}

/// An edge's point ids (its own numbering) → global ids. Edges number their points from 0, so
/// the map is an array (4 bytes a point); ids far past the point limit go to a hash map.
pub(super) struct LocalIds {
    dense: Vec<u32>,
    sparse: rustc_hash::FxHashMap<u32, u32>,
    dense_limit: u32,
    len: usize,
}

impl LocalIds {
    const NONE: u32 = u32::MAX;

    fn new(max_points: usize) -> LocalIds {
        LocalIds {
            dense: Vec::new(),
            sparse: Default::default(),
            dense_limit: u32::try_from(max_points.saturating_mul(2)).unwrap_or(u32::MAX),
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
        self.len = 0;
    }

    fn insert(&mut self, id: u32, gid: u32) {
        let fresh = if id < self.dense_limit {
            let i = id as usize;
            if i >= self.dense.len() {
                self.dense.resize(i + 1, Self::NONE);
            }
            std::mem::replace(&mut self.dense[i], gid) == Self::NONE
        } else {
            self.sparse.insert(id, gid).is_none()
        };
        self.len += usize::from(fresh);
    }

    fn get(&self, id: u32) -> Option<u32> {
        if id < self.dense_limit {
            self.dense
                .get(id as usize)
                .copied()
                .filter(|&g| g != Self::NONE)
        } else {
            self.sparse.get(&id).copied()
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}
