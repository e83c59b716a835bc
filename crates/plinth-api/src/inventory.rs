//! Inventory wire types: sites, racks (failure domains), hosts and the full host
//! inventory schema as the agent reports it, and host join tokens.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// A site: a data centre, a room, a region's building.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub description: String,
    pub location: Option<String>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/sites`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteCreate {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
}

/// Body of `PATCH /v1/sites/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteUpdate {
    pub description: Option<String>,
    pub location: Option<String>,
}

/// A rack in a site. A rack is a failure domain for placement.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Rack {
    pub id: RackId,
    pub site_id: SiteId,
    pub name: String,
    pub description: String,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/racks`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RackCreate {
    pub site_id: SiteId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// Body of `PATCH /v1/racks/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RackUpdate {
    pub description: Option<String>,
}

/// Host lifecycle states (DESIGN.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    Enrolling,
    Available,
    Cordoned,
    Draining,
    Maintenance,
    Unreachable,
    Failed,
    Retiring,
    Retired,
}

impl HostState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Enrolling => "enrolling",
            HostState::Available => "available",
            HostState::Cordoned => "cordoned",
            HostState::Draining => "draining",
            HostState::Maintenance => "maintenance",
            HostState::Unreachable => "unreachable",
            HostState::Failed => "failed",
            HostState::Retiring => "retiring",
            HostState::Retired => "retired",
        }
    }
}

/// Host health as last judged from the agent's reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostHealth {
    Ok,
    Degraded,
    Unknown,
}

impl HostHealth {
    /// The health's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostHealth::Ok => "ok",
            HostHealth::Degraded => "degraded",
            HostHealth::Unknown => "unknown",
        }
    }
}

/// Who may place work on a host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Ownership {
    /// The shared pool: any tenant.
    Shared,
    /// Dedicated to one tenant.
    Dedicated { tenant_id: TenantId },
}

/// BMC management protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BmcProtocol {
    Redfish,
    Ipmi,
}

/// A host's BMC as shown: credentials are write-only and never returned.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct BmcInfo {
    pub address: String,
    pub protocol: BmcProtocol,
    pub username: Option<String>,
    /// Whether a password is on file (it is never returned).
    pub has_password: bool,
}

/// A host's BMC as written.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcSpec {
    pub address: String,
    pub protocol: BmcProtocol,
    #[serde(default)]
    pub username: Option<String>,
    /// Write-only.
    #[serde(default)]
    pub password: Option<String>,
}

/// CPU package summary.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuInfo {
    pub model: String,
    pub vendor: String,
    pub sockets: u32,
    /// Physical cores in total (all sockets).
    pub cores: u32,
    /// Hardware threads in total (all sockets).
    pub threads: u32,
    /// Flags of interest: `vmx`/`svm`, `avx2`, `avx512f`, `aes`, `pdpe1gb`, …
    #[serde(default)]
    pub flags: Vec<String>,
}

/// Hugepages of one size on one NUMA node.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HugepagePool {
    pub size_kib: u64,
    pub total: u64,
    pub free: u64,
}

/// One NUMA node.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NumaNode {
    pub id: u32,
    /// Host CPU numbers on this node.
    pub cpus: Vec<u32>,
    pub memory_mib: u64,
    #[serde(default)]
    pub hugepages: Vec<HugepagePool>,
    /// Hyperthread sibling groups among `cpus` (each group shares one core). Empty means
    /// every CPU is a core of its own.
    #[serde(default)]
    pub siblings: Vec<Vec<u32>>,
}

/// One PCI function.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PciDevice {
    /// `0000:3b:00.0`.
    pub address: String,
    /// 24-bit class code, hex (`030200`).
    pub class_code: String,
    pub class_name: Option<String>,
    /// Hex vendor id (`10de`).
    pub vendor_id: String,
    /// Hex device id (`2330`).
    pub device_id: String,
    pub vendor_name: Option<String>,
    pub device_name: Option<String>,
    pub numa_node: Option<u32>,
    pub iommu_group: Option<u32>,
    pub driver: Option<String>,
    /// SR-IOV virtual functions the device can expose.
    pub sriov_total_vfs: Option<u32>,
    pub sriov_num_vfs: Option<u32>,
}

