//! VPCs: create (with the VPC's VNI and its default security group, in one transaction),
//! list, get, rename, delete (only when empty).

use super::{allocate_vni, require_write, writable_project};
use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::network::Cidr;
use plinth_domain::quota;
use plinth_domain::validate;
use plinth_store::Tx;
use serde_json::json;

/// List VPCs.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: VpcFilter) -> Result<Page<Vpc>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    filters.extend(f.name.map(|n| ("name", n)));
    Ok(st.store.list::<Vpc>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a VPC.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Vpc> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// The rules of a VPC's default group: all egress; ingress from the group's own members.
pub fn default_rules(group: &SecurityGroupId) -> Vec<SecurityGroupRule> {
    let rule = |direction, remote_group_id, description: &str| SecurityGroupRule {
        id: SecurityGroupRuleId::generate(),
        direction,
        protocol: RuleProtocol::Any,
        port_min: None,
        port_max: None,
        icmp_type: None,
        icmp_code: None,
        remote_cidr: None,
        remote_group_id,
        description: description.into(),
    };
    vec![
        rule(Direction::Egress, None, "all egress"),
        rule(Direction::Ingress, Some(group.clone()), "ingress from members of this group"),
    ]
}

/// Writes a new VPC, its VNI and its default group (with its rules) in `tx`.
pub(crate) async fn insert_vpc(
    tx: &mut Tx,
    project: &Project,
    name: &str,
    description: &str,
    cidr: &Cidr,
    is_default: bool,
) -> Result<Vpc> {
    let now = Utc::now();
    let id = VpcId::generate();
    let vni = allocate_vni(tx, id.as_str()).await?;
    let sg_id = SecurityGroupId::generate();
    let vpc = Vpc {
        id: id.clone(),
        tenant_id: project.tenant_id.clone(),
        project_id: project.id.clone(),
        name: name.to_string(),
        description: description.to_string(),
        ipv4_cidr: cidr.to_string(),
        vni,
        default_security_group_id: sg_id.clone(),
        is_default,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    if !is_default {
        // The project's default VPC is the platform's doing: it counts against no quota.
        super::charge(tx, &project.tenant_id, &project.id, quota::VPCS, 1).await?;
    }
    tx.insert(&vpc, &[]).await?;
    let sg = SecurityGroup {
        id: sg_id.clone(),
        tenant_id: project.tenant_id.clone(),
        project_id: project.id.clone(),
        vpc_id: id,
        name: "default".into(),
        description: "the VPC's default group: all egress, ingress from its members".into(),
        is_default: true,
        rules: default_rules(&sg_id),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    tx.insert(&sg, &[]).await?;
    for r in &sg.rules {
        tx.insert_rule(&sg, r, now).await?;
    }
    Ok(vpc)
}

/// Create a VPC with its default security group.
pub async fn create(st: &AppState, caller: &Caller, b: VpcCreate) -> Result<Vpc> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    let cidr = Cidr::parse_tenant_block("ipv4_cidr", &b.ipv4_cidr)?;
    let project = writable_project(st, caller, &b.project_id, "creating VPCs in this project").await?;
    let mut tx = st.store.begin().await?;
    let vpc = insert_vpc(&mut tx, &project, &b.name, &b.description, &cidr, false).await?;
    tx.audit(&caller.audit(), vpc.id.as_str(), Some(vpc.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    Ok(vpc)
}

/// Rename a VPC or change its description.
pub async fn update(st: &AppState, caller: &Caller, id: &str, b: VpcUpdate, if_match: Option<i64>) -> Result<Vpc> {
    if let Some(n) = &b.name {
        validate::dns_label("name", n)?;
    }
    crate::app::opt_text("description", &b.description, 255)?;
    let mut tx = st.store.begin().await?;
    let mut v: Vpc = tx.get(&caller.scope(), id).await?;
    require_write(caller, &v.tenant_id, &v.project_id, "changing VPCs in this project")?;
    super::check_generation(&v, if_match)?;
    // The name is the VPC's DNS domain (`<name>.internal`): its hosts are told.
    let renamed = b.name.as_ref().is_some_and(|n| *n != v.name);
    if let Some(n) = b.name {
        v.name = n;
    }
    if let Some(d) = b.description {
        v.description = d;
    }
    tx.save(&mut v).await?;
    if renamed {
        super::network_changed(&mut tx, &v.id, &[]).await?;
    }
    tx.audit(&caller.audit(), id, Some(v.tenant_id.as_str()), 200).await?;
    tx.commit().await?;
    Ok(v)
}

/// Delete a VPC that has no subnets and no groups but its default one (which goes with it).
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let v: Vpc = tx.get(&caller.scope(), id).await?;
    require_write(caller, &v.tenant_id, &v.project_id, "deleting VPCs in this project")?;
    super::check_generation(&v, if_match)?;
    let (subnets, groups, nics) = tx.vpc_children(id).await?;
    if subnets > 0 || groups > 0 || nics > 0 {
        return Err(Error::conflict(
            "vpc_not_empty",
            format!(
                "VPC {id} still has {subnets} subnet(s) and {groups} security group(s) besides its default one; delete those first"
            ),
        )
        .with_constraint(json!({ "rule": "no-dependents", "subnets": subnets, "security_groups": groups })));
    }
    let sg = v.default_security_group_id.as_str();
    tx.delete_rules(sg, None).await?;
    tx.remove::<SecurityGroup>(sg).await?;
    tx.free_vnis(id).await?;
    tx.remove::<Vpc>(id).await?;
    if !v.is_default {
        super::charge(&mut tx, &v.tenant_id, &v.project_id, quota::VPCS, -1).await?;
    }
    tx.audit(&caller.audit(), id, Some(v.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}
