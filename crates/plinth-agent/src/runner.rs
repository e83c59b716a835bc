//! One host's loop: enrol (or reuse the stored credential), send the inventory, then
//! heartbeat, long-poll the desired state, converge the guests through the runtime and
//! report what is observed, until told to stop.
//!
//! Owns the order of the protocol calls and their retries: every failed call waits on a
//! capped exponential [`Backoff`] (never a hot loop), so the agent rides out server
//! restarts; a 401 stops the host (its credential is no longer valid). All of a host's
//! work runs in one task: the long-poll, the heartbeat, the report in flight and the
//! runtime steps are futures polled side by side, so a slow call never blocks the others.
//!
//! Tenant networks: when the desired state carries a network spec, the host's
//! [`HostNetwork`] backend applies it on a blocking thread, one apply at a time (a newer
//! spec arriving meanwhile is applied next; the ones between are skipped). A changed spec
//! is applied as a change (`apply_change`: the difference only, nothing read back); the
//! first spec, and the same spec again after [`NETWORK_REAPPLY`] without a change (at
//! least every [`NETWORK_VERIFY_MAX`]), are verified (`apply`: read back, drift repaired),
//! each but the first after a survey (`survey`: the verification's reads, on a second
//! blocking thread beside the changes, so that they do not wait for them).
//! The result goes to the server as `ObservedReport.network` whenever it differs from the
//! last one acknowledged, carrying only the NICs whose observation changed.
//!
//! Volumes: when the host has a volume pool, the desired state's volumes are converged on
//! a blocking thread ([`crate::storage::VolumePool::converge`]: files made, grown, wiped),
//! keys fetched from the server as the pool needs them, and the result sent as
//! `ObservedReport.volumes`; again every [`VOLUME_PERIOD`], which resends a lost report.
//!
//! Holds no guest policy: what to do with a guest is [`crate::converge`]'s, how to do it
//! is the [`Runtime`]'s.

use crate::backoff::Backoff;
use crate::client::{AgentClient, ClientError, HostClient};
use crate::console_ship::ConsoleShipper;
use crate::console_watch::ConsoleWatch;
use crate::converge::{Census, GuestTable, Step};
use crate::network::HostNetwork;
use crate::runtime::{BlobSource, GuestEvent, Runtime, RuntimeError};
use crate::state::{StateDir, StateError, StoredCredential};
use futures::stream::{FuturesUnordered, StreamExt};
use plinth_api::{
    DesiredState, EnrollRequest, Heartbeat, HeartbeatAck, HostId, HostInventory, HostNetworkSpec, HostState,
    InstanceId, ObservedAck, ObservedInstance, ObservedNetwork, ObservedReport, ObservedVolume, PhaseTiming,
    VolumeSpec,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the volume pool is converged (and reported) again when nothing changed.
pub const VOLUME_PERIOD: Duration = Duration::from_secs(30);

/// A volume pass's spec and its report's outcome (`None`: the pass panicked).
type VolumesDone = (Vec<VolumeSpec>, Option<Result<ObservedAck, ClientError>>);

/// Converges the volume pool to `want` on a blocking thread (keys fetched from the server
/// as it needs them) and sends the report; answers the spec and the report's outcome
/// (`None`: the converge panicked).
fn converge_volumes(
    pool: crate::storage::VolumePool,
    host: HostClient,
    want: Vec<VolumeSpec>,
    open: std::collections::BTreeSet<plinth_api::VolumeId>,
) -> BoxFut<VolumesDone> {
    Box::pin(async move {
        let handle = tokio::runtime::Handle::current();
        let (h, specs) = (host.clone(), want.clone());
        let observed = tokio::task::spawn_blocking(move || {
            let key = |id: &plinth_api::VolumeId| {
                handle.block_on(h.volume_key(id)).map(|k| k.key).map_err(|e| format!("fetching its key: {e}"))
            };
            // Told before a wipe starts (an overwrite of a large volume takes a while); a
            // report that does not go through is only a state not shown meanwhile.
            let wiping = |o: ObservedVolume| {
                let body = ObservedReport { instances: Vec::new(), network: None, volumes: vec![o] };
                if let Err(e) = handle.block_on(h.observed(&body)) {
                    tracing::debug!(error = %e, "reporting a wipe's start");
                }
            };
            let fetch = |b: &plinth_api::BlobRef, dest: &std::path::Path| {
                handle.block_on(h.fetch_blob(&b.sha256, dest)).map(drop).map_err(|e| e.to_string())
            };
            pool.converge_open(&specs, &open, &key, &wiping, &fetch)
        })
        .await
        .ok();
        let Some(volumes) = observed else { return (want, None) };
        if volumes.is_empty() {
            // Nothing to tell (no volume on this host): no call.
            return (want, Some(Ok(ObservedAck { applied: 0, stale: 0, rejected: 0 })));
        }
        let body = ObservedReport { instances: Vec::new(), network: None, volumes };
        let r = host.observed(&body).await;
        (want, Some(r))
    })
}

/// Makes encrypted volumes' next layers ahead ([`crate::storage::VolumePool::make_spares`],
/// one a run: about 2 s), beside the pool passes rather than in them, so a volume create
/// or delete does not wait for it.
fn make_spares(pool: crate::storage::VolumePool, host: HostClient, want: Vec<VolumeSpec>) -> BoxFut<()> {
    Box::pin(async move {
        let handle = tokio::runtime::Handle::current();
        let made = tokio::task::spawn_blocking(move || {
            let key = |id: &plinth_api::VolumeId| {
                handle.block_on(host.volume_key(id)).map(|k| k.key).map_err(|e| format!("fetching its key: {e}"))
            };
            pool.make_spares(&want, &key, 1)
        })
        .await;
        if let Ok(n @ 1..) = made {
            tracing::debug!(made = n, "next layers made ahead");
        }
    })
}

/// Heartbeat interval until the server says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// A long-poll answered at once without a newer generation is not repeated sooner than
/// this (protection against a server that does not hold the poll).
const MIN_POLL_SPACING: Duration = Duration::from_secs(1);
/// How often guests' console logs are looked at while some are not watched (no inotify,
/// or a guest directory not made yet).
const CONSOLE_PERIOD: Duration = Duration::from_millis(50);
/// How often watched console logs are looked at anyway (a safety net: a change wakes the
/// shipping at once), unless [`RunnerConfig::console_poll`] says otherwise.
pub const CONSOLE_POLL: Duration = Duration::from_secs(1);
/// Two console shipping rounds start at least this far apart, so a guest writing its
/// console byte by byte is shipped in a few calls rather than one per write.
const MIN_SHIP_SPACING: Duration = Duration::from_millis(5);
/// How often the host's inventory is discovered again (and sent when it changed).
const REDISCOVER_PERIOD: Duration = Duration::from_secs(60);

/// Longest time between two verifying applies while changes keep coming (each change
/// pushes the periodic one back by [`NETWORK_REAPPLY`]).
pub const NETWORK_VERIFY_MAX: Duration = Duration::from_secs(60);

/// How often the network spec is applied again when nothing changed (drift repair).
pub const NETWORK_REAPPLY: Duration = Duration::from_secs(10);

/// The host's tenant network backend (see [`crate::network`]).
#[derive(Clone)]
pub struct NetworkBackend(pub Arc<dyn HostNetwork>);

impl std::fmt::Debug for NetworkBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkBackend")
    }
}