/// A GPU, classified from its PCI ids.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    pub pci_address: String,
    /// GPU class used by shapes and placement, e.g. `nvidia-h100-80gb`.
    pub class: String,
    pub vendor_id: String,
    pub device_id: String,
    pub name: Option<String>,
    pub numa_node: Option<u32>,
    pub memory_mib: Option<u64>,
}

/// A network interface.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub speed_mbps: Option<u64>,
    pub driver: Option<String>,
    pub pci_address: Option<String>,
}

/// A block device.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: u64,
    pub rotational: bool,
}

/// Firmware and DMI identity.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub system_vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
}

/// Whether hardware virtualisation can be used on the host.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kvm {
    /// `/dev/kvm` works: a probe guest booted under KVM.
    Usable,
    /// `/dev/kvm` exists but a probe guest did not boot; guests run under TCG.
    Unusable { reason: String },
    /// No `/dev/kvm`; guests run under TCG.
    #[default]
    Absent,
}

/// Virtualisation capability.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Virtualization {
    pub kvm: Kvm,
}

/// The full inventory of a host, as discovered by its agent (or declared by an operator).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostInventory {
    #[serde(default)]
    pub cpu: CpuInfo,
    #[serde(default)]
    pub numa_nodes: Vec<NumaNode>,
    #[serde(default)]
    pub memory_mib: u64,
    #[serde(default)]
    pub pci_devices: Vec<PciDevice>,
    #[serde(default)]
    pub gpus: Vec<Gpu>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default)]
    pub virtualization: Virtualization,
    /// The agent's guest runtime: `qemu`, or `sim` for a simulated host (scale tests only).
    #[serde(default)]
    pub runtime: Option<String>,
    /// The tenant network data path the agent runs: `linux-bridge` or `openvswitch`
    /// (absent: the agent carries no tenant networks, e.g. it has no underlay address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_datapath: Option<String>,
    /// The host's volume pool (absent: the agent holds no volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_pool: Option<crate::storage::VolumePoolInventory>,
}

/// How the scheduler may use a host: allocation ratios, reservations and the CPUs set
/// aside for pinned (dedicated) shapes. Operator-set.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostScheduling {
    /// Overcommit of shared vCPUs over the host CPUs outside `dedicated_cpus` (default 4.0).
    #[serde(default = "default_cpu_ratio")]
    pub cpu_allocation_ratio: f64,
    /// Overcommit of ordinary guest memory (default 1.0).
    #[serde(default = "default_memory_ratio")]
    pub memory_allocation_ratio: f64,
    /// Memory held back for the host itself, in MiB (default 0).
    #[serde(default)]
    pub reserved_memory_mib: u64,
    /// Local disk held back for the host itself, in GiB (default 0).
    #[serde(default)]
    pub reserved_disk_gib: u64,
    /// Host CPUs set aside for pinning `dedicated` shapes; never used by shared vCPUs.
    #[serde(default)]
    pub dedicated_cpus: Vec<u32>,
    /// Let `dedicated` shapes run on this host even when KVM is not usable (TCG).
    #[serde(default)]
    pub allow_dedicated_without_kvm: bool,
}

fn default_cpu_ratio() -> f64 {
    4.0
}
fn default_memory_ratio() -> f64 {
    1.0
}

impl Default for HostScheduling {
    fn default() -> Self {
        HostScheduling {
            cpu_allocation_ratio: default_cpu_ratio(),
            memory_allocation_ratio: default_memory_ratio(),
            reserved_memory_mib: 0,
            reserved_disk_gib: 0,
            dedicated_cpus: Vec::new(),
            allow_dedicated_without_kvm: false,
        }
    }
}

