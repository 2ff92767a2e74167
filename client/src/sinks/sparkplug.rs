//! The client as a Sparkplug B edge node, for SCADA systems that consume Sparkplug (Ignition's
//! MQTT Engine and others): `pointhub client sparkplug`.
//!
//! Each point is a metric of a device: the device is the first segment of the point's name (the
//! pointhub edge it comes from), the metric its remaining path (`plant1/sim/sine1` → device
//! `plant1`, metric `sim/sine1`). On every connection to the broker, once the hub's snapshot is
//! in, the node publishes NBIRTH (`bdSeq`, `Node Control/Rebirth`) and a DBIRTH per device with
//! every metric, its data type and current value; then DDATA on each change. Every metric carries
//! the point's quality in its `Quality` property (192 good, 500 stale, 0 bad) and the exact OPC UA
//! code in `pointhub/quality_code`: when an edge dies, the host gets its metrics at 500 at once. A
//! point that appears later rebirths its device. The NDEATH is the MQTT will (and is sent on a
//! clean stop), so a host knows in the broker's time when this node is gone. An NCMD
//! `Node Control/Rebirth` publishes every birth again; a DCMD writes the metric's point through
//! the hub, with this client's write grant (if `writes = true`).

use super::mqtt::{broker_events, FromBroker};
use crate::client::{Client, Event, PointRecord};
use crate::sinks::{Sink, SinkError, SinkRun};
use pointhub_mqtt::sparkplug::{metric, value_of, DataTypeCode, Metric, MetricValue, Payload};
use pointhub_mqtt::Broker;
use pointhub_schemas::Timestamp;
use prost::Message;
use rumqttc::{AsyncClient, LastWill, QoS};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// `[sparkplug]` in a client's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugSection {
    /// How to reach the broker (`[sparkplug.broker]`).
    pub broker: Broker,
    /// The Sparkplug group id.
    pub group_id: String,
    /// The edge node id; default the client's name.
    pub edge_node_id: Option<String>,
    /// The point patterns published (default `**`).
    #[serde(default = "every_point")]
    pub points: Vec<String>,
    /// Take DCMD writes (the hub's write grant still decides); default false.
    #[serde(default)]
    pub writes: bool,
    /// How long a write may wait for the device, ms (default 10000).
    #[serde(default = "default_write_ms")]
    pub write_timeout_ms: u64,
}

fn every_point() -> Vec<String> {
    vec!["**".into()]
}
fn default_write_ms() -> u64 {
    10_000
}

/// A `[sparkplug]` key that does not check out.
#[derive(Debug, thiserror::Error)]
#[error("sparkplug.{key}: {message}")]
pub struct SparkplugSectionError {
    /// The key concerned.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn id_ok(id: &str) -> bool {
    !id.is_empty() && !id.contains(['/', '+', '#', '\0'])
}

impl SparkplugSection {
    /// Checks the section; the error names the key and what to write instead.
    pub fn validate(&self) -> Result<(), SparkplugSectionError> {
        let err = |key, message: String| Err(SparkplugSectionError { key, message });
        super::mqtt::check_broker_and_points(&self.broker, &self.points)
            .map_err(|(key, message)| SparkplugSectionError { key, message })?;
        if !id_ok(&self.group_id) {
            return err(
                "group_id",
                format!("{:?}: one topic level, without / + #", self.group_id),
            );
        }
        if let Some(n) = self.edge_node_id.as_deref().filter(|n| !id_ok(n)) {
            return err(
                "edge_node_id",
                format!("{n:?}: one topic level, without / + #"),
            );
        }
        Ok(())
    }
}

/// The Sparkplug edge node sink.
pub struct SparkplugSink {
    /// Its section.
    pub section: SparkplugSection,
    /// The client's name (the default edge node id).
    pub name: String,
}

impl Sink for SparkplugSink {
    fn kind(&self) -> &'static str {
        "sparkplug edge node"
    }

    fn patterns(&self) -> Vec<String> {
        self.section.points.clone()
    }

    fn run(
        self: Box<Self>,
        client: Client,
        events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> SinkRun {
        Box::pin(async move {
            Node::new(*self)
                .serve(client, events, shutdown)
                .await
                .map_err(|e| SinkError::Failed {
                    sink: "sparkplug edge node",
                    source: Box::new(e),
                })
        })
    }
}

