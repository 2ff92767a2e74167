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
    // The edge reaches the hub through a proxy the test cuts for 30 s.
    let (p, _hub, proxy) = edge_behind_a_path(99);
    let _edge = p.start_edge("edge1");
    let (hist, hmi, first) = historian_and_hmi(&p);

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
    let o = read_outage(&hist, &first);
    let took = t0.elapsed();
    o.assert_exactly_once(outage);
    println!("store-and-forward: {} ticks of history (x100 points = ~{} updates) replayed in order; outage to caught up {} ms", o.history.len(), o.history.len() * 100, took.as_millis());

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

fn upstream(parent: &Plant, writes: &str) -> String {
    format!(
        "[[upstream]]\nurls = [\"wss://{}\"]\nfingerprint = \"{}\"\nwrites = {writes}\nheartbeat_ms = 250\ntimeout_ms = 750\nbackoff_max_ms = 500\n",
        parent.hub_addr, parent.hub_fp
    )
}

#[test]
fn authority_and_writes_cross_a_chain_of_hubs() {
    // edge1 → dmz hub (A) → cloud hub (B) → hmi.
    let mut a = Plant::new();
    let mut b = Plant::new();
    a.write_hub_named("dmz", "127.0.0.1:0", &[Node::edge("edge1")], "");
    let a_fp = a.hub_fingerprint();
    b.write_hub_named(
        "cloud",
        "127.0.0.1:0",
        &[
            Node::client("hmi", "[\"edge1/**\"]"),
            Node::hub("dmz", &a_fp),
        ],
        "",
    );
    let _hub_b = b.start_hub();
    a.write_hub_named(
        "dmz",
        "127.0.0.1:0",
        &[Node::edge("edge1")],
        &upstream(&b, "[\"edge1/**\"]"),
    );
    let mut hub_a = a.start_hub();
    a.write_edge("edge1", 4, 10.0);
    b.write_client("hmi");
    let mut edge = a.start_edge("edge1");
    let w = b.watch("hmi", "edge1/**");
    let mut board = Board::default();
    let t = watch_until(&w, &mut board, T, "values across the chain", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    println!("chain: first values at the top in {} ms", t.as_millis());

    // A write from the top reaches the edge's source, and its result returns.
    let (code, out, err) = b.run(&[
        "client",
        "write",
        "--config",
        &b.cfg("hmi"),
        "edge1/sim/setpoint1",
        "55",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"status\":\"Good\""), "{out}");
    watch_until(&w, &mut board, T, "the written value", |b| {
        b.value
            .get("edge1/sim/setpoint1")
            .is_some_and(|v| v == 55.0)
    });
    // The dmz hub takes no writes from above outside its `writes`.
    let (code, out, _) = b.run(&[
        "client",
        "write",
        "--config",
        &b.cfg("hmi"),
        "edge1/sim/sine1",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadNotWritable"), "{out}");

    // The edge dies below the dmz hub: stale at the top.
    edge.kill9();
    let t = watch_until(&w, &mut board, T, "stale after the edge died", |b| {
        b.all("edge1/sim/", 6, UNCERTAIN)
    });
    println!(
        "chain: kill -9 of the edge -> stale at the top in {} ms",
        t.as_millis()
    );
    let _edge = a.start_edge("edge1");
    let t = watch_until(&w, &mut board, T, "Good after the edge returned", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    println!(
        "chain: edge restart -> Good at the top in {} ms",
        t.as_millis()
    );

    // The dmz hub dies: the cloud hub marks everything from it stale.
    hub_a.kill9();
    let t = watch_until(&w, &mut board, T, "stale after the dmz hub died", |b| {
        b.all("edge1/sim/", 6, UNCERTAIN)
    });
    println!(
        "chain: kill -9 of the dmz hub -> stale at the top in {} ms",
        t.as_millis()
    );
    let addr = a.hub_addr.clone();
    a.write_hub_named(
        "dmz",
        &addr,
        &[Node::edge("edge1")],
        &upstream(&b, "[\"edge1/**\"]"),
    );
    let _hub_a2 = a.start_hub();
    let t = watch_until(&w, &mut board, T, "Good after the dmz hub returned", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    println!(
        "chain: dmz hub restart -> Good at the top in {} ms",
        t.as_millis()
    );
}

#[test]
fn a_three_level_chain_works_and_a_loop_is_refused() {
    // edge1 → plant (P) → region (R) → global (G) → hmi
    let (mut p, mut r, mut g) = (Plant::new(), Plant::new(), Plant::new());
    p.write_hub_named("plant", "127.0.0.1:0", &[Node::edge("edge1")], "");
    r.write_hub_named("region", "127.0.0.1:0", &[], "");
    g.write_hub_named("global", "127.0.0.1:0", &[], "");
    let (p_fp, r_fp) = (p.hub_fingerprint(), r.hub_fingerprint());
    g.write_hub_named(
        "global",
        "127.0.0.1:0",
        &[Node::client("hmi", "[]"), Node::hub("region", &r_fp)],
        "",
    );
    let _g = g.start_hub();
    // region also approves global as a child: with global's upstream to region, that makes a loop.
    let g_fp = g.hub_fp.clone();
    r.write_hub_named(
        "region",
        "127.0.0.1:0",
        &[Node::hub("plant", &p_fp), Node::hub("global", &g_fp)],
        &upstream(&g, "[]"),
    );
    let r_hub = r.start_hub();
    p.write_hub_named(
        "plant",
        "127.0.0.1:0",
        &[Node::edge("edge1")],
        &upstream(&r, "[]"),
    );
    let _p = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    g.write_client("hmi");
    let _edge = p.start_edge("edge1");
    let w = g.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "values three hubs up", |b| {
        b.all("edge1/sim/", 4, "Good")
    });

    // Now global dials region too: global → region → global is a loop.
    let addr = g.hub_addr.clone();
    g.write_hub_named(
        "global",
        &addr,
        &[Node::client("hmi", "[]"), Node::hub("region", &r_fp)],
        &upstream(&r, "[]"),
    );
    let g_log = {
        // Restart global with the looping upstream.
        drop(_g);
        g.start_hub()
    };
    let refused = std::time::Instant::now();
    loop {
        let text = format!("{}\n{}", r_hub.stderr_text(), g_log.stderr_text());
        if text.contains("loop in the hub chain") || text.contains("a loop in the hub chain") {
            break;
        }
        assert!(
            refused.elapsed() < T,
            "no loop refusal; region:\n{}\nglobal:\n{}",
            r_hub.stderr_text(),
            g_log.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn edge_and_client_fail_over_to_the_second_hub() {
    let mut h1 = Plant::new();
    let nodes = || [Node::edge("edge1"), Node::client("hmi", "[]")];
    h1.write_hub("127.0.0.1:0", &nodes());
    let mut hub1 = h1.start_hub();
    // The second hub admits the same keys (copied from the first plant).
    let mut h2 = Plant::new();
    for n in ["edge1", "hmi"] {
        let dst = h2.path(&format!("keys/{n}"));
        std::fs::create_dir_all(&dst).expect("mkdir");
        for f in ["node.crt", "node.key"] {
            std::fs::copy(h1.path(&format!("keys/{n}/{f}")), dst.join(f)).expect("copy");
        }
    }
    h2.write_hub("127.0.0.1:0", &nodes());
    let first = h2.start_hub();
    // Nodes pin one fingerprint for all their hubs here, so the two hubs share one key (a
    // deployment with a CA-issued certificate per hub verifies with `ca` instead).
    drop(first);
    std::fs::copy(h1.path("hub-data/hub.key"), h2.path("hub-data/hub.key")).expect("copy");
    std::fs::copy(h1.path("hub-data/hub.crt"), h2.path("hub-data/hub.crt")).expect("copy");
    let addr2 = h2.hub_addr.clone();
    h2.write_hub(&addr2, &nodes());
    let _hub2 = h2.start_hub();
    assert_eq!(h2.hub_fp, h1.hub_fp);
    let both = format!("[\"wss://{}\", \"wss://{}\"]", h1.hub_addr, h2.hub_addr);
    for cfg in [h1.write_edge("edge1", 2, 10.0), h1.write_client("hmi")] {
        let text = std::fs::read_to_string(&cfg).expect("read");
        let text = text.replace(
            &format!("urls = [\"wss://{}\"]", h1.hub_addr),
            &format!("urls = {both}"),
        );
        std::fs::write(&cfg, text).expect("write");
    }
    let edge = h1.start_edge("edge1");
    let w = h1.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "Good via the first hub", |b| {
        b.all("edge1/sim/", 4, "Good")
    });
    assert!(
        edge.stderr_text().contains(&h1.hub_addr),
        "the edge chose the first hub"
    );
    hub1.kill9();
    let t = watch_until(&w, &mut board, T, "stale when the first hub died", |b| {
        b.all("edge1/sim/", 4, UNCERTAIN)
    });
    let t2 = watch_until(&w, &mut board, T, "Good again via the second hub", |b| {
        b.all("edge1/sim/", 4, "Good")
    });
    println!(
        "failover: stale in {} ms, Good again via the second hub {} ms later",
        t.as_millis(),
        t2.as_millis()
    );
    edge.wait_stderr(T, &format!("connected hub=wss://{}/node", h2.hub_addr));
}

#[test]
fn an_upstream_link_is_back_within_seconds_of_its_path_however_long_its_backoff_grew() {
    // edge1 → dmz (A) → a path the test cuts → cloud (B) → hmi; the upstream has the default
    // backoff (up to 10 s), which a 15 s cut lets grow to its cap.
    let (mut a, mut b) = (Plant::new(), Plant::new());
    a.write_hub_named("dmz", "127.0.0.1:0", &[Node::edge("edge1")], "");
    let a_fp = a.hub_fingerprint();
    b.write_hub_named(
        "cloud",
        "127.0.0.1:0",
        &[Node::client("hmi", "[]"), Node::hub("dmz", &a_fp)],
        "",
    );
    let _b = b.start_hub();
    let path = crate::path::Path::to(&b.hub_addr);
    let up = format!(
        "[[upstream]]\nurls = [\"wss://127.0.0.1:{}\"]\nfingerprint = \"{}\"\nheartbeat_ms = 250\ntimeout_ms = 750\n",
        path.port, b.hub_fp
    );
    a.write_hub_named("dmz", "127.0.0.1:0", &[Node::edge("edge1")], &up);
    let a_hub = a.start_hub();
    a.write_edge("edge1", 2, 10.0);
    b.write_client("hmi");
    let _edge = a.start_edge("edge1");
    let w = b.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "Good through the path", |b| {
        b.all("edge1/sim/", 4, "Good")
    });
    path.cut();
    watch_until(&w, &mut board, T, "stale at the top once cut", |b| {
        b.all("edge1/sim/", 4, UNCERTAIN)
    });
    std::thread::sleep(Duration::from_secs(15));
    path.restore();
    let restored = Instant::now();
    watch_until(&w, &mut board, T, "Good again once the path is back", |b| {
        b.all("edge1/sim/", 4, "Good")
    });
    let back = restored.elapsed();
    eprintln!(
        "upstream link back {:.2} s after its path returned (15 s cut, default backoff)",
        back.as_secs_f64()
    );
    assert!(
        back < Duration::from_secs(5),
        "the link took {back:?} to return after its path; dmz hub:\n{}",
        a_hub.stderr_text()
    );
    // Usually the path probe brings it back; a scheduled retry that happens to fall in the
    // same moment does as well. The claim is the time, asserted above.
    let by_probe = a_hub.stderr_text().contains("reachable again");
    eprintln!(
        "brought back by {}",
        if by_probe {
            "the path probe"
        } else {
            "a scheduled retry"
        }
    );
}

#[test]
fn a_dmz_hub_killed_and_restarted_during_an_outage_of_its_parent_loses_nothing() {
    // edge1 → dmz (A, fixed port) → a path cut for 8 s → cloud (B) → historian. 3 s into the
    // cut the dmz hub is killed (kill -9) and restarted 2 s later, while its parent is still out
    // of reach: its spool on disk keeps what it had, and from its restart it spools again,
    // the edge's own replay of the 2 s included.
    let (mut a, mut b) = (Plant::new(), Plant::new());
    let dmz_listen = format!("127.0.0.1:{}", free_port());
    a.write_hub_named("dmz", &dmz_listen, &[Node::edge("edge1")], "");
    let a_fp = a.hub_fingerprint();
    b.write_hub_named(
        "cloud",
        "127.0.0.1:0",
        &[
            Node::client("historian", "[]"),
            Node::client("hmi", "[]"),
            Node::hub("dmz", &a_fp),
        ],
        "",
    );
    let _b = b.start_hub();
    let path = crate::path::Path::to(&b.hub_addr);
    let up = format!(
        "[[upstream]]\nurls = [\"wss://127.0.0.1:{}\"]\nfingerprint = \"{}\"\nheartbeat_ms = 250\ntimeout_ms = 750\nbackoff_max_ms = 500\n",
        path.port, b.hub_fp
    );
    a.write_hub_named("dmz", &dmz_listen, &[Node::edge("edge1")], &up);
    let mut dmz = a.start_hub();
    write_tick_edge(&a);
    b.write_client("historian");
    b.write_client("hmi");
    let _edge = a.start_edge("edge1");
    let (hist, _hmi, first) = historian_and_hmi(&b);

    path.cut();
    std::thread::sleep(Duration::from_secs(3));
    dmz.kill9();
    std::thread::sleep(Duration::from_secs(2));
    let _dmz = a.start_hub();
    std::thread::sleep(Duration::from_secs(3));
    path.restore();

    // Every tick from the first one seen, live or history, until the replay is over: once each.
    let mut seen: Vec<u64> = first["value"].as_u64().into_iter().collect();
    // Done once 3 s of live ticks (30) followed the last history record.
    let (mut history, mut live_since) = (0, 0);
    let mut replayed: Vec<u64> = Vec::new();
    let deadline = Instant::now() + T;
    while let Some(l) = hist.next_line(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["quality"] != "Good" {
            continue;
        }
        if let Some(n) = v["value"].as_u64() {
            seen.push(n);
        }
        if v["history"] == true {
            history += 1;
            live_since = 0;
            replayed.extend(v["value"].as_u64());
        } else if history > 0 {
            live_since += 1;
            if live_since >= 30 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the replay did not end: {history} history records"
        );
    }
    assert!(
        history > 0 && live_since >= 30,
        "history, then live again at the top"
    );
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    let (dups, gaps) = doubles_and_gaps(&sorted);
    println!(
        "dmz killed during an outage: {} ticks at the top, {} through {}; duplicates {dups:?}, gaps {gaps:?}",
        sorted.len(),
        sorted.first().copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0)
    );
    assert!(gaps.is_empty(), "no tick missing: gaps {gaps:?}");
    assert!(dups.is_empty(), "no tick twice: {dups:?}");
    assert!(
        replayed.windows(2).all(|w| w[0] < w[1]),
        "the history came in order: {replayed:?}"
    );
    assert!(
        sorted.len() >= 80,
        "about 8 s of ticks and more: {}",
        sorted.len()
    );
}

/// What a historian watching a 10 Hz `tick` saw around an outage.
struct Outage {
    /// Live values before the outage.
    before: Vec<u64>,
    /// Values replayed as history.
    history: Vec<u64>,
    /// Whether it saw the point go stale.
    stale_seen: bool,
}

/// Reads the historian until the replay is over: live Good again and history caught up.
fn read_outage(hist: &Proc, first: &serde_json::Value) -> Outage {
    let mut o = Outage {
        before: first["value"].as_u64().into_iter().collect(),
        history: Vec::new(),
        stale_seen: false,
    };
    let mut after: Vec<u64> = Vec::new(); // live values after it came back
    let deadline = Instant::now() + T;
    while let Some(l) = hist.next_line(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        let n = v["value"].as_u64().unwrap_or(0);
        if v["history"] == true {
            o.history.push(n);
        } else if v["quality"] != "Good" {
            o.stale_seen = true;
        } else if o.stale_seen {
            after.push(n);
        } else {
            o.before.push(n);
        }
        // Done when the link is back and the history reached the birth's value.
        if after
            .first()
            .is_some_and(|&b| o.history.last().is_some_and(|&h| h + 1 >= b))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replay did not finish: after {after:?} history {:?}",
            o.history
        );
    }
    o
}

impl Outage {
    /// Every tick of the outage once, in order, right after the last live one.
    fn assert_exactly_once(&self, outage: Duration) {
        let history = &self.history;
        assert!(self.stale_seen, "the historian saw the point go stale");
        assert!(!history.is_empty(), "history arrived");
        assert!(
            history.windows(2).all(|w| w[1] == w[0] + 1),
            "history in order, no gap, no duplicate: {history:?}"
        );
        let last_live = self.before.iter().copied().max().unwrap_or(0);
        assert_eq!(
            history[0],
            last_live + 1,
            "history starts right after the last live value before the outage"
        );
        assert!(
            history.len() as f64 >= outage.as_secs_f64() * 10.0 * 0.9,
            "a tick every 100 ms of the outage: {}",
            history.len()
        );
    }
}

/// An edge `edge1` with 99 signals and a `tick` counter, at 10 Hz: 1,000 updates/s.
pub(crate) fn write_tick_edge(p: &Plant) {
    write_tick_edge_of(p, 99);
}

/// `edge1` with a simulator of `signals` signals and a tick at 10 Hz.
pub(crate) fn write_tick_edge_of(p: &Plant, signals: u32) {
    let cfg = p.write_edge("edge1", signals, 10.0);
    let text = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("rate_hz = 10\n", "rate_hz = 10\ntick = true\n");
    std::fs::write(&cfg, text).expect("write");
}

/// A hub (running) with `edge1`, a historian and an HMI admitted; `edge1` written with a tick
/// and `signals` signals to reach the hub through a cuttable path, the clients directly.
fn edge_behind_a_path(signals: u32) -> (Plant, Proc, crate::path::Path) {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::client("historian", "[]"),
            Node::client("hmi", "[]"),
        ],
    );
    let hub = p.start_hub();
    let proxy = crate::path::Path::to(&p.hub_addr);
    let direct = p.hub_addr.clone();
    p.hub_addr = format!("127.0.0.1:{}", proxy.port);
    write_tick_edge_of(&p, signals);
    p.hub_addr = direct;
    p.write_client("historian");
    p.write_client("hmi");
    (p, hub, proxy)
}

/// In sorted tick values: those seen twice, and the runs missing (the values either side).
pub(crate) fn doubles_and_gaps(sorted: &[u64]) -> (Vec<u64>, Vec<(u64, u64)>) {
    let dups = sorted
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let gaps = sorted
        .windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| (w[0], w[1]))
        .collect();
    (dups, gaps)
}

