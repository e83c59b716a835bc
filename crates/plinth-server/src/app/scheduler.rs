//! The scheduler: an in-memory view of every host's capacity and usage that proposes a
//! host, and the claim that makes the proposal true inside one database transaction.
//!
//! The cache is only a guess. The claim re-reads the chosen host and its allocations under
//! the transaction's lock (and the placement group's members, when there is a group),
//! re-runs `plinth_domain::placement::fit` on that truth and writes the allocation, so
//! concurrent requests — in this process or in other replicas — can never overcommit a
//! host. When the guess was wrong the cache learns the host's truth and the next best host
//! is tried; before refusing, the cache is reloaded once from the database.

use crate::app::AppState;
use crate::app::{Error, Kind};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use chrono::Utc;
use plinth_api::{Allocation, AllocationId, Claim, Host, InstanceId, PlacementGroup, ProjectId, TenantId};
use plinth_domain::placement::{self, GroupRule, HostView, Member, NoValidHost, Policy, Request};
use plinth_store::{Store, StoreError, Tx};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::Mutex;

/// How many proposals one claim may try before giving up on contention.
const ATTEMPTS: usize = 32;

#[derive(Default)]
struct Cache {
    views: Vec<HostView>,
    index: HashMap<String, usize>,
    loaded_at: Option<Instant>,
}

/// The scheduler's cache and policy.
pub struct Scheduler {
    cache: RwLock<Cache>,
    reload_lock: Mutex<()>,
    policy: Policy,
    seed: AtomicU64,
    /// Counts each claim's outcome.
    metrics: Arc<Metrics>,
}

/// Why a claim did not happen.
#[derive(Debug)]
pub enum ClaimError {
    NoHost(NoValidHost),
    Store(StoreError),
}

impl From<StoreError> for ClaimError {
    fn from(e: StoreError) -> Self {
        ClaimError::Store(e)
    }
}

impl From<ClaimError> for Error {
    fn from(e: ClaimError) -> Error {
        match e {
            ClaimError::Store(e) => e.into(),
            ClaimError::NoHost(nv) => no_valid_host(&nv),
        }
    }
}

/// `409 no_capacity` (every host was removed by a capacity constraint) or
/// `409 no_valid_host`, with how many hosts each constraint removed.
pub fn no_valid_host(nv: &NoValidHost) -> Error {
    let code = if nv.capacity_only() && nv.hosts > 0 { "no_capacity" } else { "no_valid_host" };
    let summary: Vec<String> = nv.removed.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let detail = if nv.hosts == 0 {
        "no host is enrolled".to_string()
    } else {
        format!("none of {} hosts can take it ({})", nv.hosts, summary.join(", "))
    };
    Error::new(Kind::Conflict, code, detail)
        .with_constraint(json!({ "rule": "placement", "hosts": nv.hosts, "removed": nv.removed }))
}

/// Whom the allocation is for.
#[derive(Clone, Debug)]
pub struct Consumer {
    pub instance_id: InstanceId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
}

/// A host's view from its record and its allocations (skipping those of `exclude`).
pub fn view_of(host: &Host, allocs: &[Allocation], exclude: Option<&InstanceId>) -> HostView {
    let mut v = HostView::from_host(host);
    for a in allocs {
        if Some(&a.instance_id) != exclude {
            v.add(&a.claim);
        }
    }
    v
}

