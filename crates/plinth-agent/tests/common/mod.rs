//! Helpers shared by the agent's QEMU tests: a built guest image's files read from its
//! manifest, a [`BlobSource`] over them, and a guard that kills a data directory's QEMUs.
#![allow(dead_code)]

use plinth_agent::BlobSource;
use plinth_api::{BlobRef, ImageFormat};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A built guest image: its directory, its files by name (sha256, size) and its kernel
/// command line, from `manifest.json`.
pub struct GuestFiles {
    pub dir: PathBuf,
    pub files: HashMap<String, (String, u64)>,
    pub cmdline: String,
}

impl GuestFiles {
    /// Reads the manifest of the image in `dir`.
    pub fn load(dir: PathBuf) -> GuestFiles {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
                .expect("manifest json");
        let files = manifest["files"]
            .as_object()
            .expect("files")
            .iter()
            .map(|(name, f)| {
                (name.clone(), (f["sha256"].as_str().expect("sha256").to_string(), f["size"].as_u64().expect("size")))
            })
            .collect();
        let cmdline = manifest["cmdline"].as_str().expect("cmdline").to_string();
        GuestFiles { dir, files, cmdline }
    }

    /// The blob of file `name`.
    pub fn blob(&self, name: &str) -> BlobRef {
        let (sha, size) = self.files[name].clone();
        BlobRef { sha256: sha, size_bytes: size, format: ImageFormat::Raw }
    }

    /// Its files by digest (`hard_link`: see [`DirBlobs`]).
    pub fn blobs(&self, hard_link: bool) -> DirBlobs {
        let by_sha = self.files.iter().map(|(name, (sha, _))| (sha.clone(), self.dir.join(name))).collect();
        DirBlobs { by_sha, hard_link }
    }
}

/// Image files by digest, copied out of a directory (or hard-linked, when `hard_link` and
/// the file system allows: for large images the runtime only reads).
pub struct DirBlobs {
    pub by_sha: HashMap<String, PathBuf>,
    pub hard_link: bool,
}

impl BlobSource for DirBlobs {
    fn fetch<'a>(
        &'a self,
        sha256: &'a str,
        dest: &'a Path,
    ) -> plinth_agent::runtime::BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let src = self.by_sha.get(sha256).ok_or_else(|| format!("no blob sha256:{sha256}"))?;
            if self.hard_link {
                let _ = tokio::fs::remove_file(dest).await;
                if tokio::fs::hard_link(src, dest).await.is_ok() {
                    return Ok(());
                }
            }
            tokio::fs::copy(src, dest).await.map(drop).map_err(|e| e.to_string())
        })
    }
}

/// Kills every QEMU of a data directory when a test ends (passed or not): each one whose
/// command line names its pidfile under `<dir>/qemu/`.
pub struct KillGuard(pub PathBuf);

impl Drop for KillGuard {
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.0.join("qemu")) else { return };
        for d in dirs.flatten() {
            let pidfile = d.path().join("qemu.pid");
            let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&pidfile.display().to_string()) {
                // SAFETY: kill(2) on a pid whose cmdline names this test's pidfile.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}
