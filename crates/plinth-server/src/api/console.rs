//! Serial consoles: agents ship each guest's console output
//! (`POST /agent/v1/instances/{id}/console`), users read it
//! (`GET /v1/instances/{id}/console`, long-polled to follow).
//!
//! The store keeps the last 1 MiB per instance ([`plinth_store::CONSOLE_KEEP`]); this
//! module owns who may write (only the host the instance is placed on) and read (whoever
//! can see the instance), and wakes followers when output arrives.
//! The use cases are in [`crate::app::instances::console`].

use super::agent::HostCaller;
use crate::app::AppState;
use crate::app::instances::console;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::Query;
use axum::Json as Out;
use axum::body::Bytes;
use axum::extract::{Path, State};
use plinth_api::*;

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
    Ok(Out(console::ship(&st, &caller.host_id, &id, q, &body).await?))
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
    Ok(Out(console::read(&st, &caller, &id, q).await?))
}
