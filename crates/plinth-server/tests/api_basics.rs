//! The API's common behaviour: problem+json errors, input refusals, pagination, If-Match,
//! health and metrics, the audit log, host enrolment and write-only BMC credentials.

mod common;

use common::*;
use serde_json::{Value, json};

// ---- errors ----------------------------------------------------------------------------

#[tokio::test]
async fn errors_are_problem_json_carrying_the_request_id() {
    let srv = TestServer::start().await;
    let op = &srv.operator;

    let answers = [
        srv.get("/v1/projects").send().await,
        srv.get("/v1/projects").token("plt_nonsense").send().await,
        srv.get(&format!("/v1/projects/{}", plinth_api::ProjectId::generate())).token(op).send().await,
        srv.get("/v1/projects?limit=0").token(op).send().await,
        srv.post("/v1/tenants").token(op).json(&json!({ "name": "acme", "colour": "red" })).send().await,
        srv.post("/v1/tenants").token(op).raw_json("{\"name\": ").send().await,
        // A body that is not declared as JSON.
        srv.post("/v1/tenants").token(op).body("{\"name\":\"acme\"}").send().await,
    ];
    let expected = [
        (401, "unauthenticated"),
        (401, "unauthenticated"),
        (404, "not_found"),
        (400, "invalid_limit"),
        (422, "invalid_field"),
        (400, "invalid_body"),
        (415, "unsupported_media_type"),
    ];
    let mut request_ids = Vec::new();
    for (r, (status, code)) in answers.iter().zip(expected) {
        let p = r.problem(status, code);
        let rid = p["request_id"].as_str().unwrap().to_string();
        assert!(rid.starts_with("req_"), "{}: request ids are req_ ids: {rid}", r.what);
        request_ids.push(rid);
    }
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), expected.len(), "every request has its own id");

    // Successful answers carry a request id too.
    let ok = srv.get("/v1/tenants").token(op).send().await;
    ok.ok(200);
    assert!(ok.header("x-request-id").is_some_and(|h| h.starts_with("req_")), "x-request-id on success");
    assert!(srv.list_all(op, "/v1/tenants").await.is_empty(), "none of the refused creates wrote a tenant");
}

#[tokio::test]
async fn an_unknown_route_is_a_problem_with_a_request_id() {
    let srv = TestServer::start().await;
    let r = srv.get("/v1/no-such-things").token(&srv.operator).send().await;
    // Expected: 404 no_such_route as problem+json whose request_id equals x-request-id.
    r.problem(404, "no_such_route");
}

#[tokio::test]
async fn a_wrong_method_is_a_problem() {
    let srv = TestServer::start().await;
    let r = srv.call(reqwest::Method::PUT, "/v1/projects").token(&srv.operator).json(&json!({})).send().await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert!(r.header("allow").is_some(), "405 names the allowed methods");
    assert_problem_shape(&r);
}

// ---- input refusals -------------------------------------------------------------------

