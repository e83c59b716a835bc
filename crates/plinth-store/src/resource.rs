//! The [`Resource`] trait: how a wire type maps onto its table — table name, the indexed
//! columns beside the JSON document, which column carries the tenant, and who refers to it.

use chrono::{DateTime, Utc};
use plinth_api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value bound into a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Val {
    pub fn text(s: impl Into<String>) -> Val {
        Val::Text(Some(s.into()))
    }
    pub fn opt_text<S: ToString>(s: Option<S>) -> Val {
        Val::Text(s.map(|s| s.to_string()))
    }
}

/// A stored resource: a JSON document plus indexed columns.
pub trait Resource: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// Table name.
    const TABLE: &'static str;
    /// Kind, for errors (`project`).
    const KIND: &'static str;
    /// The column holding the owning tenant; None for platform resources (sites, shapes).
    const TENANT_COL: Option<&'static str>;
    /// The column holding the owning project, for project-narrowed scopes.
    const PROJECT_COL: Option<&'static str> = None;
    /// Columns a list may filter on (exact match).
    const FILTERS: &'static [&'static str] = &[];
    /// (table, column) pairs that refer to this resource and block its deletion.
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[];

    fn id(&self) -> &str;
    fn generation(&self) -> i64;
    fn set_meta(&mut self, generation: i64, updated_at: DateTime<Utc>);
    fn created_at(&self) -> DateTime<Utc>;
    /// Indexed columns other than id, generation, created_at, updated_at and doc.
    fn columns(&self) -> Vec<(&'static str, Val)>;
    /// The tenant the object belongs to, for audit records.
    fn tenant(&self) -> Option<String> {
        None
    }
}

/// The identity and generation methods of a [`Resource`] whose type has `id`, `generation`,
/// `created_at` and `updated_at` fields; `meta!(tenant)` also answers `tenant()` from its
/// `tenant_id`. Shared by every store module that maps a wire type.
macro_rules! meta {
    (tenant) => {
        meta!();
        fn tenant(&self) -> Option<String> {
            Some(self.tenant_id.to_string())
        }
    };
    () => {
        fn id(&self) -> &str {
            self.id.as_str()
        }
        fn generation(&self) -> i64 {
            self.generation
        }
        fn set_meta(&mut self, generation: i64, updated_at: DateTime<Utc>) {
            self.generation = generation;
            self.updated_at = updated_at;
        }
        fn created_at(&self) -> DateTime<Utc> {
            self.created_at
        }
    };
}
pub(crate) use meta;

impl Resource for Tenant {
    const TABLE: &'static str = "tenants";
    const KIND: &'static str = "tenant";
    const TENANT_COL: Option<&'static str> = Some("id");
    const FILTERS: &'static [&'static str] = &["name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] =
        &[("projects", "tenant_id"), ("users", "tenant_id"), ("hosts", "owner_tenant_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("name", Val::text(&self.name))]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.id.to_string())
    }
}

impl Resource for Project {
    const TABLE: &'static str = "projects";
    const KIND: &'static str = "project";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("id");
    const FILTERS: &'static [&'static str] = &["tenant_id", "name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[
        ("role_bindings", "project_id"),
        ("instances", "project_id"),
        ("placement_groups", "project_id"),
        ("vpcs", "project_id"),
        ("images", "project_id"),
        ("floating_ips", "project_id"),
        ("volumes", "project_id"),
    ];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("tenant_id", Val::text(&self.tenant_id.0)), ("name", Val::text(&self.name))]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for User {
    const TABLE: &'static str = "users";
    const KIND: &'static str = "user";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const FILTERS: &'static [&'static str] = &["tenant_id", "name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] =
        &[("role_bindings", "user_id"), ("api_tokens", "user_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::opt_text(self.tenant_id.as_ref())),
            ("tenant_key", Val::text(self.tenant_id.as_ref().map(|t| t.0.clone()).unwrap_or_default())),
            ("name", Val::text(&self.name)),
        ]
    }
    fn tenant(&self) -> Option<String> {
        self.tenant_id.as_ref().map(|t| t.to_string())
    }
}

impl Resource for RoleBinding {
    const TABLE: &'static str = "role_bindings";
    const KIND: &'static str = "role binding";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const FILTERS: &'static [&'static str] = &["user_id", "tenant_id", "project_id", "role"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        let grant_key = format!(
            "{}|{}|{}|{}",
            self.user_id,
            self.role.as_str(),
            self.tenant_id.as_ref().map(|t| t.as_str()).unwrap_or(""),
            self.project_id.as_ref().map(|p| p.as_str()).unwrap_or("")
        );
        vec![
            ("user_id", Val::text(&self.user_id.0)),
            ("tenant_id", Val::opt_text(self.tenant_id.as_ref())),
            ("project_id", Val::opt_text(self.project_id.as_ref())),
            ("role", Val::text(self.role.as_str())),
            ("grant_key", Val::Text(Some(grant_key))),
            ("name", Val::text(self.role.as_str())),
        ]
    }
    fn tenant(&self) -> Option<String> {
        self.tenant_id.as_ref().map(|t| t.to_string())
    }
}

