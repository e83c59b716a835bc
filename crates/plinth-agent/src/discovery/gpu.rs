//! GPUs among the PCI functions, classified into the GPU classes that shapes and
//! placement name (`nvidia-h100-80gb`).
//!
//! A PCI function is a GPU when its vendor is NVIDIA (`10de`), AMD (`1002`) or Intel
//! (`8086`) and either
//! - its class is a display controller (`03xxxx`: VGA, 3D or other), and for Intel it is
//!   one of the data-centre parts in [`KNOWN_GPUS`] (any other Intel display controller is
//!   a CPU's integrated graphics); or
//! - its class is a processing accelerator (`12xxxx`, how AMD Instinct MI300 parts present)
//!   and it is in [`KNOWN_GPUS`].
//!
//! Known parts get the table's class and memory; others get `{vendor}-{vendor id}-{device
//! id}` (`nvidia-10de-1234`) and no memory. Emulated display adapters (QEMU std VGA
//! `1234:1111`, Cirrus `1013:00b8`, virtio-gpu `1af4:1050`, VMware SVGA `15ad:0405`, QXL
//! `1b36:0100`) have other vendors and are never GPUs; neither are NVIDIA's NVSwitches or
//! audio functions, which are not display controllers.

use plinth_api::{Gpu, PciDevice};

/// A data-centre GPU model the agent knows by PCI id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownGpu {
    /// Hex vendor id (`10de`).
    pub vendor_id: &'static str,
    /// Hex device id (`2330`).
    pub device_id: &'static str,
    /// The GPU class (`nvidia-h100-80gb`).
    pub class: &'static str,
    /// Marketing name, used when `pci.ids` does not name the device.
    pub name: &'static str,
    /// Nominal memory in MiB (the marketing size in GB × 1024), when fixed for the id.
    pub memory_mib: Option<u64>,
}

const fn gpu(
    vendor_id: &'static str,
    device_id: &'static str,
    class: &'static str,
    name: &'static str,
    gb: u64,
) -> KnownGpu {
    KnownGpu { vendor_id, device_id, class, name, memory_mib: if gb == 0 { None } else { Some(gb * 1024) } }
}

