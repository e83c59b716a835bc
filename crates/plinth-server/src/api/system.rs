//! `/v1/system/background-tasks`: the reconcilers of the answering server, their last
//! runs, and running one now.

use crate::app::AppState;
use crate::app::reconcilers;
use crate::context::Authed;
use crate::error::{ApiError, ApiResult};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::*;

/// The background tasks and their last runs.
#[utoipa::path(get, path = "/v1/system/background-tasks", tag = "system", operation_id = "background_task_list",
    responses((status = 200, description = "Background tasks", body = [BackgroundTask])))]
pub async fn list(State(st): State<AppState>, Authed(caller): Authed) -> ApiResult<Out<Vec<BackgroundTask>>> {
    caller.require_operator("reading background tasks")?;
    Ok(Out(st.tasks.list(st.config.reconcile_period)))
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
    caller.require_operator("running background tasks")?;
    if !reconcilers::TASKS.iter().any(|(n, _)| *n == name) {
        return Err(ApiError::not_found("background task", &name));
    }
    let out = reconcilers::run_once(&st, &name).await?;
    st.store.record_audit(&caller.audit(), Some(&name), None, 200, None).await?;
    if out.is_null() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such task"));
    }
    Ok(Out(out))
}

/// Body of `POST /v1/system/clock`.
#[derive(serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct ClockAdvance {
    /// Seconds to move the clock on by (1 to 366 days' worth).
    pub advance_seconds: u64,
}

/// The server's clock as lifecycle and metering see it.
#[derive(serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct ClockNow {
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Move the server's lifecycle and metering clock on (operators; only on servers started
/// with `PLINTH_TEST_CLOCK=1`, for tests and demos that cross a billing period).
#[utoipa::path(post, path = "/v1/system/clock", tag = "system", operation_id = "system_clock_advance",
    request_body = ClockAdvance, responses((status = 200, description = "The clock after the move", body = ClockNow)))]
pub async fn clock(
    State(st): State<AppState>,
    Authed(caller): Authed,
    crate::extract::Json(b): crate::extract::Json<ClockAdvance>,
) -> ApiResult<Out<ClockNow>> {
    caller.require_operator("moving the clock")?;
    if !st.config.test_clock {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "test_clock_disabled",
            "this server keeps real time; start it with PLINTH_TEST_CLOCK=1 to move its clock",
        )
        .with_constraint(serde_json::json!({ "rule": "test-clock" })));
    }
    plinth_domain::validate::quantity("advance_seconds", b.advance_seconds, 1, 366 * 86_400)?;
    st.store.advance_clock(std::time::Duration::from_secs(b.advance_seconds));
    st.store.record_audit(&caller.audit(), Some("clock"), None, 200, None).await?;
    Ok(Out(ClockNow { now: st.store.now() }))
}
