//! Live pages: one Server-Sent Events stream per tab (`GET /events?since=µs`), fed by the
//! store's change feed through [`AppState::live`], filtered to what the session may see.
//!
//! Each change of an instance the caller can see becomes, for htmx's SSE extension:
//! `row-<id>` (the list's row, swapped whole), `state-<id>` (the state badge of the
//! instance's page), or `instance-new` (a row to append) for an instance created after the
//! page was drawn (`since`) and not yet sent on this stream. Tenancy is decided by the same
//! use case as `GET /v1/instances/{id}`: a change of another tenant's instance is dropped
//! before any read, and one the caller cannot see fails that use case and is dropped too.
//! A tab that falls more than [`crate::app::state::LIVE_BACKLOG`] changes behind ends its
//! stream; the browser's EventSource reconnects.

use super::pages::{InstanceRow, InstanceRowPartial, StateBadge};
use super::render::Fragment;
use crate::app::signals::Live;
use crate::app::{AppState, Caller, instances};
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use std::collections::HashSet;
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

/// `?since=`: when the page was drawn (µs); instances created later are new to it.
#[derive(Deserialize, Default)]
pub struct LiveQuery {
    #[serde(default)]
    since: i64,
}

struct Tab {
    st: AppState,
    caller: Caller,
    rx: tokio::sync::broadcast::Receiver<Live>,
    since: i64,
    added: HashSet<String>,
    /// Events made from one change, sent before the next is read.
    queue: Vec<Event>,
}

impl Tab {
    /// The events for one change, or none when the caller may not see it.
    async fn events_for(&mut self, change: Live) -> Vec<Event> {
        let Live::Instance { id, tenant_id } = change;
        let p = &self.caller.principal;
        if !p.is_operator() && p.tenant_id.as_ref().map(|t| t.as_str()) != Some(tenant_id.as_str()) {
            return Vec::new();
        }
        let Ok(i) = instances::get(&self.st, &self.caller, &id).await else { return Vec::new() };
        let row = InstanceRowPartial { r: InstanceRow::of(&i), operator: p.is_operator() };
        let created = i.created_at.timestamp_micros();
        let name = if created > self.since && self.added.insert(id.clone()) {
            "instance-new".to_string()
        } else {
            format!("row-{id}")
        };
        let badge = StateBadge { id: id.clone(), state: i.state.as_str() };
        vec![
            Event::default().event(name).data(row.html()),
            Event::default().event(format!("state-{id}")).data(badge.html()),
        ]
    }
}

/// `GET /events?since=µs`: the tab's live stream.
pub async fn events(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<LiveQuery>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let tab = Tab { rx: st.live.subscribe(), st, caller, since: q.since, added: HashSet::new(), queue: Vec::new() };
    let stream = futures::stream::unfold(tab, |mut tab| async move {
        loop {
            if let Some(e) = tab.queue.pop() {
                return Some((Ok(e), tab));
            }
            match tab.rx.recv().await {
                Ok(change) => {
                    let mut events = tab.events_for(change).await;
                    events.reverse();
                    tab.queue = events;
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "a console tab fell behind the change feed; ending its stream");
                    return None;
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
