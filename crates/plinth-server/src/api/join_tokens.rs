//! `/v1/host-join-tokens` (operators): single-use, expiring secrets an agent exchanges for
//! a host id and credential at `/agent/v1/enroll`.

use super::{created, expiry, opt_text, reference};
use crate::context::Caller;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Paging, Query};
use crate::secrets;
use crate::state::AppState;
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;
use plinth_store::Val;

/// Default lifetime of a join token: one hour.
pub const DEFAULT_SECONDS: u64 = 3600;

/// List join tokens (never their secrets).
#[utoipa::path(get, path = "/v1/host-join-tokens", tag = "inventory", operation_id = "host_join_token_list", params(PageParams),
    responses((status = 200, description = "Join tokens", body = Page<HostJoinToken>)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<HostJoinToken>>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(&p)?;
    Ok(Out(st.store.list::<HostJoinToken>(&Scope::Platform, &[], pg.limit, pg.cursor.as_deref()).await?))
}

/// Make a join token.
#[utoipa::path(post, path = "/v1/host-join-tokens", tag = "inventory", operation_id = "host_join_token_create",
    request_body = HostJoinTokenCreate,
    responses((status = 201, description = "The token and its secret, shown this once", body = HostJoinTokenCreated)))]
pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<HostJoinTokenCreate>,
) -> ApiResult<Response> {
    caller.require_operator("enrolling hosts")?;
    opt_text("description", &b.description, 255)?;
    let expires_at = expiry("expires_in_seconds", b.expires_in_seconds.unwrap_or(DEFAULT_SECONDS), 60, 7 * 24 * 3600)?;
    let max_uses = b.max_uses.unwrap_or(1);
    validate::quantity("max_uses", max_uses as u64, 1, 10_000)?;
    if let Some(r) = &b.rack_id {
        let _: Rack = st.store.get(&Scope::Platform, r.as_str()).await.map_err(|e| reference(e, "rack_id"))?;
    }
    let now = Utc::now();
    let t = HostJoinToken {
        id: JoinTokenId::generate(),
        description: b.description.unwrap_or_default(),
        rack_id: b.rack_id,
        expires_at,
        max_uses,
        uses: 0,
        used_at: None,
        used_by_host_id: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let secret = secrets::mint(secrets::JOIN_TOKEN, t.id.as_str());
    st.store.insert_with(&t, &[("secret_hash", Val::text(secrets::hash(&secret)))], &caller.audit()).await?;
    let ca = st.config.ca_sha256;
    let agent_join_token = plinth_client::connect::JoinToken::combined(&secret, ca.as_ref());
    Ok(created(HostJoinTokenCreated { join_token: t, secret, ca_sha256: ca.map(|f| f.hex()), agent_join_token }))
}

/// Get a join token.
#[utoipa::path(get, path = "/v1/host-join-tokens/{id}", tag = "inventory", operation_id = "host_join_token_view",
    params(("id" = String, Path, description = "Join token id")),
    responses((status = 200, description = "The join token", body = HostJoinToken)))]
pub async fn get(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Out<HostJoinToken>> {
    caller.require_operator("reading inventory")?;
    Ok(Out(st.store.get(&Scope::Platform, &id).await?))
}

/// Change a join token's description.
#[utoipa::path(patch, path = "/v1/host-join-tokens/{id}", tag = "inventory", operation_id = "host_join_token_update",
    params(("id" = String, Path, description = "Join token id")), request_body = HostJoinTokenUpdate,
    responses((status = 200, description = "The changed join token", body = HostJoinToken)))]
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<HostJoinTokenUpdate>,
) -> ApiResult<Out<HostJoinToken>> {
    caller.require_operator("enrolling hosts")?;
    opt_text("description", &b.description, 255)?;
    let t = st
        .store
        .update(&Scope::Platform, &id, if_match, &caller.audit(), |t: &mut HostJoinToken| {
            if let Some(d) = b.description {
                t.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(t))
}

/// Revoke a join token by deleting it.
#[utoipa::path(delete, path = "/v1/host-join-tokens/{id}", tag = "inventory", operation_id = "host_join_token_delete",
    params(("id" = String, Path, description = "Join token id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    caller.require_operator("enrolling hosts")?;
    st.store.delete::<HostJoinToken>(&Scope::Platform, &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
