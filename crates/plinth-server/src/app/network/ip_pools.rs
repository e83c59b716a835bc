//! IP pools (operators): the public IPv4 ranges an operator hands to Plinth, from which
//! floating and SNAT addresses are allocated. Create (no two pools overlap: checked and
//! inserted under one lock), list and get (any caller: a tenant chooses a pool), change the
//! description, delete.

use crate::app::{AppState, Caller, Error, Paging, Result, reference};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::network::Cidr;
use plinth_domain::network::cidr::{addr_text, parse_addr};
use plinth_domain::validate;
use plinth_store::Val;
use serde_json::json;

/// The widest block a pool may name.
const PREFIX_MIN: u8 = 8;

/// List IP pools.
pub async fn list(st: &AppState, _caller: &Caller, p: &PageParams, f: IpPoolFilter) -> Result<Page<IpPool>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.site_id.map(|s| vec![("site_id", s)]).unwrap_or_default();
    filters.extend(f.name.map(|n| ("name", n)));
    Ok(st.store.list::<IpPool>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get an IP pool.
pub async fn get(st: &AppState, _caller: &Caller, id: &str) -> Result<IpPool> {
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// The range `[first, last]` a create asks for, checked against its block.
fn range(b: &IpPoolCreate) -> Result<(Cidr, u32, u32)> {
    let cidr = Cidr::parse("ipv4_cidr", &b.ipv4_cidr)?;
    if cidr.prefix() < PREFIX_MIN {
        return Err(Error::invalid("cidr_out_of_range", format!("ipv4_cidr: {cidr} is wider than /{PREFIX_MIN}"))
            .with_constraint(json!({ "field": "ipv4_cidr", "rule": "prefix-range", "min": PREFIX_MIN, "max": 32 })));
    }
    // The block's host addresses: all but the network and broadcast addresses, except in a
    // /31 or /32, which have none to spare.
    let (lo, hi) = if cidr.prefix() >= 31 { (cidr.first(), cidr.last()) } else { (cidr.first() + 1, cidr.last() - 1) };
    let first = b.first.as_deref().map(|a| parse_addr("first", a)).transpose()?.unwrap_or(lo);
    let last = b.last.as_deref().map(|a| parse_addr("last", a)).transpose()?.unwrap_or(hi);
    for (field, a) in [("first", first), ("last", last)] {
        if !cidr.contains(a) {
            return Err(Error::invalid(
                "address_outside_block",
                format!("{field}: {} is not inside {cidr}", addr_text(a)),
            )
            .with_constraint(json!({ "field": field, "rule": "inside-block", "ipv4_cidr": cidr.to_string() })));
        }
    }
    if first > last {
        return Err(Error::invalid(
            "invalid_range",
            format!("first: {} comes after last: {}", addr_text(first), addr_text(last)),
        )
        .with_constraint(json!({ "field": "first", "rule": "first <= last" })));
    }
    Ok((cidr, first, last))
}

/// Create an IP pool.
pub async fn create(st: &AppState, caller: &Caller, b: IpPoolCreate) -> Result<IpPool> {
    caller.require_operator("managing IP pools")?;
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let (cidr, first, last) = range(&b)?;
    let gateway = b.gateway.as_deref().map(|g| parse_addr("gateway", g)).transpose()?;
    if let Some(g) = gateway {
        if !cidr.contains(g) {
            return Err(Error::invalid(
                "address_outside_block",
                format!("gateway: {} is not inside {cidr}", addr_text(g)),
            )
            .with_constraint(json!({ "field": "gateway", "rule": "inside-block", "ipv4_cidr": cidr.to_string() })));
        }
        if (first..=last).contains(&g) {
            return Err(Error::invalid(
                "gateway_in_range",
                format!(
                    "gateway: {} is inside the range {}-{} it would be handed out from",
                    addr_text(g),
                    addr_text(first),
                    addr_text(last)
                ),
            )
            .with_constraint(json!({ "field": "gateway", "rule": "outside-range" })));
        }
    }
    if let Some(site) = &b.site_id {
        let _: Site = st.store.get(&Scope::Platform, site.as_str()).await.map_err(|e| reference(e, "site_id"))?;
    }
    let mut tx = st.store.begin().await?;
    tx.lock_ip_pools().await?;
    if let Some(o) = tx.ip_pool_overlapping(first, last).await? {
        return Err(Error::conflict(
            "ip_pool_overlap",
            format!(
                "{}-{} overlaps IP pool {} ({}, {}-{})",
                addr_text(first),
                addr_text(last),
                o.name,
                o.id,
                addr_text(o.first),
                addr_text(o.last)
            ),
        )
        .with_constraint(
            json!({ "field": "ipv4_cidr", "rule": "no-overlap", "ip_pool_id": o.id, "ip_pool": o.name }),
        ));
    }
    let now = Utc::now();
    let pool = IpPool {
        id: IpPoolId::generate(),
        site_id: b.site_id,
        name: b.name,
        description: b.description,
        ipv4_cidr: cidr.to_string(),
        first: addr_text(first),
        last: addr_text(last),
        size: last - first + 1,
        gateway: gateway.map(addr_text),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let extra = [("first_addr", Val::Int(Some(i64::from(first)))), ("last_addr", Val::Int(Some(i64::from(last))))];
    tx.insert(&pool, &extra).await?;
    tx.audit(&caller.audit(), pool.id.as_str(), None, 201).await?;
    tx.commit().await?;
    Ok(pool)
}

/// Change an IP pool's description.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    if_match: Option<i64>,
    b: IpPoolUpdate,
) -> Result<IpPool> {
    caller.require_operator("managing IP pools")?;
    if let Some(d) = &b.description {
        validate::text("description", d, 255)?;
    }
    let pool = st
        .store
        .update(&Scope::Platform, id, if_match, &caller.audit(), |p: &mut IpPool| {
            if let Some(d) = b.description {
                p.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(pool)
}

/// Delete an IP pool (not while any of its addresses is allocated).
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("managing IP pools")?;
    let mut tx = st.store.begin().await?;
    let pool: IpPool = tx.get(&Scope::Platform, id).await?;
    super::check_generation(&pool, if_match)?;
    // Its floating IPs, or the NICs holding SNAT addresses of it.
    if !tx.pool_addresses(id).await?.is_empty() {
        let dependent = if tx.list_by::<FloatingIp>(&Scope::Platform, "ip_pool_id", id).await?.is_empty() {
            "nics"
        } else {
            "floating_ips"
        };
        return Err(plinth_store::StoreError::HasDependents { kind: "IP pool", id: id.to_string(), dependent }.into());
    }
    tx.remove::<IpPool>(id).await?;
    tx.audit(&caller.audit(), id, None, 204).await?;
    tx.commit().await?;
    Ok(())
}
