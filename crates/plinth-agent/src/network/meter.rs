//! Egress byte counters of the local NICs, for metering: `all` is what the guest sent
//! (its port's receive bytes, frames with their Ethernet header), `internet` is what left
//! through the VPC router's uplink from the NIC's private address (an nftables named
//! counter per NIC, counted in `forward` before SNAT rewrites the source, so traffic
//! within the VPC is never counted; IP packets, headers included).
//!
//! Each counter comes with its epoch: the boot, the VPC namespace (its netns cookie,
//! never reused within a boot) and the object itself (the port's ifindex; the counter's
//! table and handle). A counter that starts again from zero (port recreated, table lost,
//! namespace remade, host rebooted) has a new epoch, so the server never sees a value go
//! down within one source, and an agent restart (same kernel objects) reports the same
//! epoch and value again, which adds nothing.
//!
//! The counters live in `table ip plinth_meter` of the VPC namespace, apart from the
//! filter's tables (which a structure change replaces whole): it changes by single
//! commands when NICs come and go.

use super::cmd;
use super::plan::VpcPlan;
use super::router::UPLINK;
use plinth_api::NicId;
use std::collections::BTreeMap;

/// The meter table's name (family `ip`).
const TABLE: &str = "plinth_meter";

/// One counter reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The NIC counted.
    pub nic_id: NicId,
    /// `all` or `internet`.
    pub class: &'static str,
    /// `<boot>/<netns cookie>/<object>`: a new value whenever the counter restarts.
    pub epoch: String,
    /// Bytes since the counter began.
    pub bytes: u64,
}

/// The NICs of one VPC namespace as the last apply left them: (NIC, port device, address).
pub type Ports = Vec<(NicId, String, String)>;

/// The counters a plan wants: counter name (the port device) by NIC address, for the NICs
/// that have a public address (no other can reach the internet).
pub fn desired(plan: &VpcPlan) -> BTreeMap<String, String> {
    plan.nics
        .iter()
        .filter(|n| n.public().next().is_some())
        .map(|n| (n.spec.ipv4.clone(), n.spec.device.clone()))
        .collect()
}

fn structure() -> String {
    format!(
        "table ip {TABLE} {{\n\
         \tmap nic_counter {{ type ipv4_addr : counter; }}\n\
         \tchain count {{\n\
         \t\ttype filter hook forward priority 10; policy accept;\n\
         \t\toifname \"{UPLINK}\" counter name ip saddr map @nic_counter\n\
         \t}}\n\
         }}\n"
    )
}

/// What the table holds: counter name by address (from its map), `None` when the table is
/// missing or unreadable.
pub fn read(ns: &str) -> Option<BTreeMap<String, String>> {
    let text = cmd::in_ns(ns, "nft", &["-j", "list", "map", "ip", TABLE, "nic_counter"], None).ok()?;
    let v = cmd::json(&text).ok()?;
    let mut out = BTreeMap::new();
    for item in v["nftables"].as_array()? {
        let Some(elems) = item["map"]["elem"].as_array() else { continue };
        for e in elems {
            if let (Some(k), Some(name)) = (e[0].as_str(), e[1].as_str()) {
                out.insert(k.to_owned(), name.to_owned());
            }
        }
    }
    Some(out)
}

/// Converges the meter table to `want` (address → counter name). `known`: what the last
/// apply left (trusted by a change apply); `None` reads the table. Answers what it holds.
pub fn converge(
    ns: &str,
    want: &BTreeMap<String, String>,
    known: Option<&BTreeMap<String, String>>,
) -> (BTreeMap<String, String>, Result<(), String>) {
    if known == Some(want) {
        return (want.clone(), Ok(()));
    }
    let (have, mut batch) = match known.cloned().or_else(|| read(ns)) {
        Some(h) => (h, String::new()),
        None => (BTreeMap::new(), structure()),
    };
    for (addr, name) in &have {
        if want.get(addr) != Some(name) {
            batch.push_str(&format!("delete element ip {TABLE} nic_counter {{ {addr} }}\n"));
            if !want.values().any(|n| n == name) {
                batch.push_str(&format!("delete counter ip {TABLE} {name}\n"));
            }
        }
    }
    for (addr, name) in want {
        if have.get(addr) != Some(name) {
            if !have.values().any(|n| n == name) {
                batch.push_str(&format!("add counter ip {TABLE} {name}\n"));
            }
            batch.push_str(&format!("add element ip {TABLE} nic_counter {{ {addr} : \"{name}\" }}\n"));
        }
    }
    if batch.is_empty() {
        return (have, Ok(()));
    }
    match cmd::in_ns(ns, "nft", &["-f", "-"], Some(&batch)) {
        Ok(_) => (want.clone(), Ok(())),
        // The kernel kept what it had; read it again next time.
        Err(e) => (have, Err(format!("meter table: {e}"))),
    }
}

