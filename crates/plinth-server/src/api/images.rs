//! `/v1/images`: registered boot images, their file uploads, and the agent's download of
//! their blobs (`GET /agent/v1/blobs/sha256/{hex}`).
//!
//! Who may do what: a project's members register images in it; only operators register
//! public images (usable by every project) and only operators import from a URL (the
//! server would fetch any address it can reach: SSRF) or a server path (it would read any
//! file the server can). Everyone sees public images and their own tenant's.
//!
//! A new image is `importing` with its files `pending`; uploads (`PUT …/files/{role}`)
//! and imports land each file after its checks (`image_checks`), and the last one makes
//! the image `available`. A check failure makes it `failed` with the reason. Uploads are
//! streamed to disk and never held in memory.

use super::agent::HostCaller;
use super::{created, opt_labels, opt_text};
use crate::app::AppState;
use crate::app::images::blobs::{BlobError, Staging, is_sha256_hex};
use crate::app::images::checks as image_checks;
use crate::app::images::files::{self as images, Sources};
use crate::context::{Authed, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::{IfMatch, Json, Paging, Query};
use axum::Json as Out;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http_body_util::BodyExt;
use plinth_api::*;
use plinth_domain::validate;
use plinth_store::Val;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use utoipa::IntoParams;

/// Filters of `GET /v1/images`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageFilter {
    /// Only this project's images.
    pub project_id: Option<String>,
    /// Only images with this name.
    pub name: Option<String>,
    /// `importing`, `available` or `failed`.
    pub status: Option<ImageStatus>,
    /// `true`: only public images; `false`: only project images.
    pub public: Option<bool>,
}

/// May the caller change `image` (upload to it, change or delete it)?
fn may_write(caller: &Caller, image: &Image, what: &str) -> ApiResult<()> {
    let ok = match (&image.tenant_id, &image.project_id) {
        (Some(t), Some(p)) => caller.principal.can_write_in(t, Some(p)),
        _ => caller.principal.is_operator(),
    };
    if ok { Ok(()) } else { Err(ApiError::forbidden(what)) }
}

/// List the images the caller may see: public ones and its projects'.
#[utoipa::path(get, path = "/v1/images", tag = "images", operation_id = "image_list",
    params(PageParams, ImageFilter),
    responses((status = 200, description = "Images", body = Page<Image>)))]
pub async fn list(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Query(p): Query<PageParams>,
    Query(f): Query<ImageFilter>,
) -> ApiResult<Out<Page<Image>>> {
    let pg = Paging::from(&p)?;
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
    Ok(Out(st.store.list_images(&caller.scope(), &filters, pg.limit, pg.cursor.as_deref()).await?))
}

/// Register an image.
///
/// Answers at once with the image `importing`; upload each pending file with
/// `PUT /v1/images/{id}/files/{role}` (`url` and `path` files are imported by the server,
/// operators only). A project's members register its images; public images (no
/// `project_id`) are for operators.
#[utoipa::path(post, path = "/v1/images", tag = "images", operation_id = "image_create", request_body = ImageCreate,
    responses((status = 201, description = "The new image, importing; `pending` lists the files it awaits", body = Image)))]
pub async fn create(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Json(b): Json<ImageCreate>,
) -> ApiResult<Response> {
    images::blob_store(&st)?;
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
            return Err(ApiError::new(StatusCode::FORBIDDEN, "import_forbidden", why).with_constraint(json!({
                "rule": "role", "field": format!("files.{}.{source}", role.as_str()), "source": source
            })));
        }
    }
    let (tenant_id, project_id) = match &b.project_id {
        Some(p) => {
            let project: Project = st.store.get(&caller.scope(), p.as_str()).await?;
            if !caller.principal.can_write_in(&project.tenant_id, Some(&project.id)) {
                return Err(ApiError::forbidden("registering images in this project"));
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
    let sources_json = serde_json::to_string(sources).map_err(ApiError::internal)?;
    st.store.insert_with(&image, &[("sources", Val::text(sources_json))], &caller.audit()).await?;
    let imports = b.files.iter().filter(|(_, s)| s.url.is_some() || s.path.is_some());
    images::spawn_imports(&st, image.id.clone(), imports.map(|(r, s)| (*r, s.clone())).collect());
    Ok(created(image))
}

/// Get an image.
#[utoipa::path(get, path = "/v1/images/{id}", tag = "images", operation_id = "image_view",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, description = "The image", body = Image)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Image>> {
    Ok(Out(st.store.get_image(&caller.scope(), &id).await?))
}

/// Change an image's description or labels.
#[utoipa::path(patch, path = "/v1/images/{id}", tag = "images", operation_id = "image_update",
    params(("id" = String, Path, description = "Image id")), request_body = ImageUpdate,
    responses((status = 200, description = "The image", body = Image)))]
