//! `kind = "mqtt"` sources: a broker, and the topics whose messages are points.

use pointhub_mqtt::{Broker, Payload};
use pointhub_schemas::DataType;
use serde::Deserialize;

/// An MQTT broker as a source (`[[sources]] kind = "mqtt"`): its settings in `[sources.broker]`,
/// its points in `[[sources.points]]`. Points are named `<namespace>/<name>/<point name>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The source's name: unique among the edge's sources, and part of its points' names.
    pub name: String,
    /// How to reach the broker.
    pub broker: Broker,
    /// The QoS the topics are subscribed with: 0 or 1 (default 1).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// One entry per point: the topic it comes from and how its payload is read.
    #[serde(default)]
    pub points: Vec<MqttPoint>,
}

fn default_qos() -> u8 {
    1
}

/// One point from one topic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttPoint {
    /// The point's name below the source (`tank1/level`).
    pub name: String,
    /// The topic its messages come on (no wildcards: one topic, one point).
    pub topic: String,
    /// The point's data type: `float`, `int`, `uint`, `bool` or `string`.
    #[serde(rename = "type")]
    pub dtype: DataType,
    /// The payload is a JSON object and the value is this field (dots for nesting).
    pub json: Option<String>,
    /// The JSON field holding the source time (RFC 3339 text or milliseconds since 1970).
    pub time: Option<String>,
    /// The engineering unit.
    pub unit: Option<String>,
    /// A description for HMIs.
    pub description: Option<String>,
}

impl MqttPoint {
    /// How this point's payloads are read.
    pub fn payload(&self) -> Payload {
        Payload {
            dtype: self.dtype,
            json: self.json.clone(),
            time: self.time.clone(),
        }
    }
}

/// Why an MQTT source section is refused; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MqttConfigError {
    #[error("sources: mqtt {src:?}: broker: {source}")]
    Broker {
        src: String,
        source: pointhub_mqtt::BrokerError,
    },
    #[error("sources: mqtt {src:?}: qos {qos}: write 0 or 1")]
    Qos { src: String, qos: u8 },
    #[error("sources: mqtt {src:?}: no points: add [[sources.points]] with name, topic and type")]
    NoPoints { src: String },
    #[error(
        "sources: mqtt {src:?}: point {point:?}: topic {topic:?}: write one topic, without + or #"
    )]
    Topic {
        src: String,
        point: String,
        topic: String,
    },
    #[error("sources: mqtt {src:?}: point {point:?} is listed twice")]
    Twice { src: String, point: String },
}

impl MqttConfig {
    /// Checks the broker settings and the points.
    pub(crate) fn validate(&self) -> Result<(), MqttConfigError> {
        let src = || self.name.clone();
        self.broker
            .validate()
            .map_err(|source| MqttConfigError::Broker { src: src(), source })?;
        if self.qos > 1 {
            return Err(MqttConfigError::Qos {
                src: src(),
                qos: self.qos,
            });
        }
        if self.points.is_empty() {
            return Err(MqttConfigError::NoPoints { src: src() });
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.points {
            if p.topic.is_empty() || p.topic.contains(['+', '#']) || p.topic.contains('\0') {
                return Err(MqttConfigError::Topic {
                    src: src(),
                    point: p.name.clone(),
                    topic: p.topic.clone(),
                });
            }
            if !names.insert(p.name.as_str()) {
                return Err(MqttConfigError::Twice {
                    src: src(),
                    point: p.name.clone(),
                });
            }
        }
        Ok(())
    }
}
