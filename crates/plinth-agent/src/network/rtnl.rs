//! rtnetlink on the hot path of a change: making a NIC's port, attaching it to its bridge,
//! and the static FDB and neighbour entries, as messages on one socket opened in the VPC
//! namespace, with no process. An `ip` or `bridge` process first dumps every link of the
//! namespace to resolve names (2,000 links at 1,000 NICs: 15–30 ms of CPU each, seen with
//! `strace -c`: 220 `recvmsg` calls for one `bridge fdb replace`), so one NIC's change cost
//! about 100 ms in processes on a busy host. A verification reads the namespace's links
//! and addresses back here too, as two dumps ([`Rtnl::links`]: what `ip -j -d link show`
//! and `ip -j -4 addr show` print, without their JSON); FDB and neighbour entries are read
//! with `bridge -j`/`ip -j`. The messages here are what `ip link`, `bridge fdb` and
//! `ip neigh` send.
//!
//! Messages are built with `netlink-packet-route`; replies to changes are read by their
//! fixed headers only (an ACK's error code, a link's index), so an attribute the crate does
//! not know yet cannot fail a change. Dumped links and addresses are parsed by the crate,
//! which keeps attributes it does not know as raw ones.

use netlink_packet_core::Parseable;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_ERROR, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_core::{NLM_F_DUMP, NLMSG_DONE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::link::{InfoVxlan, LinkExtentMask};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::links::Link;

/// `RTM_NEWLINK`: a link, as the kernel answers a `RTM_GETLINK`.
const RTM_NEWLINK: u16 = 16;

/// An rtnetlink socket in one VPC namespace.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

/// How a static FDB entry of a VXLAN device is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdbWrite {
    /// `fdb append` (another destination for the same MAC: head-end replication).
    Append,
    /// `fdb replace`.
    Replace,
}