impl Resource for ApiToken {
    const TABLE: &'static str = "api_tokens";
    const KIND: &'static str = "token";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const FILTERS: &'static [&'static str] = &["user_id", "tenant_id", "name"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("user_id", Val::text(&self.user_id.0)),
            ("tenant_id", Val::opt_text(self.tenant_id.as_ref())),
            ("name", Val::text(&self.name)),
            ("expires_at", Val::Int(self.expires_at.map(|t| t.timestamp_micros()))),
            ("revoked_at", Val::Int(self.revoked_at.map(|t| t.timestamp_micros()))),
        ]
    }
    fn tenant(&self) -> Option<String> {
        self.tenant_id.as_ref().map(|t| t.to_string())
    }
}

impl Resource for Site {
    const TABLE: &'static str = "sites";
    const KIND: &'static str = "site";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] =
        &[("racks", "site_id"), ("hosts", "site_id"), ("ip_pools", "site_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("name", Val::text(&self.name))]
    }
}

impl Resource for Rack {
    const TABLE: &'static str = "racks";
    const KIND: &'static str = "rack";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["site_id", "name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] =
        &[("hosts", "rack_id"), ("host_join_tokens", "rack_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("site_id", Val::text(&self.site_id.0)), ("name", Val::text(&self.name))]
    }
}

impl Resource for Host {
    const TABLE: &'static str = "hosts";
    const KIND: &'static str = "host";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["state", "rack_id", "site_id", "name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] =
        &[("instances", "host_id"), ("allocations", "host_id"), ("volumes", "host_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        let owner = match &self.ownership {
            Ownership::Shared => None,
            Ownership::Dedicated { tenant_id } => Some(tenant_id.0.clone()),
        };
        vec![
            ("name", Val::text(&self.name)),
            ("site_id", Val::opt_text(self.site_id.as_ref())),
            ("rack_id", Val::opt_text(self.rack_id.as_ref())),
            ("state", Val::text(self.state.as_str())),
            ("owner_tenant_id", Val::Text(owner)),
        ]
    }
}

impl Resource for HostJoinToken {
    const TABLE: &'static str = "host_join_tokens";
    const KIND: &'static str = "host join token";
    const TENANT_COL: Option<&'static str> = None;
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("name", Val::text(&self.description)),
            ("rack_id", Val::opt_text(self.rack_id.as_ref())),
            ("expires_at", Val::Int(Some(self.expires_at.timestamp_micros()))),
            ("used_at", Val::Int(self.used_at.map(|t| t.timestamp_micros()))),
        ]
    }
}

impl Resource for Shape {
    const TABLE: &'static str = "shapes";
    const KIND: &'static str = "shape";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[("instances", "shape_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("name", Val::text(&self.name))]
    }
}

/// `,k=v,k2=v2,`: labels as one column a `LIKE '%,k=v,%'` filter can search.
pub(crate) fn label_column(labels: &std::collections::BTreeMap<String, String>) -> String {
    let mut s = String::from(",");
    for (k, v) in labels {
        s.push_str(k);
        s.push('=');
        s.push_str(v);
        s.push(',');
    }
    s
}

impl Resource for Instance {
    const TABLE: &'static str = "instances";
    const KIND: &'static str = "instance";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "state", "host_id", "name", "labels", "lifecycle"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[("allocations", "instance_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        let live = self.lifecycle != Lifecycle::Deleted;
        // The blobs it boots from, kept while it lives (blob GC reads these columns).
        let boot = self.boot.as_ref().filter(|_| live);
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("name", Val::text(&self.name)),
            ("name_key", Val::Text(live.then(|| self.name.clone()))),
            ("state", Val::text(self.state.as_str())),
            ("lifecycle", Val::text(lifecycle_str(self.lifecycle))),
            ("host_id", Val::opt_text(self.host_id.as_ref())),
            ("shape_id", Val::text(&self.shape_id.0)),
            ("placement_group_id", Val::opt_text(self.placement_group_id.as_ref())),
            ("labels", Val::text(label_column(&self.labels))),
            ("boot_disk", Val::opt_text(boot.and_then(|b| b.disk.as_ref()).map(|f| &f.sha256))),
            ("boot_kernel", Val::opt_text(boot.and_then(|b| b.kernel.as_ref()).map(|f| &f.sha256))),
            ("boot_initrd", Val::opt_text(boot.and_then(|b| b.initrd.as_ref()).map(|f| &f.sha256))),
        ]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

/// The stored name of a lifecycle.
pub fn lifecycle_str(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Creating => "creating",
        Lifecycle::Active => "active",
        Lifecycle::Busy => "busy",
        Lifecycle::Failed => "failed",
        Lifecycle::Deleting => "deleting",
        Lifecycle::Deleted => "deleted",
    }
}

