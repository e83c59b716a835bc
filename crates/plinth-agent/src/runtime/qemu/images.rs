//! Image files and guest disks.
//!
//! The cache: `{data_dir}/images/sha256/<hex>`, one file per content digest, fetched
//! through the [`BlobSource`] the runner attached, written to a temporary file beside it,
//! SHA-256 (and size) checked, then renamed into place, so a file under its digest's name
//! is always whole and right. Concurrent fetches of one digest are coalesced (one fetch,
//! the others wait for it). [`ImageCache::gc`] removes files no guest uses; a digest a
//! step is working with is pinned ([`ImageCache::pin`]) so gc cannot take it between the
//! fetch and the guest's record naming it.
//!
//! Disks: a guest's root disk is a qcow2 overlay on a cached base (`qemu-img create -f
//! qcow2 -F <fmt> -b <base>`), grown to the shape's size, or a blank qcow2 when the image
//! has no disk. Owns files and `qemu-img`; knows nothing of QEMU processes.

use crate::runtime::BlobSource;
use plinth_api::{BlobRef, ImageFormat};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const GIB: u64 = 1 << 30;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `s` is a lowercase hex SHA-256 (and so safe as a file name).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The content-addressed image cache.
pub struct ImageCache {
    dir: PathBuf,
    /// One lock per digest being fetched.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Digests steps are working with, with how many hold each.
    pins: Arc<Mutex<HashMap<String, usize>>>,
    /// An unused file is kept this long after its last use (a guest created again soon
    /// after one was deleted does not fetch and check the image again).
    keep: std::time::Duration,
}

/// Digests kept from gc while this lives.
pub struct Pin {
    pins: Arc<Mutex<HashMap<String, usize>>>,
    digests: Vec<String>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = lock(&self.pins);
        for d in &self.digests {
            if let Some(n) = pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(d);
                }
            }
        }
    }
}

impl ImageCache {
    /// The cache under `{data_dir}/images/sha256` (created on first fetch).
    pub fn new(data_dir: &Path) -> ImageCache {
        ImageCache::keeping(data_dir, std::time::Duration::ZERO)
    }

    /// A cache whose unused files are kept `keep` after their last use.
    pub fn keeping(data_dir: &Path, keep: std::time::Duration) -> ImageCache {
        ImageCache {
            dir: data_dir.join("images").join("sha256"),
            fetching: Mutex::new(HashMap::new()),
            pins: Arc::new(Mutex::new(HashMap::new())),
            keep,
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file of `sha256` is (whether or not it is there).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Keeps `digests` from gc until the answer is dropped.
    pub fn pin(&self, digests: impl IntoIterator<Item = String>) -> Pin {
        let digests: Vec<String> = digests.into_iter().collect();
        let mut pins = lock(&self.pins);
        for d in &digests {
            *pins.entry(d.clone()).or_default() += 1;
        }
        Pin { pins: self.pins.clone(), digests }
    }

    /// The cached file of `blob`, fetched from `blobs` and checked first if it is not
    /// cached yet. Answers why it could not be had.
    pub async fn ensure(&self, blobs: Option<&dyn BlobSource>, blob: &BlobRef) -> Result<PathBuf, String> {
        let sha = blob.sha256.as_str();
        if !is_sha256_hex(sha) {
            return Err(format!("image file digest {sha:?} is not a lowercase hex SHA-256"));
        }
        let path = self.path(sha);
        let gate = lock(&self.fetching).entry(sha.to_string()).or_default().clone();
        let held = gate.lock().await;
        let result = self.fetch_locked(blobs, blob, &path).await;
        drop(held);
        {
            let mut map = lock(&self.fetching);
            // The map's entry and ours: nobody else waits for it.
            if map.get(sha).is_some_and(|g| Arc::strong_count(g) <= 2) {
                map.remove(sha);
            }
        }
        result.map(|()| path)
    }

    async fn fetch_locked(&self, blobs: Option<&dyn BlobSource>, blob: &BlobRef, path: &Path) -> Result<(), String> {
        if tokio::fs::try_exists(path).await.unwrap_or(false) {
            // Used now: its keep period starts again.
            let p = path.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || {
                std::fs::File::options().write(true).open(&p)?.set_modified(std::time::SystemTime::now())
            })
            .await;
            return Ok(());
        }
        let Some(blobs) = blobs else {
            return Err(format!("image file sha256:{} is not cached and no blob source is attached yet", blob.sha256));
        };
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".{}.{}.tmp", blob.sha256, std::process::id()));
        let fetched = blobs.fetch(&blob.sha256, &tmp).await;
        let checked = match fetched {
            Ok(()) => verify(&tmp, &blob.sha256, blob.size_bytes).await,
            Err(e) => Err(format!("fetching image file sha256:{}: {e}", blob.sha256)),
        };
        if let Err(e) = checked {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, path).await.map_err(|e| format!("{}: {e}", path.display()))?;
        tracing::info!(sha256 = %blob.sha256, bytes = blob.size_bytes, "qemu: image file fetched and checked");
        Ok(())
    }

    /// Removes cached files whose digest is not in `in_use`, not pinned and not used within
    /// the keep period (and stale temporaries of fetches no longer running). Answers the digests removed.
    pub async fn gc(&self, in_use: &BTreeSet<String>) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else { return removed };
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            let busy = || lock(&self.pins).contains_key(&name) || lock(&self.fetching).contains_key(&name);
            if is_sha256_hex(&name) {
                if in_use.contains(&name) || busy() {
                    continue;
                }
                let recent = e
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < self.keep);
                if recent {
                    continue;
                }
            } else if let Some(digest) = name.strip_prefix('.').and_then(|n| n.split('.').next()) {
                // A temporary: only when no fetch of its digest runs.
                if lock(&self.fetching).contains_key(digest) {
                    continue;
                }
            } else {
                continue;
            }
            match tokio::fs::remove_file(e.path()).await {
                Ok(()) => {
                    tracing::info!(file = %name, "qemu: removed an image file no guest uses");
                    removed.push(name);
                }
                Err(err) => tracing::warn!(file = %name, "qemu: could not remove an unused image file: {err}"),
            }
        }
        removed
    }
}

