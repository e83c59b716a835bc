//! Block storage commands: `plinth volume-type …` (operators), `plinth volume …` (with
//! `attach`/`detach`, hot or cold, `extend` and `revert`), `plinth volume-attachment …`
//! and `plinth snapshot …`.
//! Names resolve to ids (a volume's within its project when `--project` is given).

use super::{Ids, ListArgs, create, delete, get, none_match};
use crate::output::Out;
use anyhow::Result;
use clap::Subcommand;
use plinth_api::*;
use plinth_client::resolve::{resolve, resolve_in, resolve_opt};
use plinth_client::{Client, Hosts, Instances, Projects, Snapshots, VolumeAttachments, VolumeTypes, Volumes};

/// Volume types: the kinds of volume operators offer.
#[derive(Subcommand, Debug)]
pub enum VolumeTypeCmd {
    /// List them.
    List {
        #[command(flatten)]
        page: ListArgs,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one (operators).
    Create {
        name: String,
        /// Where its volumes live: local_qcow2 (a host's pool) or rbd (the Ceph pool the
        /// server is configured with, PLINTH_RBD_POOL; encrypted, crypto-erased).
        #[arg(long, default_value = "local_qcow2", value_parser = super::args::wire::<VolumeBackend>)]
        backend: VolumeBackend,
        /// Store volumes unencrypted (default: LUKS with a key per volume).
        #[arg(long)]
        unencrypted: bool,
        /// How a deleted volume is wiped: crypto (its key destroyed, then its encryption
        /// header overwritten; the default when encrypted) or overwrite (every byte).
        #[arg(long, value_parser = ["crypto", "overwrite"])]
        wipe: Option<String>,
        /// Limit on I/O operations per second.
        #[arg(long)]
        iops: Option<u64>,
        /// Limit on bytes per second.
        #[arg(long)]
        bps: Option<u64>,
        /// The disk_gib_seconds dimension the price book prices it under (default: its name).
        #[arg(long)]
        price_dimension: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Change one (operators): new I/O limits replace the old ones and reach the disks
    /// running guests have at once.
    Update {
        id: String,
        /// Limit on I/O operations per second (with --bps: the new limits; neither: unchanged).
        #[arg(long)]
        iops: Option<u64>,
        /// Limit on bytes per second.
        #[arg(long)]
        bps: Option<u64>,
        /// Remove every limit.
        #[arg(long, conflicts_with_all = ["iops", "bps"])]
        unlimited: bool,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete one (not while a volume names it).
    Delete { id: String },
}

impl VolumeTypeCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "name", "backend", "encrypted", "wipe", "price_dimension"];
        match self {
            VolumeTypeCmd::List { page } => {
                o.list(&c.list::<VolumeTypes>(&page.page(), &VolumeTypeFilter::default()).await?, COLUMNS)
            }
            VolumeTypeCmd::Get { id } => get::<VolumeTypes>(c, o, id).await,
            VolumeTypeCmd::Create { name, backend, unencrypted, wipe, iops, bps, price_dimension, description } => {
                let body = VolumeTypeCreate {
                    name: name.clone(),
                    description: description.clone(),
                    backend: *backend,
                    encrypted: Some(!unencrypted),
                    wipe: wipe
                        .as_deref()
                        .map(|w| if w == "crypto" { WipeMethod::Crypto } else { WipeMethod::Overwrite }),
                    qos: VolumeQos { iops_total: *iops, bps_total: *bps, ..VolumeQos::default() },
                    price_dimension: price_dimension.clone(),
                };
                create::<VolumeTypes>(c, o, &body).await
            }
            VolumeTypeCmd::Update { id, iops, bps, unlimited, description } => {
                let qos = (iops.is_some() || bps.is_some() || *unlimited).then(|| VolumeQos {
                    iops_total: *iops,
                    bps_total: *bps,
                    ..VolumeQos::default()
                });
                let body = VolumeTypeUpdate { description: description.clone(), qos };
                let id = resolve::<VolumeTypes>(c, id).await?;
                o.object(&c.update::<VolumeTypes>(&id, None, &body).await?)
            }
            VolumeTypeCmd::Delete { id } => delete::<VolumeTypes>(c, id, None).await,
        }
    }
}

