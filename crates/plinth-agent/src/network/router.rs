//! The VPC router's way out on this host: a veth `up0` in the VPC namespace whose far end
//! (`pu<vni>`) is a port of the host's provider bridge, holding each public address of
//! the VPC's local NICs (floating IPs and SNAT addresses, as /32s) and the default route
//! to the pools' gateway. The address translation itself is [`super::filter`]'s
//! `table ip plinth`; this module owns the link, its addresses and route, and the
//! gratuitous ARP that tells the provider network an address is here now (a floating IP
//! moved from another host is reached at once, not when the provider's ARP entry ages).
//!
//! The uplink exists only while a local NIC has a public address: a VPC without one on
//! this host has no route beyond itself. `up0` answers ARP only for its own addresses
//! (`arp_ignore=1`), so the provider never learns a private address from it.

use super::cmd;
use super::plan::VpcPlan;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The uplink's name in the VPC namespace.
pub const UPLINK: &str = "up0";

/// The uplink's far end, in the agent's namespace (≤ 15 bytes: `pu` and a 24-bit VNI).
pub fn host_end(vni: u32) -> String {
    format!("pu{vni}")
}

/// What the router of one VPC holds on this host (kept to skip an unchanged change apply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The public addresses on `up0` (empty: no uplink).
    pub addrs: BTreeSet<String>,
    /// The default route's gateway (`None` with addresses: out of `up0` directly).
    pub gateway: Option<String>,
}

/// What the router should hold for `plan`.
pub fn desired(plan: &VpcPlan) -> Held {
    let addrs: BTreeSet<String> = plan.nics.iter().flat_map(|n| n.public()).cloned().collect();
    let gateway = if addrs.is_empty() { None } else { plan.spec.uplink_gateway.clone() };
    Held { addrs, gateway }
}

/// The uplink as the namespace holds it: its addresses, MAC and ifindex (`None`: absent).
fn read(ns: &str) -> Option<(BTreeSet<String>, String, u32)> {
    let text = cmd::ip(Some(ns), &["-j", "addr", "show", "dev", UPLINK]).ok()?;
    let v = cmd::json(&text).ok()?;
    let link = v.as_array()?.first()?;
    let addrs = link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["family"] == "inet")
        .filter_map(|a| a["local"].as_str().map(str::to_owned))
        .collect();
    Some((addrs, link["address"].as_str()?.to_owned(), link["ifindex"].as_u64()? as u32))
}

/// The default route's gateway as read back: `Some(None)` for a route without one,
/// `None` for no default route.
fn read_route(ns: &str) -> Option<Option<String>> {
    let text = cmd::ip(Some(ns), &["-j", "route", "show", "default"]).ok()?;
    let v = cmd::json(&text).ok()?;
    let r = v.as_array()?.iter().find(|r| r["dev"] == UPLINK)?;
    Some(r["gateway"].as_str().map(str::to_owned))
}

/// Makes the uplink: the veth pair (its host end on `provider`, up), `up0` up and
/// answering ARP only for its own addresses.
fn create(ns: &str, vni: u32, provider: &str) -> Result<(), String> {
    let far = host_end(vni);
    // A far end left by a crash between the two halves of an earlier attempt.
    let _ = cmd::ip(None, &["link", "del", &far]);
    cmd::ip(None, &["link", "add", &far, "type", "veth", "peer", "name", UPLINK, "netns", ns])?;
    cmd::ip(None, &["link", "set", &far, "master", provider, "up"])?;
    for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        cmd::in_ns(ns, "sysctl", &["-q", "-w", &format!("net.ipv4.conf.{UPLINK}.{key}={value}")], None)?;
    }
    cmd::ip(Some(ns), &["link", "set", UPLINK, "up"])?;
    Ok(())
}

