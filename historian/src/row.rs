//! One row of the samples table, as the historian buffers it, and the rule that turns the
//! client's records into rows: every value once, every quality transition once, never the
//! client's own link loss.

use pointhub_client::client::PointRecord;
use pointhub_schemas::{DataType, Quality, Timestamp, Value};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// A sample on its way to the database (buffered on disk until the database commits it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The point's full name.
    pub point: String,
    /// The point's data type.
    pub dtype: DataType,
    /// The engineering unit, if any.
    pub unit: Option<String>,
    /// The description, if any.
    pub description: Option<String>,
    /// The row's time, µs since the epoch: the value's source time, or for a quality-only
    /// transition (a point going stale) the hub's time of the transition.
    pub time: Timestamp,
    /// When the hub took the update in.
    pub hub_time: Timestamp,
    /// The value.
    pub value: Value,
    /// The OPC UA status code.
    pub quality: Quality,
    /// A replay of buffered history, not a live value.
    pub history: bool,
}

/// Turns a client's records into rows, remembering each point's last live row so that a
/// repeat (the snapshot after a reconnect) is not a row and a quality-only change is one.
#[derive(Default)]
pub struct Recorder {
    last: HashMap<Arc<str>, (Timestamp, Quality)>,
}

impl Recorder {
    /// The row for `r`, or none: the client's own staleness (its link to the hub dropped, the
    /// point did not change), a live repeat of the last row, or a point with no time at all.
    pub fn row(&mut self, r: &PointRecord) -> Option<Row> {
        if r.link_lost {
            return None;
        }
        let mut time = if r.source_ts.is_never() {
            r.hub_ts
        } else {
            r.source_ts
        };
        if time.is_never() {
            return None;
        }
        if !r.history {
            match self.last.get(&r.name) {
                Some(&(ts, q)) if ts == r.source_ts && q == r.quality => return None,
                // Same value, new quality: the transition is recorded at the hub's time of it.
                Some(&(ts, _)) if ts == r.source_ts && !r.hub_ts.is_never() => time = r.hub_ts,
                _ => {}
            }
            self.last.insert(r.name.clone(), (r.source_ts, r.quality));
        }
        Some(Row {
            point: r.name.to_string(),
            dtype: r.dtype,
            unit: r.unit.clone(),
            description: r.description.as_deref().map(str::to_string),
            time,
            hub_time: r.hub_ts,
            value: r.value.clone(),
            quality: r.quality,
            history: r.history,
        })
    }
}

/// How a value is stored: numbers (and booleans as 0 and 1) as double precision, text as text.
pub fn columns(v: &Value) -> (Option<f64>, Option<String>) {
    match v {
        Value::Null => (None, None),
        Value::Bool(b) => (Some(if *b { 1.0 } else { 0.0 }), None),
        Value::Int(i) => (Some(*i as f64), None),
        Value::UInt(u) => (Some(*u as f64), None),
        Value::Float(f) => (Some(*f), None),
        Value::String(s) => (None, Some(s.clone())),
    }
}

/// The value a stored row holds, back as the point's type.
pub fn value_of(dtype: DataType, number: Option<f64>, text: Option<String>) -> Value {
    match (dtype, number, text) {
        (DataType::String, _, Some(t)) => Value::String(t),
        (DataType::Bool, Some(n), _) => Value::Bool(n != 0.0),
        (DataType::Int, Some(n), _) => Value::Int(n as i64),
        (DataType::UInt, Some(n), _) => Value::UInt(n as u64),
        (DataType::Float, Some(n), _) => Value::Float(n),
        _ => Value::Null,
    }
}

/// A data type from its stored name (`bool`, `int`, `uint`, `float`, `string`).
pub fn dtype_of(name: &str) -> Option<DataType> {
    [
        DataType::Bool,
        DataType::Int,
        DataType::UInt,
        DataType::Float,
        DataType::String,
    ]
    .into_iter()
    .find(|d| d.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(source: u64, hub: u64, q: Quality, history: bool) -> PointRecord {
        PointRecord {
            name: "p/x".into(),
            value: Value::Float(1.5),
            quality: q,
            source_ts: Timestamp(source),
            hub_ts: Timestamp(hub),
            history,
            dtype: DataType::Float,
            writable: false,
            unit: None,
            description: None,
            link_lost: false,
        }
    }

    #[test]
    fn values_once_transitions_at_their_time_and_never_the_clients_own_link_loss() {
        let mut r = Recorder::default();
        let good = r.row(&rec(10, 11, Quality::Good, false)).map(|x| x.time);
        assert_eq!(good, Some(Timestamp(10)));
        assert!(
            r.row(&rec(10, 11, Quality::Good, false)).is_none(),
            "a repeat"
        );
        let stale = Quality::stale(true);
        let t = r
            .row(&rec(10, 50, stale, false))
            .map(|x| (x.time, x.quality));
        assert_eq!(
            t,
            Some((Timestamp(50), stale)),
            "a transition at the hub's time"
        );
        let mut lost = rec(10, 60, Quality::stale(true), false);
        lost.link_lost = true;
        assert!(
            r.row(&lost).is_none(),
            "the client's own link loss is not the point's"
        );
        let h = r
            .row(&rec(20, 70, Quality::Good, true))
            .map(|x| (x.time, x.history));
        assert_eq!(h, Some((Timestamp(20), true)), "history at its source time");
        assert!(
            r.row(&rec(30, 80, Quality::Good, false)).is_some(),
            "a new value"
        );
    }

    #[test]
    fn stored_values_come_back_as_their_type() {
        for (d, v) in [
            (DataType::Bool, Value::Bool(true)),
            (DataType::Int, Value::Int(-7)),
            (DataType::UInt, Value::UInt(7)),
            (DataType::Float, Value::Float(2.25)),
            (DataType::String, Value::String("on".into())),
        ] {
            let (n, t) = columns(&v);
            assert_eq!(value_of(d, n, t), v);
            assert_eq!(dtype_of(d.as_str()), Some(d));
        }
    }
}
