//! Instances: create, read, change and delete them, and their actions (start, stop,
//! reboot, resize, rebuild) and event history. An action that waits on a host answers the
//! instance and the operation that follows it ([`InstanceAccepted`]).
//!
//! Create runs the first steps of its saga in the caller's call, in one transaction: quota,
//! placement and the atomic claim (`create.rs`). Actions publish a spec in one transaction
//! and leave the waiting to a saga (`actions.rs`, `resize.rs`).

mod actions;
pub mod console;
mod create;
pub mod placement_groups;
mod resize;
pub mod terminal;

pub use actions::{delete, reboot, rebuild, start, stop};
pub use create::create;
pub use resize::resize;

use crate::app::saga::instance::ConvergeParams;
use crate::app::{AppState, Caller, Error, Kind, Paging, Result, opt_labels, reference};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::instance_state;
use plinth_domain::validate;
use plinth_store::Val;
use serde_json::json;

/// The instance and its operation, as `caller` may see them.
fn accepted(caller: &Caller, instance: Instance, operation: Operation) -> InstanceAccepted {
    InstanceAccepted { instance: shown(caller, instance), operation }
}

/// The instance as `caller` may see it: how it runs on its host (command line, pid,
/// socket paths) is for operators only.
pub fn shown(caller: &Caller, mut inst: Instance) -> Instance {
    if !caller.principal.is_operator() {
        inst.runtime = None;
    }
    inst
}

fn injected(st: &AppState, point: &str) -> Result<()> {
    if st.config.failpoints.contains(point) {
        return Err(Error::new(Kind::Unavailable, "injected_failure", format!("fail point {point}")));
    }
    Ok(())
}

fn invalid_transition(e: instance_state::InvalidTransition) -> Error {
    Error::new(Kind::Conflict, "invalid_transition", e.to_string()).with_constraint(json!({
        "rule": "instance-state", "state": e.state.as_str(), "action": e.action.as_str()
    }))
}

/// Finds a shape by id or name.
async fn shape_named(st: &AppState, s: &str) -> Result<Shape> {
    if ShapeId::parse(s).is_some() {
        return st.store.get(&Scope::Platform, s).await.map_err(|e| reference(e, "shape"));
    }
    let page = st.store.list::<Shape>(&Scope::Platform, &[("name", s.to_string())], 1, None).await?;
    page.items.into_iter().next().ok_or_else(|| {
        Error::invalid("invalid_reference", format!("shape: no shape is named {s:?}"))
            .with_constraint(json!({ "field": "shape", "rule": "exists" }))
    })
}

fn check_image(image: &str) -> Result<()> {
    validate::text("image", image, 255)?;
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(Error::invalid("invalid_value", "image must be a non-empty reference without spaces")
            .with_constraint(json!({ "field": "image", "rule": "reference" })));
    }
    Ok(())
}

/// What an instance boots from the image its reference found for its project
/// ([`plinth_store::Store::image_for_project`]: an image id, or a name, the project's own
/// image first, then a public one). An image the project may not use is answered as one
/// that does not exist.
fn boot_source(found: Option<Image>, reference: &str, disk_gib: u64) -> Result<BootSource> {
    let image = found.ok_or_else(|| {
        Error::new(Kind::NotFound, "image_not_found", format!("no image {reference:?} is available to this project"))
            .with_constraint(json!({ "field": "image", "rule": "exists" }))
    })?;
    if image.status != ImageStatus::Available {
        let status = plinth_store::image_status_str(image.status);
        return Err(Error::new(
            Kind::Conflict,
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
        return Err(Error::invalid(
            "image_too_large",
            format!("image {}'s disk is {size} bytes; the shape's disk is {disk_gib} GiB", image.name),
        )
        .with_constraint(json!({ "field": "image", "rule": "fits-shape-disk", "disk_gib": disk_gib })));
    }
    Ok(crate::app::images::files::boot_source(&image))
}

fn converge(i: &Instance, want: ObservedState, clear_busy: bool) -> serde_json::Value {
    serde_json::to_value(ConvergeParams { instance_id: i.id.clone(), generation: i.spec_generation, want, clear_busy })
        .unwrap_or_default()
}

fn need_host(i: &Instance) -> Result<()> {
    if i.claim.is_none() {
        return Err(Error::new(
            Kind::Conflict,
            "invalid_transition",
            format!("instance {} holds no host (it is {}); delete it and create it again", i.id, i.state.as_str()),
        )
        .with_constraint(json!({ "rule": "instance-state", "state": i.state.as_str() })));
    }
    Ok(())
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

/// The user data column, written beside the document (never returned).
pub fn user_data_column(u: Option<String>) -> [(&'static str, Val); 1] {
    [("user_data", Val::Text(u))]
}

/// Instances visible to the caller, filtered.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: InstanceFilter) -> Result<Page<Instance>> {
    let pg = Paging::from(p)?;
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
            return Err(Error::malformed("invalid_filter", "label must be key=value"));
        }
        filters.push(("labels", v));
    }
    let mut page = st.store.list::<Instance>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?;
    page.items = page.items.into_iter().map(|i| shown(caller, i)).collect();
    Ok(page)
}

/// One instance.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Instance> {
    Ok(shown(caller, st.store.get(&caller.scope(), id).await?))
}

/// Changes an instance's labels or restart policy (at generation `if_match`, when given).
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: InstanceUpdate,
) -> Result<Instance> {
    opt_labels("labels", &b.labels)?;
    let cur: Instance = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&cur.tenant_id, Some(&cur.project_id)) {
        return Err(Error::forbidden("changing instances in this project"));
    }
    let inst = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |i: &mut Instance| {
            if let Some(l) = b.labels {
                i.labels = l;
            }
            if let Some(r) = b.restart_policy {
                i.restart_policy = r;
            }
            Ok(vec![])
        })
        .await?;
    Ok(shown(caller, inst))
}

/// An instance's history, oldest first.
pub async fn events(st: &AppState, caller: &Caller, id: &str, p: &PageParams) -> Result<Page<InstanceEvent>> {
    let pg = Paging::from(p)?;
    let _: Instance = st.store.get(&caller.scope(), id).await?;
    Ok(st
        .store
        .list::<InstanceEvent>(&caller.scope(), &[("instance_id", id.to_string())], pg.limit, pg.cursor.as_deref())
        .await?)
}