#[tokio::test]
async fn invalid_input_is_refused_with_its_rule_and_writes_nothing() {
    let srv = TestServer::start().await;
    let op = srv.operator.clone();
    let admin = srv.tenant_with_admin("acme").await;
    srv.create_project(&admin.secret, None, "existing").await;
    let projects_before = srv.list_all(&op, "/v1/projects").await;
    let shapes_before = srv.list_all(&op, "/v1/shapes").await;
    let audit_before = srv.list_all(&op, "/v1/audit-log").await.len();

    // Unknown field.
    let r = srv.post("/v1/projects").token(&admin.secret).json(&json!({ "name": "web", "colour": "red" })).send().await;
    let p = r.problem(422, "invalid_field");
    assert!(p["detail"].as_str().unwrap().contains("colour"), "the detail names the field: {p}");
    // Missing required field.
    srv.post("/v1/projects")
        .token(&admin.secret)
        .json(&json!({ "description": "x" }))
        .send()
        .await
        .problem(422, "invalid_field");
    // Not a DNS label.
    for bad in ["Web", "web_1", "-web", "web-", "", &"a".repeat(64)] {
        let r = srv.post("/v1/projects").token(&admin.secret).json(&json!({ "name": bad })).send().await;
        let p = r.problem(422, "invalid_name");
        assert_eq!(p["constraint"], json!({ "field": "name", "rule": "dns-label" }), "name {bad:?}: {p}");
    }

    let shape = |vcpus: Value, memory: Value| json!({ "name": "c1.small", "vcpus": vcpus, "memory_mib": memory });
    // Zero is below the minimum.
    let p = srv
        .post("/v1/shapes")
        .token(&op)
        .json(&shape(json!(0), json!(1024)))
        .send()
        .await
        .problem(422, "invalid_quantity");
    assert_eq!(p["constraint"]["field"], "vcpus", "{p}");
    assert_eq!(p["constraint"]["rule"], "min", "{p}");
    // Too many for the wire type (u32) and negative, and not a number at all.
    for (v, m) in [
        (json!(99_999_999_999u64), json!(1024)),
        (json!(2), json!(-1)),
        (json!(-2), json!(1024)),
        (json!("two"), json!(1024)),
    ] {
        let r = srv.post("/v1/shapes").token(&op).json(&shape(v.clone(), m.clone())).send().await;
        r.problem(422, "invalid_field");
    }
    // Above the maximum.
    srv.post("/v1/shapes")
        .token(&op)
        .json(&shape(json!(4096), json!(1024)))
        .send()
        .await
        .problem(422, "invalid_quantity");

    // A body over 1 MiB, with and without an Idempotency-Key.
    let big = json!({ "name": "big", "description": "x".repeat(1024 * 1024 + 10) });
    let r = srv.post("/v1/projects").token(&admin.secret).json(&big).send().await;
    r.problem(413, "body_too_large");
    let r = srv.post("/v1/projects").token(&admin.secret).header("Idempotency-Key", "big-1").json(&big).send().await;
    r.problem(413, "body_too_large");

    assert_eq!(srv.list_all(&op, "/v1/projects").await, projects_before, "refusals wrote no project");
    assert_eq!(srv.list_all(&op, "/v1/shapes").await, shapes_before, "refusals wrote no shape");
    // Each refusal is audited as a failure, and only that.
    let audit = srv.list_all(&op, "/v1/audit-log").await;
    let new: Vec<&Value> = audit[audit_before..].iter().collect();
    assert!(!new.is_empty());
    for rec in new {
        assert_eq!(rec["result"], "failure", "only refusals since: {rec}");
    }
}

// ---- pagination -----------------------------------------------------------------------

#[tokio::test]
async fn pagination_visits_every_item_once() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(id(&srv.create_project(&admin.secret, None, &format!("p{i}")).await));
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let url = match &cursor {
            Some(c) => format!("/v1/projects?limit=2&cursor={c}"),
            None => "/v1/projects?limit=2".to_string(),
        };
        let page = srv.get(&url).token(&admin.secret).send().await.ok(200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "limit is respected: {page}");
        pages.push(items.len());
        seen.extend(items.iter().map(id));
        match page.get("next_cursor") {
            Some(Value::String(c)) => cursor = Some(c.clone()),
            None | Some(Value::Null) => break,
            Some(other) => panic!("next_cursor is a string or absent, not {other}"),
        }
        assert!(pages.len() < 10, "pagination never ends");
    }
    assert_eq!(pages, vec![2, 2, 1], "5 items at limit 2 are three pages");
    assert_eq!(seen, made, "every project once, in creation order");

    // A page that is exactly full is the last one when nothing follows.
    let page = srv.get("/v1/projects?limit=5").token(&admin.secret).send().await.ok(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 5);
    assert!(page.get("next_cursor").is_none_or(Value::is_null), "no next page after the last item: {page}");

    for (q, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("limit=-1", "invalid_query"),
        ("limit=two", "invalid_query"),
        ("cursor=..%2F..%2Fetc", "invalid_cursor"),
    ] {
        srv.get(&format!("/v1/projects?{q}")).token(&admin.secret).send().await.problem(400, code);
    }
}

// ---- If-Match -------------------------------------------------------------------------

