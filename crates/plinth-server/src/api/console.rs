//! Serial consoles: agents ship each guest's console output
//! (`POST /agent/v1/instances/{id}/console`), users read it
//! (`GET /v1/instances/{id}/console`, long-polled to follow) and type into it
//! (`POST /v1/instances/{id}/console/input`), which agents take
//! (`POST /agent/v1/console-input`, long-polled) and write to the guest.
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
use crate::extract::{Json, Query};
use axum::Json as Out;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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

/// Type into an instance's serial console. The input waits for the instance's host, whose
/// agent writes it to the guest in order; the instance must be running. A viewer may read
/// the console but not type.
#[utoipa::path(post, path = "/v1/instances/{id}/console/input", tag = "instances", operation_id = "instance_console_input",
    params(("id" = String, Path, description = "Instance id")),
    request_body = ConsoleInput,
    responses((status = 202, description = "Accepted: on its way to the guest", body = ConsoleInputAccepted)))]
pub async fn input(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Json(body): Json<ConsoleInput>,
) -> ApiResult<(StatusCode, Out<ConsoleInputAccepted>)> {
    Ok((StatusCode::ACCEPTED, Out(console::input(&st, &caller, &id, body).await?)))
}

/// The console input waiting for this host's guests (long-polled). The body acknowledges
/// what the agent wrote since its last call; the server forgets it.
#[utoipa::path(post, path = "/agent/v1/console-input", tag = "agent", operation_id = "agent_console_input",
    request_body = ConsoleInputPoll,
    responses((status = 200, description = "Input waiting, in order per instance", body = ConsoleInputBatch)))]
pub async fn take_input(
    State(st): State<AppState>,
    caller: HostCaller,
    Json(q): Json<ConsoleInputPoll>,
) -> ApiResult<Out<ConsoleInputBatch>> {
    Ok(Out(console::take_input(&st, &caller.host_id, q).await?))
}
