//! The OpenFlow pipeline of the Open vSwitch backend's bridge, rendered from the VPC plans
//! (pure: names and numbers in, flow text out), and the security-group verdict of one
//! connection for cutting those a change no longer allows.
//!
//! Registers: `reg6` holds the subnet's tag ([`subnet_tag`]: the VPC's VNI and the subnet's
//! index), `reg5` is 1 for frames that came out of a VXLAN port. Each local NIC has its own
//! conntrack zone (its OpenFlow port number), as OVN gives each logical port one: the
//! egress verdict is committed in the sender's zone, the ingress verdict in the
//! receiver's.
//!
//! | table | holds |
//! |---|---|
//! | 0 | classify by in_port: a NIC's port → 1; a subnet's gateway leg → 10; a VXLAN port → 10 (`reg5=1`; DHCP and ARP naming a gateway never cross hosts) |
//! | 1 | port security: the port's MAC, its address, its ARP; a DHCP discover from 0.0.0.0; no DHCP server replies; nothing else (IPv6 included) |
//! | 2 | egress: ARP and traffic to the gateway itself (the VPC namespace's input chain filters it) pass; IP goes through conntrack in the NIC's zone → 3 |
//! | 3 | established/related pass, invalid drops, new must match an egress rule of the NIC's groups (commit) |
//! | 10 | layer 2 by destination MAC within the subnet: a local NIC → 20, this host's gateway leg, a remote NIC → VXLAN (not from VXLAN), broadcast → 11 |
//! | 11 | broadcast: an ARP request goes to the owner of the address asked (a local NIC, this host's gateway, or VXLAN for a remote NIC), a DHCP discover to the gateway and the subnet's local ports; other broadcasts are dropped |
//! | 20 | ingress: ARP and what the gateway itself sends pass; IP through conntrack in the receiver's zone → 21 |
//! | 21 | established/related pass, invalid drops, new must match an ingress rule (commit) |
//!
//! Every table ends in a drop; the bridge runs `fail-mode=secure`, so a bridge without
//! flows (ovs-vswitchd restarted, flows deleted by hand) forwards nothing until the agent
//! loads them again.

use crate::network::filter::RuleBoxes;
use crate::network::plan::VpcPlan;
use plinth_api::{Direction, NicId, RuleProtocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// One flow: its key (table, priority, match) and its actions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    /// `table=T,priority=P,<match>`: what `delete_strict` names.
    pub key: String,
    /// The action list.
    pub actions: String,
    /// The VPC's VNI (0: the bridge's own flows).
    pub cookie: u32,
}

impl Flow {
    /// The flow as `add-flows` reads it.
    pub fn text(&self) -> String {
        format!("cookie={:#x},{},actions={}", self.cookie, self.key, self.actions)
    }
}

/// The whole flow table, by key.
pub type Flows = BTreeMap<String, Flow>;

/// The names and numbers the flows of one VPC refer to, as the bridge holds them.
pub struct Ports<'a> {
    /// Per local NIC: its port name and OpenFlow port number (its conntrack zone).
    pub nics: &'a BTreeMap<NicId, (String, u32)>,
    /// Per subnet index: its gateway leg's port name.
    pub gateways: &'a BTreeMap<u32, String>,
    /// Per local NIC: what its groups allow ([`Allowed::of`], computed once per apply).
    pub allowed: &'a BTreeMap<NicId, Allowed>,
}

/// A subnet's tag in `reg6`.
pub fn subnet_tag(vni: u32, index: u32) -> u32 {
    (vni << 8) | (index & 0xff)
}

/// What one NIC's groups allow, rule by rule (for its flows and for judging connections).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allowed {
    /// Per protocol: the boxes allowed.
    pub boxes: Vec<(RuleProtocol, RuleBoxes)>,
}

impl Allowed {
    /// What `plan`'s NIC at `i` may do.
    pub fn of(plan: &VpcPlan, i: usize) -> Allowed {
        let groups = &plan.spec.security_groups;
        let n = &plan.nics[i];
        let mut boxes = Vec::new();
        for g in groups.iter().filter(|g| n.spec.security_group_ids.contains(&g.security_group_id)) {
            for r in &g.rules {
                boxes.push((r.protocol, RuleBoxes::of(r, groups)));
            }
        }
        Allowed { boxes }
    }

