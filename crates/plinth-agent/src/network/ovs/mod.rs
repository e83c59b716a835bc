//! The Open vSwitch backend ([`OpenVswitch`]): the same [`HostNetwork`] as the Linux
//! bridge, with one OVS bridge (userspace datapath, `datapath_type=netdev`: this kernel
//! has no OVS module) switching and filtering every port of the host in OpenFlow
//! ([`flows`]), and the agent's own `ovsdb-server`/`ovs-vswitchd` ([`daemon`]).
//!
//! Layout on a host (names ≤ 15 bytes, unique in the agent's namespace):
//! - each local NIC's port is in the agent's namespace: a persistent tap `v<vni hex>-<device>`
//!   (QEMU opens it without the virtio-net header: OVS reads the tap with `AF_PACKET` and
//!   drops frames larger than the MTU), or a veth of that name whose far end `<device>g` is
//!   made in the VPC namespace for a namespace guest to take; offloads off on both ends
//!   (reference §3: with them on, TCP stalls through the userspace datapath);
//! - each subnet's gateway leg: a veth `g<vni hex>-<index>` on the bridge whose far end
//!   `br<index>` in the VPC namespace holds the gateway address and this host's gateway MAC,
//!   so routing, DHCP/DNS (dnsmasq on `br<index>`), the router's uplink, NAT and the egress
//!   counters stay in the VPC namespace exactly as with the Linux bridge (its nftables hold
//!   only the router's tables: [`super::filter::render_router`]);
//! - each subnet spanning hosts: a kernel VXLAN device `vx<vni>` in the agent's namespace
//!   as a port of the bridge, with the same static FDB as the Linux bridge's. OVS's own
//!   userspace tunnels would need the underlay address on an OVS bridge owning the uplink;
//!   kernel VXLAN ports leave the host's uplink alone and interoperate with hosts running
//!   the Linux bridge (same VNIs, same FDB, same gateway rules).
//!
//! Ports carry `external_ids:plinth-ns` (and `plinth-nic` for a NIC), so that a verifying
//! apply removes the ports of NICs and VPCs no longer here, and never another agent's.
//!
//! A change apply carries over what the last apply left (the agent namespace's links, the
//! bridge's interfaces, the FDB, the neighbours, the flows) and sends only differences; a
//! verifying apply (the first, and every 10 s) reads everything back and replaces the flow
//! table whole. Modules: [`daemon`] (the daemons and their tools), `ports` (links and
//! bridge ports), [`flows`] (the OpenFlow pipeline), [`conntrack`] (cutting connections a
//! change no longer allows), `observe` (per-NIC readiness).

pub mod conntrack;
pub mod daemon;
pub mod flows;
mod observe;
mod ports;

use super::plan::VpcPlan;
use super::view::{FdbSet, NeighSet};
use super::{HostNetwork, NetworkConfig, cmd, dhcp, failed, filter, links, meter, router, rtnl, tap};
use crate::runtime::TapOpener;
use daemon::Ovs;
use flows::{Allowed, Flows};
use plinth_api::{HostNetworkSpec, NicId, ObservedNetwork};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The name of the datapath this backend reports.
pub const DATAPATH: &str = "openvswitch";

/// The agent's own namespace, for taps made there.
const OWN_NS: &str = "/proc/self/ns/net";

/// A NIC's port in the agent's namespace.
pub fn port_name(vni: u32, device: &str) -> String {
    format!("v{vni:x}-{device}")
}

/// A subnet's gateway leg on the bridge.
pub fn gateway_name(vni: u32, index: u32) -> String {
    format!("g{vni:x}-{index}")
}

/// One interface of the bridge as the database holds it.
#[derive(Clone, Debug, Default)]
struct Iface {
    ofport: i64,
    ns: Option<String>,
}

/// What the backend knows between applies.
#[derive(Default)]
struct State {
    /// The daemons answered and the bridge exists (checked again by every verifying apply).
    started: bool,
    /// The flows last loaded (`None`: unknown; the next load replaces the table whole).
    flows: Option<Flows>,
    /// What each local NIC was allowed as last loaded (to judge its connections again).
    allowed: BTreeMap<NicId, Allowed>,
    /// Per NIC: its zone (to flush when its port goes).
    zones: BTreeMap<NicId, u32>,
    /// Per VPC namespace: what its router, counters, DHCP and nftables hold.
    vpcs: BTreeMap<String, VpcState>,
    /// The agent namespace's links and the bridge's interfaces as the last apply left
    /// them (a change apply starts from them; `None`: read back next).
    host: Option<BTreeMap<String, links::Link>>,
    ifaces: Option<BTreeMap<String, Iface>>,
}

