//! The resource commands: `plinth <noun> list|get|create|update|delete`, each a thin
//! mapping from flags to the `/v1` API and from answers to tables or JSON.

pub mod args;
pub mod billing;
pub mod compute;
pub mod images;
pub mod wait;

use crate::client::Client;
use crate::output::{self, Format};
use anyhow::Result;
use args::*;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

/// Paging flags of every list.
#[derive(Args, Clone, Debug)]
pub struct ListArgs {
    /// Largest number of items (1–1000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Continue after this cursor (printed by the previous page).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl ListArgs {
    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = vec![("limit".to_string(), self.limit.to_string())];
        if let Some(c) = &self.cursor {
            q.push(("cursor".into(), c.clone()));
        }
        q
    }
}

/// A request body built from flags.
pub trait Body {
    fn body(&self) -> Value;
}

macro_rules! crud {
    ($(#[$doc:meta])* $name:ident, $create:ty, $update:ty) => {
        $(#[$doc])*
        #[derive(Subcommand, Debug)]
        pub enum $name {
            /// List them.
            List(ListArgs),
            /// Show one.
            Get { id: String },
            /// Create one.
            Create(#[command(flatten)] $create),
            /// Change one.
            Update {
                id: String,
                /// Refuse unless the object is still at this generation.
                #[arg(long)]
                if_match: Option<i64>,
                #[command(flatten)]
                set: $update,
            },
            /// Delete one.
            Delete {
                id: String,
                /// Refuse unless the object is still at this generation.
                #[arg(long)]
                if_match: Option<i64>,
            },
        }

        impl $name {
            pub async fn run(&self, c: &Client, o: Format, spec: &Spec) -> Result<()> {
                match self {
                    $name::List(l) => spec.list(c, o, l.query()).await,
                    $name::Get { id } => spec.get(c, o, id).await,
                    $name::Create(b) => spec.create(c, o, b.body()).await,
                    $name::Update { id, if_match, set } => spec.update(c, o, id, *if_match, set.body()).await,
                    $name::Delete { id, if_match } => spec.delete(c, id, *if_match).await,
                }
            }
        }
    };
}

crud!(/// Tenants (billing accounts).
    TenantCmd, TenantCreateArgs, TenantUpdateArgs);
crud!(/// Projects in a tenant.
    ProjectCmd, ProjectCreateArgs, ProjectUpdateArgs);
crud!(/// Users.
    UserCmd, UserCreateArgs, UserUpdateArgs);
crud!(/// Role bindings.
    RoleBindingCmd, RoleBindingCreateArgs, RoleBindingUpdateArgs);
crud!(/// Sites (operators).
    SiteCmd, SiteCreateArgs, DescriptionArgs);
crud!(/// Racks (operators).
    RackCmd, RackCreateArgs, DescriptionArgs);
crud!(/// Host join tokens (operators).
    JoinTokenCmd, JoinTokenCreateArgs, DescriptionArgs);
crud!(/// Shapes.
    ShapeCmd, ShapeCreateArgs, DescriptionArgs);

/// API tokens.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// List your tokens (all of your tenant's, for tenant-admins).
    List(ListArgs),
    /// Show one.
    Get { id: String },
    /// Create a token; its secret is printed once.
    Create(#[command(flatten)] TokenCreateArgs),
    /// Rename one.
    Update {
        id: String,
        #[arg(long)]
        if_match: Option<i64>,
        #[command(flatten)]
        set: TokenUpdateArgs,
    },
    /// Revoke one: it stops working at once and stays listed.
    Revoke { id: String },
    /// Delete one.
    Delete {
        id: String,
        #[arg(long)]
        if_match: Option<i64>,
    },
}

impl TokenCmd {
    pub async fn run(&self, c: &Client, o: Format, spec: &Spec) -> Result<()> {
        match self {
            TokenCmd::List(l) => spec.list(c, o, l.query()).await,
            TokenCmd::Get { id } => spec.get(c, o, id).await,
            TokenCmd::Create(b) => spec.create(c, o, b.body()).await,
            TokenCmd::Update { id, if_match, set } => spec.update(c, o, id, *if_match, set.body()).await,
            TokenCmd::Revoke { id } => {
                let v = c
                    .call(
                        Method::POST,
                        &format!("{}/{id}/revoke", spec.path),
                        &[],
                        Some(&Value::Object(Default::default())),
                    )
                    .await?;
                output::object(o, &v);
                Ok(())
            }
            TokenCmd::Delete { id, if_match } => spec.delete(c, id, *if_match).await,
        }
    }
}

/// Hosts (operators): records, scheduling settings and host operations.
#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// List them.
    List(ListArgs),
    /// Show one.
    Get { id: String },
    /// Declare one ahead of its agent.
    Create(#[command(flatten)] HostCreateArgs),
    /// Change one (rack, ownership, labels, traits, BMC, scheduling settings).
    Update {
        id: String,
        #[arg(long)]
        if_match: Option<i64>,
        #[command(flatten)]
        set: HostUpdateArgs,
    },
    /// Delete one (enrolling, retired or failed hosts only).
    Delete {
        id: String,
        #[arg(long)]
        if_match: Option<i64>,
    },
    /// Stop placing new instances on it.
    Cordon { id: String },
    /// Let placement use it again.
    Uncordon { id: String },
    /// Move every instance off it (abort with `plinth operation cancel`).
    Drain {
        id: String,
        #[command(flatten)]
        wait: compute::WaitArgs,
    },
    /// Put a drained host into maintenance.
    Maintenance { id: String },
    /// Retire it for good.
    Retire { id: String },
    /// Confirm it is powered off or cut off, so its instances may be recovered elsewhere.
    Fence {
        id: String,
        #[command(flatten)]
        wait: compute::WaitArgs,
    },
    /// Declare an unreachable host failed (recovery starts once it is fenced).
    Fail {
        id: String,
        #[command(flatten)]
        wait: compute::WaitArgs,
    },
    /// What it holds, down to pinned CPUs, hugepages and GPUs.
    Allocations {
        id: String,
        #[command(flatten)]
        page: ListArgs,
    },
}

impl HostCmd {
    pub async fn run(&self, c: &Client, o: Format, spec: &Spec) -> Result<()> {
        let no_wait = compute::WaitArgs { wait: false, timeout: 0 };
        match self {
            HostCmd::List(l) => spec.list(c, o, l.query()).await,
            HostCmd::Get { id } => spec.get(c, o, id).await,
            HostCmd::Create(b) => spec.create(c, o, b.body()).await,
            HostCmd::Update { id, if_match, set } => {
                let mut body = set.body();
                if set.scheduling_given() {
                    let cur = c.get(&format!("{}/{id}", spec.path), &[]).await?;
                    body["scheduling"] = set.scheduling(cur["scheduling"].clone())?;
                }
                spec.update(c, o, id, *if_match, body).await
            }
            HostCmd::Delete { id, if_match } => spec.delete(c, id, *if_match).await,
            HostCmd::Cordon { id } => compute::host_action(c, o, id, "cordon", &no_wait).await,
            HostCmd::Uncordon { id } => compute::host_action(c, o, id, "uncordon", &no_wait).await,
            HostCmd::Drain { id, wait } => compute::host_action(c, o, id, "drain", wait).await,
            HostCmd::Maintenance { id } => compute::host_action(c, o, id, "maintenance", &no_wait).await,
            HostCmd::Retire { id } => compute::host_action(c, o, id, "retire", &no_wait).await,
            HostCmd::Fence { id, wait } => compute::host_action(c, o, id, "fence", wait).await,
            HostCmd::Fail { id, wait } => compute::host_action(c, o, id, "fail", wait).await,
            HostCmd::Allocations { id, page } => {
                let v = c.get(&format!("{}/{id}/allocations", spec.path), &page.query()).await?;
                output::list(
                    o,
                    &v,
                    &[
                        "instance_id",
                        "claim.vcpus",
                        "claim.cpu_policy",
                        "claim.memory_mib",
                        "claim.cpus",
                        "claim.numa_nodes",
                        "claim.gpus",
                    ],
                );
                Ok(())
            }
        }
    }
}

/// The audit log.
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// List audit records, oldest first.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only records by this user id.
        #[arg(long)]
        actor: Option<String>,
        /// Only records about this object id.
        #[arg(long)]
        target: Option<String>,
        /// Only this action, e.g. projects.create.
        #[arg(long)]
        action: Option<String>,
        /// Only records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only records before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
    },
}

impl AuditCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        let AuditCmd::List { page, actor, target, action, since, until } = self;
        let mut q = page.query();
        for (k, v) in [("actor", actor), ("target", target), ("action", action), ("since", since), ("until", until)] {
            if let Some(v) = v {
                q.push((k.to_string(), v.clone()));
            }
        }
        let v = c.get("/v1/audit-log", &q).await?;
        output::list(
            o,
            &v,
            &["time", "actor_user_id", "action", "target", "status", "result", "error_code", "request_id"],
        );
        Ok(())
    }
}

