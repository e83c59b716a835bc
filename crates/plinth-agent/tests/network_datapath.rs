//! The Linux-bridge host network backend on the real kernel: two "hosts" (network
//! namespaces on a fabric bridge, the underlay), each converged by its own backend from a
//! thread inside the host namespace; guests are namespaces holding the far end of veth
//! NICs. Asserts what a guest observes: TCP with payload, ping, DHCP, MTU, security
//! groups (a removed rule cuts an established flow), anti-spoofing, idempotent re-apply,
//! drift repair, fail closed with the ruleset flushed (the guard) and complete teardown.
//! Runs as root only (skips otherwise).

use plinth_agent::network::{HostNetwork, LinuxBridge, NetworkConfig, guard, tap};
use plinth_agent::runtime::TapOpener;
use plinth_api::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "`{cmd}` failed: {out}");
    out
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Everything the test made, removed on drop (also when an assertion fails).
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
    children: Vec<std::process::Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // dnsmasq processes started for our namespaces (their pid files are in our dirs).
        for d in &self.dirs {
            let _ = sh(&format!(
                "for p in $(find {} -name '*.pid' 2>/dev/null); do kill $(cat $p) 2>/dev/null; done",
                d.display()
            ));
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = sh(&format!(
            "for n in $(ip netns list | awk '{{print $1}}' | grep '^{}'); do ip netns pids $n | xargs -r kill -9; ip netns del $n; done",
            self.tag
        ));
        for n in &self.namespaces {
            let _ = sh(&format!("ip netns pids {n} 2>/dev/null | xargs -r kill -9; ip netns del {n} 2>/dev/null"));
        }
    }
}

struct Host {
    ns: String,
    backend: Arc<LinuxBridge>,
    prefix: String,
    underlay: String,
}

impl Host {
    fn apply(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        let backend = self.backend.clone();
        let spec = spec.clone();
        tap::in_netns(&PathBuf::from("/run/netns").join(&self.ns), move || Ok(backend.apply(&spec)))
            .expect("apply thread")
    }
    fn apply_change(&self, spec: &HostNetworkSpec) -> ObservedNetwork {
        let backend = self.backend.clone();
        let spec = spec.clone();
        tap::in_netns(&PathBuf::from("/run/netns").join(&self.ns), move || Ok(backend.apply_change(&spec)))
            .expect("apply thread")
    }
    fn survey(&self, spec: &HostNetworkSpec) -> bool {
        let backend = self.backend.clone();
        let spec = spec.clone();
        tap::in_netns(&PathBuf::from("/run/netns").join(&self.ns), move || Ok(backend.survey(&spec)))
            .expect("survey thread")
    }
    fn vpc_ns(&self, vni: u32) -> String {
        format!("{}{vni}", self.prefix)
    }
}

const VNI: u32 = 7301;

#[derive(Clone)]
struct Nic {
    name: &'static str,
    host: usize,
    subnet: u32,
    ip: &'static str,
    mac: &'static str,
    port: u32,
    groups: Vec<&'static str>,
}

fn uuid(n: u32) -> String {
    format!("x_{n:026}")
}

fn group(gid: u32, rules: Vec<RuleSpec>, members: Vec<&str>) -> SecurityGroupSpec {
    SecurityGroupSpec {
        security_group_id: SecurityGroupId(uuid(gid)),
        rules,
        members: members.into_iter().map(str::to_owned).collect(),
    }
}

fn rule(
    rid: u32,
    direction: Direction,
    protocol: RuleProtocol,
    ports: Option<(u16, u16)>,
    cidr: Option<&str>,
    rg: Option<u32>,
) -> RuleSpec {
    RuleSpec {
        rule_id: SecurityGroupRuleId(uuid(rid)),
        direction,
        protocol,
        port_min: ports.map(|p| p.0),
        port_max: ports.map(|p| p.1),
        icmp_type: None,
        icmp_code: None,
        remote_cidr: cidr.map(str::to_owned),
        remote_group_id: rg.map(|g| SecurityGroupId(uuid(g))),
    }
}

/// The spec of host `h` for these NICs and groups.
fn spec(generation: i64, h: usize, hosts: &[&Host], nics: &[Nic], groups: &[SecurityGroupSpec]) -> HostNetworkSpec {
    let subnets = (0..2u32)
        .map(|i| SubnetSpec {
            subnet_id: SubnetId(uuid(100 + i)),
            index: i,
            ipv4_cidr: format!("10.73.{i}.0/24"),
            gateway: format!("10.73.{i}.1"),
            mtu: 1450,
            dhcp: true,
            vni: VNI + 1 + i,
        })
        .collect();
    let nic_id = |n: &Nic| NicId(uuid(1000 + n.port));
    let local: Vec<NicSpec> = nics
        .iter()
        .filter(|n| n.host == h)
        .map(|n| NicSpec {
            nic_id: nic_id(n),
            subnet_id: SubnetId(uuid(100 + n.subnet)),
            device: format!("n{}", n.name),
            port: n.port,
            plug: if n.name.starts_with('t') { NicPlug::Tap } else { NicPlug::Veth },
            mac: n.mac.to_owned(),
            ipv4: n.ip.to_owned(),
            port_security: true,
            security_group_ids: n.groups.iter().map(|g| SecurityGroupId(uuid(g.parse().expect("gid")))).collect(),
            hostname: Some(format!("guest-{}", n.name)),
            instance_id: None,
            slot: None,
            filter_generation: generation,
            snat_address: None,
            floating: vec![],
            dns_name: Some(format!("guest-{}", n.name)),
        })
        .collect();
    let remote: Vec<RemoteNicSpec> = nics
        .iter()
        .filter(|n| n.host != h)
        .map(|n| RemoteNicSpec {
            nic_id: nic_id(n),
            subnet_id: SubnetId(uuid(100 + n.subnet)),
            mac: n.mac.to_owned(),
            ipv4: n.ip.to_owned(),
            vtep: hosts[n.host].underlay.clone(),
            dns_name: Some(format!("guest-{}", n.name)),
        })
        .collect();
    let peers = hosts.iter().enumerate().filter(|(i, _)| *i != h).map(|(_, x)| x.underlay.clone()).collect();
    if local.is_empty() {
        return HostNetworkSpec { generation, vpcs: vec![] };
    }
    HostNetworkSpec {
        generation,
        vpcs: vec![VpcSpec {
            vpc_id: VpcId(uuid(1)),
            vni: VNI,
            ipv4_cidr: "10.73.0.0/16".into(),
            subnets,
            nics: local,
            security_groups: groups.to_vec(),
            remote_nics: remote,
            peers,
            uplink_gateway: None,
            dns_domain: Some("lab.internal".into()),
        }],
    }
}

