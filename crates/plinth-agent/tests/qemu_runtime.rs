//! The QEMU runtime against real QEMU (TCG) and the real test guest
//! (`scripts/test-guest`, found in `$PLINTH_GUEST_DIR` or `~/.cache/plinth/test-guest`,
//! built when missing). Image files come through a local-directory [`BlobSource`].
//!
//! Every wait is a poll of a condition (a console marker, an event, a process) with a
//! deadline, never a fixed sleep. Tests run in parallel, each with its own data
//! directory; a guard kills any QEMU a failed test leaves behind.

mod common;

use common::{DirBlobs, GuestFiles, KillGuard};
use plinth_agent::runtime::qemu::qmp::Qmp;
use plinth_agent::runtime::qemu::{Accel, QemuRuntime, RuntimeConfig};
use plinth_agent::{Actual, GuestEvent, Happened, Op, OpKind, Runtime};
use plinth_api::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Generous: TCG on a shared 2-core machine, several guests at once.
const DEADLINE: Duration = Duration::from_secs(120);

/// The test guest (built when missing).
fn test_guest() -> GuestFiles {
    let dir = std::env::var_os("PLINTH_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/plinth/test-guest")
    });
    if !dir.join("manifest.json").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-guest");
        let status = std::process::Command::new(&script).status().expect("run scripts/test-guest");
        assert!(status.success(), "scripts/test-guest failed: {status}");
    }
    GuestFiles::load(dir)
}

/// One test's runtime, data directory and guest files.
struct Fixture {
    // Dropped first (fields drop in order): the guard needs the pidfiles in `data`.
    _guard: KillGuard,
    tg: GuestFiles,
    data: tempfile::TempDir,
    rt: QemuRuntime,
    events: mpsc::UnboundedReceiver<GuestEvent>,
    /// The image every spec of this fixture boots (a rebuild names another).
    image_id: ImageId,
}

fn cmdline_of(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn argv_of(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    if args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    args
}

/// Whether a QEMU of guest `id` runs as `pid` (a zombie does not count).
fn qemu_alive(pid: u32, id: &InstanceId) -> bool {
    let c = cmdline_of(pid);
    c.contains("qemu-system") && c.contains(id.as_str())
}

/// Any QEMU process whose command line names `needle`.
fn any_qemu_naming(needle: &str) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        e.file_name().to_string_lossy().parse::<u32>().is_ok_and(|pid| {
            let c = cmdline_of(pid);
            c.contains("qemu-system") && c.contains(needle)
        })
    })
}

