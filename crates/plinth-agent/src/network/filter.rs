//! The VPC's packet filter: anti-spoofing and port marks in a `bridge` table, stateful
//! security-group verdicts in an `inet` table, both in the VPC namespace, rendered as
//! `nft` text and loaded as one atomic batch (`nft -f -`: one transaction; a failed batch
//! leaves the old ruleset in place).
//!
//! Layout (the chains depend only on *which* groups exist; everything else is set
//! elements, so a member joining or leaving a group, a rule added or removed, or a NIC
//! plugged is an element update whose cost does not grow with the number of rules):
//!
//! - `table bridge plinth`, chain `pre` (prerouting, priority −200): `meta mark set iifname
//!   map @port_mark` (the NIC's `port` number); frames from a port that is neither a known
//!   NIC nor a VXLAN uplink are dropped; ports with port security jump to `secured`: only
//!   IPv4 and ARP (IPv6 is dropped entirely, router advertisements included), the source
//!   MAC must be the port's, ARP sender MAC/IP must be the port's (or 0.0.0.0 probes), no
//!   DHCP server replies (udp sport 67), IPv4 source must be the port's address except a
//!   DHCP discover from 0.0.0.0. Chain `l2out` (forward) and `uplink` keep DHCP and ARP for
//!   the gateway on this host (the gateway is per host, see [`super::plan`]). Frames from
//!   an uplink get mark 0 (nothing from outside carries the passed bit).
//! - `table inet plinth`, chain `forward` (policy drop): `ct state established,related
//!   accept`, `ct state invalid drop`; a packet from a local port (mark ≠ 0) must pass
//!   `egress` (its groups' egress rules; falls through when allowed, dropped otherwise),
//!   then a packet to a local NIC (`ip daddr @local_ips`, unique within the VPC, so this
//!   covers routed traffic too) must pass `ingress` (accept or drop); a packet from a local
//!   port to a NIC elsewhere is accepted (that host's ingress decides). Chain `input`
//!   (policy drop) lets ports reach DHCP, DNS on the gateway and ping the gateway only.
//! - `table ip plinth`: the VPC router's address translation ([`super::router`] puts the
//!   addresses on the uplink `up0`). Map `to_fixed` (each local floating IP → its NIC's
//!   address) is the `pre` chain's DNAT; map `to_public` (each local NIC with a public
//!   address → its first floating IP, else its SNAT address) is the `post` chain's SNAT for
//!   traffic leaving by the uplink, and for hairpin traffic (a NIC reaching a sibling on
//!   this host through the sibling's floating IP: without it the sibling would answer
//!   the private address directly). Chain `leave` drops whatever would leave by the
//!   uplink from an address that is not a public address of this router (a NIC without
//!   one, or the translation gone). The inet `forward` chain drops new connections from
//!   the uplink that no floating IP translated. Security groups see the NIC's private
//!   address as destination (DNAT runs before `forward`), exactly as for private traffic.
//! - Fail closed ([`super::guard`]): an eBPF program at the egress of every port and VXLAN
//!   device drops each packet whose mark lacks the passed bit (0x80000000, [`PASS`]). The
//!   bit is set exactly where passage is granted: on every accept of `forward`/`ingress`
//!   (after matching: `egress` compares exact port marks), by the inet `output` chain on
//!   whatever the namespace sends (DHCP replies, the gateway's ICMP), and for ARP only by
//!   the bridge `l2out` (after its drops) and `output` chains (ARP never reaches the inet
//!   hooks). A flushed ruleset (or a deleted table) so forwards nothing until the agent
//!   loads it again; with the tables present, behaviour is as without the guard. Frames
//!   neither IP nor ARP never get the bit (other ethertypes from ports without port
//!   security used to be bridged; they are dropped at egress now; IPv6 already met the
//!   `forward` chain's drop).
//! - Per group `g{k}` (k = its position in the spec): `g{k}_ports` (marks of local member
//!   ports), `g{k}_addrs` (addresses of local members), and per direction `in`/`out` the
//!   interval sets `_tcp`/`_udp` (`remote . port range`), `_icmp` (`remote . type .
//!   code`), `_any` (`remote`) for rules whose remote is a CIDR or a remote group's
//!   members, and the port-only `_tcp_p`/`_udp_p` (`port range`), `_icmp_p` (`type .
//!   code`), `_any_p` (one all-addresses element) for rules from or to anywhere: kept
//!   apart, the two kinds never multiply (in one `remote . port` set every rule from
//!   anywhere would be repeated in every address window the CIDR rules cut). Overlapping
//!   rules are merged into disjoint elements first (the kernel refuses overlapping
//!   concatenated intervals).
//!
//! Applying: a change apply trusts what the agent last loaded and sends only the differing
//! set elements, reading nothing back (or, when the chains changed, both tables whole,
//! reading their structure back without the elements). A verifying apply reads the
//! tables ([`super::listing`]; or takes a survey's read, made beside change applies) and
//! sends a delta only when their structure is as read after the last whole load and every
//! set holds the elements last loaded into it; otherwise (first apply, agent restart, a
//! table flushed or an element deleted by hand) both tables are replaced whole in one
//! batch. Chosen: `nft` text over the JSON model (the text is what the reference
//! experiments verified and what operators read; the same text is logged on failure).

