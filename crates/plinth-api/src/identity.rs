//! Identity and tenancy wire types: tenants, projects, users, API tokens, role bindings,
//! and the audit log.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A tenant: the billing account that owns projects and users.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    /// DNS-label name, unique platform-wide.
    pub name: String,
    pub display_name: String,
    pub labels: BTreeMap<String, String>,
    /// Bumped on every change; send it back in `If-Match` to update safely.
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/tenants`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `PATCH /v1/tenants/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    pub display_name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A project: a group of resources inside a tenant.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Project {
    pub id: ProjectId,
    pub tenant_id: TenantId,
    /// DNS-label name, unique within the tenant.
    pub name: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/projects`. `tenant_id` defaults to the caller's tenant.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectCreate {
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `PATCH /v1/projects/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    pub description: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A user. Platform users (operators) have no tenant.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub tenant_id: Option<TenantId>,
    /// DNS-label name, unique within the tenant (or among platform users).
    pub name: String,
    pub email: Option<String>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/users`. `tenant_id` defaults to the caller's tenant; operators
/// may omit it to create a platform user.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// Body of `PATCH /v1/users/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub email: Option<String>,
}

/// Roles a user can be bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Platform-wide: inventory, shapes, every tenant.
    Operator,
    /// Everything inside one tenant, including its users, tokens and audit log.
    TenantAdmin,
    /// Reads and creates resources in a tenant or project.
    Member,
    /// Reads a tenant or project.
    Viewer,
}

impl Role {
    /// The wire name (`tenant-admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant-admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

/// Grants a role to a user on the platform, a tenant or a project.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct RoleBinding {
    pub id: RoleBindingId,
    pub user_id: UserId,
    pub role: Role,
    /// The tenant the binding is in; absent for `operator`.
    pub tenant_id: Option<TenantId>,
    /// Narrows a `member`/`viewer` binding to one project.
    pub project_id: Option<ProjectId>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/role-bindings`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingCreate {
    pub user_id: UserId,
    pub role: Role,
    #[serde(default)]
    pub project_id: Option<ProjectId>,
}

/// Body of `PATCH /v1/role-bindings/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingUpdate {
    pub role: Option<Role>,
}

/// An API token. The secret is shown once, in [`TokenCreated`]; the server keeps only its
/// SHA-256.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: TokenId,
    pub user_id: UserId,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/tokens`. `user_id` defaults to the caller.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    #[serde(default)]
    pub user_id: Option<UserId>,
    pub name: String,
    /// Lifetime in seconds (1 to 10 years); absent means the token does not expire.
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// Body of `PATCH /v1/tokens/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenUpdate {
    pub name: Option<String>,
}

/// Answer to `POST /v1/tokens`: the token record and, once only, its secret.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct TokenCreated {
    #[serde(flatten)]
    pub token: ApiToken,
    /// The bearer secret, `plt_…`. It is not stored and cannot be shown again.
    pub secret: String,
}

/// One audited mutating request.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct AuditRecord {
    pub id: AuditId,
    pub time: DateTime<Utc>,
    /// The user who made the request, when it was authenticated.
    pub actor_user_id: Option<UserId>,
    pub actor_token_id: Option<TokenId>,
    /// e.g. `projects.create`, `hosts.update`, `agent.enroll`.
    pub action: String,
    /// The id of the object acted on, when there is one.
    pub target: Option<String>,
    /// The tenant the action concerned, when it concerned one.
    pub tenant_id: Option<TenantId>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// `success` or `failure`.
    pub result: String,
    /// The problem code, for failures.
    pub error_code: Option<String>,
    pub request_id: String,
}

/// Filters of `GET /v1/audit-log`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only records made by this user.
    pub actor: Option<String>,
    /// Only records about this object id.
    pub target: Option<String>,
    /// Only records with this action, e.g. `projects.create`.
    pub action: Option<String>,
    /// Only records at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// Filters of `GET /v1/tenants`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantFilter {
    /// Only the tenant with this name.
    pub name: Option<String>,
}

/// Filters of `GET /v1/users`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only users with this name (unique within a tenant).
    pub name: Option<String>,
}

/// Filters of `GET /v1/tokens`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenFilter {
    /// Only tokens with this name.
    pub name: Option<String>,
}

/// Filters of `GET /v1/projects`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectFilter {
    /// Only projects of this tenant.
    pub tenant_id: Option<String>,
    /// Only the project with this name.
    pub name: Option<String>,
}

/// Filters of `GET /v1/role-bindings`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoleBindingFilter {
    /// Only bindings of this user.
    pub user_id: Option<String>,
}
