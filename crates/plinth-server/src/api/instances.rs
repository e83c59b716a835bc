//! `/v1/instances`: create, read, change and delete instances, and their actions (start,
//! stop, reboot, resize, rebuild) and event history. Every action that waits on a host
//! answers `202` with the instance and an operation to follow.
//!
//! Create runs the first steps of its saga here, in one transaction: quota, placement and
//! the atomic claim. So a full cloud answers `409 no_capacity` at once and a refusal writes
//! nothing; the rest (prepare on the host, start) continues in the background.

use super::opt_labels;
use crate::context::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::{IfMatch, Json, Paging, Query};
use crate::lifecycle::{self, Pokes};
use crate::saga::{self, host::request_for, instance::ConvergeParams, instance::InstanceParams};
use crate::scheduler::Consumer;
use crate::state::AppState;
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::instance_state::{self, Action, Verdict};
use plinth_domain::quota;
use plinth_domain::validate;
use plinth_store::Val;
use serde_json::json;

/// 202 with the instance (as `caller` may see it) and its operation.
fn accepted(caller: &Caller, instance: Instance, operation: Operation) -> Response {
    let instance = shown(caller, instance);
    (StatusCode::ACCEPTED, axum::Json(InstanceAccepted { instance, operation })).into_response()
}

/// The instance as `caller` may see it: how it runs on its host (command line, pid,
/// socket paths) is for operators only.
pub fn shown(caller: &Caller, mut inst: Instance) -> Instance {
    if !caller.principal.is_operator() {
        inst.runtime = None;
    }
    inst
}

fn injected(st: &AppState, point: &str) -> ApiResult<()> {
    if st.config.failpoints.contains(point) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "injected_failure", format!("fail point {point}")));
    }
    Ok(())
}

fn invalid_transition(e: instance_state::InvalidTransition) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "invalid_transition", e.to_string()).with_constraint(json!({
        "rule": "instance-state", "state": e.state.as_str(), "action": e.action.as_str()
    }))
}

/// Finds a shape by id or name.
async fn shape_named(st: &AppState, s: &str) -> ApiResult<Shape> {
    if ShapeId::parse(s).is_some() {
        return st.store.get(&Scope::Platform, s).await.map_err(|e| super::reference(e, "shape"));
    }
    let page = st.store.list::<Shape>(&Scope::Platform, &[("name", s.to_string())], 1, None).await?;
    page.items.into_iter().next().ok_or_else(|| {
        ApiError::invalid("invalid_reference", format!("shape: no shape is named {s:?}"))
            .with_constraint(json!({ "field": "shape", "rule": "exists" }))
    })
}

fn check_image(image: &str) -> ApiResult<()> {
    validate::text("image", image, 255)?;
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid("invalid_value", "image must be a non-empty reference without spaces")
            .with_constraint(json!({ "field": "image", "rule": "reference" })));
    }
    Ok(())
}

/// What an instance boots from the image its reference found for its project
/// ([`plinth_store::Store::image_for_project`]: an image id, or a name, the project's own
/// image first, then a public one). An image the project may not use is answered as one
/// that does not exist.
fn boot_source(found: Option<Image>, reference: &str, disk_gib: u64) -> ApiResult<BootSource> {
    let image = found.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            format!("no image {reference:?} is available to this project"),
        )
        .with_constraint(json!({ "field": "image", "rule": "exists" }))
    })?;
    if image.status != ImageStatus::Available {
        let status = plinth_store::image_status_str(image.status);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "image_not_available",
            format!("image {} ({}) is {status}, not available", image.name, image.id),
        )
        .with_constraint(json!({ "field": "image", "rule": "available", "status": status })));
    }
    let disk = image.files.iter().find(|f| f.role == ImageFileRole::Disk).and_then(|f| f.virtual_size_bytes);
    if let Some(size) = disk
        && disk_gib > 0
        && size > disk_gib << 30
    {
        return Err(ApiError::invalid(
            "image_too_large",
            format!("image {}'s disk is {size} bytes; the shape's disk is {disk_gib} GiB", image.name),
        )
        .with_constraint(json!({ "field": "image", "rule": "fits-shape-disk", "disk_gib": disk_gib })));
    }
    Ok(crate::image_files::boot_source(&image))
}