pub async fn update(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    Json(b): Json<ImageUpdate>,
) -> ApiResult<Out<Image>> {
    let cur = st.store.get_image(&caller.scope(), &id).await?;
    may_write(
        &caller,
        &cur,
        if cur.project_id.is_some() { "changing images in this project" } else { "changing public images" },
    )?;
    opt_text("description", &b.description, 1024)?;
    opt_labels("labels", &b.labels)?;
    let image = st
        .store
        .update(&caller.scope(), &id, if_match, &caller.audit(), |i: &mut Image| {
            if let Some(d) = b.description {
                i.description = d;
            }
            if let Some(l) = b.labels {
                i.labels = l;
            }
            Ok(vec![])
        })
        .await?;
    Ok(Out(image))
}

/// Delete an image.
///
/// Instances already made from it keep booting from its files: those stay stored until
/// no live instance uses them.
#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images", operation_id = "image_delete",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    let cur = st.store.get_image(&caller.scope(), &id).await?;
    may_write(
        &caller,
        &cur,
        if cur.project_id.is_some() { "deleting images in this project" } else { "deleting public images" },
    )?;
    let gone = st.store.delete::<Image>(&caller.scope(), &id, if_match, &caller.audit()).await?;
    images::collect(&st, gone.files.iter().map(|f| f.sha256.clone()).collect()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The most of a refused upload's body read (and dropped) so the client hears the answer.
const DRAIN_LIMIT: u64 = 8 << 20;

/// Reads and drops what is left of a refused upload (up to [`DRAIN_LIMIT`] bytes and 10 s),
/// so that a client still sending reads the refusal instead of a reset connection. A
/// client that sent `Expect: 100-continue` has sent nothing yet and is not waited for.
async fn drain(headers: &HeaderMap, mut body: Body) {
    let expects = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut read = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map(|d| d.len() as u64).unwrap_or(0);
            if read > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("image files are limited to {limit} bytes on this server"),
    )
    .with_constraint(json!({ "rule": "max-bytes", "limit": limit }))
}

/// Streams the request body into `staging`.
async fn receive(staging: &mut Staging, body: &mut Body) -> Result<(), BlobError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BlobError::Source(format!("the upload broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            staging.write(&data).await?;
        }
    }
    Ok(())
}

/// Upload one pending file of an image.
///
/// The body is the file's bytes, streamed to disk, limited in size (`413
/// payload_too_large`), compared with the declared SHA-256 (`422 sha256_mismatch`), then
/// checked as a disk (raw or qcow2, no backing file), kernel or initrd (`422
/// image_check_failed`, and the image is `failed`). The last pending file makes the image
/// available.
#[utoipa::path(put, path = "/v1/images/{id}/files/{role}", tag = "images", operation_id = "image_upload",
    params(("id" = String, Path, description = "Image id"), ("role" = ImageFileRole, Path, description = "disk, kernel or initrd")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses((status = 200, description = "The image, with the file listed (available once nothing is pending)", body = Image)))]
