//! Security groups and their rules: create (with rules), list, get, rename, delete (not
//! the VPC's default one, not while NICs use it or another group names it as remote), add
//! and remove one rule. A change to rules moves the group's filter generation (a new one of
//! the VPC's) and tells its members' hosts, in the same transaction ([`super::rules_changed`]).

use super::{other_vpc, require_write, rules_changed};
use crate::app::{AppState, Caller, Error, Paging, Result};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::network::validate_rule;
use plinth_domain::validate;
use plinth_store::Tx;
use serde_json::json;

/// Most rules one group may hold.
pub const MAX_RULES_PER_GROUP: usize = 10_000;

/// List security groups.
pub async fn list(
    st: &AppState,
    caller: &Caller,
    p: &PageParams,
    f: SecurityGroupFilter,
) -> Result<Page<SecurityGroup>> {
    let pg = Paging::from(p)?;
    let mut filters: Vec<(&str, String)> = f.project_id.into_iter().map(|p| ("project_id", p)).collect();
    filters.extend(f.vpc_id.map(|n| ("vpc_id", n)));
    filters.extend(f.name.map(|n| ("name", n)));
    Ok(st.store.list::<SecurityGroup>(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Get a security group with its rules.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<SecurityGroup> {
    Ok(st.store.get(&caller.scope(), id).await?)
}

/// A checked rule of a group of `vpc` (`own`: the group's id, which a rule may name).
async fn checked_rule(
    tx: &mut Tx,
    caller: &Caller,
    vpc: &VpcId,
    own: &SecurityGroupId,
    field: &str,
    r: SecurityGroupRuleCreate,
) -> Result<SecurityGroupRule> {
    validate_rule(field, &r)?;
    if let Some(g) = &r.remote_group_id
        && g != own
    {
        let remote: SecurityGroup = tx.peek(&caller.scope(), g.as_str()).await?;
        if &remote.vpc_id != vpc {
            let f = if field.is_empty() { "remote_group_id".to_string() } else { format!("{field}.remote_group_id") };
            return Err(other_vpc(&f, g.as_str(), &remote.vpc_id, vpc));
        }
    }
    let remote_cidr = match &r.remote_cidr {
        // Normalised text (the domain refused host bits already).
        Some(c) => Some(plinth_domain::network::Cidr::parse("remote_cidr", c)?.to_string()),
        None => None,
    };
    Ok(SecurityGroupRule {
        id: SecurityGroupRuleId::generate(),
        direction: r.direction,
        protocol: r.protocol,
        port_min: r.port_min,
        port_max: r.port_max,
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        remote_cidr,
        remote_group_id: r.remote_group_id,
        description: r.description,
    })
}

fn too_many_rules() -> Error {
    Error::invalid("too_many", format!("a security group holds at most {MAX_RULES_PER_GROUP} rules"))
        .with_constraint(json!({ "field": "rules", "rule": "max", "max": MAX_RULES_PER_GROUP }))
}

/// Create a security group.
pub async fn create(st: &AppState, caller: &Caller, b: SecurityGroupCreate) -> Result<SecurityGroup> {
    validate::dns_label("name", &b.name)?;
    validate::text("description", &b.description, 255)?;
    if b.rules.len() > MAX_RULES_PER_GROUP {
        return Err(too_many_rules());
    }
    for (i, r) in b.rules.iter().enumerate() {
        validate_rule(&format!("rules[{i}]"), r)?;
    }
    let mut tx = st.store.begin().await?;
    let vpc: Vpc = tx.get(&caller.scope(), b.vpc_id.as_str()).await?;
    require_write(caller, &vpc.tenant_id, &vpc.project_id, "creating security groups in this project")?;
    let id = SecurityGroupId::generate();
    let mut rules = Vec::with_capacity(b.rules.len());
    for (i, r) in b.rules.into_iter().enumerate() {
        rules.push(checked_rule(&mut tx, caller, &vpc.id, &id, &format!("rules[{i}]"), r).await?);
    }
    let now = Utc::now();
    let sg = SecurityGroup {
        id,
        tenant_id: vpc.tenant_id.clone(),
        project_id: vpc.project_id.clone(),
        vpc_id: vpc.id.clone(),
        name: b.name,
        description: b.description,
        is_default: false,
        rules,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    tx.insert(&sg, &[]).await?;
    for r in &sg.rules {
        tx.insert_rule(&sg, r, now).await?;
    }
    tx.audit(&caller.audit(), sg.id.as_str(), Some(sg.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    Ok(sg)
}

/// Rename a group or change its description.
pub async fn update(
    st: &AppState,
    caller: &Caller,
    id: &str,
    b: SecurityGroupUpdate,
    if_match: Option<i64>,
) -> Result<SecurityGroup> {
    if let Some(n) = &b.name {
        validate::dns_label("name", n)?;
    }
    crate::app::opt_text("description", &b.description, 255)?;
    let g: SecurityGroup = st.store.get(&caller.scope(), id).await?;
    require_write(caller, &g.tenant_id, &g.project_id, "changing security groups in this project")?;
    Ok(st
        .store
        .update::<SecurityGroup, _>(&caller.scope(), id, if_match, &caller.audit(), |g| {
            if let Some(n) = b.name {
                g.name = n;
            }
            if let Some(d) = b.description {
                g.description = d;
            }
            Ok(vec![])
        })
        .await?)
}

/// Reads a group and its VPC for a change (the VPC first: one order of locks).
async fn group_for_change(tx: &mut Tx, caller: &Caller, id: &str, what: &str) -> Result<SecurityGroup> {
    let peek: SecurityGroup = tx.peek(&caller.scope(), id).await?;
    require_write(caller, &peek.tenant_id, &peek.project_id, what)?;
    let _vpc: Vpc = tx.get(&caller.scope(), peek.vpc_id.as_str()).await?;
    Ok(tx.get(&caller.scope(), id).await?)
}

/// Delete a security group nothing uses.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let g = group_for_change(&mut tx, caller, id, "deleting security groups in this project").await?;
    super::check_generation(&g, if_match)?;
    if g.is_default {
        return Err(Error::conflict(
            "default_security_group",
            format!("security group {id} is its VPC's default group; it goes when the VPC is deleted"),
        )
        .with_constraint(json!({ "rule": "default-group" })));
    }
    let (nics, groups) = tx.group_users(id).await?;
    if !nics.is_empty() || !groups.is_empty() {
        let names: Vec<String> = nics.iter().map(|n| format!("{} ({})", n.name, n.id)).collect();
        return Err(Error::conflict(
            "security_group_in_use",
            format!(
                "security group {} is used by network interface(s) [{}] and named as remote by group(s) [{}]",
                g.name,
                names.join(", "),
                groups.join(", ")
            ),
        )
        .with_constraint(json!({ "rule": "no-dependents",
            "network_interfaces": nics.iter().map(|n| json!({ "id": n.id, "name": n.name })).collect::<Vec<_>>(),
            "security_groups": groups })));
    }
    tx.delete_rules(id, None).await?;
    tx.remove::<SecurityGroup>(id).await?;
    tx.audit(&caller.audit(), id, Some(g.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}

/// Add one rule to a group.
pub async fn add_rule(
    st: &AppState,
    caller: &Caller,
    id: &str,
    b: SecurityGroupRuleCreate,
    if_match: Option<i64>,
) -> Result<SecurityGroupRule> {
    validate_rule("", &b)?;
    let mut tx = st.store.begin().await?;
    let mut g = group_for_change(&mut tx, caller, id, "changing security groups in this project").await?;
    super::check_generation(&g, if_match)?;
    if g.rules.len() >= MAX_RULES_PER_GROUP {
        return Err(too_many_rules());
    }
    let rule = checked_rule(&mut tx, caller, &g.vpc_id.clone(), &g.id.clone(), "", b).await?;
    g.rules.push(rule.clone());
    tx.save(&mut g).await?;
    tx.insert_rule(&g, &rule, Utc::now()).await?;
    rules_changed(&mut tx, &g).await?;
    tx.audit(&caller.audit(), rule.id.as_str(), Some(g.tenant_id.as_str()), 201).await?;
    tx.commit().await?;
    Ok(rule)
}

/// Remove one rule from a group.
pub async fn remove_rule(st: &AppState, caller: &Caller, id: &str, rule_id: &str, if_match: Option<i64>) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let mut g = group_for_change(&mut tx, caller, id, "changing security groups in this project").await?;
    super::check_generation(&g, if_match)?;
    let Some(pos) = g.rules.iter().position(|r| r.id.as_str() == rule_id) else {
        return Err(Error::not_found("security group rule", rule_id));
    };
    g.rules.remove(pos);
    tx.save(&mut g).await?;
    tx.delete_rules(id, Some(rule_id)).await?;
    rules_changed(&mut tx, &g).await?;
    tx.audit(&caller.audit(), rule_id, Some(g.tenant_id.as_str()), 204).await?;
    tx.commit().await?;
    Ok(())
}
