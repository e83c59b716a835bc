//! The static VXLAN forwarding database of each subnet: one all-zero entry per peer VTEP
//! (head-end replication of broadcast and unknown traffic, no multicast) and one entry per
//! remote NIC's MAC pointing at its host. Read back with `bridge -j fdb`, changed by
//! difference over rtnetlink.

use super::cmd;
use super::plan::VpcPlan;
use super::rtnl::{FdbWrite, Rtnl};
use super::view::{FdbSet, NeighSet};
use std::collections::{BTreeMap, BTreeSet};

/// The all-zero MAC of replication entries.
pub const ZERO_MAC: &str = "00:00:00:00:00:00";

/// `(mac, dst)` pairs on a VXLAN device of namespace `ns` (`None`: the agent's).
pub fn read(ns: Option<&str>, vx: &str) -> Result<BTreeSet<(String, String)>, String> {
    let v = cmd::json(&cmd::bridge(ns, &["-j", "fdb", "show", "dev", vx])?)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["mac"].as_str()?.to_ascii_lowercase(), e["dst"].as_str()?.to_owned())))
        .collect())
}

/// What each VXLAN device of the plan must hold: `(device, {(mac, dst)})`.
pub fn desired(plan: &VpcPlan, own_vtep: &str) -> Vec<(String, BTreeSet<(String, String)>)> {
    let peers: BTreeSet<&str> = plan.spec.peers.iter().map(String::as_str).filter(|p| *p != own_vtep).collect();
    plan.subnets
        .iter()
        .filter_map(|s| {
            let (vx, _) = s.vxlan.as_ref()?;
            let mut want: BTreeSet<(String, String)> =
                peers.iter().map(|p| (ZERO_MAC.to_owned(), (*p).to_owned())).collect();
            for r in plan.spec.remote_nics.iter().filter(|r| r.subnet_id == s.subnet_id && r.vtep != own_vtep) {
                want.insert((r.mac.to_ascii_lowercase(), r.vtep.clone()));
            }
            Some((vx.clone(), want))
        })
        .collect()
}

/// Converges every VXLAN device's entries from what `view` holds (its devices' entries),
/// recording each change there; answers the errors met (by device). One rtnetlink message
/// per entry changed ([`super::rtnl`]); after a refusal the device is read back from
/// namespace `ns` (`None`: the agent's, where `nl` must be too).
pub fn converge(
    ns: Option<&str>,
    plan: &VpcPlan,
    own_vtep: &str,
    nl: &mut Rtnl,
    view: &mut BTreeMap<String, FdbSet>,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for (vx, want) in desired(plan, own_vtep) {
        let set = view.entry(vx.clone()).or_default();
        let stale: Vec<(String, String)> = set.difference(&want).cloned().collect();
        let missing: Vec<(String, String)> = want.difference(set).cloned().collect();
        let mut failed = None;
        for (mac, dst) in stale {
            match nl.vxlan_fdb_del(&vx, &mac, &dst) {
                Ok(()) => {
                    set.remove(&(mac, dst));
                }
                Err(e) => failed = Some(e),
            }
        }
        for (mac, dst) in missing {
            let how = if mac == ZERO_MAC { FdbWrite::Append } else { FdbWrite::Replace };
            match nl.vxlan_fdb(&vx, &mac, &dst, how) {
                Ok(()) => {
                    set.insert((mac, dst));
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            // What the device holds after a refusal is read back, not assumed.
            match read(ns, &vx) {
                Ok(h) => {
                    view.insert(vx.clone(), h);
                }
                Err(e) => errors.push((vx.clone(), e)),
            }
            errors.push((vx, e));
        }
    }
    errors
}

/// Permanent neighbour entries for the remote NICs on their subnet's bridge: the VPC
/// namespace routes to a remote NIC without ARP (an ARP reply to the gateway would stay on
/// the remote host, whose bridge holds the same gateway address).
pub fn desired_neigh(plan: &VpcPlan, own_vtep: &str) -> BTreeSet<(String, String, String)> {
    plan.spec
        .remote_nics
        .iter()
        .filter(|r| r.vtep != own_vtep)
        .filter_map(|r| {
            let s = plan.subnet(&r.subnet_id)?;
            s.vxlan.as_ref()?;
            Some((r.ipv4.clone(), s.bridge.clone(), r.mac.to_ascii_lowercase()))
        })
        .collect()
}

/// `(address, device, mac)` of the namespace's permanent neighbours.
pub fn read_neigh(ns: &str) -> Result<BTreeSet<(String, String, String)>, String> {
    let v = cmd::json(&cmd::ip(Some(ns), &["-j", "-4", "neigh", "show", "nud", "permanent"])?)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["dst"].as_str()?.to_owned(),
                e["dev"].as_str()?.to_owned(),
                e["lladdr"].as_str()?.to_ascii_lowercase(),
            ))
        })
        .collect())
}

/// Converges the permanent neighbours from what `have` holds, recording the changes
/// there (one rtnetlink message each); answers the errors met.
pub fn converge_neigh(plan: &VpcPlan, own_vtep: &str, nl: &mut Rtnl, have: &mut NeighSet) -> Vec<String> {
    let want = desired_neigh(plan, own_vtep);
    let mut errors = Vec::new();
    for (addr, dev, mac) in have.difference(&want).cloned().collect::<Vec<_>>() {
        match nl.neigh_del(&addr, &dev) {
            Ok(()) => {
                have.remove(&(addr, dev, mac));
            }
            Err(e) => errors.push(e),
        }
    }
    for (addr, dev, mac) in want.difference(have).cloned().collect::<Vec<_>>() {
        // A replace for the same address and device overwrites a different MAC.
        match nl.neigh_replace(&addr, &dev, &mac) {
            Ok(()) => {
                have.retain(|(a, d, _)| !(*a == addr && *d == dev));
                have.insert((addr, dev, mac));
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty()
        && let Ok(now) = read_neigh(&plan.ns)
    {
        *have = now;
    }
    errors
}
