//! The PCI ID database (`pci.ids`, from `/usr/share/hwdata/` or `/usr/share/misc/`), parsed
//! for names: vendor lines (`10de  NVIDIA Corporation`), device lines behind one tab, and
//! the class section (`C 03  Display controller`, subclasses behind one tab). Subsystem and
//! programming-interface lines (two tabs) are skipped. When the file is absent, class names
//! come from a short built-in table of the standard PCI classes and vendor and device
//! names are unknown.

use std::collections::HashMap;
use std::path::Path;

/// Where `pci.ids` is looked for under the root, first found wins.
pub(crate) const LOCATIONS: &[&str] = &["usr/share/hwdata/pci.ids", "usr/share/misc/pci.ids"];

#[derive(Debug, Default)]
struct Vendor {
    name: String,
    devices: HashMap<u16, String>,
}

#[derive(Debug, Default)]
struct Class {
    name: String,
    subclasses: HashMap<u8, String>,
}

/// Names from `pci.ids`.
#[derive(Debug, Default)]
pub(crate) struct PciIds {
    vendors: HashMap<u16, Vendor>,
    classes: HashMap<u8, Class>,
}

/// Standard PCI class and subclass names (as `pci.ids` spells them), for hosts without
/// the database: `(class, subclass or None for the class itself, name)`.
const BUILTIN_CLASSES: &[(u8, Option<u8>, &str)] = &[
    (0x00, None, "Unclassified device"),
    (0x01, None, "Mass storage controller"),
    (0x01, Some(0x00), "SCSI storage controller"),
    (0x01, Some(0x01), "IDE interface"),
    (0x01, Some(0x04), "RAID bus controller"),
    (0x01, Some(0x06), "SATA controller"),
    (0x01, Some(0x07), "Serial Attached SCSI controller"),
    (0x01, Some(0x08), "Non-Volatile memory controller"),
    (0x01, Some(0x80), "Mass storage controller"),
    (0x02, None, "Network controller"),
    (0x02, Some(0x00), "Ethernet controller"),
    (0x02, Some(0x07), "Infiniband controller"),
    (0x02, Some(0x80), "Network controller"),
    (0x03, None, "Display controller"),
    (0x03, Some(0x00), "VGA compatible controller"),
    (0x03, Some(0x02), "3D controller"),
    (0x03, Some(0x80), "Display controller"),
    (0x04, None, "Multimedia controller"),
    (0x04, Some(0x03), "Audio device"),
    (0x05, None, "Memory controller"),
    (0x06, None, "Bridge"),
    (0x06, Some(0x00), "Host bridge"),
    (0x06, Some(0x01), "ISA bridge"),
    (0x06, Some(0x04), "PCI bridge"),
    (0x06, Some(0x80), "Bridge"),
    (0x07, None, "Communication controller"),
    (0x08, None, "Generic system peripheral"),
    (0x08, Some(0x80), "System peripheral"),
    (0x0c, None, "Serial bus controller"),
    (0x0c, Some(0x03), "USB controller"),
    (0x0c, Some(0x05), "SMBus"),
    (0x12, None, "Processing accelerators"),
    (0xff, None, "Unassigned class"),
];

