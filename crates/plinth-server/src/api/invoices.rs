//! `/v1/invoices`, `/v1/billing/*` and `/v1/price-books`: invoices (drafts recomputed on
//! demand, finalize, void, credit notes, CSV), price book versions, tenants' billing
//! settings, the reconciliation report, exports (CSV and FOCUS 1.2) and revenue. The use cases
//! are in [`crate::app::billing::invoices`].

use super::created;
use crate::app::AppState;
use crate::app::billing::invoices;
use crate::app::billing::prices;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_api::*;
use plinth_domain::rating;

/// List invoices and credit notes in id (creation) order. When the list is one tenant's
/// (a tenant's own, or an operator's `tenant_id`), that tenant's current draft is
/// recomputed first, so it is always in the list.
#[utoipa::path(get, path = "/v1/invoices", tag = "billing", operation_id = "invoice_list",
    params(PageParams, InvoiceFilter),
    responses((status = 200, description = "Invoices and credit notes", body = Page<Invoice>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<InvoiceFilter>,
) -> ApiResult<Out<Page<Invoice>>> {
    Ok(Out(invoices::list(&st, &caller, &p, f).await?))
}

/// A tenant's invoice for a period: the finalized one, or the draft recomputed now.
#[utoipa::path(get, path = "/v1/invoices/current", tag = "billing", operation_id = "invoice_current",
    params(CurrentQuery), responses((status = 200, description = "The invoice", body = Invoice)))]
pub async fn current(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(q): Query<CurrentQuery>,
) -> ApiResult<Out<Invoice>> {
    Ok(Out(invoices::current(&st, &caller, q).await?))
}

/// Get an invoice (a draft is recomputed first). `Accept: text/csv` gives its lines as CSV.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "billing", operation_id = "invoice_view",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "The invoice", body = Invoice)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let inv = invoices::get(&st, &caller, &id).await?;
    let csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"));
    if csv {
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], rating::invoice_csv(&inv)).into_response());
    }
    Ok(Out(inv).into_response())
}

/// Why an invoice line says what it says: the ledger records it adds up (as this invoice
/// counted them), the lifecycle transitions that opened them, their operations, and the
/// audit records of the resources involved.
#[utoipa::path(get, path = "/v1/invoices/{id}/lines/{number}/evidence", tag = "billing", operation_id = "invoice_line_evidence",
    params(("id" = String, Path, description = "Invoice id"), ("number" = u32, Path, description = "Line number")),
    responses((status = 200, description = "The line's evidence", body = InvoiceLineEvidence)))]
pub async fn line_evidence(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path((id, number)): Path<(String, String)>,
) -> ApiResult<Out<InvoiceLineEvidence>> {
    let number = number.parse::<u32>().map_err(|_| {
        crate::error::ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", "the line number is a positive integer")
            .with_constraint(serde_json::json!({ "field": "number", "rule": "integer" }))
    })?;
    Ok(Out(invoices::line_evidence(&st, &caller, &id, number).await?))
}

/// An invoice's lines, optionally per resource.
#[utoipa::path(get, path = "/v1/invoices/{id}/lines", tag = "billing", operation_id = "invoice_lines",
    params(("id" = String, Path, description = "Invoice id"), LinesQuery),
    responses((status = 200, description = "Lines", body = Vec<InvoiceLine>)))]
pub async fn lines(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Query(q): Query<LinesQuery>,
) -> ApiResult<Out<Vec<InvoiceLine>>> {
    Ok(Out(invoices::lines(&st, &caller, &id, q).await?))
}

/// Finalize a draft (operators): numbered, credits drawn, immutable from then on.
#[utoipa::path(post, path = "/v1/invoices/{id}/finalize", tag = "billing", operation_id = "invoice_finalize",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "The finalized invoice", body = Invoice)))]
pub async fn finalize(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<Invoice>> {
    Ok(Out(invoices::finalize(&st, &caller, &id).await?))
}

/// Void a finalized invoice (operators): a new draft for its period replaces it.
#[utoipa::path(post, path = "/v1/invoices/{id}/void", tag = "billing", operation_id = "invoice_void",
    params(("id" = String, Path, description = "Invoice id")),
    responses((status = 200, description = "The new draft that replaces it", body = Invoice)))]