/// Where a resource lives and which columns its table shows.
pub struct Spec {
    pub path: &'static str,
    pub columns: &'static [&'static str],
}

impl Spec {
    pub async fn list(&self, c: &Client, o: Format, q: Vec<(String, String)>) -> Result<()> {
        let v = c.get(self.path, &q).await?;
        output::list(o, &v, self.columns);
        Ok(())
    }
    pub async fn get(&self, c: &Client, o: Format, id: &str) -> Result<()> {
        output::object(o, &c.get(&format!("{}/{id}", self.path), &[]).await?);
        Ok(())
    }
    pub async fn create(&self, c: &Client, o: Format, body: Value) -> Result<()> {
        let v = c.call(Method::POST, self.path, &[], Some(&body)).await?;
        output::object(o, &v);
        if o == Format::Table && v.get("secret").is_some() {
            eprintln!("The secret above is shown once; store it now.");
        }
        Ok(())
    }
    pub async fn update(&self, c: &Client, o: Format, id: &str, if_match: Option<i64>, body: Value) -> Result<()> {
        let v = c.call_with_if_match(Method::PATCH, &format!("{}/{id}", self.path), if_match, Some(&body)).await?;
        output::object(o, &v);
        Ok(())
    }
    pub async fn delete(&self, c: &Client, id: &str, if_match: Option<i64>) -> Result<()> {
        c.call_with_if_match(Method::DELETE, &format!("{}/{id}", self.path), if_match, None).await?;
        eprintln!("deleted {id}");
        Ok(())
    }
}

