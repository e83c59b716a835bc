//! `/v1/volumes`: a project's block devices. The use cases are in
//! [`crate::app::storage::volumes`].

use super::created;
use crate::app::AppState;
use crate::app::storage::volumes;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, OptJson, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_api::*;

/// List volumes (deleted ones too, with their wipe evidence; filter on `state`).
#[utoipa::path(get, path = "/v1/volumes", tag = "storage", operation_id = "volume_list", params(PageParams, VolumeFilter),
    responses((status = 200, description = "Volumes", body = Page<Volume>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<VolumeFilter>,
) -> ApiResult<Out<Page<Volume>>> {
    Ok(Out(volumes::list(&st, &caller, &p, f).await?))
}

/// Create a volume: `creating` until its host has made it, then `available`.
#[utoipa::path(post, path = "/v1/volumes", tag = "storage", operation_id = "volume_create", request_body = VolumeCreate,
    responses((status = 201, description = "The new volume", body = Volume)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<VolumeCreate>,
) -> ApiResult<Response> {
    Ok(created(volumes::create(&st, &caller, b).await?))
}

/// Get a volume.
#[utoipa::path(get, path = "/v1/volumes/{id}", tag = "storage", operation_id = "volume_view",
    params(("id" = String, Path, description = "Volume id")),
    responses((status = 200, description = "The volume", body = Volume)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Volume>> {
    Ok(Out(volumes::get(&st, &caller, &id).await?))
}

/// Change a volume's description.
#[utoipa::path(patch, path = "/v1/volumes/{id}", tag = "storage", operation_id = "volume_update",
    params(("id" = String, Path, description = "Volume id")), request_body = VolumeUpdate,
    responses((status = 200, description = "The changed volume", body = Volume)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<VolumeUpdate>,
) -> ApiResult<Out<Volume>> {
    Ok(Out(volumes::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete a volume: its key is destroyed at once (crypto-erase), then its host wipes and
/// removes its file (`deleting` → `wiping` → `deleted`, with the wipe's evidence).
#[utoipa::path(delete, path = "/v1/volumes/{id}", tag = "storage", operation_id = "volume_delete",
    params(("id" = String, Path, description = "Volume id")),
    responses((status = 202, description = "Deleting: the volume as it is now", body = Volume)))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<Response> {
    let v = volumes::delete(&st, &caller, &id, if_match).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}

/// Grow a detached volume (volumes only grow): `extending` until its host has grown it.
#[utoipa::path(post, path = "/v1/volumes/{id}/extend", tag = "storage", operation_id = "volume_extend",
    params(("id" = String, Path, description = "Volume id")), request_body = VolumeExtend,
    responses((status = 202, description = "Extending: the volume as it is now", body = Volume)))]
pub async fn extend(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<VolumeExtend>,
) -> ApiResult<Response> {
    let v = volumes::extend(&st, &caller, &id, if_match, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}

/// Attach a volume to an instance of its project on its host: to a stopped instance at
/// once (`attached`; the disk is there from its next boot), to a running q35 guest by
/// hot-plug (`attaching`, then `attached` once the guest has the disk). A running microVM
/// cannot hot-plug (`hotplug_unsupported`).
#[utoipa::path(post, path = "/v1/volumes/{id}/attach", tag = "storage", operation_id = "volume_attach",
    params(("id" = String, Path, description = "Volume id")), request_body = VolumeAttach,
    responses((status = 202, description = "The attachment", body = VolumeAttachment)))]
pub async fn attach(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(b): Json<VolumeAttach>,
) -> ApiResult<Response> {
    let a = crate::app::storage::attachments::attach(&st, &caller, &id, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(a)).into_response())
}

/// Detach a volume: from a stopped instance at once, from a running guest `detaching`
/// until the guest releases the disk (`error_detaching` past the deadline). `force`
/// (operators) stops the instance and detaches cold. The body may be left out.
#[utoipa::path(post, path = "/v1/volumes/{id}/detach", tag = "storage", operation_id = "volume_detach",
    params(("id" = String, Path, description = "Volume id")), request_body(content = VolumeDetach),
    responses((status = 202, description = "The attachment", body = VolumeAttachment)))]
pub async fn detach(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    OptJson(b): OptJson<VolumeDetach>,
) -> ApiResult<Response> {
    let a = crate::app::storage::attachments::detach(&st, &caller, &id, if_match, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(a)).into_response())
}

/// List volume attachments (ended ones too).
#[utoipa::path(get, path = "/v1/volume-attachments", tag = "storage", operation_id = "volume_attachment_list",
    params(PageParams, VolumeAttachmentFilter),
    responses((status = 200, description = "Attachments", body = Page<VolumeAttachment>)))]
pub async fn list_attachments(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<VolumeAttachmentFilter>,
) -> ApiResult<Out<Page<VolumeAttachment>>> {
    Ok(Out(crate::app::storage::attachments::list(&st, &caller, &p, f).await?))
}

/// Get a volume attachment.
#[utoipa::path(get, path = "/v1/volume-attachments/{id}", tag = "storage", operation_id = "volume_attachment_view",
    params(("id" = String, Path, description = "Attachment id")),
    responses((status = 200, description = "The attachment", body = VolumeAttachment)))]
pub async fn get_attachment(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<VolumeAttachment>> {
    Ok(Out(crate::app::storage::attachments::get(&st, &caller, &id).await?))
}

/// Revert a detached volume to its latest snapshot: what was written since is dropped
/// (`reverting` until its host has replaced the top layer with an empty one).
#[utoipa::path(post, path = "/v1/volumes/{id}/revert", tag = "storage", operation_id = "volume_revert",
    params(("id" = String, Path, description = "Volume id")), request_body = VolumeRevert,
    responses((status = 202, description = "Reverting: the volume as it is now", body = Volume)))]
pub async fn revert(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<VolumeRevert>,
) -> ApiResult<Response> {
    let v = crate::app::storage::snapshots::revert(&st, &caller, &id, if_match, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}
