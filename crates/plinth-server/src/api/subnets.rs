//! `/v1/subnets`: blocks of a VPC's addresses, each a bridge per host served by DHCP.
//! The use cases are in [`crate::app::network::subnets`].

use super::created;
use crate::app::AppState;
use crate::app::network::subnets;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List subnets.
#[utoipa::path(get, path = "/v1/subnets", tag = "networking", operation_id = "subnet_list",
    params(PageParams, SubnetFilter),
    responses((status = 200, description = "Subnets", body = Page<Subnet>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<SubnetFilter>,
) -> ApiResult<Out<Page<Subnet>>> {
    Ok(Out(subnets::list(&st, &caller, &p, f).await?))
}

/// Create a subnet inside its VPC's block, overlapping no sibling.
#[utoipa::path(post, path = "/v1/subnets", tag = "networking", operation_id = "subnet_create",
    request_body = SubnetCreate,
    responses((status = 201, description = "The new subnet", body = Subnet)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<SubnetCreate>,
) -> ApiResult<Response> {
    Ok(created(subnets::create(&st, &caller, b).await?))
}

/// Get a subnet.
#[utoipa::path(get, path = "/v1/subnets/{id}", tag = "networking", operation_id = "subnet_view",
    params(("id" = String, Path, description = "Subnet id")),
    responses((status = 200, description = "The subnet", body = Subnet)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Subnet>> {
    Ok(Out(subnets::get(&st, &caller, &id).await?))
}

/// Rename a subnet or change its description.
#[utoipa::path(patch, path = "/v1/subnets/{id}", tag = "networking", operation_id = "subnet_update",
    params(("id" = String, Path, description = "Subnet id")), request_body = SubnetUpdate,
    responses((status = 200, description = "The subnet", body = Subnet)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<SubnetUpdate>,
) -> ApiResult<Out<Subnet>> {
    Ok(Out(subnets::update(&st, &caller, &id, b, if_match).await?))
}

/// Delete a subnet no network interface is in (409 lists the ones that are).
#[utoipa::path(delete, path = "/v1/subnets/{id}", tag = "networking", operation_id = "subnet_delete",
    params(("id" = String, Path, description = "Subnet id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    subnets::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
