//! Billing commands: `plinth usage`, `plinth invoice …`, `plinth price-book …`, `plinth
//! quota|budget|credit|commitment …`, `plinth billing reconcile|revenue` and `plinth
//! system clock`. Each maps flags to the `/v1` billing API and answers to tables (money and
//! quantities as exact decimals) or, with `-o json`, the server's JSON as it came.
//!
//! Amount flags (`--amount 12.50`) are parsed exactly to micro-units, never through a
//! float. This module owns the usage ledger, reconciliation, revenue and clock commands,
//! and what its submodules share; invoices and price books are in [`invoices`], limits and
//! money arrangements in [`accounts`].

mod accounts;
mod invoices;
mod money;

pub use accounts::{BudgetCmd, CommitmentCmd, CreditCmd, QuotaCmd};
pub use invoices::{InvoiceCmd, PriceBookCmd};

use super::ListArgs;
use crate::client::Client;
use crate::output::{self, Format};
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use plinth_api::{ReconciliationReport, RevenueRow, UsageRecord};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Parses an RFC 3339 time flag (`2026-11-01T00:00:00Z`).
pub fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"))
}

/// Adds `key=value` to a query when the flag was given.
fn push(q: &mut Vec<(String, String)>, key: &str, v: &Option<String>) {
    if let Some(v) = v {
        q.push((key.to_string(), v.clone()));
    }
}

/// The typed form of an answer, or an error saying what did not fit.
fn typed<T: DeserializeOwned>(v: &Value, what: &str) -> Result<T> {
    serde_json::from_value(v.clone()).map_err(|e| anyhow!("the server's {what} did not parse: {e}"))
}

/// The items of a list answer: a page's `items` (or a bare array), typed.
fn listed<T: DeserializeOwned>(v: &Value, what: &str) -> Result<Vec<T>> {
    typed(v.get("items").unwrap_or(v), what)
}

/// A time as tables show it: `2026-11-01T00:00:00Z`, fractions only when present.
fn when(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A billing period's label as the `--period` flags take it: `2026-11`.
fn period_label(start: &DateTime<Utc>) -> String {
    start.format("%Y-%m").to_string()
}

/// Prints display rows (objects of strings) as a table with `columns` (and the next
/// page's cursor, when `raw` is a page with more), or the answer `raw` as it came with
/// `-o json`.
fn rows(o: Format, raw: &Value, rows: Vec<Value>, columns: &[&str]) {
    if o == Format::Json {
        output::object(o, raw);
        return;
    }
    output::list(o, &json!({ "items": rows, "next_cursor": raw.get("next_cursor") }), columns);
}

/// Prints `(name, value)` pairs as a two-column table, in the order given.
fn pairs(items: &[(&str, String)]) {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    for (k, v) in items {
        t.add_row(vec![k.to_string(), v.clone()]);
    }
    println!("{t}");
}

/// Flags of `plinth usage`.
#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub page: ListArgs,
    /// Only this tenant's records (operators).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this project's records.
    #[arg(long)]
    pub project: Option<String>,
    /// Only this resource's records (an instance id, …).
    #[arg(long)]
    pub resource: Option<String>,
    /// Only this meter: allocated_seconds, running_seconds, gpu_seconds, disk_gib_seconds, …
    #[arg(long)]
    pub meter: Option<String>,
    /// Only records overlapping [from, to): RFC 3339.
    #[arg(long, value_parser = rfc3339)]
    pub from: Option<DateTime<Utc>>,
    #[arg(long, value_parser = rfc3339)]
    pub to: Option<DateTime<Utc>>,
}

/// `plinth usage`: the usage ledger, one interval or counter sample a row, with its
/// quantity exactly in the meter's unit.
pub async fn usage(c: &Client, o: Format, a: &UsageArgs) -> Result<()> {
    let mut q = a.page.query();
    push(&mut q, "tenant_id", &a.tenant);
    push(&mut q, "project_id", &a.project);
    push(&mut q, "resource_id", &a.resource);
    push(&mut q, "meter", &a.meter);
    push(&mut q, "from", &a.from.as_ref().map(when));
    push(&mut q, "to", &a.to.as_ref().map(when));
    let v = c.get("/v1/usage", &q).await?;
    if o == Format::Json {
        output::list(o, &v, &[]);
        return Ok(());
    }
    let records: Vec<UsageRecord> = listed(&v, "usage page")?;
    let items: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "resource": r.resource_id, "meter": r.meter.as_str(), "dimension": r.dimension,
                "start": when(&r.start_at),
                "end": r.end_at.as_ref().map(when).unwrap_or_else(|| "open".into()),
                "quantity": r.quantity_micros.map(|q| money::quantity(q, &r.unit)),
                "first": r.first,
            })
        })
        .collect();
    output::list(
        o,
        &json!({ "items": items, "next_cursor": v["next_cursor"] }),
        &["id", "resource", "meter", "dimension", "start", "end", "quantity", "first"],
    );
    Ok(())
}

