//! Volumes: a project's block devices, apart from any instance.
//!
//! - **Create** places the volume on a host's pool (the host of `instance_id`, an
//!   operator's `host_id`, or the available host with the most room; a pool never promises
//!   more GiB than its capacity times `volume_oversubscription`, checked with the host's row
//!   locked), charges `volumes` and `volume_gib`, makes its random key and
//!   stores it sealed ([`crate::secrets::VolumeKek`]); the host makes the file and reports
//!   it `present`: the volume is `available` and its `disk_gib_seconds` interval opens in
//!   that report's transaction.
//! - **Delete** destroys the key in its own transaction (the data left on the device is
//!   ciphertext nobody can open from then on) and tells the host, which reports `wiping`
//!   and then `absent` once it has overwritten what the type's wipe method says and removed
//!   the file: the volume is `deleted`, its interval closes, its quota is released, and the
//!   wipe evidence stays on its record.
//! - **Extend** (detached volumes): the new size is charged, billed (the interval splits)
//!   and promised from the pool at once; `extending` until the host reports the file grown.
//! - The agent asks for a volume's key ([`key_for_host`]) only while its host must open the
//!   volume (making, growing or booting a guest with it), and gets it only for a volume its
//!   host holds.

use crate::app::network::{charge, check_generation, require_write, writable_project};
use crate::app::{AppState, Caller, Error, Paging, Result, reference};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::metering::{self, Want};
use plinth_domain::{quota, validate};
use plinth_store::{LedgerOwner, Tx, Val};
use serde_json::json;
use std::collections::BTreeMap;

/// Largest volume, GiB (16 TiB).
pub const MAX_SIZE_GIB: u32 = 16_384;

/// The 20 characters a guest sees as the volume's serial: the random tail of its id.
pub fn serial_of(id: &VolumeId) -> String {
    let ulid = id.as_str().rsplit('_').next().unwrap_or_default();
    ulid[ulid.len().saturating_sub(20)..].to_string()
}

/// The type a create names, or the only one there is.
async fn type_for(st: &AppState, b: &VolumeCreate) -> Result<VolumeType> {
    if let Some(id) = &b.volume_type_id {
        return st.store.get(&Scope::Platform, id.as_str()).await.map_err(|e| reference(e, "volume_type_id"));
    }
    let types = st.store.list::<VolumeType>(&Scope::Platform, &[], 2, None).await?.items;
    match types.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::conflict("no_volume_type", "no volume type exists: an operator must create one first")
            .with_constraint(json!({ "field": "volume_type_id", "rule": "a volume type exists" }))),
        _ => Err(Error::invalid("volume_type_required", "volume_type_id: there are several volume types; name one")
            .with_constraint(json!({ "field": "volume_type_id", "rule": "required with several types" }))),
    }
}

/// GiB a host's pool can still promise: its capacity (times the oversubscription ratio)
/// less what its volumes (not yet wiped) were promised.
async fn headroom_gib(tx: &mut Tx, st: &AppState, host: &Host) -> Result<Option<i64>> {
    let Some(pool) = &host.inventory.volume_pool else { return Ok(None) };
    let promisable = (pool.capacity_bytes as f64 * st.config.volume_oversubscription) as i64 >> 30;
    Ok(Some(promisable - tx.host_provisioned_gib(host.id.as_str()).await?))
}

