//! The web console as a browser meets it, over HTTP: logging in with a token (a `__Host-`
//! session cookie, kept only as a hash), logging out, sessions that die with their token,
//! the pages' tenancy, escaping of what guests and users write, the cross-origin refusal
//! of unsafe requests, the security headers, and console actions that are their API
//! twins (same operation, same audit record).

mod common;

use common::fleet::{Boots, TestAgent, inventory};
use common::{Resp, TestServer, id};
use serde_json::json;

/// A browser: no redirects followed, one cookie jar of one cookie.
struct Browser<'a> {
    srv: &'a TestServer,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(srv: &'a TestServer) -> Browser<'a> {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Browser { srv, client, cookie: None }
    }

    async fn send(&self, rb: reqwest::RequestBuilder, what: String) -> Resp {
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", format!("__Host-plinth_session={c}")),
            None => rb,
        };
        let r = rb.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        Resp { what, status, headers, text }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(self.client.get(format!("{}{path}", self.srv.base)), format!("GET {path}")).await
    }

    /// A form posted as the browser posts one from this site's own page.
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.post_from(path, form, &[("sec-fetch-site", "same-origin")]).await
    }

    async fn post_from(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let mut rb = self
            .client
            .post(format!("{}{path}", self.srv.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).expect("form"));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb, format!("POST {path}")).await
    }

    /// Logs in with `token`; keeps the session's cookie.
    async fn login(&mut self, token: &str) -> Resp {
        let r = self.post("/login", &[("token", token), ("next", "/instances")]).await;
        assert_eq!(r.status, 303, "login: {}", r.text);
        let set = r.header("set-cookie").expect("a session cookie");
        let secret = set
            .strip_prefix("__Host-plinth_session=")
            .and_then(|rest| rest.split(';').next())
            .expect("the session cookie")
            .to_string();
        self.cookie = Some(secret);
        r
    }
}

impl Browser<'_> {
    /// Opens the tab's live stream (`GET /events?since=now`).
    async fn live(&self) -> reqwest::Response {
        let since = chrono::Utc::now().timestamp_micros();
        let rb = self.client.get(format!("{}/events?since={since}", self.srv.base));
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", format!("__Host-plinth_session={c}")),
            None => rb,
        };
        let r = rb.send().await.expect("live stream");
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        r
    }
}

