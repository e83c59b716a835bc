//! The CLI profile: server URL, token and the CA certificate the server's HTTPS chains
//! to, kept in a 0600 TOML file (`$PLINTH_CONFIG`, default `~/.config/plinth/profile.toml`).

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
    /// The CA certificate (PEM file) the CLI trusts for `server`: `plinth up` writes its
    /// own (`{data_dir}/tls/ca.pem`); `plinth login --ca-cert` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
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

/// The CA to trust: `flag` (`--ca-cert`, `PLINTH_CA_CERT`), else the profile's, if any.
pub fn ca(flag: Option<&Path>, saved: Option<&Profile>) -> Result<Option<plinth_client::connect::Ca>> {
    let path = flag.map(Path::to_path_buf).or_else(|| saved.and_then(|p| p.ca_cert.clone()));
    match path {
        Some(p) => Ok(Some(
            plinth_client::connect::Ca::from_file(&p).with_context(|| "the CA certificate to trust (--ca-cert)")?,
        )),
        None => Ok(None),
    }
}

/// `plinth login`: saves the server, the token and the CA (checked readable; kept as an
/// absolute path), keeping the profile's CA when none is given.
pub fn login(server: &str, token: &str, ca_cert: Option<&Path>) -> Result<()> {
    let path = self::path();
    let ca_cert = match ca_cert {
        Some(p) => {
            plinth_client::connect::Ca::from_file(p)?;
            Some(std::path::absolute(p)?)
        }
        None => load(&path)?.and_then(|p| p.ca_cert),
    };
    save(&path, &Profile { server: server.to_string(), token: token.to_string(), ca_cert })?;
    eprintln!("saved {}", path.display());
    Ok(())
}
