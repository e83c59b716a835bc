//! Image files after they arrive: landing a checked file in its image (the image becomes
//! `available` once nothing is pending), failing an image with its reason, the server-side
//! imports (`url`, `path`) that run in the background, and blob garbage collection.
//!
//! Ordering that keeps blobs safe: a file is checked while still staged, then — in one
//! transaction holding the image row and the blob row — the blob is recorded, its file
//! moved into place and the image saved. Collection re-checks under the blob row's lock
//! that no image and no live instance references the blob before deleting row and file.
//! The HTTP side (who may do what) is in `api/images.rs`.

use crate::app::AppState;
use crate::app::images::blobs::{BlobError, BlobStore, Staged, Staging};
use crate::app::images::checks::{self as image_checks, Checked};
use crate::app::{Error, Kind, Result};
use plinth_api::*;
use plinth_domain::authz::Scope;
use plinth_store::{AuditEntry, StoreError};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Where each file of an image comes from, as registered (the private `sources` column).
pub type Sources = BTreeMap<ImageFileRole, ImageFileSource>;

/// An import that has not moved for this long is failed by the collector.
pub const STALE_IMPORT: Duration = Duration::from_secs(24 * 3600);
/// How long a URL import may wait for the next bytes.
const FETCH_IDLE: Duration = Duration::from_secs(60);

/// The blob store of this server, or `503 images_unavailable`.
pub fn blob_store(st: &AppState) -> Result<BlobStore> {
    let unavailable = |detail: &str| {
        Error::new(Kind::Unavailable, "images_unavailable", detail).with_constraint(json!({ "rule": "blob-dir" }))
    };
    match BlobStore::from_config(&st.config) {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => {
            tracing::error!("the blob directory is unusable: {e}");
            Err(unavailable("the server cannot use its blob directory; see its log"))
        }
        None => Err(unavailable(
            "this server keeps no image files: start it with a blob directory (PLINTH_BLOB_DIR, or `plinth up`)",
        )),
    }
}

/// What an instance boots from `image` (an available one).
pub fn boot_source(image: &Image) -> BootSource {
    let blob = |role: ImageFileRole| {
        image.files.iter().find(|f| f.role == role).map(|f| BlobRef {
            sha256: f.sha256.clone(),
            size_bytes: f.size_bytes,
            format: f.format,
        })
    };
    BootSource {
        image_id: image.id.clone(),
        boot: image.boot,
        disk: blob(ImageFileRole::Disk),
        kernel: blob(ImageFileRole::Kernel),
        initrd: blob(ImageFileRole::Initrd),
        cmdline: image.cmdline.clone(),
    }
}

/// `409 file_not_pending`: the image does not await this file (any more).
pub fn not_pending(image: &Image, role: ImageFileRole) -> Error {
    let status = plinth_store::image_status_str(image.status);
    let detail = if image.status != ImageStatus::Importing {
        format!("image {} is {status}: it takes no more files", image.id)
    } else if image.files.iter().any(|f| f.role == role) {
        format!("image {} already has its {} file", image.id, role.as_str())
    } else {
        format!("image {} has no {} file", image.id, role.as_str())
    };
    Error::new(Kind::Conflict, "file_not_pending", detail).with_constraint(json!({
        "rule": "file-pending", "role": role.as_str(), "status": status,
        "pending": image.pending.iter().map(|r| r.as_str()).collect::<Vec<_>>()
    }))
}

/// Lands a checked, staged file in its image: the blob is recorded and moved into place,
/// the file listed, and the image made available when nothing else is pending. `scope`
/// is the writer's (the caller's for uploads, the platform's for imports).
pub async fn land(
    st: &AppState,
    scope: &Scope,
    id: &str,
    role: ImageFileRole,
    staged: Staged,
    checked: Checked,
    audit: Option<&AuditEntry>,
) -> Result<Image> {
    let mut tx = st.store.begin().await?;
    let mut image: Image = tx.get(scope, id).await?;
    if image.status != ImageStatus::Importing || !image.pending.contains(&role) {
        return Err(not_pending(&image, role));
    }
    let (sha256, size) = (staged.sha256.clone(), staged.size);
    tx.upsert_blob(&sha256, size, checked.format.as_str()).await?;
    staged.commit().await.map_err(Error::internal)?;
    image.files.retain(|f| f.role != role);
    image.files.push(ImageFile {
        role,
        format: checked.format,
        sha256,
        size_bytes: size,
        virtual_size_bytes: checked.virtual_size,
    });
    image.files.sort_by_key(|f| f.role);
    image.pending.retain(|r| *r != role);
    if image.pending.is_empty() {
        image.status = ImageStatus::Available;
    }
    tx.save(&mut image).await?;
    if let Some(a) = audit {
        tx.audit(a, id, image.tenant_id.as_ref().map(|t| t.as_str()), 200).await?;
    }
    tx.commit().await?;
    if image.status == ImageStatus::Available {
        tracing::info!(image = %image.id, name = %image.name, "image available");
    }
    Ok(image)
}

/// Fails an importing image with `reason` and collects the blobs it held that nothing
/// else uses. None when the image is gone or no longer importing.
pub async fn fail(st: &AppState, id: &str, reason: String) -> Result<Option<Image>, StoreError> {
    let mut tx = st.store.begin().await?;
    let Some(mut image) = tx.find::<Image>(&Scope::Platform, id).await? else { return Ok(None) };
    if image.status != ImageStatus::Importing {
        return Ok(None);
    }
    image.status = ImageStatus::Failed;
    image.failure = Some(reason);
    image.pending.clear();
    tx.save(&mut image).await?;
    tx.commit().await?;
    tracing::warn!(image = %image.id, name = %image.name, "image failed: {}", image.failure.as_deref().unwrap_or(""));
    collect(st, image.files.iter().map(|f| f.sha256.clone()).collect()).await;
    Ok(Some(image))
}

