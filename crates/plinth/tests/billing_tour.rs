//! Billing through the real binary: `plinth up` (SQLite, a movable test clock) with a
//! `plinth agent --runtime sim` fleet, driven by the CLI alone. A tenant runs instances
//! across a billing-period boundary; the operator finalizes the period; the invoice's
//! running seconds match the instances' histories (`plinth instance events`) to the
//! microsecond, the reconciliation report agrees, and the FOCUS export sums to the total.

mod common;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Runs the CLI for its table (or CSV); it must succeed.
fn text(profile: &Path, token: Option<&str>, args: &[&str]) -> String {
    let out = cli(profile, token, args);
    assert!(out.status.success(), "plinth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap().with_timezone(&Utc)
}

/// Exact decimal text of millionths, as the CLI prints quantities (`3723.5`).
fn decimal(micros: i64) -> String {
    let (int, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 { int.to_string() } else { format!("{int}.{}", format!("{frac:06}").trim_end_matches('0')) }
}

/// Parses decimal money text (`-0.123456`) into millionths, exactly.
fn micros(s: &str) -> i64 {
    let (neg, s) = s.strip_prefix('-').map(|r| (true, r)).unwrap_or((false, s));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 6, "{s}");
    let v = int.parse::<i64>().unwrap() * 1_000_000 + format!("{frac:0<6}").parse::<i64>().unwrap();
    if neg { -v } else { v }
}

/// RFC 4180 rows of a CSV text (quoted fields may hold commas, quotes and line breaks).
fn csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field, mut quoted) = (vec![], vec![], String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Microseconds an instance ran inside [from, to), from its history alone: from each
/// `state_changed` event into `running` (or `rebooting`, billed as running) to the next
/// `state_changed` event.
fn running_micros(events: &Value, from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let mut changes: Vec<(DateTime<Utc>, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state_changed")
        .map(|e| (time(&e["created_at"]), e["state"].as_str().unwrap_or("").to_string()))
        .collect();
    changes.sort();
    assert!(changes.iter().any(|(_, s)| s == "running"), "the history shows it running: {events}");
    let mut total = 0;
    for (i, (at, state)) in changes.iter().enumerate() {
        if state != "running" && state != "rebooting" {
            continue;
        }
        let until = changes.get(i + 1).map(|(t, _)| *t).unwrap_or(to);
        let (a, b) = ((*at).max(from), until.min(to));
        if b > a {
            total += (b - a).num_microseconds().unwrap();
        }
    }
    total
}

#[test]
fn a_period_is_billed_to_the_second_of_the_instance_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_up, _fleet, profile) =
        up_with_sim_fleet(d, &[("PLINTH_TEST_CLOCK", "1"), ("PLINTH_RECONCILE_PERIOD_S", "0.5")], 2);
    wait_for("two available sim hosts", Duration::from_secs(60), || {
        let items = ok(&profile, None, &["host", "list"])["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2 && items.iter().all(|h| h["state"] == "available")).then_some(())
    });

    // The operator: a shape, a public image, the default price book, a tenant and its admin.
    let op = None;
    ok(&profile, op, &["shape", "create", "small", "--vcpus", "2", "--memory-mib", "2048"]);
    let disk = d.join("tiny.raw");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
    ok(&profile, op, &["image", "create", "tiny", "--public", "--disk", disk.to_str().unwrap()]);
    let book_file = d.join("book.json");
    let price = |meter: &str, micros: i64| {
        json!({ "meter": meter, "model": "flat", "pricing_unit": "hour", "units_per_pricing_unit": 3600,
            "unit_price_micros": micros, "rounding": "half_up" })
    };
    let book = json!({ "name": "default", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z",
        "prices": [price("running_seconds", 100_000), price("allocated_seconds", 10_000)] });
    std::fs::write(&book_file, book.to_string()).unwrap();
    let created = ok(&profile, op, &["price-book", "create", "--file", book_file.to_str().unwrap()]);
    assert_eq!((created["name"].as_str(), created["version"].as_i64()), (Some("default"), Some(1)), "{created}");
    assert_eq!(ok(&profile, op, &["price-book", "list"])["items"].as_array().unwrap().len(), 1);
    let shown = text(&profile, op, &["price-book", "show", created["id"].as_str().unwrap()]);
    assert!(shown.contains("0.10 USD/hour") && shown.contains("0.01 USD/hour"), "{shown}");

    let tenant = ok(&profile, op, &["tenant", "create", "acme"]);
    let tenant_id = tenant["id"].as_str().unwrap();
    let project = ok(&profile, op, &["project", "create", "web", "--tenant", tenant_id]);
    let project_id = project["id"].as_str().unwrap();
    let alice = ok(&profile, op, &["user", "create", "alice", "--tenant", tenant_id]);
    let alice_id = alice["id"].as_str().unwrap();
    ok(&profile, op, &["role-binding", "create", "--user", alice_id, "--role", "tenant-admin"]);
    let secret =
        ok(&profile, op, &["token", "create", "alice-cli", "--user", alice_id])["secret"].as_str().unwrap().to_string();
    let alice = Some(secret.as_str());

    // Before buying: what an hour of `small` costs her (running 0.10 + allocated 0.01).
    let price = ok(&profile, alice, &["shape", "price", "small"]);
    assert_eq!((price["hourly_micros"].as_i64(), price["currency"].as_str()), (Some(110_000), Some("USD")), "{price}");
    assert_eq!(price["monthly_micros"].as_i64(), Some(110_000 * 730), "{price}");

    // The tenant runs two instances.
    let mut instances = vec![];
    for name in ["web-1", "web-2"] {
        let out = cli(
            &profile,
            alice,
            &["instance", "create", name, "--project", project_id, "--shape", "small", "--image", "tiny", "--wait"],
        );
        assert!(out.status.success(), "create {name}: {}", String::from_utf8_lossy(&out.stderr));
        instances.push(ok(&profile, alice, &["instance", "get", name])["id"].as_str().unwrap().to_string());
    }

    // The operator moves the clock to an hour past the end of the current period (the
    // calendar month, UTC: billing anchor day 1).
    let now = time(&ok(&profile, op, &["system", "clock", "--advance", "1"])["now"]);
    let period_start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).unwrap();
    let (ny, nm) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
    let period_end = Utc.with_ymd_and_hms(ny, nm, 1, 0, 0, 0).unwrap();
    let advance = (period_end - now).num_seconds() + 3600;
    let moved = time(&ok(&profile, op, &["system", "clock", "--advance", &advance.to_string()])["now"]);
    assert!(moved > period_end, "the clock is past the period's end: {moved} vs {period_end}");
    let prev = period_start.format("%Y-%m").to_string();

    // In the next period, the tenant stops one instance.
    let out = cli(&profile, alice, &["instance", "stop", &instances[1], "--wait"]);
    assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
    // The billing task splits what still runs at the cut-off: a continuation of web-1's
    // running interval opens in the new period.
    wait_for("web-1's running interval to be cut at the period's end", Duration::from_secs(60), || {
        let usage = ok(&profile, op, &["usage", "--resource", &instances[0], "--meter", "running_seconds"]);
        usage["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| time(&r["period_start"]) == period_end && r["first"] == false)
            .then_some(())
    });
    let table = text(&profile, op, &["usage", "--tenant", tenant_id]);
    assert!(table.contains("open") && table.contains(" s "), "usage table:\n{table}");

    // The operator finalizes the past period; a second finalize is refused.
    let draft = ok(&profile, op, &["invoice", "show", "current", "--tenant", tenant_id, "--period", &prev]);
    assert_eq!(draft["status"], "draft", "{draft}");
    let id = draft["id"].as_str().unwrap().to_string();
    let fin = ok(&profile, op, &["invoice", "finalize", &id]);
    assert_eq!(fin["status"], "finalized", "{fin}");
    assert!(fin["number"].as_str().unwrap().starts_with("INV-"), "{fin}");
    let again = cli(&profile, op, &["invoice", "finalize", &id]);
    assert!(!again.status.success(), "a finalized invoice cannot be finalized again");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("invoice_finalized") && err.contains("only drafts can be finalized"), "{err}");

    // Its running seconds are the instances' histories', to the microsecond.
    let inv = ok(&profile, op, &["invoice", "show", &id]);
    assert_eq!(inv, fin, "a finalized invoice shows as it was finalized");
    let mut ran = 0;
    for i in &instances {
        let events = ok(&profile, alice, &["instance", "events", i, "--limit", "1000"]);
        ran += running_micros(&events, period_start, period_end);
    }
    let lines = inv["lines"].as_array().unwrap();
    let running: Vec<&Value> = lines.iter().filter(|l| l["meter"] == "running_seconds").collect();
    assert_eq!(running.len(), 1, "one running line for the one shape: {inv}");
    assert_eq!(running[0]["consumed_unit"], "second");
    assert_eq!(
        running[0]["consumed_quantity_micros"].as_i64().unwrap(),
        ran,
        "billed running seconds = Σ (period end − running since) from the instance events"
    );
    // The tenant asks why: the line's records add up to it, one per instance.
    let n = running[0]["number"].as_u64().unwrap().to_string();
    let ev = ok(&profile, alice, &["invoice", "evidence", &id, &n]);
    assert_eq!(ev["records_quantity_micros"].as_i64(), Some(ran), "{ev}");
    assert_eq!(ev["records"].as_array().unwrap().len(), instances.len(), "{ev}");
    assert!(lines.iter().any(|l| l["meter"] == "allocated_seconds"), "{inv}");
    let total = inv["total_micros"].as_i64().unwrap();
    assert!(total > 0, "{inv}");
    // The table prints the same seconds, exactly, and the totals.
    let table = text(&profile, op, &["invoice", "show", &id]);
    let seconds = format!("{} s", decimal(ran));
    assert!(table.contains(&seconds), "the table shows {seconds}:\n{table}");
    assert!(table.contains("finalized") && table.contains(fin["number"].as_str().unwrap()), "{table}");
    let by_resource = ok(&profile, op, &["invoice", "show", &id, "--by-resource"]);
    let per: i64 = by_resource["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["meter"] == "running_seconds")
        .map(|l| l["consumed_quantity_micros"].as_i64().unwrap())
        .sum();
    assert_eq!(per, ran, "per resource, the running seconds add up to the line's");

    // Lifecycle, ledger and invoice agree; the FOCUS export bills the total.
    let out = cli(&profile, op, &["billing", "reconcile", "--period", &prev]);
    assert!(out.status.success(), "reconcile: {}", String::from_utf8_lossy(&out.stderr));
    let report = ok(&profile, op, &["billing", "reconcile", "--period", &prev]);
    assert_eq!(report["differences"], json!([]), "{report}");
    assert!(report["rows"].as_array().unwrap().len() >= 4, "two instances × two meters: {report}");
    let export = csv(&text(&profile, op, &["invoice", "export", "--period", &prev, "--format", "focus"]));
    let col = export[0].iter().position(|c| c == "BilledCost").expect("a BilledCost column");
    let billed: i64 = export[1..].iter().map(|r| micros(&r[col])).sum();
    assert_eq!(billed, total, "Σ BilledCost = the invoice's total");
    let listed = ok(&profile, op, &["invoice", "list", "--tenant", tenant_id, "--period", &prev]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
}
