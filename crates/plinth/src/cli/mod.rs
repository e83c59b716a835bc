//! The resource commands: `plinth <noun> list|get|create|update|delete`, each a thin
//! mapping from flags to a typed `/v1` request (names resolved to ids first) and from the
//! typed answer to a table, or to the document as it came (`-o json|yaml`, `--field`).

pub mod args;
pub mod billing;
pub mod compute;
pub mod images;
pub mod network;
pub mod storage;
pub mod wait;

use crate::output::Out;
use anyhow::Result;
use args::*;
use clap::{Args, Subcommand};
use plinth_api::*;
use plinth_client::resolve::{resolve, resolve_opt};
use plinth_client::*;

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
    pub fn page(&self) -> PageParams {
        PageParams { limit: Some(self.limit), cursor: self.cursor.clone() }
    }
}

/// A request body built from flags (resolving the names they give).
pub trait Body<T> {
    async fn body(&self, c: &Client) -> Result<T>;
}

/// How a command's positional argument becomes an id: by name where the collection has
/// names, as given where it has none.
pub trait Ids: Resource {
    async fn lookup(c: &Client, given: &str) -> Result<String>;
}

macro_rules! ids {
    (named: $($named:ident),*; plain: $($plain:ident),*) => {
        $(impl Ids for $named {
            async fn lookup(c: &Client, given: &str) -> Result<String> {
                Ok(resolve::<$named>(c, given).await?)
            }
        })*
        $(impl Ids for $plain {
            async fn lookup(_: &Client, given: &str) -> Result<String> {
                Ok(given.to_string())
            }
        })*
    };
}

ids!(named: Tenants, Projects, Users, Tokens, Sites, Racks, Hosts, Shapes, Images, Instances, PlacementGroups, Budgets,
    Vpcs, Subnets, Nics, SecurityGroups, IpPools, FloatingIps, VolumeTypes, Volumes;
    plain: RoleBindings, JoinTokens, Operations, Invoices, PriceBooks);

/// Says on stderr which filters matched nothing, when a filtered list came back empty.
pub fn none_match<T>(what: &str, page: &Page<T>, filters: &[(&str, Option<String>)]) {
    let given: Vec<String> = filters.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}"))).collect();
    if page.items.is_empty() && page.next_cursor.is_none() && !given.is_empty() {
        eprintln!("no {what} match {}", given.join(" "));
    }
}

/// Lists a collection, with its filters.
pub async fn list<R: Resource>(c: &Client, o: &Out, l: &ListArgs, filter: &R::Filter, columns: &[&str]) -> Result<()>
where
    R::Item: serde::Serialize,
{
    o.list(&c.list::<R>(&l.page(), filter).await?, columns)
}

/// Shows one item, by id or name.
pub async fn get<R: Ids>(c: &Client, o: &Out, given: &str) -> Result<()> {
    o.object(&c.view::<R>(&R::lookup(c, given).await?).await?)
}

/// Creates an item; a secret in the answer is shown once.
pub async fn create<R: Creatable>(c: &Client, o: &Out, body: &R::Create) -> Result<()>
where
    R::Created: serde::Serialize,
{
    o.object(&c.create::<R>(body).await?)?;
    if !o.machine() && matches!(R::KIND, "token" | "join token") {
        eprintln!("The secret above is shown once; store it now.");
    }
    Ok(())
}

/// Changes an item, by id or name.
pub async fn update<R: Updatable + Ids>(
    c: &Client,
    o: &Out,
    given: &str,
    if_match: Option<i64>,
    body: &R::Update,
) -> Result<()> {
    o.object(&c.update::<R>(&R::lookup(c, given).await?, if_match, body).await?)
}

/// Deletes an item, by id or name.
pub async fn delete<R: Deletable + Ids>(c: &Client, given: &str, if_match: Option<i64>) -> Result<()> {
    let id = R::lookup(c, given).await?;
    c.delete::<R>(&id, if_match).await?;
    eprintln!("deleted {id}");
    Ok(())
}

