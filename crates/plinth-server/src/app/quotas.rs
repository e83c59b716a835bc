//! Limits and spend: quotas (checked with every claim), budgets (monthly spend
//! thresholds), credit grants and capacity commitments.

use crate::app::{AppState, Caller, Error, Paging, Result, billing};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::{metering, quota, validate};
use serde_json::json;

async fn tenant_scopes(st: &AppState, scope: &Scope, t: &TenantId) -> Result<Vec<String>> {
    let projects: Vec<Project> = st.store.list_all(scope, &[]).await?;
    let mut out = vec![t.to_string()];
    out.extend(projects.into_iter().filter(|p| &p.tenant_id == t).map(|p| p.id.to_string()));
    Ok(out)
}

/// A tenant-wide reader of a tenant's billing objects, or 403.
fn readable(caller: &Caller) -> Result<Scope> {
    match caller.scope() {
        Scope::Tenant { projects: Some(_), .. } | Scope::Nothing => Err(Error::forbidden("reading billing")),
        s => Ok(s),
    }
}

fn positive(field: &str, v: i64) -> Result<()> {
    if v <= 0 {
        return Err(Error::invalid("invalid_value", format!("{field} must be positive"))
            .with_constraint(json!({ "field": field, "rule": "> 0" })));
    }
    Ok(())
}

/// Quotas: limit, used and available per resource, for a tenant and its projects (or one
/// project). Tenants see their own.
pub async fn list(st: &AppState, caller: &Caller, q: QuotaQuery) -> Result<Vec<QuotaEntry>> {
    let scope = caller.scope();
    let scopes: Vec<String> = match q.scope_id.as_deref() {
        Some(id) if id.starts_with("prj_") => {
            let p: Project = st.store.get(&scope, id).await?;
            vec![p.id.to_string()]
        }
        Some(id) => {
            let t: Tenant = st.store.get(&scope, id).await?;
            tenant_scopes(st, &scope, &t.id).await?
        }
        None => match &scope {
            Scope::Tenant { tenant_id, .. } => tenant_scopes(st, &scope, tenant_id).await?,
            _ => {
                return Err(Error::invalid("missing_field", "scope_id is required for operators")
                    .with_constraint(json!({ "field": "scope_id", "rule": "required" })));
            }
        },
    };
    Ok(st.store.quota_entries(&scopes).await?)
}

/// Set limits of a tenant (operators) or of a project (operators and the tenant's admins);
/// a null limit removes it.
pub async fn set(st: &AppState, caller: &Caller, b: QuotaSet) -> Result<Vec<QuotaEntry>> {
    if b.scope_id.starts_with("prj_") {
        let p: Project = st.store.get(&caller.scope(), &b.scope_id).await?;
        if !caller.principal.can_admin_tenant(&p.tenant_id) {
            return Err(Error::forbidden("setting this project's quotas"));
        }
    } else {
        caller.require_operator("setting tenant quotas")?;
        let _: Tenant = st.store.get(&Scope::Platform, &b.scope_id).await?;
    }
    for (r, l) in &b.limits {
        if !quota::is_resource(r) {
            return Err(Error::invalid("invalid_value", format!("{r:?} is not a quota resource"))
                .with_constraint(json!({ "field": format!("limits.{r}"), "rule": "one-of",
                    "allowed": ["instances", "vcpus", "memory_mib", "disk_gib", "gpus:<class>"] })));
        }
        if l.is_some_and(|l| l < 0) {
            return Err(Error::invalid("invalid_value", format!("limits.{r} cannot be negative"))
                .with_constraint(json!({ "field": format!("limits.{r}"), "rule": ">= 0" })));
        }
    }
    st.store.set_quota_limits(&b.scope_id, &b.limits).await?;
    st.store.record_audit(&caller.audit(), Some(&b.scope_id), None, 200, None).await?;
    Ok(st.store.quota_entries(std::slice::from_ref(&b.scope_id)).await?)
}

