//! Prometheus metrics at `/metrics` (OpenMetrics text).

use super::auth::*;
use super::principal::*;
use crate::core::CONFLATED_TOTAL;
use crate::state::Hub;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;
use std::sync::Arc;
pub(super) async fn metrics(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !hub.config().web.metrics_public {
        principal(&hub, &headers, None).await?;
    }
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct RoleL {
        role: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct NodeL {
        node: String,
    }
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StatusL {
        status: String,
    }
    let mut reg = Registry::with_prefix("pointhub");
    let sessions = Family::<RoleL, Gauge>::default();
    for r in ["edge", "client", "hub"] {
        sessions.get_or_create(&RoleL { role: r.into() }).set(0);
    }
    let queue = Family::<NodeL, Gauge>::default();
    for e in hub.sessions().all() {
        sessions
            .get_or_create(&RoleL {
                role: e.role.as_str().into(),
            })
            .inc();
        if let Some(s) = &e.sub {
            queue
                .get_or_create(&NodeL {
                    node: e.name.clone(),
                })
                .set(s.queue_len() as i64);
        }
    }
    reg.register("sessions", "Node sessions by role", sessions);
    reg.register(
        "subscriber_queue_depth",
        "Updates queued for each client session",
        queue,
    );
    let points = Gauge::<i64>::default();
    points.set(hub.core().point_count() as i64);
    reg.register("points", "Points in the table", points);
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "updates_in",
        "Point updates received from authorities",
        counter(hub.core().updates_in.load(Ordering::Relaxed)),
    );
    reg.register(
        "updates_out",
        "Point updates sent to subscribers",
        counter(hub.stats().updates_out.load(Ordering::Relaxed)),
    );
    reg.register(
        "conflated",
        "Updates replaced by a newer one for a lagging subscriber",
        counter(CONFLATED_TOTAL.load(Ordering::Relaxed)),
    );
    reg.register(
        "connections_refused",
        "Node connections refused",
        counter(hub.stats().refused.load(Ordering::Relaxed)),
    );
    let writes = Family::<StatusL, Counter<u64>>::default();
    if let Ok(w) = hub.stats().writes.lock() {
        for (k, v) in w.iter() {
            writes
                .get_or_create(&StatusL { status: k.clone() })
                .inc_by(*v);
        }
    }
    reg.register("writes", "Writes by result", writes);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg)
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "encoding".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
