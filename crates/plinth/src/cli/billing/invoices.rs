//! `plinth invoice …` (show, list, finalize, void, credit notes, exports) and `plinth
//! price-book …`: invoices as a readable table of lines with exact quantities and money,
//! then their totals.

use super::money::{self, parse_amount};
use super::{ListArgs, pairs, period_label, rows, tenant_id, when};
use crate::cli::Ids;
use crate::output::{self, Out, opt, wire_name};
use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use plinth_api::*;
use plinth_client::{Client, Doc, Invoices, PriceBooks};
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
    /// Why a line says what it says: its ledger records as the invoice counted them (they
    /// add up to the line's quantity), the transitions behind them, their operations and
    /// the resources' audit records.
    Evidence {
        /// An invoice id.
        id: String,
        /// The line's number (`plinth invoice show` lists them).
        line: u32,
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
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            InvoiceCmd::List { page, tenant, period } => {
                let tenant_id = tenant_id(c, tenant).await?;
                let filter = InvoiceFilter { tenant_id: tenant_id.clone(), period: period.clone() };
                let d = c.list::<Invoices>(&page.page(), &filter).await?;
                super::none_match("invoices", &d, &[("tenant", tenant_id), ("period", period.clone())]);
                let items = d
                    .items
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.to_string(),
                            opt(i.number.as_ref()),
                            i.tenant_id.to_string(),
                            period_label(&i.period_start),
                            wire_name(&i.kind),
                            wire_name(&i.status),
                            money::priced(i.total_micros, &i.currency),
                        ]
                    })
                    .collect();
                rows(o, &d, items, &["id", "number", "tenant", "period", "kind", "status", "total"], &d.next_cursor)
            }
            InvoiceCmd::Show { id, tenant, period, by_resource } => {
                let mut d = if id == "current" {
                    let q = CurrentQuery { tenant_id: tenant_id(c, tenant).await?, period: period.clone() };
                    c.current_invoice(&q).await?
                } else {
                    if tenant.is_some() || period.is_some() {
                        bail!("--tenant and --period go with `current`; an invoice id names its tenant and period");
                    }
                    c.view::<Invoices>(&Invoices::lookup(c, id).await?).await?
                };
                if *by_resource {
                    // The per-resource lines replace the invoice's own.
                    let lines =
                        c.invoice_lines(d.id.as_str(), &LinesQuery { group_by: Some("resource".into()) }).await?;
                    d = output::splice(d, "lines", lines, |inv, lines| inv.lines = lines)?;
                }
                show(o, &d, *by_resource)
            }
            InvoiceCmd::Evidence { id, line } => {
                o.object(&c.invoice_line_evidence(&Invoices::lookup(c, id).await?, *line).await?)
            }
            InvoiceCmd::Finalize { id } => show(o, &c.finalize_invoice(id).await?, false),
            InvoiceCmd::Void { id } => {
                let d = c.void_invoice(id).await?;
                if !o.machine() {
                    eprintln!("voided {id}; the new draft {} replaces it:", d.id);
                }
                show(o, &d, false)
            }
            InvoiceCmd::CreditNote { id, amount, description } => {
                let body = CreditNoteCreate { amount_micros: *amount, description: description.clone() };
                show(o, &c.credit_note(id, &body).await?, false)
            }
            InvoiceCmd::Export { period, format, tenant } => {
                let q = PeriodQuery {
                    period: Some(period.clone()),
                    tenant_id: tenant_id(c, tenant).await?,
                    format: Some(format!("{format:?}").to_lowercase()),
                };
                print!("{}", c.export(&q).await?);
                Ok(())
            }
        }
    }
}