macro_rules! crud {
    ($(#[$doc:meta])* $name:ident, $res:ident, $create:ty, $update:ty, $columns:expr) => {
        $(#[$doc])*
        #[derive(Subcommand, Debug)]
        pub enum $name {
            /// List them.
            List(ListArgs),
            /// Show one (id or name).
            Get { id: String },
            /// Create one.
            Create(#[command(flatten)] $create),
            /// Change one (id or name).
            Update {
                id: String,
                /// Refuse unless the object is still at this generation.
                #[arg(long)]
                if_match: Option<i64>,
                #[command(flatten)]
                set: $update,
            },
            /// Delete one (id or name).
            Delete {
                id: String,
                /// Refuse unless the object is still at this generation.
                #[arg(long)]
                if_match: Option<i64>,
            },
        }

        impl $name {
            pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
                match self {
                    $name::List(l) => list::<$res>(c, o, l, &Default::default(), $columns).await,
                    $name::Get { id } => get::<$res>(c, o, id).await,
                    $name::Create(b) => create::<$res>(c, o, &b.body(c).await?).await,
                    $name::Update { id, if_match, set } => {
                        let body = <$update as Body<<$res as Updatable>::Update>>::body(set, c).await?;
                        update::<$res>(c, o, id, *if_match, &body).await
                    }
                    $name::Delete { id, if_match } => delete::<$res>(c, id, *if_match).await,
                }
            }
        }
    };
}

crud!(/// Tenants (billing accounts).
    TenantCmd, Tenants, TenantCreateArgs, TenantUpdateArgs, &["id", "name", "display_name", "generation"]);
crud!(/// Users.
    UserCmd, Users, UserCreateArgs, UserUpdateArgs, &["id", "tenant_id", "name", "email"]);
crud!(/// Role bindings.
    RoleBindingCmd, RoleBindings, RoleBindingCreateArgs, RoleBindingUpdateArgs,
    &["id", "user_id", "role", "tenant_id", "project_id"]);
crud!(/// Sites (operators).
    SiteCmd, Sites, SiteCreateArgs, DescriptionArgs, &["id", "name", "location"]);
crud!(/// Racks (operators).
    RackCmd, Racks, RackCreateArgs, DescriptionArgs, &["id", "site_id", "name"]);
crud!(/// Host join tokens (operators).
    JoinTokenCmd, JoinTokens, JoinTokenCreateArgs, DescriptionArgs,
    &["id", "description", "expires_at", "used_at", "used_by_host_id"]);
crud!(/// Shapes (the CRUD commands; `plinth shape price` is [`ShapeCmd`]'s own).
    ShapeCrud, Shapes, ShapeCreateArgs, DescriptionArgs,
    &["id", "name", "vcpus", "memory_mib", "disk_gib", "gpu", "cpu_policy", "hugepages", "runtime_class"]);

/// Shapes.
#[derive(Subcommand, Debug)]
pub enum ShapeCmd {
    #[command(flatten)]
    Crud(ShapeCrud),
    /// What running one instance of a shape costs, per hour and per month, by meter.
    Price {
        /// Shape id or name.
        id: String,
        /// Price for this tenant (operators; default: the `default` price book).
        #[arg(long)]
        tenant: Option<String>,
    },
}

impl ShapeCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            ShapeCmd::Crud(cmd) => cmd.run(c, o).await,
            ShapeCmd::Price { id, tenant } => {
                let shape = Shapes::lookup(c, id).await?;
                let tenant_id = resolve_opt::<Tenants>(c, tenant.as_deref()).await?.map(TenantId);
                o.object(&c.shape_price(&shape, &PriceEstimateQuery { tenant_id }).await?)
            }
        }
    }
}

const PROJECT_COLUMNS: &[&str] = &["id", "tenant_id", "name", "description"];

/// Projects in a tenant.
#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this tenant's (id or name; operators).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one.
    Create(#[command(flatten)] ProjectCreateArgs),
    /// Change one (id or name).
    Update {
        id: String,
        /// Refuse unless the object is still at this generation.
        #[arg(long)]
        if_match: Option<i64>,
        #[command(flatten)]
        set: ProjectUpdateArgs,
    },
    /// Delete one (id or name).
    Delete {
        id: String,
        /// Refuse unless the object is still at this generation.
        #[arg(long)]
        if_match: Option<i64>,
    },
}

impl ProjectCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            ProjectCmd::List { page, tenant } => {
                let tenant_id = resolve_opt::<Tenants>(c, tenant.as_deref()).await?;
                let filter = ProjectFilter { tenant_id: tenant_id.clone(), name: None };
                let d = c.list::<Projects>(&page.page(), &filter).await?;
                none_match("projects", &d, &[("tenant", tenant_id)]);
                o.list(&d, PROJECT_COLUMNS)
            }
            ProjectCmd::Get { id } => get::<Projects>(c, o, id).await,
            ProjectCmd::Create(b) => create::<Projects>(c, o, &b.body(c).await?).await,
            ProjectCmd::Update { id, if_match, set } => {
                update::<Projects>(c, o, id, *if_match, &set.body(c).await?).await
            }
            ProjectCmd::Delete { id, if_match } => delete::<Projects>(c, id, *if_match).await,
        }
    }
}

/// API tokens.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// List your tokens (all of your tenant's, for tenant-admins).
    List(ListArgs),
    /// Show one (id or name).
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
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            TokenCmd::List(l) => {
                list::<Tokens>(c, o, l, &TokenFilter::default(), &["id", "user_id", "name", "expires_at", "revoked_at"])
                    .await
            }
            TokenCmd::Get { id } => get::<Tokens>(c, o, id).await,
            TokenCmd::Create(b) => create::<Tokens>(c, o, &b.body(c).await?).await,
            TokenCmd::Update { id, if_match, set } => update::<Tokens>(c, o, id, *if_match, &set.body(c).await?).await,
            TokenCmd::Revoke { id } => o.object(&c.revoke_token(&Tokens::lookup(c, id).await?).await?),
            TokenCmd::Delete { id, if_match } => delete::<Tokens>(c, id, *if_match).await,
        }
    }
}

