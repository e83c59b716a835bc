//! Block storage on the wire: volume types (operators), volumes (projects), their wipe
//! evidence, and what the agent is told and tells about the volume files of its host.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Where a type's volumes live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeBackend {
    /// A qcow2 file (LUKS inside when encrypted) in a host's volume pool: the volume is
    /// local to that host, and a VM using it runs there.
    #[default]
    LocalQcow2,
    /// A Ceph RBD image (QEMU's native driver; shared, any host reaches it).
    Rbd,
}

/// How a deleted volume's bytes are made unrecoverable before its space is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WipeMethod {
    /// Crypto-erase: the volume's own key is destroyed (the data on the device was only
    /// ever ciphertext), then the file's encryption header is overwritten and the file
    /// removed. Needs an encrypted type.
    Crypto,
    /// Every byte of the file overwritten with zeros in place (and synced), then removed.
    Overwrite,
}

/// A volume type's I/O limits (each `None`: unlimited). IOPS are operations per second,
/// `bps` bytes per second; `*_max` the burst allowed for `burst_seconds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeQos {
    #[serde(default)]
    pub iops_total: Option<u64>,
    #[serde(default)]
    pub iops_read: Option<u64>,
    #[serde(default)]
    pub iops_write: Option<u64>,
    #[serde(default)]
    pub bps_total: Option<u64>,
    #[serde(default)]
    pub bps_read: Option<u64>,
    #[serde(default)]
    pub bps_write: Option<u64>,
    #[serde(default)]
    pub iops_total_max: Option<u64>,
    #[serde(default)]
    pub bps_total_max: Option<u64>,
    #[serde(default)]
    pub burst_seconds: Option<u32>,
}

/// A kind of volume an operator offers: its backend, encryption, wipe method, I/O limits
/// and the `disk_gib_seconds` dimension its volumes are metered (and priced) under.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct VolumeType {
    pub id: VolumeTypeId,
    pub name: String,
    pub description: String,
    pub backend: VolumeBackend,
    /// Each volume LUKS-encrypted with its own random key.
    pub encrypted: bool,
    pub wipe: WipeMethod,
    pub qos: VolumeQos,
    /// The `disk_gib_seconds` dimension of its volumes (the price book prices it).
    pub price_dimension: String,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/volume-types`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeTypeCreate {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub backend: VolumeBackend,
    /// Default true.
    #[serde(default)]
    pub encrypted: Option<bool>,
    /// Default `crypto` when encrypted, else `overwrite`.
    #[serde(default)]
    pub wipe: Option<WipeMethod>,
    #[serde(default)]
    pub qos: VolumeQos,
    /// Default: the type's name.
    #[serde(default)]
    pub price_dimension: Option<String>,
}

/// Body of `PATCH /v1/volume-types/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeTypeUpdate {
    pub description: Option<String>,
    /// New I/O limits (replacing the old ones whole): applied at once to every disk of the
    /// type that a running guest has (its throttle group), and at every later attach.
    pub qos: Option<VolumeQos>,
}

/// Query of `GET /v1/volume-types`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeTypeFilter {
    pub name: Option<String>,
}

/// Where a volume is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// Its host is making the file.
    Creating,
    /// It exists, attached to nothing.
    Available,
    /// Attached to an instance.
    InUse,
    /// Growing (`size_gib` is already the new size; its host is resizing the file).
    Extending,
    /// Going back to its latest snapshot: its host is replacing the top layer of its files
    /// with an empty one.
    Reverting,
    /// Delete asked: its key is destroyed; its host has not started wiping yet.
    Deleting,
    /// Its host is wiping its file.
    Wiping,
    /// Wiped and gone (the record stays, with its wipe evidence).
    Deleted,
    /// Something failed; `state_reason` says what.
    Error,
}

/// What a volume's wipe did, as its host reported it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct WipeEvidence {
    pub method: WipeMethod,
    /// When the volume's key was destroyed (crypto-erase; `None` for an unencrypted one).
    #[serde(default)]
    pub key_destroyed_at: Option<DateTime<Utc>>,
    /// Bytes of the file overwritten in place before it was removed (the encryption
    /// header for `crypto`, the whole file for `overwrite`).
    #[serde(default)]
    pub bytes_overwritten: u64,
    /// When the host reported the file gone.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A block device a project holds, apart from any instance: created on a host's volume
