//! Block storage through the HTTP API, with the agent's side spoken over the real agent
//! protocol: volume types (operators), a volume's placement on a host's pool, its key
//! handed only to its host, the reports that make it available and, after a delete that
//! destroys the key at once, deleted with its wipe evidence; its `disk_gib_seconds`
//! interval, quotas, bad input and tenancy.

mod common;

use common::fleet::{TestHost, inventory};
use common::{TestServer, id};
use serde_json::{Value, json};

/// An inventory with a volume pool of `gib` GiB.
fn with_pool(gib: u64) -> Value {
    let mut inv = inventory(8, 16_384);
    inv["volume_pool"] = json!({ "path": "/var/lib/plinth/volumes", "filesystem": "ext4", "capacity_bytes": gib << 30, "free_bytes": gib << 30 });
    inv
}

async fn desired(srv: &TestServer, host: &TestHost) -> Value {
    srv.get("/agent/v1/desired?wait=1").token(&host.credential).send().await.ok(200)
}

fn spec_of<'a>(d: &'a Value, vol: &str) -> Option<&'a Value> {
    d["volumes"].as_array().expect("volumes").iter().find(|v| v["volume_id"] == vol)
}

async fn report(srv: &TestServer, host: &TestHost, vol: &str, generation: &Value, state: &str, extra: Value) -> Value {
    let mut o = json!({ "volume_id": vol, "generation": generation, "state": state });
    if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    srv.post("/agent/v1/observed")
        .token(&host.credential)
        .json(&json!({ "instances": [], "volumes": [o] }))
        .send()
        .await
        .ok(200)
}

#[tokio::test]
async fn volume_types_are_the_operators_and_refuse_what_cannot_hold() {
    let srv = TestServer::start().await;
    let tenant = srv.tenant_with_admin("acme").await;
    let t = srv
        .post("/v1/volume-types")
        .token(&srv.operator)
        .json(&json!({ "name": "standard", "qos": { "iops_total": 500 } }))
        .send()
        .await
        .ok(201);
    assert_eq!(t["encrypted"], true, "encrypted unless asked otherwise");
    assert_eq!(t["wipe"], "crypto", "an encrypted type is crypto-erased");
    assert_eq!(t["price_dimension"], "standard");
    assert_eq!(t["backend"], "local_qcow2");
    let plain = srv
        .post("/v1/volume-types")
        .token(&srv.operator)
        .json(&json!({ "name": "plain", "encrypted": false }))
        .send()
        .await
        .ok(201);
    assert_eq!(plain["wipe"], "overwrite", "an unencrypted type is overwritten");
    // A tenant reads them and writes none.
    let listed = srv.list_ids(&tenant.secret, "/v1/volume-types").await;
    assert_eq!(listed.len(), 2);
    srv.post("/v1/volume-types")
        .token(&tenant.secret)
        .json(&json!({ "name": "mine" }))
        .send()
        .await
        .problem(403, "forbidden");
    // What cannot hold is refused, naming the field; nothing is written.
    let p = srv
        .post("/v1/volume-types")
        .token(&srv.operator)
        .json(&json!({ "name": "bad", "encrypted": false, "wipe": "crypto" }))
        .send()
        .await
        .problem(422, "wipe_needs_encryption");
    assert_eq!(p["constraint"]["field"], "wipe");
    let p = srv
        .post("/v1/volume-types")
        .token(&srv.operator)
        .json(&json!({ "name": "ceph", "backend": "rbd" }))
        .send()
        .await
        .problem(422, "backend_unavailable");
    assert_eq!(p["constraint"]["field"], "backend");
    let p = srv
        .post("/v1/volume-types")
        .token(&srv.operator)
        .json(&json!({ "name": "zero", "qos": { "bps_total": 0 } }))
        .send()
        .await
        .problem(422, "invalid_value");
    assert_eq!(p["constraint"]["field"], "qos.bps_total");
    srv.post("/v1/volume-types")
        .token(&srv.operator)
        .json(&json!({ "name": "standard" }))
        .send()
        .await
        .problem(409, "already_exists");
    assert_eq!(srv.list_ids(&srv.operator, "/v1/volume-types").await.len(), 2, "no refused type was written");
}

