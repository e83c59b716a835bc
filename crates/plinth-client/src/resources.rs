//! The `/v1` collections as types: each marker (`Tenants`, `Instances`, …) pairs a path with
//! its item, filter, create and update wire types, so `client.create::<Projects>(&body)`
//! only compiles with a `ProjectCreate` and answers a `Project`.

use crate::client::{Both, Client, Doc};
use crate::error::Result;
use plinth_api::*;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A collection under `/v1` with `GET` of a page and of one item.
pub trait Resource {
    /// `/v1/tenants`.
    const PATH: &'static str;
    /// What one item is called in messages: `tenant`.
    const KIND: &'static str;
    /// What several are called: `tenants`.
    const PLURAL: &'static str;
    type Item: DeserializeOwned + Serialize + Send;
    /// The list's filters (`()` when it has none).
    type Filter: Serialize + Default + Send + Sync;
}

/// A collection that takes `POST`.
pub trait Creatable: Resource {
    type Create: Serialize + Sync;
    type Created: DeserializeOwned;
}

/// A collection whose items take `PATCH`.
pub trait Updatable: Resource {
    type Update: Serialize + Sync;
}

/// A collection whose items take `DELETE`.
pub trait Deletable: Resource {
    /// What a delete answers: nothing (`()`), or the accepted action.
    type Deleted: DeserializeOwned;
}

/// A collection whose items have names, so the CLI can take a name where it takes an id.
pub trait Named: Resource {
    /// The id prefix (`tnt`).
    const ID_PREFIX: &'static str;
    fn id(item: &Self::Item) -> &str;
    fn name(item: &Self::Item) -> &str;
    /// `filter` narrowed to `name` on the server, when the list has a `name` filter (one
    /// request); otherwise `filter` unchanged, and the names are compared here.
    fn with_name(filter: Self::Filter, _name: &str) -> Self::Filter {
        filter
    }
    /// The filter that narrows the whole list to `name`.
    fn by_name(name: &str) -> Self::Filter {
        Self::with_name(Self::Filter::default(), name)
    }
    /// Whether an item still counts when a name is resolved (deleted instances keep
    /// their names but yield to a live one).
    fn live(_item: &Self::Item) -> bool {
        true
    }
}

macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, $path:literal, $kind:literal, $plural:literal, $item:ty, $filter:ty) => {
        $(#[$doc])*
        pub struct $name;
        impl Resource for $name {
            const PATH: &'static str = $path;
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            type Item = $item;
            type Filter = $filter;
        }
    };
}

macro_rules! named {
    ($name:ident, $prefix:literal $(, $server_filter:ident)?) => {
        impl Named for $name {
            const ID_PREFIX: &'static str = $prefix;
            fn id(item: &Self::Item) -> &str {
                item.id.as_str()
            }
            fn name(item: &Self::Item) -> &str {
                &item.name
            }
            $(fn with_name(mut filter: Self::Filter, name: &str) -> Self::Filter {
                filter.$server_filter = Some(name.to_string());
                filter
            })?
        }
    };
}

resource!(/// `/v1/tenants`.
    Tenants, "/v1/tenants", "tenant", "tenants", Tenant, TenantFilter);
resource!(/// `/v1/projects`.
    Projects, "/v1/projects", "project", "projects", Project, ProjectFilter);
resource!(/// `/v1/users`.
    Users, "/v1/users", "user", "users", User, UserFilter);
resource!(/// `/v1/tokens`.
    Tokens, "/v1/tokens", "token", "tokens", ApiToken, TokenFilter);
resource!(/// `/v1/role-bindings`.
    RoleBindings, "/v1/role-bindings", "role binding", "role bindings", RoleBinding, RoleBindingFilter);
resource!(/// `/v1/audit-log`.
    AuditLog, "/v1/audit-log", "audit record", "audit records", AuditRecord, AuditFilter);
resource!(/// `/v1/sites`.
    Sites, "/v1/sites", "site", "sites", Site, SiteFilter);
