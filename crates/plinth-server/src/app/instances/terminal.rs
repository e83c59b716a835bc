//! Serial console tickets: a browser tab's single-use, short-lived credential for one
//! instance's serial console WebSocket, sent in the socket's first frame (never in a URL).
//!
//! A ticket is minted for a logged-in console session and one instance the session may
//! see; it is read-only unless the session's user may act on the instance (a viewer reads,
//! never types). Redeeming it (once, within [`TICKET_TTL`]) yields who the session acts as
//! now: a ticket outlives neither its session nor the session's token.

use crate::app::identity::sessions;
use crate::app::{AppState, Caller, Error, Result, instances};
use crate::secrets;
use plinth_api::{ConsoleSessionId, InstanceId};
use plinth_store::ConsoleTicketRow;

/// Prefix of ticket secrets.
pub const TICKET_SECRET: &str = "pct";
/// Prefix of ticket record ids.
const TICKET_ID: &str = "ctk";
/// How long a ticket may wait to be redeemed.
pub const TICKET_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A minted ticket: its secret (shown once, to the page that asked) and what it allows.
/// Not `Debug`: the secret must not reach a log.
#[derive(serde::Serialize)]
pub struct Ticket {
    pub ticket: String,
    pub expires_in_seconds: u64,
    pub read_only: bool,
}

/// Mints a ticket for `session` to open instance `id`'s serial console.
pub async fn ticket(st: &AppState, caller: &Caller, session: &ConsoleSessionId, id: &str) -> Result<Ticket> {
    let inst = instances::get(st, caller, id).await?;
    let read_only = !caller.principal.can_write_in(&inst.tenant_id, Some(&inst.project_id));
    let record = plinth_api::new_id(TICKET_ID);
    let secret = secrets::mint(TICKET_SECRET, &record);
    let now = st.store.now().timestamp_micros();
    let row = ConsoleTicketRow {
        id: record,
        secret_hash: secrets::hash(&secret),
        session_id: session.0.clone(),
        instance_id: inst.id.0,
        read_only,
        created_at: now,
        expires_at: now + TICKET_TTL.as_micros() as i64,
        used_at: None,
    };
    st.store.console_ticket_create(&row, now).await?;
    Ok(Ticket { ticket: secret, expires_in_seconds: TICKET_TTL.as_secs(), read_only })
}

/// What a redeemed ticket grants: the session's caller (for `request_id` and `action`
/// given), whether it may type, and the instance.
pub struct Redeemed {
    pub caller: Caller,
    pub read_only: bool,
    pub instance_id: InstanceId,
    /// The session the ticket was minted for: a socket lives only as long as it does.
    pub session_id: ConsoleSessionId,
}

/// Redeems `secret` for instance `id`: once, before it expires, while its session is
/// current. Audited as `instances.console.open` (target: the instance).
pub async fn redeem(st: &AppState, secret: &str, id: &str, request_id: &str) -> Result<Redeemed> {
    let invalid = || Error::unauthenticated("the console ticket is not valid; open the console again");
    let record = secrets::record_id(secret, TICKET_SECRET, TICKET_ID).ok_or_else(invalid)?;
    let now = st.store.now().timestamp_micros();
    let t = st.store.console_ticket_take(&record, now).await?.ok_or_else(invalid)?;
    if !secrets::verify(secret, &t.secret_hash) || t.instance_id != id {
        return Err(invalid());
    }
    if t.expires_at <= now {
        return Err(Error::unauthenticated("the console ticket has expired; open the console again"));
    }
    let principal = sessions::principal_of(&st.store, &t.session_id).await?;
    let caller = Caller { principal, request_id: request_id.to_string(), action: "instances.console.open".into() };
    // Still visible to the session (its roles may have changed since the ticket).
    let inst = instances::get(st, &caller, id).await?;
    let read_only = t.read_only || !caller.principal.can_write_in(&inst.tenant_id, Some(&inst.project_id));
    st.store.record_audit(&caller.audit(), Some(id), Some(inst.tenant_id.as_str()), 200, None).await?;
    Ok(Redeemed { caller, read_only, instance_id: inst.id, session_id: ConsoleSessionId(t.session_id) })
}
