//! The exact QEMU command line of a guest, built from a plain struct ([`QemuArgs`]).
//!
//! No I/O here: every host fact (paths, accelerator, TSC rate, hugetlbfs mount, vhost-net) is in
//! the struct, so the argv is a pure function of it and unit-tested. What the flags are
//! for:
//! - `-nodefaults -no-user-config -display none`: only the devices we name (the root disk,
//!   the seed disk, the NICs, the serial console and `pvpanic`, through which a guest
//!   kernel panic becomes QEMU's `GUEST_PANICKED` event);
//! - `-no-shutdown`: a guest power-off leaves QEMU alive in run state `shutdown`, so a
//!   power-off can be told from a crash, even by an agent that was away when it happened;
//! - `-daemonize -pidfile`: QEMU is not the agent's child and outlives it;
//! - `-qmp unix:…,server=on,wait=off`: the agent's (one) monitor connection;
//! - the serial console on a socket chardev (`tty.sock`, server, no wait) that logs
//!   everything the guest writes to `console.log`, opened with `logappend=on`, so earlier
//!   boots are kept and the runtime may truncate the file under QEMU. With no client the
//!   socket drops the output and the log still has it; the agent connects only to type
//!   (`crate::console_input`);
//! - machine `q35` (runtime class `vm`, virtio-pci disk) or `microvm` (virtio-mmio disk,
//!   direct boot only; under TCG it needs `tsc_early_khz` on the kernel command line, see
//!   `scripts/README-test-guest.md`);
//! - hugepage-backed memory as a `memory-backend-file` on the hugetlbfs mount, preallocated;
//! - NICs in slot order: `-netdev tap,id=netN,fd=F,vhost=off` on a tap fd the agent opened
//!   in the VPC's namespace and passed at a fixed number ([`first_tap_fd`] + slot; QEMU
//!   given a tap *name* it cannot see makes a new, unconnected tap), and a `virtio-net`
//!   device with the NIC's MAC and `host_mtu` (the guest sees the subnet's MTU). `vhost=on`
//!   only where `/dev/vhost-net` exists: QEMU 7.2 aborts on it otherwise. No option ROM
//!   (`romfile=`): nothing boots from the network;
//! - the root disk as named `-blockdev` nodes (`disk0-file`, `disk0`), `discard=unmap`;
//! - the NoCloud seed (`cidata.img`, FAT labelled `CIDATA`) as a second, read-only virtio
//!   disk after the root disk;
//! - q35: [`HOTPLUG_PORTS`] empty `pcie-root-port`s (`hp0`…), where volumes are hot-plugged;
//! - the guest agent's virtio-serial port `org.qemu.guest_agent.0` on a socket chardev
//!   (`qga.sock`, the agent its only client).

use std::path::PathBuf;

/// The machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Machine {
    /// `q35` (runtime class `vm`).
    Q35,
    /// `microvm` (runtime class `microvm`).
    Microvm,
}

impl Machine {
    /// The name QEMU and the evidence use.
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm",
        }
    }
}

/// The accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Emulation (no usable KVM, or the claim asks for it).
    Tcg,
}

impl Accel {
    /// The name QEMU and the evidence use.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Guest memory on hugepages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hugepages {
    /// The hugetlbfs mount of this page size.
    pub mount: PathBuf,
    /// Host NUMA nodes to bind the memory to (empty: no binding).
    pub host_nodes: Vec<u32>,
}

/// What the guest boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Firmware boots the root disk.
    Disk,
    /// QEMU loads a kernel (and initrd) with a command line.
    Direct {
        /// The kernel file.
        kernel: PathBuf,
        /// The initrd file.
        initrd: Option<PathBuf>,
        /// The image's kernel command line (before what the runtime appends).
        cmdline: String,
    },
}

/// Empty PCIe root ports a q35 guest starts with, one per volume it can take hot-plugged
/// (Incus reserves 8 too).
pub const HOTPLUG_PORTS: u32 = 8;

/// The fd number the tap of NIC slot 0 has in QEMU (slot N: this + N).
pub const fn first_tap_fd() -> i32 {
    3
}

/// One NIC of the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// The guest's MAC for it.
    pub mac: String,
    /// The MTU the guest is told (`host_mtu`).
    pub mtu: u32,
}

