//! Tenant networking wire types: VPCs, subnets, network interfaces (NICs), security groups
//! and their rules, and the per-host network spec the server pushes to agents (with the
//! per-NIC readiness they report back).
//!
//! Addresses travel as text (`10.0.0.0/16`, `10.0.0.5`, `02:00:…`); `plinth-domain`
//! parses and validates them.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Most NICs one instance may have (slots 0–7).
pub const MAX_NICS_PER_INSTANCE: usize = 8;

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// A virtual private cloud: an isolated layer-2/3 network of a project, carried between
/// hosts as one VXLAN segment (its VNI) and living in its own network namespace per host.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Vpc {
    pub id: VpcId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    /// The VPC's IPv4 block (`/16` to `/28`); its subnets are carved from it.
    pub ipv4_cidr: String,
    /// The VXLAN network identifier, unique across the platform.
    pub vni: u32,
    /// The group every NIC joins when it names none.
    pub default_security_group_id: SecurityGroupId,
    /// Made by the platform on the project's first need (AWS-style default VPC).
    pub is_default: bool,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/vpcs`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VpcCreate {
    pub project_id: ProjectId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// IPv4 block, `/16` to `/28`, in a private range (RFC 1918 or 100.64.0.0/10).
    pub ipv4_cidr: String,
}

/// Body of `PATCH /v1/vpcs/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VpcUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Filters of `GET /v1/vpcs`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VpcFilter {
    pub project_id: Option<String>,
    /// Only the VPC of this name (unique within a project).
    pub name: Option<String>,
}

/// A subnet: a block of a VPC's addresses, one bridge per host, served by DHCP.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Subnet {
    pub id: SubnetId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub vpc_id: VpcId,
    pub name: String,
    pub description: String,
    /// Inside the VPC's block, overlapping none of its siblings.
    pub ipv4_cidr: String,
    /// The subnet's VXLAN segment between hosts (platform-unique, like the VPC's).
    pub vni: u32,
    /// The first usable address (`.1`): the VPC router's address on this subnet.
    pub gateway: String,
    /// Addresses a NIC may not take: network, gateway, the two after it, broadcast.
    pub reserved: Vec<String>,
    /// Addresses NICs can hold (the block minus the reserved ones).
    pub capacity: u32,
    /// Addresses NICs hold now.
    pub used: u32,
    /// The guest MTU, derived from the underlay (1450 over VXLAN on a 1500 underlay).
    pub mtu: u32,
    pub dhcp: bool,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/subnets`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetCreate {
    pub vpc_id: VpcId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Inside the VPC's block, `/16` to `/28`, overlapping no sibling.
    pub ipv4_cidr: String,
}

/// Body of `PATCH /v1/subnets/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Filters of `GET /v1/subnets`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubnetFilter {
    pub project_id: Option<String>,
    pub vpc_id: Option<String>,
    /// Only the subnet of this name (unique within a VPC).
    pub name: Option<String>,
}

/// A pool of public IPv4 addresses an operator hands to Plinth (floating and SNAT
/// addresses are allocated from it). Pools never overlap one another.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct IpPool {
    pub id: IpPoolId,
    /// The site whose hosts' provider network carries the pool (`None`: every site).
    pub site_id: Option<SiteId>,
    pub name: String,
    pub description: String,
    /// The block the range is in (`198.51.100.0/24`).
    pub ipv4_cidr: String,
    /// The range's first address.
    pub first: String,
    /// The range's last address.
    pub last: String,
    /// Addresses in the range.
    pub size: u32,
    /// The provider router's address on the pool's link, outside the range: each VPC
    /// router holding an address of the pool routes to the internet through it (`None`:
    /// routes out through the uplink itself, for a provider that answers ARP for every
    /// address it routes).
    #[serde(default)]
    pub gateway: Option<String>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/ip-pools`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpPoolCreate {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub site_id: Option<SiteId>,
    /// The block (/8 to /32).
    pub ipv4_cidr: String,
    /// The range's first address (default: the block's first host address).
    #[serde(default)]
    pub first: Option<String>,
    /// The range's last address (default: the block's last host address).
    #[serde(default)]
    pub last: Option<String>,
    /// The provider router's address: inside the block, outside the range.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// Body of `PATCH /v1/ip-pools/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpPoolUpdate {
    pub description: Option<String>,
}

/// Filters of `GET /v1/ip-pools`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IpPoolFilter {
    pub site_id: Option<String>,
    /// Only the pool of this name (unique).
    pub name: Option<String>,
}

/// Where a floating IP is between NICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FloatingIpState {
    Detached,
    Attaching,
    Attached,
    Detaching,
}

