//! Operations and sagas. A long action is an [`Operation`] row; a multi-step one is a saga:
//! a fixed list of steps, each with an undo, whose progress is a durable log
//! (`saga_log`) written in the same transaction as the step's completion.
//!
//! An operation's `lease_owner` names the server that drives its saga, and a server holds
//! its sagas while its own lease (a row of `leases` named by its owner id, renewed every
//! third of `lease_ttl` by [`keep_server_lease`]: one write however many sagas run) is
//! live. A server that dies leaves that lease to expire, and the stuck-operation detector
//! of any server (or the next start) takes its sagas over and resumes them from their
//! logs; a saga that stopped early in a live server (a store error, an undo to retry, a
//! panic) is resumed by that server's own detector. (`operations.lease_expires`, from
//! when each saga renewed its own lease, is no longer written.) A step failure unwinds:
//! the undo of every completed step runs, newest first. Steps must be idempotent — a crash
//! between a step's effect and its log entry runs the step again.
//!
//! Every step's start and duration goes into the operation's `timings` (with the step's
//! outcome), written in the transaction that records the step; a step that waits for a
//! host's report adds the phases the agent reported doing (see [`note_host_phases`]).
//!
//! Fail points (`ServerConfig::failpoints`, `kind:step`, or `kind:step:undo` for a step's
//! undo) make a step fail on purpose so tests can prove that unwinding leaves nothing
//! behind, and that an undo that keeps failing is retried.

pub mod host;
pub mod instance;

use crate::app::AppState;
use crate::app::lifecycle::Pokes;
use crate::app::signals;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_store::{StoreError, Tx, Val};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

tokio::task_local! {
    /// The host phases the running step collected (see [`note_host_phases`]).
    static HOST_PHASES: RefCell<Vec<PhaseTiming>>;
}

/// Adds what a host's agent reported doing (its phases) to the timing of the step that
/// runs now; outside a saga step, does nothing.
pub fn note_host_phases(phases: &[PhaseTiming]) {
    if phases.is_empty() {
        return;
    }
    let _ = HOST_PHASES.try_with(|h| h.borrow_mut().extend(phases.iter().cloned()));
}

/// Runs a step (or undo) future, answering its outcome, its timing and the host phases it noted.
async fn timed<F: Future<Output = Result<(), StepError>>>(name: &str, f: F) -> (Result<(), StepError>, StepTiming) {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let (outcome, host) = HOST_PHASES
        .scope(RefCell::new(Vec::new()), async {
            let r = f.await;
            (r, HOST_PHASES.with(|h| h.take()))
        })
        .await;
    let outcome_name = if outcome.is_ok() { "done" } else { "failed" };
    let timing = StepTiming {
        step: name.to_string(),
        started_at,
        took_ms: millis(t0.elapsed()),
        outcome: outcome_name.into(),
        host,
    };
    (outcome, timing)
}

/// A duration in milliseconds, to the microsecond.
pub fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Why a step failed: a stable code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    pub code: String,
    pub detail: String,
}

impl StepError {
    pub fn new(code: &str, detail: impl Into<String>) -> StepError {
        StepError { code: code.to_string(), detail: detail.into() }
    }
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::new("store_error", e.to_string())
    }
}

/// A step's future.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StepError>> + Send + 'a>>;
/// A step's action or undo.
pub type StepFn = for<'a> fn(&'a AppState, &'a OperationId, &'a Value) -> StepFuture<'a>;

/// One step and its undo (None: nothing to undo).
pub struct Step {
    pub name: &'static str,
    pub run: StepFn,
    pub undo: Option<StepFn>,
}

/// A saga kind: its steps in order.
pub struct SagaDef {
    pub kind: &'static str,
    pub steps: &'static [Step],
}

/// Every saga this server knows.
fn registry() -> [&'static SagaDef; 6] {
    [&instance::CREATE, &instance::START, &instance::DELETE, &instance::CONVERGE, &host::DRAIN, &host::RECOVER]
}

fn find(kind: &str) -> Option<&'static SagaDef> {
    registry().into_iter().find(|d| d.kind == kind)
}

