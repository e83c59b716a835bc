//! One host's volume pool: a directory on a filesystem that overwrites in place (ext2/3/4,
//! XFS, tmpfs; copy-on-write ones such as btrfs or ZFS are refused: a wipe there writes
//! new blocks and leaves the old ones), holding `<volume id>.qcow2` per volume.
//!
//! [`VolumePool::converge`] makes the files the spec wants (`<id>.qcow2.part` first,
//! renamed once complete, so a crash never leaves a half-made volume under its name),
//! grows those smaller than their spec (never shrinks one),
//! wipes and removes those it no longer wants, and reports each. A wipe's byte count is
//! kept in `<id>.wiped` until the server no longer lists the volume, so a report lost to a
//! crash is sent again with it.

use super::{qcow2, wipe};
use plinth_api::{
    BlobRef, ObservedFreeze, ObservedVolume, ObservedVolumeState, SourceChain, VolumeId, VolumePoolInventory,
    VolumeSpec, WipeMethod,
};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Filesystems whose writes land in place (`statfs` magic numbers).
const IN_PLACE: [(i64, &str); 3] = [(0xEF53, "ext4"), (0x5846_5342, "xfs"), (0x0102_1994, "tmpfs")];
/// Filesystems named when refused.
const COPY_ON_WRITE: [(i64, &str); 3] = [(0x9123_683E, "btrfs"), (0x2FC1_2FC1, "zfs"), (0x794C_7630, "overlayfs")];

/// A volume pool directory.
#[derive(Clone, Debug)]
pub struct VolumePool {
    dir: PathBuf,
    filesystem: &'static str,
    /// Where an image a volume is filled from is fetched to (not the pool's filesystem:
    /// nothing but volumes goes there).
    scratch: PathBuf,
}

fn statfs(dir: &Path) -> std::io::Result<libc::statfs> {
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("a NUL in the path"))?;
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statfs buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