    /// Whether a new connection of this NIC is allowed: `direction` as seen by the NIC,
    /// `remote` the other end, `proto` the IP protocol number, `fields` its ports (source
    /// ignored: the destination port) or ICMP type and code.
    pub fn allows(&self, direction: Direction, remote: Ipv4Addr, proto: u8, fields: &[u32]) -> bool {
        let remote = u32::from(remote);
        self.boxes.iter().any(|(p, b)| {
            b.direction == direction
                && b.remotes.iter().any(|(lo, hi)| (*lo..=*hi).contains(&remote))
                && match p {
                    RuleProtocol::Any => true,
                    RuleProtocol::Tcp => proto == 6,
                    RuleProtocol::Udp => proto == 17,
                    RuleProtocol::Icmp => proto == 1,
                }
                && b.rest.iter().zip(fields).all(|((lo, hi), v)| (*lo..=*hi).contains(v))
        })
    }
}

/// The CIDR blocks covering `lo..=hi`, fewest first-to-last.
pub fn cidrs(lo: u32, hi: u32) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u64::from(lo), u64::from(hi));
    while lo <= hi {
        let mut len = 32u8;
        // Grow the block while it stays aligned and inside the range.
        while len > 0 {
            let size = 1u64 << (33 - len);
            if lo % size != 0 || lo + size - 1 > hi {
                break;
            }
            len -= 1;
        }
        out.push((lo as u32, len));
        lo += 1u64 << (32 - len);
    }
    out
}

/// The value/mask pairs covering the 16-bit range `lo..=hi`.
pub fn masks16(lo: u32, hi: u32) -> Vec<String> {
    if lo == 0 && hi >= 0xffff {
        return vec![String::new()];
    }
    cidrs(lo << 16, (hi << 16) | 0xffff)
        .into_iter()
        .map(|(v, len)| {
            let v = v >> 16;
            // The low 16 bits are always wildcarded: the prefix covers the port's bits.
            if len == 16 {
                v.to_string()
            } else {
                let mask = (0xffffu32 << (16 - u32::from(len))) & 0xffff;
                format!("{v:#06x}/{mask:#06x}")
            }
        })
        .collect()
}

fn net(field: &str, lo: u32, hi: u32) -> Vec<String> {
    if lo == 0 && hi == u32::MAX {
        return vec![String::new()];
    }
    cidrs(lo, hi).into_iter().map(|(a, len)| format!(",{field}={}/{len}", Ipv4Addr::from(a))).collect()
}

/// The match fields of one allowed box (several: ranges become prefixes and masks).
fn box_matches(proto: RuleProtocol, b: &RuleBoxes) -> Vec<String> {
    let field = match b.direction {
        Direction::Ingress => "nw_src",
        Direction::Egress => "nw_dst",
    };
    let mut out = Vec::new();
    for (lo, hi) in &b.remotes {
        for remote in net(field, *lo, *hi) {
            match proto {
                RuleProtocol::Any => out.push(format!("ip{remote}")),
                RuleProtocol::Tcp | RuleProtocol::Udp => {
                    let p = if proto == RuleProtocol::Tcp { "tcp" } else { "udp" };
                    let (plo, phi) = b.rest.first().copied().unwrap_or((0, 65535));
                    for m in masks16(plo, phi) {
                        let tp = if m.is_empty() { String::new() } else { format!(",tp_dst={m}") };
                        out.push(format!("{p}{remote}{tp}"));
                    }
                }
                RuleProtocol::Icmp => {
                    let (t, c) =
                        (b.rest.first().copied().unwrap_or((0, 255)), b.rest.get(1).copied().unwrap_or((0, 255)));
                    // A type or code is one value or any (the API takes no ranges).
                    let ty = if t.0 == t.1 { format!(",icmp_type={}", t.0) } else { String::new() };
                    let co = if c.0 == c.1 { format!(",icmp_code={}", c.0) } else { String::new() };
                    out.push(format!("icmp{remote}{ty}{co}"));
                }
            }
        }
    }
    out
}

/// Adds a flow.
fn push(out: &mut Flows, cookie: u32, table: u8, priority: u16, matches: &str, actions: &str) {
    let key = if matches.is_empty() {
        format!("table={table},priority={priority}")
    } else {
        format!("table={table},priority={priority},{matches}")
    };
    out.insert(key.clone(), Flow { key, actions: actions.to_owned(), cookie });
}

