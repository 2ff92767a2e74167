//! UA values, status codes and times as pointhub's, and back.
//!
//! A UA StatusCode *is* a pointhub quality (both are the OPC UA code), so it passes unchanged:
//! a `BadSensorFailure` at the device is `BadSensorFailure` at the top. A value converts to the
//! point's configured type where it can without loss of meaning (any integer node to `int` or
//! `uint` within range, any number to `float`, a boolean to a number); where it cannot, the
//! point is `BadTypeMismatch` and keeps its last value.

use opcua::types::{DataTypeId, DataValue, DateTime, NodeId, StatusCode, Variant};
use pointhub_schemas::{DataType, Quality, Timestamp, Value};

/// Parses a node id as UA writes it (`ns=2;s=Tank1.Level`, `ns=3;i=1001`, `i=2258`).
pub fn node_id(text: &str) -> Option<NodeId> {
    text.trim().parse::<NodeId>().ok()
}

/// The quality a UA status code is: the same code.
pub fn quality(status: StatusCode) -> Quality {
    Quality(status.bits())
}

/// A UA time as pointhub's; `None` for UA's null time.
pub fn timestamp(t: &DateTime) -> Option<Timestamp> {
    if t.is_null() {
        return None;
    }
    let micros = t.as_chrono().timestamp_micros();
    u64::try_from(micros).ok().map(Timestamp)
}

/// What one data change from the server says about a point of type `dtype`: its value (`None`
/// when it carries none, as a Bad status does, or when it does not convert) and its quality.
pub fn sample(dv: &DataValue, dtype: DataType) -> (Option<Value>, Quality) {
    let status = dv.status();
    match dv.value.as_ref().and_then(|v| value(v, dtype)) {
        Some(v) => (Some(v), quality(status)),
        // A value of another kind than the point's: the point cannot show it.
        None if status.is_good() && carries_value(dv) => (None, Quality::BadTypeMismatch),
        None => (None, quality(status)),
    }
}

/// The time of a data change: the source's, else the server's, else `now`.
pub fn sample_time(dv: &DataValue, now: Timestamp) -> Timestamp {
    dv.source_timestamp
        .as_ref()
        .and_then(timestamp)
        .or_else(|| dv.server_timestamp.as_ref().and_then(timestamp))
        .unwrap_or(now)
}

fn carries_value(dv: &DataValue) -> bool {
    !matches!(dv.value, None | Some(Variant::Empty))
}

/// A UA value as a point of type `dtype`, if it converts.
pub fn value(v: &Variant, dtype: DataType) -> Option<Value> {
    let int: Option<i128> = match v {
        Variant::SByte(x) => Some((*x).into()),
        Variant::Byte(x) => Some((*x).into()),
        Variant::Int16(x) => Some((*x).into()),
        Variant::UInt16(x) => Some((*x).into()),
        Variant::Int32(x) => Some((*x).into()),
        Variant::UInt32(x) => Some((*x).into()),
        Variant::Int64(x) => Some((*x).into()),
        Variant::UInt64(x) => Some((*x).into()),
        Variant::Boolean(b) => Some(i128::from(*b)),
        _ => None,
    };
    let float: Option<f64> = match v {
        Variant::Float(x) => Some(f64::from(*x)),
        Variant::Double(x) => Some(*x),
        _ => int.map(|i| i as f64),
    };
    match dtype {
        DataType::Bool => match v {
            Variant::Boolean(b) => Some(Value::Bool(*b)),
            _ => int.map(|i| Value::Bool(i != 0)),
        },
        DataType::Int => int.and_then(|i| i64::try_from(i).ok()).map(Value::Int),
        DataType::UInt => int.and_then(|i| u64::try_from(i).ok()).map(Value::UInt),
        DataType::Float => float.map(Value::Float),
        DataType::String => match v {
            Variant::String(s) => Some(Value::String(s.as_ref().to_string())),
            Variant::LocalizedText(t) => Some(Value::String(t.text.as_ref().to_string())),
            _ => None,
        },
    }
}

