//! `/v1/racks` (operators): racks in a site. A rack is a failure domain for placement.
//! The use cases are in [`crate::app::inventory::racks`].

use super::created;
use crate::app::AppState;
use crate::app::inventory::racks;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List racks.
#[utoipa::path(get, path = "/v1/racks", tag = "inventory", operation_id = "rack_list", params(PageParams, RackFilter),
    responses((status = 200, description = "Racks", body = Page<Rack>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<RackFilter>,
) -> ApiResult<Out<Page<Rack>>> {
    Ok(Out(racks::list(&st, &caller, &p, f).await?))
}

/// Create a rack.
#[utoipa::path(post, path = "/v1/racks", tag = "inventory", operation_id = "rack_create", request_body = RackCreate,
    responses((status = 201, description = "The new rack", body = Rack)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<RackCreate>,
) -> ApiResult<Response> {
    Ok(created(racks::create(&st, &caller, b).await?))
}

/// Get a rack.
#[utoipa::path(get, path = "/v1/racks/{id}", tag = "inventory", operation_id = "rack_view",
    params(("id" = String, Path, description = "Rack id")),
    responses((status = 200, description = "The rack", body = Rack)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Rack>> {
    Ok(Out(racks::get(&st, &caller, &id).await?))
}

/// Change a rack.
#[utoipa::path(patch, path = "/v1/racks/{id}", tag = "inventory", operation_id = "rack_update",
    params(("id" = String, Path, description = "Rack id")), request_body = RackUpdate,
    responses((status = 200, description = "The changed rack", body = Rack)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<RackUpdate>,
) -> ApiResult<Out<Rack>> {
    Ok(Out(racks::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete a rack with no hosts.
#[utoipa::path(delete, path = "/v1/racks/{id}", tag = "inventory", operation_id = "rack_delete",
    params(("id" = String, Path, description = "Rack id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    racks::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