/// The host the volume goes to (the caller's choice checked, or the one with most room).
async fn place(
    tx: &mut Tx,
    st: &AppState,
    caller: &Caller,
    b: &VolumeCreate,
    project: &Project,
    snapshot_host: Option<&HostId>,
) -> Result<Host> {
    let size = i64::from(b.size_gib);
    let full = |h: &Host, room: i64| {
        Error::conflict(
            "volume_pool_full",
            format!("host {} ({}) can promise {room} GiB more from its volume pool, not {size}", h.name, h.id),
        )
        .with_constraint(json!({ "field": "size_gib", "rule": "pool headroom", "host_id": h.id, "headroom_gib": room }))
    };
    let chosen: Option<(Host, &str)> = match (&b.host_id, &b.instance_id) {
        _ if snapshot_host.is_some() && (b.host_id.is_some() || b.instance_id.is_some()) => {
            return Err(Error::invalid(
                "conflicting_fields",
                "snapshot_id: a volume filled from a snapshot is made on the snapshot's host; give no host_id or \
                 instance_id",
            )
            .with_constraint(json!({ "field": "snapshot_id", "rule": "not with host_id or instance_id" })));
        }
        (None, None) if snapshot_host.is_some() => {
            let h = snapshot_host.map(HostId::as_str).unwrap_or_default();
            Some((tx.get(&Scope::Platform, h).await?, "snapshot_id"))
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid("conflicting_fields", "host_id and instance_id: give one or neither")
                .with_constraint(json!({ "field": "host_id", "rule": "not with instance_id" })));
        }
        (Some(h), None) => {
            caller.require_operator("placing a volume on a named host")?;
            Some((tx.get(&Scope::Platform, h.as_str()).await.map_err(|e| reference(e, "host_id"))?, "host_id"))
        }
        (None, Some(i)) => {
            let inst: Instance =
                st.store.get(&caller.scope(), i.as_str()).await.map_err(|e| reference(e, "instance_id"))?;
            if inst.project_id != project.id {
                return Err(Error::invalid(
                    "other_project",
                    format!("instance_id: {} is in project {}, not {}", inst.id, inst.project_id, project.id),
                )
                .with_constraint(json!({ "field": "instance_id", "rule": "same project" })));
            }
            let Some(h) = inst.host_id.clone() else {
                return Err(Error::conflict(
                    "instance_not_placed",
                    format!("instance_id: {} is on no host yet", inst.id),
                )
                .with_constraint(json!({ "field": "instance_id", "rule": "placed on a host" })));
            };
            Some((tx.get(&Scope::Platform, h.as_str()).await?, "instance_id"))
        }
        (None, None) => None,
    };
    if let Some((host, field)) = chosen {
        let Some(room) = headroom_gib(tx, st, &host).await? else {
            return Err(Error::conflict(
                "no_volume_pool",
                format!(
                    "{field}: host {} ({}) has no volume pool (its agent runs without --volume-pool)",
                    host.name, host.id
                ),
            )
            .with_constraint(json!({ "field": field, "rule": "host has a volume pool", "host_id": host.id })));
        };
        if room < size {
            return Err(full(&host, room));
        }
        return Ok(host);
    }
    let mut best: Option<(i64, Host)> = None;
    let mut pools = 0;
    for host in tx.list_by::<Host>(&Scope::Platform, "state", "available").await? {
        let Some(room) = headroom_gib(tx, st, &host).await? else { continue };
        pools += 1;
        if best.as_ref().is_none_or(|(r, _)| room > *r) {
            best = Some((room, host));
        }
    }
    match best {
        None => Err(Error::conflict("no_volume_pool", "no available host has a volume pool")
            .with_constraint(json!({ "field": "size_gib", "rule": "an available host with a volume pool" }))),
        Some((room, host)) if room < size => Err(Error::conflict(
            "volume_pool_full",
            format!(
                "no volume pool can promise {size} GiB: the roomiest of {pools} is host {} ({}), with {room} GiB",
                host.name, host.id
            ),
        )
        .with_constraint(
            json!({ "field": "size_gib", "rule": "pool headroom", "headroom_gib": room, "pools": pools }),
        )),
        Some((_, host)) => {
            // Read again through `get` (row-locked on PostgreSQL), so two creates choosing
            // the same pool at once take turns, and the second sees what the first promised.
            let host: Host = tx.get(&Scope::Platform, host.id.as_str()).await?;
            let room = headroom_gib(tx, st, &host).await?.unwrap_or(0);
            if room < size {
                return Err(full(&host, room));
            }
            Ok(host)
        }
    }
}

/// The disk of the image `reference` the project may use, to fill a volume of `size_gib`
/// from: refused when there is no such image, it is not available, it has no disk (a
/// kernel-only image), or its disk is larger than the volume.
async fn image_disk(st: &AppState, project: &Project, reference: &str, size_gib: u32) -> Result<(ImageId, BlobRef)> {
    let image = st.store.image_for_project(&project.id, reference).await?.ok_or_else(|| {
        Error::invalid("image_not_found", format!("image: no image {reference:?} is available to this project"))
            .with_constraint(json!({ "field": "image", "rule": "exists" }))
    })?;
    if image.status != ImageStatus::Available {
        let status = plinth_store::image_status_str(image.status);
        return Err(Error::conflict(
            "image_not_available",
            format!("image {} ({}) is {status}, not available", image.name, image.id),
        )
        .with_constraint(json!({ "field": "image", "rule": "available", "status": status })));
    }
    let disk = crate::app::images::files::boot_source(&image).disk.ok_or_else(|| {
        Error::invalid("image_has_no_disk", format!("image {} has no disk to fill a volume with", image.name))
            .with_constraint(json!({ "field": "image", "rule": "has a disk" }))
    })?;
    let virtual_size =
        image.files.iter().find(|f| f.role == ImageFileRole::Disk).and_then(|f| f.virtual_size_bytes).unwrap_or(0);
    if virtual_size > u64::from(size_gib) << 30 {
        return Err(Error::invalid(
            "image_too_large",
            format!("image {}'s disk is {virtual_size} bytes, more than the volume's {size_gib} GiB", image.name),
        )
        .with_constraint(json!({ "field": "size_gib", "rule": "holds the image", "image_bytes": virtual_size })));
    }
    Ok((image.id, disk))
}

