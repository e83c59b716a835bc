//! Small, forgiving readers for `/proc` and `/sys` pseudo-files: trimmed text, numbers,
//! symlink basenames and CPU lists. Every reader answers `None` (or empty) for a file that
//! is missing, unreadable or malformed; only the callers decide what is an error.

use std::fs;
use std::path::Path;

/// The file's content, trimmed; `None` when it cannot be read or is empty.
pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if text.is_empty() { None } else { Some(text.to_string()) }
}

/// The file's content parsed as a signed decimal number.
pub(crate) fn read_i64(path: &Path) -> Option<i64> {
    read_trimmed(path)?.parse().ok()
}

/// The file's content parsed as an unsigned decimal number.
pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// The file's content parsed as hex, with or without a `0x` prefix (`0x10de`, `030200`).
pub(crate) fn read_hex(path: &Path) -> Option<u32> {
    let text = read_trimmed(path)?;
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(&text);
    u32::from_str_radix(digits, 16).ok()
}

/// The last component of a symlink's target (`driver -> ../../bus/pci/drivers/nvme` gives
/// `nvme`). The target need not exist.
pub(crate) fn link_basename(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The names in a directory, sorted; empty when it cannot be read.
pub(crate) fn dir_names(path: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(path) else { return Vec::new() };
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A kernel CPU list (`0-3,8,10-11`) as sorted, deduplicated CPU numbers. Malformed
/// pieces are skipped.
pub(crate) fn parse_cpulist(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for piece in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match piece.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
                    && a <= b
                {
                    cpus.extend(a..=b);
                }
            }
            None => {
                if let Ok(c) = piece.parse() {
                    cpus.push(c);
                }
            }
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// The number in a name with a fixed prefix (`node12` with `node` gives 12).
pub(crate) fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `s` looks like a PCI address, `dddd:bb:dd.f` in hex (the domain may be longer
/// than four digits, as behind Intel VMD: `10000:01:00.0`).
pub(crate) fn is_pci_address(s: &str) -> bool {
    let hex =
        |p: &str, min: usize, max: usize| (min..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = s.split(':');
    let (Some(domain), Some(bus), Some(slot_fn), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((slot, function)) = slot_fn.split_once('.') else { return false };
    hex(domain, 4, 8) && hex(bus, 2, 2) && hex(slot, 2, 2) && matches!(function.as_bytes(), [b'0'..=b'7'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpulist("5"), vec![5]);
        assert_eq!(parse_cpulist(""), Vec::<u32>::new());
        assert_eq!(parse_cpulist("3,1,1-2,x,4-2"), vec![1, 2, 3]);
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(numbered("node12", "node"), Some(12));
        assert_eq!(numbered("node", "node"), None);
        assert_eq!(numbered("nodes", "node"), None);
        assert_eq!(numbered("cpufreq", "cpu"), None);
        assert!(is_pci_address("0000:3b:00.0"));
        assert!(is_pci_address("10000:0a:1f.7"));
        assert!(!is_pci_address("0000:3b:00.8"));
        assert!(!is_pci_address("virtio2"));
        assert!(!is_pci_address("pci0000:00"));
    }
}
