//! The KVM probe: whether `/dev/kvm` can really run guests on this host.
//!
//! A `/dev/kvm` that exists and opens is not enough: under nested or paravirtualised KVM a
//! hardware-virtualised guest may hang or crawl. So the probe boots a tiny guest under
//! `-accel kvm` and waits, under a deadline (3 s by default), for its first words on the
//! serial port. The guest is a 512-byte MBR boot sector generated here
//! ([`boot_sector`]): real-mode x86 that writes [`MARKER`] to COM1 (port `0x3f8`) byte by
//! byte with `out dx, al` and halts. QEMU runs it as
//! `qemu-system-x86_64 -machine pc -accel kvm -m 16 -nodefaults -display none -serial stdio
//! -no-reboot -drive file=<image>,format=raw,if=ide`, and the probe reads its stdout.
//!
//! A guest that prints in time but slowly — at least [`SLOW_FLOOR`] and [`SLOW_FACTOR`]
//! times as long as the same guest under TCG — is unusable too. On the nested-KVM VM this
//! was written on, the probe guest printed after 2.7–4.7 s under KVM depending on the
//! host's load (0.07–0.2 s under TCG) while a Linux guest under KVM printed nothing in 40 s:
//! a bare deadline of 3 s said "usable" on a quiet host and "unusable" on a busy one.
//!
//! [`probe_boots`] boots the same guest under any accelerator; under `tcg` it shows the
//! guest itself is right, so that "unusable" means KVM is broken, not the probe.
//!
//! QEMU is killed and reaped on every path (marker seen, deadline, read error), and
//! `kill_on_drop` covers a probe future that is dropped midway.

use plinth_api::Kvm;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// What the probe guest prints on its serial port.
pub const MARKER: &str = "PLINTH-KVM-OK";

/// How the probe runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmProbe {
    /// The KVM device (default `/dev/kvm`).
    pub dev: PathBuf,
    /// The QEMU binary, a path or a name looked up on `PATH` (default `qemu-system-x86_64`).
    pub qemu: PathBuf,
    /// Where the probe guest's image is written (and removed after the probe).
    pub work_dir: PathBuf,
    /// How long the guest has, from QEMU's start, to print [`MARKER`] (default 3 s).
    pub deadline: Duration,
}

impl KvmProbe {
    /// The defaults, with the image written under `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> KvmProbe {
        KvmProbe {
            dev: PathBuf::from("/dev/kvm"),
            qemu: PathBuf::from("qemu-system-x86_64"),
            work_dir: work_dir.into(),
            deadline: Duration::from_secs(3),
        }
    }
}

impl Default for KvmProbe {
    /// The defaults, with the image written under the system's temporary directory.
    fn default() -> KvmProbe {
        KvmProbe::new(std::env::temp_dir())
    }
}

/// Why a probe guest did not show its marker.
#[derive(Debug)]
pub enum ProbeError {
    /// The guest image could not be written.
    Image {
        /// The image path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// QEMU could not be started.
    Spawn {
        /// The QEMU binary.
        qemu: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// QEMU exited (or closed its stdout) before the marker.
    Exited {
        /// The QEMU binary.
        qemu: PathBuf,
        /// Its exit status, as text.
        status: String,
        /// The last non-empty line QEMU wrote on stderr (empty if none).
        last_line: String,
    },
    /// The deadline passed without the marker.
    Deadline {
        /// The accelerator (`kvm`, `tcg`).
        accel: String,
        /// The deadline.
        deadline: Duration,
        /// How many bytes the guest did print.
        printed: usize,
    },
    /// Reading QEMU's stdout failed.
    Read {
        /// The QEMU binary.
        qemu: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Image { path, source } => {
                write!(f, "cannot write the probe guest image {}: {source}", path.display())
            }
            ProbeError::Spawn { qemu, source } => write!(f, "cannot start {}: {source}", qemu.display()),
            ProbeError::Exited { qemu, status, last_line } if last_line.is_empty() => {
                write!(f, "{} exited ({status}) before the probe guest printed anything", qemu.display())
            }
            ProbeError::Exited { last_line, .. } => f.write_str(last_line),
            ProbeError::Deadline { accel, deadline, printed: 0 } => {
                write!(f, "a probe guest under {accel} printed nothing within {}", human(*deadline))
            }
            ProbeError::Deadline { accel, deadline, printed } => {
                write!(
                    f,
                    "a probe guest under {accel} printed {printed} bytes but not {MARKER} within {}",
                    human(*deadline)
                )
            }
            ProbeError::Read { qemu, source } => write!(f, "reading {}'s output failed: {source}", qemu.display()),
        }
    }
}

impl std::error::Error for ProbeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProbeError::Image { source, .. } | ProbeError::Spawn { source, .. } | ProbeError::Read { source, .. } => {
                Some(source)
            }
            ProbeError::Exited { .. } | ProbeError::Deadline { .. } => None,
        }
    }
}

