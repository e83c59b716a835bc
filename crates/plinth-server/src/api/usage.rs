//! `/v1/usage` (the ledger, as tenants and operators read it) and `/agent/v1/counters`
//! (counter samples from agents, deduplicated by source and sequence number).
//! The use cases are in [`crate::app::billing::usage`].

use super::agent::HostCaller;
use crate::app::AppState;
use crate::app::billing::usage;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use axum::Json as Out;
use axum::extract::State;
use plinth_api::*;

/// List usage records (tenants see their own; operators all).
#[utoipa::path(get, path = "/v1/usage", tag = "billing", operation_id = "usage_list", params(UsageQuery),
    responses((status = 200, description = "Usage records in id order", body = Page<UsageRecord>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Out<Page<UsageRecord>>> {
    Ok(Out(usage::list(&st, &caller, q).await?))
}

/// Report counter samples (agents). A repeated (source, sequence) is ignored; a counter
/// lower than its last value was reset and counts from zero. A sample for a period whose
/// invoice is already finalized is billed in the current period.
#[utoipa::path(post, path = "/agent/v1/counters", tag = "agent", operation_id = "agent_counters",
    request_body = Vec<CounterSample>,
    responses((status = 200, description = "How many samples were new", body = CounterAck)))]
pub async fn counters(
    State(st): State<AppState>,
    caller: HostCaller,
    Json(samples): Json<Vec<CounterSample>>,
) -> ApiResult<Out<CounterAck>> {
    Ok(Out(usage::counters(&st, &caller.host_id, samples).await?))
}
