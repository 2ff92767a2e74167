//! The JSON WebSocket API at `/api/v1/ws`: subscribe, snapshot then changes with quality, writes.

use super::auth::*;
use super::principal::*;
use crate::core::Subscriber;
use crate::delivery::{Delivery, Step};
use crate::session::write::{Via, Writer};
use crate::state::Hub;
use crate::throttle::{paced_scan, Throttle};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use pointhub_schemas::{json as record, Pattern, Value, WriteRequest};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;
#[derive(Deserialize)]
pub(super) struct WsQuery {
    token: Option<String>,
}

/// Updates per JSON message, rendered one message at a time so a big snapshot never exists
/// as JSON all at once.
pub(super) const JSON_CHUNK: usize = 1000;
/// A message the peer does not take within this is a peer that stopped reading: cut off.
pub(super) const JSON_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Invalid requests a session may send in [`BAD_WINDOW`] before it is closed.
pub(super) const MAX_BAD: u32 = 20;
pub(super) const BAD_WINDOW: Duration = Duration::from_secs(10);
/// Writes one JSON session may have waiting on devices at once.
pub(super) const MAX_WRITES_IN_FLIGHT: usize = 16;

pub(super) async fn api_ws(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Err(e) = same_origin(&hub, &headers) {
        return e.into_response();
    }
    let p = match principal(&hub, &headers, q.token.as_deref()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let limit = hub.config().limits.max_sessions_per_key;
    let Some(slot) = WsSlot::take(&hub, p.name(), limit) else {
        return ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} already has {limit} JSON WebSocket sessions open: close one first",
                p.name()
            ),
        )
        .into_response();
    };
    ws.max_message_size(1 << 20)
        .on_upgrade(move |socket| json_session(hub, p, socket, slot))
}

/// One of a principal's JSON WebSocket sessions, counted while it lives.
pub(super) struct WsSlot {
    hub: Arc<Hub>,
    who: String,
}

