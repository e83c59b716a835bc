//! The console's billing pages: the invoices a caller may read, one invoice's lines, and a
//! line's evidence (its ledger records as the invoice counted them, the transitions that
//! opened them, their operations, the audit of the resources): the use cases behind
//! `GET /v1/invoices`, `GET /v1/invoices/{id}` and
//! `GET /v1/invoices/{id}/lines/{number}/evidence`. Drafts are recomputed on every read,
//! as the API does.

use super::fleet::AuditRow;
use super::pages::when;
use super::render::{self, Equivalent, Layout, Page};
use crate::app::billing::invoices;
use crate::app::{AppState, Caller};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use plinth_api::*;
use plinth_domain::rating::money::{decimal, money};

/// One invoice in the list.
pub struct InvoiceRow {
    pub id: String,
    pub number: String,
    pub status: &'static str,
    pub period: String,
    pub total: String,
    pub tenant: String,
}

#[derive(Template)]
#[template(path = "console/invoices.html")]
struct InvoicesPage {
    layout: Layout,
    rows: Vec<InvoiceRow>,
    equivalent: Equivalent,
}

/// `GET /invoices`.
pub async fn invoice_list(State(st): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    let page = match invoices::list(&st, &caller, &PageParams::default(), InvoiceFilter::default()).await {
        Ok(p) => p,
        Err(e) => return render::app_error(e),
    };
    let rows = page
        .items
        .iter()
        .rev()
        .map(|i| InvoiceRow {
            id: i.id.0.clone(),
            number: i.number.clone().unwrap_or_else(|| "draft".into()),
            status: plinth_store::invoice_status_str(i.status),
            period: i.period_start.format("%Y-%m").to_string(),
            total: format!("{} {}", i.currency, money(i.total_micros)),
            tenant: i.tenant_id.0.clone(),
        })
        .collect();
    let layout = Layout::of(&st, &caller, "Invoices").await;
    let equivalent = Equivalent::new("invoice list", "GET", "/v1/invoices", None);
    Page(InvoicesPage { layout, rows, equivalent }).into_response()
}

/// One line of an invoice as shown.
pub struct LineRow {
    pub number: u32,
    pub description: String,
    pub quantity: String,
    pub unit: String,
    pub unit_price: String,
    pub amount: String,
    /// Whether it has ledger records to drill into.
    pub evidence: bool,
}

#[derive(Template)]
#[template(path = "console/invoice.html")]
struct InvoicePage {
    layout: Layout,
    id: String,
    title: String,
    status: &'static str,
    period: String,
    lines: Vec<LineRow>,
    subtotal: String,
    credits: String,
    total: String,
    equivalent: Equivalent,
}

/// `GET /invoices/{id}`.
pub async fn invoice_detail(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let inv = match invoices::get(&st, &caller, &id).await {
        Ok(i) => i,
        Err(e) => return render::app_error(e),
    };
    let cur = |m: i64| format!("{} {}", inv.currency, money(m));
    let lines = inv
        .lines
        .iter()
        .map(|l| LineRow {
            number: l.number,
            description: l.description.clone(),
            quantity: decimal(i128::from(l.consumed_quantity_micros)),
            unit: l.consumed_unit.clone(),
            unit_price: money(l.unit_price_micros),
            amount: cur(l.amount_micros),
            evidence: !l.record_ids.is_empty(),
        })
        .collect();
    let title = match &inv.number {
        Some(n) => format!("Invoice {n}"),
        None => format!("Draft invoice {}", inv.period_start.format("%Y-%m")),
    };
    let page = InvoicePage {
        layout: Layout::of(&st, &caller, title.clone()).await,
        id: inv.id.0.clone(),
        title,
        status: plinth_store::invoice_status_str(inv.status),
        period: format!("{} to {}", when(&inv.period_start), when(&inv.period_end)),
        lines,
        subtotal: cur(inv.subtotal_micros),
        credits: cur(inv.credits_micros),
        total: cur(inv.total_micros),
        equivalent: Equivalent::new(
            &format!("invoice show {}", inv.id),
            "GET",
            &format!("/v1/invoices/{}", inv.id),
            None,
        ),
    };
    Page(page).into_response()
}

