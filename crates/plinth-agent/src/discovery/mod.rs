//! Host hardware discovery: reads `/proc` and `/sys` (and `pci.ids`) under a filesystem
//! root and builds the host's [`HostInventory`].
//!
//! The root is `/` on a real host and a recorded tree in tests (see
//! `tests/fixtures/hosts/` and `scripts/record-host-tree`). Everything is read
//! synchronously from pseudo-files; call [`discover`] from a blocking context
//! (`tokio::task::spawn_blocking`) in async code.
//!
//! Only `/proc/cpuinfo` and `/proc/meminfo` are required. Every other file is optional: a
//! missing or unreadable one leaves its field none (or its list empty) and never fails
//! discovery. The result is deterministic — every list is sorted — so two discoveries of
//! an unchanged host compare equal with `==`.
//!
//! Submodules, one per source:
//! - `cpu`: `/proc/cpuinfo` (model, vendor, sockets, cores, threads, flags of interest);
//! - `memory`: `/proc/meminfo` and per-node `meminfo` totals;
//! - `numa`: `/sys/devices/system/node` (CPUs, memory, hugepages, hyperthread siblings);
//! - `pci` and `pci_ids`: `/sys/bus/pci/devices` and the PCI ID database;
//! - `gpu`: GPUs among the PCI functions, by a table of known ids ([`KNOWN_GPUS`]);
//! - `nic`: `/sys/class/net` (physical interfaces only);
//! - `block`: `/sys/block` (disks);
//! - `dmi`: `/sys/class/dmi/id` (firmware identity);
//! - `sysfs`: forgiving readers shared by the others.
//!
//! [`HostInventory::virtualization`] is left `Kvm::Absent` (the KVM probe in
//! [`crate::kvm_probe`] fills it) and [`HostInventory::runtime`] none.

mod block;
mod cpu;
mod dmi;
mod gpu;
mod memory;
mod nic;
mod numa;
mod pci;
mod pci_ids;
mod sysfs;

pub use cpu::FLAGS_OF_INTEREST;
pub use gpu::{KNOWN_GPUS, KnownGpu, classify_gpu, known_gpu};

use plinth_api::HostInventory;
use std::path::{Path, PathBuf};

/// Why discovery failed: only the two required `/proc` files can make it fail.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// `/proc/cpuinfo` or `/proc/meminfo` could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `/proc/cpuinfo` names no processor.
    #[error("{} names no processor", path.display())]
    NoProcessors {
        /// The file.
        path: PathBuf,
    },
    /// `/proc/meminfo` has no `MemTotal`.
    #[error("{} has no MemTotal", path.display())]
    NoMemTotal {
        /// The file.
        path: PathBuf,
    },
}

/// Discovers the hardware of the host whose filesystem root is `root` (`/` on a real
/// host). Fills everything but `virtualization` (left `Kvm::Absent`) and `runtime` (none).
pub fn discover(root: &Path) -> Result<HostInventory, DiscoveryError> {
    let read = |rel: &str| {
        let path = root.join(rel);
        std::fs::read(&path)
            .map(|b| (String::from_utf8_lossy(&b).into_owned(), path.clone()))
            .map_err(|source| DiscoveryError::Read { path, source })
    };
    let (cpuinfo, cpuinfo_path) = read("proc/cpuinfo")?;
    let cpus = cpu::parse(&cpuinfo, root).ok_or(DiscoveryError::NoProcessors { path: cpuinfo_path })?;
    let (meminfo, meminfo_path) = read("proc/meminfo")?;
    let memory_mib = memory::total_mib(&meminfo).ok_or(DiscoveryError::NoMemTotal { path: meminfo_path })?;

    let ids = pci_ids::PciIds::load(root);
    let pci_devices = pci::devices(root, &ids);
    let gpus = pci_devices.iter().filter_map(classify_gpu).collect();
    Ok(HostInventory {
        numa_nodes: numa::nodes(root, &cpus.processors, memory_mib),
        cpu: cpus.info,
        memory_mib,
        gpus,
        pci_devices,
        nics: nic::nics(root),
        disks: block::disks(root),
        firmware: dmi::firmware(root),
        virtualization: Default::default(),
        runtime: None,
        network_datapath: None,
        volume_pool: None,
    })
}
