//! `/v1/placement-groups`: affinity, anti-affinity (hard) and spread (soft) of instances
//! over hosts or racks, checked inside the claiming transaction.
//! The use cases are in [`crate::app::instances::placement_groups`].

use super::created;
use crate::app::AppState;
use crate::app::instances::placement_groups;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List placement groups.
#[utoipa::path(get, path = "/v1/placement-groups", tag = "instances", operation_id = "placement_group_list",
    params(PageParams, PlacementGroupFilter),
    responses((status = 200, description = "Placement groups", body = Page<PlacementGroup>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<PlacementGroupFilter>,
) -> ApiResult<Out<Page<PlacementGroup>>> {
    Ok(Out(placement_groups::list(&st, &caller, &p, f).await?))
}

/// Create a placement group.
#[utoipa::path(post, path = "/v1/placement-groups", tag = "instances", operation_id = "placement_group_create",
    request_body = PlacementGroupCreate,
    responses((status = 201, description = "The new group", body = PlacementGroup)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<PlacementGroupCreate>,
) -> ApiResult<Response> {
    Ok(created(placement_groups::create(&st, &caller, b).await?))
}

/// Get a placement group.
#[utoipa::path(get, path = "/v1/placement-groups/{id}", tag = "instances", operation_id = "placement_group_view",
    params(("id" = String, Path, description = "Placement group id")),
    responses((status = 200, description = "The group", body = PlacementGroup)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<PlacementGroup>> {
    Ok(Out(placement_groups::get(&st, &caller, &id).await?))
}

/// Delete a placement group that no instance refers to.
#[utoipa::path(delete, path = "/v1/placement-groups/{id}", tag = "instances", operation_id = "placement_group_delete",
    params(("id" = String, Path, description = "Placement group id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    placement_groups::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