/// One line as a table row. Lines not from a meter (credits) have no units: they show
/// only their amount.
fn line_row(l: &InvoiceLine, currency: &str, by_resource: bool) -> Vec<String> {
    let qty = |micros: i64, unit: &str| opt((!unit.is_empty()).then(|| money::quantity(micros, unit)));
    let unit_price = opt((!l.pricing_unit.is_empty())
        .then(|| format!("{}/{}", money::priced(l.unit_price_micros, currency), l.pricing_unit)));
    let mut row =
        vec![l.number.to_string(), format!("{:?}", l.category), opt(l.meter.map(|m| m.as_str())), l.dimension.clone()];
    if by_resource {
        row.push(opt(l.resource_id.as_ref()));
    }
    row.extend([
        qty(l.consumed_quantity_micros, &l.consumed_unit),
        qty(l.pricing_quantity_micros, &l.pricing_unit),
        unit_price,
        money::priced(l.amount_micros, currency),
        wire_name(&l.rounding),
    ]);
    row
}

/// Prints an invoice: its lines, then its totals (or the document as it came).
fn show(o: &Out, d: &Doc<Invoice>, by_resource: bool) -> Result<()> {
    if o.document(d)? {
        return Ok(());
    }
    let cur = d.currency.as_str();
    let mut columns = vec!["#", "category", "meter", "dimension"];
    if by_resource {
        columns.push("resource");
    }
    columns.extend(["consumed", "pricing", "unit_price", "amount", "rounding"]);
    output::table(&columns, d.lines.iter().map(|l| line_row(l, cur, by_resource)).collect());
    pairs(&[
        ("invoice", d.id.to_string()),
        ("number", opt(d.number.as_ref())),
        ("kind", wire_name(&d.kind)),
        ("tenant", d.tenant_id.to_string()),
        ("period", format!("{} ({} – {})", period_label(&d.period_start), when(&d.period_start), when(&d.period_end))),
        ("status", wire_name(&d.status)),
        ("subtotal", money::priced(d.subtotal_micros, cur)),
        ("credits", money::priced(d.credits_micros, cur)),
        ("total", money::priced(d.total_micros, cur)),
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
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            PriceBookCmd::List { page, name } => {
                let d = c.list::<PriceBooks>(&page.page(), &PriceBookFilter { name: name.clone() }).await?;
                super::none_match("price books", &d, &[("name", name.clone())]);
                let items = d
                    .items
                    .iter()
                    .map(|b| {
                        vec![
                            b.id.to_string(),
                            b.name.clone(),
                            b.version.to_string(),
                            b.currency.clone(),
                            when(&b.effective_from),
                            b.prices.len().to_string(),
                        ]
                    })
                    .collect();
                rows(o, &d, items, &["id", "name", "version", "currency", "effective_from", "prices"], &d.next_cursor)
            }
            PriceBookCmd::Show { id } => show_book(o, &c.view::<PriceBooks>(id).await?),
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
                show_book(o, &c.create::<PriceBooks>(&book).await?)
            }
        }
    }
}

fn show_book(o: &Out, d: &Doc<PriceBook>) -> Result<()> {
    if o.document(d)? {
        return Ok(());
    }
    pairs(&[
        ("id", d.id.to_string()),
        ("name", d.name.clone()),
        ("version", d.version.to_string()),
        ("currency", d.currency.clone()),
        ("effective_from", when(&d.effective_from)),
    ]);
    let items = d
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
            vec![
                p.meter.as_str().to_string(),
                p.dimension.clone().unwrap_or_else(|| "*".into()),
                wire_name(&p.model),
                format!("{}/{}", money::priced(p.unit_price_micros, &d.currency), p.pricing_unit),
                p.units_per_pricing_unit.to_string(),
                p.min_seconds_per_start.to_string(),
                wire_name(&p.rounding),
                if tiers.is_empty() { "-".into() } else { tiers.join(",") },
            ]
        })
        .collect();
    output::table(
        &["meter", "dimension", "model", "unit_price", "units_per_pricing_unit", "min_seconds", "rounding", "tiers"],
        items,
    );
    Ok(())
}