use super::cmd;
use super::listing::{self, Listing, Writes};
use super::plan::{NicPlan, VpcPlan, cidr_range};
use super::router::UPLINK;
use plinth_api::{Direction, NicId, RuleProtocol, RuleSpec, SecurityGroupId, SecurityGroupSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The rendered ruleset of one VPC.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ruleset {
    /// Both tables' chains and set declarations (no elements).
    pub structure: String,
    /// Elements per set, keyed by `"<family> <set>"`.
    pub sets: BTreeMap<String, BTreeSet<String>>,
    /// Per NIC: its groups.
    pub nic_groups: BTreeMap<NicId, BTreeSet<SecurityGroupId>>,
    /// Per NIC: the filter generation this ruleset carries.
    pub generations: BTreeMap<NicId, i64>,
    /// Per NIC: its address.
    pub addrs: BTreeMap<NicId, String>,
    /// Per group: its rule elements and allow atoms (for cutting connections a change
    /// removed) as rendered; the next render reuses them while the group's input stays the
    /// same.
    pub groups: BTreeMap<SecurityGroupId, Arc<GroupRender>>,
}

/// What the agent last loaded into one VPC namespace.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The ruleset loaded.
    pub ruleset: Ruleset,
    /// Per family, the table's structure as read back after the tables were last loaded
    /// whole (element updates never change it); `None` when that read failed (the next
    /// verification then replaces the tables whole rather than trust a delta against an
    /// unknown state).
    pub structure: Option<BTreeMap<String, String>>,
}

/// How [`apply`] learns what the kernel holds before it sends anything.
pub enum Check<'a> {
    /// Trusts [`Loaded`] (a change apply): sends the difference, reads nothing.
    Trust,
    /// Reads the tables now (a verification without a survey).
    Read,
    /// Uses tables read earlier, beside change applies (a survey's): the sets written
    /// since tick `since` are not compared (they were written by batches the kernel took).
    Surveyed {
        /// The tables as the survey read them.
        listing: &'a Listing,
        /// The write clock ([`Writes::now`]) when the survey began.
        since: u64,
    },
}

type Box_ = Vec<(u32, u32)>;

fn ipv4(text: &str) -> Option<u32> {
    text.parse::<Ipv4Addr>().ok().map(u32::from)
}

fn addr_text(v: u32) -> String {
    Ipv4Addr::from(v).to_string()
}

fn range_text(lo: u32, hi: u32, f: impl Fn(u32) -> String) -> String {
    if lo == hi { f(lo) } else { format!("{}-{}", f(lo), f(hi)) }
}

/// Splits possibly overlapping boxes (inclusive ranges per field) into disjoint boxes
/// covering the same points, merging neighbours that agree on every other field.
pub fn disjoint(boxes: &[Box_]) -> Vec<Box_> {
    if boxes.is_empty() {
        return Vec::new();
    }
    if boxes[0].is_empty() {
        return vec![Vec::new()];
    }
    let mut cuts = BTreeSet::new();
    for b in boxes {
        cuts.insert(u64::from(b[0].0));
        cuts.insert(u64::from(b[0].1) + 1);
    }
    let cuts: Vec<u64> = cuts.into_iter().collect();
    // Sweep the windows in order, keeping the boxes whose first range covers the window
    // (every start and end is a cut, so a box covers a window whole or not at all).
    let mut by_start: Vec<&Box_> = boxes.iter().collect();
    by_start.sort_by_key(|b| b[0].0);
    let mut next = 0;
    let mut active: Vec<&Box_> = Vec::new();
    let mut out = Vec::new();
    let mut run: Option<(u32, u32, Vec<Box_>)> = None;
    let flush = |run: &mut Option<(u32, u32, Vec<Box_>)>, out: &mut Vec<Box_>| {
        if let Some((lo, hi, sub)) = run.take() {
            for s in sub {
                let mut b = vec![(lo, hi)];
                b.extend(s);
                out.push(b);
            }
        }
    };
    for w in cuts.windows(2) {
        let (lo, hi) = (w[0] as u32, (w[1] - 1) as u32);
        while next < by_start.len() && by_start[next][0].0 <= lo {
            active.push(by_start[next]);
            next += 1;
        }
        active.retain(|b| b[0].1 >= hi);
        let covering: Vec<Box_> = active.iter().map(|b| b[1..].to_vec()).collect();
        if covering.is_empty() {
            flush(&mut run, &mut out);
            continue;
        }
        let sub = disjoint(&covering);
        match &mut run {
            Some((_, rhi, rsub)) if u64::from(*rhi) + 1 == u64::from(lo) && *rsub == sub => *rhi = hi,
            _ => {
                flush(&mut run, &mut out);
                run = Some((lo, hi, sub));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// What a group's rendered elements depend on: its rules and, for each remote-group rule,
/// that group's members.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupInput {
    rules: Vec<RuleSpec>,
    remote_members: Vec<Vec<String>>,
}

impl GroupInput {
    /// The members each remote-group rule of `g` names, in rule order.
    fn remote_members<'a>(
        g: &'a SecurityGroupSpec,
        groups: &'a [SecurityGroupSpec],
    ) -> impl Iterator<Item = impl Iterator<Item = &'a String>> {
        g.rules
            .iter()
            .filter_map(|r| r.remote_group_id.as_ref())
            .map(move |rg| groups.iter().filter(move |o| o.security_group_id == *rg).flat_map(|o| o.members.iter()))
    }

    fn of(g: &SecurityGroupSpec, groups: &[SecurityGroupSpec]) -> GroupInput {
        let remote_members = Self::remote_members(g, groups).map(|m| m.cloned().collect()).collect();
        GroupInput { rules: g.rules.clone(), remote_members }
    }

    /// Whether this is the input of `g` now (compared in place: a render that reuses the
    /// group copies none of its rules).
    fn is_of(&self, g: &SecurityGroupSpec, groups: &[SecurityGroupSpec]) -> bool {
        self.rules == g.rules && {
            let mut now = Self::remote_members(g, groups);
            self.remote_members.iter().all(|kept| now.next().is_some_and(|m| m.eq(kept.iter()))) && now.next().is_none()
        }
    }
}

/// One group's rule elements, as rendered from its [`GroupInput`].
#[derive(Clone, Debug, PartialEq)]
pub struct GroupRender {
    input: GroupInput,
    /// Per set suffix (`in_tcp`, `out_any_p`, …): its elements.
    elements: BTreeMap<String, Vec<String>>,
    /// Its allow atoms: one per (direction, protocol, remote, ports) box a rule allows.
    atoms: BTreeSet<String>,
}

/// What one rule allows, as ranges: the remote addresses it names (`[(0, u32::MAX)]`:
/// anywhere; empty: nobody, e.g. a remote group without members or a bad CIDR), and the
/// protocol's fields (a port range for TCP/UDP, type and code for ICMP, none for any).
/// Both backends render from it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleBoxes {
    /// Which traffic of the NIC it allows.
    pub direction: Direction,
    /// Remote address ranges.
    pub remotes: Vec<(u32, u32)>,
    /// The protocol's field ranges.
    pub rest: Vec<(u32, u32)>,
}

