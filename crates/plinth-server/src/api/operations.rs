//! `/v1/operations`: long-running actions. `GET /v1/operations/{id}?wait=30s` long-polls
//! until the operation is final or the wait passes; `POST …/cancel` asks a cancellable
//! one (a drain) to stop at its next safe point.
//! The use cases are in [`crate::app::operations`].

use crate::app::AppState;
use crate::app::operations;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::Query;
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::*;

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
    Ok(Out(operations::list(&st, &caller, &p, f).await?))
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
    Ok(Out(operations::get(&st, &caller, &id, w).await?))
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
    Ok((StatusCode::ACCEPTED, Out(operations::cancel(&st, &caller, &id).await?)))
}
