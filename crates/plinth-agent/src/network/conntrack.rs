//! Cutting tracked connections in a VPC namespace over ctnetlink: one dump of the
//! namespace's table on a `NETLINK_NETFILTER` socket opened there, then one delete per
//! entry that names an address to cut (its original tuple sent back as the dump gave it).
//!
//! `conntrack -L` and then `conntrack -D -s/-d` per address cost a process each, and
//! each of those walks the whole table in text: after bench/net's port-ready phase the
//! table held the prober's many attempts, and cutting the 100 NICs of a group took 1.4 s
//! (the next change waited behind it). The dump here costs the kernel's walk only.
//!
//! Messages are built by hand (a netfilter message is the netlink header, a 4-byte
//! `nfgenmsg` and attributes) and their attributes walked with `netlink-packet-core`'s
//! iterator; only the tuples' IPv4 addresses are read.

use super::rtnl::{answer, error_code, messages, socket_in};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NlasIterator};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// `CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`, `CTA_ZONE`.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
/// Inside a tuple: `CTA_TUPLE_IP`, and in it `CTA_IP_V4_SRC` / `CTA_IP_V4_DST`.
const CTA_TUPLE_IP: u16 = 1;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;

/// Deletes every tracked connection of namespace `ns` whose original or reply tuple names
/// one of `addrs` (as source or destination). Answers how many were deleted.
pub fn cut(ns: &str, addrs: &BTreeSet<Ipv4Addr>) -> Result<usize, String> {
    if addrs.is_empty() {
        return Ok(0);
    }
    let sock = socket_in(ns, NETLINK_NETFILTER).map_err(|e| format!("ctnetlink socket in {ns}: {e}"))?;
    let mut seq = 1;
    send(&sock, IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, &[])?;
    // Each victim: its original tuple and zone, as attributes to send back.
    let mut victims: Vec<Vec<u8>> = Vec::new();
    'dump: loop {
        let (data, _) = sock.recv_from_full().map_err(|e| format!("conntrack dump: {e}"))?;
        for m in messages(&data).map_err(|e| format!("conntrack dump: {e}"))? {
            match m.kind {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => match error_code(m.body) {
                    0 => break 'dump,
                    errno => return Err(format!("conntrack dump: {}", std::io::Error::from_raw_os_error(errno))),
                },
                _ => {
                    // After the `nfgenmsg`, the entry's attributes.
                    let Some(attrs) = m.body.get(4..) else { continue };
                    let (mut names, mut has_tuple) = (false, false);
                    let mut keep = Vec::new();
                    for (t, raw, value) in attributes(attrs) {
                        if t == CTA_TUPLE_ORIG || t == CTA_TUPLE_REPLY {
                            names |= tuple_addresses(value).iter().any(|a| addrs.contains(a));
                        }
                        if t == CTA_TUPLE_ORIG || t == CTA_ZONE {
                            has_tuple |= t == CTA_TUPLE_ORIG;
                            keep.extend_from_slice(raw);
                        }
                    }
                    // A delete without a tuple would flush the whole table: never sent.
                    if names && has_tuple {
                        victims.push(keep);
                    }
                }
            }
        }
    }
    let mut deleted = 0;
    for v in victims {
        seq += 1;
        send(&sock, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, &v)?;
        // An entry gone meanwhile (ENOENT) is as good as deleted.
        match answer(&sock, seq).map_err(|e| format!("ctnetlink: {e}"))? {
            Ok(_) => deleted += 1,
            Err(errno) if errno == libc::ENOENT => deleted += 1,
            Err(_) => {}
        }
    }
    Ok(deleted)
}

/// Sends one ctnetlink request (`AF_INET`, version 0) with `attrs`.
fn send(sock: &Socket, msg: u16, flags: u16, seq: u32, attrs: &[u8]) -> Result<(), String> {
    let len = 16 + 4 + attrs.len();
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(&(len as u32).to_ne_bytes());
    buf.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    buf.extend_from_slice(attrs);
    sock.send(&buf, 0).map(drop).map_err(|e| format!("ctnetlink: {e}"))
}

/// The attributes of a list, up to a malformed one: (type without flags, the whole
/// attribute, its value).
fn attributes(data: &[u8]) -> Vec<(u16, &[u8], &[u8])> {
    NlasIterator::new(data)
        .map_while(Result::ok)
        .map(|nla| {
            let (kind, len) = (nla.kind(), usize::from(nla.length()));
            let whole = &nla.into_inner()[..len];
            (kind, whole, &whole[4..])
        })
        .collect()
}

/// The IPv4 source and destination of a tuple attribute's value.
fn tuple_addresses(tuple: &[u8]) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for (t, _, ip) in attributes(tuple) {
        if t != CTA_TUPLE_IP {
            continue;
        }
        for (k, _, v) in attributes(ip) {
            if (k == CTA_IP_V4_SRC || k == CTA_IP_V4_DST) && v.len() == 4 {
                out.push(Ipv4Addr::new(v[0], v[1], v[2], v[3]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(value);
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        b
    }

    #[test]
    fn a_tuples_addresses_are_read_from_its_nested_attributes() {
        let ip = [nla(CTA_IP_V4_SRC, &[10, 0, 0, 5]), nla(CTA_IP_V4_DST, &[10, 0, 1, 7])].concat();
        let tuple = [nla(CTA_TUPLE_IP | 0x8000, &ip), nla(2 | 0x8000, &nla(1, &[6]))].concat();
        assert_eq!(tuple_addresses(&tuple), vec![Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 1, 7)]);
        let attrs = [nla(CTA_TUPLE_ORIG | 0x8000, &tuple), nla(CTA_ZONE, &[0, 0])].concat();
        let kinds: Vec<u16> = attributes(&attrs).iter().map(|(k, _, _)| *k).collect();
        assert_eq!(kinds, vec![CTA_TUPLE_ORIG, CTA_ZONE]);
    }
}
