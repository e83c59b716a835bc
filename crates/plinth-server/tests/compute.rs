//! Instances end to end over HTTP: lifecycle through a scripted agent speaking the real
//! agent protocol, typed refusals, explained placement refusals, atomic claims under
//! concurrency, saga unwinding at every step, resume after a restart, agent isolation,
//! drains and failed-host recovery.

mod common;

use common::fleet::{Boots, TestAgent, inventory};
use common::{TestServer, id};
use plinth_server::ServerConfig;
use serde_json::{Value, json};
use std::time::Duration;

fn op_of(v: &Value) -> String {
    v["operation"]["id"].as_str().expect("operation id").to_string()
}

#[tokio::test]
async fn an_instance_lives_through_its_lifecycle() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;

    let created = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    assert_eq!(created["instance"]["state"], "creating");
    assert_eq!(created["instance"]["host_id"], host.id.as_str());
    let iid = id(&created["instance"]);
    let op = srv.wait_op(&tok, &op_of(&created)).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(op["done"], op["total"]);
    let inst = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!(inst["state"], "running", "{inst}");
    assert!(!inst["claim"]["tcg"].as_bool().unwrap(), "KVM is usable on this host");

    // Stop, then stop again: the second is a no-op success.
    let stop = srv.post(&format!("/v1/instances/{iid}/stop")).token(&tok).send().await.ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&stop)).await["status"], "succeeded");
    let again = srv.post(&format!("/v1/instances/{iid}/stop")).token(&tok).send().await.ok(202);
    assert_eq!(again["operation"]["status"], "succeeded");
    assert!(again["operation"]["message"].as_str().unwrap().contains("nothing to do"));
    assert_eq!(srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200)["state"], "stopped");

    // Reboot needs a running instance.
    let p =
        srv.post(&format!("/v1/instances/{iid}/reboot")).token(&tok).send().await.problem(409, "invalid_transition");
    assert_eq!(p["constraint"]["state"], "stopped");

    // Resize while stopped (fits on the same host), then start.
    srv.shape("large", 4, 4096).await;
    let r = srv
        .post(&format!("/v1/instances/{iid}/resize"))
        .token(&tok)
        .json(&json!({"shape": "large"}))
        .send()
        .await
        .ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&r)).await["status"], "succeeded");
    let inst = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!((inst["vcpus"].as_u64(), inst["state"].as_str()), (Some(4), Some("stopped")));
    let allocs = srv.get(&format!("/v1/hosts/{}/allocations", host.id)).token(&srv.operator).send().await.ok(200);
    assert_eq!(allocs["items"].as_array().unwrap().len(), 1, "the resize replaced the claim: {allocs}");
    assert_eq!(allocs["items"][0]["claim"]["vcpus"], 4);

    let s = srv.post(&format!("/v1/instances/{iid}/start")).token(&tok).send().await.ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&s)).await["status"], "succeeded");
    let rb = srv.post(&format!("/v1/instances/{iid}/reboot")).token(&tok).send().await.ok(202);
    assert_eq!(rb["instance"]["state"], "rebooting");
    assert_eq!(srv.wait_op(&tok, &op_of(&rb)).await["status"], "succeeded");

    // Delete; starting a deleting instance is refused naming the state.
    let d = srv.delete(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(202);
    assert_eq!(d["instance"]["state"], "deleting");
    // (Deleting or, if the host was already quick, deleted: refused either way.)
    let p = srv.post(&format!("/v1/instances/{iid}/start")).token(&tok).send().await.problem(409, "invalid_transition");
    assert!(p["detail"].as_str().unwrap().contains("delet"), "{p}");
    assert_eq!(srv.wait_op(&tok, &op_of(&d)).await["status"], "succeeded");
    let inst = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!(inst["state"], "deleted");
    let p = srv.post(&format!("/v1/instances/{iid}/start")).token(&tok).send().await.problem(409, "invalid_transition");
    assert_eq!(p["constraint"]["state"], "deleted");
    let allocs = srv.get(&format!("/v1/hosts/{}/allocations", host.id)).token(&srv.operator).send().await.ok(200);
    assert!(allocs["items"].as_array().unwrap().is_empty(), "delete released the claim: {allocs}");

    // The history tells the story.
    let events = srv.list_all(&tok, &format!("/v1/instances/{iid}/events")).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in
        ["created", "ready", "start_requested", "stop_requested", "resize_requested", "reboot_requested", "released"]
    {
        assert!(kinds.contains(&k), "event {k} in {kinds:?}");
    }
    // The name is free again.
    srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
}

