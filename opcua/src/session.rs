//! The UA client as the source configures it: its application certificate, which server
//! certificates it trusts, how it connects, and the session's events as a channel.

use crate::config::{Mode, OpcUaConfig, Security, Trust};
use futures_util::StreamExt;
use opcua::client::transport::TcpConnector;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, Session, SessionEventLoop, SessionPollResult,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{MessageSecurityMode, StatusCode, UserTokenPolicy};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a request may take before the server counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Keep-alive reads of the server's state; three failed in a row end the session.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Why the UA client cannot be made or connect.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client's settings were refused (by the UA library).
    #[error("OPC UA client settings: {0}")]
    Settings(String),
    /// The password file could not be read.
    #[error("password_file {path}: {source}")]
    Password {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        source: std::io::Error,
    },
    /// The server could not be reached or refused the session.
    #[error("{0}")]
    Connect(String),
}

/// What the session's event loop says.
#[derive(Debug)]
pub(crate) enum Event {
    /// Connected, the first time or again (subscriptions made again already).
    Connected,
    /// The connection was lost; the loop reconnects by itself.
    Lost(StatusCode),
    /// An attempt to reconnect failed.
    Failed(StatusCode),
    /// The loop ended: this session is done.
    Ended(StatusCode),
}

/// Whether the trusted folder holds a certificate already (then first use is over).
fn trusts_any(pki: &Path) -> bool {
    std::fs::read_dir(pki.join("trusted"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// The server certificates trusted now, by file name.
pub(crate) fn trusted(pki: &Path) -> Vec<String> {
    std::fs::read_dir(pki.join("trusted"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the client (its certificate made on the first start, which takes a moment: call it
/// off the async threads). Returns whether this is a first use that will trust the server's
/// certificate.
pub(crate) fn client(cfg: &OpcUaConfig, edge: &str) -> Result<(Client, bool), SessionError> {
    let pki = cfg
        .pki_dir
        .clone()
        .unwrap_or_else(|| Path::new("opcua-pki").join(&cfg.name));
    let first_use = cfg.trust == Trust::FirstUse && !trusts_any(&pki);
    let publish = Duration::from_millis(cfg.publishing_ms.saturating_mul(10)) + REQUEST_TIMEOUT;
    let client = ClientBuilder::new()
        .application_name(format!("pointhub edge {edge} {}", cfg.name))
        .application_uri(format!("urn:pointhub:edge:{edge}:{}", cfg.name))
        .product_uri("urn:pointhub")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(first_use)
        .verify_server_certs(true)
        .session_retry_limit(-1)
        .recreate_subscriptions(false)
        .session_retry_initial(Duration::from_millis(250))
        .session_retry_max(Duration::from_secs(5))
        .keep_alive_interval(KEEP_ALIVE)
        .max_failed_keep_alive_count(3)
        .request_timeout(REQUEST_TIMEOUT)
        .publish_timeout(publish)
        .client()
        .map_err(|e| SessionError::Settings(e.join("; ")))?;
    Ok((client, first_use))
}

fn identity(cfg: &OpcUaConfig) -> Result<IdentityToken, SessionError> {
    match (&cfg.user, &cfg.password_file) {
        (Some(user), Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|source| SessionError::Password {
                path: file.clone(),
                source,
            })?;
            let password = text.lines().next().unwrap_or("").to_string();
            Ok(IdentityToken::new_user_name(user.as_str(), password))
        }
        _ => Ok(IdentityToken::Anonymous),
    }
}

/// A session to the configured server: with no security and no user straight away (the loop
/// dials); otherwise after asking the server for its endpoints (and its certificate).
pub(crate) async fn connect(
    client: &mut Client,
    cfg: &OpcUaConfig,
) -> Result<(Arc<Session>, SessionEventLoop<TcpConnector>), SessionError> {
    let identity = identity(cfg)?;
    let url = cfg.endpoint.as_str();
    let err = |e: opcua::types::Error| SessionError::Connect(e.to_string());
    if cfg.security == Security::None && matches!(identity, IdentityToken::Anonymous) {
        return client
            .connect_to_endpoint_directly(
                (
                    url,
                    SecurityPolicy::None.to_str(),
                    MessageSecurityMode::None,
                    UserTokenPolicy::anonymous(),
                ),
                identity,
            )
            .map_err(err);
    }
    let policy = match cfg.security {
        Security::None => SecurityPolicy::None,
        Security::Basic256sha256 => SecurityPolicy::Basic256Sha256,
        Security::Aes128Sha256Rsaoaep => SecurityPolicy::Aes128Sha256RsaOaep,
    };
    let mode = match (cfg.security, cfg.mode) {
        (Security::None, _) => MessageSecurityMode::None,
        (_, Mode::Sign) => MessageSecurityMode::Sign,
        (_, Mode::SignAndEncrypt) => MessageSecurityMode::SignAndEncrypt,
    };
    client
        .connect_to_matching_endpoint((url, policy.to_str(), mode), identity)
        .await
        .map_err(err)
}

/// Runs the session's event loop; what it says goes to the channel returned.
pub(crate) fn events(event_loop: SessionEventLoop<TcpConnector>) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = Box::pin(event_loop.enter());
        while let Some(ev) = stream.next().await {
            let out = match ev {
                Ok(SessionPollResult::Reconnected(_)) => Event::Connected,
                Ok(SessionPollResult::ConnectionLost(sc)) => Event::Lost(sc),
                Ok(SessionPollResult::ReconnectFailed(sc)) => Event::Failed(sc),
                Ok(_) => continue,
                Err(sc) => {
                    let _ = tx.send(Event::Ended(sc));
                    return;
                }
            };
            if tx.send(out).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::Ended(StatusCode::Good));
    });
    rx
}
