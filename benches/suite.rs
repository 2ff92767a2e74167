//! The benchmark suite: pointhub (TLS 1.3, WebSocket, mutual keys) against mosquitto and
//! nats-server on loopback, on the same workloads, in one run.
//!
//! `cargo bench --bench suite` runs everything and prints the tables; `-- --write-docs` also
//! writes them into docs/benchmarks.md; `-- --quick` is the seconds-long smoke run CI does.
//! `bash benches/run.sh` installs the peers and runs the full suite with `--write-docs`.
//!
//! Cases: 1 throughput 1→1; 2 fan-out 1→10 and 1→100; 3 latency at 10,000 updates/s to 1 and 10
//! clients; 4 time-to-know after kill -9 and SIGSTOP of an edge; 5 resync of 100,000 and
//! 1,000,000 points and hub memory per point; 6 idle sessions: hub memory per session and
//! time to admit them.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    missing_docs,
    unreachable_pub
)] // bench code: a failed expectation is the report

#[path = "../tests/e2e/harness.rs"]
mod harness;

use harness::*;
use pointhub_client::ClientConfig;
use pointhub_link::{self as link, Link};
use pointhub_schemas::{
    Birth, Data, DataType, Msg, PointDef, Quality, Role, Subscribe, Timestamp, Update, Value,
};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
struct Opts {
    runs: usize,
    secs: f64,
    quick: bool,
    /// `--pointhub-only`: skip mosquitto and nats-server (for profiling runs).
    no_peers: bool,
    /// `--runs N` was given.
    runs_given: bool,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn cpu_secs(pid: u32) -> f64 {
    cpu_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
fn cpu_of(stat: &str) -> f64 {
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        / 100.0
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_secs() -> f64 {
    cpu_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// median, min, max
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if s.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// The latency table's cells for one system from its runs (sorted latencies, and the share of
/// slow windows the machine had during the run, see `Probe`): p50, p99 with min–max, p999, max,
/// and the p99 over the steady runs (≤ 1 % slow windows) with how many there were.
fn latency_row(runs: &[(Vec<u64>, f64)]) -> (String, f64) {
    let at = |p: f64| -> Vec<f64> { runs.iter().map(|(l, _)| pct(l, p) / 1000.0).collect() };
    let ms = |x: f64| format!("{x:.3}");
    let p99 = at(0.99);
    let steady: Vec<f64> = runs
        .iter()
        .filter(|(_, slow)| *slow <= 1.0)
        .map(|(l, _)| pct(l, 0.99) / 1000.0)
        .collect();
    let row = format!(
        "{} | {} | {} | {} | {}",
        ms(stats(&at(0.5)).0),
        cell(&p99, ms),
        ms(stats(&at(0.999)).0),
        ms(stats(&at(1.0)).0),
        if steady.is_empty() {
            format!("– (0 of {})", runs.len())
        } else {
            format!("{} ({} of {})", cell(&steady, ms), steady.len(), runs.len())
        }
    );
    (row, stats(&p99).0)
}

fn cell(v: &[f64], f: fn(f64) -> String) -> String {
    let (m, lo, hi) = stats(v);
    format!("{} ({}–{})", f(m), f(lo), f(hi))
}

// ---------------------------------------------------------------- pointhub

struct Hub {
    plant: Plant,
    proc: Proc,
}

fn pointhub_hub(clients: usize) -> Hub {
    let mut p = Plant::new();
    let mut nodes = vec![Node::edge("bench")];
    for i in 0..clients.max(1) {
        nodes.push(Node::client(&format!("c{i}"), "[]"));
    }
    p.write_hub_named(
        "hub1",
        "127.0.0.1:0",
        &nodes,
        "[limits]\nmax_frames_per_sec = 10000000\nmax_sessions_per_key = 100000\nmax_unauthenticated = 20000\n",
    );
    // The default heartbeat (1 s, timeout 3 s) for realistic figures.
    let cfg = std::fs::read_to_string(p.path("hub.toml"))
        .unwrap_or_default()
        .replace(
            "interval_ms = 250\ntimeout_ms = 750",
            "interval_ms = 1000\ntimeout_ms = 3000",
        );
    std::fs::write(p.path("hub.toml"), cfg).expect("write");
    let proc = p.start_hub();
    p.write_client("bench"); // the in-process publisher dials with the edge key
    for i in 0..clients.max(1) {
        p.write_client(&format!("c{i}"));
    }
    for name in
        std::iter::once("bench".to_string()).chain((0..clients.max(1)).map(|i| format!("c{i}")))
    {
        let path = p.path(&format!("{name}.toml"));
        let t = std::fs::read_to_string(&path).unwrap_or_default().replace(
            "heartbeat_ms = 250\ntimeout_ms = 750",
            "heartbeat_ms = 1000\ntimeout_ms = 3000",
        );
        std::fs::write(path, t).expect("write");
    }
    Hub { plant: p, proc }
}

fn link_cfg(p: &Plant, name: &str, role: Role) -> pointhub_link::LinkConfig {
    let c = ClientConfig::load(&p.path(&format!("{name}.toml"))).expect("config");
    c.hub.link_config(role, name).expect("link")
}

async fn dial(p: &Plant, name: &str, role: Role) -> Link {
    let cfg = link_cfg(p, name, role);
    link::dial(&cfg, &cfg.hubs[0], &CancellationToken::new())
        .await
        .expect("dial")
}

fn defs(n: u32) -> Vec<PointDef> {
    (0..n)
        .map(|i| PointDef {
            id: i,
            name: format!("bench/p/{i}"),
            dtype: DataType::UInt,
            unit: None,
            description: None,
            writable: false,
        })
        .collect()
}

async fn birth(l: &Link, n: u32, seq: &mut u64) {
    let all = defs(n);
    let parts: Vec<&[PointDef]> = all.chunks(8192).collect();
    let k = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        *seq += 1;
        let states = part
            .iter()
            .map(|d| Update {
                id: d.id,
                value: Value::UInt(0),
                quality: Quality::Good,
                source_ts: Timestamp::now(),
                hub_ts: Timestamp::NEVER,
                flags: 0,
            })
            .collect();
        l.session
            .tx
            .send(Msg::Birth(Birth {
                seq: *seq,
                part: i as u32,
                last: i + 1 == k,
                points: part.to_vec(),
                states,
            }))
            .await;
    }
}

/// Latency split at the hub (µs): source → hub, hub → client; printed with BENCH_VERBOSE.
static SEGMENTS: std::sync::Mutex<Vec<(u64, u64, u64)>> = std::sync::Mutex::new(Vec::new());

/// A paced publisher: updates per second, and messages per second they go out in.
#[derive(Clone, Copy)]
struct Rate {
    updates: u64,
    messages: u64,
}

/// Updates per message and time between messages; `None` = as fast as possible, `full` updates
/// per message.
fn pace(rate: Option<Rate>, full: u32) -> (u32, Duration) {
    match rate {
        None => (full, Duration::ZERO),
        Some(Rate {
            updates: r,
            messages,
        }) => {
            let batch = r.div_ceil(messages.max(1)).max(1);
            (
                batch as u32,
                Duration::from_nanos(batch * 1_000_000_000 / r.max(1)),
            )
        }
    }
}

/// Runs `f` on a thread of its own with a single-threaded tokio runtime: the publisher and each
/// client get a thread, as the peers' publisher and readers do, so their links' reader and writer
/// tasks run where they are woken instead of waking another thread for every frame.
fn on_thread<T, F>(f: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f())
    })
}

