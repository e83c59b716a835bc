//! The fail-closed guard: a seven-instruction eBPF program, attached with tcx at the
//! egress of every NIC port and every VXLAN device of a VPC namespace, that drops each
//! packet whose `skb->mark` lacks the "passed" bit ([`PASSED`]) and lets the rest through.
//!
//! Why: the filter ([`super::filter`]) lives in nftables, and `nft flush ruleset` (or a
//! table deleted by hand) would leave the bridge forwarding everything unfiltered until
//! the agent's next apply. The nft tables set [`PASSED`] exactly where they grant passage,
//! so with them present behaviour is unchanged and with them gone nothing leaves a port or
//! a VXLAN device. A tcx program is no qdisc and no nft object: neither `nft flush
//! ruleset` nor `tc qdisc del` removes it; it goes with its device (Linux ≥ 6.6).
//!
//! Owns: loading the program (once per process), attaching it (idempotent: a device
//! already carrying a program named [`NAME`] is left alone), querying and detaching it,
//! and deciding which devices of a plan must carry it. Everything is a `bpf(2)` syscall on
//! one thread inside the VPC namespace ([`super::tap::in_netns`]: ifindexes are per
//! namespace); no process is spawned, so checking every device of a VPC on each verifying
//! apply stays cheap (a query and two look-ups per device).

use super::links::Link;
use super::plan::VpcPlan;
use super::tap;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// The mark bit the nft tables set on what they let pass.
pub const PASSED: u32 = 0x8000_0000;

/// The program's name (what [`present`] looks for).
pub const NAME: &str = "plinth_guard";

/// The link kinds that can carry the guard: taps, veths (ports) and VXLAN devices.
pub const KINDS: [&str; 3] = ["tun", "veth", "vxlan"];

const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_DETACH: u32 = 9;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_PROG_QUERY: u32 = 16;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_EGRESS: u32 = 47;

/// `struct bpf_insn`.
#[repr(C)]
struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// The program (`struct __sk_buff.mark` is at offset 8; TCX_PASS = 0, TCX_DROP = 2).
const PROGRAM: [Insn; 7] = [
    Insn { code: 0x61, regs: 0x10, off: 8, imm: 0 }, // r0 = *(u32 *)(r1 + 8)
    Insn { code: 0x54, regs: 0x00, off: 0, imm: PASSED as i32 }, // w0 &= 0x80000000
    Insn { code: 0x55, regs: 0x00, off: 2, imm: 0 }, // if r0 != 0 goto +2
    Insn { code: 0xb7, regs: 0x00, off: 0, imm: 2 }, // r0 = TCX_DROP
    Insn { code: 0x95, regs: 0x00, off: 0, imm: 0 }, // exit
    Insn { code: 0xb7, regs: 0x00, off: 0, imm: 0 }, // r0 = TCX_PASS
    Insn { code: 0x95, regs: 0x00, off: 0, imm: 0 }, // exit
];

/// `union bpf_attr` for BPF_PROG_LOAD (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct Attach {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct Query {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFd {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_prog_info`, up to and including `name` (offset 64).
#[repr(C, align(8))]
struct ProgInfo([u8; 80]);

fn bpf<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid for
    // reads and writes of its size; the kernel reads no further than that size.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd as libc::c_long, attr as *mut T, std::mem::size_of::<T>() as libc::c_uint)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as i64) }
}

/// The fd a successful call answered.
fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads the program (in no namespace in particular: a program is not per namespace).
fn load() -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..NAME.len()].copy_from_slice(NAME.as_bytes());
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_TCX_EGRESS,
        ..ProgLoad::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 4096];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                return Ok(owned(fd));
            }
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            Err(io::Error::new(e.kind(), format!("loading the guard program: {e}; verifier: {text}")))
        }
    }
}

/// The ifindex of `name` in the calling thread's namespace.
fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a device name"))?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(io::ErrorKind::NotFound, format!("no device {name}"))),
        i => Ok(i),
    }
}

