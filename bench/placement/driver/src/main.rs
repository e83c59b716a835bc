//! Plinth's side of `bench/placement`: the dataset of `bench/placement/peer/DATASET.md`
//! (hosts by `i % 10`, requests by `k % 20`) placed until full, either in-process through
//! `plinth_domain::placement` or through a running server's `POST /v1/instances`.
//! Prints one JSON object on its last line.
//!
//!   plinth-bench-placement inprocess --hosts N [--max-decisions M]
//!   plinth-bench-placement http --url U --token T --hosts N [--concurrency C] [--max-decisions M] [--seconds S]

use plinth_api::*;
use plinth_domain::placement::{self, HostView, Policy, Request, Weigh};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request flavor of the dataset.
struct Flavor {
    name: &'static str,
    vcpus: u32,
    policy: CpuPolicy,
    memory_mib: u64,
    disk_gib: u64,
    gpu: Option<(&'static str, u32)>,
    traits: &'static [&'static str],
}

const FLAVORS: [Flavor; 6] = [
    Flavor { name: "small", vcpus: 2, policy: CpuPolicy::Shared, memory_mib: 4096, disk_gib: 20, gpu: None, traits: &["HW_CPU_X86_AVX2"] },
    Flavor { name: "medium", vcpus: 8, policy: CpuPolicy::Shared, memory_mib: 32768, disk_gib: 80, gpu: None, traits: &["HW_CPU_X86_AVX2"] },
    Flavor { name: "large", vcpus: 32, policy: CpuPolicy::Shared, memory_mib: 131072, disk_gib: 200, gpu: None, traits: &["HW_CPU_X86_AVX2"] },
    Flavor { name: "pinned", vcpus: 8, policy: CpuPolicy::Dedicated, memory_mib: 32768, disk_gib: 80, gpu: None, traits: &["HW_CPU_X86_AVX2", "CUSTOM_PINNED"] },
    Flavor { name: "gpu-a100", vcpus: 16, policy: CpuPolicy::Shared, memory_mib: 131072, disk_gib: 200, gpu: Some(("nvidia-a100-80gb", 1)), traits: &["HW_CPU_X86_AVX2", "CUSTOM_GPU"] },
    Flavor { name: "gpu-h100", vcpus: 16, policy: CpuPolicy::Shared, memory_mib: 131072, disk_gib: 200, gpu: Some(("nvidia-h100-80gb", 2)), traits: &["HW_CPU_X86_AVX2", "CUSTOM_GPU"] },
];

/// The flavor of request `k`.
fn flavor(k: u64) -> &'static Flavor {
    match k % 20 {
        0..=9 => &FLAVORS[0],
        10..=14 => &FLAVORS[1],
        15..=16 => &FLAVORS[2],
        17 => &FLAVORS[3],
        18 => &FLAVORS[4],
        _ => &FLAVORS[5],
    }
}

/// The traits of host `i`.
fn host_traits(i: u32) -> Vec<String> {
    let mut t = vec!["HW_CPU_X86_AVX2".to_string()];
    match i % 10 {
        6 | 7 => t.push("CUSTOM_PINNED".into()),
        8 | 9 => t.push("CUSTOM_GPU".into()),
        _ => {}
    }
    t
}

