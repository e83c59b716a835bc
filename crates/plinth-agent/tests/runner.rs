//! One host's loop against a fake `/agent/v1` server (in-process axum, no database):
//! enrolment and credential reuse across restarts, inventory and heartbeats, long-poll
//! convergence and reports through the sim runtime, riding out a server outage, and
//! stopping on a refused credential. The real server's own test suite covers the server
//! side of the protocol.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use plinth_agent::runtime::sim::{SimConfig, SimRuntime};
use plinth_agent::sim::inventory::profile_for;
use plinth_agent::{
    AgentClient, Discovered, HostError, HostSetup, Op, OpKind, Progress, RunnerConfig, Runtime, RuntimeError, StateDir,
    run_host,
};
use plinth_api::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

const JOIN: &str = "pjt_test";

#[derive(Default)]
struct Fake {
    enrolls: u32,
    credential: String,
    host_id: Option<HostId>,
    inventory_puts: u32,
    heartbeats: u32,
    generation: i64,
    specs: Vec<InstanceSpec>,
    observed: Vec<ObservedInstance>,
    /// Answer every call with this status (an outage).
    fail_with: Option<StatusCode>,
    /// Calls refused by the outage.
    refused: u32,
    /// Desired-state answers served.
    polls: u32,
    /// Console bytes shipped, by instance.
    consoles: std::collections::HashMap<String, Vec<u8>>,
    revoked: bool,
    /// The network spec served in the desired state.
    network: Option<plinth_api::HostNetworkSpec>,
    /// Network reports received.
    networks: Vec<plinth_api::ObservedNetwork>,
}

