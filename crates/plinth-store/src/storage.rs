//! Block storage rows: volume types and volumes, a volume's wrapped key (written at create,
//! set to NULL by its delete: crypto-erase is that statement), the spec generation its host
//! acts on, and the reads behind placement (what each host's pool has promised). What a
//! volume's state means is the server's (`app::storage`); the key's sealing is
//! `plinth_server::secrets`: this crate stores only the sealed text.

use crate::error::StoreError;
use crate::resource::{Resource, Val, meta};
use crate::sql::Sql;
use crate::store::Store;
use crate::tx::Tx;
use chrono::{DateTime, Utc};
use plinth_api::*;
use sqlx::Row;

impl Resource for VolumeType {
    const TABLE: &'static str = "volume_types";
    const KIND: &'static str = "volume type";
    const TENANT_COL: Option<&'static str> = None;
    const FILTERS: &'static [&'static str] = &["name"];
    const DEPENDENTS: &'static [(&'static str, &'static str)] = &[("volumes", "volume_type_id")];
    meta!();
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![("name", Val::text(&self.name))]
    }
}

/// The text a volume state is stored as (its wire name).
pub fn volume_state_str(s: VolumeState) -> &'static str {
    match s {
        VolumeState::Creating => "creating",
        VolumeState::Available => "available",
        VolumeState::InUse => "in_use",
        VolumeState::Extending => "extending",
        VolumeState::Reverting => "reverting",
        VolumeState::Deleting => "deleting",
        VolumeState::Wiping => "wiping",
        VolumeState::Deleted => "deleted",
        VolumeState::Error => "error",
    }
}

impl Resource for Volume {
    const TABLE: &'static str = "volumes";
    const KIND: &'static str = "volume";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "name", "volume_type_id", "host_id", "state"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("name", Val::text(&self.name)),
            ("volume_type_id", Val::text(&self.volume_type_id.0)),
            ("host_id", Val::opt_text(self.host_id.as_ref())),
            ("state", Val::text(volume_state_str(self.state))),
            // Names are unique among the volumes not deleted (NULLs never collide).
            ("live", Val::Int((self.state != VolumeState::Deleted).then_some(1))),
        ]
    }
}

impl Resource for VolumeAttachment {
    const TABLE: &'static str = "volume_attachments";
    const KIND: &'static str = "volume attachment";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["volume_id", "instance_id", "state"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        let live = self.state != AttachmentState::Detached;
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("volume_id", Val::text(&self.volume_id.0)),
            ("instance_id", Val::text(&self.instance_id.0)),
            ("host_id", Val::opt_text(self.host_id.as_ref())),
            ("state", Val::text(self.state.as_str())),
            ("slot", Val::Int(Some(i64::from(self.slot)))),
            // One attachment not yet detached per volume and per instance slot (NULLs
            // never collide): a slot whose disk the guest has not released stays taken.
            ("live", Val::Int(live.then_some(1))),
        ]
    }
}

impl Resource for VolumeSnapshot {
    const TABLE: &'static str = "volume_snapshots";
    const KIND: &'static str = "snapshot";
    const TENANT_COL: Option<&'static str> = Some("tenant_id");
    const PROJECT_COL: Option<&'static str> = Some("project_id");
    const FILTERS: &'static [&'static str] = &["project_id", "volume_id", "name", "state"];
    meta!(tenant);
    fn columns(&self) -> Vec<(&'static str, Val)> {
        vec![
            ("tenant_id", Val::text(&self.tenant_id.0)),
            ("project_id", Val::text(&self.project_id.0)),
            ("volume_id", Val::text(&self.volume_id.0)),
            ("name", Val::text(&self.name)),
            ("host_id", Val::opt_text(self.host_id.as_ref())),
            ("state", Val::text(self.state.as_str())),
            // Names are unique among a volume's snapshots not deleted (NULLs never collide).
            ("live", Val::Int((self.state != SnapshotState::Deleted).then_some(1))),
        ]
    }
}

