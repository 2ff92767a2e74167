//! The edge's OPC UA source: one session to a device's or a PLC's UA server, one subscription
//! with a monitored item per point, and writes back to the nodes.
//!
//! Every data change passes the server's StatusCode on unchanged, at the server's source time.
//! Losing the session turns every point of the source `BadCommunicationError` (last value kept);
//! the source opens a new session with a capped backoff and makes its subscription again, whose
//! first values bring the points back (also after a server restart, which forgets sessions).

use crate::config::OpcUaConfig;
use crate::convert;
use crate::session::{self, Event};
use opcua::client::{DataChangeCallback, MonitoredItem, Session};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, DataTypeId, DataValue, DeadbandType,
    ExtensionObject, MonitoredItemCreateRequest, MonitoringMode, MonitoringParameters, NodeId,
    ReadValueId, StatusCode, TimestampsToReturn, Variant, WriteValue,
};
use pointhub_schemas::{DataType, Quality, Timestamp, Value};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest wait between two attempts to open a session.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest a write may take at the server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A change of one of the source's points.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The point's index among the source's points.
    pub index: usize,
    /// Its value (the last one, when the change carries none).
    pub value: Value,
    /// Its quality: the server's StatusCode, or why the source cannot read it.
    pub quality: Quality,
    /// When the server says it was so.
    pub ts: Timestamp,
}

/// A write to one of the source's points.
pub struct Write {
    /// The point's index among the source's points.
    pub index: usize,
    /// The value to write.
    pub value: Value,
    /// The outcome: the server's StatusCode for the write, and a sentence.
    pub reply: oneshot::Sender<(Quality, String)>,
}

