//! The broken promises a hostile probe found (issue 15), one test each: every one failed on the
//! code before the fix and must stay green.

use crate::harness::*;
use futures_util::{SinkExt, StreamExt};
use pointhub_client::ClientConfig;
use pointhub_link::{self as link, Link};
use pointhub_schemas::{
    Birth, DataType, ErrorCode, Msg, PointDef, Quality, Role, Subscribe, Timestamp, Update,
    WriteResult,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

fn link_cfg(p: &Plant, name: &str, role: Role) -> pointhub_link::LinkConfig {
    let cfg = ClientConfig::load(&p.path(&format!("{name}.toml"))).expect("config");
    cfg.hub.link_config(role, name).expect("link config")
}

async fn dial(p: &Plant, name: &str, role: Role) -> Link {
    let cfg = link_cfg(p, name, role);
    link::dial(&cfg, &cfg.hubs[0], &CancellationToken::new())
        .await
        .expect("admitted")
}

/// Waits for the session to end; returns the errors the hub sent.
async fn errors_until_end(link: &mut Link) -> Vec<pointhub_schemas::ErrorMsg> {
    let mut errs = Vec::new();
    loop {
        match tokio::time::timeout(T, link.session.rx.recv())
            .await
            .expect("session ends in time")
        {
            Some(Msg::Error(e)) => errs.push(e),
            Some(_) => {}
            None => return errs,
        }
    }
}

fn fingerprint(p: &Plant, name: &str) -> String {
    pointhub_link::identity::load(
        &p.path(&format!("keys/{name}/node.crt")),
        &p.path(&format!("keys/{name}/node.key")),
    )
    .expect("load")
    .fingerprint
    .to_string()
}

/// A TLS connection to the hub's port without a client key (the web side).
async fn web_tls(p: &Plant) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = link_cfg(p, "hmi", Role::Client);
    let anon = pointhub_link::tls::anonymous_client_config(&cfg.verify).expect("tls config");
    let tcp = tokio::net::TcpStream::connect(&p.hub_addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(anon)
        .connect(name, tcp)
        .await
        .expect("tls")
}

/// A JSON WebSocket session with an API token.
async fn json_ws(
    p: &Plant,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tls = web_tls(p).await;
    let url = format!("wss://{}/api/v1/ws?token={token}", p.hub_addr);
    let (ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket");
    ws
}

/// Watches one point on a thread: the longest time between two of its lines.
struct GapMeter {
    worst_ms: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Proc>>,
}

impl GapMeter {
    fn start(w: Proc, point: &str) -> GapMeter {
        w.drain();
        w.expect_json(T, "the watched point", |v| v["point"] == point);
        let (worst_ms, lines, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (wm, ln, st, point) = (
            worst_ms.clone(),
            lines.clone(),
            stop.clone(),
            point.to_string(),
        );
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !st.load(Ordering::Relaxed) {
                let Some(l) = w.next_line(Duration::from_millis(100)) else {
                    wm.fetch_max(last.elapsed().as_millis() as u64, Ordering::Relaxed);
                    continue;
                };
                if l.contains(&format!("\"point\":\"{point}\"")) {
                    wm.fetch_max(last.elapsed().as_millis() as u64, Ordering::Relaxed);
                    ln.fetch_add(1, Ordering::Relaxed);
                    last = Instant::now();
                }
            }
            w
        });
        GapMeter {
            worst_ms,
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns (worst gap in ms, lines seen).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.worst_ms.load(Ordering::Relaxed),
            self.lines.load(Ordering::Relaxed),
        )
    }
}

/// Samples a process's resident memory every 20 ms; the peak in KiB.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn start(pid: i32) -> PeakRss {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (pk, st) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1))
                            .and_then(|v| v.parse::<u64>().ok())
                    })
                    .unwrap_or(0);
                pk.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        PeakRss { peak, stop }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_upgraded_before_a_revoke_never_gets_its_welcome() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let _hub = p.start_hub();
    p.write_client("edge1");
    p.write_client("hmi");
    // TLS with edge1's key and the WebSocket upgrade, then silence: no hello yet.
    let cfg = link_cfg(&p, "edge1", Role::Edge);
    let tls_cfg = pointhub_link::tls::client_config(&cfg.identity, &cfg.verify).expect("tls");
    let tcp = tokio::net::TcpStream::connect(&p.hub_addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(tls_cfg)
        .connect(name, tcp)
        .await
        .expect("tls");
    let (mut ws, _) = tokio_tungstenite::client_async(cfg.hubs[0].to_string(), tls)
        .await
        .expect("upgraded");
    let (code, _, err) = p.run(&[
        "hub",
        "keys",
        "revoke",
        &fingerprint(&p, "edge1"),
        "--reason",
        "stolen",
        "--config",
        &p.cfg("hub"),
    ]);
    assert_eq!(code, 0, "{err}");
    // Now the hello: the hub must not welcome a key revoked since the upgrade.
    let hello = Msg::Hello(pointhub_schemas::Hello {
        major: pointhub_schemas::PROTOCOL_MAJOR,
        minor: pointhub_schemas::PROTOCOL_MINOR,
        role: Role::Edge,
        name: "edge1".into(),
        software: "probe".into(),
    });
    let _ = ws
        .send(WsMsg::Binary(pointhub_schemas::encode(&hello).into()))
        .await;
    let started = Instant::now();
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("ends") {
            Some(Ok(WsMsg::Binary(b))) => {
                let m = pointhub_schemas::decode(&b, &pointhub_schemas::Limits::default())
                    .expect("decodes");
                assert!(
                    !matches!(m, Msg::Welcome(_)),
                    "a revoked key was welcomed: {m:?}"
                );
            }
            Some(Ok(WsMsg::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    println!(
        "revoke across a silent upgraded connection: ended {} ms after the hello",
        started.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_first_connects_with_one_token_approve_one_key() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::client("hmi", "[]")]);
    let _hub = p.start_hub();
    let token = p.enrollment_token("edge", "plant8");
    let mut cfgs = Vec::new();
    for i in 0..10 {
        let name = format!("n{i}");
        p.key(&name);
        p.write_client(&name);
        let mut cfg = link_cfg(&p, &name, Role::Edge);
        cfg.enroll_token = Some(token.clone());
        cfgs.push(cfg);
    }
    let shutdown = CancellationToken::new();
    let tries = cfgs
        .iter()
        .map(|c| link::dial(c, &c.hubs[0], &shutdown))
        .collect::<Vec<_>>();
    let results = futures_util::future::join_all(tries).await;
    let admitted = results.iter().filter(|r| r.is_ok()).count();
    println!("one token, 10 keys at once: {admitted} admitted");
    assert_eq!(admitted, 1);
    let (code, out, err) = p.run(&["hub", "keys", "list", "--config", &p.cfg("hub")]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("plant8").count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cannot_answer_another_edges_write_and_a_dead_edges_write_is_answered_at_once() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::edge("rogue"),
            Node::client("op", "[\"edge1/**\"]"),
            Node::client("hmi", "[]"),
        ],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    for c in ["rogue", "op", "hmi"] {
        p.write_client(c);
    }
    let mut edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    w.expect_json(T, "edge1 live", |v| v["quality"] == "Good");
    let rogue = dial(&p, "rogue", Role::Edge).await;
    // The rogue answers every request id it can guess, over and over.
    let tx = rogue.session.tx.clone();
    let forging = tokio::spawn(async move {
        loop {
            for req in 1..=3000u64 {
                let forged = Msg::WriteResult(WriteResult {
                    req,
                    status: Quality::Good,
                    message: "forged".into(),
                });
                if !tx.send(forged).await {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // edge1 freezes: it cannot answer, so only a forged answer could say Good.
    edge.signal("STOP");
    let started = Instant::now();
    let (code, out, _) = p.run(&[
        "client",
        "write",
        "--config",
        &p.cfg("op"),
        "edge1/sim/setpoint1",
        "5",
    ]);
    println!(
        "write to a frozen edge under forged results: {} in {} ms",
        out.trim(),
        started.elapsed().as_millis()
    );
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("\"status\":\"Good\""), "{out}");
    hub.wait_stderr(
        T,
        "refused a write result for a request sent to another node",
    );
    forging.abort();
    edge.signal("CONT");
    w.drain();
    w.expect_json(T, "edge1 back", |v| {
        v["quality"] == "Good" && v["point"] == "edge1/sim/sine1"
    });

    // A write pending on an edge that is killed is answered at once, not at its timeout.
    edge.signal("STOP");
    let cfg = p.cfg("op");
    let writer = std::thread::spawn(move || {
        let out = std::process::Command::new(BIN)
            .args([
                "client",
                "write",
                "--config",
                &cfg,
                "edge1/sim/setpoint1",
                "6",
            ])
            .output()
            .expect("runs");
        (
            Instant::now(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    edge.kill9();
    let (answered, out) = writer.join().expect("writer");
    let took = answered.saturating_duration_since(killed);
    println!(
        "write pending on an edge killed with -9: answered {} ms after the kill: {}",
        took.as_millis(),
        out.trim()
    );
    assert!(out.contains("BadNoCommunication"), "{out}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let audit = std::fs::read_to_string(p.path("hub-data/audit.jsonl")).expect("audit");
    assert!(
        !audit
            .lines()
            .any(|l| l.contains("\"event\":\"write\"") && l.contains("\"status\":\"Good\"")),
        "no write was audited Good:\n{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_time_past_the_year_9999_is_refused_and_every_consumer_keeps_working() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("rogue"), Node::client("hmi", "[]")],
    );
    let _hub = p.start_hub();
    p.write_client("rogue");
    p.write_client("hmi");
    let birth = |ts: u64| {
        Msg::Birth(Birth {
            seq: 1,
            part: 0,
            last: true,
            points: vec![PointDef {
                id: 0,
                name: "rogue/x".into(),
                dtype: DataType::Float,
                unit: None,
                description: None,
                writable: false,
            }],
            states: vec![Update {
                id: 0,
                value: pointhub_schemas::Value::Float(1.0),
                quality: Quality::Good,
                source_ts: Timestamp(ts),
                hub_ts: Timestamp::NEVER,
                flags: 0,
            }],
        })
    };
    let mut rogue = dial(&p, "rogue", Role::Edge).await;
    rogue.session.tx.send(birth(Timestamp::MAX.0 + 1)).await;
    let errs = errors_until_end(&mut rogue).await;
    assert!(
        errs.iter()
            .any(|e| e.code == ErrorCode::Malformed && e.message.contains("year 9999")),
        "{errs:?}"
    );
    // The last instant that prints is taken, and every consumer prints it.
    let rogue = dial(&p, "rogue", Role::Edge).await;
    rogue.session.tx.send(birth(Timestamp::MAX.0)).await;
    let deadline = Instant::now() + T;
    loop {
        let (code, out, err) = p.run(&["client", "get", "--config", &p.cfg("hmi"), "**"]);
        assert_eq!(code, 0, "client get: {err}");
        if out.contains("9999-12-31T23:59:59.999999Z") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut ws = json_ws(&p, &p.api_token("script", &[])).await;
    ws.send(WsMsg::Text(
        r#"{"op":"subscribe","patterns":["**"]}"#.into(),
    ))
    .await
    .expect("send");
    let mut got = false;
    while !got {
        match tokio::time::timeout(T, ws.next()).await.expect("answers") {
            Some(Ok(WsMsg::Text(t))) => got = t.contains("9999-12-31"),
            Some(Ok(WsMsg::Ping(_) | WsMsg::Pong(_))) => {}
            other => panic!("the JSON session ended: {other:?}"),
        }
    }
    drop(rogue);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_subscribing_in_a_loop_does_not_stall_a_watched_point() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::edge("bulk"),
            Node::client("viewer", "[]"),
            Node::client("hmi", "[]"),
        ],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    p.write_edge("bulk", 5_000, 0.5);
    p.write_client("viewer");
    p.write_client("hmi");
    let _edge = p.start_edge("edge1");
    let _bulk = p.start_edge("bulk");
    hub.wait_stderr(T, "birth complete points=5006");
    let meter = GapMeter::start(p.watch("hmi", "edge1/sim/sine1"), "edge1/sim/sine1");
    let rss0 = hub.rss_kib();
    let peak = PeakRss::start(hub.pid());
    let patterns = |round: usize| -> Vec<String> {
        (0..200).map(|i| format!("bulk/*/s{round}x{i}")).collect()
    };
    // Distinct patterns pile up no more: the second subscribe passes the cap and ends the session.
    let mut viewer = dial(&p, "viewer", Role::Client).await;
    for round in 0..50 {
        if !viewer
            .session
            .tx
            .send(Msg::Subscribe(Subscribe {
                patterns: patterns(round),
                history: false,
            }))
            .await
        {
            break;
        }
    }
    let errs = errors_until_end(&mut viewer).await;
    assert!(
        errs.iter().any(|e| e.code == ErrorCode::LimitExceeded),
        "{errs:?}"
    );
    // The same patterns again and again: each a scan of 5,000 points, throttled.
    let viewer = dial(&p, "viewer", Role::Client).await;
    let started = Instant::now();
    for _ in 0..60 {
        viewer
            .session
            .tx
            .send(Msg::Subscribe(Subscribe {
                patterns: patterns(0),
                history: false,
            }))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (worst, lines) = meter.finish();
    let peak_kib = peak.finish();
    println!(
        "subscribe loop over 5,000 points, 200 patterns a subscribe: watched 10 Hz point's worst gap {worst} ms ({lines} updates in {:.1} s); hub RSS {rss0} KiB -> peak {peak_kib} KiB",
        started.elapsed().as_secs_f64()
    );
    let scanned = hub
        .stderr_text()
        .lines()
        .filter(|l| l.contains("node=viewer") && l.contains("subscribe patterns"))
        .count();
    println!("  subscribes the hub took up from the viewer in that time: {scanned} of 62 sent (throttled)");
    assert!(lines > 20, "{lines}");
    assert!(worst < 2000, "the watched point stalled for {worst} ms");
    assert!(scanned < 60, "subscribes were not slowed: {scanned}");
}

/// Adds a console user with `extra` limits; returns its password.
fn add_limited_user(p: &Plant, name: &str, extra: &[&str]) -> String {
    let cfg = p.cfg("hub");
    let mut args = vec!["hub", "users", "add", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--config", &cfg]);
    let (code, out, err) = p.run(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("password")
        .to_string()
}

/// Runs the independent restricted-user check (Python) as `user`; `extra` adds its flags.
fn restricted_check(p: &Plant, user: &str, password: &str, extra: &[&str]) {
    let base = format!("https://{}", p.hub_addr);
    let mut args = vec![
        "--base",
        &base,
        "--user",
        user,
        "--password",
        password,
        "--allowed",
        "plant2/",
        "--node",
        "plant2",
    ];
    args.extend_from_slice(extra);
    let out = std::process::Command::new(peers_python())
        .arg(peer_script("restricted_check.py"))
        .args(&args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{text}");
    assert!(out.status.success(), "{text}");
}

#[test]
fn a_user_limited_to_a_node_sees_only_its_points_over_the_websocket() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::edge("plant1"), Node::edge("plant2")]);
    let hub = p.start_hub();
    p.write_edge("plant1", 2, 5.0);
    p.write_edge("plant2", 2, 5.0);
    let _e1 = p.start_edge("plant1");
    let _e2 = p.start_edge("plant2");
    let password = add_limited_user(&p, "ops2", &["--node", "plant2"]);
    hub.wait_stderr(T, "node=plant1");
    hub.wait_stderr(T, "node=plant2");
    std::thread::sleep(Duration::from_millis(500));
    restricted_check(&p, "ops2", &password, &["--ws"]);
    // A user limited by namespace alone sees only the nodes its patterns reach.
    let password = add_limited_user(&p, "ns2", &["--namespace", "plant2/**"]);
    restricted_check(&p, "ns2", &password, &[]);
}

/// One login over its own TLS connection; the HTTP status.
async fn login_once(p: &Plant, password: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = web_tls(p).await;
    let body = format!("name=admin&password={password}");
    let req = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        p.hub_addr,
        body.len()
    );
    if tls.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = vec![0u8; 64];
    let n = tls.read(&mut head).await.unwrap_or(0);
    String::from_utf8_lossy(&head[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_login_flood_leaves_a_watching_client_served_and_the_hub_small() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    p.write_client("hmi");
    let _edge = p.start_edge("edge1");
    let meter = GapMeter::start(p.watch("hmi", "edge1/sim/sine1"), "edge1/sim/sine1");
    let rss0 = hub.rss_kib();
    let peak = PeakRss::start(hub.pid());
    let started = Instant::now();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let mut rounds = Vec::new();
    for _ in 0..160 {
        let (p2, s) = (&p, statuses.clone());
        rounds.push(async move {
            let st = login_once(p2, "wrong").await;
            s.lock().expect("lock").push(st);
        });
    }
    futures_util::future::join_all(rounds).await;
    let flood = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak_kib = peak.finish();
    let (worst, lines) = meter.finish();
    let statuses = statuses.lock().expect("lock").clone();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    println!(
        "160 parallel wrong logins in {:.1} s ({refused} told 429): watched point's worst gap {worst} ms, hub RSS {rss0} KiB -> peak {peak_kib} KiB",
        flood.as_secs_f64()
    );
    assert!(lines > 5, "{lines}");
    assert!(worst < 2000, "the watching client waited {worst} ms");
    assert!(
        peak_kib < rss0 + 200 * 1024,
        "hub memory {rss0} -> {peak_kib} KiB"
    );
    // Every login was answered: a redirect to the login page (wrong password), 429 (too
    // many at once), or the connection closed (0).
    assert!(
        statuses.iter().all(|&s| s == 303 || s == 429 || s == 0),
        "{statuses:?}"
    );
    assert!(statuses.contains(&303), "some were checked: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_session_that_never_reads_costs_the_hub_little_memory() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("bulk"), Node::client("hmi", "[]")],
    );
    let mut hub = p.start_hub();
    p.write_edge("bulk", 200_000, 0.05);
    p.write_client("hmi");
    let _bulk = p.start_edge("bulk");
    hub.wait_stderr(Duration::from_secs(60), "birth complete");
    let token = p.api_token("script", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = hub.rss_kib();
    let peak = PeakRss::start(hub.pid());
    // A tiny receive buffer, a subscribe to everything, then never a read.
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock
        .connect(p.hub_addr.parse().expect("addr"))
        .await
        .expect("connect");
    let cfg = link_cfg(&p, "hmi", Role::Client);
    let anon = pointhub_link::tls::anonymous_client_config(&cfg.verify).expect("tls config");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(anon)
        .connect(name, tcp)
        .await
        .expect("tls");
    let url = format!("wss://{}/api/v1/ws?token={token}", p.hub_addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("websocket");
    ws.send(WsMsg::Text(
        r#"{"op":"subscribe","patterns":["**"]}"#.into(),
    ))
    .await
    .expect("send");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let peak_kib = peak.finish();
    println!(
        "a JSON session that never reads, 200,000 points: hub RSS {rss0} KiB -> peak {peak_kib} KiB (+{} KiB)",
        peak_kib.saturating_sub(rss0)
    );
    // Before, the whole snapshot became JSON values at once: ≈ 1.2 KiB a point.
    assert!(
        peak_kib < rss0 + 120 * 1024,
        "hub memory {rss0} -> {peak_kib} KiB"
    );
    drop(ws);
    hub.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_invalid_json_close_their_session_and_leave_nothing_behind() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    p.write_client("hmi");
    let _edge = p.start_edge("edge1");
    let token = p.api_token("script", &[]);
    let meter = GapMeter::start(p.watch("hmi", "edge1/sim/sine1"), "edge1/sim/sine1");
    let rss0 = hub.rss_kib();
    let peak = PeakRss::start(hub.pid());
    // More bursts than the per-token session limit: a session left behind would use up a slot.
    for round in 0..10 {
        let mut ws = json_ws(&p, &token).await;
        for _ in 0..500 {
            if ws.send(WsMsg::Text("{not json".into())).await.is_err() {
                break;
            }
        }
        let mut closed_with = String::new();
        loop {
            match tokio::time::timeout(T, ws.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the hub never closed the session"))
            {
                Some(Ok(WsMsg::Text(t))) => closed_with = t.to_string(),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break,
            }
        }
        // The hub closed it (its last words may be lost when it closes on a peer still
        // sending: TCP resets a connection closed with unread data).
        if round == 0 {
            println!("invalid JSON burst: closed; last message seen {closed_with}");
        }
    }
    let mut ws = json_ws(&p, &token).await;
    ws.send(WsMsg::Text(
        r#"{"op":"subscribe","patterns":["edge1/**"]}"#.into(),
    ))
    .await
    .expect("send");
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("answers") {
            Some(Ok(WsMsg::Text(t))) if t.contains("\"updates\"") => break,
            Some(Ok(_)) => {}
            other => panic!("a fresh session after the bursts: {other:?}"),
        }
    }
    let (worst, _) = meter.finish();
    let peak_kib = peak.finish();
    println!("invalid JSON, 10 bursts of 500: a watching client's worst gap {worst} ms; hub RSS {rss0} KiB -> peak {peak_kib} KiB");
    assert!(worst < 2000, "{worst} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_hub_that_forges_its_chain_is_refused_without_cutting_its_parent() {
    // rogue (a child hub of dmz) → dmz → cloud. rogue claims cloud below it.
    let mut dmz = Plant::new();
    let mut cloud = Plant::new();
    dmz.write_hub_named("dmz", "127.0.0.1:0", &[], "");
    let dmz_fp = dmz.hub_fingerprint();
    cloud.write_hub_named("cloud", "127.0.0.1:0", &[Node::hub("dmz", &dmz_fp)], "");
    let cloud_hub = cloud.start_hub();
    let rogue_fp = dmz.key("rogue");
    let upstream = format!(
        "[[upstream]]\nurls = [\"wss://{}\"]\nfingerprint = \"{}\"\nheartbeat_ms = 250\ntimeout_ms = 750\nbackoff_max_ms = 500\n",
        cloud.hub_addr, cloud.hub_fp
    );
    dmz.write_hub_named(
        "dmz",
        "127.0.0.1:0",
        &[Node::hub("rogue", &rogue_fp)],
        &upstream,
    );
    let dmz_hub = dmz.start_hub();
    dmz_hub.wait_stderr(T, "connected upstream");
    dmz.write_client("rogue");
    let mut rogue = dial(&dmz, "rogue", Role::Hub).await;
    rogue
        .session
        .tx
        .send(Msg::Chain(pointhub_schemas::Chain {
            hubs: vec!["rogue".into(), "cloud".into()],
        }))
        .await;
    let mut told_above = None;
    let mut errs = Vec::new();
    loop {
        match tokio::time::timeout(T, rogue.session.rx.recv())
            .await
            .expect("ends")
        {
            Some(Msg::Chain(c)) => told_above = Some(c.hubs),
            Some(Msg::Error(e)) => errs.push(e),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(
        told_above,
        Some(vec!["dmz".to_string(), "cloud".to_string()])
    );
    assert!(
        errs.iter()
            .any(|e| e.code == ErrorCode::Conflict && e.message.contains("loop in the hub chain")),
        "{errs:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = cloud_hub
        .stderr_text()
        .lines()
        .filter(|l| l.contains("node connected"))
        .count();
    println!("forged chain: the forger refused; dmz connected to cloud {accepted} time(s)");
    assert_eq!(accepted, 1, "{}", cloud_hub.stderr_text());
    assert!(!cloud_hub.stderr_text().contains("loop in the hub chain"));
}

#[test]
fn an_empty_or_damaged_store_stops_the_hub_with_advice() {
    let mut p = Plant::new();
    p.write_hub("127.0.0.1:0", &[Node::edge("edge1")]);
    let mut hub = p.start_hub();
    hub.wait_stderr(T, "admin socket");
    hub.kill9();
    let store = p.path("hub-data/hub.redb");
    let good = std::fs::read(&store).expect("store");
    std::fs::write(&store, b"").expect("truncate");
    let (code, _, err) = p.run(&["hub", "--config", &p.cfg("hub")]);
    assert_ne!(code, 0);
    assert!(err.contains("empty") && err.contains("backup"), "{err}");
    let mut bad = good.clone();
    for (i, b) in bad.iter_mut().enumerate().skip(512) {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    std::fs::write(&store, &bad).expect("damage");
    let (code, _, err) = p.run(&["hub", "--config", &p.cfg("hub")]);
    assert_ne!(code, 0);
    assert!(
        !err.contains("panicked") || err.contains("damaged"),
        "a crash without advice: {err}"
    );
    assert!(err.contains("backup"), "{err}");
    std::fs::write(&store, &good).expect("restore");
    let _hub = p.start_hub();
}

/// One HTTP/1.1 request over its own TLS connection: (status, head, body).
async fn http(
    p: &Plant,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = web_tls(p).await;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", p.hub_addr);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match body {
        Some(b) => req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len())),
        None => req.push_str("Content-Length: 0\r\n\r\n"),
    }
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Adds a console admin; returns its password.
fn add_admin(p: &Plant, name: &str) -> String {
    add_limited_user(p, name, &["--role", "admin"])
}

/// Logs in; returns the `Cookie` header value.
async fn login_cookie(p: &Plant, name: &str, password: &str) -> String {
    let body = format!("name={name}&password={password}");
    let (status, head, _) = http(
        p,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&body),
    )
    .await;
    assert_eq!(status, 303, "{head}");
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().split(';').next().unwrap_or("").to_string())
        })
        .expect("a session cookie")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_from_another_origin_or_without_the_csrf_token_are_refused() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let _hub = p.start_hub();
    p.write_client("hmi");
    let password = add_admin(&p, "op");
    let cookie = login_cookie(&p, "op", &password).await;
    let (status, head, me) = http(&p, "GET", "/api/v1/me", &[("Cookie", &cookie)], None).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'self'"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{head}"
    );
    let me: serde_json::Value = serde_json::from_str(&me).expect("json");
    let csrf = me["csrf"].as_str().expect("a CSRF token").to_string();
    let fp = fingerprint(&p, "edge1");
    let revoke = format!("/api/v1/keys/{fp}/revoke");
    let json = ("Content-Type", "application/json");
    // A page on another port of the same host (same site, another origin).
    let other = format!("https://127.0.0.1:{}", free_port());
    let (status, _, body) = http(
        &p,
        "POST",
        &revoke,
        &[
            ("Cookie", &cookie),
            ("Origin", &other),
            ("x-csrf-token", &csrf),
            json,
        ],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // No CSRF token: what a forged form or a script of another page would send.
    let (status, _, body) = http(
        &p,
        "POST",
        &revoke,
        &[("Cookie", &cookie), json],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    // No body.
    let (status, _, body) = http(
        &p,
        "POST",
        &revoke,
        &[("Cookie", &cookie), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert!((400..500).contains(&status), "{status} {body}");
    // The JSON WebSocket from another origin.
    let (status, _, _) = http(
        &p,
        "GET",
        "/api/v1/ws",
        &[
            ("Cookie", &cookie),
            ("Origin", &other),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (code, out, _) = p.run(&["hub", "keys", "list", "--config", &p.cfg("hub")]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("\"state\":\"revoked\""),
        "nothing was revoked: {out}"
    );
    // The console's own request: its origin, its token, a body.
    let own = format!("https://{}", p.hub_addr);
    let (status, _, body) = http(
        &p,
        "POST",
        &revoke,
        &[
            ("Cookie", &cookie),
            ("Origin", &own),
            ("x-csrf-token", &csrf),
            json,
        ],
        Some(r#"{"reason":"test"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_api_token_or_resetting_a_password_ends_their_sessions() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    p.write_client("hmi");
    let _edge = p.start_edge("edge1");
    // The first start's password is in an owner-only file, not in the log.
    let pw_file = p.path("hub-data/admin-password.txt");
    let first = std::fs::read_to_string(&pw_file).expect("password file");
    assert!(
        !hub.stderr_text().contains(first.trim()),
        "the password is in the log"
    );
    use std::os::unix::fs::PermissionsExt;
    for (f, mode) in [
        (pw_file.clone(), 0o600),
        (p.path("hub-data/hub.redb"), 0o600),
        (p.path("hub-data"), 0o700),
    ] {
        let m = std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(m, mode, "{}", f.display());
    }
    let token = p.api_token("script", &[]);
    let mut ws = json_ws(&p, &token).await;
    ws.send(WsMsg::Text(
        r#"{"op":"subscribe","patterns":["edge1/**"]}"#.into(),
    ))
    .await
    .expect("send");
    let (_, list, _) = p.run(&["hub", "api-tokens", "list", "--config", &p.cfg("hub")]);
    let id = serde_json::from_str::<serde_json::Value>(list.lines().next().expect("a token"))
        .expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let started = Instant::now();
    let (code, _, err) = p.run(&[
        "hub",
        "api-tokens",
        "revoke",
        &id,
        "--config",
        &p.cfg("hub"),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut why = String::new();
    loop {
        match tokio::time::timeout(T, ws.next()).await.expect("ends") {
            Some(Ok(WsMsg::Text(t))) if t.contains("revoked") => why = t.to_string(),
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
    println!(
        "API token revoked: its JSON session ended in {} ms ({why})",
        started.elapsed().as_millis()
    );
    assert!(!why.is_empty());
    let (status, _, _) = http(
        &p,
        "GET",
        "/api/v1/points",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(status, 401);
    // A password reset logs the old sessions out.
    let password = add_admin(&p, "op");
    let cookie = login_cookie(&p, "op", &password).await;
    let (status, _, _) = http(&p, "GET", "/api/v1/me", &[("Cookie", &cookie)], None).await;
    assert_eq!(status, 200);
    add_admin(&p, "op");
    let (status, _, _) = http(&p, "GET", "/api/v1/me", &[("Cookie", &cookie)], None).await;
    assert_eq!(status, 401, "a reset password's old session still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_address_lock_out_nobody() {
    let mut p = Plant::new();
    p.write_hub_named(
        "hub1",
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("hmi", "[]")],
        "[limits]\nmax_unauthenticated = 100\n",
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 2, 10.0);
    p.write_client("hmi");
    let _edge = p.start_edge("edge1");
    let meter = GapMeter::start(p.watch("hmi", "edge1/sim/sine1"), "edge1/sim/sine1");
    let rss0 = hub.rss_kib();
    let peak = PeakRss::start(hub.pid());
    // 150 connections from 127.0.0.2 that never start TLS: more than the hub's pool.
    let mut idle = Vec::new();
    for _ in 0..150 {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind("127.0.0.2:0".parse().expect("addr")).expect("bind");
        idle.push(
            s.connect(p.hub_addr.parse().expect("addr"))
                .await
                .expect("connect"),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let (code, out, err) = p.run(&["client", "get", "--config", &p.cfg("hmi"), "edge1/**"]);
    println!(
        "with 150 idle connections held: a client's get took {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("edge1/sim/sine1"), "{out}");
    let (status, _, _) = http(&p, "GET", "/login", &[], None).await;
    assert_eq!(status, 200, "the console's login page");
    let (worst, _) = meter.finish();
    let peak_kib = peak.finish();
    println!("  a watching client's worst gap meanwhile {worst} ms; hub RSS {rss0} KiB -> peak {peak_kib} KiB");
    assert!(worst < 2000, "{worst} ms");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_rebirth_requests_gets_a_snapshot_every_two_seconds_at_most() {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[Node::edge("edge1"), Node::client("viewer", "[]")],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", 50, 1.0);
    p.write_client("viewer");
    let _edge = p.start_edge("edge1");
    hub.wait_stderr(T, "birth complete");
    let mut viewer = dial(&p, "viewer", Role::Client).await;
    viewer
        .session
        .tx
        .send(Msg::Subscribe(Subscribe {
            patterns: vec!["edge1/**".into()],
            history: false,
        }))
        .await;
    loop {
        match tokio::time::timeout(T, viewer.session.rx.recv())
            .await
            .expect("snapshot")
        {
            Some(Msg::SnapshotDone(_)) => break,
            Some(_) => {}
            None => panic!("session ended"),
        }
    }
    // 20 requests for a fresh snapshot at once (3 bytes each on the wire).
    let started = Instant::now();
    for i in 0..20 {
        viewer
            .session
            .tx
            .send(Msg::Rebirth(pointhub_schemas::Rebirth {
                reason: format!("probe {i}"),
            }))
            .await;
    }
    let mut snapshots = 0;
    let window = Duration::from_secs(3);
    while started.elapsed() < window {
        match tokio::time::timeout(
            window.saturating_sub(started.elapsed()),
            viewer.session.rx.recv(),
        )
        .await
        {
            Ok(Some(Msg::SnapshotDone(_))) => snapshots += 1,
            Ok(Some(_)) => {}
            Ok(None) => panic!("session ended"),
            Err(_) => break,
        }
    }
    println!("20 rebirth requests at once: {snapshots} snapshots in 3 s");
    assert!((1..=3).contains(&snapshots), "{snapshots}");
    hub.wait_stderr(T, "asking for fresh snapshots faster than");
}