fn all_applied(o: &ObservedNetwork) {
    for n in &o.nics {
        for c in &n.components {
            assert!(c.applied, "NIC {} component {:?} not applied: {:?}", n.nic_id, c.component, c.detail);
        }
        assert!(n.filter_generation.is_some(), "NIC {} has no filter generation", n.nic_id);
    }
}

/// TCP connect + echo of a payload from guest `from` to `ip:port`, 2 s timeout.
fn tcp(from: &str, ip: &str, port: u16) -> bool {
    let py = format!(
        "import socket,sys\ntry:\n s=socket.create_connection(('{ip}',{port}),timeout=2); s.sendall(b'plinth-payload'); d=s.recv(100); print('GOT',d.decode())\nexcept Exception as e: print('ERR',e)"
    );
    let (_, out) = sh(&format!("ip netns exec {from} python3 -c \"{py}\""));
    out.contains("GOT plinth-payload")
}

fn ping(from: &str, ip: &str, size: u32) -> bool {
    sh(&format!("ip netns exec {from} ping -c 1 -W 2 -M do -s {size} {ip}")).0
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The data path as it reads back (links without counters, FDB, neighbours, ruleset).
/// The command lines of the processes whose network namespace has inode `ino`.
fn processes_in_netns(ino: u64) -> Vec<String> {
    let want = format!("net:[{ino}]");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = e.path();
        if std::fs::read_link(pid.join("ns/net")).is_ok_and(|l| l.to_string_lossy() == want) {
            let args = std::fs::read(pid.join("cmdline")).unwrap_or_default();
            out.push(String::from_utf8_lossy(&args).replace('\0', " "));
        }
    }
    out
}

fn readback(host: &Host, vni: u32) -> String {
    let ns = host.vpc_ns(vni);
    let keep = "import json,sys; l=json.load(sys.stdin); print(json.dumps([{k: x.get(k) for k in ('ifname','address','mtu','flags','master','ifindex')} | {'kind': x.get('linkinfo',{}).get('info_kind'), 'id': x.get('linkinfo',{}).get('info_data',{}).get('id')} for x in l], sort_keys=True))";
    let links = must(&format!("ip -n {ns} -j -d link show | python3 -c \"{keep}\""));
    let fdb = must(&format!(
        "bridge -n {ns} -j fdb show | python3 -c \"import json,sys; print(sorted(json.dumps(e, sort_keys=True) for e in json.load(sys.stdin) if e.get('state') == 'permanent'))\""
    ));
    let neigh = must(&format!("ip -n {ns} -j neigh show nud permanent"));
    let nft = must(&format!("ip netns exec {ns} nft -j list ruleset"));
    format!("{links}\n{fdb}\n{neigh}\n{nft}")
}

/// [`readback`] with set elements sorted (a hash set lists its elements in an order that
/// depends on how they were added: one by one, or in one batch) and nft handles dropped
/// (a table replaced whole gets new ones).
fn readback_sorted(host: &Host, vni: u32) -> String {
    let all = readback(host, vni);
    let (l2, nft) = all.trim_end().rsplit_once('\n').expect("four parts");
    let sort = "import json,sys\nv=json.load(sys.stdin)\nfor o in v['nftables']:\n  for x in o.values(): x.pop('handle', None)\n  s=o.get('set') or o.get('map')\n  if s and 'elem' in s: s['elem']=sorted(s['elem'], key=lambda e: json.dumps(e, sort_keys=True))\nprint(json.dumps(v, sort_keys=True))";
    let path = std::env::temp_dir().join(format!("plinth-nft-{}.json", std::process::id()));
    std::fs::write(&path, nft).expect("temp file");
    let sorted = must(&format!("python3 -c \"{sort}\" < {}", path.display()));
    let _ = std::fs::remove_file(&path);
    format!("{l2}\n{sorted}")
}

/// The links, FDB and neighbours only (a restarted agent reloads the ruleset whole).
fn readback_l2(host: &Host, vni: u32) -> String {
    let all = readback(host, vni);
    let all = all.trim_end();
    all.rsplit_once('\n').map_or(all.to_owned(), |(l2, _)| l2.to_owned())
}

