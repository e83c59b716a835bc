//! A guest's directory and the record the runtime keeps in it (`guest.json`), which is
//! what lets a restarted agent find its guests again.
//!
//! ```text
//! {data_dir}/qemu/{instance_id}/   0700
//!   guest.json     0600: spec and generations acted on, argv, accelerator, pid and its
//!                  start time, pinned CPUs, image digests used
//!   disk.qcow2     the root disk (overlay of a cached image, or blank)
//!   qmp.sock       QEMU's monitor (unix socket; every socket's path ≤ 107 bytes)
//!   qga.sock       the guest agent's channel (virtio-serial port org.qemu.guest_agent.0)
//!   tty.sock       the serial port (input; its output goes to console.log)
//!   qga.frozen     present while a thaw of the guest's filesystems is owed
//!   qemu.pid       written by QEMU
//!   console.log    the serial console (console.log.1: its rotated tail)
//!   qemu.stderr    what QEMU said while starting
//!   cidata.img     the NoCloud seed (FAT labelled CIDATA), attached read-only
//! ```
//!
//! Owns the layout and the record's (de)serialisation, nothing else.

use crate::runtime::{Actual, RuntimeError};
use crate::state::write_private;
use plinth_api::{InstanceId, InstanceSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The most bytes of a unix socket path (`sun_path` is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The files of one guest.
#[derive(Clone, Debug)]
pub struct GuestPaths {
    /// The guest's directory.
    pub dir: PathBuf,
    /// `guest.json`.
    pub record: PathBuf,
    /// `disk.qcow2`.
    pub disk: PathBuf,
    /// `qmp.sock`.
    pub qmp_socket: PathBuf,
    /// `qga.sock` (the guest agent's channel).
    pub agent_socket: PathBuf,
    /// `qemu.pid`.
    pub pidfile: PathBuf,
    /// `console.log`.
    pub console_log: PathBuf,
    /// `tty.sock` (the serial console's input).
    pub serial_socket: PathBuf,
    /// `qemu.stderr`.
    pub stderr_log: PathBuf,
    /// `cidata.img`.
    pub seed: PathBuf,
}

impl GuestPaths {
    /// The files of guest `id` under `root` (`{data_dir}/qemu`).
    pub fn new(root: &Path, id: &InstanceId) -> GuestPaths {
        let dir = root.join(id.as_str());
        GuestPaths {
            record: dir.join("guest.json"),
            disk: dir.join("disk.qcow2"),
            qmp_socket: dir.join("qmp.sock"),
            agent_socket: dir.join("qga.sock"),
            pidfile: dir.join("qemu.pid"),
            console_log: dir.join("console.log"),
            serial_socket: dir.join("tty.sock"),
            stderr_log: dir.join("qemu.stderr"),
            seed: dir.join("cidata.img"),
            dir,
        }
    }
}

/// What the runtime keeps about one guest (`guest.json`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct GuestRecord {
    /// Which runtime wrote it (`qemu`).
    pub runtime: String,
    /// The guest's instance.
    pub instance_id: InstanceId,
    /// The spec generation of the last step carried out.
    pub generation: i64,
    /// What the guest was when last known.
    pub actual: Actual,
    /// Why it failed.
    pub detail: Option<String>,
    /// The `boot_generation` of its current (or last attempted) boot.
    pub booted_generation: Option<i64>,
    /// The spec last prepared or booted.
    pub spec: InstanceSpec,
    /// The digest of the root disk's base image (the overlay's backing file).
    pub disk_base: Option<String>,
    /// Digests of the kernel and initrd of the current (or last) boot.
    pub boot_files: BTreeSet<String>,
    /// The exact command line of the current (or last) QEMU.
    pub argv: Vec<String>,
    /// `kvm` or `tcg`.
    pub accelerator: Option<String>,
    /// `q35` or `microvm`.
    pub machine: Option<String>,
    /// QEMU's pid while it runs.
    pub pid: Option<u32>,
    /// The start time of that pid (`/proc/<pid>/stat`), against pid reuse.
    pub pid_start: Option<u64>,
    /// Host CPUs the vCPU threads are pinned to, in vCPU order.
    pub pinned_cpus: Vec<u32>,
}

impl GuestRecord {
    /// Every image digest the guest uses (kept from gc).
    pub fn images(&self) -> BTreeSet<String> {
        let mut all = self.boot_files.clone();
        all.extend(self.disk_base.clone());
        all
    }
}

fn bad(path: &Path, reason: impl ToString) -> RuntimeError {
    RuntimeError::State { path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads a guest's record; `Ok(None)` when it has none.
pub async fn load(path: &Path) -> Result<Option<GuestRecord>, RuntimeError> {
    match tokio::fs::read(path).await {
        Ok(bytes) => {
            let r: GuestRecord = serde_json::from_slice(&bytes).map_err(|e| bad(path, e))?;
            if r.runtime != "qemu" {
                return Err(bad(path, format!("kept by runtime {:?}, not qemu", r.runtime)));
            }
            Ok(Some(r))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(path, e)),
    }
}

/// Replaces a guest's record (0600, atomically).
pub async fn save(path: &Path, record: &GuestRecord) -> Result<(), RuntimeError> {
    let mut text = serde_json::to_vec_pretty(record).map_err(|e| bad(path, e))?;
    text.push(b'\n');
    let target = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_private(&target, &text, false))
        .await
        .map_err(|e| bad(path, e))?
        .map_err(|e| bad(path, e))
}

/// Creates `dir` (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
