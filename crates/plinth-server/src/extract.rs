//! Request extractors that refuse bad input as problem+json: JSON bodies (unknown fields,
//! wrong types, overflow, size), query strings, `If-Match`, list paging.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Largest request body accepted (1 MiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// A JSON body, refused with `invalid_body` (400), `invalid_field` (422) or
/// `body_too_large` (413).
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// A JSON body that may be left out: no body at all is `T::default()`; one that is sent
/// is refused as [`Json`] refuses it.
pub struct OptJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
        let h = req.headers();
        let empty = h.get(CONTENT_LENGTH).is_some_and(|v| v.as_bytes() == b"0")
            || (!h.contains_key(CONTENT_LENGTH) && !h.contains_key(TRANSFER_ENCODING) && !h.contains_key(CONTENT_TYPE));
        if empty {
            return Ok(OptJson(T::default()));
        }
        Json::<T>::from_request(req, state).await.map(|Json(v)| OptJson(v))
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = r.status();
    let text = r.body_text();
    match r {
        JsonRejection::JsonDataError(_) => {
            // serde says what it refused: "unknown field `x`", "invalid value: integer `-1`, expected u32".
            let detail =
                text.trim_start_matches("Failed to deserialize the JSON body into the target type: ").to_string();
            let field = detail.split(':').next().unwrap_or("").trim().to_string();
            ApiError::invalid("invalid_field", detail).with_constraint(json!({ "rule": "schema", "at": field }))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {BODY_LIMIT} bytes"),
        )
        .with_constraint(json!({ "rule": "max-body-bytes", "limit": BODY_LIMIT })),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", text),
    }
}

/// Query parameters, refused with `invalid_query` (400).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(r @ QueryRejection::FailedToDeserializeQueryString(_)) => {
                Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text()))
            }
            Err(r) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())),
        }
    }
}

/// The `If-Match` header as a generation (`"3"` or `3`).
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(axum::http::header::IF_MATCH) else { return Ok(IfMatch(None)) };
        let s = v.to_str().unwrap_or("").trim().trim_start_matches("W/").trim_matches('"');
        match s.parse::<i64>() {
            Ok(g) if g > 0 => Ok(IfMatch(Some(g))),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_if_match",
                "If-Match must be the resource's generation, a positive integer",
            )),
        }
    }
}

pub use crate::app::Paging;
