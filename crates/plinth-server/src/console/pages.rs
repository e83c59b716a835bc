//! The console's pages over the same use cases as `/v1`: the instance list and an
//! instance's detail (overview, actions, events, serial console history) for everyone who
//! may see instances, and the host list for operators. An action here (start, stop,
//! reboot) is its API twin's use case, so it writes the same operation and audit record.

use super::render::{self, Equivalent, Layout, Page};
use crate::app::{AppState, Caller, instances};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use plinth_api::*;
use serde::Deserialize;

/// A time as the console shows it (UTC, to the second).
pub fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One row of the instance list.
pub struct InstanceRow {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub shape: String,
    pub project: String,
    pub host: String,
    pub created: String,
}

impl InstanceRow {
    /// The row of `i`.
    pub fn of(i: &Instance) -> InstanceRow {
        InstanceRow {
            id: i.id.0.clone(),
            name: i.name.clone(),
            state: i.state.as_str(),
            shape: i.shape_name.clone(),
            project: i.project_id.0.clone(),
            host: i.host_id.as_ref().map(|h| h.0.clone()).unwrap_or_default(),
            created: when(&i.created_at),
        }
    }
}

/// One row drawn alone (a live update of the list).
#[derive(Template)]
#[template(path = "console/instance_row.html")]
pub struct InstanceRowPartial {
    pub r: InstanceRow,
    /// Operators see the host column.
    pub operator: bool,
}

/// An instance's state badge drawn alone (a live update of its page).
#[derive(Template)]
#[template(path = "console/state_badge.html")]
pub struct StateBadge {
    pub id: String,
    pub state: &'static str,
}

#[derive(Template)]
#[template(path = "console/instances.html")]
struct InstancesPage {
    layout: Layout,
    rows: Vec<InstanceRow>,
    operator: bool,
    /// The next page's link (`?cursor=`), when there is one.
    next: Option<String>,
    /// When the page was drawn (µs): instances created later are new to it.
    since: i64,
    equivalent: Equivalent,
}

/// `GET /instances`: the instances the caller may see.
pub async fn instance_list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<PageParams>,
) -> Response {
    let before = plinth_store::now_micros();
    let page = match instances::list(&st, &caller, &p, InstanceFilter::default()).await {
        Ok(page) => page,
        Err(e) => return render::app_error(e),
    };
    // Instances created after the listed ones are new to this page (see `live`).
    let since = page.items.iter().map(|i| i.created_at.timestamp_micros()).max().unwrap_or(0).max(before);
    let rows = page.items.iter().map(InstanceRow::of).collect();
    let equivalent = Equivalent::new("instance list", "GET", "/v1/instances", None);
    let layout = Layout::of(&st, &caller, "Instances").await;
    let operator = layout.operator;
    let next = page.next_cursor.as_deref().map(|c| format!("/instances?cursor={}", super::session::urlencode(c)));
    Page(InstancesPage { layout, rows, operator, next, since, equivalent }).into_response()
}

/// One event of an instance's history.
pub struct EventRow {
    pub when: String,
    pub kind: String,
    pub state: &'static str,
    pub detail: String,
    pub operation: String,
}

/// A button of the instance page and the command it stands for.
pub struct Action {
    pub verb: &'static str,
    pub label: &'static str,
    pub equivalent: Equivalent,
}

#[derive(Template)]
#[template(path = "console/instance.html")]
struct InstancePage {
    layout: Layout,
    i: Instance,
    /// The instance's id and state, for its live badge.
    id: String,
    state: &'static str,
    /// When the page was drawn (µs), for the live stream.
    since: i64,
    created: String,
    actions: Vec<Action>,
    accepted: Option<String>,
    events: Vec<EventRow>,
    console: String,
    console_truncated: bool,
    equivalent: Equivalent,
    console_equivalent: Equivalent,
}

/// `?op=` after an action: the operation it started, shown once.
#[derive(Deserialize, Default)]
pub struct Accepted {
    op: Option<String>,
}