pub async fn upload(
    State(st): State<AppState>,
    Authed(caller): Authed,
    Path((id, role)): Path<(String, String)>,
    headers: HeaderMap,
    mut body: Body,
) -> ApiResult<Out<Image>> {
    let blobs = images::blob_store(&st)?;
    let image = st.store.get_image(&caller.scope(), &id).await?;
    let role = match role.as_str() {
        "disk" => ImageFileRole::Disk,
        "kernel" => ImageFileRole::Kernel,
        "initrd" => ImageFileRole::Initrd,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("image files are disk, kernel or initrd, not {other:?}"),
            ));
        }
    };
    may_write(
        &caller,
        &image,
        if image.project_id.is_some() { "uploading images in this project" } else { "uploading public images" },
    )?;
    if image.status != ImageStatus::Importing || !image.pending.contains(&role) {
        return Err(images::not_pending(&image, role).into());
    }
    let sources: Sources =
        serde_json::from_str(&st.store.image_sources(&id).await?.unwrap_or_default()).unwrap_or_default();
    let source = sources.get(&role).cloned().unwrap_or_default();
    if source.url.is_some() || source.path.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "file_not_pending",
            format!("the {} file of image {id} is imported by the server, not uploaded", role.as_str()),
        )
        .with_constraint(json!({ "rule": "file-uploadable", "role": role.as_str() })));
    }
    let limit = blobs.max_bytes();
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        drain(&headers, body).await;
        return Err(too_large(limit));
    }
    let mut staging = blobs.staging().await.map_err(ApiError::internal)?;
    let received = receive(&mut staging, &mut body).await;
    let staged = match received {
        Ok(()) => staging.finish(source.sha256.as_deref()).await,
        Err(e) => Err(e),
    };
    let staged = match staged {
        Ok(s) => s,
        Err(BlobError::TooLarge { limit }) => {
            drain(&headers, body).await;
            return Err(too_large(limit));
        }
        Err(BlobError::Mismatch { expected, actual }) => {
            return Err(ApiError::invalid(
                "sha256_mismatch",
                format!("the {} file's SHA-256 is {actual}, not the declared {expected}; nothing was kept", role.as_str()),
            )
            .with_constraint(json!({
                "field": format!("files.{}.sha256", role.as_str()), "rule": "sha256", "expected": expected, "actual": actual
            })));
        }
        Err(BlobError::Source(why)) => return Err(ApiError::new(StatusCode::BAD_REQUEST, "upload_incomplete", why)),
        Err(BlobError::Io(e)) => return Err(ApiError::internal(e)),
    };
    match image_checks::check(role, staged.path(), staged.size).await {
        Ok(checked) => {
            Ok(Out(images::land(&st, &caller.scope(), &id, role, staged, checked, Some(&caller.audit())).await?))
        }
        Err(why) => {
            drop(staged);
            let why = format!("{}: {why}", role.as_str());
            images::fail(&st, &id, why.clone()).await?;
            Err(ApiError::invalid("image_check_failed", format!("image {id} failed: {why}"))
                .with_constraint(json!({ "rule": "image-check", "role": role.as_str() })))
        }
    }
}

/// Download an image file by its SHA-256.
///
/// Only blobs an instance placed on this host boots from, and the files of available
/// public images; anything else is `404 blob_not_found`.
#[utoipa::path(get, path = "/agent/v1/blobs/sha256/{sha256}", tag = "agent", operation_id = "agent_blob",
    params(("sha256" = String, Path, description = "Lowercase hex SHA-256 of the file")),
    responses((status = 200, description = "The file's bytes", body = Vec<u8>, content_type = "application/octet-stream")))]
pub async fn blob(State(st): State<AppState>, caller: HostCaller, Path(sha256): Path<String>) -> ApiResult<Response> {
    let not_found = || {
        ApiError::new(StatusCode::NOT_FOUND, "blob_not_found", format!("no blob {sha256} for this host"))
            .with_constraint(json!({ "rule": "blob-exists" }))
    };
    if !is_sha256_hex(&sha256) {
        return Err(not_found());
    }
    let blobs = images::blob_store(&st)?;
    if !st.store.host_may_fetch_blob(caller.host_id.as_str(), &sha256).await? {
        return Err(not_found());
    }
    let file = match tokio::fs::File::open(blobs.path_of(&sha256)).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}
