//! Outages in every combination, with real hubs on loopback and cuttable TCP paths between them:
//! cuts of the edge hop and the hub hop at overlapping times, a cloud hub restarted, a chain of
//! three hubs cut at two levels, and a spool too small for its outage. At the top a historian
//! (`client watch --history`, or `client historian` into PostgreSQL where the top hub itself
//! restarts) must see every tick of the edge once, or, where the spool is too small, lose the
//! oldest and have the loss counted.

use crate::chain::{doubles_and_gaps, write_tick_edge_of};
use crate::harness::*;
use crate::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// An `[[upstream]]` link to `port` (a path to a hub with fingerprint `fp`), quick to notice a
/// cut and to come back; `extra` goes into the same table.
fn upstream_via(port: u16, fp: &str, extra: &str) -> String {
    format!(
        "[[upstream]]\nurls = [\"wss://127.0.0.1:{port}\"]\nfingerprint = \"{fp}\"\nheartbeat_ms = 250\ntimeout_ms = 750\nbackoff_max_ms = 500\n{extra}"
    )
}

/// `edge1` (a 10 Hz tick and `signals` signals) written to dial its hub at `p` through a new
/// path.
fn edge_through_a_path(p: &mut Plant, signals: u32) -> Path {
    let path = Path::to(&p.hub_addr);
    let direct = p.hub_addr.clone();
    p.hub_addr = format!("127.0.0.1:{}", path.port);
    write_tick_edge_of(p, signals);
    p.hub_addr = direct;
    path
}

/// A dmz hub (edge1 and a client `ops` admitted) below a cloud hub (a historian, an HMI and the
/// dmz admitted) on `cloud_listen`, the hub hop through a path; both started.
struct TwoHubs {
    a: Plant,
    b: Plant,
    dmz: Proc,
    cloud: Proc,
    up: Path,
}

fn two_hubs(cloud_listen: &str, upstream_extra: &str) -> TwoHubs {
    two_hubs_at("127.0.0.1:0", cloud_listen, &|port, fp| {
        upstream_via(port, fp, upstream_extra)
    })
}

/// [`two_hubs`] with the dmz on `dmz_listen` and its `[[upstream]]` section from `upstream`
/// (given the path's port and the cloud's fingerprint).
fn two_hubs_at(
    dmz_listen: &str,
    cloud_listen: &str,
    upstream: &dyn Fn(u16, &str) -> String,
) -> TwoHubs {
    let (mut a, mut b) = (Plant::new(), Plant::new());
    let dmz_nodes = [Node::edge("edge1"), Node::client("ops", "[]")];
    a.write_hub_named("dmz", dmz_listen, &dmz_nodes, "");
    let a_fp = a.hub_fingerprint();
    b.write_hub_named(
        "cloud",
        cloud_listen,
        &[
            Node::client("historian", "[]"),
            Node::client("hmi", "[]"),
            Node::hub("dmz", &a_fp),
        ],
        "",
    );
    let cloud = b.start_hub();
    let up = Path::to(&b.hub_addr);
    a.write_hub_named("dmz", dmz_listen, &dmz_nodes, &upstream(up.port, &b.hub_fp));
    let dmz = a.start_hub();
    b.write_client("historian");
    b.write_client("hmi");
    a.write_client("ops");
    TwoHubs {
        a,
        b,
        dmz,
        cloud,
        up,
    }
}

fn watch_history(p: &Plant) -> Proc {
    Proc::spawn(
        "historian",
        &[
            "client",
            "watch",
            "--history",
            "--config",
            &p.cfg("historian"),
            "edge1/sim/tick",
        ],
    )
}

/// What a historian saw of the tick: every good value, and those that came as history.
struct Seen {
    all: Vec<u64>,
    history: Vec<u64>,
    stale: bool,
    /// Values from this source time on come from a restarted edge, whose tick starts again:
    /// they are not counted.
    restarted: Option<std::time::SystemTime>,
}

