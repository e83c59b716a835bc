//! The agent of a real host (`plinth agent`, runtime `qemu`): discovers the hardware,
//! probes KVM, and runs the host's loop with the QEMU runtime. Used by `plinth agent` and
//! by `plinth up` (which runs one in-process against its embedded server).
//!
//! Owns the order of startup (discover → probe → runtime → loop) and what it prints; the
//! pieces are the `plinth-agent` crate's.

use anyhow::{Context, Result};
use plinth_agent::discovery;
use plinth_agent::kvm_probe::{KvmProbe, probe_kvm};
use plinth_agent::network::ovs::OpenVswitch;
use plinth_agent::network::{HostNetwork, LinuxBridge, NetworkConfig};
use plinth_agent::runner::{NetworkBackend, Rediscover};
use plinth_agent::runtime::qemu::{Accel, QemuRuntime, RuntimeConfig};
use plinth_agent::storage::VolumePool;
use plinth_agent::{AGENT_VERSION, AgentClient, HostSetup, Progress, RunnerConfig, StateDir, run_host};
use plinth_api::{HostInventory, Kvm};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a real host's agent needs.
#[derive(Clone, Debug)]
pub struct RealHost {
    pub server: String,
    pub join_token: Option<String>,
    /// The CA the server's HTTPS chains to (None: plain HTTP or the system's roots).
    pub ca: Option<plinth_client::connect::Ca>,
    pub state_dir: PathBuf,
    pub hostname: String,
    /// Where `/proc` and `/sys` are read from (`/` on a real host).
    pub root: PathBuf,
    pub poll_wait: u64,
    /// How long a guest gets to power off after the ACPI button before it is quit.
    pub graceful_timeout: Duration,
    /// Print what was found.
    pub verbose: bool,
    /// The underlay address (VXLAN source) of tenant networks; `None`: the source address
    /// of this machine's route to the server.
    pub underlay_ip: Option<String>,
    /// Prefix of the VPC namespaces' names.
    pub netns_prefix: String,
    /// The bridge reaching the provider network (`None`: no public addresses here).
    pub provider_bridge: Option<String>,
    /// How often the NICs' egress counters are read and shipped.
    pub counter_period: Duration,
    /// Which tenant data path this host runs.
    pub datapath: Datapath,
    /// The volume pool's directory (`None`: `volumes/` in the host's state directory).
    pub volume_pool: Option<PathBuf>,
}

/// The tenant data paths an agent can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Datapath {
    /// Bridges, VXLAN devices and nftables in each VPC's namespace.
    LinuxBridge,
    /// One Open vSwitch bridge (userspace datapath) with OpenFlow security groups.
    Openvswitch,
}

impl Datapath {
    /// Its name in the host's inventory.
    pub fn name(self) -> &'static str {
        match self {
            Datapath::LinuxBridge => "linux-bridge",
            Datapath::Openvswitch => plinth_agent::network::ovs::DATAPATH,
        }
    }
}

/// Where `tool` is on the PATH, if anywhere.
fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// The local address this machine uses to reach `server` (a URL): the source of its route
/// there, found by connecting a UDP socket (no packet is sent).
pub fn route_source(server: &str) -> Option<String> {
    let url = reqwest::Url::parse(server).ok()?;
    let host = url.host_str()?.trim_matches(|c| c == '[' || c == ']').to_string();
    let port = url.port_or_known_default()?;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect((host.as_str(), port)).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// This machine's host name as a DNS label (lowercase; other characters become `-`).
pub fn local_hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    let mut s: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    s.truncate(63);
    let s = s.trim_matches('-').to_string();
    if s.is_empty() { "localhost".into() } else { s }
}

fn kvm_line(k: &Kvm) -> String {
    match k {
        Kvm::Usable => "KVM usable: guests run hardware-accelerated".into(),
        Kvm::Unusable { reason } => format!("KVM unusable ({reason}): guests run under TCG (emulated, slower)"),
        Kvm::Absent => "no /dev/kvm: guests run under TCG (emulated, slower)".into(),
    }
}

/// Discovers the inventory under `root`, with the KVM verdict, runtime and network data
/// path filled in.
fn inventory_at(root: &Path, kvm: &Kvm, datapath: Option<&str>, pool: Option<&VolumePool>) -> Result<HostInventory> {
    let mut inv =
        discovery::discover(root).with_context(|| format!("discovering the hardware under {}", root.display()))?;
    inv.virtualization.kvm = kvm.clone();
    inv.runtime = Some("qemu".into());
    inv.network_datapath = datapath.map(str::to_owned);
    inv.volume_pool = pool.map(VolumePool::inventory);
    Ok(inv)
}

