//! The `qemu` runtime: each guest is a real QEMU process (q35 for runtime class `vm`,
//! microvm for `microvm`), under KVM or TCG.
//!
//! Steps:
//! - **prepare**: fetch the image files into the cache ([`images`]), make the root disk
//!   (a qcow2 overlay), write `guest.json` → stopped. Claims the host cannot honour
//!   (hugepages it has not got, a microvm with a disk-boot image) are refused here.
//! - **boot**: write the NoCloud seed disk when the spec has one ([`cidata`]), open the
//!   NICs' taps through the host's [`TapOpener`] (a guest with NICs on an agent without
//!   one fails with a clear detail), start QEMU daemonized with the tap fds inherited
//!   ([`process`]), connect QMP ([`qmp`]), check
//!   `query-status` is `running`, pin the vCPU threads of dedicated claims, start the
//!   guest's watcher → running. Idempotent: a running guest of the same boot is left
//!   alone. A boot with a higher `boot_generation` of a running guest is a reboot:
//!   `system_reset` in place (same process), or a new process when the command line
//!   changed (a resize).
//! - **shutdown**: `system_powerdown`, wait for the guest up to `graceful_timeout`, then
//!   `quit`, then SIGKILL; the process must be gone → stopped.
//! - **destroy**: end the process, remove the guest's directory (disk included), gc the
//!   image cache → absent.
//!
//! The watcher (`watcher.rs`, one task per running guest) holds the QMP connection and
//! turns what the guest does unasked into [`GuestEvent`]s: a guest power-off (`SHUTDOWN`
//! from the guest; QEMU stays alive thanks to `-no-shutdown`, the watcher quits it) →
//! `PoweredOff`; a panic → `Crashed`; a guest reset → `Reset`; QMP closing while no step
//! asked → `Crashed("qemu exited unexpectedly …")`. It also keeps the console log bounded
//! ([`console`]).
//!
//! Guests survive agent restarts: QEMU is not the agent's child, and
//! [`Runtime::discover`] (`discover.rs`) reads each `guest.json`, finds the process again (pid, cmdline
//! and start time must match), reconnects QMP and asks `query-status`. It never restarts a
//! guest: running → running (watcher restarted); powered off or panicked while the agent
//! was away → stopped / failed; process gone → failed.
//!
//! Owns QEMU processes, their QMP connections and the files under `{data_dir}/qemu` and
//! `{data_dir}/images`; what to do with a guest is decided in [`crate::converge`].

mod blockdev;
pub mod cidata;
pub mod cmdline;
pub mod console;
mod discover;
pub mod guest;
mod guest_agent;
pub mod host;
mod hotplug;
pub mod images;
pub mod process;
pub mod qmp;
mod watcher;

use crate::runtime::{Actual, BlobSource, Discovered, GuestEvent, Op, OpKind, Runtime, RuntimeError, TapOpener};
pub use cmdline::{Accel, Machine};
use cmdline::{Boot, Hugepages, QemuArgs};
use guest::{GuestPaths, GuestRecord, MAX_SOCKET_PATH};
use images::ImageCache;
use plinth_api::{
    ImageBoot, InstanceId, InstanceNicSpec, InstanceSpec, InstanceVolumeSpec, PhaseTiming, RuntimeClass,
    RuntimeEvidence,
};
use qmp::{EventStream, Qmp};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How the QEMU runtime runs guests on this host.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where guests and the image cache live (`{data_dir}/qemu`, `{data_dir}/images`).
    pub data_dir: PathBuf,
    /// The accelerator (from the agent's KVM probe); a claim with `tcg` forces TCG.
    pub accel: Accel,
    /// How long a shutdown waits for the guest to power off before `quit`.
    pub graceful_timeout: Duration,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The `qemu-img` binary.
    pub qemu_img: PathBuf,
    /// A console log over this many bytes is rotated.
    pub console_cap: u64,
    /// How often a running guest's console log is checked against the cap.
    pub console_check_every: Duration,
    /// How long QEMU may take to start (launcher exit, QMP greeting).
    pub start_timeout: Duration,
    /// The host's TSC rate in kHz for microvm guests under TCG (`None`: read from
    /// `/proc/cpuinfo`).
    pub tsc_khz: Option<u64>,
    /// Where hugepage facts are read.
    pub hugepages: host::HugepageHost,
    /// A cached image file no guest uses is removed once unused this long (10 min).
    pub image_keep: Duration,
    /// The host's volume pool (`<pool>/<volume id>.qcow2`); `None`: no guest can have a
    /// volume here.
    pub volume_pool: Option<PathBuf>,
}

impl RuntimeConfig {
    /// Defaults: `qemu-system-x86_64` and `qemu-img` from `PATH`, 30 s graceful timeout,
    /// 1 MiB console cap checked every 5 s, 60 s to start, unused images kept 10 min.
    pub fn new(data_dir: impl Into<PathBuf>, accel: Accel) -> RuntimeConfig {
        RuntimeConfig {
            data_dir: data_dir.into(),
            accel,
            graceful_timeout: Duration::from_secs(30),
            qemu: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            console_cap: 1 << 20,
            console_check_every: Duration::from_secs(5),
            start_timeout: Duration::from_secs(60),
            tsc_khz: None,
            hugepages: host::HugepageHost::default(),
            image_keep: Duration::from_secs(600),
            volume_pool: None,
        }
    }
}

/// A running guest's process and connection.
struct Live {
    /// Tells this run's watcher from a later one's.
    epoch: u64,
    pid: u32,
    started: Option<u64>,
    qmp: Arc<Qmp>,
    /// A step is ending the guest: the watcher reports nothing.
    stopping: Arc<AtomicBool>,
    watcher: Option<tokio::task::AbortHandle>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Never the process: dropping the runtime (agent exit) leaves guests running.
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
    }
}

