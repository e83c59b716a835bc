//! System: the reconcilers of this server, their last runs, running one now, and the
//! test clock.

use crate::app::reconcilers;
use crate::app::{AppState, Caller, Error, Kind, Result};
use plinth_api::*;

/// The background tasks and their last runs.
pub async fn list(st: &AppState, caller: &Caller) -> Result<Vec<BackgroundTask>> {
    caller.require_operator("reading background tasks")?;
    Ok(st.tasks.list(st.config.reconcile_period))
}

/// Run a background task now and answer with what it did.
pub async fn run(st: &AppState, caller: &Caller, name: &str) -> Result<serde_json::Value> {
    caller.require_operator("running background tasks")?;
    if !reconcilers::TASKS.iter().any(|(n, _)| *n == name) {
        return Err(Error::not_found("background task", name));
    }
    let out = reconcilers::run_once(st, name).await?;
    st.store.record_audit(&caller.audit(), Some(name), None, 200, None).await?;
    if out.is_null() {
        return Err(Error::new(Kind::NotFound, "not_found", "no such task"));
    }
    Ok(out)
}

/// Move the server's lifecycle and metering clock on (operators; only on servers started
/// with `PLINTH_TEST_CLOCK=1`, for tests and demos that cross a billing period).
pub async fn clock(st: &AppState, caller: &Caller, b: ClockAdvance) -> Result<ClockNow> {
    caller.require_operator("moving the clock")?;
    if !st.config.test_clock {
        return Err(Error::new(
            Kind::Forbidden,
            "test_clock_disabled",
            "this server keeps real time; start it with PLINTH_TEST_CLOCK=1 to move its clock",
        )
        .with_constraint(serde_json::json!({ "rule": "test-clock" })));
    }
    plinth_domain::validate::quantity("advance_seconds", b.advance_seconds, 1, 366 * 86_400)?;
    st.store.advance_clock(std::time::Duration::from_secs(b.advance_seconds));
    st.store.record_audit(&caller.audit(), Some("clock"), None, 200, None).await?;
    Ok(ClockNow { now: st.store.now() })
}
