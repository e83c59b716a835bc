//! `/v1/operations`: long-running actions. `GET /v1/operations/{id}?wait=30s` long-polls
//! until the operation is final or the wait passes; `POST …/cancel` asks a cancellable
//! one (a drain) to stop at its next safe point.

use crate::app::AppState;
use crate::app::signals;
use crate::context::Authed;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Paging, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::*;
use serde_json::json;
use std::time::Duration;

/// Parses `30s`, `500ms` or `30` (seconds), at most 60 s.
pub fn parse_wait(s: &str) -> ApiResult<Duration> {
    let s = s.trim();
    let d = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(Duration::from_millis)
    } else {
        s.strip_suffix('s').unwrap_or(s).parse::<u64>().ok().map(Duration::from_secs)
    };
    match d {
        Some(d) if d <= Duration::from_secs(60) => Ok(d),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_wait", "wait must be like 30s or 500ms, at most 60s")
            .with_constraint(json!({ "field": "wait", "max_seconds": 60 }))),
    }
}

/// List operations visible to the caller, newest last.
#[utoipa::path(get, path = "/v1/operations", tag = "operations", operation_id = "operation_list",
    params(PageParams, OperationFilter),
    responses((status = 200, description = "Operations", body = Page<Operation>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<OperationFilter>,
) -> ApiResult<Out<Page<Operation>>> {
    let pg = Paging::from(&p)?;
    let mut filters = Vec::new();
    if let Some(t) = f.target {
        filters.push(("target", t));
    }
    if let Some(s) = f.status {
        filters.push(("status", s.as_str().to_string()));
    }
    if let Some(k) = f.kind {
        filters.push(("kind", k));
    }
    Ok(Out(st.store.list::<Operation>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?))
}

/// Get an operation; with `?wait=30s`, answer as soon as it is final (or when the wait ends).
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "operations", operation_id = "operation_view",
    params(("id" = String, Path, description = "Operation id"), OperationWait),
    responses((status = 200, description = "The operation", body = Operation)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Query(w): Query<OperationWait>,
) -> ApiResult<Out<Operation>> {
    let wait = match &w.wait {
        Some(s) => parse_wait(s)?,
        None => Duration::ZERO,
    };
    let scope = caller.scope();
    let deadline = tokio::time::Instant::now() + wait;
    let key = signals::operation_key(&id);
    let found = st
        .signals
        .wait_for(&key, deadline, signals::MAX_POLL, || async {
            let op: Operation = st.store.get(&scope, &id).await?;
            Ok::<_, ApiError>(op.status.is_final().then_some(op))
        })
        .await?;
    match found {
        Some(op) => Ok(Out(op)),
        None => Ok(Out(st.store.get(&scope, &id).await?)),
    }
}

/// Ask a running operation to stop (drains stop between instances; others refuse).
#[utoipa::path(post, path = "/v1/operations/{id}/cancel", tag = "operations", operation_id = "operation_cancel",
    params(("id" = String, Path, description = "Operation id")),
    responses((status = 202, description = "Cancellation asked for", body = Operation)))]
pub async fn cancel(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Out<Operation>)> {
    let op: Operation = st.store.get(&caller.scope(), &id).await?;
    if op.kind != "host.drain" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_cancellable",
            format!("{} operations run to completion or unwind on failure; only drains can be aborted", op.kind),
        )
        .with_constraint(json!({ "rule": "cancellable-kinds", "kinds": ["host.drain"] })));
    }
    caller.require_operator("aborting drains")?;
    if !op.status.is_final() {
        st.store.request_cancel(&id).await?;
        st.store.record_audit(&caller.audit(), Some(&id), None, 202, None).await?;
    }
    Ok((StatusCode::ACCEPTED, Out(st.store.get(&caller.scope(), &id).await?)))
}