/// The snapshot `id` a volume of type `vt` and `size_gib` in `project` is filled from, and
/// its volume: refused when it is not the project's, not available, larger than the
/// volume, or of a volume on another backend (a copy is made by its source's backend).
async fn snapshot_source(
    st: &AppState,
    caller: &Caller,
    project: &Project,
    id: &VolumeSnapshotId,
    size_gib: u32,
    vt: &VolumeType,
) -> Result<(VolumeSnapshot, Volume)> {
    let snap: VolumeSnapshot =
        st.store.get(&caller.scope(), id.as_str()).await.map_err(|e| reference(e, "snapshot_id"))?;
    if snap.project_id != project.id {
        return Err(Error::invalid(
            "other_project",
            format!("snapshot_id: {} is in project {}, not {}", snap.id, snap.project_id, project.id),
        )
        .with_constraint(json!({ "field": "snapshot_id", "rule": "same project" })));
    }
    let src: Volume = st.store.get(&Scope::Platform, snap.volume_id.as_str()).await?;
    let src_type: VolumeType = st.store.get(&Scope::Platform, src.volume_type_id.as_str()).await?;
    if src_type.backend != vt.backend {
        let (theirs, ours) = (src_type.backend.as_str(), vt.backend.as_str());
        return Err(Error::invalid(
            "other_backend",
            format!(
                "snapshot_id: {} is of a volume on backend {theirs}; volume type {} is on {ours}: a copy is made \
                 by its source's backend, so choose a volume type on {theirs}",
                snap.id, vt.name
            ),
        )
        .with_constraint(
            json!({ "field": "snapshot_id", "rule": "same backend as the volume type", "backend": theirs }),
        ));
    }
    if snap.state != SnapshotState::Available {
        return Err(Error::conflict("snapshot_busy", format!("snapshot_id: {} is {}", snap.id, snap.state.as_str()))
            .with_constraint(json!({ "field": "snapshot_id", "rule": "state", "allowed": ["available"] })));
    }
    if size_gib < snap.size_gib {
        return Err(Error::invalid(
            "invalid_value",
            format!("size_gib: {size_gib} is below snapshot {}'s {} GiB", snap.id, snap.size_gib),
        )
        .with_constraint(
            json!({ "field": "size_gib", "rule": "at least the snapshot's size", "min": snap.size_gib }),
        ));
    }
    Ok((snap, src))
}

