//! `plinth image …`: register an image and stream its files to the server (each file's
//! SHA-256 computed here first and declared, so the server refuses a corrupted transfer),
//! or have the server import them (`--disk-url`, `--disk-path`: operators); then wait
//! until the image is available or print why it failed. Also list, show and delete.

use super::ListArgs;
use super::args::labels;
use crate::client::Client;
use crate::output::{self, Format};
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, json};
use sha2::{Digest, Sha256};
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
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// importing, available or failed.
        #[arg(long)]
        status: Option<String>,
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
    /// The project that owns it.
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
    fn sources(&self) -> Vec<(&'static str, Source<'_>)> {
        let mut out = vec![];
        let roles = [
            ("disk", &self.disk, &self.disk_url, &self.disk_path),
            ("kernel", &self.kernel, &self.kernel_url, &self.kernel_path),
            ("initrd", &self.initrd, &self.initrd_url, &self.initrd_path),
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
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            ImageCmd::List { page, project, name, status, public } => {
                let mut q = page.query();
                for (k, v) in [("project_id", project), ("name", name), ("status", status)] {
                    if let Some(v) = v {
                        q.push((k.to_string(), v.clone()));
                    }
                }
                if *public {
                    q.push(("public".into(), "true".into()));
                }
                let v = c.get("/v1/images", &q).await?;
                output::list(o, &v, COLUMNS);
                Ok(())
            }
            ImageCmd::Show { id } => {
                output::object(o, &c.get(&format!("/v1/images/{id}"), &[]).await?);
                Ok(())
            }
            ImageCmd::Create(a) => create(c, o, a).await,
            ImageCmd::Delete { id, if_match } => {
                c.call_with_if_match(Method::DELETE, &format!("/v1/images/{id}"), *if_match, None).await?;
                eprintln!("deleted {id}");
                Ok(())
            }
        }
    }
}

async fn create(c: &Client, o: Format, a: &ImageCreateArgs) -> Result<()> {
    let sources = a.sources();
    let has = |role: &str| sources.iter().any(|(r, _)| *r == role);
    if !has("disk") && !has("kernel") {
        bail!("give a disk (--disk, --disk-url or --disk-path) or a kernel (--kernel, …)");
    }
    let direct = has("kernel");
    if has("initrd") && !direct {
        bail!("an initrd needs a kernel (a direct-boot image)");
    }
    // Digests first: declared, they make the server refuse a file that changed on the way.
    let mut files = Map::new();
    let mut uploads = vec![];
    for (role, src) in &sources {
        let spec = match src {
            Source::Upload(path) => {
                let (sha, len) = digest(path).await?;
                uploads.push((*role, path.to_path_buf(), len));
                json!({ "sha256": sha })
            }
            Source::Url(u) => json!({ "url": u, "sha256": if *role == "disk" { a.disk_sha256.clone() } else { None } }),
            Source::ServerPath(p) => {
                json!({ "path": p, "sha256": if *role == "disk" { a.disk_sha256.clone() } else { None } })
            }
        };
        files.insert(role.to_string(), super::args::compact(spec));
    }
    let mut body = json!({
        "name": a.name,
        "boot": if direct { "direct" } else { "disk" },
        "files": files,
        "labels": labels(&a.labels),
    });
    if let Some(p) = &a.project {
        body["project_id"] = json!(p);
    }
    if let Some(d) = &a.description {
        body["description"] = json!(d);
    }
    if direct {
        body["cmdline"] = json!(a.cmdline);
    }
    let img = c.call(Method::POST, "/v1/images", &[], Some(&body)).await?;
    let id = img["id"].as_str().ok_or_else(|| anyhow!("the server answered no image id"))?.to_string();
    eprintln!("registered {id} ({})", a.name);
    let mut last = img;
    for (role, path, len) in uploads {
        let started = Instant::now();
        eprintln!("uploading {role}: {} ({len} bytes)", path.display());
        let f = tokio::fs::File::open(&path).await.with_context(|| format!("opening {}", path.display()))?;
        last = c.put_file(&format!("/v1/images/{id}/files/{role}"), f, len).await?;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        eprintln!("  {role} stored ({:.1} MiB/s)", len as f64 / secs / (1 << 20) as f64);
    }
    if last["status"] == "importing" && !a.no_wait {
        eprintln!("waiting for the server to import {}", last["pending"]);
        let deadline = Instant::now() + Duration::from_secs(a.timeout);
        while last["status"] == "importing" {
            if Instant::now() > deadline {
                bail!("{id} is still importing after {} s; check it with `plinth image show {id}`", a.timeout);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            last = c.get(&format!("/v1/images/{id}"), &[]).await?;
        }
    }
    if last["status"] == "failed" {
        bail!("image {id} failed: {}", last["failure"].as_str().unwrap_or("no reason given"));
    }
    output::object(o, &last);
    Ok(())
}
