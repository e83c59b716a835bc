//! File descriptors handed to a child process at fixed numbers (QEMU's taps and volume
//! keys, `qemu-img`'s keys): each source is first copied above every target number, and
//! the child moves them into place with `dup2` just before `exec` (which clears
//! close-on-exec on the copy only; every other descriptor of the agent stays
//! close-on-exec).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Copies `fd` to a close-on-exec descriptor numbered at least `min`.
pub fn dup_above(fd: &impl AsRawFd, min: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the caller holds returns a new one
    // (or -1); the new one is owned by the OwnedFd made from it and by nothing else.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// In the forked child, before `exec`: `dup2(from, to)` for each pair. Calls only `dup2`,
/// which is async-signal-safe, and allocates nothing.
pub fn move_into_place(moves: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    for &(from, to) in moves {
        // SAFETY: dup2 on descriptor numbers; it touches no memory.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
