//! What an agent reports beyond states: the serial console it ships (offsets, a restarted
//! agent resuming, rotation, followers woken by new output, only the instance's own host
//! may write) and the runtime evidence (operators see it, tenants do not). And console
//! input: who may type, what is refused, and how it reaches only the instance's host, in
//! order, until acknowledged.

mod common;

use common::fleet::{Boots, TestAgent, TestHost, inventory};
use common::{TestServer, id};
use serde_json::{Value, json};
use std::time::Duration;

/// Sends console bytes as the agent of `cred` does; answers the acknowledged offset.
async fn ship(srv: &TestServer, cred: &str, iid: &str, stream: &str, offset: u64, reset: bool, data: &str) -> u64 {
    let r = srv
        .post(&format!("/agent/v1/instances/{iid}/console?stream={stream}&offset={offset}&reset={reset}"))
        .token(cred)
        .header("content-type", "application/octet-stream")
        .body(data.to_string())
        .send()
        .await
        .ok(200);
    assert_eq!(r["stream"], stream);
    r["acked"].as_u64().unwrap()
}

/// A server with two hosts and the shape `small`.
async fn two_hosts() -> (TestServer, TestHost, TestHost) {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let other = srv.enroll_host("h2", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    (srv, host, other)
}

async fn console(srv: &TestServer, tok: &str, iid: &str, query: &str) -> Value {
    srv.get(&format!("/v1/instances/{iid}/console{query}")).token(tok).send().await.ok(200)
}

#[tokio::test]
async fn the_console_is_shipped_in_order_once_and_followed() {
    let (srv, host, other) = two_hosts().await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    let on = v["instance"]["host_id"].as_str().unwrap().to_string();
    let (mine, theirs) = if on == host.id.as_str() { (&host, &other) } else { (&other, &host) };

    // Nothing yet: an empty window; a new stream starts at 0.
    let c = console(&srv, &tok, &iid, "").await;
    assert_eq!((c["data"].as_str(), c["next_offset"].as_u64()), (Some(""), Some(0)));
    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 0, false, "").await, 0);

    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 0, false, "boot line 1\n").await, 12);
    // A resend of what the server has (a restarted agent) changes nothing; an overlap
    // appends only the new part.
    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 0, false, "boot line 1\n").await, 12);
    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 5, false, "line 1\nREADY\n").await, 18);
    // A restarted agent asks where the server is.
    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 0, false, "").await, 18);
    let c = console(&srv, &tok, &iid, "").await;
    assert_eq!(c["data"], "boot line 1\nREADY\n");
    assert_eq!(c["next_offset"], 18);

    // Reading from an offset, and a follower woken by new output.
    let c = console(&srv, &tok, &iid, "?offset=12").await;
    assert_eq!(c["data"], "READY\n");
    let follow = {
        let (base, tok, iid) = (srv.base.clone(), tok.clone(), iid.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{base}/v1/instances/{iid}/console?offset=18&wait=30"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Whether the follower is already parked or not, it answers with exactly the new
    // output, well before its 30 s wait ends.
    ship(&srv, &mine.credential, &iid, "41", 18, false, "more\n").await;
    let got = tokio::time::timeout(Duration::from_secs(10), follow).await.expect("the follower woke").unwrap();
    assert_eq!(got["data"], "more\n");
    assert_eq!(got["offset"], 18);

    // A gap is marked, not hidden; a rotation (reset) restarts the stream.
    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 100, false, "late\n").await, 105);
    assert_eq!(ship(&srv, &mine.credential, &iid, "41", 0, true, "rotated\n").await, 8);
    let all = console(&srv, &tok, &iid, "").await["data"].as_str().unwrap().to_string();
    assert!(all.contains("77 bytes of console output were not received"), "{all}");
    assert!(all.ends_with("[plinth: console log restarted]\nrotated\n"), "{all}");

    // Only the instance's host may write; other tenants cannot read.
    srv.post(&format!("/agent/v1/instances/{iid}/console?stream=1&offset=0"))
        .token(&theirs.credential)
        .body("spoofed")
        .send()
        .await
        .problem(404, "instance_not_on_host");
    let (other_tok, _) = srv.tenant_project("globex").await;
    srv.get(&format!("/v1/instances/{iid}/console")).token(&other_tok).send().await.problem(404, "not_found");
    assert!(!console(&srv, &tok, &iid, "").await["data"].as_str().unwrap().contains("spoofed"));
    // Bad windows are refused.
    srv.get(&format!("/v1/instances/{iid}/console?limit=0")).token(&tok).send().await.problem(422, "invalid_value");
}

