//! Host discovery against recorded and hand-assembled `/proc` + `/sys` trees
//! (`tests/fixtures/hosts/`), small synthetic trees, and the live machine.

use plinth_agent::discovery::{DiscoveryError, FLAGS_OF_INTEREST, classify_gpu, discover};
use plinth_api::{HostInventory, HugepagePool, Kvm, PciDevice};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hosts").join(name)
}

fn discover_fixture(name: &str) -> HostInventory {
    discover(&fixture(name)).unwrap_or_else(|e| panic!("discovering fixture {name}: {e}"))
}

fn pool(size_kib: u64, total: u64, free: u64) -> HugepagePool {
    HugepagePool { size_kib, total, free }
}

fn pci<'a>(inv: &'a HostInventory, address: &str) -> &'a PciDevice {
    inv.pci_devices.iter().find(|p| p.address == address).unwrap_or_else(|| panic!("no PCI function {address}"))
}

/// `tests/fixtures/hosts/this-machine`: a recording (scripts/record-host-tree) of the
/// 2-vCPU Debian 12 VM this crate was written on. Frozen, so exact values.
#[test]
fn this_machine_recording() {
    let inv = discover_fixture("this-machine");

    assert_eq!(inv.cpu.model, "AMD EPYC");
    assert_eq!(inv.cpu.vendor, "AuthenticAMD");
    assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (1, 2, 2));
    // A guest (`hypervisor`) with no `svm` passed through: nested KVM is not advertised.
    assert_eq!(
        inv.cpu.flags,
        [
            "aes",
            "avx",
            "avx2",
            "avx512_bf16",
            "avx512_vnni",
            "avx512bw",
            "avx512f",
            "avx512vl",
            "fma",
            "hypervisor",
            "pdpe1gb",
            "rdrand",
            "sha_ni",
            "sse4_2",
            "x2apic"
        ]
    );

    assert_eq!(inv.memory_mib, 24105, "MemTotal 24684096 kB");
    assert_eq!(inv.numa_nodes.len(), 1);
    let node = &inv.numa_nodes[0];
    assert_eq!(node.id, 0);
    assert_eq!(node.cpus, [0, 1]);
    assert_eq!(node.memory_mib, 12378, "node0 MemTotal 12675288 kB, as the VM's kernel reported it");
    assert_eq!(node.hugepages, [pool(2048, 0, 0), pool(1_048_576, 0, 0)]);
    assert!(node.siblings.is_empty(), "each vCPU is a core of its own");

    let functions: Vec<(&str, &str, &str, &str, Option<&str>)> = inv
        .pci_devices
        .iter()
        .map(|p| {
            (p.address.as_str(), p.class_code.as_str(), p.vendor_id.as_str(), p.device_id.as_str(), p.driver.as_deref())
        })
        .collect();
    assert_eq!(
        functions,
        [
            ("0000:00:00.0", "060000", "8086", "0d57", None),
            ("0000:00:01.0", "ffff00", "1af4", "1045", Some("virtio-pci")),
            ("0000:00:02.0", "018000", "1af4", "1042", Some("virtio-pci")),
            ("0000:00:03.0", "020000", "1af4", "1041", Some("virtio-pci")),
            ("0000:00:04.0", "ffff00", "1af4", "1053", Some("virtio-pci")),
            ("0000:00:05.0", "ffff00", "1af4", "1044", Some("virtio-pci")),
        ]
    );
    // No pci.ids on that machine: class names come from the built-in table, no vendor or
    // device names. No IOMMU, no NUMA affinity, no SR-IOV.
    let class_names: Vec<Option<&str>> = inv.pci_devices.iter().map(|p| p.class_name.as_deref()).collect();
    assert_eq!(
        class_names,
        [
            Some("Host bridge"),
            Some("Unassigned class"),
            Some("Mass storage controller"),
            Some("Ethernet controller"),
            Some("Unassigned class"),
            Some("Unassigned class"),
        ]
    );
    for p in &inv.pci_devices {
        assert_eq!((p.vendor_name.as_deref(), p.device_name.as_deref()), (None, None), "{}", p.address);
        assert_eq!((p.numa_node, p.iommu_group), (None, None), "{}", p.address);
        assert_eq!((p.sriov_total_vfs, p.sriov_num_vfs), (None, None), "{}", p.address);
    }
    assert!(inv.gpus.is_empty());

    // eth0 is virtio-net on 0000:00:03.0; lo, ifb0 and ifb1 are virtual.
    assert_eq!(inv.nics.len(), 1);
    let eth0 = &inv.nics[0];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(eth0.mac, "02:fc:00:00:00:01");
    assert_eq!(eth0.speed_mbps, None, "virtio-net reports speed -1");
    assert_eq!(eth0.driver.as_deref(), Some("virtio_net"));
    assert_eq!(eth0.pci_address.as_deref(), Some("0000:00:03.0"));

    // vda is a 256 GiB virtio disk; loop0-7 and zram0 are skipped.
    assert_eq!(inv.disks.len(), 1);
    let vda = &inv.disks[0];
    assert_eq!(vda.name, "vda");
    assert_eq!(vda.size_bytes, 256 << 30);
    assert_eq!(vda.model, None);
    assert_eq!(vda.serial.as_deref(), Some("overlayblk"));
    assert!(vda.rotational, "virtio-blk says rotational unless told otherwise");

    // No DMI in that VM.
    assert_eq!(inv.firmware, Default::default());
    assert_eq!(inv.virtualization.kvm, Kvm::Absent, "left for the KVM probe");
    assert_eq!(inv.runtime, None);
}