resource!(/// `/v1/racks`.
    Racks, "/v1/racks", "rack", "racks", Rack, RackFilter);
resource!(/// `/v1/hosts`.
    Hosts, "/v1/hosts", "host", "hosts", Host, HostFilter);
resource!(/// `/v1/host-join-tokens`.
    JoinTokens, "/v1/host-join-tokens", "join token", "join tokens", HostJoinToken, ());
resource!(/// `/v1/shapes`.
    Shapes, "/v1/shapes", "shape", "shapes", Shape, ShapeFilter);
resource!(/// `/v1/images`.
    Images, "/v1/images", "image", "images", Image, ImageFilter);
resource!(/// `/v1/instances`.
    Instances, "/v1/instances", "instance", "instances", Instance, InstanceFilter);
resource!(/// `/v1/placement-groups`.
    PlacementGroups, "/v1/placement-groups", "placement group", "placement groups", PlacementGroup, PlacementGroupFilter);
resource!(/// `/v1/vpcs`.
    Vpcs, "/v1/vpcs", "VPC", "VPCs", Vpc, VpcFilter);
resource!(/// `/v1/ip-pools`.
    IpPools, "/v1/ip-pools", "IP pool", "IP pools", IpPool, IpPoolFilter);
resource!(/// `/v1/floating-ips`.
    FloatingIps, "/v1/floating-ips", "floating IP", "floating IPs", FloatingIp, FloatingIpFilter);
resource!(/// `/v1/volume-types`.
    VolumeTypes, "/v1/volume-types", "volume type", "volume types", VolumeType, VolumeTypeFilter);
resource!(/// `/v1/volumes`.
    Volumes, "/v1/volumes", "volume", "volumes", Volume, VolumeFilter);
resource!(/// `/v1/snapshots`.
    Snapshots, "/v1/snapshots", "snapshot", "snapshots", VolumeSnapshot, VolumeSnapshotFilter);
resource!(/// `/v1/volume-attachments` (read only).
    VolumeAttachments, "/v1/volume-attachments", "volume attachment", "volume attachments", VolumeAttachment,
    VolumeAttachmentFilter);
resource!(/// `/v1/subnets`.
    Subnets, "/v1/subnets", "subnet", "subnets", Subnet, SubnetFilter);
resource!(/// `/v1/network-interfaces`.
    Nics, "/v1/network-interfaces", "network interface", "network interfaces", NetworkInterface, NetworkInterfaceFilter);
resource!(/// `/v1/security-groups`.
    SecurityGroups, "/v1/security-groups", "security group", "security groups", SecurityGroup, SecurityGroupFilter);
resource!(/// `/v1/operations`.
    Operations, "/v1/operations", "operation", "operations", Operation, OperationFilter);
resource!(/// `/v1/invoices`.
    Invoices, "/v1/invoices", "invoice", "invoices", Invoice, InvoiceFilter);
resource!(/// `/v1/price-books`.
    PriceBooks, "/v1/price-books", "price book", "price books", PriceBook, PriceBookFilter);
resource!(/// `/v1/budgets`.
    Budgets, "/v1/budgets", "budget", "budgets", Budget, ());
resource!(/// `/v1/credits`.
    Credits, "/v1/credits", "credit grant", "credit grants", CreditGrant, ());
resource!(/// `/v1/commitments`.
    Commitments, "/v1/commitments", "commitment", "commitments", Commitment, ());

// `name`: the list's filter field the server narrows by name. Budgets have none (their
// names are not an indexed column): a budget's name is compared here.
named!(Tenants, "tnt", name);
named!(Projects, "prj", name);
named!(Users, "usr", name);
named!(Tokens, "tok", name);
named!(Sites, "sit", name);
named!(Racks, "rck", name);
named!(Hosts, "hst", name);
named!(Shapes, "shp", name);
named!(Images, "img", name);
named!(PlacementGroups, "pg", name);
named!(Budgets, "bud");
named!(Vpcs, "vpc", name);
named!(IpPools, "ipp", name);
named!(FloatingIps, "fip", name);
named!(VolumeTypes, "vtp", name);
named!(Subnets, "sn", name);
named!(Nics, "nic", name);
named!(SecurityGroups, "sg", name);

