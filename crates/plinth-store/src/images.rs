//! Image queries that are not plain CRUD: visibility (public images are seen by every
//! tenant, a project's images only inside its tenant), resolving an instance's image
//! reference, the private `sources` column (where pending files come from), and the
//! bookkeeping of blobs — which content-addressed files exist and which are still
//! referenced by an image or a live instance.
//!
//! Blob rows and blob files change together under the blob row's lock: a writer upserts
//! the row (waiting for a collector holding it) before moving its file into place, and the
//! collector re-checks references under the lock before deleting row and file. So a blob
//! is never removed while a commit that references it is in flight. This module does not
//! touch files; the server owns them.

use crate::error::StoreError;
use crate::resource::{Val, image_owner_key};
use crate::sql::Sql;
use crate::store::{Store, now_micros};
use crate::tx::Tx;
use plinth_api::{Image, ImageId, Page, ProjectId};
use plinth_domain::authz::Scope;
use sqlx::Row;

fn decode(doc: &str) -> Result<Image, StoreError> {
    serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { table: "images", source })
}

/// Appends what `scope` may see of images: public ones, and its tenant's (narrowed to
/// its projects when it is bound to some only).
fn visible(sql: &mut Sql, scope: &Scope) {
    match scope {
        Scope::Platform => {}
        Scope::Nothing => {
            sql.push(" AND 1=0");
        }
        Scope::Tenant { tenant_id, projects } => {
            let t = sql.arg(Val::text(tenant_id.as_str()));
            match projects {
                None => sql.push(&format!(" AND (project_id IS NULL OR tenant_id = {t})")),
                Some(list) if list.is_empty() => sql.push(" AND project_id IS NULL"),
                Some(list) => {
                    let ps: Vec<String> = list.iter().map(|p| sql.arg(Val::text(p.as_str()))).collect();
                    sql.push(&format!(
                        " AND (project_id IS NULL OR (tenant_id = {t} AND project_id IN ({})))",
                        ps.join(", ")
                    ))
                }
            };
        }
    }
}

/// The columns an image list may filter on, and `public` (`true`: public images only;
/// `false`: project images only).
pub const IMAGE_FILTERS: &[&str] = &["project_id", "name", "status", "public"];

/// SQL condition for "this blob is referenced by an image or a live instance"; `$b` is
/// the blob's digest expression.
fn referenced(b: &str) -> String {
    format!(
        "(EXISTS (SELECT 1 FROM images i WHERE i.disk_sha256 = {b} OR i.kernel_sha256 = {b} OR i.initrd_sha256 = {b}) \
         OR EXISTS (SELECT 1 FROM instances n WHERE n.lifecycle <> 'deleted' \
         AND (n.boot_disk = {b} OR n.boot_kernel = {b} OR n.boot_initrd = {b})))"
    )
}

