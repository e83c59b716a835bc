//! `/v1/role-bindings`: grants of `operator` (platform users, by operators) and of
//! `tenant-admin`, `member`, `viewer` on a tenant or one of its projects (by that tenant's
//! admins).
//! The use cases are in [`crate::app::identity::role_bindings`].

use super::created;
use crate::app::AppState;
use crate::app::identity::role_bindings;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List the role bindings the caller can see.
#[utoipa::path(get, path = "/v1/role-bindings", tag = "role-bindings", operation_id = "role_binding_list",
    params(PageParams, RoleBindingFilter),
    responses((status = 200, description = "Role bindings visible to the caller", body = Page<RoleBinding>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<RoleBindingFilter>,
) -> ApiResult<Out<Page<RoleBinding>>> {
    Ok(Out(role_bindings::list(&st, &caller, &p, f).await?))
}

/// Grant a role.
#[utoipa::path(post, path = "/v1/role-bindings", tag = "role-bindings", operation_id = "role_binding_create",
    request_body = RoleBindingCreate,
    responses((status = 201, description = "The new binding", body = RoleBinding)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<RoleBindingCreate>,
) -> ApiResult<Response> {
    Ok(created(role_bindings::create(&st, &caller, b).await?))
}

/// Get a role binding.
#[utoipa::path(get, path = "/v1/role-bindings/{id}", tag = "role-bindings", operation_id = "role_binding_view",
    params(("id" = String, Path, description = "Role binding id")),
    responses((status = 200, description = "The binding", body = RoleBinding)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<RoleBinding>> {
    Ok(Out(role_bindings::get(&st, &caller, &id).await?))
}

/// Change the role of a binding.
#[utoipa::path(patch, path = "/v1/role-bindings/{id}", tag = "role-bindings", operation_id = "role_binding_update",
    params(("id" = String, Path, description = "Role binding id")), request_body = RoleBindingUpdate,
    responses((status = 200, description = "The changed binding", body = RoleBinding)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<RoleBindingUpdate>,
) -> ApiResult<Out<RoleBinding>> {
    Ok(Out(role_bindings::update(&st, &caller, &id, if_match, b).await?))
}

/// Remove a role binding.
#[utoipa::path(delete, path = "/v1/role-bindings/{id}", tag = "role-bindings", operation_id = "role_binding_delete",
    params(("id" = String, Path, description = "Role binding id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    role_bindings::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
