//! Serial consoles: agents ship each guest's console output
//! (`POST /agent/v1/instances/{id}/console`), users read it
//! (`GET /v1/instances/{id}/console`, long-polled to follow).
//!
//! The store keeps the last 1 MiB per instance ([`plinth_store::CONSOLE_KEEP`]); this
//! module owns who may write (only the host the instance is placed on) and read (whoever
//! can see the instance), and wakes followers when output arrives.

use crate::app::AppState;
use crate::context::Authed;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use axum::Json as Out;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::*;
use plinth_domain::authz::Scope;
use std::time::Duration;

use super::agent::HostCaller;

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
#[utoipa::path(post, path = "/agent/v1/instances/{id}/console", tag = "agent", operation_id = "agent_console",
    params(("id" = String, Path, description = "Instance id"), ConsoleChunkQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, description = "How far the server has the stream", body = ConsoleAck)))]
pub async fn ship(
    State(st): State<AppState>,
    caller: HostCaller,
    Path(id): Path<String>,
    Query(q): Query<ConsoleChunkQuery>,
    body: Bytes,
) -> ApiResult<Out<ConsoleAck>> {
    if q.stream.is_empty() || q.stream.len() > 64 {
        return Err(ApiError::invalid("invalid_value", "stream must be 1 to 64 characters")
            .with_constraint(serde_json::json!({ "field": "stream", "rule": "length", "min": 1, "max": 64 })));
    }
    let inst = match st.store.get::<Instance>(&Scope::Platform, &id).await {
        Ok(i) => Some(i),
        Err(plinth_store::StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    match inst {
        Some(i) if i.host_id.as_ref() == Some(&caller.host_id) => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "instance_not_on_host",
                format!("instance {id} is not placed on this host"),
            ));
        }
    }
    let acked = st.store.console_append(&id, &q.stream, q.offset, q.reset, &body).await?;
    if !body.is_empty() {
        st.signals.poke(&console_key(&id));
    }
    Ok(Out(ConsoleAck { stream: q.stream, acked }))
}

/// An instance's serial console output. Without `offset`, the last `limit` bytes; with
/// `wait`, answers as soon as there is output past `offset` (follow with `next_offset`).
#[utoipa::path(get, path = "/v1/instances/{id}/console", tag = "instances", operation_id = "instance_console",
    params(("id" = String, Path, description = "Instance id"), ConsoleQuery),
    responses((status = 200, description = "Console output", body = ConsoleLog)))]
pub async fn read(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Query(q): Query<ConsoleQuery>,
) -> ApiResult<Out<ConsoleLog>> {
    let limit = q.limit.unwrap_or(DEFAULT_WINDOW);
    if limit == 0 || limit > MAX_WINDOW {
        return Err(ApiError::invalid("invalid_value", format!("limit must be 1 to {MAX_WINDOW}"))
            .with_constraint(serde_json::json!({ "field": "limit", "rule": "range", "min": 1, "max": MAX_WINDOW })));
    }
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(60));
    let inst: Instance = st.store.get(&caller.scope(), &id).await?;
    let limit = limit as usize;
    let deadline = tokio::time::Instant::now() + wait;
    let read = || async {
        let (w, end) = st.store.console_window(inst.id.as_str(), q.offset, limit).await?;
        Ok::<_, ApiError>(ConsoleLog {
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
                .wait_for(&console_key(&id), deadline, FOLLOW_TICK, || async {
                    let (log, _) = read().await?;
                    Ok::<_, ApiError>((!log.data.is_empty()).then_some(log))
                })
                .await?
        }
        _ => None,
    };
    match found {
        Some(log) => Ok(Out(log)),
        None => Ok(Out(read().await?.0)),
    }
}
