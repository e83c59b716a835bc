//! Agent protocol wire types (the separate `/agent/v1` surface): enrolment, desired state
//! (long-polled), observed state, inventory and heartbeats.

use crate::compute::{Claim, ObservedState, PowerState};
use crate::ids::*;
use crate::images::BootSource;
use crate::inventory::{HostInventory, HostState};
use crate::shapes::RuntimeClass;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /agent/v1/enroll`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The `pjt_…` secret from `POST /v1/host-join-tokens`.
    pub join_token: String,
    /// The host's name (DNS label).
    pub hostname: String,
    #[serde(default)]
    pub inventory: Option<HostInventory>,
}

/// Answer to a successful enrolment.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct EnrollResponse {
    pub host_id: HostId,
    /// The per-host credential (`phc_…`), shown once; the agent keeps it 0600.
    pub credential: String,
}

/// What one guest on the host should be.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct InstanceSpec {
    pub instance_id: InstanceId,
    pub name: String,
    /// The generation of this spec; observations name the generation they reflect.
    pub generation: i64,
    pub power: PowerState,
    /// The spec generation at which the current boot was asked for: when this is above the
    /// generation of the guest's current boot, the agent (re)boots it (start, reboot).
    pub boot_generation: i64,
    pub runtime_class: RuntimeClass,
    pub image: String,
    /// The resources claimed for it on this host: sizes, pinned CPUs, NUMA nodes,
    /// hugepages, GPUs.
    pub claim: Claim,
    pub ssh_keys: Vec<String>,
    pub user_data: Option<String>,
    /// What it boots, resolved from its image (`None` for runtimes that boot nothing, and
    /// for instances whose image is not registered).
    #[serde(default)]
    pub boot: Option<BootSource>,
    /// Its NICs in slot order (their data path is in the host's network spec).
    #[serde(default)]
    pub nics: Vec<InstanceNicSpec>,
    /// The NoCloud seed the guest reads from a read-only `CIDATA` disk (rendered by the
    /// server; `None` for runtimes that boot nothing).
    #[serde(default)]
    pub cloud_init: Option<CloudInitSeed>,
    /// Its attached volumes, in slot order (given to the guest as disks when it boots).
    #[serde(default)]
    pub volumes: Vec<crate::storage::InstanceVolumeSpec>,
    /// A volume that is the guest's root disk instead of one made from the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume: Option<crate::storage::InstanceVolumeSpec>,
}

/// One NIC of a guest, as its runtime plugs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct InstanceNicSpec {
    pub nic_id: NicId,
    /// The VPC's VNI: its namespace on the host is `pv-<vni>`.
    pub vni: u32,
    /// The tap's name in that namespace.
    pub device: String,
    pub mac: String,
    pub mtu: u32,
}

/// The three NoCloud files, rendered.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct CloudInitSeed {
    pub meta_data: String,
    pub user_data: String,
    /// network-config version 2 (MAC-matched).
    pub network_config: String,
    /// vendor-data (empty: none): the resolver of the primary NIC's VPC.
    #[serde(default)]
    pub vendor_data: String,
}

/// Answer of `GET /agent/v1/desired`: every guest this host should have.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
pub struct DesiredState {
    pub host_id: HostId,
    /// Bumped whenever any spec on the host changes.
    pub generation: i64,
    pub instances: Vec<InstanceSpec>,
    /// The host's tenant networks (`None`: the server has no network spec for it).
    #[serde(default)]
    pub network: Option<crate::network::HostNetworkSpec>,
    /// The volume files of this host's pool: to make, keep, or wipe and remove.
    #[serde(default)]
    pub volumes: Vec<crate::storage::VolumeSpec>,
}

/// Query of `GET /agent/v1/desired`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DesiredQuery {
    /// Long-poll: answer when the host's desired generation is above this one, or after
    /// `wait` seconds (default 30, at most 60) with the current state.
    pub after: Option<i64>,
    pub wait: Option<u64>,
}

/// One guest as the agent sees it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedInstance {
    pub instance_id: InstanceId,
    /// The spec generation the agent was acting on.
    pub generation: i64,
    pub state: ObservedState,
    #[serde(default)]
    pub detail: Option<String>,
    /// How the guest runs, when it runs (or last ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<RuntimeEvidence>,
    /// What the agent did to reach this state, phase by phase (reports that end a step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<crate::operations::PhaseTiming>,
    /// A running guest's volume disks as its host found them (`None`: not running, or
    /// not known yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<crate::storage::ObservedPlug>>,
}

/// How a guest actually runs on its host: recorded from the agent's reports and shown to
/// operators on `GET /v1/instances/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeEvidence {
    /// The runtime (`qemu`, `sim`).
    pub runtime: String,
    /// `kvm` or `tcg` (QEMU); `none` for runtimes that run nothing.
    pub accelerator: String,
    /// The machine type (`q35`, `microvm`).
    #[serde(default)]
    pub machine: Option<String>,
    /// The exact command line, one argument per element.
    #[serde(default)]
    pub command_line: Vec<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    /// The QMP socket path on the host (private to the agent).
    #[serde(default)]
    pub qmp_socket: Option<String>,
    /// The serial console log on the host.
    #[serde(default)]
    pub serial_log: Option<String>,
    /// Host CPUs the vCPU threads are pinned to, in vCPU order.
    #[serde(default)]
    pub pinned_cpus: Vec<u32>,
}

