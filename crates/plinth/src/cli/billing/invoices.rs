//! `plinth invoice …` (show, list, finalize, void, credit notes, exports) and `plinth
//! price-book …`: invoices as a readable table of lines with exact quantities and money,
//! then their totals.

use super::money::{self, parse_amount};
use super::{ListArgs, listed, pairs, period_label, push, rows, typed, when};
use crate::client::Client;
use crate::output::{self, Format};
use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use plinth_api::{Invoice, InvoiceLine, PriceBook, PriceBookCreate};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Read;

/// Invoices and credit notes.
#[derive(Subcommand, Debug)]
pub enum InvoiceCmd {
    /// List invoices and credit notes, oldest first (a tenant's current draft is
    /// recomputed first).
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this tenant's (operators; tenants see their own).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this period: `2026-11`.
        #[arg(long)]
        period: Option<String>,
    },
    /// Show an invoice's lines and totals: an id, or `current` for a tenant's invoice of
    /// a period (the draft is recomputed now).
    Show {
        /// An invoice id, or `current`.
        id: String,
        /// With `current`: the tenant (operators; tenants get their own).
        #[arg(long)]
        tenant: Option<String>,
        /// With `current`: the period, `2026-11` (default the current one).
        #[arg(long)]
        period: Option<String>,
        /// Break usage lines down per resource (their amounts sum to the line's).
        #[arg(long)]
        by_resource: bool,
    },
    /// Finalize a draft whose period is over (operators): numbered and immutable.
    Finalize { id: String },
    /// Void a finalized invoice (operators): a new draft for its period replaces it.
    Void { id: String },
    /// Credit part of a finalized invoice back (operators): a finalized credit note.
    CreditNote {
        id: String,
        /// The amount credited, in the invoice's currency: `12.50`.
        #[arg(long, value_parser = parse_amount)]
        amount: i64,
        #[arg(long)]
        description: String,
    },
    /// Print a period's invoices as CSV: `csv` (their lines) or `focus` (FinOps FOCUS
    /// rows, usage per resource).
    Export {
        /// The period: `2026-11`.
        #[arg(long)]
        period: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Focus)]
        format: ExportFormat,
        /// Only this tenant (operators; tenants get their own).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// What `plinth invoice export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Focus,
}

impl InvoiceCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        let one = |id: &str| format!("/v1/invoices/{id}");
        match self {
            InvoiceCmd::List { page, tenant, period } => {
                let mut q = page.query();
                push(&mut q, "tenant_id", tenant);
                push(&mut q, "period", period);
                let v = c.get("/v1/invoices", &q).await?;
                let list: Vec<Invoice> = listed(&v, "invoice list")?;
                let items = list
                    .iter()
                    .map(|i| {
                        json!({
                            "id": i.id, "number": i.number, "tenant": i.tenant_id,
                            "period": period_label(&i.period_start), "kind": snake(&i.kind),
                            "status": snake(&i.status), "total": money::priced(i.total_micros, &i.currency),
                        })
                    })
                    .collect();
                rows(o, &v, items, &["id", "number", "tenant", "period", "kind", "status", "total"]);
                Ok(())
            }
            InvoiceCmd::Show { id, tenant, period, by_resource } => {
                let mut v = if id == "current" {
                    let mut q = vec![];
                    push(&mut q, "tenant_id", tenant);
                    push(&mut q, "period", period);
                    c.get("/v1/invoices/current", &q).await?
                } else {
                    if tenant.is_some() || period.is_some() {
                        bail!("--tenant and --period go with `current`; an invoice id names its tenant and period");
                    }
                    c.get(&one(id), &[]).await?
                };
                if *by_resource {
                    let id = v["id"].as_str().unwrap_or_default().to_string();
                    let q = [("group_by".to_string(), "resource".to_string())];
                    v["lines"] = c.get(&format!("{}/lines", one(&id)), &q).await?;
                }
                show(o, &v, *by_resource)
            }
            InvoiceCmd::Finalize { id } => {
                let v = c.call(Method::POST, &format!("{}/finalize", one(id)), &[], Some(&json!({}))).await?;
                show(o, &v, false)
            }
            InvoiceCmd::Void { id } => {
                let v = c.call(Method::POST, &format!("{}/void", one(id)), &[], Some(&json!({}))).await?;
                if o == Format::Table {
                    eprintln!("voided {id}; the new draft {} replaces it:", v["id"].as_str().unwrap_or(""));
                }
                show(o, &v, false)
            }
            InvoiceCmd::CreditNote { id, amount, description } => {
                let body = json!({ "amount_micros": amount, "description": description });
                let v = c.call(Method::POST, &format!("{}/credit-notes", one(id)), &[], Some(&body)).await?;
                show(o, &v, false)
            }
            InvoiceCmd::Export { period, format, tenant } => {
                let mut q = vec![("period".to_string(), period.clone())];
                q.push(("format".into(), format!("{format:?}").to_lowercase()));
                push(&mut q, "tenant_id", tenant);
                print!("{}", c.get_text("/v1/billing/export", &q, "text/csv").await?);
                Ok(())
            }
        }
    }
}