/// A public IPv4 address a project holds, allocated from an IP pool. Attached to a NIC,
/// the internet reaches the NIC at this address (its security groups decide what passes)
/// and the NIC's connections to the internet leave from it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct FloatingIp {
    pub id: FloatingIpId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub ip_pool_id: IpPoolId,
    pub name: String,
    pub description: String,
    pub address: String,
    /// The NIC it is attached to (or, while `detaching`, was attached to).
    pub nic_id: Option<NicId>,
    /// `attaching`/`detaching` until the NIC's host has applied the change.
    pub state: FloatingIpState,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/floating-ips`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpCreate {
    pub project_id: ProjectId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The pool to allocate from (default: the only pool, when there is one).
    #[serde(default)]
    pub ip_pool_id: Option<IpPoolId>,
}

/// Body of `PATCH /v1/floating-ips/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpUpdate {
    pub description: Option<String>,
}

/// Body of `POST /v1/floating-ips/{id}/attach`: attach to a NIC of the same project, or
/// move there from the NIC it is attached to (one transaction).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpAttach {
    pub nic_id: NicId,
}

/// Filters of `GET /v1/floating-ips`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FloatingIpFilter {
    pub project_id: Option<String>,
    pub ip_pool_id: Option<String>,
    /// Only the floating IP of this name (unique within a project).
    pub name: Option<String>,
    /// Only those attached (or attaching) to this NIC.
    pub nic_id: Option<String>,
}

/// How a NIC reaches beyond its VPC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExternalAccess {
    /// Its connections to the internet leave from a public address of its own (its SNAT
    /// address, allocated from an IP pool; or its first floating IP); nothing from the
    /// internet reaches it except replies, unless through a floating IP.
    Snat,
    /// Private: no route beyond the VPC except through a floating IP attached to it.
    #[default]
    None,
}

/// A floating IP as the NIC it is attached to shows it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct NicFloatingIp {
    pub id: FloatingIpId,
    pub address: String,
}

/// Where a NIC is on its way to carrying traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NicState {
    /// Not attached to a placed instance: no host has it.
    Pending,
    /// Its instance is placed on a host; the host has not applied every component yet.
    Bound,
    /// Every component is applied on its host, and every other host of the VPC can reach it.
    Ready,
    /// A component could not be applied (see `readiness`).
    Failed,
}

/// One piece of a NIC's data path that must be in place before it is `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NicComponent {
    /// The tap (or, for namespace guests, the veth) exists in the VPC namespace.
    Tap,
    /// The tap is a port of its subnet's bridge.
    BridgePort,
    /// Every other host of the VPC forwards this NIC's MAC to this host (and this host
    /// knows every remote NIC of the VPC).
    Fdb,
    /// The NIC's security-group and anti-spoofing rules are loaded.
    Filter,
    /// Its subnet's DHCP server holds the NIC's static entry.
    Dhcp,
    /// Its public addresses (SNAT, floating) are on its VPC router's uplink on its host,
    /// with their address translation (trivially applied for a NIC without any).
    Nat,
}

impl NicComponent {
    /// Every component, in the order a data path is built.
    pub const ALL: [NicComponent; 6] = [
        NicComponent::Tap,
        NicComponent::BridgePort,
        NicComponent::Fdb,
        NicComponent::Filter,
        NicComponent::Dhcp,
        NicComponent::Nat,
    ];

    /// The component's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NicComponent::Tap => "tap",
            NicComponent::BridgePort => "bridge_port",
            NicComponent::Fdb => "fdb",
            NicComponent::Filter => "filter",
            NicComponent::Dhcp => "dhcp",
            NicComponent::Nat => "nat",
        }
    }
}

/// A component's state on the NIC's host, as last reported.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ComponentStatus {
    pub component: NicComponent,
    pub applied: bool,
    /// Why it is not applied (the agent's error), when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A network interface: a MAC and a private IPv4 address in a subnet, filtered by its
