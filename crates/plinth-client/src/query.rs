//! Query filters of `/v1` lists that `plinth-api` does not define (the server declares them
//! beside its handlers); each mirrors the server's struct field for field. When one moves
//! into `plinth-api`, replace it here with a re-export.

use plinth_api::{ImageStatus, ProjectId, SiteId, TenantId, UserId};
use serde::Serialize;

/// Filters of `GET /v1/projects`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProjectFilter {
    pub tenant_id: Option<TenantId>,
    pub name: Option<String>,
}

/// Filters of `GET /v1/role-bindings`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoleBindingFilter {
    pub user_id: Option<UserId>,
}

/// Filters of `GET /v1/racks`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RackFilter {
    pub site_id: Option<SiteId>,
}

/// Filters of `GET /v1/shapes`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShapeFilter {
    pub name: Option<String>,
}

/// Filters of `GET /v1/images`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageFilter {
    pub project_id: Option<ProjectId>,
    pub name: Option<String>,
    pub status: Option<ImageStatus>,
    pub public: Option<bool>,
}

/// Filters of `GET /v1/placement-groups`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GroupFilter {
    pub project_id: Option<ProjectId>,
}

/// Filters of `GET /v1/invoices`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct InvoiceFilter {
    pub tenant_id: Option<TenantId>,
    /// `2026-11`.
    pub period: Option<String>,
}

/// Query of `GET /v1/invoices/current`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CurrentQuery {
    pub tenant_id: Option<TenantId>,
    pub period: Option<String>,
}

/// Filters of `GET /v1/price-books`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PriceBookFilter {
    pub name: Option<String>,
}

/// Query of `GET /v1/billing/revenue`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RevenueQuery {
    pub period: Option<String>,
    pub drafts: Option<bool>,
}

/// Body of `POST /v1/system/clock` (declared by the server).
#[derive(Clone, Debug, Serialize)]
pub struct ClockAdvance {
    pub advance_seconds: u64,
}

/// Answer of `POST /v1/system/clock` (declared by the server).
#[derive(Clone, Debug, serde::Deserialize, Serialize)]
pub struct ClockNow {
    pub now: chrono::DateTime<chrono::Utc>,
}
