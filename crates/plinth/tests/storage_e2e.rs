//! Volumes end to end through the real binary: `plinth up`, a real `plinth agent` (runtime
//! qemu) whose volume pool is an ext4 filesystem on a loop device, and the CLI. A volume is
//! made on the host's pool (a LUKS-in-qcow2 file; its LUKS header is found on the raw
//! device), deleted (the key destroyed at once), and wiped by its host: the header is gone
//! from the device, the file is removed, and the record keeps the wipe's evidence. And a
//! volume attached (cold) to a real guest that writes a marker to it by its serial: the
//! marker is on the device only encrypted, and a second guest (a q35 VM, then a microVM)
//! reads it back.

mod common;

use common::{Proc, cli, ok, spawn, wait_for};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ext4 filesystem on a loop device, mounted at `mnt`; gone when dropped.
struct LoopFs {
    dev: String,
    mnt: PathBuf,
}

impl LoopFs {
    fn new(dir: &Path) -> LoopFs {
        let image = dir.join("pool.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(128 << 20)).expect("image");
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let dev = run("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).expect("mnt");
        run("mount", &[&dev, mnt.to_str().unwrap()]);
        LoopFs { dev, mnt }
    }

    fn copies(&self, needle: &[u8]) -> usize {
        run("sync", &[]);
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
        memchr::memmem::find_iter(&std::fs::read(&self.dev).expect("raw device"), needle).count()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";

/// Whether this runs as root (a loop device for the pool); says SKIP when not.
fn root() -> bool {
    let is = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) == 0;
    if !is {
        eprintln!("SKIP: needs root (a loop device for the pool)");
    }
    is
}

/// `plinth up --no-demo` in `d` (its pool may promise 64 times its capacity: volumes are
/// sparse and the test pool is 128 MiB) and a real agent whose volume pool is `pool`,
/// once its host is available. Returns (up, agent, profile, the host).
fn start(d: &Path, pool: &Path) -> (Proc, Proc, PathBuf, serde_json::Value) {
    let profile = d.join("profile.toml");
    let data = d.join("data");
    let up = spawn(
        &["up", "--no-demo", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &profile,
        d.join("up.log"),
        &[("PLINTH_VOLUME_OVERSUBSCRIPTION", "64")],
    );
    wait_for("plinth up", Duration::from_secs(60), || {
        std::fs::read_to_string(d.join("up.log")).unwrap_or_default().contains("Plinth is up at").then_some(())
    });
    let agent_dir = d.join("agent");
    let agent = spawn(
        &[
            "agent",
            "--hostname",
            "vol-host",
            "--state-dir",
            agent_dir.to_str().unwrap(),
            "--volume-pool",
            pool.to_str().unwrap(),
            "--poll-wait",
            "5",
        ],
        &profile,
        d.join("agent.log"),
        &[("RUST_LOG", "info")],
    );
    let host = wait_for("the host with its pool", Duration::from_secs(90), || {
        let v = ok(&profile, None, &["host", "list"]);
        v["items"].as_array().and_then(|a| a.first()).filter(|h| h["state"] == "available").cloned()
    });
    (up, agent, profile, host)
}

#[test]
fn a_volume_is_made_on_its_hosts_pool_and_wiped_when_deleted() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _net = common::NetReaper(d.to_path_buf());
    let fs = LoopFs::new(d);
    let pool = fs.mnt.join("pool");
    let (_up, _agent, profile, host) = start(d, &pool);
    assert_eq!(host["inventory"]["volume_pool"]["filesystem"], "ext4", "{host}");
    assert!(host["inventory"]["volume_pool"]["capacity_bytes"].as_u64().unwrap() > 100 << 20);

    ok(&profile, None, &["volume-type", "create", "standard", "--iops", "500"]);
    ok(&profile, None, &["tenant", "create", "acme"]);
    ok(&profile, None, &["project", "create", "web", "--tenant", "acme"]);
    let vol = ok(&profile, None, &["volume", "create", "data", "--project", "web", "--size", "1"]);
    let id = vol["id"].as_str().unwrap().to_string();
    assert_eq!(vol["state"], "creating");
    assert_eq!(fs.copies(LUKS_MAGIC), 0, "no LUKS header on the device before the volume");

    let v = wait_for("the volume to be available", Duration::from_secs(60), || {
        let v = ok(&profile, None, &["volume", "get", "data", "--project", "web"]);
        assert_ne!(v["state"], "error", "{v}");
        (v["state"] == "available").then_some(v)
    });
    assert!(v["allocated_bytes"].as_u64().unwrap() > 0);
    let file = pool.join(format!("{id}.qcow2"));
    let info: serde_json::Value =
        serde_json::from_str(&run("qemu-img", &["info", "--output=json", file.to_str().unwrap()]))
            .expect("qemu-img info");
    assert_eq!(info["virtual-size"], 1u64 << 30);
    assert_eq!(info["format-specific"]["data"]["encrypt"]["format"], "luks", "LUKS inside the qcow2 file: {info}");
    assert_eq!(fs.copies(LUKS_MAGIC), 1, "its LUKS header is on the device");
    let listed = ok(&profile, None, &["volume", "list", "--project", "web"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // Grown by its host (with its key): the file's virtual size follows.
    let x = ok(&profile, None, &["volume", "extend", "data", "--project", "web", "--size", "2", "--wait"]);
    assert_eq!((x["state"].as_str(), x["size_gib"].as_u64()), (Some("available"), Some(2)), "--wait follows it: {x}");
    let info: serde_json::Value =
        serde_json::from_str(&run("qemu-img", &["info", "--output=json", file.to_str().unwrap()]))
            .expect("qemu-img info");
    assert_eq!(info["virtual-size"], 2u64 << 30);
    let out = cli(&profile, None, &["volume", "extend", "data", "--project", "web", "--size", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shrink_refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A refusal with its code: the pool cannot promise 200 GiB.
    let out = cli(&profile, None, &["volume", "create", "huge", "--project", "web", "--size", "200"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("volume_pool_full"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let gone = ok(&profile, None, &["volume", "delete", "data", "--project", "web"]);
    assert_eq!(gone["state"], "deleting");
    assert!(gone["wipe_evidence"]["key_destroyed_at"].is_string(), "{gone}");
    let v = wait_for("the volume to be wiped", Duration::from_secs(90), || {
        let v = ok(&profile, None, &["volume", "get", &id]);
        (v["state"] == "deleted").then_some(v)
    });
    assert_eq!(v["wipe_evidence"]["method"], "crypto");
    assert!(v["wipe_evidence"]["bytes_overwritten"].as_u64().unwrap() >= 256 << 10, "{v}");
    assert!(!file.exists(), "the file is removed");
    assert_eq!(fs.copies(LUKS_MAGIC), 0, "its LUKS header is gone from the device");
    let left: Vec<_> = std::fs::read_dir(&pool).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "nothing is left in the pool: {left:?}");
}

/// The test guest (built by scripts/test-guest when missing).
fn test_guest() -> PathBuf {
    let dir = std::env::var_os("PLINTH_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/plinth/test-guest")
    });
    if !dir.join("manifest.json").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-guest");
        assert!(Command::new(script).status().expect("run scripts/test-guest").success(), "scripts/test-guest failed");
    }
    dir
}

/// A user-data script for the test guest: finds the disk whose serial is `serial` and
/// writes `marker` at its start (`write`) or prints what its start holds (`read`).
fn script(serial: &str, marker: &str, write: bool) -> String {
    let act = if write {
        format!("printf '{marker}' | dd of=$d bs=512 conv=sync 2>/dev/null && sync && echo PLINTH-VOL-WROTE")
    } else {
        "echo \"PLINTH-VOL-READ $(head -c 64 $d | tr -d '\\000')\"".to_string()
    };
    format!(
        "#!/bin/sh\nfor b in /sys/block/vd*; do\n  if [ \"$(cat $b/serial 2>/dev/null)\" = \"{serial}\" ]; then\n    \
         d=/dev/${{b##*/}}\n    echo \"PLINTH-VOL-SEEN $d $(cat $b/size)\"\n    {act}\n  fi\ndone\n"
    )
}

#[test]
fn a_volume_carries_a_guests_data_to_another_guest() {
    if !root() {
        return;
    }
    let guest = test_guest();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _net = common::NetReaper(d.to_path_buf());
    let _qemu = common::QemuReaper(d.to_path_buf());
    let fs = LoopFs::new(d);
    let pool = fs.mnt.join("pool");
    let (_up, _agent, profile, _host) = start(d, &pool);
    let cmdline = std::fs::read_to_string(guest.join("cmdline")).unwrap();
    ok(
        &profile,
        None,
        &[
            "image",
            "create",
            "test-guest",
            "--public",
            "--kernel",
            guest.join("vmlinux").to_str().unwrap(),
            "--initrd",
            guest.join("initramfs.cpio.gz").to_str().unwrap(),
            "--cmdline",
            cmdline.trim(),
        ],
    );
    ok(&profile, None, &["shape", "create", "tiny", "--vcpus", "1", "--memory-mib", "256", "--disk-gib", "1"]);
    ok(&profile, None, &["volume-type", "create", "standard"]);
    ok(&profile, None, &["tenant", "create", "acme"]);
    ok(&profile, None, &["project", "create", "web", "--tenant", "acme"]);
    let vol = ok(&profile, None, &["volume", "create", "data", "--project", "web", "--size", "1"]);
    let serial = vol["serial"].as_str().unwrap().to_string();
    let marker = format!("PLINTH-MARK-{}", &vol["id"].as_str().unwrap()[4..]);
    wait_for("the volume", Duration::from_secs(60), || {
        (ok(&profile, None, &["volume", "get", "data", "--project", "web"])["state"] == "available").then_some(())
    });

    let console = |vm: &str| -> String {
        String::from_utf8_lossy(&cli(&profile, None, &["instance", "console-log", vm]).stdout).into_owned()
    };
    let vm = |name: &str, write: bool| {
        let f = d.join(format!("{name}.sh"));
        std::fs::write(&f, script(&serial, &marker, write)).unwrap();
        ok(
            &profile,
            None,
            &[
                "instance",
                "create",
                name,
                "--project",
                "web",
                "--shape",
                "tiny",
                "--image",
                "test-guest",
                "--user-data-file",
                f.to_str().unwrap(),
                "--wait",
            ],
        );
        ok(&profile, None, &["instance", "stop", name, "--wait"]);
    };

    // Guest A, stopped, gets the volume; started, it finds the disk by its serial and writes.
    vm("vm-a", true);
    let att = ok(&profile, None, &["volume", "attach", "data", "--project", "web", "--instance", "vm-a"]);
    assert_eq!(att["state"], "attached");
    ok(&profile, None, &["instance", "start", "vm-a", "--wait"]);
    let seen = wait_for("vm-a to write the marker", Duration::from_secs(120), || {
        let c = console("vm-a");
        c.contains("PLINTH-VOL-WROTE").then_some(c)
    });
    assert!(seen.contains("PLINTH-VOL-SEEN /dev/vd"), "{seen}");
    assert!(seen.contains(&format!(" {}", 1u64 << 21)), "the guest sees 1 GiB (2,097,152 sectors): {seen}");
    let inst = ok(&profile, None, &["instance", "get", "vm-a"]);
    let argv = inst["runtime"]["command_line"].to_string();
    assert!(argv.contains("bus=hp0") && argv.contains(&format!("serial={serial}")), "{argv}");
    ok(&profile, None, &["instance", "stop", "vm-a", "--wait"]);
    assert_eq!(fs.copies(marker.as_bytes()), 0, "the marker is on the device only encrypted");

    // Moved to guest B: it reads what A wrote.
    ok(&profile, None, &["volume", "detach", "data", "--project", "web"]);
    vm("vm-b", false);
    ok(&profile, None, &["volume", "attach", "data", "--project", "web", "--instance", "vm-b"]);
    ok(&profile, None, &["instance", "start", "vm-b", "--wait"]);
    let read = wait_for("vm-b to read the volume", Duration::from_secs(120), || {
        let c = console("vm-b");
        c.contains("PLINTH-VOL-READ").then_some(c)
    });
    assert!(read.contains(&format!("PLINTH-VOL-READ {marker}")), "vm-b reads vm-a's marker: {read}");

    // A microVM (virtio-mmio, no hot-plug at all) takes it cold the same way.
    ok(&profile, None, &["instance", "stop", "vm-b", "--wait"]);
    ok(&profile, None, &["volume", "detach", "data", "--project", "web"]);
    ok(
        &profile,
        None,
        &[
            "shape",
            "create",
            "tiny-m",
            "--vcpus",
            "1",
            "--memory-mib",
            "256",
            "--disk-gib",
            "1",
            "--runtime-class",
            "microvm",
        ],
    );
    let f = d.join("vm-c.sh");
    std::fs::write(&f, script(&serial, &marker, false)).unwrap();
    ok(
        &profile,
        None,
        &[
            "instance",
            "create",
            "vm-c",
            "--project",
            "web",
            "--shape",
            "tiny-m",
            "--image",
            "test-guest",
            "--user-data-file",
            f.to_str().unwrap(),
            "--wait",
        ],
    );
    ok(&profile, None, &["instance", "stop", "vm-c", "--wait"]);
    ok(&profile, None, &["volume", "attach", "data", "--project", "web", "--instance", "vm-c"]);
    ok(&profile, None, &["instance", "start", "vm-c", "--wait"]);
    let read = wait_for("vm-c to read the volume", Duration::from_secs(120), || {
        let c = console("vm-c");
        c.contains("PLINTH-VOL-READ").then_some(c)
    });
    assert!(read.contains(&format!("PLINTH-VOL-READ {marker}")), "the microVM reads it too: {read}");
    let argv = ok(&profile, None, &["instance", "get", "vm-c"])["runtime"]["command_line"].to_string();
    assert!(argv.contains("virtio-blk-device,drive=v0"), "{argv}");
}
