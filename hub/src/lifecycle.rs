//! A hub's life: [`Hub::build`] loads and checks everything that can fail (the configuration,
//! the hub's key and certificate, its TLS set-up, the store and audit log, every upstream
//! link's CA file) before a single port is bound; [`Built::serve`] then runs it on bound
//! listeners until shutdown, and on shutdown tells every node `ShuttingDown`, waits for their
//! sessions to end within the configured grace period, and stops every task it started.

use crate::config::HubConfig;
use crate::server::Handshakes;
use crate::state::Hub;
use pointhub_link::identity;
use pointhub_link::identity::IdentityError;
use pointhub_link::tls::TlsError;
use pointhub_link::{tls, LinkConfig};
use pointhub_schemas::sys::SysNamespace;
use pointhub_schemas::{DataType, ErrorCode, Limits, Role, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why a hub could not be built or served. Each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The configuration was refused (or `[tls]` gives only one of cert and key).
    #[error("hub configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The hub's key or certificate could not be read, made or written.
    #[error("hub identity: {0}")]
    Identity(#[from] IdentityError),
    /// The TLS server set-up could not be made from the hub's key and certificate.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The store or audit log in the data folder could not be opened (in use, damaged, missing).
    #[error("{0}")]
    Store(#[from] crate::access::AccessError),
    /// An `[[upstream]]` link could not be set up (e.g. its CA file could not be read).
    #[error("{source} (the parent at {url})")]
    Upstream {
        /// The parent's first address, to say which section failed.
        url: String,
        /// What is wrong with the section.
        source: pointhub_link::SectionError,
    },
    /// A durable subscription kept in the data folder could not be opened.
    #[error("{0}")]
    Durable(#[from] crate::durable::registry::DurableError),
    /// An `[[upstream]]` link's spool in the data folder could not be opened.
    #[error("upstream {index}: its spool: {source} (free the folder, or set buffer_max_bytes = 0 to run without one)")]
    Spool {
        /// The link's place in the config.
        index: usize,
        /// Why the spool could not be opened.
        source: pointhub_spool::BufferError,
    },
    /// An I/O error while serving (a listener's local address could not be read).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A hub that has loaded and checked everything, and bound nothing yet.
pub struct Built {
    hub: Arc<Hub>,
    tls: Arc<rustls::ServerConfig>,
    upstream: Vec<(LinkConfig, crate::upstream::Forward)>,
}

impl Hub {
    /// Loads and checks everything a hub needs; binds nothing. Every failure names what to fix.
    pub fn build(config: HubConfig) -> Result<Built, HubError> {
        config.validate()?;
        let mut sans: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            config.name.clone(),
        ];
        sans.extend(config.tls.names.iter().cloned());
        let identity = match (&config.tls.cert, &config.tls.key) {
            (Some(c), Some(k)) => identity::load(c, k)?,
            (Some(_), None) | (None, Some(_)) => {
                return Err(HubError::Config(crate::config::ConfigError::Invalid {
                    path: None,
                    message:
                        "[tls] needs both cert and key (or neither, for the key the hub makes itself)"
                            .into(),
                }))
            }
            (None, None) => {
                let (id, created) =
                    identity::load_or_create(&config.data_dir, "hub", &config.name, &sans)?;
                if created {
                    info!(dir = %config.data_dir.display(), "made the hub's key and certificate");
                }
                id
            }
        };
        let tls = tls::server_config(&identity, config.tls.allow_tls12)?;
        let upstream = config
            .upstream
            .iter()
            .enumerate()
            .map(|(index, up)| {
                up.settings(format!("upstream {index}"))
                    .build(identity.clone(), Role::Hub, &config.name)
                    .map_err(|source| HubError::Upstream {
                        url: up.urls.first().map(|u| u.to_string()).unwrap_or_default(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Each link's spool is opened now: one that cannot be is refused before a port binds.
        let upstream = upstream
            .into_iter()
            .enumerate()
            .map(|(index, link)| {
                let max = config.upstream[index].buffer_max_bytes;
                let dir = config.data_dir.join(format!("upstream-{index}"));
                crate::upstream::Forward::open(&dir, max)
                    .map(|fwd| (link, fwd))
                    .map_err(|source| HubError::Spool { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let access = crate::access::Access::open(
            &config.data_dir,
            &config.nodes,
            config.audit.max_bytes,
            config.audit.keep,
        )?;
        let durables =
            crate::durable::registry::Durables::open(&config.data_dir, &config.durable, |fp| {
                access.is_revoked(fp)
            })?;
        info!(fingerprint = %identity.fingerprint, "hub identity: nodes pin this fingerprint");
        let limits = Limits {
            max_frame: config.limits.max_frame,
            max_batch: config.limits.max_batch,
            max_name_len: config.limits.max_name_len,
            ..Limits::default()
        };
        let hub = Arc::new(Hub::new(config, access, durables, limits));
        match hub.access().store.points() {
            Ok(saved) => {
                if !saved.is_empty() {
                    info!(
                        points = saved.len(),
                        "restored last values (stale until their edges return)"
                    );
                }
                hub.core().restore(saved);
            }
            Err(e) => warn!(error = %e, "cannot restore last values"),
        }
        hub.set_sys(
            &SysNamespace::of(hub.name()).point("version"),
            DataType::String,
            Value::String(pointhub_link::SOFTWARE.into()),
        );
        hub.set_sys(
            &SysNamespace::of(hub.name()).point("connected"),
            DataType::Bool,
            Value::Bool(true),
        );
        first_admin(&hub);
        Ok(Built { hub, tls, upstream })
    }
}

/// No default passwords: the first start makes the console's admin with a random password,
/// written to a file only its owner reads, never into the log (logs are kept, shipped and read
/// by more people than the operator).
fn first_admin(hub: &Hub) {
    if !hub
        .access()
        .store
        .users()
        .map(|u| u.is_empty())
        .unwrap_or(false)
    {
        return;
    }
    let req = crate::access::AdminRequest::UsersAdd {
        name: "admin".into(),
        role: crate::store::UserRole::Admin,
        namespaces: vec![],
        nodes: vec![],
    };
    match hub.access().execute(req, "first-start") {
        Ok(v) => {
            let file = hub.config().data_dir.join("admin-password.txt");
            let text = format!("{}\n", v["password"].as_str().unwrap_or_default());
            let written = std::fs::write(&file, text)
                .and_then(|_| pointhub_link::identity::owner_only(&file));
            match written {
                Ok(()) => warn!(
                    user = "admin",
                    file = %file.display(),
                    "first start: console login made; its password is in this file (owner only): read it, then delete it (reset: pointhub hub users add admin --role admin)"
                ),
                Err(e) => {
                    warn!(error = %e, file = %file.display(), "first start: console login made, but its password could not be written: reset it with `pointhub hub users add admin --role admin`")
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot make the console's admin user"),
    }
}

impl Built {
    /// The hub's state, for tests and embedders (its HTTP router is `server::router`).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Runs the hub on bound listeners until `shutdown` fires, then shuts down in order: stop
    /// accepting, tell every node `ShuttingDown`, wait (up to `[limits] shutdown_grace_ms`)
    /// for their sessions to end, stop every task.
    pub async fn serve(
        self,
        listeners: Vec<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), HubError> {
        let Built { hub, tls, upstream } = self;
        let app = crate::server::router(hub.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let handshakes = Arc::new(Handshakes::default());
        let tracker = hub.tasks().clone();
        // Accepting stops first, at the outer signal; everything else at the hub's own token,
        // once the nodes were told.
        let accepting = shutdown.child_token();
        // Durable subscriptions take what the table passes on before any node can connect.
        for d in hub.durables().all() {
            crate::durable::start(&hub, d);
        }
        for listener in listeners {
            let addr = listener.local_addr()?;
            info!(addr = %addr, "listening on wss://{addr}/node");
            tracker.spawn(crate::server::accept_loop(
                listener,
                acceptor.clone(),
                app.clone(),
                hub.clone(),
                handshakes.clone(),
                accepting.clone(),
            ));
        }
        let stop = hub.shutdown().clone();
        tracker.spawn(crate::server::sys_ticker(hub.clone(), stop.clone()));
        tracker.spawn(crate::saver::run(hub.clone(), stop.clone()));
        for (i, (link, fwd)) in upstream.into_iter().enumerate() {
            if let Some(up) = hub.config().upstream.get(i).cloned() {
                tracker.spawn(crate::upstream::run(
                    hub.clone(),
                    i,
                    up,
                    link,
                    fwd,
                    stop.clone(),
                ));
            }
        }
        #[cfg(unix)]
        {
            let sock = hub.config().data_dir.join("admin.sock");
            match crate::admin::bind(&sock) {
                Ok(l) => {
                    info!(path = %sock.display(), "admin socket (owner only): pointhub hub keys|tokens use it");
                    tracker.spawn(crate::admin::serve(hub.clone(), l, stop.clone()));
                }
                Err(e) => {
                    warn!(error = %e, path = %sock.display(), "no admin socket: key approvals need the hub stopped")
                }
            }
        }
        tracker.close();
        shutdown.cancelled().await;
        let grace = Duration::from_millis(hub.config().limits.shutdown_grace_ms);
        let deadline = tokio::time::Instant::now() + grace;
        // Batches taken are acknowledged once kept; later ones stay with their nodes.
        hub.keepers()
            .drain(grace.min(Duration::from_millis(1500)))
            .await;
        let nodes: Vec<_> = hub.sessions().all().into_iter().map(|n| n.tx).collect();
        info!(
            sessions = nodes.len(),
            grace_ms = grace.as_millis() as u64,
            "hub shutting down: telling its nodes"
        );
        let why = format!(
            "hub {} is shutting down: this node reconnects by itself (to another hub, if it has one)",
            hub.name()
        );
        for tx in nodes {
            tx.fail(ErrorCode::ShuttingDown, why.clone()).await;
        }
        while !hub.sessions().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub.shutdown().cancel();
        if tokio::time::timeout_at(deadline + Duration::from_millis(500), tracker.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not stop within the grace period");
        }
        info!("hub stopped");
        Ok(())
    }
}

/// Builds a hub and runs it on bound listeners until `shutdown` fires.
pub async fn run(
    config: HubConfig,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    Hub::build(config)?.serve(listeners, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, extra: &str) -> HubConfig {
        let text = format!(
            "name = \"hub1\"\nlisten = [\"127.0.0.1:0\"]\ndata_dir = \"{}\"\n{extra}",
            dir.join("data").display()
        );
        toml::from_str(&text).expect("config parses")
    }

    fn refusal(dir: &std::path::Path, extra: &str) -> String {
        match Hub::build(config(dir, extra)) {
            Ok(_) => panic!("built with {extra}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn build_refuses_a_bad_config_before_anything_binds_each_with_its_own_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let e = refusal(
            d,
            &format!(
                "[tls]\ncert = \"{0}/none.crt\"\nkey = \"{0}/none.key\"\n",
                d.display()
            ),
        );
        assert!(e.contains("none.crt") || e.contains("none.key"), "{e}");
        let e = refusal(
            d,
            &format!(
                "[[upstream]]\nurls = [\"wss://127.0.0.1:1\"]\nca = \"{}/no-ca.pem\"\n",
                d.display()
            ),
        );
        assert!(e.contains("upstream 0") && e.contains("no-ca.pem"), "{e}");
        // An upstream spool that cannot be opened (a file where its folder goes) is refused too.
        std::fs::create_dir_all(d.join("data")).expect("mkdir");
        std::fs::write(d.join("data/upstream-0"), "not a folder").expect("write");
        let e = refusal(
            d,
            "[[upstream]]\nurls = [\"wss://127.0.0.1:1\"]\nfingerprint = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"\n",
        );
        assert!(e.contains("upstream 0: its spool"), "{e}");
        std::fs::remove_file(d.join("data/upstream-0")).expect("rm");
        // A grant's patterns are typed: an invalid one is refused as the config is read, with
        // the line, the key and what is wrong.
        let text = format!(
            "name = \"hub1\"\ndata_dir = \"{}\"\n[[nodes]]\nfingerprint = \"sha256:1111111111111111111111111111111111111111111111111111111111111111\"\nrole = \"client\"\nname = \"hmi\"\nread = [\"plant1/**x\"]\n",
            d.display()
        );
        let e = HubConfig::parse(&text).expect_err("refused").to_string();
        assert!(
            e.contains("line 7") && e.contains("read") && e.contains("must stand alone"),
            "{e}"
        );
        // None of them bound or left anything behind but the folder it was to use.
        assert!(!d.join("data/admin.sock").exists());
        // A good one builds.
        Hub::build(config(d, "")).expect("builds");
    }

    #[tokio::test]
    async fn the_http_router_answers_without_a_socket() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use tower_service::Service;
        let dir = tempfile::tempdir().expect("tempdir");
        let built = Hub::build(config(dir.path(), "")).expect("builds");
        let mut app = crate::server::router(built.hub().clone());
        let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
        let res = app.call(get("/healthz")).await.expect("answer");
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.call(get("/api/v1/points")).await.expect("answer");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().contains_key("content-security-policy"));
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .expect("body");
        assert!(String::from_utf8_lossy(&body).contains("Bearer"));
    }
}