#[derive(Default)]
struct GuestState {
    loaded: bool,
    record: Option<GuestRecord>,
    live: Option<Live>,
}

struct Guest {
    id: InstanceId,
    paths: GuestPaths,
    state: tokio::sync::Mutex<GuestState>,
    /// The evidence of the last state, readable without waiting for a step.
    evidence: Mutex<Option<RuntimeEvidence>>,
    /// The timed phases of the step running (or last run), for its report.
    phases: Mutex<Vec<PhaseTiming>>,
    /// The running guest's volume disks by slot (`hotplug.rs`).
    disks: Mutex<std::collections::BTreeMap<u8, plinth_api::ObservedPlug>>,
    /// Slots whose disk the guest was asked to release and has not yet.
    unplugging: Mutex<BTreeSet<u8>>,
    /// Its block nodes were checked for ones left without their disk since this agent
    /// started (or since a step on its disks last failed).
    scanned: AtomicBool,
}

/// Runs `f` as phase `phase` of guest `g`'s current step, noting when it began and how
/// long it took.
async fn timed<T>(g: &Guest, phase: &str, f: impl std::future::Future<Output = T>) -> T {
    let started_at = chrono::Utc::now();
    let t0 = Instant::now();
    let out = f.await;
    let took_ms = t0.elapsed().as_micros() as f64 / 1000.0;
    lock(&g.phases).push(PhaseTiming { phase: phase.to_string(), started_at, took_ms });
    out
}

struct Inner {
    cfg: RuntimeConfig,
    root: PathBuf,
    images: ImageCache,
    disk_cache: String,
    tsc_khz: Option<u64>,
    blobs: RwLock<Option<Arc<dyn BlobSource>>>,
    /// Opens the NICs' taps (`None`: this host has no network backend; a guest with NICs
    /// cannot be prepared or booted).
    taps: Option<Arc<dyn TapOpener>>,
    /// `/dev/vhost-net` exists.
    vhost: bool,
    guests: Mutex<HashMap<InstanceId, Arc<Guest>>>,
    events: mpsc::UnboundedSender<GuestEvent>,
    events_rx: Mutex<Option<mpsc::UnboundedReceiver<GuestEvent>>>,
    epoch: AtomicU64,
}

/// The QEMU runtime of one host.
pub struct QemuRuntime {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn failed(detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Failed(detail.into())
}

/// How QMP commands of a step may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

impl QemuRuntime {
    /// A runtime keeping its guests under `config.data_dir` (made absolute, created 0700).
    /// Refuses a data directory so long that a guest's QMP socket path would pass the
    /// 107-byte limit of unix socket paths.
    pub fn new(config: RuntimeConfig) -> Result<QemuRuntime, RuntimeError> {
        QemuRuntime::with_taps(config, None)
    }

    /// A runtime whose guests' NICs are plugged into the taps `taps` opens (the host's
    /// network backend made them in the VPCs' namespaces).
    pub fn with_taps(config: RuntimeConfig, taps: Option<Arc<dyn TapOpener>>) -> Result<QemuRuntime, RuntimeError> {
        let data_dir = std::path::absolute(&config.data_dir)
            .map_err(|e| RuntimeError::State { path: config.data_dir.display().to_string(), reason: e.to_string() })?;
        let root = data_dir.join("qemu");
        let sample = GuestPaths::new(&root, &InstanceId(format!("ins_{}", "0".repeat(26))));
        let longest = [&sample.qmp_socket, &sample.agent_socket, &sample.serial_socket]
            .into_iter()
            .max_by_key(|p| p.as_os_str().len())
            .unwrap_or(&sample.qmp_socket);
        let len = longest.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(RuntimeError::State {
                path: data_dir.display().to_string(),
                reason: format!(
                    "the QEMU data directory is too long: a guest's socket path would be {len} bytes ({}), over the {MAX_SOCKET_PATH}-byte limit of unix socket paths; use a data directory of at most {} bytes",
                    longest.display(),
                    data_dir.as_os_str().len() - (len - MAX_SOCKET_PATH)
                ),
            });
        }
        guest::private_dir(&root)
            .map_err(|e| RuntimeError::State { path: root.display().to_string(), reason: e.to_string() })?;
        let disk_cache = if host::supports_o_direct(&root) { "none" } else { "writeback" }.to_string();
        let tsc_khz = config
            .tsc_khz
            .or_else(|| std::fs::read_to_string("/proc/cpuinfo").ok().as_deref().and_then(host::tsc_khz_from_cpuinfo));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut cfg = config;
        cfg.data_dir = data_dir.clone();
        Ok(QemuRuntime {
            inner: Arc::new(Inner {
                images: ImageCache::keeping(&data_dir, cfg.image_keep),
                cfg,
                root,
                disk_cache,
                tsc_khz,
                blobs: RwLock::new(None),
                taps,
                vhost: Path::new("/dev/vhost-net").exists(),
                guests: Mutex::new(HashMap::new()),
                events: tx,
                events_rx: Mutex::new(Some(rx)),
                epoch: AtomicU64::new(1),
            }),
        })
    }

    /// The directory of guest `id` (`{data_dir}/qemu/{id}`).
    pub fn guest_dir(&self, id: &InstanceId) -> PathBuf {
        self.inner.root.join(id.as_str())
    }

    /// The image cache directory (`{data_dir}/images/sha256`).
    pub fn image_dir(&self) -> PathBuf {
        self.inner.images.dir().to_path_buf()
    }

    /// Removes cached image files no guest uses; answers their digests. Runs after each
    /// destroy too.
    pub async fn gc_images(&self) -> Vec<String> {
        self.inner.gc().await
    }

