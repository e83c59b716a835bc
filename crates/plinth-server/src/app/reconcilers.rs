//! Background tasks (Omicron's rules: no input, idempotent, run on a timer and on demand,
//! status visible at `GET /v1/system/background-tasks`):
//!
//! - `host_liveness`: a host whose agent is silent past the heartbeat window becomes
//!   `unreachable`, and its instances show `unknown`.
//! - `instance_watcher`: compares observed with desired state: restarts failed guests whose
//!   restart policy allows it; accepts a guest that powered itself off (or restarts it
//!   under `always`).
//! - `orphan_sweeper`: removes allocations whose instance is gone; fails instances left on
//!   retired hosts.
//! - `stuck_operations`: resumes sagas whose lease expired (their server died).
//! - `image_gc`: deletes image blobs that no image and no live instance references, and
//!   fails image imports that stopped moving (`image_files::gc`).
//! - `detach_deadline`: a volume detach the guest has not completed within the deadline
//!   becomes `error_detaching` (`storage::attachments::expire_detaches`).
//! - `shared_volumes`: does a shared backend's (Ceph RBD's) work for the volumes the API
//!   left `creating`, `extending` or `deleting` (`storage::volumes::converge_shared`).
//! - `billing`: splits usage intervals at billing-period cut-offs, checks budgets, and
//!   finalizes draft invoices whose grace period is over (`billing::billing_pass`).
//!
//! Each task re-reads the database every run and writes only through transactions that
//! re-check what they change, so two replicas running the same task do no harm.

use crate::app::AppState;
use crate::app::lifecycle::{self, Pokes};
use crate::app::saga;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::host_state::{self, HostEvent};
use plinth_store::StoreError;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// The task names and what they do.
pub const TASKS: &[(&str, &str)] = &[
    ("host_liveness", "marks hosts whose agent stopped heartbeating unreachable"),
    ("instance_watcher", "restarts failed guests per their restart policy; follows guests that powered off"),
    ("orphan_sweeper", "removes allocations without a live instance; fails instances on retired hosts"),
    ("stuck_operations", "resumes sagas whose server died (lease expired)"),
    ("image_gc", "deletes image blobs no image or live instance uses; fails imports stuck for a day"),
    ("detach_deadline", "marks volume detaches the guest did not complete in time error_detaching"),
    ("shared_volumes", "makes, grows and removes volumes on shared backends (rbd) as the API asked"),
    ("billing", "splits usage at period cut-offs; checks budgets; finalizes drafts past their grace period"),
];

/// Registry of background task status, their on-demand triggers, and the sagas this
/// process is driving.
#[derive(Default)]
pub struct Tasks {
    status: Mutex<BTreeMap<String, BackgroundTask>>,
    triggers: Mutex<BTreeMap<String, std::sync::Arc<Notify>>>,
    sagas: Mutex<HashSet<String>>,
    orphans: Mutex<BTreeSet<String>>,
    spawned: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// A saga this process drives. Dropping it (the saga returns, or its task is aborted as in
/// a crash) forgets the saga; a saga whose task panicked is left for `stuck_operations`.
pub struct SagaGuard<'a> {
    tasks: &'a Tasks,
    op: String,
}

impl Drop for SagaGuard<'_> {
    fn drop(&mut self) {
        self.tasks.sagas.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.op);
        self.tasks.spawned.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.op);
        if std::thread::panicking() {
            self.tasks.orphan(&self.op);
        }
    }
}