impl RuleBoxes {
    /// The boxes of `r` (`groups`: the VPC's, for a remote-group rule's members).
    pub fn of(r: &RuleSpec, groups: &[SecurityGroupSpec]) -> RuleBoxes {
        let remotes = if let Some(cidr) = &r.remote_cidr {
            cidr_range(cidr).map(|range| vec![range]).unwrap_or_default()
        } else if let Some(rg) = &r.remote_group_id {
            groups
                .iter()
                .filter(|o| o.security_group_id == *rg)
                .flat_map(|o| o.members.iter().filter_map(|m| ipv4(m)).map(|a| (a, a)))
                .collect()
        } else {
            vec![(0, u32::MAX)]
        };
        let ports = match (r.port_min, r.port_max) {
            (None, None) => (0, 65535),
            (Some(a), None) | (None, Some(a)) => (u32::from(a), u32::from(a)),
            (Some(a), Some(b)) => (u32::from(a.min(b)), u32::from(a.max(b))),
        };
        let t = r.icmp_type.map_or((0, 255), |t| (u32::from(t), u32::from(t)));
        let c = r.icmp_code.map_or((0, 255), |c| (u32::from(c), u32::from(c)));
        let rest = match r.protocol {
            RuleProtocol::Tcp | RuleProtocol::Udp => vec![ports],
            RuleProtocol::Icmp => vec![t, c],
            RuleProtocol::Any => Vec::new(),
        };
        RuleBoxes { direction: r.direction, remotes, rest }
    }
}

/// Renders one group's rule sets (`groups`: the VPC's, for its remote-group rules).
fn render_group(g: &SecurityGroupSpec, groups: &[SecurityGroupSpec], input: GroupInput) -> GroupRender {
    let mut elements: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut atoms = BTreeSet::new();
    let mut boxes: BTreeMap<String, Vec<Box_>> = BTreeMap::new();
    for r in &g.rules {
        let RuleBoxes { direction, remotes, rest } = RuleBoxes::of(r, groups);
        let dir = match direction {
            Direction::Ingress => "in",
            Direction::Egress => "out",
        };
        let suffix = match r.protocol {
            RuleProtocol::Tcp => "tcp",
            RuleProtocol::Udp => "udp",
            RuleProtocol::Icmp => "icmp",
            RuleProtocol::Any => "any",
        };
        // From (or to) anywhere goes to the port-only sets (`…_p`): such a rule is one
        // element, not one per window the CIDR rules cut in the address space.
        if remotes == [(0, u32::MAX)] {
            let b = if rest.is_empty() { vec![(0, u32::MAX)] } else { rest };
            atoms.insert(format!("{dir}_{suffix}_p {b:?}"));
            boxes.entry(format!("{dir}_{suffix}_p")).or_default().push(b);
            continue;
        }
        for remote in remotes {
            let mut b = vec![remote];
            b.extend(rest.iter().copied());
            atoms.insert(format!("{dir}_{suffix} {b:?}"));
            boxes.entry(format!("{dir}_{suffix}")).or_default().push(b);
        }
    }
    for (suffix, bs) in boxes {
        let port_only = suffix.ends_with("_p");
        let any_p = suffix.ends_with("_any_p");
        let out = elements.entry(suffix).or_default();
        for b in disjoint(&bs) {
            if any_p {
                // "Any protocol from anywhere": the set's one element is a flag.
                out.push("0.0.0.0-255.255.255.255".to_owned());
                continue;
            }
            let mut parts = Vec::new();
            let mut fields = b.iter();
            if !port_only && let Some((lo, hi)) = fields.next() {
                parts.push(range_text(*lo, *hi, addr_text));
            }
            parts.extend(fields.map(|(lo, hi)| range_text(*lo, *hi, |v| v.to_string())));
            out.push(parts.join(" . "));
        }
    }
    GroupRender { input, elements, atoms }
}

