//! `/v1/racks` (operators): racks in a site. A rack is a failure domain for placement.

use super::{created, opt_text, reference};
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
use serde::Deserialize;
use utoipa::IntoParams;

/// Filters of `GET /v1/racks`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RackFilter {
    /// Only racks in this site.
    pub site_id: Option<String>,
}

/// List racks.
#[utoipa::path(get, path = "/v1/racks", tag = "inventory", operation_id = "rack_list", params(PageParams, RackFilter),
    responses((status = 200, description = "Racks", body = Page<Rack>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<RackFilter>,
) -> ApiResult<Out<Page<Rack>>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(&p)?;
    let filters: Vec<(&str, String)> = f.site_id.map(|s| vec![("site_id", s)]).unwrap_or_default();
    Ok(Out(st.store.list::<Rack>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?))
}

/// Create a rack.
#[utoipa::path(post, path = "/v1/racks", tag = "inventory", operation_id = "rack_create", request_body = RackCreate,
    responses((status = 201, description = "The new rack", body = Rack)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<RackCreate>,
) -> ApiResult<Response> {
    caller.require_operator("changing inventory")?;
    validate::dns_label("name", &b.name)?;
    opt_text("description", &b.description, 1024)?;
    let _: Site = st.store.get(&Scope::Platform, b.site_id.as_str()).await.map_err(|e| reference(e, "site_id"))?;
    let now = Utc::now();
    let r = Rack {
        id: RackId::generate(),
        site_id: b.site_id,
        name: b.name,
        description: b.description.unwrap_or_default(),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&r, &caller.audit()).await?;
    Ok(created(r))
}

/// Get a rack.
#[utoipa::path(get, path = "/v1/racks/{id}", tag = "inventory", operation_id = "rack_view",
    params(("id" = String, Path, description = "Rack id")),
    responses((status = 200, description = "The rack", body = Rack)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Rack>> {
    caller.require_operator("reading inventory")?;
    Ok(Out(st.store.get(&Scope::Platform, &id).await?))
}

/// Change a rack.
#[utoipa::path(patch, path = "/v1/racks/{id}", tag = "inventory", operation_id = "rack_update",
    params(("id" = String, Path, description = "Rack id")), request_body = RackUpdate,
    responses((status = 200, description = "The changed rack", body = Rack)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<RackUpdate>,
) -> ApiResult<Out<Rack>> {
    caller.require_operator("changing inventory")?;
    opt_text("description", &b.description, 1024)?;
    let r = st
        .store
        .update(&Scope::Platform, &id, if_match, &caller.audit(), |r: &mut Rack| {
            if let Some(d) = b.description {
                r.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(r))
}

/// Delete a rack with no hosts.
#[utoipa::path(delete, path = "/v1/racks/{id}", tag = "inventory", operation_id = "rack_delete",
    params(("id" = String, Path, description = "Rack id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    caller.require_operator("changing inventory")?;
    st.store.delete::<Rack>(&Scope::Platform, &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