async fn dial_cfg(cfg: &pointhub_link::LinkConfig) -> Link {
    link::dial(cfg, &cfg.hubs[0], &CancellationToken::new())
        .await
        .expect("dial")
}

/// A client on a thread of its own: subscribes to everything, says so on `ready`, then counts
/// updates and, if asked, records latencies (µs × 1000) while `recording`, until `stop`.
/// Returns the CPU seconds its thread used from `recording` on.
fn spawn_counter(
    cfg: pointhub_link::LinkConfig,
    count: Arc<AtomicU64>,
    lat: Option<Arc<std::sync::Mutex<Vec<u64>>>>,
    [recording, stop]: [Arc<AtomicBool>; 2],
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<f64> {
    on_thread(move || async move {
        let mut l = dial_cfg(&cfg).await;
        l.session
            .tx
            .send(Msg::Subscribe(Subscribe {
                patterns: vec!["bench/**".into()],
                history: false,
            }))
            .await;
        let _ = ready.send(());
        let mut lats = Vec::new();
        let mut segs = Vec::new();
        let mut cpu0 = None;
        while !stop.load(Ordering::Relaxed) {
            if cpu0.is_none() && recording.load(Ordering::Relaxed) {
                cpu0 = Some(thread_cpu_secs());
            }
            let m =
                match tokio::time::timeout(Duration::from_millis(100), l.session.rx.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => continue,
                };
            if let Msg::Data(d) = m {
                count.fetch_add(d.updates.len() as u64, Ordering::Relaxed);
                if lat.is_some() && recording.load(Ordering::Relaxed) {
                    let now = Timestamp::now();
                    for u in d.updates.iter().filter(|u| u.quality.is_good()) {
                        segs.push((
                            u.hub_ts.micros_since(u.source_ts),
                            now.micros_since(u.hub_ts),
                            u.source_ts.0,
                        ));
                        lats.push(now.micros_since(u.source_ts) * 1000);
                    }
                }
            }
        }
        if let Some(lat) = &lat {
            if let Ok(mut v) = lat.lock() {
                v.extend(lats);
            }
            if let Ok(mut v) = SEGMENTS.lock() {
                v.extend(segs);
            }
        }
        l.session.closed.cancel();
        cpu0.map(|c| thread_cpu_secs() - c).unwrap_or(0.0)
    })
}

/// What one run measured.
struct RunFigures {
    /// Deliveries per second, all clients together.
    delivered: f64,
    /// The slowest client's deliveries per second.
    slowest: f64,
    /// Latencies (µs × 1000), sorted; empty unless asked for.
    lat: Vec<u64>,
    /// CPU % of one core: the server, the publisher's (edge's) thread, and one subscriber's
    /// (client's) thread, mean over the subscribers.
    hub_cpu: f64,
    edge_cpu: f64,
    client_cpu: f64,
}

impl RunFigures {
    /// From what a run counted over `el` seconds: each client's deliveries/s, the latencies
    /// (sorted here), and the CPU seconds of the server, the publisher and each client.
    fn new(
        counts: &[f64],
        mut lat: Vec<u64>,
        el: f64,
        [server, edge]: [f64; 2],
        clients: &[f64],
    ) -> Self {
        lat.sort_unstable();
        let slowest = counts.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = clients.iter().sum::<f64>() / clients.len().max(1) as f64;
        RunFigures {
            delivered: counts.iter().sum(),
            slowest: if slowest.is_finite() { slowest } else { 0.0 },
            lat,
            hub_cpu: server / el * 100.0,
            edge_cpu: edge / el * 100.0,
            client_cpu: mean / el * 100.0,
        }
    }
}

/// Runs `clients` subscribers and one publisher of `points` points; `rate` None = as fast as
/// possible, Some(r) = r updates/s.
async fn pointhub_run(
    h: &Hub,
    points: u32,
    clients: usize,
    rate: Option<Rate>,
    secs: f64,
    latency: bool,
) -> RunFigures {
    // The publisher: dials and sends its birth, says so, waits for the go, then publishes.
    let (pub_ready_tx, pub_ready) = std::sync::mpsc::channel::<()>();
    let (go_tx, go) = std::sync::mpsc::channel::<Instant>();
    let pub_cfg = link_cfg(&h.plant, "bench", Role::Edge);
    let publisher = on_thread(move || async move {
        let mut pubr = dial_cfg(&pub_cfg).await;
        let mut seq = 0;
        birth(&pubr, points, &mut seq).await;
        let _ = pub_ready_tx.send(());
        // Wait for the go with the runtime running, so the birth goes out and pings are answered.
        let t0 = loop {
            match go.try_recv() {
                Ok(t0) => break t0,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    while let Ok(_m) = pubr.session.rx.try_recv() {}
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return (0, 0.0),
            }
        };
        let cpu0 = thread_cpu_secs();
        let mut v: u64 = 0;
        let (batch, period) = pace(rate, 2000);
        let mut next = Instant::now();
        while t0.elapsed().as_secs_f64() < secs {
            if rate.is_some() {
                // Paced with the thread's own sleep (precise to microseconds; a tokio timer
                // ticks in milliseconds). Nothing else on this thread needs to run meanwhile.
                next += period;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            let ts = Timestamp::now();
            let updates: Vec<Update> = (0..batch)
                .map(|i| {
                    v += 1;
                    Update {
                        id: (v as u32).wrapping_add(i) % points,
                        value: Value::UInt(v),
                        quality: Quality::Good,
                        source_ts: ts,
                        hub_ts: Timestamp::NEVER,
                        flags: 0,
                    }
                })
                .collect();
            seq += 1;
            if !pubr.session.tx.send(Msg::Data(Data { seq, updates })).await {
                break;
            }
            // Let the link's writer send it (and its reader take Acks) before the next sleep.
            tokio::task::yield_now().await;
            while let Ok(_m) = pubr.session.rx.try_recv() {}
        }
        pubr.session.closed.cancel();
        (v, thread_cpu_secs() - cpu0)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let lat = latency.then(|| Arc::new(std::sync::Mutex::new(Vec::new())));
    let mut counters = Vec::new();
    let mut threads = Vec::new();
    let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
    for i in 0..clients {
        let c = Arc::new(AtomicU64::new(0));
        let cfg = link_cfg(&h.plant, &format!("c{i}"), Role::Client);
        threads.push(spawn_counter(
            cfg,
            c.clone(),
            lat.clone(),
            [recording.clone(), stop.clone()],
            ready_tx.clone(),
        ));
        counters.push(c);
    }
    drop(ready_tx);
    let waited = tokio::task::spawn_blocking(move || {
        let subscribed = (0..clients).filter(|_| ready.recv().is_ok()).count();
        (subscribed, pub_ready.recv().is_ok())
    })
    .await
    .expect("ready");
    assert!(
        waited.0 == clients && waited.1,
        "bench links did not come up"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in &counters {
        c.store(0, Ordering::Relaxed);
    }
    if let Ok(mut v) = SEGMENTS.lock() {
        v.clear();
    }
    let (hub_cpu0, me_cpu0) = (cpu_secs(h.proc.pid() as u32), cpu_secs(std::process::id()));
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    let _ = go_tx.send(t0);
    let (v, edge_cpu) = tokio::task::spawn_blocking(move || publisher.join().unwrap_or((0, 0.0)))
        .await
        .unwrap_or((0, 0.0));
    let el = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts: Vec<f64> = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64 / el)
        .collect();
    let (hub_cpu, me_cpu) = (
        cpu_secs(h.proc.pid() as u32) - hub_cpu0,
        cpu_secs(std::process::id()) - me_cpu0,
    );
    stop.store(true, Ordering::Relaxed);
    let client_cpus: Vec<f64> = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or(0.0))
            .collect()
    })
    .await
    .unwrap_or_default();
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        if let Ok(mut v) = SEGMENTS.lock() {
            let mut a: Vec<u64> = v.iter().map(|x| x.0).collect();
            let mut b: Vec<u64> = v.iter().map(|x| x.1).collect();
            a.sort_unstable();
            b.sort_unstable();
            if !a.is_empty() {
                eprintln!(
                    "source→hub p50 {} p99 {} µs; hub→client p50 {} p99 {} µs",
                    a[a.len() / 2],
                    a[a.len() * 99 / 100],
                    b[b.len() / 2],
                    b[b.len() * 99 / 100]
                );
            }
            if std::env::var("BENCH_VERBOSE").as_deref() == Ok("2") {
                let t0 = v.first().map(|x| x.2).unwrap_or(0);
                let slow: u64 = std::env::var("BENCH_SLOW_US")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1000);
                for x in v.iter().filter(|x| x.0 > slow || x.1 > slow) {
                    eprintln!(
                        "  at {} µs (epoch {}): source→hub {} hub→client {}",
                        x.2.saturating_sub(t0),
                        x.2,
                        x.0,
                        x.1
                    );
                }
            }
            v.clear();
        }
        eprintln!(
            "published {:.0}/s; hub CPU {:.0} %, edge {:.0} %, client {:.0} % each, bench process {:.0} %",
            (v as f64) / el,
            hub_cpu / el * 100.0,
            edge_cpu / el * 100.0,
            client_cpus.iter().sum::<f64>() / client_cpus.len().max(1) as f64 / el * 100.0,
            me_cpu / el * 100.0
        );
    }
    let l = lat
        .map(|l| l.lock().map(|v| v.clone()).unwrap_or_default())
        .unwrap_or_default();
    RunFigures::new(&counts, l, el, [hub_cpu, edge_cpu], &client_cpus)
}

