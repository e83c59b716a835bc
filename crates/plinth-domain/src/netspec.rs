//! The data-plane view of tenant networks: what one host must hold (its
//! [`HostNetworkSpec`], assembled from the VPC rows the store reads), and when a NIC is
//! `ready` (every component applied on its host, and every other host of its VPC has
//! applied the network generation that holds it).
//!
//! Pure: the store reads the rows, the server asks these functions what they mean.

use plinth_api::*;
use std::collections::{BTreeMap, BTreeSet};

/// One NIC as the data plane needs it: its document (shared: the server keeps a VPC's
/// rows and reuses a document until the NIC's generation moves) and the columns kept
/// beside it.
#[derive(Clone, Debug)]
pub struct NicRow {
    pub nic: std::sync::Arc<NetworkInterface>,
    /// Unique within the VPC (> 0): names the port device and marks its packets.
    pub port: u32,
    /// The host carrying it now.
    pub host_id: Option<HostId>,
    /// Its instance's name (the DHCP hostname).
    pub hostname: Option<String>,
}

/// Everything of one VPC a host spec is made from.
#[derive(Clone, Debug)]
pub struct VpcRows {
    pub vpc: Vpc,
    pub firewall_generation: i64,
    /// Per group: the firewall generation of the last change to its members' filters.
    pub group_filter_generations: BTreeMap<SecurityGroupId, i64>,
    /// Each subnet with its short index (the bridge's number).
    pub subnets: Vec<(Subnet, u32)>,
    /// Every NIC of the VPC, wherever it is.
    pub nics: Vec<NicRow>,
    /// Every group of the VPC, rules filled in (shared, as the NICs' documents are).
    pub groups: Vec<std::sync::Arc<SecurityGroup>>,
    /// Every IP pool's range (first and last address as integers) and gateway: where a VPC
    /// router sends internet traffic depends on the pool of its public addresses.
    pub pool_gateways: Vec<(u32, u32, Option<String>)>,
}

/// A NIC's filter generation: the highest of its groups' (each moves when its rules or the
/// VPC's members change) and of its own last change.
pub fn nic_filter_generation(v: &VpcRows, nic: &NetworkInterface) -> i64 {
    let groups = nic.security_group_ids.iter().filter_map(|g| v.group_filter_generations.get(g)).max();
    groups.copied().unwrap_or(v.firewall_generation).max(nic.filter_generation)
}

/// A NIC's public addresses: its floating IPs (oldest first), then its SNAT address.
pub fn public_addresses(nic: &NetworkInterface) -> impl Iterator<Item = &String> {
    nic.floating_ips.iter().map(|f| &f.address).chain(nic.snat_address.iter())
}

/// A NIC's name in its VPC's DNS domain: an instance's primary NIC answers to the
/// instance's name (its other NICs to none), a NIC without an instance to its own name.
pub fn dns_name(n: &NicRow) -> Option<String> {
    match &n.nic.instance_id {
        Some(_) => n.hostname.clone().filter(|_| n.nic.primary),
        None => Some(n.nic.name.clone()),
    }
}

/// The gateway of the pool holding the first public address of `nics` (`None`: none has
/// one, or its pool has no gateway).
fn uplink_gateway<'a>(nics: impl Iterator<Item = &'a NicRow>, pools: &[(u32, u32, Option<String>)]) -> Option<String> {
    let first = nics.flat_map(|n| public_addresses(&n.nic)).next()?;
    let a = u32::from(first.parse::<std::net::Ipv4Addr>().ok()?);
    pools.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&a)).and_then(|(_, _, g)| g.clone())
}

/// The port device of a NIC on its host (≤ 15 bytes: `n` and at most 5 digits).
pub fn device_name(port: u32) -> String {
    format!("n{port}")
}

