//! `/v1/host-join-tokens` (operators): single-use, expiring secrets an agent exchanges for
//! a host id and credential at `/agent/v1/enroll`.
//! The use cases are in [`crate::app::inventory::join_tokens`].

use super::created;
use crate::app::AppState;
use crate::app::inventory::join_tokens;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List join tokens (never their secrets).
#[utoipa::path(get, path = "/v1/host-join-tokens", tag = "inventory", operation_id = "host_join_token_list", params(PageParams),
    responses((status = 200, description = "Join tokens", body = Page<HostJoinToken>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<HostJoinToken>>> {
    Ok(Out(join_tokens::list(&st, &caller, &p).await?))
}

/// Make a join token.
#[utoipa::path(post, path = "/v1/host-join-tokens", tag = "inventory", operation_id = "host_join_token_create",
    request_body = HostJoinTokenCreate,
    responses((status = 201, description = "The token and its secret, shown this once", body = HostJoinTokenCreated)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<HostJoinTokenCreate>,
) -> ApiResult<Response> {
    Ok(created(join_tokens::create(&st, &caller, b).await?))
}

/// Get a join token.
#[utoipa::path(get, path = "/v1/host-join-tokens/{id}", tag = "inventory", operation_id = "host_join_token_view",
    params(("id" = String, Path, description = "Join token id")),
    responses((status = 200, description = "The join token", body = HostJoinToken)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<HostJoinToken>> {
    Ok(Out(join_tokens::get(&st, &caller, &id).await?))
}

/// Change a join token's description.
#[utoipa::path(patch, path = "/v1/host-join-tokens/{id}", tag = "inventory", operation_id = "host_join_token_update",
    params(("id" = String, Path, description = "Join token id")), request_body = HostJoinTokenUpdate,
    responses((status = 200, description = "The changed join token", body = HostJoinToken)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<HostJoinTokenUpdate>,
) -> ApiResult<Out<HostJoinToken>> {
    Ok(Out(join_tokens::update(&st, &caller, &id, if_match, b).await?))
}

/// Revoke a join token by deleting it.
#[utoipa::path(delete, path = "/v1/host-join-tokens/{id}", tag = "inventory", operation_id = "host_join_token_delete",
    params(("id" = String, Path, description = "Join token id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    join_tokens::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