fn check_create(b: &InstanceCreate) -> ApiResult<()> {
    validate::dns_label("name", &b.name)?;
    check_image(&b.image)?;
    validate::labels("labels", &b.labels)?;
    validate::traits("required_traits", &b.required_traits)?;
    validate::traits("forbidden_traits", &b.forbidden_traits)?;
    if let Some(u) = &b.user_data
        && u.len() > 64 * 1024
    {
        return Err(ApiError::invalid("too_large", "user_data is limited to 64 KiB")
            .with_constraint(json!({ "field": "user_data", "max_bytes": 65536 })));
    }
    if b.ssh_keys.len() > 32 {
        return Err(ApiError::invalid("too_many", "at most 32 ssh_keys")
            .with_constraint(json!({ "field": "ssh_keys", "max": 32 })));
    }
    for k in &b.ssh_keys {
        let ok = k.len() <= 16 * 1024
            && ["ssh-", "ecdsa-", "sk-"].iter().any(|p| k.starts_with(p))
            && k.split_whitespace().count() >= 2;
        if !ok {
            return Err(ApiError::invalid(
                "invalid_value",
                "ssh_keys must be OpenSSH public keys (`ssh-ed25519 AAAA… comment`)",
            )
            .with_constraint(json!({ "field": "ssh_keys", "rule": "openssh-public-key" })));
        }
    }
    Ok(())
}

/// List instances visible to the caller.
#[utoipa::path(get, path = "/v1/instances", tag = "instances", operation_id = "instance_list",
    params(PageParams, InstanceFilter),
    responses((status = 200, description = "Instances", body = Page<Instance>)))]
pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Query(p): Query<PageParams>,
    Query(f): Query<InstanceFilter>,
) -> ApiResult<Out<Page<Instance>>> {
    let pg = Paging::from(&p)?;
    let mut filters = Vec::new();
    if let Some(v) = f.project_id {
        filters.push(("project_id", v.0));
    }
    if let Some(v) = f.state {
        filters.push(("state", v.as_str().to_string()));
    }
    if let Some(v) = f.host_id {
        filters.push(("host_id", v.0));
    }
    if let Some(v) = f.name {
        filters.push(("name", v));
    }
    if let Some(v) = f.label {
        if !v.contains('=') {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_filter", "label must be key=value"));
        }
        filters.push(("labels", v));
    }
    let mut page = st.store.list::<Instance>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?;
    page.items = page.items.into_iter().map(|i| shown(&caller, i)).collect();
    Ok(Out(page))
}

/// Create an instance: placed and claimed now, prepared and started in the background.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", operation_id = "instance_create",
    request_body = InstanceCreate,
    responses((status = 202, description = "Placed; the operation follows preparation and start", body = InstanceAccepted)))]
