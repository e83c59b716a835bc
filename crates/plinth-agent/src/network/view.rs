//! What the backend believes one VPC namespace holds: its links (with addresses), each
//! VXLAN device's FDB entries and the permanent neighbours. A verifying apply reads it back
//! whole from the kernel (links and addresses as rtnetlink dumps, FDB and neighbours with
//! `bridge -j`/`ip -j`); a change apply carries the last one forward and each command that
//! succeeds updates it, so a change costs only its own commands and no read-back (at 1,000
//! ports one read-back of a namespace is tens to hundreds of milliseconds).

use super::fdb;
use super::links::{self, Link};
use std::collections::{BTreeMap, BTreeSet};

/// `(mac, dst)` pairs of one VXLAN device.
pub type FdbSet = BTreeSet<(String, String)>;

/// `(address, device, mac)` of permanent neighbours.
pub type NeighSet = BTreeSet<(String, String, String)>;

/// One VPC namespace as the backend believes it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// Every link, by name.
    pub links: BTreeMap<String, Link>,
    /// Per VXLAN device: its entries.
    pub fdb: BTreeMap<String, FdbSet>,
    /// The permanent neighbours.
    pub neigh: NeighSet,
}

impl View {
    /// Reads the namespace back whole.
    pub fn read(ns: &str) -> Result<View, String> {
        let links = links::read(Some(ns))?;
        let mut fdb = BTreeMap::new();
        for l in links.values().filter(|l| l.kind == "vxlan") {
            fdb.insert(l.name.clone(), fdb::read(Some(ns), &l.name)?);
        }
        let neigh = fdb::read_neigh(ns)?;
        Ok(View { links, fdb, neigh })
    }

    /// Whether this view, read from the kernel, agrees with `carried`, the one a change
    /// apply kept current by its commands: the same links and entries, except what the
    /// commands could not know (the MAC of a link they made, a veth's far end that a
    /// guest has since taken into its own namespace). `Err`: the first difference.
    pub fn agrees_with(&self, carried: &View) -> Result<(), String> {
        let names: BTreeSet<&String> = self.links.keys().chain(carried.links.keys()).collect();
        for n in names {
            match (self.links.get(n), carried.links.get(n)) {
                (Some(read), Some(c)) => {
                    let same =
                        if c.mac.is_empty() { Link { mac: String::new(), ..read.clone() } == *c } else { read == c };
                    if !same {
                        return Err(format!("link {n}: {read:?} read, {c:?} carried"));
                    }
                }
                (None, Some(c))
                    if c.kind == "veth"
                        && n.strip_suffix('g')
                            .is_some_and(|near| self.links.get(near).is_some_and(|l| l.kind == "veth")) => {}
                (None, Some(_)) => return Err(format!("link {n} is gone")),
                (Some(_), None) => return Err(format!("link {n} is there, not made by this agent")),
                _ => {}
            }
        }
        if self.fdb != carried.fdb {
            return Err("the FDB entries differ".to_owned());
        }
        if self.neigh != carried.neigh {
            return Err("the neighbour entries differ".to_owned());
        }
        Ok(())
    }

    /// Reads the links again (after bridges or VXLAN devices changed), keeping FDB entries
    /// of devices that stayed and reading those of new ones.
    pub fn reread_links(&mut self, ns: &str) -> Result<(), String> {
        self.links = links::read(Some(ns))?;
        let vx: BTreeSet<&String> = self.links.values().filter(|l| l.kind == "vxlan").map(|l| &l.name).collect();
        self.fdb.retain(|d, _| vx.contains(d));
        for d in vx {
            if !self.fdb.contains_key(d) {
                self.fdb.insert(d.clone(), fdb::read(Some(ns), d)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Link, View};

    fn view(links: &[Link]) -> View {
        View { links: links.iter().map(|l| (l.name.clone(), l.clone())).collect(), ..View::default() }
    }

    fn port(name: &str, kind: &str, mac: &str) -> Link {
        Link {
            name: name.into(),
            kind: kind.into(),
            master: Some("br0".into()),
            mtu: 1450,
            up: true,
            mac: mac.into(),
            guarded: true,
            flood: Some(false),
            ..Link::default()
        }
    }

    #[test]
    fn a_read_agrees_with_what_commands_left_unless_the_kernel_differs() {
        let read = view(&[port("n1", "tun", "02:00:00:00:00:01"), port("n2", "veth", "02:00:00:00:00:02")]);
        // The commands made n1 (its MAC unknown to them) and n2 with its far end, which a
        // guest has since taken.
        let carried = view(&[port("n1", "tun", ""), port("n2", "veth", "02:00:00:00:00:02"), port("n2g", "veth", "")]);
        assert_eq!(read.agrees_with(&carried), Ok(()));
        let other_mac = view(&[port("n1", "tun", "02:00:00:00:00:09"), port("n2", "veth", "02:00:00:00:00:02")]);
        assert_eq!(read.agrees_with(&other_mac).map_err(|e| e.starts_with("link n1")), Err(true));
        let flooding =
            view(&[port("n1", "tun", ""), Link { flood: Some(true), ..port("n2", "veth", "02:00:00:00:00:02") }]);
        assert_eq!(read.agrees_with(&flooding).map_err(|e| e.starts_with("link n2")), Err(true));
        let without_n2 = view(&[port("n1", "tun", "")]);
        assert_eq!(read.agrees_with(&without_n2), Err("link n2 is there, not made by this agent".into()));
        let gone = view(&[port("n1", "tun", ""), port("n2", "veth", ""), port("n3", "tun", "")]);
        assert_eq!(read.agrees_with(&gone), Err("link n3 is gone".into()));
    }
}
