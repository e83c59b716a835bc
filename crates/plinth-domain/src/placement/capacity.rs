//! Host capacity: building a [`HostView`] from the wire [`Host`] (allocation ratios,
//! reservations, the dedicated CPU set, hugepage pools, GPUs per NUMA node), accounting claims
//! in and out of [`Usage`], and the per-node free counts the NUMA fitter works on.
//!
//! It decides nothing about where a guest goes; it only says what a host has and holds.

use super::numa::NodeFree;
use super::{GpuView, HostView, NumaView, Usage};
use plinth_api::{Claim, CpuInfo, CpuPolicy, Host, HugepagePool, Kvm, Ownership};
use std::collections::{BTreeMap, BTreeSet};

/// A NUMA node as read from the inventory: id, CPUs, sibling groups, hugepage pools.
type NodeSource<'a> = (u32, Vec<u32>, &'a [Vec<u32>], &'a [HugepagePool]);

impl HostView {
    /// The scheduler's view of `host`, with nothing used (`used = Usage::default()`).
    pub fn from_host(host: &Host) -> HostView {
        let inv = &host.inventory;
        let sched = &host.scheduling;
        let dedicated: BTreeSet<u32> = sched.dedicated_cpus.iter().copied().collect();

        // Host CPUs per node; a host without NUMA information is one node 0 holding everything.
        let mut nodes: Vec<NodeSource<'_>> = if inv.numa_nodes.is_empty() {
            vec![(0, (0..cpu_count(&inv.cpu)).collect(), &[], &[])]
        } else {
            inv.numa_nodes.iter().map(|n| (n.id, n.cpus.clone(), &n.siblings[..], &n.hugepages[..])).collect()
        };
        nodes.sort_by_key(|n| n.0);

        let mut seen = BTreeSet::new();
        let mut shared_cpus = 0u64;
        let mut hugepage_mib = 0u64;
        let mut numa = Vec::with_capacity(nodes.len());
        for (id, cpus, siblings, pools) in nodes {
            let mut node_dedicated = Vec::new();
            for cpu in cpus {
                // A CPU listed on two nodes belongs to the first.
                if !seen.insert(cpu) {
                    continue;
                }
                if dedicated.contains(&cpu) {
                    node_dedicated.push(cpu);
                } else {
                    shared_cpus += 1;
                }
            }
            node_dedicated.sort_unstable();
            let mut grouped = BTreeSet::new();
            let mut groups = Vec::new();
            for group in siblings {
                let mut g: Vec<u32> = group
                    .iter()
                    .copied()
                    .filter(|c| node_dedicated.binary_search(c).is_ok() && !grouped.contains(c))
                    .collect();
                g.sort_unstable();
                g.dedup();
                grouped.extend(g.iter().copied());
                if !g.is_empty() {
                    groups.push(g);
                }
            }
            let mut hugepages = BTreeMap::new();
            for pool in pools {
                hugepage_mib = hugepage_mib.saturating_add(pool.size_kib.saturating_mul(pool.total) / 1024);
                if pool.size_kib > 0 && pool.size_kib % 1024 == 0 {
                    let pages: &mut u64 = hugepages.entry(pool.size_kib / 1024).or_insert(0);
                    *pages = pages.saturating_add(pool.total);
                }
            }
            numa.push(NumaView { id, dedicated_cpus: node_dedicated, siblings: groups, hugepages, gpus: Vec::new() });
        }
        for gpu in &inv.gpus {
            let node = gpu.numa_node.unwrap_or(0);
            let pos = numa.iter().position(|n| n.id == node).unwrap_or(0);
            if let Some(n) = numa.get_mut(pos) {
                n.gpus.push(GpuView { address: gpu.pci_address.clone(), class: gpu.class.clone() });
            }
        }
        for n in &mut numa {
            n.gpus.sort_by(|a, b| a.address.cmp(&b.address));
        }