// ---------------------------------------------------------------- raw MQTT and NATS load

struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "peer did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mosquitto() -> Option<Broker> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let conf = dir.path().join("m.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"),
    )
    .ok()?;
    let mut cmd = Command::new("mosquitto");
    cmd.arg("-c").arg(&conf);
    start_broker(cmd, port, dir)
}

/// Starts a broker process quietly and waits until it listens on `port`.
fn start_broker(mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Option<Broker> {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_port(port);
    Some(Broker {
        child,
        port,
        _dir: dir,
    })
}

fn nats() -> Option<Broker> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    start_broker(cmd, port, dir)
}

/// The floor: this bench binary as a bare relay (`--relay PORT`), in a process of its own like
/// the brokers. It speaks just enough MQTT for the bench's clients (CONNACK, SUBACK) and copies
/// every byte the publisher sends to every subscriber: a thread per connection, one read and
/// one write per message, no TLS, no routing, no queue. No broker on this machine can beat it.
fn relay() -> Option<Broker> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let mut cmd = Command::new(std::env::current_exe().ok()?);
    cmd.args(["--relay", &port.to_string()]);
    start_broker(cmd, port, dir)
}

/// One MQTT packet: (first byte, body).
fn read_packet(s: &mut std::net::TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).ok()?;
    let (mut len, mut mul) = (0usize, 1usize);
    loop {
        let mut x = [0u8; 1];
        s.read_exact(&mut x).ok()?;
        len += (x[0] & 0x7f) as usize * mul;
        mul *= 128;
        if x[0] & 0x80 == 0 || mul > 128 * 128 * 128 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((b[0], body))
}

