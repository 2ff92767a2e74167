//! Bad input and slow peers: each ends or slows only its own session.

use crate::harness::*;
use pointhub_client::ClientConfig;
use pointhub_link::{self as link, Link};
use pointhub_schemas::{ErrorCode, Msg, Role, Subscribe};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(20);

fn plant(signals: u32, rate: f64) -> (Plant, Proc) {
    let mut p = Plant::new();
    p.write_hub(
        "127.0.0.1:0",
        &[
            Node::edge("edge1"),
            Node::edge("rogue"),
            Node::client("hmi", "[]"),
            Node::client("lazy", "[]"),
        ],
    );
    let hub = p.start_hub();
    p.write_edge("edge1", signals, rate);
    for c in ["rogue", "hmi", "lazy"] {
        p.write_client(c);
    }
    (p, hub)
}

fn link_cfg(p: &Plant, name: &str, role: Role) -> pointhub_link::LinkConfig {
    let cfg = ClientConfig::load(&p.path(&format!("{name}.toml"))).expect("config");
    cfg.hub.link_config(role, name).expect("link config")
}

async fn dial(p: &Plant, name: &str, role: Role, token: &CancellationToken) -> Link {
    let cfg = link_cfg(p, name, role);
    link::dial(&cfg, &cfg.hubs[0], token)
        .await
        .expect("admitted")
}

/// Waits for the session to end; returns the error the hub sent, if any.
async fn ends_with_error(link: &mut Link) -> Option<pointhub_schemas::ErrorMsg> {
    let mut err = None;
    loop {
        match tokio::time::timeout(T, link.session.rx.recv())
            .await
            .expect("session ends in time")
        {
            Some(Msg::Error(e)) => err = Some(e),
            Some(_) => {}
            None => return err,
        }
    }
}