#[tokio::test]
async fn a_refusal_says_how_many_hosts_each_constraint_removed() {
    let srv = TestServer::start().await;
    for i in 0..3 {
        srv.enroll_host(&format!("h{i}"), inventory(4, 8192), &["CUSTOM_SSD"]).await;
    }
    let cordoned = srv.enroll_host("h3", inventory(4, 8192), &[]).await;
    srv.post(&format!("/v1/hosts/{}/cordon", cordoned.id)).token(&srv.operator).send().await.ok(200);
    srv.shape("huge", 64, 1024).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let p = srv.create_instance(&tok, &project, "big", "huge").await.problem(409, "no_valid_host");
    assert_eq!(p["constraint"]["removed"]["host_state"], 1, "{p}");
    assert_eq!(p["constraint"]["removed"]["vcpu"], 3, "{p}");
    assert_eq!(p["constraint"]["hosts"], 4);
    let none = srv.list_all(&tok, "/v1/instances").await;
    assert!(none.is_empty(), "a refused create writes nothing: {none:?}");

    // Only capacity in the way: no_capacity.
    srv.post(&format!("/v1/hosts/{}/uncordon", cordoned.id)).token(&srv.operator).send().await.ok(200);
    let p = srv.create_instance(&tok, &project, "big", "huge").await.problem(409, "no_capacity");
    assert_eq!(p["constraint"]["removed"]["vcpu"], 4, "{p}");

    // Required traits.
    srv.shape("small", 1, 512).await;
    srv.public_image("debian-12").await;
    let body = json!({ "project_id": project, "name": "fast", "shape": "small", "image": "debian-12",
        "required_traits": ["CUSTOM_NVME"] });
    let p = srv.post("/v1/instances").token(&tok).json(&body).send().await.problem(409, "no_valid_host");
    assert_eq!(p["constraint"]["removed"]["traits"], 4, "{p}");
}

#[tokio::test]
async fn concurrent_creates_never_overcommit() {
    let srv = TestServer::start().await;
    // Two hosts of 50 vCPUs at ratio 1.0: room for exactly 100 one-vCPU instances.
    let a = srv.enroll_host("h1", inventory(50, 1 << 20), &[]).await;
    let b = srv.enroll_host("h2", inventory(50, 1 << 20), &[]).await;
    srv.shape("one", 1, 256).await;
    srv.public_image("debian-12").await;
    let (tok, project) = srv.tenant_project("acme").await;
    let mut tasks = vec![];
    for i in 0..200 {
        let client = srv.client.clone();
        let url = format!("{}/v1/instances", srv.base);
        let tok = tok.clone();
        let body = json!({ "project_id": project, "name": format!("i{i}"), "shape": "one", "image": "debian-12" });
        tasks.push(tokio::spawn(async move {
            let r = client.post(url).bearer_auth(tok).json(&body).send().await.expect("send");
            let status = r.status().as_u16();
            let v: Value = r.json().await.expect("json");
            (status, v["code"].as_str().map(str::to_string))
        }));
    }
    let mut ok = 0;
    let mut full = 0;
    for t in tasks {
        match t.await.expect("task") {
            (202, _) => ok += 1,
            (409, Some(code)) if code == "no_capacity" => full += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok, full), (100, 100));
    for h in [&a, &b] {
        let allocs = srv.list_all(&srv.operator, &format!("/v1/hosts/{}/allocations", h.id)).await;
        let vcpus: u64 = allocs.iter().map(|a| a["claim"]["vcpus"].as_u64().unwrap()).sum();
        assert!(vcpus <= 50, "host {} holds {vcpus} vCPUs of 50", h.id);
    }
}

