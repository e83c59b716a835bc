//! Tenant networking end to end (issue 17): a real `plinth server` (SQLite, and PostgreSQL
//! when `PLINTH_TEST_DATABASE_URL` is set) and two hosts that are network namespaces, each
//! running its own `plinth agent`, joined by an underlay bridge. NICs are bound to hosts
//! by the operator and plugged into namespace guests; every assertion is a TCP connection
//! made (payload read back) or refused, or a ping.

mod common;

use common::labapi::*;
use common::netlab::*;
use common::{QemuReaper, until};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One row of the reachability table.
struct Probe {
    case: &'static str,
    from: String,
    to: String,
    want: bool,
    tcp: bool,
    icmp: bool,
    /// Milliseconds from the first try to the first TCP success, the probe's own time
    /// included (~100–200 ms when the first try passes; `want` only).
    lag_ms: u128,
}

impl Probe {
    /// A probe from namespace `from` to address `to` that must pass (`want`) or not; the
    /// results are filled in when it runs.
    fn new(case: &'static str, from: String, to: String, want: bool) -> Probe {
        Probe { case, from, to, want, tcp: false, icmp: false, lag_ms: 0 }
    }
}

async fn scenario(prefix: &str, k: u8, database: Option<String>, datapath: &'static str) {
    if !can_run() {
        eprintln!("SKIPPED: the network lab needs root and iproute2");
        return;
    }
    let mut lab = NetLab::new(prefix, k, 2);
    lab.datapath = datapath;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_server, api) = server(&lab, d, database).await;
    let _a1 = agent(&lab, 1, d, &api).await;
    let _a2 = agent(&lab, 2, d, &api).await;
    let hosts = wait_hosts(&api, &lab).await;
    for h in &hosts {
        let host = api.get(&format!("/v1/hosts/{h}")).await;
        assert_eq!(host["inventory"]["network_datapath"], datapath, "the host reports its data path: {host}");
    }

    let t1 = api.post("/v1/tenants", json!({ "name": "acme" })).await;
    let p1 = api.post("/v1/projects", json!({ "name": "web", "tenant_id": t1["id"] })).await;
    let t2 = api.post("/v1/tenants", json!({ "name": "globex" })).await;
    let p2 = api.post("/v1/projects", json!({ "name": "web", "tenant_id": t2["id"] })).await;

    // Two tenants, the same CIDR.
    let va = api.post("/v1/vpcs", json!({ "project_id": p1["id"], "name": "main", "ipv4_cidr": "10.20.0.0/16" })).await;
    let vb = api.post("/v1/vpcs", json!({ "project_id": p2["id"], "name": "main", "ipv4_cidr": "10.20.0.0/16" })).await;
    let sa1 = api.post("/v1/subnets", json!({ "vpc_id": va["id"], "name": "s1", "ipv4_cidr": "10.20.1.0/24" })).await;
    let sa2 = api.post("/v1/subnets", json!({ "vpc_id": va["id"], "name": "s2", "ipv4_cidr": "10.20.2.0/24" })).await;
    let sb1 = api.post("/v1/subnets", json!({ "vpc_id": vb["id"], "name": "s1", "ipv4_cidr": "10.20.1.0/24" })).await;
    assert_eq!(sa1["mtu"], 1450, "{sa1}");

    let nic = |subnet: &Value, name: &str, host: usize, ip: Option<&str>, mac: Option<&str>| {
        let mut b = json!({ "subnet_id": subnet["id"], "name": name, "host_id": hosts[host - 1] });
        if let Some(ip) = ip {
            b["ipv4"] = json!(ip);
        }
        if let Some(mac) = mac {
            b["mac"] = json!(mac);
        }
        b
    };
    let a1 = api.post("/v1/network-interfaces", nic(&sa1, "a1", 1, None, None)).await;
    let a2 = api.post("/v1/network-interfaces", nic(&sa1, "a2", 1, None, None)).await;
    let a3 = api.post("/v1/network-interfaces", nic(&sa1, "a3", 2, None, None)).await;
    let a4 = api.post("/v1/network-interfaces", nic(&sa2, "a4", 2, None, None)).await;
    // Tenant B: the same address and MAC as a2 on the same host, and one more address.
    let b1 = api
        .post("/v1/network-interfaces", nic(&sb1, "b1", 1, Some(a2["ipv4"].as_str().unwrap()), Some(&s(&a2, "mac"))))
        .await;
    let b2 = api.post("/v1/network-interfaces", nic(&sb1, "b2", 2, Some("10.20.1.50"), None)).await;

    let mut guests = std::collections::BTreeMap::new();
    let mut echoes = Vec::new();
    for (name, n, subnet, vpc, host) in [
        ("a1", &a1, &sa1, &va, 1),
        ("a2", &a2, &sa1, &va, 1),
        ("a3", &a3, &sa1, &va, 2),
        ("a4", &a4, &sa2, &va, 2),
        ("b1", &b1, &sb1, &vb, 1),
        ("b2", &b2, &sb1, &vb, 2),
    ] {
        let n = api.ready(n).await;
        let prefix_len = s(subnet, "ipv4_cidr").split('/').nth(1).unwrap().to_string();
        let g = lab.plug_guest(
            name,
            host,
            vpc["vni"].as_u64().unwrap(),
            &s(&n, "device"),
            &s(&n, "mac"),
            &format!("{}/{prefix_len}", s(&n, "ipv4")),
            &s(subnet, "gateway"),
        );
        echoes.push(Echo::start(&g, 7));
        guests.insert(name, (g, s(&n, "ipv4")));
    }
    let ns = |n: &str| guests[n].0.clone();
    let ip = |n: &str| guests[n].1.clone();

    let probes = vec![
        Probe::new("same subnet, same host", ns("a1"), ip("a2"), true),
        Probe::new("same subnet, across hosts", ns("a1"), ip("a3"), true),
        Probe::new("across subnets (routed)", ns("a1"), ip("a4"), true),
        Probe::new("across subnets, reverse", ns("a4"), ip("a2"), true),
        Probe::new("other VPC (its only address)", ns("a1"), ip("b2"), false),
        Probe::new("other VPC, same CIDR", ns("b1"), ip("b2"), true),
        Probe::new("other VPC to ours", ns("b2"), ip("a3"), false),
    ];
    let mut table = vec![];
    for mut p in probes {
        // Refusals are waited out: the probe's own timeout is the deadline. What must pass
        // gets tries within 10 s, and the table shows how long the first success took (more
        // than one probe's time is a gap in the readiness barrier: printed, not hidden).
        let t0 = Instant::now();
        loop {
            p.tcp = tcp_ok(&p.from, &p.to, 7, 100_000, Duration::from_secs(3));
            if p.tcp || !p.want || t0.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        p.lag_ms = if p.want && p.tcp { t0.elapsed().as_millis() } else { 0 };
        p.icmp = ping_ok(&p.from, &p.to, 56, false);
        table.push(p);
    }
    println!("{:<32} {:<18} {:<12} {:>6} {:>6} {:>6} {:>8}", "case", "from", "to", "want", "tcp", "icmp", "ms");
    for p in &table {
        println!(
            "{:<32} {:<18} {:<12} {:>6} {:>6} {:>6} {:>8}",
            p.case,
            p.from.trim_start_matches(prefix),
            p.to,
            if p.want { "pass" } else { "block" },
            if p.tcp { "pass" } else { "block" },
            if p.icmp { "pass" } else { "block" },
            p.lag_ms
        );
    }
    for p in &table {
        assert_eq!((p.tcp, p.icmp), (p.want, p.want), "{}: from {} to {}", p.case, p.from, p.to);
    }

    // MTU: 1422 bytes of ICMP payload + 28 = 1450 cross hosts unfragmented; 1423 do not.
    assert!(ping_ok(&ns("a1"), &ip("a3"), 1422, true), "a 1450-byte DF packet crosses hosts");
    assert!(!ping_ok(&ns("a1"), &ip("a3"), 1423, true), "a 1451-byte DF packet does not");
    assert!(tcp_ok(&ns("a1"), &ip("a3"), 7, 4_000_000, Duration::from_secs(20)), "a bulk TCP transfer crosses");

    // Clean up: every NIC, subnet and VPC deleted → nothing of them is left on the hosts.
    // Control: the checks below do see the lab's namespaces and DHCP servers while they live.
    let dhcp_of_lab = |ps: &str| ps.lines().any(|l| l.starts_with("dnsmasq") && l.contains(&format!("/{prefix}")));
    assert!(dhcp_of_lab(&String::from_utf8_lossy(&run(&["ps", "-eo", "args"]).stdout)), "the lab's dnsmasq runs");
    let netns_list = || String::from_utf8_lossy(&run(&["ip", "netns", "list"]).stdout).to_string();
    assert!(netns_list().lines().any(|l| l.starts_with(&lab.vpc_prefix(1))), "the VPC namespaces exist");
    drop(echoes);
    for n in [&a1, &a2, &a3, &a4, &b1, &b2] {
        api.ok(reqwest::Method::DELETE, &format!("/v1/network-interfaces/{}", s(n, "id")), None).await;
    }
    for sn in [&sa1, &sa2, &sb1] {
        api.ok(reqwest::Method::DELETE, &format!("/v1/subnets/{}", s(sn, "id")), None).await;
    }
    for v in [&va, &vb] {
        api.ok(reqwest::Method::DELETE, &format!("/v1/vpcs/{}", s(v, "id")), None).await;
    }
    for i in 1..=2 {
        let vp = lab.vpc_prefix(i);
        wait("the VPC namespaces to go", Duration::from_secs(30), || {
            (!netns_list().lines().any(|l| l.starts_with(&vp))).then_some(())
        });
        let links = String::from_utf8_lossy(&in_ns(&lab.host(i), &["ip", "-o", "link"]).stdout).to_string();
        assert!(!links.contains("vx"), "no VXLAN device left on host {i}: {links}");
    }
    let ps = String::from_utf8_lossy(&run(&["ps", "-eo", "args"]).stdout).to_string();
    assert!(!dhcp_of_lab(&ps), "no dnsmasq of the lab is left");
    let _ = &mut lab;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_isolation_mtu_and_cleanup_on_sqlite() {
    scenario("pe2s", 231, None, "linux-bridge").await;
}

/// The same scenario on the Open vSwitch data path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_isolation_mtu_and_cleanup_on_openvswitch() {
    scenario("oe2", 239, None, "openvswitch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reachability_isolation_mtu_and_cleanup_on_postgres() {
    let Ok(admin) = std::env::var("PLINTH_TEST_DATABASE_URL") else {
        panic!(
            "PLINTH_TEST_DATABASE_URL is not set: run the README's test command, or eval \"$(scripts/test-postgres)\""
        );
    };
    let name = format!("plinth_net_{}", std::process::id());
    let db = plinth_store::Store::create_postgres_database(&admin, &name).await.expect("create database");
    scenario("pe2p", 232, Some(db), "linux-bridge").await;
}

/// The Debian guest of `scripts/debian-guest` (built when missing): its directory and
/// manifest.
fn debian_guest() -> (std::path::PathBuf, Value) {
    let dir = std::env::var_os("PLINTH_DEBIAN_GUEST_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/plinth/debian-guest")
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/debian-guest");
    let st = Command::new(&script)
        .env("PLINTH_DEBIAN_GUEST_DIR", &dir)
        .stdout(Stdio::null())
        .status()
        .expect("debian-guest");
    assert!(st.success(), "scripts/debian-guest failed");
    let manifest = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("json");
    (dir, manifest)
}

/// Test 1 of the issue: a tenant's Debian VM with an SSH key and a user-data script,
/// reached from a guest on the other host in the same subnet: `ssh` logs in with the key,
/// the script ran, cloud-init is done, the interface has the NIC's address and MTU 1450.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian_vm_is_logged_into_over_ssh_from_another_host() {
    debian_vm("pe2l", 230, "linux-bridge").await;
}

