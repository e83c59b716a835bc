//! Liveness, readiness and metrics: unauthenticated, for load balancers and Prometheus.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Health answer.
#[derive(Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok` or `unavailable`.
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "system", operation_id = "system_health",
    security(()),
    responses((status = 200, description = "The server is alive", body = HealthStatus)))]
pub async fn healthz() -> axum::Json<HealthStatus> {
    axum::Json(HealthStatus { status: "ok".into() })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "system", operation_id = "system_ready",
    security(()),
    responses(
        (status = 200, description = "The store is reachable", body = HealthStatus),
        (status = 503, description = "The store is not reachable", body = HealthStatus)))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    match st.store.ping().await {
        Ok(()) => axum::Json(HealthStatus { status: "ok".into() }).into_response(),
        Err(e) => {
            tracing::warn!("readiness: store unreachable: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(HealthStatus { status: "unavailable".into() })).into_response()
        }
    }
}

/// Prometheus metrics: requests, placements, sagas, background tasks, ledger and fleet.
#[utoipa::path(get, path = "/metrics", tag = "system", operation_id = "system_metrics",
    security(()),
    responses((status = 200, description = "OpenMetrics text exposition", body = String,
        content_type = "application/openmetrics-text")))]
pub async fn metrics(State(st): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], st.metrics.render(&st.store).await).into_response()
}
