//! `Idempotency-Key` on every POST: the first response to (caller, key) is replayed to a
//! retry with the same body; the same key with another body is `422 idempotency_key_reused`.
//!
//! Stored responses can carry secrets shown once (new tokens, join tokens), so they are kept
//! encrypted (ChaCha20-Poly1305) under a key derived from the caller's bearer secret and the
//! idempotency key. The server keeps only the bearer's hash, so a database copy cannot
//! decrypt them; only a retry with the same token can.

use crate::app::AppState;
use crate::context::Caller;
use crate::error::ApiError;
use crate::extract::BODY_LIMIT;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use plinth_store::IdempotencyState;
use sha2::{Digest, Sha256};

fn cipher(bearer: &str, key: &str) -> ChaCha20Poly1305 {
    let mut h = Sha256::new();
    h.update(b"plinth-idempotency\0");
    h.update(bearer.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest: [u8; 32] = h.finalize().into();
    ChaCha20Poly1305::new(&Key::from(digest))
}

/// Encrypts a response body for storage: hex(nonce ‖ ciphertext).
fn seal(bearer: &str, key: &str, body: &[u8]) -> Option<String> {
    let mut nonce = [0u8; 12];
    rand::fill(&mut nonce);
    let sealed = cipher(bearer, key).encrypt(&Nonce::from(nonce), body).ok()?;
    Some(hex::encode([nonce.as_slice(), &sealed].concat()))
}

/// Decrypts a stored body; None when another token sealed it.
fn open(bearer: &str, key: &str, stored: &str) -> Option<Vec<u8>> {
    let raw = hex::decode(stored).ok()?;
    if raw.len() < 12 {
        return None;
    }
    let (nonce, sealed) = raw.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    cipher(bearer, key).decrypt(&Nonce::from(nonce), sealed).ok()
}

fn bearer(req: &Request) -> String {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' ').map(|(_, t)| t.trim().to_string()))
        .unwrap_or_default()
}

/// The header.
pub const HEADER: &str = "idempotency-key";

/// The middleware; runs after authentication.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).cloned() else { return next.run(req).await };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_string(),
        _ => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            )
            .into_response();
        }
    };
    let principal = match req.extensions().get::<Caller>() {
        Some(c) => c.principal.user_id.0.clone(),
        None => return next.run(req).await,
    };
    let bearer = bearer(&req);
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {BODY_LIMIT} bytes"),
            )
            .into_response();
        }
    };
    let mut h = Sha256::new();
    h.update(parts.method.as_str());
    h.update([0]);
    h.update(parts.uri.path());
    h.update([0]);
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());

    match state.store.idempotency_begin(&principal, &key, &request_hash).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyState::Mismatch) => ApiError::invalid(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key",
        )
        .with_constraint(serde_json::json!({ "rule": "idempotency-key-same-body" }))
        .into_response(),
        Ok(IdempotencyState::InProgress) => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_progress",
            "a request with this Idempotency-Key is still running; retry shortly",
        )
        .into_response(),
        Ok(IdempotencyState::Replay { status, content_type, body }) => {
            let Some(body) = open(&bearer, &key, &body) else {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_in_use",
                    "this Idempotency-Key was used with another token of the same user; use a new key",
                )
                .into_response();
            };
            let code = (status >= 400)
                .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            if let Some(ct) = content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            if let Some(c) = code {
                // The audit of the replayed refusal names the same code as the first.
                resp.extensions_mut().insert(crate::error::ErrorCode(c));
            }
            resp
        }
        Ok(IdempotencyState::Proceed) => {
            let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let (mut rparts, rbody) = resp.into_parts();
            let rbytes = match to_bytes(rbody, usize::MAX).await {
                Ok(b) => b,
                Err(e) => return ApiError::internal(e).into_response(),
            };
            let ct = rparts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let sealed = seal(&bearer, &key, &rbytes).unwrap_or_default();
            if let Err(e) =
                state.store.idempotency_finish(&principal, &key, rparts.status.as_u16(), ct.as_deref(), &sealed).await
            {
                tracing::error!("could not store the idempotent response: {e}");
            }
            rparts.headers.insert("idempotent-replayed", HeaderValue::from_static("false"));
            Response::from_parts(rparts, Body::from(rbytes))
        }
    }
}