#[derive(Clone, Default)]
struct VpcState {
    loaded: Option<filter::Loaded>,
    dhcp: dhcp::Hosts,
    router: Option<router::Held>,
    meter: Option<BTreeMap<String, String>>,
    ports: meter::Ports,
    /// Port device → its link in the agent's namespace.
    host_ports: BTreeMap<String, String>,
    /// The VXLAN devices' FDB and the namespace's neighbours as the last apply left them
    /// (`None`: unknown, read back next).
    fdb: Option<BTreeMap<String, FdbSet>>,
    neigh: Option<NeighSet>,
}

/// Errors met applying one VPC, for its NICs' components.
#[derive(Default)]
struct VpcErrors {
    all: Option<String>,
    subnet: BTreeMap<String, String>,
    nic: BTreeMap<NicId, String>,
    fdb: Option<String>,
    dhcp: BTreeMap<String, String>,
    router: Option<String>,
    filter: Option<String>,
    /// The FDB and neighbours after this apply (kept for the next change apply).
    fdb_view: Option<BTreeMap<String, FdbSet>>,
    neigh_view: Option<NeighSet>,
}

/// The Open vSwitch backend.
pub struct OpenVswitch {
    cfg: NetworkConfig,
    ovs: Ovs,
    state: Mutex<State>,
}

impl OpenVswitch {
    /// A backend with these settings; its Open vSwitch keeps its files in `ovs_dir`.
    pub fn new(cfg: NetworkConfig, ovs_dir: PathBuf) -> OpenVswitch {
        OpenVswitch { cfg, ovs: Ovs::new(&ovs_dir, "plinth"), state: Mutex::new(State::default()) }
    }

    /// The alias of the links this backend makes in the agent's namespace.
    fn link_alias(&self) -> String {
        format!("plinth-ovs {}", self.cfg.owner)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bridge's interfaces, by name.
    fn interfaces(&self) -> Result<BTreeMap<String, Iface>, String> {
        let text = self.ovs.vsctl(&["--format=json", "--columns=name,ofport,external_ids", "list", "Interface"])?;
        let v = cmd::json(&text)?;
        let mut out = BTreeMap::new();
        for row in v["data"].as_array().into_iter().flatten() {
            let Some(name) = row[0].as_str() else { continue };
            let ext: BTreeMap<&str, &str> = row[2][1]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|kv| Some((kv[0].as_str()?, kv[1].as_str()?)))
                .collect();
            out.insert(
                name.to_owned(),
                Iface { ofport: row[1].as_i64().unwrap_or(-1), ns: ext.get("plinth-ns").map(|s| (*s).to_owned()) },
            );
        }
        Ok(out)
    }

