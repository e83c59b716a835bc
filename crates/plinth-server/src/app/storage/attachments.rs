//! Volume attachments: a volume given to an instance as a disk, each its own record.
//!
//! To a **stopped** instance a volume attaches and detaches at once (`attached`,
//! `detached`): its host gives the guest the disk at its next boot, opened with the
//! volume's key over a pipe, on PCIe root port `hp<slot>` on q35. To a **running** q35
//! guest it is hot-plugged: `attaching` until its host reports the disk in the guest, then
//! `attached`; a detach is `detaching` until the guest released it (`DEVICE_DELETED`), then
//! `detached`, or `error_detaching` when the deadline ([`crate::config::ServerConfig`]'s
//! `detach_timeout`) passes first ([`expire_detaches`]). A microVM cannot hot-plug: its
//! volumes attach and detach only while it is stopped. An operator's force-detach stops
//! the instance and detaches cold. An instance deleted lets go of its volumes
//! ([`release_instance`]).

use crate::app::lifecycle::{self, Pokes};
use crate::app::network::{check_generation, require_write};
use crate::app::{AppState, Caller, Error, Paging, Result, reference};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_store::Tx;
use serde_json::json;

/// Volume slots per instance (q35's hot-plug root ports).
pub const SLOTS: u8 = 8;

/// How an attach or detach is carried out on an instance in its current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Stopped: recorded at once; the next boot has (or lacks) the disk.
    Cold,
    /// A running q35 guest: its host hot-plugs (or unplugs) the disk.
    Hot,
}

fn stopped(inst: &Instance) -> bool {
    inst.power == PowerState::Stopped && inst.state == InstanceState::Stopped
}

/// Cold for a stopped instance, hot for a running q35 guest; refused otherwise, with why.
fn mode(inst: &Instance, what: &str) -> Result<Mode> {
    if stopped(inst) {
        return Ok(Mode::Cold);
    }
    let running = inst.power == PowerState::Running && inst.state == InstanceState::Running;
    if running && inst.runtime_class == RuntimeClass::Microvm {
        return Err(Error::conflict(
            "hotplug_unsupported",
            format!(
                "instance {} is a running microVM, and a microVM cannot hot-plug (virtio-mmio has no hot-plug): \
                 stop it, {what} the volume, start it",
                inst.id
            ),
        )
        .with_constraint(json!({ "field": "instance_id", "rule": "hot-plug capable runtime class or stopped",
            "runtime_class": "microvm" })));
    }
    if running {
        return Ok(Mode::Hot);
    }
    Err(Error::conflict(
        "instance_transitioning",
        format!(
            "instance {} is {}: a volume is {what} while the instance is running (hot-plug) or stopped",
            inst.id,
            inst.state.as_str()
        ),
    )
    .with_constraint(
        json!({ "field": "instance_id", "rule": "instance running or stopped", "state": inst.state.as_str() }),
    ))
}

