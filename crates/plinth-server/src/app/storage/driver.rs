//! The boundary a volume backend fits: what the server asks of a backend (create, extend,
//! delete with its wipe, snapshot, its delete and revert, clone, stats) and how a host reaches a volume's data (a
//! [`VolumeConnection`], which the agent turns into QEMU block nodes, `blockdev.rs`).
//!
//! - `local_qcow2` ([`LocalQcow2`]): the host holding the volume's pool does the work (the
//!   server publishes a `VolumeSpec`; the agent makes, grows and wipes the file), so its
//!   calls answer [`Done::ByHost`]. Its volumes are local: an instance using one stays on
//!   that host.
//! - `rbd` ([`Rbd`]): a Ceph pool every host reaches; the server does the work itself
//!   through an [`RbdClient`] (the `rbd` command: [`RbdCli`]), so its calls answer
//!   [`Done::Now`], and placement ignores the volume's host. Its volumes are encrypted
//!   (LUKS on the raw image) and wiped by crypto-erase: `rbd rm` overwrites nothing, so an
//!   unencrypted RBD type has no wipe and is refused.
//!
//! No Ceph cluster runs here: the contract test runs both drivers through the same
//! sequence, RBD over a recording fake of the client; `storage_api` runs the API over a
//! recording `rbd` command. Volume create, extend and delete call the volume's driver
//! ([`for_volume`]); `rbd` types exist only where the server is configured for Ceph.

use plinth_api::{Volume, VolumeBackend, VolumeConnection, WipeMethod};

/// Who did (or does) the work a driver was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// The volume's host does it when it next converges its pool (local volumes).
    ByHost,
    /// Done by the call (a shared backend).
    Now,
}

/// Why a backend refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// The backend cannot do this (with why).
    #[error("{0}")]
    Unsupported(String),
    /// The backend's tool failed (its own words, for logs and operators).
    #[error("{0}")]
    Backend(String),
}

/// A backend pool's space, as the backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
}

/// What the server asks of a volume backend.
pub trait VolumeDriver: Send + Sync {
    /// Its backend.
    fn backend(&self) -> VolumeBackend;
    /// Every host reaches its volumes (placement ignores a volume's host).
    fn shared(&self) -> bool;
    /// Makes the volume's storage.
    fn create(&self, vol: &Volume) -> Result<Done, DriverError>;
    /// Grows it to `size_gib`.
    fn extend(&self, vol: &Volume, size_gib: u32) -> Result<Done, DriverError>;
    /// Removes it, wiped by its method (its key is destroyed by the caller's transaction).
    fn delete(&self, vol: &Volume) -> Result<Done, DriverError>;
    /// Takes snapshot `name` of it.
    fn snapshot(&self, vol: &Volume, name: &str) -> Result<Done, DriverError>;
    /// Deletes its snapshot `name`.
    fn delete_snapshot(&self, vol: &Volume, name: &str) -> Result<Done, DriverError>;
    /// Brings it back to its snapshot `name` (detached; what was written since is lost).
    fn revert(&self, vol: &Volume, name: &str) -> Result<Done, DriverError>;
    /// Makes `new` from snapshot `name` of `from`.
    fn clone_from(&self, from: &Volume, name: &str, new: &Volume) -> Result<Done, DriverError>;
    /// The backend pool's space (`None`: each host reports its own pool).
    fn stats(&self) -> Result<Option<PoolStats>, DriverError>;
    /// How a host reaches the volume's data.
    fn connection(&self, vol: &Volume) -> VolumeConnection;
}

/// Volumes as qcow2 files in their host's pool.
pub struct LocalQcow2;

