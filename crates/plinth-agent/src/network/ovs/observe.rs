//! What the Open vSwitch backend answers for each NIC: its components as read back (the
//! port's link, its bridge port) or as known from the apply (flows, FDB, DHCP, NAT).

use super::{Iface, OpenVswitch, VpcErrors, VpcState, port_name};
use crate::network::plan::VpcPlan;
use crate::network::view::FdbSet;
use crate::network::{dhcp, failed, fdb, links, observed, router};
use plinth_api::{NicId, NicPlug, ObservedNic};
use std::collections::BTreeMap;

impl OpenVswitch {
    /// Each NIC's components as read back (links, bridge ports) or known (flows, files).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn observe(
        &self,
        plan: &VpcPlan,
        err: &VpcErrors,
        vs: &VpcState,
        host: &BTreeMap<String, links::Link>,
        ifaces: &BTreeMap<String, Iface>,
        nic_ports: &BTreeMap<NicId, (String, u32)>,
        flows_loaded: bool,
    ) -> Vec<ObservedNic> {
        let ns = plan.ns.as_str();
        let vpc_dir = self.cfg.vpc_dir(ns);
        let mut out = Vec::new();
        for (n, why) in &plan.rejected {
            out.push(failed(&n.nic_id, why));
        }
        let none = FdbSet::new();
        let fdb_missing = fdb::desired(plan, &self.cfg.underlay_ip).into_iter().find_map(|(vx, want)| {
            let have = vs.fdb.as_ref().and_then(|v| v.get(&vx)).unwrap_or(&none);
            want.difference(have).next().map(|m| format!("{vx} lacks the entry {} → {}", m.0, m.1))
        });
        for n in &plan.nics {
            let name = port_name(plan.spec.vni, &n.spec.device);
            let fail =
                |fallback: String| err.all.clone().or_else(|| err.nic.get(&n.spec.nic_id).cloned()).unwrap_or(fallback);
            let sub = plan.subnet(&n.spec.subnet_id);
            let sub_err = sub.and_then(|s| err.subnet.get(&s.subnet_id.to_string()));
            let kind = if n.spec.plug == NicPlug::Tap { "tun" } else { "veth" };
            let link = host.get(&name);
            let tap = match link {
                Some(l) if l.kind == kind => Ok(()),
                _ => Err(fail(format!("no port {name}"))),
            };
            let port = match (link, ifaces.get(&name), sub_err) {
                (_, _, Some(e)) => Err(e.clone()),
                (Some(l), Some(i), None) if l.up && i.ofport > 0 => Ok(()),
                _ => Err(fail(format!("{name} is not an up port of bridge {}", self.ovs.bridge))),
            };
            let fdb = match (&err.fdb, &fdb_missing) {
                (Some(e), _) | (None, Some(e)) => Err(e.clone()),
                _ => Ok(()),
            };
            let gen_loaded = flows_loaded && nic_ports.contains_key(&n.spec.nic_id) && err.filter.is_none();
            let filt = if gen_loaded {
                Ok(())
            } else {
                Err(fail(err.filter.clone().unwrap_or_else(|| "its flows are not loaded".to_owned())))
            };
            let dhcp = match sub {
                Some(s) if !s.dhcp => Ok(()),
                Some(s) => match err.dhcp.get(&s.bridge) {
                    Some(e) => Err(e.clone()),
                    None if dhcp::running(&dhcp::files(&vpc_dir, &s.bridge).pid).is_none() => {
                        Err(format!("the DHCP server of {} is not running", s.bridge))
                    }
                    None => dhcp::observe(&vpc_dir, &vs.dhcp, &s.bridge, &n.spec.nic_id.to_string()),
                },
                None => Err("unknown subnet".to_owned()),
            };
            let public: Vec<&String> = n.public().collect();
            let held = vs.router.as_ref().map(|r| &r.addrs);
            let nat = match (&err.router, public.iter().find(|p| !held.is_some_and(|h| h.contains(**p)))) {
                _ if public.is_empty() => Ok(()),
                (Some(e), _) => Err(e.clone()),
                (None, Some(p)) => Err(format!("{p} is not on the uplink {}", router::UPLINK)),
                (None, None) if gen_loaded && vs.loaded.is_some() => Ok(()),
                (None, None) => Err("its address translation is not loaded".to_owned()),
            };
            out.push(observed(
                &n.spec.nic_id,
                [tap, port, fdb, filt, dhcp, nat],
                gen_loaded.then_some(n.spec.filter_generation),
            ));
        }
        out
    }
}
