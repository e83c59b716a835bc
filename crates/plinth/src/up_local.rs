//! What `plinth up` adds around its embedded server so a newcomer can boot a VM at once:
//! a local agent for this machine (enrolled on first start), the test guest registered as
//! the public image `test-guest`, and a demo tenant, project and shape.
//!
//! Everything goes through the public API with the operator token, as an operator would
//! do it by hand; nothing here reaches into the store.

use crate::agent_host::{RealHost, local_hostname};
use crate::cli::images::digest;
use crate::client::Client;
use anyhow::{Context, Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The demo's names.
pub const IMAGE: &str = "test-guest";
const TENANT: &str = "demo";
const PROJECT: &str = "demo";
const SHAPE: &str = "vm-tiny";

/// Where the test guest is: `$PLINTH_GUEST_DIR` or `~/.cache/plinth/test-guest`, if built.
pub fn test_guest_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("PLINTH_GUEST_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|c| c.join("plinth").join("test-guest")))?;
    dir.join("manifest.json").exists().then_some(dir)
}

async fn first_named(c: &Client, path: &str, name: &str) -> Result<Option<Value>> {
    let v = c.get(path, &[("name".to_string(), name.to_string())]).await?;
    Ok(v["items"].as_array().and_then(|a| a.iter().find(|i| i["name"] == name).cloned()))
}

async fn ensure(c: &Client, path: &str, name: &str, body: Value) -> Result<Value> {
    if let Some(v) = first_named(c, path, name).await? {
        return Ok(v);
    }
    c.call(Method::POST, path, &[], Some(&body)).await
}

/// The demo's `default` price book, so `plinth invoice show current` has something to say:
/// running and allocated time per hour, the boot disk per GiB-month (30 days).
fn demo_prices() -> Value {
    let price = |meter: &str, unit: &str, per: i64, micros: i64| {
        json!({ "meter": meter, "model": "flat", "pricing_unit": unit, "units_per_pricing_unit": per,
                "unit_price_micros": micros, "min_seconds_per_start": if meter == "running_seconds" { 60 } else { 0 },
                "rounding": "half_up" })
    };
    json!({ "name": "default", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "prices": [
        price("running_seconds", "hour", 3600, 10_000),
        price("allocated_seconds", "hour", 3600, 2_000),
        price("disk_gib_seconds", "GiB-month", 2_592_000, 100_000),
    ] })
}

/// Registers the test guest as the public image `test-guest` unless it exists.
async fn register_test_guest(c: &Client, dir: &Path) -> Result<()> {
    if let Some(img) = first_named(c, "/v1/images", IMAGE).await?
        && img["status"] != "failed"
    {
        return Ok(());
    }
    let kernel = dir.join("vmlinux");
    let initrd = dir.join("initramfs.cpio.gz");
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))?.trim().to_string();
    let body = json!({ "name": IMAGE, "boot": "direct", "cmdline": cmdline,
        "description": "Plinth's test guest: a Debian kernel and a busybox initramfs (scripts/test-guest)",
        "files": { "kernel": { "sha256": digest(&kernel).await?.0 }, "initrd": { "sha256": digest(&initrd).await?.0 } } });
    let img = c.call(Method::POST, "/v1/images", &[], Some(&body)).await?;
    let id = img["id"].as_str().ok_or_else(|| anyhow!("no image id in {img}"))?.to_string();
    for (role, path) in [("kernel", &kernel), ("initrd", &initrd)] {
        let f = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        let len = f.metadata().await?.len();
        c.put_file(&format!("/v1/images/{id}/files/{role}"), f, len)
            .await
            .with_context(|| format!("uploading the test guest's {role}"))?;
    }
    for _ in 0..600 {
        let v = c.get(&format!("/v1/images/{id}"), &[]).await?;
        match v["status"].as_str() {
            Some("available") => return Ok(()),
            Some("failed") => return Err(anyhow!("the test guest image failed: {}", v["failure"])),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(anyhow!("the test guest image did not become available within 60 s"))
}

/// Sets up the demo and starts the local agent; answers the agent's task. Prints the two
/// lines that boot a VM and read its console.
pub async fn start(
    data_dir: &Path,
    server: &str,
    token: &str,
    ca: Option<plinth_client::connect::Ca>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let c = Client::new(server, token, ca.as_ref());
    let hostname = local_hostname();
    let state_dir = data_dir.join("agent");
    let enrolled = state_dir.join("hosts").join(&hostname).join("credential.json").exists();
    let join_token = if enrolled {
        None
    } else {
        let jt = c
            .call(Method::POST, "/v1/host-join-tokens", &[], Some(&json!({ "description": "plinth up: local agent" })))
            .await?;
        Some(jt["secret"].as_str().ok_or_else(|| anyhow!("no join token secret"))?.to_string())
    };
    let host = RealHost {
        server: server.to_string(),
        join_token,
        ca,
        state_dir,
        hostname: hostname.clone(),
        root: PathBuf::from("/"),
        poll_wait: 30,
        graceful_timeout: Duration::from_secs(30),
        verbose: true,
    };
    let agent = tokio::spawn(crate::agent_host::run(host, stop));

    let tenant = ensure(&c, "/v1/tenants", TENANT, json!({ "name": TENANT, "display_name": "Demo" })).await?;
    let project = ensure(&c, "/v1/projects", PROJECT, json!({ "name": PROJECT, "tenant_id": tenant["id"] })).await?;
    ensure(&c, "/v1/shapes", SHAPE, json!({ "name": SHAPE, "vcpus": 1, "memory_mib": 256, "disk_gib": 1 })).await?;
    ensure(&c, "/v1/price-books", "default", demo_prices()).await?;
    match test_guest_dir() {
        Some(dir) => register_test_guest(&c, &dir).await.context("registering the test guest")?,
        None => println!("No test guest built (scripts/test-guest builds it): no `{IMAGE}` image registered."),
    }
    // The lines are printed once the host can take the VM (after its KVM probe).
    let mut host_ready = false;
    for _ in 0..1200 {
        if agent.is_finished() {
            break;
        }
        let host = first_named(&c, "/v1/hosts", &hostname).await?;
        if host.is_some_and(|h| h["state"] == "available") {
            host_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !host_ready {
        println!("The local agent has not made host {hostname} available (see its messages above).");
    }
    let prj = project["id"].as_str().unwrap_or(PROJECT);
    println!("A local agent runs this machine as host {hostname}. Boot a VM and read its console:\n");
    println!("  plinth instance create demo-vm --project {prj} --shape {SHAPE} --image {IMAGE} --wait");
    println!("  plinth instance console-log demo-vm --follow\n");
    Ok(agent)
}
