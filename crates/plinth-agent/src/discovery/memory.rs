//! Memory totals from `meminfo`-style text: `/proc/meminfo` (`MemTotal:  24684096 kB`) and
//! the per-node `/sys/devices/system/node/nodeN/meminfo` (`Node 0 MemTotal:  12544216 kB`).

/// The value of `key` in kB from meminfo text (either layout); `None` when absent.
pub(crate) fn kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (left, value) = line.split_once(':')?;
        // "MemTotal" or "Node 0 MemTotal": the key is the last word before the colon.
        if left.split_whitespace().last()? != key {
            return None;
        }
        let mut words = value.split_whitespace();
        let number: u64 = words.next()?.parse().ok()?;
        Some(match words.next() {
            None | Some("kB") => number,
            Some(_) => return None,
        })
    })
}

/// `MemTotal` in MiB (rounded down).
pub(crate) fn total_mib(text: &str) -> Option<u64> {
    kib(text, "MemTotal").map(|k| k / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts() {
        assert_eq!(total_mib("MemTotal:       24684096 kB\nMemFree: 1 kB\n"), Some(24105));
        assert_eq!(kib("Node 1 MemTotal:       536870912 kB\n", "MemTotal"), Some(536870912));
        assert_eq!(kib("Node 1 MemFree: 5 kB\n", "MemTotal"), None);
        assert_eq!(kib("HugePages_Total:       0\n", "HugePages_Total"), Some(0));
        assert_eq!(total_mib(""), None);
    }
}