impl PciIds {
    /// The first `pci.ids` found under `root`, or an empty database.
    pub(crate) fn load(root: &Path) -> PciIds {
        LOCATIONS
            .iter()
            .find_map(|l| std::fs::read(root.join(l)).ok())
            .map(|bytes| PciIds::parse(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// Parses the text of a `pci.ids` file; lines it does not understand are skipped.
    pub(crate) fn parse(text: &str) -> PciIds {
        enum Section {
            None,
            Vendor(u16),
            Class(u8),
        }
        let mut ids = PciIds::default();
        let mut section = Section::None;
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with("\t\t") {
                continue; // subsystem or programming interface
            }
            if let Some(rest) = line.strip_prefix('\t') {
                let Some((id, name)) = split_id(rest) else { continue };
                match section {
                    Section::Vendor(v) => {
                        if let (Ok(d), Some(vendor)) = (u16::from_str_radix(id, 16), ids.vendors.get_mut(&v)) {
                            vendor.devices.insert(d, name.to_string());
                        }
                    }
                    Section::Class(c) => {
                        if let (Ok(s), Some(class)) = (u8::from_str_radix(id, 16), ids.classes.get_mut(&c)) {
                            class.subclasses.insert(s, name.to_string());
                        }
                    }
                    Section::None => {}
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("C ") {
                section = match split_id(rest).and_then(|(id, name)| Some((u8::from_str_radix(id, 16).ok()?, name))) {
                    Some((c, name)) => {
                        ids.classes.insert(c, Class { name: name.to_string(), subclasses: HashMap::new() });
                        Section::Class(c)
                    }
                    None => Section::None,
                };
                continue;
            }
            section = match split_id(line).and_then(|(id, name)| Some((u16::from_str_radix(id, 16).ok()?, name))) {
                Some((v, name)) if line.len() > 4 && line.as_bytes()[4] == b' ' => {
                    ids.vendors.insert(v, Vendor { name: name.to_string(), devices: HashMap::new() });
                    Section::Vendor(v)
                }
                // Other lists (`X` device types, `L` languages…) in some copies of the file.
                _ => Section::None,
            };
        }
        ids
    }

    /// The vendor's name.
    pub(crate) fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(|v| v.name.as_str())
    }

    /// The device's name.
    pub(crate) fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.vendors.get(&vendor)?.devices.get(&device).map(String::as_str)
    }

    /// The most specific name of a class code's class and subclass: the subclass's name,
    /// else the class's, from the database or else the built-in table.
    pub(crate) fn class_name(&self, class: u8, subclass: u8) -> Option<String> {
        if let Some(c) = self.classes.get(&class) {
            return Some(c.subclasses.get(&subclass).unwrap_or(&c.name).clone());
        }
        let builtin = |sub: Option<u8>| {
            BUILTIN_CLASSES.iter().find(|(c, s, _)| *c == class && *s == sub).map(|(_, _, n)| n.to_string())
        };
        builtin(Some(subclass)).or_else(|| builtin(None))
    }
}

/// `"10de  NVIDIA Corporation"` → `("10de", "NVIDIA Corporation")`.
fn split_id(s: &str) -> Option<(&str, &str)> {
    let (id, name) = s.split_once(char::is_whitespace)?;
    let name = name.trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
        return None;
    }
    Some((id, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCERPT: &str = "#\tList of PCI ID's\n\n10de  NVIDIA Corporation\n\t2330  GH100 [H100 SXM5 80GB]\n\
\t\t10de 16c1  H100 SXM5 80GB\n\t2331  GH100 [H100 PCIe]\n1af4  Red Hat, Inc.\n\t1041  Virtio 1.0 network device\n\
C 02  Network controller\n\t00  Ethernet controller\nC 03  Display controller\n\t00  VGA compatible controller\n\
\t\t00  VGA controller\n\t02  3D controller\n";

    #[test]
    fn parses_vendors_devices_classes() {
        let ids = PciIds::parse(EXCERPT);
        assert_eq!(ids.vendor(0x10de), Some("NVIDIA Corporation"));
        assert_eq!(ids.device(0x10de, 0x2330), Some("GH100 [H100 SXM5 80GB]"));
        assert_eq!(ids.device(0x10de, 0x2331), Some("GH100 [H100 PCIe]"));
        assert_eq!(ids.device(0x10de, 0x16c1), None, "a subsystem line is not a device");
        assert_eq!(ids.device(0x1af4, 0x1041), Some("Virtio 1.0 network device"));
        assert_eq!(ids.class_name(0x03, 0x02).as_deref(), Some("3D controller"));
        assert_eq!(ids.class_name(0x03, 0x80).as_deref(), Some("Display controller"));
        // Not in the file: the built-in table answers.
        assert_eq!(ids.class_name(0x01, 0x08).as_deref(), Some("Non-Volatile memory controller"));
    }

    #[test]
    fn builtin_without_database() {
        let ids = PciIds::default();
        assert_eq!(ids.class_name(0x02, 0x00).as_deref(), Some("Ethernet controller"));
        assert_eq!(ids.class_name(0xff, 0xff).as_deref(), Some("Unassigned class"));
        assert_eq!(ids.class_name(0x0b, 0x40), None);
        assert_eq!(ids.vendor(0x10de), None);
    }
}
