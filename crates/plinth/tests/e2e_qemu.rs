//! End to end with real QEMU (TCG where KVM is unusable): `plinth server` and
//! `plinth agent` as real processes, the test guest registered as an image, one instance
//! driven through its whole life — boot, graceful stop, start, reboot, an agent killed
//! with SIGKILL and restarted (the guest keeps running, same qemu pid), qemu killed with
//! SIGKILL (crashed, then restarted by its on-failure policy), delete (nothing left on the
//! host).

mod common;

use common::labapi::Api;
use common::{BIN, Proc, QemuReaper, until, whole_lines};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The test guest (built by scripts/test-guest when missing).
fn test_guest() -> PathBuf {
    let dir = std::env::var_os("PLINTH_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache/plinth/test-guest")
    });
    if !dir.join("manifest.json").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-guest");
        let st = Command::new(script).status().expect("run scripts/test-guest");
        assert!(st.success(), "scripts/test-guest failed");
    }
    dir
}

/// What the lifecycle test asks of the API beyond the lab client's calls.
impl Api {
    async fn instance(&self, id: &str) -> Value {
        self.get(&format!("/v1/instances/{id}")).await
    }

    /// The whole console log the server holds.
    async fn console(&self, id: &str) -> String {
        self.get(&format!("/v1/instances/{id}/console?limit=1048576")).await["data"].as_str().unwrap_or("").to_string()
    }

    async fn wait_state(&self, id: &str, state: &str, deadline: Duration) -> Value {
        until(&format!("instance {id} to be {state}"), deadline, || async {
            let v = self.instance(id).await;
            (v["state"] == state).then_some(v)
        })
        .await
    }

    /// Waits until the console holds `n` READY markers of this instance.
    async fn wait_marker(&self, id: &str, n: usize) {
        let marker = format!("PLINTH-GUEST-READY {id}");
        until(&format!("{n} × {marker} on the console"), Duration::from_secs(120), || async {
            (self.console(id).await.matches(&marker).count() >= n).then_some(())
        })
        .await;
    }