impl Tasks {
    /// Marks a saga as driven here; None if it already is.
    pub fn begin_saga(&self, op: &str) -> Option<SagaGuard<'_>> {
        if !self.sagas.lock().unwrap_or_else(|e| e.into_inner()).insert(op.to_string()) {
            return None;
        }
        Some(SagaGuard { tasks: self, op: op.to_string() })
    }

    /// A saga this server holds stopped before its end (a store error, an undo that must be
    /// retried, a panic): `stuck_operations` resumes it on its next run. Another server's
    /// would be resumed when its lease expires; this server's lease does not.
    pub fn orphan(&self, op: &str) {
        self.orphans.lock().unwrap_or_else(|e| e.into_inner()).insert(op.to_string());
    }

    /// Remembers a saga task so a stopping server can stop it (as a crash would).
    pub fn track(&self, op: &str, h: tokio::task::AbortHandle) {
        let mut m = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 10_000 {
            m.retain(|_, h| !h.is_finished());
        }
        m.insert(op.to_string(), h);
    }

    /// Stops every saga task of this process (as a crash would): once this server's lease
    /// expires (its renewal stops with the server), another server or the next start
    /// resumes them.
    pub fn abort_sagas(&self) {
        let spawned: Vec<_> = self.spawned.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (_, h) in spawned {
            h.abort();
        }
    }

    fn driving(&self, op: &str) -> bool {
        self.sagas.lock().unwrap_or_else(|e| e.into_inner()).contains(op)
    }

    fn trigger_of(&self, name: &str) -> std::sync::Arc<Notify> {
        self.triggers.lock().unwrap_or_else(|e| e.into_inner()).entry(name.to_string()).or_default().clone()
    }

    /// Asks task `name` to run now; false if there is no such task.
    pub fn trigger(&self, name: &str) -> bool {
        if !TASKS.iter().any(|(n, _)| *n == name) {
            return false;
        }
        self.trigger_of(name).notify_one();
        true
    }

    /// Every task's status.
    pub fn list(&self, period: Duration) -> Vec<BackgroundTask> {
        let s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        TASKS
            .iter()
            .map(|(name, desc)| {
                s.get(*name).cloned().unwrap_or(BackgroundTask {
                    name: name.to_string(),
                    description: desc.to_string(),
                    period_seconds: period.as_secs_f64(),
                    runs: 0,
                    last_started_at: None,
                    last_finished_at: None,
                    last_result: Value::Null,
                    last_error: None,
                })
            })
            .collect()
    }

    fn record(&self, name: &str, period: Duration, started: chrono::DateTime<Utc>, out: Result<Value, String>) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let desc = TASKS.iter().find(|(n, _)| *n == name).map(|(_, d)| d.to_string()).unwrap_or_default();
        let e = s.entry(name.to_string()).or_insert_with(|| BackgroundTask {
            name: name.to_string(),
            description: desc,
            period_seconds: period.as_secs_f64(),
            runs: 0,
            last_started_at: None,
            last_finished_at: None,
            last_result: Value::Null,
            last_error: None,
        });
        e.runs += 1;
        e.last_started_at = Some(started);
        e.last_finished_at = Some(Utc::now());
        match out {
            Ok(v) => {
                e.last_result = v;
                e.last_error = None;
            }
            Err(err) => e.last_error = Some(err),
        }
    }
}

/// Runs one task once (timed in `/metrics`).
pub async fn run_once(st: &AppState, name: &str) -> Result<Value, StoreError> {
    let started = std::time::Instant::now();
    let out = run_task(st, name).await;
    if TASKS.iter().any(|(n, _)| *n == name) {
        st.metrics.background_task(name, started.elapsed(), out.is_ok());
    }
    out
}

async fn run_task(st: &AppState, name: &str) -> Result<Value, StoreError> {
    match name {
        "host_liveness" => host_liveness(st).await,
        "instance_watcher" => instance_watcher(st).await,
        "orphan_sweeper" => orphan_sweeper(st).await,
        "stuck_operations" => stuck_operations(st).await,
        "image_gc" => crate::app::images::files::gc(st).await,
        "billing" => crate::app::billing::billing_pass(st).await,
        "detach_deadline" => {
            let n = crate::app::storage::attachments::expire_detaches(st, st.config.detach_timeout).await?;
            Ok(json!({ "expired": n }))
        }
        "shared_volumes" => crate::app::storage::volumes::converge_shared(st).await.map_err(|e| StoreError::Refused {
            status: 500,
            code: "shared_volumes",
            detail: e.to_string(),
        }),
        _ => Ok(Value::Null),
    }
}

/// Starts every task's loop.
pub fn start(st: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = vec![];
    for (name, _) in TASKS {
        let st = st.clone();
        handles.push(tokio::spawn(async move {
            let trigger = st.tasks.trigger_of(name);
            loop {
                let started = Utc::now();
                let out = run_once(&st, name).await.map_err(|e| e.to_string());
                if let Err(e) = &out {
                    tracing::warn!(task = name, "background task failed: {e}");
                }
                st.tasks.record(name, st.config.reconcile_period, started, out);
                tokio::select! {
                    _ = tokio::time::sleep(st.config.reconcile_period) => {}
                    _ = trigger.notified() => {}
                }
            }
        }));
    }
    handles
}

async fn host_liveness(st: &AppState) -> Result<Value, StoreError> {
    let cutoff = Utc::now().timestamp_micros() - st.config.heartbeat_window.as_micros() as i64;
    let silent = st.store.silent_hosts(&["available", "cordoned", "draining", "maintenance"], cutoff).await?;
    let mut marked = 0;
    for id in silent {
        let mut tx = st.store.begin().await?;
        let mut host: Host = tx.get(&Scope::Platform, &id).await?;
        let Ok(next) = host_state::next(host.state, HostEvent::HeartbeatLost) else { continue };
        if next == host.state {
            continue;
        }
        host.state = next;
        tx.save(&mut host).await?;
        let mut pokes = Pokes::default();
        lifecycle::refresh_host_instances(&mut tx, &host.id, &mut pokes).await?;
        tx.commit().await?;
        pokes.send(&st.signals);
        st.sched.refresh_host(&st.store, &id).await?;
        tracing::warn!(host = %id, "host stopped heartbeating: unreachable");
        marked += 1;
    }
    Ok(json!({ "marked_unreachable": marked }))
}

