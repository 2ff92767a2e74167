//! The MQTT source: subscribes to its points' topics on a broker, and each message on a topic is
//! the point's new value, `Good`, at the payload's source time (or when it arrived).
//!
//! A message that does not decode turns its point `BadDecodingError` (last value kept), and the
//! log says why, once per point until it decodes again. The broker refusing the connection,
//! closing it, or falling silent past 1.5 keep-alive intervals turns every point of the source
//! `BadCommunicationError` at once; the source dials again with a capped backoff, subscribes
//! again, and the broker's retained messages bring the values back. Points are read-only.

use super::{Sample, Source, SourceContext, SourceHandle, SourceWrite};
use crate::mqtt_config::MqttConfig;
use pointhub_link::Backoff;
use pointhub_mqtt::Payload;
use pointhub_schemas::{PointDef, Quality, Timestamp, Value};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

impl Source for MqttConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn start(&self, ctx: SourceContext) -> SourceHandle {
        let points: Vec<PointDef> = self
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| PointDef {
                id: ctx.base + i as u32,
                name: format!("{}/{}/{}", ctx.namespace, self.name, p.name),
                dtype: p.dtype,
                unit: p.unit.clone(),
                description: p.description.clone(),
                writable: false,
            })
            .collect();
        let (wtx, wrx) = mpsc::channel(8);
        let run = Run {
            cfg: self.clone(),
            client_id: format!("pointhub-{}-{}", ctx.edge, self.name),
            base: ctx.base,
            out: ctx.samples,
            by_topic: topics(self),
            payloads: self.points.iter().map(|p| p.payload()).collect(),
            last: vec![(Value::Null, Quality::BadWaitingForInitialData); self.points.len()],
        };
        tokio::spawn(run.run(wrx, ctx.shutdown));
        SourceHandle {
            points,
            writes: wtx,
        }
    }
}

/// Point indices by topic (several points may read one topic: fields of one JSON message).
fn topics(cfg: &MqttConfig) -> HashMap<String, Vec<usize>> {
    let mut m: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, p) in cfg.points.iter().enumerate() {
        m.entry(p.topic.clone()).or_default().push(i);
    }
    m
}

struct Run {
    cfg: MqttConfig,
    client_id: String,
    base: u32,
    out: mpsc::Sender<Vec<Sample>>,
    by_topic: HashMap<String, Vec<usize>>,
    payloads: Vec<Payload>,
    /// Each point's last value and quality as reported.
    last: Vec<(Value, Quality)>,
}

impl Run {
    /// Every point at `quality`, keeping its last value; only the points whose quality changes.
    async fn all(&mut self, quality: Quality) {
        let ts = Timestamp::now();
        let mut samples = Vec::new();
        for (i, (value, q)) in self.last.iter_mut().enumerate() {
            if *q != quality {
                *q = quality;
                samples.push(Sample {
                    id: self.base + i as u32,
                    value: value.clone(),
                    quality,
                    ts,
                });
            }
        }
        if !samples.is_empty() {
            let _ = self.out.send(samples).await;
        }
    }

    async fn run(mut self, mut writes: mpsc::Receiver<SourceWrite>, shutdown: CancellationToken) {
        let src = self.cfg.name.clone();
        let options = match self.cfg.broker.options(&self.client_id) {
            Ok(o) => o,
            Err(e) => {
                warn!(source = %src, error = %e, "MQTT source cannot start: fix its broker settings");
                self.all(Quality::BadConfigurationError).await;
                return;
            }
        };
        let (client, mut events) = AsyncClient::new(options, 64);
        let qos = if self.cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let mut connected = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    return;
                }
                w = writes.recv() => {
                    if let Some(w) = w {
                        let _ = w.reply.send((Quality::BadNotWritable, "MQTT source points are read-only".into()));
                    }
                }
                ev = poll(&mut events) => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(source = %src, broker = %self.cfg.broker.host, port = self.cfg.broker.port(), "MQTT broker connected; subscribing");
                        connected = true;
                        backoff.reset();
                        for topic in self.by_topic.keys() {
                            if let Err(e) = client.subscribe(topic.clone(), qos).await {
                                warn!(source = %src, topic = %topic, error = %e, "cannot subscribe");
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => self.message(&p.topic, &p.payload).await,
                    Ok(Event::Incoming(Packet::SubAck(s))) => {
                        if s.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            warn!(source = %src, "the broker refused a subscription: check its ACL for this client");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            warn!(source = %src, error = %e, "MQTT broker lost: the source's points are BadCommunicationError; reconnecting");
                        } else {
                            warn!(source = %src, error = %e, "MQTT broker unreachable; retrying");
                        }
                        self.all(Quality::BadCommunicationError).await;
                        connected = false;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
            }
        }
    }

    /// A message on a topic: each point reading it gets its value, or `BadDecodingError`.
    async fn message(&mut self, topic: &str, payload: &[u8]) {
        let Some(ids) = self.by_topic.get(topic) else {
            return;
        };
        let now = Timestamp::now();
        let mut samples = Vec::with_capacity(ids.len());
        for &i in ids {
            let Some(rule) = self.payloads.get(i) else {
                continue;
            };
            let (last, last_q) = &mut self.last[i];
            match rule.decode(payload) {
                Ok((v, ts)) => {
                    *last = v.clone();
                    *last_q = Quality::Good;
                    samples.push(Sample {
                        id: self.base + i as u32,
                        value: v,
                        quality: Quality::Good,
                        ts: ts.unwrap_or(now),
                    });
                }
                Err(e) => {
                    if *last_q != Quality::BadDecodingError {
                        *last_q = Quality::BadDecodingError;
                        warn!(source = %self.cfg.name, topic, point = %self.cfg.points[i].name, error = %e, "MQTT message does not decode: the point is BadDecodingError until one does");
                        samples.push(Sample {
                            id: self.base + i as u32,
                            value: last.clone(),
                            quality: Quality::BadDecodingError,
                            ts: now,
                        });
                    }
                }
            }
        }
        if samples.is_empty() {
            return;
        }
        let _ = self.out.send(samples).await;
    }
}

async fn poll(events: &mut EventLoop) -> Result<Event, rumqttc::ConnectionError> {
    events.poll().await
}
