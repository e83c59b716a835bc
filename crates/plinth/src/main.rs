//! `plinth`: one binary for the server (`plinth server`), the single-host bundle
//! (`plinth up`) and the CLI (`plinth tenant list`, …).

mod agent_cmd;
mod agent_host;
mod cli;
mod output;
mod profile;
mod run;
mod up_local;

use anyhow::{Result, anyhow};
use clap::{CommandFactory, Parser, Subcommand};
use cli::*;
use output::{Format, Out};
use std::path::PathBuf;

/// Plinth: turn hosts and bare-metal servers into a cloud.
#[derive(Parser, Debug)]
#[command(name = "plinth", version, about)]
struct Cli {
    /// Output format: a table, or the API's document as JSON or YAML.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Print only this field of the answer (dotted: `runtime.pid`), one value a line for
    /// a list.
    #[arg(long, global = true, value_name = "NAME")]
    field: Option<String>,
    /// Server URL (overrides the profile).
    #[arg(long, global = true, env = "PLINTH_SERVER")]
    server: Option<String>,
    /// API token (overrides the profile).
    #[arg(long, global = true, env = "PLINTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for the server's HTTPS (overrides the profile's;
    /// `plinth login --ca-cert F` saves it in the profile).
    #[arg(long, global = true, env = "PLINTH_CA_CERT")]
    ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server alone (several replicas may share one PostgreSQL).
    Server {
        /// sqlite:///path/plinth.db or postgres://user@host/db.
        #[arg(long, env = "PLINTH_DATABASE_URL")]
        database_url: String,
        #[arg(long, default_value = "127.0.0.1:7480")]
        listen: String,
        /// On first start, also write the operator token here (0600).
        #[arg(long)]
        operator_token_file: Option<PathBuf>,
        /// Where image files are kept (replicas must share it). Default: beside an SQLite
        /// database; none for PostgreSQL (images are then unavailable).
        #[arg(long, env = "PLINTH_BLOB_DIR")]
        blob_dir: Option<PathBuf>,
        /// Where the server's own CA and serving certificate are kept (made on first
        /// start; replicas share it). Default: `tls/` beside an SQLite database, else beside
        /// the blob directory.
        #[arg(long, env = "PLINTH_TLS_DIR")]
        tls_dir: Option<PathBuf>,
        #[command(flatten)]
        tls: run::TlsArgs,
    },
    /// Run Plinth on this machine: embedded database and server.
    Up {
        /// Where Plinth keeps its data (default ~/.local/share/plinth).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:7480")]
        listen: String,
        /// Only the server: no local agent, no demo tenant, project, shape or test-guest
        /// image.
        #[arg(long)]
        no_demo: bool,
        /// A bridge of this machine reaching the provider network: the local agent's VPC
        /// routers put floating and SNAT addresses on it (see the README's tour).
        #[arg(long)]
        provider_bridge: Option<String>,
        #[command(flatten)]
        tls: run::TlsArgs,
    },
    /// Run the host agent of this machine (real QEMU guests), or `--runtime sim
    /// --sim-hosts N` simulated hosts (no guests run).
    Agent(agent_cmd::AgentArgs),
    /// Save the server URL and token in the CLI profile (0600).
    Login {
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
        // The global --ca-cert: the CA certificate (PEM) the server's HTTPS chains to, e.g.
        // the server's `{data dir}/tls/ca.pem`. Without it, the profile keeps the CA it had.
    },
    /// Print shell completions: `plinth completion bash|zsh|fish|…`.
    #[command(alias = "completion")]
    Completions { shell: clap_complete::Shell },
    #[command(subcommand)]
    Tenant(TenantCmd),
    #[command(subcommand)]
    Project(ProjectCmd),
    #[command(subcommand)]
    User(UserCmd),
    #[command(subcommand)]
    Token(TokenCmd),
    #[command(subcommand)]
    RoleBinding(RoleBindingCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    #[command(subcommand)]
    Site(SiteCmd),
    #[command(subcommand)]
    Rack(RackCmd),
    #[command(subcommand)]
    Host(HostCmd),
    #[command(subcommand)]
    JoinToken(JoinTokenCmd),
    #[command(subcommand)]
    Shape(ShapeCmd),
    /// Boot images: disks, kernels and initrds.
    #[command(subcommand)]
    Image(images::ImageCmd),
    #[command(subcommand)]
    Instance(compute::InstanceCmd),
    #[command(subcommand)]
    PlacementGroup(compute::PlacementGroupCmd),
    /// Virtual private clouds.
    #[command(subcommand)]
    Vpc(network::VpcCmd),
    /// IP pools: public IPv4 ranges for floating and SNAT addresses (operators).
    #[command(subcommand)]
    IpPool(network::IpPoolCmd),
    /// Floating IPs: public addresses a project holds.
    #[command(subcommand)]
    FloatingIp(network::FloatingIpCmd),
    /// Volume types: the kinds of volume offered (operators create them).
    #[command(subcommand)]
    VolumeType(storage::VolumeTypeCmd),
    /// Volumes: block devices a project holds apart from any instance.
    #[command(subcommand)]
    Volume(storage::VolumeCmd),
    /// Volume attachments: which volume went to which instance, and where each is.
    #[command(subcommand)]
    VolumeAttachment(storage::VolumeAttachmentCmd),
    /// Snapshots of volumes: taken in an instant, live or detached.
    #[command(subcommand)]
    Snapshot(storage::SnapshotCmd),
    /// Subnets of VPCs.
    #[command(subcommand)]
    Subnet(network::SubnetCmd),
    /// Network interfaces.
    #[command(subcommand)]
    Nic(network::NicCmd),
    /// Security groups and their rules.
    #[command(subcommand)]
    SecurityGroup(network::SecurityGroupCmd),
    #[command(subcommand)]
    Operation(compute::OperationCmd),
    /// How many more of each shape fit, per rack (operators).
    Capacity,
    /// Background tasks (reconcilers) of the server (operators).
    #[command(subcommand)]
    Task(compute::TaskCmd),
    /// The usage ledger: metered intervals and counters.
    Usage(billing::UsageArgs),
    /// Price books (versioned prices).
    #[command(subcommand)]
    PriceBook(billing::PriceBookCmd),
    /// Invoices and credit notes.
    #[command(subcommand)]
    Invoice(billing::InvoiceCmd),
    /// Quotas of tenants and projects.
    #[command(subcommand)]
    Quota(billing::QuotaCmd),
    /// Monthly spend budgets.
    #[command(subcommand)]
    Budget(billing::BudgetCmd),
    /// Credit grants.
    #[command(subcommand)]
    Credit(billing::CreditCmd),
    /// Capacity commitments.
    #[command(subcommand)]
    Commitment(billing::CommitmentCmd),
    /// Billing reports: reconciliation and revenue.
    #[command(subcommand)]
    Billing(billing::BillingCmd),
    /// The server itself: its clock (test servers).
    #[command(subcommand)]
    System(billing::SystemCmd),
}

fn client(cli: &Cli) -> Result<plinth_client::Client> {
    let saved = profile::load(&profile::path())?;
    let server = cli.server.clone().or_else(|| saved.as_ref().map(|p| p.server.clone()));
    let token = cli.token.clone().or_else(|| saved.as_ref().map(|p| p.token.clone()));
    let ca = profile::ca(cli.ca_cert.as_deref(), saved.as_ref())?;
    match (server, token) {
        (Some(s), Some(t)) => Ok(plinth_client::Client::new(&s, &t, ca.as_ref())),
        _ => Err(anyhow!(
            "no server or token: run `plinth up`, or `plinth login --server URL --token plt_…`, or set PLINTH_SERVER and PLINTH_TOKEN"
        )),
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let out = Out { format: cli.output, field: cli.field.clone() };
    let o = &out;
    match &cli.command {
        Command::Server { database_url, listen, operator_token_file, blob_dir, tls_dir, tls } => {
            let dirs = run::ServerDirs { blob_dir: blob_dir.as_deref(), tls_dir: tls_dir.as_deref() };
            run::server(database_url, listen, operator_token_file.as_deref(), dirs, tls).await
        }
        Command::Up { data_dir, listen, no_demo, provider_bridge, tls } => {
            let dir = data_dir.clone().unwrap_or_else(run::default_data_dir);
            run::up(&dir, listen, (!no_demo).then_some(provider_bridge.clone()), tls).await
        }
        Command::Agent(a) => {
            agent_cmd::run(a, cli.server.as_deref(), cli.token.as_deref(), cli.ca_cert.as_deref()).await
        }
        Command::Login { server, token } => profile::login(server, token, cli.ca_cert.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "plinth", &mut std::io::stdout());
            Ok(())
        }
        Command::Tenant(c) => c.run(&client(&cli)?, o).await,
        Command::Project(c) => c.run(&client(&cli)?, o).await,
        Command::User(c) => c.run(&client(&cli)?, o).await,
        Command::Token(c) => c.run(&client(&cli)?, o).await,
        Command::RoleBinding(c) => c.run(&client(&cli)?, o).await,
        Command::Audit(c) => c.run(&client(&cli)?, o).await,
        Command::Site(c) => c.run(&client(&cli)?, o).await,
        Command::Rack(c) => c.run(&client(&cli)?, o).await,
        Command::Host(c) => c.run(&client(&cli)?, o).await,
        Command::JoinToken(c) => c.run(&client(&cli)?, o).await,
        Command::Shape(c) => c.run(&client(&cli)?, o).await,
        Command::Image(c) => c.run(&client(&cli)?, o).await,
        Command::Instance(c) => c.run(&client(&cli)?, o).await,
        Command::PlacementGroup(c) => c.run(&client(&cli)?, o).await,
        Command::Vpc(c) => c.run(&client(&cli)?, o).await,
        Command::IpPool(c) => c.run(&client(&cli)?, o).await,
        Command::FloatingIp(c) => c.run(&client(&cli)?, o).await,
        Command::VolumeType(c) => c.run(&client(&cli)?, o).await,
        Command::Volume(c) => c.run(&client(&cli)?, o).await,
        Command::VolumeAttachment(c) => c.run(&client(&cli)?, o).await,
        Command::Snapshot(c) => c.run(&client(&cli)?, o).await,
        Command::Subnet(c) => c.run(&client(&cli)?, o).await,
        Command::Nic(c) => c.run(&client(&cli)?, o).await,
        Command::SecurityGroup(c) => c.run(&client(&cli)?, o).await,
        Command::Operation(c) => c.run(&client(&cli)?, o).await,
        Command::Capacity => compute::capacity(&client(&cli)?, o).await,
        Command::Task(c) => c.run(&client(&cli)?, o).await,
        Command::Usage(a) => billing::usage(&client(&cli)?, o, a).await,
        Command::PriceBook(c) => c.run(&client(&cli)?, o).await,
        Command::Invoice(c) => c.run(&client(&cli)?, o).await,
        Command::Quota(c) => c.run(&client(&cli)?, o).await,
        Command::Budget(c) => c.run(&client(&cli)?, o).await,
        Command::Credit(c) => c.run(&client(&cli)?, o).await,
        Command::Commitment(c) => c.run(&client(&cli)?, o).await,
        Command::Billing(c) => c.run(&client(&cli)?, o).await,
        Command::System(c) => c.run(&client(&cli)?, o).await,
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLINTH_LOG")
                .unwrap_or_else(|_| "warn,plinth=info,rustls_platform_verifier=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
