//! Links of a VPC namespace: reading them back (two rtnetlink dumps, [`read`]) and
//! converging the namespace, the subnets' bridges and VXLAN devices, and the NIC ports to
//! the plan, changing only what differs.
//!
//! Ports are created detached and down; [`attach_ports`] enslaves and raises one only after
//! the filter batch holding its rules loaded (a port never carries unfiltered traffic) and
//! its guard is attached ([`super::guard::converge`]); a VXLAN device gets its guard after
//! it is moved into the namespace and before it joins its bridge. Reading the links back
//! also reads which ports and VXLAN devices carry the guard (`bpf(2)`, no process).

use super::cmd;
use super::guard;
use super::plan::{NicPlan, VpcPlan};
use super::rtnl::Rtnl;
use super::tap;
use plinth_api::NicPlug;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One link as read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Link {
    /// Its name.
    pub name: String,
    /// `bridge`, `vxlan`, `veth`, `tun` (taps), … (`""`: none).
    pub kind: String,
    /// The bridge it is a port of.
    pub master: Option<String>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Its MAC address.
    pub mac: String,
    /// A VXLAN device's VNI.
    pub vxlan_id: Option<u64>,
    /// A VXLAN device's source (underlay) address.
    pub vxlan_local: Option<String>,
    /// IPv4 addresses with their prefix (`10.0.0.1/24`).
    pub addrs: Vec<String>,
    /// Carries the fail-closed guard at its egress ([`super::guard`]; a `bpf(2)` query,
    /// `ip` does not show it). Read for ports and VXLAN devices of a VPC namespace only.
    pub guarded: bool,
    /// As a bridge port: whether unknown unicast is flooded to it (`None`: not a port).
    pub flood: Option<bool>,
    /// Its alias (`ip link set … alias`), which the Open vSwitch backend uses to mark the
    /// links it made in the agent's namespace.
    pub alias: Option<String>,
}

/// The path of a named namespace.
pub fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(ns)
}

/// Whether the named namespace exists.
pub fn ns_exists(ns: &str) -> bool {
    ns_path(ns).exists()
}

/// Every link of the namespace (`None`: the agent's own), by name: one rtnetlink dump of
/// the links and one of their IPv4 addresses (`ip -j -d link show` and `ip -j -4 addr
/// show` took 140–215 ms at 1,100 NICs, most of a verification's read-back).
pub fn read(ns: Option<&str>) -> Result<BTreeMap<String, Link>, String> {
    let mut nl = match ns {
        Some(ns) => super::rtnl::Rtnl::open(ns)?,
        None => super::rtnl::Rtnl::open_own()?,
    };
    let mut out = nl.links()?;
    if let Some(ns) = ns {
        let carriers = out.values().filter(|l| guard::KINDS.contains(&l.kind.as_str())).map(|l| l.name.clone());
        for name in guard::query(ns, carriers.collect())? {
            if let Some(l) = out.get_mut(&name) {
                l.guarded = true;
            }
        }
    }
    Ok(out)
}

/// Makes the namespace if missing, and sets its forwarding and bridge-netfilter knobs.
pub fn ensure_ns(ns: &str) -> Result<(), String> {
    if !ns_exists(ns) {
        cmd::ip(None, &["netns", "add", ns])?;
    }
    cmd::ip(Some(ns), &["link", "set", "lo", "up"])?;
    for (key, value) in [("net/ipv4/ip_forward", "1"), ("net/bridge/bridge-nf-call-iptables", "1")] {
        let path = format!("/proc/sys/{key}");
        let now = cmd::in_ns(ns, "cat", &[&path], None).unwrap_or_default();
        if now.trim() != value {
            cmd::in_ns(ns, "sysctl", &["-qw", &format!("{}={value}", key.replace('/', "."))], None)?;
        }
    }
    Ok(())
}

/// Makes VXLAN device `vx` (VNI `vni`, source `underlay`, the standard port, no
/// learning: the FDB is static) in the agent's namespace.
pub fn add_vxlan(vx: &str, vni: u32, underlay: &str) -> Result<(), String> {
    let id = vni.to_string();
    cmd::ip(None, &["link", "add", vx, "type", "vxlan", "id", &id, "local", underlay, "dstport", "4789", "nolearning"])
        .map(drop)
}