/// The bridge's own flows: each table's default drop and the connection-state verdicts.
pub fn base() -> Flows {
    let mut f = Flows::new();
    for t in [0, 1, 2, 3, 10, 11, 20, 21] {
        push(&mut f, 0, t, 0, "", "drop");
    }
    push(&mut f, 0, 3, 210, "ct_state=+trk+inv,ip", "drop");
    push(&mut f, 0, 3, 200, "ct_state=+trk+est,ip", "resubmit(,10)");
    push(&mut f, 0, 3, 200, "ct_state=+trk+rel,ip", "resubmit(,10)");
    push(&mut f, 0, 21, 210, "ct_state=+trk+inv,ip", "drop");
    f
}

/// One VPC's flows into `out`. NICs without a port in `ports` are left out (not plugged).
/// `conj_ids`: the last conjunction id used on the bridge (ids are the bridge's, not the
/// VPC's: a VPC's dimension flows may share a match with another's).
pub fn render(plan: &VpcPlan, ports: &Ports<'_>, conj_ids: &mut u32, out: &mut Flows) {
    let vni = plan.spec.vni;
    let c = vni;
    for s in &plan.subnets {
        let tag = subnet_tag(vni, s.index);
        let r6 = format!("reg6={tag}");
        let Some(gw) = ports.gateways.get(&s.index) else { continue };
        push(out, c, 0, 100, &format!("in_port={gw}"), &format!("load:{tag}->NXM_NX_REG6[],resubmit(,10)"));
        push(out, c, 10, 100, &format!("{r6},dl_dst={}", s.mac), &format!("output:{gw}"));
        push(out, c, 11, 100, &format!("{r6},reg5=0,arp,arp_op=1,arp_tpa={}", s.gateway), &format!("output:{gw}"));
        // A DHCP discover reaches the gateway and, as on any switch, the subnet's other
        // local ports (the Linux bridge floods it too); port security drops what a rogue
        // server answers.
        let mut to_all = format!("output:{gw}");
        for n in plan.nics.iter().filter(|n| n.spec.subnet_id == s.subnet_id) {
            if let Some((port, _)) = ports.nics.get(&n.spec.nic_id) {
                to_all.push_str(&format!(",output:{port}"));
            }
        }
        push(out, c, 11, 100, &format!("{r6},reg5=0,udp,tp_dst=67"), &to_all);
        if let Some((vx, _)) = &s.vxlan {
            let load = format!("load:{tag}->NXM_NX_REG6[],load:1->NXM_NX_REG5[],resubmit(,10)");
            push(out, c, 0, 100, &format!("in_port={vx}"), &load);
            // DHCP and ARP naming the gateway stay on their host (every host has the gateway).
            push(out, c, 0, 110, &format!("in_port={vx},udp,tp_dst=67"), "drop");
            push(out, c, 0, 110, &format!("in_port={vx},udp,tp_dst=68"), "drop");
            push(out, c, 0, 110, &format!("in_port={vx},arp,arp_tpa={}", s.gateway), "drop");
            push(out, c, 0, 110, &format!("in_port={vx},arp,arp_spa={}", s.gateway), "drop");
            for r in plan.spec.remote_nics.iter().filter(|r| r.subnet_id == s.subnet_id) {
                let mac = r.mac.to_ascii_lowercase();
                push(out, c, 10, 100, &format!("{r6},reg5=0,dl_dst={mac}"), &format!("output:{vx}"));
                push(out, c, 11, 100, &format!("{r6},reg5=0,arp,arp_op=1,arp_tpa={}", r.ipv4), &format!("output:{vx}"));
            }
        }
        push(out, c, 10, 90, &format!("{r6},dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"), "resubmit(,11)");
    }
    for n in &plan.nics {
        let Some((port, zone)) = ports.nics.get(&n.spec.nic_id) else { continue };
        let Some(s) = plan.subnet(&n.spec.subnet_id) else { continue };
        let tag = subnet_tag(vni, s.index);
        let (mac, ip, gw) = (n.spec.mac.to_ascii_lowercase(), &n.spec.ipv4, &s.gateway);
        let inp = format!("in_port={port}");
        push(out, c, 0, 100, &inp, &format!("load:{tag}->NXM_NX_REG6[],load:{zone}->NXM_NX_REG4[],resubmit(,1)"));
        // Port security.
        if n.spec.port_security {
            push(out, c, 1, 110, &format!("{inp},udp,tp_src=67"), "drop");
            push(out, c, 1, 100, &format!("{inp},dl_src={mac},ip,nw_src={ip}"), "resubmit(,2)");
            for spa in [ip.as_str(), "0.0.0.0"] {
                push(out, c, 1, 100, &format!("{inp},dl_src={mac},arp,arp_spa={spa},arp_sha={mac}"), "resubmit(,2)");
            }
            push(
                out,
                c,
                1,
                100,
                &format!("{inp},dl_src={mac},udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,tp_src=68,tp_dst=67"),
                "resubmit(,2)",
            );
        } else {
            push(out, c, 1, 100, &format!("{inp},ip"), "resubmit(,2)");
            push(out, c, 1, 100, &format!("{inp},arp"), "resubmit(,2)");
        }
        // Egress.
        push(out, c, 2, 110, &format!("{inp},ip,nw_dst={gw}"), "resubmit(,10)");
        push(out, c, 2, 110, &format!("{inp},udp,tp_dst=67"), "resubmit(,10)");
        push(out, c, 2, 100, &format!("{inp},arp"), "resubmit(,10)");
        push(out, c, 2, 100, &format!("{inp},ip"), &format!("ct(table=3,zone={zone})"));
        // Layer 2 and ingress.
        let to = format!("reg6={tag},dl_dst={mac}");
        push(out, c, 10, 100, &to, &format!("load:{zone}->NXM_NX_REG7[],resubmit(,20)"));
        push(out, c, 11, 100, &format!("reg6={tag},arp,arp_op=1,arp_tpa={ip}"), &format!("output:{port}"));
        push(out, c, 20, 110, &format!("{to},ip,nw_src={gw}"), &format!("output:{port}"));
        push(out, c, 20, 100, &format!("{to},arp"), &format!("output:{port}"));
        push(out, c, 20, 100, &format!("{to},ip"), &format!("ct(table=21,zone={zone})"));
        push(out, c, 21, 200, &format!("ct_state=+trk+est,{to}"), &format!("output:{port}"));
        push(out, c, 21, 200, &format!("ct_state=+trk+rel,{to}"), &format!("output:{port}"));
        // Rules naming one remote block: a flow per NIC and match.
        let none = Allowed::default();
        let allowed = ports.allowed.get(&n.spec.nic_id).unwrap_or(&none);
        for (proto, b) in allowed.boxes.iter().filter(|(_, b)| b.remotes.len() <= 1) {
            for m in box_matches(*proto, b) {
                match b.direction {
                    Direction::Egress => push(
                        out,
                        c,
                        3,
                        101,
                        &format!("ct_state=+trk+new,{inp},{m}"),
                        &format!("ct(commit,zone={zone}),resubmit(,10)"),
                    ),
                    Direction::Ingress => push(
                        out,
                        c,
                        21,
                        101,
                        &format!("ct_state=+trk+new,{to},{m}"),
                        &format!("ct(commit,zone={zone}),output:{port}"),
                    ),
                }
            }
        }
    }
    conjunctions(plan, ports, conj_ids, out);
}