/// The boot's identity (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().replace('-', "")).unwrap_or_default()
}

/// The cookie (`SO_NETNS_COOKIE`: unique per namespace within a boot) of namespace `ns`
/// (`None`: the agent's).
fn netns_cookie(ns: Option<&str>) -> Result<u64, String> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let path = ns.map_or_else(|| std::path::PathBuf::from("/proc/self/ns/net"), super::links::ns_path);
    super::tap::in_netns(&path, || {
        // SAFETY: a plain socket(2) call; the descriptor is owned right after.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned here.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
        let r = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(cookie) }
    })
    .map_err(|e| format!("the netns cookie of {}: {e}", ns.unwrap_or("the agent's namespace")))
}

/// Reads every counter of one VPC namespace's `ports`. `host_ports`: the ports' links
/// live in the agent's namespace under these names (by port device), not in the VPC's.
pub fn sample(ns: &str, ports: &Ports, host_ports: Option<&BTreeMap<String, String>>) -> Result<Vec<Reading>, String> {
    let base = format!("{}/{}", boot_id(), netns_cookie(Some(ns))?);
    let mut out = Vec::new();
    // The ports' receive bytes (what the guests sent).
    let (links_ns, link_base) = match host_ports {
        Some(_) => (None, format!("{}/{}", boot_id(), netns_cookie(None)?)),
        None => (Some(ns), base.clone()),
    };
    let links = cmd::json(&cmd::ip(links_ns, &["-j", "-s", "link", "show"])?)?;
    let mut rx: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for l in links.as_array().into_iter().flatten() {
        if let (Some(name), Some(ifindex), Some(bytes)) =
            (l["ifname"].as_str(), l["ifindex"].as_u64(), l["stats64"]["rx"]["bytes"].as_u64())
        {
            rx.insert(name, (ifindex, bytes));
        }
    }
    for (nic, dev, _) in ports {
        let link = host_ports.map_or(Some(dev), |h| h.get(dev));
        if let Some((ifindex, bytes)) = link.and_then(|l| rx.get(l.as_str())) {
            out.push(Reading {
                nic_id: nic.clone(),
                class: "all",
                epoch: format!("{link_base}/if{ifindex}"),
                bytes: *bytes,
            });
        }
    }
    // The uplink's counters (what left for the internet), when the table exists.
    if let Ok(text) = cmd::in_ns(ns, "nft", &["-j", "list", "table", "ip", TABLE], None) {
        let v = cmd::json(&text)?;
        let items = v["nftables"].as_array().cloned().unwrap_or_default();
        let table = items.iter().find_map(|i| i["table"]["handle"].as_u64()).unwrap_or(0);
        let by_dev: BTreeMap<&str, &NicId> = ports.iter().map(|(n, d, _)| (d.as_str(), n)).collect();
        for i in &items {
            let c = &i["counter"];
            if let (Some(name), Some(handle), Some(bytes)) =
                (c["name"].as_str(), c["handle"].as_u64(), c["bytes"].as_u64())
                && let Some(nic) = by_dev.get(name)
            {
                out.push(Reading {
                    nic_id: (*nic).clone(),
                    class: "internet",
                    epoch: format!("{base}/t{table}c{handle}"),
                    bytes,
                });
            }
        }
    }
    Ok(out)
}