impl VolumePool {
    /// Opens (making it, mode 0700) the pool at `dir`; refused on a filesystem that does
    /// not overwrite in place.
    pub fn open(dir: &Path) -> Result<VolumePool, String> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).map_err(|e| format!("volume pool {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("volume pool {}: {e}", dir.display()))?;
        let magic = statfs(dir).map_err(|e| format!("volume pool {}: statfs: {e}", dir.display()))?.f_type as i64;
        if let Some((_, name)) = IN_PLACE.iter().find(|(m, _)| *m == magic) {
            return Ok(VolumePool { dir: dir.to_path_buf(), filesystem: name, scratch: std::env::temp_dir() });
        }
        let what = COPY_ON_WRITE
            .iter()
            .find(|(m, _)| *m == magic)
            .map(|(_, n)| format!("{n}, a copy-on-write filesystem"))
            .unwrap_or_else(|| format!("filesystem type {magic:#x}"));
        Err(format!(
            "volume pool {}: {what}: a wipe must overwrite the blocks a volume's data is on, which only ext4, XFS \
             and tmpfs are known to do",
            dir.display()
        ))
    }

    /// Images volumes are filled from are fetched into `dir` (made 0700 when needed).
    pub fn with_scratch(mut self, dir: PathBuf) -> VolumePool {
        self.scratch = dir;
        self
    }

    /// The pool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pool as the inventory reports it.
    pub fn inventory(&self) -> VolumePoolInventory {
        let (capacity, free) = statfs(&self.dir)
            .map(|s| {
                let bs = s.f_bsize as u64;
                (s.f_blocks * bs, s.f_bavail * bs)
            })
            .unwrap_or((0, 0));
        VolumePoolInventory {
            path: self.dir.display().to_string(),
            filesystem: self.filesystem.to_string(),
            capacity_bytes: capacity,
            free_bytes: free,
        }
    }

    /// The file of volume `id`.
    pub fn file(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}.qcow2"))
    }

    fn part(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}.qcow2.part"))
    }

    fn wiped(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{id}.wiped"))
    }

    /// Brings the pool to `specs`, asking `key` for an encrypted volume's key when it
    /// must be made or grown, telling `wiping` (before it starts) of each volume it is about
    /// to wipe, and answers each volume's report.
    pub fn converge(
        &self,
        specs: &[VolumeSpec],
        key: &dyn Fn(&VolumeId) -> Result<String, String>,
        wiping: &dyn Fn(ObservedVolume),
    ) -> Vec<ObservedVolume> {
        let no_images = |b: &BlobRef, _: &Path| Err(format!("no image source to fetch {} from", b.sha256));
        self.converge_open(specs, &BTreeSet::new(), key, wiping, &no_images)
    }

    /// [`VolumePool::converge`], leaving alone the files of `open` (volumes a running
    /// guest has open: QEMU holds their lock, and grows them itself with
    /// `block_resize`): one still smaller than its spec is not reported until it has
    /// grown. `fetch` writes an image file a volume is filled from to a path.
    pub fn converge_open(
        &self,
        specs: &[VolumeSpec],
        open: &BTreeSet<VolumeId>,
        key: &dyn Fn(&VolumeId) -> Result<String, String>,
        wiping: &dyn Fn(ObservedVolume),
        fetch: &dyn Fn(&BlobRef, &Path) -> Result<(), String>,
    ) -> Vec<ObservedVolume> {
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            if VolumeId::parse(s.volume_id.as_str()).is_none() {
                // Its name becomes a file name: nothing but a volume id is taken.
                tracing::warn!(volume = %s.volume_id, "a volume spec whose id is not a volume id; ignored");
                continue;
            }
            let report =
                |state, detail: Option<String>, allocated: Option<u64>, overwritten: Option<u64>| ObservedVolume {
                    volume_id: s.volume_id.clone(),
                    generation: s.generation,
                    state,
                    detail,
                    allocated_bytes: allocated,
                    bytes_overwritten: overwritten,
                    freezes: match state {
                        ObservedVolumeState::Present => self.freezes(s),
                        _ => Vec::new(),
                    },
                };
            if s.present && open.contains(&s.volume_id) {
                let file = self.file(&s.volume_id);
                // Layers its guest's host merged live: wiped here. Any other layer not in
                // the spec (one being merged live) holds the report back.
                let want: Vec<String> = s.layers.iter().map(|l| l.file(&s.volume_id)).collect();
                let mut settled = true;
                for name in self.layer_files(&s.volume_id).into_iter().filter(|n| !want.contains(n)) {
                    if !name.ends_with(".merged") {
                        settled &= name.ends_with(".part");
                        continue;
                    }
                    match self.wipe_file(s.wipe, &self.dir.join(&name)) {
                        Ok(n) => tracing::info!(volume = %s.volume_id, layer = %name, bytes_overwritten = n,
                            "a layer merged live wiped and removed"),
                        Err(e) => {
                            tracing::warn!(volume = %s.volume_id, layer = %name, "wiping a layer merged live: {e}");
                            settled = false;
                        }
                    }
                }
                if !settled {
                    continue;
                }
                // The guest's host adds a snapshot's layer live; until it has, not present.
                let top = s.layers.last().map(|l| self.dir.join(l.file(&s.volume_id))).unwrap_or(file.clone());
                match qcow2::virtual_size(&top) {
                    Ok(now) if now >= s.size_bytes => {
                        let allocated = allocated(&file).ok();
                        out.push(report(ObservedVolumeState::Present, None, allocated, None));
                    }
                    Ok(_) => tracing::debug!(volume = %s.volume_id, "open by a running guest and not grown yet"),
                    Err(_) if !top.exists() => {
                        // The guest's host writes why it could not add the layer beside it.
                        let failed = top.with_extension("qcow2.failed");
                        if let Ok(why) = std::fs::read_to_string(&failed) {
                            out.push(report(ObservedVolumeState::Failed, Some(why), None, None));
                        }
                    }
                    Err(e) => tracing::warn!(volume = %s.volume_id, "open by a running guest: {e}"),
                }
                continue;
            }
            let r = if s.present {
                match self.make(s, key, fetch) {
                    Ok(allocated) => report(ObservedVolumeState::Present, None, Some(allocated), None),
                    Err(e) => report(ObservedVolumeState::Failed, Some(e), None, None),
                }
            } else {
                if self.part(&s.volume_id).exists() || self.file(&s.volume_id).exists() {
                    wiping(report(ObservedVolumeState::Wiping, None, None, None));
                }
                match self.destroy(s) {
                    Ok(n) => report(ObservedVolumeState::Absent, None, None, n),
                    Err(e) => report(ObservedVolumeState::Failed, Some(e), None, None),
                }
            };
            if r.state == ObservedVolumeState::Failed {
                tracing::warn!(volume = %s.volume_id, error = r.detail.as_deref().unwrap_or_default(), "volume");
            }
            out.push(r);
        }
        self.forget_others(specs);
        out
    }

    /// Makes the volume's file unless it exists; answers the bytes it takes.
    fn make(
        &self,
        s: &VolumeSpec,
        key: &dyn Fn(&VolumeId) -> Result<String, String>,
        fetch: &dyn Fn(&BlobRef, &Path) -> Result<(), String>,
    ) -> Result<u64, String> {
        let file = self.file(&s.volume_id);
        if !file.exists() {
            let part = self.part(&s.volume_id);
            let _ = std::fs::remove_file(&part);
            let k = if s.encrypted { Some(key(&s.volume_id)?) } else { None };
            match (&s.source, &s.source_chain) {
                (Some(src), _) => self.fill(s, src, &part, k.as_deref(), fetch)?,
                (None, Some(chain)) => self.copy_chain(s, chain, &part, k.as_deref(), key)?,
                (None, None) => qcow2::create(&part, s.size_bytes, k.as_deref())?,
            }
            drop(k);
            self.publish(&part, &file)?;
            tracing::info!(volume = %s.volume_id, bytes = s.size_bytes, encrypted = s.encrypted, "volume made");
        }
        self.sync_layers(s, key)?;
        let chain = self.chain_files(s);
        let chain: Vec<&Path> = chain.iter().map(PathBuf::as_path).collect();
        let top = chain[chain.len() - 1];
        {
            let now = qcow2::virtual_size(top)?;
            if now < s.size_bytes {
                let k = if s.encrypted { Some(key(&s.volume_id)?) } else { None };
                qcow2::resize_chain(&chain, s.size_bytes, k.as_deref())?;
                drop(k);
                tracing::info!(volume = %s.volume_id, from = now, to = s.size_bytes, "volume grown");
            } else if now > s.size_bytes {
                // Never shrunk: the guest's filesystem may use every block of it.
                return Err(format!(
                    "the file holds {now} bytes, more than the {} asked for; volumes only grow",
                    s.size_bytes
                ));
            }
        }
        let mut total = 0;
        for f in &chain {
            total += allocated(f).map_err(|e| format!("{}: {e}", f.display()))?;
        }
        Ok(total)
    }

    /// Makes the next layer of volumes ahead (an empty layer over the current top, at the
    /// volume's size: `<id>.next.qcow2`), so a snapshot is a rename, not a `qemu-img
    /// create` (which for an encrypted layer spends about 2 s calibrating PBKDF2). A spare
    /// no longer over the top, or of another size, is wiped and made again. Only encrypted
    /// volumes get one (an unencrypted layer takes `qemu-img create` a few ms). Makes at
    /// most `encrypted_budget` (the rest at later runs); answers how many it made. Runs
    /// beside pool passes: spares are put in place, taken and wiped under one lock.
    pub fn make_spares(
        &self,
        specs: &[VolumeSpec],
        key: &dyn Fn(&VolumeId) -> Result<String, String>,
        encrypted_budget: usize,
    ) -> usize {
        let mut made = 0;
        let mut encrypted = 0;
        for s in specs.iter().filter(|s| s.present && s.encrypted && VolumeId::parse(s.volume_id.as_str()).is_some()) {
            if !self.file(&s.volume_id).exists() {
                continue;
            }
            let (spare, lower) = (spare_file(&self.dir, &s.volume_id), self.top_existing(s));
            let fits = |p: &Path| qcow2::layer_info(p).ok() == Some((s.size_bytes, Some(lower.clone())));
            {
                let _held = lock_spares();
                if spare.exists() && fits(&spare) {
                    continue;
                }
                if spare.exists() {
                    match self.wipe_file(s.wipe, &spare) {
                        Ok(_) => tracing::debug!(volume = %s.volume_id, "a stale spare layer wiped"),
                        Err(e) => {
                            tracing::warn!(volume = %s.volume_id, "wiping a stale spare layer: {e}");
                            continue;
                        }
                    }
                }
            }
            if encrypted >= encrypted_budget {
                continue;
            }
            let part = spare.with_extension("qcow2.part");
            let k = match s.encrypted.then(|| key(&s.volume_id)).transpose() {
                Ok(k) => k,
                Err(e) => {
                    tracing::debug!(volume = %s.volume_id, "no key for a spare layer: {e}");
                    continue;
                }
            };
            encrypted += 1;
            let _ = std::fs::remove_file(&part);
            if let Err(e) = qcow2::create_layer(&part, &lower, s.size_bytes, k.as_deref()) {
                tracing::warn!(volume = %s.volume_id, "making a spare layer: {e}");
                continue;
            }
            drop(k);
            // Put in place only if the top did not move meanwhile (a snapshot taken) and the
            // volume is still there (a pass may have wiped it).
            let _held = lock_spares();
            if self.file(&s.volume_id).exists() && self.top_existing(s) == lower && !spare.exists() {
                let _ = std::fs::rename(&part, &spare);
                made += 1;
            } else {
                let _ = self.wipe_file(s.wipe, &part);
            }
        }
        made
    }

    /// The name of the top file of the volume's chain that exists now (the spec's layers
    /// up to the first not made yet).
    fn top_existing(&self, s: &VolumeSpec) -> String {
        let mut top = format!("{}.qcow2", s.volume_id);
        for l in &s.layers {
            let name = l.file(&s.volume_id);
            if !self.dir.join(&name).exists() {
                break;
            }
            top = name;
        }
        top
    }

    /// Puts the finished file `part` in place as `path`: synced, renamed, the directory
    /// synced, so a crash leaves either no file under the name or the whole one.
    fn publish(&self, part: &Path, path: &Path) -> Result<(), String> {
        std::fs::File::open(part)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(part, path))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The files of the volume's chain as its spec wants it, bottom first.
    fn chain_files(&self, s: &VolumeSpec) -> Vec<PathBuf> {
        let mut out = vec![self.file(&s.volume_id)];
        out.extend(s.layers.iter().map(|l| self.dir.join(l.file(&s.volume_id))));
        out
    }

    /// The layer files of volume `id` in the pool (made or half made), by name.
    fn layer_files(&self, id: &VolumeId) -> Vec<String> {
        let prefix = format!("{id}+");
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.starts_with(&prefix)
                    && (n.ends_with(".qcow2") || n.ends_with(".qcow2.part") || n.ends_with(".qcow2.merged"))
            })
            .collect();
        out.sort();
        out
    }

    /// Brings the volume's chain of layers to its spec: a layer no longer listed is merged
    /// into the one below (`qemu-img commit`; the one above renamed onto that) and wiped, a
    /// layer replaced by a new revision (a revert) is wiped unmerged, and a listed layer not
    /// made yet is made over the one below it.
    fn sync_layers(&self, s: &VolumeSpec, key: &dyn Fn(&VolumeId) -> Result<String, String>) -> Result<(), String> {
        let id = &s.volume_id;
        let base = self.file(id);
        let want: Vec<String> = s.layers.iter().map(|l| l.file(id)).collect();
        let have = self.layer_files(id);
        let stale: Vec<&String> = have.iter().filter(|n| !want.contains(n)).collect();
        let missing = want.iter().any(|n| !have.contains(n));
        if stale.is_empty() && !missing {
            return Ok(());
        }
        let k = if s.encrypted { Some(key(id)?) } else { None };
        let base_name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for name in stale {
            let path = self.dir.join(name);
            // A revert: the snapshot is still listed, at a new revision: what was written
            // after it is dropped, not merged. A half-made layer is dropped too.
            let reverted = s.layers.iter().any(|l| name.starts_with(&format!("{id}+{}.", l.snapshot_id)));
            // Merged live already (its guest's host renamed it so): only wiped.
            let merged = name.ends_with(".merged");
            if !reverted && !merged && !name.ends_with(".part") {
                let lower = qcow2::backing_of(&path)?.unwrap_or_else(|| base_name.clone());
                let lower_path = self.dir.join(&lower);
                // The layers above it (now or after a crash mid-merge: those naming it).
                let uppers: Vec<String> = self
                    .layer_files(id)
                    .into_iter()
                    .filter(|n| n != name && !n.ends_with(".part"))
                    .filter(|n| qcow2::backing_of(&self.dir.join(n)).ok().flatten().as_deref() == Some(name.as_str()))
                    .collect();
                // Again after a crash mid-merge: the same data lands on the same clusters.
                qcow2::commit(&[lower_path.as_path(), path.as_path()], k.as_deref())?;
                for u in uppers {
                    qcow2::rebase_unsafe(&self.dir.join(&u), &lower, k.as_deref())?;
                }
                tracing::info!(volume = %id, layer = %name, into = %lower, "snapshot layer merged down");
            }
            let n = self.wipe_file(s.wipe, &path)?;
            tracing::info!(volume = %id, layer = %name, bytes_overwritten = n, reverted, "snapshot layer wiped and removed");
        }
        let mut lower = base_name;
        for name in &want {
            let path = self.dir.join(name);
            if !path.exists() && take_spare(&self.dir, id, &lower, s.size_bytes, &path) {
                tracing::info!(volume = %id, layer = %name, over = %lower, "snapshot layer made (the spare made ahead)");
            } else if !path.exists() {
                let part = self.dir.join(format!("{name}.part"));
                qcow2::create_layer(&part, &lower, s.size_bytes, k.as_deref())?;
                self.publish(&part, &path)?;
                tracing::info!(volume = %id, layer = %name, over = %lower, "snapshot layer made");
            }
            lower = name.clone();
        }
        Ok(())
    }

    /// Makes `part` from the chain `src` of another volume of this pool (a snapshot's
    /// content), opened with that volume's key, under this volume's `key`; grown to its size.
    fn copy_chain(
        &self,
        s: &VolumeSpec,
        src: &SourceChain,
        part: &Path,
        k: Option<&str>,
        key: &dyn Fn(&VolumeId) -> Result<String, String>,
    ) -> Result<(), String> {
        let mut files = vec![self.file(&src.volume_id)];
        files.extend(src.layers.iter().map(|l| self.dir.join(l.file(&src.volume_id))));
        let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let src_key = if src.encrypted { Some(key(&src.volume_id)?) } else { None };
        qcow2::convert_chain(&files, src_key.as_deref(), part, k)?;
        drop(src_key);
        if qcow2::virtual_size(part)? < s.size_bytes {
            qcow2::resize(part, s.size_bytes, k)?;
        }
        tracing::info!(volume = %s.volume_id, from = %src.volume_id, layers = src.layers.len(), "volume filled from a snapshot");
        Ok(())
    }

    /// Wipes one file of a volume by `method` and removes it; answers the bytes overwritten.
    fn wipe_file(&self, method: WipeMethod, path: &Path) -> Result<u64, String> {
        let io = |e: std::io::Error| format!("{}: {e}", path.display());
        if !path.exists() {
            return Ok(0);
        }
        let n = match method {
            WipeMethod::Crypto => match qcow2::crypto_header(path).map_err(io)? {
                // The encryption header (the file's master key, in slots the volume key
                // opens) and the qcow2 header.
                Some((off, len)) => {
                    wipe::overwrite_range(path, off, len).map_err(io)?
                        + wipe::overwrite_range(path, 0, 64 * 1024).map_err(io)?
                }
                // Not encrypted after all: only overwriting everything is a wipe.
                None => wipe::overwrite_all(path).map_err(io)?,
            },
            WipeMethod::Overwrite => wipe::overwrite_all(path).map_err(io)?,
        };
        wipe::remove(path).map_err(io)?;
        Ok(n)
    }

    /// Makes `part` from the image file `src` (fetched to the scratch directory, its
    /// digest checked, removed after), grown to the volume's size.
    fn fill(
        &self,
        s: &VolumeSpec,
        src: &BlobRef,
        part: &Path,
        key: Option<&str>,
        fetch: &dyn Fn(&BlobRef, &Path) -> Result<(), String>,
    ) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.scratch)
            .map_err(|e| format!("{}: {e}", self.scratch.display()))?;
        let tmp = self.scratch.join(format!("{}.source", s.volume_id));
        let made = (|| {
            fetch(src, &tmp).map_err(|e| format!("fetching image disk {}: {e}", src.sha256))?;
            let got = sha256_of(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            if got != src.sha256 {
                return Err(format!("image disk {} arrived with digest {got}", src.sha256));
            }
            qcow2::convert(&tmp, src.format.as_str(), part, key)?;
            if qcow2::virtual_size(part)? < s.size_bytes {
                qcow2::resize(part, s.size_bytes, key)?;
            }
            tracing::info!(volume = %s.volume_id, image = %src.sha256, "volume filled from an image");
            Ok(())
        })();
        let _ = std::fs::remove_file(&tmp);
        made
    }

    /// Wipes and removes the volume's file (and any half-made one); answers the bytes
    /// overwritten (`None`: there was nothing to wipe and no record of a wipe).
    fn destroy(&self, s: &VolumeSpec) -> Result<Option<u64>, String> {
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        let mut total = None;
        let spare = spare_file(&self.dir, &s.volume_id);
        let spares = [spare.with_extension("qcow2.part"), spare];
        let mut files = vec![self.part(&s.volume_id), self.file(&s.volume_id)];
        files.extend(self.layer_files(&s.volume_id).into_iter().map(|n| self.dir.join(n)));
        // The volume's file first: no spare is put in place once it is gone.
        files.extend(spares.iter().cloned());
        for path in files {
            // A spare is not wiped while it is put in place or taken.
            let _held = spares.contains(&path).then(lock_spares);
            if !path.exists() {
                continue;
            }
            let record = self.wiped(&s.volume_id);
            let before = std::fs::read_to_string(&record).ok().and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(0);
            let n = self.wipe_file(s.wipe, &path)?;
            std::fs::write(&record, format!("{}\n", before + n)).map_err(|e| io(&record, e))?;
            tracing::info!(volume = %s.volume_id, method = ?s.wipe, bytes_overwritten = n, "volume wiped and removed");
            total = Some(before + n);
        }
        if total.is_none() {
            total = std::fs::read_to_string(self.wiped(&s.volume_id)).ok().and_then(|t| t.trim().parse().ok());
        }
        Ok(total)
    }

    /// What the guest agent did around the volume's layers taken live with a freeze (the
    /// records its guest's host wrote beside them).
    fn freezes(&self, s: &VolumeSpec) -> Vec<ObservedFreeze> {
        s.layers
            .iter()
            .filter(|l| l.fs_freeze)
            .filter_map(|l| std::fs::read(self.dir.join(format!("{}.freeze", l.file(&s.volume_id)))).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Removes wipe records of volumes the server no longer lists (it has recorded them),
    /// and records of failed live snapshots and of freezes no longer listed (the server
    /// has them).
    fn forget_others(&self, specs: &[VolumeSpec]) {
        let listed: BTreeSet<String> = specs.iter().map(|s| s.volume_id.to_string()).collect();
        let layers: BTreeSet<String> = specs
            .iter()
            .flat_map(|s| s.layers.iter().map(|l| l.file(&s.volume_id)))
            .flat_map(|f| [format!("{f}.failed"), format!("{f}.freeze")])
            .collect();
        let Ok(dir) = std::fs::read_dir(&self.dir) else { return };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let gone = match name.strip_suffix(".wiped") {
                Some(id) => !listed.contains(id),
                None => (name.ends_with(".qcow2.failed") || name.ends_with(".qcow2.freeze")) && !layers.contains(&name),
            };
            if gone {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Spare layers are checked and put in place, or taken, under this lock (the pool pass
/// and a live snapshot run on different threads).
fn lock_spares() -> std::sync::MutexGuard<'static, ()> {
    static SPARES: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SPARES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The spare layer of volume `id` in the pool `dir`.
fn spare_file(dir: &Path, id: &VolumeId) -> PathBuf {
    dir.join(format!("{id}.next.qcow2"))
}

/// Moves the spare layer of volume `id` (in pool `dir`) to `dest` when it lies over the
/// file named `lower` at `size_bytes`: a snapshot's new layer without a `qemu-img create`.
pub fn take_spare(dir: &Path, id: &VolumeId, lower: &str, size_bytes: u64, dest: &Path) -> bool {
    let spare = spare_file(dir, id);
    let _held = lock_spares();
    let fits = spare.exists() && qcow2::layer_info(&spare).ok() == Some((size_bytes, Some(lower.to_string())));
    fits && std::fs::rename(&spare, dest).and_then(|()| std::fs::File::open(dir)?.sync_all()).is_ok()
}

/// The lowercase hex SHA-256 of a file.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Bytes a file takes on its filesystem.
fn allocated(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}