impl Seen {
    /// Takes in one record: `Some(history)` for a good tick, `None` for anything else.
    fn take(&mut self, v: &serde_json::Value) -> Option<bool> {
        if v["quality"] != "Good" {
            self.stale = true;
            return None;
        }
        let n = v["value"].as_u64()?;
        let history = v["history"] == true;

        let later = |r: std::time::SystemTime| {
            v["source_ts"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .is_some_and(|t| t >= r)
        };
        if !self.restarted.is_some_and(later) {
            self.all.push(n);
            if history {
                self.history.push(n);
            }
        }
        Some(history)
    }
}

/// Reads `hist` until the replays are over: history came, and 3 s of live ticks followed it.
fn settle(hist: &Proc, mut seen: Seen) -> Seen {
    let (mut history, mut live_since) = (0, 0);
    let deadline = Instant::now() + T;
    while let Some(l) = hist.next_line(Duration::from_secs(10)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        match seen.take(&v) {
            Some(true) => {
                history += 1;
                live_since = 0;
            }
            Some(false) if history > 0 => {
                live_since += 1;
                if live_since >= 30 {
                    break;
                }
            }
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the replay did not end: {history} history records"
        );
    }
    assert!(
        history > 0 && live_since >= 30,
        "history, then live again at the top: {history} history records, {live_since} live since"
    );
    seen
}

/// Reads `hist` into `seen` until its first history record.
fn until_history(hist: &Proc, seen: &mut Seen) {
    let deadline = Instant::now() + T;
    loop {
        let l = hist.next_line(T).expect("the historian goes on");
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if seen.take(&v) == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "no history came");
    }
}

/// Starts the historian on `edge1/sim/tick` and waits for its first live tick.
fn first_ticks(hist: &Proc) -> Seen {
    let first = hist.expect_json(T, "live ticks", |v| v["quality"] == "Good");
    Seen {
        all: first["value"].as_u64().into_iter().collect(),
        history: Vec::new(),
        stale: false,
        restarted: None,
    }
}

/// Every tick from the first seen to the last, once; prints the figures.
fn assert_once(what: &str, seen: &Seen) {
    let mut sorted = seen.all.clone();
    sorted.sort_unstable();
    let (dups, gaps) = doubles_and_gaps(&sorted);
    println!(
        "{what}: {} ticks at the top, {} through {}, {} of them history; duplicates {dups:?}, gaps {gaps:?}",
        sorted.len(),
        sorted.first().copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
        seen.history.len()
    );
    assert!(gaps.is_empty(), "{what}: no tick missing: gaps {gaps:?}");
    assert!(dups.is_empty(), "{what}: no tick twice: {dups:?}");
}

/// `$sys/dmz/upstream/0/buffer/<what>` as the dmz's `ops` client reads it.
fn dmz_buffer(h: &TwoHubs, what: &str) -> u64 {
    let point = format!("$sys/dmz/upstream/0/buffer/{what}");
    let (code, out, err) =
        h.a.run(&["client", "get", "--config", &h.a.cfg("ops"), &point]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["point"] == point.as_str())
        .and_then(|v| v["value"].as_u64())
        .unwrap_or_else(|| panic!("{point}: {out}"))
}

#[test]
fn a_30_s_cut_between_hubs_at_1000_updates_s_reaches_the_top_once_and_in_order() {
    // edge1 (1,000 updates/s) → dmz → a path cut for 30 s → cloud → historian, HMI. The edge
    // never loses its hub: only the dmz's spool can keep the outage.
    let h = two_hubs("127.0.0.1:0", "");
    write_tick_edge_of(&h.a, 99);
    let _edge = h.a.start_edge("edge1");
    let hist = watch_history(&h.b);
    let hmi = h.b.watch("hmi", "edge1/sim/tick");
    let seen = first_ticks(&hist);
    hmi.expect_json(T, "live ticks", |v| v["quality"] == "Good");
    h.up.cut();
    hmi.expect_json(T, "the tick stale at once", |v| v["quality"] != "Good");
    std::thread::sleep(Duration::from_secs(30));
    // Read a moment before the path returns: the spool's count lags by up to a second.
    let queued = dmz_buffer(&h, "queued");
    h.up.restore();
    let back = Instant::now();
    let seen = settle(&hist, seen);
    // `settle` reads 3 s of live ticks after the last history record.
    let replayed_in = back.elapsed().saturating_sub(Duration::from_secs(3));
    assert!(seen.stale, "the historian saw the tick go stale");
    assert_once("a 30 s cut between hubs", &seen);
    println!(
        "a 30 s cut at 1,000 updates/s: {queued} updates spooled at the dmz; {} ticks came as history, the last of them about {} ms after the path returned",
        seen.history.len(),
        replayed_in.as_millis()
    );
    // In order; with every tick once (above). Under load a heartbeat may drop the link again
    // in the middle of the replay: the ticks of that second outage follow as history too.
    assert!(
        seen.history.windows(2).all(|w| w[1] > w[0]),
        "the history in order: {:?}",
        seen.history
    );
    assert!(
        seen.history.len() >= 270,
        "a tick every 100 ms of the cut: {}",
        seen.history.len()
    );
    assert!(
        queued >= 25_000,
        "about 1,000 updates a second spooled: {queued}"
    );
    // The HMI at the top is Good again and never got history.
    let v = hmi.expect_json(T, "live again", |v| v["quality"] == "Good");
    assert!(v.get("history").is_none(), "{v}");
    hmi.drain();
    drop(h.dmz);
    drop(h.cloud);
}