#[test]
fn two_hosts_carry_a_vpc() {
    if !is_root() {
        eprintln!("SKIP: network_datapath needs root (network namespaces, nftables)");
        return;
    }
    let tag = format!("nd{}-", std::process::id() % 100000);
    let mut lab = Lab { tag: tag.clone(), namespaces: vec![], dirs: vec![], children: vec![] };
    let fabric = format!("{tag}fab");
    must(&format!("ip netns add {fabric}"));
    lab.namespaces.push(fabric.clone());
    must(&format!("ip -n {fabric} link add fbr type bridge && ip -n {fabric} link set fbr up"));
    let mut hosts = Vec::new();
    for i in 0..2usize {
        let ns = format!("{tag}h{i}");
        must(&format!("ip netns add {ns}"));
        lab.namespaces.push(ns.clone());
        let underlay = format!("192.168.173.{}", 10 + i);
        must(&format!(
            "ip -n {fabric} link add f{i} type veth peer name up0 netns {ns} && ip -n {fabric} link set f{i} master fbr up \
             && ip -n {ns} link set up0 up && ip -n {ns} link set lo up && ip -n {ns} addr add {underlay}/24 dev up0"
        ));
        let dir = std::env::temp_dir().join(format!("{tag}state{i}"));
        lab.dirs.push(dir.clone());
        let prefix = format!("{tag}v{i}-");
        let backend = Arc::new(LinuxBridge::new(NetworkConfig {
            provider_bridge: None,
            counter_period: Duration::from_secs(30),
            underlay_ip: underlay.clone(),
            netns_prefix: prefix.clone(),
            state_dir: dir.clone(),
            owner: dir.display().to_string(),
        }));
        hosts.push(Host { ns, backend, prefix, underlay });
    }
    let hs: Vec<&Host> = hosts.iter().collect();

    // Groups: 1 = default (egress all, ingress from members), 2 = "locked" (egress all, no
    // ingress yet).
    let nics = vec![
        Nic { name: "a", host: 0, subnet: 0, ip: "10.73.0.10", mac: "02:73:00:00:00:0a", port: 1, groups: vec!["1"] },
        Nic { name: "b", host: 0, subnet: 0, ip: "10.73.0.11", mac: "02:73:00:00:00:0b", port: 2, groups: vec!["1"] },
        Nic { name: "c", host: 1, subnet: 0, ip: "10.73.0.12", mac: "02:73:00:00:00:0c", port: 3, groups: vec!["1"] },
        Nic { name: "d", host: 1, subnet: 1, ip: "10.73.1.10", mac: "02:73:00:00:01:0a", port: 4, groups: vec!["1"] },
        Nic { name: "e", host: 0, subnet: 0, ip: "10.73.0.13", mac: "02:73:00:00:00:0e", port: 5, groups: vec!["2"] },
        // A VM's NIC: a persistent tap the runtime opens.
        Nic { name: "t", host: 0, subnet: 0, ip: "10.73.0.20", mac: "02:73:00:00:00:20", port: 6, groups: vec!["1"] },
    ];
    let members1 = vec!["10.73.0.10", "10.73.0.11", "10.73.0.12", "10.73.1.10", "10.73.0.20"];
    let default_group = group(
        1,
        vec![
            rule(11, Direction::Egress, RuleProtocol::Any, None, None, None),
            rule(12, Direction::Ingress, RuleProtocol::Any, None, None, Some(1)),
        ],
        members1.clone(),
    );
    let locked = |extra: Vec<RuleSpec>| {
        let mut rules = vec![rule(21, Direction::Egress, RuleProtocol::Any, None, None, None)];
        rules.extend(extra);
        group(2, rules, vec!["10.73.0.13"])
    };
    let groups_v1 = vec![default_group.clone(), locked(vec![])];

    let t0 = Instant::now();
    for (h, host) in hosts.iter().enumerate() {
        let o = host.apply(&spec(1, h, &hs, &nics, &groups_v1));
        all_applied(&o);
        assert_eq!(o.nics.len(), nics.iter().filter(|n| n.host == h).count());
    }
    eprintln!("first apply on both hosts: {:?}", t0.elapsed());

    // The tap: a port of br0, opened through the TapOpener (carrier comes with the fd).
    let vpc0 = hosts[0].vpc_ns(VNI);
    let tap_link = must(&format!("ip -n {vpc0} -o link show dev nt"));
    assert!(tap_link.contains("master br0") && tap_link.contains("NO-CARRIER"), "tap before open: {tap_link}");
    let fd = hosts[0].backend.open_tap(VNI, "nt").expect("open the tap");
    let tap_link = must(&format!("ip -n {vpc0} -o link show dev nt"));
    assert!(tap_link.contains("LOWER_UP") && tap_link.contains("mtu 1450"), "tap after open: {tap_link}");
    drop(fd);
    let missing = hosts[0].backend.open_tap(VNI, "nomissing");
    assert!(missing.is_err(), "opening a tap that does not exist must fail");
    assert!(!sh(&format!("ip -n {vpc0} link show dev nomissing")).0, "opening a missing tap must not create one");

    // Spare taps: host 0 (a tap NIC) keeps two made and guarded, detached and down; host 1
    // (veths only) keeps none. The next tap NIC's port is a spare renamed (same ifindex,
    // guard already on), and the spares are made again.
    let link = |ns: &str, dev: &str| -> serde_json::Value {
        let out = must(&format!("ip -n {ns} -j link show dev {dev}"));
        serde_json::from_str::<serde_json::Value>(&out).expect("ip -j")[0].clone()
    };
    let spares_ready = |ns: &str| {
        for sp in ["sp0", "sp1"] {
            let l = link(ns, sp);
            assert!(l["master"].is_null(), "{sp} is on no bridge: {l}");
            assert!(!l["flags"].as_array().expect("flags").iter().any(|f| f == "UP"), "{sp} is down: {l}");
            assert!(guard::present(ns, sp).expect("query"), "{sp} carries the guard");
        }
    };
    spares_ready(&vpc0);
    let vpc1 = hosts[1].vpc_ns(VNI);
    let taps1 = must(&format!("ip -n {vpc1} -o link show type tun"));
    assert!(taps1.trim().is_empty(), "a host without tap NICs keeps no spare taps: {taps1}");
    let spare_index = link(&vpc0, "sp0")["ifindex"].clone();
    let mut more = nics.clone();
    more.push(Nic {
        name: "tu",
        host: 0,
        subnet: 0,
        ip: "10.73.0.21",
        mac: "02:73:00:00:00:21",
        port: 7,
        groups: vec!["1"],
    });
    all_applied(&hosts[0].apply_change(&spec(1, 0, &hs, &more, &groups_v1)));
    let taken = link(&vpc0, "ntu");
    assert_eq!(taken["ifindex"], spare_index, "the new NIC's port is the spare sp0 renamed: {taken}");
    assert_eq!(taken["master"], "br0", "{taken}");
    assert_eq!(guard::attached(&vpc0, "ntu").expect("query"), vec![guard::NAME], "one guard on the taken spare");
    spares_ready(&vpc0);
    assert_ne!(link(&vpc0, "sp0")["ifindex"], spare_index, "sp0 was made again");
    // A change apply writes the new NIC's DHCP entry (and removes it with the NIC) without
    // reading the hosts directory back.
    let entry = lab.dirs[0].join(&vpc0).join("br0.hosts").join(uuid(1007));
    assert_eq!(std::fs::read_to_string(&entry).expect("tu's DHCP entry"), "02:73:00:00:00:21,10.73.0.21,guest-tu\n");
    all_applied(&hosts[0].apply_change(&spec(1, 0, &hs, &nics, &groups_v1)));
    assert!(!sh(&format!("ip -n {vpc0} link show dev ntu")).0, "the removed NIC's port went");
    assert!(!entry.exists(), "the removed NIC's DHCP entry went");

    let dhcp_opts = std::env::temp_dir().join(format!("{tag}dhcp-opts"));
    // Guests: move each veth far end into its own namespace.
    for n in nics.iter().filter(|n| !n.name.starts_with('t')) {
        let g = format!("{tag}g{}", n.name);
        must(&format!("ip netns add {g}"));
        lab.namespaces.push(g.clone());
        let vpc = hosts[n.host].vpc_ns(VNI);
        must(&format!(
            "ip -n {vpc} link set n{}g netns {g} && ip -n {g} link set n{}g name eth0 && ip -n {g} link set lo up && ip -n {g} link set eth0 up",
            n.name, n.name
        ));
        if n.name == "a" {
            // DHCP: busybox udhcpc with a script that applies address, MTU and router, and
            // notes the DNS options.
            let script = std::env::temp_dir().join(format!("{tag}udhcpc.sh"));
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add $ip/$mask dev $interface\n[ -n \"$mtu\" ] && ip link set $interface mtu $mtu\nfor r in $router; do ip route add default via $r; done\necho \"dns=$dns domain=$domain search=$search\" > {}\n",
                    dhcp_opts.display()
                ),
            )
            .expect("script");
            must(&format!("chmod +x {}", script.display()));
            let out = must(&format!(
                "ip netns exec {g} busybox udhcpc -i eth0 -n -q -t 5 -T 1 -O search -s {} 2>&1",
                script.display()
            ));
            let _ = std::fs::remove_file(&script);
            let addr = must(&format!("ip -n {g} -4 -o addr show dev eth0"));
            assert!(addr.contains("10.73.0.10/24"), "DHCP gave no address: {addr}\n{out}");
            let link = must(&format!("ip -n {g} -o link show dev eth0"));
            assert!(link.contains("mtu 1450"), "DHCP gave no MTU 1450: {link}");
            let opts = std::fs::read_to_string(&dhcp_opts).expect("the DHCP options noted");
            assert_eq!(opts.trim(), "dns=10.73.0.1 domain=lab.internal search=lab.internal", "DHCP's DNS options");
        } else {
            let gw = format!("10.73.{}.1", n.subnet);
            must(&format!(
                "ip -n {g} link set eth0 mtu 1450 && ip -n {g} addr add {}/24 dev eth0 && ip -n {g} route add default via {gw}",
                n.ip
            ));
        }
        // An echo server on 5000 and 5001.
        for port in [5000, 5001] {
            let py = format!(
                "import socket,threading\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('0.0.0.0',{port})); s.listen(16)\ndef h(c):\n  while True:\n    d=c.recv(4096)\n    if not d: break\n    c.sendall(d)\nwhile True:\n  c,_=s.accept(); threading.Thread(target=h,args=(c,),daemon=True).start()"
            );
            lab.children
                .push(Command::new("ip").args(["netns", "exec", &g, "python3", "-c", &py]).spawn().expect("server"));
        }
    }
    let g = |n: &str| format!("{tag}g{n}");
    wait_for("echo servers", Duration::from_secs(10), || tcp(&g("b"), "10.73.0.11", 5000));

    // Reachability.
    assert!(tcp(&g("a"), "10.73.0.11", 5000), "same subnet, same host");
    assert!(tcp(&g("a"), "10.73.0.12", 5000), "same subnet, across hosts");
    assert!(tcp(&g("a"), "10.73.1.10", 5000), "across subnets and hosts");
    assert!(tcp(&g("c"), "10.73.1.10", 5000), "across subnets, same host");
    assert!(tcp(&g("d"), "10.73.0.11", 5000), "across subnets, back");
    assert!(ping(&g("a"), "10.73.0.12", 56), "ping across hosts");
    assert!(ping(&g("a"), "10.73.0.1", 56), "ping the gateway");

    // DNS on the gateway: the VPC's names, local and remote, by full and bare name; a name
    // outside the VPC's domain is not answered.
    let lookup = |name: &str| {
        let (ok, out) = sh(&format!("ip netns exec {} busybox nslookup {name} 10.73.0.1", g("a")));
        ok.then(|| out.lines().filter_map(|l| l.strip_prefix("Address: ")).map(str::to_owned).collect::<Vec<_>>())
    };
    assert_eq!(lookup("guest-d.lab.internal"), Some(vec!["10.73.1.10".to_string()]), "a remote NIC by its full name");
    assert_eq!(lookup("guest-b"), Some(vec!["10.73.0.11".to_string()]), "a local NIC by its bare name");
    assert_eq!(lookup("guest-zz.lab.internal"), None, "control: an unknown name has no answer");
    let _ = std::fs::remove_file(&dhcp_opts);

    // No unknown-unicast flooding into NIC ports: a frame from a to a MAC no NIC has (but
    // to b's address, which b's groups let in) never reaches b; the same frame to b's MAC
    // does (control: the sniffer sees what arrives). A flooded port costs every NIC of the
    // subnet a copy of every such frame (at 1,000 NICs per host it starved the host).
    let sniff = |guest: String, out: PathBuf| {
        let py = format!(
            "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x0800)); s.bind(('eth0',0))\nn={{}}\nwhile True:\n  f=s.recv(2048)\n  if f[42:50]==b'plinthfl':\n    d=f[0:6].hex(); n[d]=n.get(d,0)+1; open('{o}','w').write(repr(n))",
            o = out.display()
        );
        Command::new("ip").args(["netns", "exec", &guest, "python3", "-c", &py]).spawn().expect("sniffer")
    };
    // The sniffers' counts, in a directory removed with the test.
    let sniffed = tempfile::tempdir().expect("tempdir");
    let seen_file = sniffed.path().join(format!("{tag}flood-seen"));
    lab.children.push(sniff(g("b"), seen_file.clone()));
    let frame = |dst_mac: &str| {
        // Ethernet to dst_mac from a's MAC, IPv4 10.73.0.10 → 10.73.0.11, UDP 4000 → 5000.
        let py = format!(
            "import socket,struct\ndef ck(h):\n  s=sum(struct.unpack('!10H',h)); s=(s>>16)+(s&0xffff); return (~(s+(s>>16)))&0xffff\nu=struct.pack('!HHHH',4000,5000,16,0)+b'plinthfl'\nip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(u),1,0,64,17,0,socket.inet_aton('10.73.0.10'),socket.inet_aton('10.73.0.11'))\nip=ip[:10]+struct.pack('!H',ck(ip))+ip[12:]\ne=bytes.fromhex('{d}')+bytes.fromhex('02730000000a')+b'\\x08\\x00'\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind(('eth0',0))\nfor _ in range(5): s.send(e+ip+u)",
            d = dst_mac.replace(':', "")
        );
        must(&format!("ip netns exec {} python3 -c \"{py}\"", g("a")));
    };
    let seen = || std::fs::read_to_string(&seen_file).unwrap_or_default();
    let to_b = || {
        seen()
            .split("'02730000000b': ")
            .nth(1)
            .and_then(|r| r.split(['}', ',']).next()?.trim().parse::<u32>().ok())
            .unwrap_or(0)
    };
    wait_for("the sniffer in b", Duration::from_secs(10), || {
        frame("02:73:00:00:00:0b");
        seen().contains("02730000000b")
    });
    // (Counted from here: the sniffer may have started in the middle of a burst.)
    let before = to_b();
    frame("02:73:00:00:00:77");
    frame("02:73:00:00:00:0b");
    wait_for("the second control frames", Duration::from_secs(5), || to_b() >= before + 5);
    assert!(!seen().contains("027300000077"), "a frame to an unknown MAC was flooded into b's port: {}", seen());
    // Control: with flooding turned back on by hand, the same frame does reach b; the next
    // apply repairs that drift.
    must(&format!("bridge -n {vpc0} link set dev nb flood on"));
    wait_for("the unknown-MAC frame, flooded", Duration::from_secs(5), || {
        frame("02:73:00:00:00:77");
        seen().contains("027300000077")
    });
    all_applied(&hosts[0].apply(&spec(1, 0, &hs, &nics, &groups_v1)));
    let port = must(&format!("ip -n {vpc0} -j -d link show dev nb"));
    assert!(port.contains("\"flood\":false"), "the apply turned flooding off again: {port}");

    // ARP requests reach a port with port security only when they ask for its address: a
    // broadcast request from a for an address nobody has never reaches b; the same request
    // for b's address does (control). Every request copied into every port costs a host of
    // 1,000 NICs 1,000 copies (the VXLAN device's copy, flooded last, was lost).
    let arp_seen_file = sniffed.path().join(format!("{tag}arp-seen"));
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x0806)); s.bind(('eth0',0))\nn={{}}\nwhile True:\n  f,a=s.recvfrom(2048)\n  if a[2]!=socket.PACKET_OUTGOING and f[20:22]==b'\\x00\\x01':\n    t=socket.inet_ntoa(f[38:42])+'/'+f[32:38].hex(); n[t]=n.get(t,0)+1; open('{o}','w').write(repr(n))",
        o = arp_seen_file.display()
    );
    lab.children
        .push(Command::new("ip").args(["netns", "exec", &g("b"), "python3", "-c", &py]).spawn().expect("arp sniffer"));
    // The target MAC field (ignored in a request) tags each batch.
    let arp_request = |target: &str, tag: &str| {
        let py = format!(
            "import socket\nm=bytes.fromhex('02730000000a')\na=b'\\x00\\x01\\x08\\x00\\x06\\x04\\x00\\x01'+m+socket.inet_aton('10.73.0.10')+bytes.fromhex('{tag}')+socket.inet_aton('{target}')\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind(('eth0',0))\nfor _ in range(3): s.send(b'\\xff'*6+m+b'\\x08\\x06'+a)"
        );
        must(&format!("ip netns exec {} python3 -c \"{py}\"", g("a")));
    };
    let arp_seen = || std::fs::read_to_string(&arp_seen_file).unwrap_or_default();
    wait_for("a request for b's address, at b", Duration::from_secs(10), || {
        arp_request("10.73.0.11", "000000000001");
        arp_seen().contains("10.73.0.11/000000000001")
    });
    arp_request("10.73.0.77", "000000000002");
    arp_request("10.73.0.11", "000000000003");
    // The request for nobody went first on the same path as the control that followed it.
    wait_for("the control request", Duration::from_secs(5), || arp_seen().contains("10.73.0.11/000000000003"));
    assert!(!arp_seen().contains("10.73.0.77"), "an ARP request for another address reached b's port: {}", arp_seen());
    // Control: with b's port taken out of the secured set by hand, the same request reaches
    // b; the next apply repairs that drift.
    must(&format!("ip netns exec {vpc0} nft delete element bridge plinth secured '{{ \"nb\" }}'"));
    wait_for("the request for nobody, with b unsecured", Duration::from_secs(5), || {
        arp_request("10.73.0.77", "000000000004");
        arp_seen().contains("10.73.0.77/000000000004")
    });
    all_applied(&hosts[0].apply(&spec(1, 0, &hs, &nics, &groups_v1)));
    let secured = must(&format!("ip netns exec {vpc0} nft list set bridge plinth secured"));
    assert!(secured.contains("\"nb\""), "the apply put b back in the secured set: {secured}");

    // MTU: 1422 bytes of ICMP payload + 28 = 1450 crosses; 1423 does not.
    assert!(ping(&g("b"), "10.73.0.12", 1422), "1422-byte DF ping across hosts");
    assert!(!ping(&g("b"), "10.73.0.12", 1423), "1423-byte DF ping must not fit");

    // Security groups: e accepts nothing yet (control: e can reach a, a's group allows
    // ingress only from members... e is not one; so use b→e vs b→a).
    assert!(!tcp(&g("b"), "10.73.0.13", 5000), "locked NIC must refuse new inbound TCP");
    assert!(tcp(&g("b"), "10.73.0.10", 5000), "control: the same client reaches a NIC whose group allows it");
    let groups_v2 = vec![
        default_group.clone(),
        locked(vec![rule(22, Direction::Ingress, RuleProtocol::Tcp, Some((5000, 5000)), Some("10.73.0.0/24"), None)]),
    ];
    for (h, host) in hosts.iter().enumerate() {
        all_applied(&host.apply(&spec(2, h, &hs, &nics, &groups_v2)));
    }
    assert!(tcp(&g("b"), "10.73.0.13", 5000), "allowed by the new rule");
    assert!(!tcp(&g("b"), "10.73.0.13", 5001), "port 5001 still refused");
    assert!(tcp(&g("c"), "10.73.0.13", 5000), "allowed by the rule across hosts");
    assert!(!tcp(&g("d"), "10.73.0.13", 5000), "10.73.1.0/24 is outside the rule's CIDR");

    // An established flow the rule allowed is cut when the rule goes; a flow still
    // allowed keeps running.
    let flow = |from: &str, ip: &str, file: &Path| {
        let py = format!(
            "import socket,time\ns=socket.create_connection(('{ip}',5000),timeout=3)\nn=0\nwhile True:\n  try:\n    s.sendall(b'x'); s.settimeout(1); d=s.recv(10)\n    if not d: raise Exception('closed')\n    n+=1; open('{}','w').write('ok %d' % n)\n  except Exception as e:\n    open('{}','w').write('cut'); break\n  time.sleep(0.1)",
            file.display(),
            file.display()
        );
        Command::new("ip").args(["netns", "exec", from, "python3", "-c", &py]).spawn().expect("flow")
    };
    let f_cut = std::env::temp_dir().join(format!("{tag}flow-cut"));
    let f_keep = std::env::temp_dir().join(format!("{tag}flow-keep"));
    let mut p1 = flow(&g("b"), "10.73.0.13", &f_cut);
    let mut p2 = flow(&g("b"), "10.73.0.12", &f_keep);
    let read = |f: &Path| std::fs::read_to_string(f).unwrap_or_default();
    wait_for("both flows running", Duration::from_secs(5), || {
        read(&f_cut).starts_with("ok") && read(&f_keep).starts_with("ok")
    });
    for (h, host) in hosts.iter().enumerate() {
        all_applied(&host.apply(&spec(3, h, &hs, &nics, &groups_v1)));
    }
    let removed = Instant::now();
    wait_for("the flow to be cut", Duration::from_secs(5), || read(&f_cut) == "cut");
    eprintln!("established flow cut {:?} after the rule removal was applied", removed.elapsed());
    let before: u32 = read(&f_keep).trim_start_matches("ok ").parse().unwrap_or(0);
    wait_for("the allowed flow to keep running", Duration::from_secs(5), || {
        read(&f_keep).trim_start_matches("ok ").parse::<u32>().unwrap_or(0) > before + 5
    });
    let _ = p1.kill();
    let _ = p2.kill();
    let _ = p1.wait();
    let _ = p2.wait();
    let _ = std::fs::remove_file(&f_cut);
    let _ = std::fs::remove_file(&f_keep);

    // Idempotence: a second apply of the same spec changes nothing that reads back.
    let spec3: Vec<HostNetworkSpec> = (0..2).map(|h| spec(3, h, &hs, &nics, &groups_v1)).collect();
    let r1 = readback(&hosts[0], VNI);
    all_applied(&hosts[0].apply(&spec3[0]));
    assert!(r1 == readback(&hosts[0], VNI), "a re-apply changed the data path");

    // A change applied as a change (the difference only, nothing read back) leaves exactly
    // what a verifying apply of the same spec leaves: a NIC and a rule added, then both
    // removed again.
    let mut plus = nics.clone();
    plus.push(Nic {
        name: "x",
        host: 0,
        subnet: 0,
        ip: "10.73.0.14",
        mac: "02:73:00:00:00:14",
        port: 7,
        groups: vec!["1"],
    });
    let mut states = vec![readback_sorted(&hosts[0], VNI)];
    for (what, nics, groups) in [("a NIC and a rule added", &plus, &groups_v2), ("both removed", &nics, &groups_v1)] {
        let s = spec(3, 0, &hs, nics, groups);
        all_applied(&hosts[0].apply_change(&s));
        let changed = readback_sorted(&hosts[0], VNI);
        all_applied(&hosts[0].apply(&s));
        let verified = readback_sorted(&hosts[0], VNI);
        assert!(
            changed == verified,
            "{what}: the change apply left another state than a verification\n{changed}\n---\n{verified}"
        );
        states.push(verified);
    }
    assert!(states[1] != states[0], "control: the comparison sees the added NIC and rule");
    assert!(states[2] == states[0], "removing them again returns to the state before");

    // A verification that uses a survey (its reads, taken beside changes): a change applied
    // after the survey began writes a set the survey read before it; the verification
    // trusts that set to the change, replaces nothing (the tables keep their handles) and
    // leaves what a verification that reads for itself leaves.
    let tables = || must(&format!("ip netns exec {vpc0} nft -j list tables"));
    let kept = tables();
    let with_rule = spec(3, 0, &hs, &nics, &groups_v2);
    assert!(hosts[0].survey(&spec3[0]), "the Linux bridge keeps surveys");
    all_applied(&hosts[0].apply_change(&with_rule));
    all_applied(&hosts[0].apply(&with_rule));
    assert!(tables() == kept, "the verification after a survey replaced the tables:\n{kept}\n---\n{}", tables());
    let surveyed = readback_sorted(&hosts[0], VNI);
    all_applied(&hosts[0].apply(&with_rule));
    assert!(surveyed == readback_sorted(&hosts[0], VNI), "a verification without a survey changed the data path");
    assert!(tcp(&g("b"), "10.73.0.13", 5000), "the rule the change added holds after the verification");
    // Drift made before a survey is repaired by the verification that uses it: b's port
    // flooding again, out of the secured set, and its DHCP host entry gone, all by hand
    // (control: each reads back).
    let dhcp_hosts = lab.dirs[0].join(&vpc0).join("br0.hosts");
    let entries = || std::fs::read_dir(&dhcp_hosts).map(|d| d.count()).unwrap_or(0);
    let dhcp_before = entries();
    must(&format!("bridge -n {vpc0} link set dev nb flood on"));
    must(&format!("ip netns exec {vpc0} nft delete element bridge plinth secured '{{ \"nb\" }}'"));
    must(&format!("rm {}/{}", dhcp_hosts.display(), uuid(1000 + 2)));
    let secured = || must(&format!("ip netns exec {vpc0} nft list set bridge plinth secured"));
    let flooding = || must(&format!("ip -n {vpc0} -j -d link show dev nb")).contains("\"flood\":true");
    assert!(!secured().contains("\"nb\"") && flooding(), "control: the drift reads back");
    assert_eq!(entries(), dhcp_before - 1, "control: one DHCP host entry fewer");
    assert!(hosts[0].survey(&spec3[0]));
    all_applied(&hosts[0].apply(&spec3[0]));
    assert!(secured().contains("\"nb\"") && !flooding(), "the verification after a survey repaired the drift");
    assert_eq!(entries(), dhcp_before, "the verification after a survey wrote the DHCP entry again");
    assert!(!tcp(&g("b"), "10.73.0.13", 5000), "the rule is gone again");

    // An agent restart (a fresh backend, nothing remembered) tears nothing down: links, FDB
    // and neighbours read back the same, and an established flow survives.
    let f_keep = std::env::temp_dir().join(format!("{tag}flow-restart"));
    let mut p3 = flow(&g("a"), "10.73.0.12", &f_keep);
    wait_for("a flow across hosts", Duration::from_secs(5), || read(&f_keep).starts_with("ok"));
    let l2 = readback_l2(&hosts[0], VNI);
    let restarted = Host {
        ns: hosts[0].ns.clone(),
        backend: Arc::new(LinuxBridge::new(NetworkConfig {
            provider_bridge: None,
            counter_period: Duration::from_secs(30),
            underlay_ip: hosts[0].underlay.clone(),
            netns_prefix: hosts[0].prefix.clone(),
            state_dir: lab.dirs[0].clone(),
            owner: lab.dirs[0].display().to_string(),
        })),
        prefix: hosts[0].prefix.clone(),
        underlay: hosts[0].underlay.clone(),
    };
    all_applied(&restarted.apply(&spec3[0]));
    assert!(l2 == readback_l2(&hosts[0], VNI), "a restarted agent changed links, FDB or neighbours");
    let before: u32 = read(&f_keep).trim_start_matches("ok ").parse().unwrap_or(0);
    wait_for("the flow to keep running across the restart", Duration::from_secs(5), || {
        read(&f_keep).trim_start_matches("ok ").parse::<u32>().unwrap_or(0) > before + 5
    });
    let _ = p3.kill();
    let _ = p3.wait();
    let _ = std::fs::remove_file(&f_keep);

    // Drift: a bridge deleted and the filter flushed by hand come back on the next apply.
    must(&format!("ip -n {vpc0} link del br0 && ip netns exec {vpc0} nft flush table inet plinth"));
    assert!(!tcp(&g("a"), "10.73.0.11", 5000), "control: the deleted bridge breaks a→b");
    let o = hosts[0].apply(&spec3[0]);
    all_applied(&o);
    assert!(tcp(&g("a"), "10.73.0.11", 5000), "a→b after the repair");
    assert!(!tcp(&g("b"), "10.73.0.13", 5000), "the locked NIC is filtered again after the repair");

    // Fail closed: with the whole ruleset flushed by hand nothing is forwarded (the guard at
    // each port's and VXLAN device's egress drops what no rule marked as passed). Control:
    // with the guards of a's and b's ports detached, the same flushed ruleset lets a→b in.
    let guarded =
        ["na", "nb", "ne", "nt"].map(str::to_owned).into_iter().chain((1..=2).map(|i| format!("vx{}", VNI + i)));
    let guarded: Vec<String> = guarded.collect();
    for d in &guarded {
        assert!(guard::present(&vpc0, d).expect("query"), "{d} carries the guard");
    }
    must(&format!("ip netns exec {vpc0} nft flush ruleset"));
    assert!(!tcp(&g("a"), "10.73.0.11", 5000), "flushed ruleset: a→b is dropped at b's port");
    assert!(!tcp(&g("a"), "10.73.0.12", 5000), "flushed ruleset: nothing leaves through the VXLAN device");
    assert!(!tcp(&g("b"), "10.73.0.13", 5000), "flushed ruleset: the locked NIC stays unreachable");
    for d in ["na", "nb"] {
        assert_eq!(guard::detach(&vpc0, d).expect("detach"), 1, "one guard on {d}");
    }
    assert!(tcp(&g("a"), "10.73.0.11", 5000), "control: without the guards the flushed ruleset lets a→b through");
    all_applied(&hosts[0].apply(&spec3[0]));
    for d in &guarded {
        assert_eq!(guard::attached(&vpc0, d).expect("query"), vec![guard::NAME], "the apply left one guard on {d}");
    }
    assert!(tcp(&g("a"), "10.73.0.11", 5000), "a→b after the repair");
    assert!(tcp(&g("a"), "10.73.0.12", 5000), "a→c across hosts after the repair");
    assert!(!tcp(&g("b"), "10.73.0.13", 5000), "the locked NIC is filtered again after the repair");

    // Fail closed: a batch the kernel refuses (a NIC with an address nft rejects) leaves
    // the old ruleset; the NICs whose rules did not change stay applied, the new NIC is
    // not plugged.
    let mut bad = spec3[0].clone();
    let mut f = bad.vpcs[0].nics[0].clone();
    f.nic_id = NicId(uuid(1099));
    f.device = "nf".into();
    f.port = 99;
    f.mac = "02:73:00:00:00:99".into();
    f.ipv4 = "10.73.0.999".into();
    bad.vpcs[0].nics.push(f.clone());
    let o = hosts[0].apply(&bad);
    for n in &o.nics {
        let filter = n.components.iter().find(|c| c.component == NicComponent::Filter).expect("filter");
        if n.nic_id == f.nic_id {
            assert!(!filter.applied && filter.detail.as_deref().is_some_and(|d| d.contains("nft")), "{filter:?}");
            let port = n.components.iter().find(|c| c.component == NicComponent::BridgePort).expect("port");
            assert!(!port.applied, "a NIC without loaded rules must not be plugged");
        } else {
            assert!(filter.applied, "NIC {} lost its filter: {filter:?}", n.nic_id);
        }
    }
    assert!(!must(&format!("ip -n {vpc0} -o link show dev nf")).contains("master"), "nf must not be a bridge port");
    assert!(tcp(&g("a"), "10.73.0.11", 5000), "the old ruleset still carries a→b");
    assert!(!tcp(&g("b"), "10.73.0.13", 5000), "the old ruleset still filters the locked NIC");
    all_applied(&hosts[0].apply(&spec3[0]));

    // Anti-spoofing: b takes another address, then another MAC.
    assert!(tcp(&g("b"), "10.73.0.12", 5000), "control: b reaches c before spoofing");
    must(&format!("ip -n {} addr add 10.73.0.99/24 dev eth0", g("b")));
    let py = "import socket\ntry:\n s=socket.socket(); s.bind(('10.73.0.99',0)); s.settimeout(2); s.connect(('10.73.0.12',5000)); s.sendall(b'plinth-payload'); print('GOT', s.recv(100).decode())\nexcept Exception as e: print('ERR', e)";
    let (_, out) = sh(&format!("ip netns exec {} python3 -c \"{py}\"", g("b")));
    assert!(!out.contains("GOT"), "a spoofed source address must be dropped: {out}");
    must(&format!("ip -n {} addr del 10.73.0.99/24 dev eth0", g("b")));
    assert!(tcp(&g("b"), "10.73.0.12", 5000), "control: b reaches c with its own address");
    must(&format!("ip -n {} link set eth0 address 02:73:00:00:00:99", g("b")));
    must(&format!("ip -n {} neigh flush all", g("b")));
    assert!(!tcp(&g("b"), "10.73.0.12", 5000), "a spoofed MAC must be dropped");
    must(&format!("ip -n {} link set eth0 address 02:73:00:00:00:0b", g("b")));

    // Teardown: an empty spec removes everything of the VPC. Control first: the VPC
    // namespace holds a process now (the agent's kept `nft`), so the scan after teardown
    // can find one left behind holding a deleted namespace alive.
    let vpc_inodes: Vec<u64> = hosts.iter().map(|h| ns_inode(&h.vpc_ns(VNI))).collect();
    assert!(
        vpc_inodes.iter().all(|i| !processes_in_netns(*i).is_empty()),
        "control: a kept nft runs in each VPC namespace"
    );
    let empty = HostNetworkSpec { generation: 4, vpcs: vec![] };
    for host in &hosts {
        let o = host.apply(&empty);
        assert!(o.nics.is_empty());
    }
    for i in &vpc_inodes {
        let left = processes_in_netns(*i);
        assert!(left.is_empty(), "processes still hold a deleted VPC namespace: {left:?}");
    }
    let (_, list) = sh("ip netns list");
    for host in &hosts {
        assert!(!list.contains(&host.prefix), "a VPC namespace is left: {list}");
        let links = must(&format!("ip -n {} -o link show", host.ns));
        assert!(!links.contains("vx"), "a VXLAN device is left in the host namespace: {links}");
    }
    let (_, ps) = sh(&format!("ps -eo args | grep dnsmasq | grep {tag} | grep -v grep"));
    assert!(ps.trim().is_empty(), "a dnsmasq is left: {ps}");
    for d in &lab.dirs {
        let left: Vec<_> = std::fs::read_dir(d).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "state files are left: {left:?}");
    }
    drop(lab);
}