fn relay_main(port: u16) {
    let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
        return;
    };
    let subs: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    for conn in listener.incoming().flatten() {
        let subs = subs.clone();
        std::thread::spawn(move || {
            let mut s = conn;
            s.set_nodelay(true).ok();
            if read_packet(&mut s).is_none() || s.write_all(&[0x20, 2, 0, 0]).is_err() {
                return;
            }
            let Some((kind, body)) = read_packet(&mut s) else {
                return;
            };
            if kind == 0x82 {
                let id = [
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ];
                if let (Ok(mut l), Ok(w)) = (subs.lock(), s.try_clone()) {
                    l.push(w);
                }
                if s.write_all(&[0x90, 3, id[0], id[1], 0]).is_err() {
                    return;
                }
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            // The publisher: forward the first packet, then every byte as it comes.
            let forward = |bytes: &[u8]| {
                if let Ok(mut l) = subs.lock() {
                    l.retain_mut(|w| w.write_all(bytes).is_ok());
                }
            };
            let mut first = vec![kind];
            varint(body.len(), &mut first);
            first.extend_from_slice(&body);
            forward(&first);
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                forward(&buf[..n]);
            }
        });
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Mqtt,
    Nats,
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn mqtt_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![kind];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn connect(proto: Proto, port: u16, id: &str, subscribe: bool) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).ok();
    match proto {
        Proto::Mqtt => {
            let mut b = Vec::new();
            mqtt_str("MQTT", &mut b);
            b.extend_from_slice(&[4, 0x02, 0, 60]);
            mqtt_str(id, &mut b);
            s.write_all(&mqtt_packet(0x10, &b)).expect("write");
            let mut ack = [0u8; 4];
            s.read_exact(&mut ack).expect("connack");
            if subscribe {
                let mut b = vec![0, 1];
                mqtt_str("#", &mut b);
                b.push(0);
                s.write_all(&mqtt_packet(0x82, &b)).expect("write");
                let mut ack = [0u8; 5];
                s.read_exact(&mut ack).expect("suback");
            }
        }
        Proto::Nats => {
            let mut info = [0u8; 4096];
            let _ = s.read(&mut info);
            s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
                .expect("write");
            if subscribe {
                s.write_all(b"SUB p.> 1\r\nPING\r\n").expect("write");
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
            }
        }
    }
    s
}