#[test]
fn overlapping_cuts_of_the_edge_hop_and_the_hub_hop_lose_nothing() {
    // edge1 → path → dmz → path → cloud → historian. The hub hop is cut at 0 s, the edge hop at
    // 3 s; the hub hop comes back at 6 s, the edge hop at 9 s. The dmz spools 0–3 s, the edge
    // buffers 3–9 s, and its replay passes through the dmz after the dmz's own.
    let mut h = two_hubs("127.0.0.1:0", "");
    let edge_path = edge_through_a_path(&mut h.a, 99);
    let _edge = h.a.start_edge("edge1");
    let hist = watch_history(&h.b);
    let seen = first_ticks(&hist);
    h.up.cut();
    std::thread::sleep(Duration::from_secs(3));
    edge_path.cut();
    std::thread::sleep(Duration::from_secs(3));
    h.up.restore();
    std::thread::sleep(Duration::from_secs(3));
    edge_path.restore();
    let seen = settle(&hist, seen);
    assert!(seen.stale, "the top saw the tick go stale");
    assert_once("overlapping cuts on both hops", &seen);
    assert!(
        seen.history.len() >= 80,
        "9 s of outage came as history: {}",
        seen.history.len()
    );
}

#[test]
fn a_cloud_hub_restarted_while_its_child_forwards_loses_nothing_at_its_historian() {
    // edge1 → dmz → path → cloud (fixed port) → historian (PostgreSQL, durable). The cloud hub is
    // stopped (Ctrl-C) for 5 s and started again: the dmz spools meanwhile, the historian's
    // durable subscription at the cloud keeps what the cloud took in before it stopped.
    let db = crate::postgres::Postgres::start();
    let cloud_listen = format!("127.0.0.1:{}", free_port());
    let mut h = two_hubs(&cloud_listen, "");
    write_tick_edge_of(&h.a, 99);
    let cfg = h.b.cfg("historian");
    let mut text = std::fs::read_to_string(&cfg).expect("read");
    text.push_str(&format!(
        "\n[historian]\ndatabase = \"{}\"\npoints = [\"edge1/**\"]\n",
        db.url()
    ));
    std::fs::write(&cfg, text).expect("write");
    let _edge = h.a.start_edge("edge1");
    let _hist = Proc::spawn("historian", &["client", "historian", "--config", &cfg]);
    let start = crate::historian::caught_up(&db, 10, T);
    h.cloud.signal("INT");
    assert!(h.cloud.child.wait().expect("the cloud exits").success());
    std::thread::sleep(Duration::from_secs(5));
    let _cloud = h.b.start_hub();
    let back = Instant::now();
    let t = crate::historian::caught_up(&db, start.3 + 100, T);
    println!(
        "cloud hub restarted (5 s down) below a durable historian: caught up {} ms after its start; ticks (rows, distinct, min, max, history) = {t:?}",
        back.elapsed().as_millis()
    );
    assert!(
        t.4 >= 40,
        "the dmz's spool of the cloud's downtime came as history: {}",
        t.4
    );
    drop(h.dmz);
}

