//! Floating IPs: public IPv4 addresses a project holds, each allocated from an IP pool in
//! the create's own transaction (the pool's row locked, the lowest free address of its
//! range taken; unique platform-wide). Create, list, get, change the description, release
//! (not while attached), each counted against the `floating_ips` quota. Attaching to a
//! NIC comes with the VPC router.

use super::{require_write, writable_project};
use crate::app::{AppState, Caller, Error, Paging, Result, reference};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::network::cidr::{addr_text, lowest_free_number, parse_addr};
use plinth_domain::{quota, validate};
use plinth_store::Val;
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
    let (first, last) = (parse_addr("first", &pool.first)?, parse_addr("last", &pool.last)?);
    let taken = tx.pool_addresses(pool.id.as_str()).await?;
    let address = lowest_free_number(&taken, i64::from(first), i64::from(last)).ok_or_else(|| {
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
        address: addr_text(address as u32),
        nic_id: None,
        state: FloatingIpState::Detached,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    tx.insert(&fip, &[("address", Val::Int(Some(address)))]).await?;
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
    Ok(st.store.list::<FloatingIp>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a floating IP.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<FloatingIp> {
    Ok(st.store.get(&caller.scope(), id).await?)
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
    if let Some(nic) = &f.nic_id {
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