/// security groups, plugged into at most one instance.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct NetworkInterface {
    pub id: NicId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub vpc_id: VpcId,
    pub subnet_id: SubnetId,
    pub name: String,
    pub description: String,
    /// Locally administered, unique within the VPC.
    pub mac: String,
    pub ipv4: String,
    /// The instance it is plugged into.
    pub instance_id: Option<InstanceId>,
    /// Its slot on that instance (0–7; the guest sees slot order as device order).
    pub slot: Option<u8>,
    /// Slot 0: the instance's default route and hostname live here.
    pub primary: bool,
    pub security_group_ids: Vec<SecurityGroupId>,
    /// Anti-spoofing: the guest may send only from this NIC's MAC and address.
    pub port_security: bool,
    /// How it reaches beyond the VPC (`none` for NICs made before it existed).
    #[serde(default)]
    pub external_access: ExternalAccess,
    /// Its SNAT address (with `external_access: snat`): the source the internet sees of
    /// its connections when no floating IP is attached.
    #[serde(default)]
    pub snat_address: Option<String>,
    /// Floating IPs attached to it, oldest first (the first is the source of its
    /// connections to the internet).
    #[serde(default)]
    pub floating_ips: Vec<NicFloatingIp>,
    pub state: NicState,
    /// The host that carries it (its instance's host).
    pub host_id: Option<HostId>,
    /// Its port device in the VPC's namespace on that host (`n<port>`; an operator-bound
    /// veth NIC's far end is `<device>g`).
    #[serde(default)]
    pub device: Option<String>,
    /// How an operator-bound NIC's port is made (`veth` unless asked): `tap` for a VMM
    /// that opens the tap itself, `veth` for a namespace or an appliance that takes the far
    /// end. `None` for an instance's NIC (always a tap whose fd the VM's runtime hands
    /// QEMU).
    #[serde(default)]
    pub plug: Option<NicPlug>,
    /// Each component's state on that host.
    pub readiness: Vec<ComponentStatus>,
    /// The filter generation the API holds for this NIC (bumped by any change to its
    /// groups' rules or members).
    pub filter_generation: i64,
    /// The filter generation its host has loaded (`None`: nothing loaded yet).
    pub filter_generation_applied: Option<i64>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/network-interfaces`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceCreate {
    /// Subnet id (the NIC's project and VPC are the subnet's).
    pub subnet_id: SubnetId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A free address of the subnet; allocated when absent.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// A locally administered unicast MAC not used in the VPC; generated when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// Groups of the same VPC; the VPC's default group when absent.
    #[serde(default)]
    pub security_group_ids: Option<Vec<SecurityGroupId>>,
    /// Anti-spoofing (default on).
    #[serde(default)]
    pub port_security: Option<bool>,
    /// `snat` (the default when an IP pool has a free address: the NIC gets an SNAT
    /// address; asked for explicitly and none is free, the create is refused) or `none`.
    #[serde(default)]
    pub external_access: Option<ExternalAccess>,
    /// Operators only: bind the NIC to this host without an instance (Neutron's
    /// `binding:host_id`). The host plugs it as `plug` says.
    #[serde(default)]
    pub host_id: Option<HostId>,
    /// With `host_id` only: `veth` (default), a veth pair whose far end (`<device>g`, in
    /// the VPC namespace) an appliance or a test guest takes; or `tap`, a persistent tap
    /// (`<device>`) that a VMM outside Plinth opens, as QEMU does for an instance's NIC.
    #[serde(default)]
    pub plug: Option<NicPlug>,
}

/// Body of `PATCH /v1/network-interfaces/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Replaces the NIC's groups (same VPC, at least one).
    pub security_group_ids: Option<Vec<SecurityGroupId>>,
    pub port_security: Option<bool>,
    /// `snat` allocates an SNAT address (refused when no pool has one free); `none`
    /// releases it.
    pub external_access: Option<ExternalAccess>,
}

/// Filters of `GET /v1/network-interfaces`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NetworkInterfaceFilter {
    pub project_id: Option<String>,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub instance_id: Option<String>,
    pub name: Option<String>,
}

/// One NIC of `POST /v1/instances`: an existing unattached NIC, or a new one in a subnet.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceNetworkInterface {
    /// Plug this existing, unattached NIC (of the instance's project).
    #[serde(default)]
    pub nic_id: Option<NicId>,
    /// Make a new NIC in this subnet (id or name within the project).
    #[serde(default)]
    pub subnet: Option<String>,
    /// For a new NIC: its address (allocated when absent).
    #[serde(default)]
    pub ipv4: Option<String>,
    /// For a new NIC: its groups (the VPC's default group when absent).
    #[serde(default)]
    pub security_group_ids: Option<Vec<SecurityGroupId>>,
    /// For a new NIC: anti-spoofing (default on).
    #[serde(default)]
    pub port_security: Option<bool>,
    /// For a new NIC: `snat` or `none` (as for `POST /v1/network-interfaces`).
    #[serde(default)]
    pub external_access: Option<ExternalAccess>,
}

/// Body of `POST /v1/instances/{id}/network-interfaces` (the instance must be stopped).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceAttach {
    pub nic_id: NicId,
}