    /// Presses guest `id`'s ACPI power button (`system_powerdown`) without any step
    /// asking: what the guest does next is its own doing, so a power-off that follows
    /// is reported as [`crate::runtime::Happened::PoweredOff`], as if pressed on the
    /// machine.
    pub async fn press_power_button(&self, id: &InstanceId) -> Result<(), RuntimeError> {
        let g = lock(&self.inner.guests).get(id).cloned().ok_or_else(|| failed(format!("{id} is not here")))?;
        let qmp = {
            let st = g.state.lock().await;
            st.live.as_ref().map(|l| l.qmp.clone())
        };
        let qmp = qmp.ok_or_else(|| failed(format!("{id} is not running")))?;
        qmp.system_powerdown().await.map_err(|e| failed(e.to_string()))
    }
}

impl Inner {
    fn guest(&self, id: &InstanceId) -> Arc<Guest> {
        lock(&self.guests)
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Guest {
                    id: id.clone(),
                    paths: GuestPaths::new(&self.root, id),
                    state: tokio::sync::Mutex::new(GuestState::default()),
                    evidence: Mutex::new(None),
                    phases: Mutex::new(Vec::new()),
                    disks: Mutex::new(Default::default()),
                    unplugging: Mutex::new(BTreeSet::new()),
                    scanned: AtomicBool::new(false),
                })
            })
            .clone()
    }

    async fn load(&self, g: &Guest, st: &mut GuestState) -> Result<(), RuntimeError> {
        if !st.loaded {
            st.record = guest::load(&g.paths.record).await?;
            st.loaded = true;
        }
        Ok(())
    }

    fn blobs(&self) -> Option<Arc<dyn BlobSource>> {
        self.blobs.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, g: &Guest, st: &GuestState) {
        let ev = st.record.as_ref().map(|r| RuntimeEvidence {
            runtime: "qemu".into(),
            accelerator: r.accelerator.clone().unwrap_or_else(|| self.accel_for(&r.spec).as_str().to_string()),
            machine: r.machine.clone().or_else(|| machine_for(r.spec.runtime_class).ok().map(|m| m.as_str().into())),
            command_line: r.argv.clone(),
            pid: st.live.as_ref().map(|l| l.pid),
            qmp_socket: Some(g.paths.qmp_socket.display().to_string()),
            serial_log: Some(g.paths.console_log.display().to_string()),
            pinned_cpus: r.pinned_cpus.clone(),
        });
        *lock(&g.evidence) = ev;
    }

    fn accel_for(&self, spec: &InstanceSpec) -> Accel {
        if spec.claim.tcg { Accel::Tcg } else { self.cfg.accel }
    }

    /// Every image digest a guest on disk uses.
    async fn images_in_use(&self) -> BTreeSet<String> {
        let mut used = BTreeSet::new();
        let Ok(mut dirs) = tokio::fs::read_dir(&self.root).await else { return used };
        while let Ok(Some(d)) = dirs.next_entry().await {
            match guest::load(&d.path().join("guest.json")).await {
                Ok(Some(r)) => used.extend(r.images()),
                Ok(None) => {}
                Err(e) => {
                    // Unreadable: keep everything rather than pull an image from under it.
                    tracing::warn!("qemu: {e}; image gc skipped");
                    return BTreeSet::from(["*".to_string()]);
                }
            }
        }
        used
    }

    async fn gc(&self) -> Vec<String> {
        let used = self.images_in_use().await;
        if used.contains("*") {
            return Vec::new();
        }
        self.images.gc(&used).await
    }

    /// Fetches (if needed) the files `spec` boots; answers (kernel, initrd) paths and
    /// the digests.
    async fn boot_files(&self, spec: &InstanceSpec) -> Result<(Boot, BTreeSet<String>), String> {
        let Some(src) = &spec.boot else {
            return Err("the instance has no boot source (is its image registered and available?)".into());
        };
        match src.boot {
            ImageBoot::Disk => Ok((Boot::Disk, BTreeSet::new())),
            ImageBoot::Direct => {
                let Some(k) = &src.kernel else { return Err("the direct-boot image has no kernel".into()) };
                let blobs = self.blobs();
                let kernel = self.images.ensure(blobs.as_deref(), k).await?;
                let mut digests = BTreeSet::from([k.sha256.clone()]);
                let initrd = match &src.initrd {
                    Some(i) => {
                        digests.insert(i.sha256.clone());
                        Some(self.images.ensure(blobs.as_deref(), i).await?)
                    }
                    None => None,
                };
                Ok((Boot::Direct { kernel, initrd, cmdline: src.cmdline.clone().unwrap_or_default() }, digests))
            }
        }
    }

    /// The QEMU command line of `spec` for guest `g`.
    /// With `check_free`, refuses when the host has not the free hugepages the claim asks.
    fn qemu_args(&self, g: &Guest, spec: &InstanceSpec, boot: Boot, check_free: bool) -> Result<QemuArgs, String> {
        let machine = machine_for(spec.runtime_class)?;
        let (memory_mib, hugepages) = if spec.claim.hugepages.is_empty() {
            (spec.claim.memory_mib, None)
        } else {
            let plan = self.cfg.hugepages.plan(&spec.claim.hugepages, check_free)?;
            let nodes = if plan.nodes.len() == 1 { plan.nodes.clone() } else { Vec::new() };
            (plan.memory_mib, Some(Hugepages { mount: plan.mount, host_nodes: nodes }))
        };
        let (root_volume, disks) = self.volume_disks(spec)?;
        Ok(QemuArgs {
            qemu: self.cfg.qemu.clone(),
            instance_id: g.id.to_string(),
            machine,
            accel: self.accel_for(spec),
            vcpus: spec.claim.vcpus,
            memory_mib,
            hugepages,
            boot,
            disk: g.paths.disk.clone(),
            disk_cache: self.disk_cache.clone(),
            qmp_socket: g.paths.qmp_socket.clone(),
            agent_socket: g.paths.agent_socket.clone(),
            pidfile: g.paths.pidfile.clone(),
            console_log: g.paths.console_log.clone(),
            serial_socket: g.paths.serial_socket.clone(),
            tsc_khz: self.tsc_khz,
            nics: spec.nics.iter().map(|n| cmdline::Nic { mac: n.mac.clone(), mtu: n.mtu }).collect(),
            vhost: self.vhost,
            seed: spec.cloud_init.as_ref().map(|_| g.paths.seed.clone()),
            volumes: disks,
            root_volume,
        })
    }

    /// The guest's volumes as disks (its boot volume, then its data volumes): each
    /// encrypted one's key is read from the fd after the taps' (the order
    /// [`guest_volumes`] gives [`QemuRuntime::key_pipes`]).
    fn volume_disks(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(Option<cmdline::VolumeDisk>, Vec<cmdline::VolumeDisk>), String> {
        let all = guest_volumes(spec);
        if all.is_empty() {
            return Ok((None, Vec::new()));
        }
        let pool = self.cfg.volume_pool.as_ref().ok_or("this host has no volume pool, and the guest has volumes")?;
        let mut next_fd = cmdline::first_tap_fd() + spec.nics.len() as i32;
        let mut out = Vec::new();
        for v in all {
            let key_fd = v.encrypted.then(|| {
                next_fd += 1;
                next_fd - 1
            });
            out.push(cmdline::VolumeDisk {
                file: pool.join(format!("{}.qcow2", v.volume_id)),
                layers: v.layers.iter().map(|l| pool.join(l.file(&v.volume_id))).collect(),
                slot: v.slot,
                serial: v.serial.clone(),
                key_fd,
                qos: v.qos.clone(),
                connection: v.connection.clone(),
            });
        }
        let root = spec.boot_volume.as_ref().map(|_| out.remove(0));
        Ok((root, out))
    }

    /// One pipe per encrypted volume of the guest, holding its key (fetched from the
    /// server now) with the write end closed: QEMU reads the key from the read end once,
    /// at start. The key is never on a disk or a command line.
    async fn key_pipes(&self, volumes: &[InstanceVolumeSpec]) -> Result<Vec<std::os::fd::OwnedFd>, String> {
        use std::io::Write;
        let mut out = Vec::new();
        for v in volumes.iter().filter(|v| v.encrypted) {
            let blobs = self.blobs().ok_or("no key source (the host is not connected)")?;
            let key = blobs.volume_key(&v.volume_id).await?;
            let (read, write) = std::io::pipe().map_err(|e| format!("a pipe for volume {}'s key: {e}", v.volume_id))?;
            let mut write = write;
            write.write_all(key.as_bytes()).map_err(|e| format!("volume {}'s key: {e}", v.volume_id))?;
            drop(write);
            out.push(std::os::fd::OwnedFd::from(read));
        }
        Ok(out)
    }
}

