//! Disks from `/sys/block/<name>/`: `size` (in 512-byte sectors), `queue/rotational`,
//! `device/model`, and a serial from `device/serial` (NVMe), `serial` (virtio-blk) or
//! `device/vpd_pg80` (SCSI/SATA unit serial number page), first found.
//!
//! Skipped: devices that are not disks of their own — `loop*`, `ram*`, `zram*`, `dm-*`
//! (device mapper: LVM, crypt, multipath), `md*` (software RAID), `nbd*`, `sr*` (optical)
//! and `fd*` (floppy) — NVMe multipath paths marked `hidden`, and devices of size zero
//! (empty card readers, detached namespaces).

use super::sysfs;
use plinth_api::Disk;
use std::path::Path;

const SKIPPED_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"];

/// The disks under `root`, sorted by name.
pub(crate) fn disks(root: &Path) -> Vec<Disk> {
    let dir = root.join("sys/block");
    let mut disks: Vec<Disk> = sysfs::dir_names(&dir)
        .into_iter()
        .filter(|name| !SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter_map(|name| {
            let d = dir.join(&name);
            if sysfs::read_u64(&d.join("hidden")) == Some(1) {
                return None;
            }
            let size_bytes = sysfs::read_u64(&d.join("size"))?.checked_mul(512)?;
            if size_bytes == 0 {
                return None;
            }
            let device = d.join("device");
            Some(Disk {
                model: sysfs::read_trimmed(&device.join("model")),
                serial: sysfs::read_trimmed(&device.join("serial"))
                    .or_else(|| sysfs::read_trimmed(&d.join("serial")))
                    .or_else(|| std::fs::read(device.join("vpd_pg80")).ok().and_then(|b| unit_serial(&b))),
                size_bytes,
                rotational: sysfs::read_u64(&d.join("queue/rotational")) == Some(1),
                name,
            })
        })
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// The serial in a SCSI "Unit Serial Number" VPD page (0x80): a 4-byte header whose bytes
/// 2..4 are the length, then ASCII.
fn unit_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let body = page.get(4..4 + len.min(page.len() - 4))?;
    let text = String::from_utf8_lossy(body);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpd_page_80() {
        let mut page = vec![0x00, 0x80, 0x00, 0x0c];
        page.extend_from_slice(b"  S3Z1NB0K  ");
        assert_eq!(unit_serial(&page).as_deref(), Some("S3Z1NB0K"));
        assert_eq!(unit_serial(&[0x00, 0x83, 0x00, 0x00]), None);
        assert_eq!(unit_serial(&[0x00, 0x80, 0x00, 0x00]), None);
        // A length past the end is cut to what is there.
        assert_eq!(unit_serial(&[0x00, 0x80, 0x00, 0x40, b'A', b'B']).as_deref(), Some("AB"));
    }
}
