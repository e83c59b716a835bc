//! `plinth agent`: the host agent's arguments and entry point.
//!
//! Owns the edge of the agent: reading flags and the CLI profile, creating a join token
//! when none is given, printing the startup banner and progress, starting one task per
//! host (all over one HTTP client) and stopping them on Ctrl-C or SIGTERM. Everything the
//! hosts do is in the `plinth-agent` crate. The agent opens no listening port.
//!
//! Runtimes: `qemu` (this machine: discovery, KVM probe, real guests; see
//! [`crate::agent_host`]) and `sim` (N simulated hosts for scale tests; no guest runs).

use crate::profile;
use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use plinth_agent::runtime::sim::{SimConfig, SimRuntime};
use plinth_agent::sim::inventory::{PROFILES, cpu_list, dedicated_cpus_for, inventory_of, profile_counts, profile_for};
use plinth_agent::state::is_dns_label;
use plinth_agent::{AGENT_VERSION, AgentClient, HostSetup, Progress, RunnerConfig, StateDir, run_host};
use plinth_client::connect::{Ca, JoinToken};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::Instrument;

/// The guest runtime an agent drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeArg {
    /// This machine: hardware discovery, a KVM probe, real QEMU guests over QMP.
    Qemu,
    /// Simulated hosts for scale tests: synthetic inventories, guests that only change
    /// state on a timer. No guest runs.
    Sim,
}

/// Run the host agent (dials the server; opens no port).
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Guest runtime: `qemu` (this machine, real guests) or `sim` (simulated hosts for
    /// scale tests; no guests run).
    #[arg(long, value_enum, default_value = "qemu")]
    runtime: RuntimeArg,
    /// Join token for hosts not enrolled yet, as `plinth join-token create` prints it
    /// (`agent_join_token`: `pjt_…@sha256:<CA fingerprint>`): the agent pins the server's
    /// CA with it on first contact and keeps the CA in the state directory. Without it, one
    /// is created with the CLI profile's (or --token's) operator token, for as many hosts
    /// as need it.
    #[arg(long, env = "PLINTH_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Where credentials (0600) and runtime state are kept (default
    /// ~/.local/share/plinth/agent).
    #[arg(long, env = "PLINTH_AGENT_STATE_DIR", alias = "data-dir")]
    state_dir: Option<PathBuf>,
    /// qemu: the host's name (default: this machine's host name as a DNS label).
    #[arg(long)]
    hostname: Option<String>,
    /// qemu: where /proc and /sys are read from (a recorded tree, for tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// qemu: seconds a guest gets to power off (ACPI button) before it is quit.
    #[arg(long, default_value_t = 30)]
    graceful_timeout: u64,
    /// Long-poll wait for the desired state, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=60))]
    poll_wait: u64,
    /// qemu: this host's underlay address, the source of tenant networks' VXLAN traffic
    /// (default: the source address of the route to the server).
    #[arg(long)]
    underlay_ip: Option<std::net::Ipv4Addr>,
    /// qemu: prefix of the VPC network namespaces' names (`<prefix><vni>`).
    #[arg(long, default_value = "pv-")]
    netns_prefix: String,
    /// qemu: the bridge (in this namespace) reaching the provider network: VPC routers'
    /// uplinks join it, carrying floating and SNAT addresses (default: none, so no
    /// public address is routed through this host).
    #[arg(long)]
    provider_bridge: Option<String>,
    /// qemu: the tenant data path: `linux-bridge` (bridges, VXLAN, nftables) or
    /// `openvswitch` (one Open vSwitch bridge, userspace datapath, OpenFlow security
    /// groups; the agent starts its own ovsdb-server and ovs-vswitchd).
    #[arg(long, value_enum, default_value = "linux-bridge")]
    datapath: crate::agent_host::Datapath,
    /// qemu: seconds between readings of the NICs' egress byte counters (shipped when
    /// they moved).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    counter_interval: u64,
    /// qemu: the volume pool's directory, on ext4, XFS or tmpfs (default: `volumes/` in
    /// the host's state directory). Volumes are qcow2 files in it, LUKS inside.
    #[arg(long)]
    volume_pool: Option<PathBuf>,
    /// sim: how many simulated hosts to run in this process (at most 10000, the most one
    /// join token enrols).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    sim_hosts: Option<u32>,
    /// sim: host name prefix; hosts are named `{prefix}-0000`, `{prefix}-0001`, …
    #[arg(long, default_value = "sim")]
    sim_prefix: String,
    /// sim: time each guest step takes (prepare, boot, shutdown, destroy), jittered ±20 %.
    #[arg(long, default_value_t = 300)]
    sim_delay_ms: u64,
    /// sim: the host profiles to cycle through, host i taking the (i mod len)-th, e.g.
    /// `general,gpu-h100` (profiles: general, pinned, gpu-a100, gpu-h100). Default: the
    /// benchmark's mix (6 general, 2 pinned, 1 gpu-a100, 1 gpu-h100 in every 10).
    #[arg(long, value_delimiter = ',')]
    sim_mix: Vec<String>,
    /// sim: every K-th boot on a host fails (reported `failed`), to exercise restart
    /// policies.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    sim_fail_every: Option<u32>,
}