/// `tests/fixtures/hosts/dual-socket-8gpu` (see `dual-socket-8gpu.sh`): a 2-socket,
/// 8 × H100 server, checked as an operator would read its inventory.
#[test]
fn dual_socket_8gpu() {
    let inv = discover_fixture("dual-socket-8gpu");

    // CPU: 2 sockets × 16 cores × 2 threads.
    assert_eq!(inv.cpu.model, "Intel(R) Xeon(R) Gold 6346 CPU @ 3.10GHz");
    assert_eq!(inv.cpu.vendor, "GenuineIntel");
    assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (2, 32, 64));
    assert_eq!(
        inv.cpu.flags,
        [
            "aes",
            "avx",
            "avx2",
            "avx512_vnni",
            "avx512bw",
            "avx512f",
            "avx512vl",
            "ept",
            "fma",
            "pdpe1gb",
            "rdrand",
            "sha_ni",
            "sse4_2",
            "vmx",
            "x2apic"
        ]
    );
    assert!(inv.cpu.flags.iter().all(|f| FLAGS_OF_INTEREST.contains(&f.as_str())));

    // Memory: 1 TiB, two nodes of 512 GiB.
    assert_eq!(inv.memory_mib, 1024 * 1024);
    assert_eq!(inv.numa_nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [0, 1]);
    for node in &inv.numa_nodes {
        assert_eq!(node.memory_mib, 512 * 1024, "node {}", node.id);
        assert_eq!(node.cpus.len(), 32, "node {}", node.id);
        let first = node.id * 16;
        let expected: Vec<u32> = (first..first + 16).chain(first + 32..first + 48).collect();
        assert_eq!(node.cpus, expected, "node {}", node.id);
        // Sibling pairs (c, c + 32), one per core, all within the node.
        let pairs: Vec<Vec<u32>> = (first..first + 16).map(|c| vec![c, c + 32]).collect();
        assert_eq!(node.siblings, pairs, "node {}", node.id);
    }
    let all: BTreeSet<u32> = inv.numa_nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
    assert_eq!(all, (0..64).collect(), "every CPU on exactly one node");
    assert_eq!(inv.numa_nodes[0].hugepages, [pool(2048, 4096, 4096), pool(1_048_576, 256, 200)]);
    assert_eq!(inv.numa_nodes[1].hugepages, [pool(2048, 4096, 1024), pool(1_048_576, 256, 256)]);

    // GPUs: 8 × H100 SXM5 80GB, 4 per NUMA node, each alone in its IOMMU group, on vfio-pci.
    assert_eq!(inv.gpus.len(), 8);
    let mut per_node: BTreeMap<Option<u32>, Vec<&str>> = BTreeMap::new();
    for g in &inv.gpus {
        assert_eq!(g.class, "nvidia-h100-80gb");
        assert_eq!((g.vendor_id.as_str(), g.device_id.as_str()), ("10de", "2330"));
        assert_eq!(g.name.as_deref(), Some("GH100 [H100 SXM5 80GB]"));
        assert_eq!(g.memory_mib, Some(80 * 1024));
        per_node.entry(g.numa_node).or_default().push(&g.pci_address);
        let f = pci(&inv, &g.pci_address);
        assert_eq!(f.driver.as_deref(), Some("vfio-pci"), "{}", g.pci_address);
        assert_eq!(f.class_name.as_deref(), Some("3D controller"));
    }
    assert_eq!(per_node[&Some(0)], ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0"]);
    assert_eq!(per_node[&Some(1)], ["0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]);
    let groups: BTreeSet<Option<u32>> = inv.gpus.iter().map(|g| pci(&inv, &g.pci_address).iommu_group).collect();
    assert_eq!(groups.len(), 8, "one IOMMU group per GPU");
    assert!(!groups.contains(&None));
    // The BMC's VGA and the NVSwitches are PCI functions but not GPUs.
    assert_eq!(pci(&inv, "0000:04:00.0").device_name.as_deref(), Some("ASPEED Graphics Family"));
    assert_eq!(pci(&inv, "0000:05:00.0").device_name.as_deref(), Some("GH100 [H100 NVSwitch]"));
    for not_gpu in ["0000:04:00.0", "0000:05:00.0", "0000:85:00.0"] {
        assert!(inv.gpus.iter().all(|g| g.pci_address != not_gpu), "{not_gpu} is not a GPU");
    }

    // NICs: the physical ports only, with their speeds; the ConnectX-6s have SR-IOV.
    let nics: Vec<_> = inv
        .nics
        .iter()
        .map(|n| (n.name.as_str(), n.speed_mbps, n.driver.as_deref(), n.pci_address.as_deref()))
        .collect();
    assert_eq!(
        nics,
        [
            ("eno1", Some(1000), Some("igb"), Some("0000:03:00.0")),
            ("ens3f0np0", Some(200_000), Some("mlx5_core"), Some("0000:17:00.0")),
            ("ens7f0np0", None, Some("mlx5_core"), Some("0000:99:00.0")),
        ]
    );
    assert_eq!(inv.nics[1].mac, "b8:ce:f6:01:02:03");
    for (pf, node) in [("0000:17:00.0", 0), ("0000:99:00.0", 1)] {
        let f = pci(&inv, pf);
        assert_eq!(f.device_name.as_deref(), Some("MT28908 Family [ConnectX-6]"));
        assert_eq!((f.sriov_total_vfs, f.sriov_num_vfs), (Some(16), Some(4)), "{pf}");
        assert_eq!(f.numa_node, Some(node));
    }
    let vfs: Vec<&PciDevice> = inv.pci_devices.iter().filter(|p| p.device_id == "101c").collect();
    assert_eq!(vfs.len(), 8, "4 VFs enabled on each ConnectX-6");
    assert!(vfs.iter().all(|v| v.driver.as_deref() == Some("vfio-pci") && v.sriov_total_vfs.is_none()));
    assert_eq!(vfs.iter().filter(|v| v.numa_node == Some(0)).count(), 4);
    assert_eq!(pci(&inv, "0000:03:00.0").sriov_num_vfs, Some(0), "I350: SR-IOV capable, none enabled");

    // Disks: two 3.84 TB NVMe, one per node; loop0, dm-0 and md0 are not disks.
    let disks: Vec<_> = inv
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.size_bytes, d.model.as_deref(), d.serial.as_deref(), d.rotational))
        .collect();
    assert_eq!(
        disks,
        [
            ("nvme0n1", 3_840_755_982_336, Some("SAMSUNG MZWLJ3T8HBLS-00007"), Some("S4YPNE0R600123"), false),
            ("nvme1n1", 3_840_755_982_336, Some("SAMSUNG MZWLJ3T8HBLS-00007"), Some("S4YPNE0R600456"), false),
        ]
    );

    // All PCI functions, sorted: 2 host bridges, I350, ASPEED, 2 NVSwitches, 8 GPUs,
    // 2 ConnectX-6 + 8 VFs, 2 NVMe.
    assert_eq!(inv.pci_devices.len(), 26);
    let addresses: Vec<&str> = inv.pci_devices.iter().map(|p| p.address.as_str()).collect();
    let mut sorted = addresses.clone();
    sorted.sort_unstable();
    assert_eq!(addresses, sorted);
    let nvme = pci(&inv, "0000:5e:00.0");
    assert_eq!(nvme.class_code, "010802");
    assert_eq!(nvme.class_name.as_deref(), Some("Non-Volatile memory controller"));
    assert_eq!(nvme.vendor_name.as_deref(), Some("Samsung Electronics Co Ltd"));
    assert_eq!(pci(&inv, "0000:00:00.0").class_name.as_deref(), Some("System peripheral"));

    assert_eq!(inv.firmware.system_vendor.as_deref(), Some("Acme Compute Corp."));
    assert_eq!(inv.firmware.product.as_deref(), Some("AC-8800 HGX"));
    assert_eq!(inv.firmware.serial.as_deref(), Some("ACX2305B0042"));
    assert_eq!(inv.firmware.bios_vendor.as_deref(), Some("Acme BIOS Works"));
    assert_eq!(inv.firmware.bios_version.as_deref(), Some("2.4.1"));
    assert_eq!(inv.firmware.bios_date.as_deref(), Some("03/14/2024"));

    assert_eq!(inv, discover_fixture("dual-socket-8gpu"), "discovery is deterministic");
}