async fn instance_watcher(st: &AppState) -> Result<Value, StoreError> {
    let mut restarted = 0;
    let mut followed = 0;
    // Failed guests derive `failed`; a guest that powered itself off while meant to run
    // derives `starting`.
    for inst in st.store.instances_where("active", &["failed", "crashed", "starting"]).await? {
        let Some(obs) = &inst.observed else { continue };
        if obs.generation < inst.spec_generation || inst.power != PowerState::Running {
            continue;
        }
        let self_stopped = obs.state == ObservedState::Stopped && obs.generation >= inst.boot_generation;
        let failed = matches!(obs.state, ObservedState::Failed | ObservedState::Crashed);
        if !self_stopped && !failed {
            continue;
        }
        let restart = match inst.restart_policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if failed && !restart {
            continue; // stays failed, as the user asked
        }
        let mut tx = st.store.begin().await?;
        let mut cur: Instance = tx.get(&Scope::Platform, inst.id.as_str()).await?;
        if cur.spec_generation != inst.spec_generation || cur.lifecycle != Lifecycle::Active {
            continue; // moved on since we looked
        }
        if let Some(h) = &cur.host_id {
            let host: Host = tx.get(&Scope::Platform, h.as_str()).await?;
            if !matches!(host.state, HostState::Available | HostState::Cordoned | HostState::Draining) {
                continue;
            }
        }
        let mut pokes = Pokes::default();
        let ev = if restart {
            lifecycle::publish(&mut cur, PowerState::Running, true);
            restarted += 1;
            let why = match obs.state {
                ObservedState::Crashed => "the guest crashed",
                ObservedState::Failed => "the guest failed",
                _ => "the guest powered off",
            };
            lifecycle::event(&cur, "restarted", format!("{why}; restart policy restarts it"), None)
        } else {
            lifecycle::publish(&mut cur, PowerState::Stopped, false);
            followed += 1;
            lifecycle::event(&cur, "stopped_by_guest", "the guest powered itself off", None)
        };
        lifecycle::save(&mut tx, &mut cur, true, vec![ev], None, &mut pokes).await?;
        tx.commit().await?;
        pokes.send(&st.signals);
    }
    Ok(json!({ "restarted": restarted, "stopped_by_guest": followed }))
}

async fn orphan_sweeper(st: &AppState) -> Result<Value, StoreError> {
    let mut removed = 0;
    for a in st.store.orphan_allocations().await? {
        let mut tx = st.store.begin().await?;
        if tx.remove::<Allocation>(a.id.as_str()).await? {
            tx.commit().await?;
            st.sched.note_release(a.host_id.as_str(), &a.claim);
            removed += 1;
        }
    }
    let mut failed = 0;
    let live = st.store.instances_on_retired_hosts().await?;
    for inst in &live {
        let mut tx = st.store.begin().await?;
        let mut cur: Instance = tx.get(&Scope::Platform, inst.id.as_str()).await?;
        let allocs = lifecycle::drop_allocations(&mut tx, &inst.id, None).await?;
        cur.lifecycle = Lifecycle::Failed;
        cur.claim = None;
        cur.warning = Some("its host was retired with the instance still on it".into());
        let mut pokes = Pokes::default();
        let ev = lifecycle::event(&cur, "failed", "host retired", None);
        lifecycle::save(&mut tx, &mut cur, false, vec![ev], None, &mut pokes).await?;
        tx.commit().await?;
        for a in &allocs {
            st.sched.note_release(a.host_id.as_str(), &a.claim);
        }
        pokes.send(&st.signals);
        failed += 1;
    }
    Ok(json!({ "allocations_removed": removed, "instances_failed_on_retired_hosts": failed }))
}

async fn stuck_operations(st: &AppState) -> Result<Value, StoreError> {
    let mut resumed = 0;
    let mut ids: BTreeSet<String> = std::mem::take(&mut *st.tasks.orphans.lock().unwrap_or_else(|e| e.into_inner()));
    ids.extend(st.store.resumable_operations().await?);
    for id in ids {
        if st.tasks.driving(&id) {
            continue;
        }
        saga::resume(st, OperationId(id));
        resumed += 1;
    }
    Ok(json!({ "resumed": resumed }))
}
