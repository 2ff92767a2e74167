//! Test harness: real `pointhub` processes on loopback, with their output read line by line.

#![allow(dead_code)]

use pointhub_link::identity;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pointhub");

/// A running process; killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    stdout: mpsc::Receiver<String>,
    /// Everything it wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pointhub starts");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let label = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if std::env::var("TEST_ECHO").is_ok() {
                    eprintln!("[{label}] {line}");
                }
                sink.lock().expect("lock").push(line);
            }
        });
        Proc {
            name: name.into(),
            child,
            stdout: rx,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next stdout line, or `None` after `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.stdout.recv_timeout(timeout).ok()
    }

    /// Reads stdout lines until `pred` holds for one; panics after `timeout` with context.
    pub fn expect_line(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line for {what} within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                ),
            }
        }
    }

    /// Reads JSON lines until `pred` holds for one.
    pub fn expect_json(
        &self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let line = self.expect_line(timeout, what, |l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| pred(&v))
                .unwrap_or(false)
        });
        serde_json::from_str(&line).expect("json")
    }

    /// Drops what is buffered on stdout.
    pub fn drain(&self) {
        while self.stdout.try_recv().is_ok() {}
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("lock").join("\n")
    }

    /// Waits until stderr has a line containing `needle`; returns it.
    pub fn wait_stderr(&self, timeout: Duration, needle: &str) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .stderr
                .lock()
                .expect("lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: no stderr line with {needle:?} within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill -{sig} {}", self.pid());
    }

    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node the test set-up admits.
pub struct Node {
    pub name: String,
    pub role: &'static str,
    pub extra: String,
    /// A key made elsewhere (another hub's), instead of one made in this plant.
    pub fingerprint: Option<String>,
}

impl Node {
    pub fn edge(name: &str) -> Node {
        Node {
            name: name.into(),
            role: "edge",
            extra: String::new(),
            fingerprint: None,
        }
    }
    pub fn client(name: &str, write: &str) -> Node {
        Node {
            name: name.into(),
            role: "client",
            extra: format!("write = {write}\n"),
            fingerprint: None,
        }
    }
    pub fn hub(name: &str, fingerprint: &str) -> Node {
        Node {
            name: name.into(),
            role: "hub",
            extra: String::new(),
            fingerprint: Some(fingerprint.into()),
        }
    }
}

/// A test plant: a temp folder with keys and configs, and the hub's address once it runs.
pub struct Plant {
    pub dir: tempfile::TempDir,
    pub hub_addr: String,
    pub hub_fp: String,
}

pub const FAST_HEARTBEAT: &str = "heartbeat_ms = 250\ntimeout_ms = 750\n";

impl Plant {
    pub fn new() -> Plant {
        Plant {
            dir: tempfile::tempdir().expect("tempdir"),
            hub_addr: String::new(),
            hub_fp: String::new(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Makes a node key; returns its fingerprint.
    pub fn key(&self, name: &str) -> String {
        identity::create(
            &self.path(&format!("keys/{name}")),
            "node",
            name,
            &[name.to_string()],
        )
        .expect("key")
        .to_string()
    }

    /// Writes hub.toml admitting `nodes` (keys made here), listening on `listen`.
    pub fn write_hub(&self, listen: &str, nodes: &[Node]) -> PathBuf {
        self.write_hub_named("hub1", listen, nodes, "")
    }

    /// The hub's key fingerprint (made now if it has none yet).
    pub fn hub_fingerprint(&self) -> String {
        let out = Command::new(BIN)
            .args([
                "hub",
                "--config",
                self.path("hub.toml").to_str().expect("utf8"),
                "--show-fingerprint",
            ])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("fingerprint: ")
            .expect("fingerprint")
            .to_string()
    }

    /// Writes hub.toml for a hub called `name`; `extra` is appended (e.g. `[[upstream]]`).
    pub fn write_hub_named(
        &self,
        name: &str,
        listen: &str,
        nodes: &[Node],
        extra: &str,
    ) -> PathBuf {
        let mut toml = format!(
            "name = \"{name}\"\nlisten = [\"{listen}\"]\ndata_dir = \"hub-data\"\n[heartbeat]\ninterval_ms = 250\ntimeout_ms = 750\n"
        );
        for n in nodes {
            let fp = if let Some(fp) = &n.fingerprint {
                fp.clone()
            } else if self.path(&format!("keys/{}/node.key", n.name)).exists() {
                identity::load(
                    &self.path(&format!("keys/{}/node.crt", n.name)),
                    &self.path(&format!("keys/{}/node.key", n.name)),
                )
                .expect("load")
                .fingerprint
                .to_string()
            } else {
                self.key(&n.name)
            };
            toml.push_str(&format!(
                "[[nodes]]\nfingerprint = \"{fp}\"\nrole = \"{}\"\nname = \"{}\"\n{}",
                n.role, n.name, n.extra
            ));
        }
        toml.push_str(extra);
        let p = self.path("hub.toml");
        std::fs::write(&p, toml).expect("write hub.toml");
        p
    }

    /// Starts the hub and waits for its address.
    pub fn start_hub(&mut self) -> Proc {
        let cfg = self.path("hub.toml");
        let out = Command::new(BIN)
            .args([
                "hub",
                "--config",
                cfg.to_str().expect("utf8"),
                "--show-fingerprint",
            ])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        self.hub_fp = text
            .trim()
            .strip_prefix("fingerprint: ")
            .expect("fingerprint line")
            .to_string();
        let hub = Proc::spawn("hub", &["hub", "--config", cfg.to_str().expect("utf8")]);
        let line = hub.wait_stderr(Duration::from_secs(20), "listening on wss://");
        let addr = line
            .split("listening on wss://")
            .nth(1)
            .and_then(|r| r.split("/node").next())
            .expect("address");
        self.hub_addr = addr.to_string();
        hub
    }

    pub fn hub_section(&self, name: &str, extra: &str) -> String {
        format!(
            "[hub]\nurls = [\"wss://{}\"]\nfingerprint = \"{}\"\ncert = \"keys/{name}/node.crt\"\nkey = \"keys/{name}/node.key\"\n{FAST_HEARTBEAT}backoff_max_ms = 500\n{extra}",
            self.hub_addr, self.hub_fp
        )
    }

    pub fn write_edge(&self, name: &str, signals: u32, rate_hz: f64) -> PathBuf {
        let toml = format!(
            "name = \"{name}\"\n{}\n[[sources]]\nkind = \"simulator\"\nname = \"sim\"\nsignals = {signals}\nsetpoints = 2\nrate_hz = {rate_hz}\n",
            self.hub_section(name, "")
        );
        let p = self.path(&format!("{name}.toml"));
        std::fs::write(&p, toml).expect("write edge.toml");
        p
    }

    pub fn write_client(&self, name: &str) -> PathBuf {
        let toml = format!("name = \"{name}\"\n{}", self.hub_section(name, ""));
        let p = self.path(&format!("{name}.toml"));
        std::fs::write(&p, toml).expect("write client.toml");
        p
    }

    pub fn start_edge(&self, name: &str) -> Proc {
        let p = self.path(&format!("{name}.toml"));
        Proc::spawn(name, &["edge", "--config", p.to_str().expect("utf8")])
    }

    pub fn watch(&self, name: &str, pattern: &str) -> Proc {
        let p = self.path(&format!("{name}.toml"));
        Proc::spawn(
            name,
            &[
                "client",
                "watch",
                "--config",
                p.to_str().expect("utf8"),
                pattern,
            ],
        )
    }

    /// Runs a one-shot command to completion; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN).args(args).output().expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A one-time enrollment token for `role` and `name`, valid 10 minutes (`hub tokens create`).
    pub fn enrollment_token(&self, role: &str, name: &str) -> String {
        self.printed_token(&[
            "hub", "tokens", "create", "--role", role, "--name", name, "--ttl", "10m",
        ])
    }

    /// A JSON API token named `name`, with `extra` flags (`--write PATTERN` …).
    pub fn api_token(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["hub", "api-tokens", "create", "--name", name];
        args.extend_from_slice(extra);
        self.printed_token(&args)
    }

    /// Runs a `hub … create` command against this plant's hub; the token it prints once.
    fn printed_token(&self, args: &[&str]) -> String {
        let cfg = self.cfg("hub");
        let mut all = args.to_vec();
        all.extend_from_slice(&["--config", &cfg]);
        let (code, out, err) = self.run(&all);
        assert_eq!(code, 0, "{err}");
        out.trim()
            .strip_prefix("token: ")
            .expect("a token line")
            .to_string()
    }

    pub fn cfg(&self, name: &str) -> String {
        self.path(&format!("{name}.toml"))
            .to_str()
            .expect("utf8")
            .to_string()
    }
}

/// Tracks the latest quality per point from a watch's JSON lines.
#[derive(Default)]
pub struct Board {
    pub quality: std::collections::HashMap<String, String>,
    pub value: std::collections::HashMap<String, serde_json::Value>,
}

impl Board {
    pub fn take(&mut self, v: &serde_json::Value) {
        if let (Some(p), Some(q)) = (v["point"].as_str(), v["quality"].as_str()) {
            self.quality.insert(p.to_string(), q.to_string());
            self.value.insert(p.to_string(), v["value"].clone());
        }
    }

    /// Whether every point under `prefix` (at least `n` of them) has quality `q`.
    pub fn all(&self, prefix: &str, n: usize, q: &str) -> bool {
        let under: Vec<_> = self
            .quality
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .collect();
        under.len() >= n && under.iter().all(|(_, qq)| *qq == q)
    }
}

/// Feeds a watch's lines into `board` until `done` holds; returns the time it took.
pub fn watch_until(
    w: &Proc,
    board: &mut Board,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Board) -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = start + timeout;
    while !done(board) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(line) = w.next_line(left) else {
            panic!(
                "{what}: not reached within {timeout:?}; board: {:?}\nstderr:\n{}",
                board.quality,
                w.stderr_text()
            );
        };
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            board.take(&v);
        }
    }
    start.elapsed()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The PyPI packages of the peers, pinned (the same list as `.ci/run`).
pub const PEER_PACKAGES: &[&str] = &[
    "pymodbus==3.9.2",
    "pyserial==3.5",
    "websockets==13.1",
    "selenium==4.27.1",
    "jsonschema==4.23.0",
    "prometheus-client==0.21.1",
    "pysparkplug==0.6.1",
    "paho-mqtt==1.6.1",
    "asyncua==2.0.1",
];

/// The Python that runs the real peers (pymodbus), from `.venv-peers` (made here if missing,
/// as `.ci/run` makes it), or `POINTHUB_PEERS_PYTHON`.
pub fn peers_python() -> PathBuf {
    static PY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("POINTHUB_PEERS_PYTHON") {
            return PathBuf::from(p);
        }
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-peers");
        let py = venv.join("bin/python");
        let ok = |py: &Path| {
            Command::new(py)
                .args(["-c", "import pymodbus, serial, websockets, selenium, jsonschema, prometheus_client, pysparkplug, paho.mqtt, asyncua"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&py) {
            let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success())
                && Command::new(venv.join("bin/pip"))
                    .args(["install", "-q"])
                    .args(PEER_PACKAGES)
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(made && ok(&py), "the peer tests need Python packages: run `bash tests/run` (it installs them into .venv-peers)");
        }
        py
    })
    .clone()
}

pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A free TCP port on 127.0.0.1 (for peers that cannot report the port they bound).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A real Modbus TCP device (pymodbus), killed when dropped.
pub struct ModbusSim {
    pub port: u16,
    child: Child,
}

impl ModbusSim {
    pub fn start(port: u16, churn: u32) -> ModbusSim {
        let child = Command::new(peers_python())
            .arg(peer_script("modbus_sim.py"))
            .args(["--port", &port.to_string(), "--churn", &churn.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the Modbus simulator did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ModbusSim { port, child }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the independent Modbus client (pymodbus) against `port`; returns its JSON answer.
pub fn modbus_client(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(peers_python())
        .arg(peer_script("modbus_client.py"))
        .args(args)
        .args(["--port", &port.to_string()])
        .output()
        .expect("client runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "client said {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
