//! NUMA nodes from `/sys/devices/system/node/nodeN/`: `cpulist`, `meminfo` (`MemTotal`) and
//! `hugepages/hugepages-<size>kB/{nr,free}_hugepages`; hyperthread sibling groups from
//! `/sys/devices/system/cpu/cpuN/topology/thread_siblings_list`. A kernel without NUMA
//! (no `nodeN` directory) gets one node 0 holding every processor and all memory, with
//! the hugepage pools of `/sys/kernel/mm/hugepages/`.

use super::{memory, sysfs};
use plinth_api::{HugepagePool, NumaNode};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// The host's NUMA nodes, sorted by id. `processors` and `memory_mib` (from `/proc`) make
/// the single node of a kernel without NUMA.
pub(crate) fn nodes(root: &Path, processors: &[u32], memory_mib: u64) -> Vec<NumaNode> {
    let node_root = root.join("sys/devices/system/node");
    let ids: Vec<u32> = sysfs::dir_names(&node_root).iter().filter_map(|n| sysfs::numbered(n, "node")).collect();
    let mut nodes: Vec<NumaNode> = if ids.is_empty() {
        vec![NumaNode {
            id: 0,
            cpus: processors.to_vec(),
            memory_mib,
            hugepages: hugepage_pools(&root.join("sys/kernel/mm/hugepages")),
            siblings: Vec::new(),
        }]
    } else {
        ids.into_iter()
            .map(|id| {
                let dir = node_root.join(format!("node{id}"));
                let cpus =
                    sysfs::read_trimmed(&dir.join("cpulist")).map(|l| sysfs::parse_cpulist(&l)).unwrap_or_default();
                let memory_mib = fs::read_to_string(dir.join("meminfo"))
                    .ok()
                    .and_then(|t| memory::kib(&t, "MemTotal"))
                    .map_or(0, |k| k / 1024);
                NumaNode {
                    id,
                    cpus,
                    memory_mib,
                    hugepages: hugepage_pools(&dir.join("hugepages")),
                    siblings: Vec::new(),
                }
            })
            .collect()
    };
    for node in &mut nodes {
        node.siblings = sibling_groups(root, &node.cpus);
    }
    nodes.sort_by_key(|n| n.id);
    nodes
}

/// The pools under a `hugepages/` directory (`hugepages-2048kB/nr_hugepages`, …), sorted by
/// page size. Sizes with no pages reserved are listed too (with zero): they say which page
/// sizes the host supports.
fn hugepage_pools(dir: &Path) -> Vec<HugepagePool> {
    let mut pools: Vec<HugepagePool> = sysfs::dir_names(dir)
        .iter()
        .filter_map(|name| {
            let size_kib = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            let pool = dir.join(name);
            Some(HugepagePool {
                size_kib,
                total: sysfs::read_u64(&pool.join("nr_hugepages")).unwrap_or(0),
                free: sysfs::read_u64(&pool.join("free_hugepages")).unwrap_or(0),
            })
        })
        .collect();
    pools.sort_by_key(|p| p.size_kib);
    pools
}

/// Hyperthread sibling groups among `cpus`: each CPU's `thread_siblings_list` restricted
/// to `cpus`, groups of two or more only, deduplicated and sorted. Empty when every CPU is
/// a core of its own (or the lists cannot be read).
fn sibling_groups(root: &Path, cpus: &[u32]) -> Vec<Vec<u32>> {
    let on_node: BTreeSet<u32> = cpus.iter().copied().collect();
    let cpu_root = root.join("sys/devices/system/cpu");
    let groups: BTreeSet<Vec<u32>> = cpus
        .iter()
        .filter_map(|c| sysfs::read_trimmed(&cpu_root.join(format!("cpu{c}/topology/thread_siblings_list"))))
        .map(|list| sysfs::parse_cpulist(&list).into_iter().filter(|s| on_node.contains(s)).collect::<Vec<u32>>())
        .filter(|g| g.len() > 1)
        .collect();
    groups.into_iter().collect()
}