/// The checked-in dual-socket tree is what its generator writes.
#[test]
fn dual_socket_fixture_matches_its_generator() {
    let out = tempfile::tempdir().expect("tempdir");
    let tree = out.path().join("tree");
    let status =
        Command::new("bash").arg(fixture("dual-socket-8gpu.sh")).arg(&tree).status().expect("run dual-socket-8gpu.sh");
    assert!(status.success(), "dual-socket-8gpu.sh failed: {status}");
    assert_eq!(discover(&tree).expect("generated tree"), discover_fixture("dual-socket-8gpu"));
}

/// scripts/record-host-tree copies exactly what discovery needs: recording a fixture
/// tree as if it were a host gives back the same inventory (pci.ids excerpt included).
#[test]
fn recording_a_tree_reproduces_its_inventory() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/record-host-tree");
    for name in ["dual-socket-8gpu", "this-machine"] {
        let out = tempfile::tempdir().expect("tempdir");
        let copy = out.path().join("copy");
        let run =
            Command::new("bash").arg(&script).arg(&copy).arg(fixture(name)).output().expect("run record-host-tree");
        assert!(run.status.success(), "record-host-tree {name}: {}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(discover(&copy).expect("recorded tree"), discover_fixture(name), "{name}");
    }
}

/// The live machine: discovery succeeds and agrees with `/proc`.
#[test]
fn live_machine_is_consistent_with_proc() {
    let inv = discover(Path::new("/")).expect("discovery of this machine");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let processors = cpuinfo.lines().filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor")).count();
    assert_eq!(inv.cpu.threads as usize, processors);
    let usable = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    assert!(inv.cpu.threads as usize >= usable, "{} threads but {usable} usable", inv.cpu.threads);
    assert!(inv.cpu.sockets >= 1 && inv.cpu.sockets <= inv.cpu.cores && inv.cpu.cores <= inv.cpu.threads);
    assert!(inv.memory_mib > 0);
    assert!(!inv.numa_nodes.is_empty());
    // Every processor is on exactly one node.
    let mut on_nodes: Vec<u32> = inv.numa_nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
    let total = on_nodes.len();
    on_nodes.sort_unstable();
    on_nodes.dedup();
    assert_eq!(on_nodes.len(), total, "a CPU on two nodes");
    assert!(on_nodes.len() >= processors);
    for g in &inv.gpus {
        assert!(inv.pci_devices.iter().any(|p| p.address == g.pci_address));
    }
    eprintln!(
        "live: {} × {} cores / {} threads, {} MiB, {} NUMA nodes, {} PCI functions, {} GPUs, {} NICs, {} disks",
        inv.cpu.sockets,
        inv.cpu.cores,
        inv.cpu.threads,
        inv.memory_mib,
        inv.numa_nodes.len(),
        inv.pci_devices.len(),
        inv.gpus.len(),
        inv.nics.len(),
        inv.disks.len()
    );
}

