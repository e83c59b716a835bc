//! `/v1/snapshots`: point-in-time snapshots of volumes. The use cases are in
//! [`crate::app::storage::snapshots`].

use crate::app::AppState;
use crate::app::storage::snapshots;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_api::*;

/// List snapshots (deleted ones too; filter on `volume_id` or `state`).
#[utoipa::path(get, path = "/v1/snapshots", tag = "storage", operation_id = "snapshot_list",
    params(PageParams, VolumeSnapshotFilter),
    responses((status = 200, description = "Snapshots", body = Page<VolumeSnapshot>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<VolumeSnapshotFilter>,
) -> ApiResult<Out<Page<VolumeSnapshot>>> {
    Ok(Out(snapshots::list(&st, &caller, &p, f).await?))
}

/// Take a snapshot of a volume, detached or attached to a running instance (live):
/// `creating` until its host has added the layer, then `available`.
#[utoipa::path(post, path = "/v1/snapshots", tag = "storage", operation_id = "snapshot_create",
    request_body = VolumeSnapshotCreate,
    responses((status = 202, description = "Creating: the snapshot as it is now", body = VolumeSnapshot)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<VolumeSnapshotCreate>,
) -> ApiResult<Response> {
    let s = snapshots::create(&st, &caller, b).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(s)).into_response())
}

/// Get a snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "storage", operation_id = "snapshot_view",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 200, description = "The snapshot", body = VolumeSnapshot)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<VolumeSnapshot>> {
    Ok(Out(snapshots::get(&st, &caller, &id).await?))
}

/// Delete a snapshot of a detached volume: its host merges its layer into the volume's
/// files and wipes what that frees (`deleting` → `deleted`).
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "storage", operation_id = "snapshot_delete",
    params(("id" = String, Path, description = "Snapshot id")),
    responses((status = 202, description = "Deleting: the snapshot as it is now", body = VolumeSnapshot)))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<Response> {
    let s = snapshots::delete(&st, &caller, &id, if_match).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(s)).into_response())
}
