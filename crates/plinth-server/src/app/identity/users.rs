//! Users: people and service accounts. Tenant users belong to one tenant; platform
//! users (no tenant) exist for operators. Tenant-admins manage their tenant's users.

use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;

/// Whether the caller administers `user`'s tenant (or, for platform users, is an operator).
pub fn can_admin_user(caller: &Caller, user: &User) -> bool {
    match &user.tenant_id {
        Some(t) => caller.principal.can_admin_tenant(t),
        None => caller.principal.is_operator(),
    }
}

/// List the users the caller can see.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: UserFilter) -> Result<Page<User>> {
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.name.into_iter().map(|n| ("name", n)).collect();
    Ok(st.store.list::<User>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a user (tenant-admins in their tenant; operators anywhere, or platform users
/// when `tenant_id` is omitted).
pub async fn create(st: &AppState, caller: &Caller, b: UserCreate) -> Result<User> {
    let tenant_id = b.tenant_id.or_else(|| caller.principal.tenant_id.clone());
    match &tenant_id {
        Some(t) => {
            let _: Tenant = st.store.get(&caller.scope(), t.as_str()).await?;
            if !caller.principal.can_admin_tenant(t) {
                return Err(Error::forbidden("creating users"));
            }
        }
        None => caller.require_operator("creating platform users")?,
    }
    validate::dns_label("name", &b.name)?;
    if let Some(e) = &b.email {
        validate::email("email", e)?;
    }
    let now = Utc::now();
    let u = User {
        id: UserId::generate(),
        tenant_id,
        name: b.name,
        email: b.email,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&u, &caller.audit()).await?;
    Ok(u)
}

/// Get a user.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<User> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Change a user.
pub async fn update(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>, b: UserUpdate) -> Result<User> {
    let u: User = st.store.get(&caller.scope(), id).await?;
    if !can_admin_user(caller, &u) && u.id != caller.principal.user_id {
        return Err(Error::forbidden("changing other users"));
    }
    if let Some(e) = &b.email {
        validate::email("email", e)?;
    }
    let u = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |u: &mut User| {
            if b.email.is_some() {
                u.email = b.email;
            }
            Ok(vec![])
        })
        .await?;
    Ok(u)
}

/// Delete a user with no tokens or role bindings left.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let u: User = st.store.get(&caller.scope(), id).await?;
    if !can_admin_user(caller, &u) {
        return Err(Error::forbidden("deleting users"));
    }
    st.store.delete::<User>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}
