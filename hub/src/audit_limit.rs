//! How the audit log keeps a flood from flushing it: refusals (unknown keys, wrong passwords,
//! refused writes …) are recorded up to [`PER_KEY`] a minute per source and event, and up to
//! [`GLOBAL_PER_SEC`] a second over all sources; past that they are counted, and one
//! `audit.suppressed` entry per source and event says how many were left out and since when.
//! Everything that is not a refusal is always recorded.

use crate::audit_event::Event;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals recorded per source and event in one [`WINDOW`].
pub(crate) const PER_KEY: u32 = 10;
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Refusals recorded per second over all sources.
pub(crate) const GLOBAL_PER_SEC: u32 = 100;
/// Sources tracked at once; past it, new sources share one count.
const MAX_KEYS: usize = 10_000;

/// Whether an entry is a refusal, and if so the source it is counted under.
pub(crate) fn refusal_key(event: Event, fields: &Value) -> Option<String> {
    let refusal = event.is_refusal()
        || (event == Event::Write && fields["status"].as_str().is_some_and(|s| s != "Good"));
    if !refusal {
        return None;
    }
    // The remote host (without its port) when known, else who it was.
    let source = fields["remote"]
        .as_str()
        .map(|r| r.rsplit_once(':').map_or(r, |(h, _)| h).to_string())
        .or_else(|| fields["name"].as_str().map(str::to_string))
        .or_else(|| fields["user"].as_str().map(str::to_string))
        .unwrap_or_default();
    Some(format!("{} {source}", event.as_str()))
}

struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
    since: String,
}

/// What one source left out: for the `audit.suppressed` entry.
pub(crate) struct Suppressed {
    pub key: String,
    pub count: u64,
    pub since: String,
}

#[derive(Default)]
pub(crate) struct Limiter {
    keys: Mutex<HashMap<String, Window>>,
    global: Mutex<Option<(Instant, u32)>>,
}

impl Limiter {
    /// Whether a refusal counted under `key` is written (true) or only counted (false).
    pub(crate) fn admit(&self, key: &str, now_text: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        let Ok(mut keys) = self.keys.lock() else {
            return true;
        };
        let key = if keys.len() >= MAX_KEYS && !keys.contains_key(key) {
            "* (too many sources)"
        } else {
            key
        };
        let w = keys.entry(key.to_string()).or_insert_with(|| Window {
            start: now,
            written: 0,
            suppressed: 0,
            since: String::new(),
        });
        if now.duration_since(w.start) >= WINDOW && w.suppressed == 0 {
            w.start = now;
            w.written = 0;
        }
        let global_ok = match self.global.lock() {
            Ok(mut g) => match &mut *g {
                Some((start, n)) if now.duration_since(*start) < Duration::from_secs(1) => {
                    *n += 1;
                    *n <= GLOBAL_PER_SEC
                }
                other => {
                    *other = Some((now, 1));
                    true
                }
            },
            Err(_) => true,
        };
        if w.written < PER_KEY && global_ok {
            w.written += 1;
            true
        } else {
            if w.suppressed == 0 {
                w.since = now_text();
            }
            w.suppressed += 1;
            false
        }
    }

    /// Sources whose window has ended with refusals left out: taken (and their windows
    /// started afresh), for one summary entry each.
    pub(crate) fn due(&self) -> Vec<Suppressed> {
        let now = Instant::now();
        let Ok(mut keys) = self.keys.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        keys.retain(|key, w| {
            if now.duration_since(w.start) < WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                out.push(Suppressed {
                    key: key.clone(),
                    count: w.suppressed,
                    since: std::mem::take(&mut w.since),
                });
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_are_keyed_by_event_and_host_and_other_entries_are_not_limited() {
        let k = refusal_key(
            Event::ConnectionRefused,
            &json!({"remote": "10.1.2.3:5555", "name": "x"}),
        );
        assert_eq!(k.as_deref(), Some("connection.refused 10.1.2.3"));
        assert!(refusal_key(Event::Write, &json!({"status": "Good", "name": "op"})).is_none());
        assert!(refusal_key(
            Event::Write,
            &json!({"status": "BadUserAccessDenied", "name": "op"})
        )
        .is_some());
        assert!(refusal_key(Event::KeyRevoked, &json!({"name": "e"})).is_none());
    }

    #[test]
    fn past_the_limit_a_source_is_counted_not_written() {
        let l = Limiter::default();
        let written = (0..50)
            .filter(|_| l.admit("login.failed 1.2.3.4", || "t0".into()))
            .count();
        assert_eq!(written, PER_KEY as usize);
        assert!(
            l.admit("login.failed 5.6.7.8", || "t0".into()),
            "another source"
        );
        assert!(l.due().is_empty(), "the window has not ended");
    }
}
