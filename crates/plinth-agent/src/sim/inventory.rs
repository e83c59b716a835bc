//! Synthetic inventories for simulated hosts: host `i` gets profile `i % 10`.
//!
//! The benchmarks use the same table, so it must not drift:
//!
//! | `i % 10` | profile    | CPUs (sockets × cores × threads) | memory       | disk     | GPUs                         | dedicated CPUs      |
//! |----------|------------|----------------------------------|--------------|----------|------------------------------|---------------------|
//! | 0..=5    | `general`  | 64 (2 × 16 × 2)                  | 524288 MiB   | 2000 GiB | none                         | none                |
//! | 6..=7    | `pinned`   | 64 (2 × 16 × 2)                  | 524288 MiB   | 2000 GiB | none                         | 16..=31, 48..=63    |
//! | 8        | `gpu-a100` | 64 (2 × 16 × 2)                  | 1048576 MiB  | 4000 GiB | 4 × `nvidia-a100-80gb`       | none                |
//! | 9        | `gpu-h100` | 64 (2 × 16 × 2)                  | 1048576 MiB  | 4000 GiB | 8 × `nvidia-h100-80gb`       | none                |
//!
//! Every profile: two NUMA nodes, node 0 = CPUs 0..=15 and 32..=47, node 1 = CPUs 16..=31
//! and 48..=63, memory split evenly, hyperthread siblings `(c, c + 32)`; GPUs split evenly
//! over the nodes (PCI `0000:1a:00.0`… on node 0, `0000:9a:00.0`… on node 1); one 25 Gb/s
//! NIC and one NVMe disk; CPU model "Simulated x86 CPU" with `vmx` and `avx2`; KVM
//! `usable` (synthetic); firmware product "Plinth simulated host"; runtime `sim`.
//!
//! The dedicated CPU set (and any traits) are operator settings
//! (`HostScheduling::dedicated_cpus`, host traits): the agent reports hardware only and
//! never sets them. [`dedicated_cpus_for`] says what the `pinned` profile expects so that
//! tools (and the startup banner) can tell the operator.

use plinth_api::{CpuInfo, Disk, Firmware, Gpu, HostInventory, Kvm, Nic, NumaNode, PciDevice, Virtualization};

/// Threads per host.
pub const CPUS: u32 = 64;
const CORES_PER_NODE: u32 = 16;
const GIB: u64 = 1024 * 1024 * 1024;

/// The profiles, in `i % 10` order of first appearance.
pub const PROFILES: [&str; 4] = ["general", "pinned", "gpu-a100", "gpu-h100"];

/// The profile name of host `i`.
pub fn profile_name(i: u32) -> &'static str {
    match i % 10 {
        0..=5 => "general",
        6..=7 => "pinned",
        8 => "gpu-a100",
        _ => "gpu-h100",
    }
}

/// The CPUs the operator is expected to set aside for pinning on host `i` (empty unless
/// the profile is `pinned`): node 1's CPUs, 16..=31 and 48..=63.
pub fn dedicated_cpus_for(i: u32) -> Vec<u32> {
    dedicated_cpus_of(profile_name(i))
}

/// The CPUs set aside for pinning on a host of `profile`.
pub fn dedicated_cpus_of(profile: &str) -> Vec<u32> {
    if profile == "pinned" { (16..=31).chain(48..=63).collect() } else { Vec::new() }
}

/// The CPUs of NUMA node `node` (0 or 1): one core of 16 per socket, with its sibling 32
/// above.
fn node_cpus(node: u32) -> Vec<u32> {
    let first = node * CORES_PER_NODE;
    (first..first + CORES_PER_NODE).chain(first + CPUS / 2..first + CPUS / 2 + CORES_PER_NODE).collect()
}

struct GpuModel {
    class: &'static str,
    device_id: &'static str,
    name: &'static str,
    per_node: u32,
}

fn gpu_model(profile: &str) -> Option<GpuModel> {
    match profile {
        "gpu-a100" => Some(GpuModel {
            class: "nvidia-a100-80gb",
            device_id: "20b5",
            name: "NVIDIA A100 80GB PCIe (simulated)",
            per_node: 2,
        }),
        "gpu-h100" => Some(GpuModel {
            class: "nvidia-h100-80gb",
            device_id: "2330",
            name: "NVIDIA H100 80GB HBM3 SXM5 (simulated)",
            per_node: 4,
        }),
        _ => None,
    }
}

/// The synthetic inventory of simulated host `i` (see the module's table).
pub fn profile_for(i: u32) -> HostInventory {
    inventory_of(profile_name(i), i)
}