#[tokio::test]
async fn an_operation_shows_when_each_step_ran_and_what_the_host_did_in_it() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let created = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let op = srv.wait_op(&tok, &op_of(&created)).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let op = srv.get(&format!("/v1/operations/{}", op_of(&created))).token(&tok).send().await.ok(200);
    let timings = op["timings"].as_array().expect("timings").clone();
    let steps: Vec<&str> = timings.iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["quota", "claim", "prepare", "start"], "{op}");
    let mut last = String::new();
    for t in &timings {
        assert_eq!(t["outcome"], "done", "{t}");
        assert!(t["took_ms"].as_f64().unwrap() >= 0.0, "{t}");
        let at = t["started_at"].as_str().unwrap().to_string();
        assert!(at >= last, "steps are in the order they ran: {op}");
        last = at;
    }
    // The steps that waited for the host carry what the agent reported doing.
    assert_eq!(timings[2]["host"][0]["phase"], "to-stopped", "{op}");
    assert_eq!(timings[3]["host"][0]["phase"], "to-running", "{op}");
    assert_eq!(timings[3]["host"][0]["took_ms"], 1.5);
    assert!(timings[0]["host"].is_null(), "the inline steps waited for no host: {op}");
}

#[tokio::test]
async fn a_failed_step_and_the_undos_it_caused_are_timed() {
    let mut config = ServerConfig::default();
    config.failpoints.insert("instance.create:start".into());
    let srv = TestServer::start_with(config).await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let created = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let op = srv.wait_op(&tok, &op_of(&created)).await;
    assert_eq!(op["status"], "failed", "{op}");
    let got: Vec<(&str, &str)> = op["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["step"].as_str().unwrap(), t["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("quota", "done"),
            ("claim", "done"),
            ("prepare", "done"),
            ("start", "failed"),
            ("prepare", "undone"),
            ("claim", "undone"),
            ("quota", "undone")
        ],
        "{op}"
    );
}

async fn unwinds_at(step: &str) {
    let mut config = ServerConfig::default();
    config.failpoints.insert(format!("instance.create:{step}"));
    let srv = TestServer::start_with(config).await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let r = srv.create_instance(&tok, &project, "web-1", "small").await;
    if matches!(step, "quota" | "claim") {
        r.problem(503, "injected_failure");
    } else {
        let v = r.ok(202);
        let op = srv.wait_op(&tok, &op_of(&v)).await;
        assert_eq!(op["status"], "failed", "{step}: {op}");
        assert_eq!(op["error"]["code"], "injected_failure");
        let inst = srv.get(&format!("/v1/instances/{}", id(&v["instance"]))).token(&tok).send().await.ok(200);
        assert_eq!(inst["state"], "deleted", "{step}: a failed create ends deleted: {inst}");
        assert!(inst["claim"].is_null());
    }
    let live = srv.list_all(&tok, "/v1/instances?state=running").await;
    assert!(live.is_empty(), "{step}: nothing runs");
    let allocs = srv.list_all(&srv.operator, &format!("/v1/hosts/{}/allocations", host.id)).await;
    assert!(allocs.is_empty(), "{step}: no claim is left: {allocs:?}");
    // Nothing left on the host: its desired state holds no live guest.
    let d = srv.get("/agent/v1/desired?wait=0").token(&host.credential).send().await.ok(200);
    assert!(
        d["instances"].as_array().unwrap().iter().all(|s| s["power"] == "absent"),
        "{step}: the host keeps nothing: {d}"
    );
    // No usage interval is left open, and the quota counts nothing.
    let usage = srv.list_all(&tok, "/v1/usage").await;
    assert!(usage.iter().all(|u| !u["end_at"].is_null()), "{step}: an interval is still open: {usage:?}");
    if matches!(step, "quota" | "claim") {
        assert!(usage.is_empty(), "{step}: a refused create meters nothing: {usage:?}");
    }
    let quotas = srv.get(&format!("/v1/quotas?scope_id={project}")).token(&tok).send().await.ok(200);
    assert!(quotas.as_array().unwrap().iter().all(|q| q["used"] == 0), "{step}: quota usage is back to 0: {quotas}");
}

#[tokio::test]
async fn create_unwinds_when_quota_fails() {
    unwinds_at("quota").await;
}

#[tokio::test]
async fn create_unwinds_when_claim_fails() {
    unwinds_at("claim").await;
}

#[tokio::test]
async fn create_unwinds_when_prepare_fails() {
    unwinds_at("prepare").await;
}

#[tokio::test]
async fn create_unwinds_when_start_fails() {
    unwinds_at("start").await;
}

#[tokio::test]
async fn a_guest_that_cannot_boot_unwinds_the_create() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Fail);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let op = srv.wait_op(&tok, &op_of(&v)).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("guest_failed")), "{op}");
    assert!(srv.list_all(&srv.operator, &format!("/v1/hosts/{}/allocations", host.id)).await.is_empty());
}

