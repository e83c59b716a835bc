//! The error model: `application/problem+json` (RFC 9457) with a stable machine `code`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer. `code` is stable and meant for programs; `detail` is for people.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:plinth:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Stable machine-readable code, e.g. `invalid_name`, `generation_mismatch`.
    pub code: String,
    /// What went wrong, for a person.
    pub detail: String,
    /// The id of the request, as in the `x-request-id` header and the audit log.
    pub request_id: String,
    /// For refusals: the constraint that refused, e.g. `{"field":"name","rule":"dns-label"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub constraint: Option<serde_json::Value>,
}
