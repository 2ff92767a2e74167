//! A TCP path the tests can cut: a relay on loopback between a node and its hub. Cut, it closes
//! every connection through it and stops listening, so a dial is refused as on a dead WAN link;
//! restored, it listens on the same port again. Stalled, it keeps its connections open and
//! passes nothing on either way, as a link that died without a word (a dropped NAT entry, a
//! cable pulled between two switches) until the peers' heartbeats notice. Frozen, the
//! connections open now pass nothing while new ones pass: the node redials a hub that still
//! holds its old, half-open session.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A relay from `127.0.0.1:<port>` to a target address.
pub struct Path {
    /// The port nodes dial instead of the target's.
    pub port: u16,
    target: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    /// Each connection's own stall, for [`Path::freeze`].
    frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
}

impl Path {
    /// A path to `target` (`127.0.0.1:7420`), up.
    pub fn to(target: &str) -> Path {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the path");
        let port = listener.local_addr().expect("addr").port();
        let path = Path {
            port,
            target: target.to_string(),
            up: Arc::new(AtomicBool::new(true)),
            conns: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            stalled: Arc::new(AtomicBool::new(false)),
            frozen: Arc::new(Mutex::new(Vec::new())),
        };
        path.serve(listener);
        path
    }

    fn serve(&self, listener: TcpListener) {
        listener.set_nonblocking(true).expect("nonblocking");
        let (up, conns, stop, target, stalled, frozen) = (
            self.up.clone(),
            self.conns.clone(),
            self.stop.clone(),
            self.target.clone(),
            self.stalled.clone(),
            self.frozen.clone(),
        );
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((a, _)) => {
                        let Ok(b) = TcpStream::connect(&target) else {
                            continue;
                        };
                        let _ = a.set_nonblocking(false);
                        let _ = (a.set_nodelay(true), b.set_nodelay(true));
                        if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
                            if let Ok(mut c) = conns.lock() {
                                c.extend([a2, b2]);
                            }
                        }
                        let own = Arc::new(AtomicBool::new(false));
                        if let Ok(mut f) = frozen.lock() {
                            f.push(own.clone());
                        }
                        copy_both(a, b, [stalled.clone(), own]);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // The listener drops here: the port refuses connections until restored.
        });
    }

    /// Cuts the path: every connection through it ends, and new ones are refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for s in c.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        std::thread::sleep(Duration::from_millis(50)); // the accept loop lets the port go
    }

    /// Stalls the path: connections stay open, nothing passes until [`Path::cut`].
    #[allow(
        dead_code,
        reason = "the benchmark suite shares this file and never stalls"
    )]
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Freezes the connections open now: they stay open and pass nothing, for good; new
    /// connections pass.
    #[allow(
        dead_code,
        reason = "the benchmark suite shares this file and never freezes"
    )]
    pub fn freeze(&self) {
        if let Ok(f) = self.frozen.lock() {
            for c in f.iter() {
                c.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Restores the path on the same port (after a cut; a stalled path passes data again).
    pub fn restore(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.up.store(true, Ordering::SeqCst);
        self.serve(listener);
    }
}

impl Drop for Path {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

/// Relays both ways while neither stall is set.
fn copy_both(a: TcpStream, b: TcpStream, stalls: [Arc<AtomicBool>; 2]) {
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let stalls = stalls.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if stalls.iter().any(|s| s.load(Ordering::SeqCst)) {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pipe(a, b2);
        pipe(b, a2);
    }
}
