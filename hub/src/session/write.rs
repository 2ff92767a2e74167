//! Routing one write to the point's authority and back, with rights and types checked first.

use crate::state::Hub;
use pointhub_schemas::{Msg, Pattern, Quality, WriteRequest};
use std::time::Duration;
use tokio::sync::oneshot;

pub(crate) async fn route_write(
    hub: &Hub,
    who: &str,
    grant: &[Pattern],
    w: WriteRequest,
) -> (Quality, String) {
    if !grant.iter().any(|g| g.matches(&w.point)) {
        return (
            Quality::BadUserAccessDenied,
            format!("node {who:?} may not write {:?}: it is not in the node's write patterns on the hub", w.point),
        );
    }
    let (value, owner, owner_session) = {
        let table = hub.core.table_read();
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
    let Some(edge_tx) = hub.live.get(&owner_session).map(|l| l.tx.clone()) else {
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} is not connected"),
        );
    };
    let req = hub.core.next_id();
    let (reply_tx, reply_rx) = oneshot::channel();
    hub.writes.insert(
        req,
        crate::state::PendingWrite {
            session: owner_session,
            reply: reply_tx,
        },
    );
    // The authority may have gone between the look-up and the insert: then nobody would
    // answer, so check again.
    if !hub.live.contains_key(&owner_session) {
        hub.writes.remove(&req);
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
        hub.writes.remove(&req);
        return (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} disconnected"),
        );
    }
    let timeout = Duration::from_millis(hub.config.limits.write_timeout_ms);
    match tokio::time::timeout(timeout, reply_rx).await {
        Ok(Ok(r)) => (r.status, r.message),
        Ok(Err(_)) => (
            Quality::BadNoCommunication,
            format!("the point's authority {owner:?} disconnected"),
        ),
        Err(_) => {
            hub.writes.remove(&req);
            (
                Quality::BadTimeout,
                format!("{owner:?} did not answer within {} ms", timeout.as_millis()),
            )
        }
    }
}
