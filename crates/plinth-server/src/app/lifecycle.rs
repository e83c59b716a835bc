//! Instance bookkeeping shared by the API handlers, the sagas, the agent protocol and the
//! reconcilers: publishing a new spec to the host, recomputing the derived state, and the
//! events every change leaves in the instance's history, and the usage intervals those
//! changes open and close. All of it inside the caller's transaction, so the ledger moves
//! with the lifecycle; the wake-ups to send after commit are collected in [`Pokes`].

use crate::app::signals::{self, Signals};
use chrono::{DateTime, Utc};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::instance_state::{self, Facts};
use plinth_domain::metering;
use plinth_store::{LedgerOwner, StoreError, Tx};

/// Wake-ups to deliver once the transaction has committed: a key, and for a row whose
/// version is known, that version (its `updated_at` in µs).
#[derive(Default, Debug)]
pub struct Pokes(Vec<(String, Option<i64>)>);

impl Pokes {
    /// The host's agent must re-read its desired state.
    pub fn host(&mut self, host_id: &HostId) {
        self.0.push((signals::host_key(host_id.as_str()), None));
    }
    /// Waiters on the instance must re-read it: version `updated_at` was written.
    pub fn instance(&mut self, inst: &Instance) {
        self.0.push((signals::instance_key(inst.id.as_str()), Some(inst.updated_at.timestamp_micros())));
    }
    /// Waiters on the operation must re-read it.
    pub fn operation(&mut self, id: &OperationId) {
        self.0.push((signals::operation_key(id.as_str()), None));
    }
    /// Delivers them.
    pub fn send(self, s: &Signals) {
        for (k, at) in self.0 {
            match at {
                Some(at) => s.announce(&k, at),
                None => s.poke(&k),
            }
        }
    }
}

