//! Shared harness for the HTTP API integration tests: a real server on 127.0.0.1:0 over a
//! fresh SQLite database, a small request builder, problem+json assertions and fixtures.

#![allow(dead_code)]

pub mod fleet;
pub mod images;

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// One running server with its own database and a bootstrapped operator.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    /// The bootstrap operator's bearer secret.
    pub operator: String,
    /// Holds the database; removed when the server is dropped.
    pub dir: tempfile::TempDir,
    /// The server's store (the same clock: tests move it on to cross billing periods).
    pub store: plinth_store::Store,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestServer {
    /// Opens a fresh SQLite store in a temporary directory, bootstraps the operator and
    /// serves the API on an ephemeral port. The listener is bound before this returns, so
    /// requests made right away queue on it: no waiting is needed.
    pub async fn start() -> TestServer {
        Self::start_with(plinth_server::ServerConfig::default()).await
    }

    /// Like [`TestServer::start`], with server settings (fail points, short timers).
    pub async fn start_with(config: plinth_server::ServerConfig) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/plinth.db", dir.path().display());
        let store = plinth_store::Store::open(&url).await.expect("open store");
        let operator =
            plinth_server::bootstrap(&store).await.expect("bootstrap").expect("an empty platform bootstraps");
        assert!(plinth_server::bootstrap(&store).await.expect("bootstrap again").is_none(), "bootstrap runs once");
        Self::serve_on(store, config, operator, dir).await
    }

    /// Like [`TestServer::start`], on a fresh PostgreSQL database of the server named by
    /// `PLINTH_TEST_DATABASE_URL`; None when it is not set.
    pub async fn start_on_postgres() -> Option<TestServer> {
        Self::start_on_postgres_with(plinth_server::ServerConfig::default()).await
    }

    /// Like [`TestServer::start_on_postgres`], with server settings.
    pub async fn start_on_postgres_with(config: plinth_server::ServerConfig) -> Option<TestServer> {
        let admin = std::env::var("PLINTH_TEST_DATABASE_URL").ok()?;
        let name = format!("plinth_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        let url = plinth_store::Store::create_postgres_database(&admin, &name).await.expect("create database");
        let store = plinth_store::Store::open(&url).await.expect("open store");
        let operator =
            plinth_server::bootstrap(&store).await.expect("bootstrap").expect("an empty platform bootstraps");
        let dir = tempfile::tempdir().expect("tempdir");
        Some(Self::serve_on(store, config, operator, dir).await)
    }

    /// A server over an existing store (a restart on the same database).
    pub async fn serve_on(
        store: plinth_store::Store,
        mut config: plinth_server::ServerConfig,
        operator: String,
        dir: tempfile::TempDir,
    ) -> TestServer {
        // Image files live beside the database unless the test says otherwise.
        config.blob_dir.get_or_insert_with(|| dir.path().join("blobs"));
        // So are volume keys' sealing key (kept across a restart on the same directory).
        if config.volume_kek.is_none() {
            config.volume_kek = Some(
                plinth_server::secrets::VolumeKek::load_or_create(&dir.path().join("volume.kek")).expect("volume KEK"),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let kept = store.clone();
        tokio::spawn(async move {
            plinth_server::serve_with(store, config, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            operator,
            dir,
            store: kept,
            shutdown: Some(tx),
        }
    }

    /// Stops serving and hands back the data directory (for a restart).
    pub fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            rb: self.client.request(method.clone(), format!("{}{}", self.base, path)),
            what: format!("{method} {path}"),
            _srv: self,
        }
    }
    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }
    pub fn patch(&self, path: &str) -> Call<'_> {
        self.call(Method::PATCH, path)
    }
    pub fn delete(&self, path: &str) -> Call<'_> {
        self.call(Method::DELETE, path)
    }
    pub fn put(&self, path: &str) -> Call<'_> {
        self.call(Method::PUT, path)
    }

    // ---- fixtures -------------------------------------------------------------------

    /// `POST /v1/tenants` as the operator.
    pub async fn create_tenant(&self, name: &str) -> Value {
        self.post("/v1/tenants").token(&self.operator).json(&json!({ "name": name })).send().await.ok(201)
    }

    /// `POST /v1/users` in `tenant_id`.
    pub async fn create_user(&self, token: &str, tenant_id: &str, name: &str) -> Value {
        self.post("/v1/users")
            .token(token)
            .json(&json!({ "tenant_id": tenant_id, "name": name, "email": format!("{name}@example.com") }))
            .send()
            .await
            .ok(201)
    }

    /// `POST /v1/role-bindings`.
    pub async fn bind(&self, token: &str, user_id: &str, role: &str, project_id: Option<&str>) -> Value {
        let mut body = json!({ "user_id": user_id, "role": role });
        if let Some(p) = project_id {
            body["project_id"] = json!(p);
        }
        self.post("/v1/role-bindings").token(token).json(&body).send().await.ok(201)
    }

    /// `POST /v1/tokens` for `user_id`; returns the record and its secret.
    pub async fn mint_token(&self, token: &str, user_id: &str, name: &str) -> (Value, String) {
        let v = self
            .post("/v1/tokens")
            .token(token)
            .json(&json!({ "user_id": user_id, "name": name }))
            .send()
            .await
            .ok(201);
        let secret = v["secret"].as_str().expect("token secret").to_string();
        assert!(secret.starts_with("plt_"), "API token secrets start with plt_: {secret}");
        (v, secret)
    }

    /// `POST /v1/projects` (tenant_id omitted when None: the caller's tenant).
    pub async fn create_project(&self, token: &str, tenant_id: Option<&str>, name: &str) -> Value {
        let mut body = json!({ "name": name });
        if let Some(t) = tenant_id {
            body["tenant_id"] = json!(t);
        }
        self.post("/v1/projects").token(token).json(&body).send().await.ok(201)
    }

    /// A tenant with one tenant-admin user and that user's token, made by the operator.
    pub async fn tenant_with_admin(&self, tenant_name: &str) -> TenantAdmin {
        let tenant = self.create_tenant(tenant_name).await;
        let tenant_id = id(&tenant);
        let user = self.create_user(&self.operator, &tenant_id, &format!("{tenant_name}-admin")).await;
        let binding = self.bind(&self.operator, &id(&user), "tenant-admin", None).await;
        let (tok, secret) = self.mint_token(&self.operator, &id(&user), &format!("{tenant_name}-admin-key")).await;
        TenantAdmin { tenant_id, user_id: id(&user), binding_id: id(&binding), token_id: id(&tok), secret }
    }

    /// Every item of a list endpoint, following `next_cursor`.
    pub async fn list_all(&self, token: &str, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=1000&cursor={c}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page = self.get(&url).token(token).send().await.ok(200);
            items.extend(page["items"].as_array().expect("items").iter().cloned());
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
        panic!("{path}: pagination never ended");
    }

    /// The ids of every item of a list endpoint.
    pub async fn list_ids(&self, token: &str, path: &str) -> Vec<String> {
        self.list_all(token, path).await.iter().map(id).collect()
    }
}