/// Reads a live stream until `done` holds for what was read (the whole text so far), or
/// panics at the deadline; returns the text.
async fn read_until(stream: &mut reqwest::Response, what: &str, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done(&text) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {what} within 20 s; read: {text}"))
            .expect("stream read")
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// A server with one host (its scripted agent running), the shape `small`, tenant `acme`
/// (an admin, a project) and its instance `web-1`, running.
async fn running_vm() -> (TestServer, common::fleet::TestHost, common::TenantAdmin, String, String, TestAgent) {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let admin = srv.tenant_with_admin("acme").await;
    let project = id(&srv.create_project(&admin.secret, None, "web").await);
    let v = srv.create_instance(&admin.secret, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.wait_until(&admin.secret, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
    (srv, host, admin, project, iid, _agent)
}

/// Every byte of the server's SQLite database files (with its write-ahead log).
fn database_bytes(srv: &TestServer) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["plinth.db", "plinth.db-wal"] {
        if let Ok(b) = std::fs::read(srv.dir.path().join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_token_logs_a_browser_in_with_a_host_only_http_only_cookie_kept_only_as_a_hash() {
    let srv = TestServer::start().await;
    let mut b = Browser::new(&srv);

    // Not logged in: a page sends the browser to the login form, and comes back after.
    let r = b.get("/instances").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("/login?next=/instances"));
    let form = b.get("/login?next=/instances").await;
    assert_eq!(form.status, 200);
    assert!(form.text.contains(r#"name="token""#) && form.text.contains(r#"type="password""#), "{}", form.text);

    let r = b.login(&srv.operator).await;
    assert_eq!(r.header("location").as_deref(), Some("/instances"));
    let set = r.header("set-cookie").unwrap();
    for flag in ["; Path=/", "; Secure", "; HttpOnly", "; SameSite=Lax"] {
        assert!(set.contains(flag), "{flag} in {set}");
    }
    assert!(!set.contains("Domain"), "a __Host- cookie names no domain: {set}");
    let secret = b.cookie.clone().unwrap();
    assert!(secret.starts_with("pcs_"), "{secret}");
    assert!(!contains(set.as_bytes(), &srv.operator), "the API token never goes to the browser");

    // The session works, and the database holds its hash, never the secret (the scan
    // finds the hash, so it can find what it looks for).
    let page = b.get("/instances").await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("<h1>Instances</h1>"));
    assert!(page.text.contains(">operator<"), "who is logged in: {}", page.text);
    let db = database_bytes(&srv);
    assert!(contains(&db, &plinth_server::secrets::hash(&secret)), "the session's hash is stored");
    assert!(!contains(&db, &secret), "the session's secret is not");

    // Logout: the cookie is forgotten and the session stops working at once.
    let out = b.post("/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(b.get("/instances").await.status, 303, "a logged-out session is refused");

    // Both are audited, as the session's token.
    let audit = srv.get("/v1/audit-log?limit=1000").token(&srv.operator).send().await.ok(200);
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"console.login") && actions.contains(&"console.logout"), "{actions:?}");
}

#[tokio::test]
async fn a_bad_token_or_a_forged_cookie_gets_no_session() {
    let srv = TestServer::start().await;
    let mut b = Browser::new(&srv);
    let r = b.post("/login", &[("token", "plt_not_a_token")]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    assert!(r.text.contains("the token is not valid") && r.text.contains(r#"role="alert""#), "{}", r.text);

    // A cookie of the right shape that the server never made, and a real one altered.
    b.cookie = Some(format!("pcs_{}_{}", ulid::Ulid::new().to_string().to_lowercase(), "0".repeat(64)));
    assert_eq!(b.get("/instances").await.status, 303);
    b.login(&srv.operator).await;
    let real = b.cookie.clone().unwrap();
    let flipped = if real.ends_with('0') { '1' } else { '0' };
    b.cookie = Some(format!("{}{flipped}", &real[..real.len() - 1]));
    assert_eq!(b.get("/instances").await.status, 303, "one changed character");
    b.cookie = Some(real);
    assert_eq!(b.get("/instances").await.status, 200, "control: the real cookie works");
}

#[tokio::test]
async fn a_session_dies_with_the_token_it_was_made_from() {
    let srv = TestServer::start().await;
    let admin = srv.tenant_with_admin("acme").await;
    let mut b = Browser::new(&srv);
    b.login(&admin.secret).await;
    assert_eq!(b.get("/instances").await.status, 200);
    srv.post(&format!("/v1/tokens/{}/revoke", admin.token_id)).token(&srv.operator).send().await.ok(200);
    let r = b.get("/instances").await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(r.header("location").unwrap().starts_with("/login"));
}

#[tokio::test]
async fn pages_show_a_tenant_only_its_own_and_print_what_guests_write_as_text() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (acme, acme_project) = srv.tenant_project("acme").await;
    let (globex, _) = srv.tenant_project("globex").await;
    let v = srv.create_instance(&acme, &acme_project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.wait_until(&acme, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;

    // The guest writes markup to its serial console; its host ships it.
    let hostile = "PLINTH-GUEST-READY <script>alert(1)</script> \"><img src=x onerror=alert(2)>\n";
    srv.post(&format!("/agent/v1/instances/{iid}/console?stream=1&offset=0&reset=false"))
        .token(&host.credential)
        .header("content-type", "application/octet-stream")
        .body(hostile)
        .send()
        .await
        .ok(200);

    let mut mine = Browser::new(&srv);
    mine.login(&acme).await;
    let list = mine.get("/instances").await;
    assert_eq!(list.status, 200);
    assert!(list.text.contains(&format!(r#"href="/instances/{iid}">web-1</a>"#)), "{}", list.text);
    assert!(list.text.contains("state-running"), "{}", list.text);
    let page = mine.get(&format!("/instances/{iid}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("PLINTH-GUEST-READY &#60;script&#62;alert(1)&#60;/script&#62;"), "{}", page.text);
    assert!(page.text.contains("&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"), "{}", page.text);
    assert!(!page.text.contains("<script>") && !page.text.contains("<img"), "nothing the guest wrote is markup");
    // The serial console's page lets xterm.js write its own <style> elements; scripts stay
    // this site's files only.
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self';") && csp.contains("style-src 'self' 'unsafe-inline'"), "{csp}");

    // Another tenant sees neither the instance in its list nor its page.
    let mut theirs = Browser::new(&srv);
    theirs.login(&globex).await;
    let list = theirs.get("/instances").await;
    assert!(!list.text.contains(&iid) && list.text.contains("No instances yet"), "{}", list.text);
    let r = theirs.get(&format!("/instances/{iid}")).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(!r.text.contains("web-1"));
    // The fleet is for operators.
    assert_eq!(theirs.get("/hosts").await.status, 403);
    let mut op = Browser::new(&srv);
    op.login(&srv.operator).await;
    let hosts = op.get("/hosts").await;
    assert_eq!(hosts.status, 200);
    assert!(hosts.text.contains(">h1<"), "{}", hosts.text);
}

#[tokio::test]
async fn a_console_action_is_its_api_twin_and_a_cross_site_one_changes_nothing() {
    let (srv, _host, admin, _project, iid, _agent) = running_vm().await;
    let mut b = Browser::new(&srv);
    b.login(&admin.secret).await;
    let stop = format!("/instances/{iid}/stop");

    // From another site (the browser says so, or only its Origin does): refused, nothing changes.
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "https://evil.example")],
    ] {
        let r = b.post_from(&stop, &[], &headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.text);
    }
    let ops = srv.get(&format!("/v1/operations?target={iid}")).token(&admin.secret).send().await.ok(200);
    let kinds: Vec<&str> = ops["items"].as_array().unwrap().iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(!kinds.contains(&"instance.stop"), "no stop was started: {kinds:?}");
    assert_eq!(srv.get(&format!("/v1/instances/{iid}")).token(&admin.secret).send().await.ok(200)["state"], "running");

    // From its own page: the same use case as `POST /v1/instances/{id}/stop`.
    let r = b.post(&stop, &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let to = r.header("location").unwrap();
    let op = to.split("op=").nth(1).expect("the operation in the redirect").to_string();
    let o = srv.wait_op(&admin.secret, &op).await;
    assert_eq!((o["kind"].as_str(), o["target"].as_str()), (Some("instance.stop"), Some(iid.as_str())));
    srv.wait_until(&admin.secret, &format!("/v1/instances/{iid}"), "stopped", |i| i["state"] == "stopped").await;
    let page = b.get(&to).await;
    assert!(page.text.contains(&format!("operation <code>{op}</code>")), "{}", page.text);
    // Each action names its CLI and curl twins.
    assert!(page.text.contains("Same as <code>plinth instance stop web-1</code>"), "{}", page.text);
    assert!(page.text.contains(&format!("-X POST &#34;$PLINTH_URL/v1/instances/{iid}/stop&#34;")), "{}", page.text);
    let audit = srv.get("/v1/audit-log?action=instances.stop").token(&admin.secret).send().await.ok(200);
    let rec = &audit["items"][0];
    assert_eq!(
        (rec["target"].as_str(), rec["actor_token_id"].as_str()),
        (Some(iid.as_str()), Some(admin.token_id.as_str()))
    );

    // A viewer reads the page but may not act.
    let viewer = srv.create_user(&admin.secret, &admin.tenant_id, "watcher").await;
    srv.bind(&admin.secret, &id(&viewer), "viewer", None).await;
    let (_, viewer_token) = srv.mint_token(&admin.secret, &id(&viewer), "watcher-key").await;
    let mut v = Browser::new(&srv);
    v.login(&viewer_token).await;
    assert_eq!(v.get(&format!("/instances/{iid}")).await.status, 200);
    let r = v.post(&format!("/instances/{iid}/start"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("forbidden"), "{}", r.text);
}

#[tokio::test]
async fn every_console_response_carries_the_security_headers() {
    let srv = TestServer::start().await;
    let mut b = Browser::new(&srv);
    let login = b.get("/login").await;
    b.login(&srv.operator).await;
    let css = b.get("/assets/plinth.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let missing = b.get("/instances/ins_01jz8x3m5q2v7w9k4r6t8y0b1c").await;
    assert_eq!(missing.status, 404);
    for r in [&login, &b.get("/instances").await, &css, &missing] {
        let csp = r.header("content-security-policy").unwrap_or_else(|| panic!("{}: no CSP", r.what));
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.header("x-content-type-options").as_deref(), Some("nosniff"), "{}", r.what);
    }
    // No inline script anywhere the console draws: every script is a file of this site.
    for r in [&login, &missing] {
        let scripts = r.text.matches("<script").count();
        assert!(scripts > 0, "{}: the page loads its scripts", r.what);
        assert_eq!(r.text.matches("<script src=\"/assets/").count(), scripts, "{}", r.what);
    }
    let js = b.get("/assets/htmx.min.js").await;
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    // A bearer-token API call is not a browser's: no cross-origin check applies to it.
    let r = srv
        .post("/v1/tenants")
        .token(&srv.operator)
        .header("origin", "https://elsewhere.example")
        .json(&json!({ "name": "fromscript" }))
        .send()
        .await;
    r.ok(201);
}

#[tokio::test]
async fn a_tabs_live_stream_carries_its_tenants_changes_and_no_one_elses() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    let (acme, acme_project) = srv.tenant_project("acme").await;
    let (globex, globex_project) = srv.tenant_project("globex").await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    let mut ids = Vec::new();
    for (tok, project) in [(&acme, &acme_project), (&globex, &globex_project)] {
        let v = srv.create_instance(tok, project, "web-1", "small").await.ok(202);
        let iid = id(&v["instance"]);
        srv.wait_until(tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
        ids.push(iid);
    }
    let (acme_vm, globex_vm) = (ids[0].clone(), ids[1].clone());
    let mut a = Browser::new(&srv);
    a.login(&acme).await;
    let mut g = Browser::new(&srv);
    g.login(&globex).await;
    let mut a_live = a.live().await;
    let mut g_live = g.live().await;

    // Each tenant stops its instance through the API; each tab sees its own row change.
    srv.post(&format!("/v1/instances/{acme_vm}/stop")).token(&acme).send().await.ok(202);
    srv.post(&format!("/v1/instances/{globex_vm}/stop")).token(&globex).send().await.ok(202);
    let stopped_row = |vm: &str| {
        let vm = vm.to_string();
        move |text: &str| {
            let events: Vec<&str> = text.split("\n\n").collect();
            let stopped = |name: &str| {
                events.iter().any(|e| e.contains(&format!("event: {name}-{vm}\n")) && e.contains("state-stopped"))
            };
            stopped("row") && stopped("state")
        }
    };
    let seen_a = read_until(&mut a_live, "acme's stopped row", stopped_row(&acme_vm)).await;
    // The row comes whole, ready to swap (and the instance page's badge came with it).
    assert!(seen_a.contains(&format!("data: <tr id=\"row-{acme_vm}\"")), "{seen_a}");
    let seen_g = read_until(&mut g_live, "globex's stopped row", stopped_row(&globex_vm)).await;
    // The control above shows globex's stream carries rows; acme's never reached it.
    assert!(!seen_g.contains(&acme_vm), "another tenant's change reached globex's tab: {seen_g}");
    assert!(!seen_a.contains(&globex_vm), "{seen_a}");

    // An instance made after the page was drawn arrives as a new row, once.
    let v = srv.create_instance(&acme, &acme_project, "web-2", "small").await.ok(202);
    let new_vm = id(&v["instance"]);
    let seen = read_until(&mut a_live, "the new row", |t| t.contains(&format!("row-{new_vm}"))).await;
    let first = seen.split("\n\n").find(|e| e.contains(&new_vm)).unwrap();
    assert!(first.contains("event: instance-new"), "{first}");
    // Without a session there is no stream.
    let r = Browser::new(&srv).get("/events").await;
    assert_eq!(r.status, 303);
}

/// A server with one host (8 vCPU), the shapes `small` (2 vCPU) and `huge` (64 vCPU), the
/// image `debian-12`, a `default` price book, and a tenant with one project.
async fn shop() -> (TestServer, common::fleet::TestHost, String, String) {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 2, 2048).await;
    srv.shape("huge", 64, 2048).await;
    srv.public_image("debian-12").await;
    srv.post("/v1/price-books")
        .token(&srv.operator)
        .json(&json!({ "name": "default", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z",
            "prices": [
                { "meter": "running_seconds", "model": "flat", "pricing_unit": "hour",
                  "units_per_pricing_unit": 3600, "unit_price_micros": 10_000, "rounding": "half_up" },
                { "meter": "disk_gib_seconds", "model": "flat", "pricing_unit": "GiB-month",
                  "units_per_pricing_unit": 2_592_000, "unit_price_micros": 100_000, "rounding": "half_up" }] }))
        .send()
        .await
        .ok(201);
    let (tok, project) = srv.tenant_project("acme").await;
    (srv, host, tok, project)
}

#[tokio::test]
async fn the_create_form_prices_the_shape_as_the_api_does_and_creates_as_its_api_twin() {
    let (srv, host, tok, project) = shop().await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    let mut b = Browser::new(&srv);
    b.login(&tok).await;

    // The form offers the tenant's project, the shapes and the image, and prices the first shape.
    let form = b.get("/instances/new?shape=small").await;
    assert_eq!(form.status, 200, "{}", form.text);
    let project_option = format!(r#"<option value="{project}" selected>web</option>"#);
    for want in [project_option.as_str(), r#"<option value="debian-12" selected>"#] {
        assert!(form.text.contains(want), "{want} in {}", form.text);
    }
    let api = srv.get("/v1/shapes/small/price").token(&tok).send().await.ok(200);
    // small: 10 GiB boot disk at 0.10 per GiB-month, and 0.01 an hour running; nothing for allocation.
    let hourly = api["hourly_micros"].as_i64().unwrap();
    assert_eq!(hourly, 10_000 + 1_389, "{api}");
    assert_eq!(api["lines"][0]["meter"], "allocated_seconds");
    assert!(api["lines"][0]["hourly_micros"].is_null(), "an unpriced meter is listed as such: {api}");
    assert!(form.text.contains("USD 0.011389</strong> an hour"), "the form shows the API's price: {}", form.text);
    assert!(form.text.contains("not priced"), "{}", form.text);
    // The fragment the form fetches when the shape changes prices the other shape.
    let frag = b.get("/instances/new/estimate?shape=huge").await;
    let huge = srv.get("/v1/shapes/huge/price").token(&tok).send().await.ok(200);
    let monthly = plinth_domain::rating::money::money(huge["monthly_micros"].as_i64().unwrap());
    assert!(frag.text.contains(&format!("USD {monthly}</strong> a month")), "{}", frag.text);
    assert!(frag.text.starts_with("<section id=\"estimate\""), "a fragment, not a page: {}", frag.text);

    // Submitted: the same use case as `POST /v1/instances`, audited as its twin.
    let r = b
        .post("/instances/new", &[("name", "web-7"), ("project", &project), ("shape", "small"), ("image", "debian-12")])
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let to = r.header("location").unwrap();
    let listed = srv.get(&format!("/v1/instances?project_id={project}&name=web-7")).token(&tok).send().await.ok(200);
    let iid = id(&listed["items"][0]);
    assert!(to.starts_with(&format!("/instances/{iid}?op=op_")), "{to}");
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
    let audit = srv.get("/v1/audit-log?action=instances.create").token(&tok).send().await.ok(200);
    assert!(audit["items"].as_array().unwrap().iter().any(|a| a["target"] == iid.as_str()), "{audit}");
}

#[tokio::test]
async fn a_refused_create_keeps_the_form_and_says_which_constraint_removed_how_many_hosts() {
    let (srv, _host, tok, project) = shop().await;
    let mut b = Browser::new(&srv);
    b.login(&tok).await;
    let r = b
        .post("/instances/new", &[("name", "big-1"), ("project", &project), ("shape", "huge"), ("image", "debian-12")])
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains(r#"role="alert""#) && r.text.contains("no_capacity"), "{}", r.text);
    assert!(r.text.contains("Hosts it removed (of 1)"), "{}", r.text);
    assert!(r.text.contains("<tr><td>vcpu</td><td>1</td></tr>"), "the constraint and its count: {}", r.text);
    assert!(r.text.contains(r#"name="name" value="big-1""#), "what was typed stays: {}", r.text);
    assert!(r.text.contains(r#"<option value="huge" selected>"#), "{}", r.text);
    let none = srv.get(&format!("/v1/instances?name=big-1&project_id={project}")).token(&tok).send().await.ok(200);
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "nothing was made");
    // Bad input is refused in the form too, and markup typed into it stays text.
    let r = b
        .post(
            "/instances/new",
            &[
                ("name", "\"><script>alert(1)</script>"),
                ("project", &project),
                ("shape", "small"),
                ("image", "debian-12"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(!r.text.contains("<script>alert"), "{}", r.text);
    assert!(r.text.contains("&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", r.text);
}

mod terminal {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    /// A ticket for `iid`'s console, as the page's script asks for one.
    async fn ticket(b: &Browser<'_>, iid: &str) -> serde_json::Value {
        let r = b.post(&format!("/instances/{iid}/console/ticket"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// Opens the console socket as a page of `origin` would (no cookie: the ticket is
    /// the credential).
    async fn open(srv: &TestServer, iid: &str, origin: &str) -> Result<Ws, u16> {
        let url = format!("{}/instances/{iid}/console/ws", srv.base.replace("http://", "ws://"));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("connect: {e}"),
        }
    }

    /// The next JSON frame, within 20 s.
    async fn next(ws: &mut Ws) -> serde_json::Value {
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
                .await
                .expect("a frame within 20 s")
                .expect("the socket stays open")
                .expect("a frame");
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }

    /// Reads output frames until their text holds `needle`.
    async fn output_until(ws: &mut Ws, needle: &str) -> String {
        let mut seen = String::new();
        while !seen.contains(needle) {
            let f = next(ws).await;
            assert_eq!(f["type"], "output", "{f} after {seen:?}");
            seen.push_str(f["data"].as_str().unwrap());
        }
        seen
    }

    async fn ship(srv: &TestServer, host: &common::fleet::TestHost, iid: &str, offset: u64, data: &str) {
        srv.post(&format!("/agent/v1/instances/{iid}/console?stream=1&offset={offset}&reset=false"))
            .token(&host.credential)
            .header("content-type", "application/octet-stream")
            .body(data.to_string())
            .send()
            .await
            .ok(200);
    }

    #[tokio::test]
    async fn a_one_time_ticket_in_the_first_frame_opens_the_console_which_follows_output_and_takes_input() {
        let (srv, host, admin, _project, iid, _agent) = running_vm().await;
        ship(&srv, &host, &iid, 0, "boot\nPLINTH-GUEST-READY\n").await;
        let mut b = Browser::new(&srv);
        b.login(&admin.secret).await;
        let origin = srv.base.clone();

        let t = ticket(&b, &iid).await;
        let secret = t["ticket"].as_str().unwrap().to_string();
        assert!(secret.starts_with("pct_") && t["expires_in_seconds"] == 60 && t["read_only"] == false, "{t}");
        let mut ws = open(&srv, &iid, &origin).await.expect("opened");
        ws.send(Message::Text(json!({ "ticket": secret }).to_string().into())).await.unwrap();
        assert_eq!(next(&mut ws).await, json!({ "type": "ready", "read_only": false }));
        output_until(&mut ws, "PLINTH-GUEST-READY").await;
        // Output the host ships later follows.
        ship(&srv, &host, &iid, 24, "later line\n").await;
        output_until(&mut ws, "later line").await;
        // Typing is `POST /v1/instances/{id}/console/input`'s use case: it waits for the host.
        ws.send(Message::Text(json!({ "input": "uname -a\r" }).to_string().into())).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let waiting = loop {
            let r = srv
                .post("/agent/v1/console-input")
                .token(&host.credential)
                .json(&json!({ "acked": [], "wait": 5 }))
                .send()
                .await
                .ok(200);
            let items = r["chunks"].as_array().cloned().unwrap_or_default();
            if !items.is_empty() {
                break items;
            }
            assert!(tokio::time::Instant::now() < deadline, "the typed input never reached the host's queue");
        };
        assert_eq!(waiting[0]["data"], "uname -a\r", "{waiting:?}");
        let audit = srv.get(&format!("/v1/audit-log?target={iid}")).token(&admin.secret).send().await.ok(200);
        let actions: Vec<&str> =
            audit["items"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
        assert!(
            actions.contains(&"instances.console.open") && actions.contains(&"instances.console.input"),
            "{actions:?}"
        );

        // The ticket was single-use.
        let mut again = open(&srv, &iid, &origin).await.expect("opened");
        again.send(Message::Text(json!({ "ticket": secret }).to_string().into())).await.unwrap();
        let f = next(&mut again).await;
        assert_eq!(f["type"], "error", "{f}");
        assert!(f["detail"].as_str().unwrap().contains("not valid"), "{f}");

        // An open socket lives only as long as its session: after logout, input is refused
        // and the socket closes.
        b.post("/logout", &[]).await;
        ws.send(Message::Text(json!({ "input": "reboot\r" }).to_string().into())).await.unwrap();
        let f = next(&mut ws).await;
        assert!(f["type"] == "error" && f["detail"].as_str().unwrap().contains("logged out"), "{f}");
        let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the socket closes once its session ended");
    }

    #[tokio::test]
    async fn a_console_socket_refuses_other_sites_late_or_stale_tickets_and_viewers_input() {
        let (srv, host, admin, project, iid, _agent) = running_vm().await;
        let mut b = Browser::new(&srv);
        b.login(&admin.secret).await;

        // Another site's page cannot open it; nor can a page without a session mint a ticket.
        assert_eq!(open(&srv, &iid, "https://evil.example").await.err(), Some(403));
        assert_eq!(Browser::new(&srv).post(&format!("/instances/{iid}/console/ticket"), &[]).await.status, 401);
        // A ticket is for its instance only.
        let other = id(&srv.create_instance(&admin.secret, &project, "web-2", "small").await.ok(202)["instance"]);
        let t = ticket(&b, &other).await;
        let mut ws = open(&srv, &iid, &srv.base).await.unwrap();
        ws.send(Message::Text(json!({ "ticket": t["ticket"] }).to_string().into())).await.unwrap();
        assert_eq!(next(&mut ws).await["type"], "error");
        // A ticket more than 60 s old is refused.
        let t = ticket(&b, &iid).await;
        srv.store.advance_clock(std::time::Duration::from_secs(61));
        let mut ws = open(&srv, &iid, &srv.base).await.unwrap();
        ws.send(Message::Text(json!({ "ticket": t["ticket"] }).to_string().into())).await.unwrap();
        let f = next(&mut ws).await;
        assert!(f["detail"].as_str().unwrap().contains("expired"), "{f}");
        // A ticket of a logged-out session is refused.
        let t = ticket(&b, &iid).await;
        b.post("/logout", &[]).await;
        let mut ws = open(&srv, &iid, &srv.base).await.unwrap();
        ws.send(Message::Text(json!({ "ticket": t["ticket"] }).to_string().into())).await.unwrap();
        let f = next(&mut ws).await;
        assert!(f["detail"].as_str().unwrap().contains("logged out"), "{f}");

        // A viewer's console is read-only: what it sends is refused and never queued.
        let viewer = srv.create_user(&admin.secret, &admin.tenant_id, "watcher").await;
        srv.bind(&admin.secret, &id(&viewer), "viewer", None).await;
        let (_, vt) = srv.mint_token(&admin.secret, &id(&viewer), "watcher-key").await;
        let mut v = Browser::new(&srv);
        v.login(&vt).await;
        let t = ticket(&v, &iid).await;
        assert_eq!(t["read_only"], true, "{t}");
        let mut ws = open(&srv, &iid, &srv.base).await.unwrap();
        ws.send(Message::Text(json!({ "ticket": t["ticket"] }).to_string().into())).await.unwrap();
        assert_eq!(next(&mut ws).await, json!({ "type": "ready", "read_only": true }));
        ws.send(Message::Text(json!({ "input": "reboot\r" }).to_string().into())).await.unwrap();
        let f = next(&mut ws).await;
        assert!(f["type"] == "error" && f["detail"].as_str().unwrap().contains("read-only"), "{f}");
        let q = srv
            .post("/agent/v1/console-input")
            .token(&host.credential)
            .json(&json!({ "acked": [], "wait": 0 }))
            .send()
            .await
            .ok(200);
        assert_eq!(q["chunks"], json!([]), "nothing typed by the viewer waits for the host");
    }
}

#[tokio::test]
async fn an_invoice_line_drills_down_to_records_that_add_up_and_the_transitions_behind_them() {
    let (srv, host, tok, project) = shop().await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
    srv.post(&format!("/v1/instances/{iid}/stop")).token(&tok).send().await.ok(202);
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "stopped", |i| i["state"] == "stopped").await;
    srv.post(&format!("/v1/instances/{iid}/start")).token(&tok).send().await.ok(202);
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;

    // The API's evidence: two running intervals (before the stop, after the start).
    let inv = srv.get("/v1/invoices/current").token(&tok).send().await.ok(200);
    let inv_id = id(&inv);
    let line = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["meter"] == "running_seconds")
        .expect("a running line")
        .clone();
    let n = line["number"].as_u64().unwrap();
    let ev = srv.get(&format!("/v1/invoices/{inv_id}/lines/{n}/evidence")).token(&tok).send().await.ok(200);
    let records = ev["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{ev}");
    assert_eq!(ev["records_quantity_micros"], ev["line"]["consumed_quantity_micros"], "{ev}");
    let summed: i64 = records.iter().map(|r| r["quantity_micros"].as_i64().unwrap()).sum();
    assert_eq!(summed, ev["line"]["consumed_quantity_micros"].as_i64().unwrap());
    // Each record names the transition that opened it, which names its operation.
    let transitions = ev["transitions"].as_array().unwrap();
    for r in records {
        let cause = r["record"]["cause"].as_str().unwrap();
        let t = transitions.iter().find(|t| t["id"] == cause).unwrap_or_else(|| panic!("{cause} in {ev}"));
        assert_eq!(t["instance_id"], iid.as_str());
    }
    let kinds: Vec<&str> = ev["operations"].as_array().unwrap().iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(kinds.contains(&"instance.start"), "the start behind the second interval: {kinds:?}");
    let actions: Vec<&str> = ev["audit"].as_array().unwrap().iter().filter_map(|a| a["action"].as_str()).collect();
    assert!(actions.contains(&"instances.stop") && actions.contains(&"instances.start"), "{actions:?}");
    // A line that is not there, and a number that is not one.
    srv.get(&format!("/v1/invoices/{inv_id}/lines/99/evidence")).token(&tok).send().await.problem(404, "not_found");
    srv.get(&format!("/v1/invoices/{inv_id}/lines/x/evidence")).token(&tok).send().await.problem(400, "invalid_path");

    // The console shows the same, and says the records add up.
    let mut b = Browser::new(&srv);
    b.login(&tok).await;
    let list = b.get("/invoices").await;
    assert!(list.text.contains(&format!("href=\"/invoices/{inv_id}\"")), "{}", list.text);
    let page = b.get(&format!("/invoices/{inv_id}")).await;
    assert!(page.text.contains(&format!("href=\"/invoices/{inv_id}/lines/{n}\"")), "{}", page.text);
    let lp = b.get(&format!("/invoices/{inv_id}/lines/{n}")).await;
    assert_eq!(lp.status, 200, "{}", lp.text);
    assert!(lp.text.contains("<dd id=\"adds-up\">yes:"), "{}", lp.text);
    for r in records {
        assert!(lp.text.contains(r["record"]["id"].as_str().unwrap()), "{}", lp.text);
        assert!(lp.text.contains(&format!("<tr id=\"{}\">", r["record"]["cause"].as_str().unwrap())), "{}", lp.text);
    }
    // The dashboard: the instance, the month so far (the draft's total, which grows while
    // the instance runs: at least what the invoice said above) and its operations.
    let dash = b.get("/").await;
    assert_eq!(dash.status, 200, "{}", dash.text);
    let amount = |id: &str| -> i64 {
        let start = dash.text.find(&format!("id=\"{id}\">USD ")).unwrap_or_else(|| panic!("{id}: {}", dash.text));
        let rest = &dash.text[start + id.len() + 10..];
        let text = &rest[..rest.find('<').unwrap()];
        plinth_domain::rating::money::parse_micros(text).unwrap_or_else(|| panic!("{text:?}")) as i64
    };
    let so_far = amount("spend-so-far");
    assert!(so_far >= inv["total_micros"].as_i64().unwrap(), "{so_far} vs {inv}");
    assert!(dash.text.contains(&format!("<a href=\"/invoices/{inv_id}\">the draft invoice</a>")), "{}", dash.text);
    assert!(amount("spend-forecast") >= so_far, "{}", dash.text);
    assert!(dash.text.contains("<span class=\"state state-running\">running</span> 1"), "{}", dash.text);
    assert!(dash.text.contains("instance.start"), "recent operations: {}", dash.text);
    let csv = b.get(&format!("/invoices/{inv_id}/csv")).await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    // Another tenant's session sees none of it.
    let (globex, _) = srv.tenant_project("globex").await;
    let mut g = Browser::new(&srv);
    g.login(&globex).await;
    assert_eq!(g.get(&format!("/invoices/{inv_id}/lines/{n}")).await.status, 404);
    assert_eq!(g.get(&format!("/invoices/{inv_id}")).await.status, 404);
}

#[tokio::test]
async fn lists_paginate_with_a_next_link() {
    let (srv, _host, tok, project) = shop().await;
    for n in 1..=3 {
        srv.create_instance(&tok, &project, &format!("web-{n}"), "small").await.ok(202);
    }
    let mut b = Browser::new(&srv);
    b.login(&tok).await;
    let first = b.get("/instances?limit=2").await;
    assert!(first.text.contains(">web-1</a>") && first.text.contains(">web-2</a>"), "{}", first.text);
    assert!(!first.text.contains(">web-3</a>"), "{}", first.text);
    let at = first.text.find("rel=\"next\"").map(|_| ()).and_then(|_| {
        let i = first.text.find("<a href=\"/instances?cursor=")? + "<a href=\"".len();
        Some(first.text[i..].split('"').next()?.replace("&#38;", "&"))
    });
    let next = at.unwrap_or_else(|| panic!("a next link: {}", first.text));
    let second = b.get(&next).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert!(second.text.contains(">web-3</a>") && !second.text.contains(">web-1</a>"), "{}", second.text);
    assert!(!second.text.contains("rel=\"next\""), "the last page has no next link");
}

#[tokio::test]
async fn an_operator_drains_a_host_from_its_page_follows_each_instance_and_finds_it_in_the_audit_log() {
    let srv = TestServer::start().await;
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let b2 = srv.enroll_host("h2", inventory(8, 16384), &[]).await;
    let _aa = TestAgent::start(&srv.base, &a, Boots::Succeed);
    let _ab = TestAgent::start(&srv.base, &b2, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let v = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&v["instance"]);
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
    let source = srv.get(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(200)["host_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut op = Browser::new(&srv);
    op.login(&srv.operator).await;

    let page = op.get(&format!("/hosts/{source}")).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains(&format!("href=\"/instances/{iid}\">web-1</a>")), "its instances: {}", page.text);
    assert!(page.text.contains("Same as <code>plinth host drain"), "{}", page.text);
    let r = op.post(&format!("/hosts/{source}/drain"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let to = r.header("location").unwrap();
    let op_id = to.split("op=").nth(1).expect("the drain's operation").to_string();
    // The progress fragment polls while the drain runs, and once it is final (waited for
    // by the operation's own long-poll) says so with 286.
    let first = op.get(&format!("/operations/{op_id}/progress")).await;
    if first.status == 200 {
        assert!(first.text.contains("hx-trigger=\"every 1s\""), "a running one polls: {}", first.text);
    } else {
        assert_eq!(first.status, 286, "{}", first.text);
    }
    assert_eq!(srv.wait_op(&srv.operator, &op_id).await["status"], "succeeded");
    let last = op.get(&format!("/operations/{op_id}/progress")).await;
    assert_eq!(last.status, 286, "{}", last.text);
    assert!(last.text.contains("succeeded") && !last.text.contains("hx-trigger"), "{}", last.text);
    assert!(
        last.text.contains(&format!("<tr><td><code>{iid}</code></td><td class=\"item-status\">done</td>")),
        "{}",
        last.text
    );
    let host_page = op.get(&to).await;
    assert!(host_page.text.contains("state-cordoned"), "{}", host_page.text);

    // The audit page finds it, filtered, and as CSV; a tenant sees only its own records.
    let audit = op.get(&format!("/audit?action=hosts.drain&target={source}")).await;
    assert_eq!(audit.status, 200);
    assert_eq!(audit.text.matches("<td>hosts.drain</td>").count(), 1, "{}", audit.text);
    let csv = op.get(&format!("/audit/csv?action=hosts.drain&target={source}")).await;
    assert!(
        csv.text.starts_with("time,action,target") && csv.text.contains(&format!("hosts.drain,{source}")),
        "{}",
        csv.text
    );
    let mut t = Browser::new(&srv);
    t.login(&tok).await;
    let theirs = t.get("/audit").await;
    assert!(theirs.text.contains("instances.create") && !theirs.text.contains("hosts.drain"), "{}", theirs.text);
    assert_eq!(t.get(&format!("/hosts/{source}")).await.status, 403);
    assert_eq!(t.post(&format!("/hosts/{source}/cordon"), &[]).await.status, 403);
}

#[tokio::test]
async fn a_drain_is_aborted_from_its_hosts_page() {
    // A move that cannot finish gives up after 3 s; the abort takes effect between instances.
    let config = plinth_server::ServerConfig { step_timeout: std::time::Duration::from_secs(3), ..Default::default() };
    let srv = TestServer::start_with(config).await;
    let a = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    // The only other host has no agent: an instance moved there never starts, so the
    // drain waits, and can be aborted.
    let _b = srv.enroll_host("h2", inventory(8, 16384), &[]).await;
    srv.post(&format!("/v1/hosts/{}/cordon", _b.id)).token(&srv.operator).send().await.ok(200);
    let _aa = TestAgent::start(&srv.base, &a, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let mut ids = Vec::new();
    for name in ["web-1", "web-2"] {
        let v = srv.create_instance(&tok, &project, name, "small").await.ok(202);
        let iid = id(&v["instance"]);
        srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
        ids.push(iid);
    }
    srv.post(&format!("/v1/hosts/{}/uncordon", _b.id)).token(&srv.operator).send().await.ok(200);
    let mut op = Browser::new(&srv);
    op.login(&srv.operator).await;
    let r = op.post(&format!("/hosts/{}/drain", a.id), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let op_id = r.header("location").unwrap().split("op=").nth(1).unwrap().to_string();
    let running = op.get(&format!("/operations/{op_id}/progress")).await;
    assert_eq!(running.status, 200, "still running: {}", running.text);
    assert!(
        running.text.contains(&format!("action=\"/operations/{op_id}/cancel\"")),
        "an Abort button: {}",
        running.text
    );

    let r = op.post(&format!("/operations/{op_id}/cancel"), &[]).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location").unwrap(), format!("/hosts/{}?op={op_id}", a.id));
    let done = srv.wait_op(&srv.operator, &op_id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    // The abort takes effect between instances: one being moved when it came finishes its
    // move (it fails here), and at least the next one never starts moving.
    let items = done["items"].as_array().unwrap();
    assert!(items.iter().filter(|i| i["status"] == "pending").count() >= 1, "{done}");
    assert!(items.iter().all(|i| i["status"] != "moving" && i["status"] != "done"), "{done}");
    let last = op.get(&format!("/operations/{op_id}/progress")).await;
    assert_eq!(last.status, 286, "{}", last.text);
    assert!(last.text.contains("cancelled") && !last.text.contains("/cancel\""), "no Abort once final: {}", last.text);
    let audit = op.get("/audit?action=operations.cancel").await;
    assert!(audit.text.contains(&format!("<code>{op_id}</code>")), "the abort is audited: {}", audit.text);
}