impl Rtnl {
    /// A socket in namespace `ns` (opened by a short-lived thread that entered it; the
    /// socket stays in that namespace).
    pub fn open(ns: &str) -> Result<Rtnl, String> {
        let sock = socket_in(ns, NETLINK_ROUTE).map_err(|e| format!("rtnetlink socket in {ns}: {e}"))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// A socket in the agent's own namespace.
    pub fn open_own() -> Result<Rtnl, String> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(|e| format!("rtnetlink socket: {e}"))?;
        sock.bind_auto().map_err(|e| format!("rtnetlink socket: {e}"))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends `msg` with `flags` (and `NLM_F_REQUEST`) under the next sequence number.
    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<(), String> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0).map(drop).map_err(|e| format!("{what}: {e}"))
    }

    /// Sends one request and waits for its ACK; answers the reply messages before it
    /// (type, body). `what` names the request in errors, as `ip` would.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16, what: &str) -> Result<Replies, String> {
        self.send(msg, flags | NLM_F_ACK, what)?;
        match answer(&self.sock, self.seq).map_err(|e| format!("{what}: {e}"))? {
            Ok(replies) => Ok(replies),
            Err(errno) => Err(format!("{what}: {}", std::io::Error::from_raw_os_error(errno))),
        }
    }

    /// Sends a dump request; answers every message of the dump (type, body).
    fn dump(&mut self, msg: RouteNetlinkMessage, what: &str) -> Result<Replies, String> {
        self.send(msg, NLM_F_DUMP, what)?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(|e| format!("{what}: {e}"))?;
            for m in messages(&data)?.into_iter().filter(|m| m.seq == self.seq) {
                match m.kind {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => match error_code(m.body) {
                        0 => {}
                        errno => return Err(format!("{what}: {}", std::io::Error::from_raw_os_error(errno))),
                    },
                    kind => replies.push((kind, m.body.to_vec())),
                }
            }
        }
    }

    /// Every link of the namespace, by name, with its IPv4 addresses (`guarded` is not
    /// read here).
    pub fn links(&mut self) -> Result<BTreeMap<String, Link>, String> {
        // Without their counters: a VPC namespace's links are many, and nothing here reads them.
        let mut ask = LinkMessage::default();
        ask.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let dumped = self.dump(RouteNetlinkMessage::GetLink(ask), "dumping links")?;
        let mut by_index = BTreeMap::new();
        let mut masters = Vec::new();
        for (_, body) in dumped.iter().filter(|(kind, _)| *kind == RTM_NEWLINK) {
            let m = LinkMessage::parse(body.as_slice()).map_err(|e| format!("a dumped link: {e}"))?;
            let mut l = Link { up: m.header.flags.contains(LinkFlags::Up), ..Link::default() };
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => l.name = n.clone(),
                    LinkAttribute::Mtu(n) => l.mtu = *n,
                    LinkAttribute::Address(b) => l.mac = mac_string(b),
                    LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
                    LinkAttribute::Controller(i) => masters.push((m.header.index, *i)),
                    LinkAttribute::LinkInfo(infos) => link_info(infos, &mut l),
                    _ => {}
                }
            }
            by_index.insert(m.header.index, l);
        }
        for (i, master) in masters {
            let name = by_index.get(&master).map(|l| l.name.clone());
            if let Some(l) = by_index.get_mut(&i) {
                l.master = name;
            }
        }
        let mut ask = AddressMessage::default();
        ask.header.family = AddressFamily::Inet;
        for (_, body) in self.dump(RouteNetlinkMessage::GetAddress(ask), "dumping addresses")?.iter() {
            let Ok(a) = AddressMessage::parse(body.as_slice()) else { continue };
            let Some(l) = by_index.get_mut(&a.header.index) else { continue };
            for attr in &a.attributes {
                if let AddressAttribute::Local(ip) = attr {
                    l.addrs.push(format!("{ip}/{}", a.header.prefix_len));
                }
            }
        }
        Ok(by_index.into_values().map(|l| (l.name.clone(), l)).collect())
    }

    /// The index of link `name`.
    pub fn index(&mut self, name: &str) -> Result<u32, String> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = self.request(RouteNetlinkMessage::GetLink(m), 0, &format!("link {name}"))?;
        // The body is an `ifinfomsg`: family, pad, type, then the index.
        replies
            .iter()
            .find(|(kind, body)| *kind == RTM_NEWLINK && body.len() >= 8)
            .map(|(_, b)| u32::from_ne_bytes([b[4], b[5], b[6], b[7]]))
            .ok_or_else(|| format!("link {name}: no answer"))
    }

    /// `ip link add NAME mtu MTU type veth peer name FAR mtu MTU address MAC`.
    pub fn add_veth(&mut self, name: &str, far: &str, mtu: u32, far_mac: &str) -> Result<(), String> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(far.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(mac_bytes(far_mac)?),
        ];
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL, &format!("adding veth {name}"))
            .map(drop)
    }

    /// `ip link del NAME`.
    pub fn del_link(&mut self, name: &str) -> Result<(), String> {
        let index = self.index(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(m), 0, &format!("deleting {name}")).map(drop)
    }

    /// `ip link set dev NAME name NEW` (NAME down: a running device cannot be renamed).
    pub fn rename(&mut self, name: &str, new: &str) -> Result<(), String> {
        let mut m = LinkMessage::default();
        m.header.index = self.index(name)?;
        m.attributes.push(LinkAttribute::IfName(new.to_owned()));
        self.request(RouteNetlinkMessage::SetLink(m), 0, &format!("renaming {name} to {new}")).map(drop)
    }

    /// `ip link set dev NAME [mtu MTU] [master BRIDGE] [up]`.
    pub fn set_link(&mut self, name: &str, mtu: Option<u32>, master: Option<&str>, up: bool) -> Result<(), String> {
        let index = self.index(name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        if up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(br) = master {
            m.attributes.push(LinkAttribute::Controller(self.index(br)?));
        }
        self.request(RouteNetlinkMessage::SetLink(m), 0, &format!("setting {name}")).map(drop)
    }

    /// `ip link set dev PORT type bridge_slave flood on|off`: unknown unicast to the port.
    pub fn set_flood(&mut self, port: &str, flood: bool) -> Result<(), String> {
        let mut m = LinkMessage::default();
        m.header.index = self.index(port)?;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::UnicastFlood(flood)])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(m), 0, &format!("flooding on {port}")).map(drop)
    }

    /// `bridge fdb replace MAC dev PORT master static`: the bridge's own entry for a port.
    pub fn bridge_fdb(&mut self, port: &str, mac: &str) -> Result<(), String> {
        let m = self.fdb_message(port, mac, None, NeighbourState::Noarp, NeighbourFlags::Controller)?;
        self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
            &format!("fdb {mac} on {port}"),
        )
        .map(drop)
    }

    /// `bridge fdb append|replace MAC dev VX dst DST self permanent`: a VXLAN device's entry.
    pub fn vxlan_fdb(&mut self, vx: &str, mac: &str, dst: &str, how: FdbWrite) -> Result<(), String> {
        let m = self.fdb_message(vx, mac, Some(dst), NeighbourState::Permanent, NeighbourFlags::Own)?;
        let flags = NLM_F_CREATE | if how == FdbWrite::Append { NLM_F_APPEND } else { NLM_F_REPLACE };
        self.request(RouteNetlinkMessage::NewNeighbour(m), flags, &format!("fdb {mac} dst {dst} on {vx}")).map(drop)
    }

    /// `bridge fdb del MAC dev VX dst DST`.
    pub fn vxlan_fdb_del(&mut self, vx: &str, mac: &str, dst: &str) -> Result<(), String> {
        let m = self.fdb_message(vx, mac, Some(dst), NeighbourState::Permanent, NeighbourFlags::Own)?;
        self.request(RouteNetlinkMessage::DelNeighbour(m), 0, &format!("deleting fdb {mac} dst {dst} on {vx}"))
            .map(drop)
    }

    fn fdb_message(
        &mut self,
        dev: &str,
        mac: &str,
        dst: Option<&str>,
        state: NeighbourState,
        flags: NeighbourFlags,
    ) -> Result<NeighbourMessage, String> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = self.index(dev)?;
        m.header.state = state;
        m.header.flags = flags;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac_bytes(mac)?));
        if let Some(dst) = dst {
            m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ipv4(dst)?)));
        }
        Ok(m)
    }

    /// `ip neigh replace ADDR lladdr MAC dev DEV nud permanent`.
    pub fn neigh_replace(&mut self, addr: &str, dev: &str, mac: &str) -> Result<(), String> {
        let mut m = self.neigh_message(addr, dev)?;
        m.header.state = NeighbourState::Permanent;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac_bytes(mac)?));
        self.request(RouteNetlinkMessage::NewNeighbour(m), NLM_F_CREATE | NLM_F_REPLACE, &format!("neighbour {addr}"))
            .map(drop)
    }

    /// `ip neigh del ADDR dev DEV`.
    pub fn neigh_del(&mut self, addr: &str, dev: &str) -> Result<(), String> {
        let m = self.neigh_message(addr, dev)?;
        self.request(RouteNetlinkMessage::DelNeighbour(m), 0, &format!("deleting neighbour {addr}")).map(drop)
    }

    fn neigh_message(&mut self, addr: &str, dev: &str) -> Result<NeighbourMessage, String> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = self.index(dev)?;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ipv4(addr)?)));
        Ok(m)
    }
}

