//! The rendered NoCloud files, checked by cloud-init itself (Debian package `cloud-init`):
//! `cloud-init schema --config-file` validates the `#cloud-config` user-data, and
//! `cloud-init devel net-convert` parses the network-config v2 and renders it for Debian
//! (22.4, Debian 12's version, has no schema for network-config: `--schema-type` came in
//! 23.x), so the test checks what cloud-init makes of it.

use plinth_domain::cloud_init::{SeedInput, SeedNic, render};
use std::path::Path;
use std::process::Command;

fn cloud_init() -> &'static str {
    let bin = "cloud-init";
    let ok = Command::new(bin).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(
        ok,
        "cloud-init is not installed (Debian package `cloud-init`); this test validates the rendered seed with it"
    );
    bin
}

fn seed() -> plinth_api::CloudInitSeed {
    let keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx1bHVsdWx1bHVsdWx1bHVsdWx1bHVsdWx1bHVsdWx1 alice@laptop".to_string(),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob \"quoted\"".to_string(),
    ];
    let nics = vec![
        SeedNic {
            mac: "02:00:0a:00:00:05".into(),
            ipv4: [10, 0, 0, 5].into(),
            prefix_len: 24,
            gateway: [10, 0, 0, 1].into(),
            mtu: 1450,
            dns_domain: Some("main.internal".into()),
        },
        SeedNic {
            mac: "02:00:0a:01:00:09".into(),
            ipv4: [10, 1, 0, 9].into(),
            prefix_len: 26,
            gateway: [10, 1, 0, 1].into(),
            mtu: 1400,
            dns_domain: None,
        },
    ];
    render(&SeedInput {
        instance_id: "ins_01jabcdefghjkmnpqrstvwxyz0",
        hostname: "web-1",
        ssh_keys: &keys,
        user_data: None,
        nics: &nics,
    })
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn cloud_init_accepts_the_rendered_user_data() {
    let bin = cloud_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = seed();
    let ud = write(dir.path(), "user-data", &s.user_data);
    let out = Command::new(bin).args(["schema", "--config-file"]).arg(&ud).output().expect("run cloud-init schema");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "cloud-init schema refused:\n{}\n---\n{text}", s.user_data);
    assert!(text.contains("Valid cloud-config"), "{text}");

    // The vendor-data (the primary NIC's VPC resolver) is a valid cloud-config too, and
    // writes the nameserver and search list.
    let vd = write(dir.path(), "vendor-data", &s.vendor_data);
    let out = Command::new(bin).args(["schema", "--config-file"]).arg(&vd).output().expect("run cloud-init schema");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && text.contains("Valid cloud-config"),
        "vendor-data refused:\n{}\n---\n{text}",
        s.vendor_data
    );
    assert!(s.vendor_data.contains("/etc/resolv.conf"), "{}", s.vendor_data);
    assert!(s.vendor_data.contains(r"nameserver 10.0.0.1\nsearch main.internal\n"), "{}", s.vendor_data);

    // Control: a broken cloud-config is refused by the same command.
    let bad = write(dir.path(), "bad", "#cloud-config\nssh_authorized_keys: 5\n");
    let out = Command::new(bin).args(["schema", "--config-file"]).arg(&bad).output().expect("run cloud-init schema");
    assert!(!out.status.success(), "cloud-init schema accepted a bad config");
}

#[test]
fn cloud_init_reads_the_meta_data_as_yaml_with_the_keys() {
    // cloud-init loads meta-data with its YAML loader; python3-yaml comes with cloud-init.
    let dir = tempfile::tempdir().expect("tempdir");
    let s = seed();
    let md = write(dir.path(), "meta-data", &s.meta_data);
    let script = "import sys, json\nfrom cloudinit import util\nfrom cloudinit.sources import normalize_pubkey_data\n\
                  md = util.load_yaml(open(sys.argv[1]).read())\n\
                  print(json.dumps({'id': md['instance-id'], 'host': md['local-hostname'], 'keys': normalize_pubkey_data(md.get('public-keys'))}))";
    let _ = cloud_init();
    let out = Command::new("/usr/bin/python3").args(["-c", script]).arg(&md).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["id"], "ins_01jabcdefghjkmnpqrstvwxyz0");
    assert_eq!(v["host"], "web-1");
    assert_eq!(v["keys"][1], "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob \"quoted\"");
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(2));
}

#[test]
fn cloud_init_renders_the_network_config_for_debian() {
    let bin = cloud_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let s = seed();
    let nc = write(dir.path(), "network-config", &s.network_config);
    let out_dir = dir.path().join("out");
    // The MACs are not on this machine: name them, as the guest's kernel would.
    let out = Command::new(bin)
        .args(["devel", "net-convert", "-k", "yaml", "-D", "debian", "-O", "eni", "-d"])
        .arg(&out_dir)
        .arg("-p")
        .arg(&nc)
        .args(["-m", "enp0s2,02:00:0a:00:00:05", "-m", "enp0s3,02:00:0a:01:00:09"])
        .output()
        .expect("run cloud-init devel net-convert");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "net-convert refused:\n{}\n---\n{err}", s.network_config);
    let eni = std::fs::read_to_string(out_dir.join("etc/network/interfaces.d/50-cloud-init")).expect("eni written");
    // Each NIC static, with its address and MTU, in slot order.
    let stanzas: Vec<&str> = eni.split("\nauto ").filter(|s| s.contains("inet static")).collect();
    assert_eq!(stanzas.len(), 2, "{eni}");
    for (stanza, (addr, mtu)) in stanzas.iter().zip([("10.0.0.5/24", "mtu 1450"), ("10.1.0.9/26", "mtu 1400")]) {
        assert!(stanza.contains(&format!("address {addr}")) && stanza.contains(mtu), "{addr} {mtu} not in:\n{stanza}");
    }
    // The default route only on the primary, via its gateway, as ifupdown's own `gateway`
    // (a `route add` needs net-tools, which a minimal Debian guest does not have).
    assert!(stanzas[0].contains("gateway 10.0.0.1"), "{eni}");
    assert!(!stanzas[1].contains("gateway") && !stanzas[1].contains("route"), "{eni}");
    assert!(!eni.contains("route add"), "{eni}");
    assert!(!eni.contains("dhcp"), "{eni}");
}