    async fn upload(&self, image: &str, role: &str, path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        let r = self
            .http
            .put(format!("{}/v1/images/{image}/files/{role}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        assert!((200..300).contains(&s), "upload {role}: {s} {}", r.text().await.unwrap_or_default());
    }
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn qemu_pid(inst: &Value) -> u64 {
    inst["runtime"]["pid"].as_u64().unwrap_or_else(|| panic!("no qemu pid in the runtime evidence: {inst}"))
}

fn start_agent(dir: &Path, url: &str, join_token: &str) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).unwrap();
    Proc(
        Command::new(BIN)
            .args(["agent", "--server", url, "--join-token", join_token, "--hostname", "e2e-host"])
            .arg("--data-dir")
            .arg(dir.join("agent"))
            .args(["--graceful-timeout", "30", "--poll-wait", "5"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn plinth agent"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_vm_lives_through_its_whole_life() {
    let guest = test_guest();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = QemuReaper(d.to_path_buf());
    let _net = common::NetReaper(d.to_path_buf());

    // The server, on embedded SQLite, as a real process.
    let log = d.join("server.log");
    let _server = Proc(
        Command::new(BIN)
            .args(["server", "--listen", "127.0.0.1:0", "--operator-token-file"])
            .arg(d.join("operator-token"))
            .arg("--database-url")
            .arg(format!("sqlite://{}", d.join("plinth.db").display()))
            .env("PLINTH_BLOB_DIR", d.join("blobs"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn plinth server"),
    );
    let url = until("the server to listen", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.split_whitespace().find(|w| w.starts_with("https://127.0.0.1:")).map(str::to_string)
    })
    .await;
    let token = until("the operator token", Duration::from_secs(30), || async {
        std::fs::read_to_string(d.join("operator-token")).ok().map(|s| s.trim().to_string())
    })
    .await;
    // The server's own CA, made beside the SQLite file.
    let ca = plinth_client::connect::Ca::from_file(&d.join("tls/ca.pem")).expect("the server's CA");
    let api = Api { http: plinth_client::connect::trusting(&ca).build().unwrap(), url: url.clone(), token };
    use reqwest::Method as M;

    // Join token → the agent enrols → the host is available with this machine's inventory.
    let jt = api.ok(M::POST, "/v1/host-join-tokens", Some(json!({}))).await;
    let mut agent = start_agent(d, &url, jt["agent_join_token"].as_str().unwrap());
    let host = until("the host to be available", Duration::from_secs(60), || async {
        let hosts = api.get("/v1/hosts?limit=10").await;
        hosts["items"]
            .as_array()
            .and_then(|h| h.iter().find(|h| h["name"] == "e2e-host" && h["state"] == "available").cloned())
    })
    .await;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap().trim();
    assert_eq!(host["inventory"]["cpu"]["model"], model, "the host reports this machine's CPU");
    assert_eq!(host["inventory"]["runtime"], "qemu");
    let kvm = host["inventory"]["virtualization"]["kvm"]["status"].as_str().unwrap().to_string();
    if Path::new("/dev/kvm").exists() {
        assert!(kvm == "usable" || kvm == "unusable", "kvm: {kvm}");
    } else {
        assert_eq!(kvm, "absent");
    }
    let host_id = host["id"].as_str().unwrap().to_string();
    // Persisted 0600 in the data dir.
    let cred = d.join("agent/hosts/e2e-host/credential.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cred).unwrap().permissions().mode() & 0o777, 0o600);

    // The test guest as a public direct-boot image.
    let kernel = guest.join("vmlinux");
    let initrd = guest.join("initramfs.cpio.gz");
    let cmdline = std::fs::read_to_string(guest.join("cmdline")).unwrap().trim().to_string();
    let img = api
        .ok(
            M::POST,
            "/v1/images",
            Some(json!({ "name": "test-guest", "boot": "direct", "cmdline": cmdline,
                "files": { "kernel": { "sha256": sha256_of(&kernel) }, "initrd": { "sha256": sha256_of(&initrd) } } })),
        )
        .await;
    let img_id = img["id"].as_str().unwrap().to_string();
    api.upload(&img_id, "kernel", &kernel).await;
    api.upload(&img_id, "initrd", &initrd).await;
    until("the image to be available", Duration::from_secs(60), || async {
        let v = api.get(&format!("/v1/images/{img_id}")).await;
        assert_ne!(v["status"], "failed", "{v}");
        (v["status"] == "available").then_some(())
    })
    .await;

    let tenant = api.ok(M::POST, "/v1/tenants", Some(json!({ "name": "acme" }))).await;
    let project = api.ok(M::POST, "/v1/projects", Some(json!({ "name": "web", "tenant_id": tenant["id"] }))).await;
    api.ok(M::POST, "/v1/shapes", Some(json!({ "name": "tiny", "vcpus": 1, "memory_mib": 256, "disk_gib": 1 }))).await;

    // Create → the serial log shows the marker.
    let created = api
        .ok(
            M::POST,
            "/v1/instances",
            Some(json!({ "project_id": project["id"], "name": "vm-1", "shape": "tiny", "image": "test-guest",
                "restart_policy": "on-failure" })),
        )
        .await;
    let id = created["instance"]["id"].as_str().or(created["id"].as_str()).unwrap().to_string();
    api.wait_marker(&id, 1).await;
    let inst = api.wait_state(&id, "running", Duration::from_secs(60)).await;
    // The guest wrote a file to its disk and read it back (printed after READY).
    until("PLINTH-DISK-OK", Duration::from_secs(60), || async {
        let log = api.console(&id).await;
        assert!(!log.contains("PLINTH-DISK-FAIL"), "disk check failed: {log}");
        log.contains("PLINTH-DISK-OK").then_some(())
    })
    .await;
    let ev = &inst["runtime"];
    assert_eq!(ev["runtime"], "qemu");
    assert_eq!(ev["accelerator"], if kvm == "usable" { "kvm" } else { "tcg" });
    assert_eq!(ev["machine"], "q35");
    assert!(ev["command_line"].as_array().unwrap().iter().any(|a| a.as_str().is_some_and(|a| a.contains("qmp"))));
    let pid = qemu_pid(&inst);
    assert!(pid_alive(pid));
    let guest_dir = d.join("agent/hosts/e2e-host/qemu").join(&id);
    assert!(guest_dir.exists(), "{} exists", guest_dir.display());

    // Graceful stop: the guest sees the power button; no qemu process is left.
    api.ok(M::POST, &format!("/v1/instances/{id}/stop"), Some(json!({}))).await;
    api.wait_state(&id, "stopped", Duration::from_secs(90)).await;
    assert!(!pid_alive(pid), "qemu {pid} is gone after stop");
    until("the guest to power off gracefully (PLINTH-GUEST-POWEROFF)", Duration::from_secs(30), || async {
        api.console(&id).await.contains("PLINTH-GUEST-POWEROFF").then_some(())
    })
    .await;

    // Start → marker again (the disk kept its data: boot=2).
    api.ok(M::POST, &format!("/v1/instances/{id}/start"), Some(json!({}))).await;
    api.wait_marker(&id, 2).await;
    let inst = api.wait_state(&id, "running", Duration::from_secs(60)).await;
    until("boot=2 on the console", Duration::from_secs(60), || async {
        api.console(&id).await.contains("boot=2").then_some(())
    })
    .await;
    let pid = qemu_pid(&inst);

    // Reboot → marker again, same qemu process.
    api.ok(M::POST, &format!("/v1/instances/{id}/reboot"), Some(json!({}))).await;
    api.wait_marker(&id, 3).await;
    let inst = api.wait_state(&id, "running", Duration::from_secs(60)).await;
    assert_eq!(qemu_pid(&inst), pid, "a reboot resets the guest in place");

    // SIGKILL the agent, start it again: the guest was never touched.
    agent.kill9();
    assert!(pid_alive(pid), "the guest outlives its agent");
    let mut agent = start_agent(d, &url, "unused-once-enrolled");
    until("the restarted agent to reconnect", Duration::from_secs(60), || async {
        let log = std::fs::read_to_string(d.join("agent.log")).unwrap_or_default();
        (log.matches("plinth agent").count() >= 2).then_some(())
    })
    .await;
    // Control is back: a reboot through the restarted agent works, in the same process.
    api.ok(M::POST, &format!("/v1/instances/{id}/reboot"), Some(json!({}))).await;
    api.wait_marker(&id, 4).await;
    let inst = api.wait_state(&id, "running", Duration::from_secs(60)).await;
    assert_eq!(qemu_pid(&inst), pid, "still the same qemu process after the agent restart");

    // SIGKILL qemu: crashed, then restarted by the on-failure policy.
    let st = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(st.success());
    until("a guest_crashed event", Duration::from_secs(60), || async {
        let evs = api.get(&format!("/v1/instances/{id}/events?limit=200")).await;
        evs["items"].as_array().unwrap().iter().any(|e| e["kind"] == "guest_crashed").then_some(())
    })
    .await;
    api.wait_marker(&id, 5).await;
    let inst = api.wait_state(&id, "running", Duration::from_secs(60)).await;
    let new_pid = qemu_pid(&inst);
    assert_ne!(new_pid, pid, "restarted in a new qemu process");
    let evs = api.get(&format!("/v1/instances/{id}/events?limit=200")).await;
    assert!(evs["items"].as_array().unwrap().iter().any(|e| e["kind"] == "restarted"), "{evs}");

    // Delete → nothing is left on the host.
    api.ok(M::DELETE, &format!("/v1/instances/{id}"), None).await;
    api.wait_state(&id, "deleted", Duration::from_secs(90)).await;
    until("qemu to be gone", Duration::from_secs(30), || async { (!pid_alive(new_pid)).then_some(()) }).await;
    assert!(!guest_dir.exists(), "{} (overlay, QMP socket, pidfile) is removed", guest_dir.display());
    let leftovers: Vec<_> = walk(&d.join("agent/hosts/e2e-host"))
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            s.contains(&id) || s.ends_with(".sock") || s.ends_with(".pid") || s.ends_with(".qcow2")
        })
        .collect();
    assert!(leftovers.is_empty(), "left on the host: {leftovers:?}");
    let _ = host_id;
    agent.kill9();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

/// The newcomer's path: `plinth up` prints three CLI lines; run as printed, they boot a real
/// VM, show its console and type a command into it. Ctrl-C stops Plinth and leaves the VM
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plinth_up_prints_the_lines_that_boot_a_vm_read_its_console_and_type_into_it() {
    let guest = test_guest();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = QemuReaper(d.to_path_buf());
    let _net = common::NetReaper(d.to_path_buf());
    let profile = d.join("profile.toml");
    let log = d.join("up.log");
    let mut up = Proc(
        Command::new(BIN)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(d.join("data"))
            .env("PLINTH_CONFIG", &profile)
            .env("PLINTH_GUEST_DIR", &guest)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn plinth up"),
    );
    let lines: Vec<String> = until("plinth up to print the three lines", Duration::from_secs(120), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> =
            text.lines().map(str::trim).filter(|l| l.starts_with("plinth instance ")).map(str::to_string).collect();
        (lines.len() == 3).then_some(lines)
    })
    .await;
    let run = |line: &str, timeout: Option<Duration>| {
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let mut c = Command::new(BIN);
        c.args(&args).env("PLINTH_CONFIG", &profile).env_remove("PLINTH_SERVER").env_remove("PLINTH_TOKEN");
        match timeout {
            None => c.output().expect("run the CLI"),
            Some(t) => {
                // `console-log --follow` runs until interrupted: read what it printed.
                let out = d.join("follow.out");
                let mut child = c.stdout(Stdio::from(std::fs::File::create(&out).unwrap())).spawn().unwrap();
                let start = Instant::now();
                // Until the marker's whole line is there (output arrives in pieces, a line
                // can be cut anywhere).
                let marked = |t: &str| t.find("PLINTH-GUEST-READY").is_some_and(|i| t[i..].contains('\n'));
                while start.elapsed() < t && !marked(&std::fs::read_to_string(&out).unwrap_or_default()) {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
                std::process::Output {
                    status: std::process::ExitStatus::default(),
                    stdout: std::fs::read(&out).unwrap_or_default(),
                    stderr: vec![],
                }
            }
        }
    };
    let created = run(&lines[0], None);
    assert!(created.status.success(), "{}: {}", lines[0], String::from_utf8_lossy(&created.stderr));
    let out = format!("{}{}", String::from_utf8_lossy(&created.stdout), String::from_utf8_lossy(&created.stderr));
    let id = out.split_whitespace().find(|w| w.starts_with("ins_")).map(|w| w.trim_end_matches(':').to_string());
    let id = id.unwrap_or_else(|| panic!("no instance id in {out}"));
    let console = run(&lines[1], Some(Duration::from_secs(120)));
    let text = String::from_utf8_lossy(&console.stdout);
    assert!(text.contains(&format!("PLINTH-GUEST-READY {id}")), "the console shows the guest's marker: {text}");
    // Typed into the guest's console shell: `hostname` answers the instance's name.
    let typed = run(&lines[2], None);
    assert!(typed.status.success(), "{}: {}", lines[2], String::from_utf8_lossy(&typed.stderr));
    let name = lines[0].split_whitespace().nth(3).expect("the instance's name").to_string();
    until("the guest to answer the typed command", Duration::from_secs(60), || async {
        let log = run(&format!("plinth instance console-log {name}"), None);
        let text = String::from_utf8_lossy(&log.stdout).into_owned();
        whole_lines(&text).any(|l| l.trim() == name).then_some(())
    })
    .await;

    // The real VM is metered: its claim and its run opened usage intervals.
    let usage = run(&format!("plinth usage --resource {id} -o json"), None);
    assert!(usage.status.success(), "plinth usage: {}", String::from_utf8_lossy(&usage.stderr));
    let usage: Value = serde_json::from_slice(&usage.stdout).expect("usage JSON");
    let meters: Vec<&str> = usage["items"].as_array().unwrap().iter().filter_map(|u| u["meter"].as_str()).collect();
    for m in ["allocated_seconds", "running_seconds", "disk_gib_seconds"] {
        assert!(meters.contains(&m), "{m} in {usage}");
    }

    // Ctrl-C stops Plinth; the VM keeps running (a later `plinth up` finds it again).
    let st = Command::new("kill").arg("-INT").arg(up.0.id().to_string()).status().unwrap();
    assert!(st.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = up.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "plinth up did not stop on Ctrl-C");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "plinth up exits cleanly: {status}");
    let alive = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("guest={id}")))
    });
    assert!(alive, "the VM outlives plinth up");
}