/// A point's device and metric name.
fn split(point: &str) -> (&str, &str) {
    point.split_once('/').unwrap_or(("_", point))
}

fn ms(t: Timestamp) -> u64 {
    if t.is_never() {
        Timestamp::now().0 / 1000
    } else {
        t.0 / 1000
    }
}

fn as_metric(rec: &PointRecord) -> Metric {
    metric(
        split(&rec.name).1,
        rec.dtype,
        &rec.value,
        rec.quality,
        ms(rec.source_ts),
    )
}

struct Node {
    section: SparkplugSection,
    node: String,
    /// The birth/death sequence: the same in NBIRTH and the will's NDEATH.
    bd_seq: u64,
    /// The next message's sequence number (0 to 255; NBIRTH is 0).
    seq: u8,
    /// The metrics each device was born with.
    born: BTreeMap<String, BTreeSet<String>>,
}

impl Node {
    fn new(sink: SparkplugSink) -> Node {
        let node = sink
            .section
            .edge_node_id
            .clone()
            .unwrap_or_else(|| sink.name.clone());
        Node {
            section: sink.section,
            node,
            bd_seq: (Timestamp::now().0 / 1_000_000) % 256,
            seq: 0,
            born: BTreeMap::new(),
        }
    }

    fn topic(&self, kind: &str, device: Option<&str>) -> String {
        let base = format!("spBv1.0/{}/{kind}/{}", self.section.group_id, self.node);
        match device {
            Some(d) => format!("{base}/{d}"),
            None => base,
        }
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(s)
    }

    fn death(&self) -> Vec<u8> {
        Payload {
            timestamp: Some(Timestamp::now().0 / 1000),
            metrics: vec![self.bd_seq_metric()],
            seq: None,
            uuid: None,
            body: None,
        }
        .encode_to_vec()
    }

    fn bd_seq_metric(&self) -> Metric {
        Metric {
            name: Some("bdSeq".into()),
            datatype: Some(DataTypeCode::UINT64),
            value: Some(MetricValue::Long(self.bd_seq)),
            ..Metric::default()
        }
    }

    async fn send(
        &mut self,
        mq: &AsyncClient,
        kind: &str,
        device: Option<&str>,
        metrics: Vec<Metric>,
    ) -> bool {
        let seq = if kind == "NBIRTH" {
            self.seq = 0;
            self.next_seq()
        } else {
            self.next_seq()
        };
        let payload = Payload {
            timestamp: Some(Timestamp::now().0 / 1000),
            metrics,
            seq: Some(seq),
            uuid: None,
            body: None,
        };
        let topic = self.topic(kind, device);
        let send = mq.publish(topic, QoS::AtLeastOnce, false, payload.encode_to_vec());
        matches!(
            tokio::time::timeout(Duration::from_secs(2), send).await,
            Ok(Ok(()))
        )
    }

    /// NBIRTH, then a DBIRTH per device of the mirror.
    async fn birth_all(&mut self, mq: &AsyncClient, client: &Client) {
        let node_metrics = vec![
            self.bd_seq_metric(),
            Metric {
                name: Some("Node Control/Rebirth".into()),
                datatype: Some(DataTypeCode::BOOLEAN),
                value: Some(MetricValue::Boolean(false)),
                ..Metric::default()
            },
        ];
        self.send(mq, "NBIRTH", None, node_metrics).await;
        self.born.clear();
        let mirror = client.mirror();
        let devices: BTreeSet<String> = mirror
            .iter()
            .map(|r| split(&r.name).0.to_string())
            .collect();
        for d in devices {
            self.birth_device(mq, &mirror, &d).await;
        }
    }

    /// A DBIRTH for `device` with every metric the mirror has of it.
    async fn birth_device(&mut self, mq: &AsyncClient, mirror: &[PointRecord], device: &str) {
        let recs: Vec<&PointRecord> = mirror
            .iter()
            .filter(|r| split(&r.name).0 == device)
            .collect();
        let names = recs.iter().map(|r| split(&r.name).1.to_string()).collect();
        let metrics = recs.into_iter().map(as_metric).collect();
        self.send(mq, "DBIRTH", Some(device), metrics).await;
        self.born.insert(device.to_string(), names);
    }