/// Every volume disk of a spec, its boot volume first (the order of their key fds).
fn guest_volumes(spec: &InstanceSpec) -> Vec<&InstanceVolumeSpec> {
    spec.boot_volume.iter().chain(spec.volumes.iter()).collect()
}

fn machine_for(class: RuntimeClass) -> Result<Machine, String> {
    match class {
        RuntimeClass::Vm => Ok(Machine::Q35),
        RuntimeClass::Microvm => Ok(Machine::Microvm),
        RuntimeClass::Baremetal => Err("the qemu runtime does not run bare-metal instances".into()),
    }
}

/// The most NICs a guest takes.
const MAX_NICS: usize = 8;

/// Checks what can be checked of a spec before anything is made.
fn check_spec(spec: &InstanceSpec) -> Result<(), String> {
    let machine = machine_for(spec.runtime_class)?;
    let Some(src) = &spec.boot else {
        return Err("the instance has no boot source (is its image registered and available?)".into());
    };
    if machine == Machine::Microvm && src.boot == ImageBoot::Disk {
        return Err(
            "a microvm boots direct-boot images only (a kernel, no firmware): this image is a disk image".into()
        );
    }
    if src.boot == ImageBoot::Direct && src.kernel.is_none() {
        return Err("the direct-boot image has no kernel".into());
    }
    let c = &spec.claim;
    if c.vcpus == 0 {
        return Err("the claim has 0 vCPUs".into());
    }
    if c.memory_mib == 0 && c.hugepages.is_empty() {
        return Err("the claim has no memory".into());
    }
    if !c.cpus.is_empty() && c.cpus.len() != c.vcpus as usize {
        return Err(format!("the claim pins {} host CPUs for {} vCPUs", c.cpus.len(), c.vcpus));
    }
    if !c.gpus.is_empty() {
        return Err("the qemu runtime cannot pass GPUs through yet".into());
    }
    if spec.nics.len() > MAX_NICS {
        return Err(format!("the instance has {} NICs; a guest takes at most {MAX_NICS}", spec.nics.len()));
    }
    Ok(())
}

/// Ends QEMU `pid` the hard way: `quit` (if a connection is given), then SIGKILL.
async fn end_process(qmp: Option<&Qmp>, pid: u32, pidfile: &Path, started: Option<u64>) -> Result<(), String> {
    if let Some(q) = qmp
        && process::is_ours(pid, pidfile, started)
    {
        let _ = tokio::time::timeout(Duration::from_secs(5), q.quit()).await;
        if process::wait_gone(pid, pidfile, started, Duration::from_secs(5)).await {
            return Ok(());
        }
        tracing::warn!(pid, "qemu did not exit on quit; killing it");
    }
    process::kill(pid, pidfile, started).await
}

