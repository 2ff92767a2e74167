//! The foundation: values, authority and liveness, over mutual TLS, with real processes.

use crate::harness::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);
const UNCERTAIN: &str = "UncertainNoCommunicationLastUsableValue";

fn plant(listen: &str, signals: u32) -> (Plant, Proc) {
    let mut p = Plant::new();
    p.write_hub(
        listen,
        &[
            Node::edge("edge1"),
            Node::client("hmi", "[\"edge1/**\"]"),
            Node::client("viewer", "[]"),
        ],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", signals, 10.0);
    p.write_client("hmi");
    p.write_client("viewer");
    (p, hub)
}

fn ts_ok(v: &serde_json::Value, field: &str) -> bool {
    v[field]
        .as_str()
        .map(|s| s.ends_with('Z') && s.contains('.') && s.len() >= 24)
        .unwrap_or(false)
}

#[test]
fn values_flow_good_with_both_timestamps_and_writes_are_checked() {
    let (p, _hub) = plant("127.0.0.1:0", 4);
    let _edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    let v = w.expect_json(T, "a Good sine", |v| {
        v["point"] == "edge1/sim/sine1" && v["quality"] == "Good"
    });
    assert!(v["value"].is_f64(), "{v}");
    assert!(ts_ok(&v, "source_ts") && ts_ok(&v, "hub_ts"), "{v}");
    assert_eq!(v["quality_code"], 0);
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all 6 points Good", |b| {
        b.all("edge1/sim/", 6, "Good")
    });

    // get: one snapshot, then exit.
    let (code, out, err) = p.run(&["client", "get", "--config", &p.cfg("viewer"), "edge1/sim/*"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 6, "{out}");
    for l in out.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        assert_eq!(v["quality"], "Good", "{l}");
    }

    // A granted write reaches the source, and the watch sees the new value.
    let (code, out, err) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "edge1/sim/setpoint1",
        "42.5",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"status\":\"Good\""), "{out}");
    w.expect_json(T, "setpoint 42.5", |v| {
        v["point"] == "edge1/sim/setpoint1" && v["value"] == 42.5
    });

    // Refusals: not writable, unknown point, no write right, wrong type.
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "edge1/sim/sine1",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadNotWritable"), "{out}");
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "edge1/sim/nothing",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadNodeIdUnknown"), "{out}");
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("viewer"),
        "edge1/sim/setpoint1",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadUserAccessDenied"), "{out}");
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("hmi"),
        "edge1/sim/setpoint2",
        "hello",
    ]);
    assert_eq!(code, 2);
    assert!(out.contains("BadTypeMismatch"), "{out}");
}

#[test]
fn kill_9_of_the_edge_turns_its_points_stale_and_a_restart_restores_them() {
    let (p, _hub) = plant("127.0.0.1:0", 8);
    let mut edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all Good", |b| {
        b.all("edge1/sim/", 10, "Good")
    });
    edge.kill9();
    let took = watch_until(&w, &mut board, T, "all stale after kill -9", |b| {
        b.all("edge1/sim/", 10, UNCERTAIN)
    });
    println!(
        "kill -9 of the edge -> every point {UNCERTAIN} at the client in {} ms",
        took.as_millis()
    );
    // Stale points keep their last value.
    assert!(
        board.value.values().all(|v| !v.is_null()),
        "{:?}",
        board.value
    );
    let _edge = p.start_edge("edge1");
    let back = watch_until(&w, &mut board, T, "all Good after restart", |b| {
        b.all("edge1/sim/", 10, "Good")
    });
    println!(
        "edge restart -> every point Good again in {} ms",
        back.as_millis()
    );
}

