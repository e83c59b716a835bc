//! Host join tokens (operators): single-use, expiring secrets an agent exchanges for
//! a host id and credential at `/agent/v1/enroll`.

use crate::app::{AppState, Caller, Paging, Result, expiry, opt_text, reference};
use crate::secrets;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;
use plinth_store::Val;

/// Default lifetime of a join token: one hour.
pub const DEFAULT_SECONDS: u64 = 3600;

/// List join tokens (never their secrets).
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams) -> Result<Page<HostJoinToken>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(p)?;
    Ok(st.store.list::<HostJoinToken>(&Scope::Platform, &[], pg.limit, pg.cursor.as_deref()).await?)
}

/// Make a join token.
pub async fn create(st: &AppState, caller: &Caller, b: HostJoinTokenCreate) -> Result<HostJoinTokenCreated> {
    caller.require_operator("enrolling hosts")?;
    opt_text("description", &b.description, 255)?;
    let expires_at = expiry("expires_in_seconds", b.expires_in_seconds.unwrap_or(DEFAULT_SECONDS), 60, 7 * 24 * 3600)?;
    let max_uses = b.max_uses.unwrap_or(1);
    validate::quantity("max_uses", max_uses as u64, 1, 10_000)?;
    if let Some(r) = &b.rack_id {
        let _: Rack = st.store.get(&Scope::Platform, r.as_str()).await.map_err(|e| reference(e, "rack_id"))?;
    }
    let now = Utc::now();
    let t = HostJoinToken {
        id: JoinTokenId::generate(),
        description: b.description.unwrap_or_default(),
        rack_id: b.rack_id,
        expires_at,
        max_uses,
        uses: 0,
        used_at: None,
        used_by_host_id: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let secret = secrets::mint(secrets::JOIN_TOKEN, t.id.as_str());
    st.store.insert_with(&t, &[("secret_hash", Val::text(secrets::hash(&secret)))], &caller.audit()).await?;
    // The agent's form of the secret carries the CA's fingerprint, which the agent pins.
    let ca = st.config.ca_sha256;
    let agent_join_token = plinth_client::connect::JoinToken::combined(&secret, ca.as_ref());
    Ok(HostJoinTokenCreated { join_token: t, secret, ca_sha256: ca.map(|f| f.hex()), agent_join_token })
}

/// Get a join token.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<HostJoinToken> {
    caller.require_operator("reading inventory")?;
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// Change a join token's description.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: HostJoinTokenUpdate,
) -> Result<HostJoinToken> {
    caller.require_operator("enrolling hosts")?;
    opt_text("description", &b.description, 255)?;
    let t = st
        .store
        .update(&Scope::Platform, id, if_match, &caller.audit(), |t: &mut HostJoinToken| {
            if let Some(d) = b.description {
                t.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(t)
}

/// Revoke a join token by deleting it.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("enrolling hosts")?;
    st.store.delete::<HostJoinToken>(&Scope::Platform, id, if_match, &caller.audit()).await?;
    Ok(())
}