pub async fn void(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<Invoice>> {
    Ok(Out(invoices::void(&st, &caller, &id).await?))
}

/// Issue a credit note against a finalized invoice (operators).
#[utoipa::path(post, path = "/v1/invoices/{id}/credit-notes", tag = "billing", operation_id = "invoice_credit_note",
    params(("id" = String, Path, description = "Invoice id")), request_body = CreditNoteCreate,
    responses((status = 201, description = "The credit note (finalized)", body = Invoice)))]
pub async fn credit_note(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(b): Json<CreditNoteCreate>,
) -> ApiResult<Response> {
    Ok(created(invoices::credit_note(&st, &caller, &id, b).await?))
}

/// Reconciliation: lifecycle seconds against metered seconds against invoiced quantity,
/// per instance and meter, for a period (tenants see their own).
#[utoipa::path(get, path = "/v1/billing/reconciliation", tag = "billing", operation_id = "billing_reconciliation",
    params(PeriodQuery), responses((status = 200, description = "The report", body = ReconciliationReport)))]
pub async fn reconciliation(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(q): Query<PeriodQuery>,
) -> ApiResult<Out<ReconciliationReport>> {
    Ok(Out(invoices::reconciliation(&st, &caller, q).await?))
}

/// Export a period's invoices: `format=csv` (lines) or `format=focus` (FOCUS 1.2 rows,
/// usage per resource). Tenants get their own; operators every tenant's.
#[utoipa::path(get, path = "/v1/billing/export", tag = "billing", operation_id = "billing_export",
    params(PeriodQuery), responses((status = 200, description = "CSV", content_type = "text/csv", body = String)))]
pub async fn export(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(q): Query<PeriodQuery>,
) -> ApiResult<Response> {
    let body = invoices::export(&st, &caller, q).await?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response())
}

/// Revenue by period, meter and dimension (shape, GPU class), from finalized invoices
/// (operators). `?drafts=true` includes the drafts.
#[utoipa::path(get, path = "/v1/billing/revenue", tag = "billing", operation_id = "billing_revenue",
    params(RevenueQuery), responses((status = 200, description = "Revenue rows", body = Vec<RevenueRow>)))]
pub async fn revenue(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(q): Query<RevenueQuery>,
) -> ApiResult<Out<Vec<RevenueRow>>> {
    Ok(Out(invoices::revenue(&st, &caller, q).await?))
}

/// List price book versions (everyone may read prices).
#[utoipa::path(get, path = "/v1/price-books", tag = "billing", operation_id = "price_book_list",
    params(PageParams, PriceBookFilter),
    responses((status = 200, description = "Price book versions", body = Page<PriceBook>)))]
pub async fn price_books(
    State(st): State<AppState>,
    _caller: Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<PriceBookFilter>,
) -> ApiResult<Out<Page<PriceBook>>> {
    Ok(Out(prices::price_books(&st, &p, f).await?))
}

/// Get a price book version.
#[utoipa::path(get, path = "/v1/price-books/{id}", tag = "billing", operation_id = "price_book_view",
    params(("id" = String, Path, description = "Price book id")),
    responses((status = 200, description = "The version", body = PriceBook)))]
pub async fn price_book(
    State(st): State<AppState>,
    _caller: Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<PriceBook>> {
    Ok(Out(prices::price_book(&st, &id).await?))
}

/// Add a price book version (operators): effective from its date until the next version
/// of the same name. Versions are immutable.
#[utoipa::path(post, path = "/v1/price-books", tag = "billing", operation_id = "price_book_create",
    request_body = PriceBookCreate, responses((status = 201, description = "The new version", body = PriceBook)))]
pub async fn create_price_book(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<PriceBookCreate>,
) -> ApiResult<Response> {
    Ok(created(prices::create_price_book(&st, &caller, b).await?))
}

/// A tenant's billing settings (price book and support tier).
#[utoipa::path(get, path = "/v1/tenants/{id}/billing", tag = "billing", operation_id = "billing_account_view",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The settings", body = BillingAccount)))]
pub async fn account(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<BillingAccount>> {
    Ok(Out(prices::account(&st, &caller, &id).await?))
}

/// Set a tenant's billing settings (operators).
#[utoipa::path(put, path = "/v1/tenants/{id}/billing", tag = "billing", operation_id = "billing_account_replace",
    params(("id" = String, Path, description = "Tenant id")), request_body = BillingAccount,
    responses((status = 200, description = "The settings", body = BillingAccount)))]
pub async fn set_account(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(b): Json<BillingAccount>,
) -> ApiResult<Out<BillingAccount>> {
    Ok(Out(prices::set_account(&st, &caller, &id, b).await?))
}
