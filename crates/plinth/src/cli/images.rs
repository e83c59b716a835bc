//! `plinth image …`: register an image and stream its files to the server (each file's
//! SHA-256 computed here first and declared, so the server refuses a corrupted transfer),
//! or have the server import them (`--disk-url`, `--disk-path`: operators); then wait
//! until the image is available or print why it failed. Also list, show and delete.

use super::args::{labels, wire};
use super::{ListArgs, delete, get, none_match};
use crate::output::Out;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use plinth_api::*;
use plinth_client::resolve::resolve_opt;
use plinth_client::{Client, Images, Projects};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const COLUMNS: &[&str] = &["id", "name", "project_id", "boot", "status", "pending", "failure"];

/// Images.
#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// List the images you can use: public ones and your projects'.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this project's (id or name).
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// importing, available or failed.
        #[arg(long, value_parser = wire::<ImageStatus>)]
        status: Option<ImageStatus>,
        /// Only public images.
        #[arg(long)]
        public: bool,
    },
    /// Show one.
    #[command(alias = "get")]
    Show { id: String },
    /// Register an image, upload its files (or have the server import them), and wait
    /// until it is available.
    Create(Box<ImageCreateArgs>),
    /// Delete one (instances made from it keep working).
    Delete {
        id: String,
        /// Refuse unless the image is still at this generation.
        #[arg(long)]
        if_match: Option<i64>,
    },
}

/// Flags of `plinth image create`: a disk image (`--disk…`) or a direct-boot image
/// (`--kernel…`, optionally `--initrd…`, `--disk…` and `--cmdline`).
#[derive(Args, Debug)]
pub struct ImageCreateArgs {
    pub name: String,
    /// The project that owns it (id or name).
    #[arg(long, required_unless_present = "public")]
    pub project: Option<String>,
    /// A public image, usable by every project (operators).
    #[arg(long, conflicts_with = "project")]
    pub public: bool,
    #[arg(long)]
    pub description: Option<String>,
    /// A disk file to upload (raw or qcow2).
    #[arg(long, conflicts_with_all = ["disk_url", "disk_path"])]
    pub disk: Option<PathBuf>,
    /// Import the disk from an http(s) URL (operators).
    #[arg(long, conflicts_with = "disk_path")]
    pub disk_url: Option<String>,
    /// Import the disk from a file on the server (operators).
    #[arg(long)]
    pub disk_path: Option<String>,
    /// A kernel to upload: a direct-boot image.
    #[arg(long, conflicts_with_all = ["kernel_url", "kernel_path"])]
    pub kernel: Option<PathBuf>,
    /// Import the kernel from an http(s) URL (operators).
    #[arg(long, conflicts_with = "kernel_path")]
    pub kernel_url: Option<String>,
    /// Import the kernel from a file on the server (operators).
    #[arg(long)]
    pub kernel_path: Option<String>,
    /// An initrd to upload (direct boot).
    #[arg(long, conflicts_with_all = ["initrd_url", "initrd_path"])]
    pub initrd: Option<PathBuf>,
    /// Import the initrd from an http(s) URL (operators).
    #[arg(long, conflicts_with = "initrd_path")]
    pub initrd_url: Option<String>,
    /// Import the initrd from a file on the server (operators).
    #[arg(long)]
    pub initrd_path: Option<String>,
    /// Kernel command line of a direct-boot image.
    #[arg(long, default_value = "console=ttyS0")]
    pub cmdline: String,
    /// The expected SHA-256 of an imported disk (the server refuses another file).
    #[arg(long)]
    pub disk_sha256: Option<String>,
    /// k=v (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Do not wait for server-side imports to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
}

/// Where one file comes from.
enum Source<'a> {
    Upload(&'a Path),
    Url(&'a str),
    ServerPath(&'a str),
}

impl ImageCreateArgs {
    fn sources(&self) -> Vec<(ImageFileRole, Source<'_>)> {
        let mut out = vec![];
        let roles = [
            (ImageFileRole::Disk, &self.disk, &self.disk_url, &self.disk_path),
            (ImageFileRole::Kernel, &self.kernel, &self.kernel_url, &self.kernel_path),
            (ImageFileRole::Initrd, &self.initrd, &self.initrd_url, &self.initrd_path),
        ];
        for (role, file, url, path) in roles {
            if let Some(f) = file {
                out.push((role, Source::Upload(f)));
            } else if let Some(u) = url {
                out.push((role, Source::Url(u)));
            } else if let Some(p) = path {
                out.push((role, Source::ServerPath(p)));
            }
        }
        out
    }
}

/// SHA-256 (lowercase hex) and length of a local file, read in 1 MiB pieces.
pub async fn digest(path: &Path) -> Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await.with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hex::encode(h.finalize()), len))
}

