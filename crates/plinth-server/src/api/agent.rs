//! The agent protocol (`/agent/v1`, its own OpenAPI document): enrolment (a join token
//! traded for a host id and a per-host credential), the long-polled desired state, and
//! reports of inventory, heartbeats and observed guest state. Every call but enrolment
//! authenticates with the host credential and touches only that host's objects.
//! The use cases are in [`crate::app::agent`].

use super::created;
use crate::app::{AppState, agent};
use crate::context::RequestCtx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use axum::Extension;
use axum::Json as Out;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use plinth_api::*;
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
    let audit =
        AuditEntry { actor_user_id: None, actor_token_id: None, action: ctx.action, request_id: ctx.request_id };
    Ok(created(agent::enroll(&st, b, &audit).await?))
}

/// An agent authenticated by its per-host credential (`Authorization: Bearer phc_…`).
/// It may read and write only its own host's objects.
#[derive(Clone, Debug)]
pub struct HostCaller {
    pub host_id: HostId,
}

impl FromRequestParts<AppState> for HostCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let secret = crate::context::bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthenticated("send Authorization: Bearer phc_…"))?;
        let host_id = agent::authenticate(st, secret).await?;
        if let Some(ctx) = parts.extensions.get::<RequestCtx>() {
            ctx.actor.lock().unwrap_or_else(|e| e.into_inner()).user_id = Some(host_id.0.clone());
        }
        Ok(HostCaller { host_id })
    }
}

/// The host's desired state. Long-polls: answers when the host's desired generation is
/// above `after`, or after `wait` seconds with the state as it is.
#[utoipa::path(get, path = "/agent/v1/desired", tag = "agent", operation_id = "agent_desired", params(DesiredQuery),
    responses((status = 200, description = "Every guest the host should have", body = DesiredState)))]
pub async fn desired(
    State(st): State<AppState>,
    caller: HostCaller,
    Query(q): Query<DesiredQuery>,
) -> ApiResult<Out<DesiredState>> {
    Ok(Out(agent::desired(&st, &caller.host_id, q).await?))
}

/// Report the host's inventory (replaces the stored one). The first report of an
/// enrolling host makes it available.
#[utoipa::path(put, path = "/agent/v1/inventory", tag = "agent", operation_id = "agent_inventory",
    request_body = HostInventory,
    responses((status = 204, description = "Stored")))]
pub async fn inventory(
    State(st): State<AppState>,
    caller: HostCaller,
    Json(inv): Json<HostInventory>,
) -> ApiResult<StatusCode> {
    agent::inventory(&st, &caller.host_id, inv).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A heartbeat. An unreachable host that beats again comes back `cordoned` (an operator
/// uncordons it once trusted again).
#[utoipa::path(post, path = "/agent/v1/heartbeat", tag = "agent", operation_id = "agent_heartbeat",
    request_body = Heartbeat,
    responses((status = 200, description = "The host's state and when to beat next", body = HeartbeatAck)))]
pub async fn heartbeat(
    State(st): State<AppState>,
    caller: HostCaller,
    Json(_b): Json<Heartbeat>,
) -> ApiResult<Out<HeartbeatAck>> {
    Ok(Out(agent::heartbeat(&st, &caller.host_id, _b).await?))
}

/// Report what the host's guests are doing. Reports about instances not on this host are
/// rejected (and change nothing); an observation older than the one stored is stale.
#[utoipa::path(post, path = "/agent/v1/observed", tag = "agent", operation_id = "agent_observed",
    request_body = ObservedReport,
    responses((status = 200, description = "How many reports were applied", body = ObservedAck)))]
pub async fn observed(
    State(st): State<AppState>,
    caller: HostCaller,
    Json(b): Json<ObservedReport>,
) -> ApiResult<Out<ObservedAck>> {
    Ok(Out(agent::observed(&st, &caller.host_id, b).await?))
}

/// A volume's encryption key, for the host that holds the volume while it must make or
/// open it (404 for any other host's volume).
#[utoipa::path(get, path = "/agent/v1/volumes/{id}/key", tag = "agent", operation_id = "agent_volume_key",
    params(("id" = String, Path, description = "Volume id")),
    responses((status = 200, description = "The volume's key", body = VolumeKey)))]
pub async fn volume_key(
    State(st): State<AppState>,
    caller: HostCaller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Out<VolumeKey>> {
    Ok(Out(crate::app::storage::volumes::key_for_host(&st, &caller.host_id, &id).await?))
}
