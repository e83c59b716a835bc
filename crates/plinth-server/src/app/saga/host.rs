//! Host sagas: drain (move every instance off: stop → re-place → prepare elsewhere →
//! start, one at a time, abortable, per-instance progress) and recover (after an operator
//! declared a fenced host failed: re-place instances whose restart policy allows it on
//! other hosts, with a warning that their local disks were lost; fail the others).

use super::instance::{change, wait_observed};
use super::{SagaDef, Step, StepError, StepFuture, progress};
use crate::app::AppState;
use crate::app::lifecycle::{self, Pokes};
use crate::app::scheduler::{Consumer, no_valid_host};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::host_state::{self, HostEvent};
use plinth_domain::placement::Request;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parameters of the host sagas.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostParams {
    pub host_id: HostId,
}

/// `host.drain`.
pub static DRAIN: SagaDef = SagaDef { kind: "host.drain", steps: &[Step { name: "move", run: drain, undo: None }] };

/// `host.recover`.
pub static RECOVER: SagaDef =
    SagaDef { kind: "host.recover", steps: &[Step { name: "recover", run: recover, undo: None }] };

/// The placement request that re-places an existing instance.
pub fn request_for(inst: &Instance) -> Request {
    Request {
        vcpus: inst.vcpus,
        memory_mib: inst.memory_mib,
        disk_gib: inst.disk_gib,
        cpu_policy: inst.cpu_policy,
        hugepages: inst.hugepages,
        gpu: inst.gpu.clone(),
        runtime: inst.runtime_class,
        tenant_id: inst.tenant_id.0.clone(),
        require_dedicated_host: inst.dedicated_host,
        required_traits: inst.required_traits.clone(),
        forbidden_traits: inst.forbidden_traits.clone(),
        group: None,
        avoid_hosts: Default::default(),
        volume_host: None,
    }
}

/// Instances on `host` that still live there.
async fn residents(st: &AppState, host: &HostId) -> Result<Vec<Instance>, StepError> {
    let mut tx = st.store.begin().await?;
    let list: Vec<Instance> = tx.list_by(&Scope::Platform, "host_id", host.as_str()).await?;
    drop(tx);
    Ok(list.into_iter().filter(|i| !matches!(i.lifecycle, Lifecycle::Deleted | Lifecycle::Deleting)).collect())
}

/// Claims a new host for `inst` (never `from`) and moves its record there in one
/// transaction: new allocation, old one released, a fresh spec for the new host, the old
/// host told to drop it. Returns the new host, or why no host would take it.
pub async fn relocate(
    st: &AppState,
    op: &OperationId,
    inst: &Instance,
    from: &HostId,
    power: PowerState,
    warning: Option<String>,
) -> Result<Result<Instance, String>, StepError> {
    // A local volume lives in its host's pool: an instance using one cannot leave (a
    // volume on a shared backend goes with it).
    let pinned: Vec<String> = crate::app::storage::attachments::local_volumes_of(st, &inst.id)
        .await
        .map_err(|e| StepError::new("local_volumes", e.to_string()))?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    if !pinned.is_empty() {
        return Ok(Err(format!(
            "it has local volumes attached ({}) in the pool of host {from}: it cannot leave that host (detach them \
             first, or wait for the host)",
            pinned.join(", ")
        )));
    }
    let mut req = request_for(inst);
    req.avoid_hosts.insert(from.0.clone());
    let group = match &inst.placement_group_id {
        Some(g) => Some(st.store.get::<PlacementGroup>(&Scope::Platform, g.as_str()).await?),
        None => None,
    };
    let consumer = Consumer {
        instance_id: inst.id.clone(),
        tenant_id: inst.tenant_id.clone(),
        project_id: inst.project_id.clone(),
    };
    let (mut tx, alloc) = match st.sched.claim(&st.store, &mut req, group.as_ref(), &consumer, None).await {
        Ok(x) => x,
        Err(crate::app::scheduler::ClaimError::NoHost(nv)) => return Ok(Err(no_valid_host(&nv).detail)),
        Err(crate::app::scheduler::ClaimError::Store(e)) => return Err(e.into()),
    };
    let mut cur: Instance = tx.get(&Scope::Platform, inst.id.as_str()).await?;
    let released = lifecycle::drop_allocations(&mut tx, &inst.id, Some(&alloc.id)).await?;
    let mut pokes = Pokes::default();
    tx.bump_desired(from.as_str()).await?;
    pokes.host(from);
    cur.host_id = Some(alloc.host_id.clone());
    cur.claim = Some(alloc.claim.clone());
    cur.observed = None;
    if warning.is_some() {
        cur.warning = warning;
    }
    lifecycle::publish(&mut cur, power, power == PowerState::Running);
    let ev = lifecycle::event(&cur, "moved", format!("from host {from} to host {}", alloc.host_id), Some(op));
    lifecycle::save(&mut tx, &mut cur, true, vec![ev], Some(op), &mut pokes).await?;
    tx.commit().await?;
    for a in &released {
        st.sched.note_release(a.host_id.as_str(), &a.claim);
    }
    pokes.send(&st.signals);
    Ok(Ok(cur))
}

