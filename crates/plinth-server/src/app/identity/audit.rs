//! The audit log: operators read every record; tenant-admins their tenant's.

use crate::app::{AppState, Caller, Error, Paging, Result};
use plinth_api::*;

/// List audit records, oldest first, filtered by actor, target, action and time.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: AuditFilter) -> Result<Page<AuditRecord>> {
    let pg = Paging::from(p)?;
    let tenant = if caller.principal.is_operator() {
        None
    } else {
        match &caller.principal.tenant_id {
            Some(t) if caller.principal.can_admin_tenant(t) => Some(t.clone()),
            _ => return Err(Error::forbidden("reading the audit log")),
        }
    };
    Ok(st.store.list_audit(tenant.as_ref(), &f, pg.limit, pg.cursor.as_deref()).await?)
}
