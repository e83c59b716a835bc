//! API tokens. A token acts as its user. The secret (`plt_…`) is returned
//! once at creation and only its SHA-256 is kept. Users manage their own tokens;
//! tenant-admins manage every token of their tenant.

use super::users::can_admin_user;
use crate::app::{AppState, Caller, Error, Paging, Result, expiry, reference};
use crate::secrets;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;
use plinth_store::{Store, StoreError, Val};

/// Makes a token for `user` and stores its hash; returns the record and the secret.
pub async fn mint_for(
    store: &Store,
    user: &User,
    name: String,
    expires_at: Option<chrono::DateTime<Utc>>,
    audit: &plinth_store::AuditEntry,
) -> Result<TokenCreated, StoreError> {
    let now = Utc::now();
    let token = ApiToken {
        id: TokenId::generate(),
        user_id: user.id.clone(),
        tenant_id: user.tenant_id.clone(),
        name,
        expires_at,
        revoked_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let secret = secrets::mint(secrets::API_TOKEN, token.id.as_str());
    store.insert_with(&token, &[("secret_hash", Val::text(secrets::hash(&secret)))], audit).await?;
    Ok(TokenCreated { token, secret })
}

/// Longest token lifetime: ten years.
pub const MAX_TOKEN_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Reads a token the caller may manage: its own, or any in a tenant it administers.
async fn visible(st: &AppState, caller: &Caller, id: &str) -> Result<ApiToken> {
    let t: ApiToken = st.store.get(&caller.scope(), id).await?;
    if t.user_id == caller.principal.user_id || admin_of(caller, &t) {
        Ok(t)
    } else {
        Err(Error::not_found("token", id))
    }
}

fn admin_of(caller: &Caller, t: &ApiToken) -> bool {
    match &t.tenant_id {
        Some(tenant) => caller.principal.can_admin_tenant(tenant),
        None => caller.principal.is_operator(),
    }
}

/// List tokens: your own, or all of the tenants you administer.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: TokenFilter) -> Result<Page<ApiToken>> {
    let pg = Paging::from(p)?;
    let admin = match &caller.principal.tenant_id {
        Some(t) => caller.principal.can_admin_tenant(t),
        None => caller.principal.is_operator(),
    };
    let mut filters = if admin { vec![] } else { vec![("user_id", caller.principal.user_id.0.clone())] };
    filters.extend(f.name.map(|n| ("name", n)));
    Ok(st.store.list::<ApiToken>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Create a token for yourself, or (tenant-admins, operators) for another user.
pub async fn create(st: &AppState, caller: &Caller, b: TokenCreate) -> Result<TokenCreated> {
    let user_id = b.user_id.unwrap_or_else(|| caller.principal.user_id.clone());
    // Your own user is always yours, even a platform user outside every tenant scope.
    let scope =
        if user_id == caller.principal.user_id { plinth_domain::authz::Scope::Platform } else { caller.scope() };
    let user: User = st.store.get(&scope, user_id.as_str()).await.map_err(|e| reference(e, "user_id"))?;
    if user.id != caller.principal.user_id && !can_admin_user(caller, &user) {
        return Err(Error::forbidden("creating tokens for other users"));
    }
    validate::dns_label("name", &b.name)?;
    let expires_at = match b.expires_in_seconds {
        Some(s) => Some(expiry("expires_in_seconds", s, 60, MAX_TOKEN_SECONDS)?),
        None => None,
    };
    Ok(mint_for(&st.store, &user, b.name, expires_at, &caller.audit()).await?)
}

/// Get a token (never its secret).
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<ApiToken> {
    visible(st, caller, id).await
}

/// Rename a token.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: TokenUpdate,
) -> Result<ApiToken> {
    visible(st, caller, id).await?;
    if let Some(n) = &b.name {
        validate::dns_label("name", n)?;
    }
    let t = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |t: &mut ApiToken| {
            if let Some(n) = b.name {
                t.name = n;
            }
            Ok(vec![])
        })
        .await?;
    Ok(t)
}

/// Revoke a token: it stops working at once and stays listed as revoked.
pub async fn revoke(st: &AppState, caller: &Caller, id: &str) -> Result<ApiToken> {
    visible(st, caller, id).await?;
    let t = st
        .store
        .update(&caller.scope(), id, None, &caller.audit(), |t: &mut ApiToken| {
            t.revoked_at.get_or_insert_with(Utc::now);
            Ok(vec![])
        })
        .await?;
    Ok(t)
}

/// Delete a token: it stops working at once; the audit log keeps its history.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    visible(st, caller, id).await?;
    st.store.delete::<ApiToken>(&caller.scope(), id, if_match, &caller.audit()).await?;
    Ok(())
}
