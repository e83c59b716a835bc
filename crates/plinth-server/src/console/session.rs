//! The web console's browser authentication: the session cookie, login and logout, the
//! middleware that admits a request with a valid session, and the cross-origin check on
//! every unsafe method.
//!
//! The cookie is `__Host-plinth_session` (`Secure; Path=/`, no `Domain`, `HttpOnly`,
//! `SameSite=Lax`) and holds a `pcs_…` secret whose hash the store keeps
//! ([`crate::app::identity::sessions`]). No token ever goes to the browser's storage or a
//! URL: login takes an API token in a form's body and answers with the cookie.

use super::render::{self, Layout, Page};
use crate::app::identity::sessions;
use crate::app::{AppState, Caller};
use crate::context::RequestCtx;
use askama::Template;
use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use plinth_api::ConsoleSessionId;
use serde::Deserialize;

/// The session cookie's name.
pub const COOKIE: &str = "__Host-plinth_session";

/// The session a request was admitted with (an extension set by [`require`]).
#[derive(Clone, Debug)]
pub struct Session(pub ConsoleSessionId);

/// The session secret the request's `Cookie` header carries, if any.
pub fn cookie_secret(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// `Set-Cookie` for a new session's secret.
fn set_cookie(secret: &str) -> HeaderValue {
    let max_age = sessions::SESSION_LIFETIME.as_secs();
    HeaderValue::from_str(&format!("{COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}"))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Set-Cookie` that makes the browser forget the session.
fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-plinth_session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// Whether an unsafe request comes from another site, by the rule of Go's
/// `CrossOriginProtection`: `Sec-Fetch-Site` when the browser sends it (only `same-origin`
/// and `none`, a user's own navigation, pass), else `Origin` against `Host`; a request with
/// neither header is not from a browser and passes (it carries no ambient cookie worth
/// forging: a script sets the header it likes).
pub fn cross_origin(method: &Method, headers: &HeaderMap) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
}

/// Whether a WebSocket upgrade comes from another site's page: judged as an unsafe
/// request is (WebSockets are not covered by CORS, and the upgrade is a GET); a client that
/// sends neither header is not a browser and passes (its first frame still needs a ticket).
pub fn cross_origin_upgrade(headers: &HeaderMap) -> bool {
    cross_origin(&Method::POST, headers)
}

/// Refuses unsafe requests from another site (403), before anything else looks at them.
pub async fn same_origin(req: Request, next: Next) -> Response {
    if cross_origin(req.method(), req.headers()) {
        return render::refusal(
            StatusCode::FORBIDDEN,
            "Cross-site request refused",
            "This page only accepts changes sent from its own pages.",
        );
    }
    next.run(req).await
}

/// Admits a request whose cookie names a valid session: the [`Caller`] and [`Session`]
/// become extensions, as `/v1`'s bearer authentication does. Without one, a page asks the
/// browser to log in (303 to `/login`, coming back here after) and anything else is 401.
pub async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let found = match cookie_secret(req.headers()) {
        Some(secret) => sessions::resolve(&st.store, secret).await.map_err(Some),
        None => Err(None),
    };
    let (session, principal) = match found {
        Ok(v) => v,
        Err(Some(e)) if e.kind == crate::app::Kind::Internal => return render::app_error(e),
        Err(why) => {
            return if req.method() == Method::GET {
                let next = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let to = format!("/login?next={}", urlencode(next));
                let mut resp = Redirect::to(&to).into_response();
                if why.is_some() {
                    resp.headers_mut().insert(header::SET_COOKIE, clear_cookie());
                }
                resp
            } else {
                render::refusal(StatusCode::UNAUTHORIZED, "Not logged in", "Log in again, then retry.")
            };
        }
    };
    crate::context::admit(&mut req, principal);
    req.extensions_mut().insert(Session(session));
    next.run(req).await
}

/// Percent-encodes `s` for a query value (keeps `/` readable in `next=`).
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after login: a path of this site only (never `//host` or a full URL).
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    layout: Layout,
    next: &'a str,
    error: Option<String>,
}

/// `GET /login?next=…`: the login form.
#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_form(axum::extract::Query(q): axum::extract::Query<LoginQuery>) -> Response {
    let next = local_path(q.next.as_deref());
    Page(LoginPage { layout: Layout::anonymous("Log in"), next, error: None }).into_response()
}

/// The login form's body.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: exchanges an API token for a session cookie, then goes to `next`.
pub async fn login(
    State(st): State<AppState>,
    req_ctx: axum::Extension<RequestCtx>,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = local_path(f.next.as_deref()).to_string();
    match sessions::login(&st.store, f.token.trim(), &req_ctx.request_id).await {
        Ok(made) => {
            if let Ok(mut actor) = req_ctx.actor.lock() {
                actor.user_id = Some(made.principal.user_id.0.clone());
                actor.token_id = Some(made.principal.token_id.0.clone());
            }
            let mut resp = Redirect::to(&next).into_response();
            resp.headers_mut().insert(header::SET_COOKIE, set_cookie(&made.secret));
            resp
        }
        Err(e) if e.kind == crate::app::Kind::Unauthenticated => {
            let page = LoginPage { layout: Layout::anonymous("Log in"), next: &next, error: Some(e.detail) };
            (StatusCode::UNAUTHORIZED, Page(page)).into_response()
        }
        Err(e) => render::app_error(e),
    }
}

/// `POST /logout`: ends the session (it stops working at once) and forgets the cookie.
pub async fn logout(
    State(st): State<AppState>,
    axum::Extension(Session(session)): axum::Extension<Session>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Response {
    if let Err(e) = sessions::logout(&st.store, &session, &caller.principal, &caller.request_id).await {
        return render::app_error(e);
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn only_same_site_browsers_and_non_browsers_may_change_things() {
        let post = Method::POST;
        assert!(!cross_origin(&Method::GET, &headers(&[("sec-fetch-site", "cross-site")])), "reads pass");
        assert!(!cross_origin(&post, &headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_origin(&post, &headers(&[("sec-fetch-site", "none")])));
        assert!(cross_origin(&post, &headers(&[("sec-fetch-site", "same-site")])), "a sibling subdomain is not us");
        assert!(cross_origin(&post, &headers(&[("sec-fetch-site", "cross-site")])));
        let same = headers(&[("origin", "https://127.0.0.1:7480"), ("host", "127.0.0.1:7480")]);
        assert!(!cross_origin(&post, &same));
        let other = headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:7480")]);
        assert!(cross_origin(&post, &other));
        assert!(cross_origin(&post, &headers(&[("origin", "null"), ("host", "a")])), "an opaque origin");
        assert!(!cross_origin(&post, &headers(&[("host", "a")])), "no browser header: not a browser");
    }

    #[test]
    fn the_cookie_is_found_among_others_and_next_stays_on_this_site() {
        let h = headers(&[("cookie", "theme=dark; __Host-plinth_session=pcs_x_y; other=1")]);
        assert_eq!(cookie_secret(&h), Some("pcs_x_y"));
        assert_eq!(cookie_secret(&headers(&[("cookie", "plinth_session=pcs_x")])), None, "the prefix is required");
        assert_eq!(local_path(Some("/instances?x=1")), "/instances?x=1");
        for bad in ["//evil.example/", "https://evil.example/", "/\\evil.example", "instances"] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(urlencode("/instances?a=b&c"), "/instances%3Fa%3Db%26c");
        let set = set_cookie("pcs_a_b");
        let set = set.to_str().expect("ascii");
        for flag in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(flag), "{set}");
        }
        assert!(!set.contains("Domain"), "{set}");
    }
}