/// Discovers the host's inventory again (blocking I/O; run off the async threads).
/// `None`: discovery failed this time (the last inventory stands).
#[derive(Clone)]
pub struct Rediscover(pub Arc<dyn Fn() -> Option<HostInventory> + Send + Sync>);

impl std::fmt::Debug for Rediscover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rediscover(..)")
    }
}

/// One host to run.
#[derive(Clone, Debug)]
pub struct HostSetup {
    /// The host's index in this process (0 for a real host).
    pub index: u32,
    /// The host name (a DNS label); also the key of its credential in the state directory.
    pub hostname: String,
    /// The inventory sent at enrolment and at every start.
    pub inventory: HostInventory,
    /// Rediscovers the inventory periodically (real hosts); `None`: it never changes.
    pub rediscover: Option<Rediscover>,
}

/// Settings shared by every host of the process.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Join token for hosts that have not enrolled yet.
    pub join_token: Option<String>,
    /// Long-poll wait, in seconds (at most 60).
    pub poll_wait_seconds: u64,
    /// Sent in heartbeats.
    pub agent_version: String,
    /// Where credentials are kept.
    pub state: StateDir,
    /// How often watched console logs are looked at when no change was seen
    /// ([`CONSOLE_POLL`]); new output is shipped as soon as it is written.
    pub console_poll: Duration,
    /// The tenant network backend; `None`: network specs are ignored (simulated hosts).
    pub network: Option<NetworkBackend>,
    /// The host's volume pool; `None`: volume specs are ignored (the host reports none).
    pub volumes: Option<crate::storage::VolumePool>,
}