impl Named for Instances {
    const ID_PREFIX: &'static str = "ins";
    fn id(item: &Instance) -> &str {
        item.id.as_str()
    }
    fn name(item: &Instance) -> &str {
        &item.name
    }
    fn with_name(filter: InstanceFilter, name: &str) -> InstanceFilter {
        InstanceFilter { name: Some(name.to_string()), ..filter }
    }
    fn live(item: &Instance) -> bool {
        item.state != InstanceState::Deleted
    }
}

impl Named for Volumes {
    const ID_PREFIX: &'static str = "vol";
    fn id(item: &Volume) -> &str {
        item.id.as_str()
    }
    fn name(item: &Volume) -> &str {
        &item.name
    }
    fn with_name(filter: VolumeFilter, name: &str) -> VolumeFilter {
        VolumeFilter { name: Some(name.to_string()), ..filter }
    }
    fn live(item: &Volume) -> bool {
        item.state != VolumeState::Deleted
    }
}

impl Named for Snapshots {
    const ID_PREFIX: &'static str = "snap";
    fn id(item: &VolumeSnapshot) -> &str {
        item.id.as_str()
    }
    fn name(item: &VolumeSnapshot) -> &str {
        &item.name
    }
    fn with_name(filter: VolumeSnapshotFilter, name: &str) -> VolumeSnapshotFilter {
        VolumeSnapshotFilter { name: Some(name.to_string()), ..filter }
    }
    fn live(item: &VolumeSnapshot) -> bool {
        item.state != SnapshotState::Deleted
    }
}

macro_rules! creatable {
    ($($name:ident: $create:ty => $created:ty;)*) => {$(
        impl Creatable for $name {
            type Create = $create;
            type Created = $created;
        }
    )*};
}

creatable! {
    Tenants: TenantCreate => Tenant;
    Projects: ProjectCreate => Project;
    Users: UserCreate => User;
    Tokens: TokenCreate => TokenCreated;
    RoleBindings: RoleBindingCreate => RoleBinding;
    Sites: SiteCreate => Site;
    Racks: RackCreate => Rack;
    Hosts: HostCreate => Host;
    JoinTokens: HostJoinTokenCreate => HostJoinTokenCreated;
    Shapes: ShapeCreate => Shape;
    Images: ImageCreate => Image;
    Instances: InstanceCreate => InstanceAccepted;
    PlacementGroups: PlacementGroupCreate => PlacementGroup;
    Vpcs: VpcCreate => Vpc;
    IpPools: IpPoolCreate => IpPool;
    FloatingIps: FloatingIpCreate => FloatingIp;
    VolumeTypes: VolumeTypeCreate => VolumeType;
    Volumes: VolumeCreate => Volume;
    Snapshots: VolumeSnapshotCreate => VolumeSnapshot;
    Subnets: SubnetCreate => Subnet;
    Nics: NetworkInterfaceCreate => NetworkInterface;
    SecurityGroups: SecurityGroupCreate => SecurityGroup;
    PriceBooks: PriceBookCreate => PriceBook;
    Budgets: BudgetCreate => Budget;
    Credits: CreditGrantCreate => CreditGrant;
    Commitments: CommitmentCreate => Commitment;
}

macro_rules! updatable {
    ($($name:ident: $update:ty;)*) => {$(
        impl Updatable for $name {
            type Update = $update;
        }
    )*};
}