/// Renders the VPC's ruleset, reusing the groups of `prior` (the ruleset last rendered)
/// whose input did not change.
pub fn render(plan: &VpcPlan, prior: Option<&Ruleset>) -> Ruleset {
    let mut rs = Ruleset::default();
    // Elements are gathered per set in a vector and sorted into the set once at the end
    // (at 1,000 NICs, inserting each into a tree as it came was most of the render).
    let mut sets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |set: &str, elem: String| match sets.get_mut(set) {
        Some(v) => v.push(elem),
        None => {
            sets.insert(set.to_owned(), vec![elem]);
        }
    };
    let groups = &plan.spec.security_groups;
    let uplinks: Vec<&str> = plan.subnets.iter().filter_map(|s| s.vxlan.as_ref().map(|(v, _)| v.as_str())).collect();

    // Bridge table elements.
    for u in &uplinks {
        add("bridge uplinks", format!("\"{u}\""));
    }
    for sub in &plan.subnets {
        add("bridge gateways", sub.gateway.clone());
        add("inet gateways", sub.gateway.clone());
    }
    for n in &plan.nics {
        let dev = &n.spec.device;
        let mac = n.spec.mac.to_ascii_lowercase();
        add("bridge ports", format!("\"{dev}\""));
        add("bridge port_mark", format!("\"{dev}\" : {}", n.spec.port));
        if n.spec.port_security {
            add("bridge secured", format!("\"{dev}\""));
            add("bridge port_mac", format!("\"{dev}\" . {mac}"));
            add("bridge port_ip", format!("\"{dev}\" . {}", n.spec.ipv4));
            add("bridge port_arp", format!("\"{dev}\" . {mac} . {}", n.spec.ipv4));
            add("bridge port_arp", format!("\"{dev}\" . {mac} . 0.0.0.0"));
        }
        add("inet local_ips", n.spec.ipv4.clone());
        router_elements(n, &mut rs, &mut add);
    }

    // Groups: a group whose rules (and the members its remote-group rules name) are those
    // of the last render is not rendered again.
    for (k, g) in groups.iter().enumerate() {
        let rendered = match prior.and_then(|p| p.groups.get(&g.security_group_id)) {
            Some(r) if r.input.is_of(g, groups) => r.clone(),
            _ => Arc::new(render_group(g, groups, GroupInput::of(g, groups))),
        };
        for (suffix, elems) in &rendered.elements {
            let set = format!("inet g{k}_{suffix}");
            for e in elems {
                add(&set, e.clone());
            }
        }
        rs.groups.insert(g.security_group_id.clone(), rendered);
        let (ports, addrs) = (format!("inet g{k}_ports"), format!("inet g{k}_addrs"));
        for n in plan.nics.iter().filter(|n| n.spec.security_group_ids.contains(&g.security_group_id)) {
            add(&ports, n.spec.port.to_string());
            add(&addrs, n.spec.ipv4.clone());
        }
    }
    for n in &plan.nics {
        let mine = n.spec.security_group_ids.iter().filter(|id| groups.iter().any(|g| g.security_group_id == **id));
        rs.nic_groups.insert(n.spec.nic_id.clone(), mine.cloned().collect());
    }
    rs.sets = sets.into_iter().map(|(k, v)| (k, BTreeSet::from_iter(v))).collect();
    rs.structure = structure(groups.len());
    rs
}

/// Sets the passed bit ([`super::guard::PASSED`]): the guard at each port's and VXLAN
/// device's egress drops every packet without it.
pub const PASS: &str = "meta mark set meta mark or 0x80000000";

/// An ARP request is delivered to a port with port security only when it asks for that
/// port's address: the bridge floods a broadcast to every port, and a thousand copies of
/// each request (one per NIC on the host) would otherwise each be queued to a port (a
/// veth's copies go through the CPU's backlog, `netdev_max_backlog`, 1,000 by default:
/// the copy for the VXLAN device, flooded last, was dropped there at 1,000 NICs).
const ARP_TO_OWNER: &str = "oifname @secured arp operation request oifname . arp daddr ip != @port_ip drop";

