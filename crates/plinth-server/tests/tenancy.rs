//! The tenancy matrix: every operation of the public API, classified, run as another
//! tenant's admin (and member) against tenant A's objects, as a tenant against operator-only
//! endpoints, and without valid credentials.
//!
//! The classification is checked against `plinth_server::public_openapi()`: an operation
//! in the document that is not in [`MATRIX`] fails the test, so a new endpoint cannot
//! escape the matrix.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// What kind of object an operation's `{id}` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obj {
    Tenant,
    Project,
    User,
    Token,
    RoleBinding,
    Site,
    Rack,
    Host,
    JoinToken,
    Shape,
    Instance,
    Group,
    Operation,
    Image,
    Usage,
    Invoice,
    Budget,
    Credit,
    Commitment,
    PriceBook,
    Vpc,
    Subnet,
    Nic,
    SecGroup,
    IpPool,
    FloatingIp,
    VolumeType,
    Volume,
}

/// How an operation must behave for a tenant's caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Unauthenticated system endpoint: 200 without a token.
    Public,
    /// A list of tenant-scoped objects: another tenant's objects never appear. The `Obj`
    /// is the kind listed, for a positive control (the caller's own objects do appear).
    TenantList(Obj),
    /// Readable by tenants (platform catalogue, own audit log): 200 for a tenant-admin.
    TenantReadable(Option<Obj>),
    /// The path names one tenant-scoped object: another tenant gets 404 not_found, exactly
    /// as for an id that never existed.
    OtherTenant(Obj),
    /// A create whose body may name tenant-scoped objects (tenant_id, user_id,
    /// project_id): naming another tenant's object is answered exactly as naming one
    /// that never existed, and writes nothing.
    OtherTenantRef,
    /// Operators only: a tenant's caller gets 403 forbidden, whatever it names.
    OperatorOnly(Option<Obj>),
}

use Class::*;

