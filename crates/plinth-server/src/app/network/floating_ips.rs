//! Floating IPs: public IPv4 addresses a project holds, each allocated from an IP pool in
//! the create's own transaction (the pool's row locked, the lowest free address of its
//! range taken; unique platform-wide). Create, list, get, change the description, release
//! (not while attached), each counted against the `floating_ips` quota; attach to a NIC
//! of the same project, move to another, detach. An attach, move or detach is one
//! transaction: the FIP's row, the NICs' documents (each lists its floating IPs), their
//! VPCs' hosts told, and the `address_seconds` interval; it is `attaching`/`detaching`
//! until the host of the NIC has applied the network generation that holds the change.

use super::{public, require_write, writable_project};
use crate::app::{AppState, Caller, Error, Paging, Result, reference};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::network::cidr::addr_text;
use plinth_domain::{quota, validate};
use plinth_store::{Tx, Val};
use serde_json::json;

/// The pool a create names, or the only one there is.
async fn pool_for(st: &AppState, b: &FloatingIpCreate) -> Result<IpPool> {
    if let Some(id) = &b.ip_pool_id {
        return st.store.get(&Scope::Platform, id.as_str()).await.map_err(|e| reference(e, "ip_pool_id"));
    }
    let pools = st.store.list::<IpPool>(&Scope::Platform, &[], 2, None).await?.items;
    match pools.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(Error::conflict("no_ip_pool", "no IP pool is enrolled: an operator must create one first")
            .with_constraint(json!({ "field": "ip_pool_id", "rule": "a pool exists" }))),
        _ => Err(Error::invalid("ip_pool_required", "ip_pool_id: there are several IP pools; name one")
            .with_constraint(json!({ "field": "ip_pool_id", "rule": "required with several pools" }))),
    }
}

/// Allocate a floating IP.
pub async fn create(st: &AppState, caller: &Caller, b: FloatingIpCreate) -> Result<FloatingIp> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let project = writable_project(st, caller, &b.project_id, "allocating floating IPs in this project").await?;
    let pool = pool_for(st, &b).await?;
    let mut tx = st.store.begin().await?;
    // Locks the pool: allocations from it run one after another.
    let pool: IpPool = tx.get(&Scope::Platform, pool.id.as_str()).await?;
    let address = public::free_address(&mut tx, &pool).await?.ok_or_else(|| {
        Error::conflict(
            "ip_pool_exhausted",
            format!("IP pool {} ({}) has no free address: all {} are allocated", pool.name, pool.id, pool.size),
        )
        .with_constraint(json!({ "field": "ip_pool_id", "rule": "free-address", "ip_pool_id": pool.id,
            "size": pool.size }))
    })?;
    super::charge(&mut tx, &project.tenant_id, &project.id, quota::FLOATING_IPS, 1).await?;
    let now = Utc::now();
    let fip = FloatingIp {
        id: FloatingIpId::generate(),
        tenant_id: project.tenant_id.clone(),
        project_id: project.id.clone(),
        ip_pool_id: pool.id.clone(),
        name: b.name,
        description: b.description,
        address: addr_text(address),
        nic_id: None,
        state: FloatingIpState::Detached,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    tx.insert(&fip, &[("address", Val::Int(Some(i64::from(address))))]).await?;
    tx.audit(&caller.audit(), fip.id.as_str(), Some(fip.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    Ok(fip)
}

/// List floating IPs.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: FloatingIpFilter) -> Result<Page<FloatingIp>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    filters.extend(f.ip_pool_id.map(|n| ("ip_pool_id", n)));
    filters.extend(f.name.map(|n| ("name", n)));
    filters.extend(f.nic_id.map(|n| ("nic_id", n)));
    let mut page = st.store.list::<FloatingIp>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?;
    fill(st, &mut page.items).await?;
    Ok(page)
}

/// Get a floating IP.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<FloatingIp> {
    view(st, st.store.get(&caller.scope(), id).await?).await
}