fn host(i: u32) -> Host {
    let now = chrono::Utc::now();
    Host {
        id: HostId(format!("hst_bench{i:05}")),
        name: format!("bench-host-{i:05}"),
        site_id: None,
        rack_id: None,
        state: HostState::Available,
        health: HostHealth::Ok,
        ownership: Ownership::Shared,
        labels: BTreeMap::new(),
        traits: host_traits(i),
        inventory: plinth_agent::sim::inventory::profile_for(i),
        scheduling: HostScheduling {
            dedicated_cpus: plinth_agent::sim::inventory::dedicated_cpus_for(i),
            ..HostScheduling::default()
        },
        bmc: None,
        last_seen_at: None,
        fenced_by: None,
        fenced_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn request(f: &Flavor) -> Request {
    Request {
        vcpus: f.vcpus,
        memory_mib: f.memory_mib,
        disk_gib: f.disk_gib,
        cpu_policy: f.policy,
        hugepages: Hugepages::None,
        gpu: f.gpu.map(|(class, count)| GpuRequest { class: class.into(), count }),
        runtime: RuntimeClass::Vm,
        tenant_id: "tnt_bench".into(),
        require_dedicated_host: false,
        required_traits: f.traits.iter().map(|t| t.to_string()).collect(),
        forbidden_traits: vec![],
        group: None,
        avoid_hosts: BTreeSet::new(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn report(mode: &str, hosts: u32, placed: u64, refused: u64, secs: f64, mut lat: Vec<f64>, extra: Value) {
    lat.sort_by(|a, b| a.total_cmp(b));
    let decisions = placed + refused;
    let mut v = json!({
        "mode": mode, "hosts": hosts, "decisions": decisions, "placed": placed, "refused": refused,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "decisions_per_s": (decisions as f64 / secs.max(1e-9)).round(),
        "p50_ms": (percentile(&lat, 0.5) * 1000.0).round() / 1000.0,
        "p99_ms": (percentile(&lat, 0.99) * 1000.0).round() / 1000.0,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{v}");
}

/// Places the stream in-process until every flavor is refused (or `max` decisions).
fn inprocess(hosts: u32, max: u64) {
    let t0 = Instant::now();
    let mut views: Vec<HostView> = (0..hosts).map(|i| HostView::from_host(&host(i))).collect();
    let build = t0.elapsed().as_secs_f64();
    let reqs: Vec<Request> = FLAVORS.iter().map(request).collect();
    let policy = Policy { weigh: Weigh::Pack, randomize_top: 1, seed: 0 };
    let mut refused_flavors = BTreeSet::new();
    let (mut placed, mut refused) = (0u64, 0u64);
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut k = 0u64;
    while refused_flavors.len() < FLAVORS.len() && placed + refused < max {
        let f = flavor(k);
        k += 1;
        if refused_flavors.contains(f.name) {
            continue;
        }
        let idx = FLAVORS.iter().position(|x| x.name == f.name).unwrap_or(0);
        let t = Instant::now();
        match placement::place(&reqs[idx], &views, &policy) {
            Ok((i, claim)) => {
                views[i].add(&claim);
                placed += 1;
            }
            Err(_) => {
                refused += 1;
                refused_flavors.insert(f.name);
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    report("in-process", hosts, placed, refused, start.elapsed().as_secs_f64(), lat, json!({ "build_s": build }));
}

async fn call(http: &reqwest::Client, m: reqwest::Method, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = http.request(m, url).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    match rb.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "error": e.to_string() })),
    }
}

/// Enrols `hosts` hosts with the dataset's inventories (agent protocol) and sets their
/// traits and dedicated CPUs (operator API), with `c` requests in flight.
async fn load(http: &reqwest::Client, url: &str, token: &str, hosts: u32, c: usize) -> f64 {
    use reqwest::Method as M;
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = vec![];
    for _ in 0..c {
        let (http, url, token, next) = (http.clone(), url.to_string(), token.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= hosts as u64 {
                    return;
                }
                let i = i as u32;
                let (_, jt) = call(&http, M::POST, format!("{url}/v1/host-join-tokens"), &token, Some(json!({}))).await;
                let h = host(i);
                let (s, e) = call(&http, M::POST, format!("{url}/agent/v1/enroll"), "", Some(json!({
                    "join_token": jt["secret"], "hostname": h.name }))).await;
                assert_eq!(s, 201, "enrol {}: {e}", h.name);
                let cred = e["credential"].as_str().unwrap_or("").to_string();
                let id = e["host_id"].as_str().unwrap_or("").to_string();
                let (s, _) = call(&http, M::PUT, format!("{url}/agent/v1/inventory"), &cred, Some(json!(h.inventory))).await;
                assert_eq!(s, 204);
                let (s, v) = call(&http, M::PATCH, format!("{url}/v1/hosts/{id}"), &token, Some(json!({
                    "traits": h.traits, "scheduling": h.scheduling }))).await;
                assert_eq!(s, 200, "{v}");
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    t0.elapsed().as_secs_f64()
}

async fn http_mode(url: &str, token: &str, hosts: u32, c: usize, max: u64, seconds: f64) {
    use reqwest::Method as M;
    let http = reqwest::Client::builder().pool_max_idle_per_host(c * 2).build().expect("client");
    let load_s = load(&http, url, token, hosts, 8).await;
    eprintln!("bench/placement: loaded {hosts} hosts over HTTP in {load_s:.1} s");
    for f in &FLAVORS {
        let mut b = json!({ "name": format!("b.{}", f.name), "vcpus": f.vcpus, "memory_mib": f.memory_mib,
            "disk_gib": f.disk_gib, "cpu_policy": f.policy });
        if let Some((class, count)) = f.gpu {
            b["gpu"] = json!({ "class": class, "count": count });
        }
        let (s, v) = call(&http, M::POST, format!("{url}/v1/shapes"), token, Some(b)).await;
        assert!(s == 201 || s == 409, "{v}");
    }
    let (_, t) = call(&http, M::POST, format!("{url}/v1/tenants"), token, Some(json!({ "name": format!("bench-{}", std::process::id()) }))).await;
    let (_, p) = call(&http, M::POST, format!("{url}/v1/projects"), token, Some(json!({ "name": "bench", "tenant_id": t["id"] }))).await;
    assert!(p["id"].is_string(), "could not make the bench project: {p}");
    let project = p["id"].as_str().unwrap_or("").to_string();
    // Instances name an available image: a tiny public raw disk, uploaded once.
    let (s, img) = call(&http, M::POST, format!("{url}/v1/images"), token,
        Some(json!({ "name": "bench", "boot": "disk", "files": { "disk": {} } }))).await;
    if s == 201 {
        let id = img["id"].as_str().unwrap_or("");
        let r = http.put(format!("{url}/v1/images/{id}/files/disk")).bearer_auth(token).body(vec![0u8; 64 * 1024]).send().await;
        let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
        assert_eq!(status, 200, "could not upload the bench image: {r:?}");
    } else {
        assert_eq!(s, 409, "could not register the bench image: {img}");
    }
    let next = Arc::new(AtomicU64::new(0));
    let refused_flavors = Arc::new(Mutex::new(BTreeSet::<&'static str>::new()));
    let stats = Arc::new(Mutex::new((0u64, 0u64, 0u64, Vec::<f64>::new())));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = vec![];
    for _ in 0..c {
        let (http, url, token, project) = (http.clone(), url.to_string(), token.to_string(), project.clone());
        let (next, refused_flavors, stats) = (next.clone(), refused_flavors.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if Instant::now() > deadline || refused_flavors.lock().unwrap().len() >= FLAVORS.len() {
                    return;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= max {
                    return;
                }
                let f = flavor(k);
                if refused_flavors.lock().unwrap().contains(f.name) {
                    continue;
                }
                let body = json!({ "project_id": project, "name": format!("r{k}"), "shape": format!("b.{}", f.name),
                    "image": "bench", "required_traits": f.traits });
                let t = Instant::now();
                let (s, v) = call(&http, M::POST, format!("{url}/v1/instances"), &token, Some(body)).await;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let mut st = stats.lock().unwrap();
                match s {
                    202 => st.0 += 1,
                    409 if v["code"] == "no_capacity" || v["code"] == "no_valid_host" => {
                        st.1 += 1;
                        refused_flavors.lock().unwrap().insert(f.name);
                    }
                    _ => {
                        st.2 += 1;
                        if st.2 <= 3 {
                            eprintln!("bench/placement: unexpected {s}: {v}");
                        }
                    }
                }
                st.3.push(ms);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let st = stats.lock().unwrap();
    report("http", hosts, st.0, st.1 + st.2, secs, st.3.clone(), json!({ "failed": st.2, "concurrency": c, "load_s": load_s }));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let hosts: u32 = arg(&args, "--hosts").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let max: u64 = arg(&args, "--max-decisions").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
    match args.get(1).map(String::as_str) {
        Some("inprocess") => inprocess(hosts, max),
        Some("http") => {
            let url = arg(&args, "--url").expect("--url");
            let token = arg(&args, "--token").expect("--token");
            let c: usize = arg(&args, "--concurrency").and_then(|v| v.parse().ok()).unwrap_or(8);
            let seconds: f64 = arg(&args, "--seconds").and_then(|v| v.parse().ok()).unwrap_or(60.0);
            http_mode(&url, &token, hosts, c, max, seconds).await;
        }
        _ => {
            eprintln!("usage: plinth-bench-placement inprocess|http --hosts N …");
            std::process::exit(2);
        }
    }
}
