//! Operations: long-running actions. Reading one may wait until it is final (or the wait
//! passes); cancelling asks a cancellable one (a drain) to stop at its next safe point.

use crate::app::signals;
use crate::app::{AppState, Caller, Error, Kind, Paging, Result};
use plinth_api::*;
use serde_json::json;
use std::time::Duration;

/// Parses `30s`, `500ms` or `30` (seconds), at most 60 s.
pub fn parse_wait(s: &str) -> Result<Duration> {
    let s = s.trim();
    let d = if let Some(ms) = s.strip_suffix("ms") {
        ms.parse::<u64>().ok().map(Duration::from_millis)
    } else {
        s.strip_suffix('s').unwrap_or(s).parse::<u64>().ok().map(Duration::from_secs)
    };
    match d {
        Some(d) if d <= Duration::from_secs(60) => Ok(d),
        _ => Err(Error::new(Kind::Malformed, "invalid_wait", "wait must be like 30s or 500ms, at most 60s")
            .with_constraint(json!({ "field": "wait", "max_seconds": 60 }))),
    }
}

/// List operations visible to the caller, newest last.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: OperationFilter) -> Result<Page<Operation>> {
    let pg = Paging::from(p)?;
    let mut filters = Vec::new();
    if let Some(t) = f.target {
        filters.push(("target", t));
    }
    if let Some(s) = f.status {
        filters.push(("status", s.as_str().to_string()));
    }
    if let Some(k) = f.kind {
        filters.push(("kind", k));
    }
    Ok(st.store.list::<Operation>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get an operation; with `?wait=30s`, answer as soon as it is final (or when the wait ends).
pub async fn get(st: &AppState, caller: &Caller, id: &str, w: OperationWait) -> Result<Operation> {
    let wait = match &w.wait {
        Some(s) => parse_wait(s)?,
        None => Duration::ZERO,
    };
    let scope = caller.scope();
    let deadline = tokio::time::Instant::now() + wait;
    let key = signals::operation_key(id);
    let found = st
        .signals
        .wait_for(&key, deadline, signals::MAX_POLL, || async {
            let op: Operation = st.store.get(&scope, id).await?;
            Ok::<_, Error>(op.status.is_final().then_some(op))
        })
        .await?;
    match found {
        Some(op) => Ok(op),
        None => Ok(st.store.get(&scope, id).await?),
    }
}

/// Asks a running operation to stop (drains stop between instances; others refuse).
pub async fn cancel(st: &AppState, caller: &Caller, id: &str) -> Result<Operation> {
    let op: Operation = st.store.get(&caller.scope(), id).await?;
    if op.kind != "host.drain" {
        return Err(Error::new(
            Kind::Conflict,
            "not_cancellable",
            format!("{} operations run to completion or unwind on failure; only drains can be aborted", op.kind),
        )
        .with_constraint(json!({ "rule": "cancellable-kinds", "kinds": ["host.drain"] })));
    }
    caller.require_operator("aborting drains")?;
    if !op.status.is_final() {
        st.store.request_cancel(id).await?;
        st.store.record_audit(&caller.audit(), Some(id), None, 202, None).await?;
    }
    Ok(st.store.get(&caller.scope(), id).await?)
}
