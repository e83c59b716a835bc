//! `/v1/tenants`: billing accounts. Operators create and delete them; a tenant-admin may
//! change its own; every user of a tenant sees it.
//! The use cases are in [`crate::app::identity::tenants`].

use super::created;
use crate::app::AppState;
use crate::app::identity::tenants;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List the tenants the caller can see.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", operation_id = "tenant_list", params(PageParams, TenantFilter),
    responses((status = 200, description = "Tenants visible to the caller", body = Page<Tenant>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<TenantFilter>,
) -> ApiResult<Out<Page<Tenant>>> {
    Ok(Out(tenants::list(&st, &caller, &p, f).await?))
}

/// Create a tenant (operators).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "tenant_create", request_body = TenantCreate,
    responses((status = 201, description = "The new tenant", body = Tenant)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<TenantCreate>,
) -> ApiResult<Response> {
    Ok(created(tenants::create(&st, &caller, b).await?))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "tenant_view",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = Tenant)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Tenant>> {
    Ok(Out(tenants::get(&st, &caller, &id).await?))
}

/// Change a tenant (operators, its tenant-admins).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "tenant_update",
    params(("id" = String, Path, description = "Tenant id")), request_body = TenantUpdate,
    responses((status = 200, description = "The changed tenant", body = Tenant)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<TenantUpdate>,
) -> ApiResult<Out<Tenant>> {
    Ok(Out(tenants::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete a tenant with nothing left in it (operators).
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "tenant_delete",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    tenants::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