/// Runs the host until `stop` is raised.
pub async fn run(h: RealHost, stop: watch::Receiver<bool>) -> Result<()> {
    let state = StateDir::open(&h.state_dir).with_context(|| format!("opening {}", h.state_dir.display()))?;
    let host_dir = state.host_dir(&h.hostname)?;
    let probe = KvmProbe::new(host_dir.join("kvm-probe"));
    std::fs::create_dir_all(&probe.work_dir).with_context(|| format!("creating {}", probe.work_dir.display()))?;
    let kvm = probe_kvm(&probe).await;
    let root = h.root.clone();
    let underlay_ip = h.underlay_ip.clone().or_else(|| route_source(&h.server));
    let datapath = underlay_ip.as_ref().map(|_| h.datapath.name());
    let pool_dir = h.volume_pool.clone().unwrap_or_else(|| host_dir.join("volumes"));
    let pool = match VolumePool::open(&pool_dir) {
        Ok(p) => Some(p.with_scratch(host_dir.join("volume-sources"))),
        Err(e) => {
            tracing::warn!("no volume pool: {e}");
            None
        }
    };
    let inventory = {
        let (root, kvm, pool) = (root.clone(), kvm.clone(), pool.clone());
        tokio::task::spawn_blocking(move || inventory_at(&root, &kvm, datapath, pool.as_ref())).await??
    };
    if h.verbose {
        println!("plinth agent {AGENT_VERSION}: host {} → {}", h.hostname, h.server);
        println!(
            "  {} ({} socket(s), {} cores, {} threads), {} MiB, {} NUMA node(s), {} disk(s), {} NIC(s), {} GPU(s)",
            inventory.cpu.model,
            inventory.cpu.sockets,
            inventory.cpu.cores,
            inventory.cpu.threads,
            inventory.memory_mib,
            inventory.numa_nodes.len(),
            inventory.disks.len(),
            inventory.nics.len(),
            inventory.gpus.len()
        );
        println!("  {}", kvm_line(&kvm));
        println!("  guests and images in {}", host_dir.display());
        match &pool {
            Some(p) => println!("  volumes in {} ({})", p.dir().display(), p.inventory().filesystem),
            None => println!("  no volume pool (see the warning above)"),
        }
    }
    tracing::info!(host = %h.hostname, kvm = ?kvm, "real host: qemu runtime");
    let accel = if kvm == Kvm::Usable { Accel::Kvm } else { Accel::Tcg };
    let config = RuntimeConfig {
        graceful_timeout: h.graceful_timeout,
        volume_pool: pool.as_ref().map(|p| p.dir().to_path_buf()),
        ..RuntimeConfig::new(host_dir.clone(), accel)
    };
    let rediscover = {
        let (root, kvm, pool) = (root.clone(), kvm.clone(), pool.clone());
        Rediscover(Arc::new(move || match inventory_at(&root, &kvm, datapath, pool.as_ref()) {
            Ok(inv) => Some(inv),
            Err(e) => {
                tracing::warn!("rediscovery failed: {e:#}");
                None
            }
        }))
    };
    let setup = HostSetup { index: 0, hostname: h.hostname.clone(), inventory, rediscover: Some(rediscover) };
    let client = AgentClient::new(&h.server, &format!("plinth-agent/{AGENT_VERSION} (qemu runtime)"), h.ca.as_ref())?;
    let backend: Option<(Arc<dyn HostNetwork>, Arc<dyn plinth_agent::runtime::TapOpener>)> =
        underlay_ip.as_ref().map(|ip| {
            let cfg = NetworkConfig {
                underlay_ip: ip.clone(),
                netns_prefix: h.netns_prefix.clone(),
                // dnsmasq reads its hosts directory after dropping root, so its files
                // cannot live in the 0700 state directory; /run is as volatile as the
                // namespaces themselves (/run/netns), and the namespace prefix keeps
                // agents sharing a machine apart.
                state_dir: PathBuf::from("/run/plinth/network"),
                // This agent's data directory: unique per agent on the machine.
                owner: host_dir.display().to_string(),
                provider_bridge: h.provider_bridge.clone(),
                counter_period: h.counter_period,
            };
            match h.datapath {
                Datapath::LinuxBridge => {
                    let b = Arc::new(LinuxBridge::new(cfg));
                    (b.clone() as Arc<dyn HostNetwork>, b as Arc<dyn plinth_agent::runtime::TapOpener>)
                }
                Datapath::Openvswitch => {
                    for tool in ["ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ethtool"] {
                        if which(tool).is_none() {
                            tracing::error!(
                                "--datapath openvswitch needs {tool} (Debian: apt-get install openvswitch-switch ethtool)"
                            );
                        }
                    }
                    // Its daemons' files beside the namespaces' (the prefix keeps agents apart).
                    let dir = PathBuf::from(format!("/run/plinth/network/{}ovs", h.netns_prefix));
                    let b = Arc::new(OpenVswitch::new(cfg, dir));
                    (b.clone() as Arc<dyn HostNetwork>, b as Arc<dyn plinth_agent::runtime::TapOpener>)
                }
            }
        });
    let network = match (&backend, &underlay_ip) {
        (Some((b, _)), Some(ip)) => {
            if h.verbose {
                println!(
                    "  tenant networks: {} data path, VXLAN from {ip}, namespaces {}<vni>",
                    b.datapath(),
                    h.netns_prefix
                );
            }
            match plinth_agent::network::neigh_limits::ensure() {
                Ok(Some(done)) => tracing::info!("{done}"),
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
            Some(NetworkBackend(b.clone()))
        }
        _ => {
            tracing::warn!("no underlay address (pass --underlay-ip): tenant network specs are ignored");
            None
        }
    };
    // The runtime opens the taps the network backend made, and hands QEMU their fds.
    let taps = backend.map(|(_, t)| t);
    let runtime = Arc::new(QemuRuntime::with_taps(config, taps).context("the qemu runtime")?);
    let cfg = Arc::new(RunnerConfig {
        join_token: h.join_token.clone(),
        poll_wait_seconds: h.poll_wait,
        agent_version: format!("{AGENT_VERSION} (qemu)"),
        state,
        console_poll: plinth_agent::runner::CONSOLE_POLL,
        network,
        volumes: pool,
    });
    run_host(client, cfg, setup, runtime, Arc::new(Progress::default()), stop).await?;
    Ok(())
}
