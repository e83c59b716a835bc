//! The Open vSwitch backend's links in the agent's namespace and the VPC namespace: each
//! subnet's gateway leg and VXLAN port, each NIC's port (tap or veth, offloads off), the
//! static FDB and neighbours, and which of them join the bridge.

use super::{Iface, OWN_NS, OpenVswitch, VpcErrors, VpcState, gateway_name, port_name};
use crate::network::plan::{NicPlan, VpcPlan};
use crate::network::{cmd, fdb, links, rtnl, tap};
use plinth_api::{NicId, NicPlug};
use std::collections::BTreeMap;
use std::path::Path;

/// Runs `ethtool -K dev …off` (in `ns`, or the agent's namespace): the userspace datapath
/// neither segments nor checksums, so neither end may leave that to it.
fn offloads_off(ns: Option<&str>, dev: &str) -> Result<(), String> {
    let args = ["-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off"];
    match ns {
        Some(ns) => cmd::in_ns(ns, "ethtool", &args, None).map(drop),
        None => cmd::run("ethtool", &args, None).map(drop),
    }
}

/// Turns IPv6 off on a link of the agent's namespace (its own router solicitations and
/// MLD reports would otherwise reach the guest).
fn no_ipv6(dev: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
}

impl OpenVswitch {
    /// Marks link `name` of the agent's namespace as this backend's (its alias), so that a
    /// verifying apply finds it even when no bridge port records it (a crash between the
    /// link and the port).
    fn mark(&self, name: &str) -> Result<(), String> {
        cmd::ip(None, &["link", "set", "dev", name, "alias", &self.link_alias()]).map(drop)
    }

    /// Makes a veth `name` (agent's namespace) ↔ `far` (in `ns`), offloads off both ends.
    /// The far end is made here under a name of its own, set up, and only then moved and
    /// named `far`: a namespace guest takes `far` the moment it appears.
    fn veth(&self, name: &str, far: &str, ns: &str, mtu: u32, far_mac: &str) -> Result<(), String> {
        let m = mtu.to_string();
        let tmp = format!("w{}", &name[1..]);
        let _ = cmd::ip(None, &["link", "del", &tmp]);
        cmd::ip(
            None,
            &["link", "add", name, "mtu", &m, "type", "veth", "peer", "name", &tmp, "mtu", &m, "address", far_mac],
        )?;
        let made = (|| -> Result<(), String> {
            self.mark(name)?;
            offloads_off(None, name)?;
            offloads_off(None, &tmp)?;
            no_ipv6(name);
            cmd::ip(None, &["link", "set", "dev", &tmp, "netns", ns])?;
            cmd::ip(Some(ns), &["link", "set", "dev", &tmp, "name", far]).map(drop)
        })();
        if made.is_err() {
            let _ = cmd::ip(None, &["link", "del", name]);
        }
        made
    }

