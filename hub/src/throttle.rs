//! Per-session rate limits on costly requests (subscribe, a fresh snapshot): past the limit the
//! session waits, which slows that session alone; nothing is refused and nobody else waits.
//! [`paced_scan`] is the one way a session scans the table (binary and JSON sessions alike).

use std::time::Duration;
use tokio::time::Instant;

/// Subscribes and unsubscribes of one session per second (each scans the table).
pub(crate) const SCANS_PER_SEC: u32 = 10;

/// Runs a scan of the table (a subscribe or an unsubscribe) on a blocking thread, paced: at
/// most `scans`' rate, and afterwards the session waits four times as long as the scan took, so
/// one session spends at most a fifth of a core scanning. Returns whether the rate made it wait,
/// and the scan's result (`None` if its thread failed).
pub(crate) async fn paced_scan<T: Send + 'static>(
    scans: &mut Throttle,
    scan: impl FnOnce() -> T + Send + 'static,
) -> (bool, Option<T>) {
    let waited = scans.wait().await;
    let t0 = Instant::now();
    let done = tokio::task::spawn_blocking(scan).await.ok();
    tokio::time::sleep(t0.elapsed() * 4).await;
    (waited, done)
}

/// At most `max` requests per `per`; [`Throttle::wait`] sleeps past the limit.
pub(crate) struct Throttle {
    max: u32,
    per: Duration,
    start: Instant,
    count: u32,
}

impl Throttle {
    /// The rate of a session's scans: [`SCANS_PER_SEC`].
    pub(crate) fn scans() -> Throttle {
        Throttle::new(SCANS_PER_SEC, Duration::from_secs(1))
    }

    pub(crate) fn new(max: u32, per: Duration) -> Throttle {
        Throttle {
            max: max.max(1),
            per,
            start: Instant::now(),
            count: 0,
        }
    }

    /// Counts one request; waits first if this window already had `max`. Returns whether it
    /// had to wait.
    pub(crate) async fn wait(&mut self) -> bool {
        let mut waited = false;
        if self.start.elapsed() >= self.per {
            self.start = Instant::now();
            self.count = 0;
        } else if self.count >= self.max {
            tokio::time::sleep_until(self.start + self.per).await;
            self.start = Instant::now();
            self.count = 0;
            waited = true;
        }
        self.count += 1;
        waited
    }

    /// Counts one event without waiting; true once this window has had more than `max`.
    pub(crate) fn over(&mut self) -> bool {
        if self.start.elapsed() >= self.per {
            self.start = Instant::now();
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count > self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn past_the_limit_a_request_waits_for_the_next_window() {
        let mut t = Throttle::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(!t.wait().await);
        }
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(t.wait().await);
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn over_counts_events_in_a_window() {
        let mut t = Throttle::new(2, Duration::from_secs(10));
        assert!(!t.over());
        assert!(!t.over());
        assert!(t.over());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!t.over());
    }
}