fn snapshots_from(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<VolumeSnapshot>, StoreError> {
    rows.iter().map(crate::crud::decode_doc).collect()
}

impl Tx {
    /// A volume's snapshots not deleted, oldest first (the order of its chain's layers).
    pub async fn volume_snapshots(&mut self, volume_id: &str) -> Result<Vec<VolumeSnapshot>, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM volume_snapshots WHERE state <> 'deleted'");
        sql.cond("volume_id =", Val::text(volume_id));
        sql.push(" ORDER BY created_at, id");
        let rows = self.fetch(sql).await?;
        snapshots_from(rows)
    }

    /// The volumes being made (`creating`) on a host, or on a shared backend (`None`).
    pub async fn volumes_creating_on(&mut self, host_id: Option<&str>) -> Result<Vec<Volume>, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM volumes WHERE state = 'creating'");
        match host_id {
            Some(h) => {
                sql.cond("host_id =", Val::text(h));
            }
            None => {
                sql.push(" AND host_id IS NULL");
            }
        }
        let rows = self.fetch(sql).await?;
        rows.iter().map(crate::crud::decode_doc).collect()
    }

    /// Stores a volume's sealed key (`None`: destroys it; nothing can open its data after).
    pub async fn set_volume_key(&mut self, volume_id: &str, sealed: Option<String>) -> Result<(), StoreError> {
        self.set_column("volumes", volume_id, "wrapped_key", Val::Text(sealed)).await
    }

    /// Moves the generation of what a volume's host must do with it (and wakes the host).
    pub async fn bump_volume_spec(&mut self, volume_id: &str, host_id: Option<&str>) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE volumes SET spec_generation = spec_generation + 1 WHERE 1=1");
        sql.cond("id =", Val::text(volume_id));
        self.write_later(sql, "volumes", "volume").await?;
        if let Some(h) = host_id {
            self.bump_desired(h).await?;
            if !self.wake.iter().any(|w| w == h) {
                self.wake.push(h.to_owned());
            }
        }
        Ok(())
    }

    /// The spec generation of a volume (what its host's reports must name).
    pub async fn volume_spec_generation(&mut self, volume_id: &str) -> Result<Option<i64>, StoreError> {
        let mut sql = Sql::new("SELECT spec_generation FROM volumes WHERE 1=1");
        sql.cond("id =", Val::text(volume_id));
        Ok(match self.fetch(sql).await?.first() {
            Some(r) => Some(r.try_get("spec_generation")?),
            None => None,
        })
    }

    /// GiB the volumes of `host_id`'s pool hold (those not yet wiped) and their snapshots,
    /// by their size.
    pub async fn host_provisioned_gib(&mut self, host_id: &str) -> Result<i64, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM volumes WHERE state <> 'deleted'");
        sql.cond("host_id =", Val::text(host_id));
        let mut total = 0i64;
        for r in self.fetch(sql).await? {
            let v: Volume = serde_json::from_str(&r.try_get::<String, _>("doc")?)
                .map_err(|source| StoreError::Corrupt { table: "volumes", source })?;
            total += i64::from(v.size_gib);
        }
        // A snapshot's layer may come to hold as much as its volume did.
        let mut sql = Sql::new("SELECT doc FROM volume_snapshots WHERE state NOT IN ('deleted', 'error')");
        sql.cond("host_id =", Val::text(host_id));
        for r in self.fetch(sql).await? {
            let s: VolumeSnapshot = crate::crud::decode_doc(&r)?;
            total += i64::from(s.size_gib);
        }
        Ok(total)
    }
}

