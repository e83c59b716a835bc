//! Operator views of placement: `GET /v1/capacity` (per site and rack, how many more of
//! each shape fit now) and `GET /v1/hosts/{id}/allocations` (what a host holds, for whom,
//! down to pinned CPUs, hugepages and GPUs).
//! The use cases are in [`crate::app::hosts::capacity`].

use crate::app::AppState;
use crate::app::hosts::capacity;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::Query;
use axum::Json as Out;
use axum::extract::{Path, State};
use plinth_api::*;

/// How many more of each shape fit, per site and rack (shared hosts, no group rules).
#[utoipa::path(get, path = "/v1/capacity", tag = "inventory", operation_id = "capacity_summary",
    responses((status = 200, description = "Capacity by shape, site and rack", body = CapacitySummary)))]
pub async fn summary(State(st): State<AppState>, Authed(caller): Authed) -> ApiResult<Out<CapacitySummary>> {
    Ok(Out(capacity::summary(&st, &caller).await?))
}

/// What a host holds.
#[utoipa::path(get, path = "/v1/hosts/{id}/allocations", tag = "inventory", operation_id = "host_allocations",
    params(("id" = String, Path, description = "Host id"), PageParams),
    responses((status = 200, description = "Allocations on the host", body = Page<Allocation>)))]
pub async fn host_allocations(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<Allocation>>> {
    Ok(Out(capacity::host_allocations(&st, &caller, &id, &p).await?))
}
