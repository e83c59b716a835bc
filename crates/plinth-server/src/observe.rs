//! The outermost middleware: gives each request an id, names its audit action, times it
//! for `/metrics`, and writes the audit record of every mutating request that failed
//! (successful changes are audited by the store, in their own transaction).

use crate::app::AppState;
use crate::context::{Actor, RequestCtx};
use crate::error::{ErrorCode, REQUEST_ID};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use plinth_api::RequestId;
use plinth_store::AuditEntry;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `POST /v1/projects` → `projects.create`; `POST /v1/hosts/{id}/cordon` → `hosts.cordon`.
pub fn action_name(method: &Method, route: &str) -> String {
    let segs: Vec<&str> = route.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segs.as_slice() {
        ["v1", rest @ ..] => rest,
        ["agent", "v1", rest @ ..] => return format!("agent.{}", rest.join(".")),
        // The web console's own: `POST /login` → `console.login`.
        [one @ ("login" | "logout")] => return format!("console.{one}"),
        // The console's create forms post to `/{resource}/new`: audited as `{resource}.create`.
        [resource, "new"] if *method == Method::POST => return format!("{resource}.create"),
        other => other,
    };
    let resource = rest.first().copied().unwrap_or("root");
    let last = rest.last().copied().unwrap_or("");
    if rest.len() > 2 && !last.starts_with('{') {
        return format!("{resource}.{last}");
    }
    // A member of a sub-collection (`PUT /v1/images/{id}/files/{role}` → `images.files.replace`).
    let sub = (rest.len() > 3).then(|| rest[rest.len() - 2]).filter(|s| !s.starts_with('{'));
    let verb = match *method {
        Method::POST if rest.len() == 1 => "create",
        Method::POST => "action",
        Method::PATCH => "update",
        Method::PUT => "replace",
        Method::DELETE => "delete",
        _ => "read",
    };
    match sub {
        Some(sub) => format!("{resource}.{sub}.{verb}"),
        None => format!("{resource}.{verb}"),
    }
}

/// The `{id}` path parameter's value, if the route has one.
fn target(route: &str, path: &str) -> Option<String> {
    let r: Vec<&str> = route.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    r.iter().position(|s| *s == "{id}").and_then(|i| p.get(i)).map(|s| s.to_string())
}

/// The middleware.
pub async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = RequestId::generate().0;
    let method = req.method().clone();
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let path = req.uri().path().to_string();
    let action = action_name(&method, &route);
    let actor = Arc::new(Mutex::new(Actor::default()));
    req.extensions_mut().insert(RequestCtx {
        request_id: request_id.clone(),
        action: action.clone(),
        actor: actor.clone(),
    });

    let mut resp = REQUEST_ID.scope(request_id.clone(), next.run(req)).await;

    let status = resp.status().as_u16();
    state.metrics.observe(method.as_str(), &route, status, start.elapsed());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let mutating = matches!(method, Method::POST | Method::PATCH | Method::PUT | Method::DELETE);
    if mutating && status >= 400 && route != "unmatched" {
        let who = actor.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let entry = AuditEntry { actor_user_id: who.user_id, actor_token_id: who.token_id, action, request_id };
        let code = resp.extensions().get::<ErrorCode>().map(|c| c.0.clone());
        let target = target(&route, &path);
        if let Err(e) =
            state.store.record_audit(&entry, target.as_deref(), who.tenant_id.as_deref(), status, code.as_deref()).await
        {
            tracing::error!("could not write the audit record of a refused request: {e}");
        }
    }
    resp
}

/// The answer to a request no route matched (404) or whose method a route lacks (405): a
/// problem with its own request id, counted in metrics under the route `unmatched`.
pub async fn unrouted(state: &AppState, method: &Method, status: axum::http::StatusCode) -> Response {
    use axum::response::IntoResponse;
    let start = Instant::now();
    let request_id = RequestId::generate().0;
    let (code, detail) = if status == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        ("method_not_allowed", format!("this path does not accept {method}"))
    } else {
        ("no_such_route", "no API route has this path".to_string())
    };
    let err = crate::error::ApiError::new(status, code, detail);
    let mut resp = REQUEST_ID.scope(request_id.clone(), async move { err.into_response() }).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    state.metrics.observe(method.as_str(), "unmatched", status.as_u16(), start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_for_resource_and_verb() {
        assert_eq!(action_name(&Method::POST, "/v1/projects"), "projects.create");
        assert_eq!(action_name(&Method::PATCH, "/v1/projects/{id}"), "projects.update");
        assert_eq!(action_name(&Method::DELETE, "/v1/host-join-tokens/{id}"), "host-join-tokens.delete");
        assert_eq!(action_name(&Method::POST, "/v1/hosts/{id}/cordon"), "hosts.cordon");
        assert_eq!(action_name(&Method::POST, "/agent/v1/enroll"), "agent.enroll");
        assert_eq!(action_name(&Method::PUT, "/v1/images/{id}/files/{role}"), "images.files.replace");
        assert_eq!(action_name(&Method::POST, "/login"), "console.login");
        assert_eq!(action_name(&Method::POST, "/instances/new"), "instances.create", "the API twin's name");
        assert_eq!(action_name(&Method::POST, "/instances/{id}/stop"), "instances.stop");
        assert_eq!(target("/v1/projects/{id}", "/v1/projects/prj_1").as_deref(), Some("prj_1"));
        assert_eq!(target("/v1/projects", "/v1/projects"), None);
    }
}
