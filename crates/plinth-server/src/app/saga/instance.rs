//! Instance sagas: create (quota → claim → prepare on the host → start), start (of a
//! stopped instance), delete (stop and remove from the host → release the claim) and
//! converge (wait for the host to reach a published spec: stop, reboot, resize, rebuild).
//!
//! The create saga's first two steps run inside the API request (so a full cloud answers
//! `409` at once); the executor resumes it at `prepare`. Undoing `claim` releases the
//! allocation and ends the instance as `deleted`, so a failed create leaves nothing.
//!
//! Both ways a guest boots (create's `start`, and `instance.start`) go through
//! [`boot_when_nics_ready`]: the instance's NICs are placed on its host and must be `ready`
//! before `Running` is published, so a host is never told to boot a guest whose network is
//! not there yet; past the deadline the operation fails naming what is missing, and the
//! instance stays as it was.

use super::{SagaDef, Step, StepError, StepFuture};
use crate::app::AppState;
use crate::app::lifecycle::{self, Pokes};
use crate::app::signals;
use plinth_api::*;
use plinth_domain::authz::Scope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Parameters of the create and delete sagas.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceParams {
    pub instance_id: InstanceId,
    /// Create: start once prepared.
    #[serde(default)]
    pub start: bool,
}

/// Parameters of the converge saga.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvergeParams {
    pub instance_id: InstanceId,
    /// The spec generation the host must reach.
    pub generation: i64,
    pub want: ObservedState,
    /// End a `busy` lifecycle (reboot, resize, rebuild) when done, or when it fails.
    pub clear_busy: bool,
}

/// Parameters of the start saga.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartParams {
    pub instance_id: InstanceId,
    /// The instance's spec generation when the start was asked for. A spec published since
    /// by anything else (a stop, a rebuild, a resize, a delete, a drain) supersedes the
    /// start; one that already runs it (another start) makes it a no-op.
    pub generation: i64,
}

/// `instance.create`.
pub static CREATE: SagaDef = SagaDef {
    kind: "instance.create",
    steps: &[
        Step { name: "quota", run: quota, undo: None },
        Step { name: "claim", run: claim, undo: Some(release_claim) },
        Step { name: "prepare", run: prepare, undo: Some(unprepare) },
        Step { name: "start", run: create_start, undo: None },
    ],
};

/// `instance.start`: boot a stopped (or failed, or crashed) instance once its NICs are
/// ready.
pub static START: SagaDef =
    SagaDef { kind: "instance.start", steps: &[Step { name: "start", run: start, undo: None }] };

/// `instance.delete`.
pub static DELETE: SagaDef = SagaDef {
    kind: "instance.delete",
    steps: &[Step { name: "stop", run: delete_stop, undo: None }, Step { name: "release", run: release, undo: None }],
};

/// `instance.converge`.
pub static CONVERGE: SagaDef =
    SagaDef { kind: "instance.converge", steps: &[Step { name: "converge", run: converge, undo: None }] };

fn params<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, StepError> {
    serde_json::from_value(v.clone()).map_err(|e| StepError::new("bad_saga_params", e.to_string()))
}

/// Waits until the agent reports `want` for at least `generation`. A `failed` report, a
/// lost host or the step timeout fail the wait; with `lenient`, a lost host or a timeout
/// count as done (removing a guest from a host that is gone).
pub async fn wait_observed(
    st: &AppState,
    id: &InstanceId,
    generation: i64,
    want: ObservedState,
    lenient: bool,
) -> Result<(), StepError> {
    wait_observed_from(st, id, None, generation, want, lenient).await
}

