//! pointhub's side of every case: a hub with its keys, edges that publish births and data at a
//! set rate, clients that count what arrives, and the figures of one run.

use crate::*;

pub(crate) struct Hub {
    pub(crate) plant: Plant,
    pub(crate) proc: Proc,
}

pub(crate) fn pointhub_hub(clients: usize) -> Hub {
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

pub(crate) fn link_cfg(p: &Plant, name: &str, role: Role) -> pointhub_link::LinkConfig {
    let c = ClientConfig::load(&p.path(&format!("{name}.toml"))).expect("config");
    c.hub.link_config(role, name).expect("link")
}

pub(crate) async fn dial(p: &Plant, name: &str, role: Role) -> Link {
    let cfg = link_cfg(p, name, role);
    link::dial(&cfg, &cfg.hubs[0], &CancellationToken::new())
        .await
        .expect("dial")
}

pub(crate) fn defs(n: u32) -> Vec<PointDef> {
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

pub(crate) async fn birth(l: &Link, n: u32, seq: &mut u64) {
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
pub(crate) static SEGMENTS: std::sync::Mutex<Vec<(u64, u64, u64)>> =
    std::sync::Mutex::new(Vec::new());

/// A paced publisher: updates per second, and messages per second they go out in.
#[derive(Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) updates: u64,
    pub(crate) messages: u64,
}

/// Updates per message and time between messages; `None` = as fast as possible, `full` updates
/// per message.
pub(crate) fn pace(rate: Option<Rate>, full: u32) -> (u32, Duration) {
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
pub(crate) fn on_thread<T, F>(f: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
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

pub(crate) async fn dial_cfg(cfg: &pointhub_link::LinkConfig) -> Link {
    link::dial(cfg, &cfg.hubs[0], &CancellationToken::new())
        .await
        .expect("dial")
}

/// A client on a thread of its own: subscribes to everything, says so on `ready`, then counts
/// updates and, if asked, records latencies (µs × 1000) while `recording`, until `stop`.
/// Returns the CPU seconds its thread used from `recording` on.
pub(crate) fn spawn_counter(
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
pub(crate) struct RunFigures {
    /// Deliveries per second, all clients together.
    pub(crate) delivered: f64,
    /// The slowest client's deliveries per second.
    pub(crate) slowest: f64,
    /// Latencies (µs × 1000), sorted; empty unless asked for.
    pub(crate) lat: Vec<u64>,
    /// CPU % of one core: the server, the publisher's (edge's) thread, and one subscriber's
    /// (client's) thread, mean over the subscribers.
    pub(crate) hub_cpu: f64,
    pub(crate) edge_cpu: f64,
    pub(crate) client_cpu: f64,
}

impl RunFigures {
    /// From what a run counted over `el` seconds: each client's deliveries/s, the latencies
    /// (sorted here), and the CPU seconds of the server, the publisher and each client.
    pub(crate) fn new(
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
pub(crate) async fn pointhub_run(
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