    /// Converges one VPC's links (namespace, gateway legs, VXLAN devices, NIC ports), its
    /// FDB and neighbours; collects the ports to add to the bridge into `adds`.
    /// A change apply (`prior` known, not `verify`) trusts that what the last apply left
    /// is still there: it runs commands only for what is new or differs from `host` (the
    /// agent namespace's links, read once per apply), and records the links it made or
    /// raised in `made` (name → kind) instead of reading them back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn links(
        &self,
        plan: &VpcPlan,
        prior: Option<&VpcState>,
        verify: bool,
        host: &BTreeMap<String, links::Link>,
        ifaces: &BTreeMap<String, Iface>,
        nl: &mut rtnl::Rtnl,
        adds: &mut Vec<Vec<String>>,
        made: &mut BTreeMap<String, (&'static str, u32)>,
    ) -> VpcErrors {
        let mut err = VpcErrors::default();
        let ns = plan.ns.as_str();
        let vni = plan.spec.vni;
        let known = prior.filter(|_| !verify);
        if known.is_none()
            && let Err(e) = self.cfg.claim(ns).and_then(|()| links::ensure_ns(ns))
        {
            err.all = Some(e);
            return err;
        }
        let good =
            |name: &str, kind: &str, mtu: u32| host.get(name).is_some_and(|l| l.kind == kind && l.up && l.mtu == mtu);
        // A port joins the bridge when the database lacks it, and joins again when its link
        // was made anew (ovs-vswitchd keeps the vanished device's socket otherwise).
        // A port the database holds without a number (its device was gone when
        // ovs-vswitchd looked) joins again too.
        let add = |adds: &mut Vec<Vec<String>>, name: &str, nic: Option<&NicId>, fresh: bool| {
            if fresh || ifaces.get(name).is_none_or(|i| i.ofport <= 0) {
                let mut ext = format!("external_ids:plinth-ns={ns}");
                if let Some(n) = nic {
                    ext.push_str(&format!(" external_ids:plinth-nic={n}"));
                }
                let b = self.ovs.bridge.as_str();
                if ifaces.contains_key(name) {
                    // Out in a transaction of its own: removed and added in one, the port
                    // would read as unchanged.
                    adds.push(["--if-exists", "del-port", b, name].map(String::from).to_vec());
                }
                let mut op: Vec<String> =
                    ["add-port", b, name, "--", "set", "Interface", name].map(String::from).to_vec();
                op.extend(ext.split(' ').map(String::from));
                adds.push(op);
            }
        };
        let underlay = self.cfg.underlay_ip.as_str();
        for s in &plan.subnets {
            let g = gateway_name(vni, s.index);
            let r = (|| -> Result<(), String> {
                let fresh = host.get(&g).is_none_or(|l| l.kind != "veth");
                if fresh {
                    if host.contains_key(&g) {
                        cmd::ip(None, &["link", "del", &g])?;
                    }
                    let _ = cmd::ip(Some(ns), &["link", "del", &s.bridge]);
                    self.veth(&g, &s.bridge, ns, s.mtu, &s.mac)?;
                }
                let m = s.mtu.to_string();
                if fresh || !good(&g, "veth", s.mtu) {
                    cmd::ip(None, &["link", "set", &g, "mtu", &m, "up"])?;
                    made.insert(g.clone(), ("veth", s.mtu));
                }
                if fresh || known.is_none() {
                    cmd::ip(Some(ns), &["link", "set", &s.bridge, "address", &s.mac, "mtu", &m, "up"])?;
                    cmd::ip(Some(ns), &["addr", "replace", &s.gateway_cidr, "dev", &s.bridge])?;
                }
                add(adds, &g, None, fresh);
                if let Some((vx, id)) = &s.vxlan {
                    let same = host.get(vx).is_some_and(|l| {
                        l.kind == "vxlan"
                            && l.vxlan_id == Some(u64::from(*id))
                            && l.vxlan_local.as_deref() == Some(underlay)
                    });
                    if !same {
                        if host.contains_key(vx) {
                            cmd::ip(None, &["link", "del", vx])?;
                        }
                        links::add_vxlan(vx, *id, underlay)?;
                        self.mark(vx)?;
                        offloads_off(None, vx)?;
                        no_ipv6(vx);
                    }
                    if !same || !good(vx, "vxlan", s.mtu) {
                        cmd::ip(None, &["link", "set", vx, "mtu", &m, "up"])?;
                        made.insert(vx.clone(), ("vxlan", s.mtu));
                    }
                    add(adds, vx, None, !same);
                }
                Ok(())
            })();
            if let Err(e) = r {
                err.subnet.insert(s.subnet_id.to_string(), e);
            }
        }
        for n in &plan.nics {
            match self.port(plan, n, host, made) {
                Ok(fresh) => add(adds, &port_name(vni, &n.spec.device), Some(&n.spec.nic_id), fresh),
                Err(e) => {
                    err.nic.insert(n.spec.nic_id.clone(), e);
                }
            }
        }
        // The static FDB (VXLAN devices here) and the neighbours (in the VPC namespace):
        // a change apply starts from what the last one left.
        let mut view = match known.and_then(|p| p.fdb.clone()) {
            Some(v) => v,
            None => plan
                .subnets
                .iter()
                .filter_map(|s| s.vxlan.as_ref())
                .filter_map(|(vx, _)| fdb::read(None, vx).ok().map(|set| (vx.clone(), set)))
                .collect(),
        };
        let mut errors: Vec<String> =
            fdb::converge(None, plan, underlay, nl, &mut view).into_iter().map(|(d, e)| format!("{d}: {e}")).collect();
        let want_neigh = fdb::desired_neigh(plan, underlay);
        let mut have = known.and_then(|p| p.neigh.clone());
        if have.as_ref() != Some(&want_neigh) {
            match rtnl::Rtnl::open(ns).and_then(|mut vnl| {
                let mut now = match have.take() {
                    Some(h) => h,
                    None => fdb::read_neigh(ns)?,
                };
                let e = fdb::converge_neigh(plan, underlay, &mut vnl, &mut now);
                Ok((e, now))
            }) {
                Ok((e, now)) => {
                    errors.extend(e);
                    have = Some(now);
                }
                Err(e) => errors.push(e),
            }
        }
        err.fdb = errors.into_iter().next();
        // Trusted next time only when nothing failed.
        if err.fdb.is_none() {
            err.fdb_view = Some(view);
            err.neigh_view = have;
        }
        err
    }

    /// Makes one NIC's port in the agent's namespace when missing (or of the wrong kind);
    /// answers whether it made it.
    fn port(
        &self,
        plan: &VpcPlan,
        n: &NicPlan,
        host: &BTreeMap<String, links::Link>,
        made: &mut BTreeMap<String, (&'static str, u32)>,
    ) -> Result<bool, String> {
        let name = port_name(plan.spec.vni, &n.spec.device);
        if !crate::network::plan::valid_ifname(&name) || n.spec.device.len() > 13 {
            return Err(format!("device name {:?} is too long for this backend's port name {name:?}", n.spec.device));
        }
        let kind = match n.spec.plug {
            NicPlug::Tap => "tun",
            NicPlug::Veth => "veth",
        };
        let m = n.mtu.to_string();
        let fresh = host.get(&name).is_none_or(|l| l.kind != kind);
        if fresh {
            if host.contains_key(&name) {
                cmd::ip(None, &["link", "del", &name])?;
            }
            match n.spec.plug {
                NicPlug::Tap => {
                    tap::create_persistent(Path::new(OWN_NS), &name).map_err(|e| format!("tap {name}: {e}"))?;
                    self.mark(&name)?;
                    no_ipv6(&name);
                }
                NicPlug::Veth => {
                    let far = format!("{}g", n.spec.device);
                    let _ = cmd::ip(Some(&plan.ns), &["link", "del", &far]);
                    self.veth(&name, &far, &plan.ns, n.mtu, &n.spec.mac.to_ascii_lowercase())?;
                }
            }
        }
        if fresh || !host.get(&name).is_some_and(|l| l.up && l.mtu == n.mtu) {
            cmd::ip(None, &["link", "set", &name, "mtu", &m, "up"])?;
            made.insert(name, (kind, n.mtu));
        }
        Ok(fresh)
    }
}
