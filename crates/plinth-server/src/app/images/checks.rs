//! The checks an image file passes before it is kept: disks are read by
//! `qemu-img info --output=json` (raw or qcow2 only; a qcow2 that points at another file
//! — a backing file or an external data file — is refused, since opening it on a host
//! would read that host file into the guest); kernels must look like a kernel (x86
//! bzImage, ELF or arm64 Image); initrds must not be empty.
//!
//! A refusal is a sentence for the image's `failure`. These checks read untrusted files
//! but never execute or mount them; `qemu-img` runs with a time limit.

use plinth_api::{ImageFileRole, ImageFormat};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long `qemu-img info` may take.
const QEMU_IMG_TIMEOUT: Duration = Duration::from_secs(60);

/// What a check learnt about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub format: ImageFormat,
    /// For disks: the size the guest sees.
    pub virtual_size: Option<u64>,
}

/// Checks a file for `role`; Err says why it is refused.
pub async fn check(role: ImageFileRole, path: &Path, size: u64) -> Result<Checked, String> {
    match role {
        ImageFileRole::Disk => disk(path).await,
        ImageFileRole::Kernel => kernel(path).await,
        ImageFileRole::Initrd if size == 0 => Err("the initrd is empty".into()),
        ImageFileRole::Initrd => Ok(Checked { format: ImageFormat::Raw, virtual_size: None }),
    }
}

/// Reads `qemu-img info`'s answer about a disk.
pub fn disk_info(info: &serde_json::Value) -> Result<Checked, String> {
    let format = info["format"].as_str().unwrap_or("unknown");
    let format = match format {
        "raw" => ImageFormat::Raw,
        "qcow2" => ImageFormat::Qcow2,
        other => return Err(format!("format {other} is not supported (disks must be raw or qcow2)")),
    };
    for key in ["backing-filename", "full-backing-filename"] {
        if let Some(b) = info[key].as_str() {
            return Err(format!(
                "a qcow2 with a backing file ({b:?}) is refused: on a host it would read that file into the guest"
            ));
        }
    }
    if let Some(d) = info["format-specific"]["data"]["data-file"].as_str() {
        return Err(format!(
            "a qcow2 with an external data file ({d:?}) is refused: on a host it would read that file into the guest"
        ));
    }
    let virtual_size = info["virtual-size"].as_u64().ok_or("qemu-img did not report a virtual size")?;
    if virtual_size == 0 {
        return Err("the disk is empty (virtual size 0)".into());
    }
    Ok(Checked { format, virtual_size: Some(virtual_size) })
}

async fn disk(path: &Path) -> Result<Checked, String> {
    let run = tokio::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .output();
    let out = match tokio::time::timeout(QEMU_IMG_TIMEOUT, run).await {
        Err(_) => return Err("qemu-img info did not finish in 60 s".into()),
        Ok(Err(e)) => return Err(format!("cannot run qemu-img (is qemu-utils installed on the server?): {e}")),
        Ok(Ok(o)) => o,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().rsplit(": ").next().unwrap_or("").to_string();
        return Err(format!("qemu-img cannot read the disk: {err}"));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("qemu-img info answered no JSON: {e}"))?;
    disk_info(&info)
}

/// Whether the first bytes of a file look like a kernel QEMU can load directly.
pub fn looks_like_kernel(head: &[u8]) -> bool {
    let elf = head.starts_with(b"\x7fELF");
    let bzimage = head.get(0x202..0x206) == Some(b"HdrS");
    let arm64 = head.get(0x38..0x3c) == Some(b"ARM\x64");
    elf || bzimage || arm64
}

async fn kernel(path: &Path) -> Result<Checked, String> {
    let mut head = Vec::with_capacity(4096);
    let f = tokio::fs::File::open(path).await.map_err(|e| format!("cannot read the kernel: {e}"))?;
    f.take(4096).read_to_end(&mut head).await.map_err(|e| format!("cannot read the kernel: {e}"))?;
    if looks_like_kernel(&head) {
        Ok(Checked { format: ImageFormat::Raw, virtual_size: None })
    } else {
        Err("the kernel is not a bzImage, an ELF file or an arm64 Image".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn disk_formats_and_references_are_checked() {
        let ok = disk_info(&json!({ "format": "qcow2", "virtual-size": 1048576 })).unwrap();
        assert_eq!(ok, Checked { format: ImageFormat::Qcow2, virtual_size: Some(1048576) });
        assert_eq!(
            disk_info(&json!({ "format": "vmdk", "virtual-size": 1 })).unwrap_err(),
            "format vmdk is not supported (disks must be raw or qcow2)"
        );
        let backed = json!({ "format": "qcow2", "virtual-size": 1, "backing-filename": "/etc/shadow" });
        assert!(disk_info(&backed).unwrap_err().contains("backing file"));
        let data = json!({ "format": "qcow2", "virtual-size": 1,
            "format-specific": { "type": "qcow2", "data": { "data-file": "/dev/sda" } } });
        assert!(disk_info(&data).unwrap_err().contains("data file"));
        assert!(disk_info(&json!({ "format": "raw", "virtual-size": 0 })).is_err());
    }

    #[test]
    fn kernels_are_recognised_by_their_magic() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(looks_like_kernel(&bz));
        assert!(looks_like_kernel(b"\x7fELF\x02\x01\x01"));
        let mut arm = vec![0u8; 0x40];
        arm[0x38..0x3c].copy_from_slice(b"ARM\x64");
        assert!(looks_like_kernel(&arm));
        assert!(!looks_like_kernel(&[0u8; 4096]));
        assert!(!looks_like_kernel(b"#!/bin/sh"));
    }
}
