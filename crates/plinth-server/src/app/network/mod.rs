//! Tenant networking use cases: VPCs, subnets, security groups and NICs (with their
//! addresses), the project's default VPC, and NICs plugged into instances. Every change
//! that alters what a host must hold tells the data plane in its own transaction
//! ([`network_changed`]); what each host is then told is `dataplane`'s (the lead's) job.

pub mod floating_ips;
pub mod ip_pools;
pub mod nics;
pub mod public;
pub mod security_groups;
pub mod subnets;
pub mod vpcs;

use crate::app::{Caller, Error, Result};
use plinth_api::*;
use plinth_domain::network::{VNI_MAX, VNI_MIN};
use plinth_store::{StoreError, Tx};
use serde_json::json;

pub use subnets::ensure_default_subnet;

/// The project `id` names, refused unless the caller may write in it.
pub(crate) async fn writable_project(
    st: &crate::app::AppState,
    caller: &Caller,
    id: &ProjectId,
    what: &str,
) -> Result<Project> {
    let project: Project = st.store.get(&caller.scope(), id.as_str()).await?;
    if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
        return Err(Error::forbidden(what));
    }
    Ok(project)
}

/// Refuses unless the caller may write in the object's project.
pub(crate) fn require_write(caller: &Caller, tenant: &TenantId, project: &ProjectId, what: &str) -> Result<()> {
    if caller.principal.can_write_in(tenant, Some(project)) { Ok(()) } else { Err(Error::forbidden(what)) }
}

/// Refuses a change whose `If-Match` names another generation than the object's.
pub(crate) fn check_generation<T: plinth_store::Resource>(obj: &T, if_match: Option<i64>) -> Result<()> {
    match if_match {
        Some(want) if want != obj.generation() => Err(StoreError::GenerationMismatch {
            kind: T::KIND,
            id: obj.id().to_string(),
            expected: want,
            current: obj.generation(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// A free VNI from the platform-wide space, taken for `owner` in `tx`. Random in
/// `VNI_MIN..=VNI_MAX`, retried on a taken one (the space is 16.7 million wide).
pub(crate) async fn allocate_vni(tx: &mut Tx, owner: &str) -> Result<u32> {
    for _ in 0..32 {
        let mut b = [0u8; 4];
        rand::fill(&mut b);
        let vni = VNI_MIN + u32::from_le_bytes(b) % (VNI_MAX - VNI_MIN + 1);
        if !tx.vni_taken(vni).await? {
            tx.claim_vni(vni, owner).await?;
            return Ok(vni);
        }
    }
    Err(Error::conflict("vni_exhausted", "no free VXLAN network identifier was found; try again"))
}

/// Counts `n` (±) of a networking quota resource against the project and its tenant.
pub(crate) async fn charge(tx: &mut Tx, tenant: &TenantId, project: &ProjectId, resource: &str, n: i64) -> Result<()> {
    tx.quota_charge(&[tenant.as_str(), project.as_str()], &[(resource.to_string(), n)]).await?;
    Ok(())
}

/// Five random bytes for a MAC.
pub(crate) fn mac_bytes() -> [u8; 5] {
    let mut b = [0u8; 5];
    rand::fill(&mut b);
    b
}

/// Tells the data plane that the VPC's hosts must be told again (and `extra_hosts`, which
/// may have just lost the VPC's last NIC). Runs in the changing transaction.
pub(crate) async fn network_changed(tx: &mut Tx, vpc_id: &VpcId, extra_hosts: &[HostId]) -> Result<()> {
    let extra: Vec<String> = extra_hosts.iter().map(|h| h.0.clone()).collect();
    // The hosts it bumps are woken when the transaction commits.
    tx.network_changed(vpc_id.as_str(), &extra).await?;
    Ok(())
}

/// A group's rules changed: its members' filter generation moves, and only their hosts
/// are told (a NIC outside the group loads nothing of its rules).
pub(crate) async fn rules_changed(tx: &mut Tx, g: &SecurityGroup) -> Result<()> {
    tx.bump_group_firewall(g.vpc_id.as_str(), g.id.as_str()).await?;
    let hosts = tx.group_hosts(g.id.as_str()).await?;
    tx.network_changed_for(g.vpc_id.as_str(), &hosts).await?;
    Ok(())
}

/// The groups `ids` as a NIC of `vpc` may use: each visible and in the same VPC.
pub(crate) async fn groups_of_vpc(
    tx: &mut Tx,
    caller: &Caller,
    vpc: &VpcId,
    ids: &[SecurityGroupId],
    field: &str,
) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::invalid("invalid_value", format!("{field}: give at least one security group"))
            .with_constraint(json!({ "field": field, "rule": "min", "min": 1 })));
    }
    if ids.len() > 16 {
        return Err(Error::invalid("too_many", format!("{field}: at most 16 security groups"))
            .with_constraint(json!({ "field": field, "rule": "max", "max": 16 })));
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(Error::invalid("invalid_value", format!("{field}: {id} is named twice"))
                .with_constraint(json!({ "field": field, "rule": "unique" })));
        }
        let g: SecurityGroup = tx.peek(&caller.scope(), id.as_str()).await.map_err(|e| not_found_ref(e, field))?;
        if &g.vpc_id != vpc {
            return Err(other_vpc(field, id.as_str(), &g.vpc_id, vpc));
        }
    }
    Ok(())
}

/// A group of another VPC named where one of this VPC is needed.
pub(crate) fn other_vpc(field: &str, id: &str, its: &VpcId, want: &VpcId) -> Error {
    Error::invalid(
        "security_group_other_vpc",
        format!("{field}: security group {id} is in VPC {its}, not in {want}; groups apply only within their VPC"),
    )
    .with_constraint(json!({ "field": field, "rule": "same-vpc", "vpc_id": want }))
}

/// A missing referenced object: 404 like a missing target, so another tenant's object is
/// answered exactly as one that never existed.
pub(crate) fn not_found_ref(e: StoreError, field: &str) -> Error {
    let _ = field;
    e.into()
}