/// Rules naming several remotes (a remote group's members, a range that is no block) as
/// conjunctive matches shared by the group's NICs: (remote address) × (the NIC: `reg4` on
/// egress, `reg7` on ingress, its port number) × (protocol and ports), so the flows grow
/// with members plus NICs, not with their product (a default group of 1,000 NICs would be
/// a million flows per host otherwise; Neutron's OVS firewall does the same).
fn conjunctions(plan: &VpcPlan, ports: &Ports<'_>, conj_ids: &mut u32, out: &mut Flows) {
    let c = plan.spec.vni;
    let groups = &plan.spec.security_groups;
    // Dimension flows by key: their conjunction actions.
    let mut dims: BTreeMap<(u8, String), Vec<String>> = BTreeMap::new();
    for g in groups {
        let members: Vec<u32> = plan
            .nics
            .iter()
            .filter(|n| n.spec.security_group_ids.contains(&g.security_group_id))
            .filter_map(|n| ports.nics.get(&n.spec.nic_id).map(|(_, z)| *z))
            .collect();
        if members.is_empty() {
            continue;
        }
        for r in &g.rules {
            let b = RuleBoxes::of(r, groups);
            if b.remotes.len() <= 1 {
                continue;
            }
            *conj_ids += 1;
            let id = *conj_ids;
            let (table, field, reg, then) = match b.direction {
                Direction::Ingress => {
                    (21u8, "nw_src", "reg7", "ct(commit,zone=NXM_NX_REG7[0..15]),output:NXM_NX_REG7[]")
                }
                Direction::Egress => (3u8, "nw_dst", "reg4", "ct(commit,zone=NXM_NX_REG4[0..15]),resubmit(,10)"),
            };
            for (lo, hi) in &b.remotes {
                for remote in net(field, *lo, *hi) {
                    dims.entry((table, format!("ct_state=+trk+new,ip{remote}")))
                        .or_default()
                        .push(format!("conjunction({id},1/3)"));
                }
            }
            for z in &members {
                dims.entry((table, format!("ct_state=+trk+new,{reg}={z}")))
                    .or_default()
                    .push(format!("conjunction({id},2/3)"));
            }
            let anywhere = RuleBoxes { remotes: vec![(0, u32::MAX)], ..b.clone() };
            for m in box_matches(r.protocol, &anywhere) {
                dims.entry((table, format!("ct_state=+trk+new,{m}")))
                    .or_default()
                    .push(format!("conjunction({id},3/3)"));
            }
            // ct() needs the match to name IP.
            push(out, c, table, 100, &format!("ip,conj_id={id}"), then);
        }
    }
    // A dimension another VPC's conjunctions share (the same protocol and ports, an
    // address both VPCs use) is one flow with both VPCs' actions (the bridge's: cookie 0).
    for ((table, key), actions) in dims {
        match out.get_mut(&format!("table={table},priority=100,{key}")) {
            Some(f) => {
                f.actions.push(',');
                f.actions.push_str(&actions.join(","));
                f.cookie = 0;
            }
            None => push(out, c, table, 100, &key, &actions.join(",")),
        }
    }
}