pub async fn create(State(st): State<AppState>, caller: Caller, Json(b): Json<InstanceCreate>) -> ApiResult<Response> {
    check_create(&b)?;
    // The reads that need only the request run together; their answers are checked in
    // order, the project's first.
    let scope = caller.scope();
    let (project, shape, image) = tokio::join!(
        st.store.get::<Project>(&scope, b.project_id.as_str()),
        shape_named(&st, &b.shape),
        st.store.image_for_project(&b.project_id, &b.image)
    );
    let project = project?;
    if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
        return Err(ApiError::forbidden("creating instances in this project"));
    }
    let shape = shape?;
    if let Some(rc) = b.runtime_class
        && rc != shape.runtime_class
    {
        return Err(ApiError::invalid(
            "invalid_value",
            format!("shape {} is for runtime class {:?}, not {rc:?}", shape.name, shape.runtime_class),
        )
        .with_constraint(json!({ "field": "runtime_class", "rule": "matches-shape" })));
    }
    // The group and the budgets of the project's tenant are read together, too.
    let group = async {
        match &b.placement_group_id {
            Some(g) => st.store.get::<PlacementGroup>(&scope, g.as_str()).await.map(Some),
            None => Ok(None),
        }
    };
    let (group, budget) = tokio::join!(group, crate::billing::check_budget(&st, &project.tenant_id));
    let group = match group.map_err(|e| super::reference(e, "placement_group_id"))? {
        Some(g) => {
            if g.project_id != project.id {
                return Err(ApiError::invalid(
                    "invalid_reference",
                    "placement_group_id: the group is in another project",
                )
                .with_constraint(json!({ "field": "placement_group_id", "rule": "same-project" })));
            }
            Some(g)
        }
        None => None,
    };
    let boot = boot_source(image?, &b.image, shape.disk_gib)?;
    budget?;
    let now = Utc::now();
    let mut inst = Instance {
        id: InstanceId::generate(),
        tenant_id: project.tenant_id.clone(),
        project_id: project.id.clone(),
        name: b.name.clone(),
        shape_id: shape.id.clone(),
        shape_name: shape.name.clone(),
        vcpus: shape.vcpus,
        memory_mib: shape.memory_mib,
        disk_gib: shape.disk_gib,
        gpu: shape.gpu.clone(),
        cpu_policy: shape.cpu_policy,
        hugepages: shape.hugepages,
        runtime_class: shape.runtime_class,
        image: b.image.clone(),
        boot: Some(boot),
        runtime: None,
        placement_group_id: group.as_ref().map(|g| g.id.clone()),
        required_traits: b.required_traits.clone(),
        forbidden_traits: b.forbidden_traits.clone(),
        dedicated_host: b.dedicated_host,
        restart_policy: b.restart_policy.unwrap_or(RestartPolicy::OnFailure),
        ssh_keys: b.ssh_keys.clone(),
        has_user_data: b.user_data.is_some(),
        labels: b.labels.clone(),
        state: InstanceState::Creating,
        lifecycle: Lifecycle::Creating,
        action: None,
        power: PowerState::Stopped,
        spec_generation: 0,
        boot_generation: 0,
        host_id: None,
        claim: None,
        observed: None,
        warning: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    // Saga steps `quota` and `claim`, inline: the quota is charged in the claim's
    // transaction, so concurrent creates cannot pass it.
    injected(&st, "instance.create:quota")?;
    injected(&st, "instance.create:claim")?;
    let claim_started = Utc::now();
    let mut req = request_for(&inst);
    let consumer = Consumer {
        instance_id: inst.id.clone(),
        tenant_id: inst.tenant_id.clone(),
        project_id: inst.project_id.clone(),
    };
    let (mut tx, alloc) = st.sched.claim(&st.store, &mut req, group.as_ref(), &consumer, None).await?;
    inst.host_id = Some(alloc.host_id.clone());
    inst.claim = Some(alloc.claim.clone());
    let scopes = [inst.tenant_id.as_str(), inst.project_id.as_str()];
    if let Err(e) = tx.quota_charge(&scopes, &quota::consumption(&inst)).await {
        drop(tx);
        // The scheduler's cache counted the claim just rolled back.
        let _ = st.sched.refresh_host(&st.store, alloc.host_id.as_str()).await;
        return Err(e.into());
    }
    // The spec goes to the host in this same transaction: the saga's `prepare` step then
    // only waits for the host to report it prepared.
    lifecycle::publish(&mut inst, PowerState::Stopped, false);
    tx.bump_desired(alloc.host_id.as_str()).await?;
    let mut op = saga::new_operation(
        "instance.create",
        inst.id.as_str(),
        Some(&inst.tenant_id),
        Some(&inst.project_id),
        Some(&caller.principal.user_id),
        4,
    );
    op.started_at = Some(claim_started); // the inline steps' timing starts with the claim
    let params = serde_json::to_value(InstanceParams { instance_id: inst.id.clone(), start: b.start.unwrap_or(true) })
        .unwrap_or_default();
    saga::begin(&st, &mut tx, &mut op, "instance.create", params, &["quota", "claim"]).await?;
    let placed = format!(
        "shape {}, image {}, placed on host {}{}",
        inst.shape_name,
        inst.image,
        alloc.host_id,
        if alloc.claim.tcg { " (TCG: the host has no usable KVM)" } else { "" }
    );
    let created = lifecycle::event(&inst, "created", placed, Some(&op.id));
    lifecycle::insert_new(&mut tx, &inst, &user_data_column(b.user_data.clone()), vec![created]).await?;
    tx.audit(&caller.audit(), inst.id.as_str(), Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    st.signals.poke(&crate::signals::host_key(alloc.host_id.as_str()));
    // An insert's `updated_at` column is the object's creation time.
    st.signals.announce(&crate::signals::instance_key(inst.id.as_str()), inst.created_at.timestamp_micros());
    saga::spawn(&st, op.id.clone());
    Ok(accepted(&caller, inst, op))
}

/// Get an instance.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", operation_id = "instance_view",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 200, description = "The instance", body = Instance)))]
pub async fn get(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Out<Instance>> {
    Ok(Out(shown(&caller, st.store.get(&caller.scope(), &id).await?)))
}

/// Change an instance's labels or restart policy.
#[utoipa::path(patch, path = "/v1/instances/{id}", tag = "instances", operation_id = "instance_update",
    params(("id" = String, Path, description = "Instance id")), request_body = InstanceUpdate,
    responses((status = 200, description = "The instance", body = Instance)))]
