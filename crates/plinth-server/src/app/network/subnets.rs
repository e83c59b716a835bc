//! Subnets: create (inside the VPC's block, overlapping no sibling, with its own VNI and
//! bridge index), list, get, rename, delete (refused while NICs hold addresses in it);
//! the project's default VPC and subnet, made on first need.

use super::{allocate_vni, network_changed, require_write, vpcs};
use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::network::{self, Cidr, cidr::addr_text, cidr::lowest_free_number};
use plinth_domain::validate;
use plinth_store::{StoreError, Tx, Val};
use serde_json::json;

/// Highest bridge index of a subnet within its VPC.
const MAX_SUBNETS_PER_VPC: i64 = 4095;

/// Fills the figures computed from the block and the NICs (`used`, `capacity`, …).
pub(crate) async fn with_usage(st: &AppState, mut items: Vec<Subnet>) -> Result<Vec<Subnet>> {
    let ids: Vec<&str> = items.iter().map(|s| s.id.as_str()).collect();
    let used = st.store.subnet_usage(&ids).await?;
    for s in &mut items {
        s.used = used.iter().find(|(id, _)| id == s.id.as_str()).map(|(_, n)| *n).unwrap_or(0);
    }
    Ok(items)
}

/// List subnets.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: SubnetFilter) -> Result<Page<Subnet>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    filters.extend(f.vpc_id.map(|n| ("vpc_id", n)));
    filters.extend(f.name.map(|n| ("name", n)));
    let page = st.store.list::<Subnet>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?;
    Ok(Page { items: with_usage(st, page.items).await?, next_cursor: page.next_cursor })
}

/// Get a subnet.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Subnet> {
    let s: Subnet = st.store.get(&caller.scope(), id).await?;
    Ok(with_usage(st, vec![s]).await?.remove(0))
}

