//! `/v1/tenants`: billing accounts. Operators create and delete them; a tenant-admin may
//! change its own; every user of a tenant sees it.

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

/// List the tenants the caller can see.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", operation_id = "tenant_list", params(PageParams),
    responses((status = 200, description = "Tenants visible to the caller", body = Page<Tenant>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
) -> ApiResult<Out<Page<Tenant>>> {
    let pg = Paging::from(&p)?;
    Ok(Out(st.store.list::<Tenant>(&caller.scope(), &[], pg.limit, pg.cursor.as_deref()).await?))
}

/// Create a tenant (operators).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", operation_id = "tenant_create", request_body = TenantCreate,
    responses((status = 201, description = "The new tenant", body = Tenant)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<TenantCreate>,
) -> ApiResult<Response> {
    caller.require_operator("creating tenants")?;
    validate::dns_label("name", &b.name)?;
    opt_text("display_name", &b.display_name, 200)?;
    validate::labels("labels", &b.labels)?;
    let now = Utc::now();
    let t = Tenant {
        id: TenantId::generate(),
        display_name: b.display_name.unwrap_or_else(|| b.name.clone()),
        name: b.name,
        labels: b.labels,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    st.store.insert(&t, &caller.audit()).await?;
    Ok(created(t))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "tenant_view",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant", body = Tenant)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Tenant>> {
    Ok(Out(st.store.get(&caller.scope(), &id).await?))
}

/// Change a tenant (operators, its tenant-admins).
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "tenant_update",
    params(("id" = String, Path, description = "Tenant id")), request_body = TenantUpdate,
    responses((status = 200, description = "The changed tenant", body = Tenant)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<TenantUpdate>,
) -> ApiResult<Out<Tenant>> {
    let t: Tenant = st.store.get(&caller.scope(), &id).await?;
    if !caller.principal.can_admin_tenant(&t.id) {
        return Err(ApiError::forbidden("changing this tenant"));
    }
    opt_text("display_name", &b.display_name, 200)?;
    opt_labels("labels", &b.labels)?;
    let t = st
        .store
        .update(&caller.scope(), &id, if_match, &caller.audit(), |t: &mut Tenant| {
            if let Some(d) = b.display_name {
                t.display_name = d;
            }
            if let Some(l) = b.labels {
                t.labels = l;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(t))
}

/// Delete a tenant with nothing left in it (operators).
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", operation_id = "tenant_delete",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    let _: Tenant = st.store.get(&caller.scope(), &id).await?;
    caller.require_operator("deleting tenants")?;
    st.store.delete::<Tenant>(&caller.scope(), &id, if_match, &caller.audit()).await?;
    Ok(StatusCode::NO_CONTENT)
}
