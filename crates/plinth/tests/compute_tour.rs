//! Compute through the real binary: two `plinth server` processes on one PostgreSQL
//! racing for the same capacity, and `plinth up` with a `plinth agent --runtime sim`
//! driven by the CLI alone (an image uploaded by `plinth image create`, create with an
//! anti-affinity group, drain, fail and fence).

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `plinth server` and returns it with its base URL (read from its log).
fn server(dir: &Path, name: &str, db: &str) -> (Proc, String) {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(BIN)
        .args(["server", "--database-url", db, "--listen", "127.0.0.1:0", "--operator-token-file"])
        .arg(dir.join("operator-token"))
        // Replicas share one blob directory.
        .arg("--blob-dir")
        .arg(dir.join("blobs"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("spawn plinth server");
    let url = wait_for(&format!("{name} to listen"), Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.split_whitespace().find(|w| w.starts_with("https://127.0.0.1:")).map(str::to_string)
    });
    (Proc(child), url)
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Enrols a 50-CPU host through `url_b` (token from `url_a`) with allocation ratio 1.0.
async fn enroll(http: &reqwest::Client, url_a: &str, url_b: &str, op: &str, name: &str) -> String {
    use reqwest::Method as M;
    let (_, jt) = call(http, M::POST, format!("{url_a}/v1/host-join-tokens"), op, Some(json!({}))).await;
    let (s, e) = call(
        http,
        M::POST,
        format!("{url_b}/agent/v1/enroll"),
        "",
        Some(json!({ "join_token": jt["secret"], "hostname": name })),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    let cred = e["credential"].as_str().unwrap().to_string();
    let host = e["host_id"].as_str().unwrap().to_string();
    let inv = json!({ "numa_nodes": [{ "id": 0, "cpus": (0..50).collect::<Vec<u32>>(), "memory_mib": 1 << 20 }],
        "memory_mib": 1 << 20, "disks": [{ "name": "vda", "size_bytes": 1u64 << 40, "rotational": false }],
        "virtualization": { "kvm": { "status": "usable" } } });
    let (s, _) = call(http, M::PUT, format!("{url_a}/agent/v1/inventory"), &cred, Some(inv)).await;
    assert_eq!(s, 204);
    let (s, _) = call(
        http,
        M::PATCH,
        format!("{url_a}/v1/hosts/{host}"),
        op,
        Some(json!({ "scheduling": { "cpu_allocation_ratio": 1.0 } })),
    )
    .await;
    assert_eq!(s, 200);
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgres_never_overcommit() {
    let admin = std::env::var("PLINTH_TEST_DATABASE_URL").expect(
        "PLINTH_TEST_DATABASE_URL is not set: run the README's test command, or eval \"$(scripts/test-postgres)\"",
    );
    let name = format!("plinth_claims_{}", std::process::id());
    let db = plinth_store::Store::create_postgres_database(&admin, &name).await.expect("create database");
    let dir = tempfile::tempdir().unwrap();
    let (_a, url_a) = server(dir.path(), "a", &db);
    let op = wait_for("the operator token", Duration::from_secs(30), || {
        std::fs::read_to_string(dir.path().join("operator-token")).ok().map(|s| s.trim().to_string())
    });
    let (_b, url_b) = server(dir.path(), "b", &db);
    // Both replicas serve with the CA they share, made beside the blob directory.
    let ca = plinth_client::connect::Ca::from_file(&dir.path().join("tls/ca.pem")).expect("the shared CA");
    let http = plinth_client::connect::trusting(&ca).build().unwrap();
    use reqwest::Method as M;

    // Two hosts of 50 vCPUs at ratio 1.0: room for exactly 100 one-vCPU instances.
    let mut hosts = vec![];
    for h in ["h1", "h2"] {
        hosts.push(enroll(&http, &url_a, &url_b, &op, h).await);
    }
    let (_, shape) = call(
        &http,
        M::POST,
        format!("{url_a}/v1/shapes"),
        &op,
        Some(json!({ "name": "one", "vcpus": 1, "memory_mib": 256 })),
    )
    .await;
    assert!(shape["id"].is_string(), "{shape}");
    // A public image, uploaded through one server, usable through both.
    let (s, img) = call(
        &http,
        M::POST,
        format!("{url_a}/v1/images"),
        &op,
        Some(json!({ "name": "debian-12", "boot": "disk", "files": { "disk": {} } })),
    )
    .await;
    assert_eq!(s, 201, "{img}");
    let r = http
        .put(format!("{url_b}/v1/images/{}/files/disk", img["id"].as_str().unwrap()))
        .bearer_auth(&op)
        .body(vec![0u8; 64 * 1024])
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap_or_default());
    let (_, t) = call(&http, M::POST, format!("{url_a}/v1/tenants"), &op, Some(json!({ "name": "acme" }))).await;
    let (_, p) =
        call(&http, M::POST, format!("{url_a}/v1/projects"), &op, Some(json!({ "name": "web", "tenant_id": t["id"] })))
            .await;

    let mut tasks = vec![];
    for i in 0..200 {
        let http = http.clone();
        let url = if i % 2 == 0 { url_a.clone() } else { url_b.clone() };
        let op = op.clone();
        let body = json!({ "project_id": p["id"], "name": format!("i{i}"), "shape": "one", "image": "debian-12" });
        tasks.push(tokio::spawn(
            async move { call(&http, M::POST, format!("{url}/v1/instances"), &op, Some(body)).await },
        ));
    }
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (202, _) => ok += 1,
            (409, v) if v["code"] == "no_capacity" => full += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok, full), (100, 100), "exactly the capacity is granted across two servers");
    for h in &hosts {
        let (_, page) = call(&http, M::GET, format!("{url_b}/v1/hosts/{h}/allocations?limit=1000"), &op, None).await;
        let vcpus: u64 = page["items"].as_array().unwrap().iter().map(|a| a["claim"]["vcpus"].as_u64().unwrap()).sum();
        assert!(vcpus <= 50, "host {h} holds {vcpus} vCPUs of 50");
    }

    // Quotas hold across the two servers too: a third host has room for 50, the new
    // project's quota allows 20, and 60 creates race through both servers.
    enroll(&http, &url_a, &url_b, &op, "h3").await;
    let (_, p2) = call(
        &http,
        M::POST,
        format!("{url_a}/v1/projects"),
        &op,
        Some(json!({ "name": "batch", "tenant_id": t["id"] })),
    )
    .await;
    let (s, q) = call(
        &http,
        M::PUT,
        format!("{url_b}/v1/quotas"),
        &op,
        Some(json!({ "scope_id": p2["id"], "limits": { "instances": 20 } })),
    )
    .await;
    assert_eq!(s, 200, "{q}");
    let mut tasks = vec![];
    for i in 0..60 {
        let http = http.clone();
        let url = if i % 2 == 0 { url_a.clone() } else { url_b.clone() };
        let op = op.clone();
        let body = json!({ "project_id": p2["id"], "name": format!("q{i}"), "shape": "one", "image": "debian-12" });
        tasks.push(tokio::spawn(
            async move { call(&http, M::POST, format!("{url}/v1/instances"), &op, Some(body)).await },
        ));
    }
    let (mut ok, mut over) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (202, _) => ok += 1,
            (409, v) if v["code"] == "quota_exceeded" => over += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok, over), (20, 40), "exactly the quota is granted across two servers");
    let (_, q) =
        call(&http, M::GET, format!("{url_a}/v1/quotas?scope_id={}", p2["id"].as_str().unwrap()), &op, None).await;
    let used = q.as_array().unwrap().iter().find(|e| e["resource"] == "instances").unwrap()["used"].clone();
    assert_eq!(used, 20, "{q}");
}