/// The default state directory: `~/.local/share/plinth/agent`.
fn default_state_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("plinth").join("agent")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The CLI profile (read only when a flag it would stand in for is missing) and the
/// server URL: `--server`, else the profile's.
fn server_of(args: &AgentArgs, server: Option<&str>) -> Result<(Option<profile::Profile>, String)> {
    let saved = if server.is_some() && args.join_token.is_some() { None } else { profile::load(&profile::path())? };
    let url = server
        .map(str::to_string)
        .or_else(|| saved.as_ref().map(|p| p.server.clone()))
        .ok_or_else(|| anyhow!("no server: pass --server URL (or run `plinth up`, or `plinth login`)"))?;
    Ok((saved, url))
}

/// `plinth agent`. `server`, `token` and `ca_cert` are the global `--server`, `--token`
/// and `--ca-cert` flags.
pub async fn run(args: &AgentArgs, server: Option<&str>, token: Option<&str>, ca_cert: Option<&Path>) -> Result<()> {
    match args.runtime {
        RuntimeArg::Sim => run_sim(args, server, token, ca_cert).await,
        RuntimeArg::Qemu => run_qemu(args, server, token, ca_cert).await,
    }
}

/// The `--join-token` given, read (secret and CA fingerprint).
fn join_token_arg(args: &AgentArgs) -> Result<Option<JoinToken>> {
    args.join_token.as_deref().map(|t| JoinToken::parse(t).map_err(|e| anyhow!("--join-token: {e}"))).transpose()
}

/// The CA the agent trusts for `server_url` (None: plain HTTP, or the system's roots):
/// `--ca-cert`; else the one kept in the state directory, unless the join token pins
/// another; else, with a pinning join token, the server's own, fetched and checked against
/// the fingerprint, then kept; else the CLI profile's (an agent beside `plinth up`).
async fn agent_ca(
    state: &StateDir,
    server_url: &str,
    join: Option<&JoinToken>,
    flag: Option<&Path>,
    saved: Option<&profile::Profile>,
) -> Result<Option<Ca>> {
    if !server_url.starts_with("https://") {
        return Ok(None);
    }
    if let Some(f) = flag {
        return Ok(Some(Ca::from_file(f)?));
    }
    let path = state.ca_path();
    let stored = match state.load_ca()? {
        Some(pem) => Some(Ca::from_pem(&pem).with_context(|| format!("the kept CA {}", path.display()))?),
        None => None,
    };
    match (join.and_then(|j| j.ca.as_ref()), stored) {
        (Some(pin), Some(ca)) if ca.fingerprint() == *pin => Ok(Some(ca)),
        (Some(pin), _) => {
            let ca = plinth_client::connect::fetch_pinned_ca(server_url, pin).await?;
            state.save_ca(ca.pem())?;
            println!("  pinned the server's CA {pin} (kept in {})", path.display());
            Ok(Some(ca))
        }
        (None, Some(ca)) => Ok(Some(ca)),
        (None, None) => match saved {
            Some(p) => profile::ca(None, Some(p)),
            None => profile::ca(None, profile::load(&profile::path())?.as_ref()),
        },
    }
}

/// Creates a join token good for `uses` enrolments, as the operator.
async fn create_join_token(server: &str, operator_token: &str, ca: Option<&Ca>, uses: u32, n: u32) -> Result<String> {
    let client = plinth_client::Client::new(server, operator_token, ca);
    let body = plinth_api::HostJoinTokenCreate {
        description: Some(if n > 1 {
            format!("plinth agent --runtime sim ({n} simulated hosts)")
        } else {
            "plinth agent".to_string()
        }),
        rack_id: None,
        expires_in_seconds: Some(3600),
        max_uses: Some(uses),
    };
    let created = client
        .create::<plinth_client::JoinTokens>(&body)
        .await
        .context("creating a join token for the simulated hosts")?;
    Ok(created.into_inner().secret)
}

