//! The application layer without HTTP: use cases called directly with a `Caller`, as the
//! console, the CLI tests and the reconcilers call them. What they answer and refuse is
//! what the API answers, before any status code exists.

use plinth_api::{Page, PageParams, Project, Shape, Tenant, TenantFilter, TokenId, UserId};
use plinth_domain::authz::Principal;
use plinth_server::app::{self, AppState, Caller, Kind};
use plinth_server::{ServerConfig, secrets};
use serde_json::json;

/// The state over a fresh SQLite store, and its bootstrap operator as a caller.
async fn operator() -> (AppState, Caller, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        plinth_store::Store::open(&format!("sqlite://{}/plinth.db", dir.path().display())).await.expect("open store");
    let secret = plinth_server::bootstrap(&store).await.expect("bootstrap").expect("a new platform");
    let token_id = secrets::record_id(&secret, secrets::API_TOKEN, TokenId::PREFIX).expect("a token id");
    let (row, grants) = store.token_for_auth(&token_id).await.expect("read token").expect("the token exists");
    let principal = Principal { user_id: UserId(row.user_id), token_id: TokenId(token_id), tenant_id: None, grants };
    let caller = Caller { principal, request_id: "test".into(), action: "test".into() };
    (AppState::new(store, ServerConfig::default()), caller, dir)
}

fn wire<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid body")
}

#[tokio::test]
async fn use_cases_run_and_refuse_without_http() {
    let (st, op, _dir) = operator().await;

    let tenant: Tenant = app::identity::tenants::create(&st, &op, wire(json!({ "name": "acme" }))).await.unwrap();
    let project: Project =
        app::identity::projects::create(&st, &op, wire(json!({ "tenant_id": tenant.id, "name": "web" })))
            .await
            .unwrap();
    let _: Shape =
        app::inventory::shapes::create(&st, &op, wire(json!({ "name": "small", "vcpus": 1, "memory_mib": 512 })))
            .await
            .unwrap();
    let listed: Page<Tenant> =
        app::identity::tenants::list(&st, &op, &PageParams::default(), TenantFilter::default()).await.unwrap();
    assert_eq!(listed.items.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["acme"]);

    // A name taken twice: the store's refusal comes back as a conflict with its code.
    let again = app::identity::tenants::create(&st, &op, wire(json!({ "name": "acme" }))).await.unwrap_err();
    assert_eq!((again.kind, again.code), (Kind::Conflict, "already_exists"));

    // A create that cannot resolve its image is refused before anything is claimed or
    // written: no instance exists afterwards.
    let refused = app::instances::create(
        &st,
        &op,
        wire(json!({ "project_id": project.id, "name": "vm1", "shape": "small", "image": "no-such-image" })),
    )
    .await
    .unwrap_err();
    assert_eq!((refused.kind, refused.code), (Kind::NotFound, "image_not_found"), "{}", refused.detail);
    let instances = app::instances::list(&st, &op, &PageParams::default(), wire(json!({}))).await.unwrap();
    assert!(instances.items.is_empty(), "a refused create wrote {:?}", instances.items);

    // Bad input is an input error with the field it names.
    let bad = app::identity::tenants::create(&st, &op, wire(json!({ "name": "Not A Label" }))).await.unwrap_err();
    assert_eq!(bad.kind, Kind::Invalid);
    assert_eq!(bad.constraint.as_ref().and_then(|c| c["field"].as_str()), Some("name"));
}
