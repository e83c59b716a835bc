//! The web console: server-rendered HTML at `/`, beside `/v1`, over the same use cases.
//!
//! - [`session`]: browser login (an API token exchanged for a `__Host-` session cookie),
//!   logout, the session middleware and the cross-origin check on unsafe methods.
//! - [`pages`]: the pages and their actions, each calling the `app` use case its `/v1`
//!   twin calls (same tenancy, same operation and audit record).
//! - [`billing`]: invoices, their lines, and each line's evidence down to the transitions.
//! - [`create`]: the instance create form, its live price estimate and its refusals.
//! - [`dashboard`]: a tenant's first page (instances, the month's spend, quotas, operations).
//! - [`fleet`]: a host's page with its actions and operation progress (drain, abort), and
//!   the audit log (filter, CSV).
//! - [`live`]: the Server-Sent Events stream that keeps a tab's rows current.
//! - [`render`]: the shared page frame, templates as responses, errors as pages.
//! - [`terminal`]: the serial console's WebSocket (a one-time ticket in its first frame).
//! - [`assets`]: the CSS file, the serial console's script and the vendored scripts.
//!
//! Every console response carries a Content-Security-Policy that allows scripts, styles
//! and connections from this origin only (no inline script) and forbids framing.
//! Templates (askama, `templates/console/`) escape every value they print.

pub mod assets;
pub mod billing;
pub mod create;
pub mod dashboard;
pub mod fleet;
pub mod live;
pub mod pages;
pub mod render;
pub mod session;
pub mod terminal;

use crate::app::AppState;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};

/// The Content-Security-Policy of every console response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The CSP of the serial console's page: the same, but xterm.js draws its theme and cell
/// metrics into `<style>` elements it makes, which `style-src 'self'` would block. Scripts
/// stay `'self'` only.
pub const CSP_TERMINAL: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes; the caller adds `observe` around them with the API's.
pub fn router(state: AppState) -> Router<AppState> {
    let authed = Router::new()
        .route("/", get(dashboard::index))
        .route("/instances", get(pages::instance_list))
        .route("/instances/new", get(create::new_form).post(create::create))
        .route("/instances/new/estimate", get(create::estimate))
        .route("/instances/{id}", get(pages::instance_detail))
        // One route per action, so each is audited under its API twin's name
        // (`instances.stop`, as `POST /v1/instances/{id}/stop`).
        .route("/instances/{id}/start", post(pages::instance_start))
        .route("/instances/{id}/stop", post(pages::instance_stop))
        .route("/instances/{id}/reboot", post(pages::instance_reboot))
        .route("/hosts", get(pages::host_list))
        .route("/hosts/{id}", get(fleet::host_detail))
        .route("/hosts/{id}/cordon", post(fleet::host_cordon))
        .route("/hosts/{id}/uncordon", post(fleet::host_uncordon))
        .route("/hosts/{id}/drain", post(fleet::host_drain))
        .route("/operations/{id}/progress", get(fleet::operation_progress))
        .route("/operations/{id}/cancel", post(fleet::operation_cancel))
        .route("/audit", get(fleet::audit_log))
        .route("/audit/csv", get(fleet::audit_csv))
        .route("/invoices", get(billing::invoice_list))
        .route("/invoices/{id}", get(billing::invoice_detail))
        .route("/invoices/{id}/csv", get(billing::invoice_csv))
        .route("/invoices/{id}/lines/{number}", get(billing::line_evidence))
        .route("/events", get(live::events))
        .route("/instances/{id}/console/ticket", post(terminal::ticket))
        .route("/logout", post(session::logout))
        .route_layer(from_fn_with_state(state, session::require));
    Router::new()
        .route("/login", get(session::login_form).post(session::login))
        .merge(authed)
        .route_layer(from_fn(session::same_origin))
        .route("/assets/{file}", get(assets::serve))
        // Authenticated by the ticket in its first frame, not by the cookie.
        .route("/instances/{id}/console/ws", get(terminal::socket))
        .route_layer(from_fn(security_headers))
}

/// Adds the console's security headers to a response.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // A page may have set its own (the serial console's: [`CSP_TERMINAL`]).
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}
