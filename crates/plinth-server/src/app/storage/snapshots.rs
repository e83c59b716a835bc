//! Volume snapshots: each is a layer of its volume's chain of qcow2 files on the volume's
//! host (`docs/storage.md`, "Snapshots"), so taking one is O(1) in the volume's size.
//!
//! - **Create** (`creating` → `available`): of an `available` volume its host adds the
//!   layer to the files; of a volume attached to a running guest, the guest's host adds it
//!   live (`blockdev-snapshot`), and the instance's spec carries it. The snapshot is
//!   crash-consistent (no guest agent freezes the guest's filesystems; the record says
//!   so). It counts against `volume_gib` at its volume's size and is billed as
//!   `disk_gib_seconds` (dimension `snapshot`) from `available` until `deleted`.
//! - **Delete** (`deleting` → `deleted`): the host merges the layer into the one below and
//!   wipes the freed file; of a volume attached to a running guest, live (`block-commit`;
//!   for the latest snapshot the guest's disk then pivots to the layer below).
//! - **Revert** ([`revert`]): a detached volume goes back to its latest snapshot: its
//!   host replaces the top layer with an empty one (the volume is `reverting` meanwhile).
//! - A volume filled from a snapshot gets the chain up to it ([`source_chain`]).
//! - A volume deleted takes its snapshots with it ([`delete_with_volume`]).
//!
//! The host's report of the volume at the spec generation that carried a change settles
//! it ([`record_report`]).

