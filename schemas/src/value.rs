//! Point values and data types.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The data type of a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// True or false.
    Bool,
    /// Signed 64-bit integer.
    Int,
    /// Unsigned 64-bit integer.
    UInt,
    /// 64-bit IEEE 754 float.
    Float,
    /// UTF-8 text.
    String,
}

impl DataType {
    /// The type's lowercase name, as configuration and JSON write it (`bool`, `uint`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Int => "int",
            DataType::UInt => "uint",
            DataType::Float => "float",
            DataType::String => "string",
        }
    }
}

/// A point's value. `Null` is "no value" (a point that never had one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum Value {
    /// No value: the point never had one.
    #[default]
    Null,
    /// A true/false value (`bool` points).
    Bool(bool),
    /// A signed integer (`int` points).
    Int(i64),
    /// An unsigned integer (`uint` points).
    UInt(u64),
    /// A float (`float` points); a non-finite one prints as `null` in JSON.
    Float(f64),
    /// Text (`string` points).
    String(String),
}

/// Why a value does not fit a data type.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("value {value} does not fit data type {ty}")]
pub struct TypeMismatch {
    /// The refused value, as its `Display` prints it.
    pub value: String,
    /// The name of the data type it does not fit (`bool`, `int`, …).
    pub ty: &'static str,
}

impl Value {
    /// Whether this is [`Value::Null`]: no value.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts the value to `ty` where that keeps its meaning (an integer to a float, `1` to
    /// `true`, a whole float to an integer); refuses anything else.
    pub fn coerce(&self, ty: DataType) -> Result<Value, TypeMismatch> {
        let bad = || TypeMismatch {
            value: self.to_string(),
            ty: ty.as_str(),
        };
        Ok(match (ty, self) {
            (_, Value::Null) => Value::Null,
            (DataType::Bool, Value::Bool(b)) => Value::Bool(*b),
            (DataType::Bool, Value::Int(i)) if *i == 0 || *i == 1 => Value::Bool(*i == 1),
            (DataType::Bool, Value::UInt(i)) if *i <= 1 => Value::Bool(*i == 1),
            (DataType::Bool, Value::String(s)) => match s.as_str() {
                "true" | "on" | "1" => Value::Bool(true),
                "false" | "off" | "0" => Value::Bool(false),
                _ => return Err(bad()),
            },
            (DataType::Int, Value::Int(i)) => Value::Int(*i),
            (DataType::Int, Value::UInt(u)) => Value::Int(i64::try_from(*u).map_err(|_| bad())?),
            (DataType::Int, Value::Bool(b)) => Value::Int(i64::from(*b)),
            (DataType::Int, Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => {
                Value::Int(*f as i64)
            }
            (DataType::UInt, Value::UInt(u)) => Value::UInt(*u),
            (DataType::UInt, Value::Int(i)) => Value::UInt(u64::try_from(*i).map_err(|_| bad())?),
            (DataType::UInt, Value::Bool(b)) => Value::UInt(u64::from(*b)),
            (DataType::UInt, Value::Float(f)) if f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19 => {
                Value::UInt(*f as u64)
            }
            (DataType::Float, Value::Float(f)) => Value::Float(*f),
            (DataType::Float, Value::Int(i)) => Value::Float(*i as f64),
            (DataType::Float, Value::UInt(u)) => Value::Float(*u as f64),
            (DataType::String, Value::String(s)) => Value::String(s.clone()),
            (DataType::String, v) => Value::String(v.to_string()),
            _ => return Err(bad()),
        })
    }

    /// The value as JSON (`null`, `true`, `12.5`, `"text"`). Non-finite floats become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::UInt(u) => (*u).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => s.clone().into(),
        }
    }

    /// Reads a value from JSON; arrays and objects are not values.
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        Some(match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64()?)
                }
            }
            serde_json::Value::String(s) => Value::String(s.clone()),
            _ => return None,
        })
    }

    /// Parses what a user typed: JSON where it is JSON, otherwise the text as a string.
    pub fn parse_user(text: &str) -> Value {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| Value::from_json(&v))
            .unwrap_or_else(|| Value::String(text.to_string()))
    }

    /// The value as a float, for deadbands and display; `None` for strings and null.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerce_keeps_meaning() {
        assert_eq!(Value::Int(3).coerce(DataType::Float), Ok(Value::Float(3.0)));
        assert_eq!(Value::Float(3.0).coerce(DataType::Int), Ok(Value::Int(3)));
        assert!(Value::Float(3.5).coerce(DataType::Int).is_err());
        assert!(Value::Int(-1).coerce(DataType::UInt).is_err());
        assert_eq!(Value::Int(1).coerce(DataType::Bool), Ok(Value::Bool(true)));
        assert!(Value::String("x".into()).coerce(DataType::Float).is_err());
    }

    #[test]
    fn user_text() {
        assert_eq!(Value::parse_user("12.5"), Value::Float(12.5));
        assert_eq!(Value::parse_user("true"), Value::Bool(true));
        assert_eq!(Value::parse_user("-4"), Value::Int(-4));
        assert_eq!(Value::parse_user("hello"), Value::String("hello".into()));
        assert_eq!(Value::parse_user("\"7\""), Value::String("7".into()));
    }
}