    /// A change: DDATA, or a DBIRTH again if the device was not born with this metric.
    async fn change(&mut self, mq: &AsyncClient, client: &Client, rec: &PointRecord) {
        let (device, name) = split(&rec.name);
        if self.born.get(device).is_some_and(|m| m.contains(name)) {
            self.send(mq, "DDATA", Some(device), vec![as_metric(rec)])
                .await;
        } else {
            let device = device.to_string();
            self.birth_device(mq, &client.mirror(), &device).await;
        }
    }

    /// An NCMD or DCMD for this node.
    async fn command(&mut self, mq: &AsyncClient, client: &Client, topic: &str, payload: &[u8]) {
        let Ok(p) = Payload::decode(payload) else {
            warn!(topic, "a Sparkplug command that does not decode; ignored");
            return;
        };
        let ncmd = self.topic("NCMD", None);
        let dcmd = format!("{}/", self.topic("DCMD", None));
        if topic == ncmd {
            let rebirth = p.metrics.iter().any(|m| {
                m.name.as_deref() == Some("Node Control/Rebirth")
                    && m.value == Some(MetricValue::Boolean(true))
            });
            if rebirth {
                info!("the host asks for a rebirth");
                self.birth_all(mq, client).await;
            }
        } else if let Some(device) = topic.strip_prefix(&dcmd) {
            if !self.section.writes {
                warn!(
                    device,
                    "a DCMD write, but writes = false in [sparkplug]: ignored"
                );
                return;
            }
            for m in &p.metrics {
                let (Some(name), Some(value)) = (m.name.as_deref(), value_of(m)) else {
                    continue;
                };
                let point = format!("{device}/{name}");
                let client = client.clone();
                let timeout = Duration::from_millis(self.section.write_timeout_ms);
                tokio::spawn(async move {
                    match client.write(&point, value.clone(), timeout).await {
                        Ok(o) => {
                            info!(point = %point, value = %value, status = %o.status, message = %o.message, "DCMD write")
                        }
                        Err(e) => warn!(point = %point, error = %e, "DCMD write not done"),
                    }
                });
            }
        }
    }

    async fn serve(
        mut self,
        client: Client,
        mut events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> Result<(), pointhub_mqtt::BrokerError> {
        let mut opts = self
            .section
            .broker
            .options(&format!("pointhub-{}", self.node))?;
        opts.set_last_will(LastWill::new(
            self.topic("NDEATH", None),
            self.death(),
            QoS::AtLeastOnce,
            false,
        ));
        let (mq, ev) = AsyncClient::new(opts, 1024);
        let stop = shutdown.child_token();
        let mut from_broker = broker_events(ev, stop.clone());
        let (mut connected, mut snapshot) = (false, false);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                m = from_broker.recv() => match m {
                    None => break,
                    Some(FromBroker::Connected) => {
                        info!(group = %self.section.group_id, node = %self.node, "MQTT broker connected (Sparkplug edge node)");
                        connected = true;
                        let _ = mq.subscribe(self.topic("NCMD", None), QoS::AtLeastOnce).await;
                        let _ = mq.subscribe(format!("{}/+", self.topic("DCMD", None)), QoS::AtLeastOnce).await;
                        if snapshot {
                            self.birth_all(&mq, &client).await;
                        }
                    }
                    Some(FromBroker::Lost(e)) => {
                        if connected {
                            warn!(error = %e, "MQTT broker lost; reconnecting (births again on return)");
                        } else {
                            warn!(error = %e, "MQTT broker unreachable; retrying");
                        }
                        connected = false;
                    }
                    Some(FromBroker::Message { topic, payload }) => self.command(&mq, &client, &topic, &payload).await,
                },
                e = events.recv() => match e {
                    None => break,
                    Some(Event::SnapshotDone { .. }) => {
                        let first = !snapshot;
                        snapshot = true;
                        if first && connected {
                            self.birth_all(&mq, &client).await;
                        }
                    }
                    Some(Event::Update(rec)) if !rec.history && connected && snapshot => {
                        self.change(&mq, &client, &rec).await;
                    }
                    Some(Event::Disconnected { reason }) => warn!(reason = %reason, "hub link lost: the metrics go out stale"),
                    Some(_) => {}
                },
            }
        }
        let _ = mq
            .publish(
                self.topic("NDEATH", None),
                QoS::AtLeastOnce,
                false,
                self.death(),
            )
            .await;
        let _ = tokio::time::timeout(Duration::from_millis(500), mq.disconnect()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        Ok(())
    }
}
