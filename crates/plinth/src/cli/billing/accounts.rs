//! `plinth quota|budget|credit|commitment …`: a tenant's limits and money arrangements —
//! quotas checked with every claim, monthly spend thresholds, credit grants invoices draw
//! on, and capacity commitments billed whether used or not.

use super::money::{self, parse_amount};
use super::{ListArgs, listed, rfc3339, rows, typed, when};
use crate::client::Client;
use crate::output::Format;
use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use plinth_api::{Budget, Commitment, CreditGrant, QuotaEntry};
use reqwest::Method;
use serde_json::{Map, Value, json};

/// Quotas: limits per tenant or project, with what is used.
#[derive(Subcommand, Debug)]
pub enum QuotaCmd {
    /// Limits, used and available: a tenant's and its projects', or one project's.
    Show {
        /// A tenant or project id (operators must give one; tenants default to their own).
        scope_id: Option<String>,
    },
    /// Set limits of a tenant (operators) or a project: `instances=10 vcpus=64
    /// gpus:nvidia-h100-80gb=8`; `resource=none` removes a limit.
    Set {
        scope_id: String,
        #[arg(required = true, value_parser = limit)]
        limits: Vec<(String, Option<i64>)>,
    },
}

/// Parses `resource=limit` (`none`: no limit).
fn limit(s: &str) -> Result<(String, Option<i64>), String> {
    let (r, l) = s.split_once('=').ok_or_else(|| format!("{s:?} is not resource=limit (e.g. vcpus=64)"))?;
    if r.is_empty() {
        return Err(format!("{s:?} names no resource"));
    }
    let l = match l {
        "none" => None,
        n => Some(
            n.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{s:?}: the limit must be a whole number ≥ 0, or `none` to remove it"))?,
        ),
    };
    Ok((r.to_string(), l))
}

fn quota_rows(o: Format, v: &Value) -> Result<()> {
    let entries: Vec<QuotaEntry> = listed(v, "quotas")?;
    let show = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into());
    let items = entries
        .iter()
        .map(|e| {
            json!({ "scope": e.scope_id, "resource": e.resource, "limit": show(e.limit), "used": e.used,
                "available": show(e.available) })
        })
        .collect();
    rows(o, v, items, &["scope", "resource", "limit", "used", "available"]);
    Ok(())
}

impl QuotaCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            QuotaCmd::Show { scope_id } => {
                let q: Vec<(String, String)> = scope_id.iter().map(|s| ("scope_id".to_string(), s.clone())).collect();
                quota_rows(o, &c.get("/v1/quotas", &q).await?)
            }
            QuotaCmd::Set { scope_id, limits } => {
                let limits: Map<String, Value> = limits.iter().map(|(r, l)| (r.clone(), json!(l))).collect();
                let body = json!({ "scope_id": scope_id, "limits": limits });
                quota_rows(o, &c.call(Method::PUT, "/v1/quotas", &[], Some(&body)).await?)
            }
        }
    }
}

/// What a budget does once passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BudgetActionArg {
    /// Record it (an event and an audit record, once per period).
    Notify,
    /// Refuse new billable resources with `402 budget_exceeded`.
    BlockNew,
}

/// Budgets: monthly spend thresholds per tenant.
#[derive(Subcommand, Debug)]
pub enum BudgetCmd {
    /// List them (tenants see their own).
    List(ListArgs),
    /// Create one (operators and the tenant's admins).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Spend per period that passes it, in the tenant's currency: `100.00`.
        #[arg(long, value_parser = parse_amount)]
        threshold: i64,
        #[arg(long, value_enum)]
        action: BudgetActionArg,
    },
    /// Delete one.
    Delete {
        id: String,
        /// Refuse unless the budget is still at this generation.
        #[arg(long)]
        if_match: Option<i64>,
    },
}

fn budget_rows(o: Format, v: &Value, list: &[Budget]) {
    let items = list
        .iter()
        .map(|b| {
            json!({ "id": b.id, "tenant": b.tenant_id, "name": b.name, "threshold": money::money(b.threshold_micros),
                "action": b.action, "exceeded_period": b.exceeded_period.as_ref().map(super::period_label) })
        })
        .collect();
    rows(o, v, items, &["id", "tenant", "name", "threshold", "action", "exceeded_period"]);
}

impl BudgetCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            BudgetCmd::List(page) => {
                let v = c.get("/v1/budgets", &page.query()).await?;
                budget_rows(o, &v, &listed::<Budget>(&v, "budgets")?);
                Ok(())
            }
            BudgetCmd::Create { tenant, name, threshold, action } => {
                let action = match action {
                    BudgetActionArg::Notify => "notify",
                    BudgetActionArg::BlockNew => "block-new",
                };
                let body =
                    json!({ "tenant_id": tenant, "name": name, "threshold_micros": threshold, "action": action });
                let v = c.call(Method::POST, "/v1/budgets", &[], Some(&body)).await?;
                budget_rows(o, &v, &[typed(&v, "budget")?]);
                Ok(())
            }
            BudgetCmd::Delete { id, if_match } => {
                c.call_with_if_match(Method::DELETE, &format!("/v1/budgets/{id}"), *if_match, None).await?;
                eprintln!("deleted {id}");
                Ok(())
            }
        }
    }
}

