//! Billing: turns the usage ledger into invoices. Drafts are recomputed from the ledger on
//! demand; finalisation numbers an invoice and draws its credits in one transaction; a
//! finalized invoice only ever becomes void (replaced by a new draft), and corrections
//! after it are credit notes. Also the period cut-off (splitting open intervals), budgets,
//! and the reconciliation report that checks lifecycle time = metered time = invoiced time.

use crate::app::AppState;
use crate::app::{Error, Kind, Result};
use chrono::{DateTime, Utc};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::metering::{self, Period, micros};
use plinth_domain::rating::{self, RatingInput};
use plinth_store::{LedgerOwner, StoreError};
use serde_json::json;
use std::collections::BTreeMap;

pub mod invoices;
pub mod prices;
pub mod usage;

/// The price book a tenant without billing settings is rated with.
pub const DEFAULT_BOOK: &str = "default";
/// The currency when no price book applies.
pub const DEFAULT_CURRENCY: &str = "USD";

/// The period holding the store's now.
pub fn current_period(st: &AppState) -> Period {
    metering::period_of(st.store.now(), st.store.billing_anchor())
}

/// The period a `?period=` names (default: the current one), or `400 invalid_value`.
pub fn period_param(st: &AppState, p: Option<&str>) -> Result<Period> {
    match p {
        None => Ok(current_period(st)),
        Some(s) => metering::parse_period(s, st.store.billing_anchor()).ok_or_else(|| {
            Error::invalid("invalid_value", format!("period {s:?} is neither YYYY-MM nor an RFC 3339 time"))
                .with_constraint(json!({ "field": "period", "rule": "YYYY-MM" }))
        }),
    }
}

/// `402 budget_exceeded` when a `block-new` budget of the tenant was found exceeded in
/// the current period.
pub async fn check_budget(st: &AppState, tenant_id: &TenantId) -> Result<()> {
    let scope = Scope::Tenant { tenant_id: tenant_id.clone(), projects: None };
    let budgets: Vec<Budget> = st.store.list_all(&scope, &[("action", "block-new".to_string())]).await?;
    let period = current_period(st);
    if let Some(b) = budgets.iter().find(|b| b.exceeded_period == Some(period.start)) {
        return Err(Error::new(
            Kind::PaymentRequired,
            "budget_exceeded",
            format!(
                "budget {} ({}) is exceeded for the period from {}: new billable resources are refused",
                b.name,
                rating::money::money(b.threshold_micros),
                period.start.to_rfc3339()
            ),
        )
        .with_constraint(json!({ "rule": "budget", "budget_id": b.id, "threshold_micros": b.threshold_micros })));
    }
    Ok(())
}

/// Splits every interval still open from an earlier period at the cut-offs, so each
/// period's records are complete. Returns how many resources it split.
pub async fn cut_off(st: &AppState) -> Result<u32, StoreError> {
    let now = st.store.now();
    let period = current_period(st);
    let mut n = 0;
    for (resource, tenant, project, kind) in st.store.open_before(micros(period.start)).await? {
        let mut tx = st.store.begin().await?;
        let open = tx.open_intervals(&resource).await?;
        let plan = metering::split_plan(&open, micros(now), tx.billing_anchor());
        if plan.is_empty() {
            continue;
        }
        let owner =
            LedgerOwner { tenant_id: &tenant, project_id: &project, resource_id: &resource, resource_kind: &kind };
        tx.apply_ledger(&owner, &plan, "period_cutoff").await?;
        tx.commit().await?;
        n += 1;
    }
    Ok(n)
}

/// A period's records of a tenant with open intervals closed (virtually, not in the
/// ledger) at `as_of`.
fn closed_at(mut records: Vec<UsageRecord>, as_of: DateTime<Utc>) -> Vec<UsageRecord> {
    for r in &mut records {
        if r.end_at.is_none() {
            let end = as_of.max(r.start_at);
            r.end_at = Some(end);
            r.quantity_micros = Some(r.multiplier.saturating_mul(micros(end) - micros(r.start_at)));
        }
    }
    records
}

/// A period's records as an invoice saw them: open intervals closed where its rating
/// counted them to (`computed_at`).
pub fn closed_for(records: Vec<UsageRecord>, inv: &Invoice) -> Vec<UsageRecord> {
    closed_at(records, inv.computed_at.min(inv.period_end))
}