/// A new history entry for `inst`.
pub fn event(inst: &Instance, kind: &str, detail: impl Into<String>, op: Option<&OperationId>) -> InstanceEvent {
    let now = metering::truncate(Utc::now());
    InstanceEvent {
        id: EventId::generate(),
        instance_id: inst.id.clone(),
        tenant_id: inst.tenant_id.clone(),
        project_id: inst.project_id.clone(),
        kind: kind.to_string(),
        state: Some(inst.state),
        placed: Some(metering::is_allocated(inst)),
        shape: Some(inst.shape_name.clone()),
        detail: detail.into(),
        operation_id: op.cloned(),
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

/// Stamps the events of one transition with its time and the instance's facts after it,
/// so the history alone tells when it was placed and running (what reconciliation replays).
fn stamp(inst: &Instance, events: &mut [InstanceEvent], at: DateTime<Utc>) {
    for e in events {
        e.state = Some(inst.state);
        e.placed = Some(metering::is_allocated(inst));
        e.shape = Some(inst.shape_name.clone());
        e.created_at = at;
        e.updated_at = at;
    }
}

/// Writes a new instance with its first events, and opens its usage intervals, in `tx`.
pub async fn insert_new(
    tx: &mut Tx,
    inst: &Instance,
    extra: &[(&'static str, plinth_store::Val)],
    mut events: Vec<InstanceEvent>,
) -> Result<(), StoreError> {
    let at = metering::truncate(tx.now());
    stamp(inst, &mut events, at);
    tx.insert(inst, extra).await?;
    for e in &events {
        tx.insert(e, &[]).await?;
    }
    // A new instance has no intervals yet: nothing to read.
    let plan = metering::plan(&[], &metering::instance_wants(inst), metering::micros(at), tx.billing_anchor());
    let cause = events.last().map(|e| e.id.to_string()).unwrap_or_default();
    tx.apply_ledger(&owner(inst), &plan, &cause).await
}

async fn usage_plan(tx: &mut Tx, inst: &Instance, at: DateTime<Utc>) -> Result<metering::LedgerPlan, StoreError> {
    let open = tx.open_intervals(inst.id.as_str()).await?;
    Ok(metering::plan(&open, &metering::instance_wants(inst), metering::micros(at), tx.billing_anchor()))
}

/// Whose usage an instance's intervals are.
pub fn owner(inst: &Instance) -> LedgerOwner<'_> {
    LedgerOwner {
        tenant_id: inst.tenant_id.as_str(),
        project_id: inst.project_id.as_str(),
        resource_id: inst.id.as_str(),
        resource_kind: "instance",
    }
}

/// Whether the instance's host has stopped reporting (unreachable or failed).
pub async fn host_lost(tx: &mut Tx, host_id: Option<&HostId>) -> Result<bool, StoreError> {
    let Some(h) = host_id else { return Ok(false) };
    Ok(match tx.host_state(h.as_str()).await?.as_deref() {
        Some(s) => s == HostState::Unreachable.as_str() || s == HostState::Failed.as_str(),
        None => true,
    })
}

/// The derived state for the instance as it stands.
pub fn derive(inst: &Instance, lost: bool) -> InstanceState {
    instance_state::derive(Facts {
        lifecycle: inst.lifecycle,
        action: inst.action.as_deref(),
        power: inst.power,
        spec_generation: inst.spec_generation,
        observed: inst.observed.as_ref(),
        host_lost: lost,
    })
}

/// A new spec for the host: the power state to reach, and whether to (re)boot.
pub fn publish(inst: &mut Instance, power: PowerState, boot: bool) {
    inst.power = power;
    inst.spec_generation += 1;
    if boot {
        inst.boot_generation = inst.spec_generation;
    }
}

/// Recomputes the derived state, records a `state_changed` event when it moved, writes
/// the instance and `events`, and collects the wake-ups. A spec change (the caller bumped
/// `spec_generation`) also bumps the host's desired generation.
pub async fn save(
    tx: &mut Tx,
    inst: &mut Instance,
    spec_changed: bool,
    mut events: Vec<InstanceEvent>,
    op: Option<&OperationId>,
    pokes: &mut Pokes,
) -> Result<(), StoreError> {
    let at = metering::truncate(tx.now());
    let lost = host_lost(tx, inst.host_id.as_ref()).await?;
    let before = inst.state;
    inst.state = derive(inst, lost);
    if inst.state != before {
        events.push(event(inst, "state_changed", format!("{} → {}", before.as_str(), inst.state.as_str()), op));
    }
    let usage = usage_plan(tx, inst, at).await?;
    if !usage.is_empty() && events.is_empty() {
        // Every ledger change has its transition in the history.
        events.push(event(inst, "usage_changed", "what is metered changed", op));
    }
    stamp(inst, &mut events, at);
    tx.save(inst).await?;
    for e in &events {
        tx.insert(e, &[]).await?;
    }
    if !usage.is_empty() {
        let cause = events.last().map(|e| e.id.to_string()).unwrap_or_default();
        tx.apply_ledger(&owner(inst), &usage, &cause).await?;
    }
    if spec_changed || inst.lifecycle == Lifecycle::Deleted {
        // The instance's NICs go where it goes (and nowhere once it is gone). This bumps
        // every host of their VPCs in one sorted order, before the instance's own host
        // (already among them when it has NICs), so two saves cannot lock hosts in
        // opposite orders. The hosts it changes are woken when the transaction commits.
        let host = match (inst.lifecycle, inst.power) {
            (Lifecycle::Deleted, _) | (_, PowerState::Absent) => None,
            _ => inst.host_id.as_ref().map(|h| h.as_str()),
        };
        tx.sync_instance_nics(inst.id.as_str(), host).await?;
    }
    if spec_changed && let Some(h) = &inst.host_id {
        tx.bump_desired(h.as_str()).await?;
        pokes.host(h);
    }
    pokes.instance(inst);
    Ok(())
}

/// Recomputes the state of every live instance on a host after the host's state changed
/// (unreachable instances show `unknown`).
pub async fn refresh_host_instances(tx: &mut Tx, host_id: &HostId, pokes: &mut Pokes) -> Result<u32, StoreError> {
    let list: Vec<Instance> = tx.list_by(&Scope::Platform, "host_id", host_id.as_str()).await?;
    let mut n = 0;
    for mut inst in list {
        if inst.lifecycle == Lifecycle::Deleted {
            continue;
        }
        let lost = host_lost(tx, inst.host_id.as_ref()).await?;
        if derive(&inst, lost) != inst.state {
            save(tx, &mut inst, false, vec![], None, pokes).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Removes an instance's allocations (all but `keep`) inside the caller's transaction and
/// returns them, so the caller can forget them in the scheduler's cache once committed.
pub async fn drop_allocations(
    tx: &mut Tx,
    id: &InstanceId,
    keep: Option<&AllocationId>,
) -> Result<Vec<Allocation>, StoreError> {
    let all: Vec<Allocation> = tx.list_by(&Scope::Platform, "instance_id", id.as_str()).await?;
    let mut dropped = Vec::with_capacity(all.len());
    for a in all.into_iter().filter(|a| Some(&a.id) != keep) {
        tx.remove::<Allocation>(a.id.as_str()).await?;
        dropped.push(a);
    }
    Ok(dropped)
}
