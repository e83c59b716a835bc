//! Invoices and their reports, as the caller may see them: a tenant's invoices (a draft
//! recomputed on read), finalize, void and credit notes (operators), the reconciliation
//! report, exports (CSV and FOCUS 1.2) and revenue. Prices and billing settings are in
//! `prices.rs`.

use crate::app::billing::{self, period_param};
use crate::app::{AppState, Caller, Error, Paging, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::rating;
use plinth_domain::validate;
use serde_json::json;
use std::collections::BTreeMap;

/// The tenant whose billing the caller asks about: the given one (operators, or the
/// caller's own), else the caller's. Project-only members do not see tenant billing. A
/// tenant an operator names must exist (`404` naming it): a read never writes a draft for
/// a tenant that does not exist.
pub(super) async fn billing_tenant(st: &AppState, caller: &Caller, given: Option<&str>) -> Result<TenantId> {
    match caller.scope() {
        Scope::Platform => match given {
            Some(t) => known_tenant(st, t).await,
            None => Err(Error::invalid("missing_field", "tenant_id is required for operators")
                .with_constraint(json!({ "field": "tenant_id", "rule": "required" }))),
        },
        Scope::Tenant { tenant_id, projects: None } if given.is_none_or(|g| g == tenant_id.as_str()) => Ok(tenant_id),
        _ => Err(Error::forbidden("reading this tenant's billing")),
    }
}

/// The tenant an operator named, which must exist.
async fn known_tenant(st: &AppState, t: &str) -> Result<TenantId> {
    let found: Tenant = st.store.get(&Scope::Platform, t).await.map_err(|e| match e {
        plinth_store::StoreError::NotFound { .. } => Error::not_found("tenant", &format!("{t:?}"))
            .with_constraint(json!({ "field": "tenant_id", "rule": "exists" })),
        other => other.into(),
    })?;
    Ok(found.id)
}

/// The scope of a billing read: one tenant's (the caller's, or the one an operator
/// named), or every tenant's for an operator who named none.
async fn billing_scope(st: &AppState, caller: &Caller, given: Option<&str>) -> Result<Scope> {
    Ok(match (caller.scope(), given) {
        (Scope::Platform, None) => Scope::Platform,
        _ => Scope::Tenant { tenant_id: billing_tenant(st, caller, given).await?, projects: None },
    })
}

async fn fresh(st: &AppState, caller: &Caller, id: &str) -> Result<Invoice> {
    let inv: Invoice = st.store.get(&caller.scope(), id).await?;
    if let Scope::Tenant { projects: Some(_), .. } = caller.scope() {
        return Err(Error::forbidden("reading this tenant's billing"));
    }
    if inv.status == InvoiceStatus::Draft {
        let period = plinth_domain::metering::Period { start: inv.period_start, end: inv.period_end };
        return billing::invoice_for(st, &inv.tenant_id, &period).await;
    }
    Ok(inv)
}

/// List invoices and credit notes in id (creation) order. When the list is one tenant's
/// (a tenant's own, or an operator's `tenant_id`), that tenant's current draft is
/// recomputed first, so it is always in the list.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: InvoiceFilter) -> Result<Page<Invoice>> {
    let pg = Paging::from(p)?;
    let scope = billing_scope(st, caller, f.tenant_id.as_deref()).await?;
    if let (Scope::Tenant { tenant_id, .. }, None) = (&scope, &pg.cursor) {
        billing::invoice_for(st, tenant_id, &billing::current_period(st)).await?;
    }
    let mut filters = vec![];
    if let Some(p) = &f.period {
        filters.push(("period", period_param(st, Some(p))?.start.format("%Y-%m-%d").to_string()));
    }
    Ok(st.store.list::<Invoice>(&scope, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// A tenant's invoice for a period: the finalized one, or the draft recomputed now.
pub async fn current(st: &AppState, caller: &Caller, q: CurrentQuery) -> Result<Invoice> {
    let t = billing_tenant(st, caller, q.tenant_id.as_deref()).await?;
    let period = period_param(st, q.period.as_deref())?;
    billing::invoice_for(st, &t, &period).await
}

/// An invoice (a draft is recomputed first).
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Invoice> {
    fresh(st, caller, id).await
}

/// An invoice's lines, optionally per resource.
pub async fn lines(st: &AppState, caller: &Caller, id: &str, q: LinesQuery) -> Result<Vec<InvoiceLine>> {
    let inv = fresh(st, caller, id).await?;
    match q.group_by.as_deref() {
        None => Ok(inv.lines),
        Some("resource") => {
            let records = st.store.usage_in_period(inv.tenant_id.as_str(), inv.period_start.timestamp_micros()).await?;
            let records = billing::closed_for(records, &inv);
            Ok(rating::by_resource(&inv.lines, &records))
        }
        Some(other) => Err(Error::invalid("invalid_value", format!("group_by {other:?}: only `resource` is known"))
            .with_constraint(json!({ "field": "group_by", "rule": "one-of", "allowed": ["resource"] }))),
    }
}

/// The evidence of invoice line `number`: its records as the invoice counted them, the
/// transitions that opened them, their operations and the resources' audit records.
pub async fn line_evidence(st: &AppState, caller: &Caller, id: &str, number: u32) -> Result<InvoiceLineEvidence> {
    let inv = fresh(st, caller, id).await?;
    let line = inv
        .lines
        .iter()
        .find(|l| l.number == number)
        .cloned()
        .ok_or_else(|| Error::not_found("invoice line", &format!("{id} #{number}")))?;
    let wanted: std::collections::BTreeSet<&str> = line.record_ids.iter().map(|r| r.as_str()).collect();
    let records = st.store.usage_in_period(inv.tenant_id.as_str(), inv.period_start.timestamp_micros()).await?;
    let records: Vec<UsageRecord> =
        billing::closed_for(records, &inv).into_iter().filter(|r| wanted.contains(r.id.as_str())).collect();
    let scope = Scope::Tenant { tenant_id: inv.tenant_id.clone(), projects: None };
    let mut evidence = Vec::with_capacity(records.len());
    let mut total: i64 = 0;
    for r in &records {
        let q = rating::price::quantity_micros(r).map_err(|e| Error::internal(format!("record {}: {e}", r.id)))?;
        total = total.saturating_add(q);
        let seconds = r
            .end_at
            .filter(|_| r.meter.is_interval())
            .map(|end| (end - r.start_at).num_microseconds().unwrap_or(0) as f64 / 1e6);
        evidence.push(EvidenceRecord { record: r.clone(), seconds, quantity_micros: q });
    }
    // The resources' transitions from the earliest one that opened a record to where the
    // invoice counted: the openings themselves, and the requests and stops between them.
    let causes: std::collections::BTreeSet<&str> = records.iter().map(|r| r.cause.as_str()).collect();
    let resources: std::collections::BTreeSet<&str> = records.iter().map(|r| r.resource_id.as_str()).collect();
    let mut transitions: Vec<InstanceEvent> = Vec::new();
    for resource in &resources {
        let events: Vec<InstanceEvent> = st.store.list_all(&scope, &[("instance_id", resource.to_string())]).await?;
        let from = events.iter().filter(|e| causes.contains(e.id.as_str())).map(|e| e.created_at).min();
        let until = inv.computed_at.min(inv.period_end);
        transitions
            .extend(events.into_iter().filter(|e| from.is_some_and(|f| e.created_at >= f) && e.created_at <= until));
    }
    transitions.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let mut operations: Vec<Operation> = Vec::new();
    for op in transitions.iter().filter_map(|e| e.operation_id.as_ref()).collect::<std::collections::BTreeSet<_>>() {
        if let Some(o) = st.store.find::<Operation>(&scope, op.as_str()).await? {
            operations.push(o);
        }
    }
    let mut audit = Vec::new();
    for resource in &resources {
        let f = AuditFilter { target: Some(resource.to_string()), ..Default::default() };
        audit.extend(st.store.list_audit(Some(&inv.tenant_id), &f, 100, None).await?.items);
    }
    audit.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
    Ok(InvoiceLineEvidence {
        invoice_id: inv.id,
        line,
        records: evidence,
        records_quantity_micros: total,
        transitions,
        operations,
        audit,
    })
}

/// Finalize a draft (operators): numbered, credits drawn, immutable from then on.
pub async fn finalize(st: &AppState, caller: &Caller, id: &str) -> Result<Invoice> {
    caller.require_operator("finalizing invoices")?;
    let inv = billing::finalize(st, id).await?;
    st.store.record_audit(&caller.audit(), Some(id), Some(inv.tenant_id.as_str()), 200, None).await?;
    Ok(inv)
}

/// Void a finalized invoice (operators): a new draft for its period replaces it.
pub async fn void(st: &AppState, caller: &Caller, id: &str) -> Result<Invoice> {
    caller.require_operator("voiding invoices")?;
    let (old, new) = billing::void(st, id).await?;
    st.store.record_audit(&caller.audit(), Some(id), Some(old.tenant_id.as_str()), 200, None).await?;
    Ok(new)
}

/// Issue a credit note against a finalized invoice (operators).
pub async fn credit_note(st: &AppState, caller: &Caller, id: &str, b: CreditNoteCreate) -> Result<Invoice> {
    caller.require_operator("issuing credit notes")?;
    validate::text("description", &b.description, 1024)?;
    let note = billing::credit_note(st, id, &b).await?;
    st.store.record_audit(&caller.audit(), Some(note.id.as_str()), Some(note.tenant_id.as_str()), 201, None).await?;
    Ok(note)
}

/// Reconciliation: lifecycle seconds against metered seconds against invoiced quantity,
/// per instance and meter, for a period (tenants see their own).
pub async fn reconciliation(st: &AppState, caller: &Caller, q: PeriodQuery) -> Result<ReconciliationReport> {
    let period = period_param(st, q.period.as_deref())?;
    let scope = billing_scope(st, caller, q.tenant_id.as_deref()).await?;
    billing::reconciliation(st, &scope, &period).await
}

/// Revenue by period, meter and dimension (shape, GPU class), from finalized invoices
/// (operators). `?drafts=true` includes the drafts.
pub async fn revenue(st: &AppState, caller: &Caller, q: RevenueQuery) -> Result<Vec<RevenueRow>> {
    caller.require_operator("reading revenue")?;
    let drafts = q.drafts.unwrap_or(false);
    let period = match &q.period {
        Some(p) => Some(period_param(st, Some(p))?),
        None => None,
    };
    let invoices: Vec<Invoice> = st.store.list_all(&Scope::Platform, &[]).await?;
    type Key = (i64, ChargeCategory, Option<Meter>, String, String);
    let mut rows: BTreeMap<Key, (i64, u32)> = BTreeMap::new();
    for inv in invoices.iter().filter(|i| {
        (i.status == InvoiceStatus::Finalized || (drafts && i.status == InvoiceStatus::Draft))
            && period.is_none_or(|p| p.start == i.period_start)
    }) {
        for l in &inv.lines {
            let key =
                (inv.period_start.timestamp_micros(), l.category, l.meter, l.dimension.clone(), inv.currency.clone());
            let e = rows.entry(key).or_default();
            e.0 += l.amount_micros;
            e.1 += 1;
        }
    }
    Ok(rows
        .into_iter()
        .map(|((p, category, meter, dimension, currency), (amount_micros, invoices))| RevenueRow {
            period_start: plinth_domain::metering::at_micros(p),
            category,
            meter,
            dimension,
            currency,
            amount_micros,
            invoices,
            finalized_only: !drafts,
        })
        .collect())
}

/// A period's invoices as CSV: `format=csv` (their lines) or `format=focus` (FOCUS 1.2
/// rows, usage per resource). Tenants get their own; operators every tenant's.
pub async fn export(st: &AppState, caller: &Caller, q: PeriodQuery) -> Result<String> {
    let period = period_param(st, q.period.as_deref())?;
    let tenants: Vec<TenantId> = match (caller.scope(), &q.tenant_id) {
        (Scope::Platform, None) => {
            st.store.tenants_with_usage(period.start.timestamp_micros()).await?.into_iter().map(TenantId).collect()
        }
        _ => vec![billing_tenant(st, caller, q.tenant_id.as_deref()).await?],
    };
    let format = q.format.as_deref().unwrap_or("focus");
    if !matches!(format, "csv" | "focus") {
        return Err(Error::invalid("invalid_value", format!("format {format:?}: csv or focus"))
            .with_constraint(json!({ "field": "format", "rule": "one-of", "allowed": ["csv", "focus"] })));
    }
    let mut body = String::new();
    let mut focus_rows = Vec::new();
    for t in tenants {
        let inv = billing::invoice_for(st, &t, &period).await?;
        if format == "csv" {
            let csv = rating::invoice_csv(&inv);
            // One header for the whole export.
            let skip = if body.is_empty() { 0 } else { 1 };
            for line in csv.lines().skip(skip) {
                body.push_str(line);
                body.push('\n');
            }
            continue;
        }
        let tenant: Tenant = st.store.get(&Scope::Platform, t.as_str()).await?;
        let records =
            billing::closed_for(st.store.usage_in_period(t.as_str(), period.start.timestamp_micros()).await?, &inv);
        let acct = rating::FocusAccount {
            billing_account_id: t.as_str(),
            billing_account_name: &tenant.name,
            invoice_issuer: "Plinth",
            provider: "Plinth",
            region_id: "local",
            region_name: "local",
        };
        focus_rows.extend(rating::focus_rows(&inv, &records, &acct));
    }
    if format == "focus" {
        body = rating::to_csv(rating::FOCUS_COLUMNS, &focus_rows);
    }
    Ok(body)
}