/// [`wait_observed`], whose first look is at `read`, the instance as the caller just read
/// it, rather than a fresh read.
async fn wait_observed_from(
    st: &AppState,
    id: &InstanceId,
    mut read: Option<Instance>,
    generation: i64,
    want: ObservedState,
    lenient: bool,
) -> Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + st.config.step_timeout;
    let key = signals::instance_key(id.as_str());
    let out = st
        .signals
        .wait_for(&key, deadline, signals::MAX_POLL, move || {
            let known = read.take();
            async move {
                let inst: Instance = match known {
                    Some(i) => i,
                    None => st.store.get(&Scope::Platform, id.as_str()).await?,
                };
                if let Some(o) = &inst.observed
                    && o.generation >= generation
                {
                    if o.state == want {
                        // The agent's phases for this report go into the step's timing.
                        super::note_host_phases(&o.timings);
                        return Ok(Some(()));
                    }
                    if o.state == ObservedState::Failed && want != ObservedState::Absent {
                        return Err(StepError::new(
                            "guest_failed",
                            format!("the guest failed on its host: {}", o.detail.clone().unwrap_or_default()),
                        ));
                    }
                }
                if let Some(h) = &inst.host_id {
                    let state = st.store.host_state(h.as_str()).await?;
                    let lost = [HostState::Unreachable, HostState::Failed, HostState::Retired];
                    if state.as_deref().is_none_or(|s| lost.iter().any(|l| l.as_str() == s)) {
                        if lenient {
                            return Ok(Some(()));
                        }
                        return Err(StepError::new("host_unreachable", format!("host {h} stopped reporting")));
                    }
                }
                Ok::<_, StepError>(None)
            }
        })
        .await?;
    match out {
        Some(()) => Ok(()),
        None if lenient => Ok(()),
        None => Err(StepError::new(
            "timeout",
            format!(
                "the host did not report {} within {} s",
                serde_json::to_value(want).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                st.config.step_timeout.as_secs()
            ),
        )),
    }
}

/// Read-modify-write of one instance in its own transaction; `f` returns whether the spec
/// changed and the events to record.
pub async fn change(
    st: &AppState,
    id: &InstanceId,
    op: Option<&OperationId>,
    f: impl FnOnce(&mut Instance) -> (bool, Vec<InstanceEvent>),
) -> Result<Instance, StepError> {
    let mut tx = st.store.begin().await?;
    let mut inst: Instance = tx.get(&Scope::Platform, id.as_str()).await?;
    let (spec_changed, events) = f(&mut inst);
    let mut pokes = Pokes::default();
    lifecycle::save(&mut tx, &mut inst, spec_changed, events, op, &mut pokes).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(inst)
}

fn quota<'a>(_st: &'a AppState, _op: &'a OperationId, _p: &'a Value) -> StepFuture<'a> {
    // Quotas arrive with metering; the step exists so the saga's shape does not change.
    Box::pin(async { Ok(()) })
}

fn claim<'a>(st: &'a AppState, _op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        let inst: Instance = st.store.get(&Scope::Platform, p.instance_id.as_str()).await?;
        if inst.claim.is_none() {
            return Err(StepError::new("no_claim", "the instance holds no claim"));
        }
        Ok(())
    })
}

/// Releases every allocation of an instance and ends it as `deleted`.
pub async fn release_all(st: &AppState, id: &InstanceId, op: Option<&OperationId>, why: &str) -> Result<(), StepError> {
    let mut tx = st.store.begin().await?;
    let mut inst: Instance = tx.get(&Scope::Platform, id.as_str()).await?;
    // The NICs its create made go with it; the ones attached to it are unplugged. First,
    // so the VPCs are locked before any host row (the order every network change takes).
    crate::app::network::nics::release_instance_nics(&mut tx, &inst)
        .await
        .map_err(|e| StepError::new(e.code, e.detail))?;
    // Its volumes are free again (they outlive it).
    crate::app::storage::attachments::release_instance(&mut tx, &inst)
        .await
        .map_err(|e| StepError::new(e.code, e.detail))?;
    let allocs = lifecycle::drop_allocations(&mut tx, id, None).await?;
    let was_live = inst.lifecycle != Lifecycle::Deleted;
    // What it counted against quotas stops counting in the same transaction.
    let freed = plinth_domain::quota::delta(&plinth_domain::quota::consumption(&inst), &[]);
    tx.quota_charge(&[inst.tenant_id.as_str(), inst.project_id.as_str()], &freed).await?;
    inst.lifecycle = Lifecycle::Deleted;
    inst.action = None;
    inst.power = PowerState::Absent;
    inst.claim = None;
    let mut pokes = Pokes::default();
    let events = if was_live { vec![lifecycle::event(&inst, "released", why, op)] } else { vec![] };
    lifecycle::save(&mut tx, &mut inst, false, events, op, &mut pokes).await?;
    if let Some(h) = &inst.host_id {
        // The host drops it from its desired state.
        tx.bump_desired(h.as_str()).await?;
        pokes.host(h);
    }
    tx.commit().await?;
    for a in &allocs {
        st.sched.note_release(a.host_id.as_str(), &a.claim);
    }
    pokes.send(&st.signals);
    Ok(())
}

