//! Case 4: how long a client takes to know an edge is gone (kill -9, SIGSTOP).

use crate::*;

/// Time until a watching client holds every point of the edge stale.
pub(crate) async fn time_to_know(r: &mut Report, o: Opts) {
    r.add("");
    r.add("### 4. Time-to-know (edge process with 100 points; client holds every point stale), ms");
    r.add("");
    r.add("| event | trials | p50 | p99 | max | note |");
    r.add("| --- | --- | --- | --- | --- | --- |");
    let h = pointhub_hub(1);
    let p = &h.plant;
    let cfg = p.write_edge("bench", 98, 10.0);
    let t = std::fs::read_to_string(&cfg).unwrap_or_default().replace(
        "heartbeat_ms = 250\ntimeout_ms = 750",
        "heartbeat_ms = 1000\ntimeout_ms = 3000",
    );
    std::fs::write(&cfg, t).expect("write");
    let (kill_trials, stop_trials) = if o.quick { (2, 1) } else { (20, 20) };
    for (event, sig, trials) in [
        ("kill -9 of the edge", "KILL", kill_trials),
        (
            "SIGSTOP of the edge (heartbeat 1 s, timeout 3 s)",
            "STOP",
            stop_trials,
        ),
    ] {
        let mut times = Vec::new();
        for _ in 0..trials {
            let mut edge = p.start_edge("bench");
            let w = p.watch("c0", "bench/sim/**");
            let mut board = Board::default();
            watch_until(&w, &mut board, Duration::from_secs(30), "all Good", |b| {
                b.all("bench/sim/", 100, "Good")
            });
            let t0 = Instant::now();
            edge.signal(sig);
            watch_until(&w, &mut board, Duration::from_secs(30), "all stale", |b| {
                b.all("bench/sim/", 100, "UncertainNoCommunicationLastUsableValue")
            });
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            edge.signal("CONT");
            edge.kill9();
        }
        let mut s: Vec<u64> = times.iter().map(|t| (*t * 1000.0) as u64).collect();
        s.sort_unstable();
        r.add(format!(
            "| {event} | {trials} | {:.1} | {:.1} | {:.1} | measured from the signal to the watching client's last stale line |",
            pct(&s, 0.5),
            pct(&s, 0.99),
            pct(&s, 1.0)
        ));
    }
}
