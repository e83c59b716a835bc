//! Compute wire types: instances and their states, placement groups, allocations (what a
//! placement claims on a host: shared or pinned CPUs, memory, hugepages, GPUs), instance
//! events and the capacity summary.

use crate::ids::*;
use crate::shapes::{CpuPolicy, GpuRequest, Hugepages, RuntimeClass};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

/// Hugepages taken from one NUMA node's pool.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct HugepageClaim {
    pub numa_node: u32,
    /// Page size in MiB (2 or 1024).
    pub size_mib: u64,
    pub pages: u64,
}

/// The concrete resources one instance holds on its host.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct Claim {
    pub vcpus: u32,
    pub cpu_policy: CpuPolicy,
    /// Ordinary memory (counted against the host's memory capacity). Zero when the guest
    /// is backed by hugepages.
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// NUMA nodes the guest is confined to (empty: no NUMA placement was needed).
    pub numa_nodes: Vec<u32>,
    /// Host CPUs pinned one per vCPU (`dedicated` shapes only), in vCPU order.
    pub cpus: Vec<u32>,
    pub hugepages: Vec<HugepageClaim>,
    /// PCI addresses of the GPUs passed through.
    pub gpus: Vec<String>,
    /// The host has no usable KVM: the guest runs under TCG emulation.
    pub tcg: bool,
    /// The host's rack when it was claimed (usage records carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_id: Option<String>,
}

/// The rule a placement group imposes on its members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GroupPolicy {
    /// Hard: every member in the same failure domain.
    Affinity,
    /// Hard: no two members in the same failure domain.
    AntiAffinity,
    /// Soft: prefer the failure domain with the fewest members.
    Spread,
}

/// The failure domain a placement group's policy is applied over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureDomain {
    Host,
    Rack,
}

/// An instance's state as users see it, derived from the desired power state, the
/// placement and the agent's last observation (never stored as a second truth).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Creating,
    Starting,
    Running,
    Stopping,
    Stopped,
    Rebooting,
    Resizing,
    Rebuilding,
    Migrating,
    Repairing,
    Failed,
    /// The guest died without being asked; its restart policy decides what follows.
    Crashed,
    /// The host stopped reporting: what the guest does is not known.
    Unknown,
    Deleting,
    Deleted,
}

impl InstanceState {
    /// The state's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Creating => "creating",
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Rebooting => "rebooting",
            InstanceState::Resizing => "resizing",
            InstanceState::Rebuilding => "rebuilding",
            InstanceState::Migrating => "migrating",
            InstanceState::Crashed => "crashed",
            InstanceState::Repairing => "repairing",
            InstanceState::Failed => "failed",
            InstanceState::Unknown => "unknown",
            InstanceState::Deleting => "deleting",
            InstanceState::Deleted => "deleted",
        }
    }
}

/// The control plane's own record of where an instance is in its life (Omicron's
/// instance row; the guest itself is the agent's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// The create saga has not finished.
    Creating,
    /// Created; the guest follows the desired power state.
    Active,
    /// An action (reboot, resize, rebuild, migrate, repair) is in flight.
    Busy,
    Failed,
    Deleting,
    Deleted,
}

/// What the guest should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    Running,
    Stopped,
    /// Not on the host at all (deleted or moved away).
    Absent,
}

/// What the agent saw a guest doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObservedState {
    /// Being prepared (disk, network) or booting.
    Starting,
    Running,
    Stopping,
    /// Prepared and not running.
    Stopped,
    /// Could not start (a failed boot, a missing image file, a refused claim).
    Failed,
    /// Was running and died without being asked (its process was killed, it panicked).
    Crashed,
    /// Nothing of it is on the host.
    Absent,
}

/// What the control plane does when the guest fails unexpectedly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    OnFailure,
    Always,
}

/// The agent's last word on an instance.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct Observation {
    pub state: ObservedState,
    /// The instance spec generation this observation reflects.
    pub generation: i64,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
    /// The agent's phases that led to this observation, as it reported them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<crate::operations::PhaseTiming>,
}

