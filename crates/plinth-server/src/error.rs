//! API errors as `application/problem+json`: a stable `code`, a human `detail`, the request
//! id, and for refusals the constraint that refused. Use-case failures ([`app::Error`])
//! become problems here: each [`Kind`] answers with one status.

use crate::app::{self, Kind};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_api::{PROBLEM_JSON, Problem};
use plinth_domain::validate::Invalid;
use plinth_store::StoreError;
use serde_json::json;

tokio::task_local! {
    /// The id of the request being served, for error bodies.
    pub static REQUEST_ID: String;
}

/// The current request's id, or `-` outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_else(|_| "-".into())
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub constraint: Option<serde_json::Value>,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), constraint: None }
    }
    pub fn with_constraint(mut self, c: serde_json::Value) -> ApiError {
        self.constraint = Some(c);
        self
    }
    pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
    }
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(request_id = %current_request_id(), "internal error: {detail}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; the request id identifies it in the logs",
        )
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("urn:plinth:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("error").to_string(),
            status: self.status.as_u16(),
            code: self.code.to_string(),
            detail: self.detail.clone(),
            request_id: current_request_id(),
            constraint: self.constraint.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp.extensions_mut().insert(ErrorCode(self.code.to_string()));
        resp
    }
}

/// The problem code of an error response, for the audit log.
#[derive(Clone, Debug)]
pub struct ErrorCode(pub String);

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        ApiError::invalid(e.code, e.to_string()).with_constraint(json!({ "field": e.field, "rule": e.rule }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        app::Error::from(e).into()
    }
}

impl From<app::Error> for ApiError {
    fn from(e: app::Error) -> ApiError {
        if e.kind == Kind::Internal {
            return ApiError::internal(e.detail);
        }
        // `Kind::status` is the one table of statuses; every kind names a valid one.
        let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError { status, code: e.code, detail: e.detail, constraint: e.constraint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Kind; 10] = [
        Kind::Malformed,
        Kind::Unauthenticated,
        Kind::PaymentRequired,
        Kind::Forbidden,
        Kind::NotFound,
        Kind::Conflict,
        Kind::TooLarge,
        Kind::Invalid,
        Kind::Unavailable,
        Kind::Internal,
    ];

    /// A use-case refusal that travels through the store (`StoreError::Refused`, as a
    /// background task's result) and back answers the status it would have answered directly.
    #[test]
    fn every_kind_keeps_its_status_through_the_store() {
        for k in KINDS {
            let direct = ApiError::from(app::Error::new(k, "x", "d")).status;
            let through = ApiError::from(StoreError::from(app::Error::new(k, "x", "d"))).status;
            assert_eq!(direct, through, "{k:?}");
            assert_eq!(direct.as_u16(), k.status(), "{k:?}");
        }
    }

    /// An internal failure's detail never reaches the client.
    #[test]
    fn an_internal_detail_stays_in_the_log() {
        let e = ApiError::from(app::Error::internal("SQLSTATE 23505 at row 4"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.problem().detail.contains("SQLSTATE"), "{}", e.detail);
    }
}