/// Credit grants: money a tenant's invoices draw on first.
#[derive(Subcommand, Debug)]
pub enum CreditCmd {
    /// List them (tenants see their own).
    List(ListArgs),
    /// Grant credit to a tenant (operators).
    Grant {
        #[arg(long)]
        tenant: String,
        /// The amount granted: `50.00`.
        #[arg(long, value_parser = parse_amount)]
        amount: i64,
        /// ISO 4217 code.
        #[arg(long, default_value = "USD")]
        currency: String,
        /// Lower is drawn first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// When it stops counting (RFC 3339, exclusive); default never.
        #[arg(long, value_parser = rfc3339)]
        expires: Option<DateTime<Utc>>,
        #[arg(long)]
        description: String,
    },
}

fn credit_rows(o: Format, v: &Value, list: &[CreditGrant]) {
    let items = list
        .iter()
        .map(|g| {
            json!({ "id": g.id, "tenant": g.tenant_id, "description": g.description,
                "amount": money::priced(g.amount_micros, &g.currency),
                "used": money::priced(g.used_micros, &g.currency),
                "priority": g.priority, "expires_at": g.expires_at.as_ref().map(when) })
        })
        .collect();
    rows(o, v, items, &["id", "tenant", "description", "amount", "used", "priority", "expires_at"]);
}

impl CreditCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            CreditCmd::List(page) => {
                let v = c.get("/v1/credits", &page.query()).await?;
                credit_rows(o, &v, &listed::<CreditGrant>(&v, "credits")?);
                Ok(())
            }
            CreditCmd::Grant { tenant, amount, currency, priority, expires, description } => {
                let body = json!({ "tenant_id": tenant, "description": description, "amount_micros": amount,
                    "currency": currency, "priority": priority, "expires_at": expires });
                let v = c.call(Method::POST, "/v1/credits", &[], Some(&body)).await?;
                credit_rows(o, &v, &[typed(&v, "credit grant")?]);
                Ok(())
            }
        }
    }
}

/// The meters a commitment can reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum CommitMeter {
    /// Running instances of a shape (the dimension).
    RunningSeconds,
    /// GPUs of a class (the dimension).
    GpuSeconds,
}

/// Commitments: capacity reserved for a term, billed whether used or not.
#[derive(Subcommand, Debug)]
pub enum CommitmentCmd {
    /// List them (tenants see their own).
    List(ListArgs),
    /// Record one (operators).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_enum)]
        meter: CommitMeter,
        /// A shape name (running_seconds) or a GPU class (gpu_seconds).
        #[arg(long)]
        dimension: String,
        /// How many units are reserved.
        #[arg(long)]
        count: i64,
        /// Start of the term (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        start: DateTime<Utc>,
        /// End of the term (RFC 3339, exclusive).
        #[arg(long, value_parser = rfc3339)]
        end: DateTime<Utc>,
        /// Price per committed unit per hour: `0.50`.
        #[arg(long, value_parser = parse_amount)]
        hourly_price: i64,
    },
}

fn commitment_rows(o: Format, v: &Value, list: &[Commitment]) {
    let items = list
        .iter()
        .map(|c| {
            json!({ "id": c.id, "tenant": c.tenant_id, "meter": c.meter.as_str(), "dimension": c.dimension,
                "count": c.count, "start": when(&c.start_at), "end": when(&c.end_at),
                "hourly_price": money::money(c.hourly_price_micros) })
        })
        .collect();
    rows(o, v, items, &["id", "tenant", "meter", "dimension", "count", "start", "end", "hourly_price"]);
}

impl CommitmentCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            CommitmentCmd::List(page) => {
                let v = c.get("/v1/commitments", &page.query()).await?;
                commitment_rows(o, &v, &listed::<Commitment>(&v, "commitments")?);
                Ok(())
            }
            CommitmentCmd::Create { tenant, meter, dimension, count, start, end, hourly_price } => {
                if end <= start {
                    return Err(anyhow!("--end must be after --start"));
                }
                let meter = match meter {
                    CommitMeter::RunningSeconds => "running_seconds",
                    CommitMeter::GpuSeconds => "gpu_seconds",
                };
                let body = json!({ "tenant_id": tenant, "meter": meter, "dimension": dimension, "count": count,
                    "start_at": start, "end_at": end, "hourly_price_micros": hourly_price });
                let v = c.call(Method::POST, "/v1/commitments", &[], Some(&body)).await?;
                commitment_rows(o, &v, &[typed(&v, "commitment")?]);
                Ok(())
            }
        }
    }
}
