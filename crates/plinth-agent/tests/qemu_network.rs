//! Guests that get a network and read cloud-init, through the real QEMU runtime (TCG), as
//! root:
//! - a network namespace stands for a VPC on a host: a bridge `br0` (gateway address, MTU
//!   1450), a dnsmasq serving the guest's MAC one static address with option 26 = 1450,
//!   and a persistent tap plugged into the bridge, which a small test [`TapOpener`] opens
//!   from inside the namespace (as the agent's network backend does);
//! - the busybox test guest (`scripts/test-guest`) boots with one NIC and a NoCloud seed
//!   rendered by `plinth_domain::cloud_init`; from outside we see its DHCP address and MTU
//!   and the seed's hostname on the console, its user-data ran, and a TCP connection from
//!   the namespace to its echo port returns the payload;
//! - SLOW: `debian_guest_log_in_with_ssh` (50–150 s of TCG boot, and a ~5 min image
//!   build on a fresh machine) boots the Debian image of `scripts/debian-guest` the same
//!   way and logs in over SSH with the instance's key.
//!
//! Every wait polls a condition with a deadline. Namespaces are named `ng-<pid>-<n>` and
//! deleted (with their dnsmasq) when a test ends; a guard kills any QEMU left behind.

mod common;

use common::{GuestFiles, KillGuard};
use plinth_agent::network::tap;
use plinth_agent::runtime::TapOpener;
use plinth_agent::runtime::qemu::{Accel, QemuRuntime, RuntimeConfig};
use plinth_agent::{Op, OpKind, Runtime};
use plinth_api::*;
use plinth_domain::cloud_init::{SeedInput, SeedNic, render};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const MTU: u32 = 1450;

