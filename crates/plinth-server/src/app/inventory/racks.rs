//! Racks (operators): racks in a site. A rack is a failure domain for placement.

use crate::app::{AppState, Caller, Paging, Result, opt_text, reference};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;

/// List racks.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: RackFilter) -> Result<Page<Rack>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.site_id.map(|s| vec![("site_id", s)]).unwrap_or_default();
    filters.extend(f.name.map(|n| ("name", n)));
    Ok(st.store.list::<Rack>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a rack.
pub async fn create(st: &AppState, caller: &Caller, b: RackCreate) -> Result<Rack> {
    caller.require_operator("changing inventory")?;
    validate::dns_label("name", &b.name)?;
    opt_text("description", &b.description, 1024)?;
    let _: Site = st.store.get(&Scope::Platform, b.site_id.as_str()).await.map_err(|e| reference(e, "site_id"))?;
    let now = Utc::now();
    let r = Rack {
        id: RackId::generate(),
        site_id: b.site_id,
        name: b.name,
        description: b.description.unwrap_or_default(),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&r, &caller.audit()).await?;
    Ok(r)
}

/// Get a rack.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Rack> {
    caller.require_operator("reading inventory")?;
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// Change a rack.
pub async fn update(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>, b: RackUpdate) -> Result<Rack> {
    caller.require_operator("changing inventory")?;
    opt_text("description", &b.description, 1024)?;
    let r = st
        .store
        .update(&Scope::Platform, id, if_match, &caller.audit(), |r: &mut Rack| {
            if let Some(d) = b.description {
                r.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(r)
}

/// Delete a rack with no hosts.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("changing inventory")?;
    st.store.delete::<Rack>(&Scope::Platform, id, if_match, &caller.audit()).await?;
    Ok(())
}