/// A value to write to a node of UA type `ua`, if it fits: the node's own type, as servers
/// refuse any other (`BadTypeMismatch`).
pub fn variant(v: &Value, ua: DataTypeId) -> Option<Variant> {
    let int: Option<i128> = match v {
        Value::Int(i) => Some((*i).into()),
        Value::UInt(u) => Some((*u).into()),
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i128),
        _ => None,
    };
    let float: Option<f64> = match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::UInt(u) => Some(*u as f64),
        _ => None,
    };
    macro_rules! int {
        ($variant:ident, $t:ty) => {
            int.and_then(|i| <$t>::try_from(i).ok())
                .map(Variant::$variant)
        };
    }
    match ua {
        DataTypeId::Boolean => match v {
            Value::Bool(b) => Some(Variant::Boolean(*b)),
            _ => int
                .filter(|i| *i == 0 || *i == 1)
                .map(|i| Variant::Boolean(i == 1)),
        },
        DataTypeId::SByte => int!(SByte, i8),
        DataTypeId::Byte => int!(Byte, u8),
        DataTypeId::Int16 => int!(Int16, i16),
        DataTypeId::UInt16 => int!(UInt16, u16),
        DataTypeId::Int32 => int!(Int32, i32),
        DataTypeId::UInt32 => int!(UInt32, u32),
        DataTypeId::Int64 => int!(Int64, i64),
        DataTypeId::UInt64 => int!(UInt64, u64),
        DataTypeId::Float => float.map(|f| Variant::Float(f as f32)),
        DataTypeId::Double => float.map(Variant::Double),
        DataTypeId::String => match v {
            Value::String(s) => Some(Variant::String(s.as_str().into())),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_to_the_points_type_or_not_at_all() {
        assert_eq!(
            value(&Variant::Int32(-5), DataType::Int),
            Some(Value::Int(-5))
        );
        assert_eq!(value(&Variant::Int32(-5), DataType::UInt), None);
        assert_eq!(
            value(&Variant::UInt16(7), DataType::Float),
            Some(Value::Float(7.0))
        );
        assert_eq!(
            value(&Variant::Double(1.5), DataType::Float),
            Some(Value::Float(1.5))
        );
        assert_eq!(value(&Variant::Double(1.5), DataType::Int), None);
        assert_eq!(
            value(&Variant::Boolean(true), DataType::Bool),
            Some(Value::Bool(true))
        );
        assert_eq!(
            value(&Variant::String("a".into()), DataType::String),
            Some(Value::String("a".into()))
        );
        assert_eq!(value(&Variant::String("a".into()), DataType::Float), None);
        assert_eq!(
            value(&Variant::UInt64(u64::MAX), DataType::UInt),
            Some(Value::UInt(u64::MAX))
        );
        assert_eq!(value(&Variant::UInt64(u64::MAX), DataType::Int), None);
    }

    #[test]
    fn writes_take_the_nodes_own_type() {
        assert_eq!(
            variant(&Value::Float(42.0), DataTypeId::Int32),
            Some(Variant::Int32(42))
        );
        assert_eq!(variant(&Value::Float(42.5), DataTypeId::Int32), None);
        assert_eq!(variant(&Value::Int(70_000), DataTypeId::UInt16), None);
        assert_eq!(
            variant(&Value::Int(3), DataTypeId::Double),
            Some(Variant::Double(3.0))
        );
        assert_eq!(
            variant(&Value::Bool(true), DataTypeId::Boolean),
            Some(Variant::Boolean(true))
        );
        assert_eq!(
            variant(&Value::String("x".into()), DataTypeId::String),
            Some(Variant::String("x".into()))
        );
        assert_eq!(variant(&Value::String("x".into()), DataTypeId::Int32), None);
    }

    #[test]
    fn a_status_passes_unchanged_and_a_bad_one_carries_no_value() {
        let mut dv = DataValue::value_only(Variant::Double(1.0));
        assert_eq!(
            sample(&dv, DataType::Float),
            (Some(Value::Float(1.0)), Quality::Good)
        );
        dv.value = Some(Variant::Empty);
        dv.status = Some(StatusCode::BadSensorFailure);
        let (v, q) = sample(&dv, DataType::Float);
        assert_eq!((v, q.0), (None, 0x808C_0000));
        let dv = DataValue::value_only(Variant::String("x".into()));
        assert_eq!(
            sample(&dv, DataType::Float),
            (None, Quality::BadTypeMismatch)
        );
        assert!(node_id("ns=2;s=Tank1.Level").is_some());
        assert!(node_id("ns=3;i=1001").is_some());
        assert!(node_id("tank").is_none());
    }
}
