//! What one VPC's spec means on this host, in kernel names: the namespace, each subnet's
//! bridge (gateway address, MTU, MAC) and VXLAN device, and each local NIC's port.
//!
//! Naming: the namespace is `{prefix}{vni}`; subnet `index` has bridge `br{index}` and
//! VXLAN `vx{subnet vni}`. Each subnet is its own VXLAN segment, so subnets stay apart at
//! layer 2 across hosts (one VXLAN device can be a port of one bridge only, and two
//! devices cannot share a VNI on one underlay address and port): a subnet's VNI is
//! `SubnetSpec::vni`, allocated by the server from the VPC VNI space; a subnet without one
//! (`0`) uses the VPC's VNI when its index is 0, and otherwise stays local to the host.
//!
//! The gateway is distributed: every host's bridge of a subnet holds the gateway address,
//! with a MAC of its own (stable, derived from the host's underlay address, the VNI and the
//! index; a shared MAC would make bridges see their own address arrive over VXLAN). ARP
//! for the gateway never crosses hosts (see [`super::filter`]), so a guest's first hop is
//! always its own host.

use plinth_api::{NicSpec, SubnetId, VpcSpec};
use std::net::Ipv4Addr;

/// A subnet on this host.
#[derive(Clone, Debug)]
pub struct SubnetPlan {
    /// The subnet.
    pub subnet_id: SubnetId,
    /// Its index within the VPC.
    pub index: u32,
    /// Its bridge (`br<index>`).
    pub bridge: String,
    /// `gateway/prefix`.
    pub gateway_cidr: String,
    /// The gateway address.
    pub gateway: String,
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// The MTU of its bridge, VXLAN and ports.
    pub mtu: u32,
    /// This host's bridge MAC.
    pub mac: String,
    /// Whether it runs DHCP.
    pub dhcp: bool,
    /// The VXLAN device and its VNI, when the subnet spans hosts.
    pub vxlan: Option<(String, u32)>,
}

/// A local NIC and the bridge it plugs into.
#[derive(Clone, Debug)]
pub struct NicPlan {
    /// The NIC's spec.
    pub spec: NicSpec,
    /// The bridge of its subnet.
    pub bridge: String,
    /// The port MTU (its subnet's).
    pub mtu: u32,
}

impl NicPlan {
    /// The NIC's public addresses: its floating IPs, then its SNAT address.
    pub fn public(&self) -> impl Iterator<Item = &String> {
        self.spec.floating.iter().chain(self.spec.snat_address.iter())
    }
}

/// One VPC on this host.
#[derive(Clone, Debug)]
pub struct VpcPlan {
    /// The VPC's spec.
    pub spec: VpcSpec,
    /// The namespace name.
    pub ns: String,
    /// Its subnets.
    pub subnets: Vec<SubnetPlan>,
    /// Its local NICs that can be plugged.
    pub nics: Vec<NicPlan>,
    /// NICs that could not be planned (unknown subnet, bad name), with why.
    pub rejected: Vec<(NicSpec, String)>,
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("bad IPv4 address in {text:?}"))?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("bad prefix length in {text:?}"))?;
    Ok((addr, len))
}

/// The first and last address of `a.b.c.d/len`.
pub fn cidr_range(text: &str) -> Result<(u32, u32), String> {
    let (addr, len) = parse_cidr(text)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let lo = u32::from(addr) & mask;
    Ok((lo, lo | !mask))
}

/// Whether `name` is a usable interface name (1–15 bytes, no `/`, space or NUL).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty() && name.len() <= 15 && !name.bytes().any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
}

impl VpcPlan {
    /// Plans `spec` under the namespace prefix.
    pub fn new(prefix: &str, underlay: &str, spec: &VpcSpec) -> Result<VpcPlan, String> {
        let mut subnets = Vec::new();
        for s in &spec.subnets {
            let (net, prefix_len) = parse_cidr(&s.ipv4_cidr)?;
            let gw: Ipv4Addr = s.gateway.parse().map_err(|_| format!("bad gateway {:?}", s.gateway))?;
            let vni = if s.vni != 0 {
                Some(s.vni)
            } else if s.index == 0 {
                Some(spec.vni)
            } else {
                None
            };
            let mac_vni = vni.unwrap_or(spec.vni);
            subnets.push(SubnetPlan {
                subnet_id: s.subnet_id.clone(),
                index: s.index,
                bridge: format!("br{}", s.index),
                gateway_cidr: format!("{gw}/{prefix_len}"),
                gateway: gw.to_string(),
                network: net,
                prefix: prefix_len,
                mtu: s.mtu,
                mac: bridge_mac(underlay, mac_vni, s.index),
                dhcp: s.dhcp,
                vxlan: vni.map(|v| (format!("vx{v}"), v)),
            });
        }
        let mut nics = Vec::new();
        let mut rejected = Vec::new();
        for n in &spec.nics {
            let Some(sub) = subnets.iter().find(|s| s.subnet_id == n.subnet_id) else {
                rejected.push((n.clone(), "its subnet is not in the VPC spec".to_owned()));
                continue;
            };
            let reserved = n.device.starts_with("br")
                || n.device.starts_with("vx")
                || n.device.starts_with(super::links::SPARE_PREFIX)
                || n.device == super::router::UPLINK
                || n.device == "lo";
            if !valid_ifname(&n.device) || reserved || (n.plug == plinth_api::NicPlug::Veth && n.device.len() > 14) {
                rejected.push((n.clone(), format!("device name {:?} is not usable", n.device)));
                continue;
            }
            if n.port == 0 {
                rejected.push((n.clone(), "port number must be > 0".to_owned()));
                continue;
            }
            nics.push(NicPlan { spec: n.clone(), bridge: sub.bridge.clone(), mtu: sub.mtu });
        }
        Ok(VpcPlan { spec: spec.clone(), ns: format!("{prefix}{}", spec.vni), subnets, nics, rejected })
    }

    /// The subnet of `id`.
    pub fn subnet(&self, id: &SubnetId) -> Option<&SubnetPlan> {
        self.subnets.iter().find(|s| s.subnet_id == *id)
    }
}

/// A stable, locally administered MAC for a host's bridge of one subnet (FNV-1a of the
/// host's underlay address, the VNI and the index).
fn bridge_mac(underlay: &str, vni: u32, index: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in underlay.bytes().chain(vni.to_be_bytes()).chain(index.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!("02:50:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
}
