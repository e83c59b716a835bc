//! Physical network interfaces from `/sys/class/net/<name>/`: those with a `device` link
//! that are not under `/sys/devices/virtual/` (so not `lo`, bridges, bonds, veth, tap,
//! vxlan, ifb…). Reads `address` (MAC), `speed` (Mb/s; `-1`, 0 or unreadable when the link
//! is down → none), the basename of `device/driver`, and the PCI address the `device`
//! link resolves to: the device itself when it is a PCI function, or its parent when the
//! device is a virtio device on a PCI function (`…/0000:00:03.0/virtio2`).

use super::sysfs;
use plinth_api::Nic;
use std::path::Path;

/// The physical NICs under `root`, sorted by name.
pub(crate) fn nics(root: &Path) -> Vec<Nic> {
    let dir = root.join("sys/class/net");
    let virtual_dir = root.canonicalize().map(|r| r.join("sys/devices/virtual")).ok();
    let mut nics: Vec<Nic> = sysfs::dir_names(&dir)
        .into_iter()
        .filter(|name| name != "lo")
        .filter_map(|name| {
            let iface = dir.join(&name);
            let device = iface.join("device");
            if !device.exists() {
                return None;
            }
            if let (Ok(real), Some(virtual_dir)) = (iface.canonicalize(), &virtual_dir)
                && real.starts_with(virtual_dir)
            {
                return None;
            }
            Some(Nic {
                mac: sysfs::read_trimmed(&iface.join("address")).unwrap_or_default(),
                speed_mbps: sysfs::read_i64(&iface.join("speed")).filter(|s| *s > 0).map(|s| s as u64),
                driver: sysfs::link_basename(&device.join("driver")),
                pci_address: pci_address_of(&device),
                name,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

/// The PCI address a device link leads to (see the module documentation).
fn pci_address_of(device: &Path) -> Option<String> {
    let real = device.canonicalize().ok()?;
    let last = real.file_name()?.to_str()?;
    if sysfs::is_pci_address(last) {
        return Some(last.to_string());
    }
    let parent = real.parent()?.file_name()?.to_str()?;
    (sysfs::numbered(last, "virtio").is_some() && sysfs::is_pci_address(parent)).then(|| parent.to_string())
}