        let memory = inv.memory_mib.saturating_sub(sched.reserved_memory_mib).saturating_sub(hugepage_mib);
        let disk_bytes = inv.disks.iter().fold(0u64, |sum, d| sum.saturating_add(d.size_bytes));
        HostView {
            id: host.id.0.clone(),
            rack_id: host.rack_id.as_ref().map(|r| r.0.clone()),
            state: host.state,
            dedicated_tenant: match &host.ownership {
                Ownership::Dedicated { tenant_id } => Some(tenant_id.0.clone()),
                Ownership::Shared => None,
            },
            traits: host.traits.iter().cloned().collect(),
            kvm_usable: inv.virtualization.kvm == Kvm::Usable,
            allow_dedicated_without_kvm: sched.allow_dedicated_without_kvm,
            // `as` saturates: a negative or NaN ratio gives 0.
            shared_vcpus: (shared_cpus as f64 * sched.cpu_allocation_ratio).floor() as u64,
            memory_mib: (memory as f64 * sched.memory_allocation_ratio).floor() as u64,
            disk_gib: (disk_bytes >> 30).saturating_sub(sched.reserved_disk_gib),
            numa,
            used: Usage::default(),
        }
    }

    /// Accounts `claim` as held on this host (one more instance).
    pub fn add(&mut self, claim: &Claim) {
        let u = &mut self.used;
        if claim.cpu_policy == CpuPolicy::Shared {
            u.shared_vcpus = u.shared_vcpus.saturating_add(u64::from(claim.vcpus));
        }
        u.memory_mib = u.memory_mib.saturating_add(claim.memory_mib);
        u.disk_gib = u.disk_gib.saturating_add(claim.disk_gib);
        u.pinned_cpus.extend(claim.cpus.iter().copied());
        for hp in &claim.hugepages {
            let pages = u.hugepages.entry((hp.numa_node, hp.size_mib)).or_insert(0);
            *pages = pages.saturating_add(hp.pages);
        }
        u.gpus.extend(claim.gpus.iter().cloned());
        u.instances = u.instances.saturating_add(1);
    }

    /// Releases `claim` (the reverse of [`HostView::add`], saturating at zero).
    pub fn remove(&mut self, claim: &Claim) {
        let u = &mut self.used;
        if claim.cpu_policy == CpuPolicy::Shared {
            u.shared_vcpus = u.shared_vcpus.saturating_sub(u64::from(claim.vcpus));
        }
        u.memory_mib = u.memory_mib.saturating_sub(claim.memory_mib);
        u.disk_gib = u.disk_gib.saturating_sub(claim.disk_gib);
        for cpu in &claim.cpus {
            u.pinned_cpus.remove(cpu);
        }
        for hp in &claim.hugepages {
            if let Some(pages) = u.hugepages.get_mut(&(hp.numa_node, hp.size_mib)) {
                *pages = pages.saturating_sub(hp.pages);
                if *pages == 0 {
                    u.hugepages.remove(&(hp.numa_node, hp.size_mib));
                }
            }
        }
        for gpu in &claim.gpus {
            u.gpus.remove(gpu);
        }
        u.instances = u.instances.saturating_sub(1);
    }
}

/// Number of host CPUs when the inventory has no NUMA nodes. `CpuInfo` documents `cores` and
/// `threads` as totals over all sockets, so `threads` is the CPU count; an inventory that
/// reports fewer threads than cores is read as per-socket cores and per-core threads instead.
fn cpu_count(cpu: &CpuInfo) -> u32 {
    if cpu.threads >= cpu.cores {
        cpu.threads
    } else {
        cpu.sockets.max(1).saturating_mul(cpu.cores).saturating_mul(cpu.threads.max(1))
    }
}

/// Fills `out` with the free and total NUMA resources of each node of `h`, sorted by node id:
/// unpinned dedicated CPUs (when `dedicated`), pages of `page_size` MiB (when non-zero), and
/// GPUs of `gpu_class` (when non-empty).
pub(crate) fn node_frees(h: &HostView, dedicated: bool, page_size: u64, gpu_class: &str, out: &mut Vec<NodeFree>) {
    out.clear();
    let u = &h.used;
    for (pos, n) in h.numa.iter().enumerate() {
        let mut f = NodeFree { idx: pos, id: n.id, ..NodeFree::default() };
        if dedicated {
            f.total_c = n.dedicated_cpus.len() as u64;
            f.free_c = f.total_c - pinned_on(&n.dedicated_cpus, &u.pinned_cpus);
        }
        if page_size > 0 {
            f.total_p = n.hugepages.get(&page_size).copied().unwrap_or(0);
            let used = u.hugepages.get(&(n.id, page_size)).copied().unwrap_or(0);
            f.free_p = f.total_p.saturating_sub(used);
        }
        if !gpu_class.is_empty() {
            for g in n.gpus.iter().filter(|g| g.class == gpu_class) {
                f.total_g += 1;
                if !u.gpus.contains(g.address.as_str()) {
                    f.free_g += 1;
                }
            }
        }
        out.push(f);
    }
    if !out.is_sorted_by_key(|f| f.id) {
        out.sort_unstable_by_key(|f| f.id);
    }
}

/// How many of `cpus` are in `pinned`. Walks only the pinned CPUs within the node's range when
/// `cpus` is sorted (as `from_host` makes it), which is far cheaper than a lookup per CPU.
fn pinned_on(cpus: &[u32], pinned: &BTreeSet<u32>) -> u64 {
    if pinned.is_empty() {
        return 0;
    }
    match (cpus.first(), cpus.last()) {
        (Some(&lo), Some(&hi)) if lo <= hi && cpus.is_sorted() => {
            pinned.range(lo..=hi).filter(|c| cpus.binary_search(c).is_ok()).count() as u64
        }
        _ => cpus.iter().filter(|c| pinned.contains(c)).count() as u64,
    }
}
