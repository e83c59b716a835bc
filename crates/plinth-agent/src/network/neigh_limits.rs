//! The kernel's neighbour (ARP) table limits, which the data path outgrows.
//!
//! The IPv4 neighbour table is one table for the whole machine: every network namespace's
//! entries count against the same `net.ipv4.neigh.default.gc_thresh3` (1,024 by default,
//! visible and settable only from the machine's own namespace). A VPC namespace holds an
//! entry per NIC it talks to; past the limit the kernel logs "neighbor table overflow",
//! creates no new entry, and so neither resolves an address nor answers an ARP request
//! (the reply needs an entry for the asker): guests go silent although every rule and
//! port is in place (measured here with 1,000 NICs on each of two hosts). Permanent
//! entries (the agent's, for remote NICs) do not count.

use std::path::Path;

/// The limits the agent raises the table to when they are lower: (gc_thresh1, 2, 3).
pub const WANTED: (u64, u64, u64) = (8192, 32768, 65536);

const DIR: &str = "/proc/sys/net/ipv4/neigh/default";

fn read(name: &str) -> Option<u64> {
    std::fs::read_to_string(Path::new(DIR).join(name)).ok()?.trim().parse().ok()
}

/// Raises `gc_thresh1/2/3` to [`WANTED`] where they are lower. Answers what changed
/// (`None`: nothing to do), or why it could not (e.g. the agent runs in a namespace of its
/// own, where the limits are not visible: the operator must raise them on the machine).
pub fn ensure() -> Result<Option<String>, String> {
    let names = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];
    let want = [WANTED.0, WANTED.1, WANTED.2];
    let Some(now) = names.iter().map(|n| read(n)).collect::<Option<Vec<u64>>>() else {
        return Err(format!(
            "the neighbour table limits ({DIR}/gc_thresh1..3) are not visible from this namespace; \
             on the machine, raise net.ipv4.neigh.default.gc_thresh1/2/3 to at least {}/{}/{} \
             (the table is shared by every namespace, 1,024 entries by default)",
            WANTED.0, WANTED.1, WANTED.2
        ));
    };
    if now.iter().zip(want).all(|(n, w)| *n >= w) {
        return Ok(None);
    }
    // Highest first: the kernel wants thresh1 <= thresh2 <= thresh3 at every step.
    for i in (0..3).rev() {
        if now[i] < want[i] {
            std::fs::write(Path::new(DIR).join(names[i]), want[i].to_string())
                .map_err(|e| format!("raising net.ipv4.neigh.default.{}: {e}", names[i]))?;
        }
    }
    Ok(Some(format!(
        "raised the neighbour table limits gc_thresh1/2/3 from {}/{}/{} to {}/{}/{} (one table for every \
         namespace of the machine; each VPC namespace holds an entry per NIC)",
        now[0],
        now[1],
        now[2],
        now[0].max(want[0]),
        now[1].max(want[1]),
        now[2].max(want[2])
    )))
}
