//! The operator's fleet pages: a host (its facts, its instances, its actions: cordon,
//! uncordon, drain) with the progress of its latest operation, item by item, and an abort;
//! and the audit log (filtered, and as CSV). Each action is its API twin's use case
//! (`POST /v1/hosts/{id}/{verb}`, `POST /v1/operations/{id}/cancel`). An operation's
//! progress is a fragment the page polls each second until the operation is final (htmx
//! stops on status 286).

use super::pages::{InstanceRow, when};
use super::render::{self, Equivalent, Layout, Page};
use crate::app::hosts::ops;
use crate::app::identity::audit;
use crate::app::{AppState, Caller, instances, operations};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use plinth_api::*;
use serde::Deserialize;

/// The progress of one operation, drawn alone (the host page polls it).
#[derive(Template)]
#[template(path = "console/operation.html")]
pub struct OperationPart {
    pub id: String,
    pub kind: String,
    pub status: &'static str,
    pub done: u32,
    pub total: u32,
    pub message: String,
    pub items: Vec<OperationItem>,
    pub running: bool,
}

impl OperationPart {
    fn of(o: &Operation) -> OperationPart {
        OperationPart {
            id: o.id.0.clone(),
            kind: o.kind.clone(),
            status: o.status.as_str(),
            done: o.done,
            total: o.total,
            message: o.message.clone(),
            items: o.items.clone(),
            running: !o.status.is_final(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/host.html")]
struct HostPage {
    layout: Layout,
    h: Host,
    state: &'static str,
    health: &'static str,
    kvm: String,
    last_seen: String,
    instances: Vec<InstanceRow>,
    operator: bool,
    operation: Option<OperationPart>,
    actions: Vec<(&'static str, &'static str, Equivalent)>,
}

/// `?op=`: the operation an action started.
#[derive(Deserialize, Default)]
pub struct Started {
    op: Option<String>,
}

/// `GET /hosts/{id}` (operators).
pub async fn host_detail(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<Started>,
) -> Response {
    let h = match crate::app::hosts::get(&st, &caller, &id).await {
        Ok(h) => h,
        Err(e) => return render::app_error(e),
    };
    let filter = InstanceFilter { host_id: Some(h.id.clone()), ..Default::default() };
    let on = match instances::list(&st, &caller, &PageParams::default(), filter).await {
        Ok(p) => p.items,
        Err(e) => return render::app_error(e),
    };
    // The operation named after an action, else the host's latest.
    let latest = match q.op.as_deref().filter(|o| OperationId::parse(o).is_some()) {
        Some(op) => operations::get(&st, &caller, op, OperationWait::default()).await.ok(),
        None => {
            let f = OperationFilter { target: Some(h.id.0.clone()), ..Default::default() };
            let all = PageParams { limit: Some(MAX_LIMIT), cursor: None };
            operations::list(&st, &caller, &all, f).await.ok().and_then(|p| p.items.into_iter().last())
        }
    };
    let kvm = match &h.inventory.virtualization.kvm {
        Kvm::Usable => "usable".to_string(),
        Kvm::Unusable { reason } => format!("unusable: {reason}"),
        Kvm::Absent => "absent".to_string(),
    };
    let actions = HOST_ACTIONS
        .iter()
        .map(|(verb, label)| {
            let eq = Equivalent::new(
                &format!("host {verb} {}", h.name),
                "POST",
                &format!("/v1/hosts/{}/{verb}", h.id),
                None,
            );
            (*verb, *label, eq)
        })
        .collect();
    let page = HostPage {
        layout: Layout::of(&st, &caller, format!("Host {}", h.name)).await,
        state: h.state.as_str(),
        health: h.health.as_str(),
        kvm,
        last_seen: h.last_seen_at.as_ref().map(when).unwrap_or_else(|| "never".into()),
        instances: on.iter().map(InstanceRow::of).collect(),
        operator: true,
        operation: latest.as_ref().map(OperationPart::of),
        actions,
        h,
    };
    Page(page).into_response()
}

/// The host page's buttons: (verb, label).
const HOST_ACTIONS: [(&str, &str); 3] = [("cordon", "Cordon"), ("uncordon", "Uncordon"), ("drain", "Drain")];

/// After a host action: back to the host's page, following the operation it started.
fn acted(done: crate::app::Result<HostAction>) -> Response {
    match done {
        Ok(a) => {
            let op = a.operation.map(|o| format!("?op={}", o.id)).unwrap_or_default();
            Redirect::to(&format!("/hosts/{}{op}", a.host.id)).into_response()
        }
        Err(e) => render::app_error(e),
    }
}

/// `POST /hosts/{id}/cordon`: `POST /v1/hosts/{id}/cordon`'s use case.
pub async fn host_cordon(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    acted(ops::cordon(&st, &c, &id).await)
}

/// `POST /hosts/{id}/uncordon`: `POST /v1/hosts/{id}/uncordon`'s use case.
pub async fn host_uncordon(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    acted(ops::uncordon(&st, &c, &id).await)
}

/// `POST /hosts/{id}/drain`: `POST /v1/hosts/{id}/drain`'s use case.
pub async fn host_drain(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    acted(ops::drain(&st, &c, &id).await)
}

/// `GET /operations/{id}/progress`: the progress fragment; 286 (htmx: stop polling) once
/// the operation is final.
pub async fn operation_progress(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match operations::get(&st, &caller, &id, OperationWait::default()).await {
        Ok(o) => {
            let part = OperationPart::of(&o);
            let status =
                if part.running { StatusCode::OK } else { StatusCode::from_u16(286).unwrap_or(StatusCode::OK) };
            (status, Page(part)).into_response()
        }
        Err(e) => render::app_error(e),
    }
}

/// `POST /operations/{id}/cancel`: `POST /v1/operations/{id}/cancel`'s use case (a
/// drain's abort); back to where the operation's target is shown.
pub async fn operation_cancel(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    match operations::cancel(&st, &caller, &id).await {
        Ok(o) if o.target.starts_with("hst_") => {
            Redirect::to(&format!("/hosts/{}?op={}", o.target, o.id)).into_response()
        }
        Ok(o) => Redirect::to(&format!("/instances/{}?op={}", o.target, o.id)).into_response(),
        Err(e) => render::app_error(e),
    }
}

/// One audit record as shown.
pub struct AuditRow {
    pub when: String,
    pub action: String,
    pub target: String,
    pub actor: String,
    pub tenant: String,
    pub status: u16,
    pub result: String,
    pub request: String,
}

impl AuditRow {
    /// The row of `a`.
    pub fn of(a: &AuditRecord) -> AuditRow {
        AuditRow {
            when: when(&a.time),
            action: a.action.clone(),
            target: a.target.clone().unwrap_or_default(),
            actor: a.actor_user_id.as_ref().map(|u| u.0.clone()).unwrap_or_default(),
            tenant: a.tenant_id.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
            status: a.status,
            result: a.error_code.clone().unwrap_or_else(|| a.result.clone()),
            request: a.request_id.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    layout: Layout,
    rows: Vec<AuditRow>,
    filter: AuditFilter,
    query: String,
    equivalent: Equivalent,
}

/// The filter as a query string (for the CSV link and the equivalents).
fn query_of(f: &AuditFilter) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("action", &f.action), ("target", &f.target), ("actor", &f.actor)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", super::session::urlencode(v)));
        }
    }
    parts.join("&")
}

/// Drops empty fields (an empty text box means no filter).
fn cleaned(mut f: AuditFilter) -> AuditFilter {
    for v in [&mut f.action, &mut f.target, &mut f.actor] {
        if v.as_ref().is_some_and(|s| s.is_empty()) {
            *v = None;
        }
    }
    f
}

/// `GET /audit?action=&target=&actor=`: the audit records the caller may read, newest
/// first (tenants: their tenant's; operators: all).
pub async fn audit_log(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(f): Query<AuditFilter>,
) -> Response {
    let f = cleaned(f);
    let all = PageParams { limit: Some(MAX_LIMIT), cursor: None };
    let page = match audit::list(&st, &caller, &all, f.clone()).await {
        Ok(p) => p,
        Err(e) => return render::app_error(e),
    };
    let query = query_of(&f);
    let path = if query.is_empty() { "/v1/audit-log".to_string() } else { format!("/v1/audit-log?{query}") };
    let page = AuditPage {
        layout: Layout::of(&st, &caller, "Audit log").await,
        rows: page.items.iter().rev().map(AuditRow::of).collect(),
        equivalent: Equivalent::new("audit list", "GET", &path, None),
        filter: f,
        query,
    };
    Page(page).into_response()
}

/// `GET /audit/csv?…`: the same records as CSV.
pub async fn audit_csv(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(f): Query<AuditFilter>,
) -> Response {
    let all = PageParams { limit: Some(MAX_LIMIT), cursor: None };
    match audit::list(&st, &caller, &all, cleaned(f)).await {
        Ok(p) => {
            let header_row =
                ["time", "action", "target", "actor_user_id", "tenant_id", "status", "result", "request_id"];
            let rows: Vec<Vec<String>> = p
                .items
                .iter()
                .map(|a| {
                    let r = AuditRow::of(a);
                    vec![
                        a.time.to_rfc3339(),
                        r.action,
                        r.target,
                        r.actor,
                        r.tenant,
                        r.status.to_string(),
                        r.result,
                        r.request,
                    ]
                })
                .collect();
            let body = plinth_domain::rating::to_csv(&header_row, &rows);
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"audit.csv\""),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => render::app_error(e),
    }
}
