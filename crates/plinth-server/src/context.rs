//! Per-request context: the request id, the audit action name, and the authenticated
//! caller. The `authenticate` middleware resolves `Authorization: Bearer plt_…` into a
//! [`Caller`] (the application layer's plain type); handlers take it with the [`Authed`]
//! extractor.

use crate::app::AppState;
pub use crate::app::Caller;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plinth_domain::authz::Principal;
use std::sync::{Arc, Mutex};

/// Who acted, filled in by authentication, read by the failure audit.
#[derive(Clone, Debug, Default)]
pub struct Actor {
    pub user_id: Option<String>,
    pub token_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// Set by the `observe` middleware on every request.
#[derive(Clone, Debug)]
pub struct RequestCtx {
    pub request_id: String,
    /// e.g. `projects.create`.
    pub action: String,
    pub actor: Arc<Mutex<Actor>>,
}

/// The authenticated caller of a `/v1` request, as an extractor: handlers take
/// `Authed(caller): Authed` and hand the plain [`Caller`] to the use cases.
#[derive(Clone, Debug)]
pub struct Authed(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Authed)
            .ok_or_else(|| ApiError::unauthenticated("send Authorization: Bearer plt_…"))
    }
}

pub(crate) fn bearer(parts: &axum::http::HeaderMap) -> Option<&str> {
    let v = parts.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Resolves the bearer token into a [`Caller`], or answers 401.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match resolve(&state, req.headers()).await {
        Ok(principal) => {
            admit(&mut req, principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Admits a request as `principal`: the failure audit learns who acted, and the request
/// carries the [`Caller`] the use cases take (bearer tokens here, console sessions too).
pub fn admit(req: &mut Request, principal: Principal) {
    let ctx = req.extensions().get::<RequestCtx>().cloned();
    let (request_id, action) = match &ctx {
        Some(c) => (c.request_id.clone(), c.action.clone()),
        None => ("-".into(), "-".into()),
    };
    if let Some(c) = ctx {
        let mut actor = c.actor.lock().unwrap_or_else(|e| e.into_inner());
        actor.user_id = Some(principal.user_id.0.clone());
        actor.token_id = Some(principal.token_id.0.clone());
        actor.tenant_id = principal.tenant_id.as_ref().map(|t| t.0.clone());
    }
    req.extensions_mut().insert(Caller { principal, request_id, action });
}

async fn resolve(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthenticated("send Authorization: Bearer plt_…"));
    };
    Ok(crate::app::identity::sessions::principal_for_token(&state.store, token).await?)
}
