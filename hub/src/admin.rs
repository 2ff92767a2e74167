//! The operator's local channel to a running hub: a Unix socket `admin.sock` in the data folder,
//! readable and writable by the hub's user only. One JSON request per line, one JSON answer per
//! line. `pointhub hub keys|tokens …` use it while the hub runs, and open the store directly
//! while it does not. A revocation through it ends the key's live sessions at once.

use crate::access::{Access, AdminRequest};
use crate::state::Hub;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Binds the admin socket at `path`, owner-only (mode 0600), replacing a stale one.
#[cfg(unix)]
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        // A hub holds the store's lock, so no other hub uses this folder: the socket is stale.
        std::fs::remove_file(path)?;
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Answers requests on the admin socket, one JSON line each, until `shutdown` fires.
#[cfg(unix)]
pub async fn serve(hub: Arc<Hub>, listener: tokio::net::UnixListener, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
        };
        let hub = hub.clone();
        hub.tasks().clone().spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r.take(1 << 20)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match serde_json::from_str::<AdminRequest>(&line) {
                    Ok(req) => answer(&hub, req).await,
                    Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
                };
                let mut text = answer.to_string();
                text.push('\n');
                if w.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn answer(hub: &Arc<Hub>, req: AdminRequest) -> serde_json::Value {
    match crate::operator::carry_out(hub, req, "admin-socket".into()).await {
        Ok(data) => json!({"ok": true, "data": data}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

/// Why an operator's command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The running hub could not be asked (its socket failed mid-way).
    #[error("admin socket: {0}")]
    Socket(String),
    /// The running hub refused the request; its sentence says why.
    #[error("{0}")]
    Refused(String),
    /// With no hub running, the store itself refused or failed.
    #[error("{0}")]
    Access(#[from] crate::access::AccessError),
}

/// Sends a request to the running hub of `data_dir`, or, when none runs, carries it out on the
/// store directly. `nodes` are the config's `[[nodes]]` (for listings).
pub fn call(
    data_dir: &Path,
    nodes: &[crate::config::NodeEntry],
    audit: &crate::config::AuditConfig,
    req: AdminRequest,
) -> Result<serde_json::Value, AdminError> {
    #[cfg(unix)]
    {
        use std::io::{BufRead, Write};
        let sock = data_dir.join("admin.sock");
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&sock) {
            let mut line =
                serde_json::to_string(&req).map_err(|e| AdminError::Socket(e.to_string()))?;
            line.push('\n');
            s.write_all(line.as_bytes())
                .map_err(|e| AdminError::Socket(e.to_string()))?;
            let mut answer = String::new();
            std::io::BufReader::new(&s)
                .read_line(&mut answer)
                .map_err(|e| AdminError::Socket(e.to_string()))?;
            let v: serde_json::Value = serde_json::from_str(&answer)
                .map_err(|e| AdminError::Socket(format!("its answer: {e}")))?;
            return if v["ok"] == true {
                Ok(v["data"].clone())
            } else {
                Err(AdminError::Refused(
                    v["error"]
                        .as_str()
                        .unwrap_or("the hub refused the request")
                        .to_string(),
                ))
            };
        }
    }
    let access = Access::open(data_dir, nodes, audit.max_bytes, audit.keep)?;
    match req {
        // With the hub stopped, its data folder answers.
        AdminRequest::DurableList | AdminRequest::DurableRemove { .. } => {
            let durables = crate::durable::registry::Durables::open(
                data_dir,
                &crate::config::DurableConfig::default(),
                |_| false,
            )
            .map_err(|e| AdminError::Refused(e.to_string()))?;
            match req {
                AdminRequest::DurableRemove { node, name } => {
                    let m = durables
                        .remove_named(&node, &name)
                        .map_err(|e| AdminError::Refused(e.to_string()))?;
                    access.audit.record(
                        crate::audit::Event::DurableRemoved,
                        serde_json::json!({"node": m.node, "name": m.name, "owner": m.owner, "by": "cli"}),
                    );
                    Ok(serde_json::json!({"removed": {"node": m.node, "name": m.name}}))
                }
                _ => Ok(durables.list()),
            }
        }
        req => Ok(access.execute(req, "cli")?),
    }
}
