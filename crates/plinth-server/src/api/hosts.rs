//! `/v1/hosts` (operators): machines that run guests, with their full inventory, BMC
//! (credentials write-only), ownership, labels and traits. The use cases are in
//! [`crate::app::hosts`].

use super::created;
use crate::app::AppState;
use crate::app::hosts;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List hosts.
#[utoipa::path(get, path = "/v1/hosts", tag = "inventory", operation_id = "host_list", params(PageParams, HostFilter),
    responses((status = 200, description = "Hosts", body = Page<Host>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<HostFilter>,
) -> ApiResult<Out<Page<Host>>> {
    Ok(Out(hosts::list(&st, &caller, &p, f).await?))
}

/// Declare a host ahead of its agent (it stays `enrolling` until the agent reports).
#[utoipa::path(post, path = "/v1/hosts", tag = "inventory", operation_id = "host_create", request_body = HostCreate,
    responses((status = 201, description = "The new host", body = Host)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<HostCreate>,
) -> ApiResult<Response> {
    Ok(created(hosts::create(&st, &caller, b).await?))
}

/// Get a host with its inventory.
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "inventory", operation_id = "host_view",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The host", body = Host)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Host>> {
    Ok(Out(hosts::get(&st, &caller, &id).await?))
}

/// Change a host's rack, ownership, labels, traits or BMC.
#[utoipa::path(patch, path = "/v1/hosts/{id}", tag = "inventory", operation_id = "host_update",
    params(("id" = String, Path, description = "Host id")), request_body = HostUpdate,
    responses((status = 200, description = "The changed host", body = Host)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<HostUpdate>,
) -> ApiResult<Out<Host>> {
    Ok(Out(hosts::update(&st, &caller, &id, if_match, b).await?))
}

/// Remove a host record. Only hosts that never came up (`enrolling`) or are `retired` or
/// `failed` can be removed; retire the others first.
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "inventory", operation_id = "host_delete",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    hosts::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
