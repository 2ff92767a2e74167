//! Durable subscriptions at the hub: a `client watch --durable` that is away (killed) while its
//! hub restarts gets, when it is back, every update it did not print, in order, and the hub
//! refuses what it cannot keep with a sentence that says what to do.

use crate::harness::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Good tick records of a watcher: (value, history).
fn ticks_of(lines: &[serde_json::Value]) -> Vec<(u64, bool)> {
    lines
        .iter()
        .filter(|v| v["quality"] == "Good")
        .filter_map(|v| Some((v["value"].as_u64()?, v["history"] == true)))
        .collect()
}

fn watch_durable(p: &Plant, name: &str) -> Proc {
    Proc::spawn(
        "historian",
        &[
            "client",
            "watch",
            "--durable",
            name,
            "--config",
            &p.cfg("historian"),
            "edge1/sim/tick",
        ],
    )
}

#[test]
fn a_durable_watcher_away_20_s_while_its_hub_restarts_misses_nothing() {
    // edge1 (10 Hz tick) → hub (fixed port) → `watch --durable hist1`. The watcher is killed
    // (kill -9); 5 s later the hub is stopped (Ctrl-C) for 3 s, so the edge buffers; 20 s after
    // the kill the watcher starts again under the same name.
    let mut p = Plant::new();
    let listen = format!("127.0.0.1:{}", free_port());
    p.write_hub(
        &listen,
        &[Node::edge("edge1"), Node::client("historian", "[]")],
    );
    let mut hub = p.start_hub();
    crate::chain::write_tick_edge(&p);
    p.write_client("historian");
    let _edge = p.start_edge("edge1");
    let mut w = watch_durable(&p, "hist1");
    let mut before: Vec<serde_json::Value> = Vec::new();
    while ticks_of(&before).len() < 20 {
        let l = w.next_line(T).expect("live ticks on the durable watcher");
        before.push(serde_json::from_str(&l).expect("json"));
    }
    w.kill9();
    let away = Instant::now();
    // What it printed before it died is still in the pipe.
    while let Some(l) = w.next_line(Duration::from_millis(300)) {
        before.push(serde_json::from_str(&l).expect("json"));
    }
    std::thread::sleep(Duration::from_secs(5));
    hub.signal("INT");
    let status = hub.child.wait().expect("the hub exits");
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_secs(3));
    let hub2 = p.start_hub();
    hub2.wait_stderr(T, "durable subscription kept for its client");
    std::thread::sleep(Duration::from_secs(20).saturating_sub(away.elapsed()));

    let w2 = watch_durable(&p, "hist1");
    let back = Instant::now();
    let mut after: Vec<serde_json::Value> = Vec::new();
    // The backlog comes at once; done once the watcher has been live again for a while and
    // 3 s of live ticks (30) followed the edge's replay of the hub's downtime.
    let (mut history, mut live_since) = (0, 0);
    let deadline = Instant::now() + T;
    while let Some(l) = w2.next_line(Duration::from_secs(10)) {
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["quality"] == "Good" {
            if v["history"] == true {
                history += 1;
                live_since = 0;
            } else if history > 0 {
                live_since += 1;
            }
        }
        after.push(v);
        if live_since >= 30 && back.elapsed() > Duration::from_secs(5) {
            break;
        }
        assert!(Instant::now() < deadline, "the durable backlog did not end");
    }
    assert!(
        history > 0 && live_since >= 30,
        "the backlog, the edge's replay, then live again: {history} history records, {live_since} live since"
    );
    let (b, a) = (ticks_of(&before), ticks_of(&after));
    let mut all: Vec<u64> = b.iter().chain(a.iter()).map(|t| t.0).collect();
    all.sort_unstable();
    let (dups, gaps) = crate::chain::doubles_and_gaps(&all);
    let replayed: Vec<u64> = a.iter().filter(|t| t.1).map(|t| t.0).collect();
    let live: Vec<u64> = a.iter().filter(|t| !t.1).map(|t| t.0).collect();
    println!(
        "durable watcher away {} s across a hub restart: {} ticks before, {} after ({} of them the edge's replay); {} through {}; printed twice {dups:?}, gaps {gaps:?}",
        away.elapsed().as_secs(),
        b.len(),
        a.len(),
        replayed.len(),
        all.first().copied().unwrap_or(0),
        all.last().copied().unwrap_or(0)
    );
    assert!(gaps.is_empty(), "no tick missing: gaps {gaps:?}");
    // A batch printed in the instant before the kill, and not yet acknowledged, comes again.
    let last_before: Vec<u64> = b.iter().rev().take(10).map(|t| t.0).collect();
    assert!(
        dups.iter().all(|d| last_before.contains(d)),
        "only the last batch before the kill may come twice: {dups:?} (last printed {last_before:?})"
    );
    assert!(
        replayed.len() >= 20,
        "the edge's buffer of the hub's 3 s downtime came as history: {}",
        replayed.len()
    );
    assert!(
        replayed.windows(2).all(|w| w[0] < w[1]) && live.windows(2).all(|w| w[0] < w[1]),
        "live values in order, history in order: live {live:?}, history {replayed:?}"
    );
    assert!(
        all.len() >= 200,
        "about 10 ticks a second for the whole run: {}",
        all.len()
    );
    // The operator sees it, and removes it (audited); a watcher that comes back starts anew.
    let hub_cfg = p.cfg("hub");
    let (code, out, err) = p.run(&["hub", "durable", "list", "--config", &hub_cfg]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("null")).expect("json");
    assert_eq!(listed["name"], "hist1", "{out}");
    assert_eq!(listed["node"], "historian", "{out}");
    drop(w2);
    let (code, _, err) = p.run(&[
        "hub",
        "durable",
        "remove",
        "historian",
        "nope",
        "--config",
        &hub_cfg,
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("durable list"),
        "an unknown one is named: {err}"
    );
    let (code, out, err) = p.run(&[
        "hub",
        "durable",
        "remove",
        "historian",
        "hist1",
        "--config",
        &hub_cfg,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    let (_, out, _) = p.run(&["hub", "durable", "list", "--config", &hub_cfg]);
    assert!(out.trim().is_empty(), "none left: {out}");
    let (_, audit, _) = p.run(&[
        "hub",
        "audit",
        "--config",
        &hub_cfg,
        "--event",
        "durable.removed",
    ]);
    assert!(audit.contains("hist1"), "the removal is audited: {audit}");
    // The hub tells of the subscription in $sys.
    let (code, out, err) = p.run(&[
        "client",
        "get",
        "--config",
        &p.cfg("historian"),
        "$sys/hub1/durable/historian/hist1/*",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("durable/historian/hist1/queued")
            && out.contains("durable/historian/hist1/connected"),
        "{out}"
    );
}

#[test]
fn a_durable_subscription_the_hub_cannot_keep_is_refused_with_what_to_do() {
    let mut p = Plant::new();
    p.write_hub_named(
        "hub1",
        "127.0.0.1:0",
        &[Node::client("historian", "[]")],
        "[durable]\nmax_per_key = 1\n",
    );
    let _hub = p.start_hub();
    p.write_client("historian");
    let first = watch_durable(&p, "one");
    first.wait_stderr(T, "connected to");
    // A name no hub takes is refused before anything dials.
    let (code, _, err) = p.run(&[
        "client",
        "watch",
        "--durable",
        "../etc",
        "--config",
        &p.cfg("historian"),
        "**",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("A-Z a-z 0-9"), "{err}");
    // A second subscription past the key's limit.
    let two = watch_durable(&p, "two");
    let said = two.wait_stderr(T, "max_per_key");
    assert!(said.contains("reuse one of them by name"), "{said}");
}