#[tokio::test]
async fn if_match_guards_updates_and_deletes() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let p = srv.create_project(&admin.secret, None, "web").await;
    let path = format!("/v1/projects/{}", id(&p));
    assert_eq!(p["generation"], 1);

    let v = srv
        .patch(&path)
        .token(&admin.secret)
        .header("If-Match", "1")
        .json(&json!({ "description": "first" }))
        .send()
        .await
        .ok(200);
    assert_eq!((v["generation"].clone(), v["description"].clone()), (json!(2), json!("first")));

    // Stale.
    let r = srv
        .patch(&path)
        .token(&admin.secret)
        .header("If-Match", "1")
        .json(&json!({ "description": "lost update" }))
        .send()
        .await;
    let prob = r.problem(409, "generation_mismatch");
    assert_eq!(prob["constraint"]["expected"], 1, "{prob}");
    assert_eq!(prob["constraint"]["current"], 2, "{prob}");
    let now = srv.get(&path).token(&admin.secret).send().await.ok(200);
    assert_eq!((now["generation"].clone(), now["description"].clone()), (json!(2), json!("first")), "nothing changed");

    // Quoted and weak forms of the current generation are accepted.
    for (header, gen_after) in [("\"2\"", 3), ("W/\"3\"", 4)] {
        let v = srv
            .patch(&path)
            .token(&admin.secret)
            .header("If-Match", header)
            .json(&json!({ "description": format!("gen {gen_after}") }))
            .send()
            .await
            .ok(200);
        assert_eq!(v["generation"], gen_after);
    }
    for bad in ["abc", "0", "-1"] {
        srv.patch(&path)
            .token(&admin.secret)
            .header("If-Match", bad)
            .json(&json!({ "description": "x" }))
            .send()
            .await
            .problem(400, "invalid_if_match");
    }
    // Without If-Match the update is unconditional.
    let v = srv.patch(&path).token(&admin.secret).json(&json!({ "description": "blind" })).send().await.ok(200);
    assert_eq!(v["generation"], 5);

    // Deletes are guarded the same way.
    srv.delete(&path).token(&admin.secret).header("If-Match", "4").send().await.problem(409, "generation_mismatch");
    srv.get(&path).token(&admin.secret).send().await.ok(200);
    let r = srv.delete(&path).token(&admin.secret).header("If-Match", "5").send().await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(r.text.is_empty(), "204 has no body");
    srv.get(&path).token(&admin.secret).send().await.problem(404, "not_found");
}

// ---- health and metrics ---------------------------------------------------------------

