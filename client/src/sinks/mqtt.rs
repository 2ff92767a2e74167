//! Publishes the client's mirror to an MQTT broker as plain JSON topics, for an MQTT-fed SCADA or
//! a unified namespace: one retained topic per point, `<topic_prefix><point name>`, with the
//! record `client watch` prints (`point`, `value`, `quality`, `quality_code`, `source_ts`,
//! `hub_ts`). A change of quality is published at once like a change of value: when an edge or
//! this client's own hub link is lost, every subscriber of the broker sees the points stale.
//!
//! The client's own presence is a retained status topic (`online`, and `offline` as the MQTT will,
//! so the broker says it when this process dies or its link to the broker goes silent). With
//! `write_prefix`, a message on `<write_prefix><point name>` is a write of that point through the
//! hub, with this client's write grant; its outcome is published on
//! `<topic_prefix><point name>/write-result`. History replays are not published: a topic holds the
//! live state.

use crate::client::{Client, Event, PointRecord};
use crate::sinks::{Sink, SinkError, SinkRun};
use pointhub_mqtt::Broker;
use pointhub_schemas::{Pattern, Value};
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, Packet, QoS};
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// `[mqtt]` in a client's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// How to reach the broker (`[mqtt.broker]`, as for an edge's MQTT source).
    pub broker: Broker,
    /// The point patterns published (default `**`: every point the key may read).
    #[serde(default = "every_point")]
    pub points: Vec<String>,
    /// Put before each point's name to make its topic (default `pointhub/`).
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Publish retained, so a subscriber gets each point's state at once (default true).
    #[serde(default = "yes")]
    pub retain: bool,
    /// The QoS of the publications: 0 or 1 (default 1).
    #[serde(default = "one")]
    pub qos: u8,
    /// This client's presence (`online`/`offline`, retained); default `pointhub-status/<name>`.
    pub status_topic: Option<String>,
    /// Take writes on `<write_prefix><point name>` (default none: no writes from MQTT).
    pub write_prefix: Option<String>,
    /// How long a write may wait for the device, ms (default 10000).
    #[serde(default = "default_write_ms")]
    pub write_timeout_ms: u64,
}

fn every_point() -> Vec<String> {
    vec!["**".into()]
}
fn default_prefix() -> String {
    "pointhub/".into()
}
fn yes() -> bool {
    true
}
fn one() -> u8 {
    1
}
fn default_write_ms() -> u64 {
    10_000
}

/// A `[mqtt]` key that does not check out.
#[derive(Debug, thiserror::Error)]
#[error("mqtt.{key}: {message}")]
pub struct MqttSectionError {
    /// The key concerned.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn topic_ok(t: &str) -> bool {
    !t.contains(['+', '#', '\0'])
}

/// The checks every broker sink's section passes: its broker settings and its point patterns.
/// The error is the key concerned and what to write instead.
pub(crate) fn check_broker_and_points(
    broker: &Broker,
    points: &[String],
) -> Result<(), (&'static str, String)> {
    broker.validate().map_err(|e| ("broker", e.to_string()))?;
    for p in points {
        Pattern::parse(p).map_err(|e| ("points", format!("{p:?}: {e}")))?;
    }
    Ok(())
}

impl MqttSection {
    /// Checks the section; the error names the key and what to write instead.
    pub fn validate(&self) -> Result<(), MqttSectionError> {
        let err = |key, message: String| Err(MqttSectionError { key, message });
        check_broker_and_points(&self.broker, &self.points)
            .map_err(|(key, message)| MqttSectionError { key, message })?;
        if self.qos > 1 {
            return err("qos", format!("{}: write 0 or 1", self.qos));
        }
        if !topic_ok(&self.topic_prefix) {
            return err(
                "topic_prefix",
                format!("{:?}: no + or # in a topic", self.topic_prefix),
            );
        }
        if let Some(w) = &self.write_prefix {
            if w.is_empty() || !topic_ok(w) {
                return err(
                    "write_prefix",
                    format!("{w:?}: write a prefix such as \"pointhub-set/\", without + or #"),
                );
            }
            if w.starts_with(&self.topic_prefix) || self.topic_prefix.starts_with(w.as_str()) {
                return err(
                    "write_prefix",
                    format!(
                        "{w:?} overlaps topic_prefix {:?}: the published states would read as writes; pick another",
                        self.topic_prefix
                    ),
                );
            }
        }
        if let Some(s) = &self.status_topic {
            if s.is_empty() || !topic_ok(s) {
                return err("status_topic", format!("{s:?}: one topic, without + or #"));
            }
        }
        Ok(())
    }
}

