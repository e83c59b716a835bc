//! The Plinth control-plane server: the `/v1` HTTP API and the agent protocol, with
//! authentication, authorisation, audit, idempotency and metrics around every handler.
//!
//! Three layers, dependencies pointing down only:
//! - [`api`] (with the middleware [`observe`], [`context`], [`idempotency`], [`extract`] and
//!   [`error`]): parses, authenticates, authorises the route and maps errors to
//!   `problem+json`; each handler calls one use case.
//! - [`app`](mod@app): the use cases, by domain, callable without HTTP (the console, tests and the
//!   reconcilers call them too), and the services they share: instance bookkeeping, the
//!   scheduler, sagas, reconcilers, wake-ups. They check input with `plinth-domain`'s rules,
//!   decide permission from the caller's [`Principal`](plinth_domain::authz::Principal), and
//!   call the store with the caller's scope; failures are [`app::Error`]s.
//! - `plinth-store` (the only SQL) and `plinth-domain` (pure rules).
//!
//! State lives only in the database, so replicas are interchangeable.

pub mod api;
pub mod app;
pub mod config;
pub mod console;
pub mod context;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod secrets;
pub mod tls;

use crate::api::{
    agent, audit, capacity, console as serial_console, floating_ips, health, host_ops, hosts, images, instances,
    invoices, ip_pools, join_tokens, network_interfaces, operations, placement_groups, projects, quotas, racks,
    role_bindings, security_groups, shapes, sites, snapshots, subnets, system, tenants, tokens, usage, users,
    volume_types, volumes, vpcs,
};
use crate::app::{AppState, reconcilers, saga, scheduler, signals};
pub use crate::config::ServerConfig;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use chrono::Utc;
use plinth_api::{ApiToken, Role, RoleBinding, RoleBindingId, TokenId, User, UserId};
use plinth_store::Store;
use std::future::Future;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes and their documents, before state and middleware.
struct Parts {
    /// `/v1/*`: authenticated.
    v1: Router<AppState>,
    /// Health, metrics, enrolment: unauthenticated.
    open: Router<AppState>,
    public_doc: OpenApi,
    agent_doc: OpenApi,
}