pub async fn update(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<InstanceUpdate>,
) -> ApiResult<Out<Instance>> {
    opt_labels("labels", &b.labels)?;
    let cur: Instance = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_write_in(&cur.tenant_id, Some(&cur.project_id)) {
        return Err(ApiError::forbidden("changing instances in this project"));
    }
    let inst = st
        .store
        .update(&caller.scope(), &id, if_match, &caller.audit(), |i: &mut Instance| {
            if let Some(l) = b.labels {
                i.labels = l;
            }
            if let Some(r) = b.restart_policy {
                i.restart_policy = r;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(shown(&caller, inst)))
}

/// What an action does to the instance inside its transaction, and what the operation
/// then waits for.
struct Plan {
    kind: &'static str,
    saga: &'static str,
    params: serde_json::Value,
    event: (&'static str, String),
}

/// Loads the instance for a change by the caller, checks the action against its state,
/// and either answers at once (no-op) or applies `apply` and starts the operation.
async fn act(
    st: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
    apply: impl FnOnce(&mut Instance) -> ApiResult<Plan>,
) -> ApiResult<Response> {
    let mut tx = st.store.begin().await?;
    let mut inst: Instance = tx.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&inst.tenant_id, Some(&inst.project_id)) {
        return Err(ApiError::forbidden("acting on instances in this project"));
    }
    let verdict = instance_state::check(inst.state, action).map_err(invalid_transition)?;
    let kind = format!("instance.{}", action.as_str());
    let user = Some(&caller.principal.user_id);
    if verdict == Verdict::NoOp {
        let mut op = saga::new_operation(&kind, id, Some(&inst.tenant_id), Some(&inst.project_id), user, 0);
        op.status = OperationStatus::Succeeded;
        op.finished_at = Some(Utc::now());
        op.message = format!("nothing to do: the instance is {}", inst.state.as_str());
        tx.insert(&op, &[]).await?;
        tx.audit(&caller.audit(), id, Some(inst.tenant_id.as_str()), 202).await?;
        tx.commit().await?;
        return Ok(accepted(caller, inst, op));
    }
    let plan = apply(&mut inst)?;
    let mut op = saga::new_operation(plan.kind, id, Some(&inst.tenant_id), Some(&inst.project_id), user, 1);
    let mut pokes = Pokes::default();
    let ev = lifecycle::event(&inst, plan.event.0, plan.event.1.clone(), Some(&op.id));
    lifecycle::save(&mut tx, &mut inst, true, vec![ev], Some(&op.id), &mut pokes).await?;
    saga::begin(st, &mut tx, &mut op, plan.saga, plan.params, &[]).await?;
    tx.audit(&caller.audit(), id, Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    saga::spawn(st, op.id.clone());
    Ok(accepted(caller, inst, op))
}

fn converge(i: &Instance, want: ObservedState, clear_busy: bool) -> serde_json::Value {
    serde_json::to_value(ConvergeParams { instance_id: i.id.clone(), generation: i.spec_generation, want, clear_busy })
        .unwrap_or_default()
}

fn need_host(i: &Instance) -> ApiResult<()> {
    if i.claim.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "invalid_transition",
            format!("instance {} holds no host (it is {}); delete it and create it again", i.id, i.state.as_str()),
        )
        .with_constraint(json!({ "rule": "instance-state", "state": i.state.as_str() })));
    }
    Ok(())
}

/// Start an instance.
#[utoipa::path(post, path = "/v1/instances/{id}/start", tag = "instances", operation_id = "instance_start",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Starting (or already running)", body = InstanceAccepted)))]
pub async fn start(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    act(&st, &caller, &id, Action::Start, |i| {
        need_host(i)?;
        i.lifecycle = Lifecycle::Active;
        lifecycle::publish(i, PowerState::Running, true);
        Ok(Plan {
            kind: "instance.start",
            saga: "instance.converge",
            params: converge(i, ObservedState::Running, false),
            event: ("start_requested", "start".into()),
        })
    })
    .await
}