/// A saga's durable state (the `saga` column of its operation).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SagaState {
    pub kind: String,
    pub params: Value,
    /// Steps completed, in order.
    pub done: Vec<String>,
    /// Steps undone while unwinding.
    pub undone: Vec<String>,
    pub unwinding: bool,
    pub error: Option<OperationError>,
}

/// A new operation (not yet written).
pub fn new_operation(
    kind: &str,
    target: &str,
    tenant: Option<&TenantId>,
    project: Option<&ProjectId>,
    by: Option<&UserId>,
    total: u32,
) -> Operation {
    let now = Utc::now();
    Operation {
        id: OperationId::generate(),
        kind: kind.to_string(),
        target: target.to_string(),
        tenant_id: tenant.cloned(),
        project_id: project.cloned(),
        status: OperationStatus::Running,
        done: 0,
        total,
        message: "started".into(),
        items: vec![],
        error: None,
        timings: vec![],
        requested_by: by.cloned(),
        started_at: Some(now),
        finished_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

/// Writes `op` as a saga of `kind` with `params`, recording `done_inline` as steps the
/// request already completed inside this same transaction. The operation is written
/// leased to this server: [`spawn`] it once the transaction commits. The inline steps
/// are timed from `op.started_at` (which the request may set to when they began) to
/// now, as one span: they share one transaction, so the last one carries the time.
pub async fn begin(
    st: &AppState,
    tx: &mut Tx,
    op: &mut Operation,
    kind: &str,
    params: Value,
    done_inline: &[&str],
) -> Result<(), StoreError> {
    let total = find(kind).map(|d| d.steps.len() as u32).unwrap_or(0);
    op.total = op.total.max(total);
    op.done = done_inline.len() as u32;
    if let Some(last) = done_inline.last() {
        op.message = format!("{last} done");
    }
    let now = Utc::now();
    let started_at = op.started_at.unwrap_or(now);
    let span = millis((now - started_at).to_std().unwrap_or_default());
    for (i, s) in done_inline.iter().enumerate() {
        let took_ms = if i + 1 == done_inline.len() { span } else { 0.0 };
        op.timings.push(StepTiming { step: s.to_string(), started_at, took_ms, outcome: "done".into(), host: vec![] });
    }
    let state = SagaState {
        kind: kind.to_string(),
        params,
        done: done_inline.iter().map(|s| s.to_string()).collect(),
        undone: vec![],
        unwinding: false,
        error: None,
    };
    let cols = [
        ("saga", Val::Text(Some(serde_json::to_string(&state).unwrap_or_default()))),
        ("lease_owner", Val::text(&*st.owner)),
    ];
    tx.insert(op, &cols).await?;
    for s in done_inline {
        tx.saga_append(op.id.as_str(), s, "do", None).await?;
    }
    Ok(())
}

/// Runs the saga of `op_id`, which this server [`begin`]s and holds the lease of, in the
/// background.
pub fn spawn(st: &AppState, op_id: OperationId) {
    spawn_run(st, op_id, true);
}

/// Resumes the saga of `op_id` in the background, if its lease can be taken.
pub fn resume(st: &AppState, op_id: OperationId) {
    spawn_run(st, op_id, false);
}

fn spawn_run(st: &AppState, op_id: OperationId, leased: bool) {
    let st2 = st.clone();
    let key = op_id.0.clone();
    let h = tokio::spawn(async move { run(st2, op_id, leased).await });
    st.tasks.track(&key, h.abort_handle());
}

async fn update_op(tx: &mut Tx, op_id: &OperationId, f: impl FnOnce(&mut Operation)) -> Result<(), StoreError> {
    let mut op: Operation = tx.get(&Scope::Platform, op_id.as_str()).await?;
    f(&mut op);
    tx.save(&mut op).await
}

/// Changes an operation's progress (message, items) outside any step transaction.
pub async fn progress(st: &AppState, op_id: &OperationId, f: impl FnOnce(&mut Operation)) -> Result<(), StoreError> {
    let mut tx = st.store.begin().await?;
    update_op(&mut tx, op_id, f).await?;
    tx.commit().await?;
    st.signals.poke(&signals::operation_key(op_id.as_str()));
    Ok(())
}

async fn save_state(tx: &mut Tx, op_id: &OperationId, s: &SagaState) -> Result<(), StoreError> {
    tx.set_saga(op_id.as_str(), Some(serde_json::to_string(s).unwrap_or_default())).await
}

/// Drives a saga to its end. Returns at once when another live server holds its lease or
/// this process already runs it. `leased`: the lease was written with the operation.
pub async fn run(st: AppState, op_id: OperationId, leased: bool) {
    let Some(guard) = st.tasks.begin_saga(op_id.as_str()) else { return };
    let result = async {
        match leased || st.store.lease_operation(op_id.as_str(), &st.owner).await? {
            true => steps(&st, &op_id, leased).await,
            false => Ok(()),
        }
    }
    .await;
    drop(guard);
    if let Err(e) = result {
        // This server still holds the saga: `stuck_operations` resumes it on its next run.
        tracing::warn!(operation = %op_id, "saga stopped early: {e}; it will be resumed");
        st.tasks.orphan(op_id.as_str());
    }
}

/// Takes this server's own lease, which holds every saga it drives, before it serves;
/// forgets leases expired for a day (earlier servers').
pub async fn take_server_lease(st: &AppState) -> Result<(), StoreError> {
    hold_server_lease(st).await?;
    let day = 86_400_000_000;
    st.store.forget_expired_leases(plinth_store::now_micros() - day).await?;
    Ok(())
}

/// Renews this server's lease: one write however many sagas it drives.
async fn hold_server_lease(st: &AppState) -> Result<(), StoreError> {
    st.store.take_lease(&st.owner, &st.owner, st.config.lease_ttl.as_millis() as i64).await?;
    Ok(())
}

/// Renews this server's lease every third of the lease time ([`hold_server_lease`]).
pub async fn keep_server_lease(st: AppState) {
    let mut tick = tokio::time::interval(st.config.lease_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = hold_server_lease(&st).await {
            tracing::warn!("could not renew this server's lease (its sagas may be taken over): {e}");
        }
    }
}

/// Drives the saga's steps. `fresh`: it was just begun, so the steps done inline by the
/// request that began it are counted (their transaction has committed by now).
async fn steps(st: &AppState, op_id: &OperationId, mut fresh: bool) -> Result<(), StoreError> {
    loop {
        let Some((op, raw, _cancel)) = st.store.operation_saga(op_id.as_str()).await? else { return Ok(()) };
        if op.status.is_final() {
            return Ok(());
        }
        let mut state: SagaState =
            serde_json::from_str(&raw).map_err(|source| StoreError::Corrupt { table: "operations", source })?;
        let Some(def) = find(&state.kind) else {
            let e = err("unknown_saga", &state.kind);
            return finish(st, op_id, &state.kind, OperationStatus::Failed, Some(e)).await;
        };
        if std::mem::take(&mut fresh) {
            for s in &state.done {
                st.metrics.saga_step(def.kind, s);
            }
        }
        if state.unwinding {
            return unwind(st, op_id, def, &mut state).await;
        }
        let Some(step) = def.steps.get(state.done.len()) else {
            return finish(st, op_id, def.kind, OperationStatus::Succeeded, None).await;
        };
        let point = format!("{}:{}", def.kind, step.name);
        let (outcome, timing) = timed(step.name, async {
            if st.config.failpoints.contains(&point) {
                Err(StepError::new("injected_failure", format!("fail point {point}")))
            } else {
                (step.run)(st, op_id, &state.params).await
            }
        })
        .await;
        let ok = outcome.is_ok();
        let mut tx = st.store.begin().await?;
        match outcome {
            Ok(()) => {
                tx.saga_append(op_id.as_str(), step.name, "do", None).await?;
                state.done.push(step.name.to_string());
                let n = state.done.len() as u32;
                update_op(&mut tx, op_id, |o| {
                    o.done = o.done.max(n);
                    o.message = format!("{} done", step.name);
                    o.timings.push(timing);
                })
                .await?;
            }
            Err(e) => {
                tracing::info!(operation = %op_id, step = step.name, "saga step failed: {}: {}", e.code, e.detail);
                let cancelled = e.code == "cancelled";
                tx.saga_append(op_id.as_str(), step.name, "fail", Some(format!("{}: {}", e.code, e.detail))).await?;
                state.unwinding = true;
                state.error = Some(OperationError { code: e.code.clone(), detail: e.detail.clone() });
                update_op(&mut tx, op_id, |o| {
                    o.message = if cancelled {
                        "cancelled; undoing".to_string()
                    } else {
                        format!("{} failed: {}; undoing", step.name, e.detail)
                    };
                    o.timings.push(timing);
                })
                .await?;
            }
        }
        save_state(&mut tx, op_id, &state).await?;
        tx.commit().await?;
        match ok {
            true => st.metrics.saga_step(def.kind, step.name),
            false => st.metrics.saga_step_failed(def.kind, step.name, false),
        }
        st.signals.poke(&signals::operation_key(op_id.as_str()));
    }
}

fn err(code: &str, detail: &str) -> OperationError {
    OperationError { code: code.to_string(), detail: detail.to_string() }
}

async fn unwind(st: &AppState, op_id: &OperationId, def: &SagaDef, state: &mut SagaState) -> Result<(), StoreError> {
    let done: Vec<String> = state.done.iter().rev().filter(|s| !state.undone.contains(s)).cloned().collect();
    let mut incomplete = None;
    for name in done {
        let Some(step) = def.steps.iter().find(|s| s.name == name) else { continue };
        let started_at = Utc::now();
        let t0 = Instant::now();
        if let Some(undo) = step.undo {
            let point = format!("{}:{}:undo", def.kind, step.name);
            let mut attempt = 0;
            loop {
                let outcome = if st.config.failpoints.contains(&point) {
                    Err(StepError::new("injected_failure", format!("fail point {point}")))
                } else {
                    undo(st, op_id, &state.params).await
                };
                if outcome.is_err() {
                    st.metrics.saga_step_failed(def.kind, step.name, true);
                }
                match outcome {
                    Ok(()) => break,
                    Err(e) if attempt < 3 => {
                        attempt += 1;
                        tracing::warn!(operation = %op_id, step = step.name, "undo failed ({}), retrying", e.detail);
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                    Err(e) => {
                        incomplete = Some(e);
                        break;
                    }
                }
            }
            if incomplete.is_some() {
                break;
            }
        }
        let mut tx = st.store.begin().await?;
        tx.saga_append(op_id.as_str(), step.name, "undo", None).await?;
        state.undone.push(name.clone());
        save_state(&mut tx, op_id, state).await?;
        let timing = StepTiming {
            step: name.clone(),
            started_at,
            took_ms: millis(t0.elapsed()),
            outcome: "undone".into(),
            host: vec![],
        };
        update_op(&mut tx, op_id, |o| o.timings.push(timing)).await?;
        tx.commit().await?;
    }
    if let Some(e) = incomplete {
        // Leave the saga unwinding: the stuck-operation detector retries it later.
        progress(st, op_id, |o| o.message = format!("undo incomplete, will retry: {}", e.detail)).await?;
        return Err(StoreError::Refused { status: 500, code: "undo_incomplete", detail: e.detail });
    }
    let e = state.error.clone();
    let status = match &e {
        Some(e) if e.code == "cancelled" => OperationStatus::Cancelled,
        _ => OperationStatus::Failed,
    };
    finish(st, op_id, def.kind, status, e).await
}

async fn finish(
    st: &AppState,
    op_id: &OperationId,
    kind: &str,
    status: OperationStatus,
    error: Option<OperationError>,
) -> Result<(), StoreError> {
    let mut tx = st.store.begin().await?;
    update_op(&mut tx, op_id, |o| {
        o.status = status;
        o.finished_at = Some(Utc::now());
        o.message = match status {
            OperationStatus::Succeeded => "done".into(),
            OperationStatus::Cancelled => "cancelled".into(),
            _ => format!("failed: {}", error.as_ref().map(|e| e.detail.as_str()).unwrap_or("")),
        };
        if status == OperationStatus::Succeeded {
            o.done = o.total;
        }
        o.error = error;
    })
    .await?;
    tx.commit().await?;
    st.metrics.saga_finished(kind, status.as_str());
    let mut pokes = Pokes::default();
    pokes.operation(op_id);
    pokes.send(&st.signals);
    Ok(())
}
