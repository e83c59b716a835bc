//! `GET /v1/audit-log`: operators read every record; tenant-admins their tenant's.

use crate::app::AppState;
use crate::context::Authed;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Paging, Query};
use axum::Json as Out;
use axum::extract::State;
use plinth_api::*;

/// List audit records, oldest first, filtered by actor, target, action and time.
#[utoipa::path(get, path = "/v1/audit-log", tag = "audit", operation_id = "audit_list", params(PageParams, AuditFilter),
    responses((status = 200, description = "Audit records visible to the caller", body = Page<AuditRecord>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<AuditFilter>,
) -> ApiResult<Out<Page<AuditRecord>>> {
    let pg = Paging::from(&p)?;
    let tenant = if caller.principal.is_operator() {
        None
    } else {
        match &caller.principal.tenant_id {
            Some(t) if caller.principal.can_admin_tenant(t) => Some(t.clone()),
            _ => return Err(ApiError::forbidden("reading the audit log")),
        }
    };
    Ok(Out(st.store.list_audit(tenant.as_ref(), &f, pg.limit, pg.cursor.as_deref()).await?))
}