fn parts() -> Parts {
    let (v1, v1_doc) = OpenApiRouter::<AppState>::new()
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::get, tenants::update, tenants::delete))
        .routes(routes!(projects::list, projects::create))
        .routes(routes!(projects::get, projects::update, projects::delete))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::get, tokens::update, tokens::delete))
        .routes(routes!(tokens::revoke))
        .routes(routes!(role_bindings::list, role_bindings::create))
        .routes(routes!(role_bindings::get, role_bindings::update, role_bindings::delete))
        .routes(routes!(audit::list))
        .routes(routes!(sites::list, sites::create))
        .routes(routes!(sites::get, sites::update, sites::delete))
        .routes(routes!(racks::list, racks::create))
        .routes(routes!(racks::get, racks::update, racks::delete))
        .routes(routes!(hosts::list, hosts::create))
        .routes(routes!(hosts::get, hosts::update, hosts::delete))
        .routes(routes!(join_tokens::list, join_tokens::create))
        .routes(routes!(join_tokens::get, join_tokens::update, join_tokens::delete))
        .routes(routes!(shapes::list, shapes::create))
        .routes(routes!(shapes::get, shapes::update, shapes::delete))
        .routes(routes!(shapes::price))
        .routes(routes!(host_ops::cordon))
        .routes(routes!(host_ops::uncordon))
        .routes(routes!(host_ops::drain))
        .routes(routes!(host_ops::maintenance))
        .routes(routes!(host_ops::retire))
        .routes(routes!(host_ops::fence))
        .routes(routes!(host_ops::fail))
        .routes(routes!(capacity::host_allocations))
        .routes(routes!(capacity::summary))
        .routes(routes!(instances::list, instances::create))
        .routes(routes!(instances::get, instances::update, instances::delete))
        .routes(routes!(instances::start))
        .routes(routes!(instances::stop))
        .routes(routes!(instances::reboot))
        .routes(routes!(instances::resize))
        .routes(routes!(instances::rebuild))
        .routes(routes!(instances::events))
        .routes(routes!(serial_console::read))
        .routes(routes!(serial_console::input))
        .routes(routes!(images::list, images::create))
        .routes(routes!(images::get, images::update, images::delete))
        .routes(routes!(images::upload))
        .routes(routes!(placement_groups::list, placement_groups::create))
        .routes(routes!(placement_groups::get, placement_groups::delete))
        .routes(routes!(floating_ips::list, floating_ips::create))
        .routes(routes!(floating_ips::get, floating_ips::update, floating_ips::delete))
        .routes(routes!(floating_ips::attach))
        .routes(routes!(floating_ips::detach))
        .routes(routes!(ip_pools::list, ip_pools::create))
        .routes(routes!(ip_pools::get, ip_pools::update, ip_pools::delete))
        .routes(routes!(volume_types::list, volume_types::create))
        .routes(routes!(volume_types::get, volume_types::update, volume_types::delete))
        .routes(routes!(volumes::list, volumes::create))
        .routes(routes!(volumes::get, volumes::update, volumes::delete))
        .routes(routes!(volumes::extend))
        .routes(routes!(volumes::attach))
        .routes(routes!(volumes::detach))
        .routes(routes!(volumes::list_attachments))
        .routes(routes!(volumes::get_attachment))
        .routes(routes!(volumes::revert))
        .routes(routes!(snapshots::list, snapshots::create))
        .routes(routes!(snapshots::get, snapshots::delete))
        .routes(routes!(vpcs::list, vpcs::create))
        .routes(routes!(vpcs::get, vpcs::update, vpcs::delete))
        .routes(routes!(subnets::list, subnets::create))
        .routes(routes!(subnets::get, subnets::update, subnets::delete))
        .routes(routes!(network_interfaces::list, network_interfaces::create))
        .routes(routes!(network_interfaces::get, network_interfaces::update, network_interfaces::delete))
        .routes(routes!(network_interfaces::attach))
        .routes(routes!(network_interfaces::detach))
        .routes(routes!(security_groups::list, security_groups::create))
        .routes(routes!(security_groups::get, security_groups::update, security_groups::delete))
        .routes(routes!(security_groups::add_rule))
        .routes(routes!(security_groups::remove_rule))
        .routes(routes!(operations::list))
        .routes(routes!(operations::get))
        .routes(routes!(operations::cancel))
        .routes(routes!(usage::list))
        .routes(routes!(invoices::list))
        .routes(routes!(invoices::current))
        .routes(routes!(invoices::get))
        .routes(routes!(invoices::lines))
        .routes(routes!(invoices::line_evidence))
        .routes(routes!(invoices::finalize))
        .routes(routes!(invoices::void))
        .routes(routes!(invoices::credit_note))
        .routes(routes!(invoices::reconciliation))
        .routes(routes!(invoices::export))
        .routes(routes!(invoices::revenue))
        .routes(routes!(invoices::price_books, invoices::create_price_book))
        .routes(routes!(invoices::price_book))
        .routes(routes!(invoices::account, invoices::set_account))
        .routes(routes!(quotas::list, quotas::set))
        .routes(routes!(quotas::budgets, quotas::create_budget))
        .routes(routes!(quotas::delete_budget))
        .routes(routes!(quotas::credits, quotas::create_credit))
        .routes(routes!(quotas::commitments, quotas::create_commitment))
        .routes(routes!(system::list))
        .routes(routes!(system::run))
        .routes(routes!(system::clock))
        .split_for_parts();
    let (health, health_doc) = OpenApiRouter::<AppState>::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts();
    let (agent, agent_doc) = OpenApiRouter::<AppState>::new()
        .routes(routes!(agent::enroll))
        .routes(routes!(agent::desired))
        .routes(routes!(agent::inventory))
        .routes(routes!(agent::heartbeat))
        .routes(routes!(agent::observed))
        .routes(routes!(agent::volume_key))
        .routes(routes!(serial_console::ship))
        .routes(routes!(serial_console::take_input))
        .routes(routes!(usage::counters))
        .routes(routes!(images::blob))
        .split_for_parts();

    let mut public_doc = openapi::public_base();
    public_doc.merge(v1_doc);
    public_doc.merge(health_doc);
    let mut agent_base = openapi::agent_base();
    agent_base.merge(agent_doc);
    Parts {
        v1,
        open: health.merge(agent),
        public_doc: openapi::finish(public_doc),
        agent_doc: openapi::finish(agent_base),
    }
}

