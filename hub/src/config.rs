//! The hub's configuration (`hub.toml`). Paths are relative to the file's folder.

use pointhub_link::Fingerprint;
use pointhub_schemas::msg::Role;
use pointhub_schemas::Pattern;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A commented default configuration; `pointhub hub --print-config` prints it.
pub const DEFAULT_TOML: &str = include_str!("../../examples/hub.toml");

use crate::grant::Grant;
pub use crate::grant::ANY_NAMESPACE;

/// The hub's configuration, as read from `hub.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The hub's name, as nodes and `$sys/<name>/…` see it.
    pub name: String,
    /// Addresses to listen on: `127.0.0.1:7420`, `[::]:7420`, port 0 for any free port.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Where the hub keeps its key and certificate (made on first start) and its state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `[tls]`: the hub's own certificate and key, extra certificate names, TLS 1.2.
    #[serde(default)]
    pub tls: TlsFiles,
    /// `[heartbeat]`: how often links ping, and when a silent one is dead.
    #[serde(default)]
    pub heartbeat: Heartbeat,
    /// `[limits]`: sizes, rates and timeouts that bound what a node may cost the hub.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[audit]`: when the audit log rotates and how many old files are kept.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[web]`: the console and APIs.
    #[serde(default)]
    pub web: WebConfig,
    /// Parent hubs this hub dials out to as a node of role `hub` (plant DMZ hub → cloud hub).
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
    /// `[durable]`: what the hub keeps for durable subscriptions (historians) while they are away.
    #[serde(default)]
    pub durable: DurableConfig,
    /// The nodes this hub admits, by key fingerprint (besides those approved in its store).
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
}

/// `[tls]`: the hub's certificate files; without them the hub makes its own key and certificate.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain; with `key`, replaces the key the hub makes for itself.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`; give both or neither.
    pub key: Option<PathBuf>,
    /// Extra names for the hub's own certificate (IPs or DNS names nodes dial).
    #[serde(default)]
    pub names: Vec<String>,
    /// Accept TLS 1.2 as well as 1.3 (off: TLS 1.3 only).
    #[serde(default)]
    pub allow_tls12: bool,
}

/// The console and APIs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Serve `/metrics` without a login or token (for a scraper on a trusted network).
    #[serde(default)]
    pub metrics_public: bool,
}

/// A parent hub. This hub dials it with its own key (the fingerprint `--show-fingerprint`
/// prints), which the parent approves with role `hub`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The parent's addresses, tried by lowest round trip.
    pub urls: Vec<pointhub_link::HubAddr>,
    /// The parent's key fingerprint, or a CA file for its certificate.
    pub fingerprint: Option<Fingerprint>,
    /// A PEM file of CA certificates the parent's certificate must chain to (or `fingerprint`).
    pub ca: Option<PathBuf>,
    /// What to forward (default everything; this hub's own `$sys` is never forwarded).
    #[serde(default = "default_forward")]
    pub forward: Vec<Pattern>,
    /// Writes from the parent allowed into these points (default none).
    #[serde(default)]
    pub writes: Vec<Pattern>,
    /// How often a ping goes to the parent, ms (default 1000).
    #[serde(default = "default_up_interval")]
    pub heartbeat_ms: u64,
    /// Nothing heard from the parent for this long ends the link, ms (default 3000).
    #[serde(default = "default_up_timeout")]
    pub timeout_ms: u64,
    /// Longest wait between reconnect attempts to the parent, ms (default 10000).
    #[serde(default = "default_up_backoff")]
    pub backoff_max_ms: u64,
    /// Bytes of the spool on disk (`<data_dir>/upstream-<n>/`) that keeps what this hub forwards
    /// while the parent is out of reach; past it the oldest updates are dropped and counted.
    /// 0: no spool. Default 256 MiB.
    #[serde(default = "default_up_buffer")]
    pub buffer_max_bytes: u64,
}