/// What `host` must hold: each VPC with a NIC on it, whole. `vteps` maps hosts to their
/// underlay addresses; remote NICs on hosts with no known address are left out (their
/// host has not reported yet, so nothing can reach them anyway).
pub fn host_spec(
    host: &HostId,
    generation: i64,
    vpcs: &[impl std::ops::Deref<Target = VpcRows>],
    vteps: &BTreeMap<HostId, String>,
) -> HostNetworkSpec {
    let mut out = Vec::new();
    for v in vpcs {
        let local: Vec<&NicRow> = v.nics.iter().filter(|n| n.host_id.as_ref() == Some(host)).collect();
        if local.is_empty() {
            continue;
        }
        // Groups the local NICs use, and the groups those name as remote.
        let mut wanted: BTreeSet<&SecurityGroupId> =
            local.iter().flat_map(|n| n.nic.security_group_ids.iter()).collect();
        let named: Vec<&SecurityGroupId> = v
            .groups
            .iter()
            .filter(|g| wanted.contains(&g.id))
            .flat_map(|g| g.rules.iter().filter_map(|r| r.remote_group_id.as_ref()))
            .collect();
        wanted.extend(named);
        let security_groups = v
            .groups
            .iter()
            .filter(|g| wanted.contains(&g.id))
            .map(|g| SecurityGroupSpec {
                security_group_id: g.id.clone(),
                rules: g
                    .rules
                    .iter()
                    .map(|r| RuleSpec {
                        rule_id: r.id.clone(),
                        direction: r.direction,
                        protocol: r.protocol,
                        port_min: r.port_min,
                        port_max: r.port_max,
                        icmp_type: r.icmp_type,
                        icmp_code: r.icmp_code,
                        remote_cidr: r.remote_cidr.clone(),
                        remote_group_id: r.remote_group_id.clone(),
                    })
                    .collect(),
                members: {
                    let mut m: Vec<String> = v
                        .nics
                        .iter()
                        .filter(|n| n.nic.security_group_ids.contains(&g.id))
                        .map(|n| n.nic.ipv4.clone())
                        .collect();
                    m.sort();
                    m
                },
            })
            .collect();
        let mut remote_nics = Vec::new();
        let mut peers = BTreeSet::new();
        for n in &v.nics {
            let Some(h) = n.host_id.as_ref().filter(|h| *h != host) else { continue };
            let Some(vtep) = vteps.get(h) else { continue };
            peers.insert(vtep.clone());
            remote_nics.push(RemoteNicSpec {
                nic_id: n.nic.id.clone(),
                subnet_id: n.nic.subnet_id.clone(),
                mac: n.nic.mac.clone(),
                ipv4: n.nic.ipv4.clone(),
                vtep: vtep.clone(),
                dns_name: dns_name(n),
            });
        }
        let uplink_gateway = uplink_gateway(local.iter().copied(), &v.pool_gateways);
        out.push(VpcSpec {
            vpc_id: v.vpc.id.clone(),
            vni: v.vpc.vni,
            ipv4_cidr: v.vpc.ipv4_cidr.clone(),
            subnets: v
                .subnets
                .iter()
                .map(|(s, idx)| SubnetSpec {
                    subnet_id: s.id.clone(),
                    index: *idx,
                    vni: s.vni,
                    ipv4_cidr: s.ipv4_cidr.clone(),
                    gateway: s.gateway.clone(),
                    mtu: s.mtu,
                    dhcp: s.dhcp,
                })
                .collect(),
            nics: local
                .iter()
                .map(|n| NicSpec {
                    nic_id: n.nic.id.clone(),
                    subnet_id: n.nic.subnet_id.clone(),
                    device: device_name(n.port),
                    port: n.port,
                    plug: match (&n.nic.instance_id, n.nic.plug) {
                        (Some(_), _) => NicPlug::Tap,
                        (None, plug) => plug.unwrap_or(NicPlug::Veth),
                    },
                    mac: n.nic.mac.clone(),
                    ipv4: n.nic.ipv4.clone(),
                    port_security: n.nic.port_security,
                    security_group_ids: n.nic.security_group_ids.clone(),
                    hostname: n.hostname.clone(),
                    instance_id: n.nic.instance_id.clone(),
                    slot: n.nic.slot,
                    filter_generation: nic_filter_generation(v, &n.nic),
                    snat_address: n.nic.snat_address.clone(),
                    floating: n.nic.floating_ips.iter().map(|f| f.address.clone()).collect(),
                    dns_name: dns_name(n),
                })
                .collect(),
            security_groups,
            remote_nics,
            peers: peers.into_iter().collect(),
            uplink_gateway,
            dns_domain: Some(format!("{}.internal", v.vpc.name)),
        });
    }
    out.sort_by_key(|v| v.vni);
    HostNetworkSpec { generation, vpcs: out }
}

/// What the store knows of one NIC's progress on the data plane.
#[derive(Clone, Debug, Default)]
pub struct NicProgress {
    pub host_id: Option<HostId>,
    /// Its port number in the VPC.
    pub port: u32,
    /// Its host's last report of it.
    pub components: Option<Vec<ComponentStatus>>,
    pub filter_generation_applied: Option<i64>,
    /// The highest filter generation of its groups: what its host is told to load (see
    /// [`nic_filter_generation`]; `None`: in no group).
    pub filter_generation: Option<i64>,
    /// Hosts that must apply a generation before the NIC is reachable from them.
    pub barrier: Option<BTreeMap<HostId, i64>>,
    /// The generation each barrier host has applied.
    pub applied: BTreeMap<HostId, i64>,
    /// Hosts that still carry a NIC of the VPC (a barrier host that left does not count).
    pub vpc_hosts: BTreeSet<HostId>,
}

