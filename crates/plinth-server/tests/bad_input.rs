//! Bad input as a newcomer sends it: names where ids belong, ids of objects that do not
//! exist, malformed references in every path, query and body field that takes one, and
//! inputs that expand (a commitment term of centuries). Every answer is a clear problem
//! with a stable code, never a 500 and never the database's own words; a read never writes
//! for something that does not exist.
//!
//! The sweep runs on SQLite, and on PostgreSQL when `PLINTH_TEST_DATABASE_URL` is set (the
//! README's test command sets it).

mod common;

use common::{TestServer, assert_problem_shape, id};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Words only a database (or its driver) says. None may reach a client.
const DATABASE_WORDS: [&str; 10] = [
    "constraint failed",
    "sqlstate",
    "violates",
    "foreign key",
    "unique constraint",
    "sqlx",
    "database error",
    "syntax error",
    "no such table",
    "duplicate key",
];

/// Malformed references: an id of the right shape that names nothing, a name where an id
/// belongs, quotes and SQL, a NUL, a path escape, and an over-long value.
fn malformed() -> Vec<String> {
    vec![
        "tnt_01KAAAAAAAAAAAAAAAAAAAAAAA".into(),
        "acme".into(),
        "x'); DELETE FROM tenants; --".into(),
        "a\u{0}b".into(),
        "../../etc/passwd".into(),
        "z".repeat(600),
    ]
}

/// Fields that name another object.
fn is_reference(field: &str) -> bool {
    field.ends_with("_id")
        || matches!(field, "project" | "tenant" | "shape" | "image" | "host" | "placement_group" | "user" | "target")
}