/// The ids of the programs attached with tcx at the egress of `ifindex`, in run order.
fn prog_ids(ifindex: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 8];
    loop {
        let mut attr = Query {
            target_ifindex: ifindex,
            attach_type: BPF_TCX_EGRESS,
            prog_ids: ids.as_mut_ptr() as u64,
            count: ids.len() as u32,
            ..Query::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.count as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && (attr.count as usize) > ids.len() => {
                ids = vec![0; attr.count as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

/// An fd of program `id` (`None`: it went away meanwhile).
fn prog_fd(id: u32) -> io::Result<Option<OwnedFd>> {
    let mut attr = GetFd { prog_id: id, ..GetFd::default() };
    match bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) {
        Ok(fd) => Ok(Some(owned(fd))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The name of the program behind `fd`.
fn prog_name(fd: &OwnedFd) -> io::Result<String> {
    let mut info = ProgInfo([0; 80]);
    let mut attr =
        InfoByFd { bpf_fd: fd.as_raw_fd() as u32, info_len: info.0.len() as u32, info: info.0.as_mut_ptr() as u64 };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name = &info.0[64..80];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The programs at the egress of `ifindex`: (name, fd), in run order.
fn programs(ifindex: u32) -> io::Result<Vec<(String, OwnedFd)>> {
    let mut out = Vec::new();
    for id in prog_ids(ifindex)? {
        if let Some(fd) = prog_fd(id)? {
            out.push((prog_name(&fd)?, fd));
        }
    }
    Ok(out)
}

fn has_guard(ifindex: u32) -> io::Result<bool> {
    Ok(programs(ifindex)?.iter().any(|(n, _)| n == NAME))
}

fn attach(ifindex: u32, prog: &OwnedFd) -> io::Result<()> {
    let mut attr = Attach {
        target_ifindex: ifindex,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_TCX_EGRESS,
        ..Attach::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ())
}

/// The program, loaded once per process (one program serves every device; its fd is
/// close-on-exec, so the tools the agent runs do not inherit it).
fn program() -> io::Result<Arc<OwnedFd>> {
    static PROGRAM_FD: Mutex<Option<Arc<OwnedFd>>> = Mutex::new(None);
    let mut slot = PROGRAM_FD.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(fd) = slot.as_ref() {
        return Ok(fd.clone());
    }
    let fd = Arc::new(load()?);
    *slot = Some(fd.clone());
    Ok(fd)
}

/// Attaches the guard to each of `devices` that lacks it, in the calling thread's
/// namespace.
fn ensure_here(devices: &[String]) -> Vec<(String, Result<(), String>)> {
    devices
        .iter()
        .map(|d| {
            let r = (|| -> io::Result<()> {
                let ix = ifindex(d)?;
                if has_guard(ix)? {
                    return Ok(());
                }
                attach(ix, &*program()?)
            })();
            (d.clone(), r.map_err(|e| format!("attaching the guard to {d} (tcx egress, Linux ≥ 6.6): {e}")))
        })
        .collect()
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send + 'static) -> Result<T, String> {
    tap::in_netns(&super::links::ns_path(ns), f).map_err(|e| format!("entering namespace {ns}: {e}"))
}

/// Attaches the guard to each of `devices` of namespace `ns` that lacks it (one thread in
/// the namespace for all). Answers each device's result.
pub fn ensure(ns: &str, devices: &[String]) -> BTreeMap<String, Result<(), String>> {
    let list = devices.to_vec();
    match in_ns(ns, move || Ok(ensure_here(&list))) {
        Ok(r) => r.into_iter().collect(),
        Err(e) => devices.iter().map(|d| (d.clone(), Err(e.clone()))).collect(),
    }
}

/// Which of `devices` of namespace `ns` carry the guard (a device that cannot be queried,
/// e.g. gone meanwhile, does not). One thread in the namespace, no process.
pub fn query(ns: &str, devices: Vec<String>) -> Result<BTreeSet<String>, String> {
    if devices.is_empty() {
        return Ok(BTreeSet::new());
    }
    in_ns(ns, move || Ok(devices.into_iter().filter(|d| ifindex(d).and_then(has_guard).unwrap_or(false)).collect()))
}

/// The names of the programs attached with tcx at the egress of `dev` in namespace `ns`,
/// in run order.
pub fn attached(ns: &str, dev: &str) -> Result<Vec<String>, String> {
    let dev = dev.to_owned();
    in_ns(ns, move || Ok(programs(ifindex(&dev)?)?.into_iter().map(|(n, _)| n).collect()))
}

/// Whether `dev` in namespace `ns` carries the guard.
pub fn present(ns: &str, dev: &str) -> Result<bool, String> {
    Ok(attached(ns, dev)?.iter().any(|n| n == NAME))
}

/// Detaches every guard from `dev` in namespace `ns` (repairs, tests); answers how many.
pub fn detach(ns: &str, dev: &str) -> Result<usize, String> {
    let dev = dev.to_owned();
    in_ns(ns, move || {
        let ix = ifindex(&dev)?;
        let mut n = 0;
        for (name, fd) in programs(ix)? {
            if name == NAME {
                let mut attr = Attach {
                    target_ifindex: ix,
                    attach_bpf_fd: fd.as_raw_fd() as u32,
                    attach_type: BPF_TCX_EGRESS,
                    ..Attach::default()
                };
                bpf(BPF_PROG_DETACH, &mut attr)?;
                n += 1;
            }
        }
        Ok(n)
    })
}

/// The devices of `plan` that must carry the guard: each NIC's port and each subnet's
/// VXLAN device.
pub fn devices(plan: &VpcPlan) -> impl Iterator<Item = &str> {
    plan.nics
        .iter()
        .map(|n| n.spec.device.as_str())
        .chain(plan.subnets.iter().filter_map(|s| s.vxlan.as_ref().map(|(v, _)| v.as_str())))
}

/// Attaches the guard to every device of `plan` present in `links` that is not known to
/// carry it, recording success in `links`. A change apply trusts `links` (ports it just
/// made are the ones without the flag); a verifying one read the flags back, so a guard
/// detached by hand is drift repaired here. Answers per-device errors.
pub fn converge(ns: &str, plan: &VpcPlan, links: &mut BTreeMap<String, Link>) -> BTreeMap<String, String> {
    let missing: Vec<String> =
        devices(plan).filter(|d| links.get(*d).is_some_and(|l| !l.guarded)).map(str::to_owned).collect();
    let mut errors = BTreeMap::new();
    if missing.is_empty() {
        return errors;
    }
    for (d, r) in ensure(ns, &missing) {
        match r {
            Ok(()) => {
                if let Some(l) = links.get_mut(&d) {
                    l.guarded = true;
                }
            }
            Err(e) => {
                errors.insert(d, e);
            }
        }
    }
    errors
}

/// `Ok` when each of `devices` carries the guard as `links` know it; otherwise why not
/// (the error met attaching it, from `errors`, when there is one).
pub fn observe<'a>(
    links: &BTreeMap<String, Link>,
    errors: &BTreeMap<String, String>,
    devices: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    match devices.into_iter().find(|d| !links.get(*d).is_some_and(|l| l.guarded)) {
        None => Ok(()),
        Some(d) => Err(match errors.get(d) {
            Some(e) => format!("no guard on {d}: {e}"),
            None => format!("no guard on {d} (the fail-closed tcx program at its egress)"),
        }),
    }
}