impl VolumeDriver for LocalQcow2 {
    fn backend(&self) -> VolumeBackend {
        VolumeBackend::LocalQcow2
    }
    fn shared(&self) -> bool {
        false
    }
    fn create(&self, _vol: &Volume) -> Result<Done, DriverError> {
        Ok(Done::ByHost)
    }
    fn extend(&self, _vol: &Volume, _size_gib: u32) -> Result<Done, DriverError> {
        Ok(Done::ByHost)
    }
    fn delete(&self, _vol: &Volume) -> Result<Done, DriverError> {
        Ok(Done::ByHost)
    }
    fn snapshot(&self, _vol: &Volume, _name: &str) -> Result<Done, DriverError> {
        // A layer over the volume's top file (`app/storage/snapshots.rs`).
        Ok(Done::ByHost)
    }
    fn delete_snapshot(&self, _vol: &Volume, _name: &str) -> Result<Done, DriverError> {
        // Its layer merged into the one below, then wiped.
        Ok(Done::ByHost)
    }
    fn revert(&self, _vol: &Volume, _name: &str) -> Result<Done, DriverError> {
        // The top layer wiped and made again, empty.
        Ok(Done::ByHost)
    }
    fn clone_from(&self, _from: &Volume, _name: &str, _new: &Volume) -> Result<Done, DriverError> {
        // The chain below the snapshot's layer, converted under the new volume's key.
        Ok(Done::ByHost)
    }
    fn stats(&self) -> Result<Option<PoolStats>, DriverError> {
        Ok(None)
    }
    fn connection(&self, vol: &Volume) -> VolumeConnection {
        VolumeConnection::LocalQcow2 { file: format!("{}.qcow2", vol.id) }
    }
}

/// What the RBD driver needs of Ceph: the `rbd` command's verbs it uses.
pub trait RbdClient: Send + Sync {
    fn create(&self, pool: &str, image: &str, size_bytes: u64) -> Result<(), String>;
    fn resize(&self, pool: &str, image: &str, size_bytes: u64) -> Result<(), String>;
    fn remove(&self, pool: &str, image: &str) -> Result<(), String>;
    fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<(), String>;
    fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), String>;
    fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), String>;
    fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<(), String>;
    fn snap_rollback(&self, pool: &str, image: &str, snap: &str) -> Result<(), String>;
    fn clone(&self, pool: &str, image: &str, snap: &str, new: &str) -> Result<(), String>;
    /// Copies into `image` what it still reads from its parent snapshot, so it no longer
    /// needs it (`rbd flatten`).
    fn flatten(&self, pool: &str, image: &str) -> Result<(), String>;
    /// (capacity, used) bytes of the pool.
    fn df(&self, pool: &str) -> Result<(u64, u64), String>;
}

/// Where the RBD driver keeps volumes and how hosts reach them (operator configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbdConfig {
    pub pool: String,
    /// The Ceph user (the server's and every host's keyring hold its key).
    pub user: String,
    /// Monitor addresses (`host:port`); empty: ceph.conf's.
    pub monitors: Vec<String>,
    /// The `rbd` command (default: `rbd` on the PATH).
    pub command: std::path::PathBuf,
}

