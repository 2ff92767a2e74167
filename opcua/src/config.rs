//! `kind = "opcua"` sources: a device's or a PLC's OPC UA server, and the nodes that are points.

use pointhub_schemas::DataType;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// An OPC UA server as a source (`[[sources]] kind = "opcua"`), its points in
/// `[[sources.points]]`, named `<namespace>/<name>/<point name>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// The source's name: unique among the edge's sources, and part of its points' names.
    pub name: String,
    /// The server's endpoint URL, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// The security policy: `none`, `basic256sha256` or `aes128-sha256-rsaoaep`.
    #[serde(default)]
    pub security: Security,
    /// The message security mode with a policy other than `none`: `sign` or
    /// `sign-and-encrypt` (the default).
    #[serde(default)]
    pub mode: Mode,
    /// A user name, for a server that asks for one; with `password_file`.
    pub user: Option<String>,
    /// A file whose first line is the user's password, so the configuration holds no secret.
    pub password_file: Option<PathBuf>,
    /// Whose certificates to trust: `first-use` (the default: the server's certificate met on
    /// the first connection is trusted from then on, and the log names it) or `pinned` (only
    /// certificates an engineer put in `<pki_dir>/trusted`).
    #[serde(default)]
    pub trust: Trust,
    /// Where the source's own application certificate and the trusted server certificates
    /// live (default `opcua-pki/<source name>` beside the configuration). The certificate is
    /// made on the first start.
    pub pki_dir: Option<PathBuf>,
    /// How often the server sends what changed, in milliseconds (default 500).
    #[serde(default = "default_publishing")]
    pub publishing_ms: u64,
    /// How often the server samples each node, in milliseconds (default 250).
    #[serde(default = "default_sampling")]
    pub sampling_ms: u64,
    /// One entry per point: the node it reads.
    #[serde(default)]
    pub points: Vec<OpcUaPoint>,
}

fn default_publishing() -> u64 {
    500
}
fn default_sampling() -> u64 {
    250
}

/// The security policy of the secure channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Security {
    /// No signing, no encryption: only where the configuration asks for it.
    None,
    /// `Basic256Sha256`.
    #[default]
    Basic256sha256,
    /// `Aes128_Sha256_RsaOaep`.
    Aes128Sha256Rsaoaep,
}

/// The message security mode with a policy other than `none`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Messages signed.
    Sign,
    /// Messages signed and encrypted.
    #[default]
    SignAndEncrypt,
}

/// Whose server certificates are trusted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// The certificate met on the first connection, and from then on only it.
    #[default]
    FirstUse,
    /// Only the certificates in `<pki_dir>/trusted`.
    Pinned,
}

/// One point from one node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaPoint {
    /// The point's name below the source (`tank1/level`).
    pub name: String,
    /// The node's id as the server gives it: `ns=2;s=Tank1.Level`, `ns=3;i=1001`.
    pub node: String,
    /// The point's data type: `float`, `int`, `uint`, `bool` or `string`; the node's values
    /// are converted to it (a value that cannot be is `BadTypeMismatch`).
    #[serde(rename = "type")]
    pub dtype: DataType,
    /// Clients may write it (through the hub, with a grant that allows it); the node's own
    /// access level still decides.
    #[serde(default)]
    pub writable: bool,
    /// Report a change only past this absolute deadband (numeric nodes).
    pub deadband: Option<f64>,
    /// The engineering unit.
    pub unit: Option<String>,
    /// A description for HMIs.
    pub description: Option<String>,
}

/// Why an OPC UA source section is refused; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpcUaConfigError {
    /// The endpoint is not an `opc.tcp://` URL.
    #[error("sources: opcua {src:?}: endpoint {endpoint:?}: write opc.tcp://host:port/path")]
    Endpoint {
        /// The source.
        src: String,
        /// What was written.
        endpoint: String,
    },
    /// A node id that does not parse.
    #[error("sources: opcua {src:?}: point {point:?}: node {node:?}: write a node id such as ns=2;s=Tank1.Level or ns=3;i=1001")]
    Node {
        /// The source.
        src: String,
        /// The point.
        point: String,
        /// What was written.
        node: String,
    },
    /// No points.
    #[error("sources: opcua {src:?}: no points: add [[sources.points]] with name, node and type")]
    NoPoints {
        /// The source.
        src: String,
    },
    /// A point name given twice.
    #[error("sources: opcua {src:?}: point {point:?} is listed twice")]
    Twice {
        /// The source.
        src: String,
        /// The point.
        point: String,
    },
    /// A user without a password file, or the other way round.
    #[error("sources: opcua {src:?}: user and password_file go together: give both or neither")]
    User {
        /// The source.
        src: String,
    },
    /// An interval out of range.
    #[error("sources: opcua {src:?}: {key} = {value}: write 10 to 3600000 (milliseconds)")]
    Interval {
        /// The source.
        src: String,
        /// The key.
        key: &'static str,
        /// What was written.
        value: u64,
    },
    /// A deadband that is negative or not a number.
    #[error(
        "sources: opcua {src:?}: point {point:?}: deadband {value}: write a number of 0 or more"
    )]
    Deadband {
        /// The source.
        src: String,
        /// The point.
        point: String,
        /// What was written.
        value: f64,
    },
}

impl OpcUaConfig {
    /// Makes relative file names relative to `base` (the configuration file's folder), and
    /// gives the PKI folder its default.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.password_file.as_mut() {
            fix(p);
        }
        let pki = self
            .pki_dir
            .get_or_insert_with(|| Path::new("opcua-pki").join(&self.name));
        fix(pki);
    }

    /// Checks the settings and the points.
    pub fn validate(&self) -> Result<(), OpcUaConfigError> {
        let src = || self.name.clone();
        let rest = self.endpoint.strip_prefix("opc.tcp://").unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return Err(OpcUaConfigError::Endpoint {
                src: src(),
                endpoint: self.endpoint.clone(),
            });
        }
        if self.user.is_some() != self.password_file.is_some() {
            return Err(OpcUaConfigError::User { src: src() });
        }
        for (key, value) in [
            ("publishing_ms", self.publishing_ms),
            ("sampling_ms", self.sampling_ms),
        ] {
            if !(10..=3_600_000).contains(&value) {
                return Err(OpcUaConfigError::Interval {
                    src: src(),
                    key,
                    value,
                });
            }
        }
        if self.points.is_empty() {
            return Err(OpcUaConfigError::NoPoints { src: src() });
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.points {
            if crate::convert::node_id(&p.node).is_none() {
                return Err(OpcUaConfigError::Node {
                    src: src(),
                    point: p.name.clone(),
                    node: p.node.clone(),
                });
            }
            if let Some(d) = p.deadband.filter(|d| !(d.is_finite() && *d >= 0.0)) {
                return Err(OpcUaConfigError::Deadband {
                    src: src(),
                    point: p.name.clone(),
                    value: d,
                });
            }
            if !names.insert(p.name.as_str()) {
                return Err(OpcUaConfigError::Twice {
                    src: src(),
                    point: p.name.clone(),
                });
            }
        }
        Ok(())
    }
}
