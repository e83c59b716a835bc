//! The agent protocol's use cases: enrolment (a join token traded for a host id and a
//! per-host credential), checking a host credential, the long-polled desired state, and
//! reports of inventory, heartbeats and observed guest state. Every call but enrolment
//! acts for one host (its id, from its credential) and touches only that host's objects.

use crate::app::lifecycle::{self, Pokes};
use crate::app::{AppState, Error, Result, dataplane, signals};
use crate::secrets;
use chrono::Utc;
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_domain::host_state::{self, HostEvent};
use plinth_domain::validate;
use plinth_store::{AuditEntry, Val, now_micros};
use std::time::Duration;

/// Enrols a host: the join token (single use) is traded, in one transaction, for a new
/// host (`enrolling`) and its credential, shown this once. `audit` names the request.
pub async fn enroll(st: &AppState, b: EnrollRequest, audit: &AuditEntry) -> Result<EnrollResponse> {
    let invalid = || Error::unauthenticated("the join token is not valid").with_code("invalid_join_token");
    let join_id = secrets::record_id(&b.join_token, secrets::JOIN_TOKEN, JoinTokenId::PREFIX).ok_or_else(invalid)?;
    validate::dns_label("hostname", &b.hostname)?;
    let now = Utc::now();
    let host = Host {
        id: HostId::generate(),
        name: b.hostname,
        site_id: None,
        rack_id: None,
        state: HostState::Enrolling,
        health: HostHealth::Unknown,
        ownership: Ownership::Shared,
        labels: Default::default(),
        traits: vec![],
        inventory: b.inventory.unwrap_or_default(),
        scheduling: HostScheduling::default(),
        bmc: None,
        last_seen_at: None,
        fenced_by: None,
        fenced_at: None,
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let credential = secrets::mint(secrets::HOST_CREDENTIAL, host.id.as_str());
    let token = b.join_token.clone();
    let host = st
        .store
        .enroll_host(&join_id, move |hash| secrets::verify(&token, hash), host, &secrets::hash(&credential), audit)
        .await?;
    Ok(EnrollResponse { host_id: host.id, credential })
}

/// The host a credential (`phc_…`) belongs to, or `unauthenticated`.
pub async fn authenticate(st: &AppState, secret: &str) -> Result<HostId> {
    let invalid = || Error::unauthenticated("the host credential is not valid");
    let host_id = secrets::record_id(secret, secrets::HOST_CREDENTIAL, HostId::PREFIX).ok_or_else(invalid)?;
    let hash = st.store.host_credential_hash(&host_id).await?.ok_or_else(invalid)?;
    if !secrets::verify(secret, &hash) {
        return Err(invalid());
    }
    Ok(HostId(host_id))
}

fn spec_of(inst: &Instance, user_data: Option<String>) -> Option<InstanceSpec> {
    // A spec is published once the create saga asks the host to prepare it.
    if inst.spec_generation == 0 {
        return None;
    }
    let power = match inst.lifecycle {
        Lifecycle::Deleted | Lifecycle::Deleting => PowerState::Absent,
        _ => inst.power,
    };
    Some(InstanceSpec {
        instance_id: inst.id.clone(),
        name: inst.name.clone(),
        generation: inst.spec_generation,
        power,
        boot_generation: inst.boot_generation,
        runtime_class: inst.runtime_class,
        image: inst.image.clone(),
        claim: inst.claim.clone()?,
        ssh_keys: inst.ssh_keys.clone(),
        user_data,
        boot: inst.boot.clone(),
        nics: Vec::new(),
        cloud_init: None,
        volumes: Vec::new(),
        boot_volume: None,
    })
}

/// The host's desired state. Long-polls: answers when the host's desired generation is
/// above `after`, or after `wait` seconds with the state as it is.
pub async fn desired(st: &AppState, host_id: &HostId, q: DesiredQuery) -> Result<DesiredState> {
    let wait = Duration::from_secs(q.wait.unwrap_or(30).min(60));
    let after = q.after.unwrap_or(-1);
    let deadline = tokio::time::Instant::now() + wait;
    let key = signals::host_key(host_id.as_str());
    let host = host_id.0.clone();
    st.signals
        .wait_for(&key, deadline, signals::MAX_POLL, || async {
            let g = st.store.desired_generation(&host).await?.unwrap_or(0);
            Ok::<_, Error>((g > after).then_some(()))
        })
        .await?;
    let built = std::time::Instant::now();
    let (generation, list) = st.store.host_instances(host_id.as_str()).await?;
    let (network, mut nics) = dataplane::host_spec(st, host_id).await?;
    let mut attached = super::storage::attachments::host_specs(st, host_id).await?;
    let instances = list
        .into_iter()
        .filter_map(|(i, u)| {
            let mut spec = spec_of(&i, u)?;
            let guest = nics.remove(&i.id).unwrap_or_default();
            spec.cloud_init = Some(plinth_domain::cloud_init::render(&plinth_domain::cloud_init::SeedInput {
                instance_id: i.id.as_str(),
                hostname: &i.name,
                ssh_keys: &i.ssh_keys,
                user_data: spec.user_data.as_deref(),
                nics: &guest.seed,
            }));
            spec.nics = guest.plugs;
            let disks = attached.remove(&i.id).unwrap_or_default();
            spec.volumes = disks.volumes;
            spec.boot_volume = disks.boot;
            Some(spec)
        })
        .collect();
    tracing::debug!(
        host = %host_id,
        generation,
        nics = network.vpcs.iter().map(|v| v.nics.len()).sum::<usize>(),
        build_ms = built.elapsed().as_millis() as u64,
        "desired state built"
    );
    let volumes = super::storage::volumes::host_specs(st, host_id).await?;
    Ok(DesiredState { host_id: host_id.clone(), generation, instances, network: Some(network), volumes })
}

/// Report the host's inventory (replaces the stored one). The first report of an
/// enrolling host makes it available.
pub async fn inventory(st: &AppState, host_id: &HostId, inv: HostInventory) -> Result<()> {
    let mut tx = st.store.begin().await?;
    let mut host: Host = tx.get(&Scope::Platform, host_id.as_str()).await?;
    host.inventory = inv;
    host.last_seen_at = Some(Utc::now());
    if let Ok(next) = host_state::next(host.state, HostEvent::AgentReady) {
        host.state = next;
    }
    tx.save(&mut host).await?;
    tx.set_column("hosts", host_id.as_str(), "heartbeat_at", Val::Int(Some(now_micros()))).await?;
    tx.commit().await?;
    st.sched.refresh_host(&st.store, host_id.as_str()).await?;
    Ok(())
}

/// A heartbeat. An unreachable host that beats again comes back `cordoned` (an operator
/// uncordons it once trusted again).
pub async fn heartbeat(st: &AppState, host_id: &HostId, _b: Heartbeat) -> Result<HeartbeatAck> {
    let mut tx = st.store.begin().await?;
    let mut host: Host = tx.get(&Scope::Platform, host_id.as_str()).await?;
    let before = host.state;
    let event = if host.state == HostState::Enrolling { HostEvent::AgentReady } else { HostEvent::HeartbeatRestored };
    if let Ok(next) = host_state::next(host.state, event) {
        host.state = next;
    }
    host.last_seen_at = Some(Utc::now());
    let mut pokes = Pokes::default();
    if host.state != before {
        tx.save(&mut host).await?;
        lifecycle::refresh_host_instances(&mut tx, &host.id, &mut pokes).await?;
    } else {
        tx.save_quiet(&host).await?;
    }
    tx.set_column("hosts", host_id.as_str(), "heartbeat_at", Val::Int(Some(now_micros()))).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    if host.state != before {
        st.sched.refresh_host(&st.store, host_id.as_str()).await?;
    }
    Ok(HeartbeatAck {
        host_id: host_id.clone(),
        state: host.state,
        interval_seconds: st.config.heartbeat_interval.as_secs().max(1),
    })
}

/// Report what the host's guests are doing. Reports about instances not on this host are
/// rejected (and change nothing); an observation older than the one stored is stale.
pub async fn observed(st: &AppState, host_id: &HostId, b: ObservedReport) -> Result<ObservedAck> {
    if b.instances.len() > 10_000 {
        return Err(Error::invalid("too_many", "at most 10000 instances per report"));
    }
    if b.network.as_ref().is_some_and(|n| n.nics.len() > 65_535) {
        return Err(Error::invalid("too_many", "at most 65535 network interfaces per report"));
    }
    if b.volumes.len() > 65_535 {
        return Err(Error::invalid("too_many", "at most 65535 volumes per report"));
    }
    let mut tx = st.store.begin().await?;
    let mut pokes = Pokes::default();
    let (mut applied, mut stale, mut rejected) = (0, 0, 0);
    let mut watch = false;
    for o in &b.instances {
        let mut inst: Instance = match tx.find::<Instance>(&Scope::Platform, o.instance_id.as_str()).await? {
            Some(i) if i.host_id.as_ref() == Some(host_id) => i,
            // Not this host's: nothing is applied, and the answer says no more than that.
            _ => {
                rejected += 1;
                continue;
            }
        };
        let known = inst.observed.as_ref().map(|x| x.generation).unwrap_or(i64::MIN);
        let same = inst.observed.as_ref().is_some_and(|x| x.generation == o.generation && x.state == o.state);
        let new_evidence = o.evidence.is_some() && o.evidence != inst.runtime;
        if o.generation < known || o.generation > inst.spec_generation {
            stale += 1;
            continue;
        }
        // The guest's volume disks settle the attachments in flight (a report that says
        // nothing new of the guest itself may still say that a disk came or went).
        let plugged = super::storage::attachments::record_plugs(&mut tx, &inst, o).await?;
        if same && !new_evidence && plugged.is_empty() {
            stale += 1;
            continue;
        }
        if o.evidence.is_some() {
            inst.runtime = o.evidence.clone();
        }
        let mut events = plugged;
        if !same {
            inst.observed = Some(Observation {
                state: o.state,
                generation: o.generation,
                detail: o.detail.clone(),
                at: Utc::now(),
                timings: o.timings.clone(),
            });
            let detail = || o.detail.clone().unwrap_or_else(|| "no detail".into());
            match o.state {
                ObservedState::Failed => events.push(lifecycle::event(&inst, "guest_failed", detail(), None)),
                ObservedState::Crashed => events.push(lifecycle::event(&inst, "guest_crashed", detail(), None)),
                _ => {}
            }
            watch |= matches!(o.state, ObservedState::Failed | ObservedState::Crashed | ObservedState::Stopped)
                && inst.power == PowerState::Running;
        }
        lifecycle::save(&mut tx, &mut inst, false, events, None, &mut pokes).await?;
        applied += 1;
    }
    applied += super::storage::volumes::record_reports(&mut tx, host_id, &b.volumes).await?;
    tx.commit().await?;
    pokes.send(&st.signals);
    if let Some(n) = &b.network {
        dataplane::record_report(st, host_id, n).await?;
    }
    if watch {
        // A guest died or powered off: its restart policy applies now, not at the next tick.
        st.tasks.trigger("instance_watcher");
    }
    Ok(ObservedAck { applied, stale, rejected })
}
