//! `Idempotency-Key` on POST: a retry with the same key and body replays the first
//! answer; the same key with another body is refused; concurrent retries create one object.

mod common;

use common::*;
use serde_json::{Value, json};

async fn projects(srv: &TestServer, token: &str) -> Vec<Value> {
    srv.list_all(token, "/v1/projects").await
}

async fn post_project(srv: &TestServer, token: &str, key: &str, body: &Value) -> Resp {
    srv.post("/v1/projects").token(token).header("Idempotency-Key", key).json(body).send().await
}

#[tokio::test]
async fn same_key_and_body_replays_the_first_answer() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let body = json!({ "name": "web", "description": "the web tier" });

    let first = post_project(&srv, &admin.secret, "create-web-1", &body).await;
    let created = first.ok(201);
    assert_eq!(first.header("idempotent-replayed").as_deref(), Some("false"), "a first answer is not a replay");

    let second = post_project(&srv, &admin.secret, "create-web-1", &body).await;
    assert_eq!(second.status, 201, "the replay has the first status: {}", second.text);
    assert_eq!(second.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(second.text, first.text, "the replay has the first body, byte for byte");
    assert_eq!(second.json()["id"], created["id"], "same id");
    assert!(
        second.header("content-type").unwrap_or_default().starts_with("application/json"),
        "the replay keeps the media type"
    );

    // A third time, still the same; only one project exists.
    let third = post_project(&srv, &admin.secret, "create-web-1", &body).await;
    assert_eq!((third.status, third.text.clone()), (201, first.text.clone()));
    let all = projects(&srv, &admin.secret).await;
    assert_eq!(all.len(), 1, "one project after three identical requests: {all:?}");
    assert_eq!(all[0]["id"], created["id"]);
    assert_eq!(all[0]["generation"], 1);

    // Only one create is in the audit log.
    let audit = srv
        .get(&format!("/v1/audit-log?action=projects.create&target={}", id(&created)))
        .token(&srv.operator)
        .send()
        .await
        .ok(200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "one audited create: {audit}");
}

#[tokio::test]
async fn same_key_with_another_body_is_refused_and_writes_nothing() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let first_body = json!({ "name": "web" });
    let first = post_project(&srv, &admin.secret, "k-1", &first_body).await;
    let created = first.ok(201);
    let before = projects(&srv, &admin.secret).await;

    for other in [json!({ "name": "db" }), json!({ "name": "web", "description": "changed" })] {
        let r = post_project(&srv, &admin.secret, "k-1", &other).await;
        let p = r.problem(422, "idempotency_key_reused");
        assert_eq!(p["constraint"]["rule"], "idempotency-key-same-body", "{p}");
        assert_ne!(r.header("idempotent-replayed").as_deref(), Some("true"), "a refusal is not a replay");
        assert_eq!(projects(&srv, &admin.secret).await, before, "a refused reuse writes nothing");
    }

    // The key still replays its first answer afterwards.
    let again = post_project(&srv, &admin.secret, "k-1", &first_body).await;
    assert_eq!((again.status, again.json()["id"].clone()), (201, created["id"].clone()));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));

    // The same body on another path is another request, too.
    let r = srv.post("/v1/users").token(&admin.secret).header("Idempotency-Key", "k-1").json(&first_body).send().await;
    r.problem(422, "idempotency_key_reused");
    let users = srv.list_all(&admin.secret, "/v1/users").await;
    assert!(users.iter().all(|u| u["name"] != "web"), "no user was made: {users:?}");
}