/// Converges bridges and VXLAN devices; answers per-subnet errors (by bridge name), and
/// whether it ran any command (the links must then be read again).
pub fn converge_segments(
    plan: &VpcPlan,
    underlay: &str,
    links: &BTreeMap<String, Link>,
) -> (BTreeMap<String, String>, bool) {
    let ns = plan.ns.as_str();
    let mut errors = BTreeMap::new();
    let mut changed = false;
    let ip = |changed: &mut bool, ns: Option<&str>, args: &[&str]| {
        *changed = true;
        cmd::ip(ns, args)
    };
    for s in &plan.subnets {
        let r = (|| -> Result<(), String> {
            let changed = &mut changed;
            let br = links.get(&s.bridge);
            if br.is_some_and(|b| b.kind != "bridge") {
                ip(changed, Some(ns), &["link", "del", &s.bridge])?;
            }
            let br = br.filter(|b| b.kind == "bridge");
            if br.is_none() {
                ip(changed, Some(ns), &["link", "add", &s.bridge, "type", "bridge"])?;
            }
            let mtu = s.mtu.to_string();
            if br.is_none_or(|b| b.mtu != s.mtu || !b.mac.eq_ignore_ascii_case(&s.mac) || !b.up) {
                ip(changed, Some(ns), &["link", "set", &s.bridge, "address", &s.mac, "mtu", &mtu, "up"])?;
            }
            if br.is_none_or(|b| !b.addrs.contains(&s.gateway_cidr)) {
                ip(changed, Some(ns), &["addr", "replace", &s.gateway_cidr, "dev", &s.bridge])?;
            }
            if let Some((vx, vni)) = &s.vxlan {
                let cur = links.get(vx);
                let good = cur.is_some_and(|l| {
                    l.kind == "vxlan"
                        && l.vxlan_id == Some(u64::from(*vni))
                        && l.vxlan_local.as_deref() == Some(underlay)
                });
                if cur.is_some() && !good {
                    ip(changed, Some(ns), &["link", "del", vx])?;
                }
                if !good {
                    // Made in the agent's namespace (its UDP socket stays on the underlay),
                    // then moved into the VPC namespace.
                    if read_one(None, vx).is_some() {
                        ip(changed, None, &["link", "del", vx])?;
                    }
                    *changed = true;
                    add_vxlan(vx, *vni, underlay)?;
                    if let Err(e) = ip(changed, None, &["link", "set", vx, "netns", ns]) {
                        let _ = ip(changed, None, &["link", "del", vx]);
                        return Err(e);
                    }
                }
                let cur = if good { cur } else { None };
                if cur.is_none_or(|l| l.mtu != s.mtu || l.master.as_deref() != Some(&s.bridge) || !l.up) {
                    // The guard goes on before the device joins the bridge and comes up.
                    if !cur.is_some_and(|l| l.guarded) {
                        guard::ensure(ns, std::slice::from_ref(vx)).into_values().collect::<Result<(), String>>()?;
                    }
                    ip(changed, Some(ns), &["link", "set", vx, "mtu", &mtu, "master", &s.bridge, "up"])?;
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            errors.insert(s.bridge.clone(), e);
        }
    }
    // Bridges and VXLAN devices of subnets no longer in the spec.
    for l in links.values() {
        let wanted_br = plan.subnets.iter().any(|s| s.bridge == l.name);
        let wanted_vx = plan.subnets.iter().any(|s| s.vxlan.as_ref().is_some_and(|(v, _)| *v == l.name));
        if (l.kind == "bridge" && !wanted_br) || (l.kind == "vxlan" && !wanted_vx) {
            let _ = ip(&mut changed, Some(ns), &["link", "del", &l.name]);
        }
    }
    (errors, changed)
}

/// One link of the namespace, if present.
fn read_one(ns: Option<&str>, name: &str) -> Option<Value> {
    let text = cmd::ip(ns, &["-j", "link", "show", "dev", name]).ok()?;
    cmd::json(&text).ok()?.as_array()?.first().cloned()
}

/// Makes the ports that are missing (detached and down) and deletes ports that are not
/// in the plan, recording both in `links` (over rtnetlink: [`super::rtnl`]). Answers
/// per-device creation errors.
pub fn converge_ports(plan: &VpcPlan, nl: &mut Rtnl, links: &mut BTreeMap<String, Link>) -> BTreeMap<String, String> {
    let ns = plan.ns.as_str();
    let mut errors = BTreeMap::new();
    for n in &plan.nics {
        let dev = n.spec.device.as_str();
        let want_kind = match n.spec.plug {
            NicPlug::Tap => "tun",
            NicPlug::Veth => "veth",
        };
        let r = (|| -> Result<(), String> {
            if let Some(cur) = links.get(dev) {
                if cur.kind == want_kind {
                    return Ok(());
                }
                nl.del_link(dev)?;
                links.remove(dev);
            }
            match n.spec.plug {
                NicPlug::Tap => {
                    if let Some(spare) = take_spare(nl, links, dev)? {
                        nl.set_link(dev, Some(n.mtu), None, false)?;
                        links.insert(dev.to_owned(), Link { mtu: n.mtu, ..spare });
                        return Ok(());
                    }
                    tap::create_persistent(&ns_path(ns), dev).map_err(|e| format!("creating tap {dev}: {e}"))?;
                    nl.set_link(dev, Some(n.mtu), None, false)?;
                }
                NicPlug::Veth => {
                    let far = format!("{dev}g");
                    if links.contains_key(&far) {
                        nl.del_link(&far)?;
                        links.remove(&far);
                    }
                    nl.add_veth(dev, &far, n.mtu, &n.spec.mac)?;
                    let far_end = Link { name: far.clone(), kind: "veth".into(), mtu: n.mtu, ..Link::default() };
                    links.insert(far, far_end);
                }
            }
            links.insert(
                dev.to_owned(),
                Link { name: dev.to_owned(), kind: want_kind.into(), mtu: n.mtu, ..Link::default() },
            );
            Ok(())
        })();
        if let Err(e) = r {
            errors.insert(dev.to_owned(), e);
        }
    }
    let mut wanted: BTreeSet<String> = plan
        .nics
        .iter()
        .flat_map(|n| {
            let far = (n.spec.plug == NicPlug::Veth).then(|| format!("{}g", n.spec.device));
            std::iter::once(n.spec.device.clone()).chain(far)
        })
        .collect();
    if wants_spares(plan) {
        wanted.extend(spare_names());
    }
    // The router's uplink is [`super::router`]'s.
    wanted.insert(super::router::UPLINK.to_owned());
    let unwanted: Vec<String> = links
        .values()
        .filter(|l| (l.kind == "veth" || l.kind == "tun") && !wanted.contains(&l.name))
        .map(|l| l.name.clone())
        .collect();
    for name in unwanted {
        // Deleting one end of a veth deletes the other: both go from the view.
        let _ = nl.del_link(&name);
        links.remove(&name);
        if let Some(near) = name.strip_suffix('g') {
            links.remove(near);
        }
        links.remove(&format!("{name}g"));
    }
    errors
}

/// Name prefix of the spare taps ([`SPARES`] per VPC namespace with a tap NIC: `sp0`,
/// `sp1`). Made and guarded after an apply's ports joined their bridges, so the next tap
/// NIC is a rename (`ip link set sp0 name n<port>`: no grace period) instead of a new tap
/// whose guard waits out an RCU grace period while holding RTNL (10–30 ms on a busy host),
/// the largest step between a NIC's spec arriving and its port joining the bridge.
pub const SPARE_PREFIX: &str = "sp";

/// Spare taps kept per VPC namespace that has a tap NIC.
pub const SPARES: usize = 2;

/// The spare taps' names.
pub fn spare_names() -> impl Iterator<Item = String> {
    (0..SPARES).map(|k| format!("{SPARE_PREFIX}{k}"))
}

/// Whether the plan keeps spare taps (it has a tap NIC: instances' NICs are taps).
pub fn wants_spares(plan: &VpcPlan) -> bool {
    plan.nics.iter().any(|n| n.spec.plug == NicPlug::Tap)
}

/// Renames a ready spare (a guarded tap, detached and down) to `dev` and answers its link
/// as it is now (`None`: no spare ready).
fn take_spare(nl: &mut Rtnl, links: &mut BTreeMap<String, Link>, dev: &str) -> Result<Option<Link>, String> {
    let ready = |l: &Link| l.kind == "tun" && l.guarded && l.master.is_none() && !l.up;
    let Some(name) = spare_names().find(|s| links.get(s).is_some_and(ready)) else { return Ok(None) };
    nl.rename(&name, dev)?;
    let link = links.remove(&name).map(|l| Link { name: dev.to_owned(), ..l });
    Ok(link)
}

/// Makes the missing spare taps of a plan that keeps them ([`wants_spares`]) and guards
/// those without the guard, recording both in `links`; a spare that could not be made or
/// guarded is only not used (the next tap is made directly). Answers what failed.
pub fn replenish_spares(plan: &VpcPlan, links: &mut BTreeMap<String, Link>) -> Vec<String> {
    if !wants_spares(plan) {
        return Vec::new();
    }
    let mut errors = Vec::new();
    for name in spare_names() {
        if links.contains_key(&name) {
            continue;
        }
        match tap::create_persistent(&ns_path(&plan.ns), &name) {
            Ok(()) => {
                links.insert(name.clone(), Link { name, kind: "tun".into(), mtu: tap::NEW_TAP_MTU, ..Link::default() });
            }
            Err(e) => errors.push(format!("making spare tap {name}: {e}")),
        }
    }
    let unguarded: Vec<String> =
        spare_names().filter(|s| links.get(s).is_some_and(|l| l.kind == "tun" && !l.guarded)).collect();
    for (name, r) in guard::ensure(&plan.ns, &unguarded) {
        match r {
            Ok(()) => {
                if let Some(l) = links.get_mut(&name) {
                    l.guarded = true;
                }
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// Enslaves each port to its bridge with the subnet MTU and raises it (when it differs),
/// recording that in `links`; answers the ports that failed, with why.
///
/// A NIC port gets no unknown-unicast flooding and a static bridge FDB entry for the NIC's
/// MAC: frames reach a NIC because the bridge knows its MAC, never by flooding. Without
/// this, a frame to a MAC the bridge has not learned (a guest that has not spoken yet, a
/// remote one before its first frame) is copied to every port of the subnet: measured at
/// 1,000 NICs per host, one prober's SYNs became ~290,000 packets a second into the
/// ports, and the host stopped answering ARP at all.
pub fn attach_ports(nl: &mut Rtnl, nics: &[&NicPlan], links: &mut BTreeMap<String, Link>) -> BTreeMap<String, String> {
    let mut errors = BTreeMap::new();
    for n in nics {
        if let Err(e) = attach_port(nl, n, links) {
            errors.insert(n.spec.device.clone(), e);
        }
    }
    errors
}

/// [`attach_ports`] for one port.
fn attach_port(nl: &mut Rtnl, n: &NicPlan, links: &mut BTreeMap<String, Link>) -> Result<(), String> {
    let dev = n.spec.device.as_str();
    let cur = links.get(dev);
    let enslaved = cur.is_some_and(|l| l.master.as_deref() == Some(&n.bridge) && l.mtu == n.mtu && l.up);
    if enslaved && cur.is_some_and(|l| l.flood == Some(false)) {
        return Ok(());
    }
    if !enslaved {
        nl.set_link(dev, Some(n.mtu), Some(&n.bridge), true).map_err(|e| full_bridge(n, e))?;
    }
    nl.set_flood(dev, false)?;
    nl.bridge_fdb(dev, &n.spec.mac.to_ascii_lowercase())?;
    // The far end, while it is still in the VPC namespace, comes up with it (it may have
    // been moved to a guest since it was seen: then it is not ours to raise, and it leaves
    // the view).
    let far = format!("{dev}g");
    if n.spec.plug == NicPlug::Veth && links.contains_key(&far) {
        if nl.set_link(&far, None, None, true).is_ok() {
            links.entry(far).and_modify(|l| l.up = true);
        } else {
            links.remove(&far);
        }
    }
    if let Some(l) = links.get_mut(dev) {
        l.master = Some(n.bridge.clone());
        l.mtu = n.mtu;
        l.up = true;
        l.flood = Some(false);
    }
    Ok(())
}

/// A full bridge's refusal (`EXFULL`) said plainly; other errors as they are.
fn full_bridge(n: &NicPlan, e: String) -> String {
    if e.contains("Exchange full") {
        format!(
            "bridge {} is full: a Linux bridge takes at most {BRIDGE_MAX_PORTS} ports (its subnet's NICs on this host, \
             and the VXLAN device); place this NIC on another host ({e})",
            n.bridge
        )
    } else {
        e
    }
}

/// Ports a Linux bridge takes (`BR_MAX_PORTS` less the reserved port number 0): one
/// more is refused with `EXFULL`.
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// Deletes a VPC namespace (its links go with it; VXLAN devices are virtual, so they go
/// too rather than fall back to the agent's namespace).
pub fn delete_ns(ns: &str) -> Result<(), String> {
    if ns_exists(ns) {
        cmd::ip(None, &["netns", "del", ns])?;
    }
    Ok(())
}
