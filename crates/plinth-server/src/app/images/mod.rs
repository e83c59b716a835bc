//! Images: registered boot images, their file uploads and imports, and the blobs behind
//! them (content-addressed files in `blobs.rs`, the checks a file passes before it is kept
//! in `checks.rs`, landing, failing and collecting them in `files.rs`).
//!
//! Who may do what: a project's members register images in it; only operators register
//! public images (usable by every project) and only operators import from a URL (the
//! server would fetch any address it can reach: SSRF) or a server path (it would read any
//! file the server can). Everyone sees public images and their own tenant's.
//!
//! A new image is `importing` with its files `pending`; uploads and imports land each
//! file after its checks, and the last one makes the image `available`. A check failure
//! makes it `failed` with the reason. An upload is three steps, so the HTTP layer can
//! stream the body to disk between them: [`prepare_upload`], [`Upload::staging`] (the
//! caller writes the bytes), [`finish_upload`].

pub mod blobs;
pub mod checks;
pub mod files;

use crate::app::{AppState, Caller, Error, Kind, Paging, Result, opt_labels, opt_text};
use blobs::{BlobError, BlobStore, Staging};
use chrono::Utc;
use files::Sources;
use plinth_api::*;
use plinth_domain::validate;
use plinth_store::Val;
use serde_json::json;

/// May the caller change `image` (upload to it, change or delete it)?
fn may_write(caller: &Caller, image: &Image, what: &str) -> Result<()> {
    let ok = match (&image.tenant_id, &image.project_id) {
        (Some(t), Some(p)) => caller.principal.can_write_in(t, Some(p)),
        _ => caller.principal.is_operator(),
    };
    if ok { Ok(()) } else { Err(Error::forbidden(what)) }
}

/// List the images the caller may see: public ones and its projects'.
pub async fn list(st: &AppState, caller: &Caller, p: &PageParams, f: ImageFilter) -> Result<Page<Image>> {
    let pg = Paging::from(p)?;
    let mut filters = Vec::new();
    if let Some(v) = f.project_id {
        filters.push(("project_id", v));
    }
    if let Some(v) = f.name {
        filters.push(("name", v));
    }
    if let Some(v) = f.status {
        filters.push(("status", plinth_store::image_status_str(v).to_string()));
    }
    if let Some(v) = f.public {
        filters.push(("public", v.to_string()));
    }
    Ok(st.store.list_images(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?)
}

/// Register an image.
///
/// Answers at once with the image `importing`; upload each pending file with
/// `PUT /v1/images/{id}/files/{role}` (`url` and `path` files are imported by the server,
/// operators only). A project's members register its images; public images (no
/// `project_id`) are for operators.
pub async fn create(st: &AppState, caller: &Caller, b: ImageCreate) -> Result<Image> {
    files::blob_store(st)?;
    validate::image(&b)?;
    if b.project_id.is_none() {
        caller.require_operator("registering public images")?;
    }
    for (role, s) in &b.files {
        let source = match (&s.url, &s.path) {
            (Some(_), _) => "url",
            (_, Some(_)) => "path",
            _ => continue,
        };
        if !caller.principal.is_operator() {
            let why = if source == "url" {
                "only operators may import from a URL: the server would fetch any address it can reach"
            } else {
                "only operators may import from a server path: it reads files on the server"
            };
            return Err(Error::new(Kind::Forbidden, "import_forbidden", why).with_constraint(json!({
                "rule": "role", "field": format!("files.{}.{source}", role.as_str()), "source": source
            })));
        }
    }
    let (tenant_id, project_id) = match &b.project_id {
        Some(p) => {
            let project: Project = st.store.get(&caller.scope(), p.as_str()).await?;
            if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
                return Err(Error::forbidden("registering images in this project"));
            }
            (Some(project.tenant_id), Some(project.id))
        }
        None => (None, None),
    };
    let now = Utc::now();
    let image = Image {
        id: ImageId::generate(),
        project_id,
        tenant_id,
        name: b.name.clone(),
        description: b.description.clone().unwrap_or_default(),
        boot: b.boot,
        cmdline: b.cmdline.clone(),
        status: ImageStatus::Importing,
        failure: None,
        files: vec![],
        pending: b.files.keys().copied().collect(),
        labels: b.labels.clone(),
        generation: 1,
        created_at: now,
        updated_at: now,
    };
    let sources: &Sources = &b.files;
    let sources_json = serde_json::to_string(sources).map_err(Error::internal)?;
    st.store.insert_with(&image, &[("sources", Val::text(sources_json))], &caller.audit()).await?;
    let imports = b.files.iter().filter(|(_, s)| s.url.is_some() || s.path.is_some());
    files::spawn_imports(st, image.id.clone(), imports.map(|(r, s)| (*r, s.clone())).collect());
    Ok(image)
}