/// The MQTT publisher sink (`pointhub client mqtt`).
pub struct MqttSink {
    /// Its section.
    pub section: MqttSection,
    /// The client's name, for the default client id and status topic.
    pub name: String,
}

impl Sink for MqttSink {
    fn kind(&self) -> &'static str {
        "mqtt publisher"
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
            self.serve(client, events, shutdown)
                .await
                .map_err(|e| SinkError::Failed {
                    sink: "mqtt publisher",
                    source: Box::new(e),
                })
        })
    }
}

/// What a broker's event loop reports to its sink.
pub(crate) enum FromBroker {
    /// Connected (or connected again): subscribe, publish the state.
    Connected,
    /// The link to the broker failed; it dials again by itself.
    Lost(String),
    /// A message on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
}

/// Runs a broker's event loop on its own task until `stop`, so a publish waiting for room never
/// stops it; waits with a capped backoff after each failure.
pub(crate) fn broker_events(
    mut ev: rumqttc::EventLoop,
    stop: CancellationToken,
) -> mpsc::Receiver<FromBroker> {
    let (tx, rx) = mpsc::channel::<FromBroker>(256);
    tokio::spawn(async move {
        let mut backoff =
            pointhub_link::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        loop {
            let e = tokio::select! {
                _ = stop.cancelled() => return,
                e = ev.poll() => e,
            };
            let msg = match e {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    FromBroker::Connected
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => FromBroker::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                },
                Ok(_) => continue,
                Err(e) => {
                    let _ = tx.send(FromBroker::Lost(e.to_string())).await;
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A written value as the payload gives it: JSON (a number, `true`, `"text"`), else the text.
fn written(payload: &[u8]) -> Value {
    let text = String::from_utf8_lossy(payload).trim().to_string();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Bool(b)) => Value::Bool(b),
        Ok(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(f)) => Value::Float(f),
            _ => Value::String(text),
        },
        Ok(serde_json::Value::String(s)) => Value::String(s),
        _ => Value::String(text),
    }
}

impl MqttSink {
    fn qos(&self) -> QoS {
        if self.section.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    fn status_topic(&self) -> String {
        self.section
            .status_topic
            .clone()
            .unwrap_or_else(|| format!("pointhub-status/{}", self.name))
    }

    fn topic(&self, point: &str) -> String {
        format!("{}{point}", self.section.topic_prefix)
    }

    async fn publish(&self, mq: &AsyncClient, rec: &PointRecord) -> bool {
        let payload = rec.to_json().to_string();
        let send = mq.publish(
            self.topic(&rec.name),
            self.qos(),
            self.section.retain,
            payload,
        );
        matches!(
            tokio::time::timeout(Duration::from_secs(1), send).await,
            Ok(Ok(()))
        )
    }

    async fn serve(
        self,
        client: Client,
        mut events: mpsc::Receiver<Event>,
        shutdown: CancellationToken,
    ) -> Result<(), pointhub_mqtt::BrokerError> {
        let mut opts = self
            .section
            .broker
            .options(&format!("pointhub-{}", self.name))?;
        let status = self.status_topic();
        opts.set_last_will(LastWill::new(&status, "offline", QoS::AtLeastOnce, true));
        let (mq, ev) = AsyncClient::new(opts, 1024);
        let writes = self.section.write_prefix.clone();
        let stop = shutdown.child_token();
        let mut from_broker = broker_events(ev, stop.clone());
        let mut connected = false;
        let mut resync = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    if connected && resync {
                        resync = !self.publish_all(&mq, &client).await;
                    }
                }
                m = from_broker.recv() => match m {
                    None => break,
                    Some(FromBroker::Connected) => {
                        info!(broker = %self.section.broker.host, port = self.section.broker.port(), "MQTT broker connected; publishing the mirror");
                        connected = true;
                        let _ = mq.publish(&status, QoS::AtLeastOnce, true, "online").await;
                        if let Some(w) = &writes {
                            let _ = mq.subscribe(format!("{w}#"), QoS::AtLeastOnce).await;
                        }
                        resync = !self.publish_all(&mq, &client).await;
                    }
                    Some(FromBroker::Lost(e)) => {
                        if connected {
                            warn!(error = %e, "MQTT broker lost; reconnecting (the mirror is published again on return)");
                        } else {
                            warn!(error = %e, "MQTT broker unreachable; retrying");
                        }
                        connected = false;
                    }
                    Some(FromBroker::Message { topic, payload }) => {
                        if let Some(point) = writes.as_deref().and_then(|w| topic.strip_prefix(w)) {
                            self.write(&mq, &client, point.to_string(), &payload);
                        }
                    }
                },
                e = events.recv() => match e {
                    None => break,
                    Some(Event::Update(rec)) if !rec.history => {
                        if connected && !self.publish(&mq, &rec).await {
                            // The broker is slow: the whole mirror goes again once it keeps up.
                            resync = true;
                        }
                    }
                    Some(Event::Connected { hub, .. }) => info!(hub = %hub, "connected to the hub"),
                    Some(Event::Disconnected { reason }) => warn!(reason = %reason, "hub link lost: the points are published stale"),
                    Some(_) => {}
                },
            }
        }
        // A clean leave: the status says so (a disconnect sends no will).
        let _ = mq.publish(&status, QoS::AtLeastOnce, true, "offline").await;
        let _ = tokio::time::timeout(Duration::from_millis(500), mq.disconnect()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        Ok(())
    }

    /// The whole mirror, each point's current state; `false` if the broker did not keep up.
    async fn publish_all(&self, mq: &AsyncClient, client: &Client) -> bool {
        for rec in client.mirror() {
            if !self.publish(mq, &rec).await {
                return false;
            }
        }
        true
    }

    /// A write from MQTT: through the hub, its outcome published beside the point's topic.
    fn write(&self, mq: &AsyncClient, client: &Client, point: String, payload: &[u8]) {
        let value = written(payload);
        let (mq, client) = (mq.clone(), client.clone());
        let timeout = Duration::from_millis(self.section.write_timeout_ms);
        let topic = format!("{}/write-result", self.topic(&point));
        let qos = self.qos();
        tokio::spawn(async move {
            let (status, message) = match client.write(&point, value.clone(), timeout).await {
                Ok(o) => (o.status, o.message),
                Err(e) => (pointhub_schemas::Quality::BadNoCommunication, e.to_string()),
            };
            info!(point = %point, value = %value, status = %status, "write from MQTT");
            let body = serde_json::json!({
                "point": point,
                "value": value.to_json(),
                "status": status.to_string(),
                "status_code": status.0,
                "message": message,
            });
            let _ = mq.publish(topic, qos, false, body.to_string()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_payloads_are_json_first_then_text() {
        assert_eq!(written(b"42"), Value::Int(42));
        assert_eq!(written(b" 2.5\n"), Value::Float(2.5));
        assert_eq!(written(b"true"), Value::Bool(true));
        assert_eq!(written(b"\"on\""), Value::String("on".into()));
        assert_eq!(written(b"open"), Value::String("open".into()));
    }

    #[test]
    fn a_write_prefix_that_overlaps_the_topics_is_refused() {
        let s: MqttSection = toml::from_str(
            "topic_prefix = \"p/\"\nwrite_prefix = \"p/set/\"\n[broker]\nhost = \"b\"\ntls = false\n",
        )
        .expect("parses");
        let e = s.validate().expect_err("overlap").to_string();
        assert!(
            e.contains("mqtt.write_prefix") && e.contains("overlaps"),
            "{e}"
        );
        let s: MqttSection = toml::from_str(
            "write_prefix = \"pointhub-set/\"\n[broker]\nhost = \"b\"\ntls = false\n",
        )
        .expect("parses");
        s.validate().expect("separate prefixes");
    }
}
