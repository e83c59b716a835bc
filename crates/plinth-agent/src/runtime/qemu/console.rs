//! Keeping a guest's serial console log bounded in size.
//!
//! QEMU appends the console to `console.log` (the serial chardev's log file, opened with
//! `logappend=on`, so every write goes to the current end). When the file grows past the cap, its last
//! `cap` bytes are copied to `console.log.1` (replacing it) and `console.log` is
//! truncated to zero: QEMU keeps writing at the (new) end, and the console shipper sees
//! a file that shrank, i.e. a rotated stream it sends again from 0. At most `2 × cap`
//! bytes are on disk per guest. Bytes QEMU writes between the copy and the truncation are
//! lost (a window of a few microseconds, re-checked once).
//!
//! Blocking file I/O: the runtime calls [`rotate_if_over`] from a blocking task,
//! periodically while the guest runs. Owns only the log files.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where the rotated tail of `log` goes.
pub fn rotated_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".1");
    log.with_file_name(name)
}

/// When `log` is over `cap` bytes, keeps its last `cap` bytes in `console.log.1` and
/// empties it. Answers whether it rotated. A missing log is not an error.
pub fn rotate_if_over(log: &Path, cap: u64) -> std::io::Result<bool> {
    let mut f = match std::fs::OpenOptions::new().read(true).write(true).open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len <= cap {
        return Ok(false);
    }
    let keep = cap.max(1);
    let mut tail = Vec::with_capacity(usize::try_from(keep).unwrap_or(0));
    f.seek(SeekFrom::Start(len - keep))?;
    (&mut f).take(keep).read_to_end(&mut tail)?;
    // What QEMU wrote while we read.
    let now = f.metadata()?.len();
    if now > len {
        f.seek(SeekFrom::Start(len))?;
        (&mut f).take(now - len).read_to_end(&mut tail)?;
    }
    let start = tail.len().saturating_sub(usize::try_from(keep).unwrap_or(usize::MAX));
    let old = rotated_path(log);
    let tmp = log.with_file_name(".console.log.1.tmp");
    {
        let mut t = std::fs::File::create(&tmp)?;
        t.write_all(&tail[start..])?;
    }
    std::fs::rename(&tmp, &old)?;
    f.set_len(0)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_cap_the_tail_is_kept_and_the_log_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("console.log");
        assert!(!rotate_if_over(&log, 10).expect("missing is fine"));
        std::fs::write(&log, b"0123456789").expect("write");
        assert!(!rotate_if_over(&log, 10).expect("at the cap"));
        // An appender keeps writing at the end after the truncation.
        let mut appender = std::fs::OpenOptions::new().append(true).open(&log).expect("open");
        appender.write_all(b"abcdef").expect("append");
        assert!(rotate_if_over(&log, 10).expect("rotate"));
        assert_eq!(std::fs::read(rotated_path(&log)).expect("read"), b"6789abcdef");
        assert_eq!(std::fs::metadata(&log).expect("meta").len(), 0);
        appender.write_all(b"next").expect("append");
        assert_eq!(std::fs::read(&log).expect("read"), b"next");
    }
}