/// Volumes: block devices a project holds apart from any instance.
#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// List them (deleted ones too, with how they were wiped).
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this project's (id or name).
        #[arg(long)]
        project: Option<String>,
        /// Only those in this state (creating, available, in_use, deleting, wiping, deleted, error).
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one (id or name).
    Get {
        id: String,
        /// The project to find the name in.
        #[arg(long)]
        project: Option<String>,
    },
    /// Create one: `creating` until its host has made it, then `available`.
    Create {
        name: String,
        /// Project id or name.
        #[arg(long)]
        project: String,
        /// Size in GiB.
        #[arg(long)]
        size: u32,
        /// Volume type id or name (default: the only one).
        #[arg(long = "type")]
        volume_type: Option<String>,
        /// Fill it from this image's disk (id or name; it must fit in --size).
        #[arg(long)]
        image: Option<String>,
        /// Fill it from this snapshot (id; or name with --from-volume): made on the
        /// snapshot's host, at least the snapshot's size.
        #[arg(long, conflicts_with = "image")]
        snapshot: Option<String>,
        /// The volume (id or name) whose snapshot --snapshot names.
        #[arg(long, requires = "snapshot")]
        from_volume: Option<String>,
        /// Put it on the host of this instance (id or name), where it can be attached.
        #[arg(long)]
        instance: Option<String>,
        /// Put it on this host (id or name; operators).
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
    /// Grow one (detached; volumes only grow): `extending` until its host has grown it.
    Extend {
        id: String,
        /// The new size in GiB.
        #[arg(long)]
        size: u32,
        /// The project to find the name in.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
    /// Attach one to an instance of its project on its host: hot-plugged into a running
    /// q35 guest, or the guest's disk from its next boot when stopped
    /// (`/sys/block/vdX/serial` = the volume's serial).
    Attach {
        id: String,
        /// Instance id or name.
        #[arg(long)]
        instance: String,
        /// The project to find the names in.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
    /// Detach one from its instance (a running guest is asked to release the disk).
    Detach {
        id: String,
        /// The project to find the name in.
        #[arg(long)]
        project: Option<String>,
        /// Operators: stop the instance and detach cold (for a guest that does not let go).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
    /// Revert a detached one to its latest snapshot (what was written since is dropped):
    /// `reverting` until its host has.
    Revert {
        id: String,
        /// The snapshot (id or name): the volume's latest.
        #[arg(long)]
        snapshot: String,
        /// The project to find the name in.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
    /// Delete one (and its snapshots): its key is destroyed at once, then its host wipes
    /// and removes its files.
    Delete {
        id: String,
        /// The project to find the name in.
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
}

/// A volume named by id, or by name (within `project` when given).
async fn volume_id(c: &Client, given: &str, project: Option<&str>) -> Result<String> {
    let project_id = resolve_opt::<Projects>(c, project).await?;
    Ok(resolve_in::<Volumes>(c, given, VolumeFilter { project_id, ..VolumeFilter::default() }).await?)
}

/// Prints the volume an action answered; with `--wait`, first follows it until its host
/// has done its part (`available` or `deleted`), failing on `error` or at the timeout.
async fn settle(c: &Client, o: &Out, v: plinth_client::Doc<Volume>, w: &super::compute::WaitArgs) -> Result<()> {
    if !w.wait {
        return o.object(&v);
    }
    let id = v.id.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(w.timeout);
    loop {
        let now = c.view::<Volumes>(&id).await?;
        match now.state {
            VolumeState::Available | VolumeState::InUse | VolumeState::Deleted => return o.object(&now),
            VolumeState::Error => {
                anyhow::bail!("volume {id} is in error: {}", now.state_reason.as_deref().unwrap_or("no reason given"))
            }
            _ if std::time::Instant::now() >= deadline => {
                anyhow::bail!("volume {id} is still {:?} after {} s", now.state, w.timeout)
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// A snapshot named by id, or by name (of `volume` when given, within `project`).
async fn snapshot_id(c: &Client, given: &str, volume: Option<&str>, project: Option<&str>) -> Result<String> {
    let volume_id = match volume {
        Some(v) => Some(volume_id(c, v, project).await?),
        None => None,
    };
    let project_id = resolve_opt::<Projects>(c, project).await?;
    Ok(resolve_in::<Snapshots>(c, given, VolumeSnapshotFilter { project_id, volume_id, ..Default::default() }).await?)
}

/// Snapshots: point-in-time copies of volumes (a layer of the volume's files on its host).
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// List them (deleted ones too).
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this volume's (id or name).
        #[arg(long)]
        volume: Option<String>,
        /// The project to find the volume's name in, or only this project's.
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one (id, or name with --volume).
    Get {
        id: String,
        #[arg(long)]
        volume: Option<String>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Take one of a volume, detached or attached to a running instance (live):
    /// crash-consistent, `creating` until its host has added the layer, then `available`.
    Create {
        name: String,
        /// The volume (id or name).
        #[arg(long)]
        volume: String,
        /// The project to find the volume's name in.
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Of a volume a running guest has: freeze the guest's filesystems through its
        /// guest agent (qemu-ga) while it is taken (`fs_frozen` if the agent does so in
        /// time, else `crash_consistent` with the reason).
        #[arg(long)]
        fs_freeze: bool,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
    /// Delete one (of a detached volume): its layer is merged into the volume's files and
    /// wiped.
    Delete {
        id: String,
        #[arg(long)]
        volume: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        wait: super::compute::WaitArgs,
    },
}

/// Prints the snapshot an action answered; with `--wait`, first follows it until its host
/// has done its part (`available` or `deleted`), failing on `error` or at the timeout.
async fn settle_snapshot(
    c: &Client,
    o: &Out,
    s: plinth_client::Doc<VolumeSnapshot>,
    w: &super::compute::WaitArgs,
) -> Result<()> {
    if !w.wait {
        return o.object(&s);
    }
    let id = s.id.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(w.timeout);
    loop {
        let now = c.view::<Snapshots>(&id).await?;
        match now.state {
            SnapshotState::Available | SnapshotState::Deleted => return o.object(&now),
            SnapshotState::Error => {
                anyhow::bail!("snapshot {id} is in error: {}", now.state_reason.as_deref().unwrap_or("no reason given"))
            }
            _ if std::time::Instant::now() >= deadline => {
                anyhow::bail!("snapshot {id} is still {} after {} s", now.state.as_str(), w.timeout)
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

impl SnapshotCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "volume_id", "name", "size_gib", "state", "consistency", "created_at"];
        match self {
            SnapshotCmd::List { page, volume, project } => {
                let volume_id = match volume {
                    Some(v) => Some(volume_id(c, v, project.as_deref()).await?),
                    None => None,
                };
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let f = VolumeSnapshotFilter {
                    project_id: project_id.clone(),
                    volume_id: volume_id.clone(),
                    ..Default::default()
                };
                let d = c.list::<Snapshots>(&page.page(), &f).await?;
                none_match("snapshots", &d, &[("volume", volume_id), ("project", project_id)]);
                o.list(&d, COLUMNS)
            }
            SnapshotCmd::Get { id, volume, project } => {
                o.object(&c.view::<Snapshots>(&snapshot_id(c, id, volume.as_deref(), project.as_deref()).await?).await?)
            }
            SnapshotCmd::Create { name, volume, project, description, fs_freeze, wait } => {
                let body = VolumeSnapshotCreate {
                    volume_id: VolumeId(volume_id(c, volume, project.as_deref()).await?),
                    name: name.clone(),
                    description: description.clone(),
                    fs_freeze: *fs_freeze,
                };
                let s = c.create::<Snapshots>(&body).await?;
                settle_snapshot(c, o, s, wait).await
            }
            SnapshotCmd::Delete { id, volume, project, wait } => {
                let id = snapshot_id(c, id, volume.as_deref(), project.as_deref()).await?;
                let s = c.delete::<Snapshots>(&id, None).await?;
                settle_snapshot(c, o, s, wait).await
            }
        }
    }
}

/// Volume attachments: which volume was given to which instance, and where each is.
#[derive(Subcommand, Debug)]
pub enum VolumeAttachmentCmd {
    /// List them (ended ones too).
    List {
        /// Only this volume's (id).
        #[arg(long)]
        volume: Option<String>,
        /// Only this instance's (id or name).
        #[arg(long)]
        instance: Option<String>,
        /// Only in this state (attaching, attached, detaching, error_detaching, detached).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        page: ListArgs,
    },
    /// Show one.
    Get { id: String },
}

impl VolumeAttachmentCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "volume_id", "instance_id", "state", "slot", "serial"];
        match self {
            VolumeAttachmentCmd::List { volume, instance, state, page } => {
                let instance_id = match instance {
                    Some(i) => Some(resolve::<Instances>(c, i).await?),
                    None => None,
                };
                let f = VolumeAttachmentFilter { volume_id: volume.clone(), instance_id, state: state.clone() };
                o.list(&c.list::<VolumeAttachments>(&page.page(), &f).await?, COLUMNS)
            }
            VolumeAttachmentCmd::Get { id } => o.object(&c.view::<VolumeAttachments>(id).await?),
        }
    }
}

/// `plinth instance attach VM --volume V`: the volume (id, or name in the instance's
/// project) attached to the instance, as `plinth volume attach` does it.
pub async fn attach_to(c: &Client, o: &Out, instance: &str, volume: &str, w: &super::compute::WaitArgs) -> Result<()> {
    let inst = c.view::<Instances>(&Instances::lookup(c, instance).await?).await?;
    let id = volume_id(c, volume, Some(inst.project_id.as_str())).await?;
    let a = c.attach_volume(&id, &VolumeAttach { instance_id: inst.id.clone() }).await?;
    follow(c, o, a, w, false).await
}

/// `plinth instance detach VM --volume V`: the volume detached, refused when it is not
/// attached to that instance.
pub async fn detach_from(
    c: &Client,
    o: &Out,
    instance: &str,
    volume: &str,
    force: bool,
    w: &super::compute::WaitArgs,
) -> Result<()> {
    let inst = c.view::<Instances>(&Instances::lookup(c, instance).await?).await?;
    let id = volume_id(c, volume, Some(inst.project_id.as_str())).await?;
    let vol = c.view::<Volumes>(&id).await?;
    if vol.instance_id.as_ref() != Some(&inst.id) {
        anyhow::bail!("volume {} is not attached to instance {}", vol.name, inst.name);
    }
    let a = c.detach_volume(&id, &VolumeDetach { force }).await?;
    follow(c, o, a, w, force).await
}

/// Prints an attachment, or with `--wait` follows it until its host has done its part:
/// `attached` or `detached`; `error_detaching` fails with its reason (unless `forced`:
/// the instance is being stopped, and the detach ends with it).
async fn follow(
    c: &Client,
    o: &Out,
    a: plinth_client::Doc<VolumeAttachment>,
    w: &super::compute::WaitArgs,
    forced: bool,
) -> Result<()> {
    if !w.wait {
        return o.object(&a);
    }
    let id = a.id.to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(w.timeout);
    loop {
        let now = c.view::<VolumeAttachments>(&id).await?;
        match now.state {
            AttachmentState::Attached | AttachmentState::Detached => return o.object(&now),
            AttachmentState::ErrorDetaching if !forced => {
                anyhow::bail!(
                    "attachment {id} is error_detaching: {}",
                    now.detail.as_deref().unwrap_or("no reason given")
                )
            }
            _ if std::time::Instant::now() >= deadline => {
                anyhow::bail!("attachment {id} is still {} after {} s", now.state.as_str(), w.timeout)
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

impl VolumeCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "project_id", "name", "size_gib", "state", "host_id", "serial"];
        match self {
            VolumeCmd::List { page, project, state } => {
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let f =
                    VolumeFilter { project_id: project_id.clone(), state: state.clone(), ..VolumeFilter::default() };
                let d = c.list::<Volumes>(&page.page(), &f).await?;
                none_match("volumes", &d, &[("project", project_id), ("state", state.clone())]);
                o.list(&d, COLUMNS)
            }
            VolumeCmd::Get { id, project } => {
                o.object(&c.view::<Volumes>(&volume_id(c, id, project.as_deref()).await?).await?)
            }
            VolumeCmd::Create {
                name,
                project,
                size,
                volume_type,
                image,
                snapshot,
                from_volume,
                instance,
                host,
                description,
                wait,
            } => {
                let snapshot_id = match snapshot {
                    Some(s) => {
                        Some(VolumeSnapshotId(snapshot_id(c, s, from_volume.as_deref(), Some(project.as_str())).await?))
                    }
                    None => None,
                };
                let body = VolumeCreate {
                    snapshot_id,
                    project_id: ProjectId(resolve::<Projects>(c, project).await?),
                    name: name.clone(),
                    description: description.clone(),
                    volume_type_id: resolve_opt::<VolumeTypes>(c, volume_type.as_deref()).await?.map(VolumeTypeId),
                    size_gib: *size,
                    instance_id: resolve_opt::<Instances>(c, instance.as_deref()).await?.map(InstanceId),
                    host_id: resolve_opt::<Hosts>(c, host.as_deref()).await?.map(HostId),
                    image: image.clone(),
                };
                let v = c.create::<Volumes>(&body).await?;
                settle(c, o, v, wait).await
            }
            VolumeCmd::Extend { id, size, project, wait } => {
                let id = volume_id(c, id, project.as_deref()).await?;
                let v = c.extend_volume(&id, &VolumeExtend { size_gib: *size }).await?;
                settle(c, o, v, wait).await
            }
            VolumeCmd::Attach { id, instance, project, wait } => {
                let id = volume_id(c, id, project.as_deref()).await?;
                let instance_id = InstanceId(resolve::<Instances>(c, instance).await?);
                let a = c.attach_volume(&id, &VolumeAttach { instance_id }).await?;
                follow(c, o, a, wait, false).await
            }
            VolumeCmd::Detach { id, project, force, wait } => {
                let id = volume_id(c, id, project.as_deref()).await?;
                let a = c.detach_volume(&id, &VolumeDetach { force: *force }).await?;
                follow(c, o, a, wait, *force).await
            }
            VolumeCmd::Revert { id, snapshot, project, wait } => {
                let id = volume_id(c, id, project.as_deref()).await?;
                let snapshot_id = VolumeSnapshotId(snapshot_id(c, snapshot, Some(&id), None).await?);
                let v = c.revert_volume(&id, &VolumeRevert { snapshot_id }).await?;
                settle(c, o, v, wait).await
            }
            VolumeCmd::Delete { id, project, wait } => {
                let id = volume_id(c, id, project.as_deref()).await?;
                let v = c.delete::<Volumes>(&id, None).await?;
                settle(c, o, v, wait).await
            }
        }
    }
}