/// The two tables' chains and set declarations for `groups` groups.
fn structure(groups: usize) -> String {
    let mut t = String::new();
    t.push_str(
        "table bridge plinth {\n\
         \tset ports { type ifname; }\n\
         \tset uplinks { type ifname; }\n\
         \tset secured { type ifname; }\n\
         \tset gateways { type ipv4_addr; }\n\
         \tset port_mac { type ifname . ether_addr; }\n\
         \tset port_ip { type ifname . ipv4_addr; }\n\
         \tset port_arp { type ifname . ether_addr . ipv4_addr; }\n\
         \tmap port_mark { type ifname : mark; }\n\
         \tchain pre {\n\
         \t\ttype filter hook prerouting priority -200; policy accept;\n\
         \t\tmeta mark set iifname map @port_mark\n\
         \t\tiifname @uplinks meta mark set 0 jump uplink\n\
         \t\tiifname != @ports iifname != @uplinks drop\n\
         \t\tiifname @secured jump secured\n\
         \t}\n\
         \tchain uplink {\n\
         \t\tudp dport { 67, 68 } drop\n\
         \t\tarp daddr ip @gateways drop\n\
         \t\tarp saddr ip @gateways drop\n\
         \t}\n\
         \tchain secured {\n\
         \t\tether type != { ip, arp } drop\n\
         \t\tiifname . ether saddr != @port_mac drop\n\
         \t\tether type arp iifname . arp saddr ether . arp saddr ip != @port_arp drop\n\
         \t\tudp sport 67 drop\n\
         \t\tip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return\n\
         \t\tether type ip iifname . ip saddr != @port_ip drop\n\
         \t}\n",
    );
    // ARP never reaches the inet hooks: the bridge table lets it pass (after its drops),
    // forwarded or sent by the namespace (the gateway's). Never IP: with the inet table
    // gone, IP must stay dropped.
    let _ = write!(
        t,
        "\tchain l2out {{\n\
         \t\ttype filter hook forward priority -200; policy accept;\n\
         \t\toifname @uplinks udp dport {{ 67, 68 }} drop\n\
         \t\toifname @uplinks arp daddr ip @gateways drop\n\
         \t\toifname @uplinks arp saddr ip @gateways drop\n\
         \t\t{ARP_TO_OWNER}\n\
         \t\tether type arp {PASS}\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority -200; policy accept;\n\
         \t\t{ARP_TO_OWNER}\n\
         \t\tether type arp {PASS}\n\
         \t}}\n\
         }}\n",
    );
    t.push_str(
        "table inet plinth {\n\
         \tset local_ips { type ipv4_addr; }\n\
         \tset gateways { type ipv4_addr; }\n",
    );
    for k in 0..groups {
        let _ = writeln!(t, "\tset g{k}_ports {{ type mark; }}");
        let _ = writeln!(t, "\tset g{k}_addrs {{ type ipv4_addr; }}");
        for dir in ["in", "out"] {
            let _ = writeln!(t, "\tset g{k}_{dir}_tcp {{ type ipv4_addr . inet_service; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_udp {{ type ipv4_addr . inet_service; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_icmp {{ type ipv4_addr . icmp_type . icmp_code; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_any {{ type ipv4_addr; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_tcp_p {{ type inet_service; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_udp_p {{ type inet_service; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_icmp_p {{ type icmp_type . icmp_code; flags interval; }}");
            let _ = writeln!(t, "\tset g{k}_{dir}_any_p {{ type ipv4_addr; flags interval; }}");
        }
    }
    // Every accept of `forward` (and `ingress`) sets the passed bit, after matching:
    // `egress` matches exact port marks. `output`: whatever the namespace sends.
    let _ = write!(
        t,
        "\tchain forward {{\n\
         \t\ttype filter hook forward priority 0; policy drop;\n\
         \t\tct state established,related {PASS} accept\n\
         \t\tct state invalid drop\n\
         \t\tiifname \"{UPLINK}\" ct status & dnat != dnat drop\n\
         \t\tmeta mark != 0 jump egress\n\
         \t\tip daddr @local_ips jump ingress\n\
         \t\tmeta mark != 0 {PASS} accept\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority 0; policy accept;\n\
         \t\t{PASS}\n\
         \t}}\n\
         \tchain egress {{\n",
    );
    for k in 0..groups {
        let m = format!("\t\tmeta mark @g{k}_ports ip daddr");
        let _ = writeln!(t, "{m} . tcp dport @g{k}_out_tcp return");
        let _ = writeln!(t, "{m} . udp dport @g{k}_out_udp return");
        let _ = writeln!(t, "{m} . icmp type . icmp code @g{k}_out_icmp return");
        let _ = writeln!(t, "{m} @g{k}_out_any return");
        let m = format!("\t\tmeta mark @g{k}_ports");
        let _ = writeln!(t, "{m} tcp dport @g{k}_out_tcp_p return");
        let _ = writeln!(t, "{m} udp dport @g{k}_out_udp_p return");
        let _ = writeln!(t, "{m} icmp type . icmp code @g{k}_out_icmp_p return");
        let _ = writeln!(t, "{m} ip daddr @g{k}_out_any_p return");
    }
    t.push_str("\t\tdrop\n\t}\n\tchain ingress {\n");
    for k in 0..groups {
        let m = format!("\t\tip daddr @g{k}_addrs ip saddr");
        let _ = writeln!(t, "{m} . tcp dport @g{k}_in_tcp {PASS} accept");
        let _ = writeln!(t, "{m} . udp dport @g{k}_in_udp {PASS} accept");
        let _ = writeln!(t, "{m} . icmp type . icmp code @g{k}_in_icmp {PASS} accept");
        let _ = writeln!(t, "{m} @g{k}_in_any {PASS} accept");
        let m = format!("\t\tip daddr @g{k}_addrs");
        let _ = writeln!(t, "{m} tcp dport @g{k}_in_tcp_p {PASS} accept");
        let _ = writeln!(t, "{m} udp dport @g{k}_in_udp_p {PASS} accept");
        let _ = writeln!(t, "{m} icmp type . icmp code @g{k}_in_icmp_p {PASS} accept");
        let _ = writeln!(t, "{m} ip saddr @g{k}_in_any_p {PASS} accept");
    }
    t.push_str(
        "\t\tdrop\n\t}\n\
         \tchain input {\n\
         \t\ttype filter hook input priority 0; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"lo\" accept\n\
         \t\tmeta mark != 0 udp dport 67 accept\n\
         \t\tmeta mark != 0 ip daddr @gateways meta l4proto { tcp, udp } th dport 53 accept\n\
         \t\tmeta mark != 0 ip daddr @gateways icmp type echo-request accept\n\
         \t}\n\
         }\n",
    );
    nat_table(&mut t);
    t
}