/// Resolves `$ref`s into the document's components.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// A body for `schema` that a careful client might send, except that every reference
/// field (required or not) holds `bad`.
fn body_for(doc: &Value, schema: &Value, bad: &str, depth: usize) -> Value {
    let s = resolve(doc, schema);
    if depth > 4 {
        return Value::Null;
    }
    for alt in ["oneOf", "anyOf", "allOf"] {
        if let Some(first) = s.get(alt).and_then(Value::as_array).and_then(|a| a.first()) {
            return body_for(doc, first, bad, depth + 1);
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array).and_then(|a| a.first()) {
        return e.clone();
    }
    let ty = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null").to_string(),
        _ if s.get("properties").is_some() => "object".into(),
        _ => "null".into(),
    };
    match ty.as_str() {
        "object" => {
            let required: Vec<&str> =
                s["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let mut out = Map::new();
            for (name, prop) in s["properties"].as_object().into_iter().flatten() {
                if is_reference(name) {
                    out.insert(name.clone(), Value::String(bad.to_string()));
                } else if required.contains(&name.as_str()) {
                    out.insert(name.clone(), body_for(doc, prop, bad, depth + 1));
                }
            }
            Value::Object(out)
        }
        "string" => match s["format"].as_str() {
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            _ => json!("sweep-1"),
        },
        "integer" | "number" => json!(s["minimum"].as_f64().map(|m| m.max(1.0) as i64).unwrap_or(1)),
        "boolean" => json!(false),
        "array" => json!([]),
        _ => Value::Null,
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the sweep saw: how many requests, and how many were refused for naming something
/// that does not exist (the control: the sweep reached the reference checks).
#[derive(Default)]
struct Sweep {
    requests: usize,
    missing_refused: usize,
}

/// Checks one answer: not a server error, a well-formed problem when refused, and no
/// database words anywhere in it.
fn check(r: &common::Resp, sweep: &mut Sweep) {
    sweep.requests += 1;
    assert!(r.status < 500, "{}: a server error for bad input: {} {}", r.what, r.status, r.text);
    let lower = r.text.to_lowercase();
    for w in DATABASE_WORDS {
        assert!(!lower.contains(w), "{}: the answer carries database text ({w:?}): {}", r.what, r.text);
    }
    if r.status >= 400 {
        let p = assert_problem_shape(r);
        if matches!(p["code"].as_str(), Some("invalid_reference" | "not_found")) {
            sweep.missing_refused += 1;
        }
    }
}

/// Sends malformed references to every operation of the public API that takes one: in
/// its path, in its string query parameters, and in its JSON body.
async fn sweep(srv: &TestServer) -> Sweep {
    let doc: Value = serde_json::from_str(&plinth_server::public_openapi().to_json().expect("openapi json"))
        .expect("the document is JSON");
    let mut sweep = Sweep::default();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let method: Method = method.to_uppercase().parse().expect("method");
            let params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
            let path_params: Vec<&str> =
                params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect();
            let query_params: Vec<&str> = params
                .iter()
                .filter(|p| p["in"] == "query" && resolve(&doc, &p["schema"])["type"] == "string")
                .filter_map(|p| p["name"].as_str())
                .filter(|n| *n != "wait")
                .collect();
            let body_schema = op["requestBody"]["content"]["application/json"]["schema"].clone();
            let takes_reference = !path_params.is_empty()
                || query_params.iter().any(|q| is_reference(q) || *q == "cursor")
                || !body_schema.is_null();
            if !takes_reference {
                continue;
            }
            for bad in malformed() {
                let mut url = path.clone();
                for p in &path_params {
                    url = url.replace(&format!("{{{p}}}"), &encode(&bad));
                }
                let query: String = query_params
                    .iter()
                    .filter(|q| is_reference(q) || path_params.is_empty())
                    .map(|q| format!("{q}={}", encode(&bad)))
                    .collect::<Vec<_>>()
                    .join("&");
                if !query.is_empty() {
                    url = format!("{url}?{query}");
                }
                let mut call = srv.call(method.clone(), &url).token(&srv.operator);
                if !body_schema.is_null() {
                    call = call.json(&body_for(&doc, &body_schema, &bad, 0));
                } else if method == Method::PUT {
                    call = call.body("bytes");
                }
                check(&call.send().await, &mut sweep);
            }
        }
    }
    sweep
}

async fn sweep_and_check(srv: &TestServer, backend: &str) {
    // Something to refer to, so references are checked against real rows too.
    let tenant = srv.create_tenant("sweep-tenant").await;
    srv.create_project(&srv.operator, Some(&id(&tenant)), "sweep-project").await;
    let s = sweep(srv).await;
    assert!(s.requests > 300, "{backend}: the sweep sent only {} requests", s.requests);
    // Control: the sweep reached the checks that find a reference naming nothing, so the
    // absence of database text above is not an absence of attempts.
    assert!(
        s.missing_refused > 100,
        "{backend}: only {} of {} answers refused a missing reference",
        s.missing_refused,
        s.requests
    );
}

#[tokio::test]
async fn no_database_text_reaches_a_client_on_sqlite() {
    let srv = TestServer::start().await;
    // Control: the database itself does say such things, so their absence from the
    // answers is the API's doing.
    let ghost = plinth_api::TenantId("tnt_01KAAAAAAAAAAAAAAAAAAAAAAA".into());
    let now = chrono::Utc::now();
    let orphan = plinth_api::Project {
        id: plinth_api::ProjectId::generate(),
        tenant_id: ghost,
        name: "orphan".into(),
        description: String::new(),
        labels: Default::default(),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let err = srv
        .store
        .insert(
            &orphan,
            &plinth_store::AuditEntry {
                actor_user_id: None,
                actor_token_id: None,
                action: "test.write".into(),
                request_id: "test".into(),
            },
        )
        .await
        .expect_err("dangling");
    assert!(err.to_string().to_lowercase().contains("foreign key"), "the database names the constraint: {err}");
    sweep_and_check(&srv, "sqlite").await;
}

#[tokio::test]
async fn no_database_text_reaches_a_client_on_postgres() {
    let Some(srv) = TestServer::start_on_postgres().await else {
        eprintln!("PLINTH_TEST_DATABASE_URL is not set: the PostgreSQL sweep needs the README's test command");
        return;
    };
    sweep_and_check(&srv, "postgres").await;
}

#[tokio::test]
async fn billing_reads_for_a_tenant_that_does_not_exist_are_404_and_write_nothing() {
    let srv = TestServer::start().await;
    let ghost = "tnt_01KAAAAAAAAAAAAAAAAAAAAAAA";
    for t in ["acme", ghost] {
        for path in [
            format!("/v1/invoices/current?tenant_id={t}"),
            format!("/v1/invoices?tenant_id={t}"),
            format!("/v1/billing/export?tenant_id={t}&format=csv"),
            format!("/v1/billing/reconciliation?tenant_id={t}"),
        ] {
            let p = srv.get(&path).token(&srv.operator).send().await.problem(404, "not_found");
            let detail = p["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("tenant") && detail.contains(t), "{path}: the problem names the tenant: {p}");
        }
    }
    // Nothing was written: the platform holds no invoice at all.
    let all = srv.list_all(&srv.operator, "/v1/invoices").await;
    assert!(all.is_empty(), "a read wrote invoices: {all:?}");
    // The same reads for a tenant that exists answer (and write its draft).
    let real = id(&srv.create_tenant("acme").await);
    srv.get(&format!("/v1/invoices/current?tenant_id={real}")).token(&srv.operator).send().await.ok(200);
}

#[tokio::test]
async fn the_invoice_list_shows_the_current_draft_to_operators_and_tenants() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let drafts = |v: &[Value]| v.iter().filter(|i| i["status"] == "draft").count();

    // The operator asks first: the draft is recomputed and listed, as the document says.
    let seen = srv.list_all(&srv.operator, &format!("/v1/invoices?tenant_id={}", admin.tenant_id)).await;
    assert_eq!(drafts(&seen), 1, "the operator's list holds the tenant's current draft: {seen:?}");

    // The tenant sees the same one draft, not a second.
    let own = srv.list_all(&admin.secret, "/v1/invoices").await;
    assert_eq!(drafts(&own), 1, "the tenant's list holds its current draft: {own:?}");
    assert_eq!(own[0]["id"], seen[0]["id"], "one draft per tenant and period");

    // An operator listing every tenant's invoices sees it too.
    let everyone = srv.list_all(&srv.operator, "/v1/invoices").await;
    assert!(everyone.iter().any(|i| i["id"] == seen[0]["id"]), "{everyone:?}");
}

#[tokio::test]
async fn a_commitment_term_beyond_ten_years_is_refused_with_its_limit() {
    let srv = TestServer::start().await;
    let tenant = id(&srv.create_tenant("acme").await);
    let commit = |start: &str, end: &str, count: i64| {
        json!({ "tenant_id": tenant, "meter": "running_seconds", "dimension": "small", "count": count,
                "start_at": start, "end_at": end, "hourly_price_micros": 10_000 })
    };
    let r = srv
        .post("/v1/commitments")
        .token(&srv.operator)
        .json(&commit("2026-12-01T00:00:00Z", "3952-06-10T00:00:00Z", 1))
        .send()
        .await;
    let p = r.problem(422, "invalid_value");
    assert_eq!(p["constraint"]["field"], "end_at", "{p}");
    assert_eq!(p["constraint"]["rule"], "max-term", "{p}");
    assert!(p["detail"].as_str().unwrap_or_default().contains("3653 days"), "the limit is named: {p}");

    let r = srv
        .post("/v1/commitments")
        .token(&srv.operator)
        .json(&commit("2026-12-01T00:00:00Z", "2027-12-01T00:00:00Z", i64::MAX))
        .send()
        .await;
    let p = r.problem(422, "invalid_quantity");
    assert_eq!(p["constraint"]["field"], "count", "{p}");

    // The longest term allowed is recorded, one ledger record per period.
    let ok = srv
        .post("/v1/commitments")
        .token(&srv.operator)
        .json(&commit("2026-12-01T00:00:00Z", "2036-12-01T00:00:00Z", 2))
        .send()
        .await
        .ok(201);
    let records = srv.list_all(&srv.operator, &format!("/v1/usage?resource_id={}", id(&ok))).await;
    assert_eq!(records.len(), 120, "ten years of monthly records");

    // Nothing of the refused ones was kept.
    let all = srv.list_all(&srv.operator, "/v1/commitments").await;
    assert_eq!(all.len(), 1, "{all:?}");
}