fn release_claim<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        release_all(st, &p.instance_id, Some(op), "create failed; claim released").await
    })
}

fn prepare<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        let mut inst: Instance = st.store.get(&Scope::Platform, p.instance_id.as_str()).await?;
        if inst.spec_generation == 0 {
            // Creates publish the first spec with the claim; this is for older sagas.
            inst = change(st, &p.instance_id, Some(op), |i| {
                if i.spec_generation == 0 {
                    lifecycle::publish(i, PowerState::Stopped, false);
                    return (true, vec![lifecycle::event(i, "prepare_requested", "sent to the host", Some(op))]);
                }
                (false, vec![])
            })
            .await?;
        }
        let (id, generation) = (inst.id.clone(), inst.spec_generation);
        wait_observed_from(st, &id, Some(inst), generation, ObservedState::Stopped, false).await
    })
}

fn unprepare<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        let inst = change(st, &p.instance_id, Some(op), |i| {
            if i.power == PowerState::Absent {
                return (false, vec![]);
            }
            lifecycle::publish(i, PowerState::Absent, false);
            (true, vec![lifecycle::event(i, "remove_requested", "create failed; removing from the host", Some(op))])
        })
        .await?;
        wait_observed(st, &inst.id, inst.spec_generation, ObservedState::Absent, true).await
    })
}

/// Who asks [`boot_when_nics_ready`] to boot the guest.
#[derive(Clone, Copy, Debug)]
enum Boot {
    /// The create saga's `start`: the first boot.
    Create,
    /// `instance.start`, asked for at this spec generation.
    Start(i64),
}

/// Whether something other than a start changed the instance since a start was asked for
/// at spec generation `asked_at` (a stop, rebuild, resize, delete or drain published a spec,
/// or took it out of `active`): that start must not boot it.
fn superseded(i: &Instance, asked_at: i64) -> bool {
    let active = i.lifecycle == Lifecycle::Active;
    !(active && (i.spec_generation == asked_at || i.power == PowerState::Running))
}

fn superseded_error(id: &InstanceId, now: InstanceState) -> StepError {
    StepError::new(
        "superseded",
        format!(
            "instance {id} changed before it could start (it is now {}); a later action took over and it was not \
             started",
            now.as_str()
        ),
    )
}

/// Waits until the instance is [`superseded`] for a start asked at `asked_at`, answering
/// its state then; never answers while it is not (the NIC wait ends first).
async fn until_superseded(st: &AppState, id: &InstanceId, asked_at: i64) -> Result<InstanceState, StepError> {
    let deadline = tokio::time::Instant::now() + st.config.nic_ready_timeout;
    let key = signals::instance_key(id.as_str());
    let found = st
        .signals
        .wait_for(&key, deadline, std::time::Duration::from_millis(500), || async {
            let i: Instance = st.store.get(&Scope::Platform, id.as_str()).await?;
            Ok::<_, StepError>(superseded(&i, asked_at).then_some(i.state))
        })
        .await?;
    match found {
        Some(state) => Ok(state),
        None => std::future::pending().await,
    }
}

