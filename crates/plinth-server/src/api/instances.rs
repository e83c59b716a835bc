//! `/v1/instances`: create, read, change and delete instances, and their actions (start,
//! stop, reboot, resize, rebuild) and event history. Every action that waits on a host
//! answers `202` with the instance and an operation to follow. The use cases are in
//! [`crate::app::instances`].

use crate::app::AppState;
use crate::app::instances;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_api::*;

/// 202 with the instance and its operation.
fn accepted(a: InstanceAccepted) -> Response {
    (StatusCode::ACCEPTED, axum::Json(a)).into_response()
}

/// List instances visible to the caller.
#[utoipa::path(get, path = "/v1/instances", tag = "instances", operation_id = "instance_list",
    params(PageParams, InstanceFilter),
    responses((status = 200, description = "Instances", body = Page<Instance>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<InstanceFilter>,
) -> ApiResult<Out<Page<Instance>>> {
    Ok(Out(instances::list(&st, &caller, &p, f).await?))
}

/// Create an instance: placed and claimed now, prepared and started in the background.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", operation_id = "instance_create",
    request_body = InstanceCreate,
    responses((status = 202, description = "Placed; the operation follows preparation and start", body = InstanceAccepted)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<InstanceCreate>,
) -> ApiResult<Response> {
    Ok(accepted(instances::create(&st, &caller, b).await?))
}

/// Get an instance.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", operation_id = "instance_view",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 200, description = "The instance", body = Instance)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<Instance>> {
    Ok(Out(instances::get(&st, &caller, &id).await?))
}

/// Change an instance's labels or restart policy.
#[utoipa::path(patch, path = "/v1/instances/{id}", tag = "instances", operation_id = "instance_update",
    params(("id" = String, Path, description = "Instance id")), request_body = InstanceUpdate,
    responses((status = 200, description = "The instance", body = Instance)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<InstanceUpdate>,
) -> ApiResult<Out<Instance>> {
    Ok(Out(instances::update(&st, &caller, &id, if_match, b).await?))
}

/// Start an instance.
///
/// Nothing changes on the host until the instance's network interfaces are `ready`: the
/// operation waits for them, then boots the guest. Past the deadline
/// (`PLINTH_NIC_READY_TIMEOUT_S`) it fails with `nics_not_ready` (`nic_failed` when a host
/// could not set one up), naming each interface and component missing, and the instance
/// stays as it was.
#[utoipa::path(post, path = "/v1/instances/{id}/start", tag = "instances", operation_id = "instance_start",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Starting once its network interfaces are ready (or already running)",
        body = InstanceAccepted)))]
pub async fn start(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(accepted(instances::start(&st, &caller, &id).await?))
}

/// Stop an instance (stopping a stopped one succeeds and does nothing).
///
/// A stop asked while a start still waits for the instance's network interfaces is not a
/// no-op: it wins, and that start fails with `superseded` without booting the guest.
#[utoipa::path(post, path = "/v1/instances/{id}/stop", tag = "instances", operation_id = "instance_stop",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Stopping (or already stopped)", body = InstanceAccepted)))]
pub async fn stop(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(accepted(instances::stop(&st, &caller, &id).await?))
}

/// Reboot a running instance.
#[utoipa::path(post, path = "/v1/instances/{id}/reboot", tag = "instances", operation_id = "instance_reboot",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Rebooting", body = InstanceAccepted)))]
pub async fn reboot(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(accepted(instances::reboot(&st, &caller, &id).await?))
}

/// Rebuild a stopped instance's root disk from an image (the same or another).
#[utoipa::path(post, path = "/v1/instances/{id}/rebuild", tag = "instances", operation_id = "instance_rebuild",
    params(("id" = String, Path, description = "Instance id")), request_body = InstanceRebuild,
    responses((status = 202, description = "Rebuilding", body = InstanceAccepted)))]
pub async fn rebuild(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(b): Json<InstanceRebuild>,
) -> ApiResult<Response> {
    Ok(accepted(instances::rebuild(&st, &caller, &id, b).await?))
}

/// Resize a stopped instance to another shape; it moves to another host when its own
/// cannot hold the new shape.
#[utoipa::path(post, path = "/v1/instances/{id}/resize", tag = "instances", operation_id = "instance_resize",
    params(("id" = String, Path, description = "Instance id")), request_body = InstanceResize,
    responses((status = 202, description = "Resizing", body = InstanceAccepted)))]
pub async fn resize(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(b): Json<InstanceResize>,
) -> ApiResult<Response> {
    Ok(accepted(instances::resize(&st, &caller, &id, b).await?))
}

/// Delete an instance: removed from its host, then its claim released.
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances", operation_id = "instance_delete",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Deleting", body = InstanceAccepted)))]
pub async fn delete(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(accepted(instances::delete(&st, &caller, &id).await?))
}

/// An instance's history, oldest first.
#[utoipa::path(get, path = "/v1/instances/{id}/events", tag = "instances", operation_id = "instance_events",
    params(("id" = String, Path, description = "Instance id"), PageParams),
    responses((status = 200, description = "Events", body = Page<InstanceEvent>)))]
pub async fn events(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<InstanceEvent>>> {
    Ok(Out(instances::events(&st, &caller, &id, &p).await?))
}