/// An instance.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Instance {
    pub id: InstanceId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub name: String,
    pub shape_id: ShapeId,
    pub shape_name: String,
    /// The sizes in effect (a copy of the shape at create or resize).
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub gpu: Option<GpuRequest>,
    pub cpu_policy: CpuPolicy,
    pub hugepages: Hugepages,
    pub runtime_class: RuntimeClass,
    /// Image reference the root disk is built from.
    pub image: String,
    /// What the image resolved to when the instance was created or rebuilt.
    #[serde(default)]
    pub boot: Option<crate::images::BootSource>,
    pub placement_group_id: Option<PlacementGroupId>,
    /// Placement traits the host must have.
    pub required_traits: Vec<String>,
    /// Placement traits the host must not have.
    pub forbidden_traits: Vec<String>,
    /// Only hosts dedicated to the tenant.
    pub dedicated_host: bool,
    pub restart_policy: RestartPolicy,
    pub ssh_keys: Vec<String>,
    /// Whether user data was given (it is never returned).
    pub has_user_data: bool,
    pub labels: BTreeMap<String, String>,
    /// The derived state users see.
    pub state: InstanceState,
    pub lifecycle: Lifecycle,
    /// The action in flight while `lifecycle` is `busy`.
    pub action: Option<String>,
    pub power: PowerState,
    /// Bumped on every change of intent the host must act on.
    pub spec_generation: i64,
    /// The spec generation at which the current boot was asked for (start, reboot).
    pub boot_generation: i64,
    pub host_id: Option<HostId>,
    pub claim: Option<Claim>,
    pub observed: Option<Observation>,
    /// How the guest runs on its host (operators only; `None` for tenants).
    #[serde(default)]
    pub runtime: Option<crate::agent::RuntimeEvidence>,
    /// Set when the instance was recovered on another host and its local disk was lost.
    pub warning: Option<String>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/instances`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceCreate {
    pub project_id: ProjectId,
    pub name: String,
    /// Shape id or name.
    pub shape: String,
    /// An available image: its id, or its name (the project's own image of that name
    /// first, then a public one).
    pub image: String,
    /// Defaults to the shape's runtime class; must match it when given.
    #[serde(default)]
    pub runtime_class: Option<RuntimeClass>,
    #[serde(default)]
    pub placement_group_id: Option<PlacementGroupId>,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default)]
    pub user_data: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Placement traits the host must have.
    #[serde(default)]
    pub required_traits: Vec<String>,
    /// Placement traits the host must not have.
    #[serde(default)]
    pub forbidden_traits: Vec<String>,
    /// Only hosts dedicated to this tenant.
    #[serde(default)]
    pub dedicated_host: bool,
    /// Create stopped instead of starting it.
    #[serde(default)]
    pub start: Option<bool>,
    /// Its network interfaces, in slot order (at most 8): new ones in a subnet, or
    /// existing unattached ones. None given: one new NIC in the project's default subnet
    /// (made, with the default VPC, on first need).
    #[serde(default)]
    pub nics: Vec<crate::network::InstanceNetworkInterface>,
    /// Volumes of the project to attach from the first boot (ids or names, in slot order;
    /// at most 8, all `available` and in one host's pool): the instance is placed on that
    /// host.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// A volume of the project to be the root disk instead of one made from the image (id
    /// or name; `available`; fill it from the image first for a disk image): the image
    /// still gives the kernel, initrd and command line of a direct boot. The instance is
    /// placed on its host.
    #[serde(default)]
    pub boot_volume: Option<String>,
    /// Keep the boot volume when the instance is deleted (default: it is deleted with it).
    #[serde(default)]
    pub keep_boot_volume: bool,
}

/// Body of `PATCH /v1/instances/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceUpdate {
    pub labels: Option<BTreeMap<String, String>>,
    pub restart_policy: Option<RestartPolicy>,
}

/// Body of `POST /v1/instances/{id}/resize`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceResize {
    /// Shape id or name.
    pub shape: String,
}

/// Body of `POST /v1/instances/{id}/rebuild`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceRebuild {
    /// An available image: its id, or its name (the project's own image first, then a
    /// public one).
    pub image: String,
}

