//! Where the historian's database is and how the link to it is secured: the connection string,
//! a password from a file, and TLS with the server's certificate checked against CA files (and
//! the historian's own certificate where the server asks for one).
//!
//! With `ca` set the link is TLS or nothing (`sslmode=require` whatever the connection string
//! says, so a server or a path in between cannot talk it down to plain text), and the server's
//! certificate must chain to one of the CA files and name the host dialled. Without `ca` the
//! link is plain TCP, as before; the log says so when the server is not on this machine.

use crate::HistorianError;
use pointhub_client::config::HistorianSection;
use pointhub_link::identity;
use std::path::Path;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::warn;

/// A database to connect to.
#[derive(Clone)]
pub struct Target {
    /// The parsed connection string, with the password from `password_file` if given.
    pub config: Config,
    pub(crate) tls: Option<MakeRustlsConnect>,
}

fn tls(section: &HistorianSection) -> Result<MakeRustlsConnect, HistorianError> {
    let mut roots = rustls::RootCertStore::empty();
    for f in &section.ca {
        for c in identity::load_certs(f)? {
            roots
                .add(c)
                .map_err(|e| HistorianError::Tls(format!("ca {}: {e}", f.display())))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(pointhub_link::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| HistorianError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&section.cert, &section.key) {
        (Some(c), Some(k)) => {
            let id = identity::load(c, k)?;
            builder
                .with_client_auth_cert(id.certs, id.key)
                .map_err(|e| HistorianError::Tls(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn local(config: &Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

fn read_password(path: &Path) -> Result<String, HistorianError> {
    let text = std::fs::read_to_string(path).map_err(|source| HistorianError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

impl Target {
    /// The database of a `[historian]` section: its files read now.
    pub fn new(section: &HistorianSection) -> Result<Target, HistorianError> {
        let mut config = crate::database_config(&section.database)?;
        if let Some(f) = &section.password_file {
            config.password(read_password(f)?);
        }
        let tls = if section.ca.is_empty() {
            if !local(&config) {
                warn!("the historian's database is not on this machine and the link to it is not encrypted: set historian.ca (docs/historian.md)");
            }
            None
        } else {
            config.ssl_mode(SslMode::Require);
            Some(tls(section)?)
        };
        Ok(Target { config, tls })
    }

    /// Whether the link is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}
