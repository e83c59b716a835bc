//! Sites (operators): data centres or rooms that hold racks.

use crate::app::{AppState, Caller, Paging, Result, opt_text};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;

/// List sites.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: SiteFilter) -> Result<Page<Site>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.name.into_iter().map(|n| ("name", n)).collect();
    Ok(st.store.list::<Site>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a site.
pub async fn create(st: &AppState, caller: &Caller, b: SiteCreate) -> Result<Site> {
    caller.require_operator("changing inventory")?;
    validate::dns_label("name", &b.name)?;
    opt_text("description", &b.description, 1024)?;
    opt_text("location", &b.location, 255)?;
    let now = Utc::now();
    let s = Site {
        id: SiteId::generate(),
        name: b.name,
        description: b.description.unwrap_or_default(),
        location: b.location,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&s, &caller.audit()).await?;
    Ok(s)
}

/// Get a site.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Site> {
    caller.require_operator("reading inventory")?;
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// Change a site.
pub async fn update(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>, b: SiteUpdate) -> Result<Site> {
    caller.require_operator("changing inventory")?;
    opt_text("description", &b.description, 1024)?;
    opt_text("location", &b.location, 255)?;
    let s = st
        .store
        .update(&Scope::Platform, id, if_match, &caller.audit(), |s: &mut Site| {
            if let Some(d) = b.description {
                s.description = d;
            }
            if b.location.is_some() {
                s.location = b.location;
            }
            Ok(vec![])
        })
        .await?;
    Ok(s)
}

/// Delete a site with no racks or hosts.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("changing inventory")?;
    st.store.delete::<Site>(&Scope::Platform, id, if_match, &caller.audit()).await?;
    Ok(())
}