#[test]
fn a_three_level_chain_cut_at_two_levels_loses_nothing() {
    // edge1 → plant → path A → region → path B → global → historian. A is cut at 0 s, B at 2 s;
    // A comes back at 5 s, B at 8 s.
    let (mut p, mut r, mut g) = (Plant::new(), Plant::new(), Plant::new());
    p.write_hub_named("plant", "127.0.0.1:0", &[Node::edge("edge1")], "");
    r.write_hub_named("region", "127.0.0.1:0", &[], "");
    let (p_fp, r_fp) = (p.hub_fingerprint(), r.hub_fingerprint());
    g.write_hub_named(
        "global",
        "127.0.0.1:0",
        &[Node::client("historian", "[]"), Node::hub("region", &r_fp)],
        "",
    );
    let _g = g.start_hub();
    let b = Path::to(&g.hub_addr);
    r.write_hub_named(
        "region",
        "127.0.0.1:0",
        &[Node::hub("plant", &p_fp)],
        &upstream_via(b.port, &g.hub_fp, ""),
    );
    let _r = r.start_hub();
    let a = Path::to(&r.hub_addr);
    p.write_hub_named(
        "plant",
        "127.0.0.1:0",
        &[Node::edge("edge1")],
        &upstream_via(a.port, &r.hub_fp, ""),
    );
    let _p = p.start_hub();
    write_tick_edge_of(&p, 99);
    g.write_client("historian");
    let _edge = p.start_edge("edge1");
    let hist = watch_history(&g);
    let seen = first_ticks(&hist);
    a.cut();
    std::thread::sleep(Duration::from_secs(2));
    b.cut();
    std::thread::sleep(Duration::from_secs(3));
    a.restore();
    std::thread::sleep(Duration::from_secs(3));
    b.restore();
    let seen = settle(&hist, seen);
    assert!(seen.stale, "the top saw the tick go stale");
    assert_once("three levels, cut at two", &seen);
    assert!(
        seen.history.len() >= 70,
        "8 s of outage came as history: {}",
        seen.history.len()
    );
}

#[test]
fn a_spool_too_small_for_its_outage_drops_the_oldest_and_counts_them() {
    // The dmz's spool holds 64 KiB (about 1.6 s of 1,000 updates/s); the hub hop is cut for 8 s.
    let h = two_hubs("127.0.0.1:0", "buffer_max_bytes = 65536\n");
    write_tick_edge_of(&h.a, 99);
    let _edge = h.a.start_edge("edge1");
    let hist = watch_history(&h.b);
    let seen = first_ticks(&hist);
    h.up.cut();
    std::thread::sleep(Duration::from_secs(8));
    // The dmz counts what it dropped, in its own $sys.
    let dropped = dmz_buffer(&h, "dropped");
    h.up.restore();
    let seen = settle(&hist, seen);
    let first_kept = seen.history.first().copied().unwrap_or(0);
    let last_live = seen
        .all
        .iter()
        .copied()
        .filter(|&v| v < first_kept)
        .max()
        .unwrap_or(0);
    let missing = first_kept.saturating_sub(last_live + 1);
    println!(
        "a 64 KiB spool through an 8 s cut: {} ticks of history kept, the {missing} oldest ticks dropped; the dmz counted {dropped} updates dropped",
        seen.history.len()
    );
    assert!(
        seen.history.windows(2).all(|w| w[1] == w[0] + 1),
        "what was kept came in order, once: {:?}",
        seen.history
    );
    assert!(
        missing >= 30,
        "the oldest of the outage were dropped: {missing}"
    );
    assert!(
        dropped >= missing * 50,
        "the loss is counted ({dropped} updates for {missing} ticks of 100 points)"
    );
    drop(h.dmz);
    drop(h.cloud);
}