async fn set_item(st: &AppState, op: &OperationId, target: &str, status: &str, detail: Option<String>) {
    let r = progress(st, op, |o| {
        match o.items.iter_mut().find(|i| i.target == target) {
            Some(i) => {
                i.status = status.to_string();
                i.detail = detail;
            }
            None => o.items.push(OperationItem { target: target.to_string(), status: status.to_string(), detail }),
        }
        o.done = o.items.iter().filter(|i| matches!(i.status.as_str(), "done" | "failed" | "skipped")).count() as u32;
        o.total = o.items.len() as u32;
        o.message = format!("{} of {} instances handled", o.done, o.total);
    })
    .await;
    if let Err(e) = r {
        tracing::warn!(operation = %op, "could not record progress: {e}");
    }
}

/// Moves one instance off `from` during a drain.
async fn drain_one(st: &AppState, op: &OperationId, inst: &Instance, from: &HostId) -> Result<(), String> {
    let was_running = inst.power == PowerState::Running;
    let stopped = change(st, &inst.id, Some(op), |i| {
        i.lifecycle = Lifecycle::Busy;
        i.action = Some("migrate".into());
        if i.power == PowerState::Running {
            lifecycle::publish(i, PowerState::Stopped, false);
            return (true, vec![lifecycle::event(i, "stop_requested", "draining its host", Some(op))]);
        }
        (false, vec![])
    })
    .await
    .map_err(|e| e.detail)?;
    let back_to_normal = |restart: bool| async move {
        let _ = change(st, &inst.id, Some(op), |i| {
            i.lifecycle = Lifecycle::Active;
            i.action = None;
            if restart {
                lifecycle::publish(i, PowerState::Running, true);
                return (true, vec![]);
            }
            (false, vec![])
        })
        .await;
    };
    if was_running
        && let Err(e) = wait_observed(st, &inst.id, stopped.spec_generation, ObservedState::Stopped, false).await
    {
        back_to_normal(true).await;
        return Err(format!("could not stop it: {}", e.detail));
    }
    let moved = match relocate(st, op, &stopped, from, PowerState::Stopped, None).await {
        Ok(Ok(m)) => m,
        Ok(Err(why)) => {
            back_to_normal(was_running).await;
            return Err(why);
        }
        Err(e) => {
            back_to_normal(was_running).await;
            return Err(e.detail);
        }
    };
    let result = async {
        wait_observed(st, &moved.id, moved.spec_generation, ObservedState::Stopped, false).await?;
        if was_running {
            start_moved(st, op, &moved.id).await?;
        }
        Ok::<(), StepError>(())
    }
    .await;
    back_to_normal(false).await;
    result.map_err(|e| format!("moved, but: {}", e.detail))
}

fn drain<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: HostParams =
            serde_json::from_value(p.clone()).map_err(|e| StepError::new("bad_saga_params", e.to_string()))?;
        let list = residents(st, &p.host_id).await?;
        let current: Operation = st.store.get(&Scope::Platform, op.as_str()).await?;
        for inst in &list {
            if !current.items.iter().any(|i| i.target == inst.id.0) {
                set_item(st, op, inst.id.as_str(), "pending", None).await;
            }
        }
        let mut failed = 0;
        for inst in &list {
            if let Some((_, _, true)) = st.store.operation_saga(op.as_str()).await? {
                return Err(StepError::new("cancelled", "the drain was aborted; instances already moved stay moved"));
            }
            set_item(st, op, inst.id.as_str(), "moving", None).await;
            match drain_one(st, op, inst, &p.host_id).await {
                Ok(()) => set_item(st, op, inst.id.as_str(), "done", None).await,
                Err(why) => {
                    failed += 1;
                    set_item(st, op, inst.id.as_str(), "failed", Some(why)).await;
                }
            }
        }
        if failed > 0 {
            return Err(StepError::new(
                "could_not_move",
                format!("{failed} of {} instances could not move; see the operation's items", list.len()),
            ));
        }
        let mut tx = st.store.begin().await?;
        let mut host: Host = tx.get(&Scope::Platform, p.host_id.as_str()).await?;
        if host.state == HostState::Draining
            && let Ok(next) = host_state::next(host.state, HostEvent::DrainFinished)
        {
            host.state = next;
            tx.save(&mut host).await?;
        }
        tx.commit().await?;
        st.sched.refresh_host(&st.store, p.host_id.as_str()).await?;
        Ok(())
    })
}

