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
//! - [`qemu`]: real QEMU guests (q35 for `vm`, microvm for `microvm`), KVM or TCG.

pub mod qemu;
pub mod sim;

use plinth_api::{InstanceId, InstanceSpec, RuntimeEvidence};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

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
    /// Bring a running guest's volume disks to the spec: hot-plug, unplug (asking the
    /// guest to release the disk; it may take its time), grow.
    Devices(Box<InstanceSpec>),
}

impl OpKind {
    /// The step's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Prepare(_) => "prepare",
            OpKind::Boot(_) => "boot",
            OpKind::Shutdown => "shutdown",
            OpKind::Destroy => "destroy",
            OpKind::Devices(_) => "devices",
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

/// Something that happened to a guest that no step asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Happened {
    /// The guest powered itself off (from inside, or ACPI): it is stopped, not crashed.
    PoweredOff,
    /// The guest's process ended unasked, or the guest panicked: it crashed. The text says
    /// how (`qemu exited (killed by signal 9)`, `guest panicked`).
    Crashed(String),
    /// The guest reset itself (a reboot from inside); it keeps running.
    Reset,
    /// The running guest's volume disks changed unasked by a step (it released one it
    /// was asked to release): what it has now.
    Plugs(Vec<plinth_api::ObservedPlug>),
}

/// An unasked change of a guest, sent by a runtime to the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestEvent {
    /// The guest's instance.
    pub instance_id: InstanceId,
    /// What happened.
    pub happened: Happened,
}

/// A boxed future, for object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a runtime fetches image files from: the server's `GET
/// /agent/v1/blobs/sha256/{hex}` (the agent's [`crate::HostClient`]), or a local directory
/// in tests.
pub trait BlobSource: Send + Sync + 'static {
    /// Writes the blob with this lowercase hex SHA-256 to `dest` (a temporary file the
    /// caller verifies and renames). Answers with why it could not.
    fn fetch<'a>(&'a self, sha256: &'a str, dest: &'a Path) -> BoxFuture<'a, Result<(), String>>;

    /// The key of the volume `id`, which this host must open for a guest. None but the
    /// server has keys: by default there is none.
    fn volume_key<'a>(&'a self, id: &'a plinth_api::VolumeId) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { Err(format!("no key source for volume {id}")) })
    }
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

    /// Gives the runtime where to fetch image files from; called once the host has its
    /// credential, before any step.
    fn attach(&self, _blobs: Arc<dyn BlobSource>) {}

    /// The receiver of unasked guest changes (crashes, power-offs from inside). Taken once,
    /// by the runner; `None` for runtimes whose guests never change on their own.
    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<GuestEvent>> {
        None
    }

    /// How the guest runs (or last ran), attached to its reports.
    fn evidence(&self, _instance_id: &InstanceId) -> Option<RuntimeEvidence> {
        None
    }

    /// Whether guests have console logs to ship (the runner skips shipping otherwise).
    fn has_consoles(&self) -> bool {
        false
    }

    /// The guest's serial console log on the host, which the runner ships to the server.
    fn console_log(&self, _instance_id: &InstanceId) -> Option<PathBuf> {
        None
    }

    /// The guest's serial console socket, where the runner writes what users type
    /// (`crate::console_input`); `None` when the runtime's guests take no console input.
    fn console_socket(&self, _instance_id: &InstanceId) -> Option<PathBuf> {
        None
    }

    /// The phases (with their start and duration) of the last step run on a guest, taken
    /// once: the runner sends them with the report that ends the step. None by default.
    fn take_phases(&self, _instance_id: &InstanceId) -> Vec<plinth_api::PhaseTiming> {
        Vec::new()
    }

    /// The guest's volume disks as the runtime last found them (read after every step).
    /// `None` by default: a boot or `Devices` step then counts as giving the guest every
    /// disk of its spec.
    fn plugs(&self, _instance_id: &InstanceId) -> Option<Vec<plinth_api::ObservedPlug>> {
        None
    }
}

/// Opens a NIC's port for a guest: the host's network backend made the persistent tap in
/// its VPC's namespace; the runtime opens it and hands the fd to the hypervisor (QEMU
/// given a tap *name* it cannot see silently makes a new, unconnected one).
pub trait TapOpener: Send + Sync {
    /// Opens the persistent tap `device` in the namespace of the VPC with VNI `vni`.
    fn open_tap(&self, vni: u32, device: &str) -> std::io::Result<std::os::fd::OwnedFd>;
}