/// Boots the instance's guest once its NICs can carry traffic: places them on its host,
/// waits until each is `ready` (`nics_not_ready` past `nic_ready_timeout`, `nic_failed` when
/// a host could not set one up: either way nothing was published, so the host never boots
/// it), then publishes `Running` and waits for the host to report it running.
///
/// Idempotent, as a step must be: run again after a crash between the publish and the
/// step's log entry, it finds `Running` published and only waits. A start finds the same
/// when another start published it first, and fails `superseded` (as soon as it happens,
/// even while the NICs are awaited) when anything else changed the instance since it was
/// asked for.
async fn boot_when_nics_ready(st: &AppState, op: &OperationId, id: &InstanceId, who: Boot) -> Result<(), StepError> {
    crate::app::network::nics::place_instance_nics(st, id).await.map_err(|e| StepError::new(e.code, e.detail))?;
    let nics = crate::app::dataplane::wait_nics_ready(st, id);
    match who {
        Boot::Create => nics.await?,
        Boot::Start(asked_at) => tokio::select! {
            ready = nics => ready?,
            now = until_superseded(st, id, asked_at) => return Err(superseded_error(id, now?)),
        },
    }
    let mut moved_on = None;
    let inst = change(st, id, Some(op), |i| {
        let publish = match who {
            Boot::Create => i.power != PowerState::Running,
            Boot::Start(asked_at) if superseded(i, asked_at) => {
                moved_on = Some(i.state);
                false
            }
            // Not yet published, or published already (by this step before a restart, or
            // by another start).
            Boot::Start(asked_at) => i.spec_generation == asked_at,
        };
        if !publish {
            return (false, vec![]);
        }
        lifecycle::publish(i, PowerState::Running, true);
        let ev = match who {
            Boot::Create => lifecycle::event(i, "start_requested", "first boot", Some(op)),
            Boot::Start(_) => lifecycle::event(i, "boot_requested", "its network interfaces are ready", Some(op)),
        };
        (true, vec![ev])
    })
    .await?;
    if let Some(now) = moved_on {
        return Err(superseded_error(id, now));
    }
    wait_observed(st, &inst.id, inst.spec_generation, ObservedState::Running, false).await
}

fn start<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: StartParams = params(p)?;
        boot_when_nics_ready(st, op, &p.instance_id, Boot::Start(p.generation)).await
    })
}

fn create_start<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        if p.start {
            // The guest starts only once its NICs can carry traffic: on its host first.
            boot_when_nics_ready(st, op, &p.instance_id, Boot::Create).await?;
        }
        change(st, &p.instance_id, Some(op), |i| {
            i.lifecycle = Lifecycle::Active;
            (false, vec![lifecycle::event(i, "ready", "created and prepared on its host", Some(op))])
        })
        .await?;
        Ok(())
    })
}

fn delete_stop<'a>(st: &'a AppState, _op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        let inst: Instance = st.store.get(&Scope::Platform, p.instance_id.as_str()).await?;
        if inst.host_id.is_none() || inst.spec_generation == 0 {
            return Ok(());
        }
        wait_observed(st, &inst.id, inst.spec_generation, ObservedState::Absent, true).await
    })
}

fn release<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: InstanceParams = params(p)?;
        release_all(st, &p.instance_id, Some(op), "deleted").await
    })
}

fn converge<'a>(st: &'a AppState, op: &'a OperationId, p: &'a Value) -> StepFuture<'a> {
    Box::pin(async move {
        let p: ConvergeParams = params(p)?;
        let reached = wait_observed(st, &p.instance_id, p.generation, p.want, false).await;
        if p.clear_busy {
            // Success or not, the action is over: the state shows what the host reports.
            change(st, &p.instance_id, Some(op), |i| {
                if i.lifecycle == Lifecycle::Busy {
                    i.lifecycle = Lifecycle::Active;
                    i.action = None;
                }
                (false, vec![])
            })
            .await?;
        }
        reached
    })
}