/// (method, path, operation_id, class) for every operation of the public document.
const MATRIX: &[(&str, &str, &str, Class)] = &[
    ("GET", "/v1/tenants", "tenant_list", TenantList(Obj::Tenant)),
    ("POST", "/v1/tenants", "tenant_create", OperatorOnly(None)),
    ("GET", "/v1/tenants/{id}", "tenant_view", OtherTenant(Obj::Tenant)),
    ("PATCH", "/v1/tenants/{id}", "tenant_update", OtherTenant(Obj::Tenant)),
    ("DELETE", "/v1/tenants/{id}", "tenant_delete", OtherTenant(Obj::Tenant)),
    ("GET", "/v1/projects", "project_list", TenantList(Obj::Project)),
    ("POST", "/v1/projects", "project_create", OtherTenantRef),
    ("GET", "/v1/projects/{id}", "project_view", OtherTenant(Obj::Project)),
    ("PATCH", "/v1/projects/{id}", "project_update", OtherTenant(Obj::Project)),
    ("DELETE", "/v1/projects/{id}", "project_delete", OtherTenant(Obj::Project)),
    ("GET", "/v1/users", "user_list", TenantList(Obj::User)),
    ("POST", "/v1/users", "user_create", OtherTenantRef),
    ("GET", "/v1/users/{id}", "user_view", OtherTenant(Obj::User)),
    ("PATCH", "/v1/users/{id}", "user_update", OtherTenant(Obj::User)),
    ("DELETE", "/v1/users/{id}", "user_delete", OtherTenant(Obj::User)),
    ("GET", "/v1/tokens", "token_list", TenantList(Obj::Token)),
    ("POST", "/v1/tokens", "token_create", OtherTenantRef),
    ("GET", "/v1/tokens/{id}", "token_view", OtherTenant(Obj::Token)),
    ("PATCH", "/v1/tokens/{id}", "token_update", OtherTenant(Obj::Token)),
    ("DELETE", "/v1/tokens/{id}", "token_delete", OtherTenant(Obj::Token)),
    ("POST", "/v1/tokens/{id}/revoke", "token_revoke", OtherTenant(Obj::Token)),
    ("GET", "/v1/role-bindings", "role_binding_list", TenantList(Obj::RoleBinding)),
    ("POST", "/v1/role-bindings", "role_binding_create", OtherTenantRef),
    ("GET", "/v1/role-bindings/{id}", "role_binding_view", OtherTenant(Obj::RoleBinding)),
    ("PATCH", "/v1/role-bindings/{id}", "role_binding_update", OtherTenant(Obj::RoleBinding)),
    ("DELETE", "/v1/role-bindings/{id}", "role_binding_delete", OtherTenant(Obj::RoleBinding)),
    ("GET", "/v1/audit-log", "audit_list", TenantReadable(None)),
    ("GET", "/v1/sites", "site_list", OperatorOnly(None)),
    ("POST", "/v1/sites", "site_create", OperatorOnly(None)),
    ("GET", "/v1/sites/{id}", "site_view", OperatorOnly(Some(Obj::Site))),
    ("PATCH", "/v1/sites/{id}", "site_update", OperatorOnly(Some(Obj::Site))),
    ("DELETE", "/v1/sites/{id}", "site_delete", OperatorOnly(Some(Obj::Site))),
    ("GET", "/v1/racks", "rack_list", OperatorOnly(None)),
    ("POST", "/v1/racks", "rack_create", OperatorOnly(None)),
    ("GET", "/v1/racks/{id}", "rack_view", OperatorOnly(Some(Obj::Rack))),
    ("PATCH", "/v1/racks/{id}", "rack_update", OperatorOnly(Some(Obj::Rack))),
    ("DELETE", "/v1/racks/{id}", "rack_delete", OperatorOnly(Some(Obj::Rack))),
    ("GET", "/v1/hosts", "host_list", OperatorOnly(None)),
    ("POST", "/v1/hosts", "host_create", OperatorOnly(None)),
    ("GET", "/v1/hosts/{id}", "host_view", OperatorOnly(Some(Obj::Host))),
    ("PATCH", "/v1/hosts/{id}", "host_update", OperatorOnly(Some(Obj::Host))),
    ("DELETE", "/v1/hosts/{id}", "host_delete", OperatorOnly(Some(Obj::Host))),
    ("GET", "/v1/host-join-tokens", "host_join_token_list", OperatorOnly(None)),
    ("POST", "/v1/host-join-tokens", "host_join_token_create", OperatorOnly(None)),
    ("GET", "/v1/host-join-tokens/{id}", "host_join_token_view", OperatorOnly(Some(Obj::JoinToken))),
    ("PATCH", "/v1/host-join-tokens/{id}", "host_join_token_update", OperatorOnly(Some(Obj::JoinToken))),
    ("DELETE", "/v1/host-join-tokens/{id}", "host_join_token_delete", OperatorOnly(Some(Obj::JoinToken))),
    ("GET", "/v1/shapes", "shape_list", TenantReadable(None)),
    ("POST", "/v1/shapes", "shape_create", OperatorOnly(None)),
    ("GET", "/v1/shapes/{id}", "shape_view", TenantReadable(Some(Obj::Shape))),
    ("PATCH", "/v1/shapes/{id}", "shape_update", OperatorOnly(Some(Obj::Shape))),
    ("DELETE", "/v1/shapes/{id}", "shape_delete", OperatorOnly(Some(Obj::Shape))),
    ("GET", "/v1/shapes/{id}/price", "shape_price", TenantReadable(Some(Obj::Shape))),
    ("POST", "/v1/hosts/{id}/cordon", "host_cordon", OperatorOnly(Some(Obj::Host))),
    ("POST", "/v1/hosts/{id}/uncordon", "host_uncordon", OperatorOnly(Some(Obj::Host))),
    ("POST", "/v1/hosts/{id}/drain", "host_drain", OperatorOnly(Some(Obj::Host))),
    ("POST", "/v1/hosts/{id}/maintenance", "host_maintenance", OperatorOnly(Some(Obj::Host))),
    ("POST", "/v1/hosts/{id}/retire", "host_retire", OperatorOnly(Some(Obj::Host))),
    ("POST", "/v1/hosts/{id}/fence", "host_fence", OperatorOnly(Some(Obj::Host))),
    ("POST", "/v1/hosts/{id}/fail", "host_fail", OperatorOnly(Some(Obj::Host))),
    ("GET", "/v1/hosts/{id}/allocations", "host_allocations", OperatorOnly(Some(Obj::Host))),
    ("GET", "/v1/capacity", "capacity_summary", OperatorOnly(None)),
    ("GET", "/v1/system/background-tasks", "background_task_list", OperatorOnly(None)),
    ("POST", "/v1/system/background-tasks/{name}/run", "background_task_run", OperatorOnly(None)),
    ("GET", "/v1/instances", "instance_list", TenantList(Obj::Instance)),
    ("POST", "/v1/instances", "instance_create", OtherTenantRef),
    ("GET", "/v1/instances/{id}", "instance_view", OtherTenant(Obj::Instance)),
    ("PATCH", "/v1/instances/{id}", "instance_update", OtherTenant(Obj::Instance)),
    ("DELETE", "/v1/instances/{id}", "instance_delete", OtherTenant(Obj::Instance)),
    ("POST", "/v1/instances/{id}/start", "instance_start", OtherTenant(Obj::Instance)),
    ("POST", "/v1/instances/{id}/stop", "instance_stop", OtherTenant(Obj::Instance)),
    ("POST", "/v1/instances/{id}/reboot", "instance_reboot", OtherTenant(Obj::Instance)),
    ("POST", "/v1/instances/{id}/resize", "instance_resize", OtherTenant(Obj::Instance)),
    ("POST", "/v1/instances/{id}/rebuild", "instance_rebuild", OtherTenant(Obj::Instance)),
    ("GET", "/v1/instances/{id}/events", "instance_events", OtherTenant(Obj::Instance)),
    ("GET", "/v1/instances/{id}/console", "instance_console", OtherTenant(Obj::Instance)),
    ("POST", "/v1/instances/{id}/console/input", "instance_console_input", OtherTenant(Obj::Instance)),
    ("GET", "/v1/placement-groups", "placement_group_list", TenantList(Obj::Group)),
    ("POST", "/v1/placement-groups", "placement_group_create", OtherTenantRef),
    ("GET", "/v1/placement-groups/{id}", "placement_group_view", OtherTenant(Obj::Group)),
    ("DELETE", "/v1/placement-groups/{id}", "placement_group_delete", OtherTenant(Obj::Group)),
    ("GET", "/v1/ip-pools", "ip_pool_list", TenantReadable(None)),
    ("POST", "/v1/ip-pools", "ip_pool_create", OperatorOnly(None)),
    ("GET", "/v1/ip-pools/{id}", "ip_pool_view", TenantReadable(Some(Obj::IpPool))),
    ("PATCH", "/v1/ip-pools/{id}", "ip_pool_update", OperatorOnly(Some(Obj::IpPool))),
    ("DELETE", "/v1/ip-pools/{id}", "ip_pool_delete", OperatorOnly(Some(Obj::IpPool))),
    ("GET", "/v1/floating-ips", "floating_ip_list", TenantList(Obj::FloatingIp)),
    ("POST", "/v1/floating-ips", "floating_ip_create", OtherTenantRef),
    ("GET", "/v1/floating-ips/{id}", "floating_ip_view", OtherTenant(Obj::FloatingIp)),
    ("PATCH", "/v1/floating-ips/{id}", "floating_ip_update", OtherTenant(Obj::FloatingIp)),
    ("DELETE", "/v1/floating-ips/{id}", "floating_ip_delete", OtherTenant(Obj::FloatingIp)),
    ("POST", "/v1/floating-ips/{id}/attach", "floating_ip_attach", OtherTenant(Obj::FloatingIp)),
    ("POST", "/v1/floating-ips/{id}/detach", "floating_ip_detach", OtherTenant(Obj::FloatingIp)),
    ("GET", "/v1/volume-types", "volume_type_list", TenantReadable(None)),
    ("POST", "/v1/volume-types", "volume_type_create", OperatorOnly(None)),
    ("GET", "/v1/volume-types/{id}", "volume_type_view", TenantReadable(Some(Obj::VolumeType))),
    ("PATCH", "/v1/volume-types/{id}", "volume_type_update", OperatorOnly(Some(Obj::VolumeType))),
    ("DELETE", "/v1/volume-types/{id}", "volume_type_delete", OperatorOnly(Some(Obj::VolumeType))),
    ("GET", "/v1/volumes", "volume_list", TenantList(Obj::Volume)),
    ("POST", "/v1/volumes", "volume_create", OtherTenantRef),
    ("GET", "/v1/volumes/{id}", "volume_view", OtherTenant(Obj::Volume)),
    ("PATCH", "/v1/volumes/{id}", "volume_update", OtherTenant(Obj::Volume)),
    ("DELETE", "/v1/volumes/{id}", "volume_delete", OtherTenant(Obj::Volume)),
    ("POST", "/v1/volumes/{id}/extend", "volume_extend", OtherTenant(Obj::Volume)),
    ("POST", "/v1/volumes/{id}/attach", "volume_attach", OtherTenant(Obj::Volume)),
    ("POST", "/v1/volumes/{id}/detach", "volume_detach", OtherTenant(Obj::Volume)),
    // The worlds' instances never stop (no agent runs), so none has an attachment to list:
    // the list is only checked to answer a tenant (storage_api checks what it holds).
    ("GET", "/v1/volume-attachments", "volume_attachment_list", TenantReadable(None)),
    ("GET", "/v1/volume-attachments/{id}", "volume_attachment_view", OtherTenant(Obj::Volume)),
    ("POST", "/v1/volumes/{id}/revert", "volume_revert", OtherTenant(Obj::Volume)),
    // No agent runs, so no volume here is made and none has a snapshot: the snapshot routes
    // are checked with a volume's id (storage_api checks another tenant's real snapshot).
    ("GET", "/v1/snapshots", "snapshot_list", TenantReadable(None)),
    ("POST", "/v1/snapshots", "snapshot_create", OtherTenantRef),
    ("GET", "/v1/snapshots/{id}", "snapshot_view", OtherTenant(Obj::Volume)),
    ("DELETE", "/v1/snapshots/{id}", "snapshot_delete", OtherTenant(Obj::Volume)),
    ("GET", "/v1/vpcs", "vpc_list", TenantList(Obj::Vpc)),
    ("POST", "/v1/vpcs", "vpc_create", OtherTenantRef),
    ("GET", "/v1/vpcs/{id}", "vpc_view", OtherTenant(Obj::Vpc)),
    ("PATCH", "/v1/vpcs/{id}", "vpc_update", OtherTenant(Obj::Vpc)),
    ("DELETE", "/v1/vpcs/{id}", "vpc_delete", OtherTenant(Obj::Vpc)),
    ("GET", "/v1/subnets", "subnet_list", TenantList(Obj::Subnet)),
    ("POST", "/v1/subnets", "subnet_create", OtherTenantRef),
    ("GET", "/v1/subnets/{id}", "subnet_view", OtherTenant(Obj::Subnet)),
    ("PATCH", "/v1/subnets/{id}", "subnet_update", OtherTenant(Obj::Subnet)),
    ("DELETE", "/v1/subnets/{id}", "subnet_delete", OtherTenant(Obj::Subnet)),
    ("GET", "/v1/network-interfaces", "network_interface_list", TenantList(Obj::Nic)),
    ("POST", "/v1/network-interfaces", "network_interface_create", OtherTenantRef),
    ("GET", "/v1/network-interfaces/{id}", "network_interface_view", OtherTenant(Obj::Nic)),
    ("PATCH", "/v1/network-interfaces/{id}", "network_interface_update", OtherTenant(Obj::Nic)),
    ("DELETE", "/v1/network-interfaces/{id}", "network_interface_delete", OtherTenant(Obj::Nic)),
    ("POST", "/v1/instances/{id}/network-interfaces", "instance_network_interface_attach", OtherTenant(Obj::Instance)),
    (
        "DELETE",
        "/v1/instances/{id}/network-interfaces/{nic_id}",
        "instance_network_interface_detach",
        OtherTenant(Obj::Instance),
    ),
    ("GET", "/v1/security-groups", "security_group_list", TenantList(Obj::SecGroup)),
    ("POST", "/v1/security-groups", "security_group_create", OtherTenantRef),
    ("GET", "/v1/security-groups/{id}", "security_group_view", OtherTenant(Obj::SecGroup)),
    ("PATCH", "/v1/security-groups/{id}", "security_group_update", OtherTenant(Obj::SecGroup)),
    ("DELETE", "/v1/security-groups/{id}", "security_group_delete", OtherTenant(Obj::SecGroup)),
    ("POST", "/v1/security-groups/{id}/rules", "security_group_rule_create", OtherTenant(Obj::SecGroup)),
    ("DELETE", "/v1/security-groups/{id}/rules/{rule_id}", "security_group_rule_delete", OtherTenant(Obj::SecGroup)),
    ("GET", "/v1/operations", "operation_list", TenantList(Obj::Operation)),
    ("GET", "/v1/operations/{id}", "operation_view", OtherTenant(Obj::Operation)),
    ("POST", "/v1/operations/{id}/cancel", "operation_cancel", OtherTenant(Obj::Operation)),
    ("GET", "/v1/images", "image_list", TenantList(Obj::Image)),
    ("POST", "/v1/images", "image_create", OtherTenantRef),
    ("GET", "/v1/images/{id}", "image_view", OtherTenant(Obj::Image)),
    ("PATCH", "/v1/images/{id}", "image_update", OtherTenant(Obj::Image)),
    ("DELETE", "/v1/images/{id}", "image_delete", OtherTenant(Obj::Image)),
    ("PUT", "/v1/images/{id}/files/{role}", "image_upload", OtherTenant(Obj::Image)),
    ("GET", "/v1/usage", "usage_list", TenantList(Obj::Usage)),
    ("GET", "/v1/invoices", "invoice_list", TenantList(Obj::Invoice)),
    ("GET", "/v1/invoices/current", "invoice_current", TenantReadable(None)),
    ("GET", "/v1/invoices/{id}", "invoice_view", OtherTenant(Obj::Invoice)),
    ("GET", "/v1/invoices/{id}/lines", "invoice_lines", OtherTenant(Obj::Invoice)),
    ("GET", "/v1/invoices/{id}/lines/{number}/evidence", "invoice_line_evidence", OtherTenant(Obj::Invoice)),
    ("POST", "/v1/invoices/{id}/finalize", "invoice_finalize", OperatorOnly(Some(Obj::Invoice))),
    ("POST", "/v1/invoices/{id}/void", "invoice_void", OperatorOnly(Some(Obj::Invoice))),
    ("POST", "/v1/invoices/{id}/credit-notes", "invoice_credit_note", OperatorOnly(Some(Obj::Invoice))),
    ("GET", "/v1/billing/reconciliation", "billing_reconciliation", TenantReadable(None)),
    ("GET", "/v1/billing/export", "billing_export", TenantReadable(None)),
    ("GET", "/v1/billing/revenue", "billing_revenue", OperatorOnly(None)),
    ("GET", "/v1/price-books", "price_book_list", TenantReadable(None)),
    ("POST", "/v1/price-books", "price_book_create", OperatorOnly(None)),
    ("GET", "/v1/price-books/{id}", "price_book_view", TenantReadable(Some(Obj::PriceBook))),
    ("GET", "/v1/tenants/{id}/billing", "billing_account_view", OtherTenant(Obj::Tenant)),
    ("PUT", "/v1/tenants/{id}/billing", "billing_account_replace", OperatorOnly(Some(Obj::Tenant))),
    ("GET", "/v1/quotas", "quota_list", TenantReadable(None)),
    ("PUT", "/v1/quotas", "quota_replace", OtherTenantRef),
    ("GET", "/v1/budgets", "budget_list", TenantList(Obj::Budget)),
    ("POST", "/v1/budgets", "budget_create", OtherTenantRef),
    ("DELETE", "/v1/budgets/{id}", "budget_delete", OtherTenant(Obj::Budget)),
    ("GET", "/v1/credits", "credit_list", TenantList(Obj::Credit)),
    ("POST", "/v1/credits", "credit_create", OperatorOnly(None)),
    ("GET", "/v1/commitments", "commitment_list", TenantList(Obj::Commitment)),
    ("POST", "/v1/commitments", "commitment_create", OperatorOnly(None)),
    ("POST", "/v1/system/clock", "system_clock_advance", OperatorOnly(None)),
    ("GET", "/healthz", "system_health", Public),
    ("GET", "/readyz", "system_ready", Public),
    ("GET", "/metrics", "system_metrics", Public),
];