/// Counts messages on a subscriber socket; records latencies from the payload's timestamp.
fn peer_reader(
    proto: Proto,
    mut s: std::net::TcpStream,
    count: Arc<AtomicU64>,
    lat: Option<Arc<std::sync::Mutex<Vec<u64>>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let cpu0 = thread_cpu_secs();
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut buf = vec![0u8; 1 << 20];
        let mut have = 0usize;
        let mut lats = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let n = match s.read(&mut buf[have..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => continue,
            };
            have += n;
            let mut pos = 0;
            let now = now_ns();
            loop {
                let rest = &buf[pos..have];
                let used = match proto {
                    Proto::Mqtt => {
                        if rest.len() < 2 {
                            break;
                        }
                        let (mut len, mut mul, mut i) = (0usize, 1usize, 1usize);
                        loop {
                            if i >= rest.len() {
                                break;
                            }
                            let b = rest[i];
                            len += (b & 0x7f) as usize * mul;
                            mul *= 128;
                            i += 1;
                            if b & 0x80 == 0 {
                                break;
                            }
                        }
                        if rest.len() < i + len || i == 1 {
                            break;
                        }
                        if rest[0] >> 4 == 3 {
                            count.fetch_add(1, Ordering::Relaxed);
                            let tl = u16::from_be_bytes([rest[i], rest[i + 1]]) as usize;
                            let p = i + 2 + tl;
                            if lat.is_some() && p + 8 <= i + len {
                                let ts =
                                    u64::from_be_bytes(rest[p..p + 8].try_into().unwrap_or([0; 8]));
                                lats.push(now.saturating_sub(ts));
                            }
                        }
                        i + len
                    }
                    Proto::Nats => {
                        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
                            break;
                        };
                        let line = &rest[..nl];
                        if line.starts_with(b"MSG ") {
                            let size: usize = std::str::from_utf8(line)
                                .ok()
                                .and_then(|l| l.rsplit(' ').next())
                                .and_then(|x| x.parse().ok())
                                .unwrap_or(0);
                            if rest.len() < nl + 2 + size + 2 {
                                break;
                            }
                            count.fetch_add(1, Ordering::Relaxed);
                            if lat.is_some() && size >= 8 {
                                let p = nl + 2;
                                let ts =
                                    u64::from_be_bytes(rest[p..p + 8].try_into().unwrap_or([0; 8]));
                                lats.push(now.saturating_sub(ts));
                            }
                            nl + 2 + size + 2
                        } else {
                            if line.starts_with(b"PING") {
                                let _ = s.write_all(b"PONG\r\n");
                            }
                            nl + 2
                        }
                    }
                };
                pos += used;
            }
            buf.copy_within(pos..have, 0);
            have -= pos;
        }
        if let Some(l) = lat {
            if let Ok(mut v) = l.lock() {
                v.extend(lats);
            }
        }
        thread_cpu_secs() - cpu0
    })
}