/// A historian (`watch --history`) and an HMI on `edge1/sim/tick` at `p`'s hub, both live; and
/// the historian's first record.
fn historian_and_hmi(p: &Plant) -> (Proc, Proc, serde_json::Value) {
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
    (hist, hmi, first)
}

#[test]
fn an_edge_restarted_with_a_changed_configuration_during_an_outage_replays_each_point_as_itself() {
    // The edge buffers while its path to the hub is cut; it is stopped, an engineer adds a
    // source ahead of the simulator (every point of the simulator gets a new number), and it
    // starts again before the path returns. The buffered ticks must replay as the tick.
    let (p, _hub, proxy) = edge_behind_a_path(99);
    let mut edge = p.start_edge("edge1");
    let (hist, _hmi, first) = historian_and_hmi(&p);
    let n0 = first["value"].as_u64().expect("a tick");

    proxy.cut();
    std::thread::sleep(Duration::from_secs(3));
    edge.kill9();
    let cfg = p.path("edge1.toml");
    let text = std::fs::read_to_string(&cfg).expect("read");
    let text = text.replacen(
        "[[sources]]",
        "[[sources]]\nkind = \"simulator\"\nname = \"added\"\nsignals = 3\nsetpoints = 0\nrate_hz = 1\n\n[[sources]]",
        1,
    );
    std::fs::write(&cfg, text).expect("write");
    let _edge = p.start_edge("edge1");
    std::thread::sleep(Duration::from_secs(1));
    proxy.restore();

    // History, then 2 s of live values.
    let (mut history, mut live_since) = (Vec::<serde_json::Value>::new(), 0);
    let deadline = Instant::now() + T;
    while let Some(l) = hist.next_line(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["history"] == true {
            history.push(v["value"].clone());
            live_since = 0;
        } else if !history.is_empty() && v["quality"] == "Good" {
            live_since += 1;
            if live_since >= 20 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the replay did not end: {history:?}"
        );
    }
    // The ticks buffered before the restart come first, each once, in order, from the one after
    // the last live value; then the restarted edge's own (counting from 1 again).
    let run = history
        .iter()
        .zip(n0 + 1..)
        .take_while(|(v, n)| v.as_u64() == Some(*n))
        .count();
    println!(
        "edge restarted with a changed configuration: {} history records, the first {run} the ticks {}..={}",
        history.len(),
        n0 + 1,
        n0 + run as u64
    );
    assert!(
        run >= 20,
        "about 3 s of buffered ticks as the tick: {history:?}"
    );
    let rest: Vec<Option<u64>> = history[run..].iter().map(|v| v.as_u64()).collect();
    assert!(
        rest.first().is_none_or(|n| n.is_some_and(|n| n <= 2))
            && rest
                .windows(2)
                .all(|w| w[0].is_some() && w[1] == w[0].map(|n| n + 1)),
        "after them only the restarted edge's ticks, from its first: {history:?}"
    );
}