/// Probes `/dev/kvm` (see the module documentation): [`Kvm::Absent`] without the device,
/// [`Kvm::Unusable`] with a reason when it cannot be opened read-write, QEMU cannot run
/// the probe guest under KVM, or the guest does not print its marker in time (or prints it
/// [`SLOW_FACTOR`] times slower than under TCG); [`Kvm::Usable`] otherwise.
pub async fn probe_kvm(opts: &KvmProbe) -> Kvm {
    match tokio::fs::metadata(&opts.dev).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Kvm::Absent,
        Err(e) => return Kvm::Unusable { reason: format!("cannot inspect {}: {e}", opts.dev.display()) },
        Ok(_) => {}
    }
    if let Err(e) = tokio::fs::OpenOptions::new().read(true).write(true).open(&opts.dev).await {
        return Kvm::Unusable { reason: format!("{} cannot be opened read-write: {e}", opts.dev.display()) };
    }
    match probe_boots(opts, "kvm").await {
        Ok(kvm) if kvm >= SLOW_FLOOR => compare_with_tcg(opts, kvm).await,
        Ok(elapsed) => {
            tracing::info!(elapsed_ms = elapsed.as_millis() as u64, "KVM probe guest booted: KVM is usable");
            Kvm::Usable
        }
        Err(ProbeError::Deadline { printed: 0, deadline, .. }) => {
            let reason = format!(
                "a probe guest under KVM printed nothing within {} (nested or paravirtual KVM?)",
                human(deadline)
            );
            tracing::warn!(%reason, "KVM is not usable");
            Kvm::Unusable { reason }
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(%reason, "KVM is not usable");
            Kvm::Unusable { reason }
        }
    }
}

/// A KVM boot at least this slow is compared with a TCG boot of the same guest.
pub const SLOW_FLOOR: Duration = Duration::from_secs(1);

/// A KVM boot that takes this many times as long as the TCG boot (and at least
/// [`SLOW_FLOOR`]) makes KVM unusable even within the deadline.
pub const SLOW_FACTOR: u32 = 5;

/// The verdict on a KVM boot that printed in time but slowly (`kvm`): unusable when the
/// same guest under TCG is [`SLOW_FACTOR`] times faster. Under nested KVM the probe guest
/// can print within the deadline on a quiet host and miss it on a busy one while real
/// guests hang, so the deadline alone flips; against TCG (which load slows alike) it does
/// not. When the TCG boot fails there is nothing to compare with: usable.
async fn compare_with_tcg(opts: &KvmProbe, kvm: Duration) -> Kvm {
    match probe_boots(opts, "tcg").await {
        Ok(tcg) if kvm > tcg * SLOW_FACTOR => {
            let reason = format!(
                "a probe guest under KVM took {} to print, {}× as long as under TCG ({}) (nested or paravirtual KVM?)",
                human(kvm),
                (kvm.as_secs_f64() / tcg.as_secs_f64().max(0.001)).round() as u64,
                human(tcg)
            );
            tracing::warn!(%reason, "KVM is not usable");
            Kvm::Unusable { reason }
        }
        Ok(tcg) => {
            tracing::info!(
                kvm_ms = kvm.as_millis() as u64,
                tcg_ms = tcg.as_millis() as u64,
                "KVM probe guest booted, slowly but no slower than under TCG: KVM is usable"
            );
            Kvm::Usable
        }
        Err(e) => {
            tracing::warn!(kvm_ms = kvm.as_millis() as u64, error = %e, "KVM probe guest booted slowly and the TCG comparison failed: taking KVM as usable");
            Kvm::Usable
        }
    }
}

