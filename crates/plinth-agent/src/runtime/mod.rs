//! Guest runtimes: what carrying out one step on one guest means.
//!
//! The runner decides *what* to do with a guest ([`crate::converge`]); a [`Runtime`] only
//! does it. The steps are few and the same for every runtime: prepare (disk, network),
//! boot, shut down, destroy. Each is an async call that finishes when the step is done
//! or has failed, so a runtime needs no state machine of its own, and a runtime keeps what
//! it must to [`Runtime::discover`] its guests again after an agent restart (guests
//! survive agent restarts).
//!
//! A runtime is one module under `runtime/` implementing this trait; adding one touches
//! no other module of this crate. Runtimes here:
//! - [`sim`]: simulated guests for scale tests. No guest runs; it says so everywhere.

pub mod sim;

use plinth_api::{InstanceId, InstanceSpec};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// What a guest actually is on the host (as opposed to what it should be).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actual {
    /// Nothing of it is on the host.
    Absent,
    /// Prepared (disk, network) and not running.
    Stopped,
    /// Booted and running.
    Running,
    /// Prepared and not running because its last boot failed or it crashed.
    Failed,
}

/// One guest a runtime found on the host, e.g. after an agent restart.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Discovered {
    /// The guest's instance.
    pub instance_id: InstanceId,
    /// The spec generation of the last step carried out on it.
    pub generation: i64,
    /// What it is.
    pub actual: Actual,
    /// The `boot_generation` of its current (or last attempted) boot; `None` if it was
    /// never booted.
    pub booted_generation: Option<i64>,
    /// Why it failed, when it did.
    pub detail: Option<String>,
}

/// One step on one guest.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// Make the guest's resources (disk, network) from its spec: absent → stopped.
    Prepare(Box<InstanceSpec>),
    /// Boot the prepared guest with its spec: stopped/failed → running (or failed).
    Boot(Box<InstanceSpec>),
    /// Shut the guest down, keeping its resources: running → stopped.
    Shutdown,
    /// Remove everything of the guest: any → absent.
    Destroy,
}

impl OpKind {
    /// The step's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Prepare(_) => "prepare",
            OpKind::Boot(_) => "boot",
            OpKind::Shutdown => "shutdown",
            OpKind::Destroy => "destroy",
        }
    }
}

/// A step to carry out, for the spec generation it was decided on.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// The guest's instance.
    pub instance_id: InstanceId,
    /// The spec generation the step was decided on.
    pub generation: i64,
    /// What to do.
    pub kind: OpKind,
}

/// Why a step or a discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The step failed; the text is the detail reported to the server.
    #[error("{0}")]
    Failed(String),
    /// The runtime's own records could not be read or written.
    #[error("runtime state {path}: {reason}")]
    State {
        /// Where the records are.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A guest runtime. Steps on different guests may run concurrently; the runner never runs
/// two steps on the same guest at once.
pub trait Runtime: Send + Sync + 'static {
    /// The runtime's name as put in the inventory (`HostInventory::runtime`): `sim`, `qemu`.
    fn name(&self) -> &'static str;

    /// The guests already on the host (after an agent restart), so the runner can report
    /// them and converge from where they are.
    fn discover(&self) -> impl Future<Output = Result<Vec<Discovered>, RuntimeError>> + Send;

    /// Carries out one step; answers when it is done or has failed.
    fn execute(&self, op: Op) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