/// `GET /instances/{id}`: an instance's overview, actions, events and console history.
pub async fn instance_detail(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(q): Query<Accepted>,
) -> Response {
    let i = match instances::get(&st, &caller, &id).await {
        Ok(i) => i,
        Err(e) => return render::app_error(e),
    };
    let events = match instances::events(&st, &caller, &id, &PageParams::default()).await {
        Ok(page) => page.items,
        Err(e) => return render::app_error(e),
    };
    let query = ConsoleQuery { offset: None, limit: Some(64 * 1024), wait: None };
    let console = match instances::console::read(&st, &caller, &id, query).await {
        Ok(log) => log,
        Err(e) => return render::app_error(e),
    };
    let actions = ACTIONS
        .iter()
        .map(|(verb, label)| Action {
            verb,
            label,
            equivalent: Equivalent::new(
                &format!("instance {verb} {}", i.name),
                "POST",
                &format!("/v1/instances/{}/{verb}", i.id),
                None,
            ),
        })
        .collect();
    let events = events
        .iter()
        .rev()
        .map(|e| EventRow {
            when: when(&e.created_at),
            kind: e.kind.clone(),
            state: e.state.map(|s| s.as_str()).unwrap_or(""),
            detail: e.detail.clone(),
            operation: e.operation_id.as_ref().map(|o| o.0.clone()).unwrap_or_default(),
        })
        .collect();
    let accepted = q.op.filter(|op| OperationId::parse(op).is_some());
    let page = InstancePage {
        layout: Layout::of(&st, &caller, format!("Instance {}", i.name)).await,
        id: i.id.0.clone(),
        state: i.state.as_str(),
        since: plinth_store::now_micros(),
        created: when(&i.created_at),
        actions,
        accepted,
        events,
        console: console.data,
        console_truncated: console.offset > 0,
        equivalent: Equivalent::new(
            &format!("instance show {}", i.name),
            "GET",
            &format!("/v1/instances/{}", i.id),
            None,
        ),
        console_equivalent: Equivalent::new(
            &format!("instance console-log {}", i.name),
            "GET",
            &format!("/v1/instances/{}/console", i.id),
            None,
        ),
        i,
    };
    let mut resp = Page(page).into_response();
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_SECURITY_POLICY, axum::http::HeaderValue::from_static(super::CSP_TERMINAL));
    resp
}

/// The instance page's buttons: (verb, label).
const ACTIONS: [(&str, &str); 3] = [("start", "Start"), ("stop", "Stop"), ("reboot", "Reboot")];

/// After an action: back to the instance's page, which names the operation started.
fn accepted(done: crate::app::Result<InstanceAccepted>) -> Response {
    match done {
        Ok(a) => Redirect::to(&format!("/instances/{}?op={}", a.instance.id, a.operation.id)).into_response(),
        Err(e) => render::app_error(e),
    }
}

/// `POST /instances/{id}/start`: `POST /v1/instances/{id}/start`'s use case.
pub async fn instance_start(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    accepted(instances::start(&st, &c, &id).await)
}

/// `POST /instances/{id}/stop`: `POST /v1/instances/{id}/stop`'s use case.
pub async fn instance_stop(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    accepted(instances::stop(&st, &c, &id).await)
}

/// `POST /instances/{id}/reboot`: `POST /v1/instances/{id}/reboot`'s use case.
pub async fn instance_reboot(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    accepted(instances::reboot(&st, &c, &id).await)
}

/// One row of the host list.
pub struct HostRow {
    pub id: String,
    pub name: String,
    pub state: &'static str,
    pub health: &'static str,
    pub rack: String,
    pub last_seen: String,
}

#[derive(Template)]
#[template(path = "console/hosts.html")]
struct HostsPage {
    layout: Layout,
    rows: Vec<HostRow>,
    /// The next page's link (`?cursor=`), when there is one.
    next: Option<String>,
    equivalent: Equivalent,
}

/// `GET /hosts` (operators): the fleet's hosts.
pub async fn host_list(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(p): Query<PageParams>,
) -> Response {
    let page = match crate::app::hosts::list(&st, &caller, &p, HostFilter::default()).await {
        Ok(page) => page,
        Err(e) => return render::app_error(e),
    };
    let rows = page
        .items
        .iter()
        .map(|h| HostRow {
            id: h.id.0.clone(),
            name: h.name.clone(),
            state: h.state.as_str(),
            health: h.health.as_str(),
            rack: h.rack_id.as_ref().map(|r| r.0.clone()).unwrap_or_default(),
            last_seen: h.last_seen_at.as_ref().map(when).unwrap_or_else(|| "never".into()),
        })
        .collect();
    let equivalent = Equivalent::new("host list", "GET", "/v1/hosts", None);
    let layout = Layout::of(&st, &caller, "Hosts").await;
    let next = page.next_cursor.as_deref().map(|c| format!("/hosts?cursor={}", super::session::urlencode(c)));
    Page(HostsPage { layout, rows, next, equivalent }).into_response()
}