/// The filter's kept `nft` on its own, in a namespace of the test's: a batch is applied
/// as one transaction (a refused one changes nothing and answers `nft`'s own complaint,
/// not the marker's), later batches still go through, and a kept `nft` killed from
/// outside costs no batch (the next is loaded one-shot, and the one after starts a new
/// kept `nft`); past the cap, the ones used least recently are ended.
#[test]
fn the_kept_nft_applies_batches_whole_and_survives_its_death() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let ns = format!("pk{}", std::process::id());
    let lab = Lab { tag: ns.clone(), namespaces: vec![ns.clone()], dirs: vec![], children: vec![] };
    must(&format!("ip netns add {ns}"));
    must(&format!("ip netns exec {ns} nft 'table inet plinth {{ set s {{ type inet_service; flags interval; }}; }}'"));
    let elements = || {
        let out = must(&format!("ip netns exec {ns} nft -j list set inet plinth s"));
        let mut ports: Vec<u64> = Vec::new();
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        for item in v["nftables"].as_array().expect("array") {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                ports.push(e.as_u64().expect("a port"));
            }
        }
        ports.sort_unstable();
        ports
    };
    use plinth_agent::network::nft_shell::{self, Nft};
    let nft = Nft::kept();
    nft.load(&ns, "add element inet plinth s { 7000 }\nadd element inet plinth s { 7001 }\n").expect("first batch");
    assert_eq!(elements(), vec![7000, 7001]);
    let kept = processes_in_netns(ns_inode(&ns));
    assert!(kept.iter().any(|p| p.starts_with("nft -i")), "a kept nft runs in the namespace: {kept:?}");
    // Refused whole: 7002 is not added because 7999 cannot be deleted.
    let err = nft
        .load(&ns, "add element inet plinth s { 7002 }\ndelete element inet plinth s { 7999 }\n")
        .expect_err("deleting a missing element is refused");
    assert!(err.contains("7999") && !err.contains("plinth-sync"), "nft's own complaint: {err}");
    assert_eq!(elements(), vec![7000, 7001], "a refused batch changes nothing");
    nft.load(&ns, "delete element inet plinth s { 7000 }\n").expect("a batch after a refused one");
    assert_eq!(elements(), vec![7001]);
    // Killed from outside: the next batch still lands, and a kept nft runs again after.
    must(&format!("ip netns pids {ns} | xargs -r kill -9"));
    wait_for("the kept nft to die", Duration::from_secs(5), || processes_in_netns(ns_inode(&ns)).is_empty());
    nft.load(&ns, "add element inet plinth s { 7003 }\n").expect("a batch after the kept nft died");
    nft.load(&ns, "add element inet plinth s { 7004 }\n").expect("and the next");
    assert_eq!(elements(), vec![7001, 7003, 7004]);
    assert!(!processes_in_netns(ns_inode(&ns)).is_empty(), "a kept nft runs again");
    nft.close();
    assert!(processes_in_netns(ns_inode(&ns)).is_empty(), "closing ends the kept nft");
    // Kept at most `keep`: the ones used last stay open.
    let all: Vec<Nft> = (0..3).map(|_| Nft::kept()).collect();
    for (i, n) in all.iter().enumerate() {
        n.load(&ns, &format!("add element inet plinth s {{ {} }}\n", 7100 + i)).expect("a batch");
    }
    assert_eq!(processes_in_netns(ns_inode(&ns)).len(), 3, "control: three kept nft");
    nft_shell::trim(all.iter(), 1);
    assert_eq!(processes_in_netns(ns_inode(&ns)).len(), 1, "one stays");
    all[2].close();
    assert!(processes_in_netns(ns_inode(&ns)).is_empty(), "the one that stayed was the last used");
    drop(lab);
}