/// A serde enum's wire name (`draft`, `credit_note`).
fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// One line as a table row. Lines not from a meter (credits) have no units: they show
/// only their amount.
fn line_row(l: &InvoiceLine, currency: &str) -> Value {
    let qty = |micros: i64, unit: &str| (!unit.is_empty()).then(|| money::quantity(micros, unit));
    let unit_price = (!l.pricing_unit.is_empty())
        .then(|| format!("{}/{}", money::priced(l.unit_price_micros, currency), l.pricing_unit));
    json!({
        "#": l.number,
        "category": format!("{:?}", l.category),
        "meter": l.meter.map(|m| m.as_str()),
        "dimension": l.dimension,
        "resource": l.resource_id,
        "consumed": qty(l.consumed_quantity_micros, &l.consumed_unit),
        "pricing": qty(l.pricing_quantity_micros, &l.pricing_unit),
        "unit_price": unit_price,
        "amount": money::priced(l.amount_micros, currency),
        "rounding": snake(&l.rounding),
    })
}

/// Prints an invoice: its lines, then its totals (or the JSON as it came).
fn show(o: Format, v: &Value, by_resource: bool) -> Result<()> {
    if o == Format::Json {
        output::object(o, v);
        return Ok(());
    }
    let inv: Invoice = typed(v, "invoice")?;
    let cur = inv.currency.as_str();
    let mut columns = vec!["#", "category", "meter", "dimension"];
    if by_resource {
        columns.push("resource");
    }
    columns.extend(["consumed", "pricing", "unit_price", "amount", "rounding"]);
    let items: Vec<Value> = inv.lines.iter().map(|l| line_row(l, cur)).collect();
    output::list(o, &json!({ "items": items }), &columns);
    pairs(&[
        ("invoice", inv.id.to_string()),
        ("number", inv.number.clone().unwrap_or_else(|| "-".into())),
        ("kind", snake(&inv.kind)),
        ("tenant", inv.tenant_id.to_string()),
        (
            "period",
            format!("{} ({} – {})", period_label(&inv.period_start), when(&inv.period_start), when(&inv.period_end)),
        ),
        ("status", snake(&inv.status)),
        ("subtotal", money::priced(inv.subtotal_micros, cur)),
        ("credits", money::priced(inv.credits_micros, cur)),
        ("total", money::priced(inv.total_micros, cur)),
    ]);
    Ok(())
}

/// Price books: versioned prices, each effective until the next version of its name.
#[derive(Subcommand, Debug)]
pub enum PriceBookCmd {
    /// List price book versions.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only the versions of this book.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one version's prices.
    Show { id: String },
    /// Add a version (operators) from a JSON file of the create body (`-`: stdin):
    /// `{"name": "default", "currency": "USD", "effective_from": "…", "prices": […]}`.
    Create {
        #[arg(long)]
        file: String,
    },
}

impl PriceBookCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            PriceBookCmd::List { page, name } => {
                let mut q = page.query();
                push(&mut q, "name", name);
                let v = c.get("/v1/price-books", &q).await?;
                let books: Vec<PriceBook> = listed(&v, "price book list")?;
                let items = books
                    .iter()
                    .map(|b| {
                        json!({ "id": b.id, "name": b.name, "version": b.version, "currency": b.currency,
                            "effective_from": when(&b.effective_from), "prices": b.prices.len() })
                    })
                    .collect();
                rows(o, &v, items, &["id", "name", "version", "currency", "effective_from", "prices"]);
                Ok(())
            }
            PriceBookCmd::Show { id } => show_book(o, &c.get(&format!("/v1/price-books/{id}"), &[]).await?),
            PriceBookCmd::Create { file } => {
                let text = if file == "-" {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading the price book from stdin")?;
                    s
                } else {
                    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
                };
                // Checked here first, so a malformed file says where, before any request.
                let book: PriceBookCreate =
                    serde_json::from_str(&text).with_context(|| format!("{file} is not a price book create body"))?;
                let v = c.call(Method::POST, "/v1/price-books", &[], Some(&serde_json::to_value(&book)?)).await?;
                show_book(o, &v)
            }
        }
    }
}

fn show_book(o: Format, v: &Value) -> Result<()> {
    if o == Format::Json {
        output::object(o, v);
        return Ok(());
    }
    let b: PriceBook = typed(v, "price book")?;
    pairs(&[
        ("id", b.id.to_string()),
        ("name", b.name.clone()),
        ("version", b.version.to_string()),
        ("currency", b.currency.clone()),
        ("effective_from", when(&b.effective_from)),
    ]);
    let items: Vec<Value> = b
        .prices
        .iter()
        .map(|p| {
            let tiers: Vec<String> = p
                .tiers
                .iter()
                .map(|t| {
                    let upto = t.up_to.map(|u| format!("≤{u}")).unwrap_or_else(|| "rest".into());
                    format!("{upto}: {}", money::money(t.unit_price_micros))
                })
                .collect();
            json!({
                "meter": p.meter.as_str(), "dimension": p.dimension.clone().unwrap_or_else(|| "*".into()),
                "model": snake(&p.model),
                "unit_price": format!("{}/{}", money::priced(p.unit_price_micros, &b.currency), p.pricing_unit),
                "units_per_pricing_unit": p.units_per_pricing_unit, "min_seconds": p.min_seconds_per_start,
                "rounding": snake(&p.rounding), "tiers": tiers,
            })
        })
        .collect();
    output::list(
        o,
        &json!({ "items": items }),
        &["meter", "dimension", "model", "unit_price", "units_per_pricing_unit", "min_seconds", "rounding", "tiers"],
    );
    Ok(())
}