/// Known data-centre GPUs by PCI id (ids as in the PCI ID database). SXM and PCIe A100s
/// share a class per memory size; the H100 PCIe card has a class of its own
/// (`nvidia-h100-pcie-80gb`) apart from the SXM5 part (`nvidia-h100-80gb`).
pub const KNOWN_GPUS: &[KnownGpu] = &[
    // NVIDIA Volta, Turing
    gpu("10de", "1db1", "nvidia-v100-16gb", "Tesla V100 SXM2 16GB", 16),
    gpu("10de", "1db4", "nvidia-v100-16gb", "Tesla V100 PCIe 16GB", 16),
    gpu("10de", "1db5", "nvidia-v100-32gb", "Tesla V100 SXM2 32GB", 32),
    gpu("10de", "1db6", "nvidia-v100-32gb", "Tesla V100 PCIe 32GB", 32),
    gpu("10de", "1df6", "nvidia-v100s-32gb", "Tesla V100S PCIe 32GB", 32),
    gpu("10de", "1eb8", "nvidia-t4-16gb", "Tesla T4", 16),
    // NVIDIA Ampere
    gpu("10de", "20b0", "nvidia-a100-40gb", "A100 SXM4 40GB", 40),
    gpu("10de", "20b1", "nvidia-a100-40gb", "A100 PCIe 40GB", 40),
    gpu("10de", "20f1", "nvidia-a100-40gb", "A100 PCIe 40GB", 40),
    gpu("10de", "20b2", "nvidia-a100-80gb", "A100 SXM4 80GB", 80),
    gpu("10de", "20b5", "nvidia-a100-80gb", "A100 PCIe 80GB", 80),
    gpu("10de", "20b7", "nvidia-a30-24gb", "A30 PCIe", 24),
    gpu("10de", "2235", "nvidia-a40-48gb", "A40", 48),
    gpu("10de", "2236", "nvidia-a10-24gb", "A10", 24),
    gpu("10de", "2237", "nvidia-a10g-24gb", "A10G", 24),
    // NVIDIA Ada
    gpu("10de", "26b5", "nvidia-l40-48gb", "L40", 48),
    gpu("10de", "26b9", "nvidia-l40s-48gb", "L40S", 48),
    gpu("10de", "27b8", "nvidia-l4-24gb", "L4", 24),
    // NVIDIA Hopper
    gpu("10de", "2330", "nvidia-h100-80gb", "H100 SXM5 80GB", 80),
    gpu("10de", "2331", "nvidia-h100-pcie-80gb", "H100 PCIe 80GB", 80),
    gpu("10de", "2339", "nvidia-h100-94gb", "H100 SXM5 94GB", 94),
    gpu("10de", "2321", "nvidia-h100-nvl-94gb", "H100 NVL 94GB", 94),
    gpu("10de", "2335", "nvidia-h200-141gb", "H200 SXM 141GB", 141),
    gpu("10de", "233b", "nvidia-h200-nvl-141gb", "H200 NVL 141GB", 141),
    gpu("10de", "2342", "nvidia-gh200-96gb", "GH200 96GB HBM3", 96),
    gpu("10de", "2348", "nvidia-gh200-144gb", "GH200 144GB HBM3e", 144),
    // NVIDIA Blackwell (memory differs by board)
    gpu("10de", "2901", "nvidia-b200", "B200", 0),
    // AMD Instinct
    gpu("1002", "740f", "amd-mi210-64gb", "Instinct MI210", 64),
    gpu("1002", "740c", "amd-mi250x-128gb", "Instinct MI250X", 128),
    gpu("1002", "74a0", "amd-mi300a-128gb", "Instinct MI300A", 128),
    gpu("1002", "74a1", "amd-mi300x-192gb", "Instinct MI300X", 192),
    gpu("1002", "74a5", "amd-mi325x-256gb", "Instinct MI325X", 256),
    // Intel Data Center GPUs
    gpu("8086", "0bd5", "intel-max-1550-128gb", "Data Center GPU Max 1550", 128),
    gpu("8086", "0bd6", "intel-max-1550-128gb", "Data Center GPU Max 1550", 128),
    gpu("8086", "56c0", "intel-flex-170-16gb", "Data Center GPU Flex 170", 16),
    gpu("8086", "56c1", "intel-flex-140-12gb", "Data Center GPU Flex 140", 12),
];

/// The table entry for a vendor and device id (lower-case hex).
pub fn known_gpu(vendor_id: &str, device_id: &str) -> Option<&'static KnownGpu> {
    KNOWN_GPUS
        .iter()
        .find(|g| g.vendor_id.eq_ignore_ascii_case(vendor_id) && g.device_id.eq_ignore_ascii_case(device_id))
}

/// The GPU a PCI function is, if it is one (see the module documentation for the rule).
pub fn classify_gpu(pci: &PciDevice) -> Option<Gpu> {
    let vendor = match pci.vendor_id.to_ascii_lowercase().as_str() {
        "10de" => "nvidia",
        "1002" => "amd",
        "8086" => "intel",
        _ => return None,
    };
    let known = known_gpu(&pci.vendor_id, &pci.device_id);
    let display = pci.class_code.starts_with("03");
    let accelerator = pci.class_code.starts_with("12");
    let is_gpu = match (vendor, known) {
        (_, Some(_)) => display || accelerator,
        ("intel", None) => false,
        (_, None) => display,
    };
    if !is_gpu {
        return None;
    }
    Some(Gpu {
        pci_address: pci.address.clone(),
        class: known.map_or_else(
            || format!("{vendor}-{}-{}", pci.vendor_id.to_ascii_lowercase(), pci.device_id.to_ascii_lowercase()),
            |k| k.class.to_string(),
        ),
        vendor_id: pci.vendor_id.clone(),
        device_id: pci.device_id.clone(),
        name: pci.device_name.clone().or_else(|| known.map(|k| k.name.to_string())),
        numa_node: pci.numa_node,
        memory_mib: known.and_then(|k| k.memory_mib),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_no_duplicate_ids_and_lower_case_hex() {
        for (i, a) in KNOWN_GPUS.iter().enumerate() {
            for b in &KNOWN_GPUS[i + 1..] {
                assert!((a.vendor_id, a.device_id) != (b.vendor_id, b.device_id), "{a:?} twice");
            }
            for id in [a.vendor_id, a.device_id] {
                assert!(id.len() == 4 && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{id}");
            }
        }
    }
}