#[test]
fn a_link_lost_in_the_middle_of_a_replay_still_delivers_every_update_once() {
    // 1,000 points at 10 Hz buffered through a 12 s cut (~120,000 updates); the path is cut
    // again the moment the historian sees the first replayed tick, and restored 2 s later. The
    // replay that was under way starts over; the hub passes on only what it had not had.
    let (p, _hub, proxy) = edge_behind_a_path(999);
    let _edge = p.start_edge("edge1");
    let (hist, _hmi, first) = historian_and_hmi(&p);

    proxy.cut();
    std::thread::sleep(Duration::from_secs(12));
    proxy.restore();
    let mut seen: Vec<u64> = first["value"].as_u64().into_iter().collect();
    let deadline = Instant::now() + T;
    let mut before_second_cut = 0;
    loop {
        let l = hist.next_line(T).expect("the historian goes on");
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["quality"] == "Good" {
            seen.extend(v["value"].as_u64());
        }
        if v["history"] == true {
            before_second_cut += 1;
            proxy.cut();
            break;
        }
        assert!(Instant::now() < deadline, "no replay after the first cut");
    }
    std::thread::sleep(Duration::from_secs(2));
    proxy.restore();
    let (mut history, mut live_since) = (before_second_cut, 0);
    while let Some(l) = hist.next_line(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["quality"] != "Good" {
            continue;
        }
        seen.extend(v["value"].as_u64());
        if v["history"] == true {
            history += 1;
            live_since = 0;
        } else {
            live_since += 1;
            if live_since >= 30 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the replay did not end: {history} records"
        );
    }
    seen.sort_unstable();
    let (dups, gaps) = doubles_and_gaps(&seen);
    println!(
        "link lost mid-replay: {} ticks at the historian, {} through {}; {history} of them history; duplicates {dups:?}, gaps {gaps:?}",
        seen.len(),
        seen.first().copied().unwrap_or(0),
        seen.last().copied().unwrap_or(0)
    );
    assert!(gaps.is_empty(), "no tick missing: gaps {gaps:?}");
    assert!(dups.is_empty(), "no tick twice: {dups:?}");
    assert!(
        history >= 100,
        "12 s and 2 s of cuts came as history: {history}"
    );
}
