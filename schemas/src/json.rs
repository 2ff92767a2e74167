//! The JSON record of a point, as `pointhub client watch --format jsonl` prints it.
//!
//! `{"point":"plant1/sim/sine1","value":12.5,"quality":"Good","quality_code":0,
//!   "source_ts":"2026-11-22T14:33:37.123456Z","hub_ts":"2026-11-22T14:33:37.124001Z"}`
//!
//! A stale point keeps its last value; `quality` says it is no longer live. Timestamps are
//! RFC 3339 UTC with microseconds, or `null` when never set. `history` is present and `true` only
//! on replays of buffered history. The client and the console add `"unit"` when the point has
//! one.

use crate::{Quality, Timestamp, Value};
use serde_json::{json, Map};

/// Builds the JSON record of one point.
pub fn record(
    point: &str,
    value: &Value,
    quality: Quality,
    source_ts: Timestamp,
    hub_ts: Timestamp,
    history: bool,
) -> serde_json::Value {
    let ts = |t: Timestamp| {
        if t.is_never() {
            serde_json::Value::Null
        } else {
            t.to_rfc3339().into()
        }
    };
    let mut m = Map::new();
    m.insert("point".into(), point.into());
    m.insert("value".into(), value.to_json());
    m.insert("quality".into(), quality.to_string().into());
    m.insert("quality_code".into(), json!(quality.0));
    m.insert("source_ts".into(), ts(source_ts));
    m.insert("hub_ts".into(), ts(hub_ts));
    if history {
        m.insert("history".into(), true.into());
    }
    serde_json::Value::Object(m)
}