/// Converges the router of `plan` (namespace `ns`) to `want`. `known`: what the last
/// apply left (trusted by a change apply: an unchanged router costs nothing); `None`
/// reads the namespace. `provider`: the host's provider bridge (`None`: this host has no
/// provider network, and a public address here is an error). Answers what it holds now.
pub fn converge(
    ns: &str,
    vni: u32,
    provider: Option<&str>,
    want: &Held,
    known: Option<&Held>,
) -> (Held, Result<(), String>) {
    if known == Some(want) {
        return (want.clone(), Ok(()));
    }
    let present = read(ns);
    if want.addrs.is_empty() {
        if present.is_some() {
            tracing::info!(namespace = ns, "no public address left here: removing the uplink");
            if let Err(e) = cmd::ip(Some(ns), &["link", "del", UPLINK]) {
                return (Held { addrs: present.map(|p| p.0).unwrap_or_default(), gateway: None }, Err(e));
            }
        }
        return (Held::default(), Ok(()));
    }
    let Some(provider) = provider else {
        return (
            Held::default(),
            Err("this host has no provider network (the agent's --provider-bridge): no public address can be routed here"
                .to_owned()),
        );
    };
    let mut held = Held::default();
    let r = (|| {
        let (have, mac, ifindex) = match present {
            Some(p) => p,
            None => {
                tracing::info!(namespace = ns, provider, "making the uplink");
                create(ns, vni, provider)?;
                read(ns).ok_or_else(|| format!("{UPLINK} is missing in {ns} right after it was made"))?
            }
        };
        // The far end on the provider bridge, up (a verifying apply repairs a hand's change).
        let far = host_end(vni);
        let link = cmd::json(&cmd::ip(None, &["-j", "link", "show", &far])?)?;
        let on_bridge = link[0]["master"].as_str() == Some(provider)
            && link[0]["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP"));
        if !on_bridge {
            cmd::ip(None, &["link", "set", &far, "master", provider, "up"])?;
        }
        held.addrs = have.clone();
        for gone in have.difference(&want.addrs) {
            cmd::ip(Some(ns), &["addr", "del", &format!("{gone}/32"), "dev", UPLINK])?;
            held.addrs.remove(gone);
        }
        let mut added = Vec::new();
        for new in want.addrs.difference(&have) {
            cmd::ip(Some(ns), &["addr", "add", &format!("{new}/32"), "dev", UPLINK])?;
            held.addrs.insert(new.clone());
            added.push(new.clone());
        }
        if read_route(ns) != Some(want.gateway.clone()) {
            let mut args = vec!["route", "replace", "default"];
            if let Some(g) = &want.gateway {
                args.extend(["via", g.as_str(), "dev", UPLINK, "onlink"]);
            } else {
                args.extend(["dev", UPLINK]);
            }
            cmd::ip(Some(ns), &args)?;
        }
        held.gateway = want.gateway.clone();
        if !added.is_empty() {
            announce(ns, ifindex, &mac, &added)?;
        }
        Ok(())
    })();
    (held, r)
}

/// Sends a gratuitous ARP (a request, then a reply, each sender = target = the address)
/// for each of `addrs` out of the uplink, from a thread inside the namespace.
fn announce(ns: &str, ifindex: u32, mac: &str, addrs: &[String]) -> Result<(), String> {
    let mac: Vec<u8> = mac.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    let mac: [u8; 6] = mac.try_into().map_err(|_| format!("{UPLINK} has an unreadable MAC"))?;
    let ips: Vec<Ipv4Addr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
    super::tap::in_netns(&super::links::ns_path(ns), move || {
        // SAFETY: a plain socket(2) call; the descriptor is owned right after.
        let fd = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, (libc::ETH_P_ARP as u16).to_be() as i32)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned here.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for ip in ips {
            for op in [1u8, 2] {
                let f = garp_frame(mac, ip, op);
                // SAFETY: sends `f` (a live buffer of its length) to a valid sockaddr_ll.
                let n = unsafe {
                    libc::sendto(
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        f.as_ptr().cast(),
                        f.len(),
                        0,
                        (&to as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    })
    .map_err(|e| format!("gratuitous ARP on {UPLINK}: {e}"))
}

/// A gratuitous ARP frame (`op` 1: request, 2: reply) announcing `ip` at `mac`.
fn garp_frame(mac: [u8; 6], ip: Ipv4Addr, op: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, op]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(if op == 1 { &[0; 6] } else { &[0xff; 6] });
    f.extend_from_slice(&ip.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], "198.51.100.7".parse().unwrap(), 1);
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(f[21], 1);
        assert_eq!(&f[28..32], &[198, 51, 100, 7]);
        assert_eq!(&f[38..42], &[198, 51, 100, 7]);
    }
}