#[tokio::test]
async fn runtime_evidence_is_for_operators_only() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "spec 1", |i| i["spec_generation"] == 1).await;
    let evidence = json!({ "runtime": "qemu", "accelerator": "tcg", "machine": "q35", "pid": 4242,
        "command_line": ["qemu-system-x86_64", "-machine", "q35"], "qmp_socket": "/var/lib/x/qmp.sock" });
    let report =
        json!({ "instances": [{ "instance_id": iid, "generation": 1, "state": "stopped", "evidence": evidence }] });
    srv.post("/agent/v1/observed").token(&host.credential).json(&report).send().await.ok(200);

    let seen = srv.get(&format!("/v1/instances/{iid}")).token(&srv.operator).send().await.ok(200);
    assert_eq!(seen["runtime"]["pid"], 4242, "{seen}");
    assert_eq!(seen["runtime"]["command_line"][2], "q35");
    let theirs = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200);
    assert!(theirs["runtime"].is_null(), "a tenant sees no host details: {theirs}");
    let listed = srv.get(&format!("/v1/instances?project_id={project}")).token(&tok).send().await.ok(200);
    assert!(listed["items"][0]["runtime"].is_null());
    // New evidence for the same state is taken (a restarted guest has a new pid).
    let mut again = report.clone();
    again["instances"][0]["evidence"]["pid"] = json!(4343);
    let ack = srv.post("/agent/v1/observed").token(&host.credential).json(&again).send().await.ok(200);
    assert_eq!(ack["applied"], 1, "{ack}");
    let seen = srv.get(&format!("/v1/instances/{iid}")).token(&srv.operator).send().await.ok(200);
    assert_eq!(seen["runtime"]["pid"], 4343);
}