/// `[durable]`: the bounds of durable subscriptions, which clients (historians) name and the hub
/// keeps on disk in `<data_dir>/durable/` while they are away.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurableConfig {
    /// Bytes each durable subscription may keep on disk; past it the oldest updates are dropped
    /// and counted. 0: durable subscriptions are refused. Default 256 MiB.
    #[serde(default = "default_up_buffer")]
    pub max_bytes: u64,
    /// Durable subscriptions one client key may have (default 4).
    #[serde(default = "default_durable_per_key")]
    pub max_per_key: usize,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            max_bytes: default_up_buffer(),
            max_per_key: default_durable_per_key(),
        }
    }
}

fn default_durable_per_key() -> usize {
    4
}

fn default_up_buffer() -> u64 {
    256 << 20
}

fn default_forward() -> Vec<Pattern> {
    vec![Pattern::all()]
}
fn default_up_interval() -> u64 {
    1000
}
fn default_up_timeout() -> u64 {
    3000
}
fn default_up_backoff() -> u64 {
    10_000
}

impl UpstreamConfig {
    /// The link settings of this parent, named `section` in messages (`upstream 0`).
    pub fn settings(&self, section: String) -> pointhub_link::LinkSettings {
        pointhub_link::LinkSettings {
            section,
            urls: self.urls.clone(),
            fingerprint: self.fingerprint,
            ca: self.ca.clone(),
            heartbeat_ms: self.heartbeat_ms,
            timeout_ms: self.timeout_ms,
            backoff_max_ms: self.backoff_max_ms,
            enroll_token: None,
        }
    }
}

/// `[audit]`: rotation of the audit log, `audit.jsonl` in the data folder.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit log is rotated when it reaches this size.
    #[serde(default = "default_audit_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` … `.N`).
    #[serde(default = "default_audit_keep")]
    pub keep: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            max_bytes: default_audit_bytes(),
            keep: default_audit_keep(),
        }
    }
}

fn default_audit_bytes() -> u64 {
    10 << 20
}
fn default_audit_keep() -> usize {
    10
}

/// `[heartbeat]`: the ping interval and dead-link timeout, also sent to nodes in the welcome.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// How often each side sends a ping.
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    /// Nothing heard for this long: the link is dead and its points stale.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
        }
    }
}

/// `[limits]`: what the hub accepts from nodes and clients: sizes, counts, rates, timeouts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest frame a node may send, bytes.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Most updates in one batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest point name, bytes.
    #[serde(default = "default_max_name")]
    pub max_name_len: usize,
    /// Most points one edge may publish.
    #[serde(default = "default_max_points")]
    pub max_points_per_node: usize,
    /// Entries a lagging subscriber may have queued beyond one per point (kept quality changes,
    /// history replays) before it is cut off.
    #[serde(default = "default_queue")]
    pub subscriber_queue: usize,
    /// Connections that have not finished their TLS handshake, at once; more are closed at once.
    #[serde(default = "default_handshakes")]
    pub max_unauthenticated: usize,
    /// Frames per second one session may send; past it, the hub stops reading it for a moment.
    #[serde(default = "default_frames_per_sec")]
    pub max_frames_per_sec: u32,
    /// Point updates per second one edge may send; past it, the hub stops reading it for a moment.
    #[serde(default = "default_updates_per_sec")]
    pub max_updates_per_sec: u64,
    /// Time a connection has for its TLS handshake and hello.
    #[serde(default = "default_handshake_ms")]
    pub handshake_timeout_ms: u64,
    /// Sessions one client key may hold at once (an edge or hub key holds one: the newest wins).
    #[serde(default = "default_sessions_per_key")]
    pub max_sessions_per_key: usize,
    /// Time a write may take from the hub to the device and back.
    #[serde(default = "default_write_ms")]
    pub write_timeout_ms: u64,
    /// On shutdown, how long the hub waits for its nodes' sessions to end after telling them
    /// `ShuttingDown`, and for its own tasks to stop.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame: default_max_frame(),
            max_batch: default_max_batch(),
            max_name_len: default_max_name(),
            max_points_per_node: default_max_points(),
            subscriber_queue: default_queue(),
            max_unauthenticated: default_handshakes(),
            max_frames_per_sec: default_frames_per_sec(),
            max_updates_per_sec: default_updates_per_sec(),
            handshake_timeout_ms: default_handshake_ms(),
            write_timeout_ms: default_write_ms(),
            max_sessions_per_key: default_sessions_per_key(),
            shutdown_grace_ms: default_grace_ms(),
        }
    }
}

