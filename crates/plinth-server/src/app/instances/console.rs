//! Serial consoles: a host's agent ships each guest's console output, users read it
//! (waiting for more, to follow it) and type into it.
//!
//! The store keeps the last 1 MiB per instance ([`plinth_store::CONSOLE_KEEP`]); this
//! module owns who may write output (only the host the instance is placed on), read it
//! (whoever can see the instance) and type (whoever may act on the instance: a viewer
//! reads only), and wakes followers when output arrives and agents when input does.

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

/// The most one input holds.
const MAX_INPUT: usize = 4096;

/// The most input that may wait for one instance's host.
const MAX_WAITING: u64 = 64 * 1024;

/// Input older than this is forgotten (its host did not take it).
const INPUT_STALE: Duration = Duration::from_secs(600);

/// The most inputs one agent call answers.
const INPUT_BATCH: i64 = 256;

/// Agents on another replica (not poked) look again this often at first.
const INPUT_TICK: Duration = Duration::from_millis(250);

fn console_key(id: &str) -> String {
    format!("console:{id}")
}

fn input_key(host: &str) -> String {
    format!("console-input:{host}")
}

/// Ship console output of a guest on this host. The body holds the bytes at `offset` of
/// `stream`; an empty body asks how far the server has the stream.
pub async fn ship(st: &AppState, host_id: &HostId, id: &str, q: ConsoleChunkQuery, body: &[u8]) -> Result<ConsoleAck> {
    if q.stream.is_empty() || q.stream.len() > 64 {
        return Err(Error::invalid("invalid_value", "stream must be 1 to 64 characters")
            .with_constraint(serde_json::json!({ "field": "stream", "rule": "length", "min": 1, "max": 64 })));
    }
    match st.store.find::<Instance>(&Scope::Platform, id).await? {
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

/// Types into an instance's serial console: the input waits for the instance's host, whose
/// agent writes it to the guest in order. The instance must be running.
pub async fn input(st: &AppState, caller: &Caller, id: &str, body: ConsoleInput) -> Result<ConsoleInputAccepted> {
    if body.data.is_empty() || body.data.len() > MAX_INPUT {
        return Err(Error::invalid("invalid_value", format!("data must be 1 to {MAX_INPUT} bytes"))
            .with_constraint(serde_json::json!({ "field": "data", "rule": "length", "min": 1, "max": MAX_INPUT })));
    }
    let mut tx = st.store.begin().await?;
    let inst: Instance = tx.get(&caller.scope(), id).await?;
    if !caller.principal.can_write_in(&inst.tenant_id, Some(&inst.project_id)) {
        return Err(Error::forbidden("typing on the consoles of instances in this project"));
    }
    let host = match (&inst.host_id, inst.state) {
        (Some(h), InstanceState::Running) => h.clone(),
        _ => {
            return Err(Error::conflict(
                "instance_not_running",
                format!("instance {id} is {}: only a running instance's console takes input", inst.state.as_str()),
            )
            .with_constraint(serde_json::json!({ "rule": "instance-state", "state": inst.state.as_str() })));
        }
    };
    let stale = plinth_store::now_micros() - INPUT_STALE.as_micros() as i64;
    let Some(seq) = tx.console_input_push(inst.id.as_str(), host.as_str(), &body.data, MAX_WAITING, stale).await?
    else {
        return Err(Error::conflict(
            "console_input_full",
            format!("instance {id} already has {MAX_WAITING} bytes of console input waiting for its host; try again"),
        )
        .with_constraint(serde_json::json!({ "field": "data", "rule": "waiting", "max": MAX_WAITING })));
    };
    tx.audit(&caller.audit(), id, Some(inst.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    st.signals.poke(&input_key(host.as_str()));
    Ok(ConsoleInputAccepted { instance_id: inst.id, seq, bytes: body.data.len() as u64 })
}

/// An agent's turn: forgets what it acknowledges, then answers the input waiting for its
/// guests, waiting up to `wait` seconds for some when there is none.
pub async fn take_input(st: &AppState, host_id: &HostId, q: ConsoleInputPoll) -> Result<ConsoleInputBatch> {
    let acked: Vec<(String, i64)> = q.acked.iter().map(|a| (a.instance_id.to_string(), a.seq)).collect();
    st.store.console_input_forget(host_id.as_str(), &acked).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(60));
    let read = || async {
        let rows = st.store.console_input_waiting(host_id.as_str(), INPUT_BATCH).await?;
        Ok::<_, Error>((!rows.is_empty()).then_some(rows))
    };
    let rows = st.signals.wait_for(&input_key(host_id.as_str()), deadline, INPUT_TICK, read).await?.unwrap_or_default();
    let chunks = rows
        .into_iter()
        .map(|r| ConsoleInputChunk { instance_id: InstanceId(r.instance_id), seq: r.seq, data: r.data })
        .collect();
    Ok(ConsoleInputBatch { chunks })
}
