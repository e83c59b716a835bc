//! `/v1/system/background-tasks`: the reconcilers of the answering server, their last
//! runs, and running one now.

use crate::context::Caller;
use crate::error::{ApiError, ApiResult};
use crate::reconcilers;
use crate::state::AppState;
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plinth_api::*;

/// The background tasks and their last runs.
#[utoipa::path(get, path = "/v1/system/background-tasks", tag = "system", operation_id = "background_task_list",
    responses((status = 200, description = "Background tasks", body = [BackgroundTask])))]
pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<Out<Vec<BackgroundTask>>> {
    caller.require_operator("reading background tasks")?;
    Ok(Out(st.tasks.list(st.config.reconcile_period)))
}

/// Run a background task now and answer with what it did.
#[utoipa::path(post, path = "/v1/system/background-tasks/{name}/run", tag = "system", operation_id = "background_task_run",
    params(("name" = String, Path, description = "Task name")),
    responses((status = 200, description = "What the run did", body = Object)))]
pub async fn run(
    State(st): State<AppState>,
    caller: Caller,
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