impl ImageCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            ImageCmd::List { page, project, name, status, public } => {
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let filter = ImageFilter {
                    project_id: project_id.clone(),
                    name: name.clone(),
                    status: *status,
                    public: public.then_some(true),
                };
                let d = c.list::<Images>(&page.page(), &filter).await?;
                let filters = [
                    ("project", project_id),
                    ("name", name.clone()),
                    ("status", status.map(|s| format!("{s:?}").to_lowercase())),
                    ("public", public.then(|| "true".to_string())),
                ];
                none_match("images", &d, &filters);
                o.list(&d, COLUMNS)
            }
            ImageCmd::Show { id } => get::<Images>(c, o, id).await,
            ImageCmd::Create(a) => create(c, o, a).await,
            ImageCmd::Delete { id, if_match } => delete::<Images>(c, id, *if_match).await,
        }
    }
}

async fn create(c: &Client, o: &Out, a: &ImageCreateArgs) -> Result<()> {
    let sources = a.sources();
    let has = |role: ImageFileRole| sources.iter().any(|(r, _)| *r == role);
    if !has(ImageFileRole::Disk) && !has(ImageFileRole::Kernel) {
        bail!("give a disk (--disk, --disk-url or --disk-path) or a kernel (--kernel, …)");
    }
    let direct = has(ImageFileRole::Kernel);
    if has(ImageFileRole::Initrd) && !direct {
        bail!("an initrd needs a kernel (a direct-boot image)");
    }
    // Digests first: declared, they make the server refuse a file that changed on the way.
    let mut files = BTreeMap::new();
    let mut uploads = vec![];
    for (role, src) in &sources {
        let expected = if *role == ImageFileRole::Disk { a.disk_sha256.clone() } else { None };
        let spec = match src {
            Source::Upload(path) => {
                let (sha, len) = digest(path).await?;
                uploads.push((*role, path.to_path_buf(), len));
                ImageFileSource { sha256: Some(sha), ..Default::default() }
            }
            Source::Url(u) => ImageFileSource { url: Some(u.to_string()), path: None, sha256: expected },
            Source::ServerPath(p) => ImageFileSource { url: None, path: Some(p.to_string()), sha256: expected },
        };
        files.insert(*role, spec);
    }
    let body = ImageCreate {
        project_id: resolve_opt::<Projects>(c, a.project.as_deref()).await?.map(ProjectId),
        name: a.name.clone(),
        description: a.description.clone(),
        boot: if direct { ImageBoot::Direct } else { ImageBoot::Disk },
        cmdline: direct.then(|| a.cmdline.clone()),
        files,
        labels: labels(&a.labels),
    };
    let mut last = c.create::<Images>(&body).await?;
    let id = last.id.to_string();
    eprintln!("registered {id} ({})", a.name);
    for (role, path, len) in uploads {
        let started = Instant::now();
        let role_name = role.as_str();
        eprintln!("uploading {role_name}: {} ({len} bytes)", path.display());
        let f = tokio::fs::File::open(&path).await.with_context(|| format!("opening {}", path.display()))?;
        last = c.upload_image_file(&id, role, f, len).await?;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!("  {role_name} stored ({:.1} MiB/s)", len as f64 / secs / (1 << 20) as f64);
    }
    if last.status == ImageStatus::Importing && !a.no_wait {
        let pending: Vec<&str> = last.pending.iter().map(|r| r.as_str()).collect();
        eprintln!("waiting for the server to import {}", pending.join(", "));
        let deadline = Instant::now() + Duration::from_secs(a.timeout);
        while last.status == ImageStatus::Importing {
            if Instant::now() > deadline {
                bail!("{id} is still importing after {} s; check it with `plinth image show {id}`", a.timeout);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            last = c.view::<Images>(&id).await?;
        }
    }
    if last.status == ImageStatus::Failed {
        bail!("image {id} failed: {}", last.failure.as_deref().unwrap_or("no reason given"));
    }
    o.object(&last)
}
