//! Volume attachments: a volume given to an instance as a disk, each its own record.
//!
//! This step attaches and detaches **cold**: the instance must be stopped. An attach
//! records the attachment `attached`, makes the volume `in_use` and publishes a new spec
//! for the instance (its host gives the guest the volume at its next boot, opened with the
//! volume's key over a pipe, on PCIe root port `hp<slot>` on q35); a detach records it
//! `detached` and frees the volume. Hot-plug into a running guest is refused with its
//! reason until it is built. An instance deleted lets go of its volumes
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

/// Refuses unless the instance is stopped (this step attaches and detaches cold only).
fn require_stopped(inst: &Instance, what: &str) -> Result<()> {
    if inst.power == PowerState::Stopped && inst.state == InstanceState::Stopped {
        return Ok(());
    }
    Err(Error::conflict(
        "instance_not_stopped",
        format!(
            "instance {} is {}: volumes are {what} only while it is stopped (hot-plug into a running guest is not \
             built yet); stop it, {what} the volume, start it",
            inst.id,
            inst.state.as_str()
        ),
    )
    .with_constraint(json!({ "field": "instance_id", "rule": "instance stopped", "state": inst.state.as_str() })))
}

/// Attach a volume to a stopped instance of its project, on its host.
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
    if inst.host_id != vol.host_id {
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
    require_stopped(&inst, "attached")?;
    let taken: Vec<u8> = tx
        .list_by::<VolumeAttachment>(&Scope::Platform, "instance_id", inst.id.as_str())
        .await?
        .into_iter()
        .filter(|a| a.state == AttachmentState::Attached)
        .map(|a| a.slot)
        .collect();
    let Some(slot) = (0..SLOTS).find(|s| !taken.contains(s)) else {
        return Err(Error::conflict(
            "no_free_slot",
            format!("instance {} has {SLOTS} volumes attached, as many as it can take", inst.id),
        )
        .with_constraint(json!({ "field": "instance_id", "rule": "free volume slot", "slots": SLOTS })));
    };
    let now = tx.now();
    let att = VolumeAttachment {
        id: VolumeAttachmentId::generate(),
        tenant_id: vol.tenant_id.clone(),
        project_id: vol.project_id.clone(),
        volume_id: vol.id.clone(),
        instance_id: inst.id.clone(),
        host_id: vol.host_id.clone(),
        state: AttachmentState::Attached,
        slot,
        serial: vol.serial.clone(),
        attached_at: now,
        detached_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    tx.insert(&att, &[]).await?;
    vol.state = VolumeState::InUse;
    vol.attachment_id = Some(att.id.clone());
    vol.instance_id = Some(inst.id.clone());
    tx.save(&mut vol).await?;
    let mut pokes = Pokes::default();
    republish(&mut tx, &mut inst, &format!("volume {} attached (slot {slot})", vol.id), &mut pokes).await?;
    tx.audit(&caller.audit(), att.id.as_str(), Some(att.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(att)
}

/// Detach a volume from its (stopped) instance.
pub async fn detach(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<VolumeAttachment> {
    let mut tx = st.store.begin().await?;
    let mut vol: Volume = tx.get(&caller.scope(), id).await?;
    require_write(caller, &vol.tenant_id, &vol.project_id, "detaching volumes in this project")?;
    check_generation(&vol, if_match)?;
    let Some(att_id) = vol.attachment_id.clone().filter(|_| vol.state == VolumeState::InUse) else {
        return Err(Error::conflict("volume_not_attached", format!("volume {} is attached to nothing", vol.id))
            .with_constraint(json!({ "rule": "state", "allowed": ["in_use"] })));
    };
    let mut att: VolumeAttachment = tx.get(&Scope::Platform, att_id.as_str()).await?;
    let mut inst: Instance = tx.get(&Scope::Platform, att.instance_id.as_str()).await?;
    require_stopped(&inst, "detached")?;
    let mut pokes = Pokes::default();
    end(&mut tx, &mut att, &mut vol).await?;
    republish(&mut tx, &mut inst, &format!("volume {} detached", vol.id), &mut pokes).await?;
    tx.audit(&caller.audit(), att.id.as_str(), Some(att.tenant_id.as_str()), 202).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(att)
}

/// Ends an attachment: `detached` now, the volume `available` again.
async fn end(tx: &mut Tx, att: &mut VolumeAttachment, vol: &mut Volume) -> Result<()> {
    att.state = AttachmentState::Detached;
    att.detached_at = Some(tx.now());
    tx.save(att).await?;
    vol.state = VolumeState::Available;
    vol.attachment_id = None;
    vol.instance_id = None;
    tx.save(vol).await?;
    Ok(())
}

/// A new spec for the instance (its volumes changed), with the event saying why.
async fn republish(tx: &mut Tx, inst: &mut Instance, why: &str, pokes: &mut Pokes) -> Result<()> {
    inst.spec_generation += 1;
    let ev = lifecycle::event(inst, "volumes_changed", why.to_string(), None);
    lifecycle::save(tx, inst, true, vec![ev], None, pokes).await?;
    Ok(())
}

/// In an instance's delete: every volume attached to it is detached (the guest is gone).
pub async fn release_instance(tx: &mut Tx, inst: &Instance) -> Result<()> {
    for mut att in tx.list_by::<VolumeAttachment>(&Scope::Platform, "instance_id", inst.id.as_str()).await? {
        if att.state != AttachmentState::Attached {
            continue;
        }
        let mut vol: Volume = tx.get(&Scope::Platform, att.volume_id.as_str()).await?;
        end(tx, &mut att, &mut vol).await?;
    }
    Ok(())
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

/// The attached volumes of each instance on `host`, as the instances' specs carry them.
pub async fn host_specs(
    st: &AppState,
    host: &HostId,
) -> Result<std::collections::BTreeMap<InstanceId, Vec<InstanceVolumeSpec>>> {
    let mut out: std::collections::BTreeMap<InstanceId, Vec<InstanceVolumeSpec>> = Default::default();
    for (a, v) in st.store.host_attachments(host.as_str()).await? {
        out.entry(a.instance_id.clone()).or_default().push(InstanceVolumeSpec {
            attachment_id: a.id,
            volume_id: a.volume_id,
            slot: a.slot,
            serial: a.serial,
            encrypted: v.encrypted,
        });
    }
    Ok(out)
}
