//! The store conformance suite: every test runs against SQLite and against PostgreSQL.
//!
//! PostgreSQL comes from `PLINTH_TEST_DATABASE_URL` (the README's test command starts one
//! with `scripts/test-postgres`); each test gets its own fresh database.

use chrono::{Duration, Utc};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_store::{AuditEntry, IdempotencyState, LedgerOwner, Store, StoreError, Val, now_micros};
use std::collections::BTreeMap;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/plinth.db", dir.path().display());
    (Store::open(&url).await.expect("open sqlite"), dir)
}

async fn postgres() -> Store {
    let admin = std::env::var("PLINTH_TEST_DATABASE_URL").expect(
        "PLINTH_TEST_DATABASE_URL is not set: run the README's test command, or eval \"$(scripts/test-postgres)\"",
    );
    let name = format!("plinth_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let url = Store::create_postgres_database(&admin, &name).await.expect("create database");
    Store::open(&url).await.expect("open postgres")
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$name(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let store = super::postgres().await;
                super::$name(store).await;
            }
        }
    )*};
}

on_both!(
    migrations_are_recorded_and_repeatable,
    create_read_list_paginate,
    names_are_unique_and_a_refusal_writes_nothing,
    if_match_detects_a_stale_generation,
    concurrent_updates_are_never_lost,
    concurrent_if_match_updates_let_exactly_one_win,
    tenant_scope_hides_other_tenants,
    project_scope_narrows_to_bound_projects,
    delete_refuses_while_referenced,
    audit_is_written_with_the_change,
    idempotency_keys_replay_and_refuse_reuse,
    join_tokens_enrol_exactly_once,
    bootstrap_happens_once,
    tokens_carry_their_grants,
    named_leases_have_one_holder,
    operation_leases_and_saga_logs,
    composed_transactions_roll_back_whole,
    a_refused_write_in_a_transaction_is_reported_and_writes_nothing,
    images_are_seen_by_their_tenant_and_public_ones_by_all,
    blobs_are_collected_only_when_nothing_references_them,
    the_fleet_is_counted_and_ledger_records_are_tallied_at_commit,
    console_input_waits_in_order_for_its_host_until_acknowledged,
    console_sessions_act_as_their_token_until_revoked_and_are_forgotten_after_their_end,
    a_console_ticket_is_redeemed_once_even_by_racing_sockets,
);

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        actor_user_id: Some("usr_test".into()),
        actor_token_id: None,
        action: action.into(),
        request_id: RequestId::generate().0,
    }
}