/// Checks the SHA-256 and size of `path`.
async fn verify(path: &Path, want: &str, size: u64) -> Result<(), String> {
    let path = path.to_path_buf();
    let want = want.to_string();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if got != want {
            return Err(format!("image file sha256:{want} failed its check: the fetched bytes hash to {got}"));
        }
        if size != 0 && total != size {
            return Err(format!("image file sha256:{want}: fetched {total} bytes, expected {size}"));
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("checking image file: {e}"))?
}

/// Runs `qemu-img` with `args`; answers its stdout or why it failed.
async fn qemu_img(bin: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("qemu-img {} failed ({}): {}", args.first().unwrap_or(&""), out.status, err.trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The size the guest sees of the disk image at `path` (`qemu-img info`'s virtual size).
pub async fn virtual_size(bin: &Path, path: &Path, format: ImageFormat) -> Result<u64, String> {
    let p = path.display().to_string();
    let out = qemu_img(bin, &["info", "--output=json", "-f", format.as_str(), &p]).await?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("qemu-img info {p}: {e}"))?;
    v.get("virtual-size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| format!("qemu-img info {p}: no virtual-size"))
}

/// Makes the guest's root disk at `overlay`: a qcow2 overlay of `base` grown to
/// `disk_gib` GiB, or a blank qcow2 of that size. Refuses a base bigger than the shape's
/// disk. Written to a temporary and renamed, so `overlay` is whole when it exists.
pub async fn create_disk(
    bin: &Path,
    base: Option<(&Path, ImageFormat)>,
    overlay: &Path,
    disk_gib: u64,
) -> Result<(), String> {
    if disk_gib == 0 {
        return Err("the shape's disk size is 0 GiB: no root disk can be made".into());
    }
    let size = disk_gib.checked_mul(GIB).ok_or_else(|| format!("disk size {disk_gib} GiB is too big"))?;
    let tmp = overlay.with_file_name(".disk.qcow2.tmp");
    let t = tmp.display().to_string();
    let size_arg = format!("{disk_gib}G");
    match base {
        Some((base, format)) => {
            let have = virtual_size(bin, base, format).await?;
            if have > size {
                return Err(format!(
                    "the image's disk is {:.1} GiB, bigger than the shape's {disk_gib} GiB disk: pick a shape with a disk of at least {} GiB",
                    have as f64 / GIB as f64,
                    have.div_ceil(GIB)
                ));
            }
            let b = base.display().to_string();
            qemu_img(bin, &["create", "-q", "-f", "qcow2", "-F", format.as_str(), "-b", &b, &t, &size_arg]).await?;
        }
        None => {
            qemu_img(bin, &["create", "-q", "-f", "qcow2", &t, &size_arg]).await?;
        }
    }
    tokio::fs::rename(&tmp, overlay).await.map_err(|e| format!("{}: {e}", overlay.display()))
}

/// Grows the guest's root disk (a qcow2) to `disk_gib` GiB; never shrinks it.
pub async fn grow_disk(bin: &Path, disk: &Path, disk_gib: u64) -> Result<(), String> {
    let size = disk_gib.checked_mul(GIB).ok_or_else(|| format!("disk size {disk_gib} GiB is too big"))?;
    if virtual_size(bin, disk, ImageFormat::Qcow2).await? >= size {
        return Ok(());
    }
    let d = disk.display().to_string();
    qemu_img(bin, &["resize", "-q", "-f", "qcow2", &d, &format!("{disk_gib}G")]).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::BoxFuture;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Mem {
        data: Vec<u8>,
        calls: AtomicU32,
    }

    impl BlobSource for Mem {
        fn fetch<'a>(&'a self, _sha256: &'a str, dest: &'a Path) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                tokio::fs::write(dest, &self.data).await.map_err(|e| e.to_string())
            })
        }
    }

    #[tokio::test]
    async fn unused_files_are_kept_for_the_keep_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ImageCache::keeping(dir.path(), std::time::Duration::from_secs(3600));
        let data = b"initrd bytes".to_vec();
        let sha = hex::encode(Sha256::digest(&data));
        let src = Mem { data: data.clone(), calls: AtomicU32::new(0) };
        let blob = BlobRef { sha256: sha.clone(), size_bytes: data.len() as u64, format: ImageFormat::Raw };
        cache.ensure(Some(&src), &blob).await.expect("fetched");
        assert!(cache.gc(&BTreeSet::new()).await.is_empty(), "used a moment ago: kept");
        cache.ensure(Some(&src), &blob).await.expect("cached");
        assert_eq!(src.calls.load(Ordering::SeqCst), 1, "a kept file is not fetched again");
        // Last used two hours ago: collected.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options().write(true).open(cache.path(&sha)).unwrap().set_modified(old).unwrap();
        assert_eq!(cache.gc(&BTreeSet::new()).await, vec![sha]);
    }

    #[tokio::test]
    async fn fetches_are_checked_coalesced_and_collected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ImageCache::new(dir.path());
        let data = b"kernel bytes".to_vec();
        let sha = hex::encode(Sha256::digest(&data));
        let src = Mem { data: data.clone(), calls: AtomicU32::new(0) };
        let blob = BlobRef { sha256: sha.clone(), size_bytes: data.len() as u64, format: ImageFormat::Raw };
        let (a, b) = tokio::join!(cache.ensure(Some(&src), &blob), cache.ensure(Some(&src), &blob));
        assert_eq!(a.expect("a"), cache.path(&sha));
        assert_eq!(b.expect("b"), cache.path(&sha));
        assert_eq!(src.calls.load(Ordering::SeqCst), 1, "one fetch for two callers");

        // A wrong digest is refused and leaves nothing.
        let bad = BlobRef { sha256: "0".repeat(64), size_bytes: 0, format: ImageFormat::Raw };
        let e = cache.ensure(Some(&src), &bad).await.expect_err("bad digest");
        assert!(e.contains("failed its check"), "{e}");
        assert!(!cache.path(&bad.sha256).exists());
        assert!(cache.ensure(Some(&src), &BlobRef { sha256: "../x".into(), ..bad }).await.is_err());

        // gc keeps what is used or pinned, removes the rest.
        let pin = cache.pin([sha.clone()]);
        assert!(cache.gc(&BTreeSet::new()).await.is_empty());
        drop(pin);
        assert!(cache.gc(&BTreeSet::from([sha.clone()])).await.is_empty());
        assert_eq!(cache.gc(&BTreeSet::new()).await, vec![sha.clone()]);
        assert!(!cache.path(&sha).exists());
    }
}