/// The NIC's state and each component's status. `fdb` needs both the host's own report
/// and the barrier: every other host of the VPC has applied the generation that holds it.
pub fn readiness(p: &NicProgress) -> (NicState, Vec<ComponentStatus>) {
    let Some(host) = &p.host_id else {
        let none =
            NicComponent::ALL.iter().map(|c| ComponentStatus { component: *c, applied: false, detail: None }).collect();
        return (NicState::Pending, none);
    };
    let reported: BTreeMap<NicComponent, &ComponentStatus> =
        p.components.iter().flatten().map(|c| (c.component, c)).collect();
    let waiting: Vec<&HostId> = match &p.barrier {
        None => vec![host],
        Some(b) => b
            .iter()
            .filter(|(h, g)| (*h == host || p.vpc_hosts.contains(*h)) && p.applied.get(*h).copied().unwrap_or(0) < **g)
            .map(|(h, _)| h)
            .collect(),
    };
    let mut failed = false;
    let list = NicComponent::ALL
        .iter()
        .map(|c| {
            let mine = reported.get(c);
            let mut st = ComponentStatus {
                component: *c,
                applied: mine.is_some_and(|s| s.applied),
                detail: mine.and_then(|s| s.detail.clone()),
            };
            if st.detail.is_some() && !st.applied {
                failed = true;
            }
            if *c == NicComponent::Fdb && st.applied && !waiting.is_empty() {
                st.applied = false;
                let names: Vec<&str> = waiting.iter().map(|h| h.as_str()).collect();
                st.detail = Some(format!("waiting for host(s) {} to apply it", names.join(", ")));
            }
            st
        })
        .collect::<Vec<_>>();
    let state = if failed {
        NicState::Failed
    } else if list.iter().all(|c| c.applied) {
        NicState::Ready
    } else {
        NicState::Bound
    };
    (state, list)
}

/// "nic_… (slot 0): fdb, filter": what keeps a NIC from `ready`, for errors.
pub fn missing(nic: &NicId, slot: Option<u8>, list: &[ComponentStatus]) -> String {
    let parts: Vec<String> = list
        .iter()
        .filter(|c| !c.applied)
        .map(|c| match &c.detail {
            Some(d) => format!("{} ({d})", c.component.as_str()),
            None => c.component.as_str().to_string(),
        })
        .collect();
    let slot = slot.map(|s| format!(" (slot {s})")).unwrap_or_default();
    format!("{nic}{slot}: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_applied() -> Vec<ComponentStatus> {
        NicComponent::ALL.iter().map(|c| ComponentStatus { component: *c, applied: true, detail: None }).collect()
    }

    fn host(s: &str) -> HostId {
        HostId(s.into())
    }

    #[test]
    fn unbound_nics_are_pending() {
        let (st, list) = readiness(&NicProgress::default());
        assert_eq!(st, NicState::Pending);
        assert_eq!(list.len(), NicComponent::ALL.len());
    }

    #[test]
    fn ready_needs_every_component_and_every_vpc_host() {
        let a = host("hst_a");
        let b = host("hst_b");
        let mut p = NicProgress {
            host_id: Some(a.clone()),
            components: Some(all_applied()),
            barrier: Some([(a.clone(), 5), (b.clone(), 9)].into()),
            applied: [(a.clone(), 5), (b.clone(), 8)].into(),
            vpc_hosts: [a.clone(), b.clone()].into(),
            ..Default::default()
        };
        let (st, list) = readiness(&p);
        assert_eq!(st, NicState::Bound);
        let fdb = list.iter().find(|c| c.component == NicComponent::Fdb).unwrap();
        assert!(fdb.detail.as_deref().unwrap().contains("hst_b"), "{fdb:?}");
        p.applied.insert(b.clone(), 9);
        assert_eq!(readiness(&p).0, NicState::Ready);
        // A host that left the VPC no longer holds the NIC back.
        p.applied.insert(b.clone(), 1);
        p.vpc_hosts.remove(&b);
        assert_eq!(readiness(&p).0, NicState::Ready);
        // Without a barrier computed yet, the NIC is not ready.
        p.barrier = None;
        assert_eq!(readiness(&p).0, NicState::Bound);
    }

    #[test]
    fn a_component_error_fails_the_nic_and_is_named() {
        let a = host("hst_a");
        let mut comps = all_applied();
        comps[3] =
            ComponentStatus { component: NicComponent::Filter, applied: false, detail: Some("nft: syntax".into()) };
        let p = NicProgress {
            host_id: Some(a.clone()),
            components: Some(comps),
            barrier: Some([(a.clone(), 1)].into()),
            applied: [(a.clone(), 1)].into(),
            vpc_hosts: [a].into(),
            ..Default::default()
        };
        let (st, list) = readiness(&p);
        assert_eq!(st, NicState::Failed);
        let m = missing(&NicId("nic_x".into()), Some(0), &list);
        assert_eq!(m, "nic_x (slot 0): filter (nft: syntax)");
    }
}
