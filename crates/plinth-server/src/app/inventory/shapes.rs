//! Shapes: the sizes tenants consume. Operators define them; everyone reads them.

use crate::app::{AppState, Caller, Paging, Result, opt_text};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;

/// List shapes.
pub async fn list(st: &AppState, p: &PageParams, f: ShapeFilter) -> Result<Page<Shape>> {
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.name.into_iter().map(|n| ("name", n)).collect();
    Ok(st.store.list::<Shape>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Define a shape (operators).
pub async fn create(st: &AppState, caller: &Caller, b: ShapeCreate) -> Result<Shape> {
    caller.require_operator("defining shapes")?;
    validate::shape(&b)?;
    let now = Utc::now();
    let s = Shape {
        id: ShapeId::generate(),
        name: b.name,
        description: b.description.unwrap_or_default(),
        vcpus: b.vcpus,
        memory_mib: b.memory_mib,
        disk_gib: b.disk_gib,
        gpu: b.gpu,
        cpu_policy: b.cpu_policy,
        hugepages: b.hugepages,
        runtime_class: b.runtime_class,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&s, &caller.audit()).await?;
    Ok(s)
}

/// Get a shape.
pub async fn get(st: &AppState, id: &str) -> Result<Shape> {
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// Change a shape's description (sizes are immutable: define a new shape).
pub async fn update(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>, b: ShapeUpdate) -> Result<Shape> {
    caller.require_operator("defining shapes")?;
    opt_text("description", &b.description, 1024)?;
    let s = st
        .store
        .update(&Scope::Platform, id, if_match, &caller.audit(), |s: &mut Shape| {
            if let Some(d) = b.description {
                s.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(s)
}

/// Delete a shape.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("defining shapes")?;
    st.store.delete::<Shape>(&Scope::Platform, id, if_match, &caller.audit()).await?;
    Ok(())
}
