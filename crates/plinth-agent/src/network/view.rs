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
