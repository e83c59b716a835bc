//! `/v1/tokens`: API tokens. A token acts as its user. The secret (`plt_…`) is returned
//! once at creation and only its SHA-256 is kept. Users manage their own tokens;
//! tenant-admins manage every token of their tenant.
//! The use cases are in [`crate::app::identity::tokens`].

use super::created;
use crate::app::AppState;
use crate::app::identity::tokens;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List tokens: your own, or all of the tenants you administer.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", operation_id = "token_list", params(PageParams, TokenFilter),
    responses((status = 200, description = "Tokens the caller may manage (never their secrets)", body = Page<ApiToken>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<TokenFilter>,
) -> ApiResult<Out<Page<ApiToken>>> {
    Ok(Out(tokens::list(&st, &caller, &p, f).await?))
}

/// Create a token for yourself, or (tenant-admins, operators) for another user.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", operation_id = "token_create", request_body = TokenCreate,
    responses((status = 201, description = "The token and its secret, shown this once", body = TokenCreated)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<TokenCreate>,
) -> ApiResult<Response> {
    Ok(created(tokens::create(&st, &caller, b).await?))
}

/// Get a token (never its secret).
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", operation_id = "token_view",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "The token", body = ApiToken)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<ApiToken>> {
    Ok(Out(tokens::get(&st, &caller, &id).await?))
}

/// Rename a token.
#[utoipa::path(patch, path = "/v1/tokens/{id}", tag = "tokens", operation_id = "token_update",
    params(("id" = String, Path, description = "Token id")), request_body = TokenUpdate,
    responses((status = 200, description = "The changed token", body = ApiToken)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<TokenUpdate>,
) -> ApiResult<Out<ApiToken>> {
    Ok(Out(tokens::update(&st, &caller, &id, if_match, b).await?))
}

/// Revoke a token: it stops working at once and stays listed as revoked.
#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens", operation_id = "token_revoke",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "The revoked token", body = ApiToken)))]
pub async fn revoke(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<ApiToken>> {
    Ok(Out(tokens::revoke(&st, &caller, &id).await?))
}

/// Delete a token: it stops working at once; the audit log keeps its history.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", operation_id = "token_delete",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    tokens::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