#[tokio::test]
async fn a_volume_is_made_by_its_host_and_its_key_is_destroyed_at_delete() {
    let srv = TestServer::start().await;
    let tenant = srv.tenant_with_admin("acme").await;
    let project = id(&srv.create_project(&tenant.secret, None, "web").await);
    let body = |name: &str, size: u32| json!({ "project_id": project, "name": name, "size_gib": size });

    // Nothing to make a volume with yet: each refusal says what is missing.
    srv.post("/v1/volumes").token(&tenant.secret).json(&body("v", 10)).send().await.problem(409, "no_volume_type");
    srv.post("/v1/volume-types").token(&srv.operator).json(&json!({ "name": "standard" })).send().await.ok(201);
    srv.post("/v1/volumes").token(&tenant.secret).json(&body("v", 10)).send().await.problem(409, "no_volume_pool");
    let host = srv.enroll_host("store-1", with_pool(100), &[]).await;
    let other = srv.enroll_host("store-2", inventory(8, 16_384), &[]).await;
    let p =
        srv.post("/v1/volumes").token(&tenant.secret).json(&body("v", 0)).send().await.problem(422, "invalid_value");
    assert_eq!(p["constraint"]["field"], "size_gib");
    let p = srv
        .post("/v1/volumes")
        .token(&tenant.secret)
        .json(&body("v", 101))
        .send()
        .await
        .problem(409, "volume_pool_full");
    assert!(p["detail"].as_str().unwrap().contains("100 GiB"), "the pool's headroom is named: {p}");
    let p = srv
        .post("/v1/volumes")
        .token(&tenant.secret)
        .json(&json!({ "project_id": project, "name": "v", "size_gib": 1, "host_id": host.id }))
        .send()
        .await
        .problem(403, "forbidden");
    assert!(p["detail"].as_str().unwrap().contains("named host"), "{p}");
    assert!(srv.list_ids(&tenant.secret, "/v1/volumes").await.is_empty(), "no refused volume was written");

    let vol = srv.post("/v1/volumes").token(&tenant.secret).json(&body("data", 10)).send().await.ok(201);
    let vid = id(&vol);
    assert_eq!(vol["state"], "creating");
    assert_eq!(vol["host_id"], host.id.as_str(), "on the only host with a pool");
    assert_eq!(vol["serial"].as_str().unwrap().len(), 20);
    assert!(
        vid.to_lowercase().ends_with(&vol["serial"].as_str().unwrap().to_lowercase()),
        "its serial is its id's tail"
    );
    // The name is the project's: a second one of that name is refused.
    srv.post("/v1/volumes").token(&tenant.secret).json(&body("data", 1)).send().await.problem(409, "already_exists");

    // Its host is told to make it, and only its host gets its key.
    let d = desired(&srv, &host).await;
    let spec = spec_of(&d, &vid).expect("the host is told").clone();
    assert_eq!(spec["present"], true);
    assert_eq!(spec["size_bytes"], 10u64 << 30);
    assert_eq!(spec["encrypted"], true);
    assert!(spec_of(&desired(&srv, &other).await, &vid).is_none(), "another host is not told");
    let key = srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&host.credential).send().await.ok(200);
    let k = key["key"].as_str().expect("key").to_string();
    assert!(k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()), "64 hexadecimal characters");
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&other.credential).send().await.problem(404, "not_found");
    for path in [format!("/v1/volumes/{vid}"), "/v1/volumes".to_string()] {
        let text = srv.get(&path).token(&srv.operator).send().await.json().to_string();
        assert!(!text.contains(&k), "the key never appears in the API ({path})");
    }

    // Present: available, and its disk_gib_seconds interval opens.
    report(&srv, &host, &vid, &spec["generation"], "present", json!({ "allocated_bytes": 2_359_296 })).await;
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&tenant.secret).send().await.ok(200);
    assert_eq!(v["state"], "available");
    assert_eq!(v["allocated_bytes"], 2_359_296);
    let usage = srv
        .get(&format!("/v1/usage?resource_id={vid}&meter=disk_gib_seconds"))
        .token(&tenant.secret)
        .send()
        .await
        .ok(200);
    let recs = usage["items"].as_array().expect("records");
    assert_eq!(recs.len(), 1, "{usage}");
    assert_eq!(recs[0]["dimension"], "standard");
    assert_eq!(recs[0]["multiplier"], 10);
    assert!(recs[0]["end_at"].is_null(), "open while the volume exists");
    // Its host may open it while it exists there (to make a snapshot's layer, or the
    // next one ahead); another host may not.
    let key = srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&host.credential).send().await.ok(200);
    assert_eq!(key["key"].as_str().map(str::len), Some(64));

    // The pool's gauges: capacity as reported, what its volumes were promised and take.
    let text =
        srv.client.get(format!("{}/metrics", srv.base)).send().await.expect("metrics").text().await.expect("text");
    let gauge = |name: &str| -> Option<u64> {
        let prefix = format!("plinth_{name}_bytes{{host=\"{}\"}} ", host.id);
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(gauge("volume_pool_capacity"), Some(100 << 30), "{text}");
    assert_eq!(gauge("volume_pool_provisioned"), Some(10 << 30));
    assert_eq!(gauge("volume_pool_allocated"), Some(2_359_296));
    assert_eq!(gauge("volume_pool_free"), Some(100 << 30));
    assert!(
        !text.lines().any(|l| l.starts_with("plinth_volume_pool") && l.contains(&other.id)),
        "a host without a pool has no pool gauges"
    );

    // Extend: only up, only within the pool; the interval splits at the new size.
    let p = srv
        .post(&format!("/v1/volumes/{vid}/extend"))
        .token(&tenant.secret)
        .json(&json!({ "size_gib": 5 }))
        .send()
        .await
        .problem(422, "shrink_refused");
    assert_eq!(p["constraint"]["current"], 10);
    srv.post(&format!("/v1/volumes/{vid}/extend"))
        .token(&tenant.secret)
        .json(&json!({ "size_gib": 200 }))
        .send()
        .await
        .problem(409, "volume_pool_full");
    let grown = srv
        .post(&format!("/v1/volumes/{vid}/extend"))
        .token(&tenant.secret)
        .json(&json!({ "size_gib": 20 }))
        .send()
        .await
        .ok(202);
    assert_eq!((grown["state"].as_str(), grown["size_gib"].as_u64()), (Some("extending"), Some(20)));
    let spec_x = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    assert_eq!(spec_x["size_bytes"], 20u64 << 30);
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&host.credential).send().await.ok(200);
    report(&srv, &host, &vid, &spec_x["generation"], "present", json!({})).await;
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&tenant.secret).send().await.ok(200);
    assert_eq!(v["state"], "available");
    let usage = srv
        .get(&format!("/v1/usage?resource_id={vid}&meter=disk_gib_seconds"))
        .token(&tenant.secret)
        .send()
        .await
        .ok(200);
    let recs = usage["items"].as_array().expect("records");
    let sizes: Vec<(i64, bool)> =
        recs.iter().map(|r| (r["multiplier"].as_i64().unwrap(), r["end_at"].is_null())).collect();
    assert!(
        sizes.contains(&(10, false)) && sizes.contains(&(20, true)),
        "the 10 GiB interval closed, a 20 GiB one open: {usage}"
    );
    let spec = spec_x;

    // Delete: the key is gone in the same transaction; the host is told to wipe.
    let gone = srv.delete(&format!("/v1/volumes/{vid}")).token(&tenant.secret).send().await.ok(202);
    assert_eq!(gone["state"], "deleting");
    assert_eq!(gone["wipe_evidence"]["method"], "crypto");
    assert!(gone["wipe_evidence"]["key_destroyed_at"].is_string(), "{gone}");
    assert_eq!(
        srv.store.volume_key_for_host(&vid, Some(host.id.as_str())).await.expect("read"),
        None,
        "the sealed key is no longer stored"
    );
    srv.get(&format!("/agent/v1/volumes/{vid}/key"))
        .token(&host.credential)
        .send()
        .await
        .problem(409, "volume_key_not_needed");
    let d = desired(&srv, &host).await;
    let spec2 = spec_of(&d, &vid).expect("still told").clone();
    assert_eq!(spec2["present"], false);
    assert_ne!(spec2["generation"], spec["generation"], "a new generation to act on");
    srv.delete(&format!("/v1/volumes/{vid}")).token(&tenant.secret).send().await.problem(409, "volume_deleted");
    // A report of the old generation changes nothing.
    report(&srv, &host, &vid, &spec["generation"], "absent", json!({ "bytes_overwritten": 1 })).await;
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&tenant.secret).send().await.ok(200);
    assert_eq!(v["state"], "deleting", "a stale report is ignored");
    // Absent: deleted, with what the wipe overwrote; the interval closes; quota freed.
    report(&srv, &host, &vid, &spec2["generation"], "absent", json!({ "bytes_overwritten": 2_134_016 })).await;
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&tenant.secret).send().await.ok(200);
    assert_eq!(v["state"], "deleted");
    assert_eq!(v["wipe_evidence"]["bytes_overwritten"], 2_134_016);
    assert!(v["wipe_evidence"]["completed_at"].is_string());
    let usage = srv
        .get(&format!("/v1/usage?resource_id={vid}&meter=disk_gib_seconds"))
        .token(&tenant.secret)
        .send()
        .await
        .ok(200);
    assert!(usage["items"][0]["end_at"].is_string(), "closed once deleted: {usage}");
    assert!(spec_of(&desired(&srv, &host).await, &vid).is_none(), "the host is no longer told");
    // The name is free again; the deleted volume stays listed with its evidence.
    srv.post("/v1/volumes").token(&tenant.secret).json(&body("data", 10)).send().await.ok(201);
    let deleted = srv.list_all(&tenant.secret, "/v1/volumes?state=deleted").await;
    assert_eq!(deleted.len(), 1);
}