/// The VPC router's address translation (`table ip plinth`; see the module's doc).
fn nat_table(t: &mut String) {
    let _ = write!(
        t,
        "table ip plinth {{\n\
         \tmap to_fixed {{ type ipv4_addr : ipv4_addr; }}\n\
         \tmap to_public {{ type ipv4_addr : ipv4_addr; }}\n\
         \tset public {{ type ipv4_addr; }}\n\
         \tchain pre {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tdnat to ip daddr map @to_fixed\n\
         \t}}\n\
         \tchain post {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{UPLINK}\" snat to ip saddr map @to_public\n\
         \t\tct status dnat oifname != \"{UPLINK}\" snat to ip saddr map @to_public\n\
         \t}}\n\
         \tchain leave {{\n\
         \t\ttype filter hook postrouting priority 200; policy accept;\n\
         \t\toifname \"{UPLINK}\" ip saddr != @public drop\n\
         \t}}\n\
         }}\n",
    );
}

/// One NIC's part of the router's translation (maps `to_fixed`, `to_public`, set `public`),
/// its filter generation and address, for both renders.
fn router_elements(n: &NicPlan, rs: &mut Ruleset, add: &mut impl FnMut(&str, String)) {
    for f in &n.spec.floating {
        add("ip to_fixed", format!("{f} : {}", n.spec.ipv4));
    }
    let public: Vec<&String> = n.public().collect();
    if let Some(first) = public.first() {
        add("ip to_public", format!("{} : {first}", n.spec.ipv4));
    }
    for a in public {
        add("ip public", a.clone());
    }
    rs.generations.insert(n.spec.nic_id.clone(), n.spec.filter_generation);
    rs.addrs.insert(n.spec.nic_id.clone(), n.spec.ipv4.clone());
}

/// The ruleset of a VPC namespace that only routes (the Open vSwitch backend filters the
/// ports in its own flows): the router's translation, and an `inet` table whose `forward`
/// chain drops new connections from the uplink that no floating IP translated and whose
/// `input` chain lets the subnets reach DHCP, DNS and ping on the gateways only. Routing
/// between subnets is asymmetric across hosts (each direction leaves by its sender's
/// host), so this namespace may see only the replies of a connection: `forward` drops
/// nothing as invalid (the flows keep the state that decides).
pub fn render_router(plan: &VpcPlan) -> Ruleset {
    let mut rs = Ruleset::default();
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sub in &plan.subnets {
        sets.entry("inet gateways".to_owned()).or_default().insert(sub.gateway.clone());
    }
    for n in &plan.nics {
        router_elements(n, &mut rs, &mut |set, e| {
            sets.entry(set.to_owned()).or_default().insert(e);
        });
    }
    rs.sets = sets;
    let mut t = format!(
        "table inet plinth {{\n\
         \tset gateways {{ type ipv4_addr; }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority 0; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"{UPLINK}\" ct status & dnat != dnat drop\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority 0; policy drop;\n\
         \t\tct state established,related accept\n\
         \t\tiifname \"lo\" accept\n\
         \t\tiifname \"{UPLINK}\" drop\n\
         \t\tudp dport 67 accept\n\
         \t\tip daddr @gateways meta l4proto {{ tcp, udp }} th dport 53 accept\n\
         \t\tip daddr @gateways icmp type echo-request accept\n\
         \t}}\n\
         }}\n"
    );
    nat_table(&mut t);
    rs.structure = t;
    rs
}

