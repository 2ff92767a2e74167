//! The peers: mosquitto and nats-server started on free ports, and a TCP relay that adds the same
//! hop the hub adds (client → relay → subscriber) as a floor for both.

use crate::*;

pub(crate) struct Broker {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "peer did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn mosquitto() -> Option<Broker> {
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
pub(crate) fn start_broker(mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Option<Broker> {
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

pub(crate) fn nats() -> Option<Broker> {
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
pub(crate) fn relay() -> Option<Broker> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let mut cmd = Command::new(std::env::current_exe().ok()?);
    cmd.args(["--relay", &port.to_string()]);
    start_broker(cmd, port, dir)
}

/// One MQTT packet: (first byte, body).
pub(crate) fn read_packet(s: &mut std::net::TcpStream) -> Option<(u8, Vec<u8>)> {
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

pub(crate) fn relay_main(port: u16) {
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