#[tokio::test]
async fn a_saga_resumes_after_the_server_restarts() {
    let config = ServerConfig {
        lease_ttl: Duration::from_millis(500),
        reconcile_period: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with(config.clone()).await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    // No agent yet: the saga waits in `prepare` when the server stops.
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let op = op_of(&v);
    srv.wait_until(&tok, &format!("/v1/instances/{}", id(&v["instance"])), "spec published", |i| {
        i["spec_generation"].as_i64() == Some(1)
    })
    .await;
    // The waiting saga keeps its lease well past the lease time: wait for a stuck-operation
    // run that starts 4 lease times from now; nothing (on any server) could take it then.
    let after = chrono::Utc::now() + config.lease_ttl * 4;
    srv.wait_until(&srv.operator, "/v1/system/background-tasks", "a stuck-operation run past the lease time", |t| {
        t.as_array().unwrap().iter().any(|t| {
            t["name"] == "stuck_operations"
                && t["last_started_at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .is_some_and(|at| at > after)
        })
    })
    .await;
    assert!(srv.store.resumable_operations().await.unwrap().is_empty(), "the running saga's lease is renewed");
    let operator = srv.operator.clone();
    let dir = srv.stop();
    let url = format!("sqlite://{}/plinth.db", dir.path().display());
    let store = plinth_store::Store::open(&url).await.expect("reopen");
    let srv = TestServer::serve_on(store, config, operator, dir).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    let done = srv.wait_op(&tok, &op).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        srv.get(&format!("/v1/instances/{}", id(&v["instance"]))).token(&tok).send().await.ok(200)["state"],
        "running"
    );
}

#[tokio::test]
async fn a_saga_whose_undo_keeps_failing_is_retried_by_its_own_server() {
    let failpoints = ["instance.create:prepare", "instance.create:claim:undo"].map(String::from).into();
    let config = ServerConfig { failpoints, reconcile_period: Duration::from_millis(200), ..ServerConfig::default() };
    let srv = TestServer::start_with(config).await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let path = format!("/v1/operations/{}", op_of(&v));
    let gave_up = |o: &Value| o["message"].as_str().is_some_and(|m| m.starts_with("undo incomplete, will retry"));
    let op = srv.wait_until(&tok, &path, "the undo given up for now", gave_up).await;
    assert_eq!(op["status"], "running", "not final while an undo is owed: {op}");
    // This server's lease is live, so no other server would take the saga over: its own
    // stuck-operation detector resumes it, and the undo is tried (and given up) again.
    let first = op["generation"].as_i64().unwrap();
    srv.wait_until(&tok, &path, "the undo tried again", |o| gave_up(o) && o["generation"].as_i64() > Some(first)).await;
    let allocs = srv.list_all(&srv.operator, &format!("/v1/hosts/{}/allocations", host.id)).await;
    assert_eq!(allocs.len(), 1, "the claim is still held until its undo succeeds: {allocs:?}");
}

#[tokio::test]
async fn an_agent_reads_and_writes_only_its_own_host() {
    let srv = TestServer::start().await;
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let b = srv.enroll_host("h2", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    // No agent runs: nothing but the requests below reports on it. Find its host.
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let on = v["instance"]["host_id"].as_str().unwrap().to_string();
    let (mine, other) = if on == a.id { (&a, &b) } else { (&b, &a) };
    let iid = id(&v["instance"]);
    let d = srv.get("/agent/v1/desired?wait=0").token(&other.credential).send().await.ok(200);
    assert_eq!(d["host_id"], other.id.as_str());
    assert!(d["instances"].as_array().unwrap().is_empty(), "another host sees nothing of it: {d}");
    let r = srv
        .post("/agent/v1/observed")
        .token(&other.credential)
        .json(&json!({ "instances": [{ "instance_id": iid, "generation": 1, "state": "failed" }] }))
        .send()
        .await
        .ok(200);
    assert_eq!((r["applied"].as_u64(), r["rejected"].as_u64()), (Some(0), Some(1)), "{r}");
    let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert!(i["observed"].is_null(), "another host's report changed nothing: {i}");
    // A tenant token is not a host credential, nor is a made-up one.
    srv.get("/agent/v1/desired?wait=0").token(&tok).send().await.problem(401, "unauthenticated");
    srv.get("/agent/v1/desired?wait=0").token("phc_nothing").send().await.problem(401, "unauthenticated");
    let _ = mine;
}

#[tokio::test]
async fn a_stale_observation_does_not_override_a_newer_intent() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    let report =
        |g: i64, state: &str| json!({ "instances": [{ "instance_id": iid, "generation": g, "state": state }] });
    // Prepare (spec 1) and start (spec 2) by hand.
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "spec 1", |i| i["spec_generation"] == 1).await;
    srv.post("/agent/v1/observed").token(&host.credential).json(&report(1, "stopped")).send().await.ok(200);
    // The start waits for the instance's NIC to be ready on the host.
    srv.report_nics_ready(&host, &iid).await;
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "spec 2", |i| i["spec_generation"] == 2).await;
    srv.post("/agent/v1/observed").token(&host.credential).json(&report(2, "running")).send().await.ok(200);
    srv.wait_op(&tok, &op_of(&v)).await;
    // The user stops it (spec 3); a late report of spec 2 still says running.
    srv.post(&format!("/v1/instances/{iid}/stop")).token(&tok).send().await.ok(202);
    let ack = srv.post("/agent/v1/observed").token(&host.credential).json(&report(2, "running")).send().await.ok(200);
    assert_eq!(ack["stale"], 1, "{ack}");
    let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!(i["state"], "stopping", "{i}");
    let ack = srv.post("/agent/v1/observed").token(&host.credential).json(&report(3, "stopped")).send().await.ok(200);
    assert_eq!(ack["applied"], 1);
    assert_eq!(srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200)["state"], "stopped");
}

