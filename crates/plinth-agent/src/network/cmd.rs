//! Running the kernel's own tools (`ip`, `bridge`, `nft`, `conntrack`, `dnsmasq`) in the
//! agent's namespace or in a VPC namespace, with their JSON output parsed.
//!
//! Commands run synchronously: the backend runs on a blocking thread of its own. A
//! command for a VPC namespace uses `ip -n`/`bridge -n`, or enters the namespace in the
//! child for the tools without a namespace flag; nothing here ever calls `setns` on the
//! calling thread.

use serde_json::Value;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Runs `prog args…` (feeding `stdin` when given) and answers its stdout, or a one-line
/// error naming the command and its stderr.
pub fn run(prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    output(cmd, prog, args, stdin)
}

fn output(mut cmd: Command, prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes()).map_err(|e| format!("{prog}: writing stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        let shown: Vec<&str> = args.iter().copied().take(8).collect();
        Err(format!("{prog} {}: {}", shown.join(" "), if err.is_empty() { "failed" } else { err }))
    }
}

/// `ip [-n ns] args…`.
pub fn ip(ns: Option<&str>, args: &[&str]) -> Result<String, String> {
    run("ip", &with_ns(ns, args), None)
}

/// `bridge [-n ns] args…`.
pub fn bridge(ns: Option<&str>, args: &[&str]) -> Result<String, String> {
    run("bridge", &with_ns(ns, args), None)
}

/// `prog args…` run in the named namespace (stdin fed when given): the child joins the
/// namespace with `setns(2)` before it executes `prog` (what `ip netns exec` does, without
/// its extra process and mount-namespace work, about 5 ms a call; these tools need only
/// the network namespace, and `/proc/sys/net` follows it).
pub fn in_ns(ns: &str, prog: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let (mut cmd, netns) = command_in_ns(ns, prog)?;
    cmd.args(args);
    let r = output(cmd, prog, args, stdin);
    drop(netns);
    r
}

/// `prog` to be run in the named namespace (its child joins it with `setns(2)`), and the
/// namespace's file, which must stay open until the command is spawned.
pub fn command_in_ns(ns: &str, prog: &str) -> Result<(Command, std::fs::File), String> {
    let path = super::links::ns_path(ns);
    let netns = std::fs::File::open(&path).map_err(|e| format!("namespace {ns}: {e}"))?;
    let fd = netns.as_raw_fd();
    let mut cmd = Command::new(prog);
    // SAFETY: the closure runs in the forked child before exec and makes one
    // async-signal-safe system call; `netns` (whose descriptor it names) is returned to
    // the caller, who keeps it until the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    Ok((cmd, netns))
}

/// Parses a tool's JSON output (empty output is an empty array).
pub fn json(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(text).map_err(|e| format!("unreadable JSON from a tool: {e}"))
}

fn with_ns<'a>(ns: Option<&'a str>, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = Vec::with_capacity(args.len() + 2);
    if let Some(ns) = ns {
        all.push("-n");
        all.push(ns);
    }
    all.extend_from_slice(args);
    all
}
