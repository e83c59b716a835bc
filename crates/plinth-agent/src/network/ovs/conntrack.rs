//! Cutting the connections of NICs that their rules no longer allow, in Open vSwitch's
//! userspace conntrack: the table is dumped once (`dpctl/dump-conntrack`), each entry of a
//! judged NIC's zone is judged against what the NIC is allowed now (a connection the NIC
//! opened by its egress rules, one opened to it by its ingress rules), and each refused
//! entry is flushed by its exact tuple. The connections still allowed keep going.

use super::daemon::Ovs;
use super::flows::Allowed;
use plinth_api::Direction;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One conntrack entry's original direction, as dumped.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// `tcp`, `udp`, `icmp`, or another protocol's name.
    pub proto: String,
    /// The `orig=(…)` fields.
    pub orig: BTreeMap<String, String>,
    /// A TCP entry's state (`protoinfo=(state=…)`).
    pub state: Option<String>,
}

/// Parses one line of `dpctl/dump-conntrack`.
pub fn parse(line: &str) -> Option<Entry> {
    let (proto, rest) = line.trim().split_once(',')?;
    let start = rest.find("orig=(")? + "orig=(".len();
    let end = start + rest[start..].find(')')?;
    let orig = rest[start..end]
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let state = rest
        .find("state=")
        .map(|i| &rest[i + "state=".len()..])
        .map(|t| t.split([',', ')']).next().unwrap_or_default().to_owned());
    Some(Entry { proto: proto.to_owned(), orig, state })
}

impl Entry {
    /// The IP protocol number and the fields a rule judges (destination port; ICMP type
    /// and code).
    fn judged(&self) -> Option<(u8, Vec<u32>)> {
        let num = |k: &str| self.orig.get(k).and_then(|v| v.parse::<u32>().ok());
        match self.proto.as_str() {
            "tcp" => Some((6, vec![num("dport")?])),
            "udp" => Some((17, vec![num("dport")?])),
            "icmp" => Some((1, vec![num("type")?, num("code")?])),
            _ => None,
        }
    }

    /// Whether `allowed` still lets the NIC at `addr` have this connection.
    pub fn allowed(&self, addr: Ipv4Addr, allowed: &Allowed) -> bool {
        let ip = |k: &str| self.orig.get(k).and_then(|v| v.parse::<Ipv4Addr>().ok());
        let (Some(src), Some(dst), Some((proto, fields))) = (ip("src"), ip("dst"), self.judged()) else {
            // Not a protocol the rules name field by field: judged as "any protocol".
            return false;
        };
        if src == addr {
            allowed.allows(Direction::Egress, dst, proto, &fields)
        } else if dst == addr {
            allowed.allows(Direction::Ingress, src, proto, &fields)
        } else {
            // Neither end is the NIC's address (translated elsewhere): leave it.
            true
        }
    }

    /// A TCP connection that has ended (`TIME_WAIT`, `CLOSED`).
    fn closed(&self) -> bool {
        self.state.as_deref().is_some_and(|s| s == "TIME_WAIT" || s == "CLOSED")
    }

    /// The tuple `dpctl/flush-conntrack` takes.
    fn tuple(&self) -> Option<String> {
        let f = |k: &str| self.orig.get(k).cloned();
        let (src, dst) = (f("src")?, f("dst")?);
        let base = format!("ct_nw_src={src},ct_nw_dst={dst}");
        Some(match self.proto.as_str() {
            "tcp" => format!("{base},ct_nw_proto=6,ct_tp_src={},ct_tp_dst={}", f("sport")?, f("dport")?),
            "udp" => format!("{base},ct_nw_proto=17,ct_tp_src={},ct_tp_dst={}", f("sport")?, f("dport")?),
            "icmp" => {
                format!("{base},ct_nw_proto=1,icmp_id={},icmp_type={},icmp_code={}", f("id")?, f("type")?, f("code")?)
            }
            _ => return None,
        })
    }
}

/// Flushes the entries of each zone in `zones` (the NIC at that address, with what it is
/// allowed now) that its NIC's rules refuse, from one dump of the datapath's table;
/// answers how many. An entry that cannot be named by its tuple takes its whole zone.
pub fn cut(ovs: &Ovs, zones: &BTreeMap<u32, (Ipv4Addr, &Allowed)>) -> Result<usize, String> {
    let dump = ovs.control(&[vec!["dpctl/dump-conntrack".to_owned()]])?.pop().unwrap_or_default();
    let mut flush: Vec<Vec<String>> = Vec::new();
    let mut whole = std::collections::BTreeSet::new();
    for line in dump.lines() {
        let zone =
            line.split(',').find_map(|f| f.strip_prefix("zone=")).and_then(|z| z.parse::<u32>().ok()).unwrap_or(0);
        let (Some((addr, allowed)), Some(e)) = (zones.get(&zone), parse(line)) else { continue };
        // A closed connection carries nothing: a new one on its tuple is judged as new.
        if e.closed() || e.allowed(*addr, allowed) {
            continue;
        }
        let z = format!("zone={zone}");
        match e.tuple() {
            Some(t) => flush.push(vec!["dpctl/flush-conntrack".to_owned(), z, t]),
            None => {
                whole.insert(z);
            }
        }
    }
    flush.extend(whole.into_iter().map(|z| vec!["dpctl/flush-conntrack".to_owned(), z]));
    ovs.control(&flush).map(|done| done.len())
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_dumped_entry_reads_as_its_original_tuple() {
        let e = parse("tcp,orig=(src=10.0.0.2,dst=10.0.0.3,sport=40000,dport=22),reply=(src=10.0.0.3,dst=10.0.0.2,sport=22,dport=40000),zone=5,protoinfo=(state=ESTABLISHED)").unwrap();
        assert_eq!(e.proto, "tcp");
        assert_eq!(e.orig["dport"], "22");
        assert_eq!(e.state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(
            e.tuple().unwrap(),
            "ct_nw_src=10.0.0.2,ct_nw_dst=10.0.0.3,ct_nw_proto=6,ct_tp_src=40000,ct_tp_dst=22"
        );
        let i = parse("icmp,orig=(src=10.0.0.2,dst=10.0.0.3,id=7,type=8,code=0),reply=(src=10.0.0.3,dst=10.0.0.2,id=7,type=0,code=0),zone=5").unwrap();
        assert_eq!(
            i.tuple().unwrap(),
            "ct_nw_src=10.0.0.2,ct_nw_dst=10.0.0.3,ct_nw_proto=1,icmp_id=7,icmp_type=8,icmp_code=0"
        );
    }
}