/// The tenant-admin fixture.
#[derive(Clone, Debug)]
pub struct TenantAdmin {
    pub tenant_id: String,
    pub user_id: String,
    pub binding_id: String,
    pub token_id: String,
    pub secret: String,
}

/// A request being built.
pub struct Call<'a> {
    rb: reqwest::RequestBuilder,
    what: String,
    _srv: &'a TestServer,
}

impl Call<'_> {
    pub fn token(mut self, secret: &str) -> Self {
        self.rb = self.rb.bearer_auth(secret);
        self
    }
    pub fn json(mut self, body: &Value) -> Self {
        self.rb = self.rb.json(body);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.rb = self.rb.header(name, value);
        self
    }
    /// A body sent without a content type.
    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.rb = self.rb.body(body);
        self
    }
    pub fn raw_json(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.rb = self.rb.header("content-type", "application/json").body(body);
        self
    }
    pub async fn send(self) -> Resp {
        let r = self.rb.send().await.unwrap_or_else(|e| panic!("{}: transport error: {e}", self.what));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_else(|e| panic!("{}: reading the body: {e}", self.what));
        Resp { what: self.what, status, headers, text }
    }
}

/// A response, fully read.
#[derive(Clone, Debug)]
pub struct Resp {
    /// `METHOD /path`, for messages.
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header").to_string())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {:?}", self.what, self.text))
    }

    /// Asserts the status and returns the body: JSON, Null when empty, a string otherwise.
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, got {} with body {}",
            self.what, self.status, self.text
        );
        let is_json = self.header("content-type").is_some_and(|c| c.contains("json"));
        if self.text.is_empty() {
            Value::Null
        } else if is_json {
            self.json()
        } else {
            Value::String(self.text.clone())
        }
    }

    /// Asserts a well-formed problem+json answer with this status and code, and returns it.
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status} {code}, got {} with body {}",
            self.what, self.status, self.text
        );
        let v = assert_problem_shape(self);
        assert_eq!(v["code"], code, "{}: problem code; body {}", self.what, self.text);
        v
    }
}

/// Checks the problem+json shape of an error answer: media type, the six fields, `type`
/// naming the code, `status` matching the HTTP status and `request_id` matching the
/// `x-request-id` header.
pub fn assert_problem_shape(r: &Resp) -> Value {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "{}: error content-type should be application/problem+json, got {ct:?} (status {}, body {:?})",
        r.what,
        r.status,
        r.text
    );
    let v = r.json();
    for field in ["type", "title", "code", "detail", "request_id"] {
        assert!(
            v.get(field).and_then(Value::as_str).is_some_and(|s| !s.is_empty()),
            "{}: problem field {field} missing or empty: {}",
            r.what,
            r.text
        );
    }
    assert_eq!(v["status"].as_u64(), Some(r.status as u64), "{}: problem status: {}", r.what, r.text);
    assert_eq!(
        v["type"].as_str().unwrap(),
        format!("urn:plinth:problem:{}", v["code"].as_str().unwrap()),
        "{}: problem type names its code",
        r.what
    );
    let header = r.header("x-request-id");
    assert_eq!(
        header.as_deref(),
        v["request_id"].as_str(),
        "{}: the x-request-id header must equal the problem's request_id (body {})",
        r.what,
        r.text
    );
    v
}

/// The `id` field of an object.
pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// Every string value in a JSON document (and every object key).
pub fn strings(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                for (k, x) in o {
                    out.push(k.clone());
                    walk(x, out);
                }
            }
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

/// Asserts `text` mentions none of `forbidden` (compared case-insensitively).
pub fn assert_mentions_none(what: &str, text: &str, forbidden: &[String]) {
    let lower = text.to_lowercase();
    let hits: Vec<&String> = forbidden.iter().filter(|f| lower.contains(&f.to_lowercase())).collect();
    if !hits.is_empty() {
        let mut msg = String::new();
        let _ = write!(msg, "{what}: response mentions {hits:?}: {text}");
        panic!("{msg}");
    }
}
