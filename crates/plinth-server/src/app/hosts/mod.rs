//! Hosts (operators): machines that run guests, with their full inventory, BMC
//! (credentials write-only), ownership, labels and traits; their operations are in
//! `ops.rs`.

pub mod capacity;
pub mod ops;

use crate::app::{AppState, Caller, Error, Kind, Paging, Result, reference};
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::validate;
use plinth_store::Val;

fn check_bmc(b: &BmcSpec) -> Result<()> {
    validate::text("bmc.address", &b.address, 255)?;
    if b.address.trim().is_empty() {
        return Err(Error::invalid("invalid_field", "bmc.address must not be empty")
            .with_constraint(serde_json::json!({ "field": "bmc.address", "rule": "required" })));
    }
    super::opt_text("bmc.username", &b.username, 128)?;
    super::opt_text("bmc.password", &b.password, 256)?;
    Ok(())
}

fn bmc_info(b: &BmcSpec) -> BmcInfo {
    BmcInfo {
        address: b.address.clone(),
        protocol: b.protocol,
        username: b.username.clone(),
        has_password: b.password.is_some(),
    }
}

async fn check_ownership(st: &AppState, o: &Ownership) -> Result<()> {
    if let Ownership::Dedicated { tenant_id } = o {
        let _: Tenant = st
            .store
            .get(&Scope::Platform, tenant_id.as_str())
            .await
            .map_err(|e| reference(e, "ownership.tenant_id"))?;
    }
    Ok(())
}

/// Allocation ratios are finite and between 0.1 and 64; dedicated CPUs are listed once.
fn check_scheduling(s: &HostScheduling) -> Result<()> {
    for (field, r) in [
        ("scheduling.cpu_allocation_ratio", s.cpu_allocation_ratio),
        ("scheduling.memory_allocation_ratio", s.memory_allocation_ratio),
    ] {
        if !r.is_finite() || !(0.1..=64.0).contains(&r) {
            return Err(Error::invalid("invalid_quantity", format!("{field}: {r} is not between 0.1 and 64"))
                .with_constraint(serde_json::json!({ "field": field, "min": 0.1, "max": 64.0 })));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for c in &s.dedicated_cpus {
        if !seen.insert(*c) {
            return Err(Error::invalid("invalid_value", format!("scheduling.dedicated_cpus: CPU {c} is listed twice"))
                .with_constraint(serde_json::json!({ "field": "scheduling.dedicated_cpus", "rule": "unique" })));
        }
    }
    Ok(())
}

/// List hosts.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: HostFilter) -> Result<Page<Host>> {
    caller.require_operator("reading inventory")?;
    let pg = Paging::from(p)?;
    let mut filters = Vec::new();
    if let Some(s) = f.state {
        filters.push(("state", s.as_str().to_string()));
    }
    if let Some(r) = f.rack_id {
        filters.push(("rack_id", r.0));
    }
    if let Some(s) = f.site_id {
        filters.push(("site_id", s.0));
    }
    if let Some(n) = f.name {
        filters.push(("name", n));
    }
    Ok(st.store.list::<Host>(&Scope::Platform, &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Declare a host ahead of its agent (it stays `enrolling` until the agent reports).
pub async fn create(st: &AppState, caller: &Caller, b: HostCreate) -> Result<Host> {
    caller.require_operator("changing inventory")?;
    validate::dns_label("name", &b.name)?;
    validate::labels("labels", &b.labels)?;
    validate::traits("traits", &b.traits)?;
    if let Some(bmc) = &b.bmc {
        check_bmc(bmc)?;
    }
    if let Some(sch) = &b.scheduling {
        check_scheduling(sch)?;
    }
    let ownership = b.ownership.unwrap_or(Ownership::Shared);
    check_ownership(st, &ownership).await?;
    let site_id = match &b.rack_id {
        Some(r) => {
            let rack: Rack = st.store.get(&Scope::Platform, r.as_str()).await.map_err(|e| reference(e, "rack_id"))?;
            Some(rack.site_id)
        }
        None => None,
    };
    let now = Utc::now();
    let h = Host {
        id: HostId::generate(),
        name: b.name,
        site_id,
        rack_id: b.rack_id,
        state: HostState::Enrolling,
        health: HostHealth::Unknown,
        ownership,
        labels: b.labels,
        traits: b.traits,
        inventory: b.inventory.unwrap_or_default(),
        scheduling: b.scheduling.unwrap_or_default(),
        bmc: b.bmc.as_ref().map(bmc_info),
        last_seen_at: None,
        fenced_by: None,
        fenced_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let password = b.bmc.and_then(|b| b.password);
    st.store.insert_with(&h, &[("bmc_password", Val::Text(password))], &caller.audit()).await?;
    Ok(h)
}

/// Get a host with its inventory.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Host> {
    caller.require_operator("reading inventory")?;
    Ok(st.store.get(&Scope::Platform, id).await?)
}

/// Change a host's rack, ownership, labels, traits or BMC.
pub async fn update(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>, b: HostUpdate) -> Result<Host> {
    caller.require_operator("changing inventory")?;
    super::opt_labels("labels", &b.labels)?;
    if let Some(t) = &b.traits {
        validate::traits("traits", t)?;
    }
    if let Some(bmc) = &b.bmc {
        check_bmc(bmc)?;
    }
    if let Some(sch) = &b.scheduling {
        check_scheduling(sch)?;
    }
    if let Some(o) = &b.ownership {
        check_ownership(st, o).await?;
    }
    let site = match &b.rack_id {
        Some(r) => {
            let rack: Rack = st.store.get(&Scope::Platform, r.as_str()).await.map_err(|e| reference(e, "rack_id"))?;
            Some(rack.site_id)
        }
        None => None,
    };
    let h = st
        .store
        .update(&Scope::Platform, id, if_match, &caller.audit(), |h: &mut Host| {
            if let Some(r) = b.rack_id {
                h.rack_id = Some(r);
                h.site_id = site;
            }
            if let Some(o) = b.ownership {
                h.ownership = o;
            }
            if let Some(l) = b.labels {
                h.labels = l;
            }
            if let Some(t) = b.traits {
                h.traits = t;
            }
            if let Some(sch) = b.scheduling {
                h.scheduling = sch;
            }
            let mut extra = vec![];
            if let Some(bmc) = b.bmc {
                h.bmc = Some(bmc_info(&bmc));
                extra.push(("bmc_password", Val::Text(bmc.password)));
            }
            Ok(extra)
        })
        .await?;
    Ok(h)
}

/// Remove a host record. Only hosts that never came up (`enrolling`) or are `retired` or
/// `failed` can be removed; retire the others first.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    caller.require_operator("changing inventory")?;
    let h: Host = st.store.get(&Scope::Platform, id).await?;
    if !matches!(h.state, HostState::Enrolling | HostState::Retired | HostState::Failed) {
        return Err(Error::new(Kind::Conflict,
            "invalid_state",
            format!("host {id} is {}; retire it before removing it", h.state.as_str()),
        )
        .with_constraint(serde_json::json!({ "rule": "host-state", "state": h.state.as_str(), "allowed": ["enrolling", "retired", "failed"] })));
    }
    st.store.delete::<Host>(&Scope::Platform, id, if_match, &caller.audit()).await?;
    Ok(())
}
