//! `/v1/shapes`: the sizes tenants consume. Operators define them; everyone reads them.
//! The use cases are in [`crate::app::inventory::shapes`].

use super::created;
use crate::app::AppState;
use crate::app::inventory::shapes;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List shapes.
#[utoipa::path(get, path = "/v1/shapes", tag = "shapes", operation_id = "shape_list", params(PageParams, ShapeFilter),
    responses((status = 200, description = "Shapes", body = Page<Shape>)))]
pub async fn list(
    State(st): State<AppState>,
    _caller: Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<ShapeFilter>,
) -> ApiResult<Out<Page<Shape>>> {
    Ok(Out(shapes::list(&st, &p, f).await?))
}

/// Define a shape (operators).
#[utoipa::path(post, path = "/v1/shapes", tag = "shapes", operation_id = "shape_create", request_body = ShapeCreate,
    responses((status = 201, description = "The new shape", body = Shape)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<ShapeCreate>,
) -> ApiResult<Response> {
    Ok(created(shapes::create(&st, &caller, b).await?))
}

/// Get a shape.
#[utoipa::path(get, path = "/v1/shapes/{id}", tag = "shapes", operation_id = "shape_view",
    params(("id" = String, Path, description = "Shape id")),
    responses((status = 200, description = "The shape", body = Shape)))]
pub async fn get(State(st): State<AppState>, _caller: Authed, Path(id): Path<String>) -> ApiResult<Out<Shape>> {
    Ok(Out(shapes::get(&st, &id).await?))
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
    Ok(Out(shapes::update(&st, &caller, &id, if_match, b).await?))
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
    shapes::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What running one instance of this shape would cost: each meter it would record, priced
/// by your tenant's price book in effect now (operators: `tenant_id`'s, else `default`).
#[utoipa::path(get, path = "/v1/shapes/{id}/price", tag = "shapes", operation_id = "shape_price",
    params(("id" = String, Path, description = "Shape id or name"), PriceEstimateQuery),
    responses((status = 200, description = "The estimate", body = PriceEstimate)))]
pub async fn price(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    Query(q): Query<PriceEstimateQuery>,
) -> ApiResult<Out<PriceEstimate>> {
    Ok(Out(crate::app::billing::prices::estimate(&st, &caller, &id, q).await?))
}
