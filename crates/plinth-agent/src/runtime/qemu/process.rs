//! QEMU processes: starting one detached, finding it again, telling whether it lives,
//! ending it, and pinning its vCPU threads.
//!
//! QEMU is started with `-daemonize`: the process we spawn forks the real QEMU into its
//! own session and exits once the guest is set up (sockets bound, pidfile written), so
//! the agent is never QEMU's parent and an agent restart does not touch the guest. A pid
//! alone is not trusted (pids are reused): a process is ours only when its
//! `/proc/<pid>/cmdline` names this guest's pidfile and its start time is the one we
//! recorded. A zombie or a process that is not ours counts as gone.
//!
//! File descriptors QEMU must inherit (the NICs' taps) are moved to fixed numbers in the
//! child just before `exec` (`dup2` clears close-on-exec on the copy only); every other
//! fd of the agent stays close-on-exec, and the agent's own copies are closed once the
//! launcher is spawned. QEMU's daemonizing fork keeps them.
//!
//! Owns processes and signals only; what a guest should be is decided elsewhere.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts `argv` (which must hold `-daemonize`) in `cwd`, its stderr to `stderr_log`,
/// and waits (up to `timeout`) for the launcher to exit, i.e. for the daemonized QEMU to
/// be set up. `inherit[i]` becomes fd `first_fd + i` in QEMU (and only those are
/// inherited); they are closed here once the launcher runs. Answers why it failed: the
/// launcher's exit and the tail of its stderr.
pub async fn start_daemonized(
    argv: &[String],
    cwd: &Path,
    stderr_log: &Path,
    timeout: Duration,
    inherit: Vec<OwnedFd>,
    first_fd: RawFd,
) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else { return Err("empty QEMU command line".into()) };
    let err = std::fs::File::create(stderr_log).map_err(|e| format!("{}: {e}", stderr_log.display()))?;
    // Above every target number first, so no dup2 in the child overwrites a source not
    // yet moved (a source could otherwise sit on another slot's target number).
    let above = first_fd + inherit.len() as RawFd + 16;
    let sources: Vec<OwnedFd> = inherit
        .iter()
        .map(|fd| crate::fdpass::dup_above(fd, above))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("passing the NICs' taps to qemu: {e}"))?;
    drop(inherit);
    let moves: Vec<(RawFd, RawFd)> =
        sources.iter().enumerate().map(|(i, fd)| (fd.as_raw_fd(), first_fd + i as RawFd)).collect();
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .kill_on_drop(false);
    if !moves.is_empty() {
        // SAFETY: runs in the forked child before exec; it calls only dup2, which is
        // async-signal-safe, and touches no memory but the `moves` copy it owns.
        unsafe {
            cmd.pre_exec(move || crate::fdpass::move_into_place(&moves));
        }
    }
    let spawned = cmd.spawn();
    // The agent's copies: QEMU has its own now (or never will).
    drop(sources);
    let mut child = spawned.map_err(|e| format!("cannot start {program}: {e}"))?;
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("{program}: {e}")),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(format!("{program} did not finish starting in {}s", timeout.as_secs()));
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(stderr_log).unwrap_or_default();
    let tail: String =
        text.trim().lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("; ");
    Err(format!("qemu failed to start ({status}): {}", if tail.is_empty() { "no error output" } else { &tail }))
}

/// The pid in a pidfile, if it holds one.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok().filter(|p| *p > 0)
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is a live QEMU of the guest whose pidfile is `pidfile` (and, when
/// given, started at `started`). Zombies and other processes count as not ours.
pub fn is_ours(pid: u32, pidfile: &Path, started: Option<u64>) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let want = pidfile.as_os_str().as_encoded_bytes();
    let names_it = args.windows(2).any(|w| w[0] == b"-pidfile" && w[1] == want);
    if !names_it {
        return false;
    }
    match started {
        Some(t) => start_time(pid) == Some(t),
        None => true,
    }
}

/// Sends `signal` to `pid`; answers whether it was delivered.
pub fn signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: kill(2) has no memory effects; a wrong pid only fails with ESRCH/EPERM.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Waits up to `timeout` for the guest's process to be gone; answers whether it is.
pub async fn wait_gone(pid: u32, pidfile: &Path, started: Option<u64>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_ours(pid, pidfile, started) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILLs the guest's process if it is still ours and waits for it to be gone.
pub async fn kill(pid: u32, pidfile: &Path, started: Option<u64>) -> Result<(), String> {
    if !is_ours(pid, pidfile, started) {
        return Ok(());
    }
    signal(pid, libc::SIGKILL);
    if wait_gone(pid, pidfile, started, Duration::from_secs(10)).await {
        Ok(())
    } else {
        Err(format!("qemu (pid {pid}) is still there 10s after SIGKILL"))
    }
}

/// Pins thread `tid` to host CPU `cpu`.
pub fn pin_thread(tid: i32, cpu: u32) -> Result<(), String> {
    let Ok(cpu_index) = usize::try_from(cpu) else { return Err(format!("CPU {cpu} out of range")) };
    if cpu_index >= libc::CPU_SETSIZE as usize {
        return Err(format!("CPU {cpu} out of range"));
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it (index checked
    // above), and sched_setaffinity reads `size_of` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu_index, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("sched_setaffinity(thread {tid}, CPU {cpu}): {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_not_a_qemu_and_start_times_parse() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert!(!is_ours(me, Path::new("/nonexistent/qemu.pid"), None));
        assert!(!is_ours(u32::MAX - 1, Path::new("/x"), None));
        assert_eq!(read_pidfile(Path::new("/nonexistent")), None);
    }
}