/// A volume given to the guest as a disk at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeDisk {
    /// Its qcow2 file in the host's volume pool.
    pub file: PathBuf,
    /// Its snapshots' layers over that file, bottom first.
    pub layers: Vec<PathBuf>,
    /// Its slot: PCIe root port `hp<slot>` on q35.
    pub slot: u8,
    /// The serial the guest sees.
    pub serial: String,
    /// The fd (in QEMU) its key is read from (a pipe the agent filled); `None`: unencrypted.
    pub key_fd: Option<i32>,
    /// Its I/O limits (its throttle group `vtg<slot>`).
    pub qos: plinth_api::VolumeQos,
    /// Where its data is when not `file` (an RBD image).
    pub connection: Option<plinth_api::VolumeConnection>,
}

impl VolumeDisk {
    /// Its `-object`, `-blockdev` and `-device` arguments at `place` (`blockdev.rs`).
    fn args(&self, place: super::blockdev::Place, direct: bool, machine: Machine) -> Vec<(&'static str, String)> {
        let key = self.key_fd.map_or(super::blockdev::Key::None, super::blockdev::Key::Fd);
        let files: Vec<String> =
            std::iter::once(&self.file).chain(&self.layers).map(|f| f.display().to_string()).collect();
        let backing = super::blockdev::Backing::of(self.connection.as_ref(), &files);
        let g = super::blockdev::volume_disk(place, backing, key, direct, &self.qos, machine, &self.serial);
        let mut out: Vec<(&'static str, String)> = g.objects.iter().map(|o| ("-object", o.to_string())).collect();
        out.extend(g.nodes.iter().map(|n| ("-blockdev", n.to_string())));
        out.push(("-device", super::blockdev::keyval(&g.device)));
        out
    }
}

/// Everything the command line is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuArgs {
    /// The QEMU binary (`argv[0]`).
    pub qemu: PathBuf,
    /// The instance id: the `-name` and the `plinth.instance=` of the kernel command line.
    pub instance_id: String,
    /// The machine type.
    pub machine: Machine,
    /// The accelerator.
    pub accel: Accel,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Back the memory with hugepages.
    pub hugepages: Option<Hugepages>,
    /// What it boots.
    pub boot: Boot,
    /// The root disk (a qcow2 overlay).
    pub disk: PathBuf,
    /// The disk's `cache=` mode (`none` where the file system supports O_DIRECT).
    pub disk_cache: String,
    /// The QMP socket.
    pub qmp_socket: PathBuf,
    /// The guest agent's socket (`guest_agent.rs`).
    pub agent_socket: PathBuf,
    /// The pidfile.
    pub pidfile: PathBuf,
    /// The serial console log.
    pub console_log: PathBuf,
    /// The serial console's socket (input).
    pub serial_socket: PathBuf,
    /// The host's TSC rate in kHz: given to a microvm guest under TCG as `tsc_early_khz`.
    pub tsc_khz: Option<u64>,
    /// The NICs in slot order; slot N's tap is fd [`first_tap_fd`]` + N` in QEMU.
    pub nics: Vec<Nic>,
    /// Whether `/dev/vhost-net` exists (else `vhost=off`).
    pub vhost: bool,
    /// The NoCloud seed image, attached read-only.
    pub seed: Option<PathBuf>,
    /// Attached volumes, in slot order.
    pub volumes: Vec<VolumeDisk>,
    /// The root disk when the guest boots from a volume (then `disk` is not used).
    pub root_volume: Option<VolumeDisk>,
}

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

impl QemuArgs {
    /// The kernel command line of a direct boot (`None` for a disk boot): the image's,
    /// then `tsc_early_khz=` (microvm under TCG), then `plinth.instance=<id>`.
    pub fn kernel_cmdline(&self) -> Option<String> {
        let Boot::Direct { cmdline, .. } = &self.boot else { return None };
        let mut words: Vec<String> = cmdline.split_whitespace().map(str::to_string).collect();
        if self.machine == Machine::Microvm
            && self.accel == Accel::Tcg
            && let Some(khz) = self.tsc_khz
            && !words.iter().any(|w| w.starts_with("tsc_early_khz="))
        {
            words.push(format!("tsc_early_khz={khz}"));
        }
        words.push(format!("plinth.instance={}", self.instance_id));
        Some(words.join(" "))
    }