#[tokio::test]
async fn a_drain_moves_every_instance_off_the_host() {
    let srv = TestServer::start().await;
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let b = srv.enroll_host("h2", inventory(8, 16384), &[]).await;
    let _aa = TestAgent::start(&srv.base, &a, Boots::Succeed);
    let _ab = TestAgent::start(&srv.base, &b, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let mut ids = vec![];
    for i in 0..3 {
        let v = srv.create_instance(&tok, &project, &format!("web-{i}"), "small").await.ok(202);
        assert_eq!(srv.wait_op(&tok, &op_of(&v)).await["status"], "succeeded");
        ids.push((id(&v["instance"]), v["instance"]["host_id"].as_str().unwrap().to_string()));
    }
    let source = ids[0].1.clone();
    let target = if source == a.id { b.id.clone() } else { a.id.clone() };
    let d = srv.post(&format!("/v1/hosts/{source}/drain")).token(&srv.operator).send().await.ok(202);
    assert_eq!(d["host"]["state"], "draining");
    let op = srv.wait_op(&srv.operator, d["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let on_source: Vec<_> = ids.iter().filter(|(_, h)| *h == source).collect();
    assert_eq!(op["items"].as_array().unwrap().len(), on_source.len());
    for (iid, _) in &ids {
        let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
        assert_eq!((i["host_id"].as_str(), i["state"].as_str()), (Some(target.as_str()), Some("running")), "{i}");
    }
    assert!(srv.list_all(&srv.operator, &format!("/v1/hosts/{source}/allocations")).await.is_empty());
    let h = srv.get(&format!("/v1/hosts/{source}")).token(&srv.operator).send().await.ok(200);
    assert_eq!(h["state"], "cordoned");
    srv.post(&format!("/v1/hosts/{source}/maintenance")).token(&srv.operator).send().await.ok(200);
}

#[tokio::test]
async fn a_failed_host_is_recovered_only_once_fenced() {
    let config = ServerConfig {
        heartbeat_window: Duration::from_millis(1500),
        reconcile_period: Duration::from_millis(200),
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with(config).await;
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let agent_a = TestAgent::start(&srv.base, &a, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    srv.wait_op(&tok, &op_of(&v)).await;
    let iid = id(&v["instance"]);
    let b = srv.enroll_host("h2", inventory(8, 16384), &[]).await;
    let _agent_b = TestAgent::start(&srv.base, &b, Boots::Succeed);

    drop(agent_a); // host A goes silent
    srv.wait_until(&srv.operator, &format!("/v1/hosts/{}", a.id), "unreachable", |h| h["state"] == "unreachable").await;
    assert_eq!(srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200)["state"], "unknown");

    let f = srv.post(&format!("/v1/hosts/{}/fail", a.id)).token(&srv.operator).send().await.ok(200);
    assert_eq!(f["host"]["state"], "failed");
    assert!(f["operation"].is_null(), "no recovery before fencing: {f}");
    let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!(i["host_id"], a.id.as_str(), "still on the failed host until fenced");

    let f = srv.post(&format!("/v1/hosts/{}/fence", a.id)).token(&srv.operator).send().await.ok(202);
    assert!(f["host"]["fenced_by"].is_string());
    let op = srv.wait_op(&srv.operator, f["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!((i["host_id"].as_str(), i["state"].as_str()), (Some(b.id.as_str()), Some("running")), "{i}");
    assert!(i["warning"].as_str().unwrap().contains("local disk was lost"), "{i}");
}

#[tokio::test]
async fn the_watcher_restarts_a_crashed_guest_per_its_restart_policy() {
    let config = ServerConfig { reconcile_period: Duration::from_millis(200), ..ServerConfig::default() };
    let srv = TestServer::start_with(config).await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    srv.public_image("debian-12").await;
    let (tok, project) = srv.tenant_project("acme").await;
    let mut ids = vec![];
    for (name, policy) in [("keeps", "on-failure"), ("stays", "never")] {
        let body = json!({ "project_id": project, "name": name, "shape": "small", "image": "debian-12",
            "restart_policy": policy });
        let v = srv.post("/v1/instances").token(&tok).json(&body).send().await.ok(202);
        assert_eq!(srv.wait_op(&tok, &op_of(&v)).await["status"], "succeeded");
        ids.push(id(&v["instance"]));
    }
    // Both guests crash: the agent reports them failed at their current spec.
    for iid in &ids {
        let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
        let g = i["spec_generation"].as_i64().unwrap();
        let report = json!({ "instances": [{ "instance_id": iid, "generation": g, "state": "failed", "detail": "guest panic" }] });
        srv.post("/agent/v1/observed").token(&host.credential).json(&report).send().await.ok(200);
    }
    let keeps = srv
        .wait_until(&tok, &format!("/v1/instances/{}", ids[0]), "restarted and running", |i| {
            i["state"] == "running" && i["boot_generation"].as_i64() > Some(2)
        })
        .await;
    assert!(keeps["spec_generation"].as_i64().unwrap() > 2, "a new spec asked for the restart: {keeps}");
    let events = srv.list_all(&tok, &format!("/v1/instances/{}/events", ids[0])).await;
    assert!(events.iter().any(|e| e["kind"] == "restarted"), "{events:?}");
    assert!(events.iter().any(|e| e["kind"] == "guest_failed"), "{events:?}");
    // `never` stays failed, and the watcher says what it did.
    let tasks = srv
        .wait_until(&srv.operator, "/v1/system/background-tasks", "a few watcher runs", |t| {
            t.as_array().unwrap().iter().all(|t| t["runs"].as_u64() >= Some(2))
        })
        .await;
    let names: Vec<&str> = tasks.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "host_liveness",
            "instance_watcher",
            "orphan_sweeper",
            "stuck_operations",
            "image_gc",
            "detach_deadline",
            "shared_volumes",
            "billing"
        ]
    );
    assert_eq!(srv.get(&format!("/v1/instances/{}", ids[1])).token(&tok).send().await.ok(200)["state"], "failed");
    let run = srv.post("/v1/system/background-tasks/instance_watcher/run").token(&srv.operator).send().await.ok(200);
    assert_eq!(run["restarted"], 0, "idempotent: nothing left to restart: {run}");
    srv.post("/v1/system/background-tasks/nope/run").token(&srv.operator).send().await.problem(404, "not_found");
}

#[tokio::test]
async fn a_drain_names_what_could_not_move_and_only_drains_are_cancellable() {
    let srv = TestServer::start().await;
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _aa = TestAgent::start(&srv.base, &a, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    srv.wait_op(&tok, &op_of(&v)).await;
    // No other host: the instance cannot move, and the drain says why.
    let d = srv.post(&format!("/v1/hosts/{}/drain", a.id)).token(&srv.operator).send().await.ok(202);
    let op = srv.wait_op(&srv.operator, d["operation"]["id"].as_str().unwrap()).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("could_not_move")), "{op}");
    let item = &op["items"][0];
    assert_eq!(item["status"], "failed");
    assert!(item["detail"].as_str().unwrap().contains("avoided: 1"), "{item}");
    // Put back where it was, and started again there (the agent reports it running).
    let iid = id(&v["instance"]);
    let i = srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running again", |i| i["state"] == "running").await;
    assert_eq!(i["host_id"].as_str(), Some(a.id.as_str()), "put back: {i}");
    // Only drains can be cancelled; a finished one stays as it ended.
    srv.post(&format!("/v1/operations/{}/cancel", op_of(&v))).token(&tok).send().await.problem(409, "not_cancellable");
    let c = srv
        .post(&format!("/v1/operations/{}/cancel", op["id"].as_str().unwrap()))
        .token(&srv.operator)
        .send()
        .await
        .ok(202);
    assert_eq!(c["status"], "failed");
}

#[tokio::test]
async fn a_resize_moves_when_its_host_cannot_hold_the_new_shape() {
    let srv = TestServer::start().await;
    let a = srv.enroll_host("h1", inventory(4, 16384), &[]).await;
    let _aa = TestAgent::start(&srv.base, &a, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    srv.shape("big", 12, 4096).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    srv.wait_op(&tok, &op_of(&v)).await;
    let iid = id(&v["instance"]);
    let b = srv.enroll_host("h2", inventory(16, 16384), &[]).await;
    let _ab = TestAgent::start(&srv.base, &b, Boots::Succeed);
    let r = srv.post(&format!("/v1/instances/{iid}/resize")).token(&tok).json(&json!({"shape": "big"})).send().await;
    r.problem(409, "invalid_transition"); // running: stop it first
    let s = srv.post(&format!("/v1/instances/{iid}/stop")).token(&tok).send().await.ok(202);
    srv.wait_op(&tok, &op_of(&s)).await;
    let r = srv
        .post(&format!("/v1/instances/{iid}/resize"))
        .token(&tok)
        .json(&json!({"shape": "big"}))
        .send()
        .await
        .ok(202);
    assert_eq!(r["instance"]["host_id"], b.id.as_str(), "re-placed on the host that holds 12 vCPUs");
    assert_eq!(srv.wait_op(&tok, &op_of(&r)).await["status"], "succeeded");
    assert!(srv.list_all(&srv.operator, &format!("/v1/hosts/{}/allocations", a.id)).await.is_empty());
    let on_b = srv.list_all(&srv.operator, &format!("/v1/hosts/{}/allocations", b.id)).await;
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0]["claim"]["vcpus"], 12);
    let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!((i["state"].as_str(), i["shape_name"].as_str()), (Some("stopped"), Some("big")), "{i}");
    // Too big for any host: refused with the reason, nothing changes.
    srv.shape("huge", 64, 4096).await;
    let p = srv.post(&format!("/v1/instances/{iid}/resize")).token(&tok).json(&json!({"shape": "huge"})).send().await;
    let p = p.problem(409, "no_capacity");
    assert_eq!(p["constraint"]["removed"]["vcpu"], 2, "{p}");
    assert_eq!(srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200)["shape_name"], "big");
}

#[tokio::test]
async fn capacity_says_how_many_more_of_each_shape_fit() {
    let srv = TestServer::start().await;
    let site = srv.post("/v1/sites").token(&srv.operator).json(&json!({"name": "dc1"})).send().await.ok(201);
    let rack = srv
        .post("/v1/racks")
        .token(&srv.operator)
        .json(&json!({"site_id": id(&site), "name": "r1"}))
        .send()
        .await
        .ok(201);
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.patch(&format!("/v1/hosts/{}", a.id))
        .token(&srv.operator)
        .json(&json!({"rack_id": id(&rack)}))
        .send()
        .await
        .ok(200);
    srv.enroll_host("h2", inventory(4, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let c = srv.get("/v1/capacity").token(&srv.operator).send().await.ok(200);
    // 8/2 + 4/2 vCPU-bound (memory allows 8 each): 4 + 2.
    assert_eq!(c["totals"]["small"], 6, "{c}");
    let in_rack = c["rows"].as_array().unwrap().iter().find(|r| r["rack_id"] == id(&rack).as_str()).unwrap();
    assert_eq!((in_rack["fits"].as_u64(), in_rack["hosts"].as_u64()), (Some(4), Some(1)), "{c}");
    assert_eq!(in_rack["site_id"], id(&site).as_str());
    let (tok, project) = srv.tenant_project("acme").await;
    srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let c = srv.get("/v1/capacity").token(&srv.operator).send().await.ok(200);
    assert_eq!(c["totals"]["small"], 5, "one fewer after a claim: {c}");
    srv.get("/v1/capacity").token(&tok).send().await.problem(403, "forbidden");
}
