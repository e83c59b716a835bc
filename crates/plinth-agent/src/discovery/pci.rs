//! PCI functions from `/sys/bus/pci/devices/<address>/`: `class`, `vendor`, `device`,
//! `numa_node` (`-1`: none), `sriov_totalvfs`/`sriov_numvfs`, and the basenames of the
//! `iommu_group` and `driver` links; names from `pci.ids`. A function whose class or ids
//! cannot be read is left out.

use super::pci_ids::PciIds;
use super::sysfs;
use plinth_api::PciDevice;
use std::path::Path;

/// Every PCI function under `root`, sorted by address.
pub(crate) fn devices(root: &Path, ids: &PciIds) -> Vec<PciDevice> {
    let dir = root.join("sys/bus/pci/devices");
    let mut devices: Vec<PciDevice> = sysfs::dir_names(&dir)
        .into_iter()
        .filter(|name| sysfs::is_pci_address(name))
        .filter_map(|address| {
            let d = dir.join(&address);
            let class = sysfs::read_hex(&d.join("class"))?;
            let vendor = u16::try_from(sysfs::read_hex(&d.join("vendor"))?).ok()?;
            let device = u16::try_from(sysfs::read_hex(&d.join("device"))?).ok()?;
            let small = |file: &str| sysfs::read_u64(&d.join(file)).and_then(|v| u32::try_from(v).ok());
            Some(PciDevice {
                class_code: format!("{:06x}", class & 0x00ff_ffff),
                class_name: ids.class_name(((class >> 16) & 0xff) as u8, ((class >> 8) & 0xff) as u8),
                vendor_id: format!("{vendor:04x}"),
                device_id: format!("{device:04x}"),
                vendor_name: ids.vendor(vendor).map(str::to_string),
                device_name: ids.device(vendor, device).map(str::to_string),
                numa_node: sysfs::read_i64(&d.join("numa_node")).and_then(|n| u32::try_from(n).ok()),
                iommu_group: sysfs::link_basename(&d.join("iommu_group")).and_then(|g| g.parse().ok()),
                driver: sysfs::link_basename(&d.join("driver")),
                sriov_total_vfs: small("sriov_totalvfs"),
                sriov_num_vfs: small("sriov_numvfs"),
                address,
            })
        })
        .collect();
    devices.sort_by(|a, b| a.address.cmp(&b.address));
    devices
}