    /// Converges the whole host (see [`HostNetwork`]).
    fn converge(&self, spec: &HostNetworkSpec, verify: bool) -> ObservedNetwork {
        let mut st = self.state();
        let started = std::time::Instant::now();
        let failed_all = |e: String| ObservedNetwork {
            generation: spec.generation,
            vtep: Some(self.cfg.underlay_ip.clone()),
            nics: spec.vpcs.iter().flat_map(|v| v.nics.iter()).map(|n| failed(&n.nic_id, &e)).collect(),
        };
        if verify || !st.started {
            if let Err(e) = self.ovs.ensure() {
                st.started = false;
                return failed_all(format!("Open vSwitch: {e}"));
            }
            st.started = true;
        }
        if verify {
            st.flows = None;
        }
        let cached = if verify { None } else { st.host.take().zip(st.ifaces.take()) };
        let (host, mut ifaces) = match cached {
            Some(x) => x,
            None => match links::read(None).and_then(|h| Ok((h, self.interfaces()?))) {
                Ok(x) => x,
                Err(e) => return failed_all(e),
            },
        };
        let mut nl = match rtnl::Rtnl::open_own() {
            Ok(nl) => nl,
            Err(e) => return failed_all(e),
        };
        // Links first, every VPC; then the ports join the bridge in one transaction.
        let mut plans = Vec::new();
        let mut adds = Vec::new();
        let mut rejected = Vec::new();
        let mut made = BTreeMap::new();
        for vpc in &spec.vpcs {
            match VpcPlan::new(&self.cfg.netns_prefix, &self.cfg.underlay_ip, vpc) {
                Ok(plan) => {
                    let prior = st.vpcs.get(&plan.ns);
                    let err = self.links(&plan, prior, verify, &host, &ifaces, &mut nl, &mut adds, &mut made);
                    plans.push((plan, err));
                }
                Err(e) => rejected.extend(vpc.nics.iter().map(|n| (n.nic_id.clone(), e.clone()))),
            }
        }
        if !adds.is_empty() {
            // Removals first (ports whose link was made anew), then every addition.
            let (dels, adds): (Vec<&Vec<String>>, Vec<&Vec<String>>) = adds.iter().partition(|op| op[1] == "del-port");
            let batch = |ops: &[&Vec<String>]| -> Result<(), String> {
                if ops.is_empty() {
                    return Ok(());
                }
                let mut args: Vec<&str> = Vec::new();
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        args.push("--");
                    }
                    args.extend(op.iter().map(String::as_str));
                }
                self.ovs.vsctl(&args).map(drop)
            };
            let added = batch(&dels).and_then(|()| batch(&adds));
            match added.and_then(|_| self.interfaces()) {
                Ok(now) => ifaces = now,
                Err(e) => {
                    for (_, err) in &mut plans {
                        err.all.get_or_insert_with(|| format!("adding ports to the bridge: {e}"));
                    }
                }
            }
        }
        // The NICs' ports as the bridge numbers them now.
        let mut nic_ports: BTreeMap<NicId, (String, u32)> = BTreeMap::new();
        for (plan, err) in &plans {
            for n in &plan.nics {
                let name = port_name(plan.spec.vni, &n.spec.device);
                match ifaces.get(&name).map(|i| i.ofport) {
                    Some(p) if p > 0 && !err.nic.contains_key(&n.spec.nic_id) => {
                        nic_ports.insert(n.spec.nic_id.clone(), (name, p as u32));
                    }
                    _ => {}
                }
            }
        }
        // Zones of new NICs start empty (a number a deleted port used may come back).
        for (id, (_, zone)) in &nic_ports {
            if st.zones.get(id) != Some(zone) {
                let _ = self.ovs.appctl(&["dpctl/flush-conntrack", &format!("zone={zone}")]);
                st.zones.insert(id.clone(), *zone);
            }
        }
        let links_at = started.elapsed();
        // The flows, whole bridge, one bundle.
        let mut table = flows::base();
        let mut conj_ids = 0;
        let mut allowed = BTreeMap::new();
        for (plan, _) in &plans {
            let gateways: BTreeMap<u32, String> = plan
                .subnets
                .iter()
                .map(|s| (s.index, gateway_name(plan.spec.vni, s.index)))
                .filter(|(_, g)| ifaces.get(g).is_some_and(|i| i.ofport > 0))
                .collect();
            let vx_ok = plan
                .subnets
                .iter()
                .filter_map(|s| s.vxlan.as_ref())
                .all(|(vx, _)| ifaces.get(vx).is_some_and(|i| i.ofport > 0));
            if !vx_ok {
                continue;
            }
            for (i, n) in plan.nics.iter().enumerate() {
                allowed.insert(n.spec.nic_id.clone(), Allowed::of(plan, i));
            }
            let ports = flows::Ports { nics: &nic_ports, gateways: &gateways, allowed: &allowed };
            flows::render(plan, &ports, &mut conj_ids, &mut table);
        }
        let rendered_at = started.elapsed();
        let loaded = match &st.flows {
            Some(old) if *old == table => Ok(()),
            Some(old) => {
                self.ovs.ofctl(&["--bundle", "add-flows", "{bridge}", "-"], Some(&flows::delta(old, &table))).map(drop)
            }
            None => Err(String::new()),
        };
        let loaded = match loaded {
            Ok(()) => Ok(()),
            Err(_) => {
                self.ovs.ofctl(&["--bundle", "replace-flows", "{bridge}", "-"], Some(&flows::full(&table))).map(drop)
            }
        };
        let loaded_at = started.elapsed();
        let flow_err = match loaded {
            Ok(()) => {
                st.flows = Some(table);
                // Connections a change no longer allows stop: one dump of the zones whose
                // NIC lost an allowance.
                let mut judged: BTreeMap<u32, (std::net::Ipv4Addr, &Allowed)> = BTreeMap::new();
                for id in flows::shrunk(&st.allowed, &allowed) {
                    let addr = plans
                        .iter()
                        .flat_map(|(p, _)| p.nics.iter())
                        .find(|n| n.spec.nic_id == id)
                        .and_then(|n| n.spec.ipv4.parse().ok());
                    if let (Some((_, zone)), Some(a), Some(addr)) = (nic_ports.get(&id), allowed.get(&id), addr) {
                        judged.insert(*zone, (addr, a));
                    }
                }
                if !judged.is_empty()
                    && let Err(e) = conntrack::cut(&self.ovs, &judged)
                {
                    tracing::warn!(error = %e, "cutting connections");
                }
                st.allowed = allowed;
                None
            }
            Err(e) => {
                st.flows = None;
                Some(format!("loading flows: {e}"))
            }
        };
        let flows_at = started.elapsed();
        // The VPC namespaces' own parts: DHCP, router, counters, nftables.
        let mut nics = Vec::new();
        // Every VPC of the spec keeps its namespace (one whose plan failed too), and every
        // port its plans name (a NIC that failed to plug included).
        let wanted_ns: BTreeSet<String> =
            spec.vpcs.iter().map(|v| format!("{}{}", self.cfg.netns_prefix, v.vni)).collect();
        let mut wanted_ports: BTreeSet<String> = BTreeSet::new();
        for (plan, _) in &plans {
            let vni = plan.spec.vni;
            for s in &plan.subnets {
                wanted_ports.insert(gateway_name(vni, s.index));
                wanted_ports.extend(s.vxlan.as_ref().map(|(vx, _)| vx.clone()));
            }
            wanted_ports.extend(plan.nics.iter().map(|n| port_name(vni, &n.spec.device)));
        }
        // The agent namespace's links after the apply: read back by a verifying apply
        // (unreadable: every port reads as missing), else as read before with what this
        // apply made or raised.
        let host_now = if verify {
            links::read(None).unwrap_or_default()
        } else {
            let mut h = host.clone();
            for (name, (kind, mtu)) in &made {
                let l =
                    h.entry(name.clone()).or_insert_with(|| links::Link { name: name.clone(), ..Default::default() });
                l.kind = (*kind).to_owned();
                l.up = true;
                l.mtu = *mtu;
                if *kind == "vxlan" {
                    l.vxlan_id = name.strip_prefix("vx").and_then(|v| v.parse().ok());
                    l.vxlan_local = Some(self.cfg.underlay_ip.clone());
                }
            }
            h
        };
        for (plan, mut err) in plans {
            let ns = plan.ns.clone();
            let prior = st.vpcs.remove(&ns).unwrap_or_default();
            let vs = self.namespace(&plan, prior, verify, &mut err);
            err.filter = err.filter.take().or_else(|| flow_err.clone());
            nics.extend(self.observe(&plan, &err, &vs, &host_now, &ifaces, &nic_ports, st.flows.is_some()));
            st.vpcs.insert(ns, vs);
        }
        for (id, e) in rejected {
            nics.push(failed(&id, &e));
        }
        // What is no longer wanted goes, after the flows that used it.
        let mut dels: Vec<String> = Vec::new();
        for (name, i) in &ifaces {
            let Some(ns) = &i.ns else { continue };
            if !ns.starts_with(&self.cfg.netns_prefix) {
                continue;
            }
            let stale = if !wanted_ns.contains(ns) {
                self.cfg.owns(ns) || !links::ns_exists(ns)
            } else {
                !wanted_ports.contains(name)
            };
            if stale {
                dels.push(name.clone());
            }
        }
        for name in &dels {
            let _ = self.ovs.vsctl(&["--if-exists", "del-port", &self.ovs.bridge, name]);
            let _ = cmd::ip(None, &["link", "del", name]);
        }
        // Links this backend made that no port records and no plan names (a crash between
        // making a link and adding its port, then the NIC deleted): found by their alias.
        if verify {
            let alias = self.link_alias();
            for (name, l) in &host {
                if l.alias.as_deref() == Some(alias.as_str())
                    && !wanted_ports.contains(name)
                    && !ifaces.contains_key(name)
                {
                    tracing::info!(link = %name, "removing a link no port or NIC names");
                    let _ = cmd::ip(None, &["link", "del", name]);
                }
            }
        }
        let gone: Vec<NicId> = st.zones.keys().filter(|id| !nic_ports.contains_key(*id)).cloned().collect();
        for id in gone {
            if let Some(zone) = st.zones.remove(&id) {
                let _ = self.ovs.appctl(&["dpctl/flush-conntrack", &format!("zone={zone}")]);
            }
        }
        let present: Vec<String> =
            if verify { self.cfg.present_namespaces() } else { st.vpcs.keys().cloned().collect() };
        for ns in present {
            if !wanted_ns.contains(&ns) {
                if let Err(e) = self.cfg.teardown(&ns) {
                    tracing::warn!(namespace = %ns, error = %e, "tearing down a VPC namespace failed");
                }
                st.vpcs.remove(&ns);
            }
        }
        tracing::debug!(
            verify,
            links_ms = links_at.as_millis() as u64,
            render_ms = (rendered_at - links_at).as_millis() as u64,
            load_ms = (loaded_at - rendered_at).as_millis() as u64,
            cut_ms = (flows_at - loaded_at).as_millis() as u64,
            rest_ms = (started.elapsed() - flows_at).as_millis() as u64,
            flows = st.flows.as_ref().map_or(0, |f| f.len()),
            "OVS data path applied"
        );
        // Trusted by the next change apply unless something failed (it then reads back).
        let clean = nics.iter().all(|n| n.components.iter().all(|c| c.applied));
        if clean && dels.is_empty() {
            st.host = Some(host_now);
            st.ifaces = Some(ifaces);
        }
        ObservedNetwork { generation: spec.generation, vtep: Some(self.cfg.underlay_ip.clone()), nics }
    }

    /// Converges the VPC namespace's own parts from `prior` (trusted unless `verify`).
    fn namespace(&self, plan: &VpcPlan, prior: VpcState, verify: bool, err: &mut VpcErrors) -> VpcState {
        let ns = plan.ns.as_str();
        let ruleset = filter::render_router(plan);
        let loaded = match filter::apply(
            ns,
            prior.loaded.as_ref(),
            ruleset,
            if verify { filter::Check::Read } else { filter::Check::Trust },
            &std::sync::Mutex::default(),
            &super::nft_shell::Nft::default(),
        ) {
            Ok(l) => {
                if let Some(old) = &prior.loaded {
                    filter::cut_connections(ns, &old.ruleset, &l.ruleset);
                }
                Some(l)
            }
            Err(e) => {
                err.filter = Some(e);
                None
            }
        };
        let (router, routed) = router::converge(
            ns,
            plan.spec.vni,
            self.cfg.provider_bridge.as_deref(),
            &router::desired(plan),
            if verify { None } else { prior.router.as_ref() },
        );
        err.router = routed.err();
        let (meter, metered) =
            meter::converge(ns, &meter::desired(plan), if verify { None } else { prior.meter.as_ref() });
        if let Err(e) = metered {
            tracing::warn!(namespace = ns, error = %e, "egress counters");
        }
        let vpc_dir = self.cfg.vpc_dir(ns);
        let known = if verify { dhcp::Hosts::new() } else { prior.dhcp };
        let (dhcp_err, hosts) = dhcp::converge(plan, &vpc_dir, known);
        err.dhcp = dhcp_err;
        VpcState {
            loaded,
            dhcp: hosts,
            router: err.router.is_none().then_some(router),
            meter: Some(meter),
            ports: plan
                .nics
                .iter()
                .map(|n| (n.spec.nic_id.clone(), n.spec.device.clone(), n.spec.ipv4.clone()))
                .collect(),
            host_ports: plan
                .nics
                .iter()
                .map(|n| (n.spec.device.clone(), port_name(plan.spec.vni, &n.spec.device)))
                .collect(),
            fdb: err.fdb_view.take(),
            neigh: err.neigh_view.take(),
        }
    }
}

impl HostNetwork for OpenVswitch {
    fn apply(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        self.converge(spec, true)
    }

    fn apply_change(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        self.converge(spec, false)
    }

    fn counter_period(&self) -> Option<std::time::Duration> {
        Some(self.cfg.counter_period)
    }

    fn counters(&self) -> Vec<meter::Reading> {
        let vpcs: Vec<(String, VpcState)> = self.state().vpcs.iter().map(|(ns, v)| (ns.clone(), v.clone())).collect();
        let mut out = Vec::new();
        for (ns, v) in vpcs {
            match meter::sample(&ns, &v.ports, Some(&v.host_ports)) {
                Ok(r) => out.extend(r),
                Err(e) => tracing::warn!(namespace = %ns, error = %e, "reading egress counters"),
            }
        }
        out
    }

    fn datapath(&self) -> &'static str {
        DATAPATH
    }
}

impl TapOpener for OpenVswitch {
    fn open_tap(&self, vni: u32, device: &str) -> std::io::Result<std::os::fd::OwnedFd> {
        tap::open_existing_plain(Path::new(OWN_NS), &port_name(vni, device))
    }
}