#[test]
fn the_cli_drives_a_simulated_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_up, _fleet, profile) =
        up_with_sim_fleet(d, &[("PLINTH_HEARTBEAT_WINDOW_S", "3"), ("PLINTH_RECONCILE_PERIOD_S", "0.5")], 3);
    let lone_state = d.join("agent-lone");
    let lone = spawn(
        &[
            "agent",
            "--runtime",
            "sim",
            "--sim-hosts",
            "1",
            "--sim-prefix",
            "lone",
            "--sim-delay-ms",
            "20",
            "--state-dir",
            lone_state.to_str().unwrap(),
        ],
        &profile,
        d.join("lone.log"),
        &[],
    );
    let hosts = wait_for("four available sim hosts", Duration::from_secs(60), || {
        let v = ok(&profile, None, &["host", "list"]);
        let items = v["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 4 && items.iter().all(|h| h["state"] == "available")).then_some(items)
    });
    assert!(hosts.iter().all(|h| h["inventory"]["runtime"] == "sim"), "sim hosts say so in their inventory");
    let table = String::from_utf8(cli(&profile, None, &["host", "list"]).stdout).unwrap();
    assert!(table.contains("sim"), "and in the listing:\n{table}");

    let t = ok(&profile, None, &["tenant", "create", "acme"]);
    let p = ok(&profile, None, &["project", "create", "web", "--tenant", t["id"].as_str().unwrap()]);
    let project = p["id"].as_str().unwrap();
    ok(&profile, None, &["shape", "create", "small", "--vcpus", "2", "--memory-mib", "2048"]);
    // A public image from a local file: streamed up, checked, available.
    let disk = d.join("tiny.raw");
    std::fs::write(&disk, vec![0u8; 256 * 1024]).unwrap();
    let img = ok(&profile, None, &["image", "create", "tiny", "--public", "--disk", disk.to_str().unwrap()]);
    assert_eq!(img["status"], "available", "{img}");
    assert_eq!(img["files"][0]["format"], "raw");
    let listed = ok(&profile, None, &["image", "list", "--public"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    // A kernel that is not one: the command fails with the reason.
    let not_kernel = d.join("not-a-kernel");
    std::fs::write(&not_kernel, b"#!/bin/sh\n").unwrap();
    let out = cli(&profile, None, &["image", "create", "bad", "--public", "--kernel", not_kernel.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image_check_failed") && err.contains("not a bzImage"), "{err}");
    assert_eq!(ok(&profile, None, &["image", "list", "--status", "failed"])["items"][0]["name"], "bad");
    let g = ok(&profile, None, &["placement-group", "create", "ha", "--project", project, "--policy", "anti-affinity"]);
    let mut placed = vec![];
    for i in 0..4 {
        let name = format!("ha-{i}");
        let out = cli(
            &profile,
            None,
            &[
                "instance",
                "create",
                &name,
                "--project",
                project,
                "--shape",
                "small",
                "--image",
                "tiny",
                "--placement-group",
                g["id"].as_str().unwrap(),
                "--wait",
            ],
        );
        assert!(out.status.success(), "create {name}: {}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("succeeded") && err.contains("running"), "--wait ends with the final state: {err}");
        placed.push(name);
    }
    // A fifth member has no host left that holds no member.
    let out = cli(
        &profile,
        None,
        &[
            "instance",
            "create",
            "ha-4",
            "--project",
            project,
            "--shape",
            "small",
            "--image",
            "tiny",
            "--placement-group",
            g["id"].as_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_valid_host") && err.contains("anti_affinity: 4"), "{err}");

    let list = ok(&profile, None, &["instance", "list"]);
    let items = list["items"].as_array().unwrap();
    let on: std::collections::BTreeSet<_> = items.iter().map(|i| i["host_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(on.len(), 4, "anti-affinity spread them over four hosts");

    // The lone host goes silent, is declared failed and fenced: its instance is recovered.
    let lone_host = hosts.iter().find(|h| h["name"].as_str().unwrap().starts_with("lone")).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = items.iter().find(|i| i["host_id"] == lone_host.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    drop(lone);
    wait_for("the lone host to be unreachable", Duration::from_secs(60), || {
        (ok(&profile, None, &["host", "get", &lone_host])["state"] == "unreachable").then_some(())
    });
    assert_eq!(ok(&profile, None, &["instance", "get", &victim])["state"], "unknown");
    ok(&profile, None, &["host", "fail", &lone_host]);
    // Anti-affinity leaves nowhere to go until a member leaves: delete one.
    let gone = items.iter().find(|i| i["host_id"] != lone_host.as_str()).unwrap()["id"].as_str().unwrap().to_string();
    let out = cli(&profile, None, &["instance", "delete", &gone, "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&profile, None, &["host", "fence", &lone_host, "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = ok(&profile, None, &["instance", "get", &victim]);
    assert_eq!(v["state"], "running", "{v}");
    assert_ne!(v["host_id"], lone_host.as_str());
    assert!(v["warning"].as_str().unwrap().contains("local disk was lost"));

    // Drain the victim's new host: with another member deleted, there is room to move.
    let src = v["host_id"].as_str().unwrap().to_string();
    let other = items.iter().find(|i| i["id"] != gone.as_str() && i["id"] != victim.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = cli(&profile, None, &["instance", "delete", &other, "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&profile, None, &["host", "drain", &src, "--wait"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = ok(&profile, None, &["instance", "get", &victim]);
    assert_eq!(v["state"], "running");
    assert_ne!(v["host_id"], src.as_str(), "moved off the drained host");
    assert_eq!(ok(&profile, None, &["host", "get", &src])["state"], "cordoned");
    let out = cli(&profile, None, &["host", "maintenance", &src]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
