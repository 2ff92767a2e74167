//! Timestamps: microseconds since the Unix epoch, printed as RFC 3339 UTC.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01T00:00:00Z. Zero means "never".
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Zero: no time, for a point that never had a value or an edge's unset `hub_ts`.
    pub const NEVER: Timestamp = Timestamp(0);

    /// The last instant RFC 3339 can write: 9999-12-31T23:59:59.999999Z. A source time past it
    /// is refused when a frame is decoded (a device clock gone wild), so every timestamp the
    /// hub holds prints.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The system clock's current time.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Whether this is [`Timestamp::NEVER`] (zero).
    pub fn is_never(self) -> bool {
        self.0 == 0
    }

    /// Whether RFC 3339 can write this instant (it lies before the year 10000).
    pub fn is_valid(self) -> bool {
        self <= Timestamp::MAX
    }

    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-22T14:33:37.123456Z`. Never panics: an
    /// instant past [`Timestamp::MAX`] prints as `MAX`.
    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_micros(SystemTime::from(self.min(Timestamp::MAX))).to_string()
    }

    /// Microseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn micros_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let micros = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Timestamp(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        UNIX_EPOCH + Duration::from_micros(t.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_fraction_and_zulu() {
        let t = Timestamp(1_700_000_000_123_456);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn instants_past_the_year_9999_print_as_the_last_one_without_panicking() {
        assert_eq!(Timestamp::MAX.to_rfc3339(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(
            Timestamp(u64::MAX).to_rfc3339(),
            "9999-12-31T23:59:59.999999Z"
        );
        assert!(!Timestamp(Timestamp::MAX.0 + 1).is_valid());
    }
}
