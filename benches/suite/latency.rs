//! Case 3: latency at 10,000 updates/s to 1 and 10 clients.

use crate::*;

pub(crate) async fn latency(r: &mut Report, o: Opts, clients_list: &[usize]) {
    r.add("");
    r.add("### 3. Latency at 10,000 updates/s (source timestamp → client receipt, ms)");
    r.add("");
    r.add(format!(
        "Just before these runs: {}",
        idle_machine(if o.quick { 1.0 } else { 10.0 })
    ));
    r.add("");
    r.add("Two pacings, the same for every system: one update every 100 µs (every update its own message: the per-message cost counts), and ten updates every millisecond (the machine idles between messages: the cost of waking counts).");
    r.add("");
    r.add("Each figure is the median over the runs of that run's percentile; p99 also with min–max over the runs. The runs go round the systems in turn (pointhub, mosquitto, nats-server, relay, then the next round), so a slow spell of the machine falls on all of them alike.");
    r.add("");
    let mut rows = vec![
        "| system | pacing | clients | p50 | p99 | p999 | max | p99, steady runs | pointhub ÷ peer (p99) |"
            .to_string(),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    let mut rounds = vec![
        "| pacing | clients | round | pointhub | mosquitto | nats-server | relay |".to_string(),
        "| --- | --- | --- | --- | --- | --- | --- |".to_string(),
    ];
    let (m, n) = peers(o);
    let floor = if o.no_peers { None } else { relay() };
    // Twice the rounds of the other cases in a full run (unless `--runs` says), for more runs
    // in which the machine happened to be steady.
    let latency_rounds = if o.quick || o.runs_given {
        o.runs
    } else {
        o.runs * 2
    };
    // `BENCH_PACE_HZ=N` runs one pacing only (messages per second).
    let pacings: Vec<u64> = match std::env::var("BENCH_PACE_HZ")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(hz) => vec![hz],
        None => vec![10_000, 1_000],
    };
    for hz in pacings {
        let rate = Rate {
            updates: 10_000,
            messages: hz,
        };
        let (per, period_us) = (10_000u64.div_ceil(hz.max(1)), 1_000_000 / hz.max(1));
        let pacing = if period_us % 1000 == 0 {
            format!("{per} per {} ms", period_us / 1000)
        } else {
            format!("{per} per {period_us} µs")
        };
        for &clients in clients_list {
            let h = pointhub_hub(clients);
            let peers = [
                ("mosquitto (no TLS)", &m, Proto::Mqtt),
                ("nats-server (no TLS)", &n, Proto::Nats),
                ("bare relay (floor, no TLS)", &floor, Proto::Mqtt),
            ];
            let mut ph_runs = Vec::new();
            let mut peer_runs: Vec<Vec<(Vec<u64>, f64)>> = vec![Vec::new(); peers.len()];
            for round in 1..=latency_rounds {
                let probe = Probe::start();
                let l = pointhub_run(&h, 10_000, clients, Some(rate), o.secs, true)
                    .await
                    .lat;
                let slow = probe.finish();
                let mut line = format!(
                    "| {pacing} | {clients} | {round} | {:.3} ({slow:.1} %)",
                    pct(&l, 0.99) / 1000.0
                );
                ph_runs.push((l, slow));
                for (i, (_, b, proto)) in peers.iter().enumerate() {
                    let Some(b) = b else {
                        line.push_str(" | –");
                        continue;
                    };
                    let probe = Probe::start();
                    let l = peer_run(*proto, b, 10_000, clients, Some(rate), o.secs, true).lat;
                    let slow = probe.finish();
                    line.push_str(&format!(" | {:.3} ({slow:.1} %)", pct(&l, 0.99) / 1000.0));
                    peer_runs[i].push((l, slow));
                }
                rounds.push(line + " |");
            }
            drop(h);
            let (row, ph99) = latency_row(&ph_runs);
            rows.push(format!(
                "| pointhub (TLS) | {pacing} | {clients} | {row} | |"
            ));
            for ((name, b, _), runs) in peers.iter().zip(&peer_runs) {
                if b.is_none() {
                    continue;
                }
                let (row, p99) = latency_row(runs);
                rows.push(format!(
                    "| {name} | {pacing} | {clients} | {row} | {:.2} |",
                    ph99 / p99.max(0.001)
                ));
            }
        }
    }
    for l in rows {
        r.add(l);
    }
    r.add("");
    r.add("Each run's p99 (ms), and in brackets how steady the machine was during it: the share of 10 ms windows in which a fixed ≈ 20 µs piece of arithmetic, timed every 2.5 ms by a thread of the bench alongside every system, ran ≥ 1.5 × slower than its median. On a quiet machine that share is ≈ 0; on a shared virtual machine the host slows every core at once for tens of milliseconds, and where such spells add up to more than 1 % of a run, its p99 is set by how a system copes with a machine running at half speed. The first table's column \"p99, steady runs\" takes only the runs with ≤ 1 % slow windows.");
    r.add("");
    for l in rounds {
        r.add(l);
    }
}