fn tenant(name: &str) -> Tenant {
    let now = Utc::now();
    Tenant {
        id: TenantId::generate(),
        name: name.into(),
        display_name: name.into(),
        labels: BTreeMap::new(),
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn project(t: &Tenant, name: &str) -> Project {
    let now = Utc::now();
    Project {
        id: ProjectId::generate(),
        tenant_id: t.id.clone(),
        name: name.into(),
        description: String::new(),
        labels: BTreeMap::new(),
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn user(t: Option<&Tenant>, name: &str) -> User {
    let now = Utc::now();
    User {
        id: UserId::generate(),
        tenant_id: t.map(|t| t.id.clone()),
        name: name.into(),
        email: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn scope_of(t: &Tenant) -> Scope {
    Scope::Tenant { tenant_id: t.id.clone(), projects: None }
}

async fn migrations_are_recorded_and_repeatable(store: Store) {
    assert_eq!(store.applied_migrations().await.unwrap(), (1..=18).collect::<Vec<i64>>());
    store.migrate().await.expect("second run is harmless");
    store.migrate().await.expect("third run is harmless");
    assert_eq!(store.applied_migrations().await.unwrap(), (1..=18).collect::<Vec<i64>>());
    store.ping().await.unwrap();
}

async fn create_read_list_paginate(store: Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = tenant(&format!("t{i}"));
        store.insert(&t, &audit("tenants.create")).await.unwrap();
        ids.push(t.id.0.clone());
    }
    let got: Tenant = store.get(&Scope::Platform, &ids[2]).await.unwrap();
    assert_eq!(got.name, "t2");
    assert_eq!(got.generation, 1);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list::<Tenant>(&Scope::Platform, &[], 2, cursor.as_deref()).await.unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|t| t.id.0.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every item once, in creation order");

    let filtered = store.list::<Tenant>(&Scope::Platform, &[("name", "t3".into())], 10, None).await.unwrap();
    assert_eq!(filtered.items.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t3"], "tenants filter by name");
    let filtered = store.list::<Tenant>(&Scope::Platform, &[("display_name", "t3".into())], 10, None).await;
    assert!(
        matches!(filtered, Err(StoreError::Refused { code: "invalid_filter", .. })),
        "display_name is not a tenant filter"
    );
    let t = tenant("solo");
    store.insert(&t, &audit("tenants.create")).await.unwrap();
    let p = project(&t, "web");
    store.insert(&p, &audit("projects.create")).await.unwrap();
    let by_name = store.list::<Project>(&Scope::Platform, &[("name", "web".into())], 10, None).await.unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(by_name.items[0].id, p.id);
}

async fn names_are_unique_and_a_refusal_writes_nothing(store: Store) {
    let a = tenant("acme");
    store.insert(&a, &audit("tenants.create")).await.unwrap();
    let b = tenant("acme");
    let err = store.insert(&b, &audit("tenants.create")).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert!(matches!(store.get::<Tenant>(&Scope::Platform, &b.id.0).await, Err(StoreError::NotFound { .. })));
    let filter = AuditFilter { target: Some(b.id.0.clone()), ..Default::default() };
    let audit = store.list_audit(None, &filter, 10, None).await;
    assert!(audit.unwrap().items.is_empty(), "no audit record for a write that did not happen");

    // Same project name in two tenants is fine; twice in one is not.
    let other = tenant("other");
    store.insert(&other, &audit_entry()).await.unwrap();
    store.insert(&project(&a, "web"), &audit_entry()).await.unwrap();
    store.insert(&project(&other, "web"), &audit_entry()).await.unwrap();
    assert!(matches!(store.insert(&project(&a, "web"), &audit_entry()).await, Err(StoreError::AlreadyExists { .. })));
    // A project in a tenant that does not exist is refused by the reference.
    let ghost = tenant("ghost");
    assert!(matches!(
        store.insert(&project(&ghost, "x"), &audit_entry()).await,
        Err(StoreError::DanglingReference { .. })
    ));
}

fn audit_entry() -> AuditEntry {
    audit("test.write")
}

async fn if_match_detects_a_stale_generation(store: Store) {
    let t = tenant("gen");
    store.insert(&t, &audit_entry()).await.unwrap();
    let updated: Tenant = store
        .update(&Scope::Platform, &t.id.0, Some(1), &audit_entry(), |t: &mut Tenant| {
            t.display_name = "Gen One".into();
            Ok(vec![])
        })
        .await
        .unwrap();
    assert_eq!(updated.generation, 2);
    let stale = store
        .update(&Scope::Platform, &t.id.0, Some(1), &audit_entry(), |t: &mut Tenant| {
            t.display_name = "lost".into();
            Ok(vec![])
        })
        .await;
    match stale {
        Err(StoreError::GenerationMismatch { expected: 1, current: 2, .. }) => {}
        other => panic!("expected a generation mismatch, got {other:?}"),
    }
    let now: Tenant = store.get(&Scope::Platform, &t.id.0).await.unwrap();
    assert_eq!(now.display_name, "Gen One");
    assert_eq!(now.generation, 2);
}

async fn concurrent_updates_are_never_lost(store: Store) {
    let t = tenant("busy");
    store.insert(&t, &audit_entry()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let id = t.id.0.clone();
        tasks.push(tokio::spawn(async move {
            store
                .update(&Scope::Platform, &id, None, &audit_entry(), move |t: &mut Tenant| {
                    t.labels.insert(format!("k{i}"), "v".into());
                    Ok(vec![])
                })
                .await
                .map(|_: Tenant| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let now: Tenant = store.get(&Scope::Platform, &t.id.0).await.unwrap();
    assert_eq!(now.labels.len(), 24, "every concurrent change is kept");
    assert_eq!(now.generation, 25);
}

async fn concurrent_if_match_updates_let_exactly_one_win(store: Store) {
    let t = tenant("race");
    store.insert(&t, &audit_entry()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let id = t.id.0.clone();
        tasks.push(tokio::spawn(async move {
            store
                .update(&Scope::Platform, &id, Some(1), &audit_entry(), move |t: &mut Tenant| {
                    t.display_name = format!("writer {i}");
                    Ok(vec![])
                })
                .await
                .map(|_: Tenant| ())
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::GenerationMismatch { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 15));
}

async fn tenant_scope_hides_other_tenants(store: Store) {
    let a = tenant("alpha");
    let b = tenant("beta");
    store.insert(&a, &audit_entry()).await.unwrap();
    store.insert(&b, &audit_entry()).await.unwrap();
    let pa = project(&a, "secret");
    store.insert(&pa, &audit_entry()).await.unwrap();

    let as_b = scope_of(&b);
    assert!(matches!(store.get::<Project>(&as_b, &pa.id.0).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.get::<Tenant>(&as_b, &a.id.0).await, Err(StoreError::NotFound { .. })));
    assert!(store.list::<Project>(&as_b, &[], 100, None).await.unwrap().items.is_empty());
    let tenants = store.list::<Tenant>(&as_b, &[], 100, None).await.unwrap();
    assert_eq!(tenants.items.len(), 1);
    assert_eq!(tenants.items[0].id, b.id);
    let upd = store
        .update(&as_b, &pa.id.0, None, &audit_entry(), |p: &mut Project| {
            p.description = "pwned".into();
            Ok(vec![])
        })
        .await;
    assert!(matches!(upd, Err(StoreError::NotFound { .. })));
    assert!(matches!(
        store.delete::<Project>(&as_b, &pa.id.0, None, &audit_entry()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.list::<Project>(&Scope::Nothing, &[], 100, None).await.unwrap().items.is_empty());
    let still: Project = store.get(&scope_of(&a), &pa.id.0).await.unwrap();
    assert_eq!(still.description, "");
}

async fn project_scope_narrows_to_bound_projects(store: Store) {
    let a = tenant("narrow");
    store.insert(&a, &audit_entry()).await.unwrap();
    let p1 = project(&a, "one");
    let p2 = project(&a, "two");
    store.insert(&p1, &audit_entry()).await.unwrap();
    store.insert(&p2, &audit_entry()).await.unwrap();
    let scope = Scope::Tenant { tenant_id: a.id.clone(), projects: Some(vec![p2.id.clone()]) };
    let seen = store.list::<Project>(&scope, &[], 100, None).await.unwrap();
    assert_eq!(seen.items.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![p2.id.clone()]);
    assert!(store.get::<Project>(&scope, &p1.id.0).await.is_err());
}

async fn delete_refuses_while_referenced(store: Store) {
    let a = tenant("parent");
    store.insert(&a, &audit_entry()).await.unwrap();
    let p = project(&a, "child");
    store.insert(&p, &audit_entry()).await.unwrap();
    match store.delete::<Tenant>(&Scope::Platform, &a.id.0, None, &audit_entry()).await {
        Err(StoreError::HasDependents { dependent: "projects", .. }) => {}
        other => panic!("expected has-dependents, got {other:?}"),
    }
    store.delete::<Project>(&Scope::Platform, &p.id.0, None, &audit_entry()).await.unwrap();
    store.delete::<Tenant>(&Scope::Platform, &a.id.0, Some(1), &audit_entry()).await.unwrap();
    assert!(matches!(store.get::<Tenant>(&Scope::Platform, &a.id.0).await, Err(StoreError::NotFound { .. })));
}

async fn audit_is_written_with_the_change(store: Store) {
    let a = tenant("audited");
    let b = tenant("unseen");
    store.insert(&a, &audit("tenants.create")).await.unwrap();
    store.insert(&b, &audit("tenants.create")).await.unwrap();
    let p = project(&a, "app");
    store.insert(&p, &audit("projects.create")).await.unwrap();
    store
        .record_audit(&audit("projects.delete"), Some("prj_x"), Some(a.id.as_str()), 403, Some("forbidden"))
        .await
        .unwrap();

    let mine = store.list_audit(Some(&a.id), &AuditFilter::default(), 100, None).await.unwrap();
    let actions: Vec<_> = mine.items.iter().map(|r| (r.action.as_str(), r.status, r.result.as_str())).collect();
    assert_eq!(
        actions,
        vec![
            ("tenants.create", 201, "success"),
            ("projects.create", 201, "success"),
            ("projects.delete", 403, "failure")
        ]
    );
    assert!(mine.items.iter().all(|r| r.tenant_id.as_ref() == Some(&a.id)));
    let filter = AuditFilter { target: Some(p.id.0.clone()), ..Default::default() };
    let by_target = store.list_audit(None, &filter, 100, None).await;
    assert_eq!(by_target.unwrap().items.len(), 1);
    let all = store.list_audit(None, &AuditFilter::default(), 2, None).await.unwrap();
    assert_eq!(all.items.len(), 2);
    assert!(all.next_cursor.is_some());
    let future = AuditFilter { since: Some(Utc::now() + Duration::hours(1)), ..Default::default() };
    assert!(store.list_audit(None, &future, 100, None).await.unwrap().items.is_empty());
}

async fn idempotency_keys_replay_and_refuse_reuse(store: Store) {
    assert_eq!(store.idempotency_begin("usr_a", "k1", "h1").await.unwrap(), IdempotencyState::Proceed);
    assert_eq!(store.idempotency_begin("usr_a", "k1", "h1").await.unwrap(), IdempotencyState::InProgress);
    store.idempotency_finish("usr_a", "k1", 201, Some("application/json"), "{\"id\":1}").await.unwrap();
    assert_eq!(
        store.idempotency_begin("usr_a", "k1", "h1").await.unwrap(),
        IdempotencyState::Replay {
            status: 201,
            content_type: Some("application/json".into()),
            body: "{\"id\":1}".into()
        }
    );
    assert_eq!(store.idempotency_begin("usr_a", "k1", "h2").await.unwrap(), IdempotencyState::Mismatch);
    assert_eq!(
        store.idempotency_begin("usr_b", "k1", "h2").await.unwrap(),
        IdempotencyState::Proceed,
        "keys are per caller"
    );
    store.idempotency_finish("usr_b", "k1", 503, None, "").await.unwrap();
    assert_eq!(
        store.idempotency_begin("usr_b", "k1", "h2").await.unwrap(),
        IdempotencyState::Proceed,
        "server errors release the key"
    );
}

fn join_token(expires_in: Duration) -> HostJoinToken {
    let now = Utc::now();
    HostJoinToken {
        id: JoinTokenId::generate(),
        description: String::new(),
        rack_id: None,
        expires_at: now + expires_in,
        max_uses: 1,
        uses: 0,
        used_at: None,
        used_by_host_id: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn host(name: &str) -> Host {
    let now = Utc::now();
    Host {
        id: HostId::generate(),
        name: name.into(),
        site_id: None,
        rack_id: None,
        state: HostState::Enrolling,
        health: HostHealth::Unknown,
        ownership: Ownership::Shared,
        labels: BTreeMap::new(),
        traits: vec![],
        inventory: HostInventory::default(),
        scheduling: Default::default(),
        bmc: None,
        last_seen_at: None,
        fenced_by: None,
        fenced_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

async fn join_tokens_enrol_exactly_once(store: Store) {
    let tok = join_token(Duration::hours(1));
    store.insert_with(&tok, &[("secret_hash", Val::text("h"))], &audit_entry()).await.unwrap();
    let h = store.enroll_host(&tok.id.0, |hash| hash == "h", host("node-1"), "c1", &audit_entry()).await.unwrap();
    assert_eq!(store.host_credential_hash(&h.id.0).await.unwrap().as_deref(), Some("c1"));
    let again = store.enroll_host(&tok.id.0, |hash| hash == "h", host("node-2"), "c2", &audit_entry()).await;
    assert!(matches!(again, Err(StoreError::Refused { code: "join_token_used", .. })), "{again:?}");
    let used: HostJoinToken = store.get(&Scope::Platform, &tok.id.0).await.unwrap();
    assert_eq!(used.used_by_host_id, Some(h.id.clone()));

    let wrong = join_token(Duration::hours(1));
    store.insert_with(&wrong, &[("secret_hash", Val::text("h"))], &audit_entry()).await.unwrap();
    let bad = store.enroll_host(&wrong.id.0, |hash| hash == "nope", host("node-3"), "c3", &audit_entry()).await;
    assert!(matches!(bad, Err(StoreError::Refused { code: "invalid_join_token", .. })));

    let old = join_token(Duration::seconds(-1));
    store.insert_with(&old, &[("secret_hash", Val::text("h"))], &audit_entry()).await.unwrap();
    let late = store.enroll_host(&old.id.0, |hash| hash == "h", host("node-4"), "c4", &audit_entry()).await;
    assert!(matches!(late, Err(StoreError::Refused { code: "join_token_expired", .. })));
    let hosts = store.list::<Host>(&Scope::Platform, &[], 100, None).await.unwrap();
    assert_eq!(hosts.items.len(), 1, "refused enrolments create no host");
}

fn operator_bundle() -> (User, RoleBinding, ApiToken) {
    let now = Utc::now();
    let u = user(None, "operator");
    let b = RoleBinding {
        id: RoleBindingId::generate(),
        user_id: u.id.clone(),
        role: Role::Operator,
        tenant_id: None,
        project_id: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let t = ApiToken {
        id: TokenId::generate(),
        user_id: u.id.clone(),
        tenant_id: None,
        name: "bootstrap".into(),
        expires_at: None,
        revoked_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    (u, b, t)
}

async fn bootstrap_happens_once(store: Store) {
    assert!(!store.is_bootstrapped().await.unwrap());
    let (u, b, t) = operator_bundle();
    assert!(store.bootstrap_operator(&u, &b, &t, "hash").await.unwrap());
    let (u2, b2, t2) = operator_bundle();
    assert!(!store.bootstrap_operator(&u2, &b2, &t2, "hash2").await.unwrap());
    assert!(store.is_bootstrapped().await.unwrap());
    assert!(store.token_for_auth(&t2.id.0).await.unwrap().is_none());
}

async fn tokens_carry_their_grants(store: Store) {
    let (u, b, t) = operator_bundle();
    store.bootstrap_operator(&u, &b, &t, "hash").await.unwrap();
    let (row, grants) = store.token_for_auth(&t.id.0).await.unwrap().expect("token exists");
    assert_eq!(row.secret_hash, "hash");
    assert_eq!(row.user_id, u.id.0);
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].role, Role::Operator);
    // Revocation is a column the auth path sees at once.
    let revoked: ApiToken = store
        .update(&Scope::Platform, &t.id.0, None, &audit_entry(), |t: &mut ApiToken| {
            t.revoked_at = Some(Utc::now());
            Ok(vec![])
        })
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    let (row, _) = store.token_for_auth(&t.id.0).await.unwrap().unwrap();
    assert!(row.revoked_at.is_some());
    assert!(store.token_for_auth("tok_missing").await.unwrap().is_none());
}

async fn named_leases_have_one_holder(store: Store) {
    assert!(store.take_lease("billing", "srv_a", 60_000).await.unwrap());
    assert!(!store.take_lease("billing", "srv_b", 60_000).await.unwrap(), "a live lease has one holder");
    assert!(store.take_lease("billing", "srv_a", 60_000).await.unwrap(), "the holder renews");
    // An expired lease is taken over.
    assert!(store.take_lease("sweep", "srv_a", -1).await.unwrap());
    assert!(store.take_lease("sweep", "srv_b", 60_000).await.unwrap());
    // Racing takers of a free lease: exactly one wins.
    let mut tasks = vec![];
    for i in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(
            async move { s.take_lease("race", &format!("srv_{i}"), 60_000).await.unwrap_or(false) },
        ));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.unwrap() as u32;
    }
    assert_eq!(won, 1);
}

fn operation(kind: &str) -> Operation {
    let now = Utc::now();
    Operation {
        id: OperationId::generate(),
        kind: kind.into(),
        target: "ins_test".into(),
        tenant_id: None,
        project_id: None,
        status: OperationStatus::Running,
        done: 0,
        total: 2,
        message: String::new(),
        items: vec![],
        error: None,
        timings: vec![],
        requested_by: None,
        started_at: Some(now),
        finished_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

async fn operation_leases_and_saga_logs(store: Store) {
    let op = operation("instance.create");
    let mut tx = store.begin().await.unwrap();
    tx.insert(&op, &[]).await.unwrap();
    tx.set_saga(op.id.as_str(), Some("{}".into())).await.unwrap();
    tx.saga_append(op.id.as_str(), "quota", "do", None).await.unwrap();
    tx.saga_append(op.id.as_str(), "claim", "do", Some("x".into())).await.unwrap();
    tx.commit().await.unwrap();
    let log = store.saga_log(op.id.as_str()).await.unwrap();
    assert_eq!(log.iter().map(|e| e.step.as_str()).collect::<Vec<_>>(), ["quota", "claim"]);
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.resumable_operations().await.unwrap(), vec![op.id.0.clone()], "never leased: resumable");
    // A server holds a saga while its own lease (named by its owner id) is live.
    assert!(store.take_lease("srv_a", "srv_a", 60_000).await.unwrap());
    assert!(store.lease_operation(op.id.as_str(), "srv_a").await.unwrap());
    assert!(!store.lease_operation(op.id.as_str(), "srv_b").await.unwrap(), "held by srv_a");
    assert!(store.resumable_operations().await.unwrap().is_empty(), "a live server's saga is not resumable");
    assert!(store.take_lease("srv_a", "srv_a", -1).await.unwrap());
    assert_eq!(store.resumable_operations().await.unwrap().len(), 1, "a dead server's saga is resumable");
    assert!(store.lease_operation(op.id.as_str(), "srv_b").await.unwrap(), "and taken over");
    assert!(store.lease_operation(op.id.as_str(), "srv_b").await.unwrap(), "its holder takes it again");
    assert_eq!(store.resumable_operations().await.unwrap().len(), 1, "srv_b has no lease of its own yet");
    assert!(store.take_lease("srv_b", "srv_b", 60_000).await.unwrap());
    assert!(store.resumable_operations().await.unwrap().is_empty());
    assert_eq!(store.forget_expired_leases(now_micros()).await.unwrap(), 1, "srv_a's lease is forgotten");
    assert!(!store.lease_operation(op.id.as_str(), "srv_a").await.unwrap(), "srv_b still holds the saga");
    store.request_cancel(op.id.as_str()).await.unwrap();
    let (read, saga, cancel) = store.operation_saga(op.id.as_str()).await.unwrap().expect("a saga operation");
    assert_eq!((read.id, saga.as_str(), cancel), (op.id.clone(), "{}", true));
}

async fn composed_transactions_roll_back_whole(store: Store) {
    let t = tenant("acme");
    store.insert(&t, &audit("tenants.create")).await.unwrap();
    let p = project(&t, "web");
    {
        let mut tx = store.begin().await.unwrap();
        tx.insert(&p, &[]).await.unwrap();
        let op = operation("instance.create");
        tx.insert(&op, &[]).await.unwrap();
        // Dropped without commit.
    }
    assert!(store.get::<Project>(&Scope::Platform, p.id.as_str()).await.is_err(), "nothing of it was written");
    let mut tx = store.begin().await.unwrap();
    tx.insert(&p, &[]).await.unwrap();
    let mut got: Project = tx.get(&scope_of(&t), p.id.as_str()).await.unwrap();
    got.description = "changed".into();
    tx.save(&mut got).await.unwrap();
    tx.audit(&audit("projects.update"), p.id.as_str(), Some(t.id.as_str()), 200).await.unwrap();
    tx.commit().await.unwrap();
    let got: Project = store.get(&Scope::Platform, p.id.as_str()).await.unwrap();
    assert_eq!((got.generation, got.description.as_str()), (2, "changed"));
    // Another tenant's scope cannot read it inside a transaction either.
    let other = tenant("other");
    let mut tx = store.begin().await.unwrap();
    assert!(matches!(tx.get::<Project>(&scope_of(&other), p.id.as_str()).await, Err(StoreError::NotFound { .. })));
}

/// Inserts in a transaction may go to the database only with its commit (SQLite batches
/// them): a uniqueness refusal still names the object, whichever statement carried it, and
/// nothing else the transaction wrote survives.
async fn a_refused_write_in_a_transaction_is_reported_and_writes_nothing(store: Store) {
    let t = tenant("acme");
    store.insert(&t, &audit("tenants.create")).await.unwrap();
    let taken = project(&t, "web");
    store.insert(&taken, &audit("projects.create")).await.unwrap();
    let before = store.list_audit(None, &AuditFilter::default(), 100, None).await.unwrap().items.len();

    let first = project(&t, "db");
    let op = operation("instance.create");
    let mut tx = store.begin().await.unwrap();
    tx.insert(&first, &[]).await.unwrap();
    tx.audit(&audit("projects.create"), first.id.as_str(), Some(t.id.as_str()), 201).await.unwrap();
    let refused = tx.insert(&project(&t, "web"), &[]).await.and(tx.insert(&op, &[]).await);
    let out = match refused {
        Err(e) => Err(e),
        Ok(()) => tx.commit().await,
    };
    match out {
        Err(StoreError::AlreadyExists { kind, .. }) => assert_eq!(kind, "project"),
        other => panic!("a second project named web is refused as one, got {other:?}"),
    }
    assert!(store.get::<Project>(&Scope::Platform, first.id.as_str()).await.is_err(), "the first insert rolled back");
    assert!(store.get::<Operation>(&Scope::Platform, op.id.as_str()).await.is_err(), "the later insert too");
    let after = store.list_audit(None, &AuditFilter::default(), 100, None).await.unwrap().items.len();
    assert_eq!(after, before, "and its audit record");

    // The writer goes on: the same transaction again, without the duplicate, commits.
    let mut tx = store.begin().await.unwrap();
    tx.insert(&first, &[]).await.unwrap();
    tx.insert(&op, &[]).await.unwrap();
    tx.commit().await.unwrap();
    let got: Project = store.get(&Scope::Platform, first.id.as_str()).await.unwrap();
    assert_eq!(got.name, "db");
}

fn image(p: Option<&Project>, name: &str, status: ImageStatus, disk: Option<&str>) -> Image {
    let now = Utc::now();
    Image {
        id: ImageId::generate(),
        project_id: p.map(|p| p.id.clone()),
        tenant_id: p.map(|p| p.tenant_id.clone()),
        name: name.into(),
        description: String::new(),
        boot: ImageBoot::Disk,
        cmdline: None,
        status,
        failure: None,
        files: disk
            .map(|h| ImageFile {
                role: ImageFileRole::Disk,
                format: ImageFormat::Raw,
                sha256: h.into(),
                size_bytes: 512,
                virtual_size_bytes: Some(512),
            })
            .into_iter()
            .collect(),
        pending: if disk.is_some() { vec![] } else { vec![ImageFileRole::Disk] },
        labels: BTreeMap::new(),
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn sources() -> [(&'static str, Val); 1] {
    [("sources", Val::text("{}"))]
}

async fn images_are_seen_by_their_tenant_and_public_ones_by_all(store: Store) {
    let a = tenant("alpha");
    let b = tenant("beta");
    store.insert(&a, &audit_entry()).await.unwrap();
    store.insert(&b, &audit_entry()).await.unwrap();
    let (pa, pa2, pb) = (project(&a, "web"), project(&a, "db"), project(&b, "web"));
    for p in [&pa, &pa2, &pb] {
        store.insert(p, &audit_entry()).await.unwrap();
    }
    let public = image(None, "debian-12", ImageStatus::Available, Some(&"1".repeat(64)));
    let mine = image(Some(&pa), "debian-12", ImageStatus::Available, Some(&"2".repeat(64)));
    let other_project = image(Some(&pa2), "tools", ImageStatus::Importing, None);
    let theirs = image(Some(&pb), "secret", ImageStatus::Available, Some(&"3".repeat(64)));
    for i in [&public, &mine, &other_project, &theirs] {
        store.insert_with(i, &sources(), &audit_entry()).await.unwrap();
    }
    // Names are unique per project and among public images, not across them.
    for dup in [
        image(None, "debian-12", ImageStatus::Importing, None),
        image(Some(&pa), "debian-12", ImageStatus::Importing, None),
    ] {
        let e = store.insert_with(&dup, &sources(), &audit_entry()).await.unwrap_err();
        assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e:?}");
    }
    store
        .insert_with(&image(Some(&pb), "debian-12", ImageStatus::Importing, None), &sources(), &audit_entry())
        .await
        .unwrap();

    let ids = |p: &Page<Image>| p.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    let as_a = store.list_images(&scope_of(&a), &[], 100, None).await.unwrap();
    assert_eq!(ids(&as_a), vec![public.id.clone(), mine.id.clone(), other_project.id.clone()]);
    let narrowed = Scope::Tenant { tenant_id: a.id.clone(), projects: Some(vec![pa.id.clone()]) };
    assert_eq!(
        ids(&store.list_images(&narrowed, &[], 100, None).await.unwrap()),
        vec![public.id.clone(), mine.id.clone()]
    );
    let unbound = Scope::Tenant { tenant_id: a.id.clone(), projects: Some(vec![]) };
    assert_eq!(ids(&store.list_images(&unbound, &[], 100, None).await.unwrap()), vec![public.id.clone()]);
    assert!(store.list_images(&Scope::Nothing, &[], 100, None).await.unwrap().items.is_empty());
    let only_public = store.list_images(&scope_of(&a), &[("public", "true".into())], 100, None).await.unwrap();
    assert_eq!(ids(&only_public), vec![public.id.clone()]);
    let by_name = store.list_images(&scope_of(&a), &[("name", "debian-12".into())], 100, None).await.unwrap();
    assert_eq!(ids(&by_name), vec![public.id.clone(), mine.id.clone()]);
    let importing = store.list_images(&scope_of(&a), &[("status", "importing".into())], 100, None).await.unwrap();
    assert_eq!(ids(&importing), vec![other_project.id.clone()]);
    let page = store.list_images(&Scope::Platform, &[], 2, None).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let rest = store.list_images(&Scope::Platform, &[], 100, page.next_cursor.as_deref()).await.unwrap();
    assert_eq!(rest.items.len(), 3, "five images in two pages");
    assert!(store.list_images(&scope_of(&a), &[("tenant_id", "x".into())], 10, None).await.is_err());

    // Reads: B never sees A's project images; everybody sees the public one.
    assert!(store.get_image(&scope_of(&b), theirs.id.as_str()).await.is_ok());
    assert!(matches!(store.get_image(&scope_of(&b), mine.id.as_str()).await, Err(StoreError::NotFound { .. })));
    assert!(store.get_image(&scope_of(&b), public.id.as_str()).await.is_ok());
    // Writes go through the generic scope: a tenant cannot touch a public image or another
    // tenant's.
    for (scope, id) in [(scope_of(&a), &public.id), (scope_of(&b), &mine.id)] {
        let r = store
            .update(&scope, id.as_str(), None, &audit_entry(), |i: &mut Image| {
                i.description = "pwned".into();
                Ok(vec![])
            })
            .await;
        assert!(matches!(r, Err(StoreError::NotFound { .. })), "{r:?}");
    }

    // An instance's reference: the project's own image by name first, then a public one;
    // by id only its own project's or public images.
    let found = |p: &Project, r: &str| {
        let store = store.clone();
        let (p, r) = (p.id.clone(), r.to_string());
        async move { store.image_for_project(&p, &r).await.unwrap().map(|i| i.id) }
    };
    assert_eq!(found(&pa, "debian-12").await, Some(mine.id.clone()));
    assert_eq!(found(&pa2, "debian-12").await, Some(public.id.clone()));
    assert_eq!(found(&pb, "tools").await, None);
    assert_eq!(found(&pb, other_project.id.as_str()).await, None, "another tenant's image by id");
    assert_eq!(found(&pa2, mine.id.as_str()).await, None, "another project's image by id");
    assert_eq!(found(&pb, public.id.as_str()).await, Some(public.id.clone()));
    assert_eq!(store.image_sources(mine.id.as_str()).await.unwrap().as_deref(), Some("{}"));

    // A project holding images cannot be deleted.
    match store.delete::<Project>(&Scope::Platform, pa2.id.as_str(), None, &audit_entry()).await {
        Err(StoreError::HasDependents { dependent: "images", .. }) => {}
        other => panic!("expected has-dependents, got {other:?}"),
    }
}

async fn blobs_are_collected_only_when_nothing_references_them(store: Store) {
    let t = tenant("acme");
    store.insert(&t, &audit_entry()).await.unwrap();
    let p = project(&t, "web");
    store.insert(&p, &audit_entry()).await.unwrap();
    let now = Utc::now();
    let shape = Shape {
        id: ShapeId::generate(),
        name: "small".into(),
        description: String::new(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 1,
        gpu: None,
        cpu_policy: CpuPolicy::Shared,
        hugepages: Hugepages::None,
        runtime_class: RuntimeClass::Vm,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    store.insert(&shape, &audit_entry()).await.unwrap();
    let (held, booted, loose) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let mut tx = store.begin().await.unwrap();
    for h in [&held, &booted, &loose] {
        tx.upsert_blob(h, 512, "raw").await.unwrap();
        tx.upsert_blob(h, 512, "raw").await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(store.blob(&held).await.unwrap(), Some((512, "raw".to_string())));
    let img = image(Some(&p), "held", ImageStatus::Available, Some(&held));
    store.insert_with(&img, &sources(), &audit_entry()).await.unwrap();
    let gone = image(Some(&p), "gone", ImageStatus::Available, Some(&booted));
    store.insert_with(&gone, &sources(), &audit_entry()).await.unwrap();
    let inst = Instance {
        id: InstanceId::generate(),
        tenant_id: t.id.clone(),
        project_id: p.id.clone(),
        name: "web-1".into(),
        shape_id: shape.id.clone(),
        shape_name: shape.name.clone(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 1,
        gpu: None,
        cpu_policy: CpuPolicy::Shared,
        hugepages: Hugepages::None,
        runtime_class: RuntimeClass::Vm,
        image: "gone".into(),
        boot: Some(BootSource {
            image_id: gone.id.clone(),
            boot: ImageBoot::Disk,
            disk: Some(BlobRef { sha256: booted.clone(), size_bytes: 512, format: ImageFormat::Raw }),
            kernel: None,
            initrd: None,
            cmdline: None,
        }),
        placement_group_id: None,
        required_traits: vec![],
        forbidden_traits: vec![],
        dedicated_host: false,
        restart_policy: RestartPolicy::OnFailure,
        ssh_keys: vec![],
        has_user_data: false,
        labels: BTreeMap::new(),
        state: InstanceState::Stopped,
        lifecycle: Lifecycle::Active,
        action: None,
        power: PowerState::Stopped,
        spec_generation: 1,
        boot_generation: 0,
        host_id: None,
        claim: None,
        observed: None,
        runtime: None,
        warning: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    store.insert(&inst, &audit_entry()).await.unwrap();
    store.delete::<Image>(&Scope::Platform, gone.id.as_str(), None, &audit_entry()).await.unwrap();

    let later = now_micros() + 1_000_000;
    assert_eq!(store.unreferenced_blobs(later).await.unwrap(), vec![loose.clone()], "only the loose blob");
    assert!(store.unreferenced_blobs(0).await.unwrap().is_empty(), "young blobs are left alone");

    // The instance keeps its boot blob while it lives; deleted, it lets it go.
    let mut tx = store.begin().await.unwrap();
    assert!(tx.lock_blob(&booted).await.unwrap());
    assert!(tx.blob_referenced(&booted).await.unwrap());
    assert!(tx.blob_referenced(&held).await.unwrap());
    assert!(!tx.blob_referenced(&loose).await.unwrap());
    tx.forget_blob(&loose).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.blob(&loose).await.unwrap(), None);
    store
        .update(&Scope::Platform, inst.id.as_str(), None, &audit_entry(), |i: &mut Instance| {
            i.lifecycle = Lifecycle::Deleted;
            Ok(vec![])
        })
        .await
        .unwrap();
    assert_eq!(store.unreferenced_blobs(later).await.unwrap(), vec![booted.clone()]);
    // A failed image holds none of its files.
    store
        .update(&Scope::Platform, img.id.as_str(), None, &audit_entry(), |i: &mut Image| {
            i.status = ImageStatus::Failed;
            Ok(vec![])
        })
        .await
        .unwrap();
    assert_eq!(store.unreferenced_blobs(later).await.unwrap(), vec![held.clone(), booted.clone()]);
    assert_eq!(store.stale_imports(later).await.unwrap(), Vec::<String>::new());

    // Hosts fetch the blobs of public images, and of instances placed on them.
    let public_disk = "d".repeat(64);
    store
        .insert_with(&image(None, "pub", ImageStatus::Available, Some(&public_disk)), &sources(), &audit_entry())
        .await
        .unwrap();
    let pending = image(None, "later", ImageStatus::Importing, None);
    store.insert_with(&pending, &sources(), &audit_entry()).await.unwrap();
    assert!(store.host_may_fetch_blob("hst_any", &public_disk).await.unwrap());
    assert!(!store.host_may_fetch_blob("hst_any", &held).await.unwrap(), "a failed project image's file");
    assert!(!store.host_may_fetch_blob("hst_any", &booted).await.unwrap(), "no live instance on that host");
    assert_eq!(store.stale_imports(later).await.unwrap(), vec![pending.id.0.clone()]);
}

fn small_shape(name: &str, runtime_class: RuntimeClass) -> Shape {
    let now = Utc::now();
    Shape {
        id: ShapeId::generate(),
        name: name.into(),
        description: String::new(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 1,
        gpu: None,
        cpu_policy: CpuPolicy::Shared,
        hugepages: Hugepages::None,
        runtime_class,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

fn instance_of(p: &Project, shape: &Shape, name: &str, state: InstanceState, lifecycle: Lifecycle) -> Instance {
    let now = Utc::now();
    Instance {
        id: InstanceId::generate(),
        tenant_id: p.tenant_id.clone(),
        project_id: p.id.clone(),
        name: name.into(),
        shape_id: shape.id.clone(),
        shape_name: shape.name.clone(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 1,
        gpu: None,
        cpu_policy: CpuPolicy::Shared,
        hugepages: Hugepages::None,
        runtime_class: shape.runtime_class,
        image: "debian-12".into(),
        boot: None,
        placement_group_id: None,
        required_traits: vec![],
        forbidden_traits: vec![],
        dedicated_host: false,
        restart_policy: RestartPolicy::OnFailure,
        ssh_keys: vec![],
        has_user_data: false,
        labels: BTreeMap::new(),
        state,
        lifecycle,
        action: None,
        power: PowerState::Stopped,
        spec_generation: 1,
        boot_generation: 0,
        host_id: None,
        claim: None,
        observed: None,
        runtime: None,
        warning: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

async fn the_fleet_is_counted_and_ledger_records_are_tallied_at_commit(store: Store) {
    let t = tenant("acme");
    store.insert(&t, &audit_entry()).await.unwrap();
    let p = project(&t, "web");
    store.insert(&p, &audit_entry()).await.unwrap();
    let (vm, micro) = (small_shape("small", RuntimeClass::Vm), small_shape("tiny", RuntimeClass::Microvm));
    store.insert(&vm, &audit_entry()).await.unwrap();
    store.insert(&micro, &audit_entry()).await.unwrap();
    for (name, shape, state, lifecycle) in [
        ("a", &vm, InstanceState::Running, Lifecycle::Active),
        ("b", &vm, InstanceState::Running, Lifecycle::Active),
        ("c", &micro, InstanceState::Stopped, Lifecycle::Active),
        ("d", &vm, InstanceState::Deleted, Lifecycle::Deleted),
    ] {
        store.insert(&instance_of(&p, shape, name, state, lifecycle), &audit_entry()).await.unwrap();
    }
    let (quiet, beating) = (host("quiet"), host("beating"));
    store.insert(&quiet, &audit_entry()).await.unwrap();
    store.insert(&beating, &audit_entry()).await.unwrap();
    let beat = now_micros();
    let mut tx = store.begin().await.unwrap();
    tx.set_column("hosts", beating.id.as_str(), "heartbeat_at", Val::Int(Some(beat))).await.unwrap();
    tx.commit().await.unwrap();

    let f = store.fleet_counts().await.unwrap();
    let running_vm = ("running".to_string(), "vm".to_string(), 2);
    let stopped_micro = ("stopped".to_string(), "microvm".to_string(), 1);
    assert_eq!(f.instances, vec![running_vm, stopped_micro], "deleted instances are not counted");
    let mut hosts = f.hosts.clone();
    hosts.sort();
    let mut want = vec![
        (quiet.id.0.clone(), "enrolling".to_string(), None),
        (beating.id.0.clone(), "enrolling".to_string(), Some(beat)),
    ];
    want.sort();
    assert_eq!(hosts, want);

    // Usage records count when their transaction commits, never when it rolls back.
    let written = |s: &Store| s.ledger_records_written().into_iter().map(|(_, n)| n).sum::<u64>();
    assert_eq!(written(&store), 0);
    let owner = LedgerOwner {
        tenant_id: t.id.as_str(),
        project_id: p.id.as_str(),
        resource_id: "ins_x",
        resource_kind: "instance",
    };
    let interval = |meter| plinth_domain::metering::NewInterval {
        meter,
        dimension: "small".into(),
        multiplier: 1,
        attributes: BTreeMap::new(),
        start_at: beat,
        end_at: Some(beat + 1_000_000),
        first: true,
        period_start: beat,
    };
    let plan = plinth_domain::metering::LedgerPlan {
        close: vec![],
        insert: vec![interval(Meter::AllocatedSeconds), interval(Meter::RunningSeconds)],
    };
    let mut tx = store.begin().await.unwrap();
    tx.apply_ledger(&owner, &plan, "test").await.unwrap();
    drop(tx);
    assert_eq!(written(&store), 0, "a rolled-back transaction wrote nothing");
    let mut tx = store.begin().await.unwrap();
    tx.apply_ledger(&owner, &plan, "test").await.unwrap();
    tx.commit().await.unwrap();
    let by_meter: BTreeMap<Meter, u64> = store.ledger_records_written().into_iter().collect();
    assert_eq!((by_meter[&Meter::AllocatedSeconds], by_meter[&Meter::RunningSeconds]), (1, 1));
    assert_eq!(written(&store), 2);
    assert_eq!(written(&store.clone()), 2, "clones share the tally");
}

async fn console_input_waits_in_order_for_its_host_until_acknowledged(store: Store) {
    let t = tenant("acme");
    store.insert(&t, &audit_entry()).await.unwrap();
    let p = project(&t, "web");
    store.insert(&p, &audit_entry()).await.unwrap();
    let vm = small_shape("small", RuntimeClass::Vm);
    store.insert(&vm, &audit_entry()).await.unwrap();
    let inst = instance_of(&p, &vm, "a", InstanceState::Running, Lifecycle::Active);
    store.insert(&inst, &audit_entry()).await.unwrap();
    let (id, h, other) = (inst.id.as_str(), "hst_1", "hst_2");
    let push = |data: &'static str| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let seq = tx.console_input_push(id, h, data, 16, 0).await.unwrap();
            tx.commit().await.unwrap();
            seq
        }
    };
    assert_eq!(push("ls\n").await, Some(1));
    assert_eq!(push("pwd\n").await, Some(2));
    assert_eq!(push("too much input").await, None, "over 16 bytes waiting");
    let waiting = |host: &'static str| {
        let store = store.clone();
        async move {
            store
                .console_input_waiting(host, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.seq, r.data))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(waiting(h).await, vec![(1, "ls\n".to_string()), (2, "pwd\n".to_string())]);
    assert!(waiting(other).await.is_empty(), "another host's agent gets nothing");
    store.console_input_forget(other, &[(id.to_string(), 2)]).await.unwrap();
    assert_eq!(waiting(h).await.len(), 2, "nor can it acknowledge it away");
    store.console_input_forget(h, &[(id.to_string(), 2)]).await.unwrap();
    assert!(waiting(h).await.is_empty());
    assert_eq!(push("date\n").await, Some(3), "numbered after everything before, though nothing waits");
    // Input older than the cut goes with the next push (which itself waits).
    let mut tx = store.begin().await.unwrap();
    tx.console_input_push(id, h, "id\n", 16, now_micros() + 1).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(waiting(h).await, vec![(4, "id\n".to_string())], "what waited was older than the cut");
}

async fn console_sessions_act_as_their_token_until_revoked_and_are_forgotten_after_their_end(store: Store) {
    let (u, b, t) = operator_bundle();
    store.bootstrap_operator(&u, &b, &t, "hash").await.unwrap();
    let row = |id: &str, expires_at: i64| plinth_store::ConsoleSessionRow {
        id: id.to_string(),
        secret_hash: format!("hash-of-{id}"),
        token_id: t.id.0.clone(),
        user_id: u.id.0.clone(),
        created_at: 10,
        last_seen_at: 10,
        expires_at,
        revoked_at: None,
    };
    let old = row("ses_old", 100);
    store.console_session_create(&old, None, &audit("console.login"), 0).await.unwrap();
    let (s, token, grants) = store.console_session_for_auth("ses_old").await.unwrap().expect("made");
    assert_eq!(s, old);
    assert_eq!((token.secret_hash.as_str(), grants.len()), ("hash", 1), "the token and its grants come along");
    // A login forgets the sessions whose absolute end has passed.
    let new = row("ses_new", i64::MAX);
    store.console_session_create(&new, None, &audit("console.login"), 101).await.unwrap();
    assert!(store.console_session_for_auth("ses_old").await.unwrap().is_none());
    // A touch moves the last use only when it is older than asked.
    store.console_session_touch("ses_new", 50, 5).await.unwrap();
    assert_eq!(store.console_session_for_auth("ses_new").await.unwrap().unwrap().0.last_seen_at, 10);
    store.console_session_touch("ses_new", 50, 20).await.unwrap();
    assert_eq!(store.console_session_for_auth("ses_new").await.unwrap().unwrap().0.last_seen_at, 50);
    // Revoked once, audited once.
    assert!(store.console_session_revoke("ses_new", 60, None, &audit("console.logout")).await.unwrap());
    assert!(!store.console_session_revoke("ses_new", 61, None, &audit("console.logout")).await.unwrap());
    assert_eq!(store.console_session_for_auth("ses_new").await.unwrap().unwrap().0.revoked_at, Some(60));
    let filter = AuditFilter { action: Some("console.logout".into()), ..Default::default() };
    assert_eq!(store.list_audit(None, &filter, 10, None).await.unwrap().items.len(), 1);
    let filter = AuditFilter { target: Some("ses_new".into()), ..Default::default() };
    assert_eq!(store.list_audit(None, &filter, 10, None).await.unwrap().items.len(), 2, "its login and logout");
}

async fn a_console_ticket_is_redeemed_once_even_by_racing_sockets(store: Store) {
    let (u, b, t) = operator_bundle();
    store.bootstrap_operator(&u, &b, &t, "hash").await.unwrap();
    let session = plinth_store::ConsoleSessionRow {
        id: "ses_1".into(),
        secret_hash: "h".into(),
        token_id: t.id.0.clone(),
        user_id: u.id.0.clone(),
        created_at: 0,
        last_seen_at: 0,
        expires_at: i64::MAX,
        revoked_at: None,
    };
    store.console_session_create(&session, None, &audit("console.login"), 0).await.unwrap();
    let ticket = |id: &str, expires_at: i64| plinth_store::ConsoleTicketRow {
        id: id.to_string(),
        secret_hash: "th".into(),
        session_id: "ses_1".into(),
        instance_id: "ins_1".into(),
        read_only: true,
        created_at: 0,
        expires_at,
        used_at: None,
    };
    store.console_ticket_create(&ticket("ctk_old", 5), 0).await.unwrap();
    for n in 0..8 {
        store.console_ticket_create(&ticket(&format!("ctk_{n}"), 1_000), 10).await.unwrap();
    }
    assert!(store.console_ticket_take("ctk_old", 20).await.unwrap().is_none(), "forgotten once expired");
    let got = store.console_ticket_take("ctk_0", 20).await.unwrap().expect("the first redemption");
    assert!(got.read_only && got.used_at.is_none() && got.session_id == "ses_1", "{got:?}");
    assert!(store.console_ticket_take("ctk_0", 21).await.unwrap().is_none(), "never twice");
    // Racing redemptions of one ticket: exactly one wins, every time.
    for n in 1..8 {
        let id = format!("ctk_{n}");
        let (a, b2, c) = tokio::join!(
            store.console_ticket_take(&id, 30),
            store.console_ticket_take(&id, 30),
            store.console_ticket_take(&id, 30)
        );
        let won = [a, b2, c].into_iter().filter(|r| matches!(r, Ok(Some(_)))).count();
        assert_eq!(won, 1, "ticket {id}");
    }
}