pub const TENANTS: Spec = Spec { path: "/v1/tenants", columns: &["id", "name", "display_name", "generation"] };
pub const PROJECTS: Spec = Spec { path: "/v1/projects", columns: &["id", "tenant_id", "name", "description"] };
pub const USERS: Spec = Spec { path: "/v1/users", columns: &["id", "tenant_id", "name", "email"] };
pub const TOKENS: Spec = Spec { path: "/v1/tokens", columns: &["id", "user_id", "name", "expires_at", "revoked_at"] };
pub const ROLE_BINDINGS: Spec =
    Spec { path: "/v1/role-bindings", columns: &["id", "user_id", "role", "tenant_id", "project_id"] };
pub const SITES: Spec = Spec { path: "/v1/sites", columns: &["id", "name", "location"] };
pub const RACKS: Spec = Spec { path: "/v1/racks", columns: &["id", "site_id", "name"] };
pub const HOSTS: Spec = Spec {
    path: "/v1/hosts",
    columns: &[
        "id",
        "name",
        "state",
        "inventory.runtime",
        "rack_id",
        "ownership",
        "inventory.cpu.threads",
        "inventory.memory_mib",
        "inventory.virtualization.kvm",
    ],
};
pub const JOIN_TOKENS: Spec =
    Spec { path: "/v1/host-join-tokens", columns: &["id", "description", "expires_at", "used_at", "used_by_host_id"] };
pub const SHAPES: Spec = Spec {
    path: "/v1/shapes",
    columns: &["id", "name", "vcpus", "memory_mib", "disk_gib", "gpu", "cpu_policy", "hugepages", "runtime_class"],
};