const HOST_COLUMNS: &[&str] = &[
    "id",
    "name",
    "state",
    "inventory.runtime",
    "rack_id",
    "ownership",
    "inventory.cpu.threads",
    "inventory.memory_mib",
    "inventory.virtualization.kvm",
];

/// Hosts (operators): records, scheduling settings and host operations.
#[derive(Subcommand, Debug)]
pub enum HostCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only hosts in this state: available, cordoned, draining, …
        #[arg(long, value_parser = wire::<HostState>)]
        state: Option<HostState>,
        /// Only hosts in this rack (id or name).
        #[arg(long)]
        rack: Option<String>,
        /// Only hosts in this site (id or name).
        #[arg(long)]
        site: Option<String>,
    },
    /// Show one (id or name).
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
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        use plinth_client::v1::HostVerb;
        let no_wait = compute::WaitArgs { wait: false, timeout: 0 };
        let act = |id, verb, w| compute::host_action(c, o, id, verb, w);
        match self {
            HostCmd::List { page, state, rack, site } => {
                let rack_id = resolve_opt::<Racks>(c, rack.as_deref()).await?;
                let site_id = resolve_opt::<Sites>(c, site.as_deref()).await?;
                let filter = HostFilter {
                    state: *state,
                    rack_id: rack_id.clone().map(RackId),
                    site_id: site_id.clone().map(SiteId),
                    name: None,
                };
                let d = c.list::<Hosts>(&page.page(), &filter).await?;
                let state = state.map(|s| s.as_str().to_string());
                none_match("hosts", &d, &[("state", state), ("rack", rack_id), ("site", site_id)]);
                o.list(&d, HOST_COLUMNS)
            }
            HostCmd::Get { id } => get::<Hosts>(c, o, id).await,
            HostCmd::Create(b) => create::<Hosts>(c, o, &b.body(c).await?).await,
            HostCmd::Update { id, if_match, set } => {
                let id = Hosts::lookup(c, id).await?;
                let mut body = set.body(c).await?;
                if set.scheduling_given() {
                    let current = c.view::<Hosts>(&id).await?.into_inner();
                    body.scheduling = Some(set.scheduling(current.scheduling)?);
                }
                update::<Hosts>(c, o, &id, *if_match, &body).await
            }
            HostCmd::Delete { id, if_match } => delete::<Hosts>(c, id, *if_match).await,
            HostCmd::Cordon { id } => act(id, HostVerb::Cordon, &no_wait).await,
            HostCmd::Uncordon { id } => act(id, HostVerb::Uncordon, &no_wait).await,
            HostCmd::Drain { id, wait } => act(id, HostVerb::Drain, wait).await,
            HostCmd::Maintenance { id } => act(id, HostVerb::Maintenance, &no_wait).await,
            HostCmd::Retire { id } => act(id, HostVerb::Retire, &no_wait).await,
            HostCmd::Fence { id, wait } => act(id, HostVerb::Fence, wait).await,
            HostCmd::Fail { id, wait } => act(id, HostVerb::Fail, wait).await,
            HostCmd::Allocations { id, page } => {
                let d = c.host_allocations(&Hosts::lookup(c, id).await?, &page.page()).await?;
                o.list(
                    &d,
                    &[
                        "instance_id",
                        "claim.vcpus",
                        "claim.cpu_policy",
                        "claim.memory_mib",
                        "claim.cpus",
                        "claim.numa_nodes",
                        "claim.gpus",
                    ],
                )
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
        /// Only records by this user (id or name).
        #[arg(long)]
        actor: Option<String>,
        /// Only records about this object id.
        #[arg(long)]
        target: Option<String>,
        /// Only this action, e.g. projects.create.
        #[arg(long)]
        action: Option<String>,
        /// Only records at or after this RFC 3339 time.
        #[arg(long, value_parser = billing::rfc3339)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only records before this RFC 3339 time.
        #[arg(long, value_parser = billing::rfc3339)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
}

impl AuditCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        let AuditCmd::List { page, actor, target, action, since, until } = self;
        let actor = resolve_opt::<Users>(c, actor.as_deref()).await?;
        let filter = AuditFilter {
            actor: actor.clone(),
            target: target.clone(),
            action: action.clone(),
            since: *since,
            until: *until,
        };
        let d = c.list::<AuditLog>(&page.page(), &filter).await?;
        let when = |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map(billing::when);
        none_match(
            "audit records",
            &d,
            &[
                ("actor", actor),
                ("target", target.clone()),
                ("action", action.clone()),
                ("since", when(since)),
                ("until", when(until)),
            ],
        );
        o.list(&d, &["time", "actor_user_id", "action", "target", "status", "result", "error_code", "request_id"])
    }
}
