//! The tenant-network data plane as the control plane drives it: the network spec each
//! host is told (whole, with the host's desired generation), the reports its agent sends
//! back, each NIC's readiness, and the barrier an instance's start waits on ("the guest
//! does not start until its NICs are ready", with a deadline and the missing component
//! named). The CRUD of networks is `app::network`; the rows' meaning is
//! `plinth_domain::netspec`.
//!
//! A VPC's rows are kept decoded ([`VpcRowsCache`]) while its data version stays the same:
//! after one change, every host of the VPC polls, and they read the rows once between them
//! (at 1,000 NICs a read and decode is ~50 ms of the server's CPU).

use super::saga::StepError;
use super::signals;
use super::state::AppState;
use crate::app::error::Result;
use plinth_api::*;
use plinth_domain::netspec;

/// One instance's NICs on its host, in slot order: as its runtime plugs them, and as its
/// guest configures them (the NoCloud network-config).
#[derive(Default)]
pub struct GuestNics {
    pub plugs: Vec<InstanceNicSpec>,
    pub seed: Vec<plinth_domain::cloud_init::SeedNic>,
}

/// The network `host` must hold now, and each of its instances' NICs.
pub async fn host_spec(
    st: &AppState,
    host: &HostId,
) -> Result<(HostNetworkSpec, std::collections::BTreeMap<InstanceId, GuestNics>)> {
    let started = std::time::Instant::now();
    let (generation, versions, vteps) = st.store.host_network(host.as_str()).await?;
    let listed = started.elapsed();
    let mut vpcs = Vec::with_capacity(versions.len());
    for (vpc_id, version) in versions {
        vpcs.extend(st.vpc_rows.get(&st.store, &vpc_id, version).await?);
    }
    let read = started.elapsed();
    let spec = netspec::host_spec(host, generation, &vpcs, &vteps);
    tracing::debug!(
        host = %host,
        generation,
        list_ms = listed.as_millis() as u64,
        rows_ms = (read - listed).as_millis() as u64,
        spec_ms = (started.elapsed() - read).as_millis() as u64,
        "host network spec built"
    );
    type Slotted = Vec<(u8, InstanceNicSpec, Option<plinth_domain::cloud_init::SeedNic>)>;
    let mut per_instance: std::collections::BTreeMap<InstanceId, Slotted> = Default::default();
    for v in &spec.vpcs {
        for n in &v.nics {
            let Some(i) = &n.instance_id else { continue };
            let subnet = v.subnets.iter().find(|s| s.subnet_id == n.subnet_id);
            let mtu = subnet.map(|s| s.mtu).unwrap_or(1450);
            let seed = subnet.and_then(|s| {
                Some(plinth_domain::cloud_init::SeedNic {
                    mac: n.mac.clone(),
                    ipv4: n.ipv4.parse().ok()?,
                    prefix_len: s.ipv4_cidr.split('/').nth(1)?.parse().ok()?,
                    gateway: s.gateway.parse().ok()?,
                    mtu,
                    dns_domain: v.dns_domain.clone(),
                })
            });
            per_instance.entry(i.clone()).or_default().push((
                n.slot.unwrap_or(u8::MAX),
                InstanceNicSpec {
                    nic_id: n.nic_id.clone(),
                    vni: v.vni,
                    device: n.device.clone(),
                    mac: n.mac.clone(),
                    mtu,
                },
                seed,
            ));
        }
    }
    let nics = per_instance
        .into_iter()
        .map(|(i, mut l)| {
            l.sort_by_key(|(s, _, _)| *s);
            let mut g = GuestNics::default();
            for (_, plug, seed) in l {
                g.plugs.push(plug);
                g.seed.extend(seed);
            }
            (i, g)
        })
        .collect();
    Ok((spec, nics))
}

/// Records an agent's network report and wakes whoever waits on the NICs it concerns.
pub async fn record_report(st: &AppState, host: &HostId, report: &ObservedNetwork) -> Result<()> {
    let instances = st.store.record_network_report(host.as_str(), report).await?;
    for i in instances {
        st.signals.poke(&signals::instance_key(&i));
    }
    Ok(())
}