/// Attach a volume to an instance of its project, on its host: at once when the instance
/// is stopped, hot-plugged (`attaching`) when it runs.
pub async fn attach(st: &AppState, caller: &Caller, id: &str, b: VolumeAttach) -> Result<VolumeAttachment> {
    let mut tx = st.store.begin().await?;
    let mut vol: Volume = tx.get(&caller.scope(), id).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "attaching volumes in this project")?;
    let mut inst: Instance =
        tx.get(&caller.scope(), b.instance_id.as_str()).await.map_err(|e| reference(e, "instance_id"))?;
    if inst.project_id != vol.project_id {
        return Err(Error::invalid(
            "other_project",
            format!("instance_id: {} is in project {}, the volume in {}", inst.id, inst.project_id, vol.project_id),
        )
        .with_constraint(json!({ "field": "instance_id", "rule": "same project" })));
    }
    if vol.state != VolumeState::Available {
        return Err(Error::conflict(
            "volume_busy",
            format!(
                "volume {} is {}: only an available volume is attached",
                vol.id,
                plinth_store::volume_state_str(vol.state)
            ),
        )
        .with_constraint(json!({ "rule": "state", "allowed": ["available"] })));
    }
    // A volume on a shared backend (on no host) is reached from any host.
    if vol.host_id.is_some() && inst.host_id != vol.host_id {
        let on = |h: &Option<HostId>| h.as_ref().map_or("no host".to_string(), |h| format!("host {h}"));
        return Err(Error::conflict(
            "volume_on_other_host",
            format!(
                "volume {} is in the pool of {}, instance {} runs on {}: a local volume is attached only on its host \
                 (create the volume with instance_id to put it there)",
                vol.id,
                on(&vol.host_id),
                inst.id,
                on(&inst.host_id)
            ),
        )
        .with_constraint(json!({ "field": "instance_id", "rule": "same host", "volume_host": vol.host_id,
            "instance_host": inst.host_id })));
    }
    let mode = mode(&inst, "attached")?;
    // A slot stays taken until its disk is released (a detaching one included).
    let taken: Vec<u8> = tx
        .list_by::<VolumeAttachment>(&Scope::Platform, "instance_id", inst.id.as_str())
        .await?
        .into_iter()
        .filter(|a| a.state != AttachmentState::Detached)
        .map(|a| a.slot)
        .collect();
    let Some(slot) = (0..SLOTS).find(|s| !taken.contains(s)) else {
        return Err(Error::conflict(
            "no_free_slot",
            format!("instance {} has {SLOTS} volumes attached, as many as it can take", inst.id),
        )
        .with_constraint(json!({ "field": "instance_id", "rule": "free volume slot", "slots": SLOTS })));
    };
    let state = if mode == Mode::Hot { AttachmentState::Attaching } else { AttachmentState::Attached };
    let att = VolumeAttachment { state, ..new_attachment(&vol, &inst, slot, tx.now(), inst.spec_generation + 1) };
    give(&mut tx, &att, &mut vol).await?;
    let mut pokes = Pokes::default();
    let how = if mode == Mode::Hot { "hot-plugging" } else { "attached" };
    republish(&mut tx, &mut inst, "volume_attach", &format!("volume {} {how} (slot {slot})", vol.id), &mut pokes)
        .await?;
    tx.audit(&caller.audit(), att.id.as_str(), Some(att.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(att)
}

/// Detach a volume: at once from a stopped instance; from a running guest, `detaching`
/// until the guest releases the disk. `force` (operators): the instance is stopped and
/// the disk detached cold, for a guest that does not let go.
pub async fn detach(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: VolumeDetach,
) -> Result<VolumeAttachment> {
    if b.force && !caller.principal.is_operator() {
        return Err(Error::forbidden("force-detaching volumes (operators only)"));
    }
    let mut tx = st.store.begin().await?;
    let mut vol: Volume = tx.get(&caller.scope(), id).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "detaching volumes in this project")?;
    check_generation(&vol, if_match)?;
    let Some(att_id) = vol.attachment_id.clone().filter(|_| vol.state == VolumeState::InUse) else {
        return Err(Error::conflict("volume_not_attached", format!("volume {} is attached to nothing", vol.id))
            .with_constraint(json!({ "rule": "state", "allowed": ["in_use"] })));
    };
    let mut att: VolumeAttachment = tx.get(&Scope::Platform, att_id.as_str()).await?;
    if att.boot {
        return Err(Error::conflict(
            "boot_volume",
            format!(
                "volume {} is instance {}'s root disk: it is freed by deleting the instance (created with \
                 keep_boot_volume, it is kept)",
                vol.id, att.instance_id
            ),
        )
        .with_constraint(json!({ "rule": "not a boot volume" })));
    }
    let mut inst: Instance = tx.get(&Scope::Platform, att.instance_id.as_str()).await?;
    let mut pokes = Pokes::default();
    let pending = matches!(att.state, AttachmentState::Detaching | AttachmentState::ErrorDetaching);
    if stopped(&inst) {
        end(&mut tx, &mut att, &mut vol, None).await?;
        republish(&mut tx, &mut inst, "volume_detach", &format!("volume {} detached", vol.id), &mut pokes).await?;
    } else if pending && !b.force {
        return Err(Error::conflict(
            "detach_in_progress",
            format!(
                "volume {} is {} since {}: the guest has not released it yet; an operator's force-detach stops the \
                 instance and detaches it",
                vol.id,
                att.state.as_str(),
                att.detach_requested_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
        )
        .with_constraint(json!({ "rule": "state", "state": att.state.as_str() })));
    } else {
        if !b.force {
            mode(&inst, "detached")?;
        }
        if !pending {
            att.state = AttachmentState::Detaching;
            att.detach_requested_at = Some(tx.now());
            let why = format!("volume {} detaching: the guest is asked to release it", vol.id);
            republish(&mut tx, &mut inst, "volume_detach", &why, &mut pokes).await?;
            att.spec_generation = inst.spec_generation;
        }
        if b.force {
            att.detail = Some("force-detach: the instance is stopped and the disk detached cold".into());
        }
        tx.save(&mut att).await?;
    }
    tx.audit(&caller.audit(), att.id.as_str(), Some(att.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    if b.force && !stopped(&inst) {
        // The guest stops (powered off if it ignores the button); its host's report of it
        // stopped ends the attachment.
        crate::app::instances::stop(st, caller, inst.id.as_str()).await?;
    }
    Ok(att)
}

/// Ends an attachment: `detached` now, the volume `available` again.
async fn end(tx: &mut Tx, att: &mut VolumeAttachment, vol: &mut Volume, detail: Option<String>) -> Result<()> {
    att.state = AttachmentState::Detached;
    att.detached_at = Some(tx.now());
    if detail.is_some() {
        att.detail = detail;
    }
    tx.save(att).await?;
    vol.state = VolumeState::Available;
    vol.attachment_id = None;
    vol.instance_id = None;
    tx.save(vol).await?;
    Ok(())
}

/// A new spec for the instance (its volumes changed), with the event saying why.
async fn republish(tx: &mut Tx, inst: &mut Instance, kind: &str, why: &str, pokes: &mut Pokes) -> Result<()> {
    inst.spec_generation += 1;
    let ev = lifecycle::event(inst, kind, why.to_string(), None);
    lifecycle::save(tx, inst, true, vec![ev], None, pokes).await?;
    Ok(())
}

/// The volumes an instance create names (ids, or names in its project), checked: at most
/// [`SLOTS`], each once, `available`, all in one host's pool. Answers them and that host
/// (where the instance must be placed).
pub async fn plan_for_create(
    st: &AppState,
    caller: &Caller,
    project: &Project,
    refs: &[String],
) -> Result<(Vec<Volume>, Option<HostId>)> {
    if refs.len() > usize::from(SLOTS) + 1 {
        return Err(Error::invalid("too_many", format!("at most {SLOTS} volumes and a boot volume"))
            .with_constraint(json!({ "field": "volumes", "rule": "max", "max": SLOTS })));
    }
    let mut out: Vec<Volume> = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let field = format!("volumes[{i}]");
        let vol = if VolumeId::parse(r).is_some() {
            st.store.get::<Volume>(&caller.scope(), r).await.map_err(|e| reference(e, &field))?
        } else {
            let filters = [("project_id", project.id.to_string()), ("name", r.clone())];
            let page = st.store.list::<Volume>(&caller.scope(), &filters, 10, None).await?;
            page.items.into_iter().find(|v| v.state != VolumeState::Deleted).ok_or_else(|| {
                Error::invalid("invalid_reference", format!("{field}: no volume {r} in project {}", project.id))
                    .with_constraint(json!({ "field": field, "rule": "exists" }))
            })?
        };
        if vol.project_id != project.id {
            return Err(Error::invalid(
                "invalid_reference",
                format!("{field}: volume {} is in another project", vol.id),
            )
            .with_constraint(json!({ "field": field, "rule": "same-project" })));
        }
        if out.iter().any(|v| v.id == vol.id) {
            return Err(Error::invalid("invalid_value", format!("{field}: volume {} is named twice", vol.id))
                .with_constraint(json!({ "field": field, "rule": "unique" })));
        }
        if vol.state != VolumeState::Available {
            return Err(Error::conflict(
                "volume_busy",
                format!(
                    "{field}: volume {} is {}: only an available volume is attached",
                    vol.id,
                    plinth_store::volume_state_str(vol.state)
                ),
            )
            .with_constraint(json!({ "field": field, "rule": "state", "allowed": ["available"] })));
        }
        if let Some(first) = out.iter().find(|v| v.host_id.is_some())
            && vol.host_id.is_some()
            && first.host_id != vol.host_id
        {
            return Err(Error::invalid(
                "volumes_on_different_hosts",
                format!(
                    "{field}: volume {} is in the pool of host {}, volume {} in that of host {}: local volumes of one \
                     instance must share a host",
                    vol.id,
                    vol.host_id.as_ref().map_or("none", |h| h.as_str()),
                    first.id,
                    first.host_id.as_ref().map_or("none", |h| h.as_str())
                ),
            )
            .with_constraint(json!({ "field": "volumes", "rule": "one host" })));
        }
        out.push(vol);
    }
    // Local volumes pin the instance to their host; shared ones do not.
    let host = out.iter().find_map(|v| v.host_id.clone());
    Ok((out, host))
}

/// How a create's boot volume is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootVolume {
    /// No boot volume: every volume is a data disk.
    None,
    /// The first volume is the root disk; `keep`: it outlives the instance.
    First { keep: bool },
}

/// In an instance create's transaction: `vols` (read again: still available, on the
/// instance's host) attached to it from its first boot: the boot volume (when `boot`
/// says the first is one) as its root disk, the others in slot order.
pub async fn attach_at_create(tx: &mut Tx, inst: &Instance, vols: &[Volume], boot: BootVolume) -> Result<()> {
    for (i, v) in vols.iter().enumerate() {
        let is_boot = i == 0 && boot != BootVolume::None;
        let slot = if is_boot { SLOTS } else { (i - usize::from(boot != BootVolume::None)) as u8 };
        let mut vol: Volume = tx.get(&Scope::Platform, v.id.as_str()).await?;
        if vol.state != VolumeState::Available || (vol.host_id.is_some() && vol.host_id != inst.host_id) {
            return Err(Error::conflict("volume_busy", format!("volume {} was taken or moved meanwhile", vol.id))
                .with_constraint(json!({ "field": "volumes", "rule": "state", "allowed": ["available"] })));
        }
        let att = VolumeAttachment {
            boot: is_boot,
            delete_with_instance: is_boot && boot == BootVolume::First { keep: false },
            ..new_attachment(&vol, inst, slot, tx.now(), inst.spec_generation)
        };
        give(tx, &att, &mut vol).await?;
    }
    Ok(())
}

/// A new `attached` attachment of `vol` to `inst` in `slot`, carried by the instance's
/// spec generation `spec_generation`.
fn new_attachment(
    vol: &Volume,
    inst: &Instance,
    slot: u8,
    now: chrono::DateTime<chrono::Utc>,
    spec_generation: i64,
) -> VolumeAttachment {
    VolumeAttachment {
        id: VolumeAttachmentId::generate(),
        tenant_id: vol.tenant_id.clone(),
        project_id: vol.project_id.clone(),
        volume_id: vol.id.clone(),
        instance_id: inst.id.clone(),
        host_id: inst.host_id.clone(),
        state: AttachmentState::Attached,
        slot,
        serial: vol.serial.clone(),
        attached_at: now,
        detach_requested_at: None,
        detached_at: None,
        detail: None,
        boot: false,
        delete_with_instance: false,
        spec_generation,
        generation: 1,
        created_at: now,
        updated_at: now,
    }
}

/// Writes `att` and makes its volume `in_use` by its instance.
async fn give(tx: &mut Tx, att: &VolumeAttachment, vol: &mut Volume) -> Result<()> {
    tx.insert(att, &[]).await?;
    vol.state = VolumeState::InUse;
    vol.attachment_id = Some(att.id.clone());
    vol.instance_id = Some(att.instance_id.clone());
    tx.save(vol).await?;
    Ok(())
}

/// In an instance's delete: every volume attached to it is detached (the guest is gone);
/// a boot volume not kept is deleted (its key destroyed now, its host wipes it).
pub async fn release_instance(tx: &mut Tx, inst: &Instance) -> Result<()> {
    for mut att in tx.list_by::<VolumeAttachment>(&Scope::Platform, "instance_id", inst.id.as_str()).await? {
        if att.state == AttachmentState::Detached {
            continue;
        }
        let mut vol: Volume = tx.get(&Scope::Platform, att.volume_id.as_str()).await?;
        end(tx, &mut att, &mut vol, None).await?;
        if att.delete_with_instance {
            super::volumes::mark_deleting(tx, &mut vol).await?;
        }
    }
    Ok(())
}

/// The local volumes (in a host's pool, not on a shared backend) attached to an instance
/// (attachments not `detached`): they keep it on their host.
pub async fn local_volumes_of(st: &AppState, inst: &InstanceId) -> Result<Vec<VolumeId>> {
    let mut out = Vec::new();
    for a in st.store.list_all::<VolumeAttachment>(&Scope::Platform, &[("instance_id", inst.to_string())]).await? {
        if a.state == AttachmentState::Detached {
            continue;
        }
        let v: Volume = st.store.get(&Scope::Platform, a.volume_id.as_str()).await?;
        if v.host_id.is_some() {
            out.push(v.id);
        }
    }
    Ok(out)
}

/// The boot volume an instance has, if any.
pub async fn boot_volume_of(st: &AppState, inst: &InstanceId) -> Result<Option<VolumeId>> {
    Ok(st
        .store
        .list_all::<VolumeAttachment>(&Scope::Platform, &[("instance_id", inst.to_string())])
        .await?
        .into_iter()
        .find(|a| a.boot && a.state != AttachmentState::Detached)
        .map(|a| a.volume_id))
}

/// Settles the instance's attachments in flight from its host's report `o` (in the
/// caller's transaction): a disk the running guest has ends `attaching`; one it no longer
/// has, or a guest not running, ends `detaching` and `error_detaching` (for a report at or
/// past the spec that asked); a failed hot-plug ends the attachment with its reason.
/// Answers the events to record on the instance.
pub async fn record_plugs(tx: &mut Tx, inst: &Instance, o: &ObservedInstance) -> Result<Vec<InstanceEvent>> {
    let not_running = matches!(
        o.state,
        ObservedState::Stopped | ObservedState::Absent | ObservedState::Failed | ObservedState::Crashed
    );
    if o.volumes.is_none() && !not_running {
        return Ok(Vec::new());
    }
    let plugs = o.volumes.as_deref().unwrap_or_default();
    let mut events = Vec::new();
    for mut att in tx.list_by::<VolumeAttachment>(&Scope::Platform, "instance_id", inst.id.as_str()).await? {
        let plug = plugs.iter().find(|p| p.attachment_id == att.id);
        let current = o.generation >= att.spec_generation;
        match att.state {
            AttachmentState::Attaching => match plug.map(|p| p.state) {
                Some(PlugState::Plugged) => {
                    att.state = AttachmentState::Attached;
                    att.attached_at = tx.now();
                    tx.save(&mut att).await?;
                    events.push(lifecycle::event(
                        inst,
                        "volume_attached",
                        format!("volume {} hot-plugged (slot {}, serial {})", att.volume_id, att.slot, att.serial),
                        None,
                    ));
                }
                Some(PlugState::Failed) if current => {
                    let why = plug.and_then(|p| p.detail.clone()).unwrap_or_else(|| "no detail".into());
                    let mut vol: Volume = tx.get(&Scope::Platform, att.volume_id.as_str()).await?;
                    end(tx, &mut att, &mut vol, Some(format!("hot-plug failed: {why}"))).await?;
                    events.push(lifecycle::event(
                        inst,
                        "volume_attach_failed",
                        format!("volume {}: hot-plug failed: {why}", att.volume_id),
                        None,
                    ));
                }
                // Stopped before the disk was plugged: its next boot has it.
                None if current && not_running => {
                    att.state = AttachmentState::Attached;
                    tx.save(&mut att).await?;
                }
                _ => {}
            },
            AttachmentState::Detaching | AttachmentState::ErrorDetaching if current && plug.is_none() => {
                let mut vol: Volume = tx.get(&Scope::Platform, att.volume_id.as_str()).await?;
                let how = if not_running { "with the guest stopped" } else { "released by the guest" };
                events.push(lifecycle::event(
                    inst,
                    "volume_detached",
                    format!("volume {} detached, {how}", vol.id),
                    None,
                ));
                end(tx, &mut att, &mut vol, None).await?;
            }
            _ => {}
        }
    }
    Ok(events)
}

/// Moves detaches the guest has not completed within `timeout` to `error_detaching`
/// ("the guest did not release the device"); answers how many.
pub async fn expire_detaches(st: &AppState, timeout: std::time::Duration) -> Result<u64, plinth_store::StoreError> {
    let now = chrono::Utc::now();
    let mut n = 0;
    let due: Vec<VolumeAttachment> = st
        .store
        .list_all::<VolumeAttachment>(&Scope::Platform, &[("state", "detaching".into())])
        .await?
        .into_iter()
        .filter(|a| {
            a.detach_requested_at.is_some_and(|t| now - t > chrono::Duration::from_std(timeout).unwrap_or_default())
        })
        .collect();
    for a in due {
        let mut tx = st.store.begin().await?;
        let mut att: VolumeAttachment = tx.get(&Scope::Platform, a.id.as_str()).await?;
        if att.state != AttachmentState::Detaching {
            continue;
        }
        let why = format!(
            "the guest did not release the device within {} s of the detach (device_del sent; no DEVICE_DELETED); \
             it still holds the disk. An operator's force-detach stops the instance and detaches it",
            timeout.as_secs()
        );
        att.state = AttachmentState::ErrorDetaching;
        att.detail = Some(why.clone());
        tx.save(&mut att).await?;
        let mut inst: Instance = tx.get(&Scope::Platform, att.instance_id.as_str()).await?;
        let ev = lifecycle::event(&inst, "volume_detach_stuck", format!("volume {}: {why}", att.volume_id), None);
        let mut pokes = Pokes::default();
        lifecycle::save(&mut tx, &mut inst, false, vec![ev], None, &mut pokes).await?;
        tx.commit().await?;
        pokes.send(&st.signals);
        n += 1;
    }
    Ok(n)
}

/// List attachments.
pub async fn list(
    st: &AppState,
    caller: &Caller,
    p: &PageParams,
    f: VolumeAttachmentFilter,
) -> Result<Page<VolumeAttachment>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = Vec::new();
    filters.extend(f.volume_id.map(|v| ("volume_id", v)));
    filters.extend(f.instance_id.map(|v| ("instance_id", v)));
    filters.extend(f.state.map(|v| ("state", v)));
    Ok(st.store.list::<VolumeAttachment>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get an attachment.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<VolumeAttachment> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// An instance's disks from volumes, as its spec carries them.
#[derive(Clone, Debug, Default)]
pub struct GuestVolumes {
    /// Data disks, in slot order.
    pub volumes: Vec<InstanceVolumeSpec>,
    /// Its root disk, when it boots from a volume.
    pub boot: Option<InstanceVolumeSpec>,
}

/// The attached volumes of each instance on `host`, as the instances' specs carry them.
pub async fn host_specs(st: &AppState, host: &HostId) -> Result<std::collections::BTreeMap<InstanceId, GuestVolumes>> {
    let mut out: std::collections::BTreeMap<InstanceId, GuestVolumes> = Default::default();
    let mut types: std::collections::HashMap<VolumeTypeId, VolumeType> = Default::default();
    let snaps = st.store.host_snapshots(host.as_str()).await?;
    for (a, v) in st.store.host_attachments(host.as_str()).await? {
        let t = match types.get(&v.volume_type_id) {
            Some(t) => t.clone(),
            None => {
                let t: VolumeType = st.store.get(&Scope::Platform, v.volume_type_id.as_str()).await?;
                types.insert(t.id.clone(), t.clone());
                t
            }
        };
        let connection = super::driver::for_backend(t.backend, st.config.rbd.as_ref()).map(|d| d.connection(&v));
        let guest = out.entry(a.instance_id.clone()).or_default();
        let spec = InstanceVolumeSpec {
            attachment_id: a.id,
            volume_id: a.volume_id,
            slot: a.slot,
            serial: a.serial,
            encrypted: v.encrypted,
            size_bytes: u64::from(v.size_gib) << 30,
            qos: t.qos,
            connection,
            layers: super::snapshots::layers(&snaps, &v.id),
        };
        if a.boot {
            guest.boot = Some(spec);
        } else {
            guest.volumes.push(spec);
        }
    }
    Ok(out)
}