/// Why a host's loop ended.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// 401: the credential is no longer valid.
    #[error(
        "{hostname}: credential refused ({detail}); the host was removed or the server's database is new: delete {path} to enrol it again"
    )]
    CredentialRefused {
        /// The host.
        hostname: String,
        /// The server's detail.
        detail: String,
        /// The credential file.
        path: String,
    },
    /// The server refused the enrolment (bad, expired or used-up join token, name taken…).
    #[error("{hostname}: enrolment refused: {source}")]
    EnrollRefused {
        /// The host.
        hostname: String,
        /// The refusal.
        source: ClientError,
    },
    /// The host has no stored credential and no join token was given.
    #[error("{hostname}: not enrolled, and no join token was given")]
    NoJoinToken {
        /// The host.
        hostname: String,
    },
    /// A call the host cannot do without was refused.
    #[error("{hostname}: {what} refused: {source}")]
    Refused {
        /// The host.
        hostname: String,
        /// The call.
        what: &'static str,
        /// The refusal.
        source: ClientError,
    },
    /// The protocol client could not be set up for the host.
    #[error("{hostname}: {source}")]
    Client {
        /// The host.
        hostname: String,
        /// The error.
        source: ClientError,
    },
    /// The state directory could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The runtime could not discover the host's guests.
    #[error("{hostname}: runtime: {source}")]
    Runtime {
        /// The host.
        hostname: String,
        /// The error.
        source: RuntimeError,
    },
}

/// Counters shared by every host of the process, for progress lines.
#[derive(Debug, Default)]
pub struct Progress {
    /// Hosts enrolled by this process.
    pub enrolled: AtomicU64,
    /// Hosts that reused a stored credential.
    pub reused: AtomicU64,
    /// Hosts whose heartbeat was answered at least once.
    pub ready: AtomicU64,
    /// Guests last reported `starting`, over all hosts.
    pub starting: AtomicI64,
    /// Guests last reported `running`, over all hosts.
    pub running: AtomicI64,
    /// Guests last reported `stopping`, over all hosts.
    pub stopping: AtomicI64,
    /// Guests last reported `stopped`, over all hosts.
    pub stopped: AtomicI64,
    /// Guests last reported `failed`, over all hosts.
    pub failed: AtomicI64,
    /// Whether the server is failing (so that only the first host says so).
    server_trouble: AtomicBool,
}

impl Progress {
    /// Notes a failed call; logs once for all hosts while the server stays unreachable.
    fn trouble(&self, server: &str, e: &ClientError) {
        if e.is_retryable() && !self.server_trouble.swap(true, Ordering::Relaxed) {
            tracing::warn!(server, "server unavailable ({e}); every host retries with backoff");
        }
    }

    /// Notes a successful call.
    fn ok(&self, server: &str) {
        if self.server_trouble.swap(false, Ordering::Relaxed) {
            tracing::info!(server, "server reachable again");
        }
    }

    fn add_census(&self, c: Census, sign: i64) {
        let add = |a: &AtomicI64, n: u64| {
            a.fetch_add(sign * n as i64, Ordering::Relaxed);
        };
        add(&self.starting, c.starting);
        add(&self.running, c.running);
        add(&self.stopping, c.stopping);
        add(&self.stopped, c.stopped);
        add(&self.failed, c.failed);
    }
}

/// A host's share of the guest counters; taken back when the host's loop ends.
struct CensusShare {
    last: Census,
    progress: Arc<Progress>,
}

impl CensusShare {
    fn update(&mut self, now: Census) {
        if now != self.last {
            self.progress.add_census(self.last, -1);
            self.progress.add_census(now, 1);
            self.last = now;
        }
    }
}

