//! `/agent/v1/enroll`: an agent trades a single-use join token for its host id and a
//! per-host credential. Every other agent call authenticates with that credential.

use super::created;
use crate::context::RequestCtx;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::secrets;
use crate::state::AppState;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;
use plinth_store::AuditEntry;

/// Enrol a host.
#[utoipa::path(post, path = "/agent/v1/enroll", tag = "agent", operation_id = "agent_enroll", request_body = EnrollRequest,
    security(()),
    responses((status = 201, description = "The host id and its credential, shown this once", body = EnrollResponse)))]
pub async fn enroll(
    State(st): State<AppState>,
    Extension(ctx): Extension<RequestCtx>,
    Json(b): Json<EnrollRequest>,
) -> ApiResult<Response> {
    let invalid = || ApiError::unauthenticated("the join token is not valid").with_code("invalid_join_token");
    let join_id = secrets::record_id(&b.join_token, secrets::JOIN_TOKEN, JoinTokenId::PREFIX).ok_or_else(invalid)?;
    validate::dns_label("hostname", &b.hostname)?;
    let now = Utc::now();
    let host = Host {
        id: HostId::generate(),
        name: b.hostname,
        site_id: None,
        rack_id: None,
        state: HostState::Enrolling,
        health: HostHealth::Unknown,
        ownership: Ownership::Shared,
        labels: Default::default(),
        traits: vec![],
        inventory: b.inventory.unwrap_or_default(),
        bmc: None,
        last_seen_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let credential = secrets::mint(secrets::HOST_CREDENTIAL, host.id.as_str());
    let audit =
        AuditEntry { actor_user_id: None, actor_token_id: None, action: ctx.action, request_id: ctx.request_id };
    let token = b.join_token.clone();
    let host = st
        .store
        .enroll_host(&join_id, move |hash| secrets::verify(&token, hash), host, &secrets::hash(&credential), &audit)
        .await?;
    Ok(created(EnrollResponse { host_id: host.id, credential }))
}