impl Store {
    /// The volumes a host's instances must have (attachments `attaching` or `attached` of
    /// the instances on it now: an instance with only shared volumes may move), each with
    /// the volume it attaches, in instance and slot order.
    pub async fn host_attachments(&self, host_id: &str) -> Result<Vec<(VolumeAttachment, Volume)>, StoreError> {
        let mut sql = Sql::new(
            "SELECT a.doc AS adoc, v.doc AS vdoc FROM volume_attachments a JOIN volumes v ON v.id = a.volume_id \
             JOIN instances i ON i.id = a.instance_id WHERE a.state IN ('attaching', 'attached')",
        );
        sql.cond("i.host_id =", Val::text(host_id));
        sql.push(" ORDER BY a.instance_id, a.slot");
        let rows = sql.query().fetch_all(&self.read).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let a: VolumeAttachment = serde_json::from_str(&r.try_get::<String, _>("adoc")?)
                .map_err(|source| StoreError::Corrupt { table: "volume_attachments", source })?;
            let v: Volume = serde_json::from_str(&r.try_get::<String, _>("vdoc")?)
                .map_err(|source| StoreError::Corrupt { table: "volumes", source })?;
            out.push((a, v));
        }
        Ok(out)
    }

    /// The volumes a host must act on (every one not yet deleted), each with its spec
    /// generation.
    pub async fn host_volumes(&self, host_id: &str) -> Result<Vec<(Volume, i64)>, StoreError> {
        let mut sql = Sql::new("SELECT doc, spec_generation FROM volumes WHERE state <> 'deleted'");
        sql.cond("host_id =", Val::text(host_id));
        sql.push(" ORDER BY id");
        let rows = sql.query().fetch_all(&self.read).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let v: Volume = serde_json::from_str(&r.try_get::<String, _>("doc")?)
                .map_err(|source| StoreError::Corrupt { table: "volumes", source })?;
            out.push((v, r.try_get("spec_generation")?));
        }
        Ok(out)
    }

    /// Volumes on a shared backend (on no host) waiting for the server to do their
    /// backend's work: `creating`, `extending` or `deleting`.
    pub async fn shared_volumes_pending(&self) -> Result<Vec<Volume>, StoreError> {
        let sql = Sql::new(
            "SELECT doc FROM volumes WHERE host_id IS NULL AND state IN ('creating', 'extending', 'deleting', \
             'reverting') ORDER BY id",
        );
        let rows = sql.query().fetch_all(&self.read).await?;
        rows.iter().map(crate::crud::decode_doc).collect()
    }

    /// Snapshots of shared-backend volumes (on no host) being taken or deleted, oldest
    /// first: the server's own work.
    pub async fn shared_snapshots_pending(&self) -> Result<Vec<VolumeSnapshot>, StoreError> {
        let sql = Sql::new(
            "SELECT doc FROM volume_snapshots WHERE host_id IS NULL AND state IN ('creating', 'deleting') \
             ORDER BY created_at, id",
        );
        snapshots_from(sql.query().fetch_all(&self.read).await?)
    }

    /// The snapshots of a host's volumes not deleted, oldest first.
    pub async fn host_snapshots(&self, host_id: &str) -> Result<Vec<VolumeSnapshot>, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM volume_snapshots WHERE state <> 'deleted'");
        sql.cond("host_id =", Val::text(host_id));
        sql.push(" ORDER BY created_at, id");
        snapshots_from(sql.query().fetch_all(&self.read).await?)
    }

    /// A volume's sealed key, when `host_id` holds the volume (`None`: a volume on a shared
    /// backend, on no host) and it still has one.
    pub async fn volume_key_for_host(
        &self,
        volume_id: &str,
        host_id: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let mut sql = Sql::new("SELECT wrapped_key FROM volumes WHERE 1=1");
        sql.cond("id =", Val::text(volume_id));
        match host_id {
            Some(h) => {
                sql.cond("host_id =", Val::text(h));
            }
            None => {
                sql.push(" AND host_id IS NULL");
            }
        }
        let rows = sql.query().fetch_all(&self.read).await?;
        Ok(match rows.first() {
            Some(r) => r.try_get::<Option<String>, _>("wrapped_key")?,
            None => None,
        })
    }
}
