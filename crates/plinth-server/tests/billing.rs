//! Metering and billing over HTTP: usage intervals that move with lifecycle transitions
//! (same timestamps as the instance's history), quotas that hold under concurrent creates,
//! invoices across a period boundary that reconcile with the history, finalized invoices
//! that cannot change, FOCUS rows that sum to the total, budgets that block, counters that
//! survive resets and duplicates, and random lifecycles that always reconcile (proptest).

mod common;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use common::fleet::{Boots, TestAgent, TestHost, inventory};
use common::{TestServer, id};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

fn op_of(v: &Value) -> String {
    v["operation"]["id"].as_str().expect("operation id").to_string()
}

fn t(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("a time: {v}"))).unwrap().with_timezone(&Utc)
}

/// The first instant of the month after `now` (billing anchor day 1).
fn next_month(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).unwrap()
}

fn ym(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", t.year(), t.month())
}

struct World {
    srv: TestServer,
    host: TestHost,
    _agent: TestAgent,
    tok: String,
    tenant: String,
    project: String,
}

async fn world() -> World {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(64, 262_144), &[]).await;
    let agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 1, 1024).await;
    srv.shape("large", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let p = srv.get(&format!("/v1/projects/{project}")).token(&tok).send().await.ok(200);
    let tenant = p["tenant_id"].as_str().unwrap().to_string();
    World { srv, host, _agent: agent, tok, tenant, project }
}

impl World {
    async fn create(&self, name: &str, shape: &str) -> String {
        let v = self.srv.create_instance(&self.tok, &self.project, name, shape).await.ok(202);
        let op = self.srv.wait_op(&self.tok, &op_of(&v)).await;
        assert_eq!(op["status"], "succeeded", "{op}");
        id(&v["instance"])
    }

    async fn act(&self, iid: &str, action: &str, body: Value) -> Value {
        let r = self.srv.post(&format!("/v1/instances/{iid}/{action}")).token(&self.tok).json(&body).send().await;
        let v = r.ok(202);
        let op = self.srv.wait_op(&self.tok, &op_of(&v)).await;
        assert_eq!(op["status"], "succeeded", "{action}: {op}");
        v
    }

    async fn usage(&self, iid: &str) -> Vec<Value> {
        self.srv.list_all(&self.tok, &format!("/v1/usage?resource_id={iid}")).await
    }

    /// The instance's recorded `egress_bytes`, in bytes.
    async fn egress_bytes(&self, iid: &str) -> i64 {
        let usage = self.usage(iid).await;
        let egress = usage.iter().filter(|u| u["meter"] == "egress_bytes");
        egress.map(|u| u["quantity_micros"].as_i64().unwrap() / 1_000_000).sum()
    }

    async fn events(&self, iid: &str) -> Vec<Value> {
        self.srv.list_all(&self.tok, &format!("/v1/instances/{iid}/events")).await
    }

    async fn price_book(&self) {
        let hour = |meter: &str, micros: i64| {
            json!({ "meter": meter, "model": "flat", "pricing_unit": "hour", "units_per_pricing_unit": 3600,
                    "unit_price_micros": micros, "rounding": "half_up" })
        };
        self.srv
            .post("/v1/price-books")
            .token(&self.srv.operator)
            .json(&json!({ "name": "default", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z",
                "prices": [hour("running_seconds", 100_000), hour("allocated_seconds", 10_000)] }))
            .send()
            .await
            .ok(201);
    }
}

/// The time of the first event after `after` whose `state_changed` entered `state`.
fn entered(events: &[Value], state: &str) -> Vec<DateTime<Utc>> {
    events.iter().filter(|e| e["kind"] == "state_changed" && e["state"] == state).map(|e| t(&e["created_at"])).collect()
}