/// Which way traffic crosses the NIC, seen from the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
}

/// The layer-4 protocol a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleProtocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

/// One allow rule of a security group. A rule matches traffic in `direction` whose peer
/// is in `remote_cidr` or is a member of `remote_group_id` (neither: any peer).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SecurityGroupRule {
    pub id: SecurityGroupRuleId,
    pub direction: Direction,
    pub protocol: RuleProtocol,
    /// TCP/UDP destination ports, inclusive (`None`: every port).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    /// ICMP type and code (`None`: any).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub remote_cidr: Option<String>,
    pub remote_group_id: Option<SecurityGroupId>,
    pub description: String,
}

/// A rule to add (`POST /v1/security-groups/{id}/rules`, or in a group's create body).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRuleCreate {
    pub direction: Direction,
    pub protocol: RuleProtocol,
    #[serde(default)]
    pub port_min: Option<u16>,
    #[serde(default)]
    pub port_max: Option<u16>,
    #[serde(default)]
    pub icmp_type: Option<u8>,
    #[serde(default)]
    pub icmp_code: Option<u8>,
    /// At most one of `remote_cidr` and `remote_group_id`.
    #[serde(default)]
    pub remote_cidr: Option<String>,
    /// A group of the same VPC.
    #[serde(default)]
    pub remote_group_id: Option<SecurityGroupId>,
    #[serde(default)]
    pub description: String,
}

/// A security group: stateful allow rules. A NIC's traffic is allowed when any rule of any
/// of its groups allows it (replies to allowed traffic always pass); everything else is
/// dropped.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct SecurityGroup {
    pub id: SecurityGroupId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub vpc_id: VpcId,
    pub name: String,
    pub description: String,
    /// The VPC's default group (all egress; ingress from its own members); it goes with
    /// the VPC.
    pub is_default: bool,
    pub rules: Vec<SecurityGroupRule>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/security-groups`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupCreate {
    pub vpc_id: VpcId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Rules to start with (none: the group allows nothing).
    #[serde(default)]
    pub rules: Vec<SecurityGroupRuleCreate>,
}

/// Body of `PATCH /v1/security-groups/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// Filters of `GET /v1/security-groups`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SecurityGroupFilter {
    pub project_id: Option<String>,
    pub vpc_id: Option<String>,
    pub name: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Agent protocol: the desired network of one host, and what the agent applied
// ---------------------------------------------------------------------------------------

/// Everything one host's data path should hold: each VPC with a NIC on the host, whole
/// (the agent diffs it against what it reads back from the kernel).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct HostNetworkSpec {
    /// Bumped whenever anything in this spec changes; the agent reports the generation it
    /// applied, and a NIC is `ready` once every host of its VPC applied a generation that
    /// holds it.
    pub generation: i64,
    pub vpcs: Vec<VpcSpec>,
}

/// One VPC as one host must carry it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct VpcSpec {
    pub vpc_id: VpcId,
    pub vni: u32,
    pub ipv4_cidr: String,
    /// Every subnet of the VPC (the VPC namespace routes between them).
    pub subnets: Vec<SubnetSpec>,
    /// The VPC's NICs on this host.
    pub nics: Vec<NicSpec>,
    /// The groups the local NICs use or name as remote, with their members' addresses.
    pub security_groups: Vec<SecurityGroupSpec>,
    /// The VPC's NICs on other hosts, for the static FDB (and ARP) entries.
    pub remote_nics: Vec<RemoteNicSpec>,
    /// Underlay addresses (VTEPs) of the other hosts with a NIC of the VPC: head-end
    /// replication targets for broadcast and unknown traffic.
    pub peers: Vec<String>,
    /// Where the VPC router on this host sends traffic for the internet: the gateway of
    /// the IP pool of its local NICs' public addresses (`None` with public addresses:
    /// out of the uplink directly). Meaningful only when a local NIC has one.
    #[serde(default)]
    pub uplink_gateway: Option<String>,
    /// The VPC's DNS domain (`<vpc name>.internal`): its DHCP servers answer the names
    /// of its NICs under it (`None`: no DNS).
    #[serde(default)]
    pub dns_domain: Option<String>,
}

/// One subnet of a VPC on a host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SubnetSpec {
    pub subnet_id: SubnetId,
    /// Short number unique within the VPC: names the subnet's bridge (`br<index>`).
    pub index: u32,
    /// The subnet's own VXLAN segment (a bridge per subnet needs one VXLAN device each;
    /// allocated from the same platform-unique space as VPC VNIs). `0`: not allocated; the
    /// agent then carries only the subnet of index 0 across hosts, on the VPC's VNI.
    #[serde(default)]
    pub vni: u32,
    pub ipv4_cidr: String,
    pub gateway: String,
    pub mtu: u32,
    pub dhcp: bool,
}

