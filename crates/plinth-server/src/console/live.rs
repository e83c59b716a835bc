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
//! stream; the browser's EventSource reconnects. A stream whose session ended (logout, a
//! revoked token) ends at the next change after at most [`SESSION_CHECK`].

use super::pages::{InstanceRow, InstanceRowPartial, StateBadge};
use super::render::Fragment;
use super::session::Session;
use crate::app::identity::sessions;
use crate::app::signals::Live;
use crate::app::{AppState, Caller, instances};
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use plinth_api::ConsoleSessionId;
use serde::Deserialize;
use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often a tab's stream checks its session is still current (logout or a revoked
/// token ends the stream within this long of the next change).
const SESSION_CHECK: Duration = Duration::from_secs(10);

/// `?since=`: when the page was drawn (µs); instances created later are new to it.
#[derive(Deserialize, Default)]
pub struct LiveQuery {
    #[serde(default)]
    since: i64,
}

struct Tab {
    st: AppState,
    caller: Caller,
    /// The tab's session, checked again every [`SESSION_CHECK`] before anything is sent.
    session: ConsoleSessionId,
    checked: tokio::time::Instant,
    rx: tokio::sync::broadcast::Receiver<Live>,
    since: i64,
    added: HashSet<String>,
    /// Events made from one change, sent before the next is read.
    queue: Vec<Event>,
}

impl Tab {
    /// Whether the tab's session is still current (checked at most every
    /// [`SESSION_CHECK`]; the caller's roles are refreshed with it).
    async fn still_current(&mut self) -> bool {
        if self.checked.elapsed() < SESSION_CHECK {
            return true;
        }
        match sessions::principal_of(&self.st.store, self.session.as_str()).await {
            Ok(p) => {
                self.caller.principal = p;
                self.checked = tokio::time::Instant::now();
                true
            }
            Err(_) => false,
        }
    }

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
    Extension(Session(session)): Extension<Session>,
    Query(q): Query<LiveQuery>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let tab = Tab {
        rx: st.live.subscribe(),
        st,
        caller,
        session,
        checked: tokio::time::Instant::now(),
        since: q.since,
        added: HashSet::new(),
        queue: Vec::new(),
    };
    let stream = futures::stream::unfold(tab, |mut tab| async move {
        loop {
            if let Some(e) = tab.queue.pop() {
                return Some((Ok(e), tab));
            }
            match tab.rx.recv().await {
                Ok(change) => {
                    if !tab.still_current().await {
                        return None;
                    }
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