fn sh(ns: Option<&str>, args: &[&str]) -> String {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = cmd.output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} in {ns:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with a bridge, a tap on it and a dnsmasq; all gone on drop.
struct Vpc {
    ns: String,
    /// e.g. 10.91.0 (the /24's first three octets).
    net: String,
    dnsmasq: Option<Child>,
    _dir: tempfile::TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Vpc {
    /// Namespace, bridge `br0` at `<net>.1/24` (MTU 1450), tap [`Vpc::tap`] (made persistent
    /// with `ip tuntap`, MTU 1450, on the bridge), dnsmasq giving `mac` `<net>.5`.
    fn new(mac: &str) -> Vpc {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ns = format!("ng-{}-{n}", std::process::id());
        let net = format!("10.{}.{}", 90 + (std::process::id() % 60), n);
        sh(None, &["ip", "netns", "add", &ns]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vpc = Vpc { ns: ns.clone(), net: net.clone(), dnsmasq: None, _dir: dir };
        let ns = Some(ns.as_str());
        sh(ns, &["ip", "link", "set", "lo", "up"]);
        sh(ns, &["ip", "link", "add", "br0", "type", "bridge"]);
        sh(ns, &["ip", "link", "set", "br0", "mtu", &MTU.to_string()]);
        sh(ns, &["ip", "addr", "add", &format!("{net}.1/24"), "dev", "br0"]);
        sh(ns, &["ip", "link", "set", "br0", "up"]);
        let tap = vpc.tap();
        sh(ns, &["ip", "tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"]);
        sh(ns, &["ip", "link", "set", &tap, "mtu", &MTU.to_string(), "master", "br0", "up"]);
        let leases = vpc._dir.path().join("leases");
        let child = Command::new("ip")
            .args(["netns", "exec", &vpc.ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--port=0", "--interface=br0", "--bind-interfaces", "--no-ping", "--log-dhcp", "--pid-file="])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!("--dhcp-range={net}.0,static,255.255.255.0,1h"))
            .arg(format!("--dhcp-host={mac},{net}.5"))
            .arg(format!("--dhcp-option-force=26,{MTU}"))
            .arg(format!("--dhcp-option=3,{net}.1"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        vpc.dnsmasq = Some(child);
        vpc
    }

    /// The tap's name (unique in the test process, so fds can be told apart).
    fn tap(&self) -> String {
        format!("ngtap{}", self.ns.rsplit('-').next().unwrap_or("0"))
    }

    fn guest_ip(&self) -> String {
        format!("{}.5", self.net)
    }

    /// Runs `f` on a thread inside the namespace.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("netns file");
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the namespace")
    }

    /// Connects to the guest's TCP echo (port 7) from the namespace; answers what came back.
    fn echo(&self, payload: &'static [u8]) -> std::io::Result<Vec<u8>> {
        let addr: std::net::SocketAddr = format!("{}:7", self.guest_ip()).parse().expect("addr");
        self.inside(move || {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(payload)?;
            let mut back = vec![0u8; payload.len()];
            s.read_exact(&mut back)?;
            Ok(back)
        })
    }
}

impl Drop for Vpc {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Opens the persistent tap `device` in the test's namespace, as the agent's network
/// backend does in a VPC's namespace.
struct NsTaps {
    ns: String,
}

impl TapOpener for NsTaps {
    fn open_tap(&self, _vni: u32, device: &str) -> std::io::Result<OwnedFd> {
        tap::open_existing(&PathBuf::from("/run/netns").join(&self.ns), device)
    }
}

/// Builds (or finds current) the image of `script`, in `$env` or `~/cache`.
fn built(script: &str, env: &str, cache: &str) -> GuestFiles {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(cache));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts").join(script);
    // The scripts are no-ops when their cache is current.
    let status = Command::new(&script).env(env, &dir).stdout(Stdio::null()).status().expect("run the image script");
    assert!(status.success(), "{} failed: {status}", script.display());
    GuestFiles::load(dir)
}

struct Guest {
    // Drop order: QEMU first, then the data directory, then the namespace.
    _guard: KillGuard,
    rt: QemuRuntime,
    data: tempfile::TempDir,
    id: InstanceId,
}

impl Guest {
    async fn boot(vpc: &Vpc, img: &GuestFiles, spec: impl FnOnce(InstanceId) -> InstanceSpec) -> Guest {
        let data = tempfile::Builder::new().prefix("ng").tempdir_in("/tmp").expect("tempdir");
        let mut cfg = RuntimeConfig::new(data.path(), Accel::Tcg);
        cfg.image_keep = Duration::ZERO;
        let taps: Arc<dyn TapOpener> = Arc::new(NsTaps { ns: vpc.ns.clone() });
        let rt = QemuRuntime::with_taps(cfg, Some(taps)).expect("runtime");
        rt.attach(Arc::new(img.blobs(true)));
        let id = InstanceId::generate();
        let guard = KillGuard(data.path().to_path_buf());
        let spec = spec(id.clone());
        for kind in [OpKind::Prepare(Box::new(spec.clone())), OpKind::Boot(Box::new(spec.clone()))] {
            let name = kind.name();
            rt.execute(Op { instance_id: id.clone(), generation: 1, kind })
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        Guest { _guard: guard, rt, data, id }
    }

    fn console(&self) -> String {
        let log = self.rt.console_log(&self.id).expect("console log");
        String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned()
    }

    async fn wait_console(&self, marker: &str, deadline: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let text = self.console();
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                return line.trim().to_string();
            }
            assert!(t0.elapsed() < deadline, "no {marker:?} on the console after {deadline:?}:\n{text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn argv(&self) -> Vec<String> {
        self.rt.evidence(&self.id).expect("evidence").command_line
    }
}

fn claim(memory_mib: u64, disk_gib: u64) -> Claim {
    Claim {
        vcpus: 1,
        cpu_policy: CpuPolicy::Shared,
        memory_mib,
        disk_gib,
        numa_nodes: vec![],
        cpus: vec![],
        hugepages: vec![],
        gpus: vec![],
        tcg: true,
        rack_id: None,
    }
}

fn nic(mac: &str, device: &str) -> InstanceNicSpec {
    InstanceNicSpec { nic_id: NicId::generate(), vni: 4242, device: device.into(), mac: mac.into(), mtu: MTU }
}

fn seed(id: &InstanceId, vpc: &Vpc, mac: &str, keys: &[String], user_data: Option<&str>) -> CloudInitSeed {
    let nics = [SeedNic {
        mac: mac.into(),
        ipv4: vpc.guest_ip().parse().expect("ip"),
        prefix_len: 24,
        gateway: format!("{}.1", vpc.net).parse().expect("gw"),
        mtu: MTU,
        dns_domain: None,
    }];
    render(&SeedInput { instance_id: id.as_str(), hostname: "web-1", ssh_keys: keys, user_data, nics: &nics })
}

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The fds of process `pid` attached to tap `tap` (`iff:` in a tun fd's fdinfo), by number.
fn tap_fds(pid: &str, tap: &str) -> Vec<String> {
    let want = format!("iff:\t{tap}\n");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/dev/net/tun")))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|fd| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).is_ok_and(|info| info.contains(&want)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn busybox_guest_gets_dhcp_mtu_cidata_and_answers_tcp() {
    busybox_guest(RuntimeClass::Vm).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn busybox_microvm_gets_dhcp_mtu_cidata_and_answers_tcp() {
    busybox_guest(RuntimeClass::Microvm).await;
}

async fn busybox_guest(class: RuntimeClass) {
    assert!(root(), "this test needs root (network namespaces, taps)");
    let tg = built("test-guest", "PLINTH_GUEST_DIR", ".cache/plinth/test-guest");
    let mac = "02:00:5e:00:00:05";
    let vpc = Vpc::new(mac);
    let keys = vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBsaW50aHBsaW50aHBsaW50aHBsaW50aA test@plinth".to_string()];
    let user_data = "#!/bin/sh\necho \"PLINTH-UD-RAN on $(hostname)\"\n";
    let t0 = Instant::now();
    let g = Guest::boot(&vpc, &tg, |id| InstanceSpec {
        instance_id: id.clone(),
        name: "web-1".into(),
        generation: 1,
        power: PowerState::Running,
        boot_generation: 1,
        runtime_class: class,
        image: "test-guest".into(),
        claim: claim(256, 1),
        ssh_keys: keys.clone(),
        user_data: Some(user_data.into()),
        boot: Some(BootSource {
            image_id: ImageId::generate(),
            boot: ImageBoot::Direct,
            disk: None,
            kernel: Some(tg.blob("vmlinux")),
            initrd: Some(tg.blob("initramfs.cpio.gz")),
            cmdline: Some(tg.cmdline.clone()),
        }),
        nics: vec![nic(mac, &vpc.tap())],
        cloud_init: Some(seed(&id, &vpc, mac, &keys, Some(user_data))),
        volumes: Vec::new(),
        boot_volume: None,
    })
    .await;

    // The evidence command line has the tap by fd (never by name) and the seed read-only.
    let argv = g.argv().join(" ");
    assert!(argv.contains("-netdev tap,id=net0,fd=3,vhost=off"), "{argv}");
    let dev = if class == RuntimeClass::Vm { "virtio-net-pci" } else { "virtio-net-device" };
    assert!(argv.contains(&format!("{dev},netdev=net0,mac={mac},host_mtu={MTU}")), "{argv}");
    assert!(argv.contains("cidata.img,if=none,id=seed0,format=raw,readonly=on"), "{argv}");
    assert!(!argv.contains("ifname="), "{argv}");
    // QEMU holds the tap as fd 3; the agent (this process) kept no copy.
    let pid = std::fs::read_to_string(g.data.path().join("qemu").join(g.id.as_str()).join("qemu.pid")).expect("pid");
    assert_eq!(tap_fds(pid.trim(), &vpc.tap()), ["3"]);
    assert_eq!(tap_fds("self", &vpc.tap()), Vec::<String>::new());

    let deadline = Duration::from_secs(120);
    let ip = vpc.guest_ip();
    let net = g.wait_console("PLINTH-NET eth0", deadline).await;
    assert_eq!(net, format!("PLINTH-NET eth0 {ip}/24 mtu {MTU} router {}.1", vpc.net), "{}", g.console());
    let ci = g.wait_console("PLINTH-CIDATA", deadline).await;
    assert!(ci.starts_with(&format!("PLINTH-CIDATA hostname=web-1 ssh_keys=1 instance-id={}", g.id)), "{ci}");
    // The root disk stays /dev/vda with the seed attached after it.
    assert!(ci.ends_with("dev=/dev/vdb"), "{ci}");
    assert!(g.console().contains("PLINTH-DISK-OK /dev/vda"), "{}", g.console());
    assert_eq!(g.wait_console("PLINTH-USERDATA", deadline).await, "PLINTH-USERDATA exit=0");
    assert_eq!(g.wait_console("PLINTH-UD-RAN", deadline).await, "PLINTH-UD-RAN on web-1");

    // Reachability from the namespace: the echo returns the payload.
    let payload: &'static [u8] = b"plinth says hello across the tap\n";
    let t1 = Instant::now();
    let back = loop {
        match vpc.echo(payload) {
            Ok(b) => break b,
            Err(e) => {
                assert!(t1.elapsed() < deadline, "no TCP echo from {ip}:7 after {deadline:?}: {e}\n{}", g.console());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(back, payload);
    // Control: the same connection to an address no guest has fails.
    let addr: std::net::SocketAddr = format!("{}.6:7", vpc.net).parse().expect("addr");
    let refused = vpc.inside(move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    assert!(refused, "a connection to an address no guest has succeeded");
    eprintln!("busybox guest ({class:?}): network, seed and echo in {:?}", t0.elapsed());
    drop(g);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_with_nics_on_an_agent_without_taps_fails_clearly() {
    let tg = built("test-guest", "PLINTH_GUEST_DIR", ".cache/plinth/test-guest");
    let data = tempfile::Builder::new().prefix("ng").tempdir_in("/tmp").expect("tempdir");
    let rt = QemuRuntime::new(RuntimeConfig::new(data.path(), Accel::Tcg)).expect("runtime");
    let id = InstanceId::generate();
    let spec = InstanceSpec {
        instance_id: id.clone(),
        name: "t".into(),
        generation: 1,
        power: PowerState::Running,
        boot_generation: 1,
        runtime_class: RuntimeClass::Vm,
        image: "test-guest".into(),
        claim: claim(256, 1),
        ssh_keys: vec![],
        user_data: None,
        boot: Some(BootSource {
            image_id: ImageId::generate(),
            boot: ImageBoot::Direct,
            disk: None,
            kernel: Some(tg.blob("vmlinux")),
            initrd: Some(tg.blob("initramfs.cpio.gz")),
            cmdline: Some(tg.cmdline.clone()),
        }),
        nics: vec![nic("02:00:5e:00:00:09", "ngtap")],
        cloud_init: None,
        volumes: Vec::new(),
        boot_volume: None,
    };
    let e = rt
        .execute(Op { instance_id: id.clone(), generation: 1, kind: OpKind::Prepare(Box::new(spec)) })
        .await
        .expect_err("refused");
    assert_eq!(e.to_string(), "the instance has 1 NIC(s) and this agent has no network backend to open their taps");
    assert!(!data.path().join("qemu").join(id.as_str()).join("disk.qcow2").exists(), "nothing made");
}

/// Slow (~1 min of TCG boot for cloud-init): the Debian image, logged into over SSH with
/// the instance's key, as the user `debian`.
#[tokio::test(flavor = "multi_thread")]
async fn debian_guest_log_in_with_ssh() {
    assert!(root(), "this test needs root (network namespaces, taps)");
    let img = built("debian-guest", "PLINTH_DEBIAN_GUEST_DIR", ".cache/plinth/debian-guest");
    let mac = "02:00:5e:00:00:15";
    let vpc = Vpc::new(mac);
    let keydir = tempfile::tempdir().expect("tempdir");
    let key = keydir.path().join("id");
    sh(None, &["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "plinth-test", "-f", &key.display().to_string()]);
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("public key").trim().to_string();
    let keys = vec![public];
    let user_data = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo plinth-user-data-ran > /run/plinth-ud']\n";
    let t0 = Instant::now();
    let g = Guest::boot(&vpc, &img, |id| InstanceSpec {
        instance_id: id.clone(),
        name: "web-1".into(),
        generation: 1,
        power: PowerState::Running,
        boot_generation: 1,
        runtime_class: RuntimeClass::Vm,
        image: "debian-guest".into(),
        claim: claim(1024, 3),
        ssh_keys: keys.clone(),
        user_data: Some(user_data.into()),
        boot: Some(BootSource {
            image_id: ImageId::generate(),
            boot: ImageBoot::Direct,
            disk: Some(img.blob("disk.img")),
            kernel: Some(img.blob("vmlinuz")),
            initrd: Some(img.blob("initrd.img")),
            cmdline: Some(img.cmdline.clone()),
        }),
        nics: vec![nic(mac, &vpc.tap())],
        cloud_init: Some(seed(&id, &vpc, mac, &keys, Some(user_data))),
        volumes: Vec::new(),
        boot_volume: None,
    })
    .await;
    let ip = vpc.guest_ip();
    // ~50 s on a quiet 2-core host; several times that with other TCG guests and builds.
    let deadline = Duration::from_secs(600);
    let ssh = |cmd: &str| {
        Command::new("ip")
            .args(["netns", "exec", &vpc.ns, "ssh", "-i"])
            .arg(&key)
            .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", &format!("debian@{ip}"), cmd])
            .output()
            .expect("ssh")
    };
    // cloud-init done: `status --wait` returns once it has finished.
    let out = loop {
        let out = ssh(
            "cloud-init status --wait >/dev/null; cloud-init status; hostname; cat /run/plinth-ud; ip -o -4 addr show eth0; sudo systemd-analyze 2>&1 | head -1; sudo cloud-init analyze blame 2>&1 | head -6; cat /sys/class/net/eth0/mtu",
        );
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            t0.elapsed() < deadline,
            "no SSH login to debian@{ip} after {deadline:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            g.console()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!("debian guest: logged in after {:?}:\n{out}", t0.elapsed());
    assert!(out.contains("status: done"), "{out}");
    assert!(out.contains("web-1"), "{out}");
    assert!(out.contains("plinth-user-data-ran"), "{out}");
    assert!(out.contains(&format!("inet {ip}/24")), "{out}");
    assert!(out.lines().any(|l| l.trim() == MTU.to_string()), "{out}");
    let _ = g.data.path();
}