impl Store {
    /// Lists the images `scope` may see, in id order after `cursor`. `filters` are
    /// (name, value) pairs of [`IMAGE_FILTERS`].
    pub async fn list_images(
        &self,
        scope: &Scope,
        filters: &[(&str, String)],
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Image>, StoreError> {
        let mut sql = Sql::new("SELECT id, doc FROM images WHERE 1=1");
        visible(&mut sql, scope);
        for (col, v) in filters {
            match *col {
                "public" => {
                    let p = sql.arg(Val::text("public"));
                    match v.as_str() {
                        "true" => sql.push(&format!(" AND owner_key = {p}")),
                        "false" => sql.push(&format!(" AND owner_key <> {p}")),
                        _ => {
                            return Err(StoreError::Refused {
                                status: 400,
                                code: "invalid_filter",
                                detail: "public must be true or false".into(),
                            });
                        }
                    };
                }
                "project_id" | "name" | "status" => {
                    sql.cond(&format!("{col} ="), Val::text(v));
                }
                other => {
                    return Err(StoreError::Refused {
                        status: 400,
                        code: "invalid_filter",
                        detail: format!("image cannot be filtered by {other}"),
                    });
                }
            }
        }
        if let Some(c) = cursor {
            sql.cond("id >", Val::text(c));
        }
        let p = sql.arg(Val::Int(Some(limit as i64 + 1)));
        sql.push(&format!(" ORDER BY id LIMIT {p}"));
        let rows = sql.query().fetch_all(&self.read).await?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        for r in rows.iter().take(limit as usize) {
            items.push(decode(&r.try_get::<String, _>("doc")?)?);
        }
        let next_cursor = if more { items.last().map(|i| i.id.0.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// One image `scope` may see (public, or of its tenant and projects).
    pub async fn get_image(&self, scope: &Scope, id: &str) -> Result<Image, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM images WHERE 1=1");
        sql.cond("id =", Val::text(id));
        visible(&mut sql, scope);
        match sql.query().fetch_optional(&self.read).await? {
            Some(r) => decode(&r.try_get::<String, _>("doc")?),
            None => Err(StoreError::NotFound { kind: "image", id: id.to_string() }),
        }
    }

    /// The image `reference` names for instances of `project`: an image id (the project's
    /// own image or a public one), or a name (the project's own image first, then a public
    /// one). None when nothing the project may use has that id or name.
    pub async fn image_for_project(&self, project: &ProjectId, reference: &str) -> Result<Option<Image>, StoreError> {
        if ImageId::parse(reference).is_some() {
            let row = sqlx::query("SELECT doc FROM images WHERE id = $1 AND (project_id = $2 OR project_id IS NULL)")
                .bind(reference.to_string())
                .bind(project.0.clone())
                .fetch_optional(&self.read)
                .await?;
            return row.map(|r| decode(&r.try_get::<String, _>("doc")?)).transpose();
        }
        // One query: the project's own image sorts before a public one of the same name.
        let row = sqlx::query(
            "SELECT doc FROM images WHERE owner_key IN ($1, $2) AND name = $3 \
             ORDER BY CASE WHEN owner_key = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(image_owner_key(Some(project)))
        .bind(image_owner_key(None))
        .bind(reference.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| decode(&r.try_get::<String, _>("doc")?)).transpose()
    }

    /// The private `sources` column of an image (where its pending files come from), as
    /// written at registration; None when the image does not exist.
    pub async fn image_sources(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT sources FROM images WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("sources")?),
            None => None,
        })
    }

    /// Whether a blob row exists: (size in bytes, format).
    pub async fn blob(&self, sha256: &str) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query("SELECT size_bytes, format FROM image_blobs WHERE sha256 = $1")
            .bind(sha256.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("size_bytes")?, r.try_get("format")?)),
            None => None,
        })
    }

    /// Blobs created before `before_micros` that no image and no live instance references:
    /// what blob GC may delete (each re-checked under its lock, see [`Tx::lock_blob`]).
    pub async fn unreferenced_blobs(&self, before_micros: i64) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT b.sha256 AS sha256 FROM image_blobs b WHERE b.created_at < $1 AND NOT {} ORDER BY b.sha256",
            referenced("b.sha256")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(before_micros).fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(r.try_get("sha256")?)).collect()
    }

    /// Whether the agent of `host_id` may fetch a blob: a live instance placed on that host
    /// boots from it, or an available public image holds it.
    pub async fn host_may_fetch_blob(&self, host_id: &str, sha256: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS x FROM instances WHERE host_id = $1 AND lifecycle <> 'deleted' \
             AND (boot_disk = $2 OR boot_kernel = $2 OR boot_initrd = $2) \
             UNION ALL SELECT 1 AS x FROM images WHERE project_id IS NULL AND status = 'available' \
             AND (disk_sha256 = $2 OR kernel_sha256 = $2 OR initrd_sha256 = $2) LIMIT 1",
        )
        .bind(host_id.to_string())
        .bind(sha256.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(row.is_some())
    }

    /// Ids of images still `importing` whose last change is older than `before_micros`.
    pub async fn stale_imports(&self, before_micros: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM images WHERE status = 'importing' AND updated_at < $1 ORDER BY id")
            .bind(before_micros)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}

impl Tx {
    /// Records a blob (or, when it exists, locks its row until commit, waiting for a
    /// collector that holds it): call before moving the blob's file into place.
    pub async fn upsert_blob(&mut self, sha256: &str, size_bytes: u64, format: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO image_blobs (sha256, size_bytes, format, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256) DO UPDATE SET size_bytes = excluded.size_bytes",
        )
        .bind(sha256.to_string())
        .bind(size_bytes as i64)
        .bind(format.to_string())
        .bind(now_micros())
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    /// Locks a blob's row for collection; false when it is gone.
    pub async fn lock_blob(&mut self, sha256: &str) -> Result<bool, StoreError> {
        let lock = self.lock();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT sha256 FROM image_blobs WHERE sha256 = $1{lock}")))
            .bind(sha256.to_string())
            .fetch_optional(self.conn().await?)
            .await?;
        Ok(row.is_some())
    }

    /// Whether an image or a live instance references the blob (as committed now).
    pub async fn blob_referenced(&mut self, sha256: &str) -> Result<bool, StoreError> {
        let sql = format!("SELECT 1 AS x WHERE {}", referenced("$1"));
        let row =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sha256.to_string()).fetch_optional(self.conn().await?).await?;
        Ok(row.is_some())
    }

    /// Deletes a blob's row (its file goes with the same decision).
    pub async fn forget_blob(&mut self, sha256: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM image_blobs WHERE sha256 = $1")
            .bind(sha256.to_string())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }
}
