//! `/v1/volume-types`: the kinds of volume operators offer (operators write, every caller
//! reads). The use cases are in [`crate::app::storage::volume_types`].

use super::created;
use crate::app::AppState;
use crate::app::storage::volume_types;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List volume types.
#[utoipa::path(get, path = "/v1/volume-types", tag = "storage", operation_id = "volume_type_list", params(PageParams, VolumeTypeFilter),
    responses((status = 200, description = "Volume types", body = Page<VolumeType>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<VolumeTypeFilter>,
) -> ApiResult<Out<Page<VolumeType>>> {
    Ok(Out(volume_types::list(&st, &caller, &p, f).await?))
}

/// Create a volume type (operators).
#[utoipa::path(post, path = "/v1/volume-types", tag = "storage", operation_id = "volume_type_create", request_body = VolumeTypeCreate,
    responses((status = 201, description = "The new volume type", body = VolumeType)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<VolumeTypeCreate>,
) -> ApiResult<Response> {
    Ok(created(volume_types::create(&st, &caller, b).await?))
}

/// Get a volume type.
#[utoipa::path(get, path = "/v1/volume-types/{id}", tag = "storage", operation_id = "volume_type_view",
    params(("id" = String, Path, description = "Volume type id")),
    responses((status = 200, description = "The volume type", body = VolumeType)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<VolumeType>> {
    Ok(Out(volume_types::get(&st, &caller, &id).await?))
}

/// Change a volume type's description (operators).
#[utoipa::path(patch, path = "/v1/volume-types/{id}", tag = "storage", operation_id = "volume_type_update",
    params(("id" = String, Path, description = "Volume type id")), request_body = VolumeTypeUpdate,
    responses((status = 200, description = "The changed volume type", body = VolumeType)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<VolumeTypeUpdate>,
) -> ApiResult<Out<VolumeType>> {
    Ok(Out(volume_types::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete a volume type (operators; not while a volume names it).
#[utoipa::path(delete, path = "/v1/volume-types/{id}", tag = "storage", operation_id = "volume_type_delete",
    params(("id" = String, Path, description = "Volume type id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    volume_types::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
