//! Wiping a volume file before it is removed: zeros written over byte ranges of the file in
//! place and synced (on a non-copy-on-write filesystem they land on the blocks the data
//! was on), then the file unlinked and its directory synced. Deleting, punching holes or
//! discarding alone leaves every byte on the device (`reference/storage.md` §4).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

const CHUNK: usize = 1 << 20;

/// Writes zeros over `[offset, offset + len)` of `f` (not past its end) and syncs; answers
/// the bytes written.
pub fn zero_range(f: &mut File, offset: u64, len: u64) -> std::io::Result<u64> {
    let end = (offset.saturating_add(len)).min(f.metadata()?.len());
    if end <= offset {
        return Ok(0);
    }
    let zeros = vec![0u8; CHUNK];
    f.seek(SeekFrom::Start(offset))?;
    let mut at = offset;
    while at < end {
        let n = ((end - at) as usize).min(CHUNK);
        f.write_all(&zeros[..n])?;
        at += n as u64;
    }
    f.sync_all()?;
    Ok(end - offset)
}

/// The ranges of `f` that hold data (holes hold nothing on the device), by
/// `SEEK_DATA`/`SEEK_HOLE`; the whole file where the filesystem cannot tell.
pub fn data_ranges(f: &File) -> std::io::Result<Vec<(u64, u64)>> {
    let size = f.metadata()?.len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut at: i64 = 0;
    while (at as u64) < size {
        // SAFETY: lseek on a file descriptor this function borrows; no memory is passed.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // No data past `at`.
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                return Ok(vec![(0, size)]);
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.push((data as u64, (hole - data) as u64));
        at = hole;
    }
    Ok(out)
}

/// Overwrites every byte of `path` that holds data with zeros; answers the bytes written.
pub fn overwrite_all(path: &Path) -> std::io::Result<u64> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let mut n = 0;
    for (off, len) in data_ranges(&f)? {
        n += zero_range(&mut f, off, len)?;
    }
    f.sync_all()?;
    Ok(n)
}

/// Overwrites `[offset, offset + len)` of `path` with zeros; answers the bytes written.
pub fn overwrite_range(path: &Path, offset: u64, len: u64) -> std::io::Result<u64> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    zero_range(&mut f, offset, len)
}

/// Removes `path` and syncs its directory, so the removal itself is durable.
pub fn remove(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwriting_reaches_every_data_byte_and_skips_holes() {
        let dir = std::env::temp_dir().join(format!("plinth-wipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("f");
        let mut f = File::create(&p).expect("create");
        f.write_all(&[0x41; 4096]).expect("write");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(&[0x42; 4096]).expect("write");
        f.sync_all().expect("sync");
        drop(f);
        let written = overwrite_all(&p).expect("overwrite");
        let back = std::fs::read(&p).expect("read");
        assert!(back.iter().all(|b| *b == 0), "no byte of the data is left");
        assert!((8192..8 << 20).contains(&written), "the hole between was not written: {written}");
        remove(&p).expect("remove");
        assert!(!p.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