#[tokio::test]
async fn volumes_follow_quota_and_tenancy() {
    let srv = TestServer::start().await;
    srv.post("/v1/volume-types").token(&srv.operator).json(&json!({ "name": "standard" })).send().await.ok(201);
    let host = srv.enroll_host("store-1", with_pool(1000), &[]).await;
    let a = srv.tenant_with_admin("acme").await;
    let b = srv.tenant_with_admin("globex").await;
    let pa = id(&srv.create_project(&a.secret, None, "web").await);
    let pb = id(&srv.create_project(&b.secret, None, "web").await);
    srv.call(reqwest::Method::PUT, "/v1/quotas")
        .token(&a.secret)
        .json(&json!({ "scope_id": pa, "limits": { "volume_gib": 15 } }))
        .send()
        .await
        .ok(200);
    let va = srv
        .post("/v1/volumes")
        .token(&a.secret)
        .json(&json!({ "project_id": pa, "name": "one", "size_gib": 10 }))
        .send()
        .await
        .ok(201);
    let p = srv
        .post("/v1/volumes")
        .token(&a.secret)
        .json(&json!({ "project_id": pa, "name": "two", "size_gib": 10 }))
        .send()
        .await
        .problem(409, "quota_exceeded");
    assert!(p["detail"].as_str().unwrap().contains("volume_gib"), "{p}");
    // Another tenant neither sees nor touches it, nor creates in its project.
    let vid = id(&va);
    srv.get(&format!("/v1/volumes/{vid}")).token(&b.secret).send().await.problem(404, "not_found");
    srv.delete(&format!("/v1/volumes/{vid}")).token(&b.secret).send().await.problem(404, "not_found");
    assert!(srv.list_ids(&b.secret, "/v1/volumes").await.is_empty());
    srv.post("/v1/volumes")
        .token(&b.secret)
        .json(&json!({ "project_id": pa, "name": "sneak", "size_gib": 1 }))
        .send()
        .await
        .problem(404, "not_found");
    srv.post("/v1/volumes")
        .token(&b.secret)
        .json(
            &json!({ "project_id": pb, "name": "own", "size_gib": 1, "instance_id": "ins_01jz8x3m5q2v7w9k4r6t8y0b1c" }),
        )
        .send()
        .await
        .problem(422, "invalid_reference");
    // The agent reports only its own volumes: one of another host's is not applied.
    let other = srv.enroll_host("store-2", with_pool(1000), &[]).await;
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    let ack = report(&srv, &other, &vid, &spec["generation"], "present", json!({})).await;
    assert_eq!(ack["applied"], 0);
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&a.secret).send().await.ok(200);
    assert_eq!(v["state"], "creating", "another host's report changed nothing");
}

fn op_of(v: &Value) -> String {
    v["operation"]["id"].as_str().expect("operation id").to_string()
}

