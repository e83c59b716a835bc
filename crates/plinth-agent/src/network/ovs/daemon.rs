//! The agent's own Open vSwitch: an `ovsdb-server` and an `ovs-vswitchd` started in the
//! agent's network namespace with their database, sockets, pid files and logs under one
//! directory (several agents may share a machine, each with its own), and the three tools
//! that talk to them (`ovs-vsctl`, `ovs-ofctl`, `ovs-appctl`).
//!
//! The daemons detach: they outlive an agent restart, so the data path keeps forwarding
//! while the agent is away; a new agent finds them by their control sockets and starts
//! only what does not answer.

use crate::network::cmd;
use std::path::{Path, PathBuf};

/// The schema Debian's `openvswitch-common` installs.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// One Open vSwitch instance of the agent.
#[derive(Clone, Debug)]
pub struct Ovs {
    dir: PathBuf,
    /// The bridge holding every port.
    pub bridge: String,
}

impl Ovs {
    /// The instance whose files live in `dir`, with bridge `bridge` (nothing started).
    pub fn new(dir: &Path, bridge: &str) -> Ovs {
        Ovs { dir: dir.to_owned(), bridge: bridge.to_owned() }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn db(&self) -> String {
        format!("--db=unix:{}", self.path("db.sock"))
    }

    /// `ovs-vsctl args…` against this instance's database (waits for ovs-vswitchd to apply).
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = self.db();
        let mut all = vec![db.as_str(), "--timeout=10"];
        all.extend_from_slice(args);
        cmd::run("ovs-vsctl", &all, None)
    }

    /// `ovs-ofctl -O OpenFlow15 args…`; `{bridge}` in `args` is this bridge's management socket.
    pub fn ofctl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mgmt = format!("unix:{}", self.path(&format!("{}.mgmt", self.bridge)));
        let mut all = vec!["-O", "OpenFlow15"];
        all.extend(args.iter().map(|a| if *a == "{bridge}" { mgmt.as_str() } else { a }));
        cmd::run("ovs-ofctl", &all, stdin)
    }

    /// `ovs-appctl -t <ovs-vswitchd> args…`.
    pub fn appctl(&self, args: &[&str]) -> Result<String, String> {
        let target = self.path("ovs-vswitchd.ctl");
        let mut all = vec!["-t", target.as_str()];
        all.extend_from_slice(args);
        cmd::run("ovs-appctl", &all, None)
    }

    /// Runs several ovs-vswitchd control commands over one connection to its control
    /// socket (the JSON-RPC `ovs-appctl` speaks, without a process per command); answers
    /// each command's result text, stopping at the first error.
    pub fn control(&self, commands: &[Vec<String>]) -> Result<Vec<String>, String> {
        use std::io::Write;
        let path = self.path("ovs-vswitchd.ctl");
        let sock = std::os::unix::net::UnixStream::connect(&path).map_err(|e| format!("{path}: {e}"))?;
        sock.set_read_timeout(Some(std::time::Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let mut writer = &sock;
        let mut replies = serde_json::Deserializer::from_reader(&sock).into_iter::<serde_json::Value>();
        let mut out = Vec::with_capacity(commands.len());
        for (id, c) in commands.iter().enumerate() {
            let (method, params) = c.split_first().ok_or("an empty control command")?;
            let req = serde_json::json!({ "id": id, "method": method, "params": params });
            writer.write_all(req.to_string().as_bytes()).map_err(|e| format!("{path}: {e}"))?;
            let reply = replies.next().ok_or_else(|| format!("{path}: closed"))?.map_err(|e| format!("{path}: {e}"))?;
            if !reply["error"].is_null() {
                return Err(format!("{method}: {}", reply["error"].as_str().unwrap_or("failed").trim()));
            }
            out.push(reply["result"].as_str().unwrap_or_default().to_owned());
        }
        Ok(out)
    }

    fn answers(&self, ctl: &str) -> bool {
        cmd::run("ovs-appctl", &["--timeout=2", "-t", &self.path(ctl), "version"], None).is_ok()
    }

    /// Starts whichever daemon does not answer, and makes the bridge (netdev datapath,
    /// secure fail mode: no flows, no forwarding).
    pub fn ensure(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let conf = self.path("conf.db");
        if !Path::new(&conf).exists() {
            cmd::run("ovsdb-tool", &["create", &conf, SCHEMA], None)?;
        }
        let log = |name: &str| format!("--log-file={}", self.path(name));
        if !self.answers("ovsdb-server.ctl") {
            cmd::run(
                "ovsdb-server",
                &[
                    &conf,
                    &format!("--remote=punix:{}", self.path("db.sock")),
                    &format!("--unixctl={}", self.path("ovsdb-server.ctl")),
                    &format!("--pidfile={}", self.path("ovsdb-server.pid")),
                    &log("ovsdb-server.log"),
                    "-vconsole:off",
                    "--detach",
                    "--no-chdir",
                ],
                None,
            )?;
            let db = self.db();
            cmd::run("ovs-vsctl", &[&db, "--no-wait", "init"], None)?;
        }
        if !self.answers("ovs-vswitchd.ctl") {
            let db = format!("unix:{}", self.path("db.sock"));
            let mut c = std::process::Command::new("ovs-vswitchd");
            // The bridge's management socket goes to OVS_RUNDIR.
            c.env("OVS_RUNDIR", &self.dir).args([
                db.as_str(),
                &format!("--unixctl={}", self.path("ovs-vswitchd.ctl")),
                &format!("--pidfile={}", self.path("ovs-vswitchd.pid")),
                &log("ovs-vswitchd.log"),
                "-vconsole:off",
                "--detach",
                "--no-chdir",
            ]);
            let out = c.output().map_err(|e| format!("ovs-vswitchd: {e}"))?;
            if !out.status.success() {
                return Err(format!("ovs-vswitchd: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        self.vsctl(&[
            "--may-exist",
            "add-br",
            &self.bridge,
            "--",
            "set",
            "bridge",
            &self.bridge,
            "datapath_type=netdev",
            "fail-mode=secure",
            "other-config:disable-in-band=true",
            "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
        ])?;
        Ok(())
    }

    /// Stops both daemons (the bridge and its ports stay in the database).
    pub fn stop(&self) {
        for ctl in ["ovs-vswitchd.ctl", "ovsdb-server.ctl"] {
            let _ = cmd::run("ovs-appctl", &["--timeout=5", "-t", &self.path(ctl), "exit"], None);
        }
    }
}