/// A node the hub admits: its key and its grant.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "NodeSection")]
pub struct NodeEntry {
    /// The node's key fingerprint, as `pointhub keygen` printed it (`sha256:` and 64 hex digits).
    pub fingerprint: Fingerprint,
    /// What it may do.
    pub grant: Grant,
}

/// A `[[nodes]]` entry as written: the grant's keys beside the fingerprint. (A separate type
/// because `deny_unknown_fields` does not work through `#[serde(flatten)]`.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    fingerprint: Fingerprint,
    /// What the node is admitted as: edge, client or hub (a child hub).
    role: Role,
    /// The node's name on this hub (one segment, no '/'); what the node claims does not count.
    name: String,
    /// Where an edge may publish; defaults to its name.
    namespace: Option<String>,
    /// Patterns a client may read; defaults to everything.
    #[serde(default = "default_read")]
    read: Vec<Pattern>,
    /// Patterns a client may write (writable points only); defaults to nothing.
    #[serde(default)]
    write: Vec<Pattern>,
}

impl From<NodeSection> for NodeEntry {
    fn from(n: NodeSection) -> NodeEntry {
        NodeEntry {
            fingerprint: n.fingerprint,
            grant: Grant {
                role: n.role,
                name: n.name,
                namespace: n.namespace,
                read: n.read,
                write: n.write,
            },
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:7420".into()]
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("hub-data")
}
fn default_interval() -> u32 {
    1000
}
fn default_timeout() -> u32 {
    3000
}
fn default_max_frame() -> usize {
    4 << 20
}
fn default_max_batch() -> usize {
    65_536
}
fn default_max_name() -> usize {
    256
}
fn default_max_points() -> usize {
    2_000_000
}
fn default_queue() -> usize {
    1_000_000
}
fn default_handshakes() -> usize {
    1024
}
fn default_frames_per_sec() -> u32 {
    20_000
}
fn default_updates_per_sec() -> u64 {
    5_000_000
}
fn default_handshake_ms() -> u64 {
    10_000
}
fn default_write_ms() -> u64 {
    10_000
}
fn default_grace_ms() -> u64 {
    3000
}

fn default_sessions_per_key() -> usize {
    8
}
fn default_read() -> Vec<Pattern> {
    vec![Pattern::all()]
}

/// Why a hub configuration was refused; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The underlying errors are part of the message (not a `source`), so a report that
    // prints the chain says each once.
    /// The configuration file could not be read (missing, not readable).
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file or folder concerned.
        path: String,
        /// Why it could not be read.
        error: std::io::Error,
    },
    /// Not TOML, an unknown key, a value of the wrong type, an invalid pattern: with the line.
    #[error("{}{error}", at(.path))]
    Parse {
        /// The file the text came from; `None` for text given to [`HubConfig::parse`].
        path: Option<String>,
        /// What the TOML reader found wrong, with its line.
        error: toml::de::Error,
    },
    /// Parsed, but the values do not fit together.
    #[error("{}{message}", at(.path))]
    Invalid {
        /// The file the text came from; `None` for text given to [`HubConfig::parse`].
        path: Option<String>,
        /// What does not fit, and what to change.
        message: String,
    },
}