/// One local NIC.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct NicSpec {
    pub nic_id: NicId,
    pub subnet_id: SubnetId,
    /// The port's name in the VPC namespace (≤ 15 bytes, unique within the VPC): the tap
    /// the agent creates for a VM, or the veth a namespace guest plugs in.
    pub device: String,
    /// A number unique within the VPC (> 0): the packet mark of the port's traffic.
    pub port: u32,
    /// How the port is plugged.
    pub plug: NicPlug,
    pub mac: String,
    pub ipv4: String,
    pub port_security: bool,
    pub security_group_ids: Vec<SecurityGroupId>,
    /// The instance's name: the DHCP hostname.
    pub hostname: Option<String>,
    pub instance_id: Option<InstanceId>,
    /// Its slot on the instance (the guest's device order).
    #[serde(default)]
    pub slot: Option<u8>,
    /// The NIC's filter generation (reported back once loaded).
    pub filter_generation: i64,
    /// Its SNAT address, if any.
    #[serde(default)]
    pub snat_address: Option<String>,
    /// Its floating IPs' addresses, the first the source of its internet traffic.
    #[serde(default)]
    pub floating: Vec<String>,
    /// Its name in the VPC's DNS domain (an instance's primary NIC: the instance's name;
    /// a NIC without an instance: its own name).
    #[serde(default)]
    pub dns_name: Option<String>,
}

/// How a NIC's port device is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NicPlug {
    /// A persistent tap the agent creates; the VM's runtime opens it and hands QEMU the fd
    /// (an instance's NIC), or a VMM outside Plinth opens it (an operator-bound NIC).
    Tap,
    /// A veth pair (`device` on the bridge, `<device>g` left in the VPC namespace for
    /// whoever takes it): an operator-bound NIC's default.
    Veth,
}

/// One group as a host needs it: its rules and the addresses of its members (all NICs of
/// the VPC in the group, wherever they run).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SecurityGroupSpec {
    pub security_group_id: SecurityGroupId,
    pub rules: Vec<RuleSpec>,
    pub members: Vec<String>,
}

/// One allow rule, resolved for the data path.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct RuleSpec {
    pub rule_id: SecurityGroupRuleId,
    pub direction: Direction,
    pub protocol: RuleProtocol,
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub remote_cidr: Option<String>,
    /// Peers must be members of this group (its spec is in the same VPC spec).
    pub remote_group_id: Option<SecurityGroupId>,
}

/// A NIC of the VPC on another host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct RemoteNicSpec {
    pub nic_id: NicId,
    pub subnet_id: SubnetId,
    pub mac: String,
    pub ipv4: String,
    /// The underlay address of its host.
    pub vtep: String,
    /// Its name in the VPC's DNS domain.
    #[serde(default)]
    pub dns_name: Option<String>,
}

/// A NIC as one agent applied it (part of `POST /agent/v1/observed`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedNic {
    pub nic_id: NicId,
    /// Each component's state after the last apply.
    pub components: Vec<ComponentStatus>,
    /// The filter generation loaded for it (`None`: its rules are not loaded).
    #[serde(default)]
    pub filter_generation: Option<i64>,
}

/// What an agent's data path holds after an apply (part of `POST /agent/v1/observed`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedNetwork {
    /// The spec generation applied (every VPC of it, the FDB included).
    pub generation: i64,
    /// The host's underlay address (its VTEP).
    #[serde(default)]
    pub vtep: Option<String>,
    /// The local NICs whose observation changed since the last report the server
    /// acknowledged (all of them in an agent's first report); a NIC not listed keeps
    /// what was last reported for it.
    pub nics: Vec<ObservedNic>,
}

impl ObservedNetwork {
    /// This observation with only the NICs that differ from `since` (the last one the
    /// server acknowledged): what a report needs to carry.
    pub fn changed_since(&self, since: Option<&ObservedNetwork>) -> ObservedNetwork {
        let Some(since) = since else { return self.clone() };
        let before: std::collections::HashMap<&NicId, &ObservedNic> =
            since.nics.iter().map(|n| (&n.nic_id, n)).collect();
        ObservedNetwork {
            generation: self.generation,
            vtep: self.vtep.clone(),
            nics: self.nics.iter().filter(|n| before.get(&n.nic_id) != Some(n)).cloned().collect(),
        }
    }
}