/// Filters of `GET /v1/instances`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceFilter {
    pub project_id: Option<ProjectId>,
    pub state: Option<InstanceState>,
    pub host_id: Option<HostId>,
    /// `key=value`: only instances with this label.
    pub label: Option<String>,
    pub name: Option<String>,
}

/// A placement group: affinity, anti-affinity or spread of its members over hosts or racks.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct PlacementGroup {
    pub id: PlacementGroupId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub name: String,
    pub policy: GroupPolicy,
    pub scope: FailureDomain,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/placement-groups`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementGroupCreate {
    pub project_id: ProjectId,
    pub name: String,
    pub policy: GroupPolicy,
    #[serde(default = "default_scope")]
    pub scope: FailureDomain,
}

fn default_scope() -> FailureDomain {
    FailureDomain::Host
}

/// Resources a host holds for one instance.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Allocation {
    pub id: AllocationId,
    pub host_id: HostId,
    pub instance_id: InstanceId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub claim: Claim,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of an instance's history.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct InstanceEvent {
    pub id: EventId,
    pub instance_id: InstanceId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    /// `created`, `state_changed`, `placed`, `start_requested`, …
    pub kind: String,
    pub state: Option<InstanceState>,
    /// Whether the instance held a claim on a host after this event (metering's
    /// `allocated`); null on events older than metering.
    #[serde(default)]
    pub placed: Option<bool>,
    /// The instance's shape after this event.
    #[serde(default)]
    pub shape: Option<String>,
    pub detail: String,
    pub operation_id: Option<OperationId>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How many more of a shape fit, per site and rack.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CapacityRow {
    pub shape_id: ShapeId,
    pub shape_name: String,
    pub site_id: Option<SiteId>,
    pub rack_id: Option<RackId>,
    /// Hosts in this rack that could take the shape now.
    pub hosts: u32,
    /// How many more instances of the shape fit.
    pub fits: u64,
}

/// Answer of `GET /v1/capacity`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CapacitySummary {
    pub rows: Vec<CapacityRow>,
    /// Per shape, over everything.
    pub totals: BTreeMap<String, u64>,
}

/// Answer of an instance action that continues in the background: the instance as it is
/// now and the operation to follow.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct InstanceAccepted {
    pub instance: Instance,
    pub operation: crate::operations::Operation,
}

/// Answer of `GET /v1/instances/{id}/console`: a window of the instance's serial console
/// as shipped by its host's agent. Offsets count bytes of the log as the server keeps it
/// (the last 1 MiB of it).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ConsoleLog {
    pub instance_id: InstanceId,
    /// Offset of `data`'s first byte.
    pub offset: u64,
    /// Offset after `data`: ask from here to follow.
    pub next_offset: u64,
    /// Older output than was asked for is gone (only the last 1 MiB is kept).
    pub truncated: bool,
    /// The console output (invalid UTF-8 replaced).
    pub data: String,
}

/// Query of `GET /v1/instances/{id}/console`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// Start here (default: the last `limit` bytes).
    pub offset: Option<u64>,
    /// At most this many bytes (default 65536, at most 1 MiB).
    #[param(minimum = 1, maximum = 1048576)]
    pub limit: Option<u64>,
    /// Long-poll: when nothing is past `offset`, wait up to this many seconds (at most 60)
    /// for more.
    #[param(maximum = 60)]
    pub wait: Option<u64>,
}

/// Body of `POST /v1/instances/{id}/console/input`: text for the guest's serial console,
/// as typed (a newline ends a line; control characters such as `\u0003` for Ctrl-C pass).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleInput {
    /// 1 to 4096 bytes of UTF-8.
    pub data: String,
}

/// Answer of `POST /v1/instances/{id}/console/input`: the input waits for the instance's
/// host, which writes it to the guest's serial port in order.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ConsoleInputAccepted {
    pub instance_id: InstanceId,
    /// This input's place in the instance's console input.
    pub seq: i64,
    pub bytes: u64,
}

/// Filters of `GET /v1/placement-groups`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PlacementGroupFilter {
    pub project_id: Option<String>,
    /// Only groups with this name (unique within a project).
    pub name: Option<String>,
}
