//! The blob store: image files kept by content, at `{blob_dir}/sha256/<hex>`.
//!
//! A file is written to a temporary file in that same directory while it is hashed and
//! counted against the size limit ([`Staging`]); only once complete, within the limit and
//! matching any declared digest does it become a [`Staged`] file that the caller checks
//! and then moves into place with one `rename` ([`Staged::commit`]). A staged or staging
//! file that is dropped is deleted, so a refused or broken transfer leaves nothing behind.
//!
//! This module owns files only. Which blobs exist and who references them is in the store
//! (`image_blobs`, and the blob columns of images and instances); the image code moves a
//! file into place and removes one only under that row's lock. Several server replicas
//! must share the directory (a network file system) for their agents to fetch any blob.

use crate::config::ServerConfig;
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

/// Why a transfer into the blob store was refused.
#[derive(Debug, Error)]
pub enum BlobError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the file's SHA-256 is {actual}, not the declared {expected}")]
    Mismatch { expected: String, actual: String },
    /// The source broke off (the client went away, a download failed).
    #[error("{0}")]
    Source(String),
    #[error("blob store: {0}")]
    Io(#[from] io::Error),
}

/// Content-addressed files under one directory.
#[derive(Clone, Debug)]
pub struct BlobStore {
    /// `{blob_dir}/sha256`.
    root: PathBuf,
    max_bytes: u64,
}

/// True for a lowercase hex SHA-256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobStore {
    /// The store under `dir`, created (mode 0700) when missing.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<BlobStore> {
        use std::os::unix::fs::DirBuilderExt;
        let root = dir.join("sha256");
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&root)?;
        Ok(BlobStore { root, max_bytes })
    }

    /// The store the configuration names, if it names one.
    pub fn from_config(c: &ServerConfig) -> Option<io::Result<BlobStore>> {
        c.blob_dir.as_deref().map(|d| BlobStore::open(d, c.image_max_bytes))
    }

    /// Largest file accepted.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where blob `sha256` (lowercase hex, checked by the caller) lives.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(sha256)
    }

    /// Starts writing a new file.
    pub async fn staging(&self) -> Result<Staging, BlobError> {
        let path = self.root.join(format!(".tmp-{}", ulid::Ulid::new().to_string().to_lowercase()));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(Staging {
            file: Some(file),
            guard: TempFile(Some(path)),
            root: self.root.clone(),
            hasher: Sha256::new(),
            size: 0,
            limit: self.max_bytes,
        })
    }

    /// Deletes blob `sha256`'s file (absent is fine).
    pub async fn remove(&self, sha256: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path_of(sha256)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Deletes temporary files older than `age` (left by a process that died mid-transfer);
    /// answers how many.
    pub async fn sweep_temporary(&self, age: Duration) -> io::Result<u64> {
        let mut removed = 0;
        let mut dir = tokio::fs::read_dir(&self.root).await?;
        let cutoff = SystemTime::now() - age;
        while let Some(e) = dir.next_entry().await? {
            if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let old = e.metadata().await.and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
            if old && tokio::fs::remove_file(e.path()).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Deletes its path when dropped, unless taken.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A file being written: hashed and size-checked as it arrives.
pub struct Staging {
    file: Option<tokio::fs::File>,
    guard: TempFile,
    root: PathBuf,
    hasher: Sha256,
    size: u64,
    limit: u64,
}

impl Staging {
    /// Appends `chunk`; refuses (and keeps nothing) past the size limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        let size = self.size.saturating_add(chunk.len() as u64);
        if size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        let Some(file) = self.file.as_mut() else {
            return Err(BlobError::Source("the file is already complete".into()));
        };
        file.write_all(chunk).await?;
        self.hasher.update(chunk);
        self.size = size;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Ends the file: flushed to disk, its digest compared with `expected` when given.
    pub async fn finish(mut self, expected: Option<&str>) -> Result<Staged, BlobError> {
        if let Some(mut f) = self.file.take() {
            f.flush().await?;
            f.sync_all().await?;
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if let Some(e) = expected
            && e != actual
        {
            return Err(BlobError::Mismatch { expected: e.to_string(), actual });
        }
        Ok(Staged { guard: TempFile(self.guard.0.take()), root: self.root.clone(), sha256: actual, size: self.size })
    }
}

/// A complete file, not yet in place: check it at [`Staged::path`], then commit it.
pub struct Staged {
    guard: TempFile,
    root: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Staged {
    /// Where the file is while staged.
    pub fn path(&self) -> &Path {
        self.guard.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }

    /// Moves the file into place as blob `sha256`. Call with the blob's row locked (see
    /// `Tx::upsert_blob`): an existing blob of the same content is simply replaced.
    pub async fn commit(mut self) -> io::Result<PathBuf> {
        let dest = self.root.join(&self.sha256);
        let Some(tmp) = self.guard.0.take() else { return Err(io::Error::other("already committed")) };
        if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_hashed_limited_and_kept_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), 10).unwrap();
        let count = || std::fs::read_dir(dir.path().join("sha256")).unwrap().count();

        let mut s = store.staging().await.unwrap();
        s.write(b"hello").await.unwrap();
        let staged = s.finish(None).await.unwrap();
        assert_eq!(staged.sha256, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(std::fs::read(staged.path()).unwrap(), b"hello");
        let path = staged.commit().await.unwrap();
        assert_eq!(path, store.path_of("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
        assert_eq!(count(), 1);

        // Too large: refused, nothing kept.
        let mut s = store.staging().await.unwrap();
        s.write(b"0123456789").await.unwrap();
        assert!(matches!(s.write(b"x").await, Err(BlobError::TooLarge { limit: 10 })));
        drop(s);
        assert_eq!(count(), 1);

        // A digest mismatch: refused, nothing kept.
        let mut s = store.staging().await.unwrap();
        s.write(b"hello").await.unwrap();
        assert!(matches!(s.finish(Some(&"0".repeat(64))).await, Err(BlobError::Mismatch { .. })));
        assert_eq!(count(), 1);

        // Staged but never committed: nothing kept.
        let mut s = store.staging().await.unwrap();
        s.write(b"bye").await.unwrap();
        drop(s.finish(None).await.unwrap());
        assert_eq!(count(), 1);

        store.remove("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824").await.unwrap();
        store.remove("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824").await.unwrap();
        assert_eq!(count(), 0);
        assert!(is_sha256_hex(&"ab".repeat(32)) && !is_sha256_hex(&"AB".repeat(32)) && !is_sha256_hex("ab"));
    }
}
