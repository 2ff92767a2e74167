//! Measuring: CPU time and memory of a process or thread, statistics and the table cells.

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(crate) fn cpu_secs(pid: u32) -> f64 {
    cpu_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
pub(crate) fn cpu_of(stat: &str) -> f64 {
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0
}

/// CPU seconds (user + system) of the calling thread.
pub(crate) fn thread_cpu_secs() -> f64 {
    cpu_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// median, min, max
pub(crate) fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if s.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

pub(crate) fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

pub(crate) fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The latency table's cells for one system from its runs (sorted latencies, and the share of
/// slow windows the machine had during the run, see `Probe`): p50, p99 with min–max, p999, max,
/// and the p99 over the steady runs (≤ 1 % slow windows) with how many there were.
pub(crate) fn latency_row(runs: &[(Vec<u64>, f64)]) -> (String, f64) {
    let at = |p: f64| -> Vec<f64> { runs.iter().map(|(l, _)| pct(l, p) / 1000.0).collect() };
    let ms = |x: f64| format!("{x:.3}");
    let p99 = at(0.99);
    let steady: Vec<f64> = runs
        .iter()
        .filter(|(_, slow)| *slow <= 1.0)
        .map(|(l, _)| pct(l, 0.99) / 1000.0)
        .collect();
    let row = format!(
        "{} | {} | {} | {} | {}",
        ms(stats(&at(0.5)).0),
        cell(&p99, ms),
        ms(stats(&at(0.999)).0),
        ms(stats(&at(1.0)).0),
        if steady.is_empty() {
            format!("– (0 of {})", runs.len())
        } else {
            format!("{} ({} of {})", cell(&steady, ms), steady.len(), runs.len())
        }
    );
    (row, stats(&p99).0)
}

pub(crate) fn cell(v: &[f64], f: fn(f64) -> String) -> String {
    let (m, lo, hi) = stats(v);
    format!("{} ({}–{})", f(m), f(lo), f(hi))
}

// ---------------------------------------------------------------- pointhub
