//! The agent reads a namespace's links back over rtnetlink (`links::read`): what it reads
//! is what `ip -j -d link show` and `ip -j -4 addr show` print for the same namespace,
//! field by field, for every kind of link a VPC namespace holds (a bridge with an address,
//! a VXLAN device, veth ports with flooding on and off, an alias, a tap). Runs as root
//! only (skips otherwise).

use plinth_agent::network::links;
use std::process::Command;

fn must(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace, removed on drop.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn links_read_over_rtnetlink_are_what_ip_prints() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let ns = Ns(format!("plt-nl-{}", std::process::id()));
    let n = ns.0.as_str();
    must(&format!("ip netns add {n}"));
    for c in [
        "link add br0 mtu 1450 type bridge",
        "addr add 10.1.0.1/24 dev br0",
        "addr add 10.1.1.1/28 dev br0",
        "link set br0 up",
        "link add vx0 mtu 1450 type vxlan id 4242 local 127.0.0.1 dstport 4789 nolearning",
        "link set vx0 master br0 up",
        "link add p0 type veth peer name q0",
        "link set p0 master br0 up",
        "link add p1 mtu 1400 type veth peer name q1",
        "link set p1 master br0",
        "link set q1 alias plinth-test",
        "tuntap add mode tap tp0",
    ] {
        must(&format!("ip -n {n} {c}"));
    }
    must(&format!("bridge -n {n} link set dev p1 flood off"));

    let read = links::read(Some(n)).expect("read over rtnetlink");
    let shown: serde_json::Value = serde_json::from_str(&must(&format!("ip -n {n} -j -d link show"))).unwrap();
    let addrs: serde_json::Value = serde_json::from_str(&must(&format!("ip -n {n} -j -4 addr show"))).unwrap();
    let shown = shown.as_array().unwrap();
    assert_eq!(read.len(), shown.len(), "every link, no more: {read:?}");
    for l in shown {
        let name = l["ifname"].as_str().unwrap();
        let r = read.get(name).unwrap_or_else(|| panic!("{name} not read: {read:?}"));
        let info = &l["linkinfo"];
        assert_eq!(r.kind, info["info_kind"].as_str().unwrap_or_default(), "{name}'s kind");
        assert_eq!(r.master.as_deref(), l["master"].as_str(), "{name}'s master");
        assert_eq!(u64::from(r.mtu), l["mtu"].as_u64().unwrap(), "{name}'s MTU");
        assert_eq!(r.up, l["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{name} up");
        assert_eq!(r.mac, l["address"].as_str().unwrap_or_default(), "{name}'s MAC");
        assert_eq!(r.vxlan_id, info["info_data"]["id"].as_u64(), "{name}'s VNI");
        assert_eq!(r.vxlan_local.as_deref(), info["info_data"]["local"].as_str(), "{name}'s source");
        assert_eq!(r.flood, info["info_slave_data"]["flood"].as_bool(), "{name}'s flooding");
        assert_eq!(r.alias.as_deref(), l["ifalias"].as_str(), "{name}'s alias");
        let a = addrs.as_array().unwrap().iter().find(|a| a["ifname"] == name);
        let want: Vec<String> = a
            .and_then(|a| a["addr_info"].as_array())
            .into_iter()
            .flatten()
            .map(|ai| format!("{}/{}", ai["local"].as_str().unwrap(), ai["prefixlen"]))
            .collect();
        assert_eq!(r.addrs, want, "{name}'s addresses");
    }
    // The comparison is of something: each kind of fact was there to be read.
    assert_eq!(read["vx0"].vxlan_id, Some(4242));
    assert_eq!(read["p1"].flood, Some(false));
    assert_eq!(read["p0"].flood, Some(true));
    assert_eq!(read["p0"].master.as_deref(), Some("br0"));
    assert_eq!(read["br0"].addrs, ["10.1.0.1/24", "10.1.1.1/28"]);
    assert_eq!(read["q1"].alias.as_deref(), Some("plinth-test"));
    assert_eq!(read["tp0"].kind, "tun");
}
