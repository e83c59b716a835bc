//! Helpers shared by the tests that drive the real `plinth` binary: child processes that
//! die with the test, waiting on a condition with a deadline, and running the CLI against
//! a profile.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_plinth");

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// SIGKILL now, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A console's whole lines: the last one counts only once its newline has arrived (a
/// console is shipped as it is written, so a line may be read half written).
pub fn whole_lines(console: &str) -> std::str::Lines<'_> {
    console[..console.rfind('\n').map_or(0, |i| i + 1)].lines()
}

/// Polls `f` until it gives a value, or panics after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, deadline, f, String::new)
}

/// [`wait_for`], whose panic adds what `explain` says then (the state that was not reached).
pub fn wait_for_or<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Option<T>,
    explain: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() >= deadline {
            panic!("timed out waiting for {what}{}", explain());
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Polls the future `f` makes until it gives a value (every 100 ms), or panics after
/// `deadline`.
pub async fn until<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the CLI with the profile (its saved token), or as `token` when given.
pub fn cli(profile: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.env("PLINTH_CONFIG", profile).env_remove("PLINTH_SERVER").env_remove("PLINTH_TOKEN");
    if let Some(t) = token {
        c.env("PLINTH_TOKEN", t);
    }
    c.args(args).output().expect("run plinth")
}

/// Runs the CLI with `-o json`; it must succeed.
pub fn ok(profile: &Path, token: Option<&str>, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = cli(profile, token, &all);
    assert!(out.status.success(), "plinth {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Starts `plinth ARGS` in the background with the profile, its stdout in `log` and its
/// stderr beside it (`.err`).
pub fn spawn(args: &[&str], profile: &Path, log: PathBuf, env: &[(&str, &str)]) -> Proc {
    let mut c = Command::new(BIN);
    c.args(args).env("PLINTH_CONFIG", profile).stdout(Stdio::from(std::fs::File::create(&log).unwrap()));
    c.stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()));
    for (k, v) in env {
        c.env(k, v);
    }
    Proc(c.spawn().expect("spawn plinth"))
}

/// `plinth up --no-demo` in `d` (profile `d/profile.toml`) with server settings `env`, and
/// a `plinth agent --runtime sim` of `hosts` simulated hosts enrolled through the profile.
/// Returns (up, agent, profile).
pub fn up_with_sim_fleet(d: &Path, env: &[(&str, &str)], hosts: u32) -> (Proc, Proc, PathBuf) {
    let profile = d.join("profile.toml");
    let data = d.join("data");
    let up = spawn(
        &["up", "--no-demo", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &profile,
        d.join("up.log"),
        env,
    );
    wait_for("plinth up", Duration::from_secs(60), || {
        std::fs::read_to_string(d.join("up.log")).unwrap_or_default().contains("Plinth is up at").then_some(())
    });
    let state = d.join("agent");
    let n = hosts.to_string();
    let fleet = spawn(
        &[
            "agent",
            "--runtime",
            "sim",
            "--sim-hosts",
            &n,
            "--sim-delay-ms",
            "20",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &profile,
        d.join("agent.log"),
        &[],
    );
    (up, fleet, profile)
}
pub mod netlab;

/// Removes, when dropped, the tenant-network state of every agent whose data directory is
/// under `dir`: the VPC namespaces their network backend made (its owner file names the
/// agent's data directory) and their DHCP servers. Agents killed by a test cannot clean up
/// after themselves, and their namespaces would outlive the test.
pub struct NetReaper(pub PathBuf);

impl Drop for NetReaper {
    fn drop(&mut self) {
        let root = Path::new("/run/plinth/network");
        let needle = self.0.to_string_lossy().to_string();
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let owner = std::fs::read_to_string(e.path().join("owner")).unwrap_or_default();
            if owner.is_empty() || !owner.starts_with(&needle) {
                continue;
            }
            for f in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|x| x == "pid")
                    && let Ok(pid) = std::fs::read_to_string(f.path())
                {
                    let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del"]).arg(e.file_name()).status();
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
pub mod labapi;

/// Kills (SIGKILL) every qemu whose command line names `dir`, when dropped: guests are
/// detached from their agent on purpose, so a failing test must not leave them running.
pub struct QemuReaper(pub PathBuf);

impl Drop for QemuReaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.starts_with("qemu-system") && cmd.contains(&needle) {
                let _ = Command::new("kill").arg("-9").arg(e.file_name()).status();
            }
        }
    }
}