/// The same on the Open vSwitch data path: the VM's tap is a port of the OVS bridge (QEMU
/// opens it without the virtio-net header, so the guest sends no oversized frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debian_vm_is_logged_into_over_ssh_on_openvswitch() {
    debian_vm("ol2", 244, "openvswitch").await;
}

async fn debian_vm(prefix: &str, k: u8, datapath: &'static str) {
    if !can_run() {
        eprintln!("SKIPPED: the network lab needs root and iproute2");
        return;
    }
    let (gdir, manifest) = debian_guest();
    let mut lab = NetLab::new(prefix, k, 2);
    lab.datapath = datapath;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = QemuReaper(d.to_path_buf());
    let (_server, api) = server(&lab, d, None).await;
    let _a1 = agent(&lab, 1, d, &api).await;
    let _a2 = agent(&lab, 2, d, &api).await;
    let hosts = wait_hosts(&api, &lab).await;

    let file = |name: &str| json!({ "path": gdir.join(name).display().to_string(), "sha256": manifest["files"][name]["sha256"] });
    let img = api
        .post(
            "/v1/images",
            json!({ "name": "debian-12", "boot": "direct", "cmdline": manifest["cmdline"],
                "files": { "kernel": file("vmlinuz"), "initrd": file("initrd.img"), "disk": file("disk.img") } }),
        )
        .await;
    let img_id = s(&img, "id");
    until("the image to be available", Duration::from_secs(180), || async {
        let v = api.get(&format!("/v1/images/{img_id}")).await;
        assert_ne!(v["status"], "failed", "{v}");
        (v["status"] == "available").then_some(())
    })
    .await;
    api.post("/v1/shapes", json!({ "name": "small", "vcpus": 1, "memory_mib": 1024, "disk_gib": 3 })).await;
    let t = api.post("/v1/tenants", json!({ "name": "acme" })).await;
    let p = api.post("/v1/projects", json!({ "name": "web", "tenant_id": t["id"] })).await;
    let vpc = api.post("/v1/vpcs", json!({ "project_id": p["id"], "name": "main", "ipv4_cidr": "10.30.0.0/16" })).await;
    let sn = api.post("/v1/subnets", json!({ "vpc_id": vpc["id"], "name": "app", "ipv4_cidr": "10.30.1.0/24" })).await;

    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id");
    let kg = run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "plinth-test", "-f", key.to_str().unwrap()]);
    assert!(kg.status.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_string();
    let created = api
        .post(
            "/v1/instances",
            json!({ "project_id": p["id"], "name": "web-1", "shape": "small", "image": "debian-12",
                "ssh_keys": [pubkey], "nics": [{ "subnet": "app" }],
                "user_data": "#!/bin/sh\necho plinth-user-data-ran > /var/tmp/plinth-marker\n" }),
        )
        .await;
    let inst_id = s(&created["instance"], "id");
    let inst = until("the instance to run", Duration::from_secs(240), || async {
        let i = api.get(&format!("/v1/instances/{inst_id}")).await;
        assert!(!matches!(i["state"].as_str(), Some("failed")), "{i}");
        (i["state"] == "running").then_some(i)
    })
    .await;
    let vm_host = s(&inst, "host_id");
    let nics = api.get(&format!("/v1/network-interfaces?instance_id={inst_id}")).await;
    let vm_nic = nics["items"][0].clone();
    assert_eq!(vm_nic["state"], "ready", "the guest started only once its NIC was ready: {vm_nic}");
    let vm_ip = s(&vm_nic, "ipv4");

    // A guest on the other host, in the same subnet.
    let other = if vm_host == hosts[0] { 2 } else { 1 };
    let jump = api
        .post("/v1/network-interfaces", json!({ "subnet_id": sn["id"], "name": "jump", "host_id": hosts[other - 1] }))
        .await;
    let jump = api.ready(&jump).await;
    let g = lab.plug_guest(
        "jump",
        other,
        vpc["vni"].as_u64().unwrap(),
        &s(&jump, "device"),
        &s(&jump, "mac"),
        &format!("{}/24", s(&jump, "ipv4")),
        &s(&sn, "gateway"),
    );
    // sshd answers once the guest has booted (TCG: a minute or more).
    wait("the VM's sshd", Duration::from_secs(400), || tcp_open(&g, &vm_ip, 22).then_some(()));
    let k = key.to_str().unwrap().to_string();
    let ssh = |cmd: &str| {
        in_ns(
            &g,
            &[
                "ssh",
                "-i",
                &k,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                &format!("debian@{vm_ip}"),
                cmd,
            ],
        )
    };
    let out = wait("cloud-init to finish", Duration::from_secs(300), || {
        let o = ssh(
            "cloud-init status --wait >/dev/null 2>&1; cloud-init status; cat /var/tmp/plinth-marker; ip -o -4 addr show eth0; cat /sys/class/net/eth0/mtu",
        );
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).to_string())
    });
    println!("{out}");
    assert!(out.contains("status: done"), "cloud-init is done: {out}");
    assert!(out.contains("plinth-user-data-ran"), "the user-data script ran: {out}");
    assert!(out.contains(&format!("inet {vm_ip}/24")), "eth0 has the NIC's address: {out}");
    assert!(out.lines().any(|l| l.trim() == "1450"), "MTU 1450: {out}");
    // The guest's default route and resolver come from the seed: the VPC's DNS (on the
    // gateway) answers the jump NIC's name, full and bare (issue 18).
    let o = ssh("ip -4 route show default; getent hosts jump.main.internal; getent hosts jump");
    let dns = String::from_utf8_lossy(&o.stdout).to_string();
    let jump_ip = s(&jump, "ipv4");
    assert!(dns.contains("default via 10.30.1.1"), "the guest has its default route: {dns}");
    assert_eq!(dns.lines().filter(|l| l.starts_with(&format!("{jump_ip} "))).count(), 2, "the VM resolves jump: {dns}");
    // Control: the key matters (another key is refused).
    let other_key = keys.path().join("other");
    run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other_key.to_str().unwrap()]);
    let refused = in_ns(
        &g,
        &[
            "ssh",
            "-i",
            other_key.to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            &format!("debian@{vm_ip}"),
            "true",
        ],
    );
    assert!(!refused.status.success(), "a key the instance was not given is refused");

    // Issue 19: a volume hot-plugged into the running Debian guest, formatted and mounted
    // there; a snapshot asked with a freeze is `fs_frozen`: the guest's own qemu-ga
    // (started by udev on its port) froze its filesystems, the root and the volume's.
    if datapath == "linux-bridge" {
        let o = ssh("sudo systemctl is-active qemu-guest-agent");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "active", "the guest runs its agent: {o:?}");
        api.post("/v1/volume-types", json!({ "name": "standard" })).await;
        let vol = api
            .post(
                "/v1/volumes",
                json!({ "project_id": p["id"], "name": "data", "size_gib": 1, "instance_id": inst_id }),
            )
            .await;
        let vid = s(&vol, "id");
        until("the volume to be available", Duration::from_secs(60), || async {
            let v = api.get(&format!("/v1/volumes/{vid}")).await;
            (v["state"] == "available").then_some(())
        })
        .await;
        let att = api.post(&format!("/v1/volumes/{vid}/attach"), json!({ "instance_id": inst_id })).await;
        let aid = s(&att, "id");
        until("the volume to be attached", Duration::from_secs(60), || async {
            let a = api.get(&format!("/v1/volume-attachments/{aid}")).await;
            (a["state"] == "attached").then_some(())
        })
        .await;
        let serial = s(&vol, "serial");
        let dev = format!("/dev/disk/by-id/virtio-{serial}");
        let o = wait("the volume formatted and mounted in the guest", Duration::from_secs(60), || {
            let o = ssh(&format!(
                "sudo mkfs.ext4 -q {dev} && sudo mkdir -p /mnt/data && sudo mount {dev} /mnt/data && \
                 echo plinth | sudo tee /mnt/data/marker >/dev/null && findmnt -n -o SOURCE /mnt/data"
            ));
            o.status.success().then_some(o)
        });
        println!("{}", String::from_utf8_lossy(&o.stdout));
        let snap = api.post("/v1/snapshots", json!({ "volume_id": vid, "name": "quiet", "fs_freeze": true })).await;
        let sid = s(&snap, "id");
        let snap = until("the snapshot to be taken", Duration::from_secs(60), || async {
            let x = api.get(&format!("/v1/snapshots/{sid}")).await;
            assert_ne!(x["state"], "error", "{x}");
            (x["state"] == "available").then_some(x)
        })
        .await;
        assert_eq!(snap["consistency"], "fs_frozen", "{snap}");
        let detail = snap["consistency_detail"].as_str().unwrap();
        println!("the Debian guest's snapshot: {detail}");
        let frozen: u32 = detail.split_whitespace().find_map(|w| w.parse().ok()).unwrap_or(0);
        assert!(frozen >= 2, "the root and the volume's filesystems: {detail}");
        // Thawed: the guest writes to the volume's filesystem again.
        let o = ssh("echo after | sudo tee /mnt/data/after >/dev/null && sync && cat /mnt/data/after");
        assert!(String::from_utf8_lossy(&o.stdout).contains("after"), "{o:?}");
    }

    api.ok(reqwest::Method::DELETE, &format!("/v1/instances/{inst_id}"), None).await;
    let _ = &mut lab;
}