    /// The exact argv, `argv[0]` included.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![p(&self.qemu)];
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let mut machine = match self.machine {
            Machine::Q35 => "q35".to_string(),
            Machine::Microvm => "microvm,x-option-roms=off,rtc=on".to_string(),
        };
        if self.hugepages.is_some() {
            machine.push_str(",memory-backend=mem0");
        }
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "max",
        };
        push(&["-name", &format!("guest={},debug-threads=on", self.instance_id)]);
        push(&["-machine", &machine, "-accel", self.accel.as_str(), "-cpu", cpu]);
        push(&["-smp", &self.vcpus.to_string(), "-m", &format!("{}M", self.memory_mib)]);
        if let Some(h) = &self.hugepages {
            let mut obj =
                format!("memory-backend-file,id=mem0,size={}M,mem-path={},prealloc=on", self.memory_mib, p(&h.mount));
            if !h.host_nodes.is_empty() {
                let nodes: Vec<String> = h.host_nodes.iter().map(u32::to_string).collect();
                obj.push_str(&format!(",host-nodes={},policy=bind", nodes.join(",host-nodes=")));
            }
            push(&["-object", &obj]);
        }
        push(&["-nodefaults", "-no-user-config", "-display", "none", "-no-shutdown"]);
        push(&["-daemonize", "-pidfile", &p(&self.pidfile)]);
        push(&["-qmp", &format!("unix:{},server=on,wait=off", p(&self.qmp_socket))]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
                p(&self.serial_socket),
                p(&self.console_log)
            ),
        ]);
        push(&["-serial", "chardev:serial0"]);
        if let Boot::Direct { kernel, initrd, .. } = &self.boot {
            push(&["-kernel", &p(kernel)]);
            if let Some(initrd) = initrd {
                push(&["-initrd", &p(initrd)]);
            }
        }
        if let Some(cmdline) = self.kernel_cmdline() {
            push(&["-append", &cmdline]);
        }
        // The root disk as named block nodes (`disk0-file` → `disk0`), like every volume, so
        // snapshots and I/O limits can name them.
        let direct = if self.disk_cache == "none" { "on" } else { "off" };
        if let Some(v) = &self.root_volume {
            // Booted from a volume: it is the root disk (`blockdev.rs`, place `Root`).
            let place = super::blockdev::Place::Root { boot_index: matches!(self.boot, Boot::Disk) };
            for (flag, arg) in v.args(place, direct == "on", self.machine) {
                push(&[flag, &arg]);
            }
        }
        if self.root_volume.is_none() {
            push(&[
                "-blockdev",
                &format!(
                    "driver=file,node-name=disk0-file,filename={},cache.direct={direct},aio=threads,discard=unmap",
                    p(&self.disk)
                ),
            ]);
            push(&["-blockdev", "driver=qcow2,node-name=disk0,file=disk0-file,discard=unmap"]);
            let device = match (self.machine, &self.boot) {
                (Machine::Microvm, _) => "virtio-blk-device,drive=disk0".to_string(),
                (Machine::Q35, Boot::Disk) => "virtio-blk-pci,drive=disk0,bootindex=0".to_string(),
                (Machine::Q35, Boot::Direct { .. }) => "virtio-blk-pci,drive=disk0".to_string(),
            };
            push(&["-device", &device]);
        }
        if let Some(seed) = &self.seed {
            push(&["-drive", &format!("file={},if=none,id=seed0,format=raw,readonly=on", p(seed))]);
            let dev = match self.machine {
                Machine::Microvm => "virtio-blk-device,drive=seed0",
                Machine::Q35 => "virtio-blk-pci,drive=seed0",
            };
            push(&["-device", dev]);
        }
        let vhost = if self.vhost { "on" } else { "off" };
        for (slot, nic) in self.nics.iter().enumerate() {
            let fd = first_tap_fd() + slot as i32;
            push(&["-netdev", &format!("tap,id=net{slot},fd={fd},vhost={vhost}")]);
            let dev = match self.machine {
                Machine::Microvm => format!("virtio-net-device,netdev=net{slot},mac={},host_mtu={}", nic.mac, nic.mtu),
                Machine::Q35 => {
                    format!("virtio-net-pci,netdev=net{slot},mac={},host_mtu={},romfile=", nic.mac, nic.mtu)
                }
            };
            push(&["-device", &dev]);
        }
        // q35: empty PCIe root ports, where volumes are hot-plugged (`hp0`…); `pcie.0` itself
        // takes no hot-plugged device. microvm cannot hot-plug at all.
        if self.machine == Machine::Q35 {
            for i in 0..HOTPLUG_PORTS {
                push(&["-device", &format!("pcie-root-port,id=hp{i},bus=pcie.0,chassis={},slot={}", i + 1, i + 1)]);
            }
        }
        // Attached volumes, as a hot-plug adds them (`blockdev.rs`): the key (when encrypted)
        // from a pipe as a `secret` object, the file and qcow2 nodes `v<slot>-file` →
        // `v<slot>`, a throttle node `v<slot>-io` in its own throttle group `vtg<slot>` (the
        // type's I/O limits, changeable live), the disk on its root port.
        for v in &self.volumes {
            for (flag, arg) in v.args(super::blockdev::Place::Slot(v.slot), direct == "on", self.machine) {
                push(&[flag, &arg]);
            }
        }
        // The guest agent's port (`org.qemu.guest_agent.0`) on a virtio-serial bus, behind a
        // socket only the agent opens; last, so no device before it changes address.
        push(&["-chardev", &format!("socket,id=qga0,path={},server=on,wait=off", p(&self.agent_socket))]);
        push(&[
            "-device",
            match self.machine {
                Machine::Q35 => "virtio-serial-pci,id=vser0",
                Machine::Microvm => "virtio-serial-device,id=vser0",
            },
        ]);
        push(&["-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"]);
        // A guest kernel panic reaches QEMU (and its `GUEST_PANICKED` event) through pvpanic.
        push(&["-device", "pvpanic"]);
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(machine: Machine) -> QemuArgs {
        let d = PathBuf::from("/var/lib/plinth/qemu/ins_x");
        QemuArgs {
            qemu: "qemu-system-x86_64".into(),
            instance_id: "ins_x".into(),
            machine,
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 256,
            hugepages: None,
            boot: Boot::Direct {
                kernel: "/img/k".into(),
                initrd: Some("/img/i".into()),
                cmdline: "console=ttyS0 panic=-1 quiet".into(),
            },
            disk: d.join("disk.qcow2"),
            disk_cache: "none".into(),
            qmp_socket: d.join("qmp.sock"),
            agent_socket: d.join("qga.sock"),
            pidfile: d.join("qemu.pid"),
            console_log: d.join("console.log"),
            serial_socket: d.join("tty.sock"),
            tsc_khz: Some(2596130),
            nics: Vec::new(),
            vhost: false,
            seed: None,
            volumes: Vec::new(),
            root_volume: None,
        }
    }

    fn joined(a: &QemuArgs) -> String {
        a.argv().join(" ")
    }

    #[test]
    fn q35_direct_boot_under_tcg() {
        let a = args(Machine::Q35);
        assert_eq!(
            joined(&a),
            "qemu-system-x86_64 -name guest=ins_x,debug-threads=on -machine q35 -accel tcg -cpu max -smp 2 -m 256M \
             -nodefaults -no-user-config -display none -no-shutdown \
             -daemonize -pidfile /var/lib/plinth/qemu/ins_x/qemu.pid \
             -qmp unix:/var/lib/plinth/qemu/ins_x/qmp.sock,server=on,wait=off \
             -chardev socket,id=serial0,path=/var/lib/plinth/qemu/ins_x/tty.sock,server=on,wait=off,logfile=/var/lib/plinth/qemu/ins_x/console.log,logappend=on \
             -serial chardev:serial0 \
             -kernel /img/k -initrd /img/i -append console=ttyS0 panic=-1 quiet plinth.instance=ins_x \
             -blockdev driver=file,node-name=disk0-file,filename=/var/lib/plinth/qemu/ins_x/disk.qcow2,cache.direct=on,aio=threads,discard=unmap \
             -blockdev driver=qcow2,node-name=disk0,file=disk0-file,discard=unmap \
             -device virtio-blk-pci,drive=disk0 \
             -device pcie-root-port,id=hp0,bus=pcie.0,chassis=1,slot=1 -device pcie-root-port,id=hp1,bus=pcie.0,chassis=2,slot=2 \
             -device pcie-root-port,id=hp2,bus=pcie.0,chassis=3,slot=3 -device pcie-root-port,id=hp3,bus=pcie.0,chassis=4,slot=4 \
             -device pcie-root-port,id=hp4,bus=pcie.0,chassis=5,slot=5 -device pcie-root-port,id=hp5,bus=pcie.0,chassis=6,slot=6 \
             -device pcie-root-port,id=hp6,bus=pcie.0,chassis=7,slot=7 -device pcie-root-port,id=hp7,bus=pcie.0,chassis=8,slot=8 \
             -chardev socket,id=qga0,path=/var/lib/plinth/qemu/ins_x/qga.sock,server=on,wait=off \
             -device virtio-serial-pci,id=vser0 -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0 \
             -device pvpanic"
        );
        // The kernel command line is one argument.
        let argv = a.argv();
        let i = argv.iter().position(|s| s == "-append").expect("-append");
        assert_eq!(argv[i + 1], "console=ttyS0 panic=-1 quiet plinth.instance=ins_x");
    }

    #[test]
    fn microvm_gets_mmio_and_the_tsc_rate_under_tcg_only() {
        let mut a = args(Machine::Microvm);
        let s = joined(&a);
        assert!(s.contains("-machine microvm,x-option-roms=off,rtc=on -accel tcg -cpu max"), "{s}");
        assert!(s.contains("-device virtio-blk-device,drive=disk0"), "{s}");
        assert!(!s.contains("pcie-root-port"), "microvm has no PCIe to hot-plug into: {s}");
        assert!(s.contains("-device virtio-serial-device,id=vser0 -device virtserialport,bus=vser0.0,"), "{s}");
        assert_eq!(
            a.kernel_cmdline().as_deref(),
            Some("console=ttyS0 panic=-1 quiet tsc_early_khz=2596130 plinth.instance=ins_x")
        );
        a.accel = Accel::Kvm;
        let s = joined(&a);
        assert!(s.contains("-accel kvm -cpu host"), "{s}");
        assert!(!s.contains("tsc_early_khz"), "{s}");
    }

    #[test]
    fn nics_by_fd_in_slot_order_and_the_seed_read_only() {
        let mut a = args(Machine::Q35);
        a.nics = vec![
            Nic { mac: "02:00:00:00:00:05".into(), mtu: 1450 },
            Nic { mac: "02:00:00:00:00:06".into(), mtu: 1400 },
        ];
        a.seed = Some("/var/lib/plinth/qemu/ins_x/cidata.img".into());
        let s = joined(&a);
        assert!(
            s.contains(
                "-device virtio-blk-pci,drive=disk0 \
                 -drive file=/var/lib/plinth/qemu/ins_x/cidata.img,if=none,id=seed0,format=raw,readonly=on \
                 -device virtio-blk-pci,drive=seed0 \
                 -netdev tap,id=net0,fd=3,vhost=off \
                 -device virtio-net-pci,netdev=net0,mac=02:00:00:00:00:05,host_mtu=1450,romfile= \
                 -netdev tap,id=net1,fd=4,vhost=off \
                 -device virtio-net-pci,netdev=net1,mac=02:00:00:00:00:06,host_mtu=1400,romfile= \
                 -device pcie-root-port,id=hp0,bus=pcie.0,chassis=1,slot=1"
            ),
            "{s}"
        );
        assert!(!s.contains("ifname"), "{s}");
        a.machine = Machine::Microvm;
        a.vhost = true;
        let s = joined(&a);
        assert!(s.contains("-device virtio-blk-device,drive=seed0"), "{s}");
        assert!(s.contains("-netdev tap,id=net0,fd=3,vhost=on -device virtio-net-device,netdev=net0,mac=02:00:00:00:00:05,host_mtu=1450 "), "{s}");
    }

    #[test]
    fn a_boot_volume_is_the_first_disk_and_no_root_disk_is_made() {
        let mut a = args(Machine::Q35);
        a.seed = Some("/var/lib/plinth/qemu/ins_x/seed.img".into());
        a.root_volume = Some(VolumeDisk {
            file: "/pool/vol_r.qcow2".into(),
            layers: Vec::new(),
            slot: 0,
            serial: "ROOT".into(),
            key_fd: Some(4),
            qos: Default::default(),
            connection: None,
        });
        let s = joined(&a);
        assert!(!s.contains("disk0"), "{s}");
        let root = s.find("-device virtio-blk-pci,drive=root-io,id=rootdisk,serial=ROOT").expect("the root disk");
        let seed = s.find("drive=seed0").expect("the seed");
        assert!(root < seed, "the root volume comes before the seed, so the guest sees it as vda: {s}");
        assert!(s.contains(r#"-object {"file":"/dev/fd/4","id":"rootsec","qom-type":"secret"}"#), "{s}");
    }

    #[test]
    fn volumes_on_their_root_ports_with_their_keys_from_pipes_and_their_limits() {
        let mut a = args(Machine::Q35);
        let slow = plinth_api::VolumeQos { bps_total: Some(2 << 20), ..Default::default() };
        a.volumes = vec![
            VolumeDisk {
                file: "/pool/vol_a.qcow2".into(),
                layers: Vec::new(),
                slot: 0,
                serial: "SERIALA".into(),
                key_fd: Some(5),
                qos: slow,
                connection: None,
            },
            VolumeDisk {
                file: "/pool/vol_b.qcow2".into(),
                layers: Vec::new(),
                slot: 3,
                serial: "SERIALB".into(),
                key_fd: None,
                qos: Default::default(),
                connection: None,
            },
        ];
        let s = joined(&a);
        let want = [
            "-device pcie-root-port,id=hp7,bus=pcie.0,chassis=8,slot=8 ",
            r#"-object {"file":"/dev/fd/5","id":"vsec0","qom-type":"secret"} "#,
            r#"-object {"id":"vtg0","limits":{"bps-read":0,"bps-total":2097152,"#,
            r#"-blockdev {"aio":"threads","cache":{"direct":true,"no-flush":false},"discard":"unmap","driver":"file","filename":"/pool/vol_a.qcow2","node-name":"v0-file"} "#,
            r#"-blockdev {"discard":"unmap","driver":"qcow2","encrypt":{"format":"luks","key-secret":"vsec0"},"file":"v0-file","node-name":"v0"} "#,
            r#"-blockdev {"driver":"throttle","file":"v0","node-name":"v0-io","throttle-group":"vtg0"} "#,
            "-device virtio-blk-pci,bus=hp0,drive=v0-io,id=vdisk0,serial=SERIALA ",
            r#"-object {"id":"vtg3","limits":{"bps-read":0,"bps-total":0,"#,
            r#"-blockdev {"discard":"unmap","driver":"qcow2","file":"v3-file","node-name":"v3"} "#,
            "-device virtio-blk-pci,bus=hp3,drive=v3-io,id=vdisk3,serial=SERIALB -chardev socket,id=qga0,",
        ];
        let mut at = 0;
        for w in want {
            let found = s[at..].find(w).unwrap_or_else(|| panic!("{w}\nnot after {at} in\n{s}"));
            at += found + w.len();
        }
        a.machine = Machine::Microvm;
        let s = joined(&a);
        assert!(s.contains("-device virtio-blk-device,drive=v3-io,id=vdisk3,serial=SERIALB"), "{s}");
    }

    #[test]
    fn disk_boot_and_hugepages() {
        let mut a = args(Machine::Q35);
        a.boot = Boot::Disk;
        a.hugepages = Some(Hugepages { mount: "/dev/hugepages1G".into(), host_nodes: vec![1] });
        a.memory_mib = 2048;
        let s = joined(&a);
        assert!(!s.contains("-kernel") && !s.contains("-append"), "{s}");
        assert!(s.contains("-device virtio-blk-pci,drive=disk0,bootindex=0"), "{s}");
        assert!(s.contains("-machine q35,memory-backend=mem0"), "{s}");
        assert!(
            s.contains(
                "-object memory-backend-file,id=mem0,size=2048M,mem-path=/dev/hugepages1G,prealloc=on,host-nodes=1,policy=bind"
            ),
            "{s}"
        );
        assert!(s.contains("-m 2048M"), "{s}");
    }
}