/// Takes console input as the agent of `cred` does.
async fn take(srv: &TestServer, cred: &str, acked: Value, wait: u64) -> Vec<(String, i64, String)> {
    let b = srv
        .post("/agent/v1/console-input")
        .token(cred)
        .json(&json!({ "acked": acked, "wait": wait }))
        .send()
        .await
        .ok(200);
    b["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["instance_id"].as_str().unwrap().to_string(),
                c["seq"].as_i64().unwrap(),
                c["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn console_input_reaches_only_the_instances_host_in_order_until_acknowledged() {
    let (srv, host, other) = two_hosts().await;
    let acme = srv.tenant_with_admin("acme").await;
    let project = id(&srv.create_project(&acme.secret, None, "web").await);
    let tok = acme.secret.clone();
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    let on = v["instance"]["host_id"].as_str().unwrap().to_string();
    let (mine, theirs) = if on == host.id.as_str() { (&host, &other) } else { (&other, &host) };
    let input = |tok: &str, data: &str| {
        srv.post(&format!("/v1/instances/{iid}/console/input")).token(tok).json(&json!({ "data": data }))
    };

    // Not running yet (no agent has booted it): refused, with the state that refused it.
    let p = input(&tok, "ls\n").send().await.problem(409, "instance_not_running");
    assert_eq!(p["constraint"]["rule"], "instance-state", "{p}");
    let _agent = TestAgent::start(&srv.base, mine, Boots::Succeed);
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;

    // Bad input and other callers: refused, nothing waits.
    input(&tok, "").send().await.problem(422, "invalid_value");
    let p = input(&tok, &"x".repeat(4097)).send().await.problem(422, "invalid_value");
    assert_eq!(p["constraint"]["max"], 4096, "{p}");
    srv.post(&format!("/v1/instances/{iid}/console/input"))
        .token(&tok)
        .json(&json!({ "data": "ls", "extra": 1 }))
        .send()
        .await
        .problem(422, "invalid_field");
    let (globex, _) = srv.tenant_project("globex").await;
    input(&globex, "ls\n").send().await.problem(404, "not_found");
    let viewer = srv.create_user(&tok, &acme.tenant_id, "watcher").await;
    srv.bind(&tok, &id(&viewer), "viewer", None).await;
    let (_, viewer_tok) = srv.mint_token(&tok, &id(&viewer), "key").await;
    input(&viewer_tok, "ls\n").send().await.problem(403, "forbidden");
    srv.get(&format!("/v1/instances/{iid}/console")).token(&viewer_tok).send().await.ok(200);
    assert!(take(&srv, &mine.credential, json!([]), 0).await.is_empty(), "nothing was accepted");

    // Accepted in order; only the instance's host gets it, and again until acknowledged.
    let a = input(&tok, "echo one\n").send().await.ok(202);
    let b = input(&tok, "echo two\n").send().await.ok(202);
    assert_eq!((a["seq"].as_i64(), b["seq"].as_i64(), b["bytes"].as_u64()), (Some(1), Some(2), Some(9)));
    assert!(take(&srv, &theirs.credential, json!([]), 0).await.is_empty(), "another host gets nothing");
    let want = vec![(iid.clone(), 1, "echo one\n".to_string()), (iid.clone(), 2, "echo two\n".to_string())];
    assert_eq!(take(&srv, &mine.credential, json!([]), 0).await, want);
    assert_eq!(take(&srv, &mine.credential, json!([]), 0).await, want, "not acknowledged: sent again");
    // Another host cannot acknowledge it away.
    take(&srv, &theirs.credential, json!([{ "instance_id": iid, "seq": 2 }]), 0).await;
    assert_eq!(take(&srv, &mine.credential, json!([{ "instance_id": iid, "seq": 1 }]), 0).await, want[1..].to_vec());

    // A waiting agent is woken by new input, and gets only what it has not acknowledged.
    let waiting = {
        let (base, cred, iid) = (srv.base.clone(), mine.credential.clone(), iid.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/agent/v1/console-input"))
                .bearer_auth(cred)
                .json(&json!({ "acked": [{ "instance_id": iid, "seq": 2 }], "wait": 30 }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    input(&tok, "echo three\n").send().await.ok(202);
    let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("the agent woke").unwrap();
    assert_eq!(got["chunks"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!((got["chunks"][0]["seq"].as_i64(), got["chunks"][0]["data"].as_str()), (Some(3), Some("echo three\n")));

    // At most 64 KiB waits per instance: 16 inputs of 4 KiB fill it (with 11 bytes waiting).
    let block = "y".repeat(4096);
    for _ in 0..15 {
        input(&tok, &block).send().await.ok(202);
    }
    let p = input(&tok, &block).send().await.problem(409, "console_input_full");
    assert_eq!(p["constraint"]["max"], 65536, "{p}");
    let waiting = take(&srv, &mine.credential, json!([]), 0).await;
    assert_eq!(waiting.len(), 16, "the refused input added nothing");
    // Once taken, there is room again; with nothing left waiting, the next input still
    // follows everything before it (an agent never takes it for one it already wrote).
    let last = waiting.last().unwrap().1;
    take(&srv, &mine.credential, json!([{ "instance_id": iid, "seq": last }]), 0).await;
    assert!(take(&srv, &mine.credential, json!([]), 0).await.is_empty());
    let next = input(&tok, &block).send().await.ok(202);
    assert_eq!(next["seq"].as_i64(), Some(last + 1), "{next}");
}