fn elements_cmd(verb: &str, key: &str, elems: &BTreeSet<String>) -> String {
    let (family, set) = key.split_once(' ').unwrap_or(("inet", key));
    let list: Vec<&str> = elems.iter().map(String::as_str).collect();
    format!("{verb} element {family} plinth {set} {{ {} }}\n", list.join(", "))
}

/// The batch replacing both tables whole.
pub fn full_batch(rs: &Ruleset) -> String {
    let mut t = String::new();
    for family in listing::FAMILIES {
        let _ = writeln!(t, "table {family} plinth\ndelete table {family} plinth");
    }
    t.push_str(&rs.structure);
    for (k, elems) in &rs.sets {
        if !elems.is_empty() {
            t.push_str(&elements_cmd("add", k, elems));
        }
    }
    t
}

/// The batch turning `old`'s set elements into `new`'s (same structure), and the sets
/// it writes.
pub fn delta_batch(old: &Ruleset, new: &Ruleset) -> (String, Vec<String>) {
    let empty = BTreeSet::new();
    let mut t = String::new();
    let mut written = Vec::new();
    let keys: BTreeSet<&String> = old.sets.keys().chain(new.sets.keys()).collect();
    for k in keys {
        let o = old.sets.get(k).unwrap_or(&empty);
        let n = new.sets.get(k).unwrap_or(&empty);
        let gone: BTreeSet<String> = o.difference(n).cloned().collect();
        let came: BTreeSet<String> = n.difference(o).cloned().collect();
        if !gone.is_empty() {
            t.push_str(&elements_cmd("delete", k, &gone));
        }
        if !came.is_empty() {
            t.push_str(&elements_cmd("add", k, &came));
        }
        if !gone.is_empty() || !came.is_empty() {
            written.push(k.clone());
        }
    }
    (t, written)
}

/// Loads `new` into the namespace. `check` says what the kernel holds now (see [`Check`]):
/// a delta is sent when it agrees with `loaded`, else both tables are replaced whole and
/// their structure read back. `writes` records what is written when, for surveys; `nft`
/// sends the batch. Answers what is loaded now, or the error (the kernel keeps the old
/// ruleset then: one batch is one transaction).
pub fn apply(
    ns: &str,
    loaded: Option<&Loaded>,
    new: Ruleset,
    check: Check<'_>,
    writes: &std::sync::Mutex<Writes>,
    nft: &super::nft_shell::Nft,
) -> Result<Loaded, String> {
    let writes = || writes.lock().unwrap_or_else(|p| p.into_inner());
    // A survey that began before the tables were last loaded whole read other tables.
    let check = match check {
        Check::Surveyed { since, .. } if writes().raced_whole(since) => Check::Read,
        c => c,
    };
    let trusted = match (loaded, &check) {
        (Some(l), _) if l.ruleset.structure != new.structure => false,
        (Some(_), Check::Trust) => true,
        (Some(l), Check::Read | Check::Surveyed { .. }) => {
            let read;
            let listed = match &check {
                Check::Surveyed { listing, since } => Ok((*listing, Some(*since))),
                _ => {
                    read = listing::read(ns, listing::families(&new.structure), true);
                    read.as_ref().map(|r| (r, None)).map_err(Clone::clone)
                }
            };
            let drift = match (&l.structure, listed) {
                (_, Err(e)) => Some(format!("reading the tables: {e}")),
                (None, _) => Some("the tables' structure could not be read after they were loaded whole".to_owned()),
                (Some(structure), Ok((listing, since))) => {
                    let w = writes();
                    listing::differs(listing, structure, &l.ruleset, |k| since.is_some_and(|s| w.raced(s, k)))
                }
            };
            if let Some(why) = &drift {
                tracing::info!(namespace = ns, drift = %why, "the filter is not as loaded; replacing its tables");
            }
            drift.is_none()
        }
        (None, _) => false,
    };
    let (batch, sets) = match loaded {
        Some(l) if trusted => {
            if l.ruleset.sets == new.sets {
                return Ok(Loaded { ruleset: new, structure: l.structure.clone() });
            }
            let (batch, sets) = delta_batch(&l.ruleset, &new);
            (batch, Some(sets))
        }
        _ => (full_batch(&new), None),
    };
    let sent = std::time::Instant::now();
    writes().begin(sets.as_ref().map(|s| s.iter()));
    let done = nft.load(ns, &batch);
    writes().end();
    done.map_err(|e| format!("nft batch refused: {e}"))?;
    tracing::debug!(
        namespace = ns,
        bytes = batch.len(),
        nft_ms = sent.elapsed().as_millis() as u64,
        "nft batch loaded"
    );
    // Loaded whole: the structure is read back (without the elements: a change apply
    // does this only when the chains changed, a group added or gone).
    let structure = match (sets, loaded) {
        (Some(_), Some(l)) => l.structure.clone(),
        _ => match listing::read(ns, listing::families(&new.structure), false) {
            Ok(l) => Some(l.structure),
            Err(e) => {
                tracing::warn!(namespace = ns, error = %e, "reading the filter's structure back");
                None
            }
        },
    };
    Ok(Loaded { ruleset: new, structure })
}

