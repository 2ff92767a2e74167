//! Sparkplug B payloads: the protobuf messages of the Sparkplug 3.0 specification, written here
//! from its published field numbers and types (facts of the protocol), encoded with `prost`; and
//! how a point's value and quality become a metric and back.
//!
//! Quality travels as Sparkplug hosts expect it, in the metric's `Quality` property (an Int32:
//! 192 good, 500 stale, 0 bad), and exactly, as the OPC UA code, in `pointhub/quality_code`.

use pointhub_schemas::{DataType, Quality, Value};

/// A Sparkplug B payload (`Payload`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since 1970 when the message was made.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The message's sequence number, 0 to 255 (absent in NDEATH and STATE).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// An optional UUID for the body.
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// An optional opaque body.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// One metric (`Payload.Metric`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The metric's name (`sim/sine1`); may be left out once an alias is born.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The metric's alias.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since 1970 of the value.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// The Sparkplug data type ([`DataTypeCode`]).
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// A value from a store-and-forward buffer, not live.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored by a historian.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The metric has no value.
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// Properties: `Quality` and others.
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    /// The value, by type.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// A metric's value (`Payload.Metric.value`), the kinds pointhub uses.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8/16/32 and UInt8/16/32.
    #[prost(uint32, tag = "10")]
    Int(u32),
    /// Int64 (two's complement), UInt64, DateTime.
    #[prost(uint64, tag = "11")]
    Long(u64),
    /// Float.
    #[prost(float, tag = "12")]
    Float(f32),
    /// Double.
    #[prost(double, tag = "13")]
    Double(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    Boolean(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    String(String),
    /// Bytes, File.
    #[prost(bytes = "vec", tag = "16")]
    Bytes(Vec<u8>),
}

/// A metric's properties (`Payload.PropertySet`): keys and values in step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    /// The property names.
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    /// The values, one per key.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// A property's value (`Payload.PropertyValue`), the kinds pointhub uses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    /// The Sparkplug data type of the value.
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    /// The property has no value.
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    /// The value, by type.
    #[prost(oneof = "PropertyKind", tags = "3, 4, 6, 7, 8")]
    pub value: Option<PropertyKind>,
}

/// A property value (`Payload.PropertyValue.value`).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyKind {
    /// Int8/16/32, UInt8/16/32.
    #[prost(uint32, tag = "3")]
    Int(u32),
    /// Int64, UInt64.
    #[prost(uint64, tag = "4")]
    Long(u64),
    /// Double.
    #[prost(double, tag = "6")]
    Double(f64),
    /// Boolean.
    #[prost(bool, tag = "7")]
    Boolean(bool),
    /// String.
    #[prost(string, tag = "8")]
    String(String),
}

/// Sparkplug data type codes (the specification's `DataType`).
pub struct DataTypeCode;

impl DataTypeCode {
    /// Int32.
    pub const INT32: u32 = 3;
    /// Int64.
    pub const INT64: u32 = 4;
    /// UInt32.
    pub const UINT32: u32 = 7;
    /// UInt64.
    pub const UINT64: u32 = 8;
    /// Float.
    pub const FLOAT: u32 = 9;
    /// Double.
    pub const DOUBLE: u32 = 10;
    /// Boolean.
    pub const BOOLEAN: u32 = 11;
    /// String.
    pub const STRING: u32 = 12;

    /// The Sparkplug type a point of `t` is published as.
    pub fn of(t: DataType) -> u32 {
        match t {
            DataType::Bool => Self::BOOLEAN,
            DataType::Int => Self::INT64,
            DataType::UInt => Self::UINT64,
            DataType::Float => Self::DOUBLE,
            DataType::String => Self::STRING,
        }
    }
}

/// The Sparkplug (Ignition) quality of an OPC UA code: 192 good, 500 stale (uncertain), 0 bad.
pub fn sparkplug_quality(q: Quality) -> u32 {
    match q.0 >> 30 {
        0 => 192,
        1 => 500,
        _ => 0,
    }
}

fn int_property(key: &str, t: u32, v: u32) -> (String, PropertyValue) {
    (
        key.to_string(),
        PropertyValue {
            r#type: Some(t),
            is_null: None,
            value: Some(PropertyKind::Int(v)),
        },
    )
}

/// A point as a metric: its name, Sparkplug type, value, time (ms) and quality properties.
pub fn metric(name: &str, t: DataType, value: &Value, quality: Quality, ms: u64) -> Metric {
    let v = match value {
        Value::Null => None,
        Value::Bool(b) => Some(MetricValue::Boolean(*b)),
        Value::Int(i) => Some(MetricValue::Long(*i as u64)),
        Value::UInt(u) => Some(MetricValue::Long(*u)),
        Value::Float(f) => Some(MetricValue::Double(*f)),
        Value::String(s) => Some(MetricValue::String(s.clone())),
    };
    let (keys, values) = [
        int_property("Quality", DataTypeCode::INT32, sparkplug_quality(quality)),
        int_property("pointhub/quality_code", DataTypeCode::UINT32, quality.0),
    ]
    .into_iter()
    .unzip();
    Metric {
        name: Some(name.to_string()),
        alias: None,
        timestamp: Some(ms),
        datatype: Some(DataTypeCode::of(t)),
        is_historical: None,
        is_transient: None,
        is_null: v.is_none().then_some(true),
        properties: Some(PropertySet { keys, values }),
        value: v,
    }
}

/// A written metric's value as pointhub takes it (the hub coerces it to the point's type).
pub fn value_of(m: &Metric) -> Option<Value> {
    let signed = matches!(m.datatype, Some(1..=4));
    Some(match m.value.as_ref()? {
        MetricValue::Boolean(b) => Value::Bool(*b),
        MetricValue::Int(i) if signed => Value::Int(i64::from(*i as i32)),
        MetricValue::Int(i) => Value::UInt(u64::from(*i)),
        MetricValue::Long(l) if signed => Value::Int(*l as i64),
        MetricValue::Long(l) => Value::UInt(*l),
        MetricValue::Float(f) => Value::Float(f64::from(*f)),
        MetricValue::Double(d) => Value::Float(*d),
        MetricValue::String(s) => Value::String(s.clone()),
        MetricValue::Bytes(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_point_becomes_a_metric_with_its_quality_and_round_trips() {
        let m = metric(
            "sim/sine1",
            DataType::Float,
            &Value::Float(2.5),
            Quality::UncertainNoCommunicationLastUsableValue,
            1_000,
        );
        let p = Payload {
            timestamp: Some(1_000),
            metrics: vec![m.clone()],
            seq: Some(3),
            uuid: None,
            body: None,
        };
        let back = Payload::decode(p.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(back, p);
        let props = back.metrics[0].properties.clone().expect("properties");
        assert_eq!(props.keys, vec!["Quality", "pointhub/quality_code"]);
        assert_eq!(props.values[0].value, Some(PropertyKind::Int(500)));
        assert_eq!(value_of(&back.metrics[0]), Some(Value::Float(2.5)));
        assert_eq!(sparkplug_quality(Quality::Good), 192);
        assert_eq!(sparkplug_quality(Quality::BadCommunicationError), 0);
        let neg = metric("i", DataType::Int, &Value::Int(-7), Quality::Good, 0);
        assert_eq!(value_of(&neg), Some(Value::Int(-7)));
    }
}