/// List budgets (tenants see their own).
pub async fn budgets(st: &AppState, caller: &Caller, p: &PageParams) -> Result<Page<Budget>> {
    let pg = Paging::from(p)?;
    Ok(st.store.list::<Budget>(&readable(caller)?, &[], pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a budget (operators and the tenant's admins): past its threshold in a period,
/// `notify` records it; `block-new` refuses new billable resources with `402`.
pub async fn create_budget(st: &AppState, caller: &Caller, b: BudgetCreate) -> Result<Budget> {
    let _: Tenant = st.store.get(&caller.scope(), b.tenant_id.as_str()).await?;
    if !caller.principal.can_admin_tenant(&b.tenant_id) {
        return Err(Error::forbidden("creating budgets for this tenant"));
    }
    validate::text("name", &b.name, 128)?;
    positive("threshold_micros", b.threshold_micros)?;
    let now = Utc::now();
    let budget = Budget {
        id: BudgetId::generate(),
        tenant_id: b.tenant_id,
        name: b.name,
        threshold_micros: b.threshold_micros,
        action: b.action,
        exceeded_period: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&budget, &caller.audit()).await?;
    // A budget already passed this period says so at once.
    billing::check_budgets(st).await?;
    let budget: Budget = st.store.get(&Scope::Platform, budget.id.as_str()).await?;
    Ok(budget)
}

/// Delete a budget.
pub async fn delete_budget(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let b: Budget = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_admin_tenant(&b.tenant_id) {
        return Err(Error::forbidden("deleting budgets of this tenant"));
    }
    st.store.delete::<Budget>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}

/// List credit grants (tenants see their own).
pub async fn credits(st: &AppState, caller: &Caller, p: &PageParams) -> Result<Page<CreditGrant>> {
    let pg = Paging::from(p)?;
    Ok(st.store.list::<CreditGrant>(&readable(caller)?, &[], pg.limit, pg.cursor.as_deref()).await?)
}

/// Grant credit to a tenant (operators). Invoices draw on grants by priority, then the
/// sooner expiry.
pub async fn create_credit(st: &AppState, caller: &Caller, b: CreditGrantCreate) -> Result<CreditGrant> {
    caller.require_operator("granting credit")?;
    let _: Tenant = st.store.get(&Scope::Platform, b.tenant_id.as_str()).await?;
    validate::text("description", &b.description, 1024)?;
    positive("amount_micros", b.amount_micros)?;
    let now = Utc::now();
    let effective_at = b.effective_at.unwrap_or(now);
    if b.expires_at.is_some_and(|e| e <= effective_at) {
        return Err(Error::invalid("invalid_value", "expires_at must be after effective_at")
            .with_constraint(json!({ "field": "expires_at", "rule": "> effective_at" })));
    }
    let g = CreditGrant {
        id: CreditId::generate(),
        tenant_id: b.tenant_id,
        description: b.description,
        amount_micros: b.amount_micros,
        used_micros: 0,
        currency: b.currency,
        priority: b.priority,
        effective_at,
        expires_at: b.expires_at,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&g, &caller.audit()).await?;
    Ok(g)
}

/// List commitments (tenants see their own).
pub async fn commitments(st: &AppState, caller: &Caller, p: &PageParams) -> Result<Page<Commitment>> {
    let pg = Paging::from(p)?;
    Ok(st.store.list::<Commitment>(&readable(caller)?, &[], pg.limit, pg.cursor.as_deref()).await?)
}

/// Record a commitment (operators): `count` units of a shape (`running_seconds`) or GPU
/// class (`gpu_seconds`) for a term, billed whether used or not.
pub async fn create_commitment(st: &AppState, caller: &Caller, b: CommitmentCreate) -> Result<Commitment> {
    caller.require_operator("recording commitments")?;
    let _: Tenant = st.store.get(&Scope::Platform, b.tenant_id.as_str()).await?;
    if !matches!(b.meter, Meter::RunningSeconds | Meter::GpuSeconds) {
        return Err(Error::invalid(
            "invalid_value",
            "a commitment is on running_seconds (a shape) or gpu_seconds (a GPU class)",
        )
        .with_constraint(
            json!({ "field": "meter", "rule": "one-of", "allowed": ["running_seconds", "gpu_seconds"] }),
        ));
    }
    validate::text("dimension", &b.dimension, 128)?;
    validate::commitment(&b)?;
    let now = Utc::now();
    let c = Commitment {
        id: CommitmentId::generate(),
        tenant_id: b.tenant_id,
        meter: b.meter,
        dimension: b.dimension,
        count: b.count,
        start_at: b.start_at,
        end_at: b.end_at,
        hourly_price_micros: b.hourly_price_micros,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    // The reserved capacity goes into the ledger with the commitment, one record per period.
    let mut tx = st.store.begin().await?;
    tx.insert(&c, &[]).await?;
    let records = metering::term_records(
        &c.dimension,
        c.count,
        metering::micros(c.start_at),
        metering::micros(c.end_at),
        tx.billing_anchor(),
    );
    let owner = plinth_store::LedgerOwner {
        tenant_id: c.tenant_id.as_str(),
        project_id: "",
        resource_id: c.id.as_str(),
        resource_kind: "commitment",
    };
    let plan = metering::LedgerPlan { close: vec![], insert: records };
    tx.apply_ledger(&owner, &plan, &format!("commitment:{}", c.id)).await?;
    tx.audit(&caller.audit(), c.id.as_str(), Some(c.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    Ok(c)
}