/// A root with only the two required files: one node with everything, empty lists.
#[test]
fn only_proc_is_required() {
    let root = tempfile::tempdir().expect("tempdir");
    let put = |rel: &str, text: &str| {
        let path = root.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    put("proc/cpuinfo", "processor\t: 0\nmodel name\t: Tiny\n\nprocessor\t: 1\nmodel name\t: Tiny\n");
    put("proc/meminfo", "MemTotal:        2097152 kB\n");
    let inv = discover(root.path()).expect("discovery");
    assert_eq!((inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads), (1, 2, 2));
    assert_eq!(inv.cpu.vendor, "");
    assert!(inv.cpu.flags.is_empty());
    assert_eq!(inv.memory_mib, 2048);
    assert_eq!(inv.numa_nodes.len(), 1);
    assert_eq!(
        (inv.numa_nodes[0].id, inv.numa_nodes[0].cpus.as_slice(), inv.numa_nodes[0].memory_mib),
        (0, &[0, 1][..], 2048)
    );
    assert!(inv.numa_nodes[0].hugepages.is_empty() && inv.numa_nodes[0].siblings.is_empty());
    assert!(inv.pci_devices.is_empty() && inv.gpus.is_empty() && inv.nics.is_empty() && inv.disks.is_empty());
    assert_eq!(inv.firmware, Default::default());

    // Without NUMA nodes, the kernel-wide hugepage pools belong to node 0; broken or
    // partial sysfs entries are skipped, never fatal.
    put("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "512\n");
    put("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "500\n");
    put("sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages", "garbage\n");
    put("sys/bus/pci/devices/0000:00:01.0/vendor", "0x10de\n"); // no class, no device id
    put("sys/bus/pci/devices/0000:00:02.0/class", "0x030200\n");
    put("sys/bus/pci/devices/0000:00:02.0/vendor", "0x10de\n");
    put("sys/bus/pci/devices/0000:00:02.0/device", "0x20b5\n");
    put("sys/bus/pci/devices/0000:00:02.0/numa_node", "-1\n");
    put("sys/bus/pci/devices/not-an-address/class", "0x030200\n");
    put("sys/class/net/eth9/address", "02:00:00:00:00:09\n"); // no device link: virtual
    put("sys/block/loop0/size", "2048\n");
    put("sys/block/sdz/size", "0\n"); // empty card reader
    put("sys/block/sda/size", "not a number\n");
    put("sys/class/dmi/id/sys_vendor", "To Be Filled By O.E.M.\n");
    put("sys/class/dmi/id/product_name", "\n");
    put("sys/class/dmi/id/bios_version", "1.0\n");
    let inv = discover(root.path()).expect("discovery");
    assert_eq!(inv.numa_nodes[0].hugepages, [pool(2048, 512, 500), pool(1_048_576, 0, 0)]);
    assert_eq!(inv.pci_devices.len(), 1);
    assert_eq!(inv.pci_devices[0].numa_node, None, "numa_node -1 is none");
    assert_eq!(inv.gpus.len(), 1);
    assert_eq!(inv.gpus[0].class, "nvidia-a100-80gb");
    assert_eq!(inv.gpus[0].name.as_deref(), Some("A100 PCIe 80GB"), "the table names it without pci.ids");
    assert!(inv.nics.is_empty() && inv.disks.is_empty());
    assert_eq!(inv.firmware.system_vendor, None, "a vendor placeholder is none");
    assert_eq!(inv.firmware.product, None);
    assert_eq!(inv.firmware.bios_version.as_deref(), Some("1.0"));
}

#[test]
fn missing_cpuinfo_or_meminfo_fails() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("proc")).expect("mkdir");
    match discover(root.path()) {
        Err(DiscoveryError::Read { path, .. }) => assert!(path.ends_with("proc/cpuinfo"), "{}", path.display()),
        other => panic!("expected a read error, got {other:?}"),
    }
    std::fs::write(root.path().join("proc/cpuinfo"), "flags : vmx\n").expect("write");
    assert!(matches!(discover(root.path()), Err(DiscoveryError::NoProcessors { .. })));
    std::fs::write(root.path().join("proc/cpuinfo"), "processor : 0\n").expect("write");
    match discover(root.path()) {
        Err(e @ DiscoveryError::Read { .. }) => assert!(e.to_string().contains("proc/meminfo"), "{e}"),
        other => panic!("expected a read error, got {other:?}"),
    }
    std::fs::write(root.path().join("proc/meminfo"), "MemFree: 1 kB\n").expect("write");
    assert!(matches!(discover(root.path()), Err(DiscoveryError::NoMemTotal { .. })));
}

fn function(vendor: &str, device: &str, class: &str) -> PciDevice {
    PciDevice {
        address: "0000:65:00.0".into(),
        class_code: class.into(),
        vendor_id: vendor.into(),
        device_id: device.into(),
        numa_node: Some(1),
        ..PciDevice::default()
    }
}

#[test]
fn gpu_classification() {
    let class_of = |v: &str, d: &str, c: &str| classify_gpu(&function(v, d, c)).map(|g| (g.class, g.memory_mib));
    // Emulated display adapters are never GPUs.
    for (v, d, what) in [
        ("1234", "1111", "QEMU standard VGA"),
        ("1013", "00b8", "Cirrus"),
        ("1af4", "1050", "virtio-gpu"),
        ("15ad", "0405", "VMware SVGA"),
        ("1b36", "0100", "QXL"),
    ] {
        assert_eq!(class_of(v, d, "030000"), None, "{what}");
    }
    assert_eq!(class_of("10de", "2330", "030200"), Some(("nvidia-h100-80gb".into(), Some(81920))));
    assert_eq!(class_of("10de", "2331", "030200"), Some(("nvidia-h100-pcie-80gb".into(), Some(81920))));
    assert_eq!(class_of("10de", "20b5", "030200"), Some(("nvidia-a100-80gb".into(), Some(81920))));
    assert_eq!(class_of("10de", "20b0", "030200"), Some(("nvidia-a100-40gb".into(), Some(40960))));
    // Unknown NVIDIA/AMD display controllers get a generic class.
    assert_eq!(class_of("10de", "1234", "030000"), Some(("nvidia-10de-1234".into(), None)));
    assert_eq!(class_of("1002", "73bf", "030000"), Some(("amd-1002-73bf".into(), None)));
    // Not display controllers: NVSwitch (bridge), HDMI audio.
    assert_eq!(class_of("10de", "22a3", "068000"), None);
    assert_eq!(class_of("10de", "22ba", "040300"), None);
    // MI300X presents as a processing accelerator; known, so a GPU. An unknown
    // accelerator is not.
    assert_eq!(class_of("1002", "74a1", "120000"), Some(("amd-mi300x-192gb".into(), Some(196_608))));
    assert_eq!(class_of("1002", "1234", "120000"), None);
    // Intel: data-centre parts only, not integrated graphics.
    assert_eq!(class_of("8086", "0bd5", "038000"), Some(("intel-max-1550-128gb".into(), Some(131_072))));
    assert_eq!(class_of("8086", "46a6", "030000"), None);
    let g = classify_gpu(&function("10de", "2330", "030200")).expect("a GPU");
    assert_eq!((g.pci_address.as_str(), g.numa_node), ("0000:65:00.0", Some(1)));
}
