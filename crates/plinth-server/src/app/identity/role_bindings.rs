//! Role bindings: grants of `operator` (platform users, by operators) and of
//! `tenant-admin`, `member`, `viewer` on a tenant or one of its projects (by that tenant's
//! admins).

use super::users::can_admin_user;
use crate::app::{AppState, Caller, Error, Paging, Result, reference};
use chrono::Utc;
use plinth_api::*;
use serde_json::json;

fn scope_error(detail: &str) -> Error {
    Error::invalid("invalid_role_scope", detail.to_string())
        .with_constraint(json!({ "field": "role", "rule": "role-scope" }))
}

/// Checks that `role` fits `user` (and `project`) and that the caller may grant it.
fn check_grant(caller: &Caller, user: &User, role: Role, project: Option<&Project>) -> Result<()> {
    match (role, &user.tenant_id) {
        (Role::Operator, None) => caller.require_operator("granting the operator role")?,
        (Role::Operator, Some(_)) => return Err(scope_error("operator is granted only to platform users (no tenant)")),
        (_, None) => return Err(scope_error("tenant roles are granted only to users of a tenant")),
        (_, Some(t)) => {
            if !caller.principal.can_admin_tenant(t) {
                return Err(Error::forbidden("granting roles"));
            }
        }
    }
    if let Some(p) = project {
        if Some(&p.tenant_id) != user.tenant_id.as_ref() {
            return Err(scope_error("the project is not in the user's tenant"));
        }
        if !matches!(role, Role::Member | Role::Viewer) {
            return Err(scope_error("only member and viewer can be narrowed to a project"));
        }
    }
    Ok(())
}

/// List the role bindings the caller can see.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: RoleBindingFilter) -> Result<Page<RoleBinding>> {
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.user_id.map(|u| vec![("user_id", u)]).unwrap_or_default();
    Ok(st.store.list::<RoleBinding>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Grant a role.
pub async fn create(st: &AppState, caller: &Caller, b: RoleBindingCreate) -> Result<RoleBinding> {
    let user: User = st.store.get(&caller.scope(), b.user_id.as_str()).await.map_err(|e| reference(e, "user_id"))?;
    let project: Option<Project> = match &b.project_id {
        Some(p) => Some(st.store.get(&caller.scope(), p.as_str()).await.map_err(|e| reference(e, "project_id"))?),
        None => None,
    };
    check_grant(caller, &user, b.role, project.as_ref())?;
    let now = Utc::now();
    let rb = RoleBinding {
        id: RoleBindingId::generate(),
        user_id: user.id.clone(),
        role: b.role,
        tenant_id: user.tenant_id.clone(),
        project_id: b.project_id,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&rb, &caller.audit()).await?;
    Ok(rb)
}

/// Get a role binding.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<RoleBinding> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Change the role of a binding.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: RoleBindingUpdate,
) -> Result<RoleBinding> {
    let rb: RoleBinding = st.store.get(&caller.scope(), id).await?;
    let user: User = st.store.get(&caller.scope(), rb.user_id.as_str()).await?;
    let project: Option<Project> = match &rb.project_id {
        Some(p) => Some(st.store.get(&caller.scope(), p.as_str()).await?),
        None => None,
    };
    check_grant(caller, &user, rb.role, project.as_ref())?;
    if let Some(role) = b.role {
        check_grant(caller, &user, role, project.as_ref())?;
    }
    let rb = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |rb: &mut RoleBinding| {
            if let Some(r) = b.role {
                rb.role = r;
            }
            Ok(vec![])
        })
        .await?;
    Ok(rb)
}

/// Remove a role binding.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let rb: RoleBinding = st.store.get(&caller.scope(), id).await?;
    let user: User = st.store.get(&caller.scope(), rb.user_id.as_str()).await?;
    if !can_admin_user(caller, &user) {
        return Err(Error::forbidden("removing role bindings"));
    }
    st.store.delete::<RoleBinding>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}