/// Boots the probe guest under `accel` (`kvm`, `tcg`) and answers how long, from QEMU's
/// start, it took to print [`MARKER`]; an error when it did not within `opts.deadline`
/// or QEMU could not run. QEMU is killed and reaped before this returns.
pub async fn probe_boots(opts: &KvmProbe, accel: &str) -> Result<Duration, ProbeError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let image = opts.work_dir.join(format!(
        "plinth-kvm-probe-{}-{}.img",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let write = async {
        tokio::fs::create_dir_all(&opts.work_dir).await?;
        tokio::fs::write(&image, boot_sector()).await
    };
    write.await.map_err(|source| ProbeError::Image { path: image.clone(), source })?;
    let result = boot(opts, accel, &image).await;
    if let Err(e) = tokio::fs::remove_file(&image).await {
        tracing::debug!(image = %image.display(), error = %e, "could not remove the probe guest image");
    }
    result
}

/// What reading QEMU's stdout came to.
enum Outcome {
    Marker(Duration),
    Eof,
    Deadline,
    Read(std::io::Error),
}

async fn boot(opts: &KvmProbe, accel: &str, image: &Path) -> Result<Duration, ProbeError> {
    // Commas in a QEMU option value are escaped by doubling them.
    let drive = format!("file={},format=raw,if=ide", image.display().to_string().replace(',', ",,"));
    let started = Instant::now();
    let mut child = Command::new(&opts.qemu);
    child
        .args(["-machine", "pc", "-accel", accel, "-m", "16", "-nodefaults", "-display", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-drive", &drive])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it makes the kernel kill the
    // probe if the agent dies before it (a SIGKILLed agent runs no destructor).
    unsafe {
        child.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = child.spawn().map_err(|source| ProbeError::Spawn { qemu: opts.qemu.clone(), source })?;

    // Stderr is drained alongside so that QEMU never blocks on it; its last line explains
    // an early exit.
    let stderr = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(64 * 1024).read_to_end(&mut text).await;
        }
        text
    });

    let deadline = tokio::time::Instant::from_std(started + opts.deadline);
    let mut printed = 0usize;
    let mut seen: Vec<u8> = Vec::new();
    let outcome = match child.stdout.take() {
        None => Outcome::Eof,
        Some(mut stdout) => loop {
            let mut chunk = [0u8; 512];
            match tokio::time::timeout_at(deadline, stdout.read(&mut chunk)).await {
                Err(_) => break Outcome::Deadline,
                Ok(Ok(0)) => break Outcome::Eof,
                Ok(Ok(n)) => {
                    printed += n;
                    seen.extend_from_slice(&chunk[..n]);
                    if seen.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
                        break Outcome::Marker(started.elapsed());
                    }
                    // Keep only a tail long enough to hold a marker split across reads.
                    if seen.len() > 4096 {
                        seen.drain(..seen.len() - MARKER.len());
                    }
                }
                Ok(Err(e)) => break Outcome::Read(e),
            }
        },
    };

    // Kill and reap on every path: the guest halts forever once it has printed.
    if let Err(e) = child.start_kill() {
        tracing::debug!(error = %e, "QEMU probe process already gone");
    }
    let status = child.wait().await;
    let stderr = match tokio::time::timeout(Duration::from_secs(2), stderr_task).await {
        Ok(Ok(text)) => text,
        _ => Vec::new(),
    };

    match outcome {
        Outcome::Marker(elapsed) => Ok(elapsed),
        Outcome::Deadline => Err(ProbeError::Deadline { accel: accel.to_string(), deadline: opts.deadline, printed }),
        Outcome::Read(source) => Err(ProbeError::Read { qemu: opts.qemu.clone(), source }),
        Outcome::Eof => Err(ProbeError::Exited {
            qemu: opts.qemu.clone(),
            status: match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("status unknown: {e}"),
            },
            last_line: String::from_utf8_lossy(&stderr)
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or_default()
                .to_string(),
        }),
    }
}

