//! The agent's state directory and the credentials kept in it.
//!
//! The server shows a host's `phc_…` credential once, at enrolment; the agent keeps it so
//! that a restarted agent reuses its hosts and never enrols twice. Layout:
//!
//! ```text
//! {state_dir}/                  0700
//!   ca.pem                      the server's CA (PEM), pinned at the first join by the
//!                               join token's fingerprint; trusted for every connection
//!   hosts/{hostname}/           0700, one per host (one per simulated host)
//!     credential.json           0600: hostname, host id, credential, server URL
//!     …                         files a runtime keeps for the host (sim: sim-guests.json)
//! ```
//!
//! Owns file modes and atomic replacement (write a 0600 temporary, then rename). It never
//! talks to the server and holds no guest logic.

use chrono::{DateTime, Utc};
use plinth_api::HostId;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds something unexpected.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A host name that cannot be used (it names a directory).
    #[error("{0:?} is not a valid host name (a DNS label: a-z, 0-9 and '-', at most 63)")]
    BadHostname(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io { path: path.to_path_buf(), source }
}

/// True when `s` is a DNS label: 1 to 63 of `a-z`, `0-9`, `-`, not starting or ending
/// with `-`. Host names are used as directory names, so this also rules out paths.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host's enrolment, as kept on disk.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StoredCredential {
    /// The host's name (the key of its directory).
    pub hostname: String,
    /// The host id the server gave at enrolment.
    pub host_id: HostId,
    /// The `phc_…` secret.
    pub credential: String,
    /// The server the host enrolled with.
    pub server: String,
    /// When it enrolled.
    pub enrolled_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("hostname", &self.hostname)
            .field("host_id", &self.host_id)
            .field("credential", &"<redacted>")
            .field("server", &self.server)
            .field("enrolled_at", &self.enrolled_at)
            .finish()
    }
}

/// Creates `dir` (and parents) and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Replaces `path` with `contents`, readable by the owner only (0600): writes a temporary
/// beside it and renames it over, so a crash leaves the old file or the new one, never a
/// torn one. With `durable`, the data is synced before the rename.
pub fn write_private(path: &Path, contents: &[u8], durable: bool) -> Result<(), StateError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        // A temporary left by an earlier crash keeps its mode on open: tighten it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        if durable {
            f.sync_all().map_err(io(&tmp))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if durable && let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

/// The agent's state directory (0700).
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the state directory at `root` and makes it 0700.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let root = root.into();
        private_dir(&root)?;
        private_dir(&root.join("hosts"))?;
        Ok(StateDir { root })
    }

    /// The directory's path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the server's CA certificate is kept.
    pub fn ca_path(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The server's CA certificate (PEM), if one was kept.
    pub fn load_ca(&self) -> Result<Option<String>, StateError> {
        let path = self.ca_path();
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// Keeps the server's CA certificate (PEM), synced before this returns.
    pub fn save_ca(&self, pem: &str) -> Result<(), StateError> {
        write_private(&self.ca_path(), pem.as_bytes(), true)
    }

    /// The directory of host `hostname` (created 0700).
    pub fn host_dir(&self, hostname: &str) -> Result<PathBuf, StateError> {
        if !is_dns_label(hostname) {
            return Err(StateError::BadHostname(hostname.to_string()));
        }
        let dir = self.root.join("hosts").join(hostname);
        private_dir(&dir)?;
        Ok(dir)
    }

    /// Where host `hostname`'s credential is kept.
    pub fn credential_path(&self, hostname: &str) -> Result<PathBuf, StateError> {
        Ok(self.host_dir(hostname)?.join("credential.json"))
    }

    /// The stored credential of host `hostname`, if it has enrolled. A file readable by
    /// others is tightened to 0600 (and a warning logged).
    pub fn load_credential(&self, hostname: &str) -> Result<Option<StoredCredential>, StateError> {
        let path = self.credential_path(hostname)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Io { path, source: e }),
        };
        let mode = std::fs::metadata(&path).map_err(io(&path))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "credential file was readable by others; made it 0600");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
        }
        let cred: StoredCredential = serde_json::from_str(&text)
            .map_err(|e| StateError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if cred.hostname != hostname {
            return Err(StateError::Corrupt {
                path,
                reason: format!("holds the credential of {:?}, not of {hostname:?}", cred.hostname),
            });
        }
        Ok(Some(cred))
    }

    /// Keeps `cred` (0600, synced to disk before this returns).
    pub fn save_credential(&self, cred: &StoredCredential) -> Result<(), StateError> {
        let path = self.credential_path(&cred.hostname)?;
        let mut text = serde_json::to_vec_pretty(cred)
            .map_err(|e| StateError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        text.push(b'\n');
        write_private(&path, &text, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(hostname: &str) -> StoredCredential {
        StoredCredential {
            hostname: hostname.into(),
            host_id: HostId::generate(),
            credential: "phc_secret".into(),
            server: "http://127.0.0.1:7480".into(),
            enrolled_at: Utc::now(),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn credentials_are_private_and_reused_after_a_restart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("agent");
        let state = StateDir::open(&root).expect("open");
        assert_eq!(mode(&root), 0o700);
        assert_eq!(state.load_credential("sim-0000").expect("load"), None);

        let c = cred("sim-0000");
        state.save_credential(&c).expect("save");
        let path = state.credential_path("sim-0000").expect("path");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("parent")), 0o700);

        // A new agent process: a fresh handle on the same directory finds the same host.
        drop(state);
        let again = StateDir::open(&root).expect("reopen");
        assert_eq!(again.load_credential("sim-0000").expect("load"), Some(c.clone()));
        // Other hosts are keyed apart.
        assert_eq!(again.load_credential("sim-0001").expect("load"), None);
        // No temporary is left behind.
        let names: Vec<String> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("read_dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, vec!["credential.json".to_string()]);
    }

    #[test]
    fn loose_modes_are_tightened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("agent");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let state = StateDir::open(&root).expect("open");
        assert_eq!(mode(&root), 0o700);
        let c = cred("h1");
        state.save_credential(&c).expect("save");
        let path = state.credential_path("h1").expect("path");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(state.load_credential("h1").expect("load"), Some(c));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn bad_names_and_files_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("open");
        for bad in ["", "../x", "Sim-1", "-a", "a-", "a/b", &"a".repeat(64)] {
            assert!(matches!(state.load_credential(bad), Err(StateError::BadHostname(_))), "{bad:?}");
        }
        let path = state.credential_path("h2").expect("path");
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(state.load_credential("h2"), Err(StateError::Corrupt { .. })));
        // A credential copied under another host's name is not used.
        state.save_credential(&cred("h3")).expect("save");
        std::fs::copy(state.credential_path("h3").expect("p"), &path).expect("copy");
        assert!(matches!(state.load_credential("h2"), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let text = format!("{:?}", cred("h"));
        assert!(!text.contains("phc_secret"), "{text}");
    }
}
