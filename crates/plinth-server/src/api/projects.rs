//! `/v1/projects`: groups of resources inside a tenant. Tenant-admins (and operators)
//! create, change and delete them; members and viewers see them.

use super::{created, opt_labels, opt_text};
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

/// Filters of `GET /v1/projects`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectFilter {
    /// Only projects of this tenant.
    pub tenant_id: Option<String>,
    /// Only the project with this name.
    pub name: Option<String>,
}

/// List the projects the caller can see.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", operation_id = "project_list", params(PageParams, ProjectFilter),
    responses((status = 200, description = "Projects visible to the caller", body = Page<Project>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<ProjectFilter>,
) -> ApiResult<Out<Page<Project>>> {
    let pg = Paging::from(&p)?;
    let mut filters = Vec::new();
    if let Some(t) = f.tenant_id {
        filters.push(("tenant_id", t));
    }
    if let Some(n) = f.name {
        filters.push(("name", n));
    }
    Ok(Out(st.store.list::<Project>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?))
}

/// Create a project (tenant-admins, operators).
#[utoipa::path(post, path = "/v1/projects", tag = "projects", operation_id = "project_create", request_body = ProjectCreate,
    responses((status = 201, description = "The new project", body = Project)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<ProjectCreate>,
) -> ApiResult<Response> {
    let tenant_id = caller.default_tenant(b.tenant_id)?;
    let _: Tenant = st.store.get(&caller.scope(), tenant_id.as_str()).await?;
    if !caller.principal.can_write_in(&tenant_id, None) {
        return Err(ApiError::forbidden("creating projects"));
    }
    validate::dns_label("name", &b.name)?;
    opt_text("description", &b.description, 1024)?;
    validate::labels("labels", &b.labels)?;
    let now = Utc::now();
    let p = Project {
        id: ProjectId::generate(),
        tenant_id,
        name: b.name,
        description: b.description.unwrap_or_default(),
        labels: b.labels,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&p, &caller.audit()).await?;
    Ok(created(p))
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
    Ok(Out(st.store.get(&caller.scope(), &id).await?))
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
    let p: Project = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_admin_tenant(&p.tenant_id) {
        return Err(ApiError::forbidden("changing projects"));
    }
    opt_text("description", &b.description, 1024)?;
    opt_labels("labels", &b.labels)?;
    let p = st
        .store
        .update(&caller.scope(), &id, if_match, &caller.audit(), |p: &mut Project| {
            if let Some(d) = b.description {
                p.description = d;
            }
            if let Some(l) = b.labels {
                p.labels = l;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(p))
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
    let p: Project = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_admin_tenant(&p.tenant_id) {
        return Err(ApiError::forbidden("deleting projects"));
    }
    st.store.delete::<Project>(&caller.scope(), &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