fn fresh_good_line(w: &Proc) {
    w.drain();
    w.expect_json(T, "a fresh Good update", |v| {
        v["quality"] == "Good" && v["point"].as_str().is_some_and(|p| p.starts_with("edge1/"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_end_that_session_alone() {
    let (p, hub) = plant(4, 10.0);
    let _edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    fresh_good_line(&w);
    let token = CancellationToken::new();

    // Garbage bytes.
    let mut rogue = dial(&p, "rogue", Role::Edge, &token).await;
    rogue
        .session
        .tx
        .send_frame(bytes::Bytes::from_static(b"\xff\xff\xff\xff\xffgarbage"))
        .await;
    let e = ends_with_error(&mut rogue).await.expect("an error message");
    assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");
    assert!(e.message.contains("does not decode"), "{e:?}");
    hub.wait_stderr(T, "bad frame from peer");

    // A truncated valid message.
    let mut rogue = dial(&p, "rogue", Role::Edge, &token).await;
    let frame = pointhub_schemas::encode(&Msg::Subscribe(Subscribe {
        patterns: vec!["a/**".into()],
        history: false,
    }));
    rogue
        .session
        .tx
        .send_frame(bytes::Bytes::copy_from_slice(&frame[..frame.len() - 3]))
        .await;
    assert!(ends_with_error(&mut rogue).await.is_some());

    // A frame over the hub's 4 MiB limit.
    let mut rogue = dial(&p, "rogue", Role::Edge, &token).await;
    rogue
        .session
        .tx
        .send_frame(bytes::Bytes::from(vec![0u8; 5 << 20]))
        .await;
    let _ = ends_with_error(&mut rogue).await;
    assert!(rogue.session.close_reason().len() > 3);

    // A client that tries to publish.
    let mut rogue = dial(&p, "lazy", Role::Client, &token).await;
    rogue
        .session
        .tx
        .send(Msg::Data(pointhub_schemas::Data {
            seq: 1,
            updates: vec![],
        }))
        .await;
    let e = ends_with_error(&mut rogue).await.expect("an error message");
    assert_eq!(e.code, ErrorCode::AccessDenied, "{e:?}");

    // An edge that asks to be a client: its key is approved as an edge.
    let cfg = link_cfg(&p, "rogue", Role::Client);
    match link::dial(&cfg, &cfg.hubs[0], &token).await {
        Err(e) => assert!(e.to_string().contains("approved as edge"), "{e}"),
        Ok(_) => panic!("an edge key was admitted as a client"),
    }

    // The hub and the other sessions carry on.
    fresh_good_line(&w);
    assert!(hub.stderr_text().contains("node connected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_slows_nobody_and_hub_memory_stays_bounded() {
    let (p, mut hub) = plant(500, 20.0); // 10,000 updates/s
    let _edge = p.start_edge("edge1");
    let w = p.watch("hmi", "**");
    fresh_good_line(&w);

    // The lazy client: a tiny receive buffer, subscribes to everything, then never reads.
    let cfg = link_cfg(&p, "lazy", Role::Client);
    let hub_addr = &cfg.hubs[0];
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let tcp = sock
        .connect(
            format!("{}:{}", hub_addr.host, hub_addr.port)
                .parse()
                .expect("addr"),
        )
        .await
        .expect("connect");
    // Below the node link: TLS, WebSocket, hello and subscribe by hand, then the socket is
    // never read again, not even by a reader task.
    let tls_cfg = pointhub_link::tls::client_config(&cfg.identity, &cfg.verify).expect("tls");
    let name = rustls::pki_types::ServerName::try_from(hub_addr.host.clone()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(tls_cfg)
        .connect(name, tcp)
        .await
        .expect("tls");
    let (mut lazy, _) = tokio_tungstenite::client_async(hub_addr.to_string(), tls)
        .await
        .expect("websocket");
    use futures_util::SinkExt;
    let hello = Msg::Hello(pointhub_schemas::Hello {
        major: pointhub_schemas::PROTOCOL_MAJOR,
        minor: pointhub_schemas::PROTOCOL_MINOR,
        role: Role::Client,
        name: "lazy".into(),
        software: "test".into(),
    });
    let subscribe = Msg::Subscribe(Subscribe {
        patterns: vec!["**".into()],
        history: false,
    });
    for m in [hello, subscribe] {
        let frame =
            tokio_tungstenite::tungstenite::Message::Binary(pointhub_schemas::encode(&m).into());
        lazy.send(frame).await.expect("send");
    }
    // It stays alive (it pings, as any live node does) but never reads what the hub sends.
    use futures_util::StreamExt;
    let (mut sink, unread) = lazy.split();
    let pinger = tokio::spawn(async move {
        loop {
            let ping = Msg::Ping(pointhub_schemas::Ping {
                t: pointhub_schemas::Timestamp::now(),
            });
            let frame = tokio_tungstenite::tungstenite::Message::Binary(
                pointhub_schemas::encode(&ping).into(),
            );
            if sink.send(frame).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss0 = hub.rss_kib();
    // For 6 s, the fast client must keep getting fresh data, and the lazy one must be conflated.
    let start = std::time::Instant::now();
    let mut lines = 0u64;
    let mut conflated = 0u64;
    let mut queued = 0u64;
    let mut worst_age_ms = 0i64;
    w.drain();
    // At least 6 s, and until the lazy one is being conflated (30 s at most).
    while start.elapsed() < Duration::from_secs(6)
        || (conflated == 0 && start.elapsed() < Duration::from_secs(30))
    {
        let Some(l) = w.next_line(Duration::from_secs(2)) else {
            panic!("fast client starved")
        };
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        if v["point"] == "$sys/lazy/queue" {
            queued = v["value"].as_u64().unwrap_or(0);
        }
        if v["point"] == "$sys/lazy/conflated" {
            conflated = v["value"].as_u64().unwrap_or(0);
        }
        if lines % 1000 == 0 && v["point"].as_str().is_some_and(|p| p.starts_with("edge1/")) {
            let src: std::time::SystemTime =
                humantime::parse_rfc3339(v["source_ts"].as_str().expect("ts")).expect("rfc3339");
            let age = std::time::SystemTime::now()
                .duration_since(src)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            worst_age_ms = worst_age_ms.max(age);
        }
    }
    let rss1 = hub.rss_kib();
    let rate = lines as f64 / start.elapsed().as_secs_f64();
    println!(
        "slow subscriber: fast client {rate:.0} updates/s, worst age {worst_age_ms} ms; lazy conflated {conflated}, queued {queued}; hub RSS {rss0} -> {rss1} KiB"
    );
    assert!(conflated > 0, "the lazy subscriber was conflated");
    // Generous bounds for a loaded 2-core machine; a subscriber that blocked the hub would
    // stall the fast client outright.
    assert!(rate > 2500.0, "fast client kept up: {rate:.0}/s");
    assert!(
        worst_age_ms < 5000,
        "fast client's data stayed fresh: {worst_age_ms} ms"
    );
    assert!(
        rss1 < rss0 + 64 * 1024,
        "hub memory bounded: {rss0} -> {rss1} KiB"
    );
    pinger.abort();
    drop(unread);
    hub.kill9();
}

#[derive(Default)]
struct Served {
    lines: u64,
    worst_age_ms: i64,
}

/// Reads a watch's lines on a thread and keeps the worst age (now − source_ts) seen.
fn measure(
    w: Proc,
) -> (
    std::sync::Arc<std::sync::Mutex<Served>>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<Proc>,
) {
    let stats = std::sync::Arc::new(std::sync::Mutex::new(Served::default()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, st) = (stats.clone(), stop.clone());
    let h = std::thread::spawn(move || {
        while !st.load(std::sync::atomic::Ordering::Relaxed) {
            let Some(l) = w.next_line(Duration::from_millis(200)) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
                continue;
            };
            let Some(ts) = v["source_ts"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
            else {
                continue;
            };
            let age = std::time::SystemTime::now()
                .duration_since(ts)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let mut g = s.lock().expect("lock");
            g.lines += 1;
            g.worst_age_ms = g.worst_age_ms.max(age);
        }
        w
    });
    (stats, stop, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_a_flood_and_idle_connections_leave_a_legit_client_served() {
    let (p, hub) = plant(20, 20.0);
    let _edge = p.start_edge("edge1");
    let w = p.watch("hmi", "edge1/**");
    fresh_good_line(&w);
    let (stats, stop, reader) = measure(w);
    let token = CancellationToken::new();
    let cfg = link_cfg(&p, "rogue", Role::Edge);
    let hub_addr = format!("{}:{}", cfg.hubs[0].host, cfg.hubs[0].port);

    // Hundreds of idle connections: 300 that never start TLS, 100 that finish TLS without a key
    // and never send a request.
    let mut idle_tcp = Vec::new();
    for _ in 0..300 {
        idle_tcp.push(std::net::TcpStream::connect(&hub_addr).expect("connect"));
    }
    let anon = pointhub_link::tls::anonymous_client_config(&cfg.verify).expect("tls config");
    let mut idle_tls = Vec::new();
    for _ in 0..100 {
        let tcp = tokio::net::TcpStream::connect(&hub_addr)
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        idle_tls.push(
            tokio_rustls::TlsConnector::from(anon.clone())
                .connect(name, tcp)
                .await
                .expect("tls"),
        );
    }

    // Random and truncated frames, each on a session of its own.
    let valid = pointhub_schemas::encode(&Msg::Subscribe(Subscribe {
        patterns: vec!["edge1/**".into()],
        history: false,
    }));
    for i in 0..60 {
        let mut rogue = link::dial(&cfg, &cfg.hubs[0], &token)
            .await
            .expect("admitted");
        let frame: Vec<u8> = if i % 2 == 0 {
            (0..fastrand::usize(1..2000))
                .map(|_| fastrand::u8(..))
                .collect()
        } else {
            valid[..fastrand::usize(0..valid.len())].to_vec()
        };
        rogue.session.tx.send_frame(bytes::Bytes::from(frame)).await;
        let _ = ends_with_error(&mut rogue).await;
    }

    // A flood: 50,000 pings as fast as one session can send them.
    let flood = link::dial(&cfg, &cfg.hubs[0], &token)
        .await
        .expect("admitted");
    let ping = bytes::Bytes::from(pointhub_schemas::encode(&Msg::Ping(
        pointhub_schemas::Ping {
            t: pointhub_schemas::Timestamp::now(),
        },
    )));
    let started = std::time::Instant::now();
    for _ in 0..50_000 {
        if !flood.session.tx.send_frame(ping.clone()).await {
            break;
        }
    }
    let flood_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let w = reader.join().expect("reader");
    let s = stats.lock().expect("lock");
    println!(
        "under attack: legit client got {} updates, worst age {} ms; flood of 50,000 frames took {flood_secs:.1} s",
        s.lines, s.worst_age_ms
    );
    assert!(
        s.lines > 100,
        "the legit client kept receiving: {}",
        s.lines
    );
    assert!(
        s.worst_age_ms < 1500,
        "with bounded delay: {} ms",
        s.worst_age_ms
    );
    drop(idle_tcp);
    drop(idle_tls);
    fresh_good_line(&w);
    assert!(hub.stderr_text().contains("bad frame from peer"));
}
