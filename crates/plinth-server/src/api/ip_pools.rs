//! `/v1/ip-pools`: the public IPv4 ranges an operator hands to Plinth (operators write,
//! every caller reads). The use cases are in [`crate::app::network::ip_pools`].

use super::created;
use crate::app::AppState;
use crate::app::network::ip_pools;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List IP pools.
#[utoipa::path(get, path = "/v1/ip-pools", tag = "networking", operation_id = "ip_pool_list", params(PageParams, IpPoolFilter),
    responses((status = 200, description = "IP pools", body = Page<IpPool>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<IpPoolFilter>,
) -> ApiResult<Out<Page<IpPool>>> {
    Ok(Out(ip_pools::list(&st, &caller, &p, f).await?))
}

/// Create an IP pool (operators); it overlaps no other.
#[utoipa::path(post, path = "/v1/ip-pools", tag = "networking", operation_id = "ip_pool_create", request_body = IpPoolCreate,
    responses((status = 201, description = "The new IP pool", body = IpPool)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<IpPoolCreate>,
) -> ApiResult<Response> {
    Ok(created(ip_pools::create(&st, &caller, b).await?))
}

/// Get an IP pool.
#[utoipa::path(get, path = "/v1/ip-pools/{id}", tag = "networking", operation_id = "ip_pool_view",
    params(("id" = String, Path, description = "IP pool id")),
    responses((status = 200, description = "The IP pool", body = IpPool)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<IpPool>> {
    Ok(Out(ip_pools::get(&st, &caller, &id).await?))
}

/// Change an IP pool's description (operators).
#[utoipa::path(patch, path = "/v1/ip-pools/{id}", tag = "networking", operation_id = "ip_pool_update",
    params(("id" = String, Path, description = "IP pool id")), request_body = IpPoolUpdate,
    responses((status = 200, description = "The changed IP pool", body = IpPool)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<IpPoolUpdate>,
) -> ApiResult<Out<IpPool>> {
    Ok(Out(ip_pools::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete an IP pool (operators).
#[utoipa::path(delete, path = "/v1/ip-pools/{id}", tag = "networking", operation_id = "ip_pool_delete",
    params(("id" = String, Path, description = "IP pool id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    ip_pools::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
