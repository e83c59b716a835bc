//! What `plinth up` adds around its embedded server so a newcomer can boot a VM at once:
//! a local agent for this machine (enrolled on first start), the test guest registered as
//! the public image `test-guest`, and a demo tenant, project and shape.
//!
//! Everything goes through the public API with the operator token, as an operator would
//! do it by hand; nothing here reaches into the store.

use crate::agent_host::{RealHost, local_hostname};
use crate::cli::images::digest;
use anyhow::{Context, Result, anyhow};
use plinth_api::*;
use plinth_client::resolve::find;
use plinth_client::{Client, Creatable, Hosts, Images, JoinTokens, Named, PriceBooks, Projects, Shapes, Tenants};
use std::collections::BTreeMap;
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

/// The object named `name`, created from `body` unless it exists.
async fn ensure<R: Named + Creatable<Created = <R as plinth_client::Resource>::Item>>(
    c: &Client,
    name: &str,
    body: R::Create,
) -> Result<R::Item> {
    if let Some(v) = find::<R>(c, name).await? {
        return Ok(v);
    }
    Ok(c.create::<R>(&body).await?.into_inner())
}

/// The demo's `default` price book, so `plinth invoice show current` has something to say:
/// running and allocated time per hour, the boot disk per GiB-month (30 days).
fn demo_prices() -> PriceBookCreate {
    let price = |meter: Meter, dimension: Option<&str>, unit: &str, per: i64, micros: i64| Price {
        meter,
        dimension: dimension.map(str::to_string),
        model: ChargeModel::Flat,
        pricing_unit: unit.to_string(),
        units_per_pricing_unit: per,
        unit_price_micros: micros,
        tiers: vec![],
        min_seconds_per_start: if meter == Meter::RunningSeconds { 60 } else { 0 },
        rounding: Rounding::HalfUp,
    };
    PriceBookCreate {
        name: "default".into(),
        currency: "USD".into(),
        effective_from: "2020-01-01T00:00:00Z".parse().expect("a valid RFC 3339 time"),
        prices: vec![
            price(Meter::RunningSeconds, None, "hour", 3600, 10_000),
            price(Meter::AllocatedSeconds, None, "hour", 3600, 2_000),
            price(Meter::DiskGibSeconds, None, "GiB-month", 2_592_000, 100_000),
            // A public IPv4 address (floating or SNAT), as the big clouds price it.
            price(Meter::AddressSeconds, None, "hour", 3600, 5_000),
            // Internet egress by the GB; egress within the VPC (class all) shown, free.
            price(Meter::EgressBytes, Some("internet"), "GB", 1_000_000_000, 90_000),
            price(Meter::EgressBytes, Some("all"), "GB", 1_000_000_000, 0),
        ],
    }
}

/// Registers the test guest as the public image `test-guest` unless it exists.
async fn register_test_guest(c: &Client, dir: &Path) -> Result<()> {
    if let Some(img) = find::<Images>(c, IMAGE).await?
        && img.status != ImageStatus::Failed
    {
        return Ok(());
    }
    let kernel = dir.join("vmlinux");
    let initrd = dir.join("initramfs.cpio.gz");
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))?.trim().to_string();
    let file = |sha256: String| ImageFileSource { sha256: Some(sha256), ..Default::default() };
    let body = ImageCreate {
        project_id: None,
        name: IMAGE.into(),
        description: Some("Plinth's test guest: a Debian kernel and a busybox initramfs (scripts/test-guest)".into()),
        boot: ImageBoot::Direct,
        cmdline: Some(cmdline),
        files: BTreeMap::from([
            (ImageFileRole::Kernel, file(digest(&kernel).await?.0)),
            (ImageFileRole::Initrd, file(digest(&initrd).await?.0)),
        ]),
        labels: BTreeMap::new(),
    };
    let img = c.create::<Images>(&body).await?;
    let id = img.id.as_str();
    for (role, path) in [(ImageFileRole::Kernel, &kernel), (ImageFileRole::Initrd, &initrd)] {
        let f = tokio::fs::File::open(path).await.with_context(|| format!("opening {}", path.display()))?;
        let len = f.metadata().await?.len();
        c.upload_image_file(id, role, f, len)
            .await
            .with_context(|| format!("uploading the test guest's {}", role.as_str()))?;
    }
    for _ in 0..600 {
        let v = c.view::<Images>(id).await?;
        match v.status {
            ImageStatus::Available => return Ok(()),
            ImageStatus::Failed => {
                return Err(anyhow!(
                    "the test guest image failed: {}",
                    v.failure.as_deref().unwrap_or("no reason given")
                ));
            }
            ImageStatus::Importing => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Err(anyhow!("the test guest image did not become available within 60 s"))
}

/// The price book version named `name`, if any.
async fn find_price_book(c: &Client, name: &str) -> Result<Option<PriceBook>> {
    let filter = PriceBookFilter { name: Some(name.to_string()) };
    Ok(c.list_all::<PriceBooks>(&filter).await?.into_iter().find(|b| b.name == name))
}

/// Sets up the demo and starts the local agent; answers the agent's task. Prints the two
/// lines that boot a VM and read its console.
pub async fn start(
    data_dir: &Path,
    server: &str,
    token: &str,
    ca: Option<plinth_client::connect::Ca>,
    provider_bridge: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let c = Client::new(server, token, ca.as_ref());
    let hostname = local_hostname();
    let state_dir = data_dir.join("agent");
    let enrolled = state_dir.join("hosts").join(&hostname).join("credential.json").exists();
    let join_token = if enrolled {
        None
    } else {
        let body = HostJoinTokenCreate { description: Some("plinth up: local agent".into()), ..Default::default() };
        Some(c.create::<JoinTokens>(&body).await?.into_inner().secret)
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
        underlay_ip: None,
        netns_prefix: "pv-".into(),
        provider_bridge,
        counter_period: Duration::from_secs(30),
        datapath: crate::agent_host::Datapath::LinuxBridge,
        volume_pool: None,
    };
    let agent = tokio::spawn(crate::agent_host::run(host, stop));

    let tenant = TenantCreate { name: TENANT.into(), display_name: Some("Demo".into()), labels: BTreeMap::new() };
    let tenant = ensure::<Tenants>(&c, TENANT, tenant).await?;
    let project =
        ProjectCreate { tenant_id: Some(tenant.id), name: PROJECT.into(), description: None, labels: BTreeMap::new() };
    let project = ensure::<Projects>(&c, PROJECT, project).await?;
    let shape = ShapeCreate {
        name: SHAPE.into(),
        description: None,
        vcpus: 1,
        memory_mib: 256,
        disk_gib: 1,
        gpu: None,
        cpu_policy: CpuPolicy::Shared,
        hugepages: Hugepages::None,
        runtime_class: RuntimeClass::Vm,
    };
    ensure::<Shapes>(&c, SHAPE, shape).await?;
    if find_price_book(&c, "default").await?.is_none() {
        c.create::<PriceBooks>(&demo_prices()).await?;
    }
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
        let host = find::<Hosts>(&c, &hostname).await?;
        if host.is_some_and(|h| h.state == HostState::Available) {
            host_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !host_ready {
        println!("The local agent has not made host {hostname} available (see its messages above).");
    }
    let prj = project.id;
    println!("A local agent runs this machine as host {hostname}. Boot a VM, read its console and type into it:\n");
    println!("  plinth instance create demo-vm --project {prj} --shape {SHAPE} --image {IMAGE} --wait");
    println!("  plinth instance console-log demo-vm --follow");
    println!("  plinth instance console-send demo-vm hostname\n");
    Ok(agent)
}
