//! `/v1/users`: people and service accounts. Tenant users belong to one tenant; platform
//! users (no tenant) exist for operators. Tenant-admins manage their tenant's users.
//! The use cases are in [`crate::app::identity::users`].

use super::created;
use crate::app::AppState;
use crate::app::identity::users;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List the users the caller can see.
#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "user_list", params(PageParams, UserFilter),
    responses((status = 200, description = "Users visible to the caller", body = Page<User>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<UserFilter>,
) -> ApiResult<Out<Page<User>>> {
    Ok(Out(users::list(&st, &caller, &p, f).await?))
}

/// Create a user (tenant-admins in their tenant; operators anywhere, or platform users
/// when `tenant_id` is omitted).
#[utoipa::path(post, path = "/v1/users", tag = "users", operation_id = "user_create", request_body = UserCreate,
    responses((status = 201, description = "The new user", body = User)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<UserCreate>,
) -> ApiResult<Response> {
    Ok(created(users::create(&st, &caller, b).await?))
}

/// Get a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", operation_id = "user_view",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = User)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<User>> {
    Ok(Out(users::get(&st, &caller, &id).await?))
}

/// Change a user.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", operation_id = "user_update",
    params(("id" = String, Path, description = "User id")), request_body = UserUpdate,
    responses((status = 200, description = "The changed user", body = User)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<UserUpdate>,
) -> ApiResult<Out<User>> {
    Ok(Out(users::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete a user with no tokens or role bindings left.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", operation_id = "user_delete",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    users::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