/// Where open time is counted to for a period: now, or the period's end once it is over.
pub fn as_of(st: &AppState, period: &Period) -> DateTime<Utc> {
    st.store.now().min(period.end)
}

/// A tenant's usage in a period, open intervals closed (virtually) at `as_of`, and its rating.
pub async fn rate_as_of(
    st: &AppState,
    tenant_id: &TenantId,
    period: &Period,
    as_of: DateTime<Utc>,
) -> Result<(rating::Rated, Vec<UsageRecord>)> {
    let records = closed_at(st.store.usage_for_rating(tenant_id.as_str(), micros(period.start)).await?, as_of);
    let account = st.store.billing_account(tenant_id.as_str()).await?;
    let book = account.as_ref().map(|a| a.price_book.clone()).unwrap_or_else(|| DEFAULT_BOOK.to_string());
    let books: Vec<PriceBook> = st.store.list_all(&Scope::Platform, &[("name", book)]).await?;
    let scope = Scope::Tenant { tenant_id: tenant_id.clone(), projects: None };
    let commitments: Vec<Commitment> = st.store.list_all(&scope, &[]).await?;
    let credits: Vec<CreditGrant> = st.store.list_all(&scope, &[]).await?;
    let input = RatingInput {
        period_start: period.start,
        period_end: period.end,
        records: &records,
        books: &books,
        commitments: &commitments,
        credits: &credits,
        support: account.as_ref().and_then(|a| a.support.as_ref()),
        default_currency: DEFAULT_CURRENCY,
    };
    let rated = rating::rate(&input).map_err(|e| {
        Error::new(Kind::Conflict, "rating_failed", format!("the period cannot be rated: {e}"))
            .with_constraint(json!({ "rule": "rating" }))
    })?;
    Ok((rated, records))
}

fn fill(inv: &mut Invoice, rated: rating::Rated, now: DateTime<Utc>) {
    inv.currency = rated.currency;
    inv.lines = rated.lines;
    inv.subtotal_micros = rated.subtotal_micros;
    inv.credits_micros = rated.credits_micros;
    inv.total_micros = rated.total_micros;
    inv.computed_at = now;
}

