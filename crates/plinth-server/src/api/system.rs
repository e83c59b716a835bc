//! `/v1/system/background-tasks`: the reconcilers of the answering server, their last
//! runs, and running one now.
//! The use cases are in [`crate::app::system`].

use crate::app::AppState;
use crate::app::system;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::Json;
use axum::Json as Out;
use axum::extract::{Path, State};
use plinth_api::*;

/// The background tasks and their last runs.
#[utoipa::path(get, path = "/v1/system/background-tasks", tag = "system", operation_id = "background_task_list",
    responses((status = 200, description = "Background tasks", body = [BackgroundTask])))]
pub async fn list(State(st): State<AppState>, Authed(caller): Authed) -> ApiResult<Out<Vec<BackgroundTask>>> {
    Ok(Out(system::list(&st, &caller).await?))
}

/// Run a background task now and answer with what it did.
#[utoipa::path(post, path = "/v1/system/background-tasks/{name}/run", tag = "system", operation_id = "background_task_run",
    params(("name" = String, Path, description = "Task name")),
    responses((status = 200, description = "What the run did", body = Object)))]
pub async fn run(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(name): Path<String>,
) -> ApiResult<Out<serde_json::Value>> {
    Ok(Out(system::run(&st, &caller, &name).await?))
}

/// Move the server's lifecycle and metering clock on (operators; only on servers started
/// with `PLINTH_TEST_CLOCK=1`, for tests and demos that cross a billing period).
#[utoipa::path(post, path = "/v1/system/clock", tag = "system", operation_id = "system_clock_advance",
    request_body = ClockAdvance, responses((status = 200, description = "The clock after the move", body = ClockNow)))]
pub async fn clock(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<ClockAdvance>,
) -> ApiResult<Out<ClockNow>> {
    Ok(Out(system::clock(&st, &caller, b).await?))
}