#[tokio::test]
async fn different_keys_are_different_requests() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let a = post_project(&srv, &admin.secret, "key-a", &json!({ "name": "web" })).await;
    let b = post_project(&srv, &admin.secret, "key-b", &json!({ "name": "db" })).await;
    let (a, b) = (a.ok(201), b.ok(201));
    assert_ne!(a["id"], b["id"]);
    let mut ids: Vec<String> = projects(&srv, &admin.secret).await.iter().map(id).collect();
    ids.sort();
    let mut want = vec![id(&a), id(&b)];
    want.sort();
    assert_eq!(ids, want, "two keys, two projects");

    // A new key with an already-used body is a new request: here the name is taken.
    let r = post_project(&srv, &admin.secret, "key-c", &json!({ "name": "web" })).await;
    r.problem(409, "already_exists");
    assert_eq!(projects(&srv, &admin.secret).await.len(), 2);

    // Without a key nothing is remembered and the header says nothing of replays.
    let r = srv.post("/v1/projects").token(&admin.secret).json(&json!({ "name": "cache" })).send().await;
    r.ok(201);
    assert_eq!(r.header("idempotent-replayed"), None);
}

#[tokio::test]
async fn keys_belong_to_their_caller() {
    let srv = TestServer::start().await;
    let a = srv.tenant_with_admin("alpha").await;
    let b = srv.tenant_with_admin("bravo").await;
    let body = json!({ "name": "web" });
    let ra = post_project(&srv, &a.secret, "shared-key", &body).await;
    let rb = post_project(&srv, &b.secret, "shared-key", &body).await;
    let (pa, pb) = (ra.ok(201), rb.ok(201));
    assert_eq!(rb.header("idempotent-replayed").as_deref(), Some("false"), "B's request is not A's replay");
    assert_ne!(pa["id"], pb["id"]);
    assert_eq!(pa["tenant_id"], a.tenant_id.as_str());
    assert_eq!(pb["tenant_id"], b.tenant_id.as_str(), "B's project is in B, not a replay of A's answer");
    assert!(!rb.text.contains(&a.tenant_id), "B's answer shows nothing of A");
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let long = "k".repeat(256);
    for key in ["", "has space", long.as_str()] {
        let r = post_project(&srv, &admin.secret, key, &json!({ "name": "web" })).await;
        r.problem(400, "invalid_idempotency_key");
    }
    assert!(projects(&srv, &admin.secret).await.is_empty(), "refused requests wrote nothing");
    // 255 printable characters are fine.
    let ok = "k".repeat(255);
    post_project(&srv, &admin.secret, &ok, &json!({ "name": "web" })).await.ok(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_create_one_object() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let body = json!({ "name": "web", "description": "raced" });

    let answers = futures::future::join_all((0..8).map(|_| post_project(&srv, &admin.secret, "race-1", &body))).await;

    let mut originals = 0;
    let mut created_ids = Vec::new();
    for r in &answers {
        match r.status {
            201 => {
                created_ids.push(r.json()["id"].clone());
                match r.header("idempotent-replayed").as_deref() {
                    Some("false") => originals += 1,
                    Some("true") => {}
                    other => panic!("201 without idempotent-replayed: {other:?}"),
                }
            }
            409 => {
                r.problem(409, "idempotency_key_in_progress");
            }
            other => panic!("unexpected answer to a concurrent retry: {other} {}", r.text),
        }
    }
    assert_eq!(originals, 1, "exactly one request ran: {answers:#?}");
    assert!(created_ids.iter().all(|i| *i == created_ids[0]), "every 201 names the same project: {created_ids:?}");
    let all = projects(&srv, &admin.secret).await;
    assert_eq!(all.len(), 1, "exactly one project after 8 concurrent identical requests: {all:?}");
    assert_eq!(all[0]["id"], created_ids[0]);

    // Once it finished, a retry replays.
    let r = post_project(&srv, &admin.secret, "race-1", &body).await;
    assert_eq!((r.status, r.header("idempotent-replayed")), (201, Some("true".to_string())));
    assert_eq!(r.json()["id"], created_ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_distinct_keys_all_run() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let bodies: Vec<Value> = (0..8).map(|i| json!({ "name": format!("p{i}") })).collect();
    let keys: Vec<String> = (0..8).map(|i| format!("distinct-{i}")).collect();
    let answers =
        futures::future::join_all(bodies.iter().zip(&keys).map(|(b, k)| post_project(&srv, &admin.secret, k, b))).await;
    for r in &answers {
        r.ok(201);
    }
    assert_eq!(projects(&srv, &admin.secret).await.len(), 8);
}

/// Secrets are "shown once" and "only its SHA-256 is kept" (plinth-api `TokenCreated`,
/// `tokens.rs`). A POST /v1/tokens with an Idempotency-Key must not keep the secret
/// around in plain text at rest.
#[tokio::test]
async fn idempotent_token_creation_keeps_no_plaintext_secret_at_rest() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;

    // Control: without a key the secret is not on disk.
    let (_, plain) = srv.mint_token(&admin.secret, &admin.user_id, "no-key").await;
    assert!(!database_contains(&srv, &plain), "a token secret is on disk in plain text");

    let r = srv
        .post("/v1/tokens")
        .token(&admin.secret)
        .header("Idempotency-Key", "mint-1")
        .json(&json!({ "name": "with-key" }))
        .send()
        .await;
    let secret = r.ok(201)["secret"].as_str().unwrap().to_string();
    assert!(
        !database_contains(&srv, &secret),
        "POST /v1/tokens with Idempotency-Key stored the plaintext token secret in the database \
         (the idempotency_keys.body column keeps the whole response, secret included)"
    );
}

/// Whether the SQLite files of the server (database and WAL) contain `needle`.
fn database_contains(srv: &TestServer, needle: &str) -> bool {
    let mut found = false;
    for entry in std::fs::read_dir(srv.dir.path()).expect("read the database directory") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).unwrap_or_default();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found = true;
        }
    }
    found
}