/// A host: a machine that runs guests under a Plinth agent.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Host {
    pub id: HostId,
    pub name: String,
    pub site_id: Option<SiteId>,
    pub rack_id: Option<RackId>,
    pub state: HostState,
    pub health: HostHealth,
    pub ownership: Ownership,
    pub labels: BTreeMap<String, String>,
    /// Qualitative capabilities for placement (`CUSTOM_FAST_NVME`, `HW_CPU_X86_AVX2`).
    pub traits: Vec<String>,
    pub inventory: HostInventory,
    #[serde(default)]
    pub scheduling: HostScheduling,
    pub bmc: Option<BmcInfo>,
    /// When the host's agent last reported, if it ever did.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The operator who confirmed the host is fenced (powered off or isolated), so its
    /// guests may be recovered elsewhere.
    #[serde(default)]
    pub fenced_by: Option<UserId>,
    #[serde(default)]
    pub fenced_at: Option<DateTime<Utc>>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/hosts`: declare a host ahead of its agent.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCreate {
    pub name: String,
    #[serde(default)]
    pub rack_id: Option<RackId>,
    #[serde(default)]
    pub ownership: Option<Ownership>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub traits: Vec<String>,
    #[serde(default)]
    pub bmc: Option<BmcSpec>,
    #[serde(default)]
    pub inventory: Option<HostInventory>,
    #[serde(default)]
    pub scheduling: Option<HostScheduling>,
}

/// Body of `PATCH /v1/hosts/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostUpdate {
    pub rack_id: Option<RackId>,
    pub ownership: Option<Ownership>,
    pub labels: Option<BTreeMap<String, String>>,
    pub traits: Option<Vec<String>>,
    pub bmc: Option<BmcSpec>,
    pub scheduling: Option<HostScheduling>,
}

/// Filters of `GET /v1/hosts`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostFilter {
    pub state: Option<HostState>,
    pub rack_id: Option<RackId>,
    pub site_id: Option<SiteId>,
    /// Only the host with this name.
    pub name: Option<String>,
}

/// A single-use join token for enrolling a host's agent.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct HostJoinToken {
    pub id: JoinTokenId,
    pub description: String,
    /// Rack the enrolled host is placed in, if chosen ahead.
    pub rack_id: Option<RackId>,
    pub expires_at: DateTime<Utc>,
    /// How many hosts may enrol with it (default 1).
    #[serde(default = "one")]
    pub max_uses: u32,
    /// How many have.
    #[serde(default)]
    pub uses: u32,
    /// When the last use was taken.
    pub used_at: Option<DateTime<Utc>>,
    /// The host that took the last use.
    pub used_by_host_id: Option<HostId>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/host-join-tokens`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostJoinTokenCreate {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub rack_id: Option<RackId>,
    /// Lifetime in seconds (60 s to 7 days, default 1 hour).
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
    /// How many hosts may enrol with it (1 to 10000, default 1): a simulated agent with N
    /// hosts, or a batch of racked machines.
    #[serde(default)]
    pub max_uses: Option<u32>,
}

fn one() -> u32 {
    1
}

/// Body of `PATCH /v1/host-join-tokens/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostJoinTokenUpdate {
    pub description: Option<String>,
}

/// Answer to `POST /v1/host-join-tokens`: the record and, once only, the secret.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct HostJoinTokenCreated {
    #[serde(flatten)]
    pub join_token: HostJoinToken,
    /// The join secret, `pjt_…`, sent at enrolment.
    pub secret: String,
    /// SHA-256 (64 hex digits) of the DER certificate of the CA the server's HTTPS
    /// certificate chains to; absent when the server serves plain HTTP (loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
    /// What `plinth agent --join-token` takes: the secret and the CA's fingerprint,
    /// `pjt_…@sha256:<ca_sha256>` (the secret alone without HTTPS). The agent pins the
    /// server's CA with it on first contact, the way `kubeadm join
    /// --discovery-token-ca-cert-hash` does.
    pub agent_join_token: String,
}

/// Filters of `GET /v1/sites`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteFilter {
    /// Only the site with this name.
    pub name: Option<String>,
}

/// Filters of `GET /v1/racks`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RackFilter {
    /// Only racks in this site.
    pub site_id: Option<String>,
    /// Only racks with this name (unique within a site).
    pub name: Option<String>,
}