/// The public API's OpenAPI document.
pub fn public_openapi() -> OpenApi {
    parts().public_doc
}

/// The agent protocol's OpenAPI document.
pub fn agent_openapi() -> OpenApi {
    parts().agent_doc
}

/// The whole HTTP application over `store`, with default settings and no background
/// work (see [`serve`] for the running server).
pub fn app(store: Store) -> Router {
    app_with(AppState::new(store, ServerConfig::default()))
}

/// The whole HTTP application over `state`.
pub fn app_with(state: AppState) -> Router {
    let p = parts();
    let public_json = p.public_doc.to_pretty_json().unwrap_or_default();
    let agent_json = p.agent_doc.to_pretty_json().unwrap_or_default();
    let v1 =
        p.v1.route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
            .route_layer(from_fn_with_state(state.clone(), context::authenticate));
    let docs = Router::new()
        .route("/openapi.json", axum::routing::get(move || async move { json_doc(public_json) }))
        .route("/agent/openapi.json", axum::routing::get(move || async move { json_doc(agent_json) }));
    v1.merge(p.open)
        .merge(docs)
        .merge(console::router(state.clone()))
        .route_layer(from_fn_with_state(state.clone(), observe::observe))
        .fallback(|State(st): State<AppState>, method: Method| async move {
            observe::unrouted(&st, &method, StatusCode::NOT_FOUND).await
        })
        .method_not_allowed_fallback(|State(st): State<AppState>, method: Method| async move {
            observe::unrouted(&st, &method, StatusCode::METHOD_NOT_ALLOWED).await
        })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .with_state(state)
}

fn json_doc(s: String) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], s)
}

/// Serves the API on `listener` with settings from the environment
/// ([`ServerConfig::from_env`]) until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(store, ServerConfig::from_env(), listener, shutdown).await
}

/// Serves the API with `config`, running the background work beside it: the scheduler
/// cache refresh, the reconcilers and the sagas left running by a previous process.
pub async fn serve_with(
    store: Store,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(store, config, listener, shutdown).await
}

/// Like [`serve_with`], over HTTPS: TLS with `tls` on `listener` (see [`tls::TlsListener`]).
pub async fn serve_tls(
    store: Store,
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(store, config, tls::TlsListener::new(listener, tls)?, shutdown).await
}

async fn serve_on<L: axum::serve::Listener<Addr: std::fmt::Debug>>(
    store: Store,
    config: ServerConfig,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(store, config);
    // Hold this server's lease before any saga it starts can be seen as resumable.
    saga::take_server_lease(&state).await.map_err(std::io::Error::other)?;
    let background = start_background(&state);
    let out = axum::serve(listener, app_with(state.clone())).with_graceful_shutdown(shutdown).await;
    for h in background {
        h.abort();
    }
    state.tasks.abort_sagas();
    out
}

/// Starts the background work of a running server; the handles stop it.
pub fn start_background(st: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = vec![
        tokio::spawn(scheduler::refresh_loop(st.clone())),
        tokio::spawn(signals::change_feed(st.clone(), std::time::Duration::from_millis(500))),
        tokio::spawn(saga::keep_server_lease(st.clone())),
    ];
    handles.extend(reconcilers::start(st));
    handles
}

/// Creates the first operator (user `operator`, the operator role, a token) on an empty
/// platform and returns the token's secret; None when the platform already has one.
pub async fn bootstrap(store: &Store) -> Result<Option<String>, plinth_store::StoreError> {
    if store.is_bootstrapped().await? {
        return Ok(None);
    }
    let now = Utc::now();
    let user = User {
        id: UserId::generate(),
        tenant_id: None,
        name: "operator".into(),
        email: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let binding = RoleBinding {
        id: RoleBindingId::generate(),
        user_id: user.id.clone(),
        role: Role::Operator,
        tenant_id: None,
        project_id: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let token = ApiToken {
        id: TokenId::generate(),
        user_id: user.id.clone(),
        tenant_id: None,
        name: "bootstrap".into(),
        expires_at: None,
        revoked_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let secret = secrets::mint(secrets::API_TOKEN, token.id.as_str());
    let made = store.bootstrap_operator(&user, &binding, &token, &secrets::hash(&secret)).await?;
    Ok(made.then_some(secret))
}
