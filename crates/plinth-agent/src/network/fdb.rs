//! The static VXLAN forwarding database of each subnet: one all-zero entry per peer VTEP
//! (head-end replication of broadcast and unknown traffic, no multicast) and one entry per
//! remote NIC's MAC pointing at its host. Read back with `bridge -j fdb`, changed by
//! difference.

use super::cmd;
use super::plan::VpcPlan;
use std::collections::BTreeSet;

/// The all-zero MAC of replication entries.
pub const ZERO_MAC: &str = "00:00:00:00:00:00";

/// `(mac, dst)` pairs on a VXLAN device.
pub fn read(ns: &str, vx: &str) -> Result<BTreeSet<(String, String)>, String> {
    let v = cmd::json(&cmd::bridge(Some(ns), &["-j", "fdb", "show", "dev", vx])?)?;
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

/// Converges every VXLAN device's entries; answers the errors met (by device).
pub fn converge(plan: &VpcPlan, own_vtep: &str) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for (vx, want) in desired(plan, own_vtep) {
        let have = match read(&plan.ns, &vx) {
            Ok(h) => h,
            Err(e) => {
                errors.push((vx, e));
                continue;
            }
        };
        for (mac, dst) in have.difference(&want) {
            if let Err(e) = cmd::bridge(Some(&plan.ns), &["fdb", "del", mac, "dev", &vx, "dst", dst]) {
                errors.push((vx.clone(), e));
            }
        }
        for (mac, dst) in want.difference(&have) {
            let verb = if mac == ZERO_MAC { "append" } else { "replace" };
            if let Err(e) =
                cmd::bridge(Some(&plan.ns), &["fdb", verb, mac, "dev", &vx, "dst", dst, "self", "permanent"])
            {
                errors.push((vx.clone(), e));
            }
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

/// Converges the permanent neighbours; answers the errors met.
pub fn converge_neigh(plan: &VpcPlan, own_vtep: &str) -> Vec<String> {
    let want = desired_neigh(plan, own_vtep);
    let have = match read_neigh(&plan.ns) {
        Ok(h) => h,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for (addr, dev, _) in have.difference(&want) {
        if let Err(e) = cmd::ip(Some(&plan.ns), &["neigh", "del", addr, "dev", dev]) {
            errors.push(e);
        }
    }
    for (addr, dev, mac) in want.difference(&have) {
        if let Err(e) =
            cmd::ip(Some(&plan.ns), &["neigh", "replace", addr, "lladdr", mac, "dev", dev, "nud", "permanent"])
        {
            errors.push(e);
        }
    }
    errors
}
