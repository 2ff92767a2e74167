//! The peers' clients: MQTT 3.1.1 and NATS spoken directly on a socket, publishing and counting as
//! the pointhub edge and client do. Written here rather than taken from a client library so that
//! the measured cost is the broker's, not a library's queueing and threads: each side is one
//! blocking socket loop, the same shape for both protocols.

use crate::*;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Proto {
    Mqtt,
    Nats,
}

pub(crate) fn varint(mut n: usize, out: &mut Vec<u8>) {
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

pub(crate) fn mqtt_packet(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![kind];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

pub(crate) fn mqtt_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn connect(proto: Proto, port: u16, id: &str, subscribe: bool) -> std::net::TcpStream {
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
pub(crate) fn peer_reader(
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

pub(crate) fn peer_run(
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
