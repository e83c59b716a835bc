//! A NIC's public addresses: its SNAT address (allocated from an IP pool with the pool's
//! row locked, as floating IPs are, and released with the NIC or on `external_access:
//! none`), the floating IPs following it (detached when it goes), and the
//! `address_seconds` intervals both keep open in the ledger, written in the transaction
//! that gives or takes the address: never sampled.

use crate::app::{Error, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::metering::{self, Want};
use plinth_domain::network::cidr::{addr_text, lowest_free_number, parse_addr};
use plinth_store::{LedgerOwner, Tx};
use serde_json::json;
use std::collections::BTreeMap;

/// The `address_seconds` class of a NIC's SNAT address.
pub const SNAT_CLASS: &str = "snat";
/// The `address_seconds` class of a floating IP.
pub const FLOATING_CLASS: &str = "floating";

/// The lowest free address of `pool` (its row locked by the caller's `tx.get`).
pub(crate) async fn free_address(tx: &mut Tx, pool: &IpPool) -> Result<Option<u32>> {
    let (first, last) = (parse_addr("first", &pool.first)?, parse_addr("last", &pool.last)?);
    let taken = tx.pool_addresses(pool.id.as_str()).await?;
    Ok(lowest_free_number(&taken, i64::from(first), i64::from(last)).map(|a| a as u32))
}

/// An SNAT address for a NIC: the lowest free one of the first pool (by name) that has
/// one, each pool tried locked until commit. `None` when no pool has a free address and
/// `required` is false; refused (naming the pools) when it is true.
pub(crate) async fn allocate_snat(tx: &mut Tx, required: bool, field: &str) -> Result<Option<String>> {
    let mut names = Vec::new();
    for id in tx.ip_pool_ids().await? {
        let pool: IpPool = tx.get(&Scope::Platform, &id).await?;
        if let Some(a) = free_address(tx, &pool).await? {
            return Ok(Some(addr_text(a)));
        }
        names.push(format!("{} ({}, {} addresses)", pool.name, pool.id, pool.size));
    }
    if !required {
        return Ok(None);
    }
    Err(if names.is_empty() {
        Error::conflict("no_ip_pool", format!("{field}: snat needs an IP pool, and none is enrolled"))
            .with_constraint(json!({ "field": field, "rule": "a pool exists" }))
    } else {
        Error::conflict(
            "ip_pool_exhausted",
            format!("{field}: no IP pool has a free address for an SNAT address: {}", names.join(", ")),
        )
        .with_constraint(json!({ "field": field, "rule": "free-address" }))
    })
}

fn owner<'a>(tenant: &'a TenantId, project: &'a ProjectId, id: &'a str, kind: &'a str) -> LedgerOwner<'a> {
    LedgerOwner { tenant_id: tenant.as_str(), project_id: project.as_str(), resource_id: id, resource_kind: kind }
}

fn address_want(class: &str, attributes: BTreeMap<String, String>) -> Want {
    Want { meter: Meter::AddressSeconds, dimension: class.to_string(), multiplier: 1, attributes }
}

/// Brings `resource`'s `address_seconds` intervals to `want` at this transaction's time.
async fn meter(tx: &mut Tx, owner: &LedgerOwner<'_>, want: &[Want], cause: &str) -> Result<()> {
    let at = metering::micros(metering::truncate(tx.now()));
    let open = tx.open_intervals(owner.resource_id).await?;
    let plan = metering::plan(&open, want, at, tx.billing_anchor());
    tx.apply_ledger(owner, &plan, cause).await?;
    Ok(())
}

/// Keeps the NIC's SNAT interval open while it holds an SNAT address (by address):
/// `address` is what it holds after this transaction.
pub(crate) async fn meter_snat(tx: &mut Tx, nic: &NetworkInterface, address: Option<&str>, cause: &str) -> Result<()> {
    let want: Vec<Want> = address
        .into_iter()
        .map(|a| address_want(SNAT_CLASS, BTreeMap::from([("address".to_string(), a.to_string())])))
        .collect();
    meter(tx, &owner(&nic.tenant_id, &nic.project_id, nic.id.as_str(), "network_interface"), &want, cause).await
}

/// Keeps the floating IP's interval open while it is attached (by address and NIC: a
/// move closes one record and opens the next at the same instant).
pub(crate) async fn meter_floating(tx: &mut Tx, f: &FloatingIp, cause: &str) -> Result<()> {
    let attached = matches!(f.state, FloatingIpState::Attaching | FloatingIpState::Attached);
    let want: Vec<Want> = f
        .nic_id
        .iter()
        .filter(|_| attached)
        .map(|n| {
            address_want(
                FLOATING_CLASS,
                BTreeMap::from([("address".to_string(), f.address.clone()), ("nic_id".to_string(), n.to_string())]),
            )
        })
        .collect();
    meter(tx, &owner(&f.tenant_id, &f.project_id, f.id.as_str(), "floating_ip"), &want, cause).await
}

/// In a NIC's delete transaction: its floating IPs are detached (at once: the NIC's data
/// path goes with it) and its SNAT interval closed.
pub(crate) async fn release_nic(tx: &mut Tx, nic: &NetworkInterface) -> Result<()> {
    for mut f in tx.list_by::<FloatingIp>(&Scope::Platform, "nic_id", nic.id.as_str()).await? {
        f.nic_id = None;
        f.state = FloatingIpState::Detached;
        tx.save(&mut f).await?;
        tx.set_floating_barrier(f.id.as_str(), None).await?;
        meter_floating(tx, &f, "network_interface.delete").await?;
    }
    meter_snat(tx, nic, None, "network_interface.delete").await
}

/// What `external_access` makes of a NIC now: `none` releases its SNAT address; `snat`
/// keeps it or allocates one (refused when none is free if `asked`; otherwise the NIC
/// stays `none`). Answers whether its public addresses changed.
pub(crate) async fn set_external_access(
    tx: &mut Tx,
    nic: &mut NetworkInterface,
    want: ExternalAccess,
    asked: bool,
    field: &str,
) -> Result<bool> {
    let before = nic.snat_address.clone();
    match want {
        ExternalAccess::None => {
            nic.external_access = ExternalAccess::None;
            nic.snat_address = None;
        }
        ExternalAccess::Snat if nic.snat_address.is_some() => nic.external_access = ExternalAccess::Snat,
        ExternalAccess::Snat => {
            nic.snat_address = allocate_snat(tx, asked, field).await?;
            nic.external_access = if nic.snat_address.is_some() { ExternalAccess::Snat } else { ExternalAccess::None };
        }
    }
    Ok(before != nic.snat_address)
}