/// One operation of the document.
#[derive(Clone, Debug)]
struct Op {
    method: String,
    path: String,
    class: Class,
}

/// Every operation of the public OpenAPI document as (METHOD, path, operation_id).
fn documented_operations() -> Vec<(String, String, Option<String>)> {
    let doc = plinth_server::public_openapi();
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths.iter() {
        let fixed = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("OPTIONS", &item.options),
            ("HEAD", &item.head),
            ("PATCH", &item.patch),
            ("TRACE", &item.trace),
            ("QUERY", &item.query),
        ];
        for (method, op) in fixed {
            if let Some(op) = op {
                out.push((method.to_string(), path.clone(), op.operation_id.clone()));
            }
        }
        for (method, op) in &item.additional_operations {
            out.push((method.to_uppercase(), path.clone(), op.operation_id.clone()));
        }
    }
    out
}

/// Classifies every documented operation, failing on any the matrix does not know, on
/// operation ids that moved, and on matrix rows the document no longer has.
fn classified_operations() -> Vec<Op> {
    let table: BTreeMap<(&str, &str), (&str, Class)> =
        MATRIX.iter().map(|(m, p, id, c)| ((*m, *p), (*id, *c))).collect();
    assert_eq!(table.len(), MATRIX.len(), "duplicate rows in MATRIX");
    let mut unclassified = Vec::new();
    let mut seen = BTreeSet::new();
    let mut ops = Vec::new();
    for (method, path, op_id) in documented_operations() {
        match table.get(&(method.as_str(), path.as_str())).copied() {
            Some((want_id, class)) => {
                assert_eq!(
                    op_id.as_deref(),
                    Some(want_id),
                    "{method} {path}: operation id changed; re-check its row in MATRIX"
                );
                seen.insert((method.clone(), path.clone()));
                ops.push(Op { method, path, class });
            }
            None => unclassified.push(format!("{method} {path} ({})", op_id.unwrap_or_default())),
        }
    }
    assert!(
        unclassified.is_empty(),
        "operations missing from the tenancy MATRIX (classify each as tenant-scoped, operator-only, \
         tenant-readable or public): {unclassified:#?}"
    );
    let stale: Vec<String> = MATRIX
        .iter()
        .filter(|(m, p, _, _)| !seen.contains(&(m.to_string(), p.to_string())))
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    assert!(stale.is_empty(), "MATRIX rows for operations the document no longer has: {stale:?}");
    let v1 = ops.iter().filter(|o| o.path.starts_with("/v1/")).count();
    assert!(v1 >= 50, "the document lists only {v1} /v1 operations; is it being read right?");
    ops
}

#[test]
fn every_documented_operation_is_in_the_tenancy_matrix() {
    classified_operations();
}

/// One tenant's objects, built by the operator (tenant, first admin) and by that admin
/// (project, second user with a tenant-wide member binding and a token).
#[derive(Clone, Debug)]
struct World {
    /// Every name in this tenant starts with it, so a response can be searched for it.
    label: &'static str,
    admin: TenantAdmin,
    project: String,
    dev_user: String,
    dev_binding: String,
    dev_token: String,
    dev_secret: String,
    group: String,
    /// A VPC, its subnet, a NIC in it and a security group of it.
    vpc: String,
    subnet: String,
    nic: String,
    sec_group: String,
    /// A floating IP from a pool of its own (one per world, so worlds never compete).
    floating_ip: String,
    /// A volume of the project (on the compute host's pool).
    volume: String,
    instance: String,
    operation: String,
    /// A private image of the project (its instance boots from it).
    image: String,
    /// The instance's usage records (its claim opened them).
    usage: Vec<String>,
    /// The tenant's current draft invoice, a budget, a credit grant and a commitment.
    invoice: String,
    budget: String,
    credit: String,
    commitment: String,
}

/// The shape `c1.small` and an enrolled, available host for tenants' instances, made once.
async fn ensure_compute(srv: &TestServer) -> Value {
    let op = &srv.operator;
    let found = srv.get("/v1/shapes?name=c1.small").token(op).send().await.ok(200);
    if let Some(s) = found["items"].as_array().and_then(|a| a.first()) {
        return s.clone();
    }
    let shape = srv
        .post("/v1/shapes")
        .token(op)
        .json(&json!({ "name": "c1.small", "vcpus": 2, "memory_mib": 2048 }))
        .send()
        .await
        .ok(201);
    let mut inv = common::fleet::inventory(64, 1 << 20);
    inv["volume_pool"] = json!({ "path": "/pool", "filesystem": "ext4", "capacity_bytes": 1u64 << 40,
        "free_bytes": 1u64 << 40 });
    srv.enroll_host("node-2", inv, &[]).await;
    srv.public_image("debian-12").await;
    srv.post("/v1/volume-types").token(op).json(&json!({ "name": "standard" })).send().await.ok(201);
    shape
}