/// pool (or a shared backend), attached to instances, wiped when deleted.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Volume {
    pub id: VolumeId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub name: String,
    pub description: String,
    pub volume_type_id: VolumeTypeId,
    pub size_gib: u32,
    /// The host whose pool holds it (local backends).
    pub host_id: Option<HostId>,
    pub state: VolumeState,
    /// Why it is in `error` (or what its host last said went wrong).
    #[serde(default)]
    pub state_reason: Option<String>,
    /// What the guest sees: `/dev/disk/by-id/virtio-<serial>` (20 characters, from its id).
    pub serial: String,
    pub encrypted: bool,
    pub wipe: WipeMethod,
    /// Bytes its file takes on the host, as last reported.
    #[serde(default)]
    pub allocated_bytes: Option<u64>,
    /// Once deleted: how it was wiped.
    #[serde(default)]
    pub wipe_evidence: Option<WipeEvidence>,
    /// While `in_use`: its attachment and the instance it is attached to.
    #[serde(default)]
    pub attachment_id: Option<VolumeAttachmentId>,
    #[serde(default)]
    pub instance_id: Option<InstanceId>,
    /// The image whose disk it was filled from (`None`: made blank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_image_id: Option<ImageId>,
    /// That disk's file, which its host fetches to fill it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_disk: Option<crate::images::BlobRef>,
    /// The snapshot it was filled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_snapshot_id: Option<VolumeSnapshotId>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/volumes`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreate {
    pub project_id: ProjectId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Default: the only volume type, when there is one.
    #[serde(default)]
    pub volume_type_id: Option<VolumeTypeId>,
    pub size_gib: u32,
    /// Put it on the host this instance runs on (a local volume is usable only there).
    #[serde(default)]
    pub instance_id: Option<InstanceId>,
    /// Put it on this host (operators only).
    #[serde(default)]
    pub host_id: Option<HostId>,
    /// Fill it from an available image's disk (its id, or its name: the project's own
    /// image of that name first, then a public one); the image must fit in `size_gib`.
    #[serde(default)]
    pub image: Option<String>,
    /// Fill it from an available snapshot of a volume of the same project (its id): the new
    /// volume is made on that volume's host, with its own key, and must be at least the
    /// snapshot's size.
    #[serde(default)]
    pub snapshot_id: Option<VolumeSnapshotId>,
}

/// Body of `POST /v1/volumes/{id}/extend`: the new size (volumes only grow).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeExtend {
    pub size_gib: u32,
}

/// Body of `PATCH /v1/volumes/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeUpdate {
    pub description: Option<String>,
}

/// Query of `GET /v1/volumes`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeFilter {
    pub project_id: Option<String>,
    pub name: Option<String>,
    pub volume_type_id: Option<String>,
    pub host_id: Option<String>,
    pub state: Option<String>,
}

/// A host's volume pool, as its agent reports it in the inventory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct VolumePoolInventory {
    /// The pool's directory.
    pub path: String,
    /// Its filesystem (`ext4`, `xfs`); copy-on-write ones are refused.
    pub filesystem: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

/// One volume file its host must hold (or, `present: false`, wipe and remove).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct VolumeSpec {
    pub volume_id: VolumeId,
    /// Bumped by every change of what the host must do with it.
    pub generation: i64,
    pub size_bytes: u64,
    pub encrypted: bool,
    pub wipe: WipeMethod,
    pub present: bool,
    /// Fill it from this image disk when making it (`None`: blank).
    #[serde(default)]
    pub source: Option<crate::images::BlobRef>,
    /// Its snapshots' layers, oldest first: the file `<id>.qcow2` is the bottom of its
    /// chain, and each snapshot adds the layer made when it was taken (what is written
    /// after it). A layer no longer listed is merged down and wiped; a layer listed at a
    /// new revision (a revert) replaces the old one, empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<VolumeLayer>,
    /// Fill it from another volume's chain (a snapshot's content) when making it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_chain: Option<SourceChain>,
}

