//! Serial consoles: a host's agent ships each guest's console output, users read it
//! (waiting for more, to follow it).
//!
//! The store keeps the last 1 MiB per instance ([`plinth_store::CONSOLE_KEEP`]); this
//! module owns who may write (only the host the instance is placed on) and read (whoever
//! can see the instance), and wakes followers when output arrives.

use crate::app::{AppState, Caller, Error, Kind, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use std::time::Duration;

/// The most a read answers.
const MAX_WINDOW: u64 = plinth_store::CONSOLE_KEEP as u64;

/// A read's default size.
const DEFAULT_WINDOW: u64 = 64 * 1024;

/// Followers on another replica (not poked) look again this often at first.
const FOLLOW_TICK: Duration = Duration::from_millis(250);

fn console_key(id: &str) -> String {
    format!("console:{id}")
}

/// Ship console output of a guest on this host. The body holds the bytes at `offset` of
/// `stream`; an empty body asks how far the server has the stream.
pub async fn ship(st: &AppState, host_id: &HostId, id: &str, q: ConsoleChunkQuery, body: &[u8]) -> Result<ConsoleAck> {
    if q.stream.is_empty() || q.stream.len() > 64 {
        return Err(Error::invalid("invalid_value", "stream must be 1 to 64 characters")
            .with_constraint(serde_json::json!({ "field": "stream", "rule": "length", "min": 1, "max": 64 })));
    }
    let inst = match st.store.get::<Instance>(&Scope::Platform, id).await {
        Ok(i) => Some(i),
        Err(plinth_store::StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    match inst {
        Some(i) if i.host_id.as_ref() == Some(host_id) => {}
        _ => {
            return Err(Error::new(
                Kind::NotFound,
                "instance_not_on_host",
                format!("instance {id} is not placed on this host"),
            ));
        }
    }
    let acked = st.store.console_append(id, &q.stream, q.offset, q.reset, body).await?;
    if !body.is_empty() {
        st.signals.poke(&console_key(id));
    }
    Ok(ConsoleAck { stream: q.stream, acked })
}

/// An instance's serial console output. Without `offset`, the last `limit` bytes; with
/// `wait`, answers as soon as there is output past `offset` (follow with `next_offset`).
pub async fn read(st: &AppState, caller: &Caller, id: &str, q: ConsoleQuery) -> Result<ConsoleLog> {
    let limit = q.limit.unwrap_or(DEFAULT_WINDOW);
    if limit == 0 || limit > MAX_WINDOW {
        return Err(Error::invalid("invalid_value", format!("limit must be 1 to {MAX_WINDOW}"))
            .with_constraint(serde_json::json!({ "field": "limit", "rule": "range", "min": 1, "max": MAX_WINDOW })));
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let inst: Instance = st.store.get(&caller.scope(), id).await?;
    let limit = limit as usize;
    let deadline = tokio::time::Instant::now() + wait;
    let read = || async {
        let (w, end) = st.store.console_window(inst.id.as_str(), q.offset, limit).await?;
        Ok::<_, Error>(ConsoleLog {
            instance_id: inst.id.clone(),
            offset: w.offset,
            next_offset: w.offset + w.data.len() as u64,
            truncated: w.truncated,
            data: w.data,
        })
        .map(|log| (log, end))
    };
    let found = match q.offset {
        Some(_) if !wait.is_zero() => {
            st.signals
                .wait_for(&console_key(id), deadline, FOLLOW_TICK, || async {
                    let (log, _) = read().await?;
                    Ok::<_, Error>((!log.data.is_empty()).then_some(log))
                })
                .await?
        }
        _ => None,
    };
    match found {
        Some(log) => Ok(log),
        None => Ok(read().await?.0),
    }
}