/// Runs the source until `shutdown`: changes go to `out`, writes come on `writes`. `edge` names
/// the edge in the source's application name and URI.
pub async fn run(
    cfg: OpcUaConfig,
    edge: String,
    out: mpsc::Sender<Vec<Change>>,
    mut writes: mpsc::Receiver<Write>,
    shutdown: CancellationToken,
) {
    let mut run = Run {
        nodes: cfg
            .points
            .iter()
            .map(|p| convert::node_id(&p.node).unwrap_or_default())
            .collect(),
        last: vec![(Value::Null, Quality::BadWaitingForInitialData); cfg.points.len()],
        types: vec![None; cfg.points.len()],
        cfg,
        out,
    };
    let src = run.cfg.name.clone();
    let built = {
        let (cfg, edge) = (run.cfg.clone(), edge.clone());
        tokio::task::spawn_blocking(move || session::client(&cfg, &edge)).await
    };
    let (mut client, first_use) = match built {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            warn!(source = %src, error = %e, "OPC UA source cannot start: fix its settings");
            run.all(Quality::BadConfigurationError).await;
            return refuse_writes(writes, shutdown).await;
        }
        Err(e) => {
            warn!(source = %src, error = %e, "OPC UA source cannot start");
            run.all(Quality::BadConfigurationError).await;
            return refuse_writes(writes, shutdown).await;
        }
    };
    let pki = run.cfg.pki_dir.clone().unwrap_or_default();
    let trusted_before = session::trusted(&pki);
    let mut delay = Duration::from_millis(250);
    loop {
        let (sess, event_loop) = match session::connect(&mut client, &run.cfg).await {
            Ok(s) => s,
            Err(e) => {
                warn!(source = %src, endpoint = %run.cfg.endpoint, error = %e, retry_ms = delay.as_millis() as u64, "OPC UA server unreachable; retrying");
                run.all(Quality::BadCommunicationError).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let mut events = session::events(event_loop);
        let (data_tx, mut data) = mpsc::unbounded_channel::<(u32, DataValue)>();
        let (mut subscribed, mut connected) = (false, false);
        let mut retry = tokio::time::interval(BACKOFF_MAX);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = sess.disconnect().await;
                    return;
                }
                ev = events.recv() => match ev.unwrap_or(Event::Ended(StatusCode::BadShutdown)) {
                    Event::Connected => {
                        connected = true;
                        delay = Duration::from_millis(250);
                        info!(source = %src, endpoint = %run.cfg.endpoint, "OPC UA server connected");
                        if first_use {
                            for c in session::trusted(&pki).iter().filter(|c| !trusted_before.contains(c)) {
                                warn!(source = %src, certificate = %c, "trusted the OPC UA server's certificate on first use; from now on only it is trusted (remove it from the trusted folder to meet a new one)");
                            }
                        }
                        if !subscribed {
                            subscribed = run.subscribe(&sess, &data_tx).await;
                        }
                    }
                    Event::Lost(sc) => {
                        // A new session, made afresh, rather than the old one reactivated: a
                        // restarted server has forgotten it and its subscription.
                        warn!(source = %src, status = %sc, "OPC UA session lost: the source's points are BadCommunicationError; reconnecting");
                        run.all(Quality::BadCommunicationError).await;
                        sess.disable_reconnects();
                        break;
                    }
                    Event::Failed(sc) => {
                        connected = false;
                        info!(source = %src, status = %sc, "OPC UA server not reachable yet; retrying");
                        run.all(Quality::BadCommunicationError).await;
                    }
                    Event::Ended(sc) => {
                        warn!(source = %src, status = %sc, "OPC UA session ended; opening a new one");
                        run.all(Quality::BadCommunicationError).await;
                        break;
                    }
                },
                Some((handle, dv)) = data.recv() => {
                    let mut batch = vec![(handle, dv)];
                    while batch.len() < 4096 {
                        match data.try_recv() {
                            Ok(x) => batch.push(x),
                            Err(_) => break,
                        }
                    }
                    run.changes(batch).await;
                }
                w = writes.recv() => match w {
                    Some(w) => run.write(&sess, w).await,
                    None => {
                        let _ = sess.disconnect().await;
                        return;
                    }
                },
                _ = retry.tick(), if connected && !subscribed => {
                    subscribed = run.subscribe(&sess, &data_tx).await;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Answers writes while the source cannot run.
async fn refuse_writes(mut writes: mpsc::Receiver<Write>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            w = writes.recv() => match w {
                Some(w) => {
                    let _ = w.reply.send((Quality::BadConfigurationError, "the OPC UA source could not start: see the edge's log".into()));
                }
                None => return,
            },
        }
    }
}

struct Run {
    cfg: OpcUaConfig,
    nodes: Vec<NodeId>,
    /// Each point's last value and quality as reported.
    last: Vec<(Value, Quality)>,
    /// Each node's UA data type, once read: what a write must be.
    types: Vec<Option<DataTypeId>>,
    out: mpsc::Sender<Vec<Change>>,
}

impl Run {
    /// Every point at `quality`, keeping its last value; only the points whose quality changes.
    async fn all(&mut self, quality: Quality) {
        let ts = Timestamp::now();
        let changes: Vec<Change> = self
            .last
            .iter_mut()
            .enumerate()
            .filter(|(_, (_, q))| *q != quality)
            .map(|(index, (value, q))| {
                *q = quality;
                Change {
                    index,
                    value: value.clone(),
                    quality,
                    ts,
                }
            })
            .collect();
        if !changes.is_empty() {
            let _ = self.out.send(changes).await;
        }
    }

    /// One point to `quality` (the item could not be made, say), keeping its last value.
    fn one(&mut self, index: usize, quality: Quality, ts: Timestamp) -> Option<Change> {
        let (value, q) = self.last.get_mut(index)?;
        *q = quality;
        Some(Change {
            index,
            value: value.clone(),
            quality,
            ts,
        })
    }

    /// Makes the subscription and its monitored items (handle = index + 1), and reads the
    /// nodes' data types for writes. Whether the subscription stands.
    async fn subscribe(
        &mut self,
        sess: &Session,
        data: &mpsc::UnboundedSender<(u32, DataValue)>,
    ) -> bool {
        let src = self.cfg.name.clone();
        self.read_types(sess).await;
        let tx = data.clone();
        let made = sess
            .create_subscription(
                Duration::from_millis(self.cfg.publishing_ms),
                30,
                10,
                0,
                0,
                true,
                DataChangeCallback::new(move |dv: DataValue, item: &MonitoredItem| {
                    // On the session's own task, under its lock: only hand over.
                    let _ = tx.send((item.client_handle(), dv));
                }),
            )
            .await;
        let id = match made {
            Ok(id) => id,
            Err(sc) => {
                warn!(source = %src, status = %sc, "OPC UA server refused the subscription; retrying");
                return false;
            }
        };
        let items: Vec<MonitoredItemCreateRequest> = self
            .cfg
            .points
            .iter()
            .zip(&self.nodes)
            .enumerate()
            .map(|(i, (p, node))| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::new(node.clone(), AttributeId::Value),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: i as u32 + 1,
                    sampling_interval: self.cfg.sampling_ms as f64,
                    filter: match p.deadband {
                        Some(d) if d > 0.0 => ExtensionObject::from_message(DataChangeFilter {
                            trigger: DataChangeTrigger::StatusValue,
                            deadband_type: DeadbandType::Absolute as u32,
                            deadband_value: d,
                        }),
                        _ => ExtensionObject::null(),
                    },
                    queue_size: 10,
                    discard_oldest: true,
                },
            })
            .collect();
        match sess
            .create_monitored_items(id, TimestampsToReturn::Both, items)
            .await
        {
            Ok(results) => {
                let now = Timestamp::now();
                let mut refused = Vec::new();
                for (i, r) in results.iter().enumerate() {
                    let sc = r.result.status_code;
                    if !sc.is_good() {
                        warn!(source = %src, point = %self.cfg.points[i].name, node = %self.cfg.points[i].node, status = %sc, "OPC UA server refused to monitor the node: the point carries its status");
                        refused.extend(self.one(i, convert::quality(sc), now));
                    }
                }
                if !refused.is_empty() {
                    let _ = self.out.send(refused).await;
                }
                info!(source = %src, points = results.len(), "OPC UA subscription made");
                true
            }
            Err(sc) => {
                warn!(source = %src, status = %sc, "OPC UA server refused the monitored items; retrying");
                let _ = sess.delete_subscription(id).await;
                false
            }
        }
    }

    /// Reads each node's DataType attribute (what a write must send).
    async fn read_types(&mut self, sess: &Session) {
        let ids: Vec<ReadValueId> = self
            .nodes
            .iter()
            .map(|n| ReadValueId::new(n.clone(), AttributeId::DataType))
            .collect();
        let Ok(values) = sess.read(&ids, TimestampsToReturn::Neither, 0.0).await else {
            return;
        };
        for (slot, dv) in self.types.iter_mut().zip(values) {
            if let Some(Variant::NodeId(id)) = dv.value {
                *slot = id.as_data_type_id().ok();
            }
        }
    }

    /// Data changes from the server.
    async fn changes(&mut self, batch: Vec<(u32, DataValue)>) {
        let now = Timestamp::now();
        let mut out = Vec::with_capacity(batch.len());
        for (handle, dv) in batch {
            let index = handle.wrapping_sub(1) as usize;
            let Some(dtype) = self.cfg.points.get(index).map(|p| p.dtype) else {
                continue;
            };
            let (value, quality) = convert::sample(&dv, dtype);
            let (last, last_q) = &mut self.last[index];
            if quality == Quality::BadTypeMismatch && *last_q != quality {
                warn!(source = %self.cfg.name, point = %self.cfg.points[index].name, value = ?dv.value, "OPC UA node's value does not convert to the point's type: BadTypeMismatch until it does");
            }
            if let Some(v) = value {
                *last = v;
            }
            *last_q = quality;
            out.push(Change {
                index,
                value: last.clone(),
                quality,
                ts: convert::sample_time(&dv, now),
            });
        }
        if !out.is_empty() {
            let _ = self.out.send(out).await;
        }
    }

    /// A write to a node: in the node's own type, answered with the server's status.
    async fn write(&mut self, sess: &Session, w: Write) {
        let Some(p) = self.cfg.points.get(w.index).cloned() else {
            let _ = w
                .reply
                .send((Quality::BadNodeIdUnknown, "no such point".into()));
            return;
        };
        if !p.writable {
            let _ = w.reply.send((
                Quality::BadNotWritable,
                format!("{} is read-only here: set writable = true on the point in the edge's configuration", p.name),
            ));
            return;
        }
        if self.types[w.index].is_none() {
            self.read_types(sess).await;
        }
        let node = self.nodes[w.index].clone();
        let ua = self.types[w.index].unwrap_or(match p.dtype {
            DataType::Bool => DataTypeId::Boolean,
            DataType::Int => DataTypeId::Int64,
            DataType::UInt => DataTypeId::UInt64,
            DataType::Float => DataTypeId::Double,
            DataType::String => DataTypeId::String,
        });
        let Some(v) = convert::variant(&w.value, ua) else {
            let _ = w.reply.send((
                Quality::BadTypeMismatch,
                format!("{:?} does not fit the node's type {ua:?}", w.value),
            ));
            return;
        };
        let write = WriteValue {
            node_id: node,
            attribute_id: AttributeId::Value as u32,
            index_range: Default::default(),
            value: DataValue::value_only(v),
        };
        let outcome = match tokio::time::timeout(WRITE_TIMEOUT, sess.write(&[write])).await {
            Ok(Ok(results)) => {
                let sc = results
                    .first()
                    .copied()
                    .unwrap_or(StatusCode::BadUnexpectedError);
                (
                    convert::quality(sc),
                    format!("the OPC UA server answered {sc}"),
                )
            }
            Ok(Err(sc)) => (
                convert::quality(sc),
                format!("the write did not reach the OPC UA server: {sc}"),
            ),
            Err(_) => (
                Quality::BadTimeout,
                format!(
                    "the OPC UA server did not answer within {} s",
                    WRITE_TIMEOUT.as_secs()
                ),
            ),
        };
        let _ = w.reply.send(outcome);
    }
}
