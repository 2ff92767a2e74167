//! Persistence, store-and-forward, hub chains and failover.

use crate::harness::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const UNCERTAIN: &str = "UncertainNoCommunicationLastUsableValue";

#[test]
fn a_hub_restart_keeps_last_values_as_stale_until_the_edge_returns() {
    let mut p = Plant::new();
    let nodes = || [Node::edge("edge1"), Node::client("hmi", "[]")];
    p.write_hub("127.0.0.1:0", &nodes());
    let mut hub = p.start_hub();
    p.write_edge("edge1", 4, 10.0);
    p.write_client("hmi");
    let mut edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all Good", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    edge.kill9();
    watch_until(&w, &mut board, T, "all stale", |b| {
        b.all("edge1/sim/", 6, UNCERTAIN)
    });
    std::thread::sleep(Duration::from_millis(1500)); // the hub saves every second
    hub.kill9();
    let addr = p.hub_addr.clone();
    p.write_hub(&addr, &nodes());
    let _hub = p.start_hub();
    let (code, out, err) = p.run(&["client", "get", "--config", &p.cfg("hmi"), "edge1/sim/*"]);
    assert_eq!(code, 0, "{err}");
    let recs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(recs.len(), 6, "{out}");
    for r in &recs {
        assert_eq!(r["quality"], UNCERTAIN, "{r}");
        assert!(!r["value"].is_null(), "the last value is kept: {r}");
    }
    let _edge = p.start_edge("edge1");
    watch_until(&w, &mut board, T, "Good once the edge returns", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
}

#[test]
fn store_and_forward_delivers_the_outage_to_a_historian_exactly_once_and_in_order() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::client("historian", "[]"),
            Node::client("hmi", "[]"),
        ],
    );
    let _hub = p.start_hub();
    // The edge reaches the hub through a proxy the test cuts for 30 s.
    let proxy = Proxy::start(p.hub_addr.clone());
    let direct = p.hub_addr.clone();
    p.hub_addr = format!("127.0.0.1:{}", proxy.port);
    let cfg = p.write_edge("edge1", 99, 10.0); // 99 signals + tick at 10 Hz: 1,000 updates/s
    let text = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("rate_hz = 10\n", "rate_hz = 10\ntick = true\n");
    std::fs::write(&cfg, text).expect("write");
    p.hub_addr = direct;
    p.write_client("historian");
    p.write_client("hmi");
    let _edge = p.start_edge("edge1");
    let hist = Proc::spawn(
        "historian",
        &[
            "client",
            "watch",
            "--history",
            "--config",
            &p.cfg("historian"),
            "edge1/sim/tick",
        ],
    );
    let hmi = p.watch("hmi", "edge1/sim/tick");
    let first = hist.expect_json(T, "live ticks", |v| v["quality"] == "Good");
    hmi.expect_json(T, "live ticks", |v| v["quality"] == "Good");

    let outage = Duration::from_secs(
        std::env::var("OUTAGE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    proxy.cut();
    let t0 = Instant::now();
    std::thread::sleep(outage);
    proxy.restore();

    // Read the historian until the replay is over: live Good again and history caught up.
    let mut before: Vec<u64> = first["value"].as_u64().into_iter().collect(); // live values before the outage
    let mut after: Vec<u64> = Vec::new(); // live values after it came back
    let mut history: Vec<u64> = Vec::new();
    let mut stale_seen = false;
    let deadline = Instant::now() + T;
    while let Some(l) = hist.next_line(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        let n = v["value"].as_u64().unwrap_or(0);
        if v["history"] == true {
            history.push(n);
        } else if v["quality"] != "Good" {
            stale_seen = true;
        } else if stale_seen {
            after.push(n);
        } else {
            before.push(n);
        }
        // Done when the edge is back and the history reached the birth's value.
        if after
            .first()
            .is_some_and(|&b| history.last().is_some_and(|&h| h + 1 >= b))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replay did not finish: after {after:?} history {history:?}"
        );
    }
    let took = t0.elapsed();
    assert!(stale_seen, "the historian saw the edge go stale");
    assert!(!history.is_empty(), "history arrived");
    assert!(
        history.windows(2).all(|w| w[1] == w[0] + 1),
        "history in order, no gap, no duplicate: {history:?}"
    );
    let last_live = before.iter().copied().max().unwrap_or(0);
    assert_eq!(
        history[0],
        last_live + 1,
        "history starts right after the last live value before the outage"
    );
    assert!(
        history.len() as f64 >= outage.as_secs_f64() * 10.0 * 0.9,
        "about 300 ticks buffered: {}",
        history.len()
    );
    println!("store-and-forward: {} ticks of history (x100 points = ~{} updates) replayed in order; outage to caught up {} ms", history.len(), history.len() * 100, took.as_millis());

    // The HMI got only live values, never history.
    hmi.drain();
    let v = hmi.expect_json(T, "live again", |v| v["quality"] == "Good");
    assert!(v.get("history").is_none(), "{v}");
    std::thread::sleep(Duration::from_millis(500));
    while let Some(l) = hmi.next_line(Duration::from_millis(100)) {
        assert!(
            !l.contains("\"history\""),
            "the HMI never gets history: {l}"
        );
    }
}
