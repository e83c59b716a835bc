//! `/v1/placement-groups`: affinity, anti-affinity (hard) and spread (soft) of instances
//! over hosts or racks, checked inside the claiming transaction.

use super::created;
use crate::app::AppState;
use crate::context::Authed;
use crate::error::{ApiError, ApiResult};
use crate::extract::{IfMatch, Json, Paging, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::validate;
use serde::Deserialize;
use utoipa::IntoParams;

/// Filters of `GET /v1/placement-groups`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupFilter {
    pub project_id: Option<String>,
}

/// List placement groups.
#[utoipa::path(get, path = "/v1/placement-groups", tag = "instances", operation_id = "placement_group_list",
    params(PageParams, GroupFilter),
    responses((status = 200, description = "Placement groups", body = Page<PlacementGroup>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<GroupFilter>,
) -> ApiResult<Out<Page<PlacementGroup>>> {
    let pg = Paging::from(&p)?;
    let filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    Ok(Out(st.store.list::<PlacementGroup>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?))
}

/// Create a placement group.
#[utoipa::path(post, path = "/v1/placement-groups", tag = "instances", operation_id = "placement_group_create",
    request_body = PlacementGroupCreate,
    responses((status = 201, description = "The new group", body = PlacementGroup)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<PlacementGroupCreate>,
) -> ApiResult<Response> {
    validate::dns_label("name", &b.name)?;
    let project: Project = st.store.get(&caller.scope(), b.project_id.as_str()).await?;
    if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
        return Err(ApiError::forbidden("creating placement groups in this project"));
    }
    let now = Utc::now();
    let g = PlacementGroup {
        id: PlacementGroupId::generate(),
        tenant_id: project.tenant_id,
        project_id: project.id,
        name: b.name,
        policy: b.policy,
        scope: b.scope,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&g, &caller.audit()).await?;
    Ok(created(g))
}

/// Get a placement group.
#[utoipa::path(get, path = "/v1/placement-groups/{id}", tag = "instances", operation_id = "placement_group_view",
    params(("id" = String, Path, description = "Placement group id")),
    responses((status = 200, description = "The group", body = PlacementGroup)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<PlacementGroup>> {
    Ok(Out(st.store.get(&caller.scope(), &id).await?))
}

/// Delete a placement group that no instance refers to.
#[utoipa::path(delete, path = "/v1/placement-groups/{id}", tag = "instances", operation_id = "placement_group_delete",
    params(("id" = String, Path, description = "Placement group id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    let g: PlacementGroup = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_write_in(&g.tenant_id, Some(&g.project_id)) {
        return Err(ApiError::forbidden("deleting placement groups in this project"));
    }
    st.store.delete::<PlacementGroup>(&caller.scope(), &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