#[test]
fn a_frozen_edge_is_declared_stale_within_the_heartbeat_timeout() {
    let (p, _hub) = plant("127.0.0.1:0", 4);
    let edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all Good", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    edge.signal("STOP");
    let took = watch_until(&w, &mut board, T, "all stale after SIGSTOP", |b| {
        b.all("edge1/sim/", 6, UNCERTAIN)
    });
    println!(
        "SIGSTOP of the edge -> every point stale in {} ms (hub timeout 750 ms)",
        took.as_millis()
    );
    // Generous bound that still catches a broken heartbeat: timeout 750 ms + one interval + margin.
    assert!(
        took < Duration::from_millis(750 + 250 + 1500),
        "took {took:?}"
    );
    edge.signal("CONT");
    watch_until(&w, &mut board, T, "all Good after SIGCONT", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
}

#[test]
fn killing_the_hub_makes_the_client_mark_everything_stale_itself() {
    let (mut p, mut hub) = plant("127.0.0.1:0", 4);
    let _edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all Good", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    hub.kill9();
    let took = watch_until(&w, &mut board, T, "client marks all stale", |b| {
        b.all("edge1/sim/", 6, UNCERTAIN)
    });
    println!(
        "kill -9 of the hub -> client marks every point stale in {} ms",
        took.as_millis()
    );
    // Same address again: the hub's return resyncs the client.
    let addr = p.hub_addr.clone();
    p.write_hub(
        &addr,
        &[
            Node::edge("edge1"),
            Node::client("hmi", "[\"edge1/**\"]"),
            Node::client("viewer", "[]"),
        ],
    );
    let _hub2 = p.start_hub();
    watch_until(&w, &mut board, T, "all Good after the hub returns", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
}

#[test]
fn ipv6_loopback_works_like_ipv4() {
    let (p, _hub) = plant("[::1]:0", 4);
    assert!(p.hub_addr.starts_with("[::1]:"), "{}", p.hub_addr);
    let mut edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    let mut board = Board::default();
    watch_until(&w, &mut board, T, "all Good over IPv6", |b| {
        b.all("edge1/sim/", 6, "Good")
    });
    edge.kill9();
    watch_until(&w, &mut board, T, "stale over IPv6", |b| {
        b.all("edge1/sim/", 6, UNCERTAIN)
    });
}

#[test]
fn an_unknown_key_is_refused_and_the_hub_says_which_and_why() {
    let (p, hub) = plant("127.0.0.1:0", 2);
    let fp = p.key("stranger");
    p.write_client("stranger");
    let (code, _out, err) = p.run(&[
        "client",
        "get",
        "--config",
        &p.cfg("stranger"),
        "--timeout",
        "2",
        "**",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("not approved"), "client says why: {err}");
    let line = hub.wait_stderr(T, &fp);
    assert!(line.contains("unknown key"), "{line}");
}

#[test]
fn a_wrong_hub_fingerprint_is_a_loud_refusal() {
    let (p, _hub) = plant("127.0.0.1:0", 2);
    let cfg = std::fs::read_to_string(p.path("viewer.toml")).expect("read");
    let wrong = cfg.replace(&p.hub_fp, &format!("sha256:{}", "ab".repeat(32)));
    std::fs::write(p.path("viewer.toml"), wrong).expect("write");
    let (code, _, err) = p.run(&[
        "client",
        "get",
        "--config",
        &p.cfg("viewer"),
        "--timeout",
        "2",
        "**",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("does not match the pinned"), "{err}");
}

#[test]
fn bad_config_is_a_clear_error_before_anything_binds() {
    let p = Plant::new();
    std::fs::write(p.path("bad.toml"), "name = \"h\"\nlisten = [\"nowhere\"]\n").expect("write");
    let (code, _, err) = p.run(&["hub", "--config", &p.cfg("bad")]);
    assert_ne!(code, 0);
    assert!(err.contains("not an address"), "{err}");
    std::fs::write(p.path("bad.toml"), "\u{0}\u{1}garbage").expect("write");
    let (code, _, err) = p.run(&["edge", "--config", &p.cfg("bad")]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn keygen_makes_an_owner_only_key_and_prints_the_fingerprint() {
    let p = Plant::new();
    let out_dir = p.path("k");
    let (code, out, err) = p.run(&[
        "keygen",
        "--out",
        out_dir.to_str().expect("utf8"),
        "--name",
        "n1",
    ]);
    assert_eq!(code, 0, "{err}");
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint: sha256:"))
        .expect("fingerprint line");
    assert_eq!(fp.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out_dir.join("node.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwrites a key.
    let (code, _, err) = p.run(&["keygen", "--out", out_dir.to_str().expect("utf8")]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn the_demo_prints_a_watch_command_that_works_as_printed() {
    let p = Plant::new();
    let data = p.path("demo");
    let demo = Proc::spawn(
        "demo",
        &[
            "demo",
            "--data",
            data.to_str().expect("utf8"),
            "--listen",
            "127.0.0.1:0",
            "--no-view",
        ],
    );
    let cmd = demo.expect_line(T, "the watch command", |l| {
        l.contains("client watch --config")
    });
    // Run it through a shell from another folder, exactly as printed.
    let mut child = std::process::Command::new("bash")
        .args(["-c", &format!("cd / && exec {}", cmd.trim())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("bash");
    let out = child.stdout.take().expect("stdout");
    let start = Instant::now();
    let mut good = false;
    use std::io::BufRead;
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if line.contains("\"point\":\"demo/sim/") && line.contains("\"quality\":\"Good\"") {
            good = true;
            break;
        }
        if start.elapsed() > T {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        good,
        "the printed command showed Good demo values; demo stderr:\n{}",
        demo.stderr_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_stopped_with_ctrl_c_tells_its_nodes_it_is_shutting_down() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::client("hmi", "[]"), Node::client("operator", "[]")],
    );
    let mut hub = p.start_hub();
    p.write_client("hmi");
    // An operator's `client watch` as well: it says why it lost the hub.
    p.write_client("operator");
    let watch = p.watch("operator", "**");
    watch.wait_stderr(T, "connected to");
    let cfg = pointhub_client::ClientConfig::load(&p.path("hmi.toml")).expect("config");
    let link_cfg = cfg
        .hub
        .link_config(pointhub_schemas::Role::Client, "hmi")
        .expect("link config");
    let mut link = pointhub_link::dial(
        &link_cfg,
        &link_cfg.hubs[0],
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("admitted");
    let started = Instant::now();
    hub.signal("INT");
    let mut told = None;
    loop {
        match tokio::time::timeout(T, link.session.rx.recv())
            .await
            .expect("the session ends")
        {
            Some(pointhub_schemas::Msg::Error(e)) => told = Some(e),
            Some(_) => {}
            None => break,
        }
    }
    let told = told.expect("an error message before the end");
    println!(
        "Ctrl-C: the node was told {:?} ({}) in {} ms",
        told.code,
        told.message,
        started.elapsed().as_millis()
    );
    assert_eq!(told.code, pointhub_schemas::ErrorCode::ShuttingDown);
    let said = watch.wait_stderr(T, "disconnected:");
    assert!(
        said.contains("is shutting down"),
        "the watching client names the hub's reason, not the socket's close: {said}"
    );
    let status = hub.child.wait().expect("the hub exits");
    assert!(status.success(), "{status:?}");
    hub.wait_stderr(T, "hub stopped");
}