/// Stop an instance (stopping a stopped one succeeds and does nothing).
#[utoipa::path(post, path = "/v1/instances/{id}/stop", tag = "instances", operation_id = "instance_stop",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Stopping (or already stopped)", body = InstanceAccepted)))]
pub async fn stop(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    act(&st, &caller, &id, Action::Stop, |i| {
        need_host(i)?;
        i.lifecycle = Lifecycle::Active;
        lifecycle::publish(i, PowerState::Stopped, false);
        Ok(Plan {
            kind: "instance.stop",
            saga: "instance.converge",
            params: converge(i, ObservedState::Stopped, false),
            event: ("stop_requested", "stop".into()),
        })
    })
    .await
}

/// Reboot a running instance.
#[utoipa::path(post, path = "/v1/instances/{id}/reboot", tag = "instances", operation_id = "instance_reboot",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Rebooting", body = InstanceAccepted)))]
pub async fn reboot(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    act(&st, &caller, &id, Action::Reboot, |i| {
        i.lifecycle = Lifecycle::Busy;
        i.action = Some("reboot".into());
        lifecycle::publish(i, PowerState::Running, true);
        Ok(Plan {
            kind: "instance.reboot",
            saga: "instance.converge",
            params: converge(i, ObservedState::Running, true),
            event: ("reboot_requested", "reboot".into()),
        })
    })
    .await
}

/// Rebuild a stopped instance's root disk from an image (the same or another).
#[utoipa::path(post, path = "/v1/instances/{id}/rebuild", tag = "instances", operation_id = "instance_rebuild",
    params(("id" = String, Path, description = "Instance id")), request_body = InstanceRebuild,
    responses((status = 202, description = "Rebuilding", body = InstanceAccepted)))]
pub async fn rebuild(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(b): Json<InstanceRebuild>,
) -> ApiResult<Response> {
    check_image(&b.image)?;
    let cur: Instance = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_write_in(&cur.tenant_id, Some(&cur.project_id)) {
        return Err(ApiError::forbidden("acting on instances in this project"));
    }
    let boot = boot_source(st.store.image_for_project(&cur.project_id, &b.image).await?, &b.image, cur.disk_gib)?;
    act(&st, &caller, &id, Action::Rebuild, |i| {
        need_host(i)?;
        let from = std::mem::replace(&mut i.image, b.image.clone());
        i.boot = Some(boot);
        i.lifecycle = Lifecycle::Busy;
        i.action = Some("rebuild".into());
        lifecycle::publish(i, PowerState::Stopped, false);
        Ok(Plan {
            kind: "instance.rebuild",
            saga: "instance.converge",
            params: converge(i, ObservedState::Stopped, true),
            event: ("rebuild_requested", format!("from image {from} to {}", b.image)),
        })
    })
    .await
}

/// Resize a stopped instance to another shape; it moves to another host when its own
/// cannot hold the new shape.
#[utoipa::path(post, path = "/v1/instances/{id}/resize", tag = "instances", operation_id = "instance_resize",
    params(("id" = String, Path, description = "Instance id")), request_body = InstanceResize,
    responses((status = 202, description = "Resizing", body = InstanceAccepted)))]