fn status_line(p: &Progress, n: u32) -> String {
    let g = |a: &std::sync::atomic::AtomicI64| a.load(Ordering::Relaxed);
    format!(
        "sim: {}/{n} hosts ready ({} enrolled now, {} reused); guests: {} running, {} starting, {} stopping, {} stopped, {} failed (simulated, no guests run)",
        p.ready.load(Ordering::Relaxed),
        p.enrolled.load(Ordering::Relaxed),
        p.reused.load(Ordering::Relaxed),
        g(&p.running),
        g(&p.starting),
        g(&p.stopping),
        g(&p.stopped),
        g(&p.failed),
    )
}

async fn run_qemu(args: &AgentArgs, server: Option<&str>, token: Option<&str>, ca_cert: Option<&Path>) -> Result<()> {
    let hostname = args.hostname.clone().unwrap_or_else(crate::agent_host::local_hostname);
    if !is_dns_label(&hostname) {
        bail!("--hostname {hostname:?} is not a DNS label (a-z, 0-9, '-', at most 63)");
    }
    let (saved, server_url) = server_of(args, server)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let state =
        StateDir::open(&state_dir).with_context(|| format!("opening the state directory {}", state_dir.display()))?;
    let enrolled = state.load_credential(&hostname)?.is_some();
    let join = join_token_arg(args)?;
    let ca = agent_ca(&state, &server_url, join.as_ref(), ca_cert, saved.as_ref()).await?;
    let join_token = match (join, enrolled) {
        (_, true) => None,
        (Some(t), false) => Some(t.secret),
        (None, false) => {
            let operator =
                token.map(str::to_string).or_else(|| saved.as_ref().map(|p| p.token.clone())).ok_or_else(|| {
                    anyhow!("this host is not enrolled and there is no join token: pass --join-token pjt_…")
                })?;
            Some(create_join_token(&server_url, &operator, ca.as_ref(), 1, 1).await?)
        }
    };
    let host = crate::agent_host::RealHost {
        server: server_url,
        join_token,
        ca,
        state_dir,
        hostname,
        root: args.root.clone(),
        poll_wait: args.poll_wait,
        graceful_timeout: Duration::from_secs(args.graceful_timeout),
        verbose: true,
        underlay_ip: args.underlay_ip.map(|ip| ip.to_string()),
        netns_prefix: args.netns_prefix.clone(),
        provider_bridge: args.provider_bridge.clone(),
        counter_period: Duration::from_secs(args.counter_interval),
        datapath: args.datapath,
        volume_pool: args.volume_pool.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut task = tokio::spawn(crate::agent_host::run(host, stop_rx));
    tokio::select! {
        r = &mut task => return r?,
        _ = shutdown_signal() => {
            eprintln!("plinth agent: stopping (guests keep running)");
        }
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
        Ok(r) => r?,
        Err(_) => {
            task.abort();
            Ok(())
        }
    }
}

async fn run_sim(args: &AgentArgs, server: Option<&str>, token: Option<&str>, ca_cert: Option<&Path>) -> Result<()> {
    let n = args.sim_hosts.ok_or_else(|| anyhow!("--runtime sim needs --sim-hosts N"))?;
    let hostname = |i: u32| format!("{}-{i:04}", args.sim_prefix);
    for name in [hostname(0), hostname(n - 1)] {
        if !is_dns_label(&name) {
            bail!(
                "--sim-prefix {:?} gives host name {name:?}, which is not a DNS label (a-z, 0-9, '-', at most 63)",
                args.sim_prefix
            );
        }
    }
    let (saved, server_url) = server_of(args, server)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    let state =
        StateDir::open(&state_dir).with_context(|| format!("opening the state directory {}", state_dir.display()))?;

    if let Some(bad) = args.sim_mix.iter().find(|p| !PROFILES.contains(&p.as_str())) {
        bail!("--sim-mix: unknown profile {bad:?}; the profiles are {}", PROFILES.join(", "));
    }
    println!("plinth agent {AGENT_VERSION}: sim runtime: simulated hosts, no guests run");
    println!("  {n} simulated hosts {} … {} → {server_url}", hostname(0), hostname(n - 1));
    if args.sim_mix.is_empty() {
        let counts: Vec<String> = profile_counts(n).iter().map(|(p, c)| format!("{p} {c}")).collect();
        println!("  profiles (host i gets profile i % 10): {}", counts.join(", "));
    } else {
        println!("  profiles (host i gets the (i mod {})-th): {}", args.sim_mix.len(), args.sim_mix.join(", "));
    }
    if args.sim_mix.is_empty()
        && let Some(i) = (0..n).find(|i| !dedicated_cpus_for(*i).is_empty())
    {
        println!(
            "  `pinned` hosts expect dedicated CPUs {}: an operator setting (scheduling.dedicated_cpus, PATCH /v1/hosts/{{id}}); the agent sets no scheduling or traits",
            cpu_list(&dedicated_cpus_for(i))
        );
    }
    let fail = args.sim_fail_every.map(|k| format!(", one boot in {k} fails")).unwrap_or_default();
    println!("  guest steps take {} ms ±20 %{fail}; state in {}", args.sim_delay_ms, state_dir.display());
    tracing::info!(hosts = n, server = %server_url, "sim runtime: simulated hosts, no guests run");

    let mut missing = 0u32;
    for i in 0..n {
        if state.load_credential(&hostname(i))?.is_none() {
            missing += 1;
        }
    }
    let join = join_token_arg(args)?;
    let ca = agent_ca(&state, &server_url, join.as_ref(), ca_cert, saved.as_ref()).await?;
    let join_token = match (join, missing) {
        (_, 0) => None,
        (Some(t), _) => Some(t.secret),
        (None, _) => {
            let operator = token.map(str::to_string).or_else(|| saved.as_ref().map(|p| p.token.clone())).ok_or_else(|| {
                anyhow!(
                    "{missing} hosts need enrolling and there is no join token: pass --join-token pjt_…, or have an operator token (plinth up / plinth login / PLINTH_TOKEN)"
                )
            })?;
            let secret = create_join_token(&server_url, &operator, ca.as_ref(), missing, n).await?;
            println!("  created a join token for {missing} enrolments (expires in 1 h)");
            Some(secret)
        }
    };
    if missing < n {
        println!("  {} hosts already enrolled (credentials in the state directory)", n - missing);
    }

    let client = AgentClient::new(&server_url, &format!("plinth-agent/{AGENT_VERSION} (sim runtime)"), ca.as_ref())?;
    let cfg = Arc::new(RunnerConfig {
        join_token,
        poll_wait_seconds: args.poll_wait,
        agent_version: format!("{AGENT_VERSION} (sim)"),
        state: state.clone(),
        console_poll: plinth_agent::runner::CONSOLE_POLL,
        // Simulated hosts report their NICs applied (and say they are simulated).
        network: Some(plinth_agent::runner::NetworkBackend(Arc::new(plinth_agent::sim::network::SimNetwork))),
        volumes: None,
    });
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut hosts = tokio::task::JoinSet::new();
    for i in 0..n {
        let name = hostname(i);
        let inventory = match args.sim_mix.len() {
            0 => profile_for(i),
            len => inventory_of(&args.sim_mix[i as usize % len], i),
        };
        let sim = SimConfig {
            delay: Duration::from_millis(args.sim_delay_ms),
            fail_every: args.sim_fail_every,
            seed: u64::from(i).wrapping_mul(0x2545_F491_4F6C_DD1D) ^ std::process::id() as u64,
        };
        let file = state.host_dir(&name)?.join("sim-guests.json");
        let runtime =
            Arc::new(SimRuntime::new(sim, &inventory, Some(file)).with_context(|| format!("{name}: sim runtime"))?);
        let setup = HostSetup { index: i, hostname: name.clone(), inventory, rediscover: None };
        let (client, cfg, progress, mut stop) = (client.clone(), cfg.clone(), progress.clone(), stop_rx.clone());
        let span = tracing::info_span!("host", name = %name, runtime = "sim");
        hosts.spawn(
            async move {
                // Spread the start of many hosts a little (5 ms apart).
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(5) * i) => {}
                    _ = stop.wait_for(|s| *s) => return (name, Ok(())),
                }
                (name, run_host(client, cfg, setup, runtime, progress, stop).await)
            }
            .instrument(span),
        );
    }

    let mut failed = 0u32;
    let mut last_line = String::new();
    let every = Duration::from_secs(5);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => {
                eprintln!("plinth agent: stopping {n} simulated hosts");
                break;
            }
            done = hosts.join_next() => match done {
                None => break,
                Some(Ok((_, Ok(())))) => {}
                Some(Ok((name, Err(e)))) => {
                    failed += 1;
                    tracing::error!(host = %name, "host stopped: {e}");
                }
                Some(Err(e)) => {
                    failed += 1;
                    tracing::error!("a host task ended abnormally: {e}");
                }
            },
            _ = ticker.tick() => {
                let line = status_line(&progress, n);
                if line != last_line {
                    println!("{line}");
                    last_line = line;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(Duration::from_secs(5), async { while hosts.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        hosts.abort_all();
    }
    if failed == n {
        bail!("all {n} simulated hosts stopped with errors (see above)");
    }
    Ok(())
}
