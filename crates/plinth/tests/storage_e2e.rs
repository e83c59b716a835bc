//! Volumes end to end through the real binary: `plinth up`, a real `plinth agent` (runtime
//! qemu) whose volume pool is an ext4 filesystem on a loop device, and the CLI. A volume is
//! made on the host's pool (a LUKS-in-qcow2 file; its LUKS header is found on the raw
//! device), deleted (the key destroyed at once), and wiped by its host: the header is gone
//! from the device, the file is removed, and the record keeps the wipe's evidence.

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

#[test]
fn a_volume_is_made_on_its_hosts_pool_and_wiped_when_deleted() {
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        eprintln!("SKIP: needs root (a loop device for the pool)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _net = common::NetReaper(d.to_path_buf());
    let fs = LoopFs::new(d);
    let pool = fs.mnt.join("pool");
    let profile = d.join("profile.toml");
    let data = d.join("data");
    let _up = spawn(
        &["up", "--no-demo", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &profile,
        d.join("up.log"),
        // The pool is 128 MiB; volumes are sparse: let it promise 64 times that.
        &[("PLINTH_VOLUME_OVERSUBSCRIPTION", "64")],
    );
    wait_for("plinth up", Duration::from_secs(60), || {
        std::fs::read_to_string(d.join("up.log")).unwrap_or_default().contains("Plinth is up at").then_some(())
    });
    let _agent: Proc = spawn(
        &[
            "agent",
            "--hostname",
            "vol-host",
            "--state-dir",
            d.join("agent").to_str().unwrap(),
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
    assert_eq!(host["inventory"]["volume_pool"]["filesystem"], "ext4", "{host}");
    assert!(host["inventory"]["volume_pool"]["capacity_bytes"].as_u64().unwrap() > 100 << 20);

    ok(&profile, None, &["volume-type", "create", "standard", "--iops", "500"]);
    ok(&profile, None, &["tenant", "create", "acme"]);
    ok(&profile, None, &["project", "create", "web", "--tenant", "acme"]);
    let vol = ok(&profile, None, &["volume", "create", "data", "--project", "web", "--size", "1"]);
    let id = vol["id"].as_str().unwrap().to_string();
    assert_eq!(vol["state"], "creating");
    assert_eq!(LoopFs::copies(&fs, LUKS_MAGIC), 0, "no LUKS header on the device before the volume");

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
    let x = ok(&profile, None, &["volume", "extend", "data", "--project", "web", "--size", "2"]);
    assert_eq!(x["state"], "extending");
    wait_for("the volume to be grown", Duration::from_secs(60), || {
        let v = ok(&profile, None, &["volume", "get", &id]);
        (v["state"] == "available").then_some(())
    });
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
