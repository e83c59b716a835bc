//! Firmware identity from DMI/SMBIOS: `/sys/class/dmi/id/{sys_vendor,product_name,
//! product_serial,bios_vendor,bios_version,bios_date}`. A missing or unreadable file
//! (`product_serial` is readable by root only; many VMs and Arm boards have no DMI) and
//! the vendors' placeholder strings ("To Be Filled By O.E.M.", "Default string", "Not
//! Specified", "System Serial Number", "0123456789") become none.

use super::sysfs;
use plinth_api::Firmware;
use std::path::Path;

const PLACEHOLDERS: &[&str] = &[
    "to be filled by o.e.m.",
    "default string",
    "not specified",
    "not applicable",
    "system serial number",
    "system product name",
    "system manufacturer",
    "0123456789",
    "none",
];

/// The DMI identity under `root`.
pub(crate) fn firmware(root: &Path) -> Firmware {
    let dir = root.join("sys/class/dmi/id");
    let read = |file: &str| {
        sysfs::read_trimmed(&dir.join(file)).filter(|v| !PLACEHOLDERS.contains(&v.to_ascii_lowercase().as_str()))
    };
    Firmware {
        system_vendor: read("sys_vendor"),
        product: read("product_name"),
        serial: read("product_serial"),
        bios_vendor: read("bios_vendor"),
        bios_version: read("bios_version"),
        bios_date: read("bios_date"),
    }
}
