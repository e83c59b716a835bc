//! `/v1/images`: registered boot images, their file uploads, and the agent's download of
//! their blobs (`GET /agent/v1/blobs/sha256/{hex}`).
//!
//! The use cases and who may do what are in [`crate::app::images`]; this module streams
//! uploads to disk (and drains a refused one, so the client hears the answer) and
//! downloads from it.

use super::agent::HostCaller;
use super::created;
use crate::app::images;
use crate::app::images::blobs::{BlobError, Staging};
use crate::app::{AppState, Kind};
use crate::context::Authed;
use crate::error::ApiResult;
use crate::extract::{IfMatch, Json, Query};
use axum::Json as Out;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use plinth_api::*;
use std::time::Duration;

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
    Ok(Out(images::list(&st, &caller, &p, f).await?))
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
    Ok(created(images::create(&st, &caller, b).await?))
}

/// Get an image.
#[utoipa::path(get, path = "/v1/images/{id}", tag = "images", operation_id = "image_view",
    params(("id" = String, Path, description = "Image id")),
    responses((status = 200, description = "The image", body = Image)))]
pub async fn get(State(st): State<AppState>, Authed(caller): Authed, Path(id): Path<String>) -> ApiResult<Out<Image>> {
    Ok(Out(images::get(&st, &caller, &id).await?))
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
    Ok(Out(images::update(&st, &caller, &id, if_match, b).await?))
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
    images::delete(&st, &caller, &id, if_match).await?;
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
    let up = images::prepare_upload(&st, &caller, &id, &role).await?;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > up.limit) {
        drain(&headers, body).await;
        return Err(images::too_large(up.limit).into());
    }
    let mut staging = up.staging().await?;
    let received = receive(&mut staging, &mut body).await;
    match images::finish_upload(&st, &caller, &id, up, staging, received).await {
        Ok(image) => Ok(Out(image)),
        Err(e) if e.kind == Kind::TooLarge => {
            drain(&headers, body).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
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
    let (file, len) = images::blob_for_host(&st, &caller.host_id, &sha256).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, len.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}
