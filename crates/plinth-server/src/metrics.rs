//! The `/metrics` families (OpenMetrics text from `prometheus-client`) and the helpers that
//! move them, so the code that does the work records it with one call:
//!
//! - counted in this process as things happen: HTTP requests and their latency
//!   ([`crate::observe`]), placement decisions and refusals by constraint
//!   ([`crate::scheduler`]), saga steps, failures and outcomes ([`crate::saga`]),
//!   background-task runs and their duration ([`crate::reconcilers`]), and usage records
//!   written (tallied by the store at commit);
//! - read from the database at each scrape ([`Metrics::render`]): instances by state and
//!   runtime class, hosts by state, how long ago each host's agent last reported, and each
//!   volume pool's capacity, free, provisioned and allocated bytes. Every
//!   replica reports the same truth for these, and a restart loses nothing.
//!
//! Labels are bounded: routes are templates, constraints, saga kinds and steps, tasks and
//! states are fixed lists; only the report lag and the pool gauges carry a host id. No
//! instance id is a label.

use plinth_domain::placement::NoValidHost;
use plinth_store::{FleetCounts, Store, StoreError};
use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// HTTP latency bucket bounds, seconds.
const HTTP_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Background-task duration bucket bounds, seconds.
const TASK_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConstraintLabels {
    constraint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepFailureLabels {
    kind: String,
    step: String,
    /// `do` (the step itself) or `undo`.
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SagaLabels {
    kind: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskRunLabels {
    task: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    state: String,
    runtime: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeterLabels {
    meter: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

fn task_histogram() -> Histogram {
    Histogram::new(TASK_BUCKETS)
}

/// The registry of this process's counters and the handles that move them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<HttpLabels>,
    placements: Family<OutcomeLabels, Counter>,
    refusals: Family<ConstraintLabels, Counter>,
    saga_steps: Family<StepLabels, Counter>,
    saga_failures: Family<StepFailureLabels, Counter>,
    sagas: Family<SagaLabels, Counter>,
    task_runs: Family<TaskRunLabels, Counter>,
    task_duration: HistogramFamily<TaskLabels>,
    /// One fleet query at a time: `/metrics` is unauthenticated, and a flood of scrapes
    /// must not take every read connection from the API.
    fleet_gate: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("plinth");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by route template, method and status",
            http_requests.clone(),
        );
        let http_duration = HistogramFamily::new_with_constructor(http_histogram as fn() -> Histogram);
        // Histograms carry their unit in the name but no `# UNIT` line: some strict
        // OpenMetrics parsers refuse units on histograms.
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route template, method and status",
            http_duration.clone(),
        );
        let placements = Family::default();
        registry.register(
            "placement_decisions",
            "Placement decisions (creates, resizes, moves), by outcome: placed or refused",
            placements.clone(),
        );
        let refusals = Family::default();
        registry.register(
            "placement_refusals",
            "Refused placements, by each constraint that removed at least one host (no_hosts: none enrolled)",
            refusals.clone(),
        );
        let saga_steps = Family::default();
        registry.register("saga_steps", "Saga steps completed, by saga kind and step", saga_steps.clone());
        let saga_failures = Family::default();
        registry.register(
            "saga_step_failures",
            "Saga step attempts that failed, by saga kind, step and phase (do or undo)",
            saga_failures.clone(),
        );
        let sagas = Family::default();
        registry.register("sagas_finished", "Sagas finished, by kind and final status", sagas.clone());
        let task_runs = Family::default();
        registry.register(
            "background_task_runs",
            "Background task runs, by task and outcome (ok or error)",
            task_runs.clone(),
        );
        let task_duration = HistogramFamily::new_with_constructor(task_histogram as fn() -> Histogram);
        registry.register(
            "background_task_duration_seconds",
            "Time one background task run took, by task (the billing run is task billing)",
            task_duration.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            placements,
            refusals,
            saga_steps,
            saga_failures,
            sagas,
            task_runs,
            task_duration,
            fleet_gate: tokio::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Counts one HTTP request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let labels = HttpLabels { route: route.to_string(), method: method.to_string(), status };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts a placement that found a host.
    pub fn placed(&self) {
        self.placements.get_or_create(&OutcomeLabels { outcome: "placed" }).inc();
    }

    /// Counts a refused placement under every constraint that removed a host.
    pub fn refused(&self, nv: &NoValidHost) {
        self.placements.get_or_create(&OutcomeLabels { outcome: "refused" }).inc();
        if nv.removed.is_empty() {
            self.refusals.get_or_create(&ConstraintLabels { constraint: "no_hosts" }).inc();
        }
        for constraint in nv.removed.keys() {
            self.refusals.get_or_create(&ConstraintLabels { constraint }).inc();
        }
    }

    /// Counts a completed saga step.
    pub fn saga_step(&self, kind: &str, step: &str) {
        self.saga_steps.get_or_create(&StepLabels { kind: kind.to_string(), step: step.to_string() }).inc();
    }

    /// Counts a failed attempt at a step (`undo`: at its undo).
    pub fn saga_step_failed(&self, kind: &str, step: &str, undo: bool) {
        let phase = if undo { "undo" } else { "do" };
        self.saga_failures
            .get_or_create(&StepFailureLabels { kind: kind.to_string(), step: step.to_string(), phase })
            .inc();
    }

    /// Counts a saga that reached its final status.
    pub fn saga_finished(&self, kind: &str, status: &'static str) {
        self.sagas.get_or_create(&SagaLabels { kind: kind.to_string(), status }).inc();
    }

    /// Counts one background task run and its duration.
    pub fn background_task(&self, task: &str, took: Duration, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.task_runs.get_or_create(&TaskRunLabels { task: task.to_string(), outcome }).inc();
        self.task_duration.get_or_create(&TaskLabels { task: task.to_string() }).observe(took.as_secs_f64());
    }

    /// The exposition: this process's counters, then what the store knows now (the fleet
    /// read at this scrape, the usage records this process wrote). When the database does
    /// not answer, the fleet series are left out and `plinth_store_up` says 0.
    pub async fn render(&self, store: &Store) -> String {
        let mut out = String::new();
        let _ = text::encode_registry(&mut out, &self.registry);
        let fleet = {
            let _one_at_a_time = self.fleet_gate.lock().await;
            store.fleet_counts().await
        };
        let _ = text::encode_registry(&mut out, &scrape_registry(store, fleet));
        let _ = text::encode_eof(&mut out);
        out
    }
}

/// One figure of a volume pool, as a gauge's value.
type PoolFigure = fn(&plinth_store::PoolCounts) -> i64;

/// The series computed at this scrape, from the store's tally and `fleet`.
fn scrape_registry(store: &Store, fleet: Result<FleetCounts, StoreError>) -> Registry {
    let mut reg = Registry::with_prefix("plinth");
    let ledger: Family<MeterLabels, Counter> = Family::default();
    for (meter, n) in store.ledger_records_written() {
        ledger.get_or_create(&MeterLabels { meter: meter.as_str() }).inc_by(n);
    }
    reg.register("ledger_records_written", "Usage records this server wrote to the ledger, by meter", ledger);

    let up: Gauge = Gauge::default();
    reg.register("store_up", "1 when the database answered this scrape's fleet query, else 0", up.clone());
    let fleet = match fleet {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("metrics: the fleet query failed: {e}");
            return reg;
        }
    };
    up.set(1);

    let instances: Family<InstanceLabels, Gauge> = Family::default();
    for (state, runtime, n) in fleet.instances {
        instances.get_or_create(&InstanceLabels { state, runtime }).set(n);
    }
    reg.register("instances", "Instances not deleted, by state and runtime class", instances);

    let hosts: Family<StateLabels, Gauge> = Family::default();
    let lag: Family<HostLabels, Gauge<f64, AtomicU64>> = Family::default();
    let now = plinth_store::now_micros();
    for (id, state, last) in fleet.hosts {
        hosts.get_or_create(&StateLabels { state: state.clone() }).inc();
        if let Some(at) = last.filter(|_| state != "retired") {
            lag.get_or_create(&HostLabels { host: id }).set((now - at).max(0) as f64 / 1e6);
        }
    }
    reg.register("hosts", "Hosts, by state", hosts);
    let pool_families: [(&str, &str, PoolFigure); 4] = [
        ("volume_pool_capacity", "Each volume pool's capacity, as its host last reported it", |c| c.capacity),
        ("volume_pool_free", "Each volume pool's free space, as its host last reported it", |c| c.free),
        ("volume_pool_provisioned", "GiB promised to each pool's volumes not yet wiped, in bytes", |c| c.provisioned),
        ("volume_pool_allocated", "Bytes each pool's volumes take on disk, as last reported", |c| c.allocated),
    ];
    for (name, help, get) in pool_families {
        let family: Family<HostLabels, Gauge> = Family::default();
        for (host, c) in &fleet.pools {
            family.get_or_create(&HostLabels { host: host.clone() }).set(get(c));
        }
        reg.register_with_unit(name, help, Unit::Bytes, family);
    }
    reg.register_with_unit(
        "agent_report_lag",
        "Time since each host's agent last reported (heartbeat or inventory), for hosts not retired that reported once",
        Unit::Seconds,
        lag,
    );
    reg
}
