//! Cases 1 and 2: throughput 1→1 and fan-out 1→10, 1→100, pointhub against the peers.

use crate::*;

pub(crate) async fn throughput(r: &mut Report, o: Opts, clients_list: &[usize]) {
    r.add("");
    r.add("### 1–2. Throughput and fan-out (10,000 points, as fast as the publisher can)");
    r.add("");
    r.add("CPU is % of one core, median over the runs: the server (the hub, mosquitto, nats-server); the publisher's thread (for pointhub its edge, through the client library over TLS; for the peers the bench's own plain-TCP publisher); one subscriber's thread (for pointhub a client over TLS, mean over the clients; for the peers the bench's plain-TCP reader).");
    r.add("");
    r.add("| system | clients | deliveries/s (median, min–max) | slowest client/s | server CPU % | publisher (edge) CPU % | CPU % per subscriber (client) | pointhub ÷ peer |");
    r.add("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let (m, n) = peers(o);
    for &clients in clients_list {
        let h = pointhub_hub(clients);
        let mut ph = Vec::new();
        for _ in 0..o.runs {
            ph.push(pointhub_run(&h, 10_000, clients, None, o.secs, false).await);
        }
        let (row, ph_med) = throughput_row(&ph);
        r.add(format!("| pointhub (TLS) | {clients} | {row} | |"));
        drop(h);
        for (name, b, proto) in [
            ("mosquitto", &m, Proto::Mqtt),
            ("nats-server", &n, Proto::Nats),
        ] {
            let Some(b) = b else {
                r.add(format!("| {name} | {clients} | not installed | | | | | |"));
                continue;
            };
            let pr: Vec<RunFigures> = (0..o.runs)
                .map(|_| peer_run(proto, b, 10_000, clients, None, o.secs, false))
                .collect();
            let (row, med) = throughput_row(&pr);
            let ratio = ph_med / med.max(1.0);
            r.add(format!(
                "| {name} (no TLS) | {clients} | {row} | {ratio:.2} |"
            ));
        }
    }
}

/// The throughput table's cells from a system's runs, and its median deliveries/s.
pub(crate) fn throughput_row(runs: &[RunFigures]) -> (String, f64) {
    let of = |f: fn(&RunFigures) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
    let delivered = of(|x| x.delivered);
    (
        format!(
            "{} | {} | {:.0} | {:.0} | {:.0}",
            cell(&delivered, fmt_rate),
            cell(&of(|x| x.slowest), fmt_rate),
            stats(&of(|x| x.hub_cpu)).0,
            stats(&of(|x| x.edge_cpu)).0,
            stats(&of(|x| x.client_cpu)).0
        ),
        stats(&delivered).0,
    )
}
