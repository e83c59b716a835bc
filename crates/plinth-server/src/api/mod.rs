//! The `/v1` handlers, one module per resource, and the helpers they share.

pub mod agent;
pub mod audit;
pub mod capacity;
pub mod console;
pub mod health;
pub mod host_ops;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod invoices;
pub mod join_tokens;
pub mod operations;
pub mod placement_groups;
pub mod projects;
pub mod quotas;
pub mod racks;
pub mod role_bindings;
pub mod shapes;
pub mod sites;
pub mod system;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod users;

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_domain::validate;
use serde::Serialize;
use std::collections::BTreeMap;

/// 201 with a JSON body.
pub fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// Validates an optional free-text field.
pub fn opt_text(field: &str, v: &Option<String>, max: usize) -> Result<(), ApiError> {
    if let Some(v) = v {
        validate::text(field, v, max)?;
    }
    Ok(())
}

/// Validates optional labels.
pub fn opt_labels(field: &str, v: &Option<BTreeMap<String, String>>) -> Result<(), ApiError> {
    if let Some(v) = v {
        validate::labels(field, v)?;
    }
    Ok(())
}

/// A lifetime in seconds within bounds, as an expiry time from now.
pub fn expiry(field: &str, secs: u64, min: u64, max: u64) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    validate::quantity(field, secs, min, max)?;
    Ok(chrono::Utc::now() + chrono::Duration::seconds(secs as i64))
}

/// A referenced object that is missing is an input error (422), not a missing target (404).
pub fn reference(e: plinth_store::StoreError, field: &str) -> ApiError {
    match e {
        plinth_store::StoreError::NotFound { kind, id } => {
            ApiError::invalid("invalid_reference", format!("{field}: {kind} {id} does not exist"))
                .with_constraint(serde_json::json!({ "field": field, "rule": "exists" }))
        }
        other => other.into(),
    }
}