async fn view(st: &AppState, f: FloatingIp) -> Result<FloatingIp> {
    let mut one = [f];
    fill(st, &mut one).await?;
    let [f] = one;
    Ok(f)
}

/// Settles `attaching`/`detaching` into `attached`/`detached` where the NIC's host has
/// applied the change (the row keeps the state of the change; what it waits for is
/// compared when read).
async fn fill(st: &AppState, items: &mut [FloatingIp]) -> Result<()> {
    let moving: Vec<&str> = items
        .iter()
        .filter(|f| matches!(f.state, FloatingIpState::Attaching | FloatingIpState::Detaching))
        .map(|f| f.id.as_str())
        .collect();
    let settled = st.store.floating_settled(&moving).await?;
    for f in items.iter_mut().filter(|f| settled.contains(f.id.as_str())) {
        match f.state {
            FloatingIpState::Attaching => f.state = FloatingIpState::Attached,
            FloatingIpState::Detaching => {
                f.state = FloatingIpState::Detached;
                f.nic_id = None;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Takes `f` off its NIC's document (when it is on one) and tells that NIC's hosts.
async fn leave_nic(tx: &mut Tx, f: &FloatingIp) -> Result<Option<(NetworkInterface, Option<String>)>> {
    let Some(nic_id) = f.nic_id.as_ref().filter(|_| attached(f)) else { return Ok(None) };
    let Some(mut nic) = tx.find::<NetworkInterface>(&Scope::Platform, nic_id.as_str()).await? else {
        return Ok(None);
    };
    nic.floating_ips.retain(|x| x.id != f.id);
    tx.save(&mut nic).await?;
    let host = tx.nic_host(nic_id.as_str()).await?;
    super::network_changed(tx, &nic.vpc_id, &[]).await?;
    Ok(Some((nic, host)))
}

fn attached(f: &FloatingIp) -> bool {
    matches!(f.state, FloatingIpState::Attaching | FloatingIpState::Attached)
}

/// What the change waits for: `host` applying its generation after this change (none
/// when the NIC is on no host: nothing to apply).
async fn barrier(tx: &mut Tx, id: &str, host: Option<&str>) -> Result<bool> {
    match host {
        Some(h) => {
            let g = tx.host_desired(h).await?;
            tx.set_floating_barrier(id, Some((h, g))).await?;
            Ok(true)
        }
        None => {
            tx.set_floating_barrier(id, None).await?;
            Ok(false)
        }
    }
}

/// Attach a floating IP to a NIC of its project, or move it there.
pub async fn attach(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: FloatingIpAttach,
) -> Result<FloatingIp> {
    let peek: FloatingIp = st.store.get(&caller.scope(), id).await?;
    require_write(caller, &peek.tenant_id, &peek.project_id, "attaching floating IPs in this project")?;
    let target: NetworkInterface =
        st.store.get(&caller.scope(), b.nic_id.as_str()).await.map_err(|e| reference(e, "nic_id"))?;
    if target.project_id != peek.project_id {
        return Err(Error::invalid(
            "floating_ip_other_project",
            format!(
                "nic_id: network interface {} is in project {}, the floating IP in {}",
                target.id, target.project_id, peek.project_id
            ),
        )
        .with_constraint(json!({ "field": "nic_id", "rule": "same-project", "project_id": peek.project_id })));
    }
    let mut tx = st.store.begin().await?;
    // The order every NIC change takes: VPCs, then NICs; the floating IP last.
    let mut vpcs = vec![target.vpc_id.clone()];
    let old_nic = match peek.nic_id.as_ref().filter(|_| attached(&peek)) {
        Some(n) => tx.find::<NetworkInterface>(&Scope::Platform, n.as_str()).await?,
        None => None,
    };
    vpcs.extend(old_nic.iter().map(|n| n.vpc_id.clone()));
    vpcs.sort();
    vpcs.dedup();
    for v in &vpcs {
        let _vpc: Vpc = tx.get(&Scope::Platform, v.as_str()).await?;
    }
    let mut f: FloatingIp = tx.get(&caller.scope(), id).await?;
    super::check_generation(&f, if_match)?;
    if attached(&f) && f.nic_id.as_ref() == Some(&target.id) {
        tx.commit().await?;
        return view(st, f).await;
    }
    leave_nic(&mut tx, &f).await?;
    let mut nic: NetworkInterface = tx.get(&caller.scope(), target.id.as_str()).await?;
    nic.floating_ips.push(NicFloatingIp { id: f.id.clone(), address: f.address.clone() });
    tx.save(&mut nic).await?;
    super::network_changed(&mut tx, &nic.vpc_id, &[]).await?;
    let host = tx.nic_host(nic.id.as_str()).await?;
    f.nic_id = Some(nic.id.clone());
    f.state = if barrier(&mut tx, id, host.as_deref()).await? {
        FloatingIpState::Attaching
    } else {
        FloatingIpState::Attached
    };
    tx.save(&mut f).await?;
    public::meter_floating(&mut tx, &f, "floating_ip.attach").await?;
    tx.audit(&caller.audit(), id, Some(f.tenant_id.as_str()), 200).await?;
    tx.commit().await?;
    view(st, f).await
}

/// Detach a floating IP from its NIC.
pub async fn detach(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<FloatingIp> {
    let peek: FloatingIp = st.store.get(&caller.scope(), id).await?;
    require_write(caller, &peek.tenant_id, &peek.project_id, "detaching floating IPs in this project")?;
    let mut tx = st.store.begin().await?;
    if let Some(n) = peek.nic_id.as_ref().filter(|_| attached(&peek))
        && let Some(nic) = tx.find::<NetworkInterface>(&Scope::Platform, n.as_str()).await?
    {
        let _vpc: Vpc = tx.get(&Scope::Platform, nic.vpc_id.as_str()).await?;
    }
    let mut f: FloatingIp = tx.get(&caller.scope(), id).await?;
    super::check_generation(&f, if_match)?;
    if !attached(&f) {
        tx.commit().await?;
        return view(st, f).await;
    }
    let left = leave_nic(&mut tx, &f).await?;
    let host = left.and_then(|(_, h)| h);
    if !barrier(&mut tx, id, host.as_deref()).await? {
        f.nic_id = None;
        f.state = FloatingIpState::Detached;
    } else {
        f.state = FloatingIpState::Detaching;
    }
    tx.save(&mut f).await?;
    public::meter_floating(&mut tx, &f, "floating_ip.detach").await?;
    tx.audit(&caller.audit(), id, Some(f.tenant_id.as_str()), 200).await?;
    tx.commit().await?;
    view(st, f).await
}

/// Change a floating IP's description.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: FloatingIpUpdate,
) -> Result<FloatingIp> {
    if let Some(d) = &b.description {
        validate::text("description", d, 255)?;
    }
    let f: FloatingIp = st.store.get(&caller.scope(), id).await?;
    require_write(caller, &f.tenant_id, &f.project_id, "changing floating IPs in this project")?;
    Ok(st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |f: &mut FloatingIp| {
            if let Some(d) = b.description {
                f.description = d;
            }
            Ok(vec![])
        })
        .await?)
}

/// Release a floating IP (its address goes back to the pool, its count to the quota);
/// refused while attached.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let f: FloatingIp = tx.get(&caller.scope(), id).await?;
    require_write(caller, &f.tenant_id, &f.project_id, "releasing floating IPs in this project")?;
    super::check_generation(&f, if_match)?;
    if let Some(nic) = f.nic_id.as_ref().filter(|_| attached(&f)) {
        return Err(Error::conflict(
            "floating_ip_attached",
            format!("floating IP {} ({}) is attached to network interface {nic}: detach it first", f.name, f.address),
        )
        .with_constraint(json!({ "rule": "detached", "nic_id": nic })));
    }
    tx.remove::<FloatingIp>(id).await?;
    super::charge(&mut tx, &f.tenant_id, &f.project_id, quota::FLOATING_IPS, -1).await?;
    tx.audit(&caller.audit(), id, Some(f.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}