/// Deletes each of `blobs` that no image and no live instance references (errors are
/// logged: the periodic collector retries).
pub async fn collect(st: &AppState, blobs: Vec<String>) {
    let Some(Ok(store)) = BlobStore::from_config(&st.config) else { return };
    for sha in &blobs {
        if let Err(e) = collect_one(st, &store, sha).await {
            tracing::warn!(blob = sha, "could not collect a blob: {e}");
        }
    }
}

/// Deletes one blob's row and file when nothing references it (checked under its lock).
async fn collect_one(st: &AppState, store: &BlobStore, sha256: &str) -> Result<bool, StoreError> {
    let mut tx = st.store.begin().await?;
    if !tx.lock_blob(sha256).await? || tx.blob_referenced(sha256).await? {
        return Ok(false);
    }
    tx.forget_blob(sha256).await?;
    if let Err(e) = store.remove(sha256).await {
        // Rolled back: the row stays, and so does the file.
        tracing::warn!(blob = sha256, "could not delete a blob file: {e}");
        return Ok(false);
    }
    tx.commit().await?;
    tracing::info!(blob = sha256, "blob collected");
    Ok(true)
}

/// The `image_gc` background task: deletes blobs nothing references, temporary files
/// left by interrupted transfers, and fails imports that stopped moving.
pub async fn gc(st: &AppState) -> Result<Value, StoreError> {
    let store = match BlobStore::from_config(&st.config) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Ok(json!({ "skipped": format!("blob directory unusable: {e}") })),
        None => return Ok(json!({ "skipped": "no blob directory" })),
    };
    let mut removed = 0;
    for sha in st.store.unreferenced_blobs(i64::MAX).await? {
        if collect_one(st, &store, &sha).await? {
            removed += 1;
        }
    }
    let temporary = store.sweep_temporary(STALE_IMPORT).await.unwrap_or(0);
    let mut failed = 0;
    let cutoff = plinth_store::now_micros() - STALE_IMPORT.as_micros() as i64;
    for id in st.store.stale_imports(cutoff).await? {
        let why = "the import did not finish within 24 hours; register the image again".to_string();
        if fail(st, &id, why).await?.is_some() {
            failed += 1;
        }
    }
    Ok(json!({ "blobs_removed": removed, "temporary_files_removed": temporary, "imports_failed": failed }))
}

/// A transfer refusal as a sentence (for `failure`).
pub fn reason(e: &BlobError) -> String {
    e.to_string()
}

/// Starts the server-side imports of a new image in the background; the first failure
/// fails the image.
pub fn spawn_imports(st: &AppState, id: ImageId, imports: Vec<(ImageFileRole, ImageFileSource)>) {
    if imports.is_empty() {
        return;
    }
    let st = st.clone();
    tokio::spawn(async move {
        for (role, src) in imports {
            match import_one(&st, &id, role, &src).await {
                Ok(true) => {}
                // The image was deleted or failed meanwhile: nothing more to do.
                Ok(false) => return,
                Err(why) => {
                    if let Err(e) = fail(&st, id.as_str(), format!("{}: {why}", role.as_str())).await {
                        tracing::error!(image = %id, "could not record a failed import: {e}");
                    }
                    return;
                }
            }
        }
    });
}

/// Imports one file; Ok(false) when the image no longer awaits it.
async fn import_one(st: &AppState, id: &ImageId, role: ImageFileRole, src: &ImageFileSource) -> Result<bool, String> {
    let store = blob_store(st).map_err(|e| e.detail)?;
    let mut staging = store.staging().await.map_err(|e| reason(&e))?;
    if let Some(url) = &src.url {
        fetch(&mut staging, url, store.max_bytes()).await?;
    } else if let Some(path) = &src.path {
        read_file(&mut staging, path).await?;
    } else {
        return Ok(true);
    }
    let staged = staging.finish(src.sha256.as_deref()).await.map_err(|e| reason(&e))?;
    let checked = image_checks::check(role, staged.path(), staged.size).await?;
    match land(st, &Scope::Platform, id.as_str(), role, staged, checked, None).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.code, "file_not_pending" | "not_found") => Ok(false),
        Err(e) => Err(format!("could not store the file: {}", e.detail)),
    }
}

/// Streams an http(s) URL into `staging`.
async fn fetch(staging: &mut Staging, url: &str, limit: u64) -> Result<(), String> {
    // rustls with the system's roots (no OpenSSL).
    let client = plinth_client::connect::builder()
        .connect_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let mut resp =
        client.get(url).send().await.map_err(|e| format!("GET {url}: {}", plinth_client::connect::describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url} answered {}", resp.status()));
    }
    if let Some(n) = resp.content_length()
        && n > limit
    {
        return Err(reason(&BlobError::TooLarge { limit }));
    }
    loop {
        let chunk = tokio::time::timeout(FETCH_IDLE, resp.chunk())
            .await
            .map_err(|_| format!("GET {url}: no data for {} s", FETCH_IDLE.as_secs()))?
            .map_err(|e| format!("GET {url}: {e}"))?;
        let Some(chunk) = chunk else { return Ok(()) };
        staging.write(&chunk).await.map_err(|e| reason(&e))?;
    }
}

/// Streams a file on the server into `staging`.
async fn read_file(staging: &mut Staging, path: &str) -> Result<(), String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    let mut f = tokio::fs::File::open(path).await.map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(|e| format!("cannot read {path}: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        staging.write(&buf[..n]).await.map_err(|e| reason(&e))?;
    }
}