#[tokio::test]
async fn a_volume_is_hot_plugged_or_attached_cold_and_freed_by_detach_or_the_instances_delete() {
    use common::fleet::{Boots, TestAgent};
    let srv = TestServer::start().await;
    srv.post("/v1/volume-types").token(&srv.operator).json(&json!({ "name": "standard" })).send().await.ok(201);
    let host = srv.enroll_host("h1", with_pool(100), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 1, 1024).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let created = srv.create_instance(&tok, &project, "vm-1", "small").await.ok(202);
    let iid = id(&created["instance"]);
    assert_eq!(srv.wait_op(&tok, &op_of(&created)).await["status"], "succeeded");
    let vol = srv
        .post("/v1/volumes")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "data", "size_gib": 5, "instance_id": iid }))
        .send()
        .await
        .ok(201);
    let vid = id(&vol);
    assert_eq!(vol["host_id"], host.id.as_str(), "made where the instance runs");
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    report(&srv, &host, &vid, &spec["generation"], "present", json!({})).await;

    // Running: hot-plugged. `attaching` until the host reports the disk in the guest.
    let att = srv
        .post(&format!("/v1/volumes/{vid}/attach"))
        .token(&tok)
        .json(&json!({ "instance_id": iid }))
        .send()
        .await
        .ok(202);
    assert_eq!(att["state"], "attaching");
    let aid = id(&att);
    let plugs = |state: &str, detail: Option<&str>| json!([{ "attachment_id": aid, "state": state, "detail": detail }]);
    let gen_of = |d: &Value| {
        d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == iid.as_str()).expect("spec")
            ["generation"]
            .clone()
    };
    let d = desired(&srv, &host).await;
    let g = gen_of(&d);
    let guest = |generation: &Value, volumes: Value| json!({ "instances": [{ "instance_id": iid, "generation": generation, "state": "running", "volumes": volumes }] });
    let att_state = || async {
        srv.get(&format!("/v1/volume-attachments/{aid}")).token(&tok).send().await.ok(200)["state"].clone()
    };
    srv.post("/agent/v1/observed").token(&host.credential).json(&guest(&g, json!([]))).send().await.ok(200);
    assert_eq!(att_state().await, "attaching", "not in the guest yet");
    srv.post("/agent/v1/observed")
        .token(&host.credential)
        .json(&guest(&g, plugs("plugged", None)))
        .send()
        .await
        .ok(200);
    assert_eq!(att_state().await, "attached");
    // Detached from the running guest: `detaching` until it lets go.
    let a = srv.post(&format!("/v1/volumes/{vid}/detach")).token(&tok).send().await.ok(202);
    assert_eq!(a["state"], "detaching");
    assert!(a["detach_requested_at"].is_string());
    srv.post(&format!("/v1/volumes/{vid}/detach"))
        .token(&tok)
        .json(&json!({ "force": true }))
        .send()
        .await
        .problem(403, "forbidden");
    srv.post(&format!("/v1/volumes/{vid}/detach")).token(&tok).send().await.problem(409, "detach_in_progress");
    let g2 = gen_of(&desired(&srv, &host).await);
    // A report from before the detach, the disk gone: not enough (the host may not have
    // heard of the detach yet). One at its generation, still unplugging: not yet.
    srv.post("/agent/v1/observed").token(&host.credential).json(&guest(&g, json!([]))).send().await.ok(200);
    srv.post("/agent/v1/observed")
        .token(&host.credential)
        .json(&guest(&g2, plugs("unplugging", None)))
        .send()
        .await
        .ok(200);
    assert_eq!(att_state().await, "detaching");
    srv.post("/agent/v1/observed").token(&host.credential).json(&guest(&g2, json!([]))).send().await.ok(200);
    assert_eq!(att_state().await, "detached");
    assert_eq!(srv.get(&format!("/v1/volumes/{vid}")).token(&tok).send().await.ok(200)["state"], "available");
    // A hot-plug that fails ends the attachment with the host's reason; the volume is free.
    let att = srv
        .post(&format!("/v1/volumes/{vid}/attach"))
        .token(&tok)
        .json(&json!({ "instance_id": iid }))
        .send()
        .await
        .ok(202);
    let failed = json!([{ "attachment_id": id(&att), "state": "failed", "detail": "no free bus" }]);
    let g3 = gen_of(&desired(&srv, &host).await);
    srv.post("/agent/v1/observed").token(&host.credential).json(&guest(&g3, failed)).send().await.ok(200);
    let a = srv.get(&format!("/v1/volume-attachments/{}", id(&att))).token(&tok).send().await.ok(200);
    assert_eq!(a["state"], "detached", "{a}");
    assert!(a["detail"].as_str().unwrap().contains("no free bus"), "{a}");
    assert_eq!(srv.get(&format!("/v1/volumes/{vid}")).token(&tok).send().await.ok(200)["state"], "available");

    // Stopped: attached at once (the next boot has it).
    let stop = srv.post(&format!("/v1/instances/{iid}/stop")).token(&tok).send().await.ok(202);
    let stopped = srv.wait_op(&tok, &op_of(&stop)).await;
    assert_eq!(stopped["status"], "succeeded");

    let att =
        srv.post(&format!("/v1/volumes/{vid}/attach")).token(&tok).json(&json!({ "instance_id": iid })).send().await;
    if att.status != 202 {
        // Once seen in a full CI run (409 instance_transitioning, "is stopping", right after
        // the stop succeeded): say what moved the instance, for whoever meets it next.
        let inst = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
        let events = srv.list_all(&tok, &format!("/v1/instances/{iid}/events")).await;
        panic!(
            "the cold attach was refused: {}\nthe stop: {stopped}\nthe instance: {inst}\nits events: {events:#?}",
            att.text
        );
    }
    let att = att.ok(202);
    assert_eq!((att["state"].as_str(), att["slot"].as_u64()), (Some("attached"), Some(0)));
    assert_eq!(att["serial"], vol["serial"]);
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&tok).send().await.ok(200);
    assert_eq!((v["state"].as_str(), v["instance_id"].as_str()), (Some("in_use"), Some(iid.as_str())));
    // The instance's spec carries it; its host may fetch the key to boot it.
    let d = desired(&srv, &host).await;
    let inst = d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == iid.as_str()).expect("spec");
    assert_eq!(inst["volumes"][0]["volume_id"], vid.as_str());
    assert_eq!(inst["volumes"][0]["slot"], 0);
    assert_eq!(inst["volumes"][0]["encrypted"], true);
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&host.credential).send().await.ok(200);
    // In use: not deleted, not attached twice.
    srv.delete(&format!("/v1/volumes/{vid}")).token(&tok).send().await.problem(409, "volume_busy");
    srv.post(&format!("/v1/volumes/{vid}/attach"))
        .token(&tok)
        .json(&json!({ "instance_id": iid }))
        .send()
        .await
        .problem(409, "volume_busy");
    let listed = srv.list_all(&tok, &format!("/v1/volume-attachments?volume_id={vid}&state=attached")).await;
    assert_eq!(listed.len(), 1, "the two before it ended: {listed:?}");
    // Its local volume keeps the instance on its host: no resize that moves it, no drain.
    let h2 = srv.enroll_host("h2", inventory(16, 65_536), &[]).await;
    let _agent2 = TestAgent::start(&srv.base, &h2, Boots::Succeed);
    srv.shape("big", 12, 4096).await;
    let p = srv
        .post(&format!("/v1/instances/{iid}/resize"))
        .token(&tok)
        .json(&json!({ "shape": "big" }))
        .send()
        .await
        .problem(409, "local_volumes_pin_host");
    assert!(p["detail"].as_str().unwrap().contains(&vid), "{p}");
    let d = srv.post(&format!("/v1/hosts/{}/drain", host.id)).token(&srv.operator).send().await.ok(202);
    let op = srv.wait_op(&srv.operator, d["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["status"], "failed", "{op}");
    assert!(op["items"][0]["detail"].as_str().unwrap().contains("local volumes"), "{op}");
    let i = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!(i["host_id"], host.id.as_str(), "still on its volume's host");
    srv.post(&format!("/v1/hosts/{}/uncordon", host.id)).token(&srv.operator).send().await;

    // Detach: the volume is free, the spec no longer has it; the record stays.
    let ended = srv.post(&format!("/v1/volumes/{vid}/detach")).token(&tok).send().await.ok(202);
    assert_eq!(ended["state"], "detached");
    assert!(ended["detached_at"].is_string());
    assert_eq!(srv.get(&format!("/v1/volumes/{vid}")).token(&tok).send().await.ok(200)["state"], "available");
    let d = desired(&srv, &host).await;
    let inst = d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == iid.as_str()).expect("spec");
    assert!(inst["volumes"].as_array().is_none_or(|a| a.is_empty()), "{inst}");
    srv.post(&format!("/v1/volumes/{vid}/detach")).token(&tok).send().await.problem(409, "volume_not_attached");

    // Attached again, then the instance is deleted: the volume outlives it, free.
    srv.post(&format!("/v1/volumes/{vid}/attach"))
        .token(&tok)
        .json(&json!({ "instance_id": iid }))
        .send()
        .await
        .ok(202);
    let del = srv.delete(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&del)).await["status"], "succeeded");
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&tok).send().await.ok(200);
    assert_eq!(v["state"], "available", "{v}");
    assert!(v["instance_id"].is_null());
    let all = srv.list_all(&tok, &format!("/v1/volume-attachments?volume_id={vid}")).await;
    assert!(all.iter().all(|a| a["state"] == "detached") && all.len() == 4, "{all:?}");
}

