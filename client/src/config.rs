//! The `[hub]` section every node's configuration shares: where the hub is, how to verify it,
//! and the node's own key.
//!
//! ```toml
//! [hub]
//! urls = ["wss://127.0.0.1:7420"]
//! fingerprint = "sha256:…"      # the hub's key, as the hub logged it; or ca = "hub-ca.pem"
//! cert = "keys/node.crt"
//! key = "keys/node.key"
//! ```

use crate::identity;
use crate::link::{HubAddr, LinkConfig, SessionOpts};
use crate::tls::ServerVerification;
use crate::Fingerprint;
use pointhub_schemas::Role;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// Hubs to dial, tried in order.
    pub urls: Vec<HubAddr>,
    /// The hub's key fingerprint (pinning).
    pub fingerprint: Option<Fingerprint>,
    /// Or: a PEM file of CA certificates the hub's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This node's certificate and private key (`pointhub keygen`).
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default = "default_interval")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// A one-time enrollment token from the hub's operator (`pointhub hub tokens create`), used
    /// while this node's key is not approved yet. `POINTHUB_ENROLL_TOKEN` overrides it.
    pub enroll_token: Option<String>,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
}

fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    3000
}
fn default_backoff_max() -> u64 {
    10_000
}

impl HubSection {
    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(ca) = self.ca.as_mut() {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("hub.urls: give at least one hub, e.g. [\"wss://127.0.0.1:7420\"]".into());
        }
        match (&self.fingerprint, &self.ca) {
            (None, None) => Err::<(), String>("hub: give fingerprint (the hub's key, as the hub logs it at start) or ca (a PEM file)".into()),
            (Some(_), Some(_)) => Err("hub: give fingerprint or ca, not both".into()),
            _ => Ok(()),
        }?;
        if self.heartbeat_ms == 0 || self.timeout_ms <= self.heartbeat_ms {
            return Err("hub: timeout_ms must be larger than heartbeat_ms".into());
        }
        Ok(())
    }

    /// Loads the node's identity and builds the link configuration.
    pub fn link_config(&self, role: Role, name: &str) -> Result<LinkConfig, String> {
        let id = identity::load(&self.cert, &self.key).map_err(|e| format!("node key: {e}"))?;
        let verify = match (&self.fingerprint, &self.ca) {
            (Some(fp), _) => ServerVerification::Pin(*fp),
            (None, Some(ca)) => ServerVerification::Ca(
                identity::load_certs(ca).map_err(|e| format!("hub.ca: {e}"))?,
            ),
            (None, None) => return Err("hub: give fingerprint or ca".into()),
        };
        let mut cfg = LinkConfig::new(self.urls.clone(), verify, id, role, name)
            .map_err(|e| e.to_string())?;
        cfg.session = SessionOpts {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            ..SessionOpts::default()
        };
        cfg.backoff_max = Duration::from_millis(self.backoff_max_ms);
        cfg.enroll_token = std::env::var("POINTHUB_ENROLL_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| self.enroll_token.clone());
        Ok(cfg)
    }
}

/// A client node's configuration file (`client.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The name this client calls itself (the hub's name for its key wins).
    pub name: String,
    pub hub: HubSection,
    /// A local Modbus TCP server for an HMI (`pointhub client modbus-server`).
    pub modbus_server: Option<crate::modbus::server::ServerConfig>,
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut cfg: ClientConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.hub
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.hub
            .resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_parse() {
        for (name, text) in [
            ("client.toml", include_str!("../../examples/client.toml")),
            (
                "modbus/client.toml",
                include_str!("../../examples/modbus/client.toml"),
            ),
        ] {
            let cfg: ClientConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.hub.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(m) = &cfg.modbus_server {
                m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }
}
