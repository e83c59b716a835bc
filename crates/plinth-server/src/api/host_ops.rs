//! Host operations (operators): cordon, uncordon, drain (moves every instance off, as an
//! abortable operation), maintenance (after a drain), retire, fence (records who confirmed
//! the host is powered off or isolated) and fail (declare an unreachable host failed).
//!
//! Recovery of a failed host's instances starts only when the host is both failed and
//! fenced: never while it could still be running the guests. The use cases are in
//! [`crate::app::hosts::ops`].

use crate::app::AppState;
use crate::app::hosts::ops;
use crate::context::Authed;
use crate::error::ApiResult;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_api::*;

/// 202 with the host and the operation it started, or 200 with the host.
fn answer(a: HostAction) -> Response {
    let status = if a.operation.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    (status, axum::Json(a)).into_response()
}

/// Stop placing new instances on a host.
#[utoipa::path(post, path = "/v1/hosts/{id}/cordon", tag = "inventory", operation_id = "host_cordon",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "Cordoned", body = HostAction)))]
pub async fn cordon(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(ops::cordon(&st, &caller, &id).await?))
}

/// Let placement use a cordoned (or maintained) host again.
#[utoipa::path(post, path = "/v1/hosts/{id}/uncordon", tag = "inventory", operation_id = "host_uncordon",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "Available", body = HostAction)))]
pub async fn uncordon(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(answer(ops::uncordon(&st, &caller, &id).await?))
}

/// Move every instance off a host: stop, re-place elsewhere, start. Abort with
/// `POST /v1/operations/{id}/cancel`.
#[utoipa::path(post, path = "/v1/hosts/{id}/drain", tag = "inventory", operation_id = "host_drain",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 202, description = "Draining; the operation lists every instance", body = HostAction)))]
pub async fn drain(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(ops::drain(&st, &caller, &id).await?))
}

/// Put a drained host into maintenance.
#[utoipa::path(post, path = "/v1/hosts/{id}/maintenance", tag = "inventory", operation_id = "host_maintenance",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "In maintenance", body = HostAction)))]
pub async fn maintenance(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(answer(ops::maintenance(&st, &caller, &id).await?))
}

/// Retire a host for good (it must hold no instances).
#[utoipa::path(post, path = "/v1/hosts/{id}/retire", tag = "inventory", operation_id = "host_retire",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "Retired", body = HostAction)))]
pub async fn retire(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(ops::retire(&st, &caller, &id).await?))
}

/// Record that the host is fenced (powered off or cut off), confirmed by the caller. A
/// failed, fenced host's instances are then recovered on other hosts.
#[utoipa::path(post, path = "/v1/hosts/{id}/fence", tag = "inventory", operation_id = "host_fence",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "Fenced (202 when recovery starts)", body = HostAction)))]
pub async fn fence(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(ops::fence(&st, &caller, &id).await?))
}

/// Declare an unreachable host failed. Its instances are recovered elsewhere once it is
/// also fenced.
#[utoipa::path(post, path = "/v1/hosts/{id}/fail", tag = "inventory", operation_id = "host_fail",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "Failed (202 when recovery starts)", body = HostAction)))]
pub async fn fail(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(answer(ops::fail(&st, &caller, &id).await?))
}
