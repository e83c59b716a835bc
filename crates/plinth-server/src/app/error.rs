//! The application layer's error: what went wrong as a [`Kind`], a stable code, a human
//! detail and, for refusals, the constraint that refused. No HTTP here: `api`
//! (`crate::error`) maps each kind to a status and the whole to `problem+json`.

use plinth_domain::validate::Invalid;
use plinth_store::StoreError;
use serde_json::json;

/// The class of a failure; `api` maps each to one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed (a bad filter, a bad cursor): 400.
    Malformed,
    /// No valid credential: 401.
    Unauthenticated,
    /// A budget refuses new billable resources: 402.
    PaymentRequired,
    /// The caller's roles do not allow it: 403.
    Forbidden,
    /// The target does not exist or is not visible: 404.
    NotFound,
    /// The target's state refuses it (lifecycle, quota, capacity, concurrency): 409.
    Conflict,
    /// The input is larger than allowed: 413.
    TooLarge,
    /// The input breaks a rule: 422.
    Invalid,
    /// A part the request needs is not there (configuration, an injected failure): 503.
    Unavailable,
    /// The server failed; the detail is for the log, never for the client: 500.
    Internal,
}

impl Kind {
    /// The kind of a store refusal, which names an HTTP-like status.
    pub fn from_status(status: u16) -> Kind {
        match status {
            401 => Kind::Unauthenticated,
            402 => Kind::PaymentRequired,
            403 => Kind::Forbidden,
            404 => Kind::NotFound,
            409 => Kind::Conflict,
            413 => Kind::TooLarge,
            422 => Kind::Invalid,
            503 => Kind::Unavailable,
            500 => Kind::Internal,
            _ => Kind::Malformed,
        }
    }

    /// The status a store refusal of this kind carries (the inverse of [`Kind::from_status`]).
    pub fn status(self) -> u16 {
        match self {
            Kind::Malformed => 400,
            Kind::Unauthenticated => 401,
            Kind::PaymentRequired => 402,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::Conflict => 409,
            Kind::TooLarge => 413,
            Kind::Invalid => 422,
            Kind::Unavailable => 503,
            Kind::Internal => 500,
        }
    }
}

/// A use case's failure.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub code: &'static str,
    /// For the client, except for [`Kind::Internal`], where it is only logged.
    pub detail: String,
    pub constraint: Option<serde_json::Value>,
}

/// The result of a use case.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, code: &'static str, detail: impl Into<String>) -> Error {
        Error { kind, code, detail: detail.into(), constraint: None }
    }
    pub fn with_constraint(mut self, c: serde_json::Value) -> Error {
        self.constraint = Some(c);
        self
    }
    pub fn with_code(mut self, code: &'static str) -> Error {
        self.code = code;
        self
    }
    pub fn unauthenticated(detail: impl Into<String>) -> Error {
        Error::new(Kind::Unauthenticated, "unauthenticated", detail)
    }
    pub fn forbidden(what: &str) -> Error {
        Error::new(Kind::Forbidden, "forbidden", format!("your roles do not allow {what}"))
            .with_constraint(json!({ "rule": "role", "action": what }))
    }
    pub fn not_found(kind: &str, id: &str) -> Error {
        Error::new(Kind::NotFound, "not_found", format!("{kind} {id} not found"))
    }
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Error {
        Error::new(Kind::Invalid, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Error {
        Error::new(Kind::Conflict, code, detail)
    }
    pub fn malformed(code: &'static str, detail: impl Into<String>) -> Error {
        Error::new(Kind::Malformed, code, detail)
    }
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Error {
        Error::new(Kind::Unavailable, code, detail)
    }
    /// A server failure: `detail` goes to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Error {
        Error::new(Kind::Internal, "internal", detail.to_string())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl std::error::Error for Error {}

impl From<Invalid> for Error {
    fn from(e: Invalid) -> Error {
        Error::invalid(e.code, e.to_string()).with_constraint(json!({ "field": e.field, "rule": e.rule }))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::NotFound { kind, id } => Error::not_found(kind, &id),
            StoreError::GenerationMismatch { kind, id, expected, current } => {
                let detail = if current < 0 {
                    format!("{kind} {id} changed while this request was updating it; read it again and retry")
                } else {
                    format!("{kind} {id} is at generation {current}, not {expected}; read it again and retry")
                };
                Error::conflict("generation_mismatch", detail)
                    .with_constraint(json!({ "rule": "if-match", "expected": expected, "current": current }))
            }
            StoreError::AlreadyExists { kind, detail } => {
                Error::conflict("already_exists", format!("{kind}: {detail}"))
                    .with_constraint(json!({ "rule": "unique-name" }))
            }
            StoreError::HasDependents { kind, id, dependent } => Error::conflict(
                "has_dependents",
                format!("{kind} {id} is still referenced by {dependent}; delete those first"),
            )
            .with_constraint(json!({ "rule": "no-dependents", "dependent": dependent })),
            StoreError::QuotaExceeded { scope, resource, limit, used, requested } => Error::conflict(
                "quota_exceeded",
                format!(
                    "{resource} of {scope} is limited to {limit}: {used} are used and {requested} more were asked for"
                ),
            )
            .with_constraint(json!({ "rule": "quota", "scope": scope, "resource": resource, "limit": limit,
                "used": used, "requested": requested })),
            StoreError::DanglingReference { kind, cause } => {
                // The database's words stay in the log: they name tables, not the caller's input.
                tracing::debug!("dangling reference writing {kind}: {cause}");
                Error::invalid("invalid_reference", format!("{kind}: an object it refers to does not exist"))
                    .with_constraint(json!({ "rule": "exists" }))
            }
            StoreError::Refused { status, code, detail } => Error::new(Kind::from_status(status), code, detail),
            other => Error::internal(other),
        }
    }
}

/// Carries a use case's refusal through code that speaks [`StoreError`] (a background
/// task's result).
impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        StoreError::Refused { status: e.kind.status(), code: e.code, detail: e.detail }
    }
}

/// A referenced object that is missing is an input error (422), not a missing target (404).
pub fn reference(e: StoreError, field: &str) -> Error {
    match e {
        StoreError::NotFound { kind, id } => {
            Error::invalid("invalid_reference", format!("{field}: {kind} {id} does not exist"))
                .with_constraint(json!({ "field": field, "rule": "exists" }))
        }
        other => other.into(),
    }
}