/// One layer of a volume's chain of files: made when snapshot `snapshot_id` was taken,
/// remade empty at each revert to it (`revision`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct VolumeLayer {
    pub snapshot_id: VolumeSnapshotId,
    #[serde(default)]
    pub revision: u32,
    /// Taken live with the guest's filesystems frozen by its guest agent, when it answers
    /// in time (the host reports the outcome in [`ObservedVolume::freezes`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fs_freeze: bool,
}

impl VolumeLayer {
    /// The layer's file name in its volume's pool.
    pub fn file(&self, volume: &VolumeId) -> String {
        format!("{volume}+{}.{}.qcow2", self.snapshot_id, self.revision)
    }
}

/// The content of a snapshot, as a new volume is filled from it: the chain of its
/// volume's files up to the snapshot (the bottom file, then these layers).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct SourceChain {
    pub volume_id: VolumeId,
    pub layers: Vec<VolumeLayer>,
    pub encrypted: bool,
}

/// What the agent found or did with one volume file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObservedVolumeState {
    /// The file exists as specified.
    Present,
    /// The agent is wiping it.
    Wiping,
    /// Wiped and removed (or never made).
    Absent,
    /// Making or wiping it failed (`detail` says why).
    Failed,
}

/// One volume as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedVolume {
    pub volume_id: VolumeId,
    /// The spec generation the agent acted on.
    pub generation: i64,
    pub state: ObservedVolumeState,
    #[serde(default)]
    pub detail: Option<String>,
    /// Bytes the file takes on the host.
    #[serde(default)]
    pub allocated_bytes: Option<u64>,
    /// Bytes overwritten in place by its wipe (with `absent` after a delete).
    #[serde(default)]
    pub bytes_overwritten: Option<u64>,
    /// How the guest agent answered the freezes asked around its layers taken live.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freezes: Vec<ObservedFreeze>,
}

/// The outcome of freezing a guest's filesystems around one snapshot taken live.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedFreeze {
    pub snapshot_id: VolumeSnapshotId,
    /// The guest agent froze the guest's filesystems before the layer was taken and
    /// thawed them after.
    pub frozen: bool,
    /// How many filesystems it froze.
    #[serde(default)]
    pub filesystems: Option<u64>,
    /// Why they were not frozen.
    #[serde(default)]
    pub detail: Option<String>,
}

/// Answer of `GET /agent/v1/volumes/{id}/key`: a volume's encryption key, given only to
/// the host that holds the volume while it must create or open it.
#[derive(Clone, Deserialize, Serialize, ToSchema)]
pub struct VolumeKey {
    pub volume_id: VolumeId,
    /// 64 hexadecimal characters (QEMU takes a LUKS secret as UTF-8 text).
    pub key: String,
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeKey").field("volume_id", &self.volume_id).field("key", &"<redacted>").finish()
    }
}

/// Where an attachment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentState {
    /// Asked of a running guest: its host is hot-plugging the disk.
    Attaching,
    /// Its instance has (or, stopped, will have at its next boot) the volume as a disk.
    Attached,
    /// Asked of a running guest: its host asked the guest to release the disk and waits
    /// for it (`DEVICE_DELETED`).
    Detaching,
    /// The guest did not release the disk within the detach deadline; it still holds it.
    /// It ends `detached` if the guest lets go later, or when an operator force-detaches
    /// (the instance is stopped, and the disk detached cold).
    ErrorDetaching,
    /// Over: the volume is free again (the record stays).
    Detached,
}

impl VolumeBackend {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeBackend::LocalQcow2 => "local_qcow2",
            VolumeBackend::Rbd => "rbd",
        }
    }
}

impl AttachmentState {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentState::Attaching => "attaching",
            AttachmentState::Attached => "attached",
            AttachmentState::Detaching => "detaching",
            AttachmentState::ErrorDetaching => "error_detaching",
            AttachmentState::Detached => "detached",
        }
    }
}