/// Create a volume.
pub async fn create(st: &AppState, caller: &Caller, b: VolumeCreate) -> Result<Volume> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    if b.size_gib == 0 || b.size_gib > MAX_SIZE_GIB {
        return Err(Error::invalid("invalid_value", format!("size_gib: {} is outside 1–{MAX_SIZE_GIB}", b.size_gib))
            .with_constraint(json!({ "field": "size_gib", "rule": "range", "min": 1, "max": MAX_SIZE_GIB })));
    }
    let project = writable_project(st, caller, &b.project_id, "creating volumes in this project").await?;
    let vt = type_for(st, &b).await?;
    let shared = super::driver::for_volume(st, &vt)?.shared();
    if shared && b.image.is_some() {
        return Err(Error::invalid(
            "backend_unsupported",
            format!(
                "volume type {}: its volumes are made blank or from a snapshot of one of its volumes (filling from \
                 an image is local only)",
                vt.name
            ),
        )
        .with_constraint(json!({ "field": "volume_type_id", "rule": "local backend for an image" })));
    }
    if b.image.is_some() && b.snapshot_id.is_some() {
        return Err(Error::invalid("conflicting_fields", "image and snapshot_id: a volume is filled from one source")
            .with_constraint(json!({ "field": "snapshot_id", "rule": "not with image" })));
    }
    let source = match &b.image {
        Some(r) => Some(image_disk(st, &project, r, b.size_gib).await?),
        None => None,
    };
    let snapshot = match &b.snapshot_id {
        Some(id) => Some(snapshot_source(st, caller, &project, id, b.size_gib, &vt).await?),
        None => None,
    };
    let kek = match (&st.config.volume_kek, vt.encrypted) {
        (Some(k), true) => Some(k),
        (None, true) => {
            return Err(Error::unavailable(
                "volume_keys_unavailable",
                "this server has no key-encryption key for volume keys, so it cannot make encrypted volumes",
            ));
        }
        (_, false) => None,
    };
    // A copy on a shared backend is a clone of its source, LUKS under the source's key: it
    // gets the same key, sealed under its own id (a local copy is written afresh under a
    // key of its own).
    let cloned_key = match (&snapshot, kek) {
        (Some((_, src)), Some(k)) if shared => {
            let sealed = st.store.volume_key_for_host(src.id.as_str(), None).await?;
            let key = sealed.and_then(|s| k.open(src.id.as_str(), &s)).ok_or_else(|| {
                Error::conflict("volume_deleted", format!("snapshot_id: volume {}'s key is gone", src.id))
                    .with_constraint(json!({ "field": "snapshot_id", "rule": "its volume still has its key" }))
            })?;
            Some(key)
        }
        _ => None,
    };
    let mut tx = st.store.begin().await?;
    // A shared backend's volume is on no host: any host reaches it.
    let host = match shared {
        true => None,
        false => Some(
            place(&mut tx, st, caller, &b, &project, snapshot.as_ref().and_then(|(s, _)| s.host_id.as_ref())).await?,
        ),
    };
    charge(&mut tx, &project.tenant_id, &project.id, quota::VOLUMES, 1).await?;
    charge(&mut tx, &project.tenant_id, &project.id, quota::VOLUME_GIB, i64::from(b.size_gib)).await?;
    let now = Utc::now();
    let id = VolumeId::generate();
    let vol = Volume {
        serial: serial_of(&id),
        id,
        tenant_id: project.tenant_id.clone(),
        project_id: project.id.clone(),
        name: b.name,
        description: b.description,
        volume_type_id: vt.id.clone(),
        size_gib: b.size_gib,
        host_id: host.as_ref().map(|h| h.id.clone()),
        state: VolumeState::Creating,
        state_reason: None,
        encrypted: vt.encrypted,
        wipe: vt.wipe,
        allocated_bytes: None,
        wipe_evidence: None,
        attachment_id: None,
        instance_id: None,
        source_image_id: source.as_ref().map(|(i, _)| i.clone()),
        source_disk: source.map(|(_, d)| d),
        source_snapshot_id: snapshot.map(|(s, _)| s.id),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let key = cloned_key.unwrap_or_else(crate::secrets::volume_key);
    let sealed = kek.map(|k| k.seal(vol.id.as_str(), &key));
    tx.insert(&vol, &[("wrapped_key", Val::Text(sealed))]).await?;
    tx.bump_volume_spec(vol.id.as_str(), host.as_ref().map(|h| h.id.as_str())).await?;
    tx.audit(&caller.audit(), vol.id.as_str(), Some(vol.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    if shared {
        st.tasks.trigger(SHARED_TASK);
    }
    Ok(vol)
}

/// List volumes.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: VolumeFilter) -> Result<Page<Volume>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = Vec::new();
    filters.extend(f.project_id.map(|v| ("project_id", v)));
    filters.extend(f.name.map(|v| ("name", v)));
    filters.extend(f.volume_type_id.map(|v| ("volume_type_id", v)));
    filters.extend(f.host_id.map(|v| ("host_id", v)));
    filters.extend(f.state.map(|v| ("state", v)));
    Ok(st.store.list::<Volume>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a volume.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Volume> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Change a volume's description.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: VolumeUpdate,
) -> Result<Volume> {
    if let Some(d) = &b.description {
        validate::text("description", d, 255)?;
    }
    let current: Volume = st.store.get(&caller.scope(), id).await?;
    require_write(caller, &current.tenant_id, &current.project_id, "changing volumes in this project")?;
    Ok(st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |v: &mut Volume| {
            if let Some(d) = b.description {
                v.description = d;
            }
            Ok(vec![])
        })
        .await?)
}

/// Grow a detached volume: `extending` (billed and charged at the new size from now)
/// until its host has grown the file.
pub async fn extend(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: VolumeExtend,
) -> Result<Volume> {
    let mut tx = st.store.begin().await?;
    let mut vol: Volume = tx.get(&caller.scope(), id).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "resizing volumes in this project")?;
    check_generation(&vol, if_match)?;
    if b.size_gib <= vol.size_gib {
        return Err(Error::invalid(
            "shrink_refused",
            format!(
                "size_gib: {} is not above the volume's {} GiB; volumes only grow (its filesystem may use every block)",
                b.size_gib, vol.size_gib
            ),
        )
        .with_constraint(
            json!({ "field": "size_gib", "rule": "greater than the current size", "current": vol.size_gib }),
        ));
    }
    if b.size_gib > MAX_SIZE_GIB {
        return Err(Error::invalid("invalid_value", format!("size_gib: {} is above {MAX_SIZE_GIB}", b.size_gib))
            .with_constraint(json!({ "field": "size_gib", "rule": "range", "min": 1, "max": MAX_SIZE_GIB })));
    }
    // Attached: grown live when its guest runs (`block_resize`; the guest sees the new
    // size), on the file when it is stopped. Not while a disk comes or goes.
    let attached = match &vol.attachment_id {
        Some(a) if vol.state == VolumeState::InUse => {
            let att: VolumeAttachment = tx.get(&Scope::Platform, a.as_str()).await?;
            (att.state == AttachmentState::Attached).then_some(att)
        }
        _ => None,
    };
    if vol.state != VolumeState::Available && attached.is_none() {
        return Err(Error::conflict(
            "volume_busy",
            format!(
                "volume {} is {}: only an available volume, or one attached (not attaching or detaching), is resized",
                vol.id,
                plinth_store::volume_state_str(vol.state)
            ),
        )
        .with_constraint(json!({ "rule": "state", "allowed": ["available", "in_use"] })));
    }
    let more = i64::from(b.size_gib - vol.size_gib);
    if let Some(h) = &vol.host_id {
        let host: Host = tx.get(&Scope::Platform, h.as_str()).await?;
        let room = headroom_gib(&mut tx, st, &host).await?.unwrap_or(0);
        if room < more {
            return Err(Error::conflict(
                "volume_pool_full",
                format!(
                    "host {} ({}) can promise {room} GiB more from its volume pool, not {more}",
                    host.name, host.id
                ),
            )
            .with_constraint(
                json!({ "field": "size_gib", "rule": "pool headroom", "host_id": host.id, "headroom_gib": room }),
            ));
        }
    }
    charge(&mut tx, &vol.tenant_id, &vol.project_id, quota::VOLUME_GIB, more).await?;
    vol.size_gib = b.size_gib;
    vol.state = VolumeState::Extending;
    vol.state_reason = None;
    meter(&mut tx, &vol, "volume.extend").await?;
    tx.save(&mut vol).await?;
    tx.bump_volume_spec(vol.id.as_str(), vol.host_id.as_ref().map(HostId::as_str)).await?;
    let mut pokes = crate::app::lifecycle::Pokes::default();
    if let Some(att) = attached {
        // Its instance's spec carries the new size: a running guest's disk grows live.
        let mut inst: Instance = tx.get(&Scope::Platform, att.instance_id.as_str()).await?;
        inst.spec_generation += 1;
        let why = format!("volume {} grows to {} GiB", vol.id, vol.size_gib);
        let ev = crate::app::lifecycle::event(&inst, "volume_extend", why, None);
        crate::app::lifecycle::save(&mut tx, &mut inst, true, vec![ev], None, &mut pokes).await?;
    }
    tx.audit(&caller.audit(), vol.id.as_str(), Some(vol.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    if vol.host_id.is_none() {
        st.tasks.trigger(SHARED_TASK);
    }
    Ok(vol)
}

/// Delete a volume: its key destroyed now, its file wiped and removed by its host.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<Volume> {
    let mut tx = st.store.begin().await?;
    let mut vol: Volume = tx.get(&caller.scope(), id).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "deleting volumes in this project")?;
    check_generation(&vol, if_match)?;
    match vol.state {
        VolumeState::Creating | VolumeState::Available | VolumeState::Error => {}
        VolumeState::InUse | VolumeState::Extending | VolumeState::Reverting => {
            return Err(Error::conflict(
                "volume_busy",
                format!(
                    "volume {} is {}: detach it (or let it finish) first",
                    vol.id,
                    plinth_store::volume_state_str(vol.state)
                ),
            )
            .with_constraint(json!({ "rule": "state", "allowed": ["creating", "available", "error"] })));
        }
        VolumeState::Deleting | VolumeState::Wiping | VolumeState::Deleted => {
            return Err(Error::conflict(
                "volume_deleted",
                format!("volume {} is already being deleted or gone", vol.id),
            )
            .with_constraint(json!({ "rule": "state", "allowed": ["creating", "available", "error"] })));
        }
    }
    mark_deleting(&mut tx, &mut vol).await?;
    tx.audit(&caller.audit(), vol.id.as_str(), Some(vol.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    if vol.host_id.is_none() {
        st.tasks.trigger(SHARED_TASK);
    }
    Ok(vol)
}

/// Starts a volume's delete in `tx`: its key destroyed now (crypto-erase), `deleting`, its
/// host told to wipe and remove it.
pub(crate) async fn mark_deleting(tx: &mut Tx, vol: &mut Volume) -> Result<()> {
    let now = tx.now();
    vol.state = VolumeState::Deleting;
    vol.state_reason = None;
    vol.wipe_evidence = Some(WipeEvidence {
        method: vol.wipe,
        key_destroyed_at: vol.encrypted.then_some(now),
        bytes_overwritten: 0,
        completed_at: None,
    });
    tx.set_volume_key(vol.id.as_str(), None).await?;
    super::snapshots::delete_with_volume(tx, vol).await?;
    tx.save(vol).await?;
    tx.bump_volume_spec(vol.id.as_str(), vol.host_id.as_ref().map(HostId::as_str)).await?;
    Ok(())
}

/// What the host must do with each of its volumes.
pub async fn host_specs(st: &AppState, host: &HostId) -> Result<Vec<VolumeSpec>> {
    let snaps = st.store.host_snapshots(host.as_str()).await?;
    let volumes = st.store.host_volumes(host.as_str()).await?;
    let encrypted: BTreeMap<&VolumeId, bool> = volumes.iter().map(|(v, _)| (&v.id, v.encrypted)).collect();
    let source_chain = |v: &Volume| {
        let id = v.source_snapshot_id.as_ref()?;
        let snap = snaps.iter().find(|s| &s.id == id)?;
        Some(super::snapshots::source_chain(&snaps, snap, encrypted.get(&snap.volume_id).copied().unwrap_or(true)))
    };
    Ok(volumes
        .iter()
        .map(|(v, generation)| VolumeSpec {
            present: !matches!(v.state, VolumeState::Deleting | VolumeState::Wiping | VolumeState::Deleted),
            volume_id: v.id.clone(),
            generation: *generation,
            size_bytes: u64::from(v.size_gib) << 30,
            encrypted: v.encrypted,
            wipe: v.wipe,
            source: v.source_disk.clone(),
            layers: super::snapshots::layers(&snaps, &v.id),
            source_chain: if v.state == VolumeState::Creating { source_chain(v) } else { None },
        })
        .collect())
}

/// A volume's key for the host that holds it, while the host must make or open it.
pub async fn key_for_host(st: &AppState, host: &HostId, id: &str) -> Result<VolumeKey> {
    let not_found = || Error::not_found("volume", id);
    let vol: Volume = st.store.get(&Scope::Platform, id).await.map_err(|_| not_found())?;
    let ours = match &vol.host_id {
        Some(h) => h == host,
        // On a shared backend: the host of an instance it is attached to.
        None => st.store.host_attachments(host.as_str()).await?.iter().any(|(_, v)| v.id == vol.id),
    };
    if !ours {
        return Err(not_found());
    }
    // Available too: its host opens it to add, merge or read a snapshot's layer.
    if !matches!(
        vol.state,
        VolumeState::Creating
            | VolumeState::Available
            | VolumeState::Extending
            | VolumeState::Reverting
            | VolumeState::InUse
    ) {
        return Err(Error::conflict(
            "volume_key_not_needed",
            format!(
                "volume {id} is {}: its host has no use for its key now",
                plinth_store::volume_state_str(vol.state)
            ),
        ));
    }
    let Some(kek) = &st.config.volume_kek else {
        return Err(Error::unavailable(
            "volume_keys_unavailable",
            "this server has no key-encryption key for volume keys",
        ));
    };
    let holder = vol.host_id.as_ref().map(HostId::as_str);
    let sealed = st.store.volume_key_for_host(id, holder).await?.ok_or_else(not_found)?;
    let key =
        kek.open(id, &sealed).ok_or_else(|| Error::internal(format!("volume {id}: its sealed key does not open")))?;
    Ok(VolumeKey { volume_id: vol.id, key })
}

fn owner(v: &Volume) -> LedgerOwner<'_> {
    LedgerOwner {
        tenant_id: v.tenant_id.as_str(),
        project_id: v.project_id.as_str(),
        resource_id: v.id.as_str(),
        resource_kind: "volume",
    }
}

/// Keeps the volume's `disk_gib_seconds` interval open while it exists on its host (from
/// `available` until `deleted`), under its type's price dimension.
async fn meter(tx: &mut Tx, v: &Volume, cause: &str) -> Result<()> {
    let holds = matches!(
        v.state,
        VolumeState::Available
            | VolumeState::InUse
            | VolumeState::Extending
            | VolumeState::Reverting
            | VolumeState::Deleting
            | VolumeState::Wiping
    );
    let want: Vec<Want> = if holds {
        let vt: VolumeType = tx.get(&Scope::Platform, v.volume_type_id.as_str()).await?;
        vec![Want {
            meter: Meter::DiskGibSeconds,
            dimension: vt.price_dimension,
            multiplier: i64::from(v.size_gib),
            attributes: BTreeMap::from([("volume_type_id".to_string(), vt.id.to_string())]),
        }]
    } else {
        Vec::new()
    };
    hold(tx, &owner(v), &want, cause).await
}

/// Brings the open billing intervals of `owner` to `want` from now (a volume's, a
/// snapshot's), in the caller's transaction.
pub(crate) async fn hold(tx: &mut Tx, owner: &LedgerOwner<'_>, want: &[Want], cause: &str) -> Result<()> {
    let at = metering::micros(metering::truncate(tx.now()));
    let open = tx.open_intervals(owner.resource_id).await?;
    let plan = metering::plan(&open, want, at, tx.billing_anchor());
    tx.apply_ledger(owner, &plan, cause).await?;
    Ok(())
}

/// Ends a volume's delete (its storage wiped and gone): `deleted`, with when and how many
/// bytes were overwritten; its quota released.
async fn finish_delete(tx: &mut Tx, vol: &mut Volume, bytes_overwritten: u64) -> Result<()> {
    vol.state = VolumeState::Deleted;
    vol.state_reason = None;
    let now = tx.now();
    if let Some(e) = vol.wipe_evidence.as_mut() {
        e.bytes_overwritten = bytes_overwritten;
        e.completed_at = Some(now);
    }
    charge(tx, &vol.tenant_id, &vol.project_id, quota::VOLUMES, -1).await?;
    charge(tx, &vol.tenant_id, &vol.project_id, quota::VOLUME_GIB, -i64::from(vol.size_gib)).await?;
    Ok(())
}

/// The background task that does a shared backend's work (`reconcilers.rs`).
pub const SHARED_TASK: &str = "shared_volumes";

/// The background task [`SHARED_TASK`]: makes, grows, reverts and removes the volumes of
/// shared backends (no host does: the server calls the backend's driver) that the API
/// left `creating`, `extending`, `reverting` or `deleting`, takes and removes their
/// snapshots left `creating` or `deleting`, and moves them on as a host's report would.
/// A call that fails is tried again at the next run (the volume's `state_reason` says
/// why); "already there" on a create and "not there" on a remove count as done, so a
/// crash between the call and its transaction repeats nothing twice.
pub async fn converge_shared(st: &AppState) -> Result<serde_json::Value> {
    let (mut done, mut failed) = (0, 0);
    for vol in st.store.shared_volumes_pending().await? {
        let vt: VolumeType = st.store.get(&Scope::Platform, vol.volume_type_id.as_str()).await?;
        let Some(driver) = super::driver::for_backend(vt.backend, st.config.rbd.as_ref()) else { continue };
        let (v, state) = (vol.clone(), vol.state);
        // A revert goes back to the volume's latest snapshot (the API allowed no other).
        let to = match state {
            VolumeState::Reverting => {
                let mut tx = st.store.begin().await?;
                let snaps = tx.volume_snapshots(vol.id.as_str()).await?;
                let Some(s) = super::snapshots::latest(&snaps) else { continue };
                s.id.to_string()
            }
            _ => String::new(),
        };
        // A copy: the snapshot it is cloned from (its id names it in the backend) and that
        // snapshot's volume.
        let source = match (&vol.source_snapshot_id, state) {
            (Some(s), VolumeState::Creating) => {
                let src = match st.store.find::<VolumeSnapshot>(&Scope::Platform, s.as_str()).await? {
                    Some(snap) => st.store.find::<Volume>(&Scope::Platform, snap.volume_id.as_str()).await?,
                    None => None,
                };
                let Some(src) = src else {
                    tracing::warn!(volume = %vol.id, snapshot = %s, "shared volume: the snapshot to copy is gone");
                    continue;
                };
                Some((src, s.to_string()))
            }
            _ => None,
        };
        let call = tokio::task::spawn_blocking(move || match state {
            VolumeState::Creating => match &source {
                Some((src, name)) => driver.clone_from(src, name, &v),
                None => driver.create(&v),
            },
            VolumeState::Extending => driver.extend(&v, v.size_gib),
            VolumeState::Reverting => driver.revert(&v, &to),
            _ => driver.delete(&v),
        })
        .await;
        let outcome = settled(call, state == VolumeState::Creating, state == VolumeState::Deleting);
        let mut tx = st.store.begin().await?;
        let Some(mut now) = tx.find::<Volume>(&Scope::Platform, vol.id.as_str()).await? else { continue };
        if now.state != state || now.size_gib != vol.size_gib {
            continue; // moved on meanwhile; the next run sees where it is
        }
        match outcome {
            Err(e) => {
                tracing::warn!(volume = %vol.id, error = %e, "shared volume backend");
                failed += 1;
                now.state_reason = Some("the volume backend failed; it is tried again".into());
                tx.save_quiet(&now).await?;
            }
            Ok(()) => {
                done += 1;
                match state {
                    VolumeState::Creating | VolumeState::Reverting => now.state = VolumeState::Available,
                    VolumeState::Extending => {
                        now.state =
                            if now.attachment_id.is_some() { VolumeState::InUse } else { VolumeState::Available }
                    }
                    _ => finish_delete(&mut tx, &mut now, 0).await?,
                }
                now.state_reason = None;
                meter(&mut tx, &now, &format!("volume.{}", plinth_store::volume_state_str(now.state))).await?;
                tx.save(&mut now).await?;
            }
        }
        tx.commit().await?;
    }
    for snap in st.store.shared_snapshots_pending().await? {
        let vol: Volume = st.store.get(&Scope::Platform, snap.volume_id.as_str()).await?;
        let vt: VolumeType = st.store.get(&Scope::Platform, vol.volume_type_id.as_str()).await?;
        let Some(driver) = super::driver::for_backend(vt.backend, st.config.rbd.as_ref()) else { continue };
        let (v, name, state) = (vol.clone(), snap.id.to_string(), snap.state);
        let taking = state == SnapshotState::Creating;
        let call = tokio::task::spawn_blocking(move || {
            if taking { driver.snapshot(&v, &name) } else { driver.delete_snapshot(&v, &name) }
        })
        .await;
        let outcome = settled(call, taking, !taking);
        let mut tx = st.store.begin().await?;
        let Some(mut now) = tx.find::<VolumeSnapshot>(&Scope::Platform, snap.id.as_str()).await? else { continue };
        if now.state != state {
            continue;
        }
        match outcome {
            Err(e) => {
                tracing::warn!(snapshot = %snap.id, error = %e, "shared volume backend");
                failed += 1;
                now.state_reason = Some("the volume backend failed; it is tried again".into());
                tx.save_quiet(&now).await?;
            }
            Ok(()) => {
                done += 1;
                super::snapshots::settle_shared(&mut tx, &mut now).await?;
            }
        }
        tx.commit().await?;
    }
    Ok(json!({ "done": done, "failed": failed }))
}

/// A driver call's outcome: "already there" when making (`makes`) and "not there" when
/// removing (`removes`) count as done (a crash after the call repeats it).
fn settled(
    call: std::result::Result<
        std::result::Result<super::driver::Done, super::driver::DriverError>,
        tokio::task::JoinError,
    >,
    makes: bool,
    removes: bool,
) -> std::result::Result<(), String> {
    match call {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(super::driver::DriverError::Backend(e)))
            if (makes && e.contains("exists")) || (removes && e.contains("No such file")) =>
        {
            Ok(())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Applies the host's reports of its volumes (in the caller's transaction). A report
/// about a volume not on this host, or of another spec generation, changes nothing.
pub async fn record_reports(tx: &mut Tx, host: &HostId, reports: &[ObservedVolume]) -> Result<u32> {
    let mut applied = 0;
    for o in reports {
        let Some(mut vol) = tx.find::<Volume>(&Scope::Platform, o.volume_id.as_str()).await? else { continue };
        if vol.host_id.as_ref() != Some(host) || tx.volume_spec_generation(vol.id.as_str()).await? != Some(o.generation)
        {
            continue;
        }
        let before = vol.state;
        let reason = o.detail.clone();
        match (vol.state, o.state) {
            (VolumeState::Creating, ObservedVolumeState::Present) => {
                vol.state = VolumeState::Available;
                vol.state_reason = None;
            }
            (VolumeState::Extending, ObservedVolumeState::Present) => {
                vol.state = if vol.attachment_id.is_some() { VolumeState::InUse } else { VolumeState::Available };
                vol.state_reason = None;
            }
            (VolumeState::Reverting, ObservedVolumeState::Present) => {
                vol.state = VolumeState::Available;
                vol.state_reason = None;
            }
            (VolumeState::Extending | VolumeState::Reverting, ObservedVolumeState::Failed) => {
                // The host retries at its next pass; the record says what failed.
                vol.state_reason = reason;
            }
            (VolumeState::Creating, ObservedVolumeState::Failed) => {
                vol.state = VolumeState::Error;
                vol.state_reason = reason.or_else(|| Some("its host could not make it".into()));
            }
            (VolumeState::Deleting, ObservedVolumeState::Wiping) => vol.state = VolumeState::Wiping,
            (VolumeState::Deleting | VolumeState::Wiping, ObservedVolumeState::Absent) => {
                finish_delete(tx, &mut vol, o.bytes_overwritten.unwrap_or(0)).await?;
                // The host hears at once that it may forget the volume (and its wipe record).
                tx.bump_volume_spec(vol.id.as_str(), Some(host.as_str())).await?;
            }
            (VolumeState::Deleting | VolumeState::Wiping, ObservedVolumeState::Failed) => {
                // The host retries at its next pass; the record says what failed.
                vol.state_reason = reason;
            }
            _ => {}
        }
        let snapshots_moved = super::snapshots::record_report(tx, &vol, o).await?;
        let allocated = o.allocated_bytes.filter(|_| o.state == ObservedVolumeState::Present);
        if !snapshots_moved
            && vol.state == before
            && vol.state_reason == o.detail
            && (allocated.is_none() || allocated == vol.allocated_bytes)
        {
            continue;
        }
        if allocated.is_some() {
            vol.allocated_bytes = allocated;
        }
        if vol.state != before {
            meter(tx, &vol, &format!("volume.{}", plinth_store::volume_state_str(vol.state))).await?;
            tx.save(&mut vol).await?;
        } else {
            tx.save_quiet(&vol).await?;
        }
        applied += 1;
    }
    Ok(applied)
}
