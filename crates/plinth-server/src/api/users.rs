//! `/v1/users`: people and service accounts. Tenant users belong to one tenant; platform
//! users (no tenant) exist for operators. Tenant-admins manage their tenant's users.

use super::created;
use crate::app::AppState;
use crate::context::{Authed, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{IfMatch, Json, Paging, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;

/// Whether the caller administers `user`'s tenant (or, for platform users, is an operator).
pub fn can_admin_user(caller: &Caller, user: &User) -> bool {
    match &user.tenant_id {
        Some(t) => caller.principal.can_admin_tenant(t),
        None => caller.principal.is_operator(),
    }
}

/// List the users the caller can see.
#[utoipa::path(get, path = "/v1/users", tag = "users", operation_id = "user_list", params(PageParams),
    responses((status = 200, description = "Users visible to the caller", body = Page<User>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<User>>> {
    let pg = Paging::from(&p)?;
    Ok(Out(st.store.list::<User>(&caller.scope(), &[], pg.limit, pg.cursor.as_deref()).await?))
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
    let tenant_id = b.tenant_id.or_else(|| caller.principal.tenant_id.clone());
    match &tenant_id {
        Some(t) => {
            let _: Tenant = st.store.get(&caller.scope(), t.as_str()).await?;
            if !caller.principal.can_admin_tenant(t) {
                return Err(ApiError::forbidden("creating users"));
            }
        }
        None => caller.require_operator("creating platform users")?,
    }
    validate::dns_label("name", &b.name)?;
    if let Some(e) = &b.email {
        validate::email("email", e)?;
    }
    let now = Utc::now();
    let u = User {
        id: UserId::generate(),
        tenant_id,
        name: b.name,
        email: b.email,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&u, &caller.audit()).await?;
    Ok(created(u))
}

/// Get a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", operation_id = "user_view",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "The user", body = User)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<User>> {
    Ok(Out(st.store.get(&caller.scope(), &id).await?))
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
    let u: User = st.store.get(&caller.scope(), &id).await?;
    if !can_admin_user(&caller, &u) && u.id != caller.principal.user_id {
        return Err(ApiError::forbidden("changing other users"));
    }
    if let Some(e) = &b.email {
        validate::email("email", e)?;
    }
    let u = st
        .store
        .update(&caller.scope(), &id, if_match, &caller.audit(), |u: &mut User| {
            if b.email.is_some() {
                u.email = b.email;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(u))
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
    let u: User = st.store.get(&caller.scope(), &id).await?;
    if !can_admin_user(&caller, &u) {
        return Err(ApiError::forbidden("deleting users"));
    }
    st.store.delete::<User>(&caller.scope(), &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