/// The probe guest: a 512-byte MBR boot sector that prints [`MARKER`] and `\r\n` on COM1
/// and halts.
///
/// ```text
/// 7c00: fa          cli
///       31 c0       xor  ax, ax
///       8e d8       mov  ds, ax            ; the message is addressed from segment 0
///       fc          cld
///       be xx xx    mov  si, message
///       ba f8 03    mov  dx, 0x3f8         ; COM1 transmit register
/// next: ac          lodsb
///       84 c0       test al, al
///       74 03       jz   halt
///       ee          out  dx, al
///       eb f8       jmp  next
/// halt: f4          hlt
///       eb fd       jmp  halt
/// message: "PLINTH-KVM-OK\r\n", 0
/// 7dfe: 55 aa       boot signature
/// ```
pub fn boot_sector() -> [u8; 512] {
    const CODE: [u8; 23] = [
        0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0xfc, 0xbe, 0x00, 0x00, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee,
        0xeb, 0xf8, 0xf4, 0xeb, 0xfd,
    ];
    let mut sector = [0u8; 512];
    sector[..CODE.len()].copy_from_slice(&CODE);
    let message_at = CODE.len();
    let address = 0x7c00u16 + message_at as u16;
    sector[7..9].copy_from_slice(&address.to_le_bytes());
    let message = [MARKER.as_bytes(), b"\r\n"].concat();
    sector[message_at..message_at + message.len()].copy_from_slice(&message);
    // The byte after the message is already the terminating zero.
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

/// `3 s`, `1.5 s`, `250 ms`.
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn boot_sector_layout() {
        let s = boot_sector();
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        let at = usize::from(u16::from_le_bytes([s[7], s[8]]) - 0x7c00);
        assert_eq!(&s[at..at + MARKER.len()], MARKER.as_bytes());
        assert_eq!(&s[at + MARKER.len()..at + MARKER.len() + 3], b"\r\n\0");
        // The loop's jumps land where the listing says: `jz` (at 15, 2 bytes) +3 → `hlt`
        // at 20; `jmp` (at 18) -8 → `lodsb` at 12; `jmp` (at 21) -3 → `hlt` at 20.
        assert_eq!((s[15], s[17 + s[16] as usize]), (0x74, 0xf4));
        assert_eq!((s[18], s[20 - (s[19].wrapping_neg() as usize)]), (0xeb, 0xac));
        assert_eq!((s[21], s[23 - (s[22].wrapping_neg() as usize)]), (0xeb, 0xf4));
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(3)), "3 s");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
    }

    /// A stand-in for QEMU: a shell script with `body`.
    fn fake_qemu(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake qemu");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod fake qemu");
        path
    }

    /// `probe_boots`, retried while the script is "text file busy": another test thread
    /// may fork while this one's script was still open for writing.
    async fn boots_retrying(opts: &KvmProbe, accel: &str) -> Result<Duration, ProbeError> {
        for _ in 0..20 {
            match probe_boots(opts, accel).await {
                Err(ProbeError::Spawn { source, .. }) if source.raw_os_error() == Some(26) => continue,
                other => return other,
            }
        }
        probe_boots(opts, accel).await
    }

    /// A probe whose "device" is an ordinary, openable file.
    fn opts_with_fake_dev(dir: &Path, qemu: PathBuf, deadline: Duration) -> KvmProbe {
        let dev = dir.join("kvm");
        std::fs::write(&dev, b"").expect("write fake dev");
        KvmProbe { dev, qemu, work_dir: dir.join("work"), deadline }
    }

    #[tokio::test]
    async fn absent_device_is_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = KvmProbe { dev: dir.path().join("no-such-kvm"), ..KvmProbe::new(dir.path()) };
        assert_eq!(probe_kvm(&opts).await, Kvm::Absent);
    }

    #[tokio::test]
    async fn a_device_that_does_not_open_read_write_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A directory exists but cannot be opened for writing.
        let opts = KvmProbe { dev: dir.path().to_path_buf(), ..KvmProbe::new(dir.path()) };
        match probe_kvm(&opts).await {
            Kvm::Unusable { reason } => assert!(reason.contains("cannot be opened read-write"), "{reason}"),
            other => panic!("expected unusable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_qemu_is_unusable_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = opts_with_fake_dev(dir.path(), dir.path().join("no-such-qemu"), Duration::from_secs(3));
        match probe_kvm(&opts).await {
            Kvm::Unusable { reason } => assert!(reason.starts_with("cannot start"), "{reason}"),
            other => panic!("expected unusable, got {other:?}"),
        }
        // The image was removed.
        assert_eq!(std::fs::read_dir(&opts.work_dir).expect("work dir").count(), 0);
    }

    #[tokio::test]
    async fn qemu_failing_gives_its_last_stderr_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qemu = fake_qemu(
            dir.path(),
            "qemu-fails",
            "echo 'qemu-system-x86_64: warming up' >&2\n\
             echo 'qemu-system-x86_64: -accel kvm: Could not access KVM kernel module: Permission denied' >&2\n\
             echo >&2\nexit 1",
        );
        let opts = opts_with_fake_dev(dir.path(), qemu, Duration::from_secs(30));
        match boots_retrying(&opts, "kvm").await {
            Err(ProbeError::Exited { last_line, status, .. }) => {
                assert_eq!(
                    last_line,
                    "qemu-system-x86_64: -accel kvm: Could not access KVM kernel module: Permission denied"
                );
                assert!(status.contains('1'), "{status}");
            }
            other => panic!("expected an early exit, got {other:?}"),
        }
        // Nothing left behind in the work dir.
        assert_eq!(std::fs::read_dir(&opts.work_dir).expect("work dir").count(), 0);
    }

    #[tokio::test]
    async fn a_silent_guest_hits_the_deadline_and_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let qemu = fake_qemu(dir.path(), "qemu-hangs", &format!("echo $$ > '{}'\nexec sleep 600", pid_file.display()));
        let opts = opts_with_fake_dev(dir.path(), qemu, Duration::from_millis(1500));
        let started = Instant::now();
        match boots_retrying(&opts, "kvm").await {
            Err(ProbeError::Deadline { printed: 0, accel, .. }) => assert_eq!(accel, "kvm"),
            other => panic!("expected the deadline, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the deadline was not kept");
        // The process was killed and reaped: its pid is gone.
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid = pid.trim();
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "qemu stand-in {pid} still exists");
        }
    }

    #[tokio::test]
    async fn the_marker_means_usable_and_the_guest_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let qemu = fake_qemu(
            dir.path(),
            "qemu-prints",
            &format!("echo $$ > '{}'\nprintf 'SeaBIOS\\r\\nPLINTH-KVM-OK\\r\\n'\nexec sleep 600", pid_file.display()),
        );
        let opts = opts_with_fake_dev(dir.path(), qemu, Duration::from_secs(30));
        let elapsed = boots_retrying(&opts, "kvm").await.expect("marker seen");
        assert!(elapsed < Duration::from_secs(30));
        let pid = std::fs::read_to_string(&pid_file).expect("pid written before the marker");
        let pid = pid.trim();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "qemu stand-in {pid} still exists");
        assert_eq!(probe_kvm(&opts).await, Kvm::Usable);
    }

    /// `probe_kvm`, retried while the fake QEMU is "text file busy" (see `boots_retrying`).
    async fn kvm_retrying(opts: &KvmProbe) -> Kvm {
        for _ in 0..20 {
            match probe_kvm(opts).await {
                Kvm::Unusable { reason } if reason.contains("Text file busy") => continue,
                other => return other,
            }
        }
        probe_kvm(opts).await
    }

    /// A stand-in QEMU that prints the marker after `kvm_delay` under KVM and at once under
    /// TCG (the delay stands for a slow nested KVM, it synchronises nothing).
    fn qemu_slow_under_kvm(dir: &Path, kvm_delay: &str, tcg_delay: &str) -> PathBuf {
        fake_qemu(
            dir,
            "qemu-slow",
            &format!(
                "case \" $* \" in *\" kvm \"*) sleep {kvm_delay} ;; *) sleep {tcg_delay} ;; esac\n\
                 printf 'PLINTH-KVM-OK\\r\\n'\nexec sleep 600"
            ),
        )
    }

    #[tokio::test]
    async fn a_kvm_guest_much_slower_than_under_tcg_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qemu = qemu_slow_under_kvm(dir.path(), "1.5", "0");
        let opts = opts_with_fake_dev(dir.path(), qemu, Duration::from_secs(30));
        match kvm_retrying(&opts).await {
            Kvm::Unusable { reason } => {
                assert!(reason.starts_with("a probe guest under KVM took 1."), "{reason}");
                assert!(reason.contains("as long as under TCG"), "{reason}");
            }
            other => panic!("expected unusable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_guest_slow_under_both_accelerators_is_usable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let qemu = qemu_slow_under_kvm(dir.path(), "1.2", "1.2");
        let opts = opts_with_fake_dev(dir.path(), qemu, Duration::from_secs(30));
        assert_eq!(kvm_retrying(&opts).await, Kvm::Usable);
    }

    fn qemu_on_path() -> bool {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("qemu-system-x86_64").is_file()))
    }

    /// The probe guest itself is right: under TCG (no KVM needed) it prints the marker.
    #[tokio::test]
    async fn probe_guest_boots_under_tcg() {
        if !qemu_on_path() {
            eprintln!("SKIPPED: qemu-system-x86_64 is not on PATH");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // A generous deadline: the test machine may be busy; TCG takes ~0.1 s when idle.
        let opts = KvmProbe { deadline: Duration::from_secs(60), ..KvmProbe::new(dir.path()) };
        let elapsed = probe_boots(&opts, "tcg").await.expect("the probe guest prints its marker under TCG");
        eprintln!("probe guest under TCG printed {MARKER} after {elapsed:?}");
    }

    /// Whatever this machine's KVM is, the probe's answer is consistent with it.
    #[tokio::test]
    async fn probe_reports_this_machines_kvm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = KvmProbe::new(dir.path());
        let started = Instant::now();
        let kvm = probe_kvm(&opts).await;
        let took = started.elapsed();
        eprintln!("KVM probe on this machine: {kvm:?} (took {took:?})");
        if !Path::new("/dev/kvm").exists() {
            assert_eq!(kvm, Kvm::Absent);
        } else {
            match &kvm {
                Kvm::Usable => {}
                Kvm::Unusable { reason } => assert!(!reason.trim().is_empty()),
                Kvm::Absent => panic!("/dev/kvm exists but the probe says absent"),
            }
        }
        // The deadline bounds the probe (plus a TCG comparison and QEMU's kills).
        assert!(took < 2 * opts.deadline + Duration::from_secs(10), "the probe took {took:?}");

        // With a generous deadline a slow KVM is judged against TCG instead; print it too.
        let patient = KvmProbe { deadline: Duration::from_secs(15), ..opts.clone() };
        let started = Instant::now();
        let kvm = probe_kvm(&patient).await;
        eprintln!("KVM probe with a 15 s deadline: {kvm:?} (took {:?})", started.elapsed());
        if Path::new("/dev/kvm").exists() {
            assert_ne!(kvm, Kvm::Absent);
        }
    }
}
