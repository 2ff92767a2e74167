//! A client node's configuration file (`client.toml`): its name, the `[hub]` link section, and
//! the sinks it feeds (`[modbus_server]`).

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
        ] {
            let cfg: ClientConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            cfg.hub.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            if let Some(m) = &cfg.modbus_server {
                m.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
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
