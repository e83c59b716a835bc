//! `/v1/quotas`, `/v1/budgets`, `/v1/credits` and `/v1/commitments`: limits checked with
//! every claim, monthly spend thresholds, credit grants and capacity commitments. The use
//! cases are in [`crate::app::quotas`].

use super::created;
use crate::app::AppState;
use crate::app::quotas;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// Quotas: limit, used and available per resource, for a tenant and its projects (or one
/// project). Tenants see their own.
#[utoipa::path(get, path = "/v1/quotas", tag = "billing", operation_id = "quota_list", params(QuotaQuery),
    responses((status = 200, description = "Quota entries", body = Vec<QuotaEntry>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(q): Query<QuotaQuery>,
) -> ApiResult<Out<Vec<QuotaEntry>>> {
    Ok(Out(quotas::list(&st, &caller, q).await?))
}

/// Set limits of a tenant (operators) or of a project (operators and the tenant's admins);
/// a null limit removes it.
#[utoipa::path(put, path = "/v1/quotas", tag = "billing", operation_id = "quota_replace", request_body = QuotaSet,
    responses((status = 200, description = "The scope's entries", body = Vec<QuotaEntry>)))]
pub async fn set(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<QuotaSet>,
) -> ApiResult<Out<Vec<QuotaEntry>>> {
    Ok(Out(quotas::set(&st, &caller, b).await?))
}

/// List budgets (tenants see their own).
#[utoipa::path(get, path = "/v1/budgets", tag = "billing", operation_id = "budget_list", params(PageParams),
    responses((status = 200, description = "Budgets", body = Page<Budget>)))]
pub async fn budgets(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<Budget>>> {
    Ok(Out(quotas::budgets(&st, &caller, &p).await?))
}

/// Create a budget (operators and the tenant's admins): past its threshold in a period,
/// `notify` records it; `block-new` refuses new billable resources with `402`.
#[utoipa::path(post, path = "/v1/budgets", tag = "billing", operation_id = "budget_create",
    request_body = BudgetCreate, responses((status = 201, description = "The budget", body = Budget)))]
pub async fn create_budget(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<BudgetCreate>,
) -> ApiResult<Response> {
    Ok(created(quotas::create_budget(&st, &caller, b).await?))
}

/// Delete a budget.
#[utoipa::path(delete, path = "/v1/budgets/{id}", tag = "billing", operation_id = "budget_delete",
    params(("id" = String, Path, description = "Budget id")), responses((status = 204, description = "Deleted")))]
pub async fn delete_budget(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    quotas::delete_budget(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List credit grants (tenants see their own).
#[utoipa::path(get, path = "/v1/credits", tag = "billing", operation_id = "credit_list", params(PageParams),
    responses((status = 200, description = "Credit grants", body = Page<CreditGrant>)))]
pub async fn credits(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<CreditGrant>>> {
    Ok(Out(quotas::credits(&st, &caller, &p).await?))
}

/// Grant credit to a tenant (operators). Invoices draw on grants by priority, then the
/// sooner expiry.
#[utoipa::path(post, path = "/v1/credits", tag = "billing", operation_id = "credit_create",
    request_body = CreditGrantCreate, responses((status = 201, description = "The grant", body = CreditGrant)))]
pub async fn create_credit(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<CreditGrantCreate>,
) -> ApiResult<Response> {
    Ok(created(quotas::create_credit(&st, &caller, b).await?))
}

/// List commitments (tenants see their own).
#[utoipa::path(get, path = "/v1/commitments", tag = "billing", operation_id = "commitment_list", params(PageParams),
    responses((status = 200, description = "Commitments", body = Page<Commitment>)))]
pub async fn commitments(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<Commitment>>> {
    Ok(Out(quotas::commitments(&st, &caller, &p).await?))
}

/// Record a commitment (operators): `count` units of a shape (`running_seconds`) or GPU
/// class (`gpu_seconds`) for a term, billed whether used or not.
#[utoipa::path(post, path = "/v1/commitments", tag = "billing", operation_id = "commitment_create",
    request_body = CommitmentCreate, responses((status = 201, description = "The commitment", body = Commitment)))]
pub async fn create_commitment(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<CommitmentCreate>,
) -> ApiResult<Response> {
    Ok(created(quotas::create_commitment(&st, &caller, b).await?))
}
