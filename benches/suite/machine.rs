//! The machine the figures come from: its CPU, and how idle it was during the run.

use crate::*;

/// A fixed piece of arithmetic, `n` rounds.
pub(crate) fn arithmetic(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// Rounds of `arithmetic` that take ≈ 20 µs on this machine (measured once).
pub(crate) fn probe_rounds() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let t = Instant::now();
        std::hint::black_box(arithmetic(1_000_000));
        let per_round_ns = (t.elapsed().as_nanos() as f64 / 1e6).max(1e-3);
        (20_000.0 / per_round_ns) as u64
    })
}

/// Watches how steady the machine is while a latency run goes on: every 2.5 ms a thread times
/// ≈ 20 µs of fixed arithmetic (under 1 % of a core). A 10 ms window counts as slow when at least
/// three of its four pieces took ≥ 1.5 × the run's median: the host slowed the cores, not one
/// preemption by the bench's own threads. On a quiet machine the share of slow windows is ≈ 0;
/// on a shared virtual machine the host slows every core at once for tens of milliseconds, and
/// where such spells add up to more than 1 % of a run, its p99 is set by how a system copes with
/// a machine running at half speed. The same probe runs alongside every system.
pub(crate) struct Probe {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: std::thread::JoinHandle<Vec<(u64, u64)>>,
}

impl Probe {
    pub(crate) fn start() -> Probe {
        let n = probe_rounds();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut v = Vec::new();
            let mut next = t0;
            while !s.load(Ordering::Relaxed) {
                next += Duration::from_micros(2500);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let a = Instant::now();
                std::hint::black_box(arithmetic(n));
                v.push((
                    a.duration_since(t0).as_millis() as u64 / 10,
                    a.elapsed().as_nanos() as u64,
                ));
            }
            v
        });
        Probe { stop, thread }
    }

    /// The share of slow 10 ms windows, in %.
    pub(crate) fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let v = self.thread.join().unwrap_or_default();
        let mut d: Vec<u64> = v.iter().map(|x| x.1).collect();
        d.sort_unstable();
        let Some(&med) = d.get(d.len() / 2) else {
            return 0.0;
        };
        let mut w = std::collections::BTreeMap::<u64, (u32, u32)>::new();
        for (at, ns) in &v {
            let e = w.entry(*at).or_default();
            e.0 += 1;
            e.1 += u32::from(*ns as f64 >= 1.5 * med as f64);
        }
        let full: Vec<_> = w.values().filter(|(c, _)| *c >= 3).collect();
        let slow = full.iter().filter(|(c, s)| *s + 1 >= *c).count();
        slow as f64 * 100.0 / full.len().max(1) as f64
    }
}

/// How steady the machine is with nothing else running: one thread per core times the probe's
/// ≈ 20 µs piece back to back for `secs`. Gives the pieces' p50/p99/p999, the share of 10 ms
/// windows in which a core ran ≥ 1.5 × slower than its median, and the share of instants at which
/// a core was stalled with ≥ 0.5 ms still to go: an update arriving then waits that long on that
/// core whatever system handles it.
pub(crate) fn idle_machine(secs: f64) -> String {
    let n = probe_rounds();
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                while t0.elapsed().as_secs_f64() < secs {
                    let a = Instant::now();
                    std::hint::black_box(arithmetic(n));
                    v.push((
                        a.duration_since(t0).as_nanos() as u64,
                        a.elapsed().as_nanos() as u64,
                    ));
                }
                v
            })
        })
        .collect();
    let per_core: Vec<Vec<(u64, u64)>> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    let total_ns = t0.elapsed().as_nanos() as u64;
    // 10 µs cells of the run in which some core still had ≥ 0.5 ms of a stall to go.
    let (cell_ns, left_ns) = (10_000u64, 500_000u64);
    let mut stalled = vec![false; (total_ns / cell_ns) as usize + 1];
    let (mut p50, mut p99, mut p999, mut slow_share) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &per_core {
        let mut d: Vec<u64> = v.iter().map(|x| x.1).collect();
        d.sort_unstable();
        let Some(&med) = d.get(d.len() / 2) else {
            continue;
        };
        p50.push(pct(&d, 0.5));
        p99.push(pct(&d, 0.99));
        p999.push(pct(&d, 0.999));
        let mut w = std::collections::BTreeMap::<u64, (u64, u64)>::new();
        for &(start, took) in v {
            let e = w.entry(start / 10_000_000).or_default();
            e.0 += took;
            e.1 += 1;
            if took > left_ns {
                let (a, b) = (start / cell_ns, (start + took - left_ns) / cell_ns);
                for c in a..b.min(stalled.len() as u64) {
                    stalled[c as usize] = true;
                }
            }
        }
        let slow = w
            .values()
            .filter(|(sum, count)| *sum as f64 / *count as f64 >= 1.5 * med as f64)
            .count();
        slow_share.push(slow as f64 * 100.0 / w.len().max(1) as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let stall = stalled.iter().filter(|s| **s).count() as f64 * 100.0 / stalled.len() as f64;
    format!(
        "The machine idle ({secs:.0} s, one thread per core timing a ≈ 20 µs piece of arithmetic back to back): the piece took p50 {:.1} µs, p99 {:.1}, p999 {:.1}; {:.1} % of 10 ms windows ran ≥ 1.5 × slower than the median; at {:.2} % of instants a core was stalled with ≥ 0.5 ms still to go. On a quiet machine both shares are ≈ 0.",
        mean(&p50),
        mean(&p99),
        mean(&p999),
        mean(&slow_share),
        stall
    )
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let ver = |c: &str, a: &str| {
        Command::new(c)
            .arg(a)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(if o.stdout.is_empty() {
                    &o.stderr
                } else {
                    &o.stdout
                })
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
            })
            .unwrap_or_else(|| "not installed".into())
    };
    format!(
        "{cores} cores ({cpu}); mosquitto: {}; nats-server: {}",
        ver("mosquitto", "-h"),
        ver("nats-server", "--version")
    )
}