/// Removes what a QEMU that is gone may have left (socket, pidfile).
async fn clear_leftovers(paths: &GuestPaths) {
    let frozen = guest_agent::marker(&paths.agent_socket);
    for p in [&paths.qmp_socket, &paths.agent_socket, &paths.serial_socket, &frozen, &paths.pidfile] {
        let _ = tokio::fs::remove_file(p).await;
    }
}

impl Inner {
    fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::Relaxed)
    }

    /// Refuses a spec with NICs on a host that cannot open taps.
    fn check_nics(&self, spec: &InstanceSpec) -> Result<(), String> {
        if !spec.nics.is_empty() && self.taps.is_none() {
            return Err(format!(
                "the instance has {} NIC(s) and this agent has no network backend to open their taps",
                spec.nics.len()
            ));
        }
        Ok(())
    }

    /// Writes the guest's NoCloud seed image (or removes a stale one when it has none).
    async fn write_seed(&self, g: &Guest, spec: &InstanceSpec) -> Result<(), String> {
        let path = g.paths.seed.clone();
        match spec.cloud_init.clone() {
            Some(seed) => tokio::task::spawn_blocking(move || cidata::write(&path, &seed))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("the cloud-init seed disk {}: {e}", g.paths.seed.display())),
            None => match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
        }
    }

    /// Opens the taps of `nics`, in slot order.
    fn open_taps(&self, nics: &[InstanceNicSpec]) -> Result<Vec<std::os::fd::OwnedFd>, String> {
        if nics.is_empty() {
            return Ok(Vec::new());
        }
        let taps = self.taps.as_ref().ok_or_else(|| {
            format!("the instance has {} NIC(s) and this agent has no network backend to open their taps", nics.len())
        })?;
        nics.iter()
            .map(|n| {
                taps.open_tap(n.vni, &n.device)
                    .map_err(|e| format!("cannot open tap {} of NIC {} (VNI {}): {e}", n.device, n.nic_id, n.vni))
            })
            .collect()
    }

    async fn prepare(&self, g: &Guest, st: &mut GuestState, generation: i64, spec: InstanceSpec) -> Result<(), String> {
        check_spec(&spec)?;
        self.check_nics(&spec)?;
        if !spec.claim.hugepages.is_empty() {
            self.cfg.hugepages.plan(&spec.claim.hugepages, true)?;
        }
        guest::private_dir(&g.paths.dir).map_err(|e| format!("{}: {e}", g.paths.dir.display()))?;
        let src = spec.boot.clone().ok_or("no boot source")?;
        let mut digests: Vec<String> =
            [&src.kernel, &src.initrd, &src.disk].into_iter().flatten().map(|b| b.sha256.clone()).collect();
        digests.dedup();
        let _pin = self.images.pin(digests);
        let (_, boot_files) = timed(g, "image_files", self.boot_files(&spec)).await?;
        let disk_base = match src.disk.as_ref().filter(|_| spec.boot_volume.is_none()) {
            Some(b) => Some((
                timed(g, "disk_image", self.images.ensure(self.blobs().as_deref(), b)).await?,
                b.format,
                b.sha256.clone(),
            )),
            None => None,
        };
        if spec.boot_volume.is_some() {
            tracing::info!(instance = %g.id, "qemu: prepare makes no root disk: the guest boots from a volume");
        } else if tokio::fs::try_exists(&g.paths.disk).await.unwrap_or(false) {
            tracing::info!(instance = %g.id, "qemu: prepare keeps the existing root disk");
        } else {
            let base = disk_base.as_ref().map(|(p, f, _)| (p.as_path(), *f));
            timed(g, "disk", images::create_disk(&self.cfg.qemu_img, base, &g.paths.disk, spec.claim.disk_gib)).await?;
        }
        let machine = machine_for(spec.runtime_class)?;
        let record = match st.record.take() {
            Some(mut r) => {
                r.generation = generation;
                r.spec = spec;
                r
            }
            None => GuestRecord {
                runtime: "qemu".into(),
                instance_id: g.id.clone(),
                generation,
                actual: Actual::Stopped,
                detail: None,
                booted_generation: None,
                accelerator: Some(self.accel_for(&spec).as_str().into()),
                machine: Some(machine.as_str().into()),
                spec,
                disk_base: disk_base.map(|(_, _, d)| d),
                boot_files,
                argv: Vec::new(),
                pid: None,
                pid_start: None,
                pinned_cpus: Vec::new(),
            },
        };
        timed(g, "record", guest::save(&g.paths.record, &record)).await.map_err(|e| e.to_string())?;
        st.record = Some(record);
        Ok(())
    }

    async fn boot(
        self: &Arc<Self>,
        g: &Guest,
        st: &mut GuestState,
        generation: i64,
        spec: InstanceSpec,
    ) -> Result<(), String> {
        if st.record.is_none() {
            return Err("boot of a guest that was never prepared".into());
        }
        check_spec(&spec)?;
        self.check_nics(&spec)?;
        let status = match timed(g, "reattach", self.reattach(g, st)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(instance = %g.id, "qemu: {e}; it is ended and started again");
                if let Some(l) = st.live.take() {
                    l.stopping.store(true, Ordering::SeqCst);
                }
                None
            }
        };
        let record = st.record.as_mut().ok_or("no record")?;
        let same_boot = record.booted_generation.is_some_and(|b| b >= spec.boot_generation);
        if same_boot && status.as_deref() == Some("running") {
            // Already booted: never restart a healthy guest.
            record.generation = generation;
            record.actual = Actual::Running;
            return guest::save(&g.paths.record, record).await.map_err(|e| e.to_string());
        }
        let _pin = self.images.pin(record.images());
        let (boot, boot_files) = timed(g, "image_files", self.boot_files(&spec)).await?;
        let record = st.record.as_mut().ok_or("no record")?;
        if let (Some(status), Some(live)) = (status, st.live.as_ref()) {
            // The running process holds its hugepages: do not count them as missing.
            let argv = self.qemu_args(g, &spec, boot.clone(), false)?.argv();
            let same_devices = record.spec.nics == spec.nics
                && record.spec.cloud_init == spec.cloud_init
                && record.spec.volumes == spec.volumes;
            if !same_boot && status == "running" && record.argv == argv && same_devices {
                // A reboot in place.
                live.qmp.system_reset().await.map_err(|e| format!("reboot: {e}"))?;
                tracing::info!(instance = %g.id, boot_generation = spec.boot_generation, "qemu: guest reset (reboot)");
                record.generation = generation;
                record.booted_generation = Some(spec.boot_generation);
                record.actual = Actual::Running;
                record.detail = None;
                record.spec = spec;
                guest::save(&g.paths.record, record).await.map_err(|e| e.to_string())?;
                return Ok(());
            }
            // Not running as it should (a new command line, or a run state other than
            // running): this process goes and a new one starts.
            tracing::info!(instance = %g.id, %status, "qemu: restarting the guest's process for a new boot");
            let live = st.live.take().ok_or("no live process")?;
            live.stopping.store(true, Ordering::SeqCst);
            end_process(Some(&live.qmp), live.pid, &g.paths.pidfile, live.started).await?;
            drop(live);
        }
        timed(g, "refresh_disk", self.refresh_disk(g, st, &spec)).await?;
        // Refused here, before anything starts, when the host lacks the hugepages.
        let args = self.qemu_args(g, &spec, boot, true)?;
        let argv = args.argv();
        self.start(g, st, generation, spec, argv, &args, boot_files).await
    }

    /// Between two processes of a guest: a rebuild (its spec names another image) gets a
    /// new root disk from that image, the old one is discarded; a resize grows the disk to
    /// the shape's size.
    async fn refresh_disk(&self, g: &Guest, st: &mut GuestState, spec: &InstanceSpec) -> Result<(), String> {
        let record = st.record.as_mut().ok_or("no record")?;
        if spec.boot_volume.is_some() {
            // Its root disk is a volume: neither remade nor grown here.
            return Ok(());
        }
        let was = record.spec.boot.as_ref().map(|b| b.image_id.clone());
        let src = spec.boot.clone().ok_or("no boot source")?;
        if was.as_ref() != Some(&src.image_id) {
            let base = match &src.disk {
                Some(b) => Some((self.images.ensure(self.blobs().as_deref(), b).await?, b.format, b.sha256.clone())),
                None => None,
            };
            let _ = tokio::fs::remove_file(&g.paths.disk).await;
            let b = base.as_ref().map(|(p, f, _)| (p.as_path(), *f));
            images::create_disk(&self.cfg.qemu_img, b, &g.paths.disk, spec.claim.disk_gib).await?;
            record.disk_base = base.map(|(_, _, d)| d);
            record.spec.boot = Some(src.clone());
            guest::save(&g.paths.record, record).await.map_err(|e| e.to_string())?;
            tracing::info!(instance = %g.id, image = %src.image_id, "qemu: root disk made anew from the rebuilt image");
        } else if spec.claim.disk_gib > record.spec.claim.disk_gib {
            images::grow_disk(&self.cfg.qemu_img, &g.paths.disk, spec.claim.disk_gib).await?;
            tracing::info!(instance = %g.id, disk_gib = spec.claim.disk_gib, "qemu: root disk grown for a resize");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn start(
        self: &Arc<Self>,
        g: &Guest,
        st: &mut GuestState,
        generation: i64,
        spec: InstanceSpec,
        argv: Vec<String>,
        args: &QemuArgs,
        boot_files: BTreeSet<String>,
    ) -> Result<(), String> {
        // Any earlier process of this guest that is still around (e.g. one the agent could
        // not reach after a restart) goes first.
        if let Some(pid) = process::read_pidfile(&g.paths.pidfile) {
            process::kill(pid, &g.paths.pidfile, None).await?;
        }
        clear_leftovers(&g.paths).await;
        let record = st.record.as_mut().ok_or("no record")?;
        record.generation = generation;
        record.booted_generation = Some(spec.boot_generation);
        record.argv = argv.clone();
        record.accelerator = Some(args.accel.as_str().into());
        record.machine = Some(args.machine.as_str().into());
        record.boot_files = boot_files;
        record.pid = None;
        record.pid_start = None;
        record.pinned_cpus = Vec::new();
        record.actual = Actual::Running;
        record.detail = None;
        let cpus = spec.claim.cpus.clone();
        let nics = spec.nics.clone();
        timed(g, "cloud_init_seed", self.write_seed(g, &spec)).await?;
        record.spec = spec;
        timed(g, "record", guest::save(&g.paths.record, record)).await.map_err(|e| e.to_string())?;

        let t0 = Instant::now();
        let volumes: Vec<InstanceVolumeSpec> = guest_volumes(&record.spec).into_iter().cloned().collect();
        let result = self.launch(g, &argv, &cpus, &nics, &volumes).await;
        let record = st.record.as_mut().ok_or("no record")?;
        match result {
            Ok((live, pinned)) => {
                *lock(&g.disks) = record
                    .spec
                    .volumes
                    .iter()
                    .map(|v| {
                        let plug = plinth_api::ObservedPlug {
                            attachment_id: v.attachment_id.clone(),
                            state: plinth_api::PlugState::Plugged,
                            detail: None,
                        };
                        (v.slot, plug)
                    })
                    .collect();
                lock(&g.unplugging).clear();
                // A QEMU this agent just started has its command line's nodes and no other:
                // nothing to look for before its first hot-plug.
                g.scanned.store(true, Ordering::SeqCst);
                record.pid = Some(live.pid);
                record.pid_start = live.started;
                record.pinned_cpus = pinned;
                tracing::info!(instance = %g.id, pid = live.pid, ms = t0.elapsed().as_millis() as u64, "qemu: guest started");
                st.live = Some(live);
                timed(g, "record", guest::save(&g.paths.record, record)).await.map_err(|e| e.to_string())
            }
            Err(e) => {
                record.actual = Actual::Failed;
                record.detail = Some(e.clone());
                guest::save(&g.paths.record, record).await.map_err(|e| e.to_string())?;
                Err(e)
            }
        }
    }

    /// Starts QEMU and makes sure it runs; on any failure, no process is left.
    async fn launch(
        self: &Arc<Self>,
        g: &Guest,
        argv: &[String],
        cpus: &[u32],
        nics: &[InstanceNicSpec],
        volumes: &[InstanceVolumeSpec],
    ) -> Result<(Live, Vec<u32>), String> {
        let mut taps = self.open_taps(nics)?;
        // The volumes' keys follow the taps (the fds `volume_disks` numbered).
        taps.extend(timed(g, "volume_keys", self.key_pipes(volumes)).await?);
        timed(
            g,
            "qemu_launch",
            process::start_daemonized(
                argv,
                &g.paths.dir,
                &g.paths.stderr_log,
                self.cfg.start_timeout,
                taps,
                cmdline::first_tap_fd(),
            ),
        )
        .await?;
        let pid = process::read_pidfile(&g.paths.pidfile)
            .ok_or_else(|| format!("qemu started but wrote no pid to {}", g.paths.pidfile.display()))?;
        let started = process::start_time(pid);
        let mut slot = None;
        match self.check_started(g, pid, &mut slot, cpus).await {
            Ok((events, pinned)) => {
                let qmp = slot.ok_or("no QMP connection")?;
                Ok((self.spawn_watcher(g, pid, started, qmp, events), pinned))
            }
            Err(e) => {
                if let Err(k) = end_process(slot.as_deref(), pid, &g.paths.pidfile, started).await {
                    tracing::error!(instance = %g.id, "qemu: {k}");
                }
                clear_leftovers(&g.paths).await;
                Err(e)
            }
        }
    }

    /// Connects to a QEMU just started (into `slot`), checks that the guest runs and pins
    /// its vCPUs.
    async fn check_started(
        &self,
        g: &Guest,
        pid: u32,
        slot: &mut Option<Arc<Qmp>>,
        cpus: &[u32],
    ) -> Result<(EventStream, Vec<u32>), String> {
        let (qmp, events) = timed(g, "qmp_handshake", Qmp::connect(&g.paths.qmp_socket, self.cfg.start_timeout))
            .await
            .map_err(|e| format!("qemu started (pid {pid}) but its monitor cannot be reached: {e}"))?;
        let qmp = slot.insert(Arc::new(qmp));
        let status = timed(g, "query_status", qmp.query_status()).await.map_err(|e| e.to_string())?;
        if status.status != "running" {
            return Err(format!("qemu started but the guest is {}, not running", status.status));
        }
        let pinned = pin_vcpus(qmp, cpus).await?;
        Ok((events, pinned))
    }

    async fn shutdown(&self, g: &Guest, st: &mut GuestState, generation: i64) -> Result<(), String> {
        if let Some(live) = st.live.take() {
            self.graceful_stop(g, &live).await?;
        } else if let Some(pid) = process::read_pidfile(&g.paths.pidfile) {
            process::kill(pid, &g.paths.pidfile, None).await?;
        }
        clear_leftovers(&g.paths).await;
        if let Some(r) = st.record.as_mut() {
            r.generation = generation;
            r.actual = Actual::Stopped;
            r.detail = None;
            r.pid = None;
            r.pid_start = None;
            guest::save(&g.paths.record, r).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `system_powerdown`, wait up to the graceful timeout, `quit`, SIGKILL.
    async fn graceful_stop(&self, g: &Guest, live: &Live) -> Result<(), String> {
        live.stopping.store(true, Ordering::SeqCst);
        let (pid, pidfile, started) = (live.pid, &g.paths.pidfile, live.started);
        let mut events = live.qmp.subscribe();
        // A guest that already powered off (QEMU waits in `shutdown`) needs no button.
        let powered_off = matches!(
            tokio::time::timeout(QMP_TIMEOUT, live.qmp.query_status()).await,
            Ok(Ok(s)) if s.status == "shutdown"
        );
        if !powered_off && process::is_ours(pid, pidfile, started) {
            let t0 = Instant::now();
            match tokio::time::timeout(QMP_TIMEOUT, live.qmp.system_powerdown()).await {
                Ok(Ok(())) => {
                    let deadline = tokio::time::Instant::now() + self.cfg.graceful_timeout;
                    let mut poll = tokio::time::interval(Duration::from_millis(200));
                    loop {
                        tokio::select! {
                            ev = events.recv() => match ev {
                                Some(e) if e.name == "SHUTDOWN" => break,
                                Some(_) => {}
                                None => break,
                            },
                            _ = poll.tick() => if !process::is_ours(pid, pidfile, started) { break },
                            _ = tokio::time::sleep_until(deadline) => {
                                tracing::warn!(instance = %g.id, secs = self.cfg.graceful_timeout.as_secs(), "qemu: the guest did not power off in time; quitting it");
                                break;
                            }
                        }
                    }
                    tracing::debug!(instance = %g.id, ms = t0.elapsed().as_millis() as u64, "qemu: powerdown done");
                }
                other => tracing::warn!(instance = %g.id, "qemu: system_powerdown failed ({other:?}); quitting"),
            }
        }
        end_process(Some(&live.qmp), pid, pidfile, started).await
    }

    async fn destroy(&self, g: &Guest, st: &mut GuestState) -> Result<(), String> {
        if let Some(live) = st.live.take() {
            live.stopping.store(true, Ordering::SeqCst);
            end_process(Some(&live.qmp), live.pid, &g.paths.pidfile, live.started).await?;
        } else if let Some(pid) = process::read_pidfile(&g.paths.pidfile) {
            process::kill(pid, &g.paths.pidfile, None).await?;
        }
        match tokio::fs::remove_dir_all(&g.paths.dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", g.paths.dir.display())),
        }
        st.record = None;
        Ok(())
    }

    async fn execute(self: &Arc<Self>, op: Op) -> Result<(), RuntimeError> {
        if InstanceId::parse(op.instance_id.as_str()).is_none() {
            return Err(failed(format!("{:?} is not an instance id", op.instance_id.as_str())));
        }
        let g = self.guest(&op.instance_id);
        let mut st = g.state.lock().await;
        lock(&g.phases).clear();
        self.load(&g, &mut st).await?;
        let step = op.kind.name();
        let destroy = matches!(op.kind, OpKind::Destroy);
        let result = match op.kind {
            OpKind::Prepare(spec) => self.prepare(&g, &mut st, op.generation, *spec).await,
            OpKind::Boot(spec) => self.boot(&g, &mut st, op.generation, *spec).await,
            OpKind::Shutdown => self.shutdown(&g, &mut st, op.generation).await,
            OpKind::Destroy => self.destroy(&g, &mut st).await,
            OpKind::Devices(spec) => self.devices(&g, &mut st, op.generation, *spec).await,
        };
        if st.live.is_none() {
            lock(&g.disks).clear();
            lock(&g.unplugging).clear();
        }
        self.publish(&g, &st);
        drop(st);
        if destroy && result.is_ok() {
            lock(&self.guests).remove(&g.id);
            self.gc().await;
        }
        match &result {
            Ok(()) => tracing::debug!(instance = %g.id, step, "qemu: step done"),
            Err(e) => tracing::info!(instance = %g.id, step, "qemu: step failed: {e}"),
        }
        result.map_err(RuntimeError::Failed)
    }
}

/// Pins vCPU `i`'s thread to `cpus[i]`; answers the CPUs pinned (empty: no pinning).
async fn pin_vcpus(qmp: &Qmp, cpus: &[u32]) -> Result<Vec<u32>, String> {
    if cpus.is_empty() {
        return Ok(Vec::new());
    }
    let vcpus = qmp.query_cpus_fast().await.map_err(|e| format!("pinning vCPUs: {e}"))?;
    if vcpus.len() != cpus.len() {
        return Err(format!("pinning vCPUs: the guest has {} vCPUs and the claim pins {}", vcpus.len(), cpus.len()));
    }
    let tids: BTreeSet<i32> = vcpus.iter().map(|v| v.thread_id).collect();
    if tids.len() != vcpus.len() {
        return Err(
            "pinning vCPUs: the vCPUs share host threads (single-threaded TCG?), so they cannot be pinned one per CPU"
                .into(),
        );
    }
    for (v, cpu) in vcpus.iter().zip(cpus) {
        process::pin_thread(v.thread_id, *cpu).map_err(|e| format!("pinning vCPU {}: {e}", v.cpu_index))?;
    }
    Ok(cpus.to_vec())
}

impl Runtime for QemuRuntime {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn discover(&self) -> Result<Vec<Discovered>, RuntimeError> {
        self.inner.discover().await
    }

    async fn execute(&self, op: Op) -> Result<(), RuntimeError> {
        self.inner.execute(op).await
    }

    fn attach(&self, blobs: Arc<dyn BlobSource>) {
        *self.inner.blobs.write().unwrap_or_else(|e| e.into_inner()) = Some(blobs);
    }

    fn take_events(&self) -> Option<mpsc::UnboundedReceiver<GuestEvent>> {
        lock(&self.inner.events_rx).take()
    }

    fn evidence(&self, instance_id: &InstanceId) -> Option<RuntimeEvidence> {
        let g = lock(&self.inner.guests).get(instance_id).cloned()?;
        lock(&g.evidence).clone()
    }

    fn has_consoles(&self) -> bool {
        true
    }

    fn console_log(&self, instance_id: &InstanceId) -> Option<PathBuf> {
        let g = lock(&self.inner.guests).get(instance_id).cloned()?;
        Some(g.paths.console_log.clone())
    }

    fn console_socket(&self, instance_id: &InstanceId) -> Option<PathBuf> {
        let g = lock(&self.inner.guests).get(instance_id).cloned()?;
        Some(g.paths.serial_socket.clone())
    }

    fn plugs(&self, instance_id: &InstanceId) -> Option<Vec<plinth_api::ObservedPlug>> {
        let g = lock(&self.inner.guests).get(instance_id).cloned()?;
        Some(lock(&g.disks).values().cloned().collect())
    }

    fn take_phases(&self, instance_id: &InstanceId) -> Vec<PhaseTiming> {
        let Some(g) = lock(&self.inner.guests).get(instance_id).cloned() else { return Vec::new() };
        std::mem::take(&mut *lock(&g.phases))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_too_long_for_socket_paths_is_refused() {
        let long = format!("/tmp/{}", "d".repeat(70));
        let e = QemuRuntime::new(RuntimeConfig::new(&long, Accel::Tcg)).err().expect("refused");
        let text = e.to_string();
        assert!(text.contains("107-byte limit"), "{text}");
        assert!(!Path::new(&long).exists(), "nothing made");
    }
}
