//! Instance actions that leave the waiting to a saga: start, stop, reboot, rebuild and
//! delete. Each checks the action against the instance's state (a repeated action is a
//! no-op success), changes the instance, writes the operation and starts its saga, in one
//! transaction. Stop, reboot, rebuild and delete publish their spec in that transaction;
//! start publishes nothing: its saga boots the guest once its NICs are ready
//! (`saga::instance::START`), and the instance stays as it was until then.

use super::{accepted, boot_source, check_image, converge, invalid_transition, need_host};
use crate::app::lifecycle::{self, Pokes};
use crate::app::saga::{self, instance::InstanceParams, instance::StartParams};
use crate::app::{AppState, Caller, Error, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::instance_state::{self, Action, Verdict};

/// What an action does to the instance inside its transaction, and what the operation
/// then waits for.
pub(super) struct Plan {
    pub kind: &'static str,
    pub saga: &'static str,
    pub params: serde_json::Value,
    pub event: (&'static str, String),
}

/// Loads the instance for a change by the caller, checks the action against its state,
/// and either answers at once (no-op) or applies `apply` and starts the operation.
async fn act(
    st: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
    apply: impl FnOnce(&mut Instance) -> Result<Plan>,
) -> Result<InstanceAccepted> {
    let mut tx = st.store.begin().await?;
    let mut inst: Instance = tx.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&inst.tenant_id, Some(&inst.project_id)) {
        return Err(Error::forbidden("acting on instances in this project"));
    }
    let mut verdict = instance_state::check(inst.state, action).map_err(invalid_transition)?;
    if verdict == Verdict::NoOp && action == Action::Stop && start_pending(&mut tx, id).await? {
        // Stopped, but a start still waits for its NICs: this stop is later, and wins (its
        // spec supersedes the start's, which then never boots the guest).
        verdict = Verdict::Proceed;
    }
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
    let before = inst.spec_generation;
    let plan = apply(&mut inst)?;
    let mut op = saga::new_operation(plan.kind, id, Some(&inst.tenant_id), Some(&inst.project_id), user, 1);
    let mut pokes = Pokes::default();
    let ev = lifecycle::event(&inst, plan.event.0, plan.event.1.clone(), Some(&op.id));
    let published = inst.spec_generation != before;
    lifecycle::save(&mut tx, &mut inst, published, vec![ev], Some(&op.id), &mut pokes).await?;
    saga::begin(st, &mut tx, &mut op, plan.saga, plan.params, &[]).await?;
    tx.audit(&caller.audit(), id, Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    saga::spawn(st, op.id.clone());
    Ok(accepted(caller, inst, op))
}

/// Whether a start of the instance is still under way (its saga waits for the NICs before
/// it publishes anything). In the caller's transaction, which holds the instance's row.
async fn start_pending(tx: &mut plinth_store::Tx, id: &str) -> Result<bool> {
    let ops: Vec<Operation> = tx.list_by(&Scope::Platform, "target", id).await?;
    Ok(ops.iter().any(|o| o.kind == "instance.start" && o.status == OperationStatus::Running))
}

/// Starts an instance: nothing is published here; the `instance.start` saga places its
/// NICs, waits until they are ready, and only then tells the host to boot it.
pub async fn start(st: &AppState, caller: &Caller, id: &str) -> Result<InstanceAccepted> {
    act(st, caller, id, Action::Start, |i| {
        need_host(i)?;
        i.lifecycle = Lifecycle::Active;
        Ok(Plan {
            kind: "instance.start",
            saga: "instance.start",
            params: serde_json::to_value(StartParams { instance_id: i.id.clone(), generation: i.spec_generation })
                .unwrap_or_default(),
            event: ("start_requested", "start, once its network interfaces are ready".into()),
        })
    })
    .await
}

/// Stops an instance (stopping a stopped one succeeds and does nothing).
pub async fn stop(st: &AppState, caller: &Caller, id: &str) -> Result<InstanceAccepted> {
    act(st, caller, id, Action::Stop, |i| {
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

/// Reboots a running instance.
pub async fn reboot(st: &AppState, caller: &Caller, id: &str) -> Result<InstanceAccepted> {
    act(st, caller, id, Action::Reboot, |i| {
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

/// Rebuilds a stopped instance's root disk from an image (the same or another).
pub async fn rebuild(st: &AppState, caller: &Caller, id: &str, b: InstanceRebuild) -> Result<InstanceAccepted> {
    check_image(&b.image)?;
    let cur: Instance = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&cur.tenant_id, Some(&cur.project_id)) {
        return Err(Error::forbidden("acting on instances in this project"));
    }
    if let Some(v) = crate::app::storage::attachments::boot_volume_of(st, &cur.id).await? {
        return Err(Error::conflict(
            "boot_from_volume",
            format!(
                "instance {} boots from volume {v}: a rebuild would remake a root disk it does not have; fill a new \
                 volume from the image and create an instance with it",
                cur.id
            ),
        )
        .with_constraint(serde_json::json!({ "rule": "not booted from a volume" })));
    }
    let boot = boot_source(st.store.image_for_project(&cur.project_id, &b.image).await?, &b.image, cur.disk_gib)?;
    act(st, caller, id, Action::Rebuild, |i| {
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

/// Deletes an instance: removed from its host, then its claim released.
pub async fn delete(st: &AppState, caller: &Caller, id: &str) -> Result<InstanceAccepted> {
    act(st, caller, id, Action::Delete, |i| {
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