impl Resource for PlacementGroup {
    const TABLE: &'static str = "placement_groups";
    const KIND: &'static str = "placement group";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[("instances", "placement_group_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("name", Val::text(&self.name)),
        ]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for Allocation {
    const TABLE: &'static str = "allocations";
    const KIND: &'static str = "allocation";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["host_id", "instance_id"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("host_id", Val::text(&self.host_id.0)),
            ("instance_id", Val::text(&self.instance_id.0)),
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
        ]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for InstanceEvent {
    const TABLE: &'static str = "instance_events";
    const KIND: &'static str = "instance event";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["instance_id"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("instance_id", Val::text(&self.instance_id.0)),
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
        ]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for Operation {
    const TABLE: &'static str = "operations";
    const KIND: &'static str = "operation";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["target", "status", "kind"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::opt_text(self.tenant_id.as_ref())),
            ("project_id", Val::opt_text(self.project_id.as_ref())),
            ("kind", Val::text(&self.kind)),
            ("target", Val::text(&self.target)),
            ("status", Val::text(self.status.as_str())),
        ]
    }
    fn tenant(&self) -> Option<String> {
        self.tenant_id.as_ref().map(|t| t.to_string())
    }
}

/// The owner key of an image: its project, or `public` (one UNIQUE rule over both).
pub fn image_owner_key(project: Option<&ProjectId>) -> String {
    project.map(|p| p.0.clone()).unwrap_or_else(|| "public".into())
}

/// The stored name of an image status.
pub fn image_status_str(s: ImageStatus) -> &'static str {
    match s {
        ImageStatus::Importing => "importing",
        ImageStatus::Available => "available",
        ImageStatus::Failed => "failed",
    }
}

impl Resource for Image {
    const TABLE: &'static str = "images";
    const KIND: &'static str = "image";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "owner_key", "name", "status"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        // A failed image holds no blobs: GC may take its files unless another uses them.
        let blob = |role: ImageFileRole| {
            let f = self.files.iter().find(|f| f.role == role).filter(|_| self.status != ImageStatus::Failed);
            Val::opt_text(f.map(|f| &f.sha256))
        };
        vec![
            ("tenant_id", Val::opt_text(self.tenant_id.as_ref())),
            ("project_id", Val::opt_text(self.project_id.as_ref())),
            ("owner_key", Val::text(image_owner_key(self.project_id.as_ref()))),
            ("name", Val::text(&self.name)),
            ("status", Val::text(image_status_str(self.status))),
            ("disk_sha256", blob(ImageFileRole::Disk)),
            ("kernel_sha256", blob(ImageFileRole::Kernel)),
            ("initrd_sha256", blob(ImageFileRole::Initrd)),
        ]
    }
    fn tenant(&self) -> Option<String> {
        self.tenant_id.as_ref().map(|t| t.to_string())
    }
}

fn micros_of(t: DateTime<Utc>) -> Val {
    Val::Int(Some(t.timestamp_micros()))
}

impl Resource for PriceBook {
    const TABLE: &'static str = "price_books";
    const KIND: &'static str = "price book";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["name"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("name", Val::text(&self.name)),
            ("version", Val::Int(Some(self.version))),
            ("effective_from", micros_of(self.effective_from)),
        ]
    }
}

/// The stored name of an invoice status.
pub fn invoice_status_str(s: InvoiceStatus) -> &'static str {
    match s {
        InvoiceStatus::Draft => "draft",
        InvoiceStatus::Finalized => "finalized",
        InvoiceStatus::Void => "void",
    }
}

impl Resource for Invoice {
    const TABLE: &'static str = "invoices";
    const KIND: &'static str = "invoice";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    /// `period` is the period's start as `YYYY-MM-DD` (its anchor day).
    const FILTERS: &'static [&'static str] = &["status", "kind", "period"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(self.tenant_id.as_str())),
            ("period_start", micros_of(self.period_start)),
            ("period", Val::text(self.period_start.format("%Y-%m-%d").to_string())),
            ("status", Val::text(invoice_status_str(self.status))),
            (
                "kind",
                Val::text(match self.kind {
                    InvoiceKind::Invoice => "invoice",
                    InvoiceKind::CreditNote => "credit_note",
                }),
            ),
            ("number", Val::opt_text(self.number.as_ref())),
            ("total", Val::Int(Some(self.total_micros))),
        ]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for CreditGrant {
    const TABLE: &'static str = "credit_grants";
    const KIND: &'static str = "credit grant";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("tenant_id", Val::text(self.tenant_id.as_str()))]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for Commitment {
    const TABLE: &'static str = "commitments";
    const KIND: &'static str = "commitment";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("tenant_id", Val::text(self.tenant_id.as_str()))]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}

impl Resource for Budget {
    const TABLE: &'static str = "budgets";
    const KIND: &'static str = "budget";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const FILTERS: &'static [&'static str] = &["action"];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(self.tenant_id.as_str())),
            (
                "action",
                Val::text(match self.action {
                    BudgetAction::Notify => "notify",
                    BudgetAction::BlockNew => "block-new",
                }),
            ),
            ("exceeded_period", Val::Int(self.exceeded_period.map(|t| t.timestamp_micros()))),
        ]
    }
    fn tenant(&self) -> Option<String> {
        Some(self.tenant_id.to_string())
    }
}
