//! Tap devices through the TUN ioctl (the kernel refuses tap creation over rtnetlink),
//! and running a closure inside a network namespace on a dedicated thread.
//!
//! Namespaces are per thread: [`in_netns`] spawns a fresh `std::thread`, moves it into the
//! namespace with `setns`, runs the closure and lets the thread end, so no pooled thread
//! (tokio's workers or its blocking pool) ever carries a foreign namespace.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The tap flags every port uses: a tap (Ethernet frames), no packet-info header, and the
/// virtio-net header QEMU expects (`vnet_hdr`).
const TAP_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (40 bytes in all).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Runs `f` on a new thread that entered the network namespace at `ns_path` first.
pub fn in_netns<T, F>(ns_path: &Path, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let ns = File::open(ns_path)?;
    std::thread::Builder::new()
        .name("plinth-netns".into())
        .spawn(move || {
            // SAFETY: setns on a valid namespace fd; only this (fresh, short-lived) thread moves.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })?
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// Opens `/dev/net/tun` and attaches to (or creates) the tap `name` in the calling
/// thread's namespace.
fn attach(name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let bytes = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in tap name"))?;
    let bytes = bytes.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("tap name {name:?} must be 1 to 15 bytes")));
    }
    // SAFETY: a plain open of a device node with a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], flags: flags as libc::c_short, _pad: [0; 22] };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The MTU the kernel gives a new tap (`ETH_DATA_LEN`).
pub const NEW_TAP_MTU: u32 = 1500;

/// Creates the persistent tap `name` in the namespace at `ns_path` (attaching to it when
/// it exists already), and leaves it there with no fd open.
pub fn create_persistent(ns_path: &Path, name: &str) -> io::Result<()> {
    let name = name.to_owned();
    in_netns(ns_path, move || {
        let fd = attach(&name, TAP_FLAGS)?;
        // SAFETY: TUNSETPERSIST takes an integer argument.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })
}

/// Opens the existing persistent tap `name` in the namespace at `ns_path` and answers its
/// queue fd (for QEMU's `-netdev tap,fd=N`).
pub fn open_existing(ns_path: &Path, name: &str) -> io::Result<OwnedFd> {
    open_with(ns_path, name, TAP_FLAGS)
}

/// As [`open_existing`], without the virtio-net header: QEMU then offers the guest no
/// checksum or segmentation offload, so every frame it sends fits the MTU (what a switch
/// reading the tap with `AF_PACKET`, as Open vSwitch's userspace datapath does, needs).
pub fn open_existing_plain(ns_path: &Path, name: &str) -> io::Result<OwnedFd> {
    open_with(ns_path, name, libc::IFF_TAP | libc::IFF_NO_PI)
}

fn open_with(ns_path: &Path, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = name.to_owned();
    in_netns(ns_path, move || {
        // TUNSETIFF on a missing name would *create* a tap: look first, through this
        // thread's namespace (if_nametoindex asks the thread's netns).
        let cname =
            CString::new(name.clone()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in tap name"))?;
        // SAFETY: a NUL-terminated name.
        if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no tap {name} in the VPC namespace")));
        }
        attach(&name, flags)
    })
}
