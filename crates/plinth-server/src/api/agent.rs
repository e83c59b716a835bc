//! The agent protocol (`/agent/v1`, its own OpenAPI document): enrolment (a join token
//! traded for a host id and a per-host credential), the long-polled desired state, and
//! reports of inventory, heartbeats and observed guest state. Every call but enrolment
//! authenticates with the host credential and touches only that host's objects.

use super::created;
use crate::context::RequestCtx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Query};
use crate::lifecycle::{self, Pokes};
use crate::secrets;
use crate::signals;
use crate::state::AppState;
use axum::Extension;
use axum::Json as Out;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::host_state::{self, HostEvent};
use plinth_domain::validate;
use plinth_store::{AuditEntry, Val, now_micros};
use std::time::Duration;

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
        scheduling: HostScheduling::default(),
        bmc: None,
        last_seen_at: None,
        fenced_by: None,
        fenced_at: None,
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

/// An agent authenticated by its per-host credential (`Authorization: Bearer phc_…`).
/// It may read and write only its own host's objects.
#[derive(Clone, Debug)]
pub struct HostCaller {
    pub host_id: HostId,
}

impl FromRequestParts<AppState> for HostCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let invalid = || ApiError::unauthenticated("the host credential is not valid");
        let secret = crate::context::bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthenticated("send Authorization: Bearer phc_…"))?;
        let host_id = secrets::record_id(secret, secrets::HOST_CREDENTIAL, HostId::PREFIX).ok_or_else(invalid)?;
        let hash = st.store.host_credential_hash(&host_id).await?.ok_or_else(invalid)?;
        if !secrets::verify(secret, &hash) {
            return Err(invalid());
        }
        if let Some(ctx) = parts.extensions.get::<RequestCtx>() {
            ctx.actor.lock().unwrap_or_else(|e| e.into_inner()).user_id = Some(host_id.clone());
        }
        Ok(HostCaller { host_id: HostId(host_id) })
    }
}

fn spec_of(inst: &Instance, user_data: Option<String>) -> Option<InstanceSpec> {
    // A spec is published once the create saga asks the host to prepare it.
    if inst.spec_generation == 0 {
        return None;
    }
    let power = match inst.lifecycle {
        Lifecycle::Deleted | Lifecycle::Deleting => PowerState::Absent,
        _ => inst.power,
    };
    Some(InstanceSpec {
        instance_id: inst.id.clone(),
        name: inst.name.clone(),
        generation: inst.spec_generation,
        power,
        boot_generation: inst.boot_generation,
        runtime_class: inst.runtime_class,
        image: inst.image.clone(),
        claim: inst.claim.clone()?,
        ssh_keys: inst.ssh_keys.clone(),
        user_data,
        boot: inst.boot.clone(),
    })
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
    let wait = Duration::from_secs(q.wait.unwrap_or(30).min(60));
    let after = q.after.unwrap_or(-1);
    let deadline = tokio::time::Instant::now() + wait;
    let key = signals::host_key(caller.host_id.as_str());
    let host = caller.host_id.0.clone();
    st.signals
        .wait_for(&key, deadline, signals::MAX_POLL, || async {
            let g = st.store.desired_generation(&host).await?.unwrap_or(0);
            Ok::<_, ApiError>((g > after).then_some(()))
        })
        .await?;
    let (generation, list) = st.store.host_instances(caller.host_id.as_str()).await?;
    let instances = list.into_iter().filter_map(|(i, u)| spec_of(&i, u)).collect();
    Ok(Out(DesiredState { host_id: caller.host_id, generation, instances }))
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
    let mut tx = st.store.begin().await?;
    let mut host: Host = tx.get(&Scope::Platform, caller.host_id.as_str()).await?;
    host.inventory = inv;
    host.last_seen_at = Some(Utc::now());
    if let Ok(next) = host_state::next(host.state, HostEvent::AgentReady) {
        host.state = next;
    }
    tx.save(&mut host).await?;
    tx.set_column("hosts", caller.host_id.as_str(), "heartbeat_at", Val::Int(Some(now_micros()))).await?;
    tx.commit().await?;
    st.sched.refresh_host(&st.store, caller.host_id.as_str()).await?;
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
    let mut tx = st.store.begin().await?;
    let mut host: Host = tx.get(&Scope::Platform, caller.host_id.as_str()).await?;
    let before = host.state;
    let event = if host.state == HostState::Enrolling { HostEvent::AgentReady } else { HostEvent::HeartbeatRestored };
    if let Ok(next) = host_state::next(host.state, event) {
        host.state = next;
    }
    host.last_seen_at = Some(Utc::now());
    let mut pokes = Pokes::default();
    if host.state != before {
        tx.save(&mut host).await?;
        lifecycle::refresh_host_instances(&mut tx, &host.id, &mut pokes).await?;
    } else {
        tx.save_quiet(&host).await?;
    }
    tx.set_column("hosts", caller.host_id.as_str(), "heartbeat_at", Val::Int(Some(now_micros()))).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    if host.state != before {
        st.sched.refresh_host(&st.store, caller.host_id.as_str()).await?;
    }
    Ok(Out(HeartbeatAck {
        host_id: caller.host_id,
        state: host.state,
        interval_seconds: st.config.heartbeat_interval.as_secs().max(1),
    }))
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
    if b.instances.len() > 10_000 {
        return Err(ApiError::invalid("too_many", "at most 10000 instances per report"));
    }
    let mut tx = st.store.begin().await?;
    let mut pokes = Pokes::default();
    let (mut applied, mut stale, mut rejected) = (0, 0, 0);
    let mut watch = false;
    for o in &b.instances {
        let mut inst: Instance = match tx.find::<Instance>(&Scope::Platform, o.instance_id.as_str()).await? {
            Some(i) if i.host_id.as_ref() == Some(&caller.host_id) => i,
            // Not this host's: nothing is applied, and the answer says no more than that.
            _ => {
                rejected += 1;
                continue;
            }
        };
        let known = inst.observed.as_ref().map(|x| x.generation).unwrap_or(i64::MIN);
        let same = inst.observed.as_ref().is_some_and(|x| x.generation == o.generation && x.state == o.state);
        let new_evidence = o.evidence.is_some() && o.evidence != inst.runtime;
        if o.generation < known || o.generation > inst.spec_generation || (same && !new_evidence) {
            stale += 1;
            continue;
        }
        if o.evidence.is_some() {
            inst.runtime = o.evidence.clone();
        }
        let mut events = vec![];
        if !same {
            inst.observed = Some(Observation {
                state: o.state,
                generation: o.generation,
                detail: o.detail.clone(),
                at: Utc::now(),
                timings: o.timings.clone(),
            });
            let detail = || o.detail.clone().unwrap_or_else(|| "no detail".into());
            match o.state {
                ObservedState::Failed => events.push(lifecycle::event(&inst, "guest_failed", detail(), None)),
                ObservedState::Crashed => events.push(lifecycle::event(&inst, "guest_crashed", detail(), None)),
                _ => {}
            }
            watch |= matches!(o.state, ObservedState::Failed | ObservedState::Crashed | ObservedState::Stopped)
                && inst.power == PowerState::Running;
        }
        lifecycle::save(&mut tx, &mut inst, false, events, None, &mut pokes).await?;
        applied += 1;
    }
    tx.commit().await?;
    pokes.send(&st.signals);
    if watch {
        // A guest died or powered off: its restart policy applies now, not at the next tick.
        st.tasks.trigger("instance_watcher");
    }
    Ok(Out(ObservedAck { applied, stale, rejected }))
}
