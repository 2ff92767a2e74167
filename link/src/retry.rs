//! Reconnecting: exponential backoff with jitter, and the order to try several hubs in.

use crate::addr::HubAddr;
use std::time::Duration;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
}

impl Backoff {
    /// Starts at `min`; no wait grows past `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, cur: min }
    }
    /// Back to the shortest wait (after a session that held).
    pub fn reset(&mut self) {
        self.cur = self.min;
    }
    /// The next wait: a random time between half and all of the current step, which then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let cur = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        let half = cur / 2;
        half + Duration::from_micros(fastrand::u64(0..=half.as_micros() as u64))
    }
}

/// Measures how long a TCP connect to each hub takes (about one round trip), concurrently.
pub async fn probe(hubs: &[HubAddr], timeout: Duration) -> Vec<Option<Duration>> {
    let probes = hubs.iter().map(|h| async move {
        let t0 = tokio::time::Instant::now();
        match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((h.host.as_str(), h.port)),
        )
        .await
        {
            Ok(Ok(_)) => Some(t0.elapsed()),
            _ => None,
        }
    });
    futures_util::future::join_all(probes).await
}

/// The order to try hubs in: the reachable ones by round trip (within a margin of the fastest,
/// the configured order decides, so equal hubs do not flap), then the unreachable ones.
pub fn order_by_rtt(rtts: &[Option<Duration>]) -> Vec<usize> {
    let best = rtts.iter().flatten().min().copied().unwrap_or_default();
    let margin = best * 2 + Duration::from_millis(2);
    let mut idx: Vec<usize> = (0..rtts.len()).collect();
    idx.sort_by_key(|&i| match rtts[i] {
        Some(r) if r <= margin => (0, Duration::ZERO, i),
        Some(r) => (1, r, i),
        None => (2, Duration::ZERO, i),
    });
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubs_are_ordered_by_round_trip_with_a_margin() {
        let ms = |m: u64| Some(Duration::from_millis(m));
        assert_eq!(order_by_rtt(&[ms(50), ms(5), None]), vec![1, 0, 2]);
        assert_eq!(
            order_by_rtt(&[ms(1), ms(1), ms(2)]),
            vec![0, 1, 2],
            "near-equal hubs keep their order"
        );
        assert_eq!(order_by_rtt(&[None, ms(30)]), vec![1, 0]);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let d: Vec<_> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[5] >= Duration::from_millis(400) && d[5] <= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