/// Get an image.
pub async fn get(st: &AppState, caller: &Caller, id: &str) -> Result<Image> {
    Ok(st.store.get_image(&caller.scope(), id).await?)
}

/// Change an image's description or labels.
pub async fn update(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>, b: ImageUpdate) -> Result<Image> {
    let cur = st.store.get_image(&caller.scope(), id).await?;
    may_write(
        caller,
        &cur,
        if cur.project_id.is_some() { "changing images in this project" } else { "changing public images" },
    )?;
    opt_text("description", &b.description, 1024)?;
    opt_labels("labels", &b.labels)?;
    let image = st
        .store
        .update(&caller.scope(), id, if_match, &caller.audit(), |i: &mut Image| {
            if let Some(d) = b.description {
                i.description = d;
            }
            if let Some(l) = b.labels {
                i.labels = l;
            }
            Ok(vec![])
        })
        .await?;
    Ok(image)
}

/// Delete an image.
///
/// Instances already made from it keep booting from its files: those stay stored until
/// no live instance uses them.
pub async fn delete(st: &AppState, caller: &Caller, id: &str, if_match: Option<i64>) -> Result<()> {
    let cur = st.store.get_image(&caller.scope(), id).await?;
    may_write(
        caller,
        &cur,
        if cur.project_id.is_some() { "deleting images in this project" } else { "deleting public images" },
    )?;
    let gone = st.store.delete::<Image>(&caller.scope(), id, if_match, &caller.audit()).await?;
    files::collect(st, gone.files.iter().map(|f| f.sha256.clone()).collect()).await;
    Ok(())
}

/// `payload_too_large`: image files are limited to `limit` bytes here.
pub fn too_large(limit: u64) -> Error {
    Error::new(Kind::TooLarge, "payload_too_large", format!("image files are limited to {limit} bytes on this server"))
        .with_constraint(json!({ "rule": "max-bytes", "limit": limit }))
}

/// An upload the caller may make: where its bytes go and what they must be.
pub struct Upload {
    blobs: BlobStore,
    pub role: ImageFileRole,
    /// The SHA-256 the file was declared with, if any.
    pub sha256: Option<String>,
    /// The most bytes the file may have.
    pub limit: u64,
}

impl Upload {
    /// A temporary file in the blob directory to write the bytes to.
    pub async fn staging(&self) -> Result<Staging> {
        self.blobs.staging().await.map_err(Error::internal)
    }
}