/// The synthetic inventory of simulated host `i` when it has `profile` (one of
/// [`PROFILES`]; anything else is `general`).
pub fn inventory_of(profile: &str, i: u32) -> HostInventory {
    let gpu_host = gpu_model(profile).is_some();
    let memory_mib: u64 = if gpu_host { 1_048_576 } else { 524_288 };
    let disk_gib: u64 = if gpu_host { 4000 } else { 2000 };

    let numa_nodes = (0..2)
        .map(|node| {
            let cpus = node_cpus(node);
            let siblings = cpus.iter().filter(|c| **c < CPUS / 2).map(|c| vec![*c, c + CPUS / 2]).collect();
            NumaNode { id: node, cpus, memory_mib: memory_mib / 2, hugepages: Vec::new(), siblings }
        })
        .collect();

    let mut pci_devices = Vec::new();
    let mut gpus = Vec::new();
    if let Some(m) = gpu_model(profile) {
        for node in 0..2u32 {
            for k in 0..m.per_node {
                let bus = if node == 0 { 0x1a } else { 0x9a } + k;
                let address = format!("0000:{bus:02x}:00.0");
                pci_devices.push(PciDevice {
                    address: address.clone(),
                    class_code: "030200".into(),
                    class_name: Some("3D controller".into()),
                    vendor_id: "10de".into(),
                    device_id: m.device_id.into(),
                    vendor_name: Some("NVIDIA Corporation".into()),
                    device_name: Some(m.name.into()),
                    numa_node: Some(node),
                    iommu_group: Some(40 + node * 10 + k),
                    driver: Some("vfio-pci".into()),
                    sriov_total_vfs: None,
                    sriov_num_vfs: None,
                });
                gpus.push(Gpu {
                    pci_address: address,
                    class: m.class.into(),
                    vendor_id: "10de".into(),
                    device_id: m.device_id.into(),
                    name: Some(m.name.into()),
                    numa_node: Some(node),
                    memory_mib: Some(81_920),
                });
            }
        }
    }
    pci_devices.push(PciDevice {
        address: "0000:3b:00.0".into(),
        class_code: "020000".into(),
        class_name: Some("Ethernet controller".into()),
        vendor_id: "8086".into(),
        device_id: "159b".into(),
        vendor_name: Some("Intel Corporation".into()),
        device_name: Some("Ethernet Controller E810-XXV (simulated)".into()),
        numa_node: Some(0),
        iommu_group: Some(20),
        driver: Some("ice".into()),
        sriov_total_vfs: Some(64),
        sriov_num_vfs: Some(0),
    });
    pci_devices.push(PciDevice {
        address: "0000:5e:00.0".into(),
        class_code: "010802".into(),
        class_name: Some("Non-Volatile memory controller".into()),
        vendor_id: "144d".into(),
        device_id: "a80a".into(),
        vendor_name: Some("Samsung Electronics Co Ltd".into()),
        device_name: Some("NVMe SSD (simulated)".into()),
        numa_node: Some(0),
        iommu_group: Some(21),
        driver: Some("nvme".into()),
        sriov_total_vfs: None,
        sriov_num_vfs: None,
    });
    pci_devices.sort_by(|a, b| a.address.cmp(&b.address));

    HostInventory {
        cpu: CpuInfo {
            model: "Simulated x86 CPU".into(),
            vendor: "Simulated".into(),
            sockets: 2,
            cores: 2 * CORES_PER_NODE,
            threads: CPUS,
            flags: ["vmx", "avx", "avx2", "aes", "sse4_2", "pdpe1gb", "x2apic"].map(String::from).to_vec(),
        },
        numa_nodes,
        memory_mib,
        pci_devices,
        gpus,
        nics: vec![Nic {
            name: "eth0".into(),
            mac: format!("02:00:5e:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
            speed_mbps: Some(25_000),
            driver: Some("ice".into()),
            pci_address: Some("0000:3b:00.0".into()),
        }],
        disks: vec![Disk {
            name: "nvme0n1".into(),
            model: Some("Simulated NVMe".into()),
            serial: Some(format!("SIMDISK{i:06}")),
            size_bytes: disk_gib * GIB,
            rotational: false,
        }],
        firmware: Firmware {
            system_vendor: Some("Plinth".into()),
            product: Some("Plinth simulated host".into()),
            serial: Some(format!("SIM{i:06}")),
            bios_vendor: Some("Plinth sim".into()),
            bios_version: Some("sim-1".into()),
            bios_date: None,
        },
        virtualization: Virtualization { kvm: Kvm::Usable },
        runtime: Some("sim".into()),
        network_datapath: Some("sim".into()),
        volume_pool: None,
    }
}

/// How many of hosts `0..n` have each profile, in [`PROFILES`] order.
pub fn profile_counts(n: u32) -> Vec<(&'static str, u32)> {
    PROFILES.iter().map(|p| (*p, (0..n).filter(|i| profile_name(*i) == *p).count() as u32)).collect()
}

/// `16-31,48-63` for a CPU list (consecutive runs as ranges).
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn profiles_follow_the_table() {
        let names: Vec<&str> = (0..10).map(profile_name).collect();
        assert_eq!(
            names,
            [
                "general", "general", "general", "general", "general", "general", "pinned", "pinned", "gpu-a100",
                "gpu-h100"
            ]
        );
        assert_eq!(profile_name(17), "pinned");
        for i in 0..20 {
            let inv = profile_for(i);
            assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (2, 32, 64));
            assert_eq!(inv.runtime.as_deref(), Some("sim"));
            assert_eq!(inv.firmware.product.as_deref(), Some("Plinth simulated host"));
            assert_eq!(inv.virtualization.kvm, Kvm::Usable);
            assert!(inv.cpu.flags.iter().any(|f| f == "avx2"));
            let (mem, disk, gpus, class) = match i % 10 {
                0..=7 => (524_288, 2000, 0, None),
                8 => (1_048_576, 4000, 4, Some("nvidia-a100-80gb")),
                _ => (1_048_576, 4000, 8, Some("nvidia-h100-80gb")),
            };
            assert_eq!(inv.memory_mib, mem, "host {i}");
            assert_eq!(inv.disks.iter().map(|d| d.size_bytes).sum::<u64>(), disk * GIB);
            assert_eq!(inv.gpus.len(), gpus);
            assert!(inv.gpus.iter().all(|g| Some(g.class.as_str()) == class));
            for node in 0..2 {
                assert_eq!(inv.gpus.iter().filter(|g| g.numa_node == Some(node)).count(), gpus / 2);
            }
            // Every GPU is also a PCI device on the same node.
            for g in &inv.gpus {
                let dev = inv.pci_devices.iter().find(|d| d.address == g.pci_address).expect("pci device");
                assert_eq!(dev.numa_node, g.numa_node);
            }
        }
    }

    #[test]
    fn numa_layout_is_two_even_nodes_with_sibling_pairs() {
        let inv = profile_for(3);
        assert_eq!(inv.numa_nodes.len(), 2);
        let n0: Vec<u32> = (0..=15).chain(32..=47).collect();
        let n1: Vec<u32> = (16..=31).chain(48..=63).collect();
        assert_eq!(inv.numa_nodes[0].cpus, n0);
        assert_eq!(inv.numa_nodes[1].cpus, n1);
        assert_eq!(inv.numa_nodes.iter().map(|n| n.memory_mib).sum::<u64>(), inv.memory_mib);
        let all: BTreeSet<u32> = inv.numa_nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
        assert_eq!(all, (0..64).collect());
        for n in &inv.numa_nodes {
            assert_eq!(n.siblings.len(), 16);
            for pair in &n.siblings {
                assert_eq!(pair.len(), 2);
                assert_eq!(pair[1], pair[0] + 32);
                assert!(n.cpus.contains(&pair[0]) && n.cpus.contains(&pair[1]));
            }
        }
        let gpu = profile_for(9);
        assert_eq!(gpu.gpus[0].pci_address, "0000:1a:00.0");
        assert_eq!(gpu.gpus[4].pci_address, "0000:9a:00.0");
    }

    #[test]
    fn dedicated_cpus_only_for_pinned_hosts() {
        assert!(dedicated_cpus_for(0).is_empty());
        assert!(dedicated_cpus_for(8).is_empty());
        let d = dedicated_cpus_for(6);
        assert_eq!(d.len(), 32);
        assert_eq!(cpu_list(&d), "16-31,48-63");
        assert_eq!(d, dedicated_cpus_for(17));
        assert_eq!(cpu_list(&[1, 3, 4, 5]), "1,3-5");
    }

    #[test]
    fn counts_cover_every_host() {
        assert_eq!(profile_counts(50), vec![("general", 30), ("pinned", 10), ("gpu-a100", 5), ("gpu-h100", 5)]);
        assert_eq!(profile_counts(3), vec![("general", 3), ("pinned", 0), ("gpu-a100", 0), ("gpu-h100", 0)]);
    }

    #[test]
    fn hosts_differ_in_identity_only() {
        let a = profile_for(0);
        let b = profile_for(10);
        assert_ne!(a.nics[0].mac, b.nics[0].mac);
        assert_ne!(a.firmware.serial, b.firmware.serial);
        assert_eq!(a.numa_nodes, b.numa_nodes);
    }

    #[test]
    fn a_chosen_profile_overrides_the_index_mix() {
        // Host 0 is `general` in the default mix; asked for as an H100 host it has 8 GPUs.
        assert!(profile_for(0).gpus.is_empty());
        let h = inventory_of("gpu-h100", 0);
        assert_eq!(h.gpus.len(), 8);
        assert!(h.gpus.iter().all(|g| g.class == "nvidia-h100-80gb"));
        assert_eq!(h.memory_mib, 1_048_576);
        assert_eq!(inventory_of("gpu-h100", 9), profile_for(9), "the same host as the default mix gives");
        assert_eq!(dedicated_cpus_of("pinned").len(), 32);
        assert!(dedicated_cpus_of("general").is_empty());
    }
}
