//! The networking commands through the real binary against `plinth up` and a simulated
//! host: VPC, subnet, security group and rule, NIC create with a chosen address, an
//! instance created with `--nic subnet=…,ip=…,sg=…`, a NIC attached to and detached from
//! the stopped instance, and refusals (a taken address, a subnet still in use) shown with
//! their problem codes; and IP pools with a floating IP. Everything is named by name.

mod common;

use common::{cli, ok, up_with_sim_fleet, wait_for};
use std::time::Duration;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn networking_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_up, _fleet, profile) = up_with_sim_fleet(d, &[("PLINTH_RECONCILE_PERIOD_S", "0.5")], 1);
    wait_for("an available sim host", Duration::from_secs(60), || {
        let v = ok(&profile, None, &["host", "list"]);
        v["items"].as_array().and_then(|a| a.first()).filter(|h| h["state"] == "available").cloned()
    });
    ok(&profile, None, &["tenant", "create", "acme"]);
    ok(&profile, None, &["project", "create", "web", "--tenant", "acme"]);
    ok(&profile, None, &["shape", "create", "small", "--vcpus", "1", "--memory-mib", "256"]);
    let disk = d.join("tiny.raw");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
    ok(&profile, None, &["image", "create", "tiny", "--public", "--disk", disk.to_str().unwrap()]);

    let vpc = ok(&profile, None, &["vpc", "create", "main", "--project", "web", "--cidr", "10.8.0.0/16"]);
    assert_eq!(vpc["ipv4_cidr"], "10.8.0.0/16");
    let sn = ok(&profile, None, &["subnet", "create", "front", "--vpc", "main", "--cidr", "10.8.1.0/24"]);
    assert_eq!(sn["vpc_id"], vpc["id"]);
    assert_eq!(sn["gateway"], "10.8.1.1");
    let sg = ok(&profile, None, &["security-group", "create", "ssh", "--vpc", "main"]);
    let rule = ok(
        &profile,
        None,
        &["security-group", "rule", "add", "ssh", "--direction", "ingress", "--protocol", "tcp", "--ports", "22"],
    );
    assert_eq!((rule["port_min"].as_u64(), rule["port_max"].as_u64()), (Some(22), Some(22)));
    let shown = ok(&profile, None, &["security-group", "get", "ssh"]);
    assert_eq!(shown["rules"].as_array().unwrap().len(), 1);

    let spare =
        ok(&profile, None, &["nic", "create", "spare", "--subnet", "front", "--ip", "10.8.1.40", "--sg", "ssh"]);
    assert_eq!(spare["ipv4"], "10.8.1.40");
    assert_eq!(spare["security_group_ids"], serde_json::json!([sg["id"]]));

    // An instance with a NIC given by subnet name, address and group name.
    let out = cli(
        &profile,
        None,
        &[
            "instance",
            "create",
            "vm",
            "--project",
            "web",
            "--shape",
            "small",
            "--image",
            "tiny",
            "--nic",
            "subnet=front,ip=10.8.1.9,sg=ssh",
            "--wait",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let nics = ok(&profile, None, &["nic", "list", "--instance", "vm"]);
    let items = nics["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{nics}");
    assert_eq!((items[0]["ipv4"].as_str(), items[0]["slot"].as_u64()), (Some("10.8.1.9"), Some(0)));

    // Attach needs a stopped instance; then the spare goes into slot 1, and comes out.
    let out = cli(&profile, None, &["nic", "attach", "spare", "--instance", "vm"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("instance_not_stopped"), "{}", stderr(&out));
    let out = cli(&profile, None, &["instance", "stop", "vm", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plugged = ok(&profile, None, &["nic", "attach", "spare", "--instance", "vm"]);
    assert_eq!(plugged["slot"], 1);
    let nics = ok(&profile, None, &["nic", "list", "--instance", "vm"]);
    assert_eq!(nics["items"].as_array().unwrap().len(), 2);
    let out = cli(&profile, None, &["nic", "detach", "spare"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = ok(&profile, None, &["nic", "get", "spare"]);
    assert!(back["instance_id"].is_null(), "{back}");

    // Refusals carry their codes.
    let out = cli(&profile, None, &["nic", "create", "dup", "--subnet", "front", "--ip", "10.8.1.40"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("address_in_use"), "{}", stderr(&out));
    let out = cli(&profile, None, &["subnet", "delete", "front"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("subnet_in_use") && stderr(&out).contains("spare"), "{}", stderr(&out));

    // Tear down by name.
    ok(&profile, None, &["nic", "delete", "spare"]);
    let rules = ok(&profile, None, &["security-group", "get", "ssh"]);
    let rule_id = rules["rules"][0]["id"].as_str().unwrap().to_string();
    let out = cli(&profile, None, &["security-group", "rule", "remove", "ssh", &rule_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = ok(&profile, None, &["vpc", "list", "--project", "web"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // IP pools, by name: made, refused when overlapping, shown, deleted.
    let pool =
        ok(&profile, None, &["ip-pool", "create", "public", "--cidr", "198.51.100.0/24", "--first", "198.51.100.10"]);
    assert_eq!((pool["first"].as_str(), pool["size"].as_u64()), (Some("198.51.100.10"), Some(245)), "{pool}");
    let out = cli(&profile, None, &["ip-pool", "create", "again", "--cidr", "198.51.100.0/25"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ip_pool_overlap") && stderr(&out).contains("public"), "{}", stderr(&out));
    assert_eq!(ok(&profile, None, &["ip-pool", "get", "public"])["id"], pool["id"]);
    let fip = ok(&profile, None, &["floating-ip", "create", "web-ip", "--project", "web"]);
    assert_eq!(fip["address"], "198.51.100.10", "the lowest free address of the only pool: {fip}");
    let listed = ok(&profile, None, &["floating-ip", "list", "--project", "web"]);
    assert_eq!(listed["items"][0]["id"], fip["id"]);
    ok(&profile, None, &["floating-ip", "delete", "web-ip"]);
    ok(&profile, None, &["ip-pool", "delete", "public"]);
    assert_eq!(ok(&profile, None, &["ip-pool", "list"])["items"].as_array().unwrap().len(), 0);
}