/// A replayed refusal is still a refusal: when it is audited, the record carries the
/// problem code like the original's did.
#[tokio::test]
async fn a_replayed_refusal_is_audited_with_its_code() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let body = json!({ "name": "Not_A_Label" });
    let first = post_project(&srv, &admin.secret, "bad-1", &body).await;
    first.problem(422, "invalid_name");
    let second = post_project(&srv, &admin.secret, "bad-1", &body).await;
    assert_eq!((second.status, second.text.clone()), (422, first.text.clone()), "the refusal is replayed as it was");
    assert_eq!(second.header("idempotent-replayed").as_deref(), Some("true"));

    let records = srv.list_all(&srv.operator, "/v1/audit-log?action=projects.create").await;
    assert!(!records.is_empty());
    for rec in &records {
        assert_eq!(rec["result"], "failure", "{rec}");
        assert_eq!(
            rec["error_code"], "invalid_name",
            "every audited refusal names its code, replays included: {records:#?}"
        );
    }
}

/// A stored answer replays only to the token that made the request: another token of the
/// same user cannot read it (it may hold a secret shown once), and gets no second object.
#[tokio::test]
async fn a_key_replays_only_to_the_token_that_used_it() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let (_, other_token) = srv.mint_token(&admin.secret, &admin.user_id, "second-key").await;
    let body = json!({ "name": "minted" });
    let mint = |token: String| {
        let body = body.clone();
        let srv = &srv;
        async move { srv.post("/v1/tokens").token(&token).header("Idempotency-Key", "mint-x").json(&body).send().await }
    };
    let first = mint(admin.secret.clone()).await;
    let secret = first.ok(201)["secret"].as_str().unwrap().to_string();
    let tokens_before = srv.list_all(&admin.secret, "/v1/tokens").await;

    let r = mint(other_token.clone()).await;
    assert!(!r.text.contains(&secret), "another token must not see the stored secret: {}", r.text);
    r.problem(409, "idempotency_key_in_use");
    assert_eq!(srv.list_all(&admin.secret, "/v1/tokens").await, tokens_before, "nothing new was minted");

    // The token that made it still gets its replay.
    let again = mint(admin.secret.clone()).await;
    assert_eq!((again.status, again.text.clone()), (201, first.text.clone()));
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
}