fn recover<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: HostParams =
            serde_json::from_value(p.clone()).map_err(|e| StepError::new("bad_saga_params", e.to_string()))?;
        let list = residents(st, &p.host_id).await?;
        for inst in &list {
            set_item(st, op, inst.id.as_str(), "pending", None).await;
        }
        let mut failed = 0;
        for inst in &list {
            if inst.restart_policy == RestartPolicy::Never {
                fail_instance(st, op, inst, "its host failed and its restart policy is never").await?;
                set_item(st, op, inst.id.as_str(), "skipped", Some("restart policy never: marked failed".into())).await;
                continue;
            }
            set_item(st, op, inst.id.as_str(), "moving", None).await;
            let warning = format!(
                "recovered after host {} failed; its local disk was lost and was rebuilt from image {}",
                p.host_id, inst.image
            );
            match relocate(st, op, inst, &p.host_id, PowerState::Stopped, Some(warning)).await? {
                Ok(moved) => match start_moved(st, op, &moved.id).await {
                    Ok(()) => set_item(st, op, inst.id.as_str(), "done", None).await,
                    Err(e) => {
                        failed += 1;
                        set_item(st, op, inst.id.as_str(), "failed", Some(format!("re-placed, but: {}", e.detail)))
                            .await;
                    }
                },
                Err(why) => {
                    failed += 1;
                    fail_instance(st, op, inst, &format!("could not be recovered: {why}")).await?;
                    set_item(st, op, inst.id.as_str(), "failed", Some(why)).await;
                }
            }
        }
        if failed > 0 {
            return Err(StepError::new(
                "could_not_recover",
                format!("{failed} of {} instances were not recovered", list.len()),
            ));
        }
        Ok(())
    })
}

/// Starts an instance moved to another host the way a start does: its NICs placed there
/// and `ready` first (`nics_not_ready` / `nic_failed` otherwise, nothing published), then
/// `Running` published and awaited.
async fn start_moved(st: &AppState, op: &OperationId, id: &InstanceId) -> Result<(), StepError> {
    crate::app::network::nics::place_instance_nics(st, id).await.map_err(|e| StepError::new(e.code, e.detail))?;
    crate::app::dataplane::wait_nics_ready(st, id).await?;
    let started = change(st, id, Some(op), |i| {
        lifecycle::publish(i, PowerState::Running, true);
        (true, vec![])
    })
    .await?;
    wait_observed(st, id, started.spec_generation, ObservedState::Running, false).await
}

/// Ends an instance as `failed` and releases what it held on its lost host.
async fn fail_instance(st: &AppState, op: &OperationId, inst: &Instance, why: &str) -> Result<(), StepError> {
    let mut tx = st.store.begin().await?;
    let mut cur: Instance = tx.get(&Scope::Platform, inst.id.as_str()).await?;
    let allocs = lifecycle::drop_allocations(&mut tx, &inst.id, None).await?;
    cur.lifecycle = Lifecycle::Failed;
    cur.action = None;
    cur.claim = None;
    cur.warning = Some(why.to_string());
    // Should the host ever come back, its agent removes the guest.
    lifecycle::publish(&mut cur, PowerState::Absent, false);
    let mut pokes = Pokes::default();
    let ev = lifecycle::event(&cur, "failed", why, Some(op));
    lifecycle::save(&mut tx, &mut cur, true, vec![ev], Some(op), &mut pokes).await?;
    tx.commit().await?;
    for a in &allocs {
        st.sched.note_release(a.host_id.as_str(), &a.claim);
    }
    pokes.send(&st.signals);
    Ok(())
}
