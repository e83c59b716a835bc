//! The volume pool against the real thing: an ext4 filesystem on a loop device, volumes
//! made by `qemu-img` (LUKS inside, the key over a pipe), a marker written into them by
//! `qemu-io` as a guest would, and the raw device scanned for the marker before and after
//! each wipe. A plain unlink is the control: the scan finds its marker, so finding none
//! after a wipe means something. Snapshots' layers are made, merged, reverted and copied
//! here too, their content read back through `qemu-io`.

use plinth_agent::storage::VolumePool;
use plinth_api::{ObservedVolumeState, VolumeId, VolumeSpec, WipeMethod};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SIZE: u64 = 64 << 20;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ext4 filesystem on a loop device, mounted; unmounted and detached on drop.
struct LoopFs {
    image: PathBuf,
    dev: String,
    mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    fn new() -> LoopFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("pool.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(256 << 20)).expect("image");
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        let dev = run("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mnt");
        run("mount", &[&dev, mnt.to_str().unwrap()]);
        LoopFs { image, dev, mnt, _dir: dir }
    }

    /// Copies of `marker` on the raw device, after everything written reached it.
    /// (Read with `O_DIRECT`: the block device's own page cache may hold blocks read
    /// before the filesystem rewrote them.)
    fn copies(&self, marker: &[u8]) -> usize {
        run("sync", &[]);
        let out = std::process::Command::new("dd")
            .args([&format!("if={}", self.dev), "iflag=direct", "bs=1M", "status=none"])
            .output()
            .expect("dd the raw device");
        assert!(out.status.success(), "dd: {}", String::from_utf8_lossy(&out.stderr));
        memchr::memmem::find_iter(&out.stdout, marker).count()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Ignores the wipe-start notices.
fn quiet(_: plinth_api::ObservedVolume) {}

fn spec(id: &VolumeId, generation: i64, encrypted: bool, wipe: WipeMethod, present: bool) -> VolumeSpec {
    VolumeSpec {
        volume_id: id.clone(),
        generation,
        size_bytes: SIZE,
        encrypted,
        wipe,
        present,
        source: None,
        layers: Vec::new(),
        source_chain: None,
    }
}

/// A marker unique to this run: 64 bytes, repeated through a 1 MiB file.
fn marker_file(dir: &Path, tag: &str) -> (PathBuf, Vec<u8>) {
    let mut m = format!("PLINTH-MARK-{tag}-{}-", VolumeId::generate()).into_bytes();
    m.resize(64, b'#');
    let path = dir.join(format!("marker-{tag}"));
    std::fs::write(&path, m.repeat(16384)).expect("marker");
    (path, m)
}

/// Runs `qemu-io` on the volume `file` (its key, when given, on qemu-io's standard input)
/// with `commands`; answers whether it succeeded and what it printed.
fn qemu_io(file: &Path, key: Option<&str>, commands: &[String]) -> (bool, String) {
    qemu_io_chain(file, 0, key, commands)
}

/// [`qemu_io`] on the top `file` of a chain with `depth` files below it (found by their
/// names in each file's header), all opened with the key.
fn qemu_io_chain(file: &Path, depth: usize, key: Option<&str>, commands: &[String]) -> (bool, String) {
    let mut opts = format!("driver=qcow2,file.filename={}", file.display());
    if key.is_some() {
        for d in 0..=depth {
            opts.push_str(&format!(",{}encrypt.key-secret=sec0", "backing.".repeat(d)));
        }
    }
    let mut cmd = Command::new("qemu-io");
    if key.is_some() {
        cmd.args(["--object", "secret,id=sec0,file=/dev/stdin"]);
    }
    cmd.args(["--image-opts", &opts]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("qemu-io");
    if let (Some(mut i), Some(k)) = (child.stdin.take(), key) {
        i.write_all(k.as_bytes()).expect("key");
    }
    let out = child.wait_with_output().expect("qemu-io");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Writes the marker file at offset 0 of the volume, as a guest writing to its disk would.
fn write_marker(file: &Path, source: &Path, key: Option<&str>) {
    let (ok, text) = qemu_io(file, key, &[format!("write -s {} 0 1M", source.display()), "flush".into()]);
    assert!(ok && text.contains("wrote 1048576/1048576"), "qemu-io write: {text}");
}

/// Reads the whole volume through qemu-io, checking every byte is zero; panics with
/// qemu-io's words when it is not.
fn assert_reads_all_zero(file: &Path, key: Option<&str>) {
    let (ok, text) = qemu_io(file, key, &[format!("read -P 0 0 {SIZE}")]);
    assert!(
        ok && !text.contains("verification failed") && text.contains(&format!("read {SIZE}/{SIZE} bytes")),
        "a new volume reads all zeros end to end: {text}"
    );
}

fn ready() -> bool {
    if !nix_is_root() {
        eprintln!("SKIP: volume_pool needs root (loop devices, mount)");
        return false;
    }
    for tool in ["qemu-img", "qemu-io", "mkfs.ext4", "losetup"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            panic!("{tool} is missing: scripts/test installs qemu-utils, e2fsprogs and util-linux");
        }
    }
    true
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn plaintext_survives_an_unlink_and_no_wipe_leaves_any() {
    if !ready() {
        return;
    }
    let fs = LoopFs::new();
    let pool = VolumePool::open(&fs.mnt.join("pool")).expect("an ext4 pool opens");
    assert_eq!(pool.inventory().filesystem, "ext4");
    assert!(pool.inventory().capacity_bytes > 200 << 20);
    let no_key = |_: &VolumeId| -> Result<String, String> { panic!("an unencrypted volume needs no key") };
    let with_key = |_: &VolumeId| -> Result<String, String> { Ok(KEY.to_string()) };

    // Control: an unencrypted volume, removed without a wipe, leaves its marker behind.
    let control = VolumeId::generate();
    let r = pool.converge(&[spec(&control, 1, false, WipeMethod::Overwrite, true)], &no_key, &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Present, "{r:?}");
    let (src, m0) = marker_file(fs.mnt.parent().unwrap(), "control");
    write_marker(&pool.file(&control), &src, None);
    assert!(fs.copies(&m0) >= 1000, "the marker is on the device in clear");
    std::fs::remove_file(pool.file(&control)).expect("unlink");
    assert!(fs.copies(&m0) >= 1000, "control: a plain unlink leaves the marker on the device, and the scan finds it");

    // Unencrypted, overwritten: the marker was on the device, and is gone after the wipe.
    let plain = VolumeId::generate();
    pool.converge(&[spec(&plain, 1, false, WipeMethod::Overwrite, true)], &no_key, &quiet);
    let (src, m1) = marker_file(fs.mnt.parent().unwrap(), "plain");
    write_marker(&pool.file(&plain), &src, None);
    assert!(fs.copies(&m1) >= 1000);
    let told = std::cell::RefCell::new(Vec::new());
    let file = pool.file(&plain);
    let note = |o: plinth_api::ObservedVolume| told.borrow_mut().push((o.state, file.exists()));
    let r = pool.converge(&[spec(&plain, 2, false, WipeMethod::Overwrite, false)], &no_key, &note);
    assert_eq!(told.borrow().as_slice(), [(ObservedVolumeState::Wiping, true)], "wiping is told before the file goes");
    assert_eq!(r[0].state, ObservedVolumeState::Absent, "{r:?}");
    assert!(r[0].bytes_overwritten.unwrap_or(0) >= 1 << 20, "at least the marker's MiB was overwritten: {r:?}");
    assert!(!pool.file(&plain).exists());
    assert_eq!(fs.copies(&m1), 0, "no copy of an overwritten volume's marker is left on the device");

    // Encrypted: the marker never reaches the device in clear; crypto-erase overwrites the
    // LUKS header (the scan finds it before, and not after).
    let enc = VolumeId::generate();
    let r = pool.converge(&[spec(&enc, 1, true, WipeMethod::Crypto, true)], &with_key, &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Present, "{r:?}");
    let (src, m2) = marker_file(fs.mnt.parent().unwrap(), "enc");
    write_marker(&pool.file(&enc), &src, Some(KEY));
    assert_eq!(fs.copies(&m2), 0, "an encrypted volume's data is never on the device in clear");
    let luks = b"LUKS\xba\xbe";
    let headers = fs.copies(luks);
    assert!(headers >= 1, "the volume's LUKS header is on the device");
    let r = pool.converge(&[spec(&enc, 2, true, WipeMethod::Crypto, false)], &with_key, &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Absent, "{r:?}");
    assert!(r[0].bytes_overwritten.unwrap_or(0) >= 256 << 10, "the encryption header was overwritten: {r:?}");
    assert_eq!(fs.copies(luks), headers - 1, "its LUKS header is gone from the device");
    assert_eq!(fs.copies(&m2), 0);

    // A report lost to a crash is made again with the same evidence.
    // (Growing is checked below, on the next tenant's volume.)
    let again = pool.converge(&[spec(&enc, 2, true, WipeMethod::Crypto, false)], &with_key, &quiet);
    assert_eq!(again[0].bytes_overwritten, r[0].bytes_overwritten, "the wipe's record is kept until forgotten");
    pool.converge(&[], &with_key, &quiet);
    assert!(std::fs::read_dir(pool.dir()).expect("pool").next().is_none(), "nothing is left in the pool");

    // The next tenant's volume of the same size, in the same pool, reads as zeros.
    let next = VolumeId::generate();
    pool.converge(&[spec(&next, 1, true, WipeMethod::Crypto, true)], &with_key, &quiet);
    assert_reads_all_zero(&pool.file(&next), Some(KEY));

    // Growing: the file is resized with its key; a smaller spec never shrinks it.
    let mut bigger = spec(&next, 2, true, WipeMethod::Crypto, true);
    bigger.size_bytes = 2 * SIZE;
    let r = pool.converge(std::slice::from_ref(&bigger), &with_key, &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Present, "{r:?}");
    let info = run("qemu-img", &["info", "--output=json", pool.file(&next).to_str().unwrap()]);
    assert!(info.contains(&format!("\"virtual-size\": {}", 2 * SIZE)), "{info}");
    let r = pool.converge(&[spec(&next, 3, true, WipeMethod::Crypto, true)], &with_key, &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Failed, "a volume is never shrunk: {r:?}");
    let wrong = |_: &VolumeId| -> Result<String, String> { Ok("ff".repeat(32)) };
    bigger.size_bytes = 3 * SIZE;
    let r = pool.converge(&[bigger], &wrong, &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Failed, "another key does not open it: {r:?}");
}

#[test]
fn a_volume_made_halfway_is_never_reported_present() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = VolumePool::open(&dir.path().join("pool")).expect("pool");
    let id = VolumeId::generate();
    // The key cannot be had: nothing is made, the failure is reported, no file is left.
    let r =
        pool.converge(&[spec(&id, 1, true, WipeMethod::Crypto, true)], &|_| Err("the server is away".into()), &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Failed);
    assert!(r[0].detail.as_deref().unwrap_or_default().contains("the server is away"), "{r:?}");
    assert!(!pool.file(&id).exists());
    // A half-made file from a crash is wiped with the volume, never taken as the volume.
    std::fs::write(pool.dir().join(format!("{id}.qcow2.part")), b"half").expect("part");
    let r = pool.converge(&[spec(&id, 2, true, WipeMethod::Crypto, false)], &|_| Err("unused".into()), &quiet);
    assert_eq!(r[0].state, ObservedVolumeState::Absent, "{r:?}");
    pool.converge(&[], &|_| Err("unused".into()), &quiet);
    assert!(std::fs::read_dir(pool.dir()).expect("pool").next().is_none(), "nothing is left in the pool");
}

/// Reads 1 MiB at `offset` of the chain whose top is `file`: `Some(true)` when it holds the
/// marker file's bytes, `Some(false)` when it reads as zeros, `None` otherwise.
fn holds(file: &Path, depth: usize, key: Option<&str>, offset: &str, marker: &Path) -> Option<bool> {
    let check = |cmd: String| {
        let (ok, text) = qemu_io_chain(file, depth, key, &[cmd]);
        ok && !text.contains("failed") && text.contains("read 1048576/1048576")
    };
    if check(format!("read -P 0 {offset} 1M")) {
        return Some(false);
    }
    let (ok, text) = qemu_io_chain(file, depth, key, &[format!("read -v {offset} 16")]);
    // The marker file repeats a 64-byte line: its first 16 bytes are the line's.
    let first: Vec<u8> = std::fs::read(marker).ok()?[..16].to_vec();
    let hex: String = first.iter().map(|b| format!("{b:02x} ")).collect();
    (ok && text.contains(hex.trim_end())).then_some(true)
}

#[test]
fn snapshots_are_layers_merged_reverted_copied_and_wiped() {
    if !ready() {
        return;
    }
    let fs = LoopFs::new();
    let pool = VolumePool::open(&fs.mnt.join("pool")).expect("an ext4 pool opens");
    let tmp = fs.mnt.parent().unwrap();
    for encrypted in [false, true] {
        let key = encrypted.then_some(KEY);
        let keys = |_: &VolumeId| -> Result<String, String> { Ok(KEY.to_string()) };
        let wipe = if encrypted { WipeMethod::Crypto } else { WipeMethod::Overwrite };
        let (v, b) = (VolumeId::generate(), VolumeId::generate());
        let s1 = plinth_api::VolumeSnapshotId::generate();
        let layer = |rev: u32| plinth_api::VolumeLayer { snapshot_id: s1.clone(), revision: rev, fs_freeze: false };
        let at = |generation: i64, layers: Vec<plinth_api::VolumeLayer>| VolumeSpec {
            layers,
            ..spec(&v, generation, encrypted, wipe, true)
        };
        let present = |r: &[plinth_api::ObservedVolume]| r.iter().all(|o| o.state == ObservedVolumeState::Present);
        let (m1_src, m1) = marker_file(tmp, "m1");
        let (m2_src, m2) = marker_file(tmp, "m2");
        let write_at = |file: &Path, depth: usize, src: &Path, offset: &str| {
            let (ok, text) =
                qemu_io_chain(file, depth, key, &[format!("write -s {} {offset} 1M", src.display()), "flush".into()]);
            assert!(ok && text.contains("wrote 1048576/1048576"), "qemu-io write: {text}");
        };

        // M1 written, then snapshot s1 taken: a new top layer over the volume's file.
        let r = pool.converge(&[at(1, vec![])], &keys, &quiet);
        assert!(present(&r), "{r:?}");
        write_at(&pool.file(&v), 0, &m1_src, "0");
        // An encrypted volume's next layer is made ahead; the snapshot takes it.
        let spare = pool.dir().join(format!("{v}.next.qcow2"));
        let made = usize::from(encrypted);
        assert_eq!(pool.make_spares(&[at(1, vec![])], &keys, 1), made);
        assert_eq!(spare.exists(), encrypted);
        assert_eq!(pool.make_spares(&[at(1, vec![])], &keys, 1), 0, "one is enough");
        let r = pool.converge(&[at(2, vec![layer(0)])], &keys, &quiet);
        assert!(present(&r), "{r:?}");
        let top = pool.dir().join(layer(0).file(&v));
        assert!(top.exists() && !spare.exists(), "the layer is the spare, renamed");
        assert_eq!(pool.make_spares(&[at(2, vec![layer(0)])], &keys, 1), made, "the next one, over the new top");
        // After the snapshot, M2: it lands in the top layer only.
        write_at(&top, 1, &m2_src, "1M");
        assert_eq!(holds(&top, 1, key, "0", &m1_src), Some(true), "M1 reads through the layer");
        assert_eq!(holds(&top, 1, key, "1M", &m2_src), Some(true));
        assert_eq!(holds(&pool.file(&v), 0, key, "1M", &m2_src), Some(false), "the snapshot's content has no M2");

        // A new volume from s1 (the chain below its layer), under its own key: M1, no M2.
        let from = VolumeSpec {
            source_chain: Some(plinth_api::SourceChain { volume_id: v.clone(), layers: vec![], encrypted }),
            ..spec(&b, 1, encrypted, wipe, true)
        };
        let r = pool.converge(&[at(2, vec![layer(0)]), from.clone()], &keys, &quiet);
        assert!(present(&r), "{r:?}");
        assert_eq!(holds(&pool.file(&b), 0, key, "0", &m1_src), Some(true), "the copy has M1");
        assert_eq!(holds(&pool.file(&b), 0, key, "1M", &m2_src), Some(false), "and not M2");

        // Revert to s1: the top layer is replaced by an empty one: M1 is there, M2 gone.
        let r = pool.converge(&[at(3, vec![layer(1)]), from.clone()], &keys, &quiet);
        assert!(present(&r), "{r:?}");
        let top = pool.dir().join(layer(1).file(&v));
        assert!(!pool.dir().join(layer(0).file(&v)).exists(), "the old top is gone");
        assert_eq!(pool.make_spares(&[at(3, vec![layer(1)])], &keys, 1), made, "the stale spare is made again");
        assert_eq!(holds(&top, 1, key, "0", &m1_src), Some(true));
        assert_eq!(holds(&top, 1, key, "1M", &m2_src), Some(false), "what was written after s1 is dropped");
        if !encrypted {
            assert_eq!(fs.copies(&m2), 0, "the dropped layer was overwritten, not just unlinked");
        }

        // M2 again, then s1 deleted: its layer is merged into the volume's file and wiped.
        write_at(&top, 1, &m2_src, "1M");
        let r = pool.converge(&[at(4, vec![]), from.clone()], &keys, &quiet);
        assert!(present(&r), "{r:?}");
        assert!(!top.exists(), "the merged layer is gone");
        assert_eq!(holds(&pool.file(&v), 0, key, "0", &m1_src), Some(true), "M1 stays");
        assert_eq!(holds(&pool.file(&v), 0, key, "1M", &m2_src), Some(true), "M2 was merged down");
        if !encrypted {
            assert!(fs.copies(&m2) >= 1, "the scan finds M2 where it was merged (so 0 below means something)");
        }

        // Both deleted: nothing of either marker is left on the device.
        let gone = [VolumeSpec { present: false, ..at(5, vec![]) }, VolumeSpec { present: false, ..from }];
        let r = pool.converge(&gone, &keys, &quiet);
        assert!(r.iter().all(|o| o.state == ObservedVolumeState::Absent), "{r:?}");
        assert_eq!((fs.copies(&m1), fs.copies(&m2)), (0, 0), "encrypted: {encrypted}");
        assert!(
            std::fs::read_dir(pool.dir())
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().ends_with(".qcow2"))
        );
    }
}