fn at(path: &Option<String>) -> String {
    path.as_ref().map(|p| format!("{p}: ")).unwrap_or_default()
}

impl ConfigError {
    fn in_file(self, file: &Path) -> ConfigError {
        let path = Some(file.display().to_string());
        match self {
            ConfigError::Parse { error, .. } => ConfigError::Parse { path, error },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid { path, message },
            other => other,
        }
    }
}

impl HubConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<HubConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let mut cfg = HubConfig::parse(&text).map_err(|e| e.in_file(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parses and checks configuration text; relative paths are left as written.
    pub fn parse(text: &str) -> Result<HubConfig, ConfigError> {
        let cfg: HubConfig =
            toml::from_str(text).map_err(|error| ConfigError::Parse { path: None, error })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Makes the relative paths (data_dir, tls cert and key, upstream ca) relative to `base`,
    /// the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(p) = self.tls.cert.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.key.as_mut() {
            fix(p);
        }
        for u in &mut self.upstream {
            if let Some(p) = u.ca.as_mut() {
                fix(p);
            }
        }
    }

    /// Checks that the values fit together (names, listen, heartbeat, tls, upstreams, nodes).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|message| ConfigError::Invalid {
            path: None,
            message,
        })
    }

    fn check(&self) -> Result<(), String> {
        for n in &self.nodes {
            if n.grant.role == pointhub_schemas::Role::Hub && n.grant.namespace.is_none() {
                tracing::warn!(
                    node = %n.grant.name,
                    "child hub without a namespace may publish under any namespace: write namespace = \"*\" to say so, or the namespace it forwards (e.g. plant1)"
                );
            }
        }
        pointhub_schemas::name::validate_name(&self.name, 64).map_err(|e| format!("name: {e}"))?;
        if self.name.contains('/') {
            return Err("name: a hub name is one segment, without '/'".into());
        }
        if self.listen.is_empty() {
            return Err("listen: give at least one address, e.g. [\"127.0.0.1:7420\"]".into());
        }
        for l in &self.listen {
            l.parse::<std::net::SocketAddr>().map_err(|_| {
                format!("listen: {l:?} is not an address like 127.0.0.1:7420 or [::]:7420")
            })?;
        }
        if self.heartbeat.interval_ms == 0
            || self.heartbeat.timeout_ms <= self.heartbeat.interval_ms
        {
            return Err(
                "heartbeat: timeout_ms must be larger than interval_ms (defaults 3000 and 1000)"
                    .into(),
            );
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err("tls: give both cert and key, or neither".into());
        }
        for (i, u) in self.upstream.iter().enumerate() {
            u.settings(format!("upstream {i}"))
                .validate()
                .map_err(|e| e.to_string())?;
        }
        let mut seen = std::collections::HashSet::new();
        for n in &self.nodes {
            n.grant
                .validate_shape()
                .map_err(|e| format!("nodes: {:?}: {e}", n.grant.name))?;
            if !seen.insert(n.fingerprint) {
                return Err(format!(
                    "nodes: fingerprint {} is listed twice",
                    n.fingerprint
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        HubConfig::parse(DEFAULT_TOML).expect("the shipped example is valid");
        HubConfig::parse(include_str!("../../examples/modbus/hub.toml"))
            .expect("the Modbus example is valid");
        for (name, text) in [
            (
                "chain/dmz-hub.toml",
                include_str!("../../examples/chain/dmz-hub.toml"),
            ),
            (
                "chain/cloud-hub.toml",
                include_str!("../../examples/chain/cloud-hub.toml"),
            ),
        ] {
            HubConfig::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn garbage_is_explained() {
        assert!(HubConfig::parse("name = 3").is_err());
        let e = HubConfig::parse("name = \"h\"\nlisten = [\"nowhere\"]").expect_err("refused");
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("not an address"), "{e}");
        let e = HubConfig::parse("name = \"h\"\ncolour = 1").expect_err("refused");
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