impl World {
    async fn build(srv: &TestServer, label: &'static str) -> World {
        ensure_compute(srv).await;
        let admin = srv.tenant_with_admin(&format!("{label}-corp")).await;
        let project = srv.create_project(&admin.secret, None, &format!("{label}-web")).await;
        assert_eq!(project["tenant_id"], admin.tenant_id.as_str(), "a tenant-admin's project lands in its tenant");
        let dev = srv.create_user(&admin.secret, &admin.tenant_id, &format!("{label}-dev")).await;
        let binding = srv.bind(&admin.secret, &id(&dev), "member", None).await;
        let (tok, secret) = srv.mint_token(&admin.secret, &id(&dev), &format!("{label}-dev-key")).await;
        let group = srv
            .post("/v1/placement-groups")
            .token(&admin.secret)
            .json(&json!({ "project_id": id(&project), "name": format!("{label}-ha"), "policy": "anti-affinity" }))
            .send()
            .await
            .ok(201);
        let vpc = srv
            .post("/v1/vpcs")
            .token(&admin.secret)
            .json(&json!({ "project_id": id(&project), "name": format!("{label}-net"), "ipv4_cidr": "10.0.0.0/16" }))
            .send()
            .await
            .ok(201);
        let subnet = srv
            .post("/v1/subnets")
            .token(&admin.secret)
            .json(&json!({ "vpc_id": id(&vpc), "name": format!("{label}-sn"), "ipv4_cidr": "10.0.1.0/24" }))
            .send()
            .await
            .ok(201);
        let sec_group = srv
            .post("/v1/security-groups")
            .token(&admin.secret)
            .json(&json!({ "vpc_id": id(&vpc), "name": format!("{label}-sg"), "rules": [
                { "direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22 }] }))
            .send()
            .await
            .ok(201);
        let nic = srv
            .post("/v1/network-interfaces")
            .token(&admin.secret)
            .json(&json!({ "subnet_id": id(&subnet), "name": format!("{label}-nic"),
                "security_group_ids": [id(&sec_group)] }))
            .send()
            .await
            .ok(201);
        let mut disk = common::images::raw_disk(64 * 1024);
        disk[..label.len()].copy_from_slice(label.as_bytes());
        let image = srv.disk_image(&admin.secret, Some(&id(&project)), &format!("{label}-img"), disk).await;
        let made = srv
            .post("/v1/instances")
            .token(&admin.secret)
            .json(&json!({ "project_id": id(&project), "name": format!("{label}-vm"), "shape": "c1.small",
                "image": format!("{label}-img"), "placement_group_id": id(&group) }))
            .send()
            .await
            .ok(202);
        // No agent runs: the create waits for the host once its spec is published, and
        // nothing changes after that while the matrix runs.
        let path = format!("/v1/instances/{}", id(&made["instance"]));
        srv.wait_until(&admin.secret, &path, "spec published", |i| i["spec_generation"] == 1).await;
        let usage: Vec<String> = srv.list_all(&admin.secret, "/v1/usage").await.iter().map(id).collect();
        assert!(!usage.is_empty(), "the claim opened usage intervals");
        let invoice = srv.get("/v1/invoices/current").token(&admin.secret).send().await.ok(200);
        let budget = srv
            .post("/v1/budgets")
            .token(&admin.secret)
            .json(&json!({ "tenant_id": admin.tenant_id, "name": format!("{label}-cap"), "threshold_micros": 1_000_000_000,
                "action": "notify" }))
            .send()
            .await
            .ok(201);
        let credit = srv
            .post("/v1/credits")
            .token(&srv.operator)
            .json(&json!({ "tenant_id": admin.tenant_id, "description": format!("{label}-welcome"),
                "amount_micros": 5_000_000, "currency": "USD" }))
            .send()
            .await
            .ok(201);
        let commitment = srv
            .post("/v1/commitments")
            .token(&srv.operator)
            .json(&json!({ "tenant_id": admin.tenant_id, "meter": "running_seconds", "dimension": "c1.small",
                "count": 1, "start_at": "2026-01-01T00:00:00Z", "end_at": "2027-01-01T00:00:00Z",
                "hourly_price_micros": 10_000 }))
            .send()
            .await
            .ok(201);
        // Pools are platform objects every tenant reads: their names carry no label.
        let (pool_name, block) =
            if label == "alpha" { ("pool-one", "192.0.2.0/28") } else { ("pool-two", "192.0.2.16/28") };
        let pool = srv
            .post("/v1/ip-pools")
            .token(&srv.operator)
            .json(&json!({ "name": pool_name, "ipv4_cidr": block }))
            .send()
            .await
            .ok(201);
        let floating_ip = srv
            .post("/v1/floating-ips")
            .token(&admin.secret)
            .json(&json!({ "project_id": id(&project), "name": format!("{label}-fip"), "ip_pool_id": id(&pool) }))
            .send()
            .await
            .ok(201);
        let volume = srv
            .post("/v1/volumes")
            .token(&admin.secret)
            .json(&json!({ "project_id": id(&project), "name": format!("{label}-data"), "size_gib": 1 }))
            .send()
            .await
            .ok(201);
        World {
            label,
            admin,
            floating_ip: id(&floating_ip),
            volume: id(&volume),
            usage,
            invoice: id(&invoice),
            budget: id(&budget),
            credit: id(&credit),
            commitment: id(&commitment),
            project: id(&project),
            dev_user: id(&dev),
            dev_binding: id(&binding),
            dev_token: id(&tok),
            dev_secret: secret,
            group: id(&group),
            vpc: id(&vpc),
            subnet: id(&subnet),
            nic: id(&nic),
            sec_group: id(&sec_group),
            instance: id(&made["instance"]),
            operation: id(&made["operation"]),
            image: id(&image),
        }
    }

    fn ids(&self) -> Vec<String> {
        vec![
            self.admin.tenant_id.clone(),
            self.admin.user_id.clone(),
            self.admin.binding_id.clone(),
            self.admin.token_id.clone(),
            self.project.clone(),
            self.dev_user.clone(),
            self.dev_binding.clone(),
            self.dev_token.clone(),
            self.group.clone(),
            self.vpc.clone(),
            self.subnet.clone(),
            self.nic.clone(),
            self.sec_group.clone(),
            self.floating_ip.clone(),
            self.volume.clone(),
            self.instance.clone(),
            self.operation.clone(),
            self.image.clone(),
            self.invoice.clone(),
            self.budget.clone(),
            self.credit.clone(),
            self.commitment.clone(),
        ]
        .into_iter()
        .chain(self.usage.iter().cloned())
        .collect()
    }

    /// What must never appear in another tenant's view: every id, and the label every
    /// name here starts with (ULIDs cannot contain it: they have no `l` or `o`).
    fn marks(&self) -> Vec<String> {
        let mut m = self.ids();
        m.push(self.label.to_string());
        m
    }

    /// This tenant's objects of a kind.
    fn objects(&self, obj: Obj) -> Vec<String> {
        match obj {
            Obj::Tenant => vec![self.admin.tenant_id.clone()],
            Obj::Project => vec![self.project.clone()],
            Obj::User => vec![self.admin.user_id.clone(), self.dev_user.clone()],
            Obj::Token => vec![self.admin.token_id.clone(), self.dev_token.clone()],
            Obj::RoleBinding => vec![self.admin.binding_id.clone(), self.dev_binding.clone()],
            Obj::Instance => vec![self.instance.clone()],
            Obj::Group => vec![self.group.clone()],
            Obj::Vpc => vec![self.vpc.clone()],
            Obj::Subnet => vec![self.subnet.clone()],
            Obj::Nic => vec![self.nic.clone()],
            Obj::SecGroup => vec![self.sec_group.clone()],
            Obj::FloatingIp => vec![self.floating_ip.clone()],
            Obj::Volume => vec![self.volume.clone()],
            Obj::Operation => vec![self.operation.clone()],
            Obj::Image => vec![self.image.clone()],
            Obj::Usage => self.usage.clone(),
            Obj::Invoice => vec![self.invoice.clone()],
            Obj::Budget => vec![self.budget.clone()],
            Obj::Credit => vec![self.credit.clone()],
            Obj::Commitment => vec![self.commitment.clone()],
            other => panic!("{other:?} is not tenant-scoped"),
        }
    }
}

/// A well-formed id of the kind that names nothing.
fn fresh(obj: Obj) -> String {
    match obj {
        Obj::Tenant => plinth_api::TenantId::generate().0,
        Obj::Project => plinth_api::ProjectId::generate().0,
        Obj::User => plinth_api::UserId::generate().0,
        Obj::Token => plinth_api::TokenId::generate().0,
        Obj::RoleBinding => plinth_api::RoleBindingId::generate().0,
        Obj::Site => plinth_api::SiteId::generate().0,
        Obj::Rack => plinth_api::RackId::generate().0,
        Obj::Host => plinth_api::HostId::generate().0,
        Obj::JoinToken => plinth_api::JoinTokenId::generate().0,
        Obj::Shape => plinth_api::ShapeId::generate().0,
        Obj::Instance => plinth_api::InstanceId::generate().0,
        Obj::Group => plinth_api::PlacementGroupId::generate().0,
        Obj::Operation => plinth_api::OperationId::generate().0,
        Obj::Image => plinth_api::ImageId::generate().0,
        Obj::Usage => plinth_api::UsageRecordId::generate().0,
        Obj::Invoice => plinth_api::InvoiceId::generate().0,
        Obj::Budget => plinth_api::BudgetId::generate().0,
        Obj::Credit => plinth_api::CreditId::generate().0,
        Obj::Commitment => plinth_api::CommitmentId::generate().0,
        Obj::PriceBook => plinth_api::PriceBookId::generate().0,
        Obj::Vpc => plinth_api::VpcId::generate().0,
        Obj::Subnet => plinth_api::SubnetId::generate().0,
        Obj::Nic => plinth_api::NicId::generate().0,
        Obj::SecGroup => plinth_api::SecurityGroupId::generate().0,
        Obj::IpPool => plinth_api::IpPoolId::generate().0,
        Obj::FloatingIp => plinth_api::FloatingIpId::generate().0,
        Obj::VolumeType => plinth_api::VolumeTypeId::generate().0,
        Obj::Volume => plinth_api::VolumeId::generate().0,
    }
}

/// Platform objects made by the operator.
#[derive(Clone, Debug)]
struct Platform {
    site: String,
    rack: String,
    host: String,
    join_token: String,
    shape: String,
    price_book: String,
    ip_pool: String,
    volume_type: String,
}

impl Platform {
    async fn build(srv: &TestServer) -> Platform {
        let op = &srv.operator;
        let site = srv.post("/v1/sites").token(op).json(&json!({ "name": "dc-one" })).send().await.ok(201);
        let rack =
            srv.post("/v1/racks").token(op).json(&json!({ "site_id": id(&site), "name": "r01" })).send().await.ok(201);
        let host = srv
            .post("/v1/hosts")
            .token(op)
            .json(&json!({ "name": "node-1", "rack_id": id(&rack) }))
            .send()
            .await
            .ok(201);
        let jt = srv.post("/v1/host-join-tokens").token(op).json(&json!({})).send().await.ok(201);
        let shape = ensure_compute(srv).await;
        let book = srv
            .post("/v1/price-books")
            .token(op)
            .json(&json!({ "name": "default", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z",
                "prices": [{ "meter": "running_seconds", "model": "flat", "pricing_unit": "hour",
                    "units_per_pricing_unit": 3600, "unit_price_micros": 50_000, "rounding": "half_up" }] }))
            .send()
            .await
            .ok(201);
        let pool = srv
            .post("/v1/ip-pools")
            .token(op)
            .json(&json!({ "name": "public", "ipv4_cidr": "198.51.100.0/24" }))
            .send()
            .await
            .ok(201);
        let types = srv.get("/v1/volume-types?name=standard").token(op).send().await.ok(200);
        let volume_type = id(&types["items"][0]);
        Platform {
            volume_type,
            site: id(&site),
            rack: id(&rack),
            host: id(&host),
            join_token: id(&jt),
            shape: id(&shape),
            price_book: id(&book),
            ip_pool: id(&pool),
        }
    }

    fn object(&self, obj: Obj) -> String {
        match obj {
            Obj::Site => self.site.clone(),
            Obj::Rack => self.rack.clone(),
            Obj::Host => self.host.clone(),
            Obj::JoinToken => self.join_token.clone(),
            Obj::Shape => self.shape.clone(),
            Obj::PriceBook => self.price_book.clone(),
            Obj::IpPool => self.ip_pool.clone(),
            Obj::VolumeType => self.volume_type.clone(),
            // Operator-only actions on tenants' billing objects are refused before any
            // lookup: any well-formed id will do.
            Obj::Invoice | Obj::Tenant => fresh(obj),
            other => panic!("{other:?} is not a platform object"),
        }
    }
}

/// A valid body for an operation (None for operations without one). Every POST and
/// PATCH in the matrix must have one here, so a refusal is never just a bad body.
fn body_for(method: &str, path: &str, p: &Platform) -> Option<Value> {
    let v = match (method, path) {
        ("GET" | "DELETE", _) => return None,
        ("POST", "/v1/tokens/{id}/revoke") => return None,
        ("POST", p) if p.starts_with("/v1/hosts/{id}/") => return None,
        ("POST", "/v1/instances/{id}/start" | "/v1/instances/{id}/stop" | "/v1/instances/{id}/reboot") => return None,
        ("POST", "/v1/operations/{id}/cancel" | "/v1/system/background-tasks/{name}/run") => return None,
        ("POST", "/v1/instances/{id}/resize") => json!({ "shape": "c1.small" }),
        ("POST", "/v1/instances/{id}/console/input") => json!({ "data": "rm -rf /\n" }),
        ("POST", "/v1/invoices/{id}/finalize" | "/v1/invoices/{id}/void") => return None,
        ("POST", "/v1/invoices/{id}/credit-notes") => json!({ "amount_micros": 1, "description": "mallory" }),
        ("POST", "/v1/price-books") => json!({ "name": "mallory", "currency": "USD",
            "effective_from": "2030-01-01T00:00:00Z", "prices": [] }),
        ("PUT", "/v1/tenants/{id}/billing") => json!({ "tenant_id": fresh(Obj::Tenant), "price_book": "mallory" }),
        ("PUT", "/v1/quotas") => json!({ "scope_id": fresh(Obj::Project), "limits": { "instances": 1000 } }),
        ("POST", "/v1/budgets") => {
            json!({ "tenant_id": fresh(Obj::Tenant), "name": "mallory", "threshold_micros": 1, "action": "block-new" })
        }
        ("POST", "/v1/credits") => json!({ "tenant_id": fresh(Obj::Tenant), "description": "mallory",
            "amount_micros": 1_000_000_000, "currency": "USD" }),
        ("POST", "/v1/commitments") => json!({ "tenant_id": fresh(Obj::Tenant), "meter": "running_seconds",
            "dimension": "c1.small", "count": 1, "start_at": "2026-01-01T00:00:00Z", "end_at": "2027-01-01T00:00:00Z",
            "hourly_price_micros": 0 }),
        ("POST", "/v1/system/clock") => json!({ "advance_seconds": 86_400 }),
        ("POST", "/v1/instances") => {
            json!({ "project_id": fresh(Obj::Project), "name": "mallory-vm", "shape": "c1.small", "image": "debian-12" })
        }
        ("POST", "/v1/placement-groups") => {
            json!({ "project_id": fresh(Obj::Project), "name": "mallory-group", "policy": "spread" })
        }
        ("POST", "/v1/instances/{id}/rebuild") => json!({ "image": "debian-12" }),
        ("POST", "/v1/vpcs") => {
            json!({ "project_id": fresh(Obj::Project), "name": "mallory-net", "ipv4_cidr": "10.9.0.0/16" })
        }
        ("POST", "/v1/subnets") => {
            json!({ "vpc_id": fresh(Obj::Vpc), "name": "mallory-sn", "ipv4_cidr": "10.9.1.0/24" })
        }
        ("POST", "/v1/network-interfaces") => json!({ "subnet_id": fresh(Obj::Subnet), "name": "mallory-nic" }),
        ("POST", "/v1/security-groups") => json!({ "vpc_id": fresh(Obj::Vpc), "name": "mallory-sg" }),
        ("POST", "/v1/floating-ips") => json!({ "project_id": fresh(Obj::Project), "name": "mallory-fip" }),
        ("POST", "/v1/volumes") => json!({ "project_id": fresh(Obj::Project), "name": "mallory-vol", "size_gib": 1 }),
        ("POST", "/v1/volume-types") => json!({ "name": "mallory-type" }),
        ("POST", "/v1/volumes/{id}/extend") => json!({ "size_gib": 2 }),
        ("POST", "/v1/volumes/{id}/attach") => json!({ "instance_id": fresh(Obj::Instance) }),
        ("POST", "/v1/volumes/{id}/detach") => json!({}),
        ("POST", "/v1/volumes/{id}/revert") => json!({ "snapshot_id": plinth_api::VolumeSnapshotId::generate().0 }),
        ("POST", "/v1/snapshots") => json!({ "volume_id": fresh(Obj::Volume), "name": "mallory-snap" }),
        ("PATCH", "/v1/volume-types/{id}") => json!({ "description": "taken over" }),
        ("POST", "/v1/security-groups/{id}/rules") => json!({ "direction": "ingress", "protocol": "any" }),
        ("POST", "/v1/instances/{id}/network-interfaces") => json!({ "nic_id": fresh(Obj::Nic) }),
        ("POST", "/v1/floating-ips/{id}/attach") => json!({ "nic_id": fresh(Obj::Nic) }),
        ("POST", "/v1/floating-ips/{id}/detach") => json!({}),
        (
            "PATCH",
            "/v1/vpcs/{id}"
            | "/v1/subnets/{id}"
            | "/v1/network-interfaces/{id}"
            | "/v1/security-groups/{id}"
            | "/v1/floating-ips/{id}"
            | "/v1/volumes/{id}",
        ) => {
            json!({ "description": "taken over" })
        }
        ("POST", "/v1/images") => {
            json!({ "project_id": fresh(Obj::Project), "name": "mallory-img", "boot": "disk", "files": { "disk": {} } })
        }
        ("PATCH", "/v1/images/{id}") => json!({ "description": "taken over" }),
        ("PUT", "/v1/images/{id}/files/{role}") => json!("not really a disk"),
        ("PATCH", "/v1/instances/{id}") => json!({ "labels": { "owner": "mallory" } }),
        ("PATCH", "/v1/tenants/{id}") => json!({ "display_name": "taken over" }),
        ("PATCH", "/v1/projects/{id}") => json!({ "description": "taken over" }),
        ("PATCH", "/v1/users/{id}") => json!({ "email": "mallory@example.com" }),
        ("PATCH", "/v1/tokens/{id}") => json!({ "name": "taken-over" }),
        ("PATCH", "/v1/role-bindings/{id}") => json!({ "role": "viewer" }),
        ("PATCH", "/v1/sites/{id}") => json!({ "description": "taken over" }),
        ("PATCH", "/v1/racks/{id}") => json!({ "description": "taken over" }),
        ("PATCH", "/v1/hosts/{id}") => json!({ "labels": { "owner": "mallory" } }),
        ("PATCH", "/v1/host-join-tokens/{id}") => json!({ "description": "taken over" }),
        ("PATCH", "/v1/shapes/{id}") => json!({ "description": "taken over" }),
        ("POST", "/v1/tenants") => json!({ "name": "mallory-corp" }),
        ("POST", "/v1/projects") => json!({ "name": "mallory-project" }),
        ("POST", "/v1/users") => json!({ "name": "mallory" }),
        ("POST", "/v1/tokens") => json!({ "name": "mallory-key" }),
        ("POST", "/v1/role-bindings") => json!({ "user_id": fresh(Obj::User), "role": "member" }),
        ("POST", "/v1/sites") => json!({ "name": "mallory-site" }),
        ("POST", "/v1/racks") => json!({ "site_id": p.site, "name": "mallory-rack" }),
        ("POST", "/v1/hosts") => json!({ "name": "mallory-host" }),
        ("POST", "/v1/host-join-tokens") => json!({ "description": "mallory" }),
        ("POST", "/v1/shapes") => json!({ "name": "m1.evil", "vcpus": 1, "memory_mib": 1024 }),
        ("POST", "/v1/ip-pools") => json!({ "name": "mallory-pool", "ipv4_cidr": "203.0.113.0/24" }),
        ("PATCH", "/v1/ip-pools/{id}") => json!({ "description": "taken over" }),
        (m, p) => panic!("body_for has no body for {m} {p}: add one"),
    };
    Some(v)
}

/// For a create that names tenant-scoped objects in its body: pairs of (a body naming
/// A's object, the same body naming a fresh id, A's id, the fresh id).
fn reference_bodies(path: &str, a: &World, b: &World) -> Vec<(Value, Value, String, String)> {
    let mut out = Vec::new();
    match path {
        "/v1/projects" => {
            let f = fresh(Obj::Tenant);
            out.push((
                json!({ "tenant_id": a.admin.tenant_id, "name": "sneaky" }),
                json!({ "tenant_id": f, "name": "sneaky" }),
                a.admin.tenant_id.clone(),
                f,
            ));
        }
        "/v1/users" => {
            let f = fresh(Obj::Tenant);
            out.push((
                json!({ "tenant_id": a.admin.tenant_id, "name": "sneaky" }),
                json!({ "tenant_id": f, "name": "sneaky" }),
                a.admin.tenant_id.clone(),
                f,
            ));
        }
        "/v1/tokens" => {
            for user in [&a.admin.user_id, &a.dev_user] {
                let f = fresh(Obj::User);
                out.push((
                    json!({ "user_id": user, "name": "sneaky" }),
                    json!({ "user_id": f, "name": "sneaky" }),
                    user.clone(),
                    f,
                ));
            }
        }
        "/v1/role-bindings" => {
            for (user, role) in [(&a.dev_user, "tenant-admin"), (&a.admin.user_id, "member")] {
                let f = fresh(Obj::User);
                out.push((
                    json!({ "user_id": user, "role": role }),
                    json!({ "user_id": f, "role": role }),
                    user.clone(),
                    f,
                ));
            }
            // B's own user narrowed to A's project.
            let f = fresh(Obj::Project);
            out.push((
                json!({ "user_id": b.dev_user, "role": "viewer", "project_id": a.project }),
                json!({ "user_id": b.dev_user, "role": "viewer", "project_id": f }),
                a.project.clone(),
                f,
            ));
        }
        "/v1/instances" => {
            let f = fresh(Obj::Project);
            let vm = |p: &str| json!({ "project_id": p, "name": "sneaky", "shape": "c1.small", "image": "debian-12" });
            out.push((vm(&a.project), vm(&f), a.project.clone(), f));
            // B's own project with A's placement group.
            let f = fresh(Obj::Group);
            let mut with_a = vm(&b.project);
            with_a["placement_group_id"] = json!(a.group);
            let mut with_none = vm(&b.project);
            with_none["placement_group_id"] = json!(f);
            out.push((with_a, with_none, a.group.clone(), f));
            // B's own project with A's image, by id.
            let f = fresh(Obj::Image);
            let mut with_a = vm(&b.project);
            with_a["image"] = json!(a.image);
            let mut with_none = vm(&b.project);
            with_none["image"] = json!(f);
            out.push((with_a, with_none, a.image.clone(), f));
            // B's own project with A's NIC, and with a new NIC in A's subnet.
            for (a_id, f, key) in [(&a.nic, fresh(Obj::Nic), "nic_id"), (&a.subnet, fresh(Obj::Subnet), "subnet")] {
                let mut with_a = vm(&b.project);
                with_a["nics"] = json!([{ key: a_id }]);
                let mut with_none = vm(&b.project);
                with_none["nics"] = json!([{ key: f }]);
                out.push((with_a, with_none, a_id.clone(), f));
            }
        }
        "/v1/vpcs" => {
            let f = fresh(Obj::Project);
            let v = |p: &str| json!({ "project_id": p, "name": "sneaky", "ipv4_cidr": "10.9.0.0/16" });
            out.push((v(&a.project), v(&f), a.project.clone(), f));
        }
        "/v1/subnets" => {
            let f = fresh(Obj::Vpc);
            let s = |v: &str| json!({ "vpc_id": v, "name": "sneaky", "ipv4_cidr": "10.0.9.0/24" });
            out.push((s(&a.vpc), s(&f), a.vpc.clone(), f));
        }
        "/v1/security-groups" => {
            let f = fresh(Obj::Vpc);
            let g = |v: &str| json!({ "vpc_id": v, "name": "sneaky" });
            out.push((g(&a.vpc), g(&f), a.vpc.clone(), f));
            // B's own VPC with a rule naming A's group as remote.
            let f = fresh(Obj::SecGroup);
            let g = |r: &str| {
                json!({ "vpc_id": b.vpc, "name": "sneaky", "rules": [
                { "direction": "ingress", "protocol": "any", "remote_group_id": r }] })
            };
            out.push((g(&a.sec_group), g(&f), a.sec_group.clone(), f));
        }
        "/v1/network-interfaces" => {
            let f = fresh(Obj::Subnet);
            let n = |s: &str| json!({ "subnet_id": s, "name": "sneaky" });
            out.push((n(&a.subnet), n(&f), a.subnet.clone(), f));
            // B's own subnet with A's group.
            let f = fresh(Obj::SecGroup);
            let n = |g: &str| json!({ "subnet_id": b.subnet, "name": "sneaky", "security_group_ids": [g] });
            out.push((n(&a.sec_group), n(&f), a.sec_group.clone(), f));
        }
        "/v1/images" => {
            let f = fresh(Obj::Project);
            let img = |p: &str| json!({ "project_id": p, "name": "sneaky", "boot": "disk", "files": { "disk": {} } });
            out.push((img(&a.project), img(&f), a.project.clone(), f));
        }
        "/v1/floating-ips" => {
            let f = fresh(Obj::Project);
            let g = |p: &str| json!({ "project_id": p, "name": "sneaky" });
            out.push((g(&a.project), g(&f), a.project.clone(), f));
        }
        "/v1/volumes" => {
            let f = fresh(Obj::Project);
            let g = |p: &str| json!({ "project_id": p, "name": "sneaky", "size_gib": 1 });
            out.push((g(&a.project), g(&f), a.project.clone(), f));
            let f = fresh(Obj::Instance);
            let g = |i: &str| json!({ "project_id": b.project, "name": "sneaky", "size_gib": 1, "instance_id": i });
            out.push((g(&a.instance), g(&f), a.instance.clone(), f));
        }
        "/v1/snapshots" => {
            let f = fresh(Obj::Volume);
            let g = |v: &str| json!({ "volume_id": v, "name": "sneaky" });
            out.push((g(&a.volume), g(&f), a.volume.clone(), f));
        }
        "/v1/placement-groups" => {
            let f = fresh(Obj::Project);
            let g = |p: &str| json!({ "project_id": p, "name": "sneaky", "policy": "spread" });
            out.push((g(&a.project), g(&f), a.project.clone(), f));
        }
        "/v1/quotas" => {
            for (a_id, f) in [(&a.project, fresh(Obj::Project)), (&a.admin.tenant_id, fresh(Obj::Tenant))] {
                let q = |s: &str| json!({ "scope_id": s, "limits": { "instances": 1000 } });
                out.push((q(a_id), q(&f), a_id.clone(), f));
            }
        }
        "/v1/budgets" => {
            let f = fresh(Obj::Tenant);
            let b = |t: &str| json!({ "tenant_id": t, "name": "sneaky", "threshold_micros": 1, "action": "block-new" });
            out.push((b(&a.admin.tenant_id), b(&f), a.admin.tenant_id.clone(), f));
        }
        other => panic!("reference_bodies has nothing for POST {other}: add the references it takes"),
    }
    out
}

/// The problem body with the request id dropped and `id` replaced, for comparing the
/// answer about A's object with the answer about an id that never existed.
fn normalized(r: &Resp, id: &str) -> Value {
    fn replace(v: &mut Value, id: &str) {
        match v {
            Value::String(s) => *s = s.replace(id, "<id>"),
            Value::Array(a) => a.iter_mut().for_each(|x| replace(x, id)),
            Value::Object(o) => o.values_mut().for_each(|x| replace(x, id)),
            _ => {}
        }
    }
    let mut v = r.json();
    if let Some(o) = v.as_object_mut() {
        o.remove("request_id");
    }
    replace(&mut v, id);
    v
}

async fn send(srv: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
    let mut c = srv.call(Method::from_bytes(method.as_bytes()).expect("method"), path);
    if let Some(t) = token {
        c = c.token(t);
    }
    if let Some(b) = body {
        c = c.json(b);
    }
    c.send().await
}

/// Everything the operator can list, to prove refusals wrote nothing.
async fn snapshot(srv: &TestServer) -> BTreeMap<&'static str, Vec<Value>> {
    let mut m = BTreeMap::new();
    for path in [
        "/v1/tenants",
        "/v1/projects",
        "/v1/users",
        "/v1/tokens",
        "/v1/role-bindings",
        "/v1/sites",
        "/v1/racks",
        "/v1/hosts",
        "/v1/host-join-tokens",
        "/v1/shapes",
        "/v1/instances",
        "/v1/placement-groups",
        "/v1/vpcs",
        "/v1/subnets",
        "/v1/network-interfaces",
        "/v1/security-groups",
        "/v1/operations",
        "/v1/images",
    ] {
        m.insert(path, srv.list_all(&srv.operator, path).await);
    }
    m
}

fn assert_same_snapshot(
    before: &BTreeMap<&'static str, Vec<Value>>,
    after: &BTreeMap<&'static str, Vec<Value>>,
    when: &str,
) {
    for (path, items) in before {
        assert_eq!(Some(items), after.get(path), "{when}: {path} changed although every request was refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_matrix() {
    let ops = classified_operations();
    let srv = TestServer::start().await;
    let platform = Platform::build(&srv).await;
    let a = World::build(&srv, "alpha").await;
    let b = World::build(&srv, "bravo").await;
    let b_callers = [("B tenant-admin", b.admin.secret.as_str()), ("B member", b.dev_secret.as_str())];

    // Both tenants' tokens work before anything else.
    for w in [&a, &b] {
        for t in [&w.admin.secret, &w.dev_secret] {
            srv.get(&format!("/v1/tenants/{}", w.admin.tenant_id)).token(t).send().await.ok(200);
        }
    }

    let before = snapshot(&srv).await;
    let mut checked = BTreeSet::new();

    // ---- reads that must not show A -------------------------------------------------
    for op in &ops {
        match op.class {
            Public => {
                let r = send(&srv, &op.method, &op.path, None, None).await;
                r.ok(200);
            }
            TenantList(kind) => {
                for (who, token) in b_callers {
                    let items = srv.list_all(token, &op.path).await;
                    let text = serde_json::to_string(&items).unwrap();
                    assert_mentions_none(&format!("{} as {who}", op.path), &text, &a.marks());
                    // Positive control: the caller's own tenant's objects are listed.
                    let own = b.objects(kind);
                    let listed: BTreeSet<String> = items.iter().map(id).collect();
                    let expected_own: Vec<&String> = match (kind, who) {
                        // A member lists only its own tokens.
                        (Obj::Token, "B member") => vec![&b.dev_token],
                        _ => own.iter().collect(),
                    };
                    for o in expected_own {
                        assert!(listed.contains(o), "{} as {who}: own object {o} is missing from {listed:?}", op.path);
                    }
                }
            }
            TenantReadable(obj) => {
                let path = match obj {
                    Some(o) => op.path.replace("{id}", &platform.object(o)),
                    None => op.path.clone(),
                };
                let r = send(&srv, &op.method, &path, Some(&b.admin.secret), None).await;
                let v = r.ok(200);
                assert_mentions_none(&path, &r.text, &a.marks());
                if op.path == "/v1/audit-log" {
                    let items = v["items"].as_array().expect("items");
                    assert!(!items.is_empty(), "B's admin sees the records of its own tenant's changes");
                    for rec in items {
                        assert_eq!(
                            rec["tenant_id"],
                            b.admin.tenant_id.as_str(),
                            "B's admin sees only B's audit records: {rec}"
                        );
                    }
                }
            }
            _ => continue,
        }
        checked.insert((op.method.clone(), op.path.clone()));
    }

    // Lists filtered to A's objects are empty, not a way around the scope.
    for path in [
        format!("/v1/projects?tenant_id={}", a.admin.tenant_id),
        format!("/v1/projects?name={}-web", a.label),
        format!("/v1/role-bindings?user_id={}", a.dev_user),
        format!("/v1/audit-log?target={}", a.project),
        format!("/v1/audit-log?actor={}", a.admin.user_id),
    ] {
        let v = srv.get(&path).token(&b.admin.secret).send().await.ok(200);
        assert_eq!(v["items"], json!([]), "{path} as B's admin must list nothing of A");
    }

    // ---- A's objects named in the path: 404, as if they did not exist --------------
    for op in &ops {
        let OtherTenant(kind) = op.class else { continue };
        let body = body_for(&op.method, &op.path, &platform);
        for target in a.objects(kind) {
            for (who, token) in b_callers {
                let path = op
                    .path
                    .replace("{id}", &target)
                    .replace("{role}", "disk")
                    .replace("{number}", "1")
                    .replace("{rule_id}", "sgr_01KAAAAAAAAAAAAAAAAAAAAAAA")
                    .replace("{nic_id}", &a.nic);
                let what = format!("{} {path} as {who}", op.method);
                let r = send(&srv, &op.method, &path, Some(token), body.as_ref()).await;
                r.problem(404, "not_found");
                let none = fresh(kind);
                let none_path = op
                    .path
                    .replace("{id}", &none)
                    .replace("{role}", "disk")
                    .replace("{number}", "1")
                    .replace("{rule_id}", "sgr_01KAAAAAAAAAAAAAAAAAAAAAAA")
                    .replace("{nic_id}", &a.nic);
                let r_none = send(&srv, &op.method, &none_path, Some(token), body.as_ref()).await;
                r_none.problem(404, "not_found");
                assert_eq!(
                    normalized(&r, &target),
                    normalized(&r_none, &none),
                    "{what}: the answer about A's object must be the answer about an id that never existed"
                );
                // Beyond the id the caller sent, nothing of A is in the answer.
                let rest = r.text.replace(&target, "");
                assert_mentions_none(&what, &rest, &a.marks());
            }
        }
        checked.insert((op.method.clone(), op.path.clone()));
    }

    // ---- creates naming A's objects in the body ------------------------------------
    for op in &ops {
        if op.class != OtherTenantRef {
            continue;
        }
        for (body_a, body_none, a_id, none_id) in reference_bodies(&op.path, &a, &b) {
            for (who, token) in b_callers {
                let what = format!("{} {} {body_a} as {who}", op.method, op.path);
                let r = send(&srv, &op.method, &op.path, Some(token), Some(&body_a)).await;
                let r_none = send(&srv, &op.method, &op.path, Some(token), Some(&body_none)).await;
                assert!(matches!(r.status, 403 | 404 | 422), "{what}: expected a refusal, got {} {}", r.status, r.text);
                assert_problem_shape(&r);
                assert_problem_shape(&r_none);
                assert_eq!(
                    (r.status, normalized(&r, &a_id)),
                    (r_none.status, normalized(&r_none, &none_id)),
                    "{what}: naming A's object must be answered as naming one that never existed"
                );
                let rest = r.text.replace(&a_id, "");
                assert_mentions_none(&what, &rest, &a.marks());
            }
        }
        checked.insert((op.method.clone(), op.path.clone()));
    }

    // ---- operator-only: 403 for tenants, whatever they name ------------------------
    for op in &ops {
        let OperatorOnly(obj) = op.class else { continue };
        let path = match obj {
            Some(o) => op.path.replace("{id}", &platform.object(o)),
            None => op.path.clone(),
        };
        let body = body_for(&op.method, &op.path, &platform);
        for (who, token) in b_callers {
            let r = send(&srv, &op.method, &path, Some(token), body.as_ref()).await;
            let v = r.problem(403, "forbidden");
            assert_eq!(v["constraint"]["rule"], "role", "{} {path} as {who}: the refusing rule is named", op.method);
        }
        checked.insert((op.method.clone(), op.path.clone()));
    }

    // ---- operator-only image actions: public images and server-side imports ------------
    let public = srv.public_image("debian-12").await;
    let disk_from = |project: Option<&str>, source: Value| {
        let mut v = json!({ "name": "mallory-img", "boot": "disk", "files": { "disk": source } });
        if let Some(p) = project {
            v["project_id"] = json!(p);
        }
        v
    };
    for (who, token) in b_callers {
        let r = srv.post("/v1/images").token(token).json(&disk_from(None, json!({}))).send().await;
        let v = r.problem(403, "forbidden");
        assert_eq!(v["constraint"]["rule"], "role", "public image create as {who}: {v}");
        for (source, value) in [("url", "http://169.254.169.254/latest/meta-data"), ("path", "/etc/shadow")] {
            let body = disk_from(Some(&b.project), json!({ source: value }));
            let r = srv.post("/v1/images").token(token).json(&body).send().await;
            let v = r.problem(403, "import_forbidden");
            assert_eq!(v["constraint"]["rule"], "role", "{source} import as {who}: {v}");
            assert_eq!(v["constraint"]["source"], source);
        }
        let path = format!("/v1/images/{}", id(&public));
        let r = srv.patch(&path).token(token).json(&json!({ "description": "taken over" })).send().await;
        assert_eq!(r.problem(403, "forbidden")["constraint"]["rule"], "role");
        srv.delete(&path).token(token).send().await.problem(403, "forbidden");
        let r = srv.upload(token, &id(&public), "disk", vec![0; 512]).await;
        r.problem(403, "forbidden");
        // Every tenant sees the public image.
        srv.get(&path).token(token).send().await.ok(200);
    }

    let all: BTreeSet<(String, String)> = ops.iter().map(|o| (o.method.clone(), o.path.clone())).collect();
    let missed: Vec<_> = all.difference(&checked).collect();
    assert!(missed.is_empty(), "operations the matrix classified but never exercised: {missed:?}");

    // ---- nothing was written, A is intact --------------------------------------------
    let after = snapshot(&srv).await;
    assert_same_snapshot(&before, &after, "after the cross-tenant and operator-only requests");
    for (who, t) in [("A admin", &a.admin.secret), ("A member", &a.dev_secret)] {
        let v = srv.get(&format!("/v1/tenants/{}", a.admin.tenant_id)).token(t).send().await.ok(200);
        assert_eq!(v["generation"], 1, "{who}: tenant A unchanged");
    }
    let v = srv.get(&format!("/v1/projects/{}", a.project)).token(&a.admin.secret).send().await.ok(200);
    assert_eq!((v["generation"].clone(), v["description"].clone()), (json!(1), json!("")));

    // ---- B is not simply locked out: its own objects answer -------------------------
    for path in [
        format!("/v1/tenants/{}", b.admin.tenant_id),
        format!("/v1/projects/{}", b.project),
        format!("/v1/users/{}", b.dev_user),
        format!("/v1/tokens/{}", b.dev_token),
        format!("/v1/role-bindings/{}", b.dev_binding),
    ] {
        srv.get(&path).token(&b.admin.secret).send().await.ok(200);
    }
    // A tenant-admin may not delete its own tenant either: that is for operators.
    srv.delete(&format!("/v1/tenants/{}", b.admin.tenant_id))
        .token(&b.admin.secret)
        .send()
        .await
        .problem(403, "forbidden");
    // And a member may not change its tenant.
    srv.patch(&format!("/v1/tenants/{}", b.admin.tenant_id))
        .token(&b.dev_secret)
        .json(&json!({ "display_name": "member was here" }))
        .send()
        .await
        .problem(403, "forbidden");
    assert_same_snapshot(&before, &snapshot(&srv).await, "after B's refused changes to its own tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_operation_refuses_missing_bad_and_revoked_credentials() {
    let ops = classified_operations();
    let srv = TestServer::start().await;
    let b = World::build(&srv, "bravo").await;
    let platform = Platform::build(&srv).await;

    // A token of B's admin, revoked.
    let (revoked, revoked_secret) = srv.mint_token(&b.admin.secret, &b.admin.user_id, "soon-revoked").await;
    srv.get("/v1/projects").token(&revoked_secret).send().await.ok(200);
    srv.post(&format!("/v1/tokens/{}/revoke", id(&revoked))).token(&b.admin.secret).send().await.ok(200);

    // A well-formed secret naming a real token, with the wrong random part.
    let ulid = b.admin.token_id.strip_prefix("tok_").unwrap();
    let forged = format!("plt_{ulid}_{}", "0".repeat(64));

    let before = snapshot(&srv).await;
    for op in ops.iter().filter(|o| o.path.starts_with("/v1/")) {
        let obj = match op.class {
            OtherTenant(o) => Some(b.objects(o)[0].clone()),
            OperatorOnly(Some(o)) | TenantReadable(Some(o)) => Some(platform.object(o)),
            _ => None,
        };
        let path = match obj {
            Some(o) => op.path.replace("{id}", &o),
            None => op.path.clone(),
        };
        let body = body_for(&op.method, &op.path, &platform);
        for (what, token) in [
            ("no token", None),
            ("garbage token", Some("not-a-token")),
            ("forged secret", Some(forged.as_str())),
            ("revoked token", Some(revoked_secret.as_str())),
        ] {
            let r = send(&srv, &op.method, &path, token, body.as_ref()).await;
            assert_eq!(r.status, 401, "{} {path} with {what}: {}", op.method, r.text);
            r.problem(401, "unauthenticated");
        }
        // Another scheme than Bearer is no credential either.
        let r = srv
            .call(Method::from_bytes(op.method.as_bytes()).unwrap(), &path)
            .header("authorization", &format!("Basic {}", b.admin.secret))
            .send()
            .await;
        r.problem(401, "unauthenticated");
    }
    assert_same_snapshot(&before, &snapshot(&srv).await, "after unauthenticated requests");
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() {
    let srv = TestServer::start().await;
    let b = World::build(&srv, "bravo").await;
    let (tok, secret) = srv.mint_token(&b.admin.secret, &b.dev_user, "short-lived").await;
    srv.get("/v1/projects").token(&secret).send().await.ok(200);

    let v = srv.post(&format!("/v1/tokens/{}/revoke", id(&tok))).token(&b.admin.secret).send().await.ok(200);
    assert!(v["revoked_at"].is_string(), "the revoked token shows when: {v}");
    assert!(v.get("secret").is_none(), "a revoked token's answer carries no secret: {v}");

    let r = srv.get("/v1/projects").token(&secret).send().await;
    let p = r.problem(401, "unauthenticated");
    assert!(!r.text.contains(&secret), "the refusal does not echo the secret: {p}");

    // It stays listed, as revoked; the user's other token still works.
    let listed = srv.list_all(&b.admin.secret, "/v1/tokens").await;
    let rec = listed.iter().find(|t| t["id"] == id(&tok).as_str()).expect("revoked token still listed");
    assert!(rec["revoked_at"].is_string());
    srv.get("/v1/projects").token(&b.dev_secret).send().await.ok(200);

    // Revoking again keeps it revoked and does not revive it.
    srv.post(&format!("/v1/tokens/{}/revoke", id(&tok))).token(&b.admin.secret).send().await.ok(200);
    srv.get("/v1/projects").token(&secret).send().await.problem(401, "unauthenticated");

    // A deleted token stops working too.
    let (tok2, secret2) = srv.mint_token(&b.admin.secret, &b.dev_user, "deleted-one").await;
    srv.get("/v1/projects").token(&secret2).send().await.ok(200);
    srv.delete(&format!("/v1/tokens/{}", id(&tok2))).token(&b.admin.secret).send().await.ok(204);
    srv.get("/v1/projects").token(&secret2).send().await.problem(401, "unauthenticated");
}

#[tokio::test]
async fn no_list_or_read_shows_token_secrets() {
    let srv = TestServer::start().await;
    let b = World::build(&srv, "bravo").await;
    for path in ["/v1/tokens".to_string(), format!("/v1/tokens/{}", b.dev_token), "/v1/audit-log".to_string()] {
        for t in [&srv.operator, &b.admin.secret] {
            let r = srv.get(&path).token(t).send().await;
            r.ok(200);
            for secret in [&b.admin.secret, &b.dev_secret, &srv.operator] {
                assert!(!r.text.contains(secret.as_str()), "{path} shows a token secret: {}", r.text);
            }
        }
    }
}

#[tokio::test]
async fn a_member_narrowed_to_one_project_sees_only_that_project() {
    let srv = TestServer::start().await;
    let b = World::build(&srv, "bravo").await;
    let other = srv.create_project(&b.admin.secret, None, "bravo-other").await;
    let u = srv.create_user(&b.admin.secret, &b.admin.tenant_id, "bravo-narrow").await;
    srv.bind(&b.admin.secret, &id(&u), "member", Some(&b.project)).await;
    let (_, secret) = srv.mint_token(&b.admin.secret, &id(&u), "bravo-narrow-key").await;

    let listed = srv.list_ids(&secret, "/v1/projects").await;
    assert_eq!(listed, vec![b.project.clone()], "only the bound project is listed");
    srv.get(&format!("/v1/projects/{}", b.project)).token(&secret).send().await.ok(200);
    let r = srv.get(&format!("/v1/projects/{}", id(&other))).token(&secret).send().await;
    r.problem(404, "not_found");
    // A member cannot change the project it may see, nor make projects.
    srv.patch(&format!("/v1/projects/{}", b.project))
        .token(&secret)
        .json(&json!({ "description": "member edit" }))
        .send()
        .await
        .problem(403, "forbidden");
    srv.post("/v1/projects")
        .token(&secret)
        .json(&json!({ "name": "bravo-new" }))
        .send()
        .await
        .problem(403, "forbidden");
    assert_eq!(srv.list_all(&srv.operator, "/v1/projects").await.len(), 2);
}

/// `?name=` narrows a list to the objects of that name the caller can see: exactly the
/// named one, and never another tenant's object of the same name.
#[tokio::test]
async fn a_name_filter_finds_exactly_the_named_object_in_the_callers_scope() {
    let srv = TestServer::start().await;
    let op = srv.operator.clone();
    let names = |items: &[Value]| items.iter().map(id).collect::<BTreeSet<_>>();
    let one = |v: &Value| BTreeSet::from([id(v)]);

    // Two tenants, each with a user `alice`, a project `web`, a token `ci` and a
    // placement group `ha`: the same names on both sides.
    let mut own = Vec::new();
    for t in ["acme", "globex"] {
        let admin = srv.tenant_with_admin(t).await;
        let alice = srv.create_user(&admin.secret, &admin.tenant_id, "alice").await;
        let web = srv.create_project(&admin.secret, None, "web").await;
        let (ci, _) = srv.mint_token(&admin.secret, &admin.user_id, "ci").await;
        let ha = srv
            .post("/v1/placement-groups")
            .token(&admin.secret)
            .json(&json!({ "project_id": id(&web), "name": "ha", "policy": "anti-affinity" }))
            .send()
            .await
            .ok(201);
        srv.create_user(&admin.secret, &admin.tenant_id, "bob").await;
        own.push((admin, alice, web, ci, ha));
    }
    let (acme, acme_alice, acme_web, acme_ci, acme_ha) = &own[0];
    let (globex, globex_alice, ..) = &own[1];

    // The operator sees both tenants; a name picks one, or both alices.
    let tenants = srv.list_all(&op, "/v1/tenants?name=acme").await;
    assert_eq!(names(&tenants), BTreeSet::from([acme.tenant_id.clone()]));
    let alices = srv.list_all(&op, "/v1/users?name=alice").await;
    assert_eq!(names(&alices), BTreeSet::from([id(acme_alice), id(globex_alice)]));

    // acme's admin sees only acme's objects of each name.
    let s = &acme.secret;
    let cases: [(&str, BTreeSet<String>); 6] = [
        ("/v1/tenants?name=acme", BTreeSet::from([acme.tenant_id.clone()])),
        ("/v1/tenants?name=globex", BTreeSet::new()),
        ("/v1/users?name=alice", one(acme_alice)),
        ("/v1/projects?name=web", one(acme_web)),
        ("/v1/tokens?name=ci", one(acme_ci)),
        ("/v1/placement-groups?name=ha", one(acme_ha)),
    ];
    for (path, want) in cases {
        assert_eq!(names(&srv.list_all(s, path).await), want, "{path} as acme's admin");
    }
    // The filter narrows: without it the same lists hold more.
    assert!(srv.list_all(s, "/v1/users").await.len() > 1);
    assert!(srv.list_all(&globex.secret, "/v1/users?name=nobody").await.is_empty());

    // Inventory (operators): sites, racks and hosts by name.
    let mut sites = Vec::new();
    for n in ["dc1", "dc2"] {
        sites.push(srv.post("/v1/sites").token(&op).json(&json!({ "name": n })).send().await.ok(201));
    }
    let mut racks = Vec::new();
    for (site, n) in [(&sites[0], "r1"), (&sites[0], "r2"), (&sites[1], "r1")] {
        let body = json!({ "site_id": id(site), "name": n });
        racks.push(srv.post("/v1/racks").token(&op).json(&body).send().await.ok(201));
    }
    let mut hosts = Vec::new();
    for n in ["node-1", "node-2"] {
        hosts.push(srv.post("/v1/hosts").token(&op).json(&json!({ "name": n })).send().await.ok(201));
    }
    assert_eq!(names(&srv.list_all(&op, "/v1/sites?name=dc2").await), one(&sites[1]));
    let r1 = srv.list_all(&op, &format!("/v1/racks?site_id={}&name=r1", id(&sites[0]))).await;
    assert_eq!(names(&r1), one(&racks[0]));
    let r1_anywhere = srv.list_all(&op, "/v1/racks?name=r1").await;
    assert_eq!(names(&r1_anywhere), BTreeSet::from([id(&racks[0]), id(&racks[2])]));
    assert_eq!(names(&srv.list_all(&op, "/v1/hosts?name=node-2").await), one(&hosts[1]));
}