/// Deletes the conntrack entries of each NIC whose allowed traffic shrank from `old` to
/// `new` (an established flow a removed rule allowed must stop): one ctnetlink dump of the
/// namespace's table and a delete per entry naming one of them ([`super::conntrack`]).
/// Whether a NIC lost something is decided once per distinct pair of group
/// lists (NICs share them: at 1,000 NICs in one group, deciding per NIC cost 100 ms of
/// set unions for each member added).
pub fn cut_connections(ns: &str, old: &Ruleset, new: &Ruleset) {
    let lost: BTreeSet<&SecurityGroupId> = old
        .groups
        .iter()
        .filter(|(g, was)| {
            new.groups.get(*g).is_none_or(|now| !Arc::ptr_eq(was, now) && !was.atoms.is_subset(&now.atoms))
        })
        .map(|(g, _)| g)
        .collect();
    let mut decided: BTreeMap<(&BTreeSet<SecurityGroupId>, &BTreeSet<SecurityGroupId>), bool> = BTreeMap::new();
    let shrunk: Vec<&String> = new
        .nic_groups
        .iter()
        .filter(|(nic, groups)| {
            old.nic_groups.get(*nic).is_some_and(|before| {
                *decided.entry((before, groups)).or_insert_with(|| allowed_shrank(old, before, new, groups, &lost))
            })
        })
        .filter_map(|(nic, _)| new.addrs.get(nic))
        .collect();
    // Public addresses this router gave up: their translated flows stop with them.
    let none = BTreeSet::new();
    let released: Vec<&String> =
        old.sets.get("ip public").unwrap_or(&none).difference(new.sets.get("ip public").unwrap_or(&none)).collect();
    let shrunk: Vec<&String> = shrunk.into_iter().chain(released).collect();
    if shrunk.is_empty() {
        return;
    }
    let addrs: BTreeSet<Ipv4Addr> = shrunk.iter().filter_map(|a| a.parse().ok()).collect();
    if let Err(e) = super::conntrack::cut(ns, &addrs) {
        // Over ctnetlink it failed: the tool, per address, rather than leave a flow.
        tracing::warn!(namespace = ns, error = %e, "cutting connections over ctnetlink failed; using conntrack -D");
        for addr in shrunk {
            // `conntrack -D` exits 1 when nothing matched; either way nothing is left.
            let _ = cmd::in_ns(ns, "conntrack", &["-D", "-s", addr], None);
            let _ = cmd::in_ns(ns, "conntrack", &["-D", "-d", addr], None);
        }
    }
}

/// Whether a NIC in `before` groups under `old` may do less in `after` groups under `new`
/// (the union of its groups' atoms lost one), given the groups that `lost` atoms. Cheap
/// when it kept its groups and none of them lost anything.
fn allowed_shrank(
    old: &Ruleset,
    before: &BTreeSet<SecurityGroupId>,
    new: &Ruleset,
    after: &BTreeSet<SecurityGroupId>,
    lost: &BTreeSet<&SecurityGroupId>,
) -> bool {
    if before.is_subset(after) && !before.iter().any(|g| lost.contains(g)) {
        return false;
    }
    let union = |rs: &Ruleset, gs: &BTreeSet<SecurityGroupId>| -> BTreeSet<String> {
        gs.iter().flat_map(|g| rs.groups.get(g).into_iter().flat_map(|r| r.atoms.iter().cloned())).collect()
    };
    !union(old, before).is_subset(&union(new, after))
}

#[cfg(test)]
mod tests {
    use super::{PASS, disjoint, structure};

    #[test]
    fn the_passed_bit_is_set_at_every_inet_accept_and_for_arp_only_in_the_bridge_table() {
        assert_eq!(PASS, format!("meta mark set meta mark or {:#x}", super::super::guard::PASSED));
        let t = structure(2);
        let (bridge, inet) = t.split_once("table inet plinth").expect("both tables");
        // `input` delivers to the namespace: nothing there leaves through a guarded device.
        let (forwarding, _input) = inet.split_once("\tchain input").expect("the input chain");
        for l in forwarding.lines().map(str::trim).filter(|l| l.ends_with(" accept")) {
            assert!(l.contains(PASS), "an inet accept without the passed bit: {l}");
        }
        assert_eq!(inet.matches(PASS).count(), 2 + 2 * 8 + 1, "forward (2), ingress (8 per group), output (1)");
        for l in bridge.lines().filter(|l| l.contains(PASS)) {
            assert!(l.trim().starts_with("ether type arp "), "the bridge table passes ARP only: {l}");
        }
        assert_eq!(bridge.matches(PASS).count(), 2, "l2out and output");
    }

    #[test]
    fn overlapping_boxes_become_disjoint_and_merge() {
        let out = disjoint(&[vec![(0, 255), (22, 22)], vec![(5, 5), (20, 30)], vec![(0, 255), (23, 40)]]);
        assert_eq!(out, vec![vec![(0, 4), (22, 40)], vec![(5, 5), (20, 40)], vec![(6, 255), (22, 40)]]);
        assert_eq!(disjoint(&[vec![(1, 1)], vec![(2, 2)]]), vec![vec![(1, 2)]]);
    }
}