#[tokio::test]
async fn an_instance_created_with_volumes_is_placed_on_their_host_or_refused_saying_why() {
    use common::fleet::{Boots, TestAgent};
    let srv = TestServer::start().await;
    srv.post("/v1/volume-types").token(&srv.operator).json(&json!({ "name": "standard" })).send().await.ok(201);
    let h1 = srv.enroll_host("h1", with_pool(100), &[]).await;
    let h2 = srv.enroll_host("h2", with_pool(100), &[]).await;
    let (_a1, _a2) =
        (TestAgent::start(&srv.base, &h1, Boots::Succeed), TestAgent::start(&srv.base, &h2, Boots::Succeed));
    srv.shape("small", 1, 1024).await;
    srv.public_image("debian-12").await;
    let (tok, project) = srv.tenant_project("acme").await;
    // Two volumes on h2 (an operator puts them there), one on h1.
    let mut vols = Vec::new();
    for (name, host) in [("data", &h2), ("logs", &h2), ("elsewhere", &h1)] {
        let v = srv
            .post("/v1/volumes")
            .token(&srv.operator)
            .json(&json!({ "project_id": project, "name": name, "size_gib": 1, "host_id": host.id }))
            .send()
            .await
            .ok(201);
        let spec = spec_of(&desired(&srv, host).await, &id(&v)).expect("told").clone();
        report(&srv, host, &id(&v), &spec["generation"], "present", json!({})).await;
        vols.push(id(&v));
    }
    let create = |name: &str, volumes: Value| {
        srv.post("/v1/instances").token(&tok).json(&json!({ "project_id": project, "name": name, "shape": "small",
            "image": "debian-12", "volumes": volumes }))
    };
    // Volumes in two pools: refused, nothing written.
    let p = create("vm-x", json!(["data", "elsewhere"])).send().await.problem(422, "volumes_on_different_hosts");
    assert!(p["detail"].as_str().unwrap().contains(h1.id.as_str()), "{p}");
    // On their host, with both from the first boot, in slot order.
    let made = create("vm-1", json!(["data", vols[1]])).send().await.ok(202);
    let iid = id(&made["instance"]);
    assert_eq!(made["instance"]["host_id"], h2.id.as_str(), "placed where its volumes are");
    let atts = srv.list_all(&tok, &format!("/v1/volume-attachments?instance_id={iid}")).await;
    let slots: Vec<(String, u64, String)> = atts
        .iter()
        .map(|a| {
            (a["volume_id"].as_str().unwrap().into(), a["slot"].as_u64().unwrap(), a["state"].as_str().unwrap().into())
        })
        .collect();
    assert!(
        slots.contains(&(vols[0].clone(), 0, "attached".into()))
            && slots.contains(&(vols[1].clone(), 1, "attached".into())),
        "{slots:?}"
    );
    let d = desired(&srv, &h2).await;
    let inst = d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == iid.as_str()).expect("spec");
    assert_eq!(inst["volumes"].as_array().map(Vec::len), Some(2), "the first spec has them: {inst}");
    // Taken: refused. Their host cordoned: placement says which constraint removed it.
    create("vm-2", json!(["data"])).send().await.problem(409, "volume_busy");
    srv.post(&format!("/v1/hosts/{}/cordon", h1.id)).token(&srv.operator).send().await.ok(200);
    let p = create("vm-3", json!(["elsewhere"])).send().await.problem(409, "no_valid_host");
    assert_eq!(p["constraint"]["removed"], json!({ "host_state": 1, "volume_host": 1 }), "{p}");
    assert_eq!(srv.get(&format!("/v1/volumes/{}", vols[2])).token(&tok).send().await.ok(200)["state"], "available");
    create("vm-4", json!(["nothing-by-that-name"])).send().await.problem(422, "invalid_reference");
}

#[tokio::test]
async fn a_boot_volume_is_the_instances_root_disk_and_goes_with_it_unless_kept() {
    use common::fleet::{Boots, TestAgent};
    let srv = TestServer::start().await;
    srv.post("/v1/volume-types").token(&srv.operator).json(&json!({ "name": "standard" })).send().await.ok(201);
    let host = srv.enroll_host("h1", with_pool(100), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 1, 1024).await;
    srv.public_image("debian-12").await;
    let (tok, project) = srv.tenant_project("acme").await;
    let mut ids = Vec::new();
    for name in ["root-a", "root-b", "data"] {
        let v = srv
            .post("/v1/volumes")
            .token(&tok)
            .json(&json!({ "project_id": project, "name": name, "size_gib": 1 }))
            .send()
            .await
            .ok(201);
        let spec = spec_of(&desired(&srv, &host).await, &id(&v)).expect("told").clone();
        report(&srv, &host, &id(&v), &spec["generation"], "present", json!({})).await;
        ids.push(id(&v));
    }
    let create = |name: &str, root: &str, keep: bool, volumes: Value| {
        srv.post("/v1/instances").token(&tok).json(&json!({ "project_id": project, "name": name, "shape": "small",
            "image": "debian-12", "boot_volume": root, "keep_boot_volume": keep, "volumes": volumes }))
    };
    let kept = create("vm-kept", "root-a", true, json!(["data"])).send().await.ok(202);
    let dropped = create("vm-dropped", "root-b", false, json!([])).send().await.ok(202);
    let (kid, did) = (id(&kept["instance"]), id(&dropped["instance"]));
    for made in [&kept, &dropped] {
        assert_eq!(srv.wait_op(&tok, &op_of(made)).await["status"], "succeeded");
    }
    // The spec carries the root disk apart from the data disks.
    let d = desired(&srv, &host).await;
    let spec = d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == kid.as_str()).expect("spec");
    assert_eq!(spec["boot_volume"]["volume_id"], ids[0].as_str(), "{spec}");
    assert_eq!(spec["volumes"].as_array().map(|v| v.len()), Some(1), "data only: {spec}");
    assert_eq!(spec["volumes"][0]["volume_id"], ids[2].as_str());
    let atts = srv.list_all(&tok, &format!("/v1/volume-attachments?instance_id={kid}")).await;
    let boot = atts.iter().find(|a| a["boot"] == true).expect("a boot attachment");
    assert_eq!((boot["volume_id"].as_str(), boot["slot"].as_u64()), (Some(ids[0].as_str()), Some(8)));
    // Not detached, not rebuilt.
    srv.post(&format!("/v1/volumes/{}/detach", ids[0])).token(&tok).send().await.problem(409, "boot_volume");
    srv.post(&format!("/v1/instances/{kid}/rebuild"))
        .token(&tok)
        .json(&json!({ "image": "debian-12" }))
        .send()
        .await
        .problem(409, "boot_from_volume");
    // Deleted: the kept one is available again (with the data volume); the other is deleted.
    for iid in [&kid, &did] {
        let del = srv.delete(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(202);
        assert_eq!(srv.wait_op(&tok, &op_of(&del)).await["status"], "succeeded");
    }
    let state = |v: &str| {
        let v = v.to_string();
        let srv = &srv;
        let tok = tok.clone();
        async move { srv.get(&format!("/v1/volumes/{v}")).token(&tok).send().await.ok(200)["state"].clone() }
    };
    assert_eq!(state(&ids[0]).await, "available", "kept");
    assert_eq!(state(&ids[2]).await, "available", "a data volume is never deleted with its instance");
    assert_eq!(state(&ids[1]).await, "deleting", "deleted with its instance: its key destroyed, its host told to wipe");
}

