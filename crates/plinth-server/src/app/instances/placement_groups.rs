//! Placement groups: affinity, anti-affinity (hard) and spread (soft) of instances
//! over hosts or racks, checked inside the claiming transaction.

use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;

/// List placement groups.
pub async fn list(
    st: &AppState,
    caller: &Caller,
    p: &PageParams,
    f: PlacementGroupFilter,
) -> Result<Page<PlacementGroup>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    filters.extend(f.name.map(|n| ("name", n)));
    Ok(st.store.list::<PlacementGroup>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a placement group.
pub async fn create(st: &AppState, caller: &Caller, b: PlacementGroupCreate) -> Result<PlacementGroup> {
    validate::dns_label("name", &b.name)?;
    let project: Project = st.store.get(&caller.scope(), b.project_id.as_str()).await?;
    if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
        return Err(Error::forbidden("creating placement groups in this project"));
    }
    let now = Utc::now();
    let g = PlacementGroup {
        id: PlacementGroupId::generate(),
        tenant_id: project.tenant_id,
        project_id: project.id,
        name: b.name,
        policy: b.policy,
        scope: b.scope,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&g, &caller.audit()).await?;
    Ok(g)
}

/// Get a placement group.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<PlacementGroup> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Delete a placement group that no instance refers to.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let g: PlacementGroup = st.store.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&g.tenant_id, Some(&g.project_id)) {
        return Err(Error::forbidden("deleting placement groups in this project"));
    }
    st.store.delete::<PlacementGroup>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}
