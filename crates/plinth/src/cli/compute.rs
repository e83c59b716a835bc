//! Compute commands: `plinth instance …`, `plinth placement-group …`, `plinth operation
//! …`, `plinth capacity` and the host operations (`plinth host cordon|drain|fence|…`).
//! Actions that continue in the background print their operation; `--wait` follows it to
//! the end with progress and exits non-zero unless it succeeded.

use super::{ListArgs, Spec, wait};
use crate::client::Client;
use crate::output::{self, Format};
use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
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

/// Prints an action's answer, and follows its operation when asked to.
async fn accepted(c: &Client, o: Format, v: &Value, w: &WaitArgs, then: Option<&str>) -> Result<()> {
    let op = v["operation"]["id"].as_str().map(str::to_string);
    match (&op, w.wait) {
        (Some(id), true) => {
            wait::wait(c, id, Duration::from_secs(w.timeout)).await?;
            if let Some(path) = then {
                let now = c.get(path, &[]).await?;
                if o == Format::Json {
                    output::object(o, &now);
                } else {
                    eprintln!(
                        "{}: {}{}",
                        now["id"].as_str().unwrap_or(""),
                        now["state"].as_str().unwrap_or(""),
                        now["host_id"].as_str().map(|h| format!(" on {h}")).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        _ => {
            output::object(o, v);
            if let Some(id) = op {
                eprintln!("follow it with: plinth operation wait {id}");
            }
            Ok(())
        }
    }
}

pub const INSTANCES: Spec = Spec {
    path: "/v1/instances",
    columns: &["id", "name", "state", "shape_name", "host_id", "claim.tcg", "restart_policy", "warning"],
};
pub const GROUPS: Spec =
    Spec { path: "/v1/placement-groups", columns: &["id", "project_id", "name", "policy", "scope"] };
pub const OPERATIONS: Spec =
    Spec { path: "/v1/operations", columns: &["id", "kind", "target", "status", "done", "total", "message"] };

/// Instances.
#[derive(Subcommand, Debug)]
pub enum InstanceCmd {
    /// List instances.
    List {
        #[command(flatten)]
        page: ListArgs,
        #[arg(long)]
        project: Option<String>,
        /// creating, running, stopped, failed, unknown, …
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// key=value
        #[arg(long)]
        label: Option<String>,
    },
    /// Show one.
    Get { id: String },
    /// Create one (placed and claimed at once; prepared and started in the background).
    Create(#[command(flatten)] InstanceCreateArgs),
    /// Change labels or the restart policy.
    Update {
        id: String,
        #[arg(long)]
        if_match: Option<i64>,
        #[arg(long = "label")]
        labels: Option<Vec<String>>,
        /// never, on-failure or always.
        #[arg(long)]
        restart_policy: Option<String>,
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
        #[arg(long)]
        shape: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Rebuild a stopped instance's disk from an image.
    Rebuild {
        id: String,
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
}

/// Flags of `plinth instance create`.
#[derive(Args, Debug)]
pub struct InstanceCreateArgs {
    pub name: String,
    #[arg(long)]
    pub project: String,
    /// Shape name or id.
    #[arg(long)]
    pub shape: String,
    /// Image name or id (your project's image of that name first, then a public one).
    #[arg(long)]
    pub image: String,
    #[arg(long)]
    pub placement_group: Option<String>,
    /// never, on-failure (default) or always.
    #[arg(long)]
    pub restart_policy: Option<String>,
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
    #[command(flatten)]
    pub wait: WaitArgs,
}

fn labels(v: &[String]) -> Value {
    super::args::labels(v)
}

impl InstanceCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        let s = &INSTANCES;
        let one = |id: &str| format!("/v1/instances/{id}");
        match self {
            InstanceCmd::List { page, project, state, host, label } => {
                let mut q = page.query();
                for (k, v) in [("project_id", project), ("state", state), ("host_id", host), ("label", label)] {
                    if let Some(v) = v {
                        q.push((k.to_string(), v.clone()));
                    }
                }
                s.list(c, o, q).await
            }
            InstanceCmd::Get { id } => s.get(c, o, &resolve_instance(c, id).await?).await,
            InstanceCmd::Create(a) => {
                let user_data = match &a.user_data_file {
                    Some(p) => Some(std::fs::read_to_string(p)?),
                    None => None,
                };
                let body = super::args::compact(json!({
                    "project_id": a.project, "name": a.name, "shape": a.shape, "image": a.image,
                    "placement_group_id": a.placement_group, "restart_policy": a.restart_policy,
                    "user_data": user_data, "ssh_keys": a.ssh_keys, "labels": labels(&a.labels),
                    "required_traits": a.required_traits, "forbidden_traits": a.forbidden_traits,
                    "dedicated_host": a.dedicated_host, "start": !a.stopped,
                }));
                let v = c.call(Method::POST, s.path, &[], Some(&body)).await?;
                let id = v["instance"]["id"].as_str().unwrap_or("").to_string();
                accepted(c, o, &v, &a.wait, Some(&one(&id))).await
            }
            InstanceCmd::Update { id, if_match, labels: l, restart_policy } => {
                let body = super::args::compact(json!({
                    "labels": l.as_ref().map(|l| labels(l)), "restart_policy": restart_policy
                }));
                let v = c.call_with_if_match(Method::PATCH, &one(id), *if_match, Some(&body)).await?;
                output::object(o, &v);
                Ok(())
            }
            InstanceCmd::Start { id, wait } => self.action(c, o, id, "start", json!({}), wait).await,
            InstanceCmd::Stop { id, wait } => self.action(c, o, id, "stop", json!({}), wait).await,
            InstanceCmd::Reboot { id, wait } => self.action(c, o, id, "reboot", json!({}), wait).await,
            InstanceCmd::Resize { id, shape, wait } => {
                self.action(c, o, id, "resize", json!({ "shape": shape }), wait).await
            }
            InstanceCmd::Rebuild { id, image, wait } => {
                self.action(c, o, id, "rebuild", json!({ "image": image }), wait).await
            }
            InstanceCmd::Delete { id, wait } => {
                let id = &resolve_instance(c, id).await?;
                let v = c.call(Method::DELETE, &one(id), &[], None).await?;
                accepted(c, o, &v, wait, Some(&one(id))).await
            }
            InstanceCmd::Events { id, page } => {
                let v = c.get(&format!("{}/events", one(id)), &page.query()).await?;
                output::list(o, &v, &["created_at", "kind", "state", "detail", "operation_id"]);
                Ok(())
            }
            InstanceCmd::ConsoleLog { id, bytes, follow } => console_log(c, id, *bytes, *follow).await,
        }
    }

    async fn action(&self, c: &Client, o: Format, id: &str, verb: &str, body: Value, w: &WaitArgs) -> Result<()> {
        let id = &resolve_instance(c, id).await?;
        let v = c.call(Method::POST, &format!("/v1/instances/{id}/{verb}"), &[], Some(&body)).await?;
        accepted(c, o, &v, w, Some(&format!("/v1/instances/{id}"))).await
    }
}

/// An instance id, or the id of the one live instance with this name.
async fn resolve_instance(c: &Client, id_or_name: &str) -> Result<String> {
    if id_or_name.starts_with("ins_") {
        return Ok(id_or_name.to_string());
    }
    let v = c.get("/v1/instances", &[("name".to_string(), id_or_name.to_string())]).await?;
    let live: Vec<&str> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["state"] != "deleted")
        .filter_map(|i| i["id"].as_str())
        .collect();
    match live.as_slice() {
        [one] => Ok(one.to_string()),
        [] => anyhow::bail!("no instance named {id_or_name:?}"),
        many => anyhow::bail!("{} instances are named {id_or_name:?} (in different projects): use an id", many.len()),
    }
}

/// Prints an instance's console: the last `bytes`, then (with `follow`) what follows as
/// it arrives, long-polling the server.
async fn console_log(c: &Client, id: &str, bytes: u64, follow: bool) -> Result<()> {
    use std::io::Write;
    let id = resolve_instance(c, id).await?;
    let path = format!("/v1/instances/{id}/console");
    let mut q = vec![("limit".to_string(), bytes.to_string())];
    loop {
        let v = c.get(&path, &q).await?;
        if v["truncated"].as_bool() == Some(true) && q.iter().any(|(k, _)| k == "offset") {
            eprintln!("[some console output was overwritten before it could be read]");
        }
        let data = v["data"].as_str().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        out.write_all(data.as_bytes())?;
        out.flush()?;
        if !follow {
            if !data.is_empty() && !data.ends_with('\n') {
                writeln!(out)?;
            }
            return Ok(());
        }
        let next = v["next_offset"].as_u64().unwrap_or(0);
        q = vec![
            ("offset".to_string(), next.to_string()),
            ("limit".to_string(), "1048576".to_string()),
            ("wait".to_string(), "30".to_string()),
        ];
    }
}

/// Placement groups.
#[derive(Subcommand, Debug)]
pub enum PlacementGroupCmd {
    List(ListArgs),
    Get {
        id: String,
    },
    /// Create one.
    Create {
        name: String,
        #[arg(long)]
        project: String,
        /// affinity, anti-affinity or spread.
        #[arg(long)]
        policy: String,
        /// host (default) or rack.
        #[arg(long, default_value = "host")]
        scope: String,
    },
    Delete {
        id: String,
    },
}

impl PlacementGroupCmd {
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        let s = &GROUPS;
        match self {
            PlacementGroupCmd::List(l) => s.list(c, o, l.query()).await,
            PlacementGroupCmd::Get { id } => s.get(c, o, id).await,
            PlacementGroupCmd::Create { name, project, policy, scope } => {
                s.create(c, o, json!({ "name": name, "project_id": project, "policy": policy, "scope": scope })).await
            }
            PlacementGroupCmd::Delete { id } => s.delete(c, id, None).await,
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
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        status: Option<String>,
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
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        let s = &OPERATIONS;
        match self {
            OperationCmd::List { page, target, status } => {
                let mut q = page.query();
                for (k, v) in [("target", target), ("status", status)] {
                    if let Some(v) = v {
                        q.push((k.to_string(), v.clone()));
                    }
                }
                s.list(c, o, q).await
            }
            OperationCmd::Get { id } => {
                let mut v = c.get(&format!("{}/{id}", s.path), &[]).await?;
                if o == Format::Json {
                    output::object(o, &v);
                    return Ok(());
                }
                // The step timings read better as their own table than as one JSON cell.
                let timings = v.as_object_mut().and_then(|m| m.remove("timings")).unwrap_or_default();
                output::object(o, &v);
                let timings: Vec<plinth_api::StepTiming> = serde_json::from_value(timings).unwrap_or_default();
                output::timings(&timings);
                Ok(())
            }
            OperationCmd::Wait { id, timeout } => {
                let op = wait::wait(c, id, Duration::from_secs(*timeout)).await?;
                if o == Format::Json {
                    output::object(o, &op);
                }
                Ok(())
            }
            OperationCmd::Cancel { id } => {
                let v = c.call(Method::POST, &format!("/v1/operations/{id}/cancel"), &[], Some(&json!({}))).await?;
                output::object(o, &v);
                Ok(())
            }
        }
    }
}

/// `plinth capacity`: how many more of each shape fit, per rack.
pub async fn capacity(c: &Client, o: Format) -> Result<()> {
    let v = c.get("/v1/capacity", &[]).await?;
    if o == Format::Json {
        output::object(o, &v);
        return Ok(());
    }
    output::list(o, &json!({ "items": v["rows"] }), &["shape_name", "site_id", "rack_id", "hosts", "fits"]);
    let totals = v["totals"].as_object().cloned().unwrap_or_default();
    let items: Vec<Value> = totals.into_iter().map(|(k, n)| json!({ "shape": k, "fits": n })).collect();
    output::list(o, &json!({ "items": items }), &["shape", "fits"]);
    Ok(())
}

/// A host action by name (`cordon`, `drain`, …), following the operation when there is one.
pub async fn host_action(c: &Client, o: Format, id: &str, verb: &str, w: &WaitArgs) -> Result<()> {
    let v = c.call(Method::POST, &format!("/v1/hosts/{id}/{verb}"), &[], Some(&json!({}))).await?;
    if v["operation"].is_object() {
        accepted(c, o, &v, w, None).await?;
        if w.wait {
            eprintln!("host {id}: {verb} done");
        }
        return Ok(());
    }
    if o == Format::Json {
        output::object(o, &v);
    } else {
        eprintln!("host {id}: {}", v["host"]["state"].as_str().unwrap_or(""));
    }
    Ok(())
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
    pub async fn run(&self, c: &Client, o: Format) -> Result<()> {
        match self {
            TaskCmd::List => {
                let v = c.get("/v1/system/background-tasks", &[]).await?;
                output::list(
                    o,
                    &json!({ "items": v }),
                    &["name", "runs", "last_finished_at", "last_result", "last_error", "description"],
                );
                Ok(())
            }
            TaskCmd::Run { name } => {
                let v = c
                    .call(Method::POST, &format!("/v1/system/background-tasks/{name}/run"), &[], Some(&json!({})))
                    .await?;
                output::object(o, &v);
                Ok(())
            }
        }
    }
}
