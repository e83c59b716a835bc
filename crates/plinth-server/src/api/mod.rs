//! The HTTP layer's handlers, one module per resource (`/v1`, `/agent/v1`, health): each
//! takes its extractors, calls one use case in [`crate::app`](mod@crate::app) and shapes the answer
//! (status, body); errors become `problem+json` in [`crate::error`]. No business logic here.

pub mod agent;
pub mod audit;
pub mod capacity;
pub mod console;
pub mod floating_ips;
pub mod health;
pub mod host_ops;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod invoices;
pub mod ip_pools;
pub mod join_tokens;
pub mod network_interfaces;
pub mod operations;
pub mod placement_groups;
pub mod projects;
pub mod quotas;
pub mod racks;
pub mod role_bindings;
pub mod security_groups;
pub mod shapes;
pub mod sites;
pub mod snapshots;
pub mod subnets;
pub mod system;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod volume_types;
pub mod volumes;
pub mod vpcs;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// 201 with a JSON body.
pub fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}