/// Body of `POST /agent/v1/observed`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedReport {
    pub instances: Vec<ObservedInstance>,
    /// The data path after the agent's last network apply.
    #[serde(default)]
    pub network: Option<crate::network::ObservedNetwork>,
    /// Volume files, as the agent last found or left them.
    #[serde(default)]
    pub volumes: Vec<crate::storage::ObservedVolume>,
}

/// Answer of `POST /agent/v1/observed`: which reports were applied.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ObservedAck {
    /// Applied (newer than what was known).
    pub applied: u32,
    /// Ignored as stale (older than what was known).
    pub stale: u32,
    /// Refused: the instance is not on this host (moved away, or never was).
    #[serde(default)]
    pub rejected: u32,
}

/// Body of `POST /agent/v1/heartbeat`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent's version.
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// Answer of `POST /agent/v1/heartbeat`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct HeartbeatAck {
    pub host_id: HostId,
    pub state: HostState,
    /// Seconds until the next heartbeat is due.
    pub interval_seconds: u64,
}

/// Query of `POST /agent/v1/instances/{id}/console` (the body is the console bytes that
/// follow `offset` in `stream`; an empty body asks where the server is).
#[derive(Clone, Debug, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleChunkQuery {
    /// Names the log file the bytes come from (the agent uses its inode); offsets count
    /// from the start of that stream.
    pub stream: String,
    /// Offset in the stream of the body's first byte.
    pub offset: u64,
    /// The stream restarted from 0 (the log was rotated): the server appends it rather
    /// than treat it as already seen.
    #[serde(default)]
    pub reset: bool,
}

/// Answer of `POST /agent/v1/instances/{id}/console`: how far the server has the stream.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ConsoleAck {
    pub stream: String,
    /// The server holds the stream up to this offset; the agent sends from here.
    pub acked: u64,
}

/// Body of `POST /agent/v1/console-input`: what the agent wrote to its guests since its
/// last call (the server forgets it), and how long to wait for more.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct ConsoleInputPoll {
    /// Per instance, the highest `seq` written to the guest (or dropped: not running here).
    #[serde(default)]
    pub acked: Vec<ConsoleInputAck>,
    /// Long-poll: when nothing waits, wait up to this many seconds (at most 60) for input.
    #[serde(default)]
    pub wait: u64,
}

/// One instance's input written up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ConsoleInputAck {
    pub instance_id: InstanceId,
    pub seq: i64,
}

/// Answer of `POST /agent/v1/console-input`: input waiting for this host's guests, in
/// order per instance.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct ConsoleInputBatch {
    pub chunks: Vec<ConsoleInputChunk>,
}

/// Input typed for one instance's serial console.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ConsoleInputChunk {
    pub instance_id: InstanceId,
    /// Orders one instance's input (acknowledge up to it).
    pub seq: i64,
    pub data: String,
}