/// A link's kind, VXLAN id and source, and (as a bridge port) whether unknown unicast is
/// flooded to it, from its `IFLA_LINKINFO`.
fn link_info(infos: &[LinkInfo], l: &mut Link) {
    for i in infos {
        match i {
            LinkInfo::Kind(k) => l.kind = k.to_string(),
            LinkInfo::Data(InfoData::Vxlan(v)) => {
                for x in v {
                    match x {
                        InfoVxlan::Id(id) => l.vxlan_id = Some(u64::from(*id)),
                        InfoVxlan::Local(a) => l.vxlan_local = Some(a.to_string()),
                        _ => {}
                    }
                }
            }
            LinkInfo::PortData(InfoPortData::BridgePort(p)) => {
                for x in p {
                    if let InfoBridgePort::UnicastFlood(f) = x {
                        l.flood = Some(*f);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`, as `ip` prints a link's address.
fn mac_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn mac_bytes(mac: &str) -> Result<Vec<u8>, String> {
    let b: Vec<u8> = mac.split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
    if b.len() == 6 { Ok(b) } else { Err(format!("not a MAC address: {mac}")) }
}

fn ipv4(a: &str) -> Result<Ipv4Addr, String> {
    a.parse().map_err(|_| format!("not an IPv4 address: {a}"))
}

/// A netlink socket of `protocol` in namespace `ns` (opened by a short-lived thread that
/// entered it; the socket stays in that namespace).
pub(super) fn socket_in(ns: &str, protocol: isize) -> std::io::Result<Socket> {
    super::tap::in_netns(&super::links::ns_path(ns), move || {
        let mut s = Socket::new(protocol)?;
        s.bind_auto()?;
        Ok(s)
    })
}

/// One message of a netlink datagram, read by its fixed header.
pub(super) struct Message<'a> {
    pub kind: u16,
    pub seq: u32,
    /// What follows the 16-byte header.
    pub body: &'a [u8],
}

/// The messages of one netlink datagram (`Err`: a truncated one).
pub(super) fn messages(data: &[u8]) -> Result<Vec<Message<'_>>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 16 <= data.len() {
        let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len < 16 || off + len > data.len() {
            return Err("a truncated netlink reply".to_owned());
        }
        out.push(Message {
            kind: u16::from_ne_bytes([data[off + 4], data[off + 5]]),
            seq: u32::from_ne_bytes([data[off + 8], data[off + 9], data[off + 10], data[off + 11]]),
            body: &data[off + 16..off + len],
        });
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// The errno an `NLMSG_ERROR` body carries (0: an ACK).
pub(super) fn error_code(body: &[u8]) -> i32 {
    body.get(..4).map_or(0, |b| -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// The messages answering a request before its ACK: (type, body).
pub(super) type Replies = Vec<(u16, Vec<u8>)>;

/// Waits on `sock` for the answer to request `seq`: the messages before its ACK (type,
/// body), or the errno it was refused with. Messages of other requests are skipped.
pub(super) fn answer(sock: &Socket, seq: u32) -> Result<Result<Replies, i32>, String> {
    let mut replies = Vec::new();
    loop {
        let (data, _) = sock.recv_from_full().map_err(|e| e.to_string())?;
        for m in messages(&data)?.into_iter().filter(|m| m.seq == seq) {
            if m.kind == NLMSG_ERROR {
                return Ok(match error_code(m.body) {
                    0 => Ok(replies),
                    errno => Err(errno),
                });
            }
            replies.push((m.kind, m.body.to_vec()));
        }
    }
}
