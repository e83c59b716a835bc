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

use super::{ListArgs, none_match};
use crate::output::{self, Out, opt};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use plinth_api::{ClockAdvance, PeriodQuery, RevenueQuery, UsageQuery};
use plinth_client::resolve::{is_any_id, resolve, resolve_opt};
use plinth_client::{Client, Doc, Instances, Projects, Tenants};

/// Parses an RFC 3339 time flag (`2026-11-01T00:00:00Z`).
pub fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"))
}

/// A time as tables show it: `2026-11-01T00:00:00Z`, fractions only when present.
pub fn when(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A billing period's label as the `--period` flags take it: `2026-11`.
fn period_label(start: &DateTime<Utc>) -> String {
    start.format("%Y-%m").to_string()
}

/// Prints display rows under `columns` (and the next page's cursor, when there is one),
/// or the answer `d` as it came with `-o json|yaml` or `--field`.
fn rows<T>(o: &Out, d: &Doc<T>, rows: Vec<Vec<String>>, columns: &[&str], next: &Option<String>) -> Result<()> {
    if o.document(d)? {
        return Ok(());
    }
    output::table(columns, rows);
    output::more(next);
    Ok(())
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

/// A tenant flag as an id (operators may give a name).
async fn tenant_id(c: &Client, tenant: &Option<String>) -> Result<Option<String>> {
    Ok(resolve_opt::<Tenants>(c, tenant.as_deref()).await?)
}

/// Flags of `plinth usage`.
#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub page: ListArgs,
    /// Only this tenant's records (id or name; operators).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this project's records (id or name).
    #[arg(long)]
    pub project: Option<String>,
    /// Only this resource's records: an id (an instance's, …) or an instance's name.
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
/// quantity exactly in the meter's unit. `--resource` takes an id of any kind, or the name
/// of an instance, a floating IP or a network interface (tried in that order).
pub async fn usage(c: &Client, o: &Out, a: &UsageArgs) -> Result<()> {
    let tenant_id = tenant_id(c, &a.tenant).await?;
    let project_id = resolve_opt::<Projects>(c, a.project.as_deref()).await?;
    let resource_id = match &a.resource {
        Some(r) if is_any_id(r) => Some(r.clone()),
        Some(name) => Some(match resolve::<Instances>(c, name).await {
            Ok(id) => id,
            Err(e) => match resolve::<plinth_client::FloatingIps>(c, name).await {
                Ok(id) => id,
                Err(_) => resolve::<plinth_client::Nics>(c, name).await.map_err(|_| e)?,
            },
        }),
        None => None,
    };
    let page = a.page.page();
    let q = UsageQuery {
        tenant_id: tenant_id.clone(),
        project_id: project_id.clone(),
        resource_id: resource_id.clone(),
        meter: a.meter.clone(),
        from: a.from,
        to: a.to,
        limit: page.limit,
        cursor: page.cursor,
    };
    let d = c.usage(&q).await?;
    let filters = [
        ("tenant", tenant_id),
        ("project", project_id),
        ("resource", resource_id),
        ("meter", a.meter.clone()),
        ("from", a.from.as_ref().map(when)),
        ("to", a.to.as_ref().map(when)),
    ];
    none_match("usage records", &d, &filters);
    let items = d
        .items
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.resource_id.clone(),
                r.meter.as_str().to_string(),
                r.dimension.clone(),
                when(&r.start_at),
                r.end_at.as_ref().map(when).unwrap_or_else(|| "open".into()),
                opt(r.quantity_micros.map(|q| money::quantity(q, &r.unit))),
                r.first.to_string(),
            ]
        })
        .collect();
    rows(o, &d, items, &["id", "resource", "meter", "dimension", "start", "end", "quantity", "first"], &d.next_cursor)
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
        /// Only this tenant (id or name; operators).
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
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            BillingCmd::Reconcile { period, tenant } => reconcile(c, o, period, tenant).await,
            BillingCmd::Revenue { period, drafts } => {
                let d = c.revenue(&RevenueQuery { period: period.clone(), drafts: drafts.then_some(true) }).await?;
                let items = d
                    .iter()
                    .map(|r| {
                        vec![
                            period_label(&r.period_start),
                            format!("{:?}", r.category),
                            opt(r.meter.map(|m| m.as_str())),
                            r.dimension.clone(),
                            money::priced(r.amount_micros, &r.currency),
                            r.invoices.to_string(),
                            r.finalized_only.to_string(),
                        ]
                    })
                    .collect();
                let columns = ["period", "category", "meter", "dimension", "amount", "invoices", "finalized_only"];
                rows(o, &d, items, &columns, &None)
            }
        }
    }
}

async fn reconcile(c: &Client, o: &Out, period: &Option<String>, tenant: &Option<String>) -> Result<()> {
    let q = PeriodQuery { period: period.clone(), tenant_id: tenant_id(c, tenant).await?, format: None };
    let d = c.reconciliation(&q).await?;
    let secs = |m: Option<i64>| opt(m.map(|m| money::quantity(m, "second")));
    let items = d
        .rows
        .iter()
        .map(|row| {
            vec![
                row.tenant_id.to_string(),
                row.resource_id.clone(),
                row.meter.as_str().to_string(),
                row.dimension.clone(),
                secs(row.lifecycle_micros),
                secs(Some(row.metered_micros)),
                secs(row.invoiced_micros),
                row.matches.to_string(),
            ]
        })
        .collect();
    let columns = ["tenant", "resource", "meter", "dimension", "lifecycle", "metered", "invoiced", "matches"];
    rows(o, &d, items, &columns, &None)?;
    let label = period_label(&d.period_start);
    if !d.differences.is_empty() {
        let which: Vec<String> =
            d.differences.iter().map(|r| format!("{} {} {}", r.resource_id, r.meter.as_str(), r.dimension)).collect();
        bail!(
            "{} of {} rows do not reconcile for period {label} (as of {}): {}",
            d.differences.len(),
            d.rows.len(),
            when(&d.as_of),
            which.join("; ")
        );
    }
    if !o.machine() {
        eprintln!("period {label}: all {} rows reconcile (as of {})", d.rows.len(), when(&d.as_of));
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
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        let SystemCmd::Clock { advance } = self;
        o.object(&c.advance_clock(&ClockAdvance { advance_seconds: *advance }).await?)
    }
}
