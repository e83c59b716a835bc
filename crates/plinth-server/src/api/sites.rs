//! `/v1/sites` (operators): data centres or rooms that hold racks.

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

/// List sites.
#[utoipa::path(get, path = "/v1/sites", tag = "inventory", operation_id = "site_list", params(PageParams),
    responses((status = 200, description = "Sites", body = Page<Site>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<Site>>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(&p)?;
    Ok(Out(st.store.list::<Site>(&Scope::Platform, &[], pg.limit, pg.cursor.as_deref()).await?))
}

/// Create a site.
#[utoipa::path(post, path = "/v1/sites", tag = "inventory", operation_id = "site_create", request_body = SiteCreate,
    responses((status = 201, description = "The new site", body = Site)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<SiteCreate>,
) -> ApiResult<Response> {
    caller.require_operator("changing inventory")?;
    validate::dns_label("name", &b.name)?;
    opt_text("description", &b.description, 1024)?;
    opt_text("location", &b.location, 255)?;
    let now = Utc::now();
    let s = Site {
        id: SiteId::generate(),
        name: b.name,
        description: b.description.unwrap_or_default(),
        location: b.location,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&s, &caller.audit()).await?;
    Ok(created(s))
}

/// Get a site.
#[utoipa::path(get, path = "/v1/sites/{id}", tag = "inventory", operation_id = "site_view",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, description = "The site", body = Site)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Site>> {
    caller.require_operator("reading inventory")?;
    Ok(Out(st.store.get(&Scope::Platform, &id).await?))
}

/// Change a site.
#[utoipa::path(patch, path = "/v1/sites/{id}", tag = "inventory", operation_id = "site_update",
    params(("id" = String, Path, description = "Site id")), request_body = SiteUpdate,
    responses((status = 200, description = "The changed site", body = Site)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<SiteUpdate>,
) -> ApiResult<Out<Site>> {
    caller.require_operator("changing inventory")?;
    opt_text("description", &b.description, 1024)?;
    opt_text("location", &b.location, 255)?;
    let s = st
        .store
        .update(&Scope::Platform, &id, if_match, &caller.audit(), |s: &mut Site| {
            if let Some(d) = b.description {
                s.description = d;
            }
            if b.location.is_some() {
                s.location = b.location;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(s))
}

/// Delete a site with no racks or hosts.
#[utoipa::path(delete, path = "/v1/sites/{id}", tag = "inventory", operation_id = "site_delete",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    caller.require_operator("changing inventory")?;
    st.store.delete::<Site>(&Scope::Platform, &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
