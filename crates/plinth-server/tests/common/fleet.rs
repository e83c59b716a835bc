//! Compute fixtures: enrolled hosts with synthetic inventories, shapes, a tenant project,
//! and a scripted test agent that speaks the real agent protocol (long-poll desired state,
//! report observed state, heartbeat) and converges at once, or, when its network switch
//! says so, reports one component of every NIC not applied (or failed).

use super::{TestServer, id};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An enrolled host and its agent credential.
#[derive(Clone, Debug)]
pub struct TestHost {
    pub id: String,
    pub credential: String,
}

/// A one-NUMA-node inventory with `cpus` CPUs, `memory_mib` and a 1 TiB disk.
pub fn inventory(cpus: u32, memory_mib: u64) -> Value {
    json!({
        "cpu": { "model": "Test CPU", "vendor": "test", "sockets": 1, "cores": cpus, "threads": 1, "flags": ["avx2"] },
        "numa_nodes": [{ "id": 0, "cpus": (0..cpus).collect::<Vec<_>>(), "memory_mib": memory_mib }],
        "memory_mib": memory_mib,
        "disks": [{ "name": "vda", "size_bytes": 1u64 << 40, "rotational": false }],
        "virtualization": { "kvm": { "status": "usable" } },
        "runtime": "test"
    })
}

impl TestServer {
    /// Enrols a host through a join token, reports `inventory`, and sets its scheduling
    /// (allocation ratio 1.0 so capacity is exact) and `traits` as the operator.
    pub async fn enroll_host(&self, name: &str, inv: Value, traits: &[&str]) -> TestHost {
        let jt = self.post("/v1/host-join-tokens").token(&self.operator).json(&json!({})).send().await.ok(201);
        let secret = jt["secret"].as_str().expect("join secret").to_string();
        let e =
            self.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": name })).send().await.ok(201);
        let host = TestHost {
            id: e["host_id"].as_str().expect("host id").to_string(),
            credential: e["credential"].as_str().expect("credential").to_string(),
        };
        self.call(reqwest::Method::PUT, "/agent/v1/inventory").token(&host.credential).json(&inv).send().await.ok(204);
        self.patch(&format!("/v1/hosts/{}", host.id))
            .token(&self.operator)
            .json(&json!({ "traits": traits, "scheduling": { "cpu_allocation_ratio": 1.0 } }))
            .send()
            .await
            .ok(200);
        let h = self.get(&format!("/v1/hosts/{}", host.id)).token(&self.operator).send().await.ok(200);
        assert_eq!(h["state"], "available", "a host is available after its first inventory report");
        host
    }