/// Billing reports (operators; tenants see their own reconciliation).
#[derive(Subcommand, Debug)]
pub enum BillingCmd {
    /// Lifecycle time against metered time against invoiced quantity, per instance and
    /// meter. Exits non-zero when any row differs.
    Reconcile {
        /// `2026-11`; default the current period.
        #[arg(long)]
        period: Option<String>,
        /// Only this tenant (operators).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revenue by period, meter and dimension, from finalized invoices.
    Revenue {
        /// `2026-11`; default every period.
        #[arg(long)]
        period: Option<String>,
        /// Include draft invoices.
        #[arg(long)]
        drafts: bool,
    },
}

impl BillingCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            BillingCmd::Reconcile { period, tenant } => reconcile(c, o, period, tenant).await,
            BillingCmd::Revenue { period, drafts } => {
                let mut q = vec![];
                push(&mut q, "period", period);
                if *drafts {
                    q.push(("drafts".into(), "true".into()));
                }
                let v = c.get("/v1/billing/revenue", &q).await?;
                let revenue: Vec<RevenueRow> = listed(&v, "revenue")?;
                let items = revenue
                    .iter()
                    .map(|r| {
                        json!({
                            "period": period_label(&r.period_start), "category": format!("{:?}", r.category),
                            "meter": r.meter.map(|m| m.as_str()), "dimension": r.dimension,
                            "amount": money::priced(r.amount_micros, &r.currency), "invoices": r.invoices,
                            "finalized_only": r.finalized_only,
                        })
                    })
                    .collect();
                rows(
                    o,
                    &v,
                    items,
                    &["period", "category", "meter", "dimension", "amount", "invoices", "finalized_only"],
                );
                Ok(())
            }
        }
    }
}

async fn reconcile(c: &Client, o: Format, period: &Option<String>, tenant: &Option<String>) -> Result<()> {
    let mut q = vec![];
    push(&mut q, "period", period);
    push(&mut q, "tenant_id", tenant);
    let v = c.get("/v1/billing/reconciliation", &q).await?;
    let r: ReconciliationReport = typed(&v, "reconciliation report")?;
    let secs = |m: Option<i64>| m.map(|m| money::quantity(m, "second"));
    let items = r
        .rows
        .iter()
        .map(|row| {
            json!({
                "tenant": row.tenant_id, "resource": row.resource_id, "meter": row.meter.as_str(),
                "dimension": row.dimension, "lifecycle": secs(row.lifecycle_micros),
                "metered": secs(Some(row.metered_micros)), "invoiced": secs(row.invoiced_micros),
                "matches": row.matches,
            })
        })
        .collect();
    rows(o, &v, items, &["tenant", "resource", "meter", "dimension", "lifecycle", "metered", "invoiced", "matches"]);
    let label = period_label(&r.period_start);
    if !r.differences.is_empty() {
        let which: Vec<String> =
            r.differences.iter().map(|d| format!("{} {} {}", d.resource_id, d.meter.as_str(), d.dimension)).collect();
        bail!(
            "{} of {} rows do not reconcile for period {label} (as of {}): {}",
            r.differences.len(),
            r.rows.len(),
            when(&r.as_of),
            which.join("; ")
        );
    }
    if o == Format::Table {
        eprintln!("period {label}: all {} rows reconcile (as of {})", r.rows.len(), when(&r.as_of));
    }
    Ok(())
}

/// The server itself (operators).
#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Move the server's lifecycle and metering clock on (servers started with
    /// PLINTH_TEST_CLOCK=1 only: tests and demos that cross a billing period).
    Clock {
        /// Seconds to move it on by (1 to 366 days' worth).
        #[arg(long)]
        advance: u64,
    },
}

impl SystemCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        let SystemCmd::Clock { advance } = self;
        let v = c.call(Method::POST, "/v1/system/clock", &[], Some(&json!({ "advance_seconds": advance }))).await?;
        output::object(o, &v);
        Ok(())
    }
}