use crate::app::network::{charge, check_generation, require_write};
use crate::app::{AppState, Caller, Error, Paging, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::metering::Want;
use plinth_domain::{quota, validate};
use plinth_store::{LedgerOwner, Tx};
use serde_json::json;
use std::collections::BTreeMap;

/// The price dimension snapshots are billed under.
pub const DIMENSION: &str = "snapshot";

/// The snapshots in a volume's chain (those whose layer its files have or must have),
/// oldest first: `creating` and `available` ones.
pub fn layers(snaps: &[VolumeSnapshot], volume: &VolumeId) -> Vec<VolumeLayer> {
    snaps
        .iter()
        .filter(|s| &s.volume_id == volume && matches!(s.state, SnapshotState::Creating | SnapshotState::Available))
        .map(|s| VolumeLayer {
            snapshot_id: s.id.clone(),
            revision: s.layer_revision,
            fs_freeze: s.fs_freeze && s.instance_id.is_some(),
        })
        .collect()
}

/// The chain a volume filled from `snap` copies: its volume's bottom file and the layers
/// of the snapshots taken before it.
pub fn source_chain(snaps: &[VolumeSnapshot], snap: &VolumeSnapshot, encrypted: bool) -> SourceChain {
    let all = layers(snaps, &snap.volume_id);
    let below = all.iter().position(|l| l.snapshot_id == snap.id).unwrap_or(all.len());
    SourceChain { volume_id: snap.volume_id.clone(), layers: all[..below].to_vec(), encrypted }
}

fn busy(code: &'static str, detail: String, allowed: &[&str]) -> Error {
    Error::conflict(code, detail).with_constraint(json!({ "rule": "state", "allowed": allowed }))
}

/// Refuses while a snapshot of the volume is being taken or deleted, or a volume is being
/// filled from one (its chain must hold still).
async fn chain_settled(tx: &mut Tx, vol: &Volume, snaps: &[VolumeSnapshot]) -> Result<()> {
    if let Some(s) = snaps.iter().find(|s| matches!(s.state, SnapshotState::Creating | SnapshotState::Deleting)) {
        return Err(Error::conflict(
            "snapshot_in_progress",
            format!("snapshot {} of volume {} is {}: wait for it to finish", s.id, vol.id, s.state.as_str()),
        )
        .with_constraint(json!({ "rule": "one snapshot change at a time", "snapshot_id": s.id })));
    }
    let ours: Vec<&VolumeSnapshotId> = snaps.iter().map(|s| &s.id).collect();
    for v in tx.volumes_creating_on(vol.host_id.as_ref().map(HostId::as_str)).await? {
        if v.source_snapshot_id.as_ref().is_some_and(|s| ours.contains(&s)) {
            return Err(Error::conflict(
                "snapshot_in_use",
                format!("volume {} is being filled from a snapshot of volume {}: wait for it", v.id, vol.id),
            )
            .with_constraint(json!({ "rule": "no volume filling from it", "volume_id": v.id })));
        }
    }
    Ok(())
}

/// Where a change to the volume's chain is made: by its host's pool for an `available`
/// volume (`None`), live by the running instance it is attached to (`Some`); refused
/// otherwise (`what`: what is done to the snapshot, for the refusal).
async fn guest_of(tx: &mut Tx, vol: &Volume, what: &str) -> Result<Option<Instance>> {
    let allowed = ["available", "in_use (attached to a running instance)"];
    let (VolumeState::InUse, Some(a), Some(i)) = (vol.state, &vol.attachment_id, &vol.instance_id) else {
        if vol.state == VolumeState::Available {
            return Ok(None);
        }
        let detail = format!("volume {} is {}", vol.id, plinth_store::volume_state_str(vol.state));
        return Err(busy("volume_busy", detail, &allowed));
    };
    let att: VolumeAttachment = tx.get(&Scope::Platform, a.as_str()).await?;
    let inst: Instance = tx.get(&Scope::Platform, i.as_str()).await?;
    let running = inst.power == PowerState::Running && inst.state == InstanceState::Running;
    if att.state != AttachmentState::Attached || !running {
        let detail = format!(
            "volume {} is attached to instance {} ({}), whose disk is {}: a snapshot is {what} with the volume \
             detached, or live while its instance runs",
            vol.id,
            inst.id,
            inst.state.as_str(),
            att.state.as_str()
        );
        return Err(busy("volume_busy", detail, &allowed));
    }
    Ok(Some(inst))
}

/// Take a snapshot of a volume.
pub async fn create(st: &AppState, caller: &Caller, b: VolumeSnapshotCreate) -> Result<VolumeSnapshot> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let mut tx = st.store.begin().await?;
    let vol: Volume = tx.get(&caller.scope(), b.volume_id.as_str()).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "taking snapshots of volumes in this project")?;
    // Detached: its host adds the layer to the files. Attached to a running guest: live.
    // On a shared backend (no host): the server asks the backend (`converge_shared`), the
    // guest running or not.
    let shared = vol.host_id.is_none();
    let live = guest_of(&mut tx, &vol, "taken").await?;
    let snaps = tx.volume_snapshots(vol.id.as_str()).await?;
    chain_settled(&mut tx, &vol, &snaps).await?;
    if snaps.len() >= MAX_PER_VOLUME {
        return Err(Error::conflict(
            "too_many_snapshots",
            format!("volume {} has {} snapshots, the most a volume keeps: delete one first", vol.id, snaps.len()),
        )
        .with_constraint(json!({ "rule": "snapshots per volume", "max": MAX_PER_VOLUME })));
    }
    charge(&mut tx, &vol.tenant_id, &vol.project_id, quota::VOLUME_GIB, i64::from(vol.size_gib)).await?;
    if !shared {
        tx.bump_volume_spec(vol.id.as_str(), vol.host_id.as_ref().map(HostId::as_str)).await?;
    }
    let now = tx.now();
    let not_frozen = match (&live, shared) {
        (None, _) => {
            "not frozen: the volume is not attached to a running guest (its content is what its last guest left)"
        }
        (Some(_), true) => {
            "not frozen: an RBD volume's snapshot is taken by the backend (rbd snap create), not through \
                            the guest"
        }
        (Some(_), false) => "",
    };
    let snap = VolumeSnapshot {
        id: VolumeSnapshotId::generate(),
        tenant_id: vol.tenant_id.clone(),
        project_id: vol.project_id.clone(),
        volume_id: vol.id.clone(),
        name: b.name,
        description: b.description,
        size_gib: vol.size_gib,
        host_id: vol.host_id.clone(),
        state: SnapshotState::Creating,
        state_reason: None,
        consistency: SnapshotConsistency::CrashConsistent,
        fs_freeze: b.fs_freeze,
        consistency_detail: (b.fs_freeze && !not_frozen.is_empty()).then(|| not_frozen.to_string()),
        instance_id: live.as_ref().map(|i| i.id.clone()),
        layer_revision: 0,
        spec_generation: tx.volume_spec_generation(vol.id.as_str()).await?.unwrap_or(0),
        generation: 1,
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    tx.insert(&snap, &[]).await?;
    let mut pokes = crate::app::lifecycle::Pokes::default();
    if let Some(mut inst) = live.filter(|_| !shared) {
        // Its instance's spec carries the new layer: the guest's host adds it live.
        inst.spec_generation += 1;
        let why = format!("snapshot {} of volume {}", snap.id, vol.id);
        let ev = crate::app::lifecycle::event(&inst, "volume_snapshot", why, None);
        crate::app::lifecycle::save(&mut tx, &mut inst, true, vec![ev], None, &mut pokes).await?;
    }
    tx.audit(&caller.audit(), snap.id.as_str(), Some(snap.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(snap)
}

/// Snapshots a volume keeps at most (each is a layer every read may pass through).
pub const MAX_PER_VOLUME: usize = 32;

/// List snapshots.
pub async fn list(
    st: &AppState,
    caller: &Caller,
    p: &PageParams,
    f: VolumeSnapshotFilter,
) -> Result<Page<VolumeSnapshot>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = Vec::new();
    filters.extend(f.project_id.map(|v| ("project_id", v)));
    filters.extend(f.volume_id.map(|v| ("volume_id", v)));
    filters.extend(f.name.map(|v| ("name", v)));
    filters.extend(f.state.map(|v| ("state", v)));
    Ok(st.store.list::<VolumeSnapshot>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a snapshot.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<VolumeSnapshot> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// Delete a snapshot: its host merges its layer down and wipes it (of a volume attached to
/// a running guest, live, by `block-commit`).
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<VolumeSnapshot> {
    let mut tx = st.store.begin().await?;
    let mut snap: VolumeSnapshot = tx.get(&caller.scope(), id).await?;
    require_write(caller, &snap.tenant_id, &snap.project_id, "deleting snapshots in this project")?;
    check_generation(&snap, if_match)?;
    if !matches!(snap.state, SnapshotState::Available | SnapshotState::Error) {
        return Err(busy(
            "snapshot_busy",
            format!("snapshot {} is {}", snap.id, snap.state.as_str()),
            &["available", "error"],
        ));
    }
    let vol: Volume = tx.get(&Scope::Platform, snap.volume_id.as_str()).await?;
    let mut pokes = crate::app::lifecycle::Pokes::default();
    if snap.state == SnapshotState::Error {
        // Nothing of it was kept: it goes at once.
        set_state(&mut tx, &mut snap, SnapshotState::Deleted, None).await?;
    } else if vol.host_id.is_none() {
        // On a shared backend: the server removes it (`converge_shared`), attached or not,
        // but not under a revert to it.
        let snaps = tx.volume_snapshots(vol.id.as_str()).await?;
        chain_settled(&mut tx, &vol, &snaps).await?;
        if vol.state == VolumeState::Reverting {
            let detail = format!("volume {} is reverting to its latest snapshot: wait for it", vol.id);
            return Err(busy("volume_busy", detail, &["available", "in_use"]));
        }
        set_state(&mut tx, &mut snap, SnapshotState::Deleting, None).await?;
    } else {
        let snaps = tx.volume_snapshots(vol.id.as_str()).await?;
        let live = guest_of(&mut tx, &vol, "merged").await?;
        chain_settled(&mut tx, &vol, &snaps).await?;
        tx.bump_volume_spec(vol.id.as_str(), vol.host_id.as_ref().map(HostId::as_str)).await?;
        snap.spec_generation = tx.volume_spec_generation(vol.id.as_str()).await?.unwrap_or(0);
        set_state(&mut tx, &mut snap, SnapshotState::Deleting, None).await?;
        if let Some(mut inst) = live {
            // Its instance's spec drops the layer: the guest's host merges it live.
            inst.spec_generation += 1;
            let why = format!("snapshot {} of volume {} deleted: its layer merged", snap.id, vol.id);
            let ev = crate::app::lifecycle::event(&inst, "volume_snapshot_delete", why, None);
            crate::app::lifecycle::save(&mut tx, &mut inst, true, vec![ev], None, &mut pokes).await?;
        }
    }
    tx.audit(&caller.audit(), snap.id.as_str(), Some(snap.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(snap)
}

/// Revert a detached volume to its latest snapshot: what was written since is dropped
/// (its host replaces the top layer with an empty one); `reverting` until it has.
pub async fn revert(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: VolumeRevert,
) -> Result<Volume> {
    let mut tx = st.store.begin().await?;
    let mut vol: Volume = tx.get(&caller.scope(), id).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "reverting volumes in this project")?;
    check_generation(&vol, if_match)?;
    if vol.state != VolumeState::Available {
        return Err(busy(
            "volume_busy",
            format!("volume {} is {}: detach it first", vol.id, plinth_store::volume_state_str(vol.state)),
            &["available"],
        ));
    }
    let snaps = tx.volume_snapshots(vol.id.as_str()).await?;
    chain_settled(&mut tx, &vol, &snaps).await?;
    let latest = latest(&snaps);
    let Some(latest) = latest.filter(|s| s.id == b.snapshot_id) else {
        let detail = match latest {
            Some(l) => format!(
                "snapshot {} is not volume {}'s latest ({} is): only the latest is reverted to, or the snapshots \
                 after it would be lost",
                b.snapshot_id, vol.id, l.id
            ),
            None => format!("volume {} has no available snapshot", vol.id),
        };
        return Err(Error::conflict("not_latest_snapshot", detail)
            .with_constraint(json!({ "field": "snapshot_id", "rule": "the volume's latest available snapshot",
                "latest": latest.map(|l| &l.id) })));
    };
    // Local: a new revision of the top layer (its host replaces it, empty). On a shared
    // backend: the server rolls the image back (`converge_shared`).
    if vol.host_id.is_some() {
        let mut snap = latest.clone();
        snap.layer_revision += 1;
        tx.bump_volume_spec(vol.id.as_str(), vol.host_id.as_ref().map(HostId::as_str)).await?;
        snap.spec_generation = tx.volume_spec_generation(vol.id.as_str()).await?.unwrap_or(0);
        tx.save(&mut snap).await?;
    }
    vol.state = VolumeState::Reverting;
    vol.state_reason = None;
    tx.save(&mut vol).await?;
    tx.audit(&caller.audit(), vol.id.as_str(), Some(vol.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    Ok(vol)
}

/// Deletes a volume's snapshots with it (in the volume delete's transaction): their
/// layers are its files, which its host wipes with it.
pub(crate) async fn delete_with_volume(tx: &mut Tx, vol: &Volume) -> Result<()> {
    for mut s in tx.volume_snapshots(vol.id.as_str()).await? {
        set_state(tx, &mut s, SnapshotState::Deleted, None).await?;
    }
    Ok(())
}

/// Applies the host's report of a volume (at its current spec generation) to its
/// snapshots: `present` settles every change the generation carries; `failed` fails a
/// snapshot being taken (the host's reason on it).
pub(crate) async fn record_report(tx: &mut Tx, vol: &Volume, o: &ObservedVolume) -> Result<bool> {
    let mut changed = false;
    for mut s in tx.volume_snapshots(vol.id.as_str()).await? {
        if s.spec_generation > o.generation {
            continue;
        }
        let next = match (s.state, o.state) {
            (SnapshotState::Creating, ObservedVolumeState::Present) => SnapshotState::Available,
            (SnapshotState::Deleting, ObservedVolumeState::Present) => SnapshotState::Deleted,
            (SnapshotState::Creating, ObservedVolumeState::Failed) if s.spec_generation == o.generation => {
                SnapshotState::Error
            }
            _ => continue,
        };
        let reason =
            (next == SnapshotState::Error).then(|| o.detail.clone().unwrap_or_else(|| "its host failed".into()));
        if next == SnapshotState::Available && s.fs_freeze && s.instance_id.is_some() {
            let freeze = o.freezes.iter().find(|f| f.snapshot_id == s.id);
            consistency_from(&mut s, freeze);
        }
        set_state(tx, &mut s, next, reason).await?;
        if next == SnapshotState::Error {
            // Out of the chain: the host drops what it made of it.
            tx.bump_volume_spec(vol.id.as_str(), vol.host_id.as_ref().map(HostId::as_str)).await?;
        }
        changed = true;
    }
    Ok(changed)
}

/// A snapshot taken live with a freeze asked: `fs_frozen` only on its host's word that the
/// guest agent froze the filesystems; otherwise crash-consistent, and why.
fn consistency_from(s: &mut VolumeSnapshot, freeze: Option<&ObservedFreeze>) {
    (s.consistency, s.consistency_detail) = match freeze {
        Some(f) if f.frozen => (
            SnapshotConsistency::FsFrozen,
            Some(format!("the guest agent froze {} filesystem(s)", f.filesystems.unwrap_or(0))),
        ),
        Some(f) => (
            SnapshotConsistency::CrashConsistent,
            Some(format!("not frozen: {}", f.detail.as_deref().unwrap_or("the guest agent did not freeze"))),
        ),
        None => (
            SnapshotConsistency::CrashConsistent,
            Some("not frozen: its host reported no freeze (an agent restarted while taking it?)".to_string()),
        ),
    };
}

/// A shared backend's work on a snapshot done (`converge_shared`): `creating` becomes
/// `available`, `deleting` becomes `deleted`.
pub(crate) async fn settle_shared(tx: &mut Tx, s: &mut VolumeSnapshot) -> Result<()> {
    let next = match s.state {
        SnapshotState::Creating => SnapshotState::Available,
        SnapshotState::Deleting => SnapshotState::Deleted,
        _ => return Ok(()),
    };
    set_state(tx, s, next, None).await
}

/// The latest available snapshot of a volume (what a revert goes back to).
pub(crate) fn latest(snaps: &[VolumeSnapshot]) -> Option<&VolumeSnapshot> {
    snaps.iter().rev().find(|s| s.state == SnapshotState::Available)
}

/// Moves a snapshot to `state`: its quota is released when it ends, and its billing
/// interval follows.
async fn set_state(tx: &mut Tx, s: &mut VolumeSnapshot, state: SnapshotState, reason: Option<String>) -> Result<()> {
    let ends = matches!(state, SnapshotState::Deleted | SnapshotState::Error);
    let held = !matches!(s.state, SnapshotState::Deleted | SnapshotState::Error);
    if ends && held {
        charge(tx, &s.tenant_id, &s.project_id, quota::VOLUME_GIB, -i64::from(s.size_gib)).await?;
    }
    s.state = state;
    s.state_reason = reason;
    if state == SnapshotState::Deleted {
        s.deleted_at = Some(tx.now());
    }
    meter(tx, s).await?;
    tx.save(s).await?;
    Ok(())
}

/// Keeps the snapshot's `disk_gib_seconds` interval (dimension `snapshot`, at its volume's
/// size when taken: Cinder's rule) open from `available` until `deleted`.
async fn meter(tx: &mut Tx, s: &VolumeSnapshot) -> Result<()> {
    let want: Vec<Want> = if matches!(s.state, SnapshotState::Available | SnapshotState::Deleting) {
        vec![Want {
            meter: Meter::DiskGibSeconds,
            dimension: DIMENSION.to_string(),
            multiplier: i64::from(s.size_gib),
            attributes: BTreeMap::from([("volume_id".to_string(), s.volume_id.to_string())]),
        }]
    } else {
        Vec::new()
    };
    let owner = LedgerOwner {
        tenant_id: s.tenant_id.as_str(),
        project_id: s.project_id.as_str(),
        resource_id: s.id.as_str(),
        resource_kind: "snapshot",
    };
    super::volumes::hold(tx, &owner, &want, &format!("snapshot.{}", s.state.as_str())).await
}
