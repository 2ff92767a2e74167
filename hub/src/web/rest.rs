//! The REST API under `/api/v1/`: points, nodes, keys, tokens, audit.

use super::auth::*;
use super::principal::*;
use crate::access::{AdminRequest, Grant};
use crate::state::Hub;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use pointhub_link::Fingerprint;
use pointhub_schemas::{json as record, Pattern, Timestamp};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::warn;
#[derive(Deserialize)]
pub(super) struct PointsQuery {
    pattern: Option<String>,
}

pub(super) fn point_json(
    table: &crate::core::Table,
    p: &crate::core::PointEntry,
) -> serde_json::Value {
    let mut v = record::record(
        table.name(p),
        &p.value,
        p.quality,
        p.source_ts,
        p.hub_ts,
        false,
    );
    if let Some(m) = v.as_object_mut() {
        m.insert("unit".into(), json!(p.unit()));
        m.insert("writable".into(), json!(p.writable));
        m.insert("owner".into(), json!(table.owner(p).as_ref()));
        m.insert("connected".into(), json!(p.owner_session().is_some()));
    }
    v
}

pub(super) async fn api_points(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<PointsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let pattern = Pattern::parse(q.pattern.as_deref().unwrap_or("**"))
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("pattern: {e}")))?;
    let read = p.read();
    let table = hub.core().table_read();
    let mut out: Vec<serde_json::Value> = table
        .points
        .iter()
        .filter(|pt| {
            let name = table.name(pt);
            pattern.matches(name)
                && read.iter().any(|r| r.matches(name))
                && p.sees_owner(table.owner(pt))
        })
        .map(|pt| point_json(&table, pt))
        .collect();
    drop(table);
    out.sort_by(|a, b| a["point"].as_str().cmp(&b["point"].as_str()));
    Ok(Json(json!(out)))
}

pub(super) async fn api_nodes(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let keys = hub
        .access()
        .execute(AdminRequest::KeysList, "console")
        .unwrap_or_else(|_| json!([]));
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    {
        let table = hub.core().table_read();
        for pt in &table.points {
            *counts.entry(table.owner(pt).to_string()).or_default() += 1;
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for e in hub.sessions().all() {
        if !p.sees_node(&e.name) {
            continue;
        }
        seen.insert(e.name.clone());
        out.push(json!({
            "name": e.name,
            "role": e.role.as_str(),
            "connected": true,
            "remote": e.remote.to_string(),
            "rtt_ms": e.stats.rtt_us.load(Ordering::Relaxed) as f64 / 1000.0,
            "version": e.software,
            "points": counts.get(&e.name).copied().unwrap_or(0),
            "last_seen": Timestamp(e.stats.last_heard.load(Ordering::Relaxed)).to_rfc3339(),
            "fingerprint": e.fingerprint.to_string(),
        }));
    }
    for k in keys.as_array().into_iter().flatten() {
        let name = k["name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() || seen.contains(&name) || !p.sees_node(&name) {
            continue;
        }
        seen.insert(name.clone());
        out.push(json!({
            "name": name,
            "role": k["role"],
            "connected": false,
            "remote": k["last_addr"],
            "rtt_ms": null,
            "version": null,
            "points": counts.get(&name).copied().unwrap_or(0),
            "last_seen": k["last_seen"],
            "fingerprint": k["fingerprint"],
        }));
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!(out)))
}

pub(super) fn admin(p: &Principal) -> Result<(), ApiError> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::FORBIDDEN,
            "only an unrestricted admin may manage keys and tokens".into(),
        ))
    }
}

pub(super) async fn run_admin(
    hub: &Arc<Hub>,
    req: AdminRequest,
    by: String,
) -> Result<serde_json::Value, ApiError> {
    use crate::operator::{carry_out, OperateError};
    carry_out(hub, req, by).await.map_err(|e| match e {
        OperateError::Access(crate::access::AccessError::Invalid(m)) => {
            ApiError(StatusCode::BAD_REQUEST, m)
        }
        other => {
            warn!(error = %other, "admin request failed");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    })
}

pub(super) async fn api_keys(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    admin(&p)?;
    let pending = run_admin(&hub, AdminRequest::KeysPending, p.name()).await?;
    let keys = run_admin(&hub, AdminRequest::KeysList, p.name()).await?;
    let tokens = run_admin(&hub, AdminRequest::TokensList, p.name()).await?;
    Ok(Json(
        json!({"pending": pending, "keys": keys, "tokens": tokens}),
    ))
}

pub(super) fn fingerprint(s: &str) -> Result<Fingerprint, ApiError> {
    s.parse()
        .map_err(|e: pointhub_link::IdentityError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

pub(super) async fn api_approve(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(grant): Json<Grant>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = changer(&hub, &headers).await?;
    admin(&p)?;
    Ok(Json(
        run_admin(
            &hub,
            AdminRequest::KeysApprove {
                fingerprint: fingerprint(&fp)?,
                grant,
            },
            p.name(),
        )
        .await?,
    ))
}

#[derive(Deserialize, Default)]
pub(super) struct RevokeBody {
    reason: Option<String>,
}

pub(super) async fn api_revoke(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    Json(body): Json<RevokeBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = changer(&hub, &headers).await?;
    admin(&p)?;
    let fp = fingerprint(&fp)?;
    let reason = body
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| format!("revoked in the console by {}", p.name()));
    let rec = run_admin(
        &hub,
        AdminRequest::KeysRevoke {
            fingerprint: fp,
            reason,
        },
        p.name(),
    )
    .await?;
    Ok(Json(rec))
}

#[derive(Deserialize)]
pub(super) struct TokenBody {
    #[serde(flatten)]
    grant: Grant,
    #[serde(default = "hour")]
    ttl_s: u64,
}

pub(super) fn hour() -> u64 {
    3600
}

pub(super) async fn api_tokens(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Json(b): Json<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = changer(&hub, &headers).await?;
    admin(&p)?;
    let grant = b.grant;
    Ok(Json(
        run_admin(
            &hub,
            AdminRequest::TokensCreate {
                grant,
                ttl_s: b.ttl_s,
            },
            p.name(),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    event: Option<String>,
    node: Option<String>,
    last: Option<usize>,
}

pub(super) async fn api_audit(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = principal(&hub, &headers, None).await?;
    let dir = hub.config().data_dir.clone();
    let all = tokio::task::spawn_blocking(move || crate::audit::read_all(&dir))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))?
        .map_err(|e| {
            warn!(error = %e, "cannot read the audit log");
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the audit log".into(),
            )
        })?;
    let admin = p.is_admin();
    let matching: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|v| {
            q.event.as_ref().is_none_or(|e| {
                v["event"]
                    .as_str()
                    .is_some_and(|x| x.starts_with(e.as_str()))
            })
        })
        .filter(|v| {
            q.node
                .as_ref()
                .is_none_or(|n| v["name"].as_str() == Some(n.as_str()))
        })
        .filter(|v| {
            admin
                || v["name"]
                    .as_str()
                    .is_some_and(|n| p.sees_node(n) && !matches!(p, Principal::Token(_)))
        })
        .collect();
    let last = q.last.unwrap_or(500).min(10_000);
    let skip = matching.len().saturating_sub(last);
    Ok(Json(json!(matching
        .into_iter()
        .skip(skip)
        .collect::<Vec<_>>())))
}
