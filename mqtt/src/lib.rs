//! MQTT for pointhub: how to reach a broker ([`broker`]: TCP or TLS with trusted CA files, a
//! client certificate and key, a user name and password, MQTT 3.1.1) and how a plain topic's
//! payload becomes a point's value ([`payload`]: a number, a boolean, text or a field of a JSON
//! object, with an optional source time). The edge's MQTT source and the client's MQTT sink both
//! build on it, so a broker is configured the same way at both ends. [`sparkplug`] holds the
//! Sparkplug B payload and how a point becomes a metric.
//!
//! The MQTT client is `rumqttc`: made for tokio, maintained, MQTT 3.1.1 and 5, TLS over rustls
//! (the TLS stack pointhub uses everywhere, with the same ring provider).

pub mod broker;
pub mod payload;
pub mod sparkplug;

pub use broker::{Broker, BrokerError};
pub use payload::{Payload, PayloadError};
