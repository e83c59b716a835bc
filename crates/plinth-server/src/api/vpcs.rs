//! `/v1/vpcs`: virtual private clouds: a project's isolated networks, each with a default security group.
//! The use cases are in [`crate::app::network::vpcs`].

use super::created;
use crate::app::AppState;
use crate::app::network::vpcs;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List VPCs.
#[utoipa::path(get, path = "/v1/vpcs", tag = "networking", operation_id = "vpc_list",
    params(PageParams, VpcFilter),
    responses((status = 200, description = "VPCs", body = Page<Vpc>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<VpcFilter>,
) -> ApiResult<Out<Page<Vpc>>> {
    Ok(Out(vpcs::list(&st, &caller, &p, f).await?))
}

/// Create a VPC (with its default security group: all egress, ingress from its members).
#[utoipa::path(post, path = "/v1/vpcs", tag = "networking", operation_id = "vpc_create",
    request_body = VpcCreate,
    responses((status = 201, description = "The new VPC", body = Vpc)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<VpcCreate>,
) -> ApiResult<Response> {
    Ok(created(vpcs::create(&st, &caller, b).await?))
}

/// Get a VPC.
#[utoipa::path(get, path = "/v1/vpcs/{id}", tag = "networking", operation_id = "vpc_view",
    params(("id" = String, Path, description = "VPC id")),
    responses((status = 200, description = "The VPC", body = Vpc)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Vpc>> {
    Ok(Out(vpcs::get(&st, &caller, &id).await?))
}

/// Rename a VPC or change its description.
#[utoipa::path(patch, path = "/v1/vpcs/{id}", tag = "networking", operation_id = "vpc_update",
    params(("id" = String, Path, description = "VPC id")), request_body = VpcUpdate,
    responses((status = 200, description = "The VPC", body = Vpc)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<VpcUpdate>,
) -> ApiResult<Out<Vpc>> {
    Ok(Out(vpcs::update(&st, &caller, &id, b, if_match).await?))
}

/// Delete a VPC with no subnets and no groups but its default one.
#[utoipa::path(delete, path = "/v1/vpcs/{id}", tag = "networking", operation_id = "vpc_delete",
    params(("id" = String, Path, description = "VPC id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    vpcs::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
