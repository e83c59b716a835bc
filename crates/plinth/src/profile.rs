//! The CLI profile: server URL and token, kept in a 0600 TOML file
//! (`$PLINTH_CONFIG`, default `~/.config/plinth/profile.toml`).

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the CLI sends requests and as whom.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Profile {
    pub server: String,
    pub token: String,
}

/// The profile file's path.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("PLINTH_CONFIG") {
        return PathBuf::from(p);
    }
    dirs::config_dir().unwrap_or_else(|| PathBuf::from(".")).join("plinth").join("profile.toml")
}

/// Reads the profile, if there is one.
pub fn load(path: &Path) -> Result<Option<Profile>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(toml::from_str(&s).with_context(|| format!("reading {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `contents` to `path` readable by the owner only (0600), creating parents.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode on open: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Saves the profile (0600).
pub fn save(path: &Path, p: &Profile) -> Result<()> {
    write_private(path, &toml::to_string(p)?)
}