/// A volume attached to an instance: its own record (Cinder's model), kept after detach.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct VolumeAttachment {
    pub id: VolumeAttachmentId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub volume_id: VolumeId,
    pub instance_id: InstanceId,
    pub host_id: Option<HostId>,
    pub state: AttachmentState,
    /// Which of the instance's volume slots it takes (its PCIe root port `hp<slot>` on q35).
    pub slot: u8,
    /// What the guest sees: `/sys/block/vdX/serial`, `/dev/disk/by-id/virtio-<serial>`.
    pub serial: String,
    pub attached_at: DateTime<Utc>,
    /// When the detach was asked (the detach deadline runs from here).
    #[serde(default)]
    pub detach_requested_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub detached_at: Option<DateTime<Utc>>,
    /// Why it is in `error_detaching`, or why its attach failed (it then ends `detached`).
    #[serde(default)]
    pub detail: Option<String>,
    /// It is the instance's root disk (`boot_volume`), not a data disk in a slot.
    #[serde(default)]
    pub boot: bool,
    /// A boot volume deleted with its instance (not kept).
    #[serde(default)]
    pub delete_with_instance: bool,
    /// The instance spec generation that carries the attachment's last change: a host's
    /// report at or past it settles a `detaching`.
    #[serde(default)]
    pub spec_generation: i64,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /v1/volumes/{id}/attach`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeAttach {
    pub instance_id: InstanceId,
}

/// Body of `POST /v1/volumes/{id}/detach` (optional).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeDetach {
    /// Operators only: a guest that does not release the disk is stopped (powered off if
    /// it ignores the power button too) and the disk detached cold. The instance stays
    /// stopped.
    #[serde(default)]
    pub force: bool,
}

/// Where a volume's disk is in a running guest, as its host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlugState {
    /// The guest has the disk.
    Plugged,
    /// The guest was asked to release it and has not yet.
    Unplugging,
    /// Hot-plugging it failed (`detail` says why); the guest does not have it.
    Failed,
}

/// One volume attachment in a running guest, as its host reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ObservedPlug {
    pub attachment_id: VolumeAttachmentId,
    pub state: PlugState,
    #[serde(default)]
    pub detail: Option<String>,
}

/// Query of `GET /v1/volume-attachments`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeAttachmentFilter {
    pub volume_id: Option<String>,
    pub instance_id: Option<String>,
    pub state: Option<String>,
}

/// A volume attached to a guest, as its host boots it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct InstanceVolumeSpec {
    pub attachment_id: VolumeAttachmentId,
    pub volume_id: VolumeId,
    pub slot: u8,
    pub serial: String,
    pub encrypted: bool,
    /// The volume's size (a running guest's disk is grown to it with `block_resize`).
    #[serde(default)]
    pub size_bytes: u64,
    /// Its type's I/O limits (the disk's throttle group).
    #[serde(default)]
    pub qos: VolumeQos,
    /// Where the host reaches its data (`None`: `<pool>/<volume id>.qcow2` on this host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<VolumeConnection>,
    /// Its snapshots' layers over that file, oldest first (see [`VolumeSpec::layers`]): a
    /// running guest is given a new top layer live when a snapshot is taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<VolumeLayer>,
}

/// How a host reaches a volume's data: what its backend's driver hands the agent, which
/// turns it into QEMU block nodes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(tag = "driver", rename_all = "snake_case")]
pub enum VolumeConnection {
    /// A qcow2 file (LUKS inside when encrypted) in this host's volume pool.
    LocalQcow2 {
        /// Its file name in the pool.
        file: String,
    },
    /// A Ceph RBD image (raw; LUKS on top when encrypted), through QEMU's `rbd` driver.
    Rbd {
        pool: String,
        image: String,
        /// The Ceph user QEMU connects as (its key is the host's, from its keyring).
        user: String,
        /// Monitor addresses (`host:port`); empty: the host's ceph.conf.
        #[serde(default)]
        monitors: Vec<String>,
    },
}

impl VolumeQos {
    /// The limits as QEMU's `throttle-group` `limits` object (unset limits: 0, none).
    pub fn qemu_limits(&self) -> serde_json::Value {
        let n = |v: Option<u64>| v.unwrap_or(0);
        let len = u64::from(self.burst_seconds.unwrap_or(1));
        serde_json::json!({
            "iops-total": n(self.iops_total),
            "iops-read": n(self.iops_read),
            "iops-write": n(self.iops_write),
            "bps-total": n(self.bps_total),
            "bps-read": n(self.bps_read),
            "bps-write": n(self.bps_write),
            "iops-total-max": n(self.iops_total_max),
            "bps-total-max": n(self.bps_total_max),
            "iops-total-max-length": if self.iops_total_max.is_some() { len } else { 1 },
            "bps-total-max-length": if self.bps_total_max.is_some() { len } else { 1 },
        })
    }
}

/// Where a snapshot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// Its volume's host is adding the layer (live: `blockdev-snapshot` in the guest).
    Creating,
    Available,
    /// Its layer is being merged down and wiped by its volume's host.
    Deleting,
    /// Gone (the record stays).
    Deleted,
    /// Taking it failed; `state_reason` says why (nothing of it is kept).
    Error,
}

impl SnapshotState {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Creating => "creating",
            SnapshotState::Available => "available",
            SnapshotState::Deleting => "deleting",
            SnapshotState::Deleted => "deleted",
            SnapshotState::Error => "error",
        }
    }
}

/// How consistent a snapshot's content is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotConsistency {
    /// What the disk held at one instant, as after a power cut: a journaling filesystem
    /// replays its journal.
    CrashConsistent,
    /// Taken while the guest agent held the guest's filesystems frozen.
    FsFrozen,
}

/// A point-in-time copy of a volume's content (an external qcow2 layer: taking one is
/// O(1) in the volume's size). A volume's snapshots are deleted with it.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct VolumeSnapshot {
    pub id: VolumeSnapshotId,
    pub tenant_id: TenantId,
    pub project_id: ProjectId,
    pub volume_id: VolumeId,
    pub name: String,
    pub description: String,
    /// The volume's size when it was taken (what it is billed and counted at).
    pub size_gib: u32,
    /// The host whose pool holds its layer.
    pub host_id: Option<HostId>,
    pub state: SnapshotState,
    #[serde(default)]
    pub state_reason: Option<String>,
    pub consistency: SnapshotConsistency,
    /// Asked to be taken with the guest's filesystems frozen (`fs_freeze`).
    #[serde(default)]
    pub fs_freeze: bool,
    /// What its consistency rests on: how many filesystems the guest agent froze, or why
    /// a freeze asked for did not happen.
    #[serde(default)]
    pub consistency_detail: Option<String>,
    /// Taken while its volume was attached to this running instance.
    #[serde(default)]
    pub instance_id: Option<InstanceId>,
    /// Its layer's revision (bumped by each revert of its volume to it).
    #[serde(default)]
    pub layer_revision: u32,
    /// The volume spec generation that carries its last change: its host's report at or
    /// past it settles `creating` or `deleting`.
    #[serde(default)]
    pub spec_generation: i64,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Body of `POST /v1/snapshots`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSnapshotCreate {
    pub volume_id: VolumeId,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Of a volume attached to a running guest: freeze its filesystems through its guest
    /// agent (QEMU's qemu-ga, on the `org.qemu.guest_agent.0` port) while the layer is
    /// taken. The snapshot is `fs_frozen` if the agent froze them in time, and
    /// `crash_consistent` otherwise, with the reason in `consistency_detail`.
    #[serde(default)]
    pub fs_freeze: bool,
}

/// Query of `GET /v1/snapshots`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VolumeSnapshotFilter {
    pub project_id: Option<String>,
    pub volume_id: Option<String>,
    pub name: Option<String>,
    pub state: Option<String>,
}

/// Body of `POST /v1/volumes/{id}/revert`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRevert {
    /// The volume's latest available snapshot (Cinder's rule: reverting to an older one
    /// would silently lose the snapshots after it).
    pub snapshot_id: VolumeSnapshotId,
}