#[tokio::test]
async fn snapshots_follow_their_volume_its_quota_tenancy_and_billing() {
    let srv = TestServer::start().await;
    srv.post("/v1/volume-types").token(&srv.operator).json(&json!({ "name": "standard" })).send().await.ok(201);
    let host = srv.enroll_host("store-1", with_pool(1000), &[]).await;
    let a = srv.tenant_with_admin("acme").await;
    let b = srv.tenant_with_admin("globex").await;
    let pa = id(&srv.create_project(&a.secret, None, "web").await);
    let pb = id(&srv.create_project(&b.secret, None, "web").await);
    let quota = |gib: u32| {
        let (srv, token, pa) = (&srv, a.secret.clone(), pa.clone());
        async move {
            srv.call(reqwest::Method::PUT, "/v1/quotas")
                .token(&token)
                .json(&json!({ "scope_id": pa, "limits": { "volume_gib": gib } }))
                .send()
                .await
                .ok(200);
        }
    };
    quota(15).await;
    let vol = srv
        .post("/v1/volumes")
        .token(&a.secret)
        .json(&json!({ "project_id": pa, "name": "one", "size_gib": 10 }))
        .send()
        .await
        .ok(201);
    let vid = id(&vol);
    let snap_body = |name: &str| json!({ "volume_id": vid, "name": name });
    // Not yet made: nothing to snapshot.
    srv.post("/v1/snapshots").token(&a.secret).json(&snap_body("s0")).send().await.problem(409, "volume_busy");
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    report(&srv, &host, &vid, &spec["generation"], "present", json!({})).await;

    // A snapshot counts against volume_gib at its volume's size (10 + 10 > 15).
    let p =
        srv.post("/v1/snapshots").token(&a.secret).json(&snap_body("s1")).send().await.problem(409, "quota_exceeded");
    assert!(p["detail"].as_str().unwrap().contains("volume_gib"), "{p}");
    quota(40).await;
    // A freeze asked of a detached volume: there is no guest to freeze, and it says so.
    let mut body = snap_body("s1");
    body["fs_freeze"] = json!(true);
    let s1 = srv.post("/v1/snapshots").token(&a.secret).json(&body).send().await.ok(202);
    assert_eq!((s1["state"].as_str(), s1["size_gib"].as_u64()), (Some("creating"), Some(10)), "{s1}");
    assert!(s1["consistency_detail"].as_str().unwrap().contains("not attached to a running guest"), "{s1}");
    let s1id = id(&s1);
    // One change to a volume's chain at a time.
    srv.post("/v1/snapshots").token(&a.secret).json(&snap_body("s2")).send().await.problem(409, "snapshot_in_progress");
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    assert_eq!(spec["layers"][0]["snapshot_id"], s1id.as_str(), "the host is told to add its layer: {spec}");
    assert!(spec["layers"][0].get("fs_freeze").is_none(), "nothing to freeze offline: {spec}");
    // A report of the generation before changes nothing; the one that carries it, settles it.
    report(&srv, &host, &vid, &json!(spec["generation"].as_i64().unwrap() - 1), "present", json!({})).await;
    let s = srv.get(&format!("/v1/snapshots/{s1id}")).token(&a.secret).send().await.ok(200);
    assert_eq!(s["state"], "creating");
    report(&srv, &host, &vid, &spec["generation"], "present", json!({})).await;
    let s = srv.get(&format!("/v1/snapshots/{s1id}")).token(&a.secret).send().await.ok(200);
    assert_eq!((s["state"].as_str(), s["consistency"].as_str()), (Some("available"), Some("crash_consistent")), "{s}");
    let usage = |rid: String| {
        let (srv, token) = (&srv, a.secret.clone());
        async move {
            srv.get(&format!("/v1/usage?resource_id={rid}&meter=disk_gib_seconds")).token(&token).send().await.ok(200)
        }
    };
    let u = usage(s1id.clone()).await;
    assert_eq!(
        (u["items"][0]["dimension"].as_str(), u["items"][0]["multiplier"].as_u64()),
        (Some("snapshot"), Some(10))
    );
    assert!(u["items"][0]["end_at"].is_null(), "open while it is kept: {u}");

    // Another tenant neither sees nor touches it, nor snapshots or copies what is not its own.
    srv.get(&format!("/v1/snapshots/{s1id}")).token(&b.secret).send().await.problem(404, "not_found");
    srv.delete(&format!("/v1/snapshots/{s1id}")).token(&b.secret).send().await.problem(404, "not_found");
    assert!(srv.list_ids(&b.secret, "/v1/snapshots").await.is_empty());
    srv.post("/v1/snapshots").token(&b.secret).json(&snap_body("sneak")).send().await.problem(404, "not_found");
    let copy_of = |token: &str, project: &str, name: &str, gib: u32, extra: Value| {
        let mut body = json!({ "project_id": project, "name": name, "size_gib": gib, "snapshot_id": s1id });
        body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        srv.post("/v1/volumes").token(token).json(&body).send()
    };
    copy_of(&b.secret, &pb, "sneak", 10, json!({})).await.problem(422, "invalid_reference");

    // Bad input: a copy smaller than the snapshot, or from two sources.
    let p = copy_of(&a.secret, &pa, "small", 5, json!({})).await.problem(422, "invalid_value");
    assert_eq!(p["constraint"]["min"], 10, "{p}");
    copy_of(&a.secret, &pa, "two", 10, json!({ "image": "x" })).await.problem(422, "conflicting_fields");
    // A copy is made on the snapshot's host, from the chain below its layer.
    let copy = copy_of(&a.secret, &pa, "copy", 10, json!({})).await.ok(201);
    assert_eq!(copy["host_id"], host.id.as_str());
    let cspec = spec_of(&desired(&srv, &host).await, &id(&copy)).expect("told").clone();
    assert_eq!(cspec["source_chain"], json!({ "volume_id": vid, "layers": [], "encrypted": true }), "{cspec}");
    // While it is filled, the source's chain holds still.
    let s2 =
        srv.post("/v1/snapshots").token(&a.secret).json(&snap_body("s2")).send().await.problem(409, "snapshot_in_use");
    assert!(s2["detail"].as_str().unwrap().contains(&id(&copy)), "{s2}");
    report(&srv, &host, &id(&copy), &cspec["generation"], "present", json!({})).await;

    // Revert: only to the latest snapshot.
    let s2 = srv.post("/v1/snapshots").token(&a.secret).json(&snap_body("s2")).send().await.ok(202);
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    report(&srv, &host, &vid, &spec["generation"], "present", json!({})).await;
    let p = srv
        .post(&format!("/v1/volumes/{vid}/revert"))
        .token(&a.secret)
        .json(&json!({ "snapshot_id": s1id }))
        .send()
        .await
        .problem(409, "not_latest_snapshot");
    assert_eq!(p["constraint"]["latest"], id(&s2).as_str(), "{p}");
    let v = srv
        .post(&format!("/v1/volumes/{vid}/revert"))
        .token(&a.secret)
        .json(&json!({ "snapshot_id": id(&s2) }))
        .send()
        .await
        .ok(202);
    assert_eq!(v["state"], "reverting");
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    assert_eq!(spec["layers"][1]["revision"], 1, "the top layer is made again: {spec}");
    report(&srv, &host, &vid, &spec["generation"], "present", json!({})).await;
    let v = srv.get(&format!("/v1/volumes/{vid}")).token(&a.secret).send().await.ok(200);
    assert_eq!(v["state"], "available");

    // Deleted: out of the chain, settled by the host's report; its interval closes.
    let d = srv.delete(&format!("/v1/snapshots/{}", id(&s2))).token(&a.secret).send().await.ok(202);
    assert_eq!(d["state"], "deleting");
    let spec = spec_of(&desired(&srv, &host).await, &vid).expect("told").clone();
    assert_eq!(spec["layers"].as_array().map(Vec::len), Some(1), "{spec}");
    report(&srv, &host, &vid, &spec["generation"], "present", json!({})).await;
    let d = srv.get(&format!("/v1/snapshots/{}", id(&s2))).token(&a.secret).send().await.ok(200);
    assert_eq!(d["state"], "deleted");
    assert!(usage(id(&s2)).await["items"][0]["end_at"].is_string());

    // The volume deleted takes its snapshots with it; nothing can be taken of it after.
    srv.delete(&format!("/v1/volumes/{vid}")).token(&a.secret).send().await.ok(202);
    let s = srv.get(&format!("/v1/snapshots/{s1id}")).token(&a.secret).send().await.ok(200);
    assert_eq!(s["state"], "deleted", "{s}");
    assert!(usage(s1id.clone()).await["items"][0]["end_at"].is_string());
    srv.post("/v1/snapshots").token(&a.secret).json(&snap_body("late")).send().await.problem(409, "volume_busy");
    // Quota: the copy (10) and the deleting volume (10) are held; no snapshot is.
    let q = srv.get(&format!("/v1/quotas?scope_id={pa}")).token(&a.secret).send().await.ok(200);
    let gib = q.as_array().unwrap().iter().find(|q| q["resource"] == "volume_gib").cloned().unwrap_or_default();
    assert_eq!(gib["used"], 20, "{q}");
    // The reconciliation covers the volume and the snapshot: its ledger and the draft
    // invoice's lines agree.
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let r = srv
        .get(&format!("/v1/billing/reconciliation?period={period}&tenant_id={}", a.tenant_id))
        .token(&srv.operator)
        .send()
        .await
        .ok(200);
    let rows = r["rows"].as_array().unwrap();
    for rid in [&vid, &s1id] {
        let row = rows.iter().find(|x| x["resource_id"] == rid.as_str()).unwrap_or_else(|| panic!("{rid}: {r}"));
        assert_eq!(row["matches"], true, "{row}");
    }
    assert!(r["differences"].as_array().unwrap().is_empty(), "{r}");
    // The draft invoice has a line for the volumes' and one for the snapshots'
    // GiB-seconds, each naming the usage records it is made of.
    let draft = srv
        .get(&format!("/v1/invoices/current?tenant_id={}&period={period}", a.tenant_id))
        .token(&srv.operator)
        .send()
        .await
        .ok(200);
    let lines = draft["lines"].as_array().unwrap();
    for dim in ["standard", "snapshot"] {
        let l = lines
            .iter()
            .find(|l| l["meter"] == "disk_gib_seconds" && l["dimension"] == dim)
            .unwrap_or_else(|| panic!("{dim}: {draft}"));
        assert!(!l["record_ids"].as_array().unwrap().is_empty(), "{l}");
    }
}