impl Drop for CensusShare {
    fn drop(&mut self) {
        self.progress.add_census(self.last, -1);
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A runtime step in flight: it answers its guest, its outcome and its timed phases (the
/// step as a whole first, then the runtime's own).
/// A step's end: its guest, result, phases, and the guest's volume disks after it.
type OpDone = (InstanceId, Result<(), RuntimeError>, Vec<PhaseTiming>, Option<Vec<plinth_api::ObservedPlug>>);
type Ops = FuturesUnordered<BoxFut<OpDone>>;

/// Awaits the future in `slot`, or forever when there is none.
async fn next_of<T>(slot: &mut Option<BoxFut<T>>) -> T {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next unasked guest change, or never when the runtime has none.
async fn next_event(events: &mut Option<tokio::sync::mpsc::UnboundedReceiver<GuestEvent>>) -> Option<GuestEvent> {
    match events {
        Some(rx) => match rx.recv().await {
            Some(e) => Some(e),
            None => {
                *events = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// The next change of a watched console log, or never without a watch.
async fn next_change(watch: &mut Option<ConsoleWatch>) {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the stop flag is raised (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One host's context for its loop.
struct Host<R> {
    cfg: Arc<RunnerConfig>,
    client: AgentClient,
    setup: HostSetup,
    runtime: Arc<R>,
    progress: Arc<Progress>,
}

impl<R: Runtime> Host<R> {
    fn name(&self) -> &str {
        &self.setup.hostname
    }

    /// Calls `call` until it succeeds, retrying with backoff while it fails in a way that
    /// may pass. `Ok(None)`: stopped meanwhile.
    async fn until_ok<T, F, Fut>(&self, stop: &mut watch::Receiver<bool>, mut call: F) -> Result<Option<T>, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut backoff = Backoff::for_server(u64::from(self.setup.index));
        loop {
            let result = tokio::select! {
                r = call() => r,
                _ = stopped(stop) => return Ok(None),
            };
            match result {
                Ok(v) => {
                    self.progress.ok(self.client.base());
                    return Ok(Some(v));
                }
                Err(e) if e.is_retryable() => {
                    self.progress.trouble(self.client.base(), &e);
                    let wait = backoff.next_delay();
                    tracing::debug!(error = %e, ?wait, "retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped(stop) => return Ok(None),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The stored credential, or a new one from enrolling. `Ok(None)`: stopped meanwhile.
    async fn credential(&self, stop: &mut watch::Receiver<bool>) -> Result<Option<StoredCredential>, HostError> {
        let hostname = self.name().to_string();
        if let Some(c) = self.cfg.state.load_credential(&hostname)? {
            if c.server != self.client.base() {
                tracing::warn!(
                    enrolled_with = %c.server,
                    "this host enrolled with another server URL; using its credential anyway"
                );
            }
            self.progress.reused.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(c));
        }
        let Some(token) = self.cfg.join_token.clone() else { return Err(HostError::NoJoinToken { hostname }) };
        let req = EnrollRequest {
            join_token: token,
            hostname: hostname.clone(),
            inventory: Some(self.setup.inventory.clone()),
        };
        let answer = self
            .until_ok(stop, || self.client.enroll(&req))
            .await
            .map_err(|source| HostError::EnrollRefused { hostname: hostname.clone(), source })?;
        let Some(answer) = answer else { return Ok(None) };
        let cred = StoredCredential {
            hostname: hostname.clone(),
            host_id: answer.host_id,
            credential: answer.credential,
            server: self.client.base().to_string(),
            enrolled_at: chrono::Utc::now(),
        };
        if let Err(e) = self.cfg.state.save_credential(&cred) {
            tracing::error!(host_id = %cred.host_id, "enrolled, but the credential could not be kept: {e}; retire this host id");
            return Err(e.into());
        }
        self.progress.enrolled.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host_id = %cred.host_id, "enrolled");
        Ok(Some(cred))
    }

    fn refused(&self, detail: String) -> HostError {
        let path = self.cfg.state.credential_path(self.name()).map(|p| p.display().to_string()).unwrap_or_default();
        HostError::CredentialRefused { hostname: self.name().to_string(), detail, path }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), HostError> {
        let hostname = self.name().to_string();
        let Some(cred) = self.credential(&mut stop).await? else { return Ok(()) };
        let host = self
            .client
            .host(&cred.credential)
            .map_err(|source| HostError::Client { hostname: hostname.clone(), source })?;
        let found = self
            .runtime
            .discover()
            .await
            .map_err(|source| HostError::Runtime { hostname: hostname.clone(), source })?;
        let table = GuestTable::from_discovered(found);
        self.runtime.attach(Arc::new(host.clone()) as Arc<dyn BlobSource>);
        let sent = self.until_ok(&mut stop, || host.put_inventory(&self.setup.inventory)).await;
        match sent {
            Ok(Some(())) => {}
            Ok(None) => return Ok(()),
            Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
            Err(source) => return Err(HostError::Refused { hostname, what: "inventory", source }),
        }
        if let Some(net) = &self.cfg.network
            && let Some(period) = net.0.counter_period()
        {
            tokio::spawn(crate::meter_ship::run(host.clone(), net.0.clone(), period, stop.clone()));
        }
        if self.runtime.has_consoles() {
            let wait = self.cfg.poll_wait_seconds;
            tokio::spawn(crate::console_input::run(host.clone(), self.runtime.clone(), wait, stop.clone()));
        }
        self.converge_loop(host, cred.host_id, table, stop).await
    }

    /// Heartbeats, long-polls, converges and reports until stopped.
    async fn converge_loop(
        &self,
        host: HostClient,
        host_id: HostId,
        mut table: GuestTable,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), HostError> {
        let salt = u64::from(self.setup.index);
        let server = self.client.base().to_string();
        let wait = self.cfg.poll_wait_seconds;
        let beat = Heartbeat { agent_version: Some(self.cfg.agent_version.clone()) };

        let mut poll: Option<BoxFut<Result<DesiredState, ClientError>>> = None;
        let mut poll_at = Instant::now();
        let mut poll_started = Instant::now();
        let mut poll_backoff = Backoff::for_server(salt);
        let mut after: Option<i64> = None;

        let mut hb: Option<BoxFut<Result<HeartbeatAck, ClientError>>> = None;
        let mut hb_at = Instant::now();
        let mut hb_interval = DEFAULT_HEARTBEAT;
        let mut hb_backoff = Backoff::for_server(salt);
        let mut host_state: Option<HostState> = None;

        let mut report: Option<BoxFut<Result<ObservedAck, ClientError>>> = None;
        let mut in_report: Vec<ObservedInstance> = Vec::new();
        let mut pending: BTreeMap<InstanceId, ObservedInstance> = BTreeMap::new();
        let mut report_at = Instant::now();
        let mut report_backoff = Backoff::for_server(salt);
        // After a batch was refused: send the queued reports one per request, so that one
        // the server will not take (say, of an instance no longer on this host) does not
        // sink the others.
        let mut one_by_one = false;

        let mut events = self.runtime.take_events();
        let mut inventory = self.setup.inventory.clone();
        let mut rediscover: Option<BoxFut<Option<HostInventory>>> = None;
        let mut rediscover_at = Instant::now() + REDISCOVER_PERIOD;
        let mut inv_put: Option<BoxFut<Result<(), ClientError>>> = None;
        let mut console: Option<BoxFut<(ConsoleShipper, Result<u64, ClientError>)>> = None;
        let mut shipper = Some(ConsoleShipper::new());
        let mut console_at = Instant::now();
        let mut ship_started = Instant::now();
        let mut watch = self.runtime.has_consoles().then(ConsoleWatch::new);
        let mut console_period = CONSOLE_PERIOD;

        // Tenant network: the newest spec, the one last applied, the apply in flight, and
        // the report to send.
        // Shared, not copied: a spec at 1,000 NICs is a large value, and it goes to the
        // blocking apply and back.
        let mut net_want: Option<Arc<HostNetworkSpec>> = None;
        let mut net_done: Option<Arc<HostNetworkSpec>> = None;
        let mut net_apply: Option<BoxFut<(Arc<HostNetworkSpec>, Option<ObservedNetwork>)>> = None;
        let mut net_at = Instant::now();
        let mut net_verified_at = Instant::now();
        // A due verification is surveyed first, beside change applies (when the backend
        // keeps surveys): the survey in flight, and whether one finished for it.
        let mut net_survey: Option<BoxFut<bool>> = None;
        let mut net_surveyed = false;
        let mut net_surveys = true;
        let mut net_pending: Option<ObservedNetwork> = None;
        let mut net_sent: Option<ObservedNetwork> = None;
        let mut net_send: Option<BoxFut<(ObservedNetwork, Result<ObservedAck, ClientError>)>> = None;
        let mut net_send_at = Instant::now();
        let mut net_backoff = Backoff::for_server(salt);

        // Volumes: the newest spec, the one last converged, and the converge-and-report in
        // flight (the pool is converged again every VOLUME_PERIOD, which resends a report
        // a crash or a failed call lost).
        let mut vol_want: Option<Vec<VolumeSpec>> = None;
        let mut vol_done: Option<Vec<VolumeSpec>> = None;
        let mut vol_task: Option<BoxFut<VolumesDone>> = None;
        let mut spare_task: Option<BoxFut<()>> = None;
        let mut vol_at = Instant::now();
        let mut vol_backoff = Backoff::for_server(salt);

        let mut ops: Ops = FuturesUnordered::new();
        let mut share = CensusShare { last: Census::default(), progress: self.progress.clone() };
        let mut warned_host_id = false;

        loop {
            let now = Instant::now();
            if let Some(w) = watch.as_mut() {
                let logs: Vec<_> = table.guests().filter_map(|g| self.runtime.console_log(g.instance_id())).collect();
                console_period = if w.sync(&logs) {
                    self.cfg.console_poll
                } else {
                    console_at = console_at.min(now + CONSOLE_PERIOD);
                    CONSOLE_PERIOD
                };
            }
            if poll.is_none() && poll_at <= now {
                let h = host.clone();
                poll_started = now;
                poll = Some(Box::pin(async move { h.desired(after, wait).await }));
            }
            if hb.is_none() && hb_at <= now {
                let (h, b) = (host.clone(), beat.clone());
                hb = Some(Box::pin(async move { h.heartbeat(&b).await }));
            }
            if report.is_none() && !pending.is_empty() && report_at <= now {
                in_report = if one_by_one {
                    pending.pop_first().map(|(_, r)| r).into_iter().collect()
                } else {
                    std::mem::take(&mut pending).into_values().collect()
                };
                one_by_one &= !pending.is_empty();
                let body = ObservedReport { instances: in_report.clone(), network: None, volumes: Vec::new() };
                let h = host.clone();
                report = Some(Box::pin(async move { h.observed(&body).await }));
            }
            // A changed spec is applied as a change (only the difference, nothing read back).
            // A verification is due for the first spec, for the same spec after
            // NETWORK_REAPPLY, and at least every NETWORK_VERIFY_MAX; except for the first,
            // it is surveyed first (its reads, taken beside the changes that keep coming),
            // and applied once the survey is in.
            let verify_due = net_done.is_none() || net_at <= now || now >= net_verified_at + NETWORK_VERIFY_MAX;
            let survey_first = net_done.is_some() && net_surveys;
            if let (Some(backend), None, Some(want)) = (&self.cfg.network, &net_survey, &net_want)
                && verify_due
                && survey_first
                && !net_surveyed
            {
                let (backend, spec) = (backend.0.clone(), want.clone());
                net_survey = Some(Box::pin(async move {
                    tokio::task::spawn_blocking(move || backend.survey(&spec)).await.unwrap_or(false)
                }));
            }
            if let (Some(backend), None, Some(want)) = (&self.cfg.network, &net_apply, &net_want)
                && (net_done.as_ref() != Some(want) || net_surveyed || (verify_due && !survey_first))
            {
                let (backend, spec) = (backend.0.clone(), want.clone());
                let verify = net_surveyed || (verify_due && !survey_first);
                if verify {
                    net_verified_at = now;
                    net_surveyed = false;
                }
                net_at = now + NETWORK_REAPPLY;
                net_apply =
                    Some(Box::pin(async move {
                        // The backend never changes the calling thread's namespace, so a pooled
                        // blocking thread is fine here.
                        let s = spec.clone();
                        let observed = tokio::task::spawn_blocking(move || {
                            if verify { backend.apply(&s) } else { backend.apply_change(&s) }
                        })
                        .await
                        .ok();
                        (spec, observed)
                    }));
            }
            if let (Some(pool), None, Some(want)) = (&self.cfg.volumes, &vol_task, &vol_want)
                && (vol_done.as_ref() != Some(want) || vol_at <= now)
            {
                vol_at = now + VOLUME_PERIOD;
                vol_task = Some(converge_volumes(pool.clone(), host.clone(), want.clone(), table.open_volumes()));
            }
            if net_send.is_none()
                && net_send_at <= now
                && let Some(obs) = net_pending.take()
            {
                let h = host.clone();
                let delta = obs.changed_since(net_sent.as_ref());
                net_send = Some(Box::pin(async move {
                    let body = ObservedReport { instances: Vec::new(), network: Some(delta), volumes: Vec::new() };
                    let r = h.observed(&body).await;
                    (obs, r)
                }));
            }
            if console.is_none()
                && console_at <= now
                && self.runtime.has_consoles()
                && let Some(mut sh) = shipper.take()
            {
                let logs: Vec<_> = table
                    .guests()
                    .filter_map(|g| self.runtime.console_log(g.instance_id()).map(|p| (g.instance_id().clone(), p)))
                    .collect();
                let h = host.clone();
                ship_started = now;
                console = Some(Box::pin(async move {
                    let r = sh.ship(&h, &logs).await;
                    (sh, r)
                }));
            }
            if rediscover.is_none()
                && inv_put.is_none()
                && rediscover_at <= now
                && let Some(f) = self.setup.rediscover.clone()
            {
                rediscover =
                    Some(Box::pin(async move { tokio::task::spawn_blocking(move || (f.0)()).await.ok().flatten() }));
            }
            let mut wake = now + Duration::from_secs(3600);
            if console.is_none() && self.runtime.has_consoles() {
                wake = wake.min(console_at);
            }
            if rediscover.is_none() && inv_put.is_none() && self.setup.rediscover.is_some() {
                wake = wake.min(rediscover_at);
            }
            if poll.is_none() {
                wake = wake.min(poll_at);
            }
            if hb.is_none() {
                wake = wake.min(hb_at);
            }
            if report.is_none() && !pending.is_empty() {
                wake = wake.min(report_at);
            }
            if net_apply.is_none() && net_survey.is_none() && net_want.is_some() && self.cfg.network.is_some() {
                wake = wake.min(net_at);
            }
            if net_send.is_none() && net_pending.is_some() {
                wake = wake.min(net_send_at);
            }
            if vol_task.is_none() && vol_want.is_some() && self.cfg.volumes.is_some() {
                wake = wake.min(vol_at);
            }

            tokio::select! {
                _ = stopped(&mut stop) => return Ok(()),
                r = next_of(&mut poll) => {
                    poll = None;
                    let now = Instant::now();
                    match r {
                        Ok(desired) => {
                            self.progress.ok(&server);
                            poll_backoff.reset();
                            if desired.host_id != host_id && !warned_host_id {
                                warned_host_id = true;
                                tracing::warn!(expected = %host_id, got = %desired.host_id, "desired state names another host");
                            }
                            tracing::debug!(
                                generation = desired.generation,
                                poll_ms = (now - poll_started).as_millis() as u64,
                                "desired state received"
                            );
                            let advanced = after.is_none_or(|a| desired.generation > a);
                            after = Some(desired.generation);
                            self.absorb(table.apply_desired(&desired.instances), &mut ops, &mut pending);
                            if let Some(n) = desired.network {
                                net_want = Some(Arc::new(n));
                            }
                            vol_want = Some(desired.volumes);
                            poll_at = if advanced || now - poll_started >= MIN_POLL_SPACING {
                                now
                            } else {
                                poll_started + MIN_POLL_SPACING
                            };
                        }
                        Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
                        Err(e) => {
                            self.note_failure("desired state", &server, &e);
                            poll_at = now + poll_backoff.next_delay();
                        }
                    }
                }
                r = next_of(&mut hb) => {
                    hb = None;
                    let now = Instant::now();
                    match r {
                        Ok(ack) => {
                            self.progress.ok(&server);
                            hb_backoff.reset();
                            hb_interval = Duration::from_secs(ack.interval_seconds.clamp(1, 3600));
                            hb_at = now + hb_interval;
                            if host_state.is_none() {
                                self.progress.ready.fetch_add(1, Ordering::Relaxed);
                            }
                            if host_state != Some(ack.state) {
                                tracing::debug!(state = ack.state.as_str(), "host state");
                                host_state = Some(ack.state);
                            }
                        }
                        Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
                        Err(e) => {
                            self.note_failure("heartbeat", &server, &e);
                            hb_at = now + hb_backoff.next_delay().min(hb_interval);
                        }
                    }
                }
                r = next_of(&mut report) => {
                    report = None;
                    let now = Instant::now();
                    match r {
                        Ok(ack) => {
                            self.progress.ok(&server);
                            report_backoff.reset();
                            if ack.stale > 0 {
                                tracing::debug!(applied = ack.applied, stale = ack.stale, "some observations were stale");
                            }
                            in_report.clear();
                        }
                        Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
                        Err(e) if e.is_retryable() => {
                            self.note_failure("observed report", &server, &e);
                            // Keep them for the next try, unless something newer came meanwhile.
                            for r in in_report.drain(..) {
                                pending.entry(r.instance_id.clone()).or_insert(r);
                            }
                            report_at = now + report_backoff.next_delay();
                        }
                        Err(e) if in_report.len() > 1 => {
                            tracing::debug!(count = in_report.len(), "observed report refused ({e}); sending them one by one");
                            for r in in_report.drain(..) {
                                pending.entry(r.instance_id.clone()).or_insert(r);
                            }
                            one_by_one = true;
                        }
                        Err(e) => {
                            for r in in_report.drain(..) {
                                tracing::warn!(instance = %r.instance_id, state = ?r.state, generation = r.generation, "observation refused, dropped: {e}");
                            }
                        }
                    }
                }
                surveyed = next_of(&mut net_survey) => {
                    net_survey = None;
                    // Without surveys, the verification reads for itself.
                    net_surveys = surveyed;
                    net_surveyed = surveyed;
                }
                (spec, observed) = next_of(&mut net_apply) => {
                    net_apply = None;
                    match observed {
                        Some(obs) => {
                            net_done = Some(spec);
                            if net_sent.as_ref() != Some(&obs) {
                                net_pending = Some(obs);
                            }
                        }
                        None => tracing::warn!("the network apply panicked; retrying at the next period"),
                    }
                }
                (spec, sent) = next_of(&mut vol_task) => {
                    vol_task = None;
                    match sent {
                        Some(Ok(_)) => {
                            vol_backoff.reset();
                            if let (None, Some(pool)) = (&spare_task, &self.cfg.volumes) {
                                spare_task = Some(make_spares(pool.clone(), host.clone(), spec.clone()));
                            }
                            vol_done = Some(spec);
                        }
                        Some(Err(ClientError::Unauthorized { detail, .. })) => return Err(self.refused(detail)),
                        Some(Err(e)) => {
                            self.note_failure("volume report", &server, &e);
                            vol_at = Instant::now() + vol_backoff.next_delay();
                        }
                        None => tracing::warn!("converging the volume pool panicked; retrying at the next period"),
                    }
                }
                () = next_of(&mut spare_task) => spare_task = None,
                (obs, r) = next_of(&mut net_send) => {
                    net_send = None;
                    match r {
                        Ok(_) => {
                            net_backoff.reset();
                            net_sent = Some(obs);
                        }
                        Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
                        Err(e) => {
                            self.note_failure("network report", &server, &e);
                            // Sent again unless a newer one is queued meanwhile.
                            net_pending.get_or_insert(obs);
                            net_send_at = Instant::now() + net_backoff.next_delay();
                        }
                    }
                }
                Some(GuestEvent { instance_id, happened }) = next_event(&mut events) => {
                    tracing::info!(instance = %instance_id, ?happened, "guest changed unasked");
                    self.absorb(table.happened(&instance_id, happened), &mut ops, &mut pending);
                }
                (sh, r) = next_of(&mut console) => {
                    console = None;
                    shipper = Some(sh);
                    let now = Instant::now();
                    match r {
                        Ok(_) => console_at = now + console_period,
                        Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
                        Err(e) => {
                            tracing::debug!(error = %e, "console shipping failed; retrying later");
                            console_at = now + CONSOLE_PERIOD.max(Duration::from_secs(2));
                        }
                    }
                }
                _ = next_change(&mut watch), if console.is_none() => {
                    // Written just now: ship it (a burst waits a few ms to go in one call).
                    console_at = console_at.min(Instant::now().max(ship_started + MIN_SHIP_SPACING));
                }
                found = next_of(&mut rediscover) => {
                    rediscover = None;
                    rediscover_at = Instant::now() + REDISCOVER_PERIOD;
                    if let Some(found) = found.filter(|f| *f != inventory) {
                        tracing::info!("the host's inventory changed; sending it");
                        inventory = found;
                        let (h, inv) = (host.clone(), inventory.clone());
                        inv_put = Some(Box::pin(async move { h.put_inventory(&inv).await }));
                    }
                }
                r = next_of(&mut inv_put) => {
                    inv_put = None;
                    match r {
                        Ok(()) => {}
                        Err(ClientError::Unauthorized { detail, .. }) => return Err(self.refused(detail)),
                        // Sent again at the next rediscovery (it will differ from the last sent).
                        Err(e) => {
                            self.note_failure("inventory", &server, &e);
                            inventory = HostInventory::default();
                        }
                    }
                }
                Some((id, result, phases, plugs)) = ops.next(), if !ops.is_empty() => {
                    let result = result.map_err(|e| e.to_string());
                    if phases.first().is_some_and(|p| p.phase == "devices") {
                        // A disk may have grown live: the pool's report follows at once.
                        vol_at = Instant::now();
                    }
                    let mut step = table.complete_with(&id, result, plugs);
                    // The report that ends the step says how the step went, phase by phase.
                    if let Some(r) = step.reports.iter_mut().find(|r| r.instance_id == id) {
                        r.timings = phases;
                    }
                    self.absorb(step, &mut ops, &mut pending);
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            share.update(table.census());
        }
    }

    /// Starts the steps `step` asks for and queues its reports (a newer report of a guest
    /// replaces an older one not yet sent).
    fn absorb(&self, step: Step, ops: &mut Ops, pending: &mut BTreeMap<InstanceId, ObservedInstance>) {
        for op in step.ops {
            tracing::debug!(instance = %op.instance_id, generation = op.generation, step = op.kind.name(), "starting step");
            let rt = self.runtime.clone();
            ops.push(Box::pin(async move {
                let id = op.instance_id.clone();
                let phase = op.kind.name().to_string();
                let started_at = chrono::Utc::now();
                let t0 = Instant::now();
                let result = rt.execute(op).await;
                let took_ms = t0.elapsed().as_micros() as f64 / 1000.0;
                let mut phases = vec![PhaseTiming { phase, started_at, took_ms }];
                phases.extend(rt.take_phases(&id));
                let plugs = rt.plugs(&id);
                (id, result, phases, plugs)
            }));
        }
        for mut r in step.reports {
            if r.state != plinth_api::ObservedState::Absent {
                r.evidence = self.runtime.evidence(&r.instance_id);
            }
            pending.insert(r.instance_id.clone(), r);
        }
    }

    fn note_failure(&self, what: &str, server: &str, e: &ClientError) {
        if e.is_retryable() {
            self.progress.trouble(server, e);
            tracing::debug!(error = %e, "{what} failed; retrying with backoff");
        } else {
            tracing::warn!("{what} refused: {e}");
        }
    }
}

/// Runs one host until `stop` is raised: enrols it (or reuses its stored credential),
/// sends its inventory, then heartbeats, long-polls its desired state, converges its
/// guests through `runtime` and reports them. Ends with an error when the host cannot go
/// on (credential refused, enrolment refused, state directory unusable).
pub async fn run_host<R: Runtime>(
    client: AgentClient,
    cfg: Arc<RunnerConfig>,
    setup: HostSetup,
    runtime: Arc<R>,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) -> Result<(), HostError> {
    Host { cfg, client, setup, runtime, progress }.run(stop).await
}