#[tokio::test]
async fn health_readiness_and_metrics() {
    let srv = TestServer::start().await;
    assert_eq!(srv.get("/healthz").send().await.ok(200), json!({ "status": "ok" }));
    assert_eq!(srv.get("/readyz").send().await.ok(200), json!({ "status": "ok" }));

    let admin = srv.tenant_with_admin("acme").await;
    let p = srv.create_project(&admin.secret, None, "web").await;
    srv.get("/v1/projects").token(&admin.secret).send().await.ok(200);
    srv.get(&format!("/v1/projects/{}", id(&p))).token(&admin.secret).send().await.ok(200);
    srv.get("/v1/projects?limit=0").token(&admin.secret).send().await.problem(400, "invalid_limit");

    let r = srv.get("/metrics").send().await;
    r.ok(200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("application/openmetrics-text"), "OpenMetrics");
    let count = |labels: &str| -> Option<u64> {
        let prefix = format!("plinth_http_requests_total{{{labels}}} ");
        r.text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|n| n.trim().parse().expect("a count"))
    };
    assert!(r.text.contains("# TYPE plinth_http_requests counter"));
    assert!(
        count(r#"route="/v1/projects",method="GET",status="200""#).is_some_and(|n| n >= 1),
        "GET /v1/projects is counted under its route: {}",
        r.text
    );
    assert_eq!(count(r#"route="/v1/projects",method="POST",status="201""#), Some(1));
    assert_eq!(count(r#"route="/v1/projects",method="GET",status="400""#), Some(1), "refusals are counted by status");
    assert_eq!(count(r#"route="/v1/projects/{id}",method="GET",status="200""#), Some(1), "routes are templates");
    assert!(!r.text.contains(&id(&p)), "no object id becomes a label");
    assert!(
        r.text
            .lines()
            .any(|l| l.starts_with("plinth_http_request_duration_seconds_bucket{")
                && l.contains("route=\"/v1/projects\"")),
        "latency is a histogram by route: {}",
        r.text
    );
}

// ---- audit ----------------------------------------------------------------------------

#[tokio::test]
async fn the_audit_log_records_changes_and_refusals() {
    let srv = TestServer::start().await;
    let op = srv.operator.clone();
    let acme = srv.tenant_with_admin("acme").await;
    let other = srv.tenant_with_admin("other").await;

    let r = srv.post("/v1/projects").token(&acme.secret).json(&json!({ "name": "web" })).send().await;
    let project = r.ok(201);
    let created_rid = r.header("x-request-id").unwrap();
    let r = srv.post("/v1/projects").token(&acme.secret).json(&json!({ "name": "Not_A_Label" })).send().await;
    r.problem(422, "invalid_name");
    let refused_rid = r.header("x-request-id").unwrap();
    srv.create_project(&other.secret, None, "other-web").await;

    let creates = srv.list_all(&op, "/v1/audit-log?action=projects.create").await;
    let ok = creates.iter().find(|r| r["request_id"] == created_rid.as_str()).expect("the create is audited");
    assert_eq!(ok["result"], "success");
    assert_eq!(ok["status"], 201);
    assert_eq!(ok["target"], project["id"]);
    assert_eq!(ok["tenant_id"], acme.tenant_id.as_str());
    assert_eq!(ok["actor_user_id"], acme.user_id.as_str());
    assert_eq!(ok["actor_token_id"], acme.token_id.as_str());
    assert!(ok["error_code"].is_null());
    let bad = creates.iter().find(|r| r["request_id"] == refused_rid.as_str()).expect("the refusal is audited");
    assert_eq!(bad["result"], "failure");
    assert_eq!(bad["status"], 422);
    assert_eq!(bad["error_code"], "invalid_name");
    assert_eq!(bad["actor_user_id"], acme.user_id.as_str());
    assert_eq!(bad["tenant_id"], acme.tenant_id.as_str());
    assert_eq!(creates.len(), 3, "two successful creates and one refusal: {creates:#?}");
    for rec in &creates {
        assert_eq!(rec["action"], "projects.create");
    }

    // A tenant-admin sees its own tenant's records only.
    let mine = srv.list_all(&acme.secret, "/v1/audit-log").await;
    assert!(mine.iter().any(|r| r["request_id"] == created_rid.as_str()));
    assert!(mine.iter().any(|r| r["request_id"] == refused_rid.as_str()));
    for rec in &mine {
        assert_eq!(rec["tenant_id"], acme.tenant_id.as_str(), "acme's admin sees only acme's records: {rec}");
    }
    let text = serde_json::to_string(&mine).unwrap();
    assert_mentions_none("acme's audit log", &text, &[other.tenant_id.clone(), other.user_id.clone()]);

    // A member and a viewer may not read it.
    for role in ["member", "viewer"] {
        let u = srv.create_user(&acme.secret, &acme.tenant_id, &format!("a-{role}")).await;
        srv.bind(&acme.secret, &id(&u), role, None).await;
        let (_, secret) = srv.mint_token(&acme.secret, &id(&u), "key").await;
        srv.get("/v1/audit-log").token(&secret).send().await.problem(403, "forbidden");
    }

    // Filters.
    srv.patch(&format!("/v1/projects/{}", id(&project)))
        .token(&acme.secret)
        .json(&json!({ "description": "d" }))
        .send()
        .await
        .ok(200);
    let by_target = srv.list_all(&op, &format!("/v1/audit-log?target={}", id(&project))).await;
    let actions: Vec<&str> = by_target.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, vec!["projects.create", "projects.update"], "records about the project, oldest first");
    for rec in &by_target {
        assert_eq!(rec["target"], project["id"]);
    }
    let by_actor = srv.list_all(&op, &format!("/v1/audit-log?actor={}", other.user_id)).await;
    assert_eq!(by_actor.len(), 1, "other's admin made one change: {by_actor:#?}");
    assert_eq!(by_actor[0]["action"], "projects.create");
    let filtered_for_tenant = srv.list_all(&acme.secret, &format!("/v1/audit-log?actor={}", other.user_id)).await;
    assert!(filtered_for_tenant.is_empty(), "a filter does not widen a tenant-admin's view");

    // Reading the log is not itself a change.
    let n = srv.list_all(&op, "/v1/audit-log").await.len();
    srv.list_all(&op, "/v1/audit-log").await;
    assert_eq!(srv.list_all(&op, "/v1/audit-log").await.len(), n);
}

// ---- enrolment ------------------------------------------------------------------------

async fn join_token(srv: &TestServer) -> (Value, String) {
    let v = srv.post("/v1/host-join-tokens").token(&srv.operator).json(&json!({})).send().await.ok(201);
    let secret = v["secret"].as_str().expect("join secret").to_string();
    assert!(secret.starts_with("pjt_"), "{secret}");
    (v, secret)
}

#[tokio::test]
async fn a_join_token_enrols_exactly_one_host() {
    let srv = TestServer::start().await;
    let (jt, secret) = join_token(&srv).await;
    assert!(jt["used_at"].is_null());

    let r = srv.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": "node-7" })).send().await;
    let e = r.ok(201);
    let host_id = e["host_id"].as_str().unwrap().to_string();
    assert!(host_id.starts_with("hst_"), "{e}");
    assert!(e["credential"].as_str().unwrap().starts_with("phc_"), "{e}");

    // Replay, and other hostnames with the same token.
    for hostname in ["node-7", "node-8"] {
        let r = srv.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": hostname })).send().await;
        r.problem(401, "join_token_used");
    }
    // Garbage and forged tokens.
    let ulid = jt["id"].as_str().unwrap().strip_prefix("hjt_").unwrap().to_string();
    for bad in [
        "garbage".to_string(),
        format!("pjt_{ulid}_{}", "0".repeat(64)),
        format!("pjt_{}_{}", "0".repeat(26), "a".repeat(64)),
    ] {
        let r = srv.post("/agent/v1/enroll").json(&json!({ "join_token": bad, "hostname": "node-9" })).send().await;
        r.problem(401, "invalid_join_token");
    }

    let hosts = srv.list_all(&srv.operator, "/v1/hosts").await;
    assert_eq!(hosts.len(), 1, "one host: {hosts:#?}");
    assert_eq!(hosts[0]["id"], host_id.as_str());
    assert_eq!(hosts[0]["name"], "node-7");
    assert_eq!(hosts[0]["state"], "enrolling");
    let enrolling = srv.list_all(&srv.operator, "/v1/hosts?state=enrolling").await;
    assert_eq!(enrolling.len(), 1);

    let used = srv.get(&format!("/v1/host-join-tokens/{}", id(&jt))).token(&srv.operator).send().await.ok(200);
    assert!(used["used_at"].is_string(), "{used}");
    assert_eq!(used["used_by_host_id"], host_id.as_str());

    // Secrets are never shown again.
    for path in
        ["/v1/host-join-tokens".to_string(), format!("/v1/host-join-tokens/{}", id(&jt)), "/v1/hosts".to_string()]
    {
        let r = srv.get(&path).token(&srv.operator).send().await;
        r.ok(200);
        assert!(!r.text.contains(&secret), "{path} shows the join secret");
        assert!(!r.text.contains(e["credential"].as_str().unwrap()), "{path} shows the host credential");
    }

    let audit = srv.list_all(&srv.operator, "/v1/audit-log?action=agent.enroll").await;
    assert_eq!(audit.iter().filter(|r| r["result"] == "success").count(), 1, "{audit:#?}");
    assert_eq!(audit.iter().filter(|r| r["result"] == "failure").count(), 5, "each refused enrolment is audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrolments_with_one_token_make_one_host() {
    let srv = TestServer::start().await;
    let (_, secret) = join_token(&srv).await;
    let answers = futures::future::join_all((0..6).map(|i| {
        srv.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": format!("racer-{i}") })).send()
    }))
    .await;
    let created: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1, "{answers:#?}");
    for r in answers.iter().filter(|r| r.status != 201) {
        r.problem(401, "join_token_used");
    }
    assert_eq!(srv.list_all(&srv.operator, "/v1/hosts").await.len(), 1);
}

#[tokio::test]
async fn an_invalid_hostname_is_refused_and_keeps_the_token() {
    let srv = TestServer::start().await;
    let (_, secret) = join_token(&srv).await;
    let r = srv.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": "Not_Valid" })).send().await;
    r.problem(422, "invalid_name");
    assert!(srv.list_all(&srv.operator, "/v1/hosts").await.is_empty());
    srv.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": "valid" })).send().await.ok(201);
}

// ---- BMC credentials --------------------------------------------------------------------

#[tokio::test]
async fn bmc_passwords_are_write_only() {
    let srv = TestServer::start().await;
    let op = srv.operator.clone();
    let first = "hunter2-Very-Secret-BMC";
    let second = "rotated-Even-More-Secret";
    let r = srv
        .post("/v1/hosts")
        .token(&op)
        .json(&json!({
            "name": "node-1",
            "bmc": { "address": "10.0.0.5", "protocol": "redfish", "username": "admin", "password": first }
        }))
        .send()
        .await;
    let host = r.ok(201);
    assert!(!r.text.contains(first), "the create answer shows the password: {}", r.text);
    assert_eq!(host["bmc"]["has_password"], true, "{host}");
    assert_eq!(host["bmc"]["username"], "admin");
    let path = format!("/v1/hosts/{}", id(&host));

    let r = srv.patch(&path).token(&op).json(&json!({
        "bmc": { "address": "10.0.0.6", "protocol": "ipmi", "username": "root", "password": second }
    }));
    let r = r.send().await;
    let v = r.ok(200);
    assert!(!r.text.contains(second), "the update answer shows the password: {}", r.text);
    assert_eq!(v["bmc"]["has_password"], true);
    assert_eq!(v["bmc"]["address"], "10.0.0.6");

    let mut bodies = Vec::new();
    for p in [path.clone(), "/v1/hosts".into(), "/v1/hosts?state=enrolling".into(), "/v1/audit-log".into()] {
        let r = srv.get(&p).token(&op).send().await;
        r.ok(200);
        bodies.push((p, r.text));
    }
    for (p, text) in &bodies {
        for pw in [first, second] {
            assert!(!text.contains(pw), "GET {p} shows a BMC password");
        }
    }
    // Clearing the password is visible as has_password false.
    let v = srv
        .patch(&path)
        .token(&op)
        .json(&json!({ "bmc": { "address": "10.0.0.6", "protocol": "ipmi" } }))
        .send()
        .await
        .ok(200);
    assert_eq!(v["bmc"]["has_password"], false, "{v}");
}

#[tokio::test]
async fn a_join_token_carries_the_ca_fingerprint_of_an_https_server() {
    let plain = TestServer::start().await;
    let (jt, secret) = join_token(&plain).await;
    assert!(jt.get("ca_sha256").is_none(), "plain HTTP: no CA to pin: {jt}");
    assert_eq!(jt["agent_join_token"], secret.as_str());

    let ca = plinth_client::connect::Fingerprint([0xab; 32]);
    let config = plinth_server::ServerConfig { ca_sha256: Some(ca), ..Default::default() };
    let tls = TestServer::start_with(config).await;
    let (jt, secret) = join_token(&tls).await;
    assert_eq!(jt["ca_sha256"], "ab".repeat(32).as_str());
    assert_eq!(jt["agent_join_token"], format!("{secret}@sha256:{}", "ab".repeat(32)).as_str());
    let parsed = plinth_client::connect::JoinToken::parse(jt["agent_join_token"].as_str().unwrap()).unwrap();
    assert_eq!((parsed.secret.as_str(), parsed.ca), (secret.as_str(), Some(ca)));
    // Only the secret is sent at enrolment.
    let r = tls.post("/agent/v1/enroll").json(&json!({ "join_token": secret, "hostname": "pinned" })).send().await;
    r.ok(201);
}