/// The bundle turning `old` into `new`: `delete_strict` for keys gone, `add` for keys new
/// or with other actions (an add over an existing key replaces it).
pub fn delta(old: &Flows, new: &Flows) -> String {
    let mut t = String::new();
    for (k, _) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
        t.push_str("delete_strict ");
        t.push_str(k);
        t.push('\n');
    }
    for (k, f) in new {
        if old.get(k) != Some(f) {
            t.push_str("add ");
            t.push_str(&f.text());
            t.push('\n');
        }
    }
    t
}

/// The full table as `replace-flows` reads it.
pub fn full(flows: &Flows) -> String {
    let mut t = String::new();
    for f in flows.values() {
        t.push_str(&f.text());
        t.push('\n');
    }
    t
}

/// The NICs whose allowed traffic shrank from `old` to `new` (their connections are judged
/// again).
pub fn shrunk(old: &BTreeMap<NicId, Allowed>, new: &BTreeMap<NicId, Allowed>) -> BTreeSet<NicId> {
    // Lists compared whole first (most NICs keep theirs), then as sets of their boxes.
    let key = |a: &Allowed| -> BTreeSet<String> { a.boxes.iter().map(|b| format!("{b:?}")).collect() };
    new.iter()
        .filter(|(id, now)| old.get(*id).is_some_and(|was| was != *now && !key(was).is_subset(&key(now))))
        .map(|(id, _)| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{cidrs, masks16};

    #[test]
    fn ranges_become_prefixes_and_masks() {
        assert_eq!(cidrs(0, u32::MAX), vec![(0, 0)]);
        assert_eq!(cidrs(10, 10), vec![(10, 32)]);
        assert_eq!(cidrs(0x0a000000, 0x0a0000ff), vec![(0x0a000000, 24)]);
        assert_eq!(cidrs(1, 6), vec![(1, 32), (2, 31), (4, 31), (6, 32)]);
        assert_eq!(masks16(22, 22), vec!["22".to_owned()]);
        assert_eq!(masks16(0, 65535), vec![String::new()]);
        assert_eq!(masks16(8000, 8003), vec!["0x1f40/0xfffc".to_owned()]);
        assert_eq!(masks16(1, 3), vec!["1".to_owned(), "0x0002/0xfffe".to_owned()]);
    }
}
