//! Host operations (operators): cordon, uncordon, drain (moves every instance off, as an
//! abortable operation), maintenance (after a drain), retire, fence (records who confirmed
//! the host is powered off or isolated) and fail (declare an unreachable host failed).
//! Each answers the host and, when one started, its operation.
//!
//! Recovery of a failed host's instances starts only when the host is both failed and
//! fenced: never while it could still be running the guests.

use crate::app::lifecycle::{self, Pokes};
use crate::app::saga::{self, host::HostParams};
use crate::app::{AppState, Caller, Error, Kind, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::host_state::{self, HostEvent};
use serde_json::json;

fn refused(e: host_state::InvalidTransition) -> Error {
    Error::new(Kind::Conflict, "invalid_transition", e.to_string())
        .with_constraint(json!({ "rule": "host-state", "state": e.state.as_str(), "event": format!("{:?}", e.event) }))
}

/// Applies `event` to the host in one transaction with its audit record; `then` may start
/// an operation in the same transaction.
async fn transition(
    st: &AppState,
    caller: &Caller,
    id: &str,
    event: HostEvent,
    then: impl AsyncFnOnce(&mut plinth_store::Tx, &mut Host) -> Result<Option<Operation>>,
) -> Result<HostAction> {
    caller.require_operator("host operations")?;
    let mut tx = st.store.begin().await?;
    let mut host: Host = tx.get(&Scope::Platform, id).await?;
    let next = host_state::next(host.state, event).map_err(refused)?;
    let changed = next != host.state;
    host.state = next;
    let op = then(&mut tx, &mut host).await?;
    if changed || op.is_some() {
        tx.save(&mut host).await?;
    }
    let mut pokes = Pokes::default();
    lifecycle::refresh_host_instances(&mut tx, &host.id, &mut pokes).await?;
    tx.audit(&caller.audit(), id, None, if op.is_some() { 202 } else { 200 }).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    st.sched.refresh_host(&st.store, id).await?;
    if let Some(op) = &op {
        saga::spawn(st, op.id.clone());
    }
    Ok(HostAction { host, operation: op })
}

async fn live_instances(tx: &mut plinth_store::Tx, host: &HostId) -> Result<Vec<Instance>> {
    let list: Vec<Instance> = tx.list_by(&Scope::Platform, "host_id", host.as_str()).await?;
    Ok(list.into_iter().filter(|i| i.lifecycle != Lifecycle::Deleted).collect())
}

async fn start_saga(
    st: &AppState,
    tx: &mut plinth_store::Tx,
    caller: &Caller,
    host: &Host,
    kind: &str,
) -> Result<Option<Operation>> {
    let mut op = saga::new_operation(kind, host.id.as_str(), None, None, Some(&caller.principal.user_id), 0);
    let params = serde_json::to_value(HostParams { host_id: host.id.clone() }).unwrap_or_default();
    saga::begin(st, tx, &mut op, kind, params, &[]).await?;
    Ok(Some(op))
}

/// Stop placing new instances on a host.
pub async fn cordon(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    transition(st, caller, id, HostEvent::Cordon, async |_, _| Ok(None)).await
}

/// Let placement use a cordoned (or maintained) host again.
pub async fn uncordon(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    transition(st, caller, id, HostEvent::Uncordon, async |_, _| Ok(None)).await
}

/// Move every instance off a host: stop, re-place elsewhere, start. Abort with
/// `POST /v1/operations/{id}/cancel`.
pub async fn drain(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    let (c, s) = (caller.clone(), st.clone());
    transition(st, caller, id, HostEvent::Drain, async move |tx, host| start_saga(&s, tx, &c, host, "host.drain").await)
        .await
}

/// Put a drained host into maintenance.
pub async fn maintenance(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    transition(st, caller, id, HostEvent::Maintenance, async |tx, host| {
        let left = live_instances(tx, &host.id).await?;
        if !left.is_empty() {
            return Err(Error::new(
                Kind::Conflict,
                "host_not_empty",
                format!("{} instances are still on host {}; drain it first", left.len(), host.id),
            )
            .with_constraint(json!({ "rule": "host-empty", "instances": left.len() })));
        }
        Ok(None)
    })
    .await
}

/// Retire a host for good (it must hold no instances).
pub async fn retire(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    transition(st, caller, id, HostEvent::Retire, async |tx, host| {
        let left: Vec<Instance> =
            live_instances(tx, &host.id).await?.into_iter().filter(|i| i.lifecycle != Lifecycle::Failed).collect();
        if !left.is_empty() {
            return Err(Error::new(
                Kind::Conflict,
                "host_not_empty",
                format!("{} instances are still on host {}; drain it first", left.len(), host.id),
            )
            .with_constraint(json!({ "rule": "host-empty", "instances": left.len() })));
        }
        if let Ok(s) = host_state::next(host.state, HostEvent::RetireFinished) {
            host.state = s;
        }
        Ok(None)
    })
    .await
}

/// Record that the host is fenced (powered off or cut off), confirmed by the caller. A
/// failed, fenced host's instances are then recovered on other hosts.
pub async fn fence(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    let (c, s) = (caller.clone(), st.clone());
    transition(st, caller, id, HostEvent::AgentReady, async move |tx, host| {
        if !matches!(host.state, HostState::Unreachable | HostState::Failed) {
            return Err(Error::new(
                Kind::Conflict,
                "invalid_transition",
                format!("host {} is {}: only an unreachable or failed host is fenced", host.id, host.state.as_str()),
            )
            .with_constraint(
                json!({ "rule": "host-state", "state": host.state.as_str(), "allowed": ["unreachable", "failed"] }),
            ));
        }
        let first = host.fenced_at.is_none();
        host.fenced_by = Some(c.principal.user_id.clone());
        host.fenced_at = Some(Utc::now());
        if host.state == HostState::Failed && first {
            return start_saga(&s, tx, &c, host, "host.recover").await;
        }
        Ok(None)
    })
    .await
}

/// Declare an unreachable host failed. Its instances are recovered elsewhere once it is
/// also fenced.
pub async fn fail(st: &AppState, caller: &Caller, id: &str) -> Result<HostAction> {
    let (c, s) = (caller.clone(), st.clone());
    transition(st, caller, id, HostEvent::DeclareFailed, async move |tx, host| {
        let recovering = tx
            .list_by::<Operation>(&Scope::Platform, "target", host.id.as_str())
            .await?
            .iter()
            .any(|o| o.kind == "host.recover");
        if host.fenced_at.is_some() && !recovering {
            return start_saga(&s, tx, &c, host, "host.recover").await;
        }
        Ok(None)
    })
    .await
}
