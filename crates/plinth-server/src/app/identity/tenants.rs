//! Tenants: billing accounts. Operators create and delete them; a tenant-admin may
//! change its own; every user of a tenant sees it.

use crate::app::{AppState, Caller, Error, Paging, Result, opt_labels, opt_text};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;

/// List the tenants the caller can see.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: TenantFilter) -> Result<Page<Tenant>> {
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.name.into_iter().map(|n| ("name", n)).collect();
    Ok(st.store.list::<Tenant>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a tenant (operators).
pub async fn create(st: &AppState, caller: &Caller, b: TenantCreate) -> Result<Tenant> {
    caller.require_operator("creating tenants")?;
    validate::dns_label("name", &b.name)?;
    opt_text("display_name", &b.display_name, 200)?;
    validate::labels("labels", &b.labels)?;
    let now = Utc::now();
    let t = Tenant {
        id: TenantId::generate(),
        display_name: b.display_name.unwrap_or_else(|| b.name.clone()),
        name: b.name,
        labels: b.labels,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&t, &caller.audit()).await?;
    Ok(t)
}

/// Get a tenant.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Tenant> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Change a tenant (operators, its tenant-admins).
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: TenantUpdate,
) -> Result<Tenant> {
    let t: Tenant = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_admin_tenant(&t.id) {
        return Err(Error::forbidden("changing this tenant"));
    }
    opt_text("display_name", &b.display_name, 200)?;
    opt_labels("labels", &b.labels)?;
    let t = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |t: &mut Tenant| {
            if let Some(d) = b.display_name {
                t.display_name = d;
            }
            if let Some(l) = b.labels {
                t.labels = l;
            }
            Ok(vec![])
        })
        .await?;
    Ok(t)
}

/// Delete a tenant with nothing left in it (operators).
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let _: Tenant = st.store.get(&caller.scope(), id).await?;
    caller.require_operator("deleting tenants")?;
    st.store.delete::<Tenant>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}
