//! `/v1/projects`: groups of resources inside a tenant. Tenant-admins (and operators)
//! create, change and delete them; members and viewers see them.
//! The use cases are in [`crate::app::identity::projects`].

use super::created;
use crate::app::AppState;
use crate::app::identity::projects;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List the projects the caller can see.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", operation_id = "project_list", params(PageParams, ProjectFilter),
    responses((status = 200, description = "Projects visible to the caller", body = Page<Project>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<ProjectFilter>,
) -> ApiResult<Out<Page<Project>>> {
    Ok(Out(projects::list(&st, &caller, &p, f).await?))
}

/// Create a project (tenant-admins, operators).
#[utoipa::path(post, path = "/v1/projects", tag = "projects", operation_id = "project_create", request_body = ProjectCreate,
    responses((status = 201, description = "The new project", body = Project)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<ProjectCreate>,
) -> ApiResult<Response> {
    Ok(created(projects::create(&st, &caller, b).await?))
}

/// Get a project.
#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", operation_id = "project_view",
    params(("id" = String, Path, description = "Project id")),
    responses((status = 200, description = "The project", body = Project)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<Project>> {
    Ok(Out(projects::get(&st, &caller, &id).await?))
}

/// Change a project (tenant-admins, operators).
#[utoipa::path(patch, path = "/v1/projects/{id}", tag = "projects", operation_id = "project_update",
    params(("id" = String, Path, description = "Project id")), request_body = ProjectUpdate,
    responses((status = 200, description = "The changed project", body = Project)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<ProjectUpdate>,
) -> ApiResult<Out<Project>> {
    Ok(Out(projects::update(&st, &caller, &id, if_match, b).await?))
}

/// Delete an empty project (tenant-admins, operators).
#[utoipa::path(delete, path = "/v1/projects/{id}", tag = "projects", operation_id = "project_delete",
    params(("id" = String, Path, description = "Project id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    projects::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