pub async fn resize(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(b): Json<InstanceResize>,
) -> ApiResult<Response> {
    let cur: Instance = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_write_in(&cur.tenant_id, Some(&cur.project_id)) {
        return Err(ApiError::forbidden("acting on instances in this project"));
    }
    instance_state::check(cur.state, Action::Resize).map_err(invalid_transition)?;
    need_host(&cur)?;
    let shape = shape_named(&st, &b.shape).await?;
    if shape.runtime_class != cur.runtime_class {
        return Err(ApiError::invalid("invalid_value", "the new shape is for another runtime class")
            .with_constraint(json!({ "field": "shape", "rule": "same-runtime-class" })));
    }
    let mut probe = cur.clone();
    apply_shape(&mut probe, &shape);
    let mut req = request_for(&probe);
    let group = match &cur.placement_group_id {
        Some(g) => Some(st.store.get::<PlacementGroup>(&Scope::Platform, g.as_str()).await?),
        None => None,
    };
    let consumer =
        Consumer { instance_id: cur.id.clone(), tenant_id: cur.tenant_id.clone(), project_id: cur.project_id.clone() };
    let prefer = cur.host_id.as_ref().map(|h| h.0.clone());
    let (mut tx, alloc) = st.sched.claim(&st.store, &mut req, group.as_ref(), &consumer, prefer.as_deref()).await?;
    let mut inst: Instance = tx.get(&caller.scope(), &id).await?;
    if inst.generation != cur.generation {
        return Err(ApiError::new(StatusCode::CONFLICT, "generation_mismatch", "the instance changed; retry"));
    }
    let released = lifecycle::drop_allocations(&mut tx, &inst.id, Some(&alloc.id)).await?;
    let mut pokes = Pokes::default();
    for a in released.iter().filter(|a| a.host_id != alloc.host_id) {
        tx.bump_desired(a.host_id.as_str()).await?;
        pokes.host(&a.host_id);
    }
    let from = inst.shape_name.clone();
    let moved = inst.host_id.as_ref() != Some(&alloc.host_id);
    let before = quota::consumption(&inst);
    apply_shape(&mut inst, &shape);
    let scopes = [inst.tenant_id.as_str(), inst.project_id.as_str()];
    if let Err(e) = tx.quota_charge(&scopes, &quota::delta(&before, &quota::consumption(&inst))).await {
        drop(tx);
        let _ = st.sched.refresh_host(&st.store, alloc.host_id.as_str()).await;
        return Err(e.into());
    }
    inst.host_id = Some(alloc.host_id.clone());
    inst.claim = Some(alloc.claim.clone());
    if moved {
        inst.observed = None;
    }
    inst.lifecycle = Lifecycle::Busy;
    inst.action = Some("resize".into());
    lifecycle::publish(&mut inst, PowerState::Stopped, false);
    let mut op = saga::new_operation(
        "instance.resize",
        &id,
        Some(&inst.tenant_id),
        Some(&inst.project_id),
        Some(&caller.principal.user_id),
        1,
    );
    let detail = format!(
        "from {from} to {}{}",
        shape.name,
        if moved { format!(", moved to host {} (cold move)", alloc.host_id) } else { String::new() }
    );
    let ev = lifecycle::event(&inst, "resize_requested", detail, Some(&op.id));
    lifecycle::save(&mut tx, &mut inst, true, vec![ev], Some(&op.id), &mut pokes).await?;
    saga::begin(&st, &mut tx, &mut op, "instance.converge", converge(&inst, ObservedState::Stopped, true), &[]).await?;
    tx.audit(&caller.audit(), &id, Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    for a in &released {
        st.sched.note_release(a.host_id.as_str(), &a.claim);
    }
    pokes.send(&st.signals);
    saga::spawn(&st, op.id.clone());
    Ok(accepted(&caller, inst, op))
}

fn apply_shape(i: &mut Instance, s: &Shape) {
    i.shape_id = s.id.clone();
    i.shape_name = s.name.clone();
    i.vcpus = s.vcpus;
    i.memory_mib = s.memory_mib;
    i.disk_gib = s.disk_gib;
    i.gpu = s.gpu.clone();
    i.cpu_policy = s.cpu_policy;
    i.hugepages = s.hugepages;
}

/// Delete an instance: removed from its host, then its claim released.
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances", operation_id = "instance_delete",
    params(("id" = String, Path, description = "Instance id")),
    responses((status = 202, description = "Deleting", body = InstanceAccepted)))]
pub async fn delete(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    act(&st, &caller, &id, Action::Delete, |i| {
        i.lifecycle = Lifecycle::Deleting;
        i.action = None;
        if i.host_id.is_some() && i.spec_generation > 0 {
            lifecycle::publish(i, PowerState::Absent, false);
        }
        Ok(Plan {
            kind: "instance.delete",
            saga: "instance.delete",
            params: serde_json::to_value(InstanceParams { instance_id: i.id.clone(), start: false })
                .unwrap_or_default(),
            event: ("delete_requested", "delete".into()),
        })
    })
    .await
}

/// An instance's history, oldest first.
#[utoipa::path(get, path = "/v1/instances/{id}/events", tag = "instances", operation_id = "instance_events",
    params(("id" = String, Path, description = "Instance id"), PageParams),
    responses((status = 200, description = "Events", body = Page<InstanceEvent>)))]
pub async fn events(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<InstanceEvent>>> {
    let pg = Paging::from(&p)?;
    let _: Instance = st.store.get(&caller.scope(), &id).await?;
    Ok(Out(st
        .store
        .list::<InstanceEvent>(&caller.scope(), &[("instance_id", id)], pg.limit, pg.cursor.as_deref())
        .await?))
}

/// The user data column, written beside the document (never returned).
pub fn user_data_column(u: Option<String>) -> [(&'static str, Val); 1] {
    [("user_data", Val::Text(u))]
}
