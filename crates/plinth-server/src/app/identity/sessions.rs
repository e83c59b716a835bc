//! Who a credential names: an API token (`Authorization: Bearer plt_…`) or a web console
//! session made from one at login (a `__Host-` cookie holding `pcs_…`).
//!
//! A session acts as the token it was made from: the same user, roles and audit identity,
//! and it stops working when the token is revoked, deleted or expires. It ends on its own
//! after [`SESSION_IDLE`] without use or [`SESSION_LIFETIME`] after login, whichever comes
//! first, and at logout. Only hashes of secrets are stored.

use crate::app::{Error, Result};
use crate::secrets;
use plinth_api::{ConsoleSessionId, TenantId, TokenId, UserId};
use plinth_domain::authz::Principal;
use plinth_store::{AuditEntry, ConsoleSessionRow, Store, now_micros};

/// Prefix of web console session secrets.
pub const SESSION_SECRET: &str = "pcs";
/// A session unused this long ends (8 hours, as Oxide's console).
pub const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(8 * 3600);
/// A session ends this long after login, used or not (24 hours).
pub const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How stale a session's recorded last use may get before a request refreshes it.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn micros(d: std::time::Duration) -> i64 {
    d.as_micros() as i64
}

/// The principal an API token names, or why it names none.
pub async fn principal_for_token(store: &Store, token: &str) -> Result<Principal> {
    let invalid = || Error::unauthenticated("the token is not valid");
    let token_id = secrets::record_id(token, secrets::API_TOKEN, TokenId::PREFIX).ok_or_else(invalid)?;
    let (row, grants) = store.token_for_auth(&token_id).await?.ok_or_else(invalid)?;
    if !secrets::verify(token, &row.secret_hash) {
        return Err(invalid());
    }
    token_usable(&row, now_micros())?;
    Ok(Principal {
        user_id: UserId(row.user_id),
        token_id: TokenId(token_id),
        tenant_id: row.tenant_id.map(TenantId),
        grants,
    })
}

fn token_usable(row: &plinth_store::TokenRow, now: i64) -> Result<()> {
    if row.revoked_at.is_some() {
        return Err(Error::unauthenticated("the token was revoked"));
    }
    if row.expires_at.is_some_and(|t| t <= now) {
        return Err(Error::unauthenticated("the token has expired"));
    }
    Ok(())
}

/// A session made at login: its id, the secret for the browser's cookie (shown once,
/// stored only as a hash), and who it acts as. Not `Debug`: the secret must not reach a log.
pub struct Login {
    pub session_id: ConsoleSessionId,
    pub secret: String,
    pub principal: Principal,
}

/// Logs a browser in with an API token: a new session acting as that token. Audited as
/// `console.login` (target: the session), in the session's own transaction.
pub async fn login(store: &Store, token: &str, request_id: &str) -> Result<Login> {
    let principal = principal_for_token(store, token).await?;
    let session_id = ConsoleSessionId::generate();
    let secret = secrets::mint(SESSION_SECRET, session_id.as_str());
    let now = store.now().timestamp_micros();
    let row = ConsoleSessionRow {
        id: session_id.0.clone(),
        secret_hash: secrets::hash(&secret),
        token_id: principal.token_id.0.clone(),
        user_id: principal.user_id.0.clone(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + micros(SESSION_LIFETIME),
        revoked_at: None,
    };
    let audit = audit_entry(&principal, "console.login", request_id);
    store.console_session_create(&row, principal.tenant_id.as_ref().map(|t| t.as_str()), &audit, now).await?;
    Ok(Login { session_id, secret, principal })
}

/// The session a browser's cookie names and who it acts as, or why it names none.
pub async fn resolve(store: &Store, secret: &str) -> Result<(ConsoleSessionId, Principal)> {
    let invalid = || Error::unauthenticated("the session is not valid; log in again");
    let id = secrets::record_id(secret, SESSION_SECRET, ConsoleSessionId::PREFIX).ok_or_else(invalid)?;
    let (session, token, grants) = store.console_session_for_auth(&id).await?.ok_or_else(invalid)?;
    if !secrets::verify(secret, &session.secret_hash) {
        return Err(invalid());
    }
    let principal = current(store, session, token, grants).await?;
    Ok((ConsoleSessionId(id), principal))
}

/// Who a session acts as, by its id alone (a console ticket names its session; the ticket's
/// own secret was checked), or why it no longer acts.
pub async fn principal_of(store: &Store, id: &str) -> Result<Principal> {
    let invalid = || Error::unauthenticated("the session is not valid; log in again");
    let (session, token, grants) = store.console_session_for_auth(id).await?.ok_or_else(invalid)?;
    current(store, session, token, grants).await
}

/// The principal of a session that is still current: not logged out, not idle or past its
/// lifetime, its token still valid. Records its use (at most once a minute).
async fn current(
    store: &Store,
    session: ConsoleSessionRow,
    token: plinth_store::TokenRow,
    grants: Vec<plinth_domain::authz::Grant>,
) -> Result<Principal> {
    let now = store.now().timestamp_micros();
    if session.revoked_at.is_some() {
        return Err(Error::unauthenticated("the session was logged out; log in again"));
    }
    if session.expires_at <= now || session.last_seen_at + micros(SESSION_IDLE) <= now {
        return Err(Error::unauthenticated("the session has expired; log in again"));
    }
    token_usable(&token, now).map_err(|e| Error::unauthenticated(format!("{}; log in again", e.detail)))?;
    if session.last_seen_at + micros(TOUCH_EVERY) <= now {
        store.console_session_touch(&session.id, now, now - micros(TOUCH_EVERY)).await?;
    }
    Ok(Principal {
        user_id: UserId(token.user_id),
        token_id: TokenId(session.token_id),
        tenant_id: token.tenant_id.map(TenantId),
        grants,
    })
}

/// Logs a session out: it stops working at once. Audited as `console.logout`.
pub async fn logout(store: &Store, session: &ConsoleSessionId, principal: &Principal, request_id: &str) -> Result<()> {
    let audit = audit_entry(principal, "console.logout", request_id);
    let tenant = principal.tenant_id.as_ref().map(|t| t.as_str());
    store.console_session_revoke(session.as_str(), store.now().timestamp_micros(), tenant, &audit).await?;
    Ok(())
}

fn audit_entry(p: &Principal, action: &str, request_id: &str) -> AuditEntry {
    AuditEntry {
        actor_user_id: Some(p.user_id.0.clone()),
        actor_token_id: Some(p.token_id.0.clone()),
        action: action.to_string(),
        request_id: request_id.to_string(),
    }
}