/// Writes a new subnet of `vpc` (read in `tx`, so locked) after the block checks, with the
/// MTU of VXLAN over an underlay of `underlay_mtu`.
pub(crate) async fn insert_subnet(
    tx: &mut Tx,
    underlay_mtu: u32,
    vpc: &Vpc,
    name: &str,
    description: &str,
    cidr: &Cidr,
) -> Result<Subnet> {
    let vpc_block = Cidr::parse("ipv4_cidr", &vpc.ipv4_cidr)?;
    if !vpc_block.contains_block(cidr) {
        return Err(Error::invalid(
            "cidr_outside_vpc",
            format!("ipv4_cidr: {cidr} is not inside the VPC's block {vpc_block}"),
        )
        .with_constraint(json!({ "field": "ipv4_cidr", "rule": "inside-vpc", "vpc_cidr": vpc_block.to_string() })));
    }
    let siblings = tx.subnet_blocks(vpc.id.as_str()).await?;
    if let Some(s) = siblings.iter().find(|s| s.first <= cidr.last() && cidr.first() <= s.last) {
        let theirs = format!("{}-{}", addr_text(s.first), addr_text(s.last));
        return Err(Error::conflict(
            "subnet_overlap",
            format!("ipv4_cidr: {cidr} overlaps subnet {} ({}, {theirs}) of the VPC", s.name, s.id),
        )
        .with_constraint(json!({ "field": "ipv4_cidr", "rule": "no-overlap", "subnet_id": s.id, "subnet": s.name })));
    }
    let idx =
        lowest_free_number(&tx.subnet_indexes(vpc.id.as_str()).await?, 1, MAX_SUBNETS_PER_VPC).ok_or_else(|| {
            Error::conflict("too_many_subnets", format!("a VPC holds at most {MAX_SUBNETS_PER_VPC} subnets"))
        })?;
    let id = SubnetId::generate();
    let vni = allocate_vni(tx, id.as_str()).await?;
    let now = Utc::now();
    let s = Subnet {
        id,
        tenant_id: vpc.tenant_id.clone(),
        project_id: vpc.project_id.clone(),
        vpc_id: vpc.id.clone(),
        name: name.to_string(),
        description: description.to_string(),
        ipv4_cidr: cidr.to_string(),
        vni,
        gateway: addr_text(cidr.gateway()),
        reserved: cidr.reserved().into_iter().map(addr_text).collect(),
        capacity: cidr.capacity(),
        used: 0,
        mtu: network::guest_mtu(underlay_mtu),
        dhcp: true,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let extra = [
        ("first_addr", Val::Int(Some(cidr.first() as i64))),
        ("last_addr", Val::Int(Some(cidr.last() as i64))),
        ("idx", Val::Int(Some(idx))),
    ];
    tx.insert(&s, &extra).await?;
    network_changed(tx, &vpc.id, &[]).await?;
    Ok(s)
}

/// Create a subnet.
pub async fn create(st: &AppState, caller: &Caller, b: SubnetCreate) -> Result<Subnet> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let cidr = Cidr::parse_tenant_block("ipv4_cidr", &b.ipv4_cidr)?;
    let mut tx = st.store.begin().await?;
    let vpc: Vpc = tx.get(&caller.scope(), b.vpc_id.as_str()).await?;
    require_write(caller, &vpc.tenant_id, &vpc.project_id, "creating subnets in this project")?;
    let s = insert_subnet(&mut tx, st.config.underlay_mtu, &vpc, &b.name, &b.description, &cidr).await?;
    tx.audit(&caller.audit(), s.id.as_str(), Some(s.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    Ok(s)
}

/// Rename a subnet or change its description.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    b: SubnetUpdate,
    if_match: Option<i64>,
) -> Result<Subnet> {
    if let Some(n) = &b.name {
        validate::dns_label("name", n)?;
    }
    crate::app::opt_text("description", &b.description, 255)?;
    let s: Subnet = st.store.get(&caller.scope(), id).await?;
    require_write(caller, &s.tenant_id, &s.project_id, "changing subnets in this project")?;
    let s = st
        .store
        .update::<Subnet, _>(&caller.scope(), id, if_match, &caller.audit(), |s| {
            if let Some(n) = b.name {
                s.name = n;
            }
            if let Some(d) = b.description {
                s.description = d;
            }
            Ok(vec![])
        })
        .await?;
    Ok(with_usage(st, vec![s]).await?.remove(0))
}

/// Delete a subnet no NIC is in.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let peek: Subnet = tx.peek(&caller.scope(), id).await?;
    require_write(caller, &peek.tenant_id, &peek.project_id, "deleting subnets in this project")?;
    // The VPC first, like every NIC create: one order of locks.
    let _vpc: Vpc = tx.get(&caller.scope(), peek.vpc_id.as_str()).await?;
    let s: Subnet = tx.get(&caller.scope(), id).await?;
    super::check_generation(&s, if_match)?;
    let nics = tx.subnet_nics(id).await?;
    if !nics.is_empty() {
        let names: Vec<String> = nics.iter().map(|n| format!("{} ({})", n.name, n.id)).collect();
        return Err(Error::conflict(
            "subnet_in_use",
            format!(
                "subnet {} still has {} network interface(s): {}; delete them first",
                s.name,
                nics.len(),
                names.join(", ")
            ),
        )
        .with_constraint(json!({ "rule": "no-dependents",
            "network_interfaces": nics.iter().map(|n| json!({ "id": n.id, "name": n.name })).collect::<Vec<_>>() })));
    }
    tx.free_vnis(id).await?;
    tx.remove::<Subnet>(id).await?;
    network_changed(&mut tx, &s.vpc_id, &[]).await?;
    tx.audit(&caller.audit(), id, Some(s.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}

/// The project's default subnet (`default` in its default VPC `172.31.0.0/16`), made with
/// the VPC on first need. Concurrent first needs make one VPC: the second's insert breaks
/// the one-default-per-project index, and it reads the first's.
pub async fn ensure_default_subnet(st: &AppState, caller: &Caller, project: &Project) -> Result<Subnet> {
    // Almost always it exists: read without a transaction.
    let scope = caller.scope();
    let vpcs =
        st.store.list::<Vpc>(&scope, &[("project_id", project.id.to_string())], plinth_api::MAX_LIMIT, None).await?;
    if let Some(v) = vpcs.items.iter().find(|v| v.is_default) {
        let f = [("vpc_id", v.id.to_string()), ("name", network::DEFAULT_NAME.to_string())];
        if let Some(s) = st.store.list::<Subnet>(&scope, &f, 1, None).await?.items.pop() {
            return Ok(s);
        }
    }
    for _ in 0..3 {
        let mut tx = st.store.begin().await?;
        let vpc = match tx.default_vpc(project.id.as_str()).await? {
            Some(v) => v,
            None => {
                let cidr = Cidr::parse("ipv4_cidr", network::DEFAULT_VPC_CIDR)?;
                match vpcs::insert_vpc(
                    &mut tx,
                    project,
                    network::DEFAULT_NAME,
                    "the project's default VPC",
                    &cidr,
                    true,
                )
                .await
                {
                    Ok(v) => {
                        tx.audit(&caller.audit(), v.id.as_str(), Some(v.tenant_id.as_str()), 201).await?;
                        v
                    }
                    Err(e) if e.code == "already_exists" => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let existing = tx.list_by::<Subnet>(&caller.scope(), "vpc_id", vpc.id.as_str()).await?;
        if let Some(s) = existing.into_iter().find(|s| s.name == network::DEFAULT_NAME) {
            drop(tx);
            return Ok(s);
        }
        let cidr = Cidr::parse("ipv4_cidr", network::DEFAULT_SUBNET_CIDR)?;
        let s = insert_subnet(
            &mut tx,
            st.config.underlay_mtu,
            &vpc,
            network::DEFAULT_NAME,
            "the default VPC's default subnet",
            &cidr,
        )
        .await?;
        tx.audit(&caller.audit(), s.id.as_str(), Some(s.tenant_id.as_str()), 201).await?;
        match tx.commit().await {
            Ok(()) => return Ok(s),
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::conflict("default_network_busy", "the project's default network is being made; try again"))
}