impl Scheduler {
    /// An empty cache; it loads on first use. Claims are counted in `metrics`.
    pub fn new(config: &ServerConfig, metrics: Arc<Metrics>) -> Scheduler {
        Scheduler {
            metrics,
            cache: RwLock::new(Cache::default()),
            reload_lock: Mutex::new(()),
            policy: Policy { weigh: config.weigh, randomize_top: config.randomize_top.max(1), seed: 0 },
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    fn policy(&self) -> Policy {
        let mut p = self.policy;
        p.seed = self.seed.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        p
    }

    /// Reloads every host and allocation from the database, unless another caller did so
    /// after `since`.
    pub async fn reload(&self, store: &Store, since: Option<Instant>) -> Result<(), StoreError> {
        let _guard = self.reload_lock.lock().await;
        if let (Some(since), Some(at)) = (since, self.read().loaded_at)
            && at > since
        {
            return Ok(());
        }
        let started = Instant::now();
        let (hosts, allocs) = store.scheduler_snapshot().await?;
        let mut by_host: HashMap<&str, Vec<&Allocation>> = HashMap::new();
        for a in &allocs {
            by_host.entry(a.host_id.as_str()).or_default().push(a);
        }
        let mut views = Vec::with_capacity(hosts.len());
        let mut index = HashMap::with_capacity(hosts.len());
        for h in &hosts {
            let mut v = HostView::from_host(h);
            for a in by_host.get(h.id.as_str()).into_iter().flatten() {
                v.add(&a.claim);
            }
            index.insert(v.id.clone(), views.len());
            views.push(v);
        }
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        *c = Cache { views, index, loaded_at: Some(started) };
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces (or adds) one host's view.
    pub fn put(&self, view: HostView) {
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        match c.index.get(&view.id).copied() {
            Some(i) => c.views[i] = view,
            None => {
                let i = c.views.len();
                c.index.insert(view.id.clone(), i);
                c.views.push(view);
            }
        }
    }

    /// Re-reads one host (after its state, inventory or settings changed).
    pub async fn refresh_host(&self, store: &Store, host_id: &str) -> Result<(), StoreError> {
        if let Some((host, allocs)) = store.host_with_allocations(host_id).await? {
            self.put(view_of(&host, &allocs, None));
        }
        Ok(())
    }

    /// Forgets a released claim on `host_id`.
    pub fn note_release(&self, host_id: &str, claim: &Claim) {
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = c.index.get(host_id).copied() {
            c.views[i].remove(claim);
        }
    }

    /// A copy of every host's view (for the capacity summary).
    pub async fn snapshot(&self, store: &Store) -> Result<Vec<HostView>, StoreError> {
        if self.read().loaded_at.is_none() {
            self.reload(store, None).await?;
        }
        Ok(self.read().views.clone())
    }

    /// The host to try next: the preferred one once, then the cache's best.
    fn propose(&self, req: &Request, preferred: &mut Option<String>) -> Result<String, NoValidHost> {
        if let Some(h) = preferred.take() {
            return Ok(h);
        }
        let c = self.read();
        placement::place(req, &c.views, &self.policy()).map(|(i, _)| c.views[i].id.clone())
    }

    /// Places `req` and claims the chosen host's resources for `consumer` inside a new
    /// transaction, which is returned open with the allocation written: the caller adds
    /// its own writes (the instance, the operation) and commits.
    ///
    /// The consumer's own existing allocations do not count (a resize re-placing itself).
    /// With `prefer`, that host is tried first. The allocation's instance is checked at
    /// commit, so a new instance may be written after its claim.
    pub async fn claim(
        &self,
        store: &Store,
        req: &mut Request,
        group: Option<&PlacementGroup>,
        consumer: &Consumer,
        prefer: Option<&str>,
    ) -> Result<(Tx, Allocation), ClaimError> {
        let out = self.try_claim(store, req, group, consumer, prefer).await;
        match &out {
            Ok(_) => self.metrics.placed(),
            Err(ClaimError::NoHost(nv)) => self.metrics.refused(nv),
            Err(ClaimError::Store(_)) => {}
        }
        out
    }

    async fn try_claim(
        &self,
        store: &Store,
        req: &mut Request,
        group: Option<&PlacementGroup>,
        consumer: &Consumer,
        prefer: Option<&str>,
    ) -> Result<(Tx, Allocation), ClaimError> {
        if self.read().loaded_at.is_none() {
            self.reload(store, None).await?;
        }
        let started = Instant::now();
        let mut reloaded = false;
        let mut preferred = prefer.map(str::to_string);
        for _ in 0..ATTEMPTS {
            // Without a group the proposal needs nothing from the transaction: make it
            // before taking the writer (on SQLite, the only one).
            let early = if group.is_none() { Some(self.propose(req, &mut preferred)) } else { None };
            let mut tx = store.begin().await?;
            if let Some(g) = group {
                let members = tx.group_members(g.id.as_str()).await?;
                req.group = Some(GroupRule {
                    policy: g.policy,
                    scope: g.scope,
                    members: members
                        .into_iter()
                        .filter(|(i, _, _)| i != consumer.instance_id.as_str())
                        .map(|(_, host_id, rack_id)| Member { host_id, rack_id })
                        .collect(),
                });
            }
            let proposal = match early {
                Some(p) => p,
                None => self.propose(req, &mut preferred),
            };
            let host_id = match proposal {
                Ok(h) => h,
                Err(nv) => {
                    drop(tx);
                    if reloaded {
                        return Err(ClaimError::NoHost(nv));
                    }
                    self.reload(store, Some(started)).await?;
                    reloaded = true;
                    continue;
                }
            };
            let Some((host, allocs)) = tx.host_for_claim(&host_id).await? else {
                drop(tx);
                self.reload(store, Some(started)).await?;
                continue;
            };
            let mut view = view_of(&host, &allocs, Some(&consumer.instance_id));
            match placement::fit(req, &view) {
                Ok(claim) => {
                    let now = Utc::now();
                    let alloc = Allocation {
                        id: AllocationId::generate(),
                        host_id: host.id.clone(),
                        instance_id: consumer.instance_id.clone(),
                        tenant_id: consumer.tenant_id.clone(),
                        project_id: consumer.project_id.clone(),
                        claim,
                        generation: 1,
                        created_at: now,
                        updated_at: now,
                    };
                    tx.insert(&alloc, &[]).await?;
                    // The caller may still roll back; the periodic reload corrects the
                    // cache then, and a refusal always reloads before it is believed.
                    let mut cached = view_of(&host, &allocs, None);
                    cached.add(&alloc.claim);
                    self.put(cached);
                    return Ok((tx, alloc));
                }
                Err(_) => {
                    drop(tx);
                    view = view_of(&host, &allocs, None);
                    self.put(view);
                }
            }
        }
        let nv = {
            let c = self.read();
            match placement::place(req, &c.views, &self.policy()) {
                Err(nv) => nv,
                Ok(_) => {
                    NoValidHost { removed: [("contention", 1)].into_iter().collect(), hosts: c.views.len() as u32 }
                }
            }
        };
        Err(ClaimError::NoHost(nv))
    }
}

/// Keeps the cache close to the database: reloads it every half minute. (Changes made in
/// this process update it at once; a wrong guess is corrected by the claim itself.)
pub async fn refresh_loop(st: AppState) {
    loop {
        if let Err(e) = st.sched.reload(&st.store, None).await {
            tracing::warn!("scheduler cache reload failed: {e}");
        }
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
}
