//! An operator's request carried out on the running hub, from the admin socket or the REST API
//! alike: the store changes first, then whoever the request revokes is ended at once — a revoked
//! key's node sessions, a removed or reset user's and a revoked API token's console and JSON
//! sessions. The one place a revocation ends sessions.

use crate::access::{AccessError, AdminRequest};
use crate::state::Hub;
use crate::web::principal::PrincipalKey;
use std::sync::Arc;
use tracing::info;

/// Why a request could not be carried out.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OperateError {
    /// The request was refused or the store failed.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The blocking task that runs it failed.
    #[error("internal: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Carries out `req` for `by` (who the audit names) and ends what it revokes.
pub(crate) async fn carry_out(
    hub: &Arc<Hub>,
    req: AdminRequest,
    by: String,
) -> Result<serde_json::Value, OperateError> {
    match &req {
        AdminRequest::DurableList => return Ok(hub.durables().list()),
        AdminRequest::DurableRemove { node, name } => {
            let m = hub
                .durables()
                .remove_named(node, name)
                .map_err(|e| AccessError::Invalid(e.to_string()))?;
            hub.access().audit.record(
                crate::audit::Event::DurableRemoved,
                serde_json::json!({"node": m.node, "name": m.name, "owner": m.owner, "by": by}),
            );
            info!(node = %m.node, name = %m.name, "durable subscription removed by the operator");
            return Ok(serde_json::json!({"removed": {"node": m.node, "name": m.name}}));
        }
        _ => {}
    }
    let revoked_key = match &req {
        AdminRequest::KeysRevoke { fingerprint, .. } => Some(*fingerprint),
        _ => None,
    };
    let ended_principal = match &req {
        AdminRequest::UsersAdd { name, .. } | AdminRequest::UsersRemove { name } => {
            Some(PrincipalKey::user(name))
        }
        AdminRequest::ApiTokensRevoke { id } => Some(PrincipalKey::token(id)),
        _ => None,
    };
    let data = {
        let hub = hub.clone();
        tokio::task::spawn_blocking(move || hub.access().execute(req, &by)).await??
    };
    if let Some(who) = ended_principal {
        let n = hub.web().end_sessions_of(&who);
        if n > 0 {
            info!(who = %who.0, sessions = n, "console and JSON sessions ended");
        }
    }
    if let Some(fp) = revoked_key {
        let n = hub
            .end_sessions_of_key(&fp, "this node's key was revoked by the operator")
            .await;
        info!(fingerprint = %fp, sessions = n, "key revoked: live sessions ended");
    }
    Ok(data)
}