fn peer_run(
    proto: Proto,
    b: &Broker,
    points: u32,
    clients: usize,
    rate: Option<Rate>,
    secs: f64,
    latency: bool,
) -> RunFigures {
    let stop = Arc::new(AtomicBool::new(false));
    let lat = latency.then(|| Arc::new(std::sync::Mutex::new(Vec::new())));
    let mut counters = Vec::new();
    let mut readers = Vec::new();
    for i in 0..clients {
        let c = Arc::new(AtomicU64::new(0));
        let s = connect(proto, b.port, &format!("sub{i}"), true);
        readers.push(peer_reader(proto, s, c.clone(), lat.clone(), stop.clone()));
        counters.push(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut pubs = connect(proto, b.port, "pub", false);
    let cpu0 = cpu_secs(b.child.id());
    let pub_cpu0 = thread_cpu_secs();
    let t0 = Instant::now();
    let (batch, period) = pace(rate, 2000);
    let mut v = 0u32;
    let mut next = Instant::now();
    let mut out = Vec::with_capacity(batch as usize * 64);
    while t0.elapsed().as_secs_f64() < secs {
        if rate.is_some() {
            next += period;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        out.clear();
        let ts = now_ns().to_be_bytes();
        for _ in 0..batch {
            v = v.wrapping_add(1);
            let mut payload = [0u8; 24];
            payload[..8].copy_from_slice(&ts);
            match proto {
                Proto::Mqtt => {
                    let mut body = Vec::with_capacity(40);
                    mqtt_str(&format!("p/{}", v % points), &mut body);
                    body.extend_from_slice(&payload);
                    out.extend_from_slice(&mqtt_packet(0x30, &body));
                }
                Proto::Nats => {
                    out.extend_from_slice(format!("PUB p.{} 24\r\n", v % points).as_bytes());
                    out.extend_from_slice(&payload);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        if pubs.write_all(&out).is_err() {
            break;
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let pub_cpu = thread_cpu_secs() - pub_cpu0;
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_secs(b.child.id()) - cpu0;
    let counts: Vec<f64> = counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64 / el)
        .collect();
    stop.store(true, Ordering::Relaxed);
    drop(pubs);
    let reader_cpus: Vec<f64> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or(0.0))
        .collect();
    let l = lat
        .map(|l| l.lock().map(|v| v.clone()).unwrap_or_default())
        .unwrap_or_default();
    RunFigures::new(&counts, l, el, [cpu, pub_cpu], &reader_cpus)
}

// ---------------------------------------------------------------- the cases

struct Report {
    lines: Vec<String>,
}

impl Report {
    fn add(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.lines.push(s);
    }
}

/// mosquitto and nats-server, started on loopback (none with `--pointhub-only`).
fn peers(o: Opts) -> (Option<Broker>, Option<Broker>) {
    if o.no_peers {
        (None, None)
    } else {
        (mosquitto(), nats())
    }
}

async fn throughput(r: &mut Report, o: Opts, clients_list: &[usize]) {
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
fn throughput_row(runs: &[RunFigures]) -> (String, f64) {
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

/// A fixed piece of arithmetic, `n` rounds.
fn arithmetic(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// Rounds of `arithmetic` that take ≈ 20 µs on this machine (measured once).
fn probe_rounds() -> u64 {
    static N: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let t = Instant::now();
        std::hint::black_box(arithmetic(1_000_000));
        let per_round_ns = (t.elapsed().as_nanos() as f64 / 1e6).max(1e-3);
        (20_000.0 / per_round_ns) as u64
    })
}

/// Watches how steady the machine is while a latency run goes on: every 2.5 ms a thread times
/// ≈ 20 µs of fixed arithmetic (under 1 % of a core). A 10 ms window counts as slow when at least
/// three of its four pieces took ≥ 1.5 × the run's median: the host slowed the cores, not one
/// preemption by the bench's own threads. On a quiet machine the share of slow windows is ≈ 0;
/// on a shared virtual machine the host slows every core at once for tens of milliseconds, and
/// where such spells add up to more than 1 % of a run, its p99 is set by how a system copes with
/// a machine running at half speed. The same probe runs alongside every system.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, u64)>>,
}

impl Probe {
    fn start() -> Probe {
        let n = probe_rounds();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut v = Vec::new();
            let mut next = t0;
            while !s.load(Ordering::Relaxed) {
                next += Duration::from_micros(2500);
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let a = Instant::now();
                std::hint::black_box(arithmetic(n));
                v.push((
                    a.duration_since(t0).as_millis() as u64 / 10,
                    a.elapsed().as_nanos() as u64,
                ));
            }
            v
        });
        Probe { stop, thread }
    }

    /// The share of slow 10 ms windows, in %.
    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let v = self.thread.join().unwrap_or_default();
        let mut d: Vec<u64> = v.iter().map(|x| x.1).collect();
        d.sort_unstable();
        let Some(&med) = d.get(d.len() / 2) else {
            return 0.0;
        };
        let mut w = std::collections::BTreeMap::<u64, (u32, u32)>::new();
        for (at, ns) in &v {
            let e = w.entry(*at).or_default();
            e.0 += 1;
            e.1 += u32::from(*ns as f64 >= 1.5 * med as f64);
        }
        let full: Vec<_> = w.values().filter(|(c, _)| *c >= 3).collect();
        let slow = full.iter().filter(|(c, s)| *s + 1 >= *c).count();
        slow as f64 * 100.0 / full.len().max(1) as f64
    }
}

/// How steady the machine is with nothing else running: one thread per core times the probe's
/// ≈ 20 µs piece back to back for `secs`. Gives the pieces' p50/p99/p999, the share of 10 ms
/// windows in which a core ran ≥ 1.5 × slower than its median, and the share of instants at which
/// a core was stalled with ≥ 0.5 ms still to go: an update arriving then waits that long on that
/// core whatever system handles it.
fn idle_machine(secs: f64) -> String {
    let n = probe_rounds();
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                while t0.elapsed().as_secs_f64() < secs {
                    let a = Instant::now();
                    std::hint::black_box(arithmetic(n));
                    v.push((
                        a.duration_since(t0).as_nanos() as u64,
                        a.elapsed().as_nanos() as u64,
                    ));
                }
                v
            })
        })
        .collect();
    let per_core: Vec<Vec<(u64, u64)>> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    let total_ns = t0.elapsed().as_nanos() as u64;
    // 10 µs cells of the run in which some core still had ≥ 0.5 ms of a stall to go.
    let (cell_ns, left_ns) = (10_000u64, 500_000u64);
    let mut stalled = vec![false; (total_ns / cell_ns) as usize + 1];
    let (mut p50, mut p99, mut p999, mut slow_share) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &per_core {
        let mut d: Vec<u64> = v.iter().map(|x| x.1).collect();
        d.sort_unstable();
        let Some(&med) = d.get(d.len() / 2) else {
            continue;
        };
        p50.push(pct(&d, 0.5));
        p99.push(pct(&d, 0.99));
        p999.push(pct(&d, 0.999));
        let mut w = std::collections::BTreeMap::<u64, (u64, u64)>::new();
        for &(start, took) in v {
            let e = w.entry(start / 10_000_000).or_default();
            e.0 += took;
            e.1 += 1;
            if took > left_ns {
                let (a, b) = (start / cell_ns, (start + took - left_ns) / cell_ns);
                for c in a..b.min(stalled.len() as u64) {
                    stalled[c as usize] = true;
                }
            }
        }
        let slow = w
            .values()
            .filter(|(sum, count)| *sum as f64 / *count as f64 >= 1.5 * med as f64)
            .count();
        slow_share.push(slow as f64 * 100.0 / w.len().max(1) as f64);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let stall = stalled.iter().filter(|s| **s).count() as f64 * 100.0 / stalled.len() as f64;
    format!(
        "The machine idle ({secs:.0} s, one thread per core timing a ≈ 20 µs piece of arithmetic back to back): the piece took p50 {:.1} µs, p99 {:.1}, p999 {:.1}; {:.1} % of 10 ms windows ran ≥ 1.5 × slower than the median; at {:.2} % of instants a core was stalled with ≥ 0.5 ms still to go. On a quiet machine both shares are ≈ 0.",
        mean(&p50),
        mean(&p99),
        mean(&p999),
        mean(&slow_share),
        stall
    )
}