impl RbdConfig {
    /// From `PLINTH_RBD_POOL` (unset: no RBD), `PLINTH_RBD_USER` (default `plinth`),
    /// `PLINTH_RBD_MONITORS` (`host:port,…`) and `PLINTH_RBD_COMMAND` (default `rbd`).
    pub fn from_env() -> Option<RbdConfig> {
        let var = |k: &str| std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Some(RbdConfig {
            pool: var("PLINTH_RBD_POOL")?,
            user: var("PLINTH_RBD_USER").unwrap_or_else(|| "plinth".into()),
            monitors: var("PLINTH_RBD_MONITORS")
                .map(|m| m.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
                .unwrap_or_default(),
            command: var("PLINTH_RBD_COMMAND").unwrap_or_else(|| "rbd".into()).into(),
        })
    }
}

/// Volumes as RBD images (named by the volume's id) in one Ceph pool.
pub struct Rbd<C: RbdClient> {
    pub config: RbdConfig,
    pub client: C,
}

impl<C: RbdClient> Rbd<C> {
    fn run(&self, r: Result<(), String>) -> Result<Done, DriverError> {
        r.map(|()| Done::Now).map_err(DriverError::Backend)
    }
}

impl<C: RbdClient> VolumeDriver for Rbd<C> {
    fn backend(&self) -> VolumeBackend {
        VolumeBackend::Rbd
    }
    fn shared(&self) -> bool {
        true
    }
    fn create(&self, vol: &Volume) -> Result<Done, DriverError> {
        if !vol.encrypted {
            return Err(DriverError::Unsupported(
                "an RBD volume must be encrypted: its wipe is crypto-erase (rbd rm overwrites nothing)".into(),
            ));
        }
        self.run(self.client.create(&self.config.pool, vol.id.as_str(), u64::from(vol.size_gib) << 30))
    }
    fn extend(&self, vol: &Volume, size_gib: u32) -> Result<Done, DriverError> {
        self.run(self.client.resize(&self.config.pool, vol.id.as_str(), u64::from(size_gib) << 30))
    }
    fn delete(&self, vol: &Volume) -> Result<Done, DriverError> {
        if vol.wipe != WipeMethod::Crypto || !vol.encrypted {
            return Err(DriverError::Unsupported("an RBD volume is wiped by crypto-erase only".into()));
        }
        self.run(self.client.remove(&self.config.pool, vol.id.as_str()))
    }
    fn snapshot(&self, vol: &Volume, name: &str) -> Result<Done, DriverError> {
        let (pool, image) = (&self.config.pool, vol.id.as_str());
        self.run(self.client.snap_create(pool, image, name).and_then(|()| self.client.snap_protect(pool, image, name)))
    }
    fn delete_snapshot(&self, vol: &Volume, name: &str) -> Result<Done, DriverError> {
        let (pool, image) = (&self.config.pool, vol.id.as_str());
        // Not protected (a snapshot taken before a crash kept it from being protected, or
        // unprotected before one) is no reason to stop: `snap rm` says whether it can go.
        let _ = self.client.snap_unprotect(pool, image, name);
        self.run(self.client.snap_remove(pool, image, name))
    }
    fn revert(&self, vol: &Volume, name: &str) -> Result<Done, DriverError> {
        self.run(self.client.snap_rollback(&self.config.pool, vol.id.as_str(), name))
    }
    /// A copy of `from`'s snapshot `name`: cloned, flattened (so the snapshot, and its
    /// volume, may go before the copy) and grown to the new volume's size. Each step may
    /// have been done by a run a crash cut short: an existing clone and one with no parent
    /// left go on to the next step. The clone is LUKS under the source's key (the server
    /// gives the new volume the same key, sealed under its own id).
    fn clone_from(&self, from: &Volume, name: &str, new: &Volume) -> Result<Done, DriverError> {
        let (pool, image) = (&self.config.pool, new.id.as_str());
        let done_before = |r: Result<(), String>, already: &str| match r {
            Err(e) if !e.contains(already) => Err(DriverError::Backend(e)),
            _ => Ok(()),
        };
        done_before(self.client.clone(pool, from.id.as_str(), name, image), "exists")?;
        done_before(self.client.flatten(pool, image), "no parent")?;
        self.run(self.client.resize(pool, image, u64::from(new.size_gib) << 30))
    }
    fn stats(&self) -> Result<Option<PoolStats>, DriverError> {
        let (capacity_bytes, used_bytes) = self.client.df(&self.config.pool).map_err(DriverError::Backend)?;
        Ok(Some(PoolStats { capacity_bytes, used_bytes }))
    }
    fn connection(&self, vol: &Volume) -> VolumeConnection {
        VolumeConnection::Rbd {
            pool: self.config.pool.clone(),
            image: vol.id.to_string(),
            user: self.config.user.clone(),
            monitors: self.config.monitors.clone(),
        }
    }
}

/// The `rbd` command (Debian's `ceph-common`), run as the configured user.
pub struct RbdCli {
    pub user: String,
    pub monitors: Vec<String>,
    pub command: std::path::PathBuf,
}

impl RbdCli {
    fn rbd(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = std::process::Command::new(&self.command);
        cmd.args(["--id", &self.user]);
        if !self.monitors.is_empty() {
            cmd.args(["-m", &self.monitors.join(",")]);
        }
        let out = cmd.args(args).output().map_err(|e| format!("rbd: {e} (is ceph-common installed?)"))?;
        if !out.status.success() {
            return Err(format!("rbd {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl RbdClient for RbdCli {
    fn create(&self, pool: &str, image: &str, size_bytes: u64) -> Result<(), String> {
        self.rbd(&["create", "--size", &format!("{}M", size_bytes >> 20), &format!("{pool}/{image}")]).map(drop)
    }
    fn resize(&self, pool: &str, image: &str, size_bytes: u64) -> Result<(), String> {
        self.rbd(&["resize", "--size", &format!("{}M", size_bytes >> 20), &format!("{pool}/{image}")]).map(drop)
    }
    fn remove(&self, pool: &str, image: &str) -> Result<(), String> {
        self.rbd(&["rm", &format!("{pool}/{image}")]).map(drop)
    }
    fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
        self.rbd(&["snap", "create", &format!("{pool}/{image}@{snap}")]).map(drop)
    }
    fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
        self.rbd(&["snap", "protect", &format!("{pool}/{image}@{snap}")]).map(drop)
    }
    fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
        self.rbd(&["snap", "unprotect", &format!("{pool}/{image}@{snap}")]).map(drop)
    }
    fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
        self.rbd(&["snap", "rm", &format!("{pool}/{image}@{snap}")]).map(drop)
    }
    fn snap_rollback(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
        self.rbd(&["snap", "rollback", &format!("{pool}/{image}@{snap}")]).map(drop)
    }
    fn clone(&self, pool: &str, image: &str, snap: &str, new: &str) -> Result<(), String> {
        self.rbd(&["clone", &format!("{pool}/{image}@{snap}"), &format!("{pool}/{new}")]).map(drop)
    }
    fn flatten(&self, pool: &str, image: &str) -> Result<(), String> {
        self.rbd(&["flatten", &format!("{pool}/{image}")]).map(drop)
    }
    fn df(&self, pool: &str) -> Result<(u64, u64), String> {
        let text = self.rbd(&["pool", "stats", pool, "--format", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("rbd pool stats: {e}"))?;
        let provisioned = v["provisioned_bytes"].as_u64().unwrap_or(0);
        let used = v["total_bytes"].as_u64().unwrap_or(provisioned);
        Ok((provisioned, used))
    }
}

/// The driver of a volume of type `vt` on this server (`backend_unavailable` when the
/// type's backend is not configured here).
pub fn for_volume(st: &crate::app::AppState, vt: &plinth_api::VolumeType) -> crate::app::Result<Box<dyn VolumeDriver>> {
    for_backend(vt.backend, st.config.rbd.as_ref()).ok_or_else(|| {
        crate::app::Error::unavailable(
            "backend_unavailable",
            format!("volume type {}: its backend is not configured on this server", vt.name),
        )
    })
}

/// Runs a shared backend's call off the async threads; its failure is logged with the
/// backend's own words and answered without them (`backend_failed`).
pub async fn run(
    what: &str,
    call: impl FnOnce() -> Result<Done, DriverError> + Send + 'static,
) -> crate::app::Result<Done> {
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(DriverError::Unsupported(why))) => Err(crate::app::Error::invalid("backend_unsupported", why)),
        Ok(Err(DriverError::Backend(e))) => {
            tracing::warn!(error = %e, "volume backend: {what} failed");
            Err(crate::app::Error::unavailable(
                "backend_failed",
                format!("the volume backend could not {what}; the operators have its error"),
            ))
        }
        Err(e) => Err(crate::app::Error::internal(e)),
    }
}

