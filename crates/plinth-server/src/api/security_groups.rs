//! `/v1/security-groups`: stateful allow rules over a VPC's NICs, and their rules.
//! The use cases are in [`crate::app::network::security_groups`].

use super::created;
use crate::app::AppState;
use crate::app::network::security_groups;
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use plinth_api::*;

/// List security groups.
#[utoipa::path(get, path = "/v1/security-groups", tag = "networking", operation_id = "security_group_list",
    params(PageParams, SecurityGroupFilter),
    responses((status = 200, description = "Security groups", body = Page<SecurityGroup>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<SecurityGroupFilter>,
) -> ApiResult<Out<Page<SecurityGroup>>> {
    Ok(Out(security_groups::list(&st, &caller, &p, f).await?))
}

/// Create a security group (with rules to start with).
#[utoipa::path(post, path = "/v1/security-groups", tag = "networking", operation_id = "security_group_create",
    request_body = SecurityGroupCreate,
    responses((status = 201, description = "The new security group", body = SecurityGroup)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<SecurityGroupCreate>,
) -> ApiResult<Response> {
    Ok(created(security_groups::create(&st, &caller, b).await?))
}

/// Get a security group.
#[utoipa::path(get, path = "/v1/security-groups/{id}", tag = "networking", operation_id = "security_group_view",
    params(("id" = String, Path, description = "Security group id")),
    responses((status = 200, description = "The security group", body = SecurityGroup)))]
pub async fn get(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
) -> ApiResult<Out<SecurityGroup>> {
    Ok(Out(security_groups::get(&st, &caller, &id).await?))
}

/// Rename a security group or change its description.
#[utoipa::path(patch, path = "/v1/security-groups/{id}", tag = "networking", operation_id = "security_group_update",
    params(("id" = String, Path, description = "Security group id")), request_body = SecurityGroupUpdate,
    responses((status = 200, description = "The security group", body = SecurityGroup)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<SecurityGroupUpdate>,
) -> ApiResult<Out<SecurityGroup>> {
    Ok(Out(security_groups::update(&st, &caller, &id, b, if_match).await?))
}

/// Delete a security group no NIC uses and no other group names as remote.
#[utoipa::path(delete, path = "/v1/security-groups/{id}", tag = "networking", operation_id = "security_group_delete",
    params(("id" = String, Path, description = "Security group id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    security_groups::delete(&st, &caller, &id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add one rule to a security group.
#[utoipa::path(post, path = "/v1/security-groups/{id}/rules", tag = "networking", operation_id = "security_group_rule_create",
    params(("id" = String, Path, description = "Security group id")), request_body = SecurityGroupRuleCreate,
    responses((status = 201, description = "The new rule", body = SecurityGroupRule)))]
pub async fn add_rule(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<SecurityGroupRuleCreate>,
) -> ApiResult<Response> {
    Ok(created(security_groups::add_rule(&st, &caller, &id, b, if_match).await?))
}

/// Remove one rule from a security group.
#[utoipa::path(delete, path = "/v1/security-groups/{id}/rules/{rule_id}", tag = "networking",
    operation_id = "security_group_rule_delete",
    params(("id" = String, Path, description = "Security group id"), ("rule_id" = String, Path, description = "Rule id")),
    responses((status = 204, description = "Removed")))]
pub async fn remove_rule(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path((id, rule_id)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    security_groups::remove_rule(&st, &caller, &id, &rule_id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