#[test]
fn a_dmz_hub_killed_while_its_parent_link_is_stalled_loses_nothing_it_acknowledged() {
    // edge1 (300 points at 10 Hz) → dmz (fixed port) → path → cloud → historian. The hub hop
    // is cut for 12 s (~36,000 updates spooled) and restored; the moment the top sees the first
    // replayed tick, the path stalls: the dmz's link stays open (its timeout is 10 s) and what
    // it sends, replay and live ticks, goes nowhere. 2 s later the dmz is killed with kill -9
    // and restarted. It had acknowledged to the edge only what its spool held or its parent had
    // acknowledged, and trims its spool only as the parent acknowledges the replay: all of it
    // reaches the top once.
    let dmz_listen = format!("127.0.0.1:{}", free_port());
    let mut h = two_hubs_at(&dmz_listen, "127.0.0.1:0", &|port, fp| {
        format!("[[upstream]]\nurls = [\"wss://127.0.0.1:{port}\"]\nfingerprint = \"{fp}\"\nheartbeat_ms = 1000\ntimeout_ms = 10000\nbackoff_max_ms = 500\n")
    });
    write_tick_edge_of(&h.a, 299);
    let _edge = h.a.start_edge("edge1");
    let hist = watch_history(&h.b);
    let mut seen = first_ticks(&hist);
    h.up.cut();
    std::thread::sleep(Duration::from_secs(12));
    h.up.restore();
    until_history(&hist, &mut seen);
    h.up.stall();
    std::thread::sleep(Duration::from_secs(2));
    h.dmz.kill9();
    h.up.cut();
    h.dmz = h.a.start_hub();
    h.up.restore();
    let seen = settle(&hist, seen);
    assert_once("dmz killed behind a stalled parent link", &seen);
    assert!(
        seen.history.len() >= 120,
        "the 12 s cut and the stall came as history: {}",
        seen.history.len()
    );
}

#[test]
fn an_edge_killed_during_its_replay_and_restarted_delivers_every_tick_once() {
    // edge1 (300 points at 10 Hz) → path → hub → historian. The edge hop is cut for 12 s
    // (~36,000 updates buffered) and restored; the moment the historian sees the first
    // replayed tick the edge is killed with kill -9 and started again. Whatever of its replay
    // the hub had not acknowledged is still in the edge's buffer (it leaves only when
    // acknowledged) and comes again; the hub passes on only what it had not had. (The replay
    // goes in a few compressed frames, so the kill mostly lands after the hub has it all: the
    // unit tests of `pointhub_spool::Replay` show the trimming on acknowledgement itself, and
    // the stalled-parent test above shows it on the hub's spool.)
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("historian", "[]")],
    );
    let _hub = p.start_hub();
    let path = edge_through_a_path(&mut p, 299);
    p.write_client("historian");
    let mut edge = p.start_edge("edge1");
    let hist = watch_history(&p);
    let mut seen = first_ticks(&hist);
    path.cut();
    std::thread::sleep(Duration::from_secs(12));
    path.restore();
    until_history(&hist, &mut seen);
    edge.kill9();
    seen.restarted = Some(std::time::SystemTime::now());
    let _edge = p.start_edge("edge1");
    let seen = settle(&hist, seen);
    assert_once("edge killed during its replay", &seen);
    assert!(
        seen.history.len() >= 110,
        "the 12 s cut came as history: {}",
        seen.history.len()
    );
}

#[test]
fn an_edge_that_redials_before_its_hub_notices_the_old_session_loses_nothing() {
    // edge1 → path → hub → historian. The hub's heartbeat timeout is 20 s, the edge's 750 ms.
    // The path freezes the edge's connection (open, passing nothing): the edge gives up on it
    // and redials (the new connection passes) while the hub still holds the old, half-open
    // session. The new session takes the points over; what the edge had sent on the frozen
    // one never arrived, and comes again as history from its buffer: the takeover is a loss of
    // the authority like any other, and the hub passes that history on.
    let mut p = Plant::new();
    let cfg = p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("historian", "[]")],
    );
    let text = std::fs::read_to_string(&cfg).expect("read");
    std::fs::write(&cfg, text.replace("timeout_ms = 750", "timeout_ms = 20000")).expect("write");
    let _hub = p.start_hub();
    let path = edge_through_a_path(&mut p, 9);
    p.write_client("historian");
    let _edge = p.start_edge("edge1");
    let hist = watch_history(&p);
    let seen = first_ticks(&hist);
    std::thread::sleep(Duration::from_secs(2));
    path.freeze();
    let seen = settle(&hist, seen);
    assert_once("edge redialled past its half-open session", &seen);
    assert!(
        !seen.history.is_empty(),
        "what the frozen session carried came as history"
    );
}
