//! How console pages are answered: the [`Layout`] every page shares (title, who is logged
//! in, the navigation they may use), templates turned into HTML responses ([`Page`]), and
//! refusals and use-case errors as HTML pages with the status their API twin would answer.
//! An internal failure's detail goes to the log only, as for `/v1`.

use crate::app::{self, AppState, Caller, Kind};
use crate::error::current_request_id;
use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plinth_api::User;
use plinth_domain::authz::Scope;

/// What every page's frame shows.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub title: String,
    /// The logged-in user's name; `None` on the login page.
    pub user: Option<String>,
    /// Operators see the fleet's pages.
    pub operator: bool,
}

impl Layout {
    /// A page seen before login.
    pub fn anonymous(title: &str) -> Layout {
        Layout { title: title.to_string(), user: None, operator: false }
    }

    /// A page for the logged-in caller.
    pub async fn of(st: &AppState, caller: &Caller, title: impl Into<String>) -> Layout {
        let id = caller.principal.user_id.as_str();
        let user = match st.store.find::<User>(&Scope::Platform, id).await {
            Ok(Some(u)) => u.name,
            _ => id.to_string(),
        };
        Layout { title: title.into(), user: Some(user), operator: caller.principal.is_operator() }
    }
}

/// A rendered template as an HTML response (200 unless wrapped with a status).
pub struct Page<T>(pub T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => {
                let mut resp = html.into_response();
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
                resp
            }
            Err(e) => {
                tracing::error!(request_id = %current_request_id(), "console template failed: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be drawn").into_response()
            }
        }
    }
}

/// A template drawn as a piece of a page (a row, a badge) for a live update.
pub trait Fragment {
    /// The HTML; empty (and logged) if the template fails.
    fn html(&self) -> String;
}

impl<T: Template> Fragment for T {
    fn html(&self) -> String {
        self.render().unwrap_or_else(|e| {
            tracing::error!("console fragment failed: {e}");
            String::new()
        })
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    detail: String,
    code: Option<&'static str>,
    request_id: String,
}

/// A refusal as a page.
pub fn refusal(status: StatusCode, heading: &str, detail: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::anonymous(heading),
        heading: heading.to_string(),
        detail: detail.to_string(),
        code: None,
        request_id: current_request_id(),
    };
    (status, Page(page)).into_response()
}

/// A use case's failure as a page, with its API status and code; an internal failure
/// says only that the server failed and which request it was.
pub fn app_error(e: app::Error) -> Response {
    let status = StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let (heading, detail, code) = if e.kind == Kind::Internal {
        tracing::error!(request_id = %current_request_id(), "internal error: {}", e.detail);
        ("The server failed".to_string(), "The request id below identifies it in the server's log.".to_string(), None)
    } else {
        let heading = status.canonical_reason().unwrap_or("Refused").to_string();
        (heading, e.detail, Some(e.code))
    };
    let page =
        ErrorPage { layout: Layout::anonymous(&heading), heading, detail, code, request_id: current_request_id() };
    let mut resp = (status, Page(page)).into_response();
    if let Some(code) = code {
        resp.extensions_mut().insert(crate::error::ErrorCode(code.to_string()));
    }
    resp
}

/// The equivalent of a page or action, for the user's own scripts.
#[derive(Clone, Debug)]
pub struct Equivalent {
    pub plinth: String,
    pub curl: String,
}

impl Equivalent {
    /// `plinth <cli>`, and `curl` of `method path` (with `body`, JSON) on this server.
    pub fn new(cli: &str, method: &str, path: &str, body: Option<&str>) -> Equivalent {
        let mut curl = String::from("curl --cacert ca.pem -H \"Authorization: Bearer $PLINTH_TOKEN\"");
        if method != "GET" {
            curl.push_str(&format!(" -X {method}"));
        }
        if let Some(b) = body {
            curl.push_str(&format!(" -H 'Content-Type: application/json' -d '{b}'"));
        }
        curl.push_str(&format!(" \"$PLINTH_URL{path}\""));
        Equivalent { plinth: format!("plinth {cli}"), curl }
    }
}
