//! The application layer: every use case of the control plane as a function that the HTTP
//! handlers, the console, the tests and the reconcilers can call without HTTP. No axum types,
//! no status codes, no responses here: a use case takes the [`Caller`] (who asks, and what
//! they may see), wire types from `plinth-api`, and answers a value or an [`Error`] whose
//! [`Kind`] `api` maps to a status.
//!
//! Dependencies point one way: `api` → `app` → `plinth-store` / `plinth-domain`. Sagas and
//! reconcilers live here and call use cases and services here, never `api`. The store
//! alone writes SQL; `plinth-domain` decides (validation, authorisation, state machines,
//! placement, metering, rating) without I/O.
//!
//! Use cases, by domain: [`instances`] (with placement groups and consoles), [`images`],
//! [`hosts`] (with host operations and capacity), [`identity`] (tenants, projects, users,
//! tokens, role bindings, audit), [`inventory`] (sites, racks, shapes, join tokens),
//! [`billing`] (invoices, price books, usage), [`quotas`] (quotas, budgets, credits,
//! commitments), [`operations`], [`system`] and the [`agent`] protocol. The services they
//! share: [`lifecycle`] (instance bookkeeping), [`scheduler`] (placement claims), [`saga`]
//! (operations that outlive a request), [`reconcilers`] (background tasks), [`signals`]
//! (wake-ups), and [`AppState`], what every use case can reach.
//!
//! Inputs are plain: the [`Caller`] (or, for the agent protocol, the host's id), wire types
//! from `plinth-api`, and a few query types declared here (they derive `IntoParams` for the
//! OpenAPI document, nothing more).

pub mod agent;
pub mod billing;
pub mod dataplane;
pub mod error;
pub mod hosts;
pub mod identity;
pub mod images;
pub mod instances;
pub mod inventory;
pub mod lifecycle;
pub mod network;
pub mod operations;
pub mod quotas;
pub mod reconcilers;
pub mod saga;
pub mod scheduler;
pub mod signals;
pub mod state;
pub mod storage;
pub mod system;

pub use error::{Error, Kind, Result, reference};
pub use state::AppState;

use plinth_api::{DEFAULT_LIMIT, MAX_LIMIT, PageParams, TenantId};
use plinth_domain::authz::{Principal, Scope};
use plinth_domain::validate;
use plinth_store::AuditEntry;
use serde_json::json;
use std::collections::BTreeMap;

/// Who calls a use case: the authenticated principal, and the request it acts for (its id
/// and action name go into audit records).
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
    /// e.g. `projects.create`.
    pub action: String,
}

impl Caller {
    /// The caller's visibility, for every tenant-scoped query.
    pub fn scope(&self) -> Scope {
        self.principal.scope()
    }

    /// The audit entry for a change made by this request.
    pub fn audit(&self) -> AuditEntry {
        AuditEntry {
            actor_user_id: Some(self.principal.user_id.0.clone()),
            actor_token_id: Some(self.principal.token_id.0.clone()),
            action: self.action.clone(),
            request_id: self.request_id.clone(),
        }
    }

    /// Refuses with `forbidden` unless the caller is an operator.
    pub fn require_operator(&self, what: &str) -> Result<()> {
        if self.principal.is_operator() { Ok(()) } else { Err(Error::forbidden(what)) }
    }

    /// The caller's tenant, or `tenant_required` telling an operator to name one.
    pub fn default_tenant(&self, given: Option<TenantId>) -> Result<TenantId> {
        given.or_else(|| self.principal.tenant_id.clone()).ok_or_else(|| {
            Error::invalid("tenant_required", "platform users must name tenant_id")
                .with_constraint(serde_json::json!({ "field": "tenant_id", "rule": "required" }))
        })
    }
}

/// Checked paging: a limit in 1..=1000 and an opaque cursor.
pub struct Paging {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl Paging {
    pub fn from(p: &PageParams) -> Result<Paging> {
        let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::malformed("invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}"))
                .with_constraint(json!({ "rule": "range", "min": 1, "max": MAX_LIMIT })));
        }
        if let Some(c) = &p.cursor {
            // Cursors are ids; anything else cannot have come from us.
            let ok = c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(Error::malformed("invalid_cursor", "the cursor is not one this server issued"));
            }
        }
        Ok(Paging { limit, cursor: p.cursor.clone() })
    }
}

/// Validates an optional free-text field.
pub fn opt_text(field: &str, v: &Option<String>, max: usize) -> Result<(), Error> {
    if let Some(v) = v {
        validate::text(field, v, max)?;
    }
    Ok(())
}

/// Validates optional labels.
pub fn opt_labels(field: &str, v: &Option<BTreeMap<String, String>>) -> Result<(), Error> {
    if let Some(v) = v {
        validate::labels(field, v)?;
    }
    Ok(())
}

/// A lifetime in seconds within bounds, as an expiry time from now.
pub fn expiry(field: &str, secs: u64, min: u64, max: u64) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    validate::quantity(field, secs, min, max)?;
    Ok(chrono::Utc::now() + chrono::Duration::seconds(secs as i64))
}