impl WsSlot {
    fn take(hub: &Arc<Hub>, who: String, limit: usize) -> Option<WsSlot> {
        let mut n = hub.web().ws_sessions.entry(who.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        drop(n);
        Some(WsSlot {
            hub: hub.clone(),
            who,
        })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.hub.web().ws_sessions.remove_if_mut(&self.who, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// Takes a JSON session off the hub's list when it ends.
pub(super) struct JsonRegistered(Arc<Hub>, u64);

impl Drop for JsonRegistered {
    fn drop(&mut self) {
        self.0.web().json.remove(&self.1);
    }
}

/// Whether a principal's token or user is still in the store.
pub(super) fn principal_still_valid(hub: &Hub, p: &Principal) -> bool {
    match p {
        Principal::User(u) => {
            matches!(hub.access().store.user(&u.name), Ok(Some(now)) if now.hash == u.hash)
        }
        Principal::Token(t) => hub
            .access()
            .store
            .api_tokens()
            .is_ok_and(|all| all.iter().any(|x| x.id == t.id)),
    }
}

/// Removes a subscriber from the table when its session ends, however it ends.
pub(super) struct Subscribed(Arc<Hub>, Arc<Subscriber>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.core().remove_subscriber(&self.1);
    }
}

pub(super) async fn send_json(socket: &mut WebSocket, v: &serde_json::Value) -> bool {
    send_text(socket, v.to_string()).await
}

pub(super) async fn send_text(socket: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(JSON_SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// One JSON WebSocket session: subscribe, snapshot then changes, writes.
pub(super) async fn json_session(
    hub: Arc<Hub>,
    p: Principal,
    mut socket: WebSocket,
    _slot: WsSlot,
) {
    let id = hub.core().next_id();
    let sub = Arc::new(Subscriber::new(
        id,
        false,
        p.read(),
        hub.config().limits.subscriber_queue,
    ));
    hub.core().add_subscriber(sub.clone());
    let _subscribed = Subscribed(hub.clone(), sub.clone());
    // A user limited to some nodes sees only their points.
    let sees = p.clone();
    let mut delivery = Delivery::new(sub.clone())
        .without_definitions()
        .keeping(move |table, pt| sees.sees_owner(table.owner(pt)));
    // Registered so that revoking its token (or resetting its user) ends it at once; and
    // checked again now, for a revocation between the upgrade and here.
    let ended = hub.shutdown().child_token();
    hub.web().json.insert(id, (p.key(), ended.clone()));
    let _registered = JsonRegistered(hub.clone(), id);
    if !principal_still_valid(&hub, &p) {
        return;
    }
    let write = Arc::new(p.write());
    let who = p.name();
    let hello = json!({"type": "hello", "hub": hub.name(), "as": who, "protocol": 1});
    if !send_json(&mut socket, &hello).await {
        return;
    }
    // Write results come back from tasks of their own; everything else this loop sends itself,
    // so a peer that floods requests slows only its own session.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_WRITES_IN_FLIGHT));
    let mut bad = Throttle::new(MAX_BAD, BAD_WINDOW);
    let mut scans = Throttle::scans();
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    loop {
        let mut error: Option<String> = None;
        tokio::select! {
            _ = ended.cancelled() => {
                let why = if hub.shutdown().is_cancelled() {
                    "the hub is shutting down: reconnect in a moment"
                } else {
                    "this session's API token was revoked, or its user reset or removed"
                };
                let _ = send_json(&mut socket, &json!({"type": "error", "message": why})).await;
                break;
            }
            m = out_rx.recv() => {
                let Some(m) = m else { break };
                if !send_json(&mut socket, &m).await {
                    break;
                }
            }
            _ = delivery.ready() => {
                let batch = match delivery.take(&hub) {
                    Step::Send(batch) => batch,
                    Step::Overflow => {
                        let _ = send_json(&mut socket, &json!({"type": "error", "message": "too slow: cut off; reconnect for a fresh snapshot"})).await;
                        break;
                    }
                };
                let mut ok = true;
                for chunk in batch.updates.chunks(JSON_CHUNK) {
                    let text = {
                        let table = hub.core().table_read();
                        let updates: Vec<serde_json::Value> = chunk
                            .iter()
                            .filter_map(|e| {
                                let pt = table.points.get(e.id as usize)?;
                                let mut r = record::record(table.name(pt), &e.value, e.quality, e.source_ts, e.hub_ts, e.flags & pointhub_schemas::Update::HISTORY != 0);
                                if let (Some(m), Some(unit)) = (r.as_object_mut(), pt.unit()) {
                                    m.insert("unit".into(), json!(unit));
                                }
                                Some(r)
                            })
                            .collect();
                        json!({"type": "updates", "updates": updates}).to_string()
                    };
                    if !send_text(&mut socket, text).await {
                        ok = false;
                        break;
                    }
                }
                if !ok {
                    break;
                }
                for n in batch.snapshots_done {
                    if !send_json(&mut socket, &json!({"type": "snapshot_done", "points": n})).await {
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(Message::Binary(_))) => {
                        error = Some("binary messages are for node sessions (/node): send JSON text".into());
                        String::new()
                    }
                    Some(Ok(_)) => continue,
                };
                if error.is_none() {
                    match serde_json::from_str::<serde_json::Value>(&text) {
                        Err(e) => error = Some(format!("not JSON: {e}")),
                        Ok(req) => {
                            error = json_request(&hub, &sub, &write, &who, &out_tx, &in_flight, &mut scans, req).await;
                        }
                    }
                }
            }
        }
        if let Some(message) = error {
            if bad.over() {
                let _ = send_json(&mut socket, &json!({"type": "error", "message": format!("more than {MAX_BAD} invalid requests in {} s: closed; fix the client and reconnect", BAD_WINDOW.as_secs())})).await;
                warn!(who = %who, "JSON session closed: too many invalid requests");
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: axum::extract::ws::close_code::POLICY,
                        reason: "too many invalid requests".into(),
                    })))
                    .await;
                break;
            }
            if !send_json(&mut socket, &json!({"type": "error", "message": message})).await {
                break;
            }
        }
    }
}

/// Carries out one request of a JSON session; `Some(message)` if it was invalid.
#[allow(clippy::too_many_arguments)]
pub(super) async fn json_request(
    hub: &Arc<Hub>,
    sub: &Arc<Subscriber>,
    write: &Arc<Vec<Pattern>>,
    who: &str,
    out_tx: &tokio::sync::mpsc::Sender<serde_json::Value>,
    in_flight: &Arc<tokio::sync::Semaphore>,
    scans: &mut Throttle,
    req: serde_json::Value,
) -> Option<String> {
    match req["op"].as_str() {
        Some(op @ ("subscribe" | "unsubscribe")) => {
            let pats: Vec<String> = req["patterns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            if pats.len() > 256 {
                return Some("at most 256 patterns".into());
            }
            let parsed: Vec<Pattern> = match pats.iter().map(|s| Pattern::parse(s)).collect() {
                Ok(p) => p,
                Err(e) => return Some(format!("pattern: {e}")),
            };
            let (h, s) = (hub.clone(), sub.clone());
            let (_, done) = if op == "subscribe" {
                paced_scan(scans, move || h.core().subscribe(&s, parsed)).await
            } else {
                paced_scan(scans, move || {
                    h.core().unsubscribe(&s, &pats);
                    Ok(())
                })
                .await
            };
            match done {
                Some(Ok(())) => None,
                Some(Err(e)) => Some(e.to_string()),
                None => Some("internal error".into()),
            }
        }
        Some("write") => {
            let (Some(point), Some(value)) =
                (req["point"].as_str(), Value::from_json(&req["value"]))
            else {
                return Some("write needs point and value".into());
            };
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                return Some(format!(
                    "{MAX_WRITES_IN_FLIGHT} writes of this session are still waiting for their devices: wait for their results"
                ));
            };
            let id = req["id"].clone();
            let (hub, write, who, tx) =
                (hub.clone(), write.clone(), who.to_string(), out_tx.clone());
            let w = WriteRequest {
                req: 0,
                point: point.to_string(),
                value,
            };
            let by = Writer {
                name: who,
                via: Via::Api,
                fingerprint: None,
            };
            hub.tasks().clone().spawn(async move {
                let _permit = permit;
                let point = w.point.clone();
                let (status, message) = crate::session::write::write(&hub, &by, &write, w).await;
                let _ = tx.send(json!({"type": "write_result", "id": id, "point": point, "status": status.to_string(), "status_code": status.0, "message": message})).await;
            });
            None
        }
        _ => Some("unknown op: use subscribe, unsubscribe or write".into()),
    }
}
