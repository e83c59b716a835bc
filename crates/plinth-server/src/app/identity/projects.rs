//! Projects: groups of resources inside a tenant. Tenant-admins (and operators)
//! create, change and delete them; members and viewers see them.

use crate::app::{AppState, Caller, Error, Paging, Result, opt_labels, opt_text};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;

/// List the projects the caller can see.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: ProjectFilter) -> Result<Page<Project>> {
    let pg = Paging::from(p)?;
    let mut filters = Vec::new();
    if let Some(t) = f.tenant_id {
        filters.push(("tenant_id", t));
    }
    if let Some(n) = f.name {
        filters.push(("name", n));
    }
    Ok(st.store.list::<Project>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a project (tenant-admins, operators).
pub async fn create(st: &AppState, caller: &Caller, b: ProjectCreate) -> Result<Project> {
    let tenant_id = caller.default_tenant(b.tenant_id)?;
    let _: Tenant = st.store.get(&caller.scope(), tenant_id.as_str()).await?;
    if !caller.principal.can_write_in(&tenant_id, None) {
        return Err(Error::forbidden("creating projects"));
    }
    validate::dns_label("name", &b.name)?;
    opt_text("description", &b.description, 1024)?;
    validate::labels("labels", &b.labels)?;
    let now = Utc::now();
    let p = Project {
        id: ProjectId::generate(),
        tenant_id,
        name: b.name,
        description: b.description.unwrap_or_default(),
        labels: b.labels,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&p, &caller.audit()).await?;
    Ok(p)
}

/// Get a project.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Project> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Change a project (tenant-admins, operators).
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: ProjectUpdate,
) -> Result<Project> {
    let p: Project = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_admin_tenant(&p.tenant_id) {
        return Err(Error::forbidden("changing projects"));
    }
    opt_text("description", &b.description, 1024)?;
    opt_labels("labels", &b.labels)?;
    let p = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |p: &mut Project| {
            if let Some(d) = b.description {
                p.description = d;
            }
            if let Some(l) = b.labels {
                p.labels = l;
            }
            Ok(vec![])
        })
        .await?;
    Ok(p)
}

/// Delete an empty project (tenant-admins, operators).
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let p: Project = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_admin_tenant(&p.tenant_id) {
        return Err(Error::forbidden("deleting projects"));
    }
    st.store.delete::<Project>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}
