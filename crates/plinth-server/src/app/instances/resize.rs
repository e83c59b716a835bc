//! Instance resize: re-claims first, on the same host when the new shape still fits there,
//! elsewhere when it no longer does (a cold move), and charges the quota's difference, in
//! the transaction that publishes the new spec and starts the saga that waits for it.

use super::{accepted, apply_shape, converge, invalid_transition, need_host, shape_named};
use crate::app::lifecycle::{self, Pokes};
use crate::app::saga::{self, host::request_for};
use crate::app::scheduler::Consumer;
use crate::app::{AppState, Caller, Error, Kind, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::instance_state::{self, Action};
use plinth_domain::quota;
use serde_json::json;

/// Resizes a stopped instance to another shape; it moves to another host when its own
/// cannot hold the new shape (a cold move).
pub async fn resize(st: &AppState, caller: &Caller, id: &str, b: InstanceResize) -> Result<InstanceAccepted> {
    let cur: Instance = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&cur.tenant_id, Some(&cur.project_id)) {
        return Err(Error::forbidden("acting on instances in this project"));
    }
    instance_state::check(cur.state, Action::Resize).map_err(invalid_transition)?;
    need_host(&cur)?;
    let shape = shape_named(st, &b.shape).await?;
    if shape.runtime_class != cur.runtime_class {
        return Err(Error::invalid("invalid_value", "the new shape is for another runtime class")
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
    let mut inst: Instance = tx.get(&caller.scope(), id).await?;
    if inst.generation != cur.generation {
        return Err(Error::new(Kind::Conflict, "generation_mismatch", "the instance changed; retry"));
    }
    let released = lifecycle::drop_allocations(&mut tx, &inst.id, Some(&alloc.id)).await?;
    let mut pokes = Pokes::default();
    for a in released.iter().filter(|a| a.host_id != alloc.host_id) {
        tx.bump_desired(a.host_id.as_str()).await?;
        pokes.host(&a.host_id);
    }
    let from = inst.shape_name.clone();
    let moved = inst.host_id.as_ref() != Some(&alloc.host_id);
    if moved {
        // A local volume lives in its host's pool: an instance using one cannot leave.
        let attached: Vec<String> = crate::app::storage::attachments::local_volumes_of(st, &inst.id)
            .await?
            .into_iter()
            .map(|v| v.to_string())
            .collect();
        if !attached.is_empty() {
            drop(tx);
            let _ = st.sched.refresh_host(&st.store, alloc.host_id.as_str()).await;
            return Err(Error::conflict(
                "local_volumes_pin_host",
                format!(
                    "the new shape does not fit on host {}, and the instance has local volumes there ({}): detach \
                     them to let it move, or pick a shape that fits",
                    inst.host_id.as_ref().map(|h| h.to_string()).unwrap_or_default(),
                    attached.join(", ")
                ),
            )
            .with_constraint(json!({ "field": "shape", "rule": "fits the host of its local volumes" })));
        }
    }
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
        id,
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
    saga::begin(st, &mut tx, &mut op, "instance.converge", converge(&inst, ObservedState::Stopped, true), &[]).await?;
    tx.audit(&caller.audit(), id, Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    for a in &released {
        st.sched.note_release(a.host_id.as_str(), &a.claim);
    }
    pokes.send(&st.signals);
    saga::spawn(st, op.id.clone());
    Ok(accepted(caller, inst, op))
}