    /// A shared-CPU VM shape.
    pub async fn shape(&self, name: &str, vcpus: u32, memory_mib: u64) -> Value {
        self.post("/v1/shapes")
            .token(&self.operator)
            .json(&json!({ "name": name, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": 10 }))
            .send()
            .await
            .ok(201)
    }

    /// A tenant with an admin and one project: (admin token, project id).
    pub async fn tenant_project(&self, name: &str) -> (String, String) {
        let admin = self.tenant_with_admin(name).await;
        let p = self.create_project(&admin.secret, None, "web").await;
        (admin.secret, id(&p))
    }

    /// `POST /v1/instances` of the public image `debian-12` (registered on first use) and
    /// its raw answer.
    pub async fn create_instance(&self, token: &str, project: &str, name: &str, shape: &str) -> super::Resp {
        self.public_image("debian-12").await;
        self.post("/v1/instances")
            .token(token)
            .json(&json!({ "project_id": project, "name": name, "shape": shape, "image": "debian-12" }))
            .send()
            .await
    }

    /// Waits (long-polling) until the operation is final and returns it.
    pub async fn wait_op(&self, token: &str, op_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let op = self.get(&format!("/v1/operations/{op_id}?wait=10s")).token(token).send().await.ok(200);
            let s = op["status"].as_str().unwrap_or("");
            if matches!(s, "succeeded" | "failed" | "cancelled") {
                return op;
            }
            assert!(tokio::time::Instant::now() < deadline, "operation {op_id} not final after 60 s: {op}");
        }
    }

    /// Polls `path` until `pred` holds on the body, or panics after 60 s.
    pub async fn wait_until(&self, token: &str, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.get(path).token(token).send().await.ok(200);
            if pred(&v) {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: not reached after 60 s; last {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How the scripted agent treats boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boots {
    Succeed,
    Fail,
}

/// What the scripted agent's network backend reports for every NIC of its host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetApply {
    /// Every component applied: the NICs are `ready`.
    All,
    /// `filter` not applied yet (no error): the NICs stay `bound`.
    WithholdFilter,
    /// `filter` not applied, with the agent's error: the NICs are `failed`.
    FailFilter,
}

/// The detail a [`NetApply::FailFilter`] agent gives for `filter`.
pub const FILTER_ERROR: &str = "nft: test agent refuses the ruleset";

/// A switch, shared with a running [`TestAgent`], that says what its network reports.
#[derive(Clone, Debug)]
pub struct NetSwitch(Arc<AtomicU8>);

impl NetSwitch {
    pub fn new(mode: NetApply) -> NetSwitch {
        let s = NetSwitch(Arc::new(AtomicU8::new(0)));
        s.set(mode);
        s
    }
    /// From now on the agent reports `mode` (again, even for a network it already reported).
    pub fn set(&self, mode: NetApply) {
        self.0.store(mode as u8, Ordering::SeqCst);
    }
    pub fn get(&self) -> NetApply {
        match self.0.load(Ordering::SeqCst) {
            x if x == NetApply::WithholdFilter as u8 => NetApply::WithholdFilter,
            x if x == NetApply::FailFilter as u8 => NetApply::FailFilter,
            _ => NetApply::All,
        }
    }
}

/// One instance spec as the scripted agent received it in its desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenSpec {
    pub instance_id: String,
    pub generation: i64,
    pub power: String,
}

/// A scripted agent for one host: heartbeats, long-polls the desired state and reports
/// each spec as reached at once. Dropping it (or `stop`) silences the host.
pub struct TestAgent {
    alive: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    seen: Arc<Mutex<Vec<SeenSpec>>>,
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        self.task.abort();
    }
}

/// What an agent whose data path applies everything reports for a desired state's
/// network: every component of every local NIC applied, at the spec's generation (None:
/// the desired state carries no network).
pub fn network_report(desired: &Value) -> Option<Value> {
    network_report_as(desired, NetApply::All)
}

/// What an agent reports for a desired state's network when its data path does `mode`.
pub fn network_report_as(desired: &Value, mode: NetApply) -> Option<Value> {
    let net = desired["network"].as_object()?;
    let all = ["tap", "bridge_port", "fdb", "filter", "dhcp", "nat"];
    let component = |c: &str| match (c, mode) {
        ("filter", NetApply::WithholdFilter) => json!({ "component": c, "applied": false }),
        ("filter", NetApply::FailFilter) => json!({ "component": c, "applied": false, "detail": FILTER_ERROR }),
        _ => json!({ "component": c, "applied": true }),
    };
    let nics: Vec<Value> = net["vpcs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["nics"].as_array().cloned().unwrap_or_default())
        .map(|n| {
            json!({ "nic_id": n["nic_id"], "filter_generation": n["filter_generation"],
                "components": all.iter().map(|c| component(c)).collect::<Vec<_>>() })
        })
        .collect();
    Some(json!({ "generation": net["generation"], "nics": nics }))
}

impl TestServer {
    /// Reports, as `host`'s agent, every NIC the host must hold applied, once one of
    /// `instance`'s NICs is among them (the start of an instance waits for that).
    pub async fn report_nics_ready(&self, host: &TestHost, instance: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.get("/agent/v1/desired?wait=0").token(&host.credential).send().await.ok(200);
            let placed = d["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["instance_id"] == instance && i["nics"].as_array().is_some_and(|n| !n.is_empty()));
            if placed && let Some(net) = network_report(&d) {
                let body = json!({ "instances": [], "network": net });
                self.post("/agent/v1/observed").token(&host.credential).json(&body).send().await.ok(200);
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the instance's NICs never reached its host: {d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl TestAgent {
    /// An agent whose network applies everything.
    pub fn start(base: &str, host: &TestHost, boots: Boots) -> TestAgent {
        Self::start_with_network(base, host, boots, NetSwitch::new(NetApply::All))
    }

    /// An agent whose network reports what `net` says at each report; flipping the switch
    /// makes it report the network again.
    pub fn start_with_network(base: &str, host: &TestHost, boots: Boots, net: NetSwitch) -> TestAgent {
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let seen: Arc<Mutex<Vec<SeenSpec>>> = Arc::default();
        let log = seen.clone();
        let base = base.to_string();
        let cred = host.credential.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut after = -1i64;
            let mut reported: BTreeMap<String, (i64, String)> = BTreeMap::new();
            let mut net_reported: Option<(i64, NetApply)> = None;
            while flag.load(Ordering::SeqCst) {
                let _ =
                    http.post(format!("{base}/agent/v1/heartbeat")).bearer_auth(&cred).json(&json!({})).send().await;
                let Ok(r) =
                    http.get(format!("{base}/agent/v1/desired?after={after}&wait=1")).bearer_auth(&cred).send().await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(d) = r.json::<Value>().await else { continue };
                after = d["generation"].as_i64().unwrap_or(after);
                let mut out = vec![];
                for spec in d["instances"].as_array().cloned().unwrap_or_default() {
                    let g = spec["generation"].as_i64().unwrap_or(0);
                    let power = spec["power"].as_str().unwrap_or("");
                    let state = match (power, boots) {
                        ("running", Boots::Fail) => "failed",
                        ("running", _) => "running",
                        ("stopped", _) => "stopped",
                        _ => "absent",
                    };
                    let iid = spec["instance_id"].as_str().unwrap_or("").to_string();
                    let s = SeenSpec { instance_id: iid.clone(), generation: g, power: power.to_string() };
                    {
                        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                        if !l.contains(&s) {
                            l.push(s);
                        }
                    }
                    if reported.get(&iid) != Some(&(g, state.to_string())) {
                        reported.insert(iid.clone(), (g, state.to_string()));
                        // Like the real agent, a report that ends a step says how it went.
                        let timings = json!([{ "phase": format!("to-{state}"), "started_at": chrono::Utc::now(), "took_ms": 1.5 }]);
                        out.push(json!({
                            "instance_id": iid, "generation": g, "state": state, "detail": "test agent", "timings": timings
                        }));
                    }
                }
                // Like the simulated hosts' network backend: every component of every local
                // NIC applied, at the spec's generation (unless the switch says otherwise).
                let mode = net.get();
                let mut body = json!({ "instances": out });
                if let Some(report) = network_report_as(&d, mode) {
                    let now = (report["generation"].as_i64().unwrap_or(0), mode);
                    if net_reported != Some(now) {
                        net_reported = Some(now);
                        body["network"] = report;
                    }
                }
                if !out.is_empty() || body.get("network").is_some() {
                    let _ = http.post(format!("{base}/agent/v1/observed")).bearer_auth(&cred).json(&body).send().await;
                }
            }
        });
        TestAgent { alive, task, seen }
    }

    /// Every instance spec this agent was given (each distinct one once, in order).
    pub fn seen(&self) -> Vec<SeenSpec> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this agent was ever told to run `instance` (at any generation).
    pub fn told_to_run(&self, instance: &str) -> bool {
        self.seen().iter().any(|s| s.instance_id == instance && s.power == "running")
    }
}
