//! `/v1/network-interfaces`: NICs: a MAC and a private IPv4 address in a subnet, filtered by security groups.
//! The use cases are in [`crate::app::network::nics`].

use super::created;
use crate::app::AppState;
use crate::app::network::nics;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List network interfaces.
#[utoipa::path(get, path = "/v1/network-interfaces", tag = "networking", operation_id = "network_interface_list",
    params(PageParams, NetworkInterfaceFilter),
    responses((status = 200, description = "Network interfaces", body = Page<NetworkInterface>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<NetworkInterfaceFilter>,
) -> ApiResult<Out<Page<NetworkInterface>>> {
    Ok(Out(nics::list(&st, &caller, &p, f).await?))
}

/// Create a network interface (its address is allocated in the same transaction).
#[utoipa::path(post, path = "/v1/network-interfaces", tag = "networking", operation_id = "network_interface_create",
    request_body = NetworkInterfaceCreate,
    responses((status = 201, description = "The new network interface", body = NetworkInterface)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<NetworkInterfaceCreate>,
) -> ApiResult<Response> {
    Ok(created(nics::create(&st, &caller, b).await?))
}

/// Get a network interface.
#[utoipa::path(get, path = "/v1/network-interfaces/{id}", tag = "networking", operation_id = "network_interface_view",
    params(("id" = String, Path, description = "Network interface id")),
    responses((status = 200, description = "The network interface", body = NetworkInterface)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<NetworkInterface>> {
    Ok(Out(nics::get(&st, &caller, &id).await?))
}

/// Change a network interface's name, security groups or port security.
#[utoipa::path(patch, path = "/v1/network-interfaces/{id}", tag = "networking", operation_id = "network_interface_update",
    params(("id" = String, Path, description = "Network interface id")), request_body = NetworkInterfaceUpdate,
    responses((status = 200, description = "The network interface", body = NetworkInterface)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<NetworkInterfaceUpdate>,
) -> ApiResult<Out<NetworkInterface>> {
    Ok(Out(nics::update(&st, &caller, &id, b, if_match).await?))
}

/// Delete a network interface not plugged into an instance.
#[utoipa::path(delete, path = "/v1/network-interfaces/{id}", tag = "networking", operation_id = "network_interface_delete",
    params(("id" = String, Path, description = "Network interface id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    nics::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Plug an existing network interface of the same project into a stopped instance (its
/// lowest free slot).
#[utoipa::path(post, path = "/v1/instances/{id}/network-interfaces", tag = "networking",
    operation_id = "instance_network_interface_attach",
    params(("id" = String, Path, description = "Instance id")), request_body = NetworkInterfaceAttach,
    responses((status = 200, description = "The network interface, plugged", body = NetworkInterface)))]
pub async fn attach(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(b): Json<NetworkInterfaceAttach>,
) -> ApiResult<Out<NetworkInterface>> {
    Ok(Out(nics::attach(&st, &caller, &id, b).await?))
}

/// Unplug a network interface from a stopped instance (the primary, slot 0, goes last;
/// slots never renumber).
#[utoipa::path(delete, path = "/v1/instances/{id}/network-interfaces/{nic_id}", tag = "networking",
    operation_id = "instance_network_interface_detach",
    params(("id" = String, Path, description = "Instance id"), ("nic_id" = String, Path, description = "Network interface id")),
    responses((status = 204, description = "Unplugged")))]
pub async fn detach(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path((id, nic_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    nics::detach(&st, &caller, &id, &nic_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
