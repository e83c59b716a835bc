//! `/metrics` as Prometheus sees it: the exposition parses with a strict OpenMetrics
//! parser, one instance create moves exactly the series it should (a placement, the create
//! saga's steps, the ledger records the usage API shows, the instances gauge), and refused
//! placements are counted under the constraint that refused them.

mod common;

use common::fleet::{Boots, TestAgent, inventory};
use common::{TestServer, id};
use openmetrics_parser::{OpenMetricsValue, openmetrics::parse_openmetrics};
use serde_json::json;
use std::collections::BTreeMap;

/// A sample's labels and value (a histogram's value is its count).
type Sample = (BTreeMap<String, String>, f64);

/// One scrape: family name -> its samples.
struct Scrape(BTreeMap<String, Vec<Sample>>);

impl Scrape {
    async fn take(srv: &TestServer) -> Scrape {
        let r = srv.get("/metrics").send().await;
        r.ok(200);
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.starts_with("application/openmetrics-text"), "OpenMetrics text: {ct}");
        let parsed =
            parse_openmetrics(&r.text).unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{}", r.text));
        let mut out = BTreeMap::new();
        for (name, family) in parsed.families {
            let samples = family
                .iter_samples()
                .map(|s| {
                    let labels = s.get_labelset().expect("labels");
                    let labels = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    let value = match &s.value {
                        OpenMetricsValue::Counter(c) => c.value.as_f64(),
                        OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                        OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                        other => panic!("{name}: unexpected {other:?}"),
                    };
                    (labels, value)
                })
                .collect();
            out.insert(name, samples);
        }
        Scrape(out)
    }

    /// The sum of `family`'s samples whose labels include every pair of `want` (0 when none).
    fn sum(&self, family: &str, want: &[(&str, &str)]) -> f64 {
        self.0
            .get(family)
            .into_iter()
            .flatten()
            .filter(|(labels, _)| want.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
            .sum()
    }

    fn has(&self, family: &str) -> bool {
        self.0.contains_key(family)
    }
}