fn ns_inode(ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{ns}")).expect("namespace").ino()
}

/// The guard on its own: two namespaces joined by a veth, the guard at the egress of one
/// end. Without it a ping passes (control); with it an unmarked ping is dropped, one whose
/// packets carry the passed bit (set by an nft `output` rule) passes, and one marked with
/// every other bit is dropped. Attaching twice leaves one program; detaching removes it.
#[test]
fn the_guard_drops_what_lacks_the_passed_bit() {
    if !is_root() {
        eprintln!("SKIP: network_datapath needs root (network namespaces, BPF)");
        return;
    }
    let tag = format!("ng{}-", std::process::id() % 100000);
    let mut lab = Lab { tag: tag.clone(), namespaces: vec![], dirs: vec![], children: vec![] };
    let (x, y) = (format!("{tag}x"), format!("{tag}y"));
    for ns in [&x, &y] {
        must(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
        lab.namespaces.push(ns.clone());
    }
    // Permanent neighbours on both sides: the probe is the ping alone (no ARP to mark).
    must(&format!(
        "ip -n {x} link add x0 address 02:00:00:00:00:01 type veth peer name y0 address 02:00:00:00:00:02 netns {y} \
         && ip -n {x} addr add 10.99.0.1/24 dev x0 && ip -n {x} link set x0 up \
         && ip -n {y} addr add 10.99.0.2/24 dev y0 && ip -n {y} link set y0 up \
         && ip -n {x} neigh replace 10.99.0.2 lladdr 02:00:00:00:00:02 dev x0 nud permanent \
         && ip -n {y} neigh replace 10.99.0.1 lladdr 02:00:00:00:00:01 dev y0 nud permanent"
    ));
    let ping = || sh(&format!("ip netns exec {x} ping -c 1 -W 1 10.99.0.2")).0;
    assert!(ping(), "control: without the guard x pings y");
    assert_eq!(guard::attached(&x, "x0").expect("query"), Vec::<String>::new(), "no program before");
    assert!(!guard::present(&x, "x0").expect("query"));

    for _ in 0..2 {
        let r = guard::ensure(&x, &["x0".to_owned()]);
        assert!(r["x0"].is_ok(), "attach: {r:?}");
    }
    assert_eq!(guard::attached(&x, "x0").expect("query"), vec![guard::NAME.to_owned()], "attached twice: one program");
    assert!(guard::present(&x, "x0").expect("query"));
    assert!(!ping(), "the guard drops an unmarked packet");

    let mark = |m: &str| {
        must(&format!(
            "printf 'table inet t\\ndelete table inet t\\ntable inet t {{\\nchain o {{\\ntype filter hook output priority 0; policy accept;\\nmeta mark set {m}\\n}}\\n}}\\n' \
             | ip netns exec {x} nft -f -"
        ))
    };
    mark("0x80000000");
    assert!(ping(), "the guard passes a packet carrying the passed bit");
    mark("0x7fffffff");
    assert!(!ping(), "every other bit set: dropped");

    assert_eq!(guard::detach(&x, "x0").expect("detach"), 1);
    assert!(!guard::present(&x, "x0").expect("query"));
    assert!(ping(), "detached: a packet without the passed bit passes again");
    assert!(guard::attached(&x, "nosuchdev").is_err(), "a missing device is an error, not an empty answer");
    drop(lab);
}
