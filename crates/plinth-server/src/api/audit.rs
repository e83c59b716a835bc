//! `GET /v1/audit-log`: operators read every record; tenant-admins their tenant's.
//! The use cases are in [`crate::app::identity::audit`].

use crate::app::AppState;
use crate::app::identity::audit;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::Query;
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
    Ok(Out(audit::list(&st, &caller, &p, f).await?))
}