#[tokio::test]
async fn one_create_moves_the_counters_it_should() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    srv.public_image("debian-12").await;

    let before = Scrape::take(&srv).await;
    for family in [
        "plinth_http_requests",
        "plinth_http_request_duration_seconds",
        "plinth_ledger_records_written",
        "plinth_hosts",
        "plinth_agent_report_lag_seconds",
        "plinth_store_up",
    ] {
        assert!(before.has(family), "{family} is exposed before any instance exists");
    }
    assert_eq!(before.sum("plinth_store_up", &[]), 1.0);
    assert_eq!(before.sum("plinth_hosts", &[("state", "available")]), 1.0);
    let lag = before.sum("plinth_agent_report_lag_seconds", &[("host", &host.id)]);
    assert!(before.0["plinth_agent_report_lag_seconds"].len() == 1 && lag >= 0.0, "one lag series for h1");
    assert_eq!(before.sum("plinth_instances", &[]), 0.0);

    let created = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let iid = id(&created["instance"]);
    let op = srv.wait_op(&tok, created["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    srv.wait_until(&tok, &format!("/v1/instances/{iid}"), "running", |i| i["state"] == "running").await;
    let after = Scrape::take(&srv).await;

    let delta = |family: &str, want: &[(&str, &str)]| after.sum(family, want) - before.sum(family, want);
    assert_eq!(delta("plinth_placement_decisions", &[("outcome", "placed")]), 1.0);
    assert_eq!(delta("plinth_placement_decisions", &[("outcome", "refused")]), 0.0);
    assert_eq!(delta("plinth_placement_refusals", &[]), 0.0);
    // Every step of the create saga ran once: those the request did inline, then the rest.
    for step in ["quota", "claim", "prepare", "start"] {
        assert_eq!(delta("plinth_saga_steps", &[("kind", "instance.create"), ("step", step)]), 1.0, "step {step}");
    }
    assert_eq!(delta("plinth_saga_step_failures", &[]), 0.0);
    assert_eq!(delta("plinth_sagas_finished", &[("kind", "instance.create"), ("status", "succeeded")]), 1.0);
    assert_eq!(after.sum("plinth_instances", &[("state", "running"), ("runtime", "vm")]), 1.0);
    assert_eq!(after.sum("plinth_instances", &[]), 1.0, "one instance in one state");
    assert_eq!(
        delta("plinth_http_requests", &[("route", "/v1/instances"), ("method", "POST"), ("status", "202")]),
        1.0
    );

    // The ledger counter moved by exactly the records the usage API shows for the instance.
    let usage = srv.list_all(&tok, &format!("/v1/usage?resource_id={iid}")).await;
    assert!(!usage.is_empty(), "the create wrote usage");
    assert_eq!(delta("plinth_ledger_records_written", &[]), usage.len() as f64, "{usage:?}");
    for meter in ["allocated_seconds", "running_seconds"] {
        let n = usage.iter().filter(|u| u["meter"] == meter).count() as f64;
        assert_eq!(delta("plinth_ledger_records_written", &[("meter", meter)]), n, "meter {meter}");
    }
    let text = srv.get("/metrics").send().await.text;
    assert!(!text.contains(&iid), "no instance id becomes a label");
}

#[tokio::test]
async fn refused_placements_are_counted_by_the_constraint_that_refused() {
    let srv = TestServer::start().await;
    srv.enroll_host("h1", inventory(4, 8192), &[]).await;
    srv.enroll_host("h2", inventory(4, 8192), &[]).await;
    srv.shape("huge", 64, 1024).await;
    srv.shape("small", 1, 512).await;
    let (tok, project) = srv.tenant_project("acme").await;
    srv.public_image("debian-12").await;

    let before = Scrape::take(&srv).await;
    srv.create_instance(&tok, &project, "big", "huge").await.problem(409, "no_capacity");
    let mid = Scrape::take(&srv).await;
    let delta = |a: &Scrape, b: &Scrape, family: &str, want: &[(&str, &str)]| b.sum(family, want) - a.sum(family, want);
    assert_eq!(delta(&before, &mid, "plinth_placement_decisions", &[("outcome", "refused")]), 1.0);
    assert_eq!(delta(&before, &mid, "plinth_placement_decisions", &[("outcome", "placed")]), 0.0);
    assert_eq!(delta(&before, &mid, "plinth_placement_refusals", &[("constraint", "vcpu")]), 1.0);
    assert_eq!(delta(&before, &mid, "plinth_placement_refusals", &[]), 1.0, "only vcpu refused it");

    let body = json!({ "project_id": project, "name": "fast", "shape": "small", "image": "debian-12",
        "required_traits": ["CUSTOM_NVME"] });
    srv.post("/v1/instances").token(&tok).json(&body).send().await.problem(409, "no_valid_host");
    let after = Scrape::take(&srv).await;
    assert_eq!(delta(&mid, &after, "plinth_placement_refusals", &[("constraint", "traits")]), 1.0);
    assert_eq!(delta(&mid, &after, "plinth_placement_refusals", &[("constraint", "vcpu")]), 0.0);
    assert_eq!(after.sum("plinth_placement_decisions", &[("outcome", "refused")]), 2.0);
    assert_eq!(after.sum("plinth_instances", &[]), 0.0, "refused creates leave no instance");
}

#[tokio::test]
async fn a_failed_step_and_a_billing_run_are_counted() {
    let mut config = plinth_server::ServerConfig::default();
    config.failpoints.insert("instance.create:start".into());
    let srv = TestServer::start_with(config).await;
    let host = srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 2, 2048).await;
    let (tok, project) = srv.tenant_project("acme").await;
    srv.public_image("debian-12").await;

    let before = Scrape::take(&srv).await;
    let created = srv.create_instance(&tok, &project, "web-1", "small").await.ok(202);
    let op = srv.wait_op(&tok, created["operation"]["id"].as_str().unwrap()).await;
    assert_eq!(op["status"], "failed", "{op}");
    let after = Scrape::take(&srv).await;
    let delta = |family: &str, want: &[(&str, &str)]| after.sum(family, want) - before.sum(family, want);
    let create = ("kind", "instance.create");
    for step in ["quota", "claim", "prepare"] {
        assert_eq!(delta("plinth_saga_steps", &[create, ("step", step)]), 1.0, "step {step}");
    }
    assert_eq!(delta("plinth_saga_steps", &[create, ("step", "start")]), 0.0, "start never completed");
    assert_eq!(delta("plinth_saga_step_failures", &[create, ("step", "start"), ("phase", "do")]), 1.0);
    assert_eq!(delta("plinth_saga_step_failures", &[]), 1.0, "the undos succeeded");
    assert_eq!(delta("plinth_sagas_finished", &[create, ("status", "failed")]), 1.0);
    assert_eq!(delta("plinth_sagas_finished", &[create, ("status", "succeeded")]), 0.0);
    assert_eq!(after.sum("plinth_instances", &[("state", "running")]), 0.0);

    // The billing run, on demand, is timed (the timer may run it too meanwhile: at least one).
    srv.post("/v1/system/background-tasks/billing/run").token(&srv.operator).send().await.ok(200);
    let billed = Scrape::take(&srv).await;
    let runs = |s: &Scrape| s.sum("plinth_background_task_runs", &[("task", "billing"), ("outcome", "ok")]);
    let timed = |s: &Scrape| s.sum("plinth_background_task_duration_seconds", &[("task", "billing")]);
    assert!(runs(&billed) >= runs(&after) + 1.0, "the billing run is counted");
    assert!(timed(&billed) >= timed(&after) + 1.0, "the billing run is timed");
}
