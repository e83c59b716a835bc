//! `plinth quota|budget|credit|commitment …`: a tenant's limits and money arrangements —
//! quotas checked with every claim, monthly spend thresholds, credit grants invoices draw
//! on, and capacity commitments billed whether used or not.

use super::money::{self, parse_amount};
use super::{ListArgs, rfc3339, rows, when};
use crate::cli::{Ids, delete};
use crate::output::{Out, opt, wire_name};
use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use plinth_api::*;
use plinth_client::resolve::{is_any_id, resolve};
use plinth_client::{Budgets, Client, Commitments, Credits, Doc, Error, Projects, Tenants};

/// Quotas: limits per tenant or project, with what is used.
#[derive(Subcommand, Debug)]
pub enum QuotaCmd {
    /// Limits, used and available: a tenant's and its projects', or one project's.
    Show {
        /// A tenant or project, id or name (operators must give one; tenants default to
        /// their own).
        scope_id: Option<String>,
    },
    /// Set limits of a tenant (operators) or a project: `instances=10 vcpus=64
    /// gpus:nvidia-h100-80gb=8`; `resource=none` removes a limit.
    Set {
        /// A tenant or project, id or name.
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

/// A quota scope's id: an id as given, or the one tenant or project of that name.
async fn scope(c: &Client, given: &str) -> Result<String> {
    if is_any_id(given) {
        return Ok(given.to_string());
    }
    let found = |r: plinth_client::Result<String>| match r {
        Ok(id) => Ok(Some(id)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    };
    let tenant = found(resolve::<Tenants>(c, given).await)?;
    let project = found(resolve::<Projects>(c, given).await)?;
    match (tenant, project) {
        (Some(t), None) => Ok(t),
        (None, Some(p)) => Ok(p),
        (Some(_), Some(_)) => bail!("ambiguous: a tenant and a project are named {given:?}; use an id"),
        (None, None) => bail!("not found: no tenant or project named {given:?}"),
    }
}

fn quota_rows(o: &Out, d: &Doc<Vec<QuotaEntry>>) -> Result<()> {
    let show = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into());
    let items = d
        .iter()
        .map(|e| vec![e.scope_id.clone(), e.resource.clone(), show(e.limit), e.used.to_string(), show(e.available)])
        .collect();
    rows(o, d, items, &["scope", "resource", "limit", "used", "available"], &None)
}

impl QuotaCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            QuotaCmd::Show { scope_id } => {
                let id = match scope_id {
                    Some(s) => Some(scope(c, s).await?),
                    None => None,
                };
                quota_rows(o, &c.quotas(&QuotaQuery { scope_id: id }).await?)
            }
            QuotaCmd::Set { scope_id, limits } => {
                let body = QuotaSet { scope_id: scope(c, scope_id).await?, limits: limits.iter().cloned().collect() };
                quota_rows(o, &c.set_quotas(&body).await?)
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
        /// The tenant: id or name.
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

fn budget_rows(o: &Out, d: &Doc<impl Sized>, list: &[Budget], next: &Option<String>) -> Result<()> {
    let items = list
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                b.tenant_id.to_string(),
                b.name.clone(),
                money::money(b.threshold_micros),
                wire_name(&b.action),
                opt(b.exceeded_period.as_ref().map(super::period_label)),
            ]
        })
        .collect();
    rows(o, d, items, &["id", "tenant", "name", "threshold", "action", "exceeded_period"], next)
}

impl BudgetCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            BudgetCmd::List(page) => {
                let d = c.list::<Budgets>(&page.page(), &()).await?;
                budget_rows(o, &d, &d.items, &d.next_cursor)
            }
            BudgetCmd::Create { tenant, name, threshold, action } => {
                let body = BudgetCreate {
                    tenant_id: TenantId(Tenants::lookup(c, tenant).await?),
                    name: name.clone(),
                    threshold_micros: *threshold,
                    action: match action {
                        BudgetActionArg::Notify => BudgetAction::Notify,
                        BudgetActionArg::BlockNew => BudgetAction::BlockNew,
                    },
                };
                let d = c.create::<Budgets>(&body).await?;
                budget_rows(o, &d, std::slice::from_ref(&*d), &None)
            }
            BudgetCmd::Delete { id, if_match } => delete::<Budgets>(c, id, *if_match).await,
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
        /// The tenant: id or name.
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

fn credit_rows(o: &Out, d: &Doc<impl Sized>, list: &[CreditGrant], next: &Option<String>) -> Result<()> {
    let items = list
        .iter()
        .map(|g| {
            vec![
                g.id.to_string(),
                g.tenant_id.to_string(),
                g.description.clone(),
                money::priced(g.amount_micros, &g.currency),
                money::priced(g.used_micros, &g.currency),
                g.priority.to_string(),
                opt(g.expires_at.as_ref().map(when)),
            ]
        })
        .collect();
    rows(o, d, items, &["id", "tenant", "description", "amount", "used", "priority", "expires_at"], next)
}

impl CreditCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            CreditCmd::List(page) => {
                let d = c.list::<Credits>(&page.page(), &()).await?;
                credit_rows(o, &d, &d.items, &d.next_cursor)
            }
            CreditCmd::Grant { tenant, amount, currency, priority, expires, description } => {
                let body = CreditGrantCreate {
                    tenant_id: TenantId(Tenants::lookup(c, tenant).await?),
                    description: description.clone(),
                    amount_micros: *amount,
                    currency: currency.clone(),
                    priority: *priority,
                    effective_at: None,
                    expires_at: *expires,
                };
                let d = c.create::<Credits>(&body).await?;
                credit_rows(o, &d, std::slice::from_ref(&*d), &None)
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
        /// The tenant: id or name.
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

fn commitment_rows(o: &Out, d: &Doc<impl Sized>, list: &[Commitment], next: &Option<String>) -> Result<()> {
    let items = list
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.tenant_id.to_string(),
                c.meter.as_str().to_string(),
                c.dimension.clone(),
                c.count.to_string(),
                when(&c.start_at),
                when(&c.end_at),
                money::money(c.hourly_price_micros),
            ]
        })
        .collect();
    rows(o, d, items, &["id", "tenant", "meter", "dimension", "count", "start", "end", "hourly_price"], next)
}

impl CommitmentCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            CommitmentCmd::List(page) => {
                let d = c.list::<Commitments>(&page.page(), &()).await?;
                commitment_rows(o, &d, &d.items, &d.next_cursor)
            }
            CommitmentCmd::Create { tenant, meter, dimension, count, start, end, hourly_price } => {
                if end <= start {
                    return Err(anyhow!("--end must be after --start"));
                }
                let body = CommitmentCreate {
                    tenant_id: TenantId(Tenants::lookup(c, tenant).await?),
                    meter: match meter {
                        CommitMeter::RunningSeconds => Meter::RunningSeconds,
                        CommitMeter::GpuSeconds => Meter::GpuSeconds,
                    },
                    dimension: dimension.clone(),
                    count: *count,
                    start_at: *start,
                    end_at: *end,
                    hourly_price_micros: *hourly_price,
                };
                let d = c.create::<Commitments>(&body).await?;
                commitment_rows(o, &d, std::slice::from_ref(&*d), &None)
            }
        }
    }
}
