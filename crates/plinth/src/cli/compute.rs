//! Compute commands: `plinth instance …`, `plinth placement-group …`, `plinth operation
//! …`, `plinth capacity` and the host operations (`plinth host cordon|drain|fence|…`).
//! Actions that continue in the background print their operation; `--wait` follows it to
//! the end with progress and exits non-zero unless it succeeded.

use super::args::{labels, wire};
use super::{Ids, ListArgs, create, delete, get, none_match, wait};
use crate::output::{self, Out};
use anyhow::Result;
use clap::{Args, Subcommand};
use plinth_api::*;
use plinth_client::resolve::{resolve, resolve_in, resolve_opt};
use plinth_client::v1::{HostVerb, InstanceAction};
use plinth_client::{Client, Doc, Hosts, Instances, Operations, PlacementGroups, Projects};
use std::time::Duration;

/// `--wait` and how long.
#[derive(Args, Clone, Debug)]
pub struct WaitArgs {
    /// Follow the operation to its end, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Prints an accepted instance action, and follows its operation when asked to (then
/// shows where the instance ended up).
async fn accepted(c: &Client, o: &Out, d: &Doc<InstanceAccepted>, w: &WaitArgs) -> Result<()> {
    let op = d.operation.id.as_str();
    if !w.wait {
        o.object(d)?;
        eprintln!("follow it with: plinth operation wait {op}");
        return Ok(());
    }
    wait::wait(c, op, Duration::from_secs(w.timeout)).await?;
    let now = c.view::<Instances>(d.instance.id.as_str()).await?;
    if o.machine() {
        return o.object(&now);
    }
    let on = now.host_id.as_ref().map(|h| format!(" on {h}")).unwrap_or_default();
    eprintln!("{}: {}{on}", now.id, now.state.as_str());
    Ok(())
}

const INSTANCE_COLUMNS: &[&str] =
    &["id", "name", "state", "shape_name", "host_id", "claim.tcg", "restart_policy", "warning"];

/// Instances.
#[derive(Subcommand, Debug)]
pub enum InstanceCmd {
    /// List instances.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this project's (id or name).
        #[arg(long)]
        project: Option<String>,
        /// creating, running, stopped, failed, unknown, …
        #[arg(long, value_parser = wire::<InstanceState>)]
        state: Option<InstanceState>,
        /// Only those on this host (id or name).
        #[arg(long)]
        host: Option<String>,
        /// key=value
        #[arg(long)]
        label: Option<String>,
        /// Only those of this name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one (id or name).
    Get { id: String },
    /// Create one (placed and claimed at once; prepared and started in the background).
    Create(#[command(flatten)] Box<InstanceCreateArgs>),
    /// Change labels or the restart policy.
    Update {
        id: String,
        #[arg(long)]
        if_match: Option<i64>,
        #[arg(long = "label")]
        labels: Option<Vec<String>>,
        /// never, on-failure or always.
        #[arg(long, value_parser = wire::<RestartPolicy>)]
        restart_policy: Option<RestartPolicy>,
    },
    /// Start it.
    Start {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop it.
    Stop {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Reboot it.
    Reboot {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Resize a stopped instance to another shape.
    Resize {
        id: String,
        /// Shape name or id.
        #[arg(long)]
        shape: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Rebuild a stopped instance's disk from an image.
    Rebuild {
        id: String,
        /// Image name or id.
        #[arg(long)]
        image: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Delete it.
    Delete {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Attach a volume of its project (hot-plugged when it runs; as `plinth volume attach`).
    Attach {
        id: String,
        /// The volume (id, or name in the instance's project).
        #[arg(long)]
        volume: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Detach a volume from it (a running guest is asked to release the disk).
    Detach {
        id: String,
        /// The volume (id, or name in the instance's project).
        #[arg(long)]
        volume: String,
        /// Operators: stop the instance and detach cold.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Its history.
    Events {
        id: String,
        #[command(flatten)]
        page: ListArgs,
    },
    /// Its serial console output (the last part; --follow keeps printing).
    ConsoleLog {
        id: String,
        /// How many bytes of the end to print first.
        #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
        bytes: u64,
        /// Keep printing new output until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Types into its serial console (it must be running): TEXT and a newline, or with
    /// `-` what standard input holds, as it is. Read what follows with `console-log`.
    ConsoleSend {
        id: String,
        /// What to type (`-`: standard input).
        text: String,
        /// Do not add a newline after TEXT.
        #[arg(long, short = 'n')]
        no_newline: bool,
    },
}

/// Flags of `plinth instance create`.
#[derive(Args, Debug)]
pub struct InstanceCreateArgs {
    pub name: String,
    /// Project id or name.
    #[arg(long)]
    pub project: String,
    /// Shape name or id.
    #[arg(long)]
    pub shape: String,
    /// Image name or id (your project's image of that name first, then a public one).
    #[arg(long)]
    pub image: String,
    /// Placement group id or name.
    #[arg(long)]
    pub placement_group: Option<String>,
    /// never, on-failure (default) or always.
    #[arg(long, value_parser = wire::<RestartPolicy>)]
    pub restart_policy: Option<RestartPolicy>,
    /// A file with user data (cloud-init).
    #[arg(long)]
    pub user_data_file: Option<std::path::PathBuf>,
    /// An OpenSSH public key (repeatable).
    #[arg(long = "ssh-key")]
    pub ssh_keys: Vec<String>,
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// A trait the host must have (repeatable).
    #[arg(long = "require-trait")]
    pub required_traits: Vec<String>,
    /// A trait the host must not have (repeatable).
    #[arg(long = "forbid-trait")]
    pub forbidden_traits: Vec<String>,
    /// Only hosts dedicated to your tenant.
    #[arg(long)]
    pub dedicated_host: bool,
    /// Create it stopped.
    #[arg(long)]
    pub stopped: bool,
    /// A network interface, in slot order (repeatable): `subnet=NAME[,ip=ADDR][,sg=GROUP]…`
    /// for a new one, `nic=NAME` to plug an existing one. None: one in the project's
    /// default subnet.
    #[arg(long = "nic")]
    pub nics: Vec<String>,
    /// A volume of the project to attach from the first boot (id or name; repeatable, in
    /// slot order): the instance is placed on the host whose pool holds it.
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
    /// A volume of the project to be its root disk instead of one made from the image (id
    /// or name; fill it from the image first, `plinth volume create … --image`).
    #[arg(long)]
    pub boot_volume: Option<String>,
    /// Keep the boot volume when the instance is deleted (default: deleted with it).
    #[arg(long, requires = "boot_volume")]
    pub keep_boot_volume: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
}

impl InstanceCreateArgs {
    async fn body(&self, c: &Client) -> Result<InstanceCreate> {
        let user_data = match &self.user_data_file {
            Some(p) => Some(std::fs::read_to_string(p)?),
            None => None,
        };
        let project_id = ProjectId(resolve::<Projects>(c, &self.project).await?);
        let placement_group_id = match &self.placement_group {
            Some(g) => {
                let filter = PlacementGroupFilter { project_id: Some(project_id.to_string()), name: None };
                Some(PlacementGroupId(resolve_in::<PlacementGroups>(c, g, filter).await?))
            }
            None => None,
        };
        let nics = super::network::instance_nics(c, &project_id, &self.nics).await?;
        Ok(InstanceCreate {
            project_id,
            name: self.name.clone(),
            shape: self.shape.clone(),
            image: self.image.clone(),
            runtime_class: None,
            placement_group_id,
            restart_policy: self.restart_policy,
            user_data,
            ssh_keys: self.ssh_keys.clone(),
            labels: labels(&self.labels),
            required_traits: self.required_traits.clone(),
            forbidden_traits: self.forbidden_traits.clone(),
            dedicated_host: self.dedicated_host,
            start: Some(!self.stopped),
            nics,
            volumes: self.volumes.clone(),
            boot_volume: self.boot_volume.clone(),
            keep_boot_volume: self.keep_boot_volume,
        })
    }
}

impl InstanceCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            InstanceCmd::List { page, project, state, host, label, name } => {
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let host_id = resolve_opt::<Hosts>(c, host.as_deref()).await?;
                let filter = InstanceFilter {
                    project_id: project_id.clone().map(ProjectId),
                    state: *state,
                    host_id: host_id.clone().map(HostId),
                    label: label.clone(),
                    name: name.clone(),
                };
                let d = c.list::<Instances>(&page.page(), &filter).await?;
                let filters = [
                    ("project", project_id),
                    ("state", state.map(|s| s.as_str().to_string())),
                    ("host", host_id),
                    ("label", label.clone()),
                    ("name", name.clone()),
                ];
                none_match("instances", &d, &filters);
                o.list(&d, INSTANCE_COLUMNS)
            }
            InstanceCmd::Get { id } => get::<Instances>(c, o, id).await,
            InstanceCmd::Create(a) => {
                let d = c.create::<Instances>(&a.body(c).await?).await?;
                accepted(c, o, &d, &a.wait).await
            }
            InstanceCmd::Update { id, if_match, labels: l, restart_policy } => {
                let body = InstanceUpdate { labels: l.as_deref().map(labels), restart_policy: *restart_policy };
                super::update::<Instances>(c, o, id, *if_match, &body).await
            }
            InstanceCmd::Start { id, wait } => action(c, o, id, &InstanceAction::Start, wait).await,
            InstanceCmd::Stop { id, wait } => action(c, o, id, &InstanceAction::Stop, wait).await,
            InstanceCmd::Reboot { id, wait } => action(c, o, id, &InstanceAction::Reboot, wait).await,
            InstanceCmd::Resize { id, shape, wait } => {
                action(c, o, id, &InstanceAction::Resize(InstanceResize { shape: shape.clone() }), wait).await
            }
            InstanceCmd::Rebuild { id, image, wait } => {
                action(c, o, id, &InstanceAction::Rebuild(InstanceRebuild { image: image.clone() }), wait).await
            }
            InstanceCmd::Delete { id, wait } => {
                let d = c.delete::<Instances>(&Instances::lookup(c, id).await?, None).await?;
                accepted(c, o, &d, wait).await
            }
            InstanceCmd::Attach { id, volume, wait } => super::storage::attach_to(c, o, id, volume, wait).await,
            InstanceCmd::Detach { id, volume, force, wait } => {
                super::storage::detach_from(c, o, id, volume, *force, wait).await
            }
            InstanceCmd::Events { id, page } => {
                let d = c.instance_events(&Instances::lookup(c, id).await?, &page.page()).await?;
                o.list(&d, &["created_at", "kind", "state", "detail", "operation_id"])
            }
            InstanceCmd::ConsoleLog { id, bytes, follow } => console_log(c, id, *bytes, *follow).await,
            InstanceCmd::ConsoleSend { id, text, no_newline } => console_send(c, o, id, text, *no_newline).await,
        }
    }
}

async fn action(c: &Client, o: &Out, id: &str, a: &InstanceAction, w: &WaitArgs) -> Result<()> {
    let d = c.instance_action(&Instances::lookup(c, id).await?, a).await?;
    accepted(c, o, &d, w).await
}

/// Prints an instance's console: the last `bytes`, then (with `follow`) what follows as
/// it arrives, long-polling the server.
async fn console_log(c: &Client, id: &str, bytes: u64, follow: bool) -> Result<()> {
    use std::io::Write;
    let id = Instances::lookup(c, id).await?;
    let mut q = ConsoleQuery { offset: None, limit: Some(bytes), wait: None };
    loop {
        let log = c.instance_console(&id, &q).await?.into_inner();
        if log.truncated && q.offset.is_some() {
            eprintln!("[some console output was overwritten before it could be read]");
        }
        let mut out = std::io::stdout().lock();
        out.write_all(log.data.as_bytes())?;
        out.flush()?;
        if !follow {
            if !log.data.is_empty() && !log.data.ends_with('\n') {
                writeln!(out)?;
            }
            return Ok(());
        }
        q = ConsoleQuery { offset: Some(log.next_offset), limit: Some(1_048_576), wait: Some(30) };
    }
}

/// The most one console input may hold (the server's limit).
const CONSOLE_INPUT_MAX: usize = 4096;

/// Types `text` (and a newline) into an instance's console, or standard input with `-`,
/// in pieces the server takes (cut at character boundaries).
async fn console_send(c: &Client, o: &Out, id: &str, text: &str, no_newline: bool) -> Result<()> {
    let data = if text == "-" {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut all)?;
        all
    } else if no_newline {
        text.to_string()
    } else {
        format!("{text}\n")
    };
    let id = Instances::lookup(c, id).await?;
    let mut rest = data.as_str();
    let mut last = None;
    while !rest.is_empty() {
        let mut cut = rest.len().min(CONSOLE_INPUT_MAX);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let body = ConsoleInput { data: rest[..cut].to_string() };
        last = Some(c.instance_console_input(&id, &body).await?);
        rest = &rest[cut..];
    }
    match last {
        Some(d) => o.object(&d),
        None => Ok(()),
    }
}

/// Placement groups.
#[derive(Subcommand, Debug)]
pub enum PlacementGroupCmd {
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only this project's (id or name).
        #[arg(long)]
        project: Option<String>,
    },
    Get {
        id: String,
    },
    /// Create one.
    Create {
        name: String,
        /// Project id or name.
        #[arg(long)]
        project: String,
        /// affinity, anti-affinity or spread.
        #[arg(long, value_parser = wire::<GroupPolicy>)]
        policy: GroupPolicy,
        /// host (default) or rack.
        #[arg(long, default_value = "host", value_parser = wire::<FailureDomain>)]
        scope: FailureDomain,
    },
    Delete {
        id: String,
    },
}

impl PlacementGroupCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "project_id", "name", "policy", "scope"];
        match self {
            PlacementGroupCmd::List { page, project } => {
                let project_id = resolve_opt::<Projects>(c, project.as_deref()).await?;
                let d = c
                    .list::<PlacementGroups>(
                        &page.page(),
                        &PlacementGroupFilter { project_id: project_id.clone(), name: None },
                    )
                    .await?;
                none_match("placement groups", &d, &[("project", project_id)]);
                o.list(&d, COLUMNS)
            }
            PlacementGroupCmd::Get { id } => get::<PlacementGroups>(c, o, id).await,
            PlacementGroupCmd::Create { name, project, policy, scope } => {
                let body = PlacementGroupCreate {
                    project_id: ProjectId(resolve::<Projects>(c, project).await?),
                    name: name.clone(),
                    policy: *policy,
                    scope: *scope,
                };
                create::<PlacementGroups>(c, o, &body).await
            }
            PlacementGroupCmd::Delete { id } => delete::<PlacementGroups>(c, id, None).await,
        }
    }
}

/// Operations.
#[derive(Subcommand, Debug)]
pub enum OperationCmd {
    /// List operations.
    List {
        #[command(flatten)]
        page: ListArgs,
        /// Only operations on this object id.
        #[arg(long)]
        target: Option<String>,
        /// pending, running, succeeded, failed or cancelled.
        #[arg(long, value_parser = wire::<OperationStatus>)]
        status: Option<OperationStatus>,
    },
    /// Show one.
    Get { id: String },
    /// Follow one to its end with progress.
    Wait {
        id: String,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Abort a drain.
    Cancel { id: String },
}

impl OperationCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        const COLUMNS: &[&str] = &["id", "kind", "target", "status", "done", "total", "message"];
        match self {
            OperationCmd::List { page, target, status } => {
                let filter = OperationFilter { target: target.clone(), status: *status, kind: None };
                let d = c.list::<Operations>(&page.page(), &filter).await?;
                let st = status.map(|s| s.as_str().to_string());
                none_match("operations", &d, &[("target", target.clone()), ("status", st)]);
                o.list(&d, COLUMNS)
            }
            OperationCmd::Get { id } => {
                let d = c.view::<Operations>(&Operations::lookup(c, id).await?).await?;
                if o.document(&d)? {
                    return Ok(());
                }
                // The step timings read better as their own table than as one JSON cell.
                let mut op = d.into_inner();
                let timings = std::mem::take(&mut op.timings);
                o.object(&plinth_client::Doc::new(op, String::new()))?;
                output::timings(&timings);
                Ok(())
            }
            OperationCmd::Wait { id, timeout } => {
                let op = wait::wait(c, id, Duration::from_secs(*timeout)).await?;
                if o.machine() {
                    o.object(&op)?;
                }
                Ok(())
            }
            OperationCmd::Cancel { id } => o.object(&c.cancel_operation(id).await?),
        }
    }
}

/// `plinth capacity`: how many more of each shape fit, per rack.
pub async fn capacity(c: &Client, o: &Out) -> Result<()> {
    let d = c.capacity().await?;
    if o.document(&d)? {
        return Ok(());
    }
    let rows = d
        .rows
        .iter()
        .map(|r| {
            vec![
                r.shape_name.clone(),
                output::opt(r.site_id.as_ref()),
                output::opt(r.rack_id.as_ref()),
                r.hosts.to_string(),
                r.fits.to_string(),
            ]
        })
        .collect();
    output::table(&["shape_name", "site_id", "rack_id", "hosts", "fits"], rows);
    output::table(&["shape", "fits"], d.totals.iter().map(|(k, n)| vec![k.clone(), n.to_string()]).collect());
    Ok(())
}

/// A host action, following the operation when there is one.
pub async fn host_action(c: &Client, o: &Out, id: &str, verb: HostVerb, w: &WaitArgs) -> Result<()> {
    let id = Hosts::lookup(c, id).await?;
    let d = c.host_action(&id, verb).await?;
    match (&d.operation, w.wait) {
        (Some(op), true) => {
            wait::wait(c, op.id.as_str(), Duration::from_secs(w.timeout)).await?;
            eprintln!("host {id}: {} done", verb.as_str());
            Ok(())
        }
        (Some(op), false) => {
            o.object(&d)?;
            eprintln!("follow it with: plinth operation wait {}", op.id);
            Ok(())
        }
        (None, _) if o.machine() => o.object(&d),
        (None, _) => {
            eprintln!("host {id}: {}", d.host.state.as_str());
            Ok(())
        }
    }
}

/// Background tasks.
#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// List them with their last runs.
    List,
    /// Run one now.
    Run { name: String },
}

impl TaskCmd {
    pub async fn run(&self, c: &Client, o: &Out) -> Result<()> {
        match self {
            TaskCmd::List => {
                let d = c.background_tasks().await?;
                let page = d.map(|items| Page { items, next_cursor: None });
                o.list(&page, &["name", "runs", "last_finished_at", "last_result", "last_error", "description"])
            }
            TaskCmd::Run { name } => o.object(&c.run_background_task(name).await?),
        }
    }
}