#[derive(Clone, Default)]
struct Shared {
    fake: Arc<Mutex<Fake>>,
    changed: Arc<Notify>,
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.fake.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn problem(status: StatusCode, code: &str) -> Response {
    let body = serde_json::json!({"type": "about:blank", "title": code, "status": status.as_u16(), "code": code, "detail": code, "request_id": "r"});
    (status, Json(body)).into_response()
}

/// The outage or credential check every authenticated call goes through.
fn gate(s: &Shared, headers: &HeaderMap) -> Result<HostId, (StatusCode, &'static str)> {
    s.with(|f| {
        if let Some(status) = f.fail_with {
            f.refused += 1;
            return Err((status, "unavailable"));
        }
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        match &f.host_id {
            Some(id) if !f.revoked && auth == format!("Bearer {}", f.credential) => Ok(id.clone()),
            _ => Err((StatusCode::UNAUTHORIZED, "unauthenticated")),
        }
    })
}

async fn enroll(State(s): State<Shared>, Json(b): Json<EnrollRequest>) -> Response {
    s.with(|f| {
        if let Some(status) = f.fail_with {
            return problem(status, "unavailable");
        }
        if b.join_token != JOIN || b.inventory.as_ref().and_then(|i| i.runtime.as_deref()) != Some("sim") {
            return problem(StatusCode::UNAUTHORIZED, "invalid_join_token");
        }
        f.enrolls += 1;
        let id = HostId::generate();
        f.credential = format!("phc_test_{}", f.enrolls);
        f.host_id = Some(id.clone());
        (StatusCode::CREATED, Json(EnrollResponse { host_id: id, credential: f.credential.clone() })).into_response()
    })
}

async fn inventory(State(s): State<Shared>, headers: HeaderMap, Json(_): Json<HostInventory>) -> Response {
    match gate(&s, &headers) {
        Ok(_) => {
            s.with(|f| f.inventory_puts += 1);
            StatusCode::NO_CONTENT.into_response()
        }
        Err((status, code)) => problem(status, code),
    }
}

async fn heartbeat(State(s): State<Shared>, headers: HeaderMap, Json(_): Json<Heartbeat>) -> Response {
    match gate(&s, &headers) {
        Ok(host_id) => {
            s.with(|f| f.heartbeats += 1);
            Json(HeartbeatAck { host_id, state: HostState::Available, interval_seconds: 1 }).into_response()
        }
        Err((status, code)) => problem(status, code),
    }
}

async fn desired(State(s): State<Shared>, headers: HeaderMap, Query(q): Query<DesiredQuery>) -> Response {
    let host_id = match gate(&s, &headers) {
        Ok(id) => id,
        Err((status, code)) => return problem(status, code),
    };
    let after = q.after.unwrap_or(-1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(30).min(60));
    loop {
        let notified = s.changed.notified();
        let (generation, instances, network) = s.with(|f| (f.generation, f.specs.clone(), f.network.clone()));
        if generation > after || tokio::time::Instant::now() >= deadline {
            s.with(|f| f.polls += 1);
            return Json(DesiredState { host_id, generation, instances, network, volumes: Vec::new() }).into_response();
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn observed(State(s): State<Shared>, headers: HeaderMap, Json(b): Json<ObservedReport>) -> Response {
    match gate(&s, &headers) {
        Ok(_) => {
            let n = b.instances.len() as u32;
            s.with(|f| {
                f.observed.extend(b.instances);
                f.networks.extend(b.network);
            });
            Json(ObservedAck { applied: n, stale: 0, rejected: 0 }).into_response()
        }
        Err((status, code)) => problem(status, code),
    }
}

async fn console(
    State(s): State<Shared>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<ConsoleChunkQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let Err((status, code)) = gate(&s, &headers) {
        return problem(status, code);
    }
    let acked = s.with(|f| {
        let log = f.consoles.entry(id).or_default();
        if q.offset as usize == log.len() {
            log.extend_from_slice(&body);
        }
        log.len() as u64
    });
    Json(ConsoleAck { stream: q.stream, acked }).into_response()
}

async fn start_fake() -> (Shared, String) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/agent/v1/enroll", post(enroll))
        .route("/agent/v1/inventory", put(inventory))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/desired", get(desired))
        .route("/agent/v1/observed", post(observed))
        .route("/agent/v1/instances/{id}/console", post(console))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (shared, url)
}

fn spec(id: &InstanceId, generation: i64, power: PowerState, boot_generation: i64) -> InstanceSpec {
    InstanceSpec {
        instance_id: id.clone(),
        name: "web-1".into(),
        generation,
        power,
        boot_generation,
        runtime_class: RuntimeClass::Vm,
        image: "debian-12".into(),
        claim: Claim {
            vcpus: 2,
            cpu_policy: CpuPolicy::Shared,
            memory_mib: 2048,
            disk_gib: 20,
            numa_nodes: vec![],
            cpus: vec![],
            hugepages: vec![],
            gpus: vec![],
            tcg: false,
            rack_id: None,
        },
        ssh_keys: vec![],
        user_data: None,
        boot: None,
        nics: Vec::new(),
        cloud_init: None,
        volumes: Vec::new(),
        boot_volume: None,
    }
}

/// Waits (up to 20 s) until `cond` holds on the fake.
async fn until(s: &Shared, what: &str, cond: impl Fn(&Fake) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !s.with(|f| cond(f)) {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn saw(f: &Fake, id: &InstanceId, state: ObservedState, generation: i64) -> usize {
    f.observed.iter().filter(|o| &o.instance_id == id && o.state == state && o.generation == generation).count()
}

type Running = (tokio::task::JoinHandle<Result<(), HostError>>, watch::Sender<bool>);

/// The sim runtime with a console log per guest (`{dir}/{id}/console.log`, its directory
/// made by the prepare step, as the qemu runtime does), which the test writes to.
struct ConsoleSim {
    sim: SimRuntime,
    dir: std::path::PathBuf,
}

impl Runtime for ConsoleSim {
    fn name(&self) -> &'static str {
        self.sim.name()
    }
    async fn discover(&self) -> Result<Vec<Discovered>, RuntimeError> {
        self.sim.discover().await
    }
    async fn execute(&self, op: Op) -> Result<(), RuntimeError> {
        if matches!(op.kind, OpKind::Prepare(_)) {
            std::fs::create_dir_all(self.dir.join(op.instance_id.as_str())).expect("guest dir");
        }
        self.sim.execute(op).await
    }
    fn has_consoles(&self) -> bool {
        true
    }
    fn console_log(&self, id: &InstanceId) -> Option<std::path::PathBuf> {
        Some(self.dir.join(id.as_str()).join("console.log"))
    }
}

fn start_host(url: &str, state: &StateDir) -> Running {
    let client = AgentClient::new(url, "plinth-agent-test", None).expect("client");
    let cfg = Arc::new(RunnerConfig {
        join_token: Some(JOIN.into()),
        poll_wait_seconds: 2,
        agent_version: "test".into(),
        state: state.clone(),
        console_poll: plinth_agent::runner::CONSOLE_POLL,
        network: None,
        volumes: None,
    });
    let inventory = profile_for(0);
    let file = state.host_dir("sim-0000").expect("host dir").join("sim-guests.json");
    let sim = SimConfig { delay: Duration::from_millis(20), fail_every: None, seed: 3 };
    let runtime = Arc::new(SimRuntime::new(sim, &inventory, Some(file)).expect("runtime"));
    let setup = HostSetup { index: 0, hostname: "sim-0000".into(), inventory, rediscover: None };
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(run_host(client, cfg, setup, runtime, Arc::new(Progress::default()), rx));
    (handle, tx)
}

#[tokio::test]
async fn a_host_enrols_converges_survives_an_outage_and_restarts_without_enrolling_again() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(dir.path().join("agent")).expect("state");

    let (handle, stop) = start_host(&url, &state);
    until(&fake, "enrolment, inventory and a heartbeat", |f| {
        f.enrolls == 1 && f.inventory_puts == 1 && f.heartbeats >= 1
    })
    .await;
    let cred_path = state.credential_path("sim-0000").expect("path");
    let mode = std::fs::metadata(&cred_path).expect("credential file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // A new running instance: reported starting, then running, at generation 1.
    let id = InstanceId::generate();
    fake.with(|f| {
        f.generation = 1;
        f.specs = vec![spec(&id, 1, PowerState::Running, 1)];
    });
    fake.changed.notify_waiters();
    until(&fake, "running@1", |f| saw(f, &id, ObservedState::Running, 1) == 1).await;
    fake.with(|f| {
        assert!(
            f.observed
                .iter()
                .all(|o| o.generation == 1 && matches!(o.state, ObservedState::Starting | ObservedState::Running))
        );
    });

    // An outage: the server answers 503 for a while; meanwhile the instance is stopped.
    fake.with(|f| {
        f.fail_with = Some(StatusCode::SERVICE_UNAVAILABLE);
        f.generation = 2;
        f.specs = vec![spec(&id, 2, PowerState::Stopped, 1)];
    });
    fake.changed.notify_waiters();
    // Several refused calls (the agent backs off between them) and it is still running.
    until(&fake, "three refused calls in the outage", |f| f.refused >= 3).await;
    assert!(!handle.is_finished(), "the host rides out the outage");
    fake.with(|f| f.fail_with = None);
    until(&fake, "stopped@2 after the outage", |f| saw(f, &id, ObservedState::Stopped, 2) == 1).await;

    // Restart the agent: the credential is reused (no second enrolment), the inventory is
    // sent again and every guest is reported again, without a reboot.
    stop.send(true).expect("stop");
    assert!(handle.await.expect("join").is_ok());
    let starts_before = fake.with(|f| saw(f, &id, ObservedState::Starting, 2));
    let (handle, stop) = start_host(&url, &state);
    until(&fake, "re-report after restart", |f| saw(f, &id, ObservedState::Stopped, 2) == 2).await;
    fake.with(|f| {
        assert_eq!(f.enrolls, 1, "never enrols twice");
        assert_eq!(f.inventory_puts, 2);
        assert_eq!(saw(f, &id, ObservedState::Starting, 2), starts_before);
    });

    // Deleting: absent is reported once, then the guest is forgotten.
    fake.with(|f| {
        f.generation = 3;
        f.specs = vec![spec(&id, 3, PowerState::Absent, 1)];
    });
    fake.changed.notify_waiters();
    until(&fake, "absent@3", |f| saw(f, &id, ObservedState::Absent, 3) == 1).await;
    // Two more long-poll rounds answered with the same state.
    let polls = fake.with(|f| f.polls);
    until(&fake, "two more desired-state rounds", |f| f.polls >= polls + 2).await;
    fake.with(|f| assert_eq!(saw(f, &id, ObservedState::Absent, 3), 1, "absent is reported once"));
    drop(stop);
    let _ = handle.await;
}

#[tokio::test]
async fn console_output_reaches_the_server_as_soon_as_it_is_written() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(dir.path().join("agent")).expect("state");
    let client = AgentClient::new(&url, "plinth-agent-test", None).expect("client");
    // Logs are looked at on a timer only once an hour: output can only get there because
    // the agent is told the log was written.
    let cfg = Arc::new(RunnerConfig {
        join_token: Some(JOIN.into()),
        poll_wait_seconds: 2,
        agent_version: "test".into(),
        state: state.clone(),
        console_poll: Duration::from_secs(3600),
        network: None,
        volumes: None,
    });
    let inventory = profile_for(0);
    let sim = SimConfig { delay: Duration::from_millis(20), fail_every: None, seed: 3 };
    let runtime = Arc::new(ConsoleSim {
        sim: SimRuntime::new(sim, &inventory, None).expect("runtime"),
        dir: dir.path().join("guests"),
    });
    let setup = HostSetup { index: 0, hostname: "sim-0000".into(), inventory, rediscover: None };
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(run_host(client, cfg, setup, runtime.clone(), Arc::new(Progress::default()), rx));

    let id = InstanceId::generate();
    fake.with(|f| {
        f.generation = 1;
        f.specs = vec![spec(&id, 1, PowerState::Running, 1)];
    });
    fake.changed.notify_waiters();
    until(&fake, "running@1", |f| saw(f, &id, ObservedState::Running, 1) == 1).await;
    let log = runtime.console_log(&id).expect("log");
    let shipped = |f: &Fake| String::from_utf8_lossy(f.consoles.get(id.as_str()).map_or(&[][..], |v| v)).into_owned();
    for line in ["[    0.000000] Linux version\n", &format!("PLINTH-GUEST-READY {id}\n")] {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        std::io::Write::write_all(&mut f, line.as_bytes()).expect("write");
        until(&fake, "the line on the server", |f| shipped(f).ends_with(line)).await;
    }
    stop.send(true).expect("stop");
    assert!(handle.await.expect("join").is_ok());
}

#[tokio::test]
async fn a_refused_credential_stops_the_host() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(dir.path().join("agent")).expect("state");
    let (handle, _stop) = start_host(&url, &state);
    until(&fake, "a heartbeat", |f| f.heartbeats >= 1).await;
    fake.with(|f| f.revoked = true);
    let ended = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("the host stops").expect("join");
    match ended {
        Err(HostError::CredentialRefused { hostname, .. }) => assert_eq!(hostname, "sim-0000"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_bad_join_token_is_refused_without_retrying() {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(dir.path().join("agent")).expect("state");
    let client = AgentClient::new(&url, "t", None).expect("client");
    let cfg = Arc::new(RunnerConfig {
        join_token: Some("pjt_wrong".into()),
        poll_wait_seconds: 2,
        agent_version: "test".into(),
        state: state.clone(),
        console_poll: plinth_agent::runner::CONSOLE_POLL,
        network: None,
        volumes: None,
    });
    let inventory = profile_for(1);
    let runtime = Arc::new(SimRuntime::new(SimConfig::default(), &inventory, None).expect("runtime"));
    let setup = HostSetup { index: 1, hostname: "sim-0001".into(), inventory, rediscover: None };
    let (_tx, rx) = watch::channel(false);
    let ended = tokio::time::timeout(
        Duration::from_secs(5),
        run_host(client, cfg, setup, runtime, Arc::new(Progress::default()), rx),
    )
    .await
    .expect("ends at once");
    assert!(matches!(ended, Err(HostError::EnrollRefused { .. })), "{ended:?}");
    assert_eq!(fake.with(|f| f.enrolls), 0);
    assert_eq!(state.load_credential("sim-0001").expect("load"), None);
}

/// A network backend that records the generations it was asked to apply.
#[derive(Default)]
struct RecordingNetwork {
    applied: Mutex<Vec<i64>>,
}

impl plinth_agent::network::HostNetwork for RecordingNetwork {
    fn apply(&self, spec: &plinth_api::HostNetworkSpec) -> plinth_api::ObservedNetwork {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).push(spec.generation);
        plinth_api::ObservedNetwork { generation: spec.generation, vtep: Some("192.0.2.1".into()), nics: vec![] }
    }
}

/// A fake server and one sim host whose network backend is `backend`.
async fn with_network(backend: Arc<dyn plinth_agent::network::HostNetwork>) -> (Shared, tempfile::TempDir, Running) {
    let (fake, url) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = StateDir::open(dir.path().join("agent")).expect("state");
    let client = AgentClient::new(&url, "plinth-agent-test", None).expect("client");
    let cfg = Arc::new(RunnerConfig {
        join_token: Some(JOIN.into()),
        poll_wait_seconds: 2,
        agent_version: "test".into(),
        state,
        console_poll: plinth_agent::runner::CONSOLE_POLL,
        network: Some(plinth_agent::runner::NetworkBackend(backend)),
        volumes: None,
    });
    let inventory = profile_for(0);
    let sim = SimConfig { delay: Duration::from_millis(20), fail_every: None, seed: 3 };
    let runtime = Arc::new(SimRuntime::new(sim, &inventory, None).expect("runtime"));
    let setup = HostSetup { index: 0, hostname: "sim-0000".into(), inventory, rediscover: None };
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(run_host(client, cfg, setup, runtime, Arc::new(Progress::default()), rx));
    (fake, dir, (handle, stop))
}

#[tokio::test]
async fn a_network_spec_is_applied_and_reported() {
    let backend = Arc::new(RecordingNetwork::default());
    let (fake, _dir, (handle, stop)) = with_network(backend.clone()).await;

    until(&fake, "a heartbeat", |f| f.heartbeats >= 1).await;
    assert!(backend.applied.lock().expect("lock").is_empty(), "no spec, no apply");
    fake.with(|f| {
        f.generation = 1;
        f.network = Some(plinth_api::HostNetworkSpec { generation: 7, vpcs: vec![] });
    });
    fake.changed.notify_waiters();
    until(&fake, "the network report of generation 7", |f| f.networks.iter().any(|n| n.generation == 7)).await;
    assert_eq!(backend.applied.lock().expect("lock").first(), Some(&7));
    fake.with(|f| {
        f.generation = 2;
        f.network = Some(plinth_api::HostNetworkSpec { generation: 8, vpcs: vec![] });
    });
    fake.changed.notify_waiters();
    until(&fake, "the network report of generation 8", |f| f.networks.iter().any(|n| n.generation == 8)).await;
    let _ = stop.send(true);
    handle.await.expect("join").expect("host");
}

/// A network backend that keeps surveys: it records what it was asked, in order (and
/// says so to whoever waits on `recorded`), and its surveys wait until the test lets them
/// end.
#[derive(Default)]
struct SurveyingNetwork {
    calls: Mutex<Vec<String>>,
    recorded: watch::Sender<usize>,
    release: (Mutex<bool>, std::sync::Condvar),
}

impl SurveyingNetwork {
    fn record(&self, what: String) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        self.recorded.send_modify(|n| *n += 1);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Waits (at most `within`) until the calls so far satisfy `cond`.
    async fn until(&self, what: &str, within: Duration, cond: impl Fn(&[String]) -> bool) {
        let mut rx = self.recorded.subscribe();
        let met = tokio::time::timeout(within, rx.wait_for(|_| cond(&self.calls()))).await;
        assert!(met.is_ok(), "timed out waiting for {what}: {:?}", self.calls());
    }
}

impl plinth_agent::network::HostNetwork for SurveyingNetwork {
    fn apply(&self, spec: &plinth_api::HostNetworkSpec) -> plinth_api::ObservedNetwork {
        self.record(format!("verify {}", spec.generation));
        plinth_api::ObservedNetwork { generation: spec.generation, vtep: Some("192.0.2.1".into()), nics: vec![] }
    }
    fn apply_change(&self, spec: &plinth_api::HostNetworkSpec) -> plinth_api::ObservedNetwork {
        self.record(format!("change {}", spec.generation));
        plinth_api::ObservedNetwork { generation: spec.generation, vtep: Some("192.0.2.1".into()), nics: vec![] }
    }
    fn survey(&self, _spec: &plinth_api::HostNetworkSpec) -> bool {
        self.record("survey begins".into());
        let (lock, cv) = &self.release;
        let mut released = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*released {
            released = cv.wait(released).unwrap_or_else(|e| e.into_inner());
        }
        self.record("survey ends".into());
        true
    }
}

#[tokio::test]
async fn a_verification_is_surveyed_first_and_changes_go_on_beside_the_survey() {
    let backend = Arc::new(SurveyingNetwork::default());
    let (fake, _dir, (handle, stop)) = with_network(backend.clone()).await;

    let spec = |generation| plinth_api::HostNetworkSpec { generation, vpcs: vec![] };
    fake.with(|f| {
        f.generation = 1;
        f.network = Some(spec(7));
    });
    fake.changed.notify_waiters();
    until(&fake, "the network report of generation 7", |f| f.networks.iter().any(|n| n.generation == 7)).await;
    assert_eq!(backend.calls(), ["verify 7"], "the first spec is verified, reading for itself");
    // NETWORK_REAPPLY (10 s) without a change: the verification due begins with a survey.
    backend.until("a survey", Duration::from_secs(30), |c| c.iter().any(|x| x == "survey begins")).await;
    // A change arriving while the survey runs is applied and reported, the survey still
    // running (it has not ended: the test holds it).
    fake.with(|f| {
        f.generation = 2;
        f.network = Some(spec(8));
    });
    fake.changed.notify_waiters();
    until(&fake, "the network report of generation 8", |f| f.networks.iter().any(|n| n.generation == 8)).await;
    assert_eq!(backend.calls(), ["verify 7", "survey begins", "change 8"], "the change did not wait for the survey");
    // Once the survey is in, the verification follows, of the newest spec.
    *backend.release.0.lock().expect("lock") = true;
    backend.release.1.notify_all();
    backend.until("a verification after the survey", Duration::from_secs(10), |c| c.len() >= 5).await;
    assert_eq!(backend.calls()[3..], ["survey ends", "verify 8"]);
    let _ = stop.send(true);
    handle.await.expect("join").expect("host");
}
