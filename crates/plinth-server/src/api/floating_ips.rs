//! `/v1/floating-ips`: public addresses a project holds, from an IP pool. The use cases
//! are in [`crate::app::network::floating_ips`].

use super::created;
use crate::app::AppState;
use crate::app::network::floating_ips;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List floating IPs.
#[utoipa::path(get, path = "/v1/floating-ips", tag = "networking", operation_id = "floating_ip_list", params(PageParams, FloatingIpFilter),
    responses((status = 200, description = "Floating IPs", body = Page<FloatingIp>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<FloatingIpFilter>,
) -> ApiResult<Out<Page<FloatingIp>>> {
    Ok(Out(floating_ips::list(&st, &caller, &p, f).await?))
}

/// Allocate a floating IP: the lowest free address of the pool.
#[utoipa::path(post, path = "/v1/floating-ips", tag = "networking", operation_id = "floating_ip_create", request_body = FloatingIpCreate,
    responses((status = 201, description = "The new floating IP", body = FloatingIp)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<FloatingIpCreate>,
) -> ApiResult<Response> {
    Ok(created(floating_ips::create(&st, &caller, b).await?))
}

/// Get a floating IP.
#[utoipa::path(get, path = "/v1/floating-ips/{id}", tag = "networking", operation_id = "floating_ip_view",
    params(("id" = String, Path, description = "Floating IP id")),
    responses((status = 200, description = "The floating IP", body = FloatingIp)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<FloatingIp>> {
    Ok(Out(floating_ips::get(&st, &caller, &id).await?))
}

/// Change a floating IP's description.
#[utoipa::path(patch, path = "/v1/floating-ips/{id}", tag = "networking", operation_id = "floating_ip_update",
    params(("id" = String, Path, description = "Floating IP id")), request_body = FloatingIpUpdate,
    responses((status = 200, description = "The changed floating IP", body = FloatingIp)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<FloatingIpUpdate>,
) -> ApiResult<Out<FloatingIp>> {
    Ok(Out(floating_ips::update(&st, &caller, &id, if_match, b).await?))
}

/// Release a floating IP (not while attached).
#[utoipa::path(delete, path = "/v1/floating-ips/{id}", tag = "networking", operation_id = "floating_ip_delete",
    params(("id" = String, Path, description = "Floating IP id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    floating_ips::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attach a floating IP to a NIC of its project, or move it there from the NIC it is
/// attached to (one transaction; `attaching` until the NIC's host has applied it).
#[utoipa::path(post, path = "/v1/floating-ips/{id}/attach", tag = "networking", operation_id = "floating_ip_attach",
    params(("id" = String, Path, description = "Floating IP id")), request_body = FloatingIpAttach,
    responses((status = 200, description = "The floating IP, attaching or attached", body = FloatingIp)))]
pub async fn attach(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<FloatingIpAttach>,
) -> ApiResult<Out<FloatingIp>> {
    Ok(Out(floating_ips::attach(&st, &caller, &id, if_match, b).await?))
}

/// Detach a floating IP from its NIC (`detaching` until the NIC's host has applied it).
#[utoipa::path(post, path = "/v1/floating-ips/{id}/detach", tag = "networking", operation_id = "floating_ip_detach",
    params(("id" = String, Path, description = "Floating IP id")),
    responses((status = 200, description = "The floating IP, detaching or detached", body = FloatingIp)))]
pub async fn detach(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<Out<FloatingIp>> {
    Ok(Out(floating_ips::detach(&st, &caller, &id, if_match).await?))
}
