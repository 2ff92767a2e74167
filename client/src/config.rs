//! A client node's configuration file (`client.toml`): its name, the `[hub]` link section, and
//! the sinks it feeds (`[modbus_server]`, `[historian]`).

use pointhub_link::config::{HubSection, SectionError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A client configuration that cannot be used, with the file and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The text is not TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}: {source}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The TOML error, with its line.
        source: toml::de::Error,
    },
    /// The `[hub]` section does not check out; `source` says why.
    #[error("{path}: {source}")]
    Hub {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with the section.
        source: SectionError,
    },
    /// The `[historian]` section does not check out.
    #[error("{path}: {source}")]
    Historian {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with the section.
        source: HistorianSectionError,
    },
    /// The `[mqtt]` section does not check out.
    #[cfg(feature = "mqtt")]
    #[error("{path}: {source}")]
    Mqtt {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with the section.
        source: crate::sinks::mqtt::MqttSectionError,
    },
    /// The `[sparkplug]` section does not check out.
    #[cfg(feature = "mqtt")]
    #[error("{path}: {source}")]
    Sparkplug {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with the section.
        source: crate::sinks::sparkplug::SparkplugSectionError,
    },
    /// The `[modbus_server]` section cannot be served.
    #[cfg(feature = "modbus")]
    #[error("{path}: {source}")]
    ModbusServer {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with the section.
        source: crate::sinks::modbus::ServerConfigError,
    },
}

/// A client node's configuration file (`client.toml`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The name this client calls itself (the hub's name for its key wins).
    pub name: String,
    /// The hub to dial and how to verify it.
    pub hub: HubSection,
    /// A local Modbus TCP server for an HMI (`pointhub client modbus-server`).
    #[cfg(feature = "modbus")]
    pub modbus_server: Option<crate::sinks::modbus::ServerConfig>,
    /// Where `pointhub client historian` records the points (a PostgreSQL database).
    pub historian: Option<HistorianSection>,
    /// The broker `pointhub client mqtt` publishes the points to.
    #[cfg(feature = "mqtt")]
    pub mqtt: Option<crate::sinks::mqtt::MqttSection>,
    /// The broker `pointhub client sparkplug` publishes to, as a Sparkplug B edge node.
    #[cfg(feature = "mqtt")]
    pub sparkplug: Option<crate::sinks::sparkplug::SparkplugSection>,
}

/// A `[historian]` key that does not check out.
#[derive(Debug, thiserror::Error)]
#[error("historian.{key}: {message}")]
pub struct HistorianSectionError {
    /// The key concerned (`points`, `batch_rows`, …).
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub message: String,
}

fn section_error(key: &'static str, message: impl Into<String>) -> HistorianSectionError {
    HistorianSectionError {
        key,
        message: message.into(),
    }
}

/// `[historian]`: what `pointhub client historian` records and where (docs/historian.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorianSection {
    /// The PostgreSQL connection string, either `postgresql://user@host:port/dbname` or
    /// `host=… port=… user=… dbname=…`.
    pub database: String,
    /// The point patterns to record (default `**`: every point the client's key may read).
    #[serde(default = "every_point")]
    pub points: Vec<String>,
    /// The folder of the on-disk buffer that holds rows the database has not committed yet
    /// (relative to this file; default `historian-buffer`).
    #[serde(default = "default_buffer_dir")]
    pub buffer_dir: PathBuf,
    /// The buffer's bound in bytes (default 1 GiB): past it the oldest rows are dropped, counted
    /// and logged.
    #[serde(default = "default_buffer_max_bytes")]
    pub buffer_max_bytes: u64,
    /// Rows per insert statement (default 5,000; 1 to 100,000).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// The hub's durable subscription the historian takes its points from (default
    /// `historian`): the hub keeps what the historian has not stored while it is away. Empty:
    /// an ordinary subscription, and what happens while the historian is away is not recorded.
    #[serde(default = "default_durable")]
    pub durable: String,
    /// PEM files of the CA certificates the database server's certificate must chain to: with
    /// them the link is TLS or nothing (docs/historian.md). Without them, plain TCP.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// The historian's own certificate (PEM), for a server that asks for one; with `key`.
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// A file whose first line is the database password, so the configuration holds no secret.
    pub password_file: Option<PathBuf>,
}

fn default_durable() -> String {
    "historian".into()
}

fn every_point() -> Vec<String> {
    vec!["**".into()]
}

fn default_buffer_dir() -> PathBuf {
    PathBuf::from("historian-buffer")
}

fn default_buffer_max_bytes() -> u64 {
    1 << 30
}

fn default_batch_rows() -> usize {
    5_000
}

