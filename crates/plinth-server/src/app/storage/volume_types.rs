//! Volume types (operators): the kinds of volume offered, each with its backend,
//! encryption (default on), wipe method, I/O limits and the `disk_gib_seconds` dimension
//! its volumes are priced under. Any caller lists and reads them (a tenant picks one).

use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;
use serde_json::json;

/// List volume types.
pub async fn list(st: &AppState, _caller: &Caller, p: &PageParams, f: VolumeTypeFilter) -> Result<Page<VolumeType>> {
    let pg = Paging::from(p)?;
    let filters: Vec<(&str, String)> = f.name.map(|n| vec![("name", n)]).unwrap_or_default();
    Ok(st.store.list::<VolumeType>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a volume type.
pub async fn get(st: &AppState, _caller: &Caller, id: &str) -> Result<VolumeType> {
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// The I/O limits, each positive when given; a burst needs its seconds and a base rate.
fn check_qos(q: &VolumeQos) -> Result<()> {
    let fields = [
        ("iops_total", q.iops_total),
        ("iops_read", q.iops_read),
        ("iops_write", q.iops_write),
        ("bps_total", q.bps_total),
        ("bps_read", q.bps_read),
        ("bps_write", q.bps_write),
        ("iops_total_max", q.iops_total_max),
        ("bps_total_max", q.bps_total_max),
    ];
    for (name, v) in fields {
        if v == Some(0) {
            return Err(Error::invalid(
                "invalid_value",
                format!("qos.{name}: 0 would stop all I/O; leave it out for no limit"),
            )
            .with_constraint(json!({ "field": format!("qos.{name}"), "rule": "minimum", "min": 1 })));
        }
    }
    for (max, base, name) in
        [(q.iops_total_max, q.iops_total, "iops_total"), (q.bps_total_max, q.bps_total, "bps_total")]
    {
        if let Some(m) = max {
            let Some(b) = base else {
                return Err(Error::invalid("invalid_value", format!("qos.{name}_max: a burst needs qos.{name}"))
                    .with_constraint(json!({ "field": format!("qos.{name}_max"), "rule": "requires", "field2": format!("qos.{name}") })));
            };
            if m < b {
                return Err(Error::invalid("invalid_value", format!("qos.{name}_max: {m} is below qos.{name} ({b})"))
                    .with_constraint(json!({ "field": format!("qos.{name}_max"), "rule": "at least the base rate" })));
            }
        }
    }
    if q.burst_seconds.is_some() != (q.iops_total_max.is_some() || q.bps_total_max.is_some()) {
        return Err(Error::invalid("invalid_value", "qos.burst_seconds: given exactly when a *_max burst is")
            .with_constraint(json!({ "field": "qos.burst_seconds", "rule": "with a burst" })));
    }
    if q.burst_seconds == Some(0) {
        return Err(Error::invalid("invalid_value", "qos.burst_seconds: at least 1")
            .with_constraint(json!({ "field": "qos.burst_seconds", "rule": "minimum", "min": 1 })));
    }
    Ok(())
}

/// Create a volume type.
pub async fn create(st: &AppState, caller: &Caller, b: VolumeTypeCreate) -> Result<VolumeType> {
    caller.require_operator("managing volume types")?;
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let dimension = b.price_dimension.clone().unwrap_or_else(|| b.name.clone());
    validate::dns_label("price_dimension", &dimension)?;
    check_qos(&b.qos)?;
    if b.backend == VolumeBackend::Rbd && st.config.rbd.is_none() {
        return Err(Error::invalid(
            "backend_unavailable",
            "backend: rbd needs a Ceph cluster configured for this deployment (PLINTH_RBD_POOL), and none is \
             (docs/storage.md)",
        )
        .with_constraint(json!({ "field": "backend", "rule": "configured", "available": ["local_qcow2"] })));
    }
    let encrypted = b.encrypted.unwrap_or(true);
    let wipe = b.wipe.unwrap_or(if encrypted { WipeMethod::Crypto } else { WipeMethod::Overwrite });
    if b.backend == VolumeBackend::Rbd && (!encrypted || wipe != WipeMethod::Crypto) {
        return Err(Error::invalid(
            "rbd_needs_encryption",
            "backend: an rbd volume is wiped by destroying its key (rbd rm overwrites nothing), so an rbd type is \
             encrypted, with wipe crypto",
        )
        .with_constraint(json!({ "field": "encrypted", "rule": "true for backend rbd" })));
    }
    if wipe == WipeMethod::Crypto && !encrypted {
        return Err(Error::invalid(
            "wipe_needs_encryption",
            "wipe: crypto erases a volume by destroying its key; an unencrypted type has none (use overwrite)",
        )
        .with_constraint(json!({ "field": "wipe", "rule": "crypto requires encrypted" })));
    }
    let now = Utc::now();
    let vt = VolumeType {
        id: VolumeTypeId::generate(),
        name: b.name,
        description: b.description,
        backend: b.backend,
        encrypted,
        wipe,
        qos: b.qos,
        price_dimension: dimension,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let mut tx = st.store.begin().await?;
    tx.insert(&vt, &[]).await?;
    tx.audit(&caller.audit(), vt.id.as_str(), None, 201).await?;
    tx.commit().await?;
    Ok(vt)
}

/// Change a volume type's description or I/O limits. New limits reach the disks running
/// guests have at once: every instance with a volume of the type attached gets a new spec
/// (its host sets the throttle group's limits live).
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: VolumeTypeUpdate,
) -> Result<VolumeType> {
    caller.require_operator("managing volume types")?;
    if let Some(d) = &b.description {
        validate::text("description", d, 255)?;
    }
    if let Some(q) = &b.qos {
        check_qos(q)?;
    }
    let mut tx = st.store.begin().await?;
    let mut vt: VolumeType = tx.get(&Scope::Platform, id).await?;
    crate::app::network::check_generation(&vt, if_match)?;
    if let Some(d) = b.description {
        vt.description = d;
    }
    let mut pokes = crate::app::lifecycle::Pokes::default();
    if let Some(q) = b.qos.filter(|q| *q != vt.qos) {
        vt.qos = q;
        for vol in tx.list_by::<Volume>(&Scope::Platform, "volume_type_id", vt.id.as_str()).await? {
            let Some(iid) = vol.instance_id.as_ref().filter(|_| vol.state == VolumeState::InUse) else { continue };
            let mut inst: Instance = tx.get(&Scope::Platform, iid.as_str()).await?;
            inst.spec_generation += 1;
            let why = format!("volume {}: its type's I/O limits changed", vol.id);
            let ev = crate::app::lifecycle::event(&inst, "volume_qos", why, None);
            crate::app::lifecycle::save(&mut tx, &mut inst, true, vec![ev], None, &mut pokes).await?;
        }
    }
    tx.save(&mut vt).await?;
    tx.audit(&caller.audit(), vt.id.as_str(), None, 200).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    Ok(vt)
}

/// Delete a volume type (not while any volume, deleted ones included, names it: their
/// records and invoices refer to it).
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("managing volume types")?;
    st.store.delete::<VolumeType>(&Scope::Platform, id, if_match, &caller.audit()).await?;
    Ok(())
}