/// Microseconds an instance ran before `until`, walking its `state_changed` events: a run
/// begins on entering `running` (a reboot stays running) and ends on entering anything else.
fn running_micros(events: &[Value], until: DateTime<Utc>) -> i64 {
    let mut total = 0;
    let mut since: Option<DateTime<Utc>> = None;
    for e in events.iter().filter(|e| e["kind"] == "state_changed") {
        let at = t(&e["created_at"]).min(until);
        let runs = matches!(e["state"].as_str(), Some("running" | "rebooting"));
        match (since, runs) {
            (None, true) => since = Some(at),
            (Some(s), false) => {
                total += (at - s).num_microseconds().unwrap();
                since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        total += (until - s).num_microseconds().unwrap();
    }
    total
}

#[tokio::test]
async fn usage_intervals_open_and_close_with_the_transitions_that_cause_them() {
    let w = world().await;
    let iid = w.create("web-1", "small").await;

    let usage = w.usage(&iid).await;
    let events = w.events(&iid).await;
    let created = events.iter().find(|e| e["kind"] == "created").expect("created event");
    let by_meter = |u: &[Value], m: &str| -> Vec<Value> { u.iter().filter(|r| r["meter"] == m).cloned().collect() };
    let alloc = by_meter(&usage, "allocated_seconds");
    assert_eq!(alloc.len(), 1, "{usage:?}");
    assert_eq!(alloc[0]["cause"], created["id"], "the claim's transition opened it");
    assert_eq!(alloc[0]["start_at"], created["created_at"], "at the transition's time");
    assert!(alloc[0]["end_at"].is_null());
    assert_eq!(alloc[0]["dimension"], "small");
    let disk = by_meter(&usage, "disk_gib_seconds");
    assert_eq!((disk.len(), disk[0]["multiplier"].as_i64()), (1, Some(10)), "the 10 GiB boot disk");
    let running = by_meter(&usage, "running_seconds");
    let ran = entered(&events, "running");
    assert_eq!(running.len(), 1);
    assert_eq!(t(&running[0]["start_at"]), ran[0], "running starts when the state became running");
    assert_eq!(running[0]["first"], true);

    // Stop: the running interval closes at the transition, with quantity = its length.
    w.act(&iid, "stop", json!({})).await;
    let usage = w.usage(&iid).await;
    let events = w.events(&iid).await;
    let stopping = entered(&events, "stopping");
    let running = by_meter(&usage, "running_seconds");
    assert_eq!(running.len(), 1);
    let (s, e) = (t(&running[0]["start_at"]), t(&running[0]["end_at"]));
    assert_eq!(Some(&e), stopping.last(), "it ends when the state left running (stopping is not billed)");
    assert_eq!(running[0]["quantity_micros"].as_i64().unwrap(), (e - s).num_microseconds().unwrap());
    assert!(by_meter(&usage, "allocated_seconds")[0]["end_at"].is_null(), "a stopped instance stays allocated");

    // A reboot stays running (one interval); a resize re-opens allocated as a continuation.
    w.act(&iid, "resize", json!({ "shape": "large" })).await;
    let usage = w.usage(&iid).await;
    let alloc = by_meter(&usage, "allocated_seconds");
    assert_eq!(alloc.len(), 2, "{alloc:?}");
    assert_eq!(alloc[0]["end_at"], alloc[1]["start_at"], "no gap and no overlap");
    assert_eq!((alloc[1]["dimension"].as_str(), alloc[1]["first"].as_bool()), (Some("large"), Some(false)));
    w.act(&iid, "start", json!({})).await;
    w.act(&iid, "reboot", json!({})).await;
    let running = by_meter(&w.usage(&iid).await, "running_seconds");
    assert_eq!(running.len(), 2, "the reboot did not end the second run: {running:?}");
    assert!(running[1]["end_at"].is_null());

    // Delete: nothing is left open, and the tenant cannot see another tenant's usage.
    let d = w.srv.delete(&format!("/v1/instances/{iid}")).token(&w.tok).send().await.ok(202);
    w.srv.wait_op(&w.tok, &op_of(&d)).await;
    assert!(w.usage(&iid).await.iter().all(|u| !u["end_at"].is_null()));
    let (other, _) = w.srv.tenant_project("other").await;
    assert!(w.srv.list_all(&other, &format!("/v1/usage?resource_id={iid}")).await.is_empty());
    let p = w.srv.get("/v1/usage?meter=bananas").token(&w.tok).send().await.problem(422, "invalid_value");
    assert_eq!(p["constraint"]["field"], "meter");
}

#[tokio::test]
async fn concurrent_creates_never_pass_a_quota() {
    let w = world().await;
    w.srv.public_image("debian-12").await;
    let q = w
        .srv
        .call(reqwest::Method::PUT, "/v1/quotas")
        .token(&w.tok)
        .json(&json!({ "scope_id": w.project, "limits": { "instances": 5, "vcpus": 100 } }))
        .send()
        .await
        .ok(200);
    assert_eq!(q.as_array().unwrap().iter().find(|e| e["resource"] == "instances").unwrap()["limit"], 5);
    // Only operators set tenant quotas.
    w.srv
        .call(reqwest::Method::PUT, "/v1/quotas")
        .token(&w.tok)
        .json(&json!({ "scope_id": w.tenant, "limits": { "instances": 500 } }))
        .send()
        .await
        .problem(403, "forbidden");

    let mut tasks = Vec::new();
    for i in 0..20 {
        let (base, tok, project) = (w.srv.base.clone(), w.tok.clone(), w.project.clone());
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/instances"))
                .bearer_auth(tok)
                .json(
                    &json!({ "project_id": project, "name": format!("q-{i}"), "shape": "small", "image": "debian-12" }),
                )
                .send()
                .await
                .unwrap()
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status().as_u16() {
            202 => {
                let v: Value = r.json().await.unwrap();
                w.srv.wait_op(&w.tok, &op_of(&v)).await;
                ok += 1
            }
            409 => {
                let p: Value = r.json().await.unwrap();
                assert_eq!(p["code"], "quota_exceeded", "{p}");
                assert_eq!(p["constraint"]["resource"], "instances");
                assert_eq!(p["constraint"]["limit"], 5);
                refused += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, refused), (5, 15), "exactly the quota is granted");
    let q = w.srv.get(&format!("/v1/quotas?scope_id={}", w.project)).token(&w.tok).send().await.ok(200);
    let inst = q.as_array().unwrap().iter().find(|e| e["resource"] == "instances").unwrap().clone();
    assert_eq!((inst["used"].as_i64(), inst["available"].as_i64()), (Some(5), Some(0)), "{q}");
    // The tenant's own usage counts every project.
    let q = w.srv.get("/v1/quotas").token(&w.tok).send().await.ok(200);
    let t = q.as_array().unwrap().iter().find(|e| e["scope_id"] == w.tenant.as_str() && e["resource"] == "vcpus");
    assert_eq!(t.unwrap()["used"], 5);
    // Deleting one frees its place.
    let list = w.srv.list_all(&w.tok, "/v1/instances").await;
    let d = w.srv.delete(&format!("/v1/instances/{}", id(&list[0]))).token(&w.tok).send().await.ok(202);
    w.srv.wait_op(&w.tok, &op_of(&d)).await;
    w.srv.create_instance(&w.tok, &w.project, "after-delete", "small").await.ok(202);
    w.srv.create_instance(&w.tok, &w.project, "one-too-many", "small").await.problem(409, "quota_exceeded");
}

#[tokio::test]
async fn an_invoice_across_a_period_boundary_matches_the_history_and_never_changes_once_final() {
    let w = world().await;
    w.price_book().await;
    let a = w.create("a", "small").await;
    let b = w.create("b", "small").await;
    w.act(&b, "stop", json!({})).await;

    // Move to an hour past the end of this period, then stop `a` there.
    let now = w.srv.store.now();
    let boundary = next_month(now);
    w.srv.store.advance_clock((boundary - now).to_std().unwrap() + Duration::from_secs(3600));
    w.act(&a, "stop", json!({})).await;
    let period = ym(now);

    // The running interval of `a` was split at the cut-off: no record crosses it.
    let ra: Vec<Value> = w.usage(&a).await.into_iter().filter(|u| u["meter"] == "running_seconds").collect();
    assert_eq!(ra.len(), 2, "{ra:?}");
    assert_eq!(t(&ra[0]["end_at"]), boundary);
    assert_eq!((t(&ra[1]["start_at"]), ra[1]["first"].as_bool()), (boundary, Some(false)));

    // Seconds of running in the period, from the history alone.
    let mut expected = 0i64;
    for iid in [&a, &b] {
        expected += running_micros(&w.events(iid).await, boundary);
    }

    let op = &w.srv.operator;
    let draft = w
        .srv
        .get(&format!("/v1/invoices/current?tenant_id={}&period={period}", w.tenant))
        .token(op)
        .send()
        .await
        .ok(200);
    assert_eq!(draft["status"], "draft");
    let line = |inv: &Value, meter: &str| -> Value {
        inv["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["meter"] == meter)
            .cloned()
            .unwrap_or_else(|| panic!("{meter} in {inv}"))
    };
    assert_eq!(line(&draft, "running_seconds")["consumed_quantity_micros"].as_i64().unwrap(), expected);
    // The tenant sees the same draft; another tenant does not.
    let own = w.srv.get(&format!("/v1/invoices/{}", id(&draft))).token(&w.tok).send().await.ok(200);
    assert_eq!(own["total_micros"], draft["total_micros"]);
    let (other, _) = w.srv.tenant_project("other").await;
    w.srv.get(&format!("/v1/invoices/{}", id(&draft))).token(&other).send().await.problem(404, "not_found");

    let fin = w.srv.post(&format!("/v1/invoices/{}/finalize", id(&draft))).token(op).send().await.ok(200);
    assert_eq!(fin["status"], "finalized");
    assert!(fin["number"].as_str().unwrap().starts_with("INV-"));
    let running = line(&fin, "running_seconds");
    assert_eq!(running["consumed_quantity_micros"].as_i64().unwrap(), expected, "to the microsecond");
    // 0.10 USD per hour, rounded once, half up.
    let want = (i128::from(expected) * 100_000 + 1_800_000_000) / 3_600_000_000;
    assert_eq!(i128::from(running["amount_micros"].as_i64().unwrap()), want);
    assert!(!running["record_ids"].as_array().unwrap().is_empty(), "the line names its records");

    // Immutable: finalizing again, or a tenant finalizing, is refused; the stored invoice
    // is unchanged; corrections are credit notes.
    w.srv.post(&format!("/v1/invoices/{}/finalize", id(&fin))).token(op).send().await.problem(409, "invoice_finalized");
    w.srv.post(&format!("/v1/invoices/{}/finalize", id(&fin))).token(&w.tok).send().await.problem(403, "forbidden");
    let again = w.srv.get(&format!("/v1/invoices/{}", id(&fin))).token(op).send().await.ok(200);
    assert_eq!(again, fin);
    let mut tampered: plinth_api::Invoice = serde_json::from_value(fin.clone()).unwrap();
    tampered.total_micros += 1;
    let mut tx = w.srv.store.begin().await.unwrap();
    let e = tx.save_invoice(&mut tampered).await.expect_err("a finalized invoice cannot be rewritten");
    assert!(e.to_string().contains("can no longer change"), "{e}");
    drop(tx);
    let note = w
        .srv
        .post(&format!("/v1/invoices/{}/credit-notes", id(&fin)))
        .token(op)
        .json(&json!({ "amount_micros": 1, "description": "goodwill" }))
        .send()
        .await
        .ok(201);
    assert_eq!((note["kind"].as_str(), note["total_micros"].as_i64()), (Some("credit_note"), Some(-1)));
    assert_eq!(note["lines"][0]["charge_class"], "Correction");

    // Reconciliation: lifecycle = metered = invoiced, for both periods.
    for p in [period.clone(), ym(boundary)] {
        let r = w
            .srv
            .get(&format!("/v1/billing/reconciliation?period={p}&tenant_id={}", w.tenant))
            .token(op)
            .send()
            .await
            .ok(200);
        assert!(r["differences"].as_array().unwrap().is_empty(), "{p}: {r}");
        assert!(!r["rows"].as_array().unwrap().is_empty(), "{p}: {r}");
    }

    // FOCUS export: BilledCost sums to the invoice's total.
    let csv = w
        .srv
        .get(&format!("/v1/billing/export?period={period}&format=focus&tenant_id={}", w.tenant))
        .token(op)
        .send()
        .await;
    assert_eq!(csv.status, 200);
    let mut rd = csv::Reader::from_reader(csv.text.as_bytes());
    let headers = rd.headers().unwrap().clone();
    let col = headers.iter().position(|h| h == "BilledCost").expect("BilledCost column");
    for must in ["BillingPeriodStart", "ChargeCategory", "ResourceId", "SkuId", "InvoiceId", "BillingCurrency"] {
        assert!(headers.iter().any(|h| h == must), "{must} in {headers:?}");
    }
    let mut sum = 0i128;
    for row in rd.records() {
        let row = row.unwrap();
        sum += plinth_domain::rating::money::parse_micros(&row[col]).expect("a decimal");
    }
    assert_eq!(sum, i128::from(fin["total_micros"].as_i64().unwrap()));

    // Void: a new draft replaces it.
    let next = w.srv.post(&format!("/v1/invoices/{}/void", id(&fin))).token(op).send().await.ok(200);
    assert_eq!((next["status"].as_str(), next["replaces"].as_str()), (Some("draft"), fin["id"].as_str()));
    let old = w.srv.get(&format!("/v1/invoices/{}", id(&fin))).token(op).send().await.ok(200);
    assert_eq!(old["status"], "void");
}

#[tokio::test]
async fn a_block_new_budget_refuses_new_instances_once_passed() {
    let w = world().await;
    w.price_book().await;
    let _a = w.create("a", "small").await;
    w.srv
        .post("/v1/budgets")
        .token(&w.tok)
        .json(&json!({ "tenant_id": w.tenant, "name": "cap", "threshold_micros": 1_000, "action": "block-new" }))
        .send()
        .await
        .ok(201);
    // Into a fresh period (so the test never straddles a month's end), then ten hours of
    // running later the draft passes 1,000 micro-USD.
    let now = w.srv.store.now();
    w.srv.store.advance_clock((next_month(now) - now).to_std().unwrap() + Duration::from_secs(60));
    w.srv.store.advance_clock(Duration::from_secs(10 * 3600));
    w.srv.post("/v1/system/background-tasks/billing/run").token(&w.srv.operator).send().await.ok(200);
    let p = w.srv.create_instance(&w.tok, &w.project, "b", "small").await.problem(402, "budget_exceeded");
    assert_eq!(p["constraint"]["rule"], "budget");
    let budgets = w.srv.get("/v1/budgets").token(&w.tok).send().await.ok(200);
    assert!(!budgets["items"][0]["exceeded_period"].is_null(), "{budgets}");
}

#[tokio::test]
async fn counters_ignore_duplicates_and_survive_resets() {
    let w = world().await;
    let iid = w.create("a", "small").await;
    let sample = |seq: i64, value: i64| {
        json!({ "source": "tap0/tx", "seq": seq, "meter": "egress_bytes", "instance_id": iid, "value": value,
                "at": Utc::now().to_rfc3339() })
    };
    let ack = w
        .srv
        .post("/agent/v1/counters")
        .token(&w.host.credential)
        .json(&json!([sample(1, 1000), sample(2, 1500), sample(2, 1500), sample(3, 200)]))
        .send()
        .await
        .ok(200);
    assert_eq!((ack["recorded"].as_u64(), ack["duplicate"].as_u64()), (Some(3), Some(1)), "{ack}");
    // Replayed whole: nothing new.
    let ack = w
        .srv
        .post("/agent/v1/counters")
        .token(&w.host.credential)
        .json(&json!([sample(1, 1000), sample(3, 200)]))
        .send()
        .await
        .ok(200);
    assert_eq!(ack["recorded"], 0);
    let bytes = w.egress_bytes(&iid).await;
    assert_eq!(bytes, 1000 + 500 + 200, "the reset counts from zero");

    // A sample that arrives after its period's invoice was finalized is billed in the
    // current period instead of being lost.
    let before = w.srv.store.now();
    w.srv.store.advance_clock((next_month(before) - before).to_std().unwrap() + Duration::from_secs(60));
    let op = &w.srv.operator;
    let draft = w
        .srv
        .get(&format!("/v1/invoices/current?tenant_id={}&period={}", w.tenant, ym(before)))
        .token(op)
        .send()
        .await
        .ok(200);
    w.srv.post(&format!("/v1/invoices/{}/finalize", id(&draft))).token(op).send().await.ok(200);
    let late = json!({ "source": "tap0/tx", "seq": 4, "meter": "egress_bytes", "instance_id": iid, "value": 700,
        "at": before.to_rfc3339() });
    w.srv.post("/agent/v1/counters").token(&w.host.credential).json(&json!([late])).send().await.ok(200);
    let rec = w.usage(&iid).await.into_iter().find(|u| u["cause"].as_str().is_some_and(|c| c.ends_with("#4"))).unwrap();
    assert_eq!(t(&rec["period_start"]), next_month(before), "{rec}");
    assert_eq!(rec["quantity_micros"], 500 * 1_000_000);
    // Another host cannot report for this instance.
    let other = w.srv.enroll_host("h2", inventory(4, 8192), &[]).await;
    let ack =
        w.srv.post("/agent/v1/counters").token(&other.credential).json(&json!([sample(9, 5)])).send().await.ok(200);
    assert_eq!(ack["rejected"], 1);
}

/// A report larger than one transaction's chunk (250 samples of one counter) is recorded
/// whole and in order: every sample counted once, the usage the counter's final value,
/// and the same report again adds nothing.
#[tokio::test]
async fn a_report_of_many_samples_is_recorded_whole_and_in_order() {
    let w = world().await;
    let iid = w.create("a", "small").await;
    let samples: Vec<Value> = (1..=250)
        .map(|seq: i64| {
            json!({ "source": "tap0/tx", "seq": seq, "meter": "egress_bytes", "instance_id": iid,
                    "value": seq * 10, "at": Utc::now().to_rfc3339() })
        })
        .collect();
    let post = || w.srv.post("/agent/v1/counters").token(&w.host.credential).json(&json!(samples)).send();
    let ack = post().await.ok(200);
    assert_eq!((ack["recorded"].as_u64(), ack["duplicate"].as_u64()), (Some(250), Some(0)), "{ack}");
    let bytes = w.egress_bytes(&iid).await;
    assert_eq!(bytes, 2500, "the deltas add up to the counter's last value");
    let ack = post().await.ok(200);
    assert_eq!((ack["recorded"].as_u64(), ack["duplicate"].as_u64()), (Some(0), Some(250)), "{ack}");
}

/// One step of a random lifecycle.
#[derive(Clone, Debug)]
enum Step {
    Start,
    Stop,
    Reboot,
    Resize,
    Crash,
    Wait(u64),
    Delete,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Start),
        Just(Step::Stop),
        Just(Step::Reboot),
        Just(Step::Resize),
        Just(Step::Crash),
        Just(Step::Delete),
        (60u64..=3 * 86_400).prop_map(Step::Wait),
    ]
}

async fn drive(lead: u64, steps: Vec<Step>) {
    let w = world().await;
    w.price_book().await;
    // Begin `lead` seconds before a period's end, so the lifecycle crosses it.
    let now = w.srv.store.now();
    let to_boundary = (next_month(now) - now).to_std().unwrap();
    w.srv.store.advance_clock(to_boundary.saturating_sub(Duration::from_secs(lead)));
    let start = w.srv.store.now();
    let iid = w.create("r", "small").await;
    for s in steps {
        let cur = w.srv.get(&format!("/v1/instances/{iid}")).token(&w.tok).send().await.ok(200);
        let state = cur["state"].as_str().unwrap().to_string();
        match s {
            Step::Wait(secs) => w.srv.store.advance_clock(Duration::from_secs(secs)),
            Step::Start if state == "stopped" => drop(w.act(&iid, "start", json!({})).await),
            Step::Stop if state == "running" => drop(w.act(&iid, "stop", json!({})).await),
            Step::Reboot if state == "running" => drop(w.act(&iid, "reboot", json!({})).await),
            Step::Resize if state == "stopped" => {
                let to = if cur["shape_name"] == "small" { "large" } else { "small" };
                drop(w.act(&iid, "resize", json!({ "shape": to })).await);
            }
            Step::Crash if state == "running" => {
                // The guest dies unasked; the restart policy (on-failure) brings it back.
                let g = cur["spec_generation"].as_i64().unwrap();
                w.srv
                    .post("/agent/v1/observed")
                    .token(&w.host.credential)
                    .json(&json!({ "instances": [{ "instance_id": iid, "generation": g, "state": "crashed", "detail": "test" }] }))
                    .send()
                    .await
                    .ok(200);
                w.srv
                    .wait_until(&w.tok, &format!("/v1/instances/{iid}"), "restarted", |v| v["state"] == "running")
                    .await;
            }
            Step::Delete => {
                let d = w.srv.delete(&format!("/v1/instances/{iid}")).token(&w.tok).send().await.ok(202);
                w.srv.wait_op(&w.tok, &op_of(&d)).await;
                break;
            }
            _ => {}
        }
    }
    // Every period touched reconciles, and per meter the records neither overlap nor
    // leave gaps inside an allocation.
    w.srv.post("/v1/system/background-tasks/billing/run").token(&w.srv.operator).send().await.ok(200);
    let mut p = start;
    while p <= w.srv.store.now() {
        let r = w.srv.get(&format!("/v1/billing/reconciliation?period={}", ym(p))).token(&w.tok).send().await.ok(200);
        assert!(r["differences"].as_array().unwrap().is_empty(), "{}: {r}", ym(p));
        p = next_month(p);
    }
    let usage = w.usage(&iid).await;
    type Span = (DateTime<Utc>, Option<DateTime<Utc>>, String);
    let mut by_meter: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for u in &usage {
        let end = if u["end_at"].is_null() { None } else { Some(t(&u["end_at"])) };
        by_meter.entry(u["meter"].as_str().unwrap().to_string()).or_default().push((
            t(&u["start_at"]),
            end,
            u["period_start"].as_str().unwrap().to_string(),
        ));
    }
    for (meter, mut v) in by_meter {
        v.sort();
        for pair in v.windows(2) {
            let end = pair[0].1.expect("only the last interval of a meter may be open");
            assert!(end <= pair[1].0, "{meter}: {pair:?} overlap");
        }
        for (s, e, period) in &v {
            // No record crosses a period: it ends by the next month of its period start.
            let ps = DateTime::parse_from_rfc3339(period).unwrap().with_timezone(&Utc);
            assert!(*s >= ps && e.is_none_or(|e| e <= next_month(ps)), "{meter}: {s} – {e:?} outside {period}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 0, ..ProptestConfig::default() })]
    #[test]
    fn random_lifecycles_across_period_boundaries_reconcile(
        lead in 1u64..2 * 86_400,
        steps in prop::collection::vec(step(), 4..14),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(drive(lead, steps));
    }
}

#[tokio::test]
async fn a_commitment_is_reserved_capacity_in_the_ledger_and_billed_once_on_its_line() {
    let w = world().await;
    w.price_book().await;
    let now = w.srv.store.now();
    let period = ym(now);
    let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).unwrap();
    let end = next_month(next_month(now));
    let c = w
        .srv
        .post("/v1/commitments")
        .token(&w.srv.operator)
        .json(&json!({ "tenant_id": w.tenant, "meter": "running_seconds", "dimension": "small", "count": 2,
            "start_at": start.to_rfc3339(), "end_at": end.to_rfc3339(), "hourly_price_micros": 50_000 }))
        .send()
        .await
        .ok(201);
    // The term is in the ledger as reserved capacity, one record per period.
    let reserved = w.srv.list_all(&w.tok, &format!("/v1/usage?resource_id={}", id(&c))).await;
    assert_eq!(reserved.len(), 2, "{reserved:?}");
    assert!(reserved.iter().all(|r| r["meter"] == "reserved_seconds" && r["multiplier"] == 2));
    assert_eq!(t(&reserved[0]["end_at"]), next_month(now));
    // The draft bills it once, on the commitment's line, which names those records.
    let inv = w
        .srv
        .get(&format!("/v1/invoices/current?tenant_id={}&period={period}", w.tenant))
        .token(&w.srv.operator)
        .send()
        .await
        .ok(200);
    let lines = inv["lines"].as_array().unwrap();
    let reserved_lines: Vec<&Value> = lines.iter().filter(|l| l["meter"] == "reserved_seconds").collect();
    assert_eq!(reserved_lines.len(), 1, "{inv}");
    assert_eq!(reserved_lines[0]["commitment_id"], c["id"]);
    assert_eq!(reserved_lines[0]["record_ids"], json!([reserved[0]["id"]]));
    let hours = (next_month(now) - start).num_seconds() * 2 / 3600;
    assert_eq!(reserved_lines[0]["amount_micros"].as_i64().unwrap(), hours * 50_000);
}