impl HistorianSection {
    /// Checks the section; the error names the key and what to write instead.
    pub fn validate(&self) -> Result<(), HistorianSectionError> {
        if self.database.trim().is_empty() {
            return Err(section_error(
                "database",
                "is empty: write a PostgreSQL connection string, e.g. \"postgresql://pointhub@127.0.0.1:5432/plant\"",
            ));
        }
        if self.points.is_empty() {
            return Err(section_error(
                "points",
                "is empty: list patterns such as \"plant1/**\" (or leave it out for every point)",
            ));
        }
        for p in &self.points {
            pointhub_schemas::Pattern::parse(p)
                .map_err(|e| section_error("points", format!("{p:?}: {e}")))?;
        }
        if !(1..=100_000).contains(&self.batch_rows) {
            return Err(section_error(
                "batch_rows",
                format!("{} is out of range: write 1 to 100000", self.batch_rows),
            ));
        }
        if !self.durable.is_empty()
            && !pointhub_schemas::DurableSubscribe::valid_name(&self.durable)
        {
            return Err(section_error(
                "durable",
                format!(
                    "{:?}: use 1 to 64 of A-Z a-z 0-9 . _ - (or \"\" for none)",
                    self.durable
                ),
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(section_error(
                "cert",
                "cert and key go together: give both (the historian's certificate and its key) or neither",
            ));
        }
        if self.cert.is_some() && self.ca.is_empty() {
            return Err(section_error(
                "ca",
                "a client certificate needs TLS: add ca = [\"db-ca.pem\"] (the CA of the server's certificate)",
            ));
        }
        if self.buffer_max_bytes < 1 << 20 {
            return Err(section_error(
                "buffer_max_bytes",
                format!(
                    "{} is too small: write at least 1048576 (1 MiB)",
                    self.buffer_max_bytes
                ),
            ));
        }
        Ok(())
    }
}

impl ClientConfig {
    /// Reads and checks a configuration file; relative paths are made relative to its folder.
    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg: ClientConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.hub.validate().map_err(|source| ConfigError::Hub {
            path: path.to_path_buf(),
            source,
        })?;
        #[cfg(feature = "modbus")]
        if let Some(m) = &cfg.modbus_server {
            m.validate().map_err(|source| ConfigError::ModbusServer {
                path: path.to_path_buf(),
                source,
            })?;
        }
        if let Some(h) = &mut cfg.historian {
            h.validate().map_err(|source| ConfigError::Historian {
                path: path.to_path_buf(),
                source,
            })?;
            let base = path.parent().unwrap_or(Path::new("."));
            for p in
                h.ca.iter_mut()
                    .chain(h.cert.iter_mut())
                    .chain(h.key.iter_mut())
                    .chain(h.password_file.iter_mut())
                    .chain(std::iter::once(&mut h.buffer_dir))
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        #[cfg(feature = "mqtt")]
        if let Some(m) = &mut cfg.mqtt {
            m.validate().map_err(|source| ConfigError::Mqtt {
                path: path.to_path_buf(),
                source,
            })?;
            m.broker
                .resolve_paths(path.parent().unwrap_or(Path::new(".")));
        }
        #[cfg(feature = "mqtt")]
        if let Some(s) = &mut cfg.sparkplug {
            s.validate().map_err(|source| ConfigError::Sparkplug {
                path: path.to_path_buf(),
                source,
            })?;
            s.broker
                .resolve_paths(path.parent().unwrap_or(Path::new(".")));
        }
        cfg.hub
            .resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }
}

#[cfg(all(test, feature = "modbus"))]
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
            (
                "historian/client.toml",
                include_str!("../../examples/historian/client.toml"),
            ),
            (
                "mqtt/client.toml",
                include_str!("../../examples/mqtt/client.toml"),
            ),
        ] {
            let cfg: ClientConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.hub.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(m) = &cfg.modbus_server {
                m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            if let Some(h) = &cfg.historian {
                h.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            #[cfg(feature = "mqtt")]
            if let Some(m) = &cfg.mqtt {
                m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            #[cfg(feature = "mqtt")]
            if let Some(s) = &cfg.sparkplug {
                s.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn a_bad_modbus_server_section_is_refused_when_the_file_loads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("client.toml");
        let fp = "ab".repeat(32);
        std::fs::write(
            &path,
            format!(
                "name = \"c\"\n[hub]\nurls = [\"127.0.0.1:1\"]\nfingerprint = \"sha256:{fp}\"\ncert = \"c.crt\"\nkey = \"c.key\"\n\
                 [modbus_server]\nlisten = \"nowhere\"\npoints = []\n"
            ),
        )
        .expect("write");
        let e = ClientConfig::load(&path).expect_err("refused");
        assert!(matches!(e, ConfigError::ModbusServer { .. }), "{e:?}");
        assert!(e.to_string().contains("modbus_server.listen"), "{e}");
    }
}
