//! A plain topic's payload as a point's value: the payload itself (`21.5`, `true`, text), or a
//! field of a JSON object (`json = "level"`, dots for nested fields and array indices:
//! `json = "tanks.0.level"`), with the source time optionally from another field (`time =
//! "ts"`: an RFC 3339 text in UTC, or a number of milliseconds since 1970).

use pointhub_schemas::{DataType, Timestamp, Value};
use serde::Deserialize;

/// How a topic's payload is read (keys of a point's entry).
#[derive(Clone, Debug, Deserialize)]
pub struct Payload {
    /// The point's data type: `float`, `int`, `uint`, `bool` or `string`.
    #[serde(rename = "type")]
    pub dtype: DataType,
    /// The payload is a JSON object and the value is this field (dots for nesting).
    pub json: Option<String>,
    /// The JSON field holding the source time; without it, the time the message arrived.
    pub time: Option<String>,
}

/// Why a payload gives no value; the point's quality says so and the log has this sentence.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    /// The payload is not UTF-8 text.
    #[error("the payload is not text")]
    NotText,
    /// The payload is not a JSON document (with `json` set).
    #[error("the payload is not JSON: {0}")]
    NotJson(String),
    /// The JSON has no such field.
    #[error("the JSON payload has no field {0:?}")]
    NoField(String),
    /// The value does not fit the point's type.
    #[error("{text:?} is not a {ty}")]
    Type {
        /// The text or JSON read.
        text: String,
        /// The point's type.
        ty: &'static str,
    },
    /// The time field is neither RFC 3339 text nor milliseconds since 1970.
    #[error("time field {field:?}: {detail}")]
    Time {
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },
}

fn field<'a>(doc: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(doc, |at, key| match at {
        serde_json::Value::Object(m) => m.get(key),
        serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn from_text(text: &str, ty: DataType) -> Result<Value, PayloadError> {
    let t = text.trim();
    let bad = || PayloadError::Type {
        text: t.chars().take(64).collect(),
        ty: ty.as_str(),
    };
    Ok(match ty {
        DataType::String => Value::String(text.to_string()),
        DataType::Float => Value::Float(t.parse().map_err(|_| bad())?),
        DataType::Int => Value::Int(t.parse().map_err(|_| bad())?),
        DataType::UInt => Value::UInt(t.parse().map_err(|_| bad())?),
        DataType::Bool => match t.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" => Value::Bool(true),
            "false" | "0" | "off" => Value::Bool(false),
            _ => return Err(bad()),
        },
    })
}

fn from_json(v: &serde_json::Value, ty: DataType) -> Result<Value, PayloadError> {
    let value = match v {
        serde_json::Value::String(s) => return from_text(s, ty),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Value::UInt(u),
            (None, Some(i), _) => Value::Int(i),
            (None, None, Some(f)) => Value::Float(f),
            _ => Value::Null,
        },
        other => {
            return Err(PayloadError::Type {
                text: other.to_string().chars().take(64).collect(),
                ty: ty.as_str(),
            })
        }
    };
    value.coerce(ty).map_err(|e| PayloadError::Type {
        text: e.value,
        ty: ty.as_str(),
    })
}

fn time(doc: &serde_json::Value, name: &str) -> Result<Timestamp, PayloadError> {
    let err = |detail: String| PayloadError::Time {
        field: name.to_string(),
        detail,
    };
    let micros = match field(doc, name) {
        None => return Err(err("missing".into())),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| err(format!("{n} is not milliseconds since 1970")))?,
        Some(serde_json::Value::String(s)) => {
            let t = humantime::parse_rfc3339(s).map_err(|e| err(format!("{s:?}: {e}")))?;
            t.duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| err(e.to_string()))?
                .as_micros() as u64
        }
        Some(other) => return Err(err(format!("{other} is not a time"))),
    };
    let ts = Timestamp(micros);
    if ts.is_valid() {
        Ok(ts)
    } else {
        Err(err(format!("{micros} µs is out of range")))
    }
}

impl Payload {
    /// The value of a payload, and its source time if the payload carries one.
    pub fn decode(&self, bytes: &[u8]) -> Result<(Value, Option<Timestamp>), PayloadError> {
        let text = std::str::from_utf8(bytes).map_err(|_| PayloadError::NotText)?;
        if self.json.is_none() && self.time.is_none() {
            return Ok((from_text(text, self.dtype)?, None));
        }
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PayloadError::NotJson(e.to_string()))?;
        let value = match &self.json {
            Some(path) => from_json(
                field(&doc, path).ok_or_else(|| PayloadError::NoField(path.clone()))?,
                self.dtype,
            )?,
            None => from_json(&doc, self.dtype)?,
        };
        let ts = self.time.as_deref().map(|f| time(&doc, f)).transpose()?;
        Ok((value, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(dtype: DataType, json: Option<&str>, time: Option<&str>) -> Payload {
        Payload {
            dtype,
            json: json.map(str::to_string),
            time: time.map(str::to_string),
        }
    }

    #[test]
    fn plain_payloads_and_json_fields_become_values_of_the_point_type() {
        let f = rule(DataType::Float, None, None);
        assert_eq!(f.decode(b" 21.5\n"), Ok((Value::Float(21.5), None)));
        assert!(matches!(f.decode(b"warm"), Err(PayloadError::Type { .. })));
        let b = rule(DataType::Bool, None, None);
        assert_eq!(b.decode(b"ON").map(|v| v.0), Ok(Value::Bool(true)));
        let u = rule(DataType::UInt, Some("tanks.1.level"), None);
        assert_eq!(
            u.decode(br#"{"tanks":[{"level":1},{"level":7}]}"#)
                .map(|v| v.0),
            Ok(Value::UInt(7))
        );
        assert_eq!(
            u.decode(br#"{"tanks":[]}"#),
            Err(PayloadError::NoField("tanks.1.level".into()))
        );
        assert!(matches!(u.decode(b"{"), Err(PayloadError::NotJson(_))));
        assert!(matches!(
            u.decode(br#"{"tanks":[0,{"level":-3}]}"#),
            Err(PayloadError::Type { .. })
        ));
        let f = rule(DataType::Float, Some("v"), None);
        assert_eq!(f.decode(br#"{"v":3}"#).map(|v| v.0), Ok(Value::Float(3.0)));
        assert_eq!(f.decode(&[0xff, 0xfe]), Err(PayloadError::NotText));
    }

    #[test]
    fn the_source_time_comes_from_rfc3339_text_or_milliseconds() {
        let r = rule(DataType::Float, Some("v"), Some("ts"));
        let (_, ts) = r
            .decode(br#"{"v":1,"ts":"2026-12-07T06:00:00.250Z"}"#)
            .expect("decodes");
        assert_eq!(ts, Some(Timestamp(1_796_623_200_250_000)));
        let (_, ts) = r.decode(br#"{"v":1,"ts":1796623200250}"#).expect("decodes");
        assert_eq!(ts, Some(Timestamp(1_796_623_200_250_000)));
        assert!(matches!(
            r.decode(br#"{"v":1,"ts":"yesterday"}"#),
            Err(PayloadError::Time { .. })
        ));
        assert!(matches!(
            r.decode(br#"{"v":1}"#),
            Err(PayloadError::Time { .. })
        ));
    }
}