fn config(data: &Path) -> RuntimeConfig {
    let mut cfg = RuntimeConfig::new(data, Accel::Tcg);
    cfg.graceful_timeout = Duration::from_secs(60);
    cfg.console_check_every = Duration::from_millis(500);
    // Collected as soon as unused, so the tests see the collection.
    cfg.image_keep = Duration::ZERO;
    cfg
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut RuntimeConfig)) -> Fixture {
        let tg = test_guest();
        let data = tempfile::Builder::new().prefix("pq").tempdir_in("/tmp").expect("tempdir");
        let mut cfg = config(data.path());
        tweak(&mut cfg);
        let rt = QemuRuntime::new(cfg).expect("runtime");
        rt.attach(Arc::new(tg.blobs(false)));
        let events = rt.take_events().expect("events");
        let guard = KillGuard(data.path().to_path_buf());
        Fixture { _guard: guard, tg, data, rt, events, image_id: ImageId::generate() }
    }

    fn blob(&self, name: &str) -> BlobRef {
        self.tg.blob(name)
    }

    fn spec(&self, id: &InstanceId, class: RuntimeClass, generation: i64, boot_generation: i64) -> InstanceSpec {
        InstanceSpec {
            instance_id: id.clone(),
            name: "t".into(),
            generation,
            power: PowerState::Running,
            boot_generation,
            runtime_class: class,
            image: "test-guest".into(),
            claim: Claim {
                vcpus: 1,
                cpu_policy: CpuPolicy::Shared,
                memory_mib: 256,
                disk_gib: 1,
                numa_nodes: vec![],
                cpus: vec![],
                hugepages: vec![],
                gpus: vec![],
                tcg: true,
                rack_id: None,
            },
            ssh_keys: vec![],
            user_data: None,
            boot: Some(BootSource {
                image_id: self.image_id.clone(),
                boot: ImageBoot::Direct,
                disk: None,
                kernel: Some(self.blob("vmlinux")),
                initrd: Some(self.blob("initramfs.cpio.gz")),
                cmdline: Some(self.tg.cmdline.clone()),
            }),
            nics: Vec::new(),
            cloud_init: None,
            volumes: Vec::new(),
            boot_volume: None,
        }
    }

    async fn run(&self, id: &InstanceId, generation: i64, kind: OpKind) -> Result<(), String> {
        self.rt.execute(Op { instance_id: id.clone(), generation, kind }).await.map_err(|e| e.to_string())
    }

    async fn prepare(&self, spec: &InstanceSpec) -> Result<(), String> {
        self.run(&spec.instance_id, spec.generation, OpKind::Prepare(Box::new(spec.clone()))).await
    }

    async fn boot(&self, spec: &InstanceSpec) -> Result<(), String> {
        self.run(&spec.instance_id, spec.generation, OpKind::Boot(Box::new(spec.clone()))).await
    }

    /// The console: the rotated tail (`console.log.1`), then the current log.
    fn console(&self, id: &InstanceId) -> String {
        let log = self.rt.console_log(id).expect("console log");
        let mut rotated = log.clone().into_os_string();
        rotated.push(".1");
        let mut bytes = std::fs::read(&rotated).unwrap_or_default();
        bytes.extend(std::fs::read(&log).unwrap_or_default());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Waits until `marker` is on the console `times` times; answers the time it took.
    async fn wait_console(&self, id: &InstanceId, marker: &str, times: usize) -> Duration {
        let t0 = Instant::now();
        loop {
            let text = self.console(id);
            if text.matches(marker).count() >= times {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < DEADLINE, "no {marker:?} (×{times}) on the console after {DEADLINE:?}:\n{text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next unasked event (of guest `id`, whose console is shown if none comes).
    async fn next_event(&mut self, id: &InstanceId) -> GuestEvent {
        match tokio::time::timeout(DEADLINE, self.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("the event channel closed"),
            Err(_) => panic!("no event after {DEADLINE:?}; console:\n{}", self.console(id)),
        }
    }

    fn pid(&self, id: &InstanceId) -> u32 {
        self.rt.evidence(id).and_then(|e| e.pid).expect("a pid in the evidence")
    }
}

async fn wait_gone(pid: u32, id: &InstanceId) {
    let t0 = Instant::now();
    while qemu_alive(pid, id) {
        assert!(t0.elapsed() < DEADLINE, "qemu {pid} still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_direct_boot_stop_start_and_destroy() {
    let mut f = Fixture::new();
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Vm, 1, 0);
    f.prepare(&spec).await.expect("prepare");
    let found = f.rt.discover().await.expect("discover");
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].actual, found[0].booted_generation), (Actual::Stopped, None));

    let spec = f.spec(&id, RuntimeClass::Vm, 2, 2);
    let t0 = Instant::now();
    f.boot(&spec).await.expect("boot");
    let started = t0.elapsed();
    f.wait_console(&id, &format!("PLINTH-GUEST-READY {id}"), 1).await;
    let ready = t0.elapsed();
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", 1).await;
    eprintln!("q35: boot step {started:?}, READY at {ready:?}, DISK-OK at {:?} (from the boot step)", t0.elapsed());

    let ev = f.rt.evidence(&id).expect("evidence");
    assert_eq!((ev.runtime.as_str(), ev.accelerator.as_str(), ev.machine.as_deref()), ("qemu", "tcg", Some("q35")));
    let pid = ev.pid.expect("pid");
    assert!(qemu_alive(pid, &id), "qemu {pid} runs");
    assert_eq!(ev.command_line, argv_of(pid), "the evidence is the exact argv");
    assert!(ev.command_line.iter().any(|a| a == "-no-shutdown"));
    let socket = PathBuf::from(ev.qmp_socket.expect("socket"));
    assert!(socket.exists());
    eprintln!("q35 argv: {:?}", ev.command_line);

    // The same boot again leaves the guest alone.
    f.boot(&spec).await.expect("boot again");
    assert_eq!(f.pid(&id), pid);

    let t1 = Instant::now();
    f.run(&id, 3, OpKind::Shutdown).await.expect("shutdown");
    eprintln!("q35: shutdown step {:?}", t1.elapsed());
    assert!(f.console(&id).contains("PLINTH-GUEST-POWEROFF"), "the guest powered off gracefully");
    assert!(!qemu_alive(pid, &id), "qemu is gone after shutdown");
    assert_eq!(f.rt.evidence(&id).expect("evidence").pid, None);
    assert!(f.events.try_recv().is_err(), "a power-off we asked for is not an unasked event");
    let found = f.rt.discover().await.expect("discover");
    assert_eq!((found[0].actual, found[0].generation), (Actual::Stopped, 3));

    // Start again: the disk kept its data (boot counter 2).
    f.boot(&f.spec(&id, RuntimeClass::Vm, 4, 4)).await.expect("second boot");
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=2", 1).await;
    let pid2 = f.pid(&id);
    assert_ne!(pid2, pid);

    f.run(&id, 5, OpKind::Destroy).await.expect("destroy");
    assert!(!qemu_alive(pid2, &id), "no process after destroy");
    let dir = f.rt.guest_dir(&id);
    assert!(!dir.exists(), "no guest dir");
    assert!(!socket.exists() && !dir.join("qemu.pid").exists(), "no socket, no pidfile");
    let cached: Vec<_> = std::fs::read_dir(f.rt.image_dir()).expect("image dir").flatten().collect();
    assert!(cached.is_empty(), "cached images gc'd: {cached:?}");
    assert!(f.rt.discover().await.expect("discover").is_empty());
    assert!(f.rt.evidence(&id).is_none());
    drop(f.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_grows_the_disk_and_a_rebuild_makes_it_anew() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    f.prepare(&f.spec(&id, RuntimeClass::Vm, 1, 0)).await.expect("prepare");
    f.boot(&f.spec(&id, RuntimeClass::Vm, 2, 2)).await.expect("boot");
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", 1).await;
    f.run(&id, 3, OpKind::Shutdown).await.expect("shutdown");
    let disk = f.rt.guest_dir(&id).join("disk.qcow2");
    let size = |p: &Path| {
        let out = std::process::Command::new("qemu-img").args(["info", "--output=json", "-U"]).arg(p).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["virtual-size"].as_u64().unwrap()
    };
    assert_eq!(size(&disk), 1 << 30);

    // Resized (stopped) to a 2 GiB disk, then started: the disk grew and kept its data.
    let mut resized = f.spec(&id, RuntimeClass::Vm, 4, 4);
    resized.claim.disk_gib = 2;
    f.boot(&resized).await.expect("boot after resize");
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=2", 1).await;
    assert_eq!(size(&disk), 2 << 30);
    f.run(&id, 5, OpKind::Shutdown).await.expect("shutdown");

    // Rebuilt from another image: a new root disk (the boot counter starts again).
    let mut rebuilt = f.spec(&id, RuntimeClass::Vm, 6, 6);
    rebuilt.claim.disk_gib = 2;
    if let Some(b) = rebuilt.boot.as_mut() {
        b.image_id = ImageId::generate();
    }
    let before = f.console(&id).matches("boot=1").count();
    f.boot(&rebuilt).await.expect("boot after rebuild");
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", before + 1).await;
    f.run(&id, 7, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_kernel_panic_is_a_crash() {
    for class in [RuntimeClass::Vm, RuntimeClass::Microvm] {
        let mut f = Fixture::new();
        let id = InstanceId::generate();
        let mut spec = f.spec(&id, class, 1, 1);
        if let Some(b) = spec.boot.as_mut() {
            b.cmdline = Some(format!("{} plinth.panic=1", f.tg.cmdline));
        }
        f.prepare(&spec).await.expect("prepare");
        f.boot(&spec).await.expect("boot");
        let pid = f.pid(&id);
        f.wait_console(&id, "PLINTH-GUEST-PANIC", 1).await;
        let ev = f.next_event(&id).await;
        assert_eq!(ev.instance_id, id);
        assert_eq!(ev.happened, Happened::Crashed("guest panicked".into()), "{class:?}: {}", f.console(&id));
        wait_gone(pid, &id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_direct_boot() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Microvm, 1, 1);
    f.prepare(&spec).await.expect("prepare");
    let t0 = Instant::now();
    f.boot(&spec).await.expect("boot");
    f.wait_console(&id, &format!("PLINTH-GUEST-READY {id}"), 1).await;
    let ready = t0.elapsed();
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", 1).await;
    eprintln!("microvm: READY at {ready:?}, DISK-OK at {:?} (from the boot step)", t0.elapsed());
    let ev = f.rt.evidence(&id).expect("evidence");
    assert_eq!(ev.machine.as_deref(), Some("microvm"));
    let append = ev.command_line.iter().skip_while(|a| *a != "-append").nth(1).expect("-append");
    assert!(append.contains("tsc_early_khz=") && append.ends_with(&format!("plinth.instance={id}")), "{append}");
    eprintln!("microvm argv: {:?}", ev.command_line);
    f.run(&id, 2, OpKind::Destroy).await.expect("destroy");
    assert!(!f.rt.guest_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_guests_console_log_stays_bounded() {
    // The test guest says little (~150 bytes), so the cap is tiny: the log is rotated
    // under the running QEMU, which goes on writing into the emptied file.
    const CAP: u64 = 64;
    let f = Fixture::with(|c| {
        c.console_cap = CAP;
        c.console_check_every = Duration::from_millis(100);
    });
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Microvm, 1, 1);
    f.prepare(&spec).await.expect("prepare");
    f.boot(&spec).await.expect("boot");
    // The guest's last line is always in what is kept (console.log.1 + console.log).
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", 1).await;
    let log = f.rt.console_log(&id).expect("log");
    let rotated = log.with_file_name("console.log.1");
    let t0 = Instant::now();
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > CAP || !rotated.exists() {
        assert!(t0.elapsed() < DEADLINE, "the console log was never rotated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept = std::fs::metadata(&rotated).expect("rotated").len();
    assert!(kept > 0 && kept <= CAP, "{kept}");
    f.run(&id, 2, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_survive_an_agent_restart_and_a_kill_is_a_crash() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Vm, 1, 1);
    f.prepare(&spec).await.expect("prepare");
    f.boot(&spec).await.expect("boot");
    f.wait_console(&id, &format!("PLINTH-GUEST-READY {id}"), 1).await;
    let pid = f.pid(&id);

    // The agent dies: the runtime goes, the guest stays.
    let Fixture { tg, data, rt, events, _guard, image_id } = f;
    drop(rt);
    drop(events);
    assert!(qemu_alive(pid, &id));
    let rt = QemuRuntime::new(config(data.path())).expect("runtime");
    rt.attach(Arc::new(tg.blobs(false)));
    let mut f = Fixture { events: rt.take_events().expect("events"), tg, data, rt, _guard, image_id };
    let found = f.rt.discover().await.expect("discover");
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].actual, found[0].booted_generation, found[0].generation), (Actual::Running, Some(1), 1));
    assert_eq!(f.pid(&id), pid, "the same process: never restarted");
    // Converging to the same spec is a no-op on the runtime too.
    f.boot(&spec).await.expect("boot is idempotent");
    assert_eq!(f.pid(&id), pid);

    // The new watcher sees the process die.
    // SAFETY: kill(2) on the test's own guest.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let ev = f.next_event(&id).await;
    assert_eq!(ev.instance_id, id);
    match ev.happened {
        Happened::Crashed(d) => assert!(d.contains("qemu exited unexpectedly"), "{d}"),
        other => panic!("expected a crash, got {other:?}"),
    }
    let found = f.rt.discover().await.expect("discover");
    assert_eq!(found[0].actual, Actual::Failed);
    assert_eq!(f.rt.evidence(&id).expect("evidence").pid, None);
    f.run(&id, 2, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_powering_itself_off_is_reported_powered_off() {
    // The test guest powers off only on the ACPI power button, and QEMU takes one QMP
    // client (the runtime's). So the runtime presses the button outside any step; what
    // follows is the guest's own doing: its `poweroff -f` (SHUTDOWN, guest: true), which
    // the watcher must tell from a step's shutdown and from a crash.
    let mut f = Fixture::new();
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Vm, 1, 1);
    f.prepare(&spec).await.expect("prepare");
    f.boot(&spec).await.expect("boot");
    f.wait_console(&id, &format!("PLINTH-GUEST-READY {id}"), 1).await;
    // Not at READY: the test guest prints READY right after starting `acpid`, which may
    // not have opened the button's input device yet (a press then is lost).
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", 1).await;
    let pid = f.pid(&id);
    f.rt.press_power_button(&id).await.expect("button");
    let ev = f.next_event(&id).await;
    assert_eq!((ev.instance_id.clone(), ev.happened), (id.clone(), Happened::PoweredOff));
    assert!(f.console(&id).contains("PLINTH-GUEST-POWEROFF"));
    wait_gone(pid, &id).await;
    let found = f.rt.discover().await.expect("discover");
    assert_eq!((found[0].actual, found[0].detail.clone()), (Actual::Stopped, None));
    f.run(&id, 2, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_boot_generation_reboots_in_place() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Vm, 1, 1);
    f.prepare(&spec).await.expect("prepare");
    f.boot(&spec).await.expect("boot");
    let ready = format!("PLINTH-GUEST-READY {id}");
    f.wait_console(&id, &ready, 1).await;
    f.wait_console(&id, "boot=1", 1).await;
    let pid = f.pid(&id);
    let t0 = Instant::now();
    f.boot(&f.spec(&id, RuntimeClass::Vm, 2, 2)).await.expect("reboot");
    f.wait_console(&id, &ready, 2).await;
    eprintln!("q35: reboot → READY in {:?}", t0.elapsed());
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=2", 1).await;
    assert_eq!(f.pid(&id), pid, "rebooted in place, same process");
    let found = f.rt.discover().await.expect("discover");
    assert_eq!((found[0].actual, found[0].booted_generation), (Actual::Running, Some(2)));
    f.run(&id, 3, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hugepages_the_host_has_not_got_are_refused_before_anything_starts() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    let mut huge = f.spec(&id, RuntimeClass::Vm, 1, 1);
    huge.claim.memory_mib = 0;
    huge.claim.hugepages = vec![HugepageClaim { numa_node: 0, size_mib: 1024, pages: 1 }];
    let e = f.prepare(&huge).await.expect_err("prepare refused");
    assert!(e.contains("1 GiB") && e.contains("refused"), "{e}");
    eprintln!("prepare refused: {e}");

    // Prepared without, then booted asking for them: refused at boot too.
    f.prepare(&f.spec(&id, RuntimeClass::Vm, 1, 0)).await.expect("prepare");
    huge.generation = 2;
    let e = f.boot(&huge).await.expect_err("boot refused");
    assert!(e.contains("1 GiB") && e.contains("refused"), "{e}");
    let dir = f.rt.guest_dir(&id);
    assert!(!dir.join("qemu.pid").exists());
    assert!(!any_qemu_naming(&dir.display().to_string()), "no process was started");
    f.run(&id, 3, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_vcpus_are_pinned_in_vcpu_order() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    let mut spec = f.spec(&id, RuntimeClass::Vm, 1, 1);
    spec.claim.vcpus = 2;
    spec.claim.cpu_policy = CpuPolicy::Dedicated;
    spec.claim.cpus = vec![1, 0];
    f.prepare(&spec).await.expect("prepare");
    f.boot(&spec).await.expect("boot");
    let ev = f.rt.evidence(&id).expect("evidence");
    assert_eq!(ev.pinned_cpus, vec![1, 0]);
    let pid = ev.pid.expect("pid");
    // vCPU threads are named `CPU <n>/TCG` (`-name …,debug-threads=on`).
    let mut allowed = HashMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks").flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("").trim().to_string();
        allowed.insert(comm.trim().to_string(), list);
    }
    assert_eq!(allowed.get("CPU 0/TCG").map(String::as_str), Some("1"), "{allowed:?}");
    assert_eq!(allowed.get("CPU 1/TCG").map(String::as_str), Some("0"), "{allowed:?}");
    f.wait_console(&id, &format!("PLINTH-GUEST-READY {id}"), 1).await;
    f.run(&id, 2, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_powered_off_while_the_agent_was_away_is_found_stopped() {
    let f = Fixture::new();
    let id = InstanceId::generate();
    let spec = f.spec(&id, RuntimeClass::Vm, 1, 1);
    f.prepare(&spec).await.expect("prepare");
    f.boot(&spec).await.expect("boot");
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=1", 1).await;
    let pid = f.pid(&id);
    let socket = PathBuf::from(f.rt.evidence(&id).and_then(|e| e.qmp_socket).expect("socket"));
    let Fixture { tg, data, rt, events, _guard, image_id } = f;
    drop(rt);
    drop(events);

    // While no agent runs, the guest powers off (its power button, pressed through the
    // monitor the agent left free). `-no-shutdown` keeps QEMU there, in `shutdown`.
    let (qmp, mut qevents) = Qmp::connect(&socket, DEADLINE).await.expect("the monitor is free again");
    qmp.system_powerdown().await.expect("powerdown");
    loop {
        let ev = tokio::time::timeout(DEADLINE, qevents.recv()).await.expect("in time").expect("event");
        if ev.name == "SHUTDOWN" {
            assert_eq!(ev.guest(), Some(true), "{ev:?}");
            break;
        }
    }
    assert_eq!(qmp.query_status().await.expect("status").status, "shutdown");
    drop(qmp);
    assert!(qemu_alive(pid, &id), "-no-shutdown keeps qemu alive");

    let rt = QemuRuntime::new(config(data.path())).expect("runtime");
    let found = rt.discover().await.expect("discover");
    assert_eq!((found[0].actual, found[0].detail.clone()), (Actual::Stopped, None), "powered off, not crashed");
    wait_gone(pid, &id).await;
    let mut f = Fixture { events: rt.take_events().expect("events"), tg, data, rt, _guard, image_id };
    assert!(f.events.try_recv().is_err());
    // Booted again from stopped: the same disk, second boot.
    f.rt.attach(Arc::new(f.tg.blobs(false)));
    f.boot(&f.spec(&id, RuntimeClass::Vm, 2, 2)).await.expect("boot");
    f.wait_console(&id, "PLINTH-DISK-OK /dev/vda boot=2", 1).await;
    f.run(&id, 3, OpKind::Destroy).await.expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_images_are_overlaid_and_checked_against_the_shape() {
    let f = Fixture::new();
    let work = tempfile::tempdir().expect("tempdir");
    // Two qcow2 bases: 512 MiB and 2 GiB virtual (a few hundred KiB each on disk).
    let mut by_sha = HashMap::new();
    let mut blob = |name: &str, size: &str| {
        let path = work.path().join(name);
        let out = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg(size)
            .output()
            .expect("qemu-img");
        assert!(out.status.success(), "{out:?}");
        let bytes = std::fs::read(&path).expect("read");
        let sha = sha256_hex(&bytes);
        by_sha.insert(sha.clone(), path);
        BlobRef { sha256: sha, size_bytes: bytes.len() as u64, format: ImageFormat::Qcow2 }
    };
    let small = blob("small.qcow2", "512M");
    let big = blob("big.qcow2", "2G");
    f.rt.attach(Arc::new(DirBlobs { by_sha, hard_link: false }));
    let disk_spec = |id: &InstanceId, class: RuntimeClass, base: &BlobRef| {
        let mut s = f.spec(id, class, 1, 0);
        s.boot = Some(BootSource {
            image_id: ImageId::generate(),
            boot: ImageBoot::Disk,
            disk: Some(base.clone()),
            kernel: None,
            initrd: None,
            cmdline: None,
        });
        s
    };

    let a = InstanceId::generate();
    f.prepare(&disk_spec(&a, RuntimeClass::Vm, &small)).await.expect("prepare");
    let disk = f.rt.guest_dir(&a).join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(&disk)
        .output()
        .expect("qemu-img info");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["virtual-size"].as_u64(), Some(1 << 30), "grown to the shape's 1 GiB");
    let backing = info["full-backing-filename"].as_str().or(info["backing-filename"].as_str()).expect("backing");
    assert_eq!(PathBuf::from(backing), f.rt.image_dir().join(&small.sha256));

    let b = InstanceId::generate();
    let e = f.prepare(&disk_spec(&b, RuntimeClass::Vm, &big)).await.expect_err("too big");
    assert!(e.contains("bigger than the shape's 1 GiB disk"), "{e}");
    let c = InstanceId::generate();
    let e = f.prepare(&disk_spec(&c, RuntimeClass::Microvm, &small)).await.expect_err("microvm disk boot");
    assert!(e.contains("microvm boots direct-boot images only"), "{e}");

    // The refused big base is not used by any guest: gc takes it, keeps the small one.
    for id in [&b, &c] {
        f.run(id, 2, OpKind::Destroy).await.expect("destroy");
    }
    assert!(f.rt.image_dir().join(&small.sha256).exists());
    assert!(!f.rt.image_dir().join(&big.sha256).exists());
    f.run(&a, 2, OpKind::Destroy).await.expect("destroy");
    assert!(!f.rt.image_dir().join(&small.sha256).exists());
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