fn new_invoice(st: &AppState, tenant_id: &TenantId, period: &Period, replaces: Option<InvoiceId>) -> Invoice {
    let now = Utc::now();
    let grace = chrono::Duration::from_std(st.config.invoice_grace).unwrap_or_default();
    Invoice {
        id: InvoiceId::generate(),
        kind: InvoiceKind::Invoice,
        number: None,
        tenant_id: tenant_id.clone(),
        status: InvoiceStatus::Draft,
        period_start: period.start,
        period_end: period.end,
        currency: DEFAULT_CURRENCY.to_string(),
        lines: Vec::new(),
        subtotal_micros: 0,
        credits_micros: 0,
        total_micros: 0,
        grace_until: period.end + grace,
        replaces,
        replaced_by: None,
        computed_at: now,
        finalized_at: None,
        voided_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

/// The tenant's invoice for the period as it stands: a finalized one as it is, or the
/// draft recomputed from the ledger now (created on first use).
pub async fn invoice_for(st: &AppState, tenant_id: &TenantId, period: &Period) -> Result<Invoice> {
    let at = as_of(st, period);
    let (rated, _) = rate_as_of(st, tenant_id, period, at).await?;
    let mut tx = st.store.begin().await?;
    let inv = match tx.live_invoice(tenant_id.as_str(), micros(period.start)).await? {
        Some(inv) if inv.status != InvoiceStatus::Draft => inv,
        Some(mut inv) => {
            fill(&mut inv, rated, at);
            tx.save_invoice(&mut inv).await?;
            inv
        }
        None => {
            let mut inv = new_invoice(st, tenant_id, period, None);
            fill(&mut inv, rated, at);
            tx.insert(&inv, &[]).await?;
            inv
        }
    };
    tx.commit().await?;
    Ok(inv)
}

fn refused(code: &'static str, detail: String) -> Error {
    Error::new(Kind::Conflict, code, detail).with_constraint(json!({ "rule": "invoice-lifecycle" }))
}

/// Finalizes a draft: recomputed one last time, numbered, its credits drawn, immutable
/// from then on. Refused while its period is still running.
pub async fn finalize(st: &AppState, id: &str) -> Result<Invoice> {
    let cur: Invoice = st.store.get(&Scope::Platform, id).await?;
    if cur.status != InvoiceStatus::Draft {
        return Err(refused(
            "invoice_finalized",
            format!("invoice {id} is {:?}: only drafts can be finalized", cur.status).to_lowercase(),
        ));
    }
    if st.store.now() < cur.period_end {
        return Err(Error::new(
            Kind::Conflict,
            "period_open",
            format!("the period runs until {}; it can be finalized after that", cur.period_end.to_rfc3339()),
        )
        .with_constraint(json!({ "rule": "period-ended", "period_end": cur.period_end })));
    }
    cut_off(st).await?;
    let period = Period { start: cur.period_start, end: cur.period_end };
    let (rated, _) = rate_as_of(st, &cur.tenant_id, &period, period.end).await?;
    let draws = rated.credit_draws.clone();
    let mut tx = st.store.begin().await?;
    let mut inv: Invoice = tx.get(&Scope::Platform, id).await?;
    fill(&mut inv, rated, period.end);
    let n = tx.next_invoice_number().await?;
    inv.number = Some(format!("INV-{n:06}"));
    inv.status = InvoiceStatus::Finalized;
    inv.finalized_at = Some(Utc::now());
    tx.save_invoice(&mut inv).await?;
    for (credit, amount) in draws {
        let mut g: CreditGrant = tx.get(&Scope::Platform, credit.as_str()).await?;
        g.used_micros += amount;
        tx.save(&mut g).await?;
    }
    tx.commit().await?;
    Ok(inv)
}

/// Voids a finalized invoice, gives back the credits it drew, and opens a new draft for
/// its period that replaces it. Returns (the void invoice, the new draft).
pub async fn void(st: &AppState, id: &str) -> Result<(Invoice, Invoice)> {
    let mut tx = st.store.begin().await?;
    let mut inv: Invoice = tx.get(&Scope::Platform, id).await?;
    if inv.status != InvoiceStatus::Finalized || inv.kind != InvoiceKind::Invoice {
        return Err(refused(
            "invalid_transition",
            format!("invoice {id} is {:?}: only finalized invoices can be voided", inv.status).to_lowercase(),
        ));
    }
    let period = Period { start: inv.period_start, end: inv.period_end };
    let next = new_invoice(st, &inv.tenant_id, &period, Some(inv.id.clone()));
    inv.status = InvoiceStatus::Void;
    inv.voided_at = Some(Utc::now());
    inv.replaced_by = Some(next.id.clone());
    tx.save_invoice(&mut inv).await?;
    for l in inv.lines.iter().filter(|l| l.category == ChargeCategory::Credit) {
        if let Some(c) = &l.credit_id {
            let mut g: CreditGrant = tx.get(&Scope::Platform, c.as_str()).await?;
            g.used_micros = (g.used_micros + l.amount_micros).max(0);
            tx.save(&mut g).await?;
        }
    }
    tx.insert(&next, &[]).await?;
    tx.commit().await?;
    let draft = invoice_for(st, &inv.tenant_id, &period).await?;
    Ok((inv, draft))
}

/// A credit note against a finalized invoice: one `Adjustment` line of `−amount`, marked
/// `Correction`, finalized and numbered at once.
pub async fn credit_note(st: &AppState, id: &str, b: &CreditNoteCreate) -> Result<Invoice> {
    if b.amount_micros <= 0 {
        return Err(Error::invalid("invalid_value", "amount_micros must be positive")
            .with_constraint(json!({ "field": "amount_micros", "rule": "> 0" })));
    }
    let mut tx = st.store.begin().await?;
    let of: Invoice = tx.get(&Scope::Platform, id).await?;
    if of.status != InvoiceStatus::Finalized || of.kind != InvoiceKind::Invoice {
        return Err(refused("invalid_transition", format!("invoice {id} is not a finalized invoice")));
    }
    if b.amount_micros > of.total_micros {
        return Err(Error::invalid(
            "invalid_value",
            format!("a credit note cannot exceed the invoice's total ({})", rating::money::money(of.total_micros)),
        )
        .with_constraint(json!({ "field": "amount_micros", "rule": "<= invoice total", "max": of.total_micros })));
    }
    let period = Period { start: of.period_start, end: of.period_end };
    let mut note = new_invoice(st, &of.tenant_id, &period, Some(of.id.clone()));
    note.kind = InvoiceKind::CreditNote;
    note.currency = of.currency.clone();
    note.lines = vec![InvoiceLine {
        number: 1,
        category: ChargeCategory::Adjustment,
        meter: None,
        dimension: of.number.clone().unwrap_or_default(),
        description: b.description.clone(),
        resource_id: None,
        consumed_quantity_micros: 0,
        consumed_unit: "credit".into(),
        pricing_quantity_micros: 1_000_000,
        pricing_unit: "credit".into(),
        unit_price_micros: -b.amount_micros,
        amount_micros: -b.amount_micros,
        list_amount_micros: None,
        rounding: Rounding::HalfUp,
        price_book_id: None,
        record_ids: vec![],
        commitment_id: None,
        credit_id: None,
        charge_class: Some("Correction".into()),
        charge_period_start: of.period_start,
        charge_period_end: of.period_end,
    }];
    note.subtotal_micros = -b.amount_micros;
    note.total_micros = -b.amount_micros;
    let n = tx.next_invoice_number().await?;
    note.number = Some(format!("CN-{n:06}"));
    note.status = InvoiceStatus::Finalized;
    note.finalized_at = Some(Utc::now());
    tx.insert(&note, &[]).await?;
    tx.commit().await?;
    Ok(note)
}

/// Checks every budget against its tenant's current draft; marks the exceeded ones for
/// the period and records a `budgets.exceeded` audit entry once per period. Returns how
/// many budgets newly passed their threshold.
pub async fn check_budgets(st: &AppState) -> Result<u32, Error> {
    let period = current_period(st);
    let budgets: Vec<Budget> = st.store.list_all(&Scope::Platform, &[]).await?;
    let mut totals: BTreeMap<TenantId, i64> = BTreeMap::new();
    let mut n = 0;
    for b in budgets {
        if b.exceeded_period == Some(period.start) {
            continue;
        }
        let spend = match totals.get(&b.tenant_id) {
            Some(t) => *t,
            None => {
                let inv = invoice_for(st, &b.tenant_id, &period).await?;
                totals.insert(b.tenant_id.clone(), inv.subtotal_micros);
                inv.subtotal_micros
            }
        };
        if spend < b.threshold_micros {
            continue;
        }
        let id = b.id.to_string();
        st.store
            .update(&Scope::Platform, &id, None, &system_audit("budgets.exceeded"), |x: &mut Budget| {
                x.exceeded_period = Some(period.start);
                Ok(vec![])
            })
            .await?;
        tracing::warn!(budget = %id, tenant = %b.tenant_id, spend, threshold = b.threshold_micros, "budget exceeded");
        n += 1;
    }
    Ok(n)
}

fn system_audit(action: &str) -> plinth_store::AuditEntry {
    plinth_store::AuditEntry {
        actor_user_id: None,
        actor_token_id: None,
        action: action.to_string(),
        request_id: new_id("req"),
    }
}

/// Micros (quantity ÷ multiplier) per (resource, meter, dimension) of the records `keep` takes.
fn metered_by(records: &[UsageRecord], keep: impl Fn(&UsageRecord) -> bool) -> BTreeMap<(String, Meter, String), i64> {
    let mut out: BTreeMap<(String, Meter, String), i64> = BTreeMap::new();
    for r in records.iter().filter(|r| keep(r)) {
        *out.entry((r.resource_id.clone(), r.meter, r.dimension.clone())).or_default() +=
            r.quantity_micros.unwrap_or(0) / r.multiplier.max(1);
    }
    out
}

/// The reconciliation report of a period for the instances (and the network resources:
/// floating IPs, NICs; and the volumes and snapshots) visible in `scope`.
pub async fn reconciliation(st: &AppState, scope: &Scope, period: &Period) -> Result<ReconciliationReport> {
    let as_of = as_of(st, period);
    let tenants: Vec<String> = match scope {
        Scope::Tenant { tenant_id, .. } => vec![tenant_id.to_string()],
        Scope::Nothing => vec![],
        Scope::Platform => st.store.tenants_with_usage(micros(period.start)).await?,
    };
    let mut rows = Vec::new();
    for t in tenants {
        let tenant = TenantId(t);
        let (rated, records) = rate_as_of(st, &tenant, period, as_of).await?;
        // The finalized invoice's lines, or the draft's as of the same instant.
        let finalized = st
            .store
            .invoices_of_period(Some(tenant.as_str()), micros(period.start))
            .await?
            .into_iter()
            .find(|i| i.status == InvoiceStatus::Finalized);
        let lines = match finalized {
            Some(inv) => inv.lines,
            None => rated.lines,
        };
        // Invoiced micros per (resource, meter, dimension), from the lines' record ids.
        let mut invoiced: BTreeMap<(String, Meter, String), i64> = BTreeMap::new();
        let by_id: BTreeMap<&UsageRecordId, &UsageRecord> = records.iter().map(|r| (&r.id, r)).collect();
        for rid in lines.iter().flat_map(|l| &l.record_ids) {
            if let Some(r) = by_id.get(rid) {
                *invoiced.entry((r.resource_id.clone(), r.meter, r.dimension.clone())).or_default() +=
                    r.quantity_micros.unwrap_or(0) / r.multiplier.max(1);
            }
        }
        let metered = metered_by(&records, |r| r.meter.is_interval() && r.resource_kind == "instance");
        // Network resources (floating IPs' and SNAT addresses' seconds, NICs' egress bytes)
        // and storage (volumes' and snapshots' GiB-seconds): no event history to replay;
        // their ledger is checked against the invoice.
        let other = metered_by(&records, |r| {
            matches!(r.resource_kind.as_str(), "floating_ip" | "network_interface" | "volume" | "snapshot")
        });
        for ((resource, meter, dim), m) in other {
            let inv = invoiced.get(&(resource.clone(), meter, dim.clone())).copied().unwrap_or(0);
            rows.push(ReconciliationRow {
                tenant_id: tenant.clone(),
                resource_id: resource,
                meter,
                dimension: dim,
                lifecycle_micros: None,
                metered_micros: m,
                invoiced_micros: Some(inv),
                matches: inv == m,
            });
        }
        let instances: std::collections::BTreeSet<String> = metered.keys().map(|k| k.0.clone()).collect();
        for iid in instances {
            let events: Vec<InstanceEvent> =
                st.store.list_all(&Scope::Platform, &[("instance_id", iid.clone())]).await?;
            let life = metering::replay(&events, micros(period.start), micros(as_of));
            let mut keys: std::collections::BTreeSet<(Meter, String)> =
                metered.keys().filter(|k| k.0 == iid).map(|k| (k.1, k.2.clone())).collect();
            keys.extend(life.keys().cloned());
            for (meter, dim) in keys {
                let m = metered.get(&(iid.clone(), meter, dim.clone())).copied().unwrap_or(0);
                let lifecycle = match meter {
                    Meter::AllocatedSeconds | Meter::RunningSeconds => {
                        Some(life.get(&(meter, dim.clone())).copied().unwrap_or(0))
                    }
                    _ => None,
                };
                let inv = invoiced.get(&(iid.clone(), meter, dim.clone())).copied().unwrap_or(0);
                let matches = lifecycle.is_none_or(|l| l == m) && inv == m;
                rows.push(ReconciliationRow {
                    tenant_id: tenant.clone(),
                    resource_id: iid.clone(),
                    meter,
                    dimension: dim,
                    lifecycle_micros: lifecycle,
                    metered_micros: m,
                    invoiced_micros: Some(inv),
                    matches,
                });
            }
        }
    }
    let differences = rows.iter().filter(|r| !r.matches).cloned().collect();
    Ok(ReconciliationReport { period_start: period.start, period_end: period.end, as_of, rows, differences })
}

/// The `billing` background task: splits intervals at period cut-offs, checks budgets,
/// and finalizes drafts whose grace period is over.
pub async fn billing_pass(st: &AppState) -> Result<serde_json::Value, StoreError> {
    let split = cut_off(st).await?;
    let budgets = check_budgets(st).await?;
    let now = st.store.now();
    let drafts: Vec<Invoice> = st.store.list_all(&Scope::Platform, &[("status", "draft".to_string())]).await?;
    let mut finalized = 0;
    for d in drafts.iter().filter(|d| d.grace_until <= now && d.kind == InvoiceKind::Invoice) {
        match finalize(st, d.id.as_str()).await {
            Ok(_) => finalized += 1,
            Err(e) => tracing::warn!(invoice = %d.id, "could not finalize after the grace period: {}", e.detail),
        }
    }
    Ok(json!({ "split_resources": split, "budgets_exceeded": budgets, "finalized": finalized }))
}
