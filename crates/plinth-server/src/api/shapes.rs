//! `/v1/shapes`: the sizes tenants consume. Operators define them; everyone reads them.

use super::{created, opt_text};
use crate::app::AppState;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Paging, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;

/// Filters of `GET /v1/shapes`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShapeFilter {
    /// Only the shape with this name.
    pub name: Option<String>,
}

/// List shapes.
#[utoipa::path(get, path = "/v1/shapes", tag = "shapes", operation_id = "shape_list", params(PageParams, ShapeFilter),
    responses((status = 200, description = "Shapes", body = Page<Shape>)))]
pub async fn list(
    State(st): State<AppState>,
    _caller: Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<ShapeFilter>,
) -> ApiResult<Out<Page<Shape>>> {
    let pg = Paging::from(&p)?;
    let filters: Vec<(&str, String)> = f.name.into_iter().map(|n| ("name", n)).collect();
    Ok(Out(st.store.list::<Shape>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?))
}

/// Define a shape (operators).
#[utoipa::path(post, path = "/v1/shapes", tag = "shapes", operation_id = "shape_create", request_body = ShapeCreate,
    responses((status = 201, description = "The new shape", body = Shape)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<ShapeCreate>,
) -> ApiResult<Response> {
    caller.require_operator("defining shapes")?;
    validate::shape(&b)?;
    let now = Utc::now();
    let s = Shape {
        id: ShapeId::generate(),
        name: b.name,
        description: b.description.unwrap_or_default(),
        vcpus: b.vcpus,
        memory_mib: b.memory_mib,
        disk_gib: b.disk_gib,
        gpu: b.gpu,
        cpu_policy: b.cpu_policy,
        hugepages: b.hugepages,
        runtime_class: b.runtime_class,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&s, &caller.audit()).await?;
    Ok(created(s))
}

/// Get a shape.
#[utoipa::path(get, path = "/v1/shapes/{id}", tag = "shapes", operation_id = "shape_view",
    params(("id" = String, Path, description = "Shape id")),
    responses((status = 200, description = "The shape", body = Shape)))]
pub async fn get(State(st): State<AppState>, _caller: Authed, Path(id): Path<String>) -> ApiResult<Out<Shape>> {
    Ok(Out(st.store.get(&Scope::Platform, &id).await?))
}

/// Change a shape's description (sizes are immutable: define a new shape).
#[utoipa::path(patch, path = "/v1/shapes/{id}", tag = "shapes", operation_id = "shape_update",
    params(("id" = String, Path, description = "Shape id")), request_body = ShapeUpdate,
    responses((status = 200, description = "The changed shape", body = Shape)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<ShapeUpdate>,
) -> ApiResult<Out<Shape>> {
    caller.require_operator("defining shapes")?;
    opt_text("description", &b.description, 1024)?;
    let s = st
        .store
        .update(&Scope::Platform, &id, if_match, &caller.audit(), |s: &mut Shape| {
            if let Some(d) = b.description {
                s.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(s))
}

/// Delete a shape.
#[utoipa::path(delete, path = "/v1/shapes/{id}", tag = "shapes", operation_id = "shape_delete",
    params(("id" = String, Path, description = "Shape id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    caller.require_operator("defining shapes")?;
    st.store.delete::<Shape>(&Scope::Platform, &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