updatable! {
    Tenants: TenantUpdate;
    Projects: ProjectUpdate;
    Users: UserUpdate;
    Tokens: TokenUpdate;
    RoleBindings: RoleBindingUpdate;
    Sites: SiteUpdate;
    Racks: RackUpdate;
    Hosts: HostUpdate;
    JoinTokens: HostJoinTokenUpdate;
    Shapes: ShapeUpdate;
    Images: ImageUpdate;
    Instances: InstanceUpdate;
    Vpcs: VpcUpdate;
    IpPools: IpPoolUpdate;
    FloatingIps: FloatingIpUpdate;
    VolumeTypes: VolumeTypeUpdate;
    Volumes: VolumeUpdate;
    Subnets: SubnetUpdate;
    Nics: NetworkInterfaceUpdate;
    SecurityGroups: SecurityGroupUpdate;
}

macro_rules! deletable {
    ($($name:ident => $deleted:ty;)*) => {$(
        impl Deletable for $name {
            type Deleted = $deleted;
        }
    )*};
}

deletable! {
    Tenants => ();
    Projects => ();
    Users => ();
    Tokens => ();
    RoleBindings => ();
    Sites => ();
    Racks => ();
    Hosts => ();
    JoinTokens => ();
    Shapes => ();
    Images => ();
    Instances => InstanceAccepted;
    PlacementGroups => ();
    Budgets => ();
    Vpcs => ();
    IpPools => ();
    FloatingIps => ();
    VolumeTypes => ();
    Volumes => Volume;
    Snapshots => VolumeSnapshot;
    Subnets => ();
    Nics => ();
    SecurityGroups => ();
}

/// `/v1/{collection}/{id}`.
pub(crate) fn one<R: Resource>(id: &str) -> String {
    format!("{}/{id}", R::PATH)
}

impl Client {
    /// One page of a collection.
    pub async fn list<R: Resource>(&self, page: &PageParams, filter: &R::Filter) -> Result<Doc<Page<R::Item>>> {
        self.send(Method::GET, R::PATH, &Both { a: page, b: filter }, None, None).await
    }

    /// Every item of a collection that passes `filter`, page after page.
    pub async fn list_all<R: Resource>(&self, filter: &R::Filter) -> Result<Vec<R::Item>> {
        let mut page = PageParams { limit: Some(MAX_LIMIT), cursor: None };
        let mut out = Vec::new();
        loop {
            let p = self.list::<R>(&page, filter).await?.into_inner();
            out.extend(p.items);
            match p.next_cursor {
                Some(c) => page.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// One item by id.
    pub async fn view<R: Resource>(&self, id: &str) -> Result<Doc<R::Item>> {
        self.get(&one::<R>(id), &()).await
    }

    /// Creates an item.
    pub async fn create<R: Creatable>(&self, body: &R::Create) -> Result<Doc<R::Created>> {
        self.post(R::PATH, body).await
    }

    /// Changes an item, when given at generation `if_match`.
    pub async fn update<R: Updatable>(
        &self,
        id: &str,
        if_match: Option<i64>,
        body: &R::Update,
    ) -> Result<Doc<R::Item>> {
        self.send(Method::PATCH, &one::<R>(id), &(), Some(body), if_match).await
    }

    /// Deletes an item, when given at generation `if_match`.
    pub async fn delete<R: Deletable>(&self, id: &str, if_match: Option<i64>) -> Result<Doc<R::Deleted>> {
        self.send(Method::DELETE, &one::<R>(id), &(), None, if_match).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query<R: Resource>(f: &R::Filter) -> String {
        serde_urlencoded::to_string(f).unwrap()
    }

    #[test]
    fn a_name_narrows_the_given_filter_on_the_server() {
        let in_project = PlacementGroupFilter { project_id: Some("prj_1".into()), name: None };
        let f = PlacementGroups::with_name(in_project, "ha");
        assert_eq!(query::<PlacementGroups>(&f), "project_id=prj_1&name=ha");
        assert_eq!(query::<Tenants>(&Tenants::by_name("acme")), "name=acme");
        assert_eq!(query::<Hosts>(&Hosts::by_name("node-1")), "name=node-1");
        // Budgets have no name filter: the whole list, compared in the client.
        assert_eq!(query::<Budgets>(&Budgets::by_name("cap")), "");
    }
}
