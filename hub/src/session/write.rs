//! The one write path: whoever asks (a client node, a JSON API session, a parent hub), a write
//! has its rights checked, is routed to the point's authority and back, and is logged, counted
//! and audited here, in one shape.

use crate::state::Hub;
use pointhub_link::Fingerprint;
use pointhub_schemas::{Msg, Pattern, Quality, WriteRequest};
use serde_json::json;
use std::time::Duration;
use tracing::info;

/// How a writer reaches the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// A client node's session, with its own key.
    Node,
    /// A JSON WebSocket session of a console user or an API token.
    Api,
    /// This hub's parent, over an upstream link.
    Upstream,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Node => "node",
            Via::Api => "api",
            Via::Upstream => "upstream",
        }
    }
}

/// Who asks for a write, as the log and the audit name it.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    /// The node, user, token or parent hub.
    pub(crate) name: String,
    /// How it reached the hub.
    pub(crate) via: Via,
    /// Its key, for a node.
    pub(crate) fingerprint: Option<Fingerprint>,
}

/// One write: rights, routing, then the log line, the count and the audit record.
pub(crate) async fn write(
    hub: &Hub,
    by: &Writer,
    rights: &[Pattern],
    w: WriteRequest,
) -> (Quality, String) {
    let point = w.point.clone();
    let new = w.value.to_json();
    let old = {
        let t = hub.core().table_read();
        t.gid(&point)
            .and_then(|g| t.points.get(g as usize))
            .map(|p| p.value.to_json())
    };
    let (status, message) = route_write(hub, by, rights, w).await;
    info!(by = %by.name, via = by.via.as_str(), point = %point, status = %status, "write");
    hub.stats().count_write(&status.to_string());
    hub.access().audit.record(
        crate::audit::Event::Write,
        json!({
            "name": by.name,
            "via": by.via.as_str(),
            "fingerprint": by.fingerprint,
            "point": point,
            "old": old,
            "new": new,
            "status": status.to_string(),
            "message": message,
        }),
    );
    (status, message)
}

/// Why a write outside the writer's rights is refused, in the writer's terms.
fn refusal(hub: &Hub, by: &Writer, point: &str) -> String {
    match by.via {
        Via::Node => format!(
            "node {:?} may not write {point:?}: it is not in the node's write patterns on the hub",
            by.name
        ),
        Via::Api => format!(
            "{:?} may not write {point:?}: it is not in its write patterns on the hub",
            by.name
        ),
        Via::Upstream => format!(
            "hub {} does not take writes to {point:?} from {}: not in its upstream writes",
            hub.name(),
            by.name
        ),
    }
}

async fn route_write(
    hub: &Hub,
    by: &Writer,
    grant: &[Pattern],
    w: WriteRequest,
) -> (Quality, String) {
    if !grant.iter().any(|g| g.matches(&w.point)) {
        return (Quality::BadUserAccessDenied, refusal(hub, by, &w.point));
    }
    let (value, owner, owner_session) = {
        let table = hub.core().table_read();
        let Some(gid) = table.gid(&w.point) else {
            return (
                Quality::BadNodeIdUnknown,
                format!("no point named {:?} on this hub", w.point),
            );
        };
        let p = &table.points[gid as usize];
        if !p.writable {
            return (
                Quality::BadNotWritable,
                format!("point {:?} is not writable", w.point),
            );
        }
        let value = match w.value.coerce(p.dtype) {
            Ok(v) => v,
            Err(e) => {
                return (
                    Quality::BadTypeMismatch,
                    format!("point {:?}: {e}", w.point),
                )
            }
        };
        (value, table.owner(p).to_string(), p.owner_session())
    };
    let Some(owner_session) = owner_session else {
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    };
    let Some(edge_tx) = hub.sessions().tx(owner_session) else {
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    };
    let req = hub.core().next_id();
    let reply_rx = hub.writes().open(req, owner_session);
    // The authority may have gone between the look-up and the insert: then nobody would
    // answer, so check again.
    if !hub.sessions().is_live(owner_session) {
        hub.writes().cancel(req);
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    }
    if !edge_tx
        .send(Msg::Write(WriteRequest {
            req,
            point: w.point.clone(),
            value,
        }))
        .await
    {
        hub.writes().cancel(req);
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} disconnected"),
        );
    }
    let timeout = Duration::from_millis(hub.config().limits.write_timeout_ms);
    match tokio::time::timeout(timeout, reply_rx).await {
        Ok(Ok(r)) => (r.status, r.message),
        Ok(Err(_)) => (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} disconnected"),
        ),
        Err(_) => {
            hub.writes().cancel(req);
            (
                Quality::BadTimeout,
                format!("{owner:?} did not answer within {} ms", timeout.as_millis()),
            )
        }
    }
}
