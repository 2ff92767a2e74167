//! A broker connection as the configuration gives it: where, how it is secured, who we are.
//!
//! TLS is on unless the configuration says `tls = false` (a broker that offers none). Trusted
//! CA file(s), the own certificate and key, and a user name with a password (or a file holding
//! it) are what brokers ask for; those three settings are all TLS needs.

use pointhub_link::identity;
use rumqttc::{MqttOptions, Transport};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The broker settings of an MQTT source or sink (keys of its `[[sources]]` entry or section).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// The broker's host name or address.
    pub host: String,
    /// The broker's port; 8883 with TLS, 1883 without, by default.
    pub port: Option<u16>,
    /// TLS to the broker (default on); `false` only for a broker that offers none.
    #[serde(default = "yes")]
    pub tls: bool,
    /// PEM files of the CA certificates the broker's certificate must chain to.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// The own certificate (PEM), for a broker that asks for one; with `key`.
    pub cert: Option<PathBuf>,
    /// The own private key (PEM), with `cert`.
    pub key: Option<PathBuf>,
    /// The user name, for a broker that asks for one.
    pub username: Option<String>,
    /// The password, with `username`; or `password_file`.
    pub password: Option<String>,
    /// A file holding the password (its first line), so the configuration holds no secret.
    pub password_file: Option<PathBuf>,
    /// The MQTT client id; default `pointhub-<node>-<source>`.
    pub client_id: Option<String>,
    /// Seconds between keep-alive pings (default 5); a broker silent for 1.5 times this is gone.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
}

fn yes() -> bool {
    true
}

fn default_keep_alive() -> u64 {
    5
}

/// Broker settings that do not check out, or files they name that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Settings that do not fit together; the sentence says what to write.
    #[error("{0}")]
    Invalid(String),
    /// A certificate, key or password file could not be read.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// A password file could not be read.
    #[error("password_file {path}: {source}")]
    Password {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// rustls refused the TLS settings (a key that does not match its certificate, say).
    #[error("TLS to the broker: {0}")]
    Tls(#[from] rustls::Error),
}

impl Broker {
    /// Makes relative file names relative to `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.ca.iter_mut().for_each(fix);
        for p in [&mut self.cert, &mut self.key, &mut self.password_file]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
    }

    /// Checks the settings that need no file.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |m: &str| Err(BrokerError::Invalid(m.to_string()));
        if self.host.trim().is_empty() {
            return bad("host is empty: write the broker's host name or address");
        }
        if self.cert.is_some() != self.key.is_some() {
            return bad(
                "cert and key go together: give both (the own certificate and its key) or neither",
            );
        }
        if self.tls && self.ca.is_empty() {
            return bad("TLS needs ca = [\"broker-ca.pem\"] (the CA the broker's certificate chains to), or tls = false for a broker that offers no TLS");
        }
        if !self.tls && (self.cert.is_some() || !self.ca.is_empty()) {
            return bad("ca, cert and key are TLS settings: remove them, or remove tls = false");
        }
        if self.password.is_some() && self.password_file.is_some() {
            return bad("give password or password_file, not both");
        }
        if (self.password.is_some() || self.password_file.is_some()) && self.username.is_none() {
            return bad("a password needs username = \"…\"");
        }
        if self.keep_alive_s == 0 || self.keep_alive_s > 3600 {
            return bad("keep_alive_s: write 1 to 3600");
        }
        Ok(())
    }

    /// The port dialled.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 8883 } else { 1883 })
    }

    /// How `rumqttc` connects, reading the files named; `client_id` unless one is configured.
    pub fn options(&self, client_id: &str) -> Result<MqttOptions, BrokerError> {
        self.validate()?;
        let id = self.client_id.as_deref().unwrap_or(client_id);
        let mut o = MqttOptions::new(id, self.host.clone(), self.port());
        o.set_keep_alive(Duration::from_secs(self.keep_alive_s));
        o.set_clean_session(true);
        o.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(user) = &self.username {
            let password = match (&self.password, &self.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .map_err(|source| BrokerError::Password {
                        path: f.clone(),
                        source,
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
                (None, None) => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        if self.tls {
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(self.tls_config()?),
            ));
        }
        Ok(o)
    }

    /// TLS 1.3 or 1.2 (brokers differ), the broker checked against the CA files, the own key
    /// shown if configured.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, BrokerError> {
        let mut roots = rustls::RootCertStore::empty();
        for f in &self.ca {
            let certs: Vec<CertificateDer<'static>> = identity::load_certs(f)?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| BrokerError::Invalid(format!("ca {}: {e}", f.display())))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(pointhub_link::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let id = identity::load(c, k)?;
                builder.with_client_auth_cert(id.certs, id.key)?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Broker {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn settings_that_do_not_fit_together_are_refused_with_what_to_write() {
        for (text, needle) in [
            ("host = \"b\"\n", "TLS needs ca"),
            ("host = \"\"\ntls = false\n", "host is empty"),
            (
                "host = \"b\"\nca = [\"a.pem\"]\ncert = \"c.pem\"\n",
                "cert and key go together",
            ),
            (
                "host = \"b\"\ntls = false\nca = [\"a.pem\"]\n",
                "TLS settings",
            ),
            (
                "host = \"b\"\ntls = false\npassword = \"x\"\n",
                "needs username",
            ),
            (
                "host = \"b\"\ntls = false\nkeep_alive_s = 0\n",
                "keep_alive_s",
            ),
        ] {
            let e = parse(text).validate().expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let plain = parse("host = \"b\"\ntls = false\n");
        plain.validate().expect("plain TCP when asked for");
        assert_eq!(plain.port(), 1883);
        assert_eq!(parse("host = \"b\"\nca = [\"a.pem\"]\n").port(), 8883);
        let e = toml::from_str::<Broker>("host = \"b\"\ncolour = 1\n")
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let b = parse("host = \"b\"\nca = [\"/nonexistent/ca.pem\"]\n");
        let e = b.options("x").expect_err("no file").to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