/// The driver of a backend (`None`: not configured on this server).
pub fn for_backend(backend: VolumeBackend, rbd: Option<&RbdConfig>) -> Option<Box<dyn VolumeDriver>> {
    match backend {
        VolumeBackend::LocalQcow2 => Some(Box::new(LocalQcow2)),
        VolumeBackend::Rbd => rbd.map(|c| {
            let client = RbdCli { user: c.user.clone(), monitors: c.monitors.clone(), command: c.command.clone() };
            Box::new(Rbd { config: c.clone(), client }) as Box<dyn VolumeDriver>
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_api::*;
    use std::sync::Mutex;

    /// A fake Ceph that records every call (and can be told to fail one verb).
    #[derive(Default)]
    struct Recording {
        calls: Mutex<Vec<String>>,
        fail: Option<&'static str>,
        /// The failing verb fails with "File exists" (else "No such file or directory").
        exists: bool,
    }

    impl Recording {
        fn call(&self, verb: &'static str, what: String) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("{verb} {what}"));
            match self.fail {
                Some(v) if v == verb && self.exists => Err(format!("rbd {verb}: error (17) File exists")),
                Some(v) if v == verb => Err(format!("rbd {verb}: error (2) No such file or directory")),
                _ => Ok(()),
            }
        }
    }

    impl RbdClient for Recording {
        fn create(&self, pool: &str, image: &str, size_bytes: u64) -> Result<(), String> {
            self.call("create", format!("{pool}/{image} {size_bytes}"))
        }
        fn resize(&self, pool: &str, image: &str, size_bytes: u64) -> Result<(), String> {
            self.call("resize", format!("{pool}/{image} {size_bytes}"))
        }
        fn remove(&self, pool: &str, image: &str) -> Result<(), String> {
            self.call("rm", format!("{pool}/{image}"))
        }
        fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
            self.call("snap_create", format!("{pool}/{image}@{snap}"))
        }
        fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
            self.call("snap_protect", format!("{pool}/{image}@{snap}"))
        }
        fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
            self.call("snap_unprotect", format!("{pool}/{image}@{snap}"))
        }
        fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
            self.call("snap_rm", format!("{pool}/{image}@{snap}"))
        }
        fn snap_rollback(&self, pool: &str, image: &str, snap: &str) -> Result<(), String> {
            self.call("snap_rollback", format!("{pool}/{image}@{snap}"))
        }
        fn clone(&self, pool: &str, image: &str, snap: &str, new: &str) -> Result<(), String> {
            self.call("clone", format!("{pool}/{image}@{snap} -> {new}"))
        }
        fn flatten(&self, pool: &str, image: &str) -> Result<(), String> {
            self.call("flatten", format!("{pool}/{image}"))
        }
        fn df(&self, pool: &str) -> Result<(u64, u64), String> {
            self.call("df", pool.to_string()).map(|()| (100 << 30, 3 << 30))
        }
    }

    fn volume(encrypted: bool, wipe: WipeMethod) -> Volume {
        let id = VolumeId::generate();
        Volume {
            serial: "S".into(),
            id,
            tenant_id: TenantId("tnt_x".into()),
            project_id: ProjectId("prj_x".into()),
            name: "data".into(),
            description: String::new(),
            volume_type_id: VolumeTypeId("vtp_x".into()),
            size_gib: 10,
            host_id: None,
            state: VolumeState::Creating,
            state_reason: None,
            encrypted,
            wipe,
            allocated_bytes: None,
            wipe_evidence: None,
            attachment_id: None,
            instance_id: None,
            source_image_id: None,
            source_disk: None,
            source_snapshot_id: None,
            generation: 1,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    /// The sequence every driver must carry: create, connection, extend, delete; what is
    /// done says who does it, and a shared backend's connection names no host's file.
    fn contract(d: &dyn VolumeDriver) -> Vec<Done> {
        let v = volume(true, WipeMethod::Crypto);
        let done = vec![d.create(&v).unwrap(), d.extend(&v, 20).unwrap(), d.delete(&v).unwrap()];
        let by_host = if d.shared() { Done::Now } else { Done::ByHost };
        assert!(done.iter().all(|x| *x == by_host), "{:?}: {done:?}", d.backend());
        match (d.connection(&v), d.shared()) {
            (VolumeConnection::LocalQcow2 { file }, false) => assert_eq!(file, format!("{}.qcow2", v.id)),
            (VolumeConnection::Rbd { image, .. }, true) => assert_eq!(image, v.id.as_str()),
            (c, shared) => panic!("{:?}: connection {c:?} with shared = {shared}", d.backend()),
        }
        done
    }

    #[test]
    fn local_qcow2_leaves_the_work_to_the_volumes_host() {
        assert_eq!(contract(&LocalQcow2), [Done::ByHost; 3]);
        assert!(LocalQcow2.stats().unwrap().is_none(), "each host reports its own pool");
        let v = volume(true, WipeMethod::Crypto);
        assert_eq!(LocalQcow2.snapshot(&v, "s1"), Ok(Done::ByHost), "a layer its host adds");
        assert_eq!(LocalQcow2.clone_from(&v, "s1", &volume(true, WipeMethod::Crypto)), Ok(Done::ByHost));
        assert_eq!(LocalQcow2.delete_snapshot(&v, "s1"), Ok(Done::ByHost), "merged by its host");
        assert_eq!(LocalQcow2.revert(&v, "s1"), Ok(Done::ByHost));
    }

    #[test]
    fn rbd_does_the_work_through_ceph_in_order_and_says_what_failed() {
        let config = RbdConfig {
            pool: "volumes".into(),
            user: "plinth".into(),
            monitors: vec!["10.0.0.1:6789".into()],
            command: "rbd".into(),
        };
        let d = Rbd { config: config.clone(), client: Recording::default() };
        assert_eq!(contract(&d), [Done::Now; 3]);
        let calls = d.client.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3);
        assert!(calls[0].starts_with("create volumes/vol_") && calls[0].ends_with(&format!(" {}", 10u64 << 30)));
        assert!(calls[1].starts_with("resize volumes/vol_") && calls[1].ends_with(&format!(" {}", 20u64 << 30)));
        assert!(calls[2].starts_with("rm volumes/vol_"));
        // Snapshots are protected (so clones can be made of them); a copy is a clone naming
        // both, flattened (it no longer needs the snapshot) and grown to its own size.
        let (a, mut b) = (volume(true, WipeMethod::Crypto), volume(true, WipeMethod::Crypto));
        b.size_gib = 12;
        d.snapshot(&a, "snp_1").unwrap();
        d.clone_from(&a, "snp_1", &b).unwrap();
        let calls = d.client.calls.lock().unwrap().clone();
        assert_eq!(calls[3], format!("snap_create volumes/{}@snp_1", a.id));
        assert_eq!(calls[4], format!("snap_protect volumes/{}@snp_1", a.id));
        assert_eq!(calls[5], format!("clone volumes/{}@snp_1 -> {}", a.id, b.id));
        assert_eq!(calls[6], format!("flatten volumes/{}", b.id));
        assert_eq!(calls[7], format!("resize volumes/{} {}", b.id, 12u64 << 30));
        // A revert rolls the image back; a delete unprotects, then removes.
        d.revert(&a, "snp_1").unwrap();
        d.delete_snapshot(&a, "snp_1").unwrap();
        let calls = d.client.calls.lock().unwrap().clone();
        assert_eq!(calls[8], format!("snap_rollback volumes/{}@snp_1", a.id));
        assert_eq!(calls[9], format!("snap_unprotect volumes/{}@snp_1", a.id));
        assert_eq!(calls[10], format!("snap_rm volumes/{}@snp_1", a.id));
        assert_eq!(d.stats().unwrap(), Some(PoolStats { capacity_bytes: 100 << 30, used_bytes: 3 << 30 }));
        // The connection a host gets: the pool, the image, the user, the monitors.
        let VolumeConnection::Rbd { pool, user, monitors, .. } = d.connection(&a) else { panic!("rbd") };
        assert_eq!((pool.as_str(), user.as_str(), monitors), ("volumes", "plinth", config.monitors.clone()));
        // Refusals: no unencrypted RBD volume (rbd rm wipes nothing); Ceph's failure is said.
        let before = d.client.calls.lock().unwrap().len();
        assert!(matches!(d.create(&volume(false, WipeMethod::Overwrite)), Err(DriverError::Unsupported(_))));
        assert_eq!(d.client.calls.lock().unwrap().len(), before, "a refusal calls nothing");
        let failing = Rbd { config: config.clone(), client: Recording { fail: Some("resize"), ..Default::default() } };
        let e = failing.extend(&a, 30).unwrap_err();
        assert_eq!(e, DriverError::Backend("rbd resize: error (2) No such file or directory".into()));
        // A copy whose clone a crashed run already made goes on; a clone that failed
        // otherwise stops it before the flatten.
        let again = Rbd { config: config.clone(), client: Recording { fail: Some("clone"), ..Default::default() } };
        let e = again.clone_from(&a, "snp_1", &b).unwrap_err();
        assert_eq!(again.client.calls.lock().unwrap().len(), 1, "nothing after a failed clone: {e}");
        let made = Rbd { config, client: Recording { fail: Some("clone"), exists: true, ..Default::default() } };
        made.clone_from(&a, "snp_1", &b).unwrap();
        let verbs: Vec<String> =
            made.client.calls.lock().unwrap().iter().map(|c| c.split(' ').next().unwrap().into()).collect();
        assert_eq!(verbs, ["clone", "flatten", "resize"]);
    }

    #[test]
    fn a_backend_has_a_driver_only_when_configured() {
        assert!(for_backend(VolumeBackend::LocalQcow2, None).is_some());
        assert!(for_backend(VolumeBackend::Rbd, None).is_none(), "no Ceph configured");
        let c = RbdConfig { pool: "p".into(), user: "u".into(), monitors: vec![], command: "rbd".into() };
        assert!(for_backend(VolumeBackend::Rbd, Some(&c)).is_some_and(|d| d.shared()));
    }
}
