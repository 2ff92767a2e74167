//! The link section of a node's configuration: where the hub is, how to verify it, the node's own
//! key, and the session's timing. Every node's `[hub]` is a [`HubSection`]; a hub's
//! `[[upstream]]` gives the same settings for its parent (its key is the hub's own). Both turn into
//! one [`LinkSettings`], which is checked and built into a [`LinkConfig`] in one place.
//!
//! ```toml
//! [hub]
//! urls = ["wss://127.0.0.1:7420"]
//! fingerprint = "sha256:…"      # the hub's key, as the hub logged it; or ca = "hub-ca.pem"
//! cert = "keys/node.crt"
//! key = "keys/node.key"
//! ```
//!
//! Two serde types rather than one flattened section: `deny_unknown_fields`, which refuses a
//! misspelt key, does not work through `#[serde(flatten)]`.

use crate::addr::HubAddr;
use crate::dial::LinkConfig;
use crate::identity::{self, Fingerprint, Identity, IdentityError};
use crate::session::SessionOpts;
use crate::tls::{ServerVerification, TlsError};
use pointhub_schemas::Role;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A link section that does not check out or cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SectionError {
    /// The section's `urls` list is empty.
    #[error("{section}.urls: give at least one hub, e.g. [\"wss://127.0.0.1:7420\"]")]
    NoUrls {
        /// The section's name in messages (`hub`, `upstream 0`).
        section: String,
    },
    /// The section gives neither `fingerprint` nor `ca`, so the hub could not be checked.
    #[error("{section}: give fingerprint (the hub's key, as the hub logs it at start) or ca (a PEM file)")]
    NoVerification {
        /// The section's name in messages (`hub`, `upstream 0`).
        section: String,
    },
    /// The section gives both `fingerprint` and `ca`.
    #[error("{section}: give fingerprint or ca, not both")]
    BothVerifications {
        /// The section's name in messages (`hub`, `upstream 0`).
        section: String,
    },
    /// `heartbeat_ms` is 0, or `timeout_ms` is not larger than `heartbeat_ms`.
    #[error("{section}: timeout_ms must be larger than heartbeat_ms")]
    Timing {
        /// The section's name in messages (`hub`, `upstream 0`).
        section: String,
    },
    /// The node's own certificate or key (`cert`, `key`) could not be loaded.
    #[error("node key: {0}")]
    Key(#[source] IdentityError),
    /// The section's `ca` file could not be read or holds no PEM certificate.
    #[error("{section}.ca: {source}")]
    Ca {
        /// The section's name in messages: `hub`, `upstream 0`.
        section: String,
        /// Why the CA file could not be loaded.
        source: IdentityError,
    },
    /// The client TLS configuration could not be built from the node's identity and verification.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// How to reach and check a hub, from whichever section gave it.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// The section's name in messages: `hub`, `upstream 0`.
    pub section: String,
    /// Hubs to dial.
    pub urls: Vec<HubAddr>,
    /// The hub's key fingerprint (pinning) ...
    pub fingerprint: Option<Fingerprint>,
    /// ... or a PEM file of CA certificates the hub's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// A `Ping` goes out this often.
    pub heartbeat_ms: u64,
    /// Nothing heard for this long ends the session.
    pub timeout_ms: u64,
    /// Longest wait between reconnect attempts.
    pub backoff_max_ms: u64,
    /// A one-time enrollment token, sent while the key is not approved.
    pub enroll_token: Option<String>,
}

impl LinkSettings {
    /// Checks what can be checked without reading a file.
    pub fn validate(&self) -> Result<(), SectionError> {
        let section = self.section.clone();
        if self.urls.is_empty() {
            return Err(SectionError::NoUrls { section });
        }
        match (&self.fingerprint, &self.ca) {
            (None, None) => return Err(SectionError::NoVerification { section }),
            (Some(_), Some(_)) => return Err(SectionError::BothVerifications { section }),
            _ => {}
        }
        if self.heartbeat_ms == 0 || self.timeout_ms <= self.heartbeat_ms {
            return Err(SectionError::Timing { section });
        }
        Ok(())
    }

    /// How the hub is checked: its pinned key, or the roots read from the CA file.
    pub fn verification(&self) -> Result<ServerVerification, SectionError> {
        match (&self.fingerprint, &self.ca) {
            (Some(fp), _) => Ok(ServerVerification::Pin(*fp)),
            (None, Some(ca)) => Ok(ServerVerification::Ca(identity::load_certs(ca).map_err(
                |source| SectionError::Ca {
                    section: self.section.clone(),
                    source,
                },
            )?)),
            (None, None) => Err(SectionError::NoVerification {
                section: self.section.clone(),
            }),
        }
    }

    /// The link configuration for a node with this identity, role and name.
    pub fn build(
        &self,
        identity: Identity,
        role: Role,
        name: &str,
    ) -> Result<LinkConfig, SectionError> {
        self.validate()?;
        let mut cfg = LinkConfig::new(
            self.urls.clone(),
            self.verification()?,
            identity,
            role,
            name,
        )?;
        cfg.session = SessionOpts {
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            timeout: Duration::from_millis(self.timeout_ms),
            ..SessionOpts::default()
        };
        cfg.backoff_max = Duration::from_millis(self.backoff_max_ms);
        cfg.enroll_token = self.enroll_token.clone();
        Ok(cfg)
    }
}

/// Default `heartbeat_ms` of a link section.
pub fn default_heartbeat_ms() -> u64 {
    1000
}
/// Default `timeout_ms` of a link section.
pub fn default_timeout_ms() -> u64 {
    3000
}
/// Default `backoff_max_ms` of a link section.
pub fn default_backoff_max_ms() -> u64 {
    10_000
}

/// A node's `[hub]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// Hubs to dial, tried in order.
    pub urls: Vec<HubAddr>,
    /// The hub's key fingerprint (pinning).
    pub fingerprint: Option<Fingerprint>,
    /// Or: a PEM file of CA certificates the hub's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This node's certificate (`pointhub keygen`).
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// A `Ping` goes out this often.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Nothing heard for this long ends the session.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A one-time enrollment token from the hub's operator (`pointhub hub tokens create`), used
    /// while this node's key is not approved yet. `POINTHUB_ENROLL_TOKEN` overrides it.
    pub enroll_token: Option<String>,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
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

    /// The link settings this section gives; the enrollment token from `POINTHUB_ENROLL_TOKEN`
    /// wins over the file's.
    pub fn settings(&self) -> LinkSettings {
        LinkSettings {
            section: "hub".into(),
            urls: self.urls.clone(),
            fingerprint: self.fingerprint,
            ca: self.ca.clone(),
            heartbeat_ms: self.heartbeat_ms,
            timeout_ms: self.timeout_ms,
            backoff_max_ms: self.backoff_max_ms,
            enroll_token: std::env::var("POINTHUB_ENROLL_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .or_else(|| self.enroll_token.clone()),
        }
    }

    /// Checks the section without reading a file.
    pub fn validate(&self) -> Result<(), SectionError> {
        self.settings().validate()
    }

    /// Loads the node's identity and builds the link configuration.
    pub fn link_config(&self, role: Role, name: &str) -> Result<LinkConfig, SectionError> {
        let id = identity::load(&self.cert, &self.key).map_err(SectionError::Key)?;
        self.settings().build(id, role, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> HubSection {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn a_section_is_checked_with_a_message_per_mistake() {
        let base = "cert = \"n.crt\"\nkey = \"n.key\"\n";
        let fp = format!("fingerprint = \"sha256:{}\"\n", "ab".repeat(32));
        let cases = [
            (format!("urls = []\n{fp}{base}"), "give at least one hub"),
            (
                format!("urls = [\"127.0.0.1:1\"]\n{base}"),
                "give fingerprint",
            ),
            (
                format!("urls = [\"127.0.0.1:1\"]\nca = \"x.pem\"\n{fp}{base}"),
                "not both",
            ),
            (
                format!(
                    "urls = [\"127.0.0.1:1\"]\n{fp}{base}heartbeat_ms = 500\ntimeout_ms = 500\n"
                ),
                "timeout_ms must be larger",
            ),
        ];
        for (text, want) in cases {
            let e = section(&text).validate().expect_err(&text);
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        section(&format!("urls = [\"127.0.0.1:1\"]\n{fp}{base}"))
            .validate()
            .expect("a good section");
        let e = toml::from_str::<HubSection>(&format!("urls = [\"x:y\"]\n{fp}{base}"))
            .expect_err("a bad port");
        assert!(e.to_string().contains("bad port"), "{e}");
    }

    #[test]
    fn an_unreadable_ca_names_the_section_and_the_file() {
        let s = section(
            "urls = [\"127.0.0.1:1\"]\nca = \"/nonexistent/ca.pem\"\ncert = \"a\"\nkey = \"b\"\n",
        );
        let e = s.settings().verification().expect_err("no such file");
        assert!(matches!(e, SectionError::Ca { .. }), "{e:?}");
        assert!(
            e.to_string().contains("hub.ca") && e.to_string().contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }
}
