//! Image wire types: registered images (`/v1/images`), their files, and the boot source an
//! instance's spec carries to the agent.
//!
//! An image is either a **disk** image (one `disk` file, raw or qcow2, that the instance's
//! root disk is an overlay of) or a **direct-boot** image (a `kernel`, an optional
//! `initrd` and a kernel command line, plus an optional `disk`; without one the instance
//! gets a blank disk of its shape's size). Files are content-addressed by SHA-256: the
//! agent fetches them by digest from `GET /agent/v1/blobs/sha256/{hex}`.

use crate::ids::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// How an image boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageBoot {
    /// Firmware boots the `disk` file.
    Disk,
    /// QEMU loads `kernel` (+ `initrd`, + `cmdline`) directly.
    Direct,
}

/// Where an image is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageStatus {
    /// Files are being uploaded, fetched or checked.
    Importing,
    /// Every file is present and checked; instances may use it.
    Available,
    /// A file could not be fetched or failed a check; `failure` says why.
    Failed,
}

/// The part a file plays in an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFileRole {
    Disk,
    Kernel,
    Initrd,
}

impl ImageFileRole {
    /// The role's name as used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFileRole::Disk => "disk",
            ImageFileRole::Kernel => "kernel",
            ImageFileRole::Initrd => "initrd",
        }
    }
}

/// A file's format: disks are `raw` or `qcow2` (as `qemu-img info` detects it); kernels
/// and initrds are `raw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    /// The name `qemu-img` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// One stored, checked file of an image.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct ImageFile {
    pub role: ImageFileRole,
    pub format: ImageFormat,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub size_bytes: u64,
    /// For disks: the size the guest sees (`qemu-img info`'s virtual size).
    pub virtual_size_bytes: Option<u64>,
}

/// A registered image.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct Image {
    pub id: ImageId,
    /// `None`: a public image (registered by an operator), usable by every project.
    pub project_id: Option<ProjectId>,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub description: String,
    pub boot: ImageBoot,
    /// Kernel command line of a direct-boot image.
    pub cmdline: Option<String>,
    pub status: ImageStatus,
    /// Why it `failed`.
    pub failure: Option<String>,
    /// The files checked so far (all of them once `available`).
    pub files: Vec<ImageFile>,
    /// The files still expected (by upload or import), by role.
    pub pending: Vec<ImageFileRole>,
    pub labels: BTreeMap<String, String>,
    pub generation: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where one file of a new image comes from. With neither `url` nor `path` it is
/// uploaded: `PUT /v1/images/{id}/files/{role}` with the bytes as the body.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageFileSource {
    /// Import from an http(s) URL (operators only).
    #[serde(default)]
    pub url: Option<String>,
    /// Import from a file on the server (operators only).
    #[serde(default)]
    pub path: Option<String>,
    /// Expected lowercase hex SHA-256; the file is refused when it differs.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Body of `POST /v1/images`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageCreate {
    /// The owning project; omitted (operators only): a public image.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub boot: ImageBoot,
    /// Kernel command line (direct-boot images only).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// The files, by role: `disk` for disk images; `kernel` (required), `initrd` and
    /// `disk` (optional) for direct-boot images.
    pub files: BTreeMap<ImageFileRole, ImageFileSource>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `PATCH /v1/images/{id}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageUpdate {
    pub description: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// A file the agent fetches by digest.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct BlobRef {
    /// Lowercase hex SHA-256; fetched from `GET /agent/v1/blobs/sha256/{sha256}`.
    pub sha256: String,
    pub size_bytes: u64,
    pub format: ImageFormat,
}

/// What an instance boots, resolved from its image when its spec is written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct BootSource {
    pub image_id: ImageId,
    pub boot: ImageBoot,
    /// The base of the root disk (its overlay is grown to the shape's disk size);
    /// `None`: a blank disk of the shape's size.
    pub disk: Option<BlobRef>,
    pub kernel: Option<BlobRef>,
    pub initrd: Option<BlobRef>,
    pub cmdline: Option<String>,
}

/// Filters of `GET /v1/images`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::IntoParams)]
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