#[tokio::test]
async fn an_rbd_volume_is_made_grown_and_removed_by_the_server_and_reached_from_any_host() {
    use common::fleet::{Boots, TestAgent};
    use std::os::unix::fs::PermissionsExt;
    // No Ceph cluster runs here: the `rbd` command is a script that records its arguments.
    let dir = tempfile::tempdir().unwrap();
    let (log, script) = (dir.path().join("rbd.log"), dir.path().join("rbd"));
    std::fs::write(&script, format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let calls = || std::fs::read_to_string(&log).unwrap_or_default();
    let rbd = plinth_server::app::storage::driver::RbdConfig {
        pool: "volumes".into(),
        user: "plinth".into(),
        monitors: vec!["192.0.2.1:6789".into()],
        command: script.clone(),
    };
    let config = plinth_server::ServerConfig {
        rbd: Some(rbd),
        reconcile_period: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let srv = TestServer::start_with(config).await;
    let op = srv.operator.clone();
    // An rbd volume is wiped by destroying its key: an unencrypted rbd type is refused.
    srv.post("/v1/volume-types")
        .token(&op)
        .json(&json!({ "name": "ceph-plain", "backend": "rbd", "encrypted": false }))
        .send()
        .await
        .problem(422, "rbd_needs_encryption");
    let vt = srv.post("/v1/volume-types").token(&op).json(&json!({ "name": "ceph", "backend": "rbd" })).send().await;
    let vt = id(&vt.ok(201));
    let (h1, h2) = (srv.enroll_host("h1", with_pool(100), &[]).await, srv.enroll_host("h2", with_pool(100), &[]).await);
    let (_a1, _a2) =
        (TestAgent::start(&srv.base, &h1, Boots::Succeed), TestAgent::start(&srv.base, &h2, Boots::Succeed));
    srv.shape("small", 1, 1024).await;
    srv.public_image("debian-12").await;
    let (tok, project) = srv.tenant_project("acme").await;

    // Made by the server through `rbd create`, on no host; available once it has.
    let v = srv
        .post("/v1/volumes")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "shared", "size_gib": 5, "volume_type_id": vt }))
        .send()
        .await
        .ok(201);
    let vid = id(&v);
    assert!(v["host_id"].is_null(), "on no host: {v}");
    let path = format!("/v1/volumes/{vid}");
    srv.wait_until(&tok, &path, "the volume available", |v| v["state"] == "available").await;
    assert!(
        calls().contains(&format!("--id plinth -m 192.0.2.1:6789 create --size 5120M volumes/{vid}")),
        "{}",
        calls()
    );
    assert!(spec_of(&desired(&srv, &h1).await, &vid).is_none(), "no host's pool has it");
    let u = srv.get(&format!("/v1/usage?resource_id={vid}&meter=disk_gib_seconds")).token(&tok).send().await.ok(200);
    assert_eq!(u["items"][0]["multiplier"], 5, "billed from available: {u}");
    // Grown by `rbd resize`.
    srv.post(&format!("{path}/extend")).token(&tok).json(&json!({ "size_gib": 6 })).send().await.ok(202);
    srv.wait_until(&tok, &path, "the volume grown", |v| v["state"] == "available").await;
    assert!(calls().contains(&format!("resize --size 6144M volumes/{vid}")), "{}", calls());
    // A snapshot: `rbd snap create` and `snap protect` by the server, billed like a local
    // one; a copy of it is a clone, flattened and grown, under the source's key; a revert
    // of the detached volume rolls the image back; a delete unprotects and removes it.
    let s1 = srv
        .post("/v1/snapshots")
        .token(&tok)
        .json(&json!({ "volume_id": vid, "name": "s1", "fs_freeze": true }))
        .send()
        .await
        .ok(202);
    let sid = id(&s1);
    let spath = format!("/v1/snapshots/{sid}");
    let s1 = srv.wait_until(&tok, &spath, "the snapshot available", |s| s["state"] == "available").await;
    assert_eq!(s1["consistency"], "crash_consistent", "{s1}");
    assert!(s1["consistency_detail"].as_str().unwrap().contains("not attached"), "{s1}");
    assert!(calls().contains(&format!("snap create volumes/{vid}@{sid}")), "{}", calls());
    assert!(calls().contains(&format!("snap protect volumes/{vid}@{sid}")), "{}", calls());
    let u = srv.get(&format!("/v1/usage?resource_id={sid}&meter=disk_gib_seconds")).token(&tok).send().await.ok(200);
    assert_eq!(
        (u["items"][0]["dimension"].as_str(), u["items"][0]["multiplier"].as_u64()),
        (Some("snapshot"), Some(6))
    );
    let local = srv.post("/v1/volume-types").token(&op).json(&json!({ "name": "local" })).send().await.ok(201);
    let p = srv
        .post("/v1/volumes")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "copy", "size_gib": 6, "snapshot_id": sid,
            "volume_type_id": local["id"] }))
        .send()
        .await
        .problem(422, "other_backend");
    assert_eq!(p["constraint"]["backend"], "rbd", "{p}");
    let copy = srv
        .post("/v1/volumes")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "copy", "size_gib": 7, "snapshot_id": sid,
            "volume_type_id": vt }))
        .send()
        .await
        .ok(201);
    let cid = id(&copy);
    let cpath = format!("/v1/volumes/{cid}");
    srv.wait_until(&tok, &cpath, "the copy available", |v| v["state"] == "available").await;
    let c = calls();
    let steps = [
        format!("clone volumes/{vid}@{sid} volumes/{cid}"),
        format!("flatten volumes/{cid}"),
        format!("resize --size 7168M volumes/{cid}"),
    ];
    let at: Vec<Option<usize>> = steps.iter().map(|s| c.find(s.as_str())).collect();
    assert!(at.iter().all(Option::is_some) && at.windows(2).all(|w| w[0] < w[1]), "cloned, flattened, grown: {c}");
    srv.post(&format!("{path}/revert")).token(&tok).json(&json!({ "snapshot_id": sid })).send().await.ok(202);
    srv.wait_until(&tok, &path, "the volume reverted", |v| v["state"] == "available").await;
    assert!(calls().contains(&format!("snap rollback volumes/{vid}@{sid}")), "{}", calls());
    srv.delete(&spath).token(&tok).send().await.ok(202);
    srv.wait_until(&tok, &spath, "the snapshot deleted", |s| s["state"] == "deleted").await;
    let c = calls();
    let (un, rm) = (format!("snap unprotect volumes/{vid}@{sid}"), format!("snap rm volumes/{vid}@{sid}"));
    assert!(c.find(&un).zip(c.find(&rm)).is_some_and(|(a, b)| a < b), "unprotected, then removed: {c}");

    // Any host reaches it: an instance with it is not pinned, its host is told the RBD
    // image, and only that host gets the key.
    let made = srv
        .post("/v1/instances")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "vm-1", "shape": "small", "image": "debian-12",
            "volumes": ["shared", "copy"] }))
        .send()
        .await
        .ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&made)).await["status"], "succeeded");
    let iid = id(&made["instance"]);
    let inst = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    let (on, other) = if inst["host_id"] == h1.id.as_str() { (&h1, &h2) } else { (&h2, &h1) };
    let d = desired(&srv, on).await;
    let spec = d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == iid.as_str()).expect("spec");
    assert_eq!(
        spec["volumes"][0]["connection"],
        json!({ "driver": "rbd", "pool": "volumes", "image": vid, "user": "plinth", "monitors": ["192.0.2.1:6789"] }),
        "{spec}"
    );
    let key = srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&on.credential).send().await.ok(200);
    assert_eq!(key["key"].as_str().map(str::len), Some(64));
    // The copy, a clone of the source's LUKS image, opens with the source's key.
    let copy_key = srv.get(&format!("/agent/v1/volumes/{cid}/key")).token(&on.credential).send().await.ok(200);
    assert_eq!(copy_key["key"], key["key"]);
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&other.credential).send().await.problem(404, "not_found");
    // Not pinned: a drain moves the instance, and its volume with it (unlike a local one).
    let d = srv.post(&format!("/v1/hosts/{}/drain", on.id)).token(&op).send().await.ok(202);
    let drained = srv.wait_op(&op, d["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(drained["status"], "succeeded", "{drained}");
    let inst = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!(inst["host_id"], other.id.as_str(), "moved: {inst}");
    let d = desired(&srv, other).await;
    let spec = d["instances"].as_array().unwrap().iter().find(|i| i["instance_id"] == iid.as_str()).expect("spec");
    assert_eq!(spec["volumes"][0]["connection"]["image"], vid.as_str(), "{spec}");
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&other.credential).send().await.ok(200);
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&on.credential).send().await.problem(404, "not_found");
    let on = other;

    // Deleted with its instance gone: the key destroyed, then `rbd rm`.
    let del = srv.delete(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&del)).await["status"], "succeeded");
    srv.delete(&path).token(&tok).send().await.ok(202);
    srv.delete(&cpath).token(&tok).send().await.ok(202);
    let v = srv.wait_until(&tok, &path, "the volume deleted", |v| v["state"] == "deleted").await;
    srv.wait_until(&tok, &cpath, "the copy deleted", |v| v["state"] == "deleted").await;
    assert!(calls().contains(&format!("rm volumes/{cid}")), "{}", calls());
    assert!(v["wipe_evidence"]["key_destroyed_at"].is_string(), "{v}");
    assert!(calls().contains(&format!("rm volumes/{vid}")), "{}", calls());
    srv.get(&format!("/agent/v1/volumes/{vid}/key")).token(&on.credential).send().await.problem(404, "not_found");
}