async fn latency(r: &mut Report, o: Opts, clients_list: &[usize]) {
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

/// Time until a watching client holds every point of the edge stale.
async fn time_to_know(r: &mut Report, o: Opts) {
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

async fn resync(r: &mut Report, o: Opts) {
    r.add("");
    r.add("### 5. Resync and memory per point");
    r.add("");
    r.add("| points | first birth → client complete and Good (s) | reconnect → client complete and Good (s) | hub RSS growth per point (bytes) |");
    r.add("| --- | --- | --- | --- |");
    let sizes: &[u32] = if o.quick {
        &[10_000]
    } else {
        &[100_000, 1_000_000]
    };
    for &n in sizes {
        let h = pointhub_hub(1);
        let rss0 = rss_kib(h.proc.pid() as u32);
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = dial(&h.plant, "c0", Role::Client).await;
        c.session
            .tx
            .send(Msg::Subscribe(Subscribe {
                patterns: vec!["bench/**".into()],
                history: false,
            }))
            .await;
        let measure = |label: &'static str,
                       mut c: Link,
                       count: Arc<AtomicU64>,
                       target_good: u64| async move {
            // Counts updates that are Good for distinct ids until all are in.
            let mut good = std::collections::HashSet::new();
            while (good.len() as u64) < target_good {
                match tokio::time::timeout(Duration::from_secs(60), c.session.rx.recv()).await {
                    Ok(Some(Msg::Data(d))) => {
                        for u in d.updates {
                            if u.quality.is_good() {
                                good.insert(u.id);
                            } else {
                                good.remove(&u.id);
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    other => panic!(
                        "{label}: client stopped at {} ({:?}: {})",
                        good.len(),
                        other.map(|m| m.map(|m| m.kind())),
                        c.session.close_reason()
                    ),
                }
            }
            count.store(good.len() as u64, Ordering::Relaxed);
            c
        };
        let t0 = Instant::now();
        let pubr = dial(&h.plant, "bench", Role::Edge).await;
        let mut seq = 0;
        birth(&pubr, n, &mut seq).await;
        c = measure("first birth", c, count.clone(), n as u64).await;
        let first = t0.elapsed().as_secs_f64();
        let rss1 = rss_kib(h.proc.pid() as u32);
        let per = |rss: u64| (rss.saturating_sub(rss0) as f64 * 1024.0) / n as f64;
        // Reconnect: the old session drops, the edge dials again and sends its birth.
        pubr.session.closed.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t1 = Instant::now();
        let pubr2 = dial(&h.plant, "bench", Role::Edge).await;
        let mut seq2 = 0;
        birth(&pubr2, n, &mut seq2).await;
        let _c = measure("reconnect", c, count.clone(), n as u64).await;
        let again = t1.elapsed().as_secs_f64();
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            let rss2 = rss_kib(h.proc.pid() as u32);
            tokio::time::sleep(Duration::from_secs(3)).await;
            eprintln!(
                "{n} points: RSS growth per point {:.0} B after the first birth, {:.0} after the reconnect, {:.0} 3 s later",
                per(rss1),
                per(rss2),
                per(rss_kib(h.proc.pid() as u32))
            );
        }
        stop.store(true, Ordering::Relaxed);
        let per_point = per(rss1);
        r.add(format!(
            "| {n} | {first:.2} | {again:.2} | {per_point:.0} |"
        ));
    }
}

async fn sessions(r: &mut Report, o: Opts) {
    r.add("");
    r.add("### 6. Idle node sessions");
    r.add("");
    r.add("| sessions | time to admit all (s) | hub RSS per session (KiB) |");
    r.add("| --- | --- | --- |");
    let n = std::env::args()
        .skip_while(|a| a != "--sessions")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(if o.quick { 200 } else { 10_000 });
    let h = pointhub_hub(1);
    let rss0 = rss_kib(h.proc.pid() as u32);
    let cfg = link_cfg(&h.plant, "c0", Role::Client);
    let t0 = Instant::now();
    let mut links = Vec::with_capacity(n);
    let token = CancellationToken::new();
    let mut futs = Vec::new();
    for _ in 0..n {
        let cfg = cfg.clone();
        let token = token.clone();
        futs.push(tokio::spawn(async move {
            for _ in 0..5 {
                if let Ok(l) = link::dial(&cfg, &cfg.hubs[0], &token).await {
                    return Some(l);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None
        }));
        if futs.len() >= 64 {
            for f in futs.drain(..) {
                if let Ok(Some(l)) = f.await {
                    links.push(l);
                }
            }
        }
    }
    for f in futs {
        if let Ok(Some(l)) = f.await {
            links.push(l);
        }
    }
    let took = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(h.proc.pid() as u32);
    let per = rss1.saturating_sub(rss0) as f64 / links.len().max(1) as f64;
    r.add(format!("| {} of {n} | {took:.1} | {per:.1} |", links.len()));
    token.cancel();
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let ver = |c: &str, a: &str| {
        Command::new(c)
            .arg(a)
            .output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(if o.stdout.is_empty() {
                    &o.stderr
                } else {
                    &o.stdout
                })
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
            })
            .unwrap_or_else(|| "not installed".into())
    };
    format!(
        "{cores} cores ({cpu}); mosquitto: {}; nats-server: {}",
        ver("mosquitto", "-h"),
        ver("nats-server", "--version")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(port) = args
        .iter()
        .position(|a| a == "--relay")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
    {
        relay_main(port);
        return;
    }
    // `cargo bench` passes --bench; `cargo test --bench suite` (CI's smoke run) does not.
    let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
    let write_docs = args.iter().any(|a| a == "--write-docs");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let no_peers = args.iter().any(|a| a == "--pointhub-only");
    let mut o = if quick {
        Opts {
            runs: 1,
            secs: 1.0,
            quick,
            no_peers,
            runs_given: false,
        }
    } else {
        Opts {
            runs: 3,
            secs: 5.0,
            quick,
            no_peers,
            runs_given: false,
        }
    };
    // `--secs S` and `--runs N` override the lengths (for profiling runs).
    if let Some(s) = value("--secs").and_then(|v| v.parse().ok()) {
        o.secs = s;
    }
    if let Some(n) = value("--runs").and_then(|v| v.parse().ok()) {
        o.runs = n;
        o.runs_given = true;
    }
    // `--clients 1,10` picks the fan-out cases.
    let clients_arg: Option<Vec<usize>> =
        value("--clients").map(|v| v.split(',').filter_map(|c| c.parse().ok()).collect());
    let clients =
        clients_arg
            .clone()
            .unwrap_or_else(|| if quick { vec![1] } else { vec![1, 10, 100] });
    // The latency case runs one and ten clients unless `--clients` says otherwise.
    let latency_clients = clients_arg.unwrap_or_else(|| vec![1, 10]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut r = Report { lines: Vec::new() };
    r.add(format!("Machine: {}.", machine()));
    r.add(format!(
        "Run: {} run(s) of {} s per figure{}{}. Command: `bash benches/run.sh` (or `cargo bench --bench suite -- --write-docs`).",
        o.runs,
        o.secs,
        if quick || o.runs_given {
            ""
        } else {
            " (latency: twice as many)"
        },
        if quick { " (smoke run)" } else { "" }
    ));
    r.add("pointhub runs over TLS 1.3 + WebSocket with mutual keys; mosquitto and nats-server over plain TCP, QoS 0, one 24-byte message per update, fed by a client that batches its writes.");
    // `--only throughput|latency|know|resync|sessions|machine` runs one case.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let run = |c: &str| only.as_deref().is_none_or(|o| o == c);
    // `--only machine`: how steady the idle machine is, for `--secs` (the latency case starts so).
    if only.as_deref() == Some("machine") {
        r.add(idle_machine(o.secs));
    }
    rt.block_on(async {
        if run("throughput") {
            throughput(&mut r, o, &clients).await;
        }
        if run("latency") {
            latency(&mut r, o, &latency_clients).await;
        }
        if run("know") {
            time_to_know(&mut r, o).await;
        }
        if run("resync") {
            resync(&mut r, o).await;
        }
        if run("sessions") {
            sessions(&mut r, o).await;
        }
    });
    if write_docs && only.is_none() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md");
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        let (begin, end) = ("<!-- suite:begin -->", "<!-- suite:end -->");
        let body = format!(
            "{begin}\n## The suite: pointhub, mosquitto and nats-server\n\n{}\n{end}",
            r.lines.join("\n")
        );
        let new = match (old.find(begin), old.find(end)) {
            (Some(a), Some(b)) => format!("{}{}{}", &old[..a], body, &old[b + end.len()..]),
            _ => format!("{old}\n{body}\n"),
        };
        std::fs::write(&path, new).expect("write docs/benchmarks.md");
        println!("wrote {}", path.display());
    }
}