/// `GET /invoices/{id}/csv`: the invoice as CSV (as `GET /v1/invoices/{id}` with
/// `Accept: text/csv`).
pub async fn invoice_csv(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match invoices::get(&st, &caller, &id).await {
        Ok(inv) => {
            let disposition = format!("attachment; filename=\"{}.csv\"", inv.id);
            let mut resp =
                ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], plinth_domain::rating::invoice_csv(&inv))
                    .into_response();
            if let Ok(v) = header::HeaderValue::from_str(&disposition) {
                resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            resp
        }
        Err(e) => render::app_error(e),
    }
}

/// One ledger record of a line as shown.
pub struct RecordRow {
    pub id: String,
    pub resource: String,
    pub start: String,
    pub end: String,
    pub seconds: String,
    pub multiplier: i64,
    pub quantity: String,
    pub cause: String,
}

/// One transition as shown.
pub struct TransitionRow {
    pub id: String,
    pub when: String,
    pub resource: String,
    pub kind: String,
    pub state: &'static str,
    pub operation: String,
}

/// One operation as shown.
pub struct OperationRow {
    pub id: String,
    pub kind: String,
    pub status: &'static str,
    pub target: String,
}

#[derive(Template)]
#[template(path = "console/invoice_line.html")]
struct LinePage {
    layout: Layout,
    invoice_id: String,
    number: u32,
    description: String,
    consumed: String,
    unit: String,
    amount: String,
    records: Vec<RecordRow>,
    records_total: String,
    adds_up: bool,
    transitions: Vec<TransitionRow>,
    operations: Vec<OperationRow>,
    audit: Vec<AuditRow>,
    equivalent: Equivalent,
}

/// `GET /invoices/{id}/lines/{number}`: a line's evidence.
pub async fn line_evidence(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((id, number)): Path<(String, String)>,
) -> Response {
    let Ok(number) = number.parse::<u32>() else {
        return render::refusal(axum::http::StatusCode::NOT_FOUND, "Not found", "No such invoice line.");
    };
    let ev = match invoices::line_evidence(&st, &caller, &id, number).await {
        Ok(e) => e,
        Err(e) => return render::app_error(e),
    };
    let records = ev
        .records
        .iter()
        .map(|r| RecordRow {
            id: r.record.id.0.clone(),
            resource: r.record.resource_id.clone(),
            start: when(&r.record.start_at),
            end: r.record.end_at.as_ref().map(when).unwrap_or_default(),
            seconds: r.seconds.map(|s| format!("{s:.6}")).unwrap_or_default(),
            multiplier: r.record.multiplier,
            quantity: decimal(i128::from(r.quantity_micros)),
            cause: r.record.cause.clone(),
        })
        .collect();
    let transitions = ev
        .transitions
        .iter()
        .map(|e| TransitionRow {
            id: e.id.0.clone(),
            when: when(&e.created_at),
            resource: e.instance_id.0.clone(),
            kind: e.kind.clone(),
            state: e.state.map(|s| s.as_str()).unwrap_or(""),
            operation: e.operation_id.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
        })
        .collect();
    let operations = ev
        .operations
        .iter()
        .map(|o| OperationRow {
            id: o.id.0.clone(),
            kind: o.kind.clone(),
            status: o.status.as_str(),
            target: o.target.clone(),
        })
        .collect();
    let audit = ev.audit.iter().map(AuditRow::of).collect();
    let path = format!("/v1/invoices/{id}/lines/{number}/evidence");
    let page = LinePage {
        layout: Layout::of(&st, &caller, format!("Invoice line {number}")).await,
        invoice_id: ev.invoice_id.0.clone(),
        number,
        description: ev.line.description.clone(),
        consumed: decimal(i128::from(ev.line.consumed_quantity_micros)),
        unit: ev.line.consumed_unit.clone(),
        amount: money(ev.line.amount_micros),
        records,
        records_total: decimal(i128::from(ev.records_quantity_micros)),
        adds_up: ev.records_quantity_micros == ev.line.consumed_quantity_micros,
        transitions,
        operations,
        audit,
        equivalent: Equivalent::new(&format!("invoice evidence {id} {number}"), "GET", &path, None),
    };
    Page(page).into_response()
}