/// Fills each NIC's data-plane fields (host, state, readiness, applied filter generation)
/// from what the store knows.
pub async fn fill(st: &AppState, nics: &mut [NetworkInterface]) -> Result<()> {
    let ids: Vec<String> = nics.iter().map(|n| n.id.0.clone()).collect();
    let progress = st.store.nic_progress(&ids, None).await?;
    for (id, _, p) in progress {
        if let Some(n) = nics.iter_mut().find(|n| n.id == id) {
            let (state, list) = netspec::readiness(&p);
            n.state = state;
            n.readiness = list;
            n.host_id = p.host_id.clone();
            n.device = p.host_id.is_some().then(|| netspec::device_name(p.port));
            n.filter_generation_applied = p.filter_generation_applied;
            // The NIC's document keeps the generation of its own last change; a change to
            // its groups' rules or members moves theirs: show what its host is told to load.
            if let Some(g) = p.filter_generation {
                n.filter_generation = n.filter_generation.max(g);
            }
        }
    }
    Ok(())
}

/// Waits until every NIC of the instance is `ready`; past `nic_ready_timeout` (or when a
/// NIC failed) the start fails with a problem naming each NIC and component missing.
pub async fn wait_nics_ready(st: &AppState, instance: &InstanceId) -> std::result::Result<(), StepError> {
    let deadline = tokio::time::Instant::now() + st.config.nic_ready_timeout;
    let key = signals::instance_key(instance.as_str());
    let last = std::sync::Mutex::new(String::new());
    let last_ref = &last;
    let out = st
        .signals
        .wait_for(&key, deadline, std::time::Duration::from_millis(500), move || async move {
            let list = st.store.nic_progress(&[], Some(instance.as_str())).await?;
            let mut missing = Vec::new();
            let mut failed = false;
            for (id, slot, p) in &list {
                let (state, comps) = netspec::readiness(p);
                if state != NicState::Ready {
                    failed |= state == NicState::Failed;
                    missing.push(netspec::missing(id, *slot, &comps));
                }
            }
            if failed {
                return Err(StepError::new(
                    "nic_failed",
                    format!("a network interface could not be set up on its host: {}", missing.join("; ")),
                ));
            }
            *last_ref.lock().unwrap_or_else(|e| e.into_inner()) = missing.join("; ");
            Ok::<_, StepError>(missing.is_empty().then_some(()))
        })
        .await?;
    match out {
        Some(()) => Ok(()),
        None => Err(StepError::new(
            "nics_not_ready",
            format!(
                "the instance's network interfaces were not ready within {:?}: {}",
                st.config.nic_ready_timeout,
                last.lock().unwrap_or_else(|e| e.into_inner())
            ),
        )),
    }
}

/// The decoded rows of recently read VPCs, each with the data version it was read at.
/// One read at a time per VPC: the hosts of a VPC poll together after a change, and the
/// ones that wait use what the first read. A newer version is read with the kept rows as
/// its base: only the NICs whose generation moved have their documents read again.
#[derive(Default)]
pub struct VpcRowsCache {
    map: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<Option<KeptRows>>>>>,
}

/// A VPC's rows and the data version they were read at.
type KeptRows = (i64, std::sync::Arc<netspec::VpcRows>);

/// More VPCs than this in the cache and it starts over (a VPC read again is read whole).
const VPC_ROWS_CACHED: usize = 4096;

impl VpcRowsCache {
    /// The rows of `vpc_id` at data version `version` or newer: those kept, or read from
    /// the store (`None`: no such VPC).
    pub async fn get(
        &self,
        store: &plinth_store::Store,
        vpc_id: &str,
        version: i64,
    ) -> Result<Option<std::sync::Arc<netspec::VpcRows>>> {
        let slot = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= VPC_ROWS_CACHED && !map.contains_key(vpc_id) {
                map.clear();
            }
            map.entry(vpc_id.to_owned()).or_default().clone()
        };
        let mut kept = slot.lock().await;
        if let Some((v, rows)) = kept.as_ref()
            && *v >= version
        {
            return Ok(Some(rows.clone()));
        }
        let t = std::time::Instant::now();
        let prior = kept.as_ref().map(|(_, rows)| rows.clone());
        let read = store.vpc_rows(vpc_id, prior.as_deref()).await?.map(|(v, rows)| (v, std::sync::Arc::new(rows)));
        tracing::debug!(vpc = vpc_id, version, read_ms = t.elapsed().as_millis() as u64, "VPC rows read");
        let rows = read.as_ref().map(|(_, rows)| rows.clone());
        *kept = read;
        Ok(rows)
    }
}
