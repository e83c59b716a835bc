//! The static VXLAN forwarding database of each subnet: one all-zero entry per peer VTEP
//! (head-end replication of broadcast and unknown traffic, no multicast) and one entry per
//! remote NIC's MAC pointing at its host. Read back with `bridge -j fdb`, changed by
//! difference.

use super::cmd;
use super::plan::VpcPlan;
use super::view::{FdbSet, NeighSet};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

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

/// Converges every VXLAN device's entries from what `view` holds (its devices' entries),
/// recording each change there; answers the errors met (by device). The commands of all
/// devices go in one `bridge -batch` (a change of one entry is one process).
pub fn converge(plan: &VpcPlan, own_vtep: &str, view: &mut BTreeMap<String, FdbSet>) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut batch = String::new();
    let mut done: Vec<(String, bool, (String, String))> = Vec::new();
    for (vx, want) in desired(plan, own_vtep) {
        let empty = FdbSet::new();
        let have = view.get(&vx).unwrap_or(&empty);
        for (mac, dst) in have.difference(&want) {
            let _ = writeln!(batch, "fdb del {mac} dev {vx} dst {dst}");
            done.push((vx.clone(), false, (mac.clone(), dst.clone())));
        }
        for (mac, dst) in want.difference(have) {
            let verb = if mac == ZERO_MAC { "append" } else { "replace" };
            let _ = writeln!(batch, "fdb {verb} {mac} dev {vx} dst {dst} self permanent");
            done.push((vx.clone(), true, (mac.clone(), dst.clone())));
        }
    }
    if batch.is_empty() {
        return errors;
    }
    match cmd::batch("bridge", Some(&plan.ns), &batch) {
        Ok(_) => {
            for (vx, add, entry) in done {
                let set = view.entry(vx).or_default();
                if add {
                    set.insert(entry);
                } else {
                    set.remove(&entry);
                }
            }
        }
        Err(e) => {
            // Which commands of the batch took is unknown: read the devices back.
            for (vx, _) in desired(plan, own_vtep) {
                match read(&plan.ns, &vx) {
                    Ok(h) => {
                        view.insert(vx, h);
                    }
                    Err(e) => errors.push((vx, e)),
                }
            }
            errors.push(("fdb".to_owned(), e));
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
/// there (one `ip -batch`); answers the errors met.
pub fn converge_neigh(plan: &VpcPlan, own_vtep: &str, have: &mut NeighSet) -> Vec<String> {
    let want = desired_neigh(plan, own_vtep);
    let mut batch = String::new();
    for (addr, dev, _) in have.difference(&want) {
        let _ = writeln!(batch, "neigh del {addr} dev {dev}");
    }
    for (addr, dev, mac) in want.difference(have) {
        let _ = writeln!(batch, "neigh replace {addr} lladdr {mac} dev {dev} nud permanent");
    }
    if batch.is_empty() {
        return Vec::new();
    }
    match cmd::batch("ip", Some(&plan.ns), &batch) {
        Ok(_) => {
            *have = want;
            Vec::new()
        }
        Err(e) => {
            if let Ok(now) = read_neigh(&plan.ns) {
                *have = now;
            }
            vec![e]
        }
    }
}
