//! `/v1/sites` (operators): data centres or rooms that hold racks.
//! The use cases are in [`crate::app::inventory::sites`].

use super::created;
use crate::app::AppState;
use crate::app::inventory::sites;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List sites.
#[utoipa::path(get, path = "/v1/sites", tag = "inventory", operation_id = "site_list", params(PageParams, SiteFilter),
    responses((status = 200, description = "Sites", body = Page<Site>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<SiteFilter>,
) -> ApiResult<Out<Page<Site>>> {
    Ok(Out(sites::list(&st, &caller, &p, f).await?))
}

/// Create a site.
#[utoipa::path(post, path = "/v1/sites", tag = "inventory", operation_id = "site_create", request_body = SiteCreate,
    responses((status = 201, description = "The new site", body = Site)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<SiteCreate>,
) -> ApiResult<Response> {
    Ok(created(sites::create(&st, &caller, b).await?))
}

/// Get a site.
#[utoipa::path(get, path = "/v1/sites/{id}", tag = "inventory", operation_id = "site_view",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, description = "The site", body = Site)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Site>> {
    Ok(Out(sites::get(&st, &caller, &id).await?))
}

/// Change a site.
#[utoipa::path(patch, path = "/v1/sites/{id}", tag = "inventory", operation_id = "site_update",
    params(("id" = String, Path, description = "Site id")), request_body = SiteUpdate,
    responses((status = 200, description = "The changed site", body = Site)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<SiteUpdate>,
) -> ApiResult<Out<Site>> {
    Ok(Out(sites::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete a site with no racks or hosts.
#[utoipa::path(delete, path = "/v1/sites/{id}", tag = "inventory", operation_id = "site_delete",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    sites::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