/// Checks that the caller may upload the `role` file of image `id` now (it is pending and
/// not imported by the server).
pub async fn prepare_upload(st: &AppState, caller: &Caller, id: &str, role: &str) -> Result<Upload> {
    let blobs = files::blob_store(st)?;
    let image = st.store.get_image(&caller.scope(), id).await?;
    let role = match role {
        "disk" => ImageFileRole::Disk,
        "kernel" => ImageFileRole::Kernel,
        "initrd" => ImageFileRole::Initrd,
        other => {
            return Err(Error::new(
                Kind::NotFound,
                "not_found",
                format!("image files are disk, kernel or initrd, not {other:?}"),
            ));
        }
    };
    may_write(
        caller,
        &image,
        if image.project_id.is_some() { "uploading images in this project" } else { "uploading public images" },
    )?;
    if image.status != ImageStatus::Importing || !image.pending.contains(&role) {
        return Err(files::not_pending(&image, role));
    }
    let sources: Sources =
        serde_json::from_str(&st.store.image_sources(id).await?.unwrap_or_default()).unwrap_or_default();
    let source = sources.get(&role).cloned().unwrap_or_default();
    if source.url.is_some() || source.path.is_some() {
        return Err(Error::new(
            Kind::Conflict,
            "file_not_pending",
            format!("the {} file of image {id} is imported by the server, not uploaded", role.as_str()),
        )
        .with_constraint(json!({ "rule": "file-uploadable", "role": role.as_str() })));
    }
    let limit = blobs.max_bytes();
    Ok(Upload { blobs, role, sha256: source.sha256, limit })
}

/// Keeps the uploaded file once `received` (the transfer's outcome) is fine: its size and
/// declared SHA-256 are checked, then its content (a failed check fails the image), and
/// the file lands in the image. A `too_large` error tells the caller to drain the rest.
pub async fn finish_upload(
    st: &AppState,
    caller: &Caller,
    id: &str,
    up: Upload,
    staging: Staging,
    received: Result<(), BlobError>,
) -> Result<Image> {
    let role = up.role;
    let staged = match received {
        Ok(()) => staging.finish(up.sha256.as_deref()).await,
        Err(e) => Err(e),
    };
    let staged = match staged {
        Ok(s) => s,
        Err(BlobError::TooLarge { limit }) => return Err(too_large(limit)),
        Err(BlobError::Mismatch { expected, actual }) => {
            return Err(Error::invalid(
                "sha256_mismatch",
                format!("the {} file's SHA-256 is {actual}, not the declared {expected}; nothing was kept", role.as_str()),
            )
            .with_constraint(json!({
                "field": format!("files.{}.sha256", role.as_str()), "rule": "sha256", "expected": expected, "actual": actual
            })));
        }
        Err(BlobError::Source(why)) => return Err(Error::malformed("upload_incomplete", why)),
        Err(BlobError::Io(e)) => return Err(Error::internal(e)),
    };
    match checks::check(role, staged.path(), staged.size).await {
        Ok(checked) => Ok(files::land(st, &caller.scope(), id, role, staged, checked, Some(&caller.audit())).await?),
        Err(why) => {
            drop(staged);
            let why = format!("{}: {why}", role.as_str());
            files::fail(st, id, why.clone()).await?;
            Err(Error::invalid("image_check_failed", format!("image {id} failed: {why}"))
                .with_constraint(json!({ "rule": "image-check", "role": role.as_str() })))
        }
    }
}

/// The file of blob `sha256` for host `host_id`, and its length: only blobs an instance
/// placed on this host boots from, and the files of available public images; anything
/// else is `blob_not_found`.
pub async fn blob_for_host(st: &AppState, host_id: &HostId, sha256: &str) -> Result<(tokio::fs::File, u64)> {
    let not_found = || {
        Error::new(Kind::NotFound, "blob_not_found", format!("no blob {sha256} for this host"))
            .with_constraint(json!({ "rule": "blob-exists" }))
    };
    if !blobs::is_sha256_hex(sha256) {
        return Err(not_found());
    }
    let blobs = files::blob_store(st)?;
    if !st.store.host_may_fetch_blob(host_id.as_str(), sha256).await? {
        return Err(not_found());
    }
    let file = match tokio::fs::File::open(blobs.path_of(sha256)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(Error::internal(e)),
    };
    let len = file.metadata().await.map_err(Error::internal)?.len();
    Ok((file, len))
}
