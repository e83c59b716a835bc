//! External connectivity end to end (issue 18): a real `plinth server` and two hosts
//! (network namespaces, each with its own `plinth agent` and a provider bridge), and a
//! provider namespace standing for the internet: its router holds the floating pool's
//! gateway (198.51.100.1) and an HTTP server on 203.0.113.10 answers each request with
//! the source address it saw. Guests are namespaces plugged into operator-bound NICs.
//! Every assertion is a connection made or refused, or what the far end saw.

mod common;

use common::labapi::*;
use common::netlab::*;
use common::until;
use serde_json::{Value, json};
use std::time::Duration;

/// Where the provider's HTTP server listens.
const ECHO_PORT: u16 = 80;

/// A guest: its namespace and NIC.
struct Guest {
    ns: String,
    nic: Value,
}

/// Waits until floating IP `fip` reads `state` (attached/detached) and returns it.
async fn fip_state(api: &Api, fip: &Value, state: &str) -> Value {
    let id = s(fip, "id");
    until(&format!("floating IP {id} to be {state}"), Duration::from_secs(60), || async {
        let f = api.get(&format!("/v1/floating-ips/{id}")).await;
        (f["state"] == state).then_some(f)
    })
    .await
}

/// Polls `f` (a blocking probe) until it gives `want` (15 s at most); answers it.
fn settle<T: PartialEq + std::fmt::Debug>(want: &T, mut f: impl FnMut() -> T) -> T {
    wait(&format!("the probe to give {want:?}"), Duration::from_secs(15), || {
        let got = f();
        (&got == want).then_some(got)
    })
}

/// A NIC's metered egress (internet, total) in bytes: the sum of its `egress_bytes`
/// records by class.
async fn egress(api: &Api, nic: &str) -> (u64, u64) {
    let mut sums = (0u64, 0u64);
    let mut cursor = String::new();
    loop {
        let page = api.get(&format!("/v1/usage?resource_id={nic}&meter=egress_bytes&limit=1000{cursor}")).await;
        for r in page["items"].as_array().into_iter().flatten() {
            let bytes = r["quantity_micros"].as_u64().unwrap_or(0) / 1_000_000;
            match r["dimension"].as_str() {
                Some("internet") => sums.0 += bytes,
                Some("all") => sums.1 += bytes,
                other => panic!("an egress record of class {other:?}: {r}"),
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return sums,
        }
    }
}

/// The egress once it stopped moving (the same for 3 s).
async fn settled_egress(api: &Api, nic: &str) -> (u64, u64) {
    settled_at_least(api, nic, (0, 0)).await
}

/// The egress once it is at least `floor` and has not moved for three counter periods
/// (the lab's agents read and ship counters every second).
async fn settled_at_least(api: &Api, nic: &str, floor: (u64, u64)) -> (u64, u64) {
    // The last reading and since when it has not moved.
    let seen = std::cell::Cell::new((egress(api, nic).await, std::time::Instant::now()));
    let seen = &seen;
    until(&format!("the egress of {nic} to settle at {floor:?} or more"), Duration::from_secs(60), || async move {
        let now = egress(api, nic).await;
        let (last, since) = seen.get();
        if now != last || now.0 < floor.0 || now.1 < floor.1 {
            seen.set((now, std::time::Instant::now()));
            return None;
        }
        (since.elapsed() >= Duration::from_secs(3)).then_some(now)
    })
    .await
}

/// The egress once it reached `floor` (both classes).
async fn grown_egress(api: &Api, nic: &str, floor: (u64, u64)) -> (u64, u64) {
    until("the egress to be metered", Duration::from_secs(60), || async move {
        let now = egress(api, nic).await;
        (now.0 >= floor.0 && now.1 >= floor.1).then_some(now)
    })
    .await
}

/// The bytes of the TCP segments namespace `ns` sent again so far (its `RetransSegs`, a
/// full 1,464-byte frame each: the subnet's 1,450-byte MTU and the Ethernet header).
fn resent(ns: &str) -> u64 {
    let snmp = String::from_utf8_lossy(&in_ns(ns, &["cat", "/proc/net/snmp"]).stdout).to_string();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap_or_default(), tcp.next().unwrap_or_default());
    let at = names.split_whitespace().position(|n| n == "RetransSegs").expect("RetransSegs in /proc/net/snmp");
    values.split_whitespace().nth(at).and_then(|v| v.parse::<u64>().ok()).expect("a RetransSegs value") * 1464
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snat_floating_ips_hairpin_and_cleanup() {
    external("pxt", 236, "linux-bridge").await;
}

/// The same on the Open vSwitch data path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snat_floating_ips_hairpin_and_cleanup_on_openvswitch() {
    external("oxt", 242, "openvswitch").await;
}

async fn external(prefix: &str, k: u8, datapath: &'static str) {
    if !can_run() {
        eprintln!("SKIPPED: the network lab needs root and iproute2");
        return;
    }
    let mut lab = NetLab::new(prefix, k, 2);
    lab.datapath = datapath;
    let provider = lab.provider();
    let _echo = SourceEcho::start(&provider, ECHO_PORT);
    let dir = tempfile::tempdir().unwrap();
    // Logs stay for a look when the lab is kept (PLINTH_KEEP_NETLAB).
    let d = &if std::env::var_os("PLINTH_KEEP_NETLAB").is_some() { dir.keep() } else { dir.path().to_path_buf() };
    let (_server, api) = server(&lab, d, None).await;
    let mut agent1 = agent(&lab, 1, d, &api).await;
    let _a2 = agent(&lab, 2, d, &api).await;
    let hosts = wait_hosts(&api, &lab).await;

    // Without a pool, a NIC is private whatever it asks by default; asking for snat is refused.
    let t = api.post("/v1/tenants", json!({ "name": "acme" })).await;
    let p = api.post("/v1/projects", json!({ "name": "web", "tenant_id": t["id"] })).await;
    let vpc = api.post("/v1/vpcs", json!({ "project_id": p["id"], "name": "main", "ipv4_cidr": "10.30.0.0/16" })).await;
    let sn = api.post("/v1/subnets", json!({ "vpc_id": vpc["id"], "name": "s1", "ipv4_cidr": "10.30.1.0/24" })).await;
    let (st, problem) = api
        .call(
            reqwest::Method::POST,
            "/v1/network-interfaces",
            Some(json!({ "subnet_id": sn["id"], "name": "early", "external_access": "snat" })),
        )
        .await;
    assert_eq!((st, problem["code"].as_str()), (409, Some("no_ip_pool")), "{problem}");
    let pool = api
        .post(
            "/v1/ip-pools",
            json!({ "name": "public", "ipv4_cidr": "198.51.100.0/24", "first": "198.51.100.10",
                    "last": "198.51.100.19", "gateway": PROVIDER_GATEWAY }),
        )
        .await;
    assert_eq!(pool["gateway"], PROVIDER_GATEWAY);

    // A group that lets the internet reach port 8080, and port 7070 from the provider's
    // block only; port 7171 only from inside the VPC.
    let web = api.post("/v1/security-groups", json!({ "vpc_id": vpc["id"], "name": "web" })).await;
    for (port, cidr) in [(8080, "0.0.0.0/0"), (7070, "203.0.113.0/24"), (7171, "10.30.0.0/16")] {
        api.rule(
            &web,
            json!({ "direction": "ingress", "protocol": "tcp", "port_min": port, "port_max": port, "remote_cidr": cidr }),
        )
        .await;
    }
    let groups = json!([vpc["default_security_group_id"], web["id"]]);
    let mut guests = std::collections::BTreeMap::new();
    let mut banners = Vec::new();
    for (name, host, access) in [("a1", 1, None), ("a2", 1, Some("none")), ("a3", 2, None)] {
        let mut b =
            json!({ "subnet_id": sn["id"], "name": name, "host_id": hosts[host - 1], "security_group_ids": groups });
        if let Some(a) = access {
            b["external_access"] = json!(a);
        }
        let nic = api.post("/v1/network-interfaces", b).await;
        let nic = api.ready(&nic).await;
        let ns = lab.plug_guest(
            name,
            host,
            vpc["vni"].as_u64().unwrap(),
            &s(&nic, "device"),
            &s(&nic, "mac"),
            &format!("{}/24", s(&nic, "ipv4")),
            &s(&sn, "gateway"),
        );
        for port in [8080, 7070, 7171] {
            banners.push(Banner::start(&ns, port, name));
        }
        guests.insert(name, Guest { ns, nic });
    }
    let g = |n: &str| &guests[n];
    // The default is snat when a pool has a free address: the lowest ones, in order.
    assert_eq!(g("a1").nic["external_access"], "snat");
    assert_eq!(g("a1").nic["snat_address"], "198.51.100.10");
    assert_eq!(g("a2").nic["external_access"], "none");
    assert!(g("a2").nic["snat_address"].is_null());
    assert_eq!(g("a3").nic["snat_address"], "198.51.100.11");

    // 1. SNAT: the internet sees each NIC's own SNAT address; a private NIC gets nowhere.
    let seen = |n: &str| http_get(&g(n).ns, PROVIDER_SERVER, ECHO_PORT);
    assert_eq!(settle(&Some("198.51.100.10".to_string()), || seen("a1")).as_deref(), Some("198.51.100.10"));
    assert_eq!(settle(&Some("198.51.100.11".to_string()), || seen("a3")).as_deref(), Some("198.51.100.11"));
    assert_eq!(seen("a2"), None, "a NIC with external_access none reaches nothing outside");
    // Nor does the internet reach an SNAT address: it translates replies only.
    assert_eq!(who(&provider, "198.51.100.10", 8080), None, "an SNAT address takes no connection");

    // 2. A floating IP: reached only through it, only on ports the groups allow, with the
    // private address as the rules' destination.
    let fip = api.post("/v1/floating-ips", json!({ "project_id": p["id"], "name": "front" })).await;
    let addr = s(&fip, "address");
    assert_eq!(addr, "198.51.100.12", "the next free address of the pool");
    assert_eq!(who(&provider, &addr, 8080), None, "control: detached, nothing answers");
    let attach = |f: &Value, nic: &Value| {
        let (f, nic) = (s(f, "id"), s(nic, "id"));
        let api = &api;
        async move { api.post(&format!("/v1/floating-ips/{f}/attach"), json!({ "nic_id": nic })).await }
    };
    let at = attach(&fip, &g("a2").nic).await;
    assert!(matches!(at["state"].as_str(), Some("attaching" | "attached")), "{at}");
    fip_state(&api, &fip, "attached").await;
    assert_eq!(settle(&Some("a2".into()), || who(&provider, &addr, 8080)).as_deref(), Some("a2"));
    assert_eq!(who(&provider, &addr, 7070).as_deref(), Some("a2"), "allowed from the provider's block");
    assert_eq!(who(&provider, &addr, 7171), None, "a rule for the VPC's block does not admit the internet");
    assert_eq!(who(&g("a1").ns, &s(&g("a2").nic, "ipv4"), 7171).as_deref(), Some("a2"), "control: the VPC may");
    let nic = api.get(&format!("/v1/network-interfaces/{}", s(&g("a2").nic, "id"))).await;
    assert_eq!(nic["floating_ips"][0]["address"], addr.as_str(), "{nic}");
    // A private NIC with a floating IP leaves from it.
    assert_eq!(settle(&Some(addr.clone()), || seen("a2")), Some(addr.clone()));

    // 3. Hairpin, same host: a1 reaches its sibling through the sibling's floating IP.
    assert_eq!(who(&g("a1").ns, &addr, 8080).as_deref(), Some("a2"), "hairpin on one host");

    // Detach: unreachable; attach to a NIC on the other host: that one answers (the
    // provider's ARP entry moves with the gratuitous ARP, not when it ages out).
    api.post(&format!("/v1/floating-ips/{}/detach", s(&fip, "id")), json!({})).await;
    fip_state(&api, &fip, "detached").await;
    assert_eq!(settle(&None, || who(&provider, &addr, 8080)), None, "detached: nothing answers");
    assert_eq!(seen("a2"), None, "a2 is private again");
    attach(&fip, &g("a1").nic).await;
    fip_state(&api, &fip, "attached").await;
    assert_eq!(settle(&Some("a1".into()), || who(&provider, &addr, 8080)).as_deref(), Some("a1"));
    let moved = attach(&fip, &g("a3").nic).await;
    assert_eq!(moved["nic_id"], g("a3").nic["id"], "a move is one call");
    fip_state(&api, &fip, "attached").await;
    assert_eq!(settle(&Some("a3".into()), || who(&provider, &addr, 8080)).as_deref(), Some("a3"));
    // Hairpin across hosts: through the provider, from a1's own public address.
    assert_eq!(who(&g("a1").ns, &addr, 8080).as_deref(), Some("a3"), "hairpin across hosts");

    // Bad input: the address is in use; another project's NIC is refused.
    let (st, problem) = api.call(reqwest::Method::DELETE, &format!("/v1/floating-ips/{}", s(&fip, "id")), None).await;
    assert_eq!((st, problem["code"].as_str()), (409, Some("floating_ip_attached")), "{problem}");

    // 4. DNS: the VPC's DNS (its gateway) answers its NICs' names under `main.internal`,
    // full and bare; a rename and a delete are answered at the next lookup.
    let gw = s(&sn, "gateway");
    let lookup = |name: &str| {
        let out = in_ns(&g("a1").ns, &["busybox", "nslookup", name, &gw]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        out.status
            .success()
            .then(|| text.lines().filter_map(|l| l.strip_prefix("Address: ")).collect::<Vec<_>>().join(","))
    };
    let a3_ip = s(&g("a3").nic, "ipv4");
    assert_eq!(lookup("a3.main.internal"), Some(a3_ip.clone()), "a sibling on the other host, by full name");
    assert_eq!(lookup("a2"), Some(s(&g("a2").nic, "ipv4")), "a sibling by its bare name");
    assert_eq!(lookup("a9.main.internal"), None, "control: no such name");
    api.patch(&format!("/v1/network-interfaces/{}", s(&g("a3").nic, "id")), json!({ "name": "web3" })).await;
    assert_eq!(settle(&Some(a3_ip.clone()), || lookup("web3.main.internal")), Some(a3_ip.clone()), "renamed");
    assert_eq!(lookup("a3.main.internal"), None, "the old name is gone");
    api.patch(&format!("/v1/vpcs/{}", s(&vpc, "id")), json!({ "name": "prod" })).await;
    assert_eq!(settle(&Some(a3_ip.clone()), || lookup("web3.prod.internal")), Some(a3_ip.clone()), "VPC renamed");

    // 5. Metering: a1 sends exactly K bytes to a sink on the internet and K to a sink on
    // its peer a3. Internet egress (IP packets leaving by the uplink from a1's address)
    // grows by K plus headers, total egress (frames a1 sent) by 2K plus headers; the
    // bounds allow 64 bytes of headers for every 536 payload bytes (TCP's smallest
    // segment), and 64 more packets of 64 bytes (handshakes, ARP, DHCP), plus the segments
    // a1's TCP sent again (real egress, counted: a full frame each, as the guest's own
    // counter says; Open vSwitch's userspace datapath drops a few percent under a burst).
    const K: u64 = 1_000_000;
    let slack = |payload: u64| payload * 64 / 536 + 64 * 64;
    let r0 = resent(&g("a1").ns);
    let _internet_sink = Sink::start(&provider, 9000);
    let _peer_sink = Sink::start(&g("a3").ns, 9000);
    let a1 = s(&g("a1").nic, "id");
    let (i0, t0) = settled_egress(&api, &a1).await;
    assert!(send_bytes(&g("a1").ns, PROVIDER_SERVER, 9000, K as usize), "K bytes to the internet");
    assert!(send_bytes(&g("a1").ns, &s(&g("a3").nic, "ipv4"), 9000, K as usize), "K bytes to the peer");
    let (i1, t1) = grown_egress(&api, &a1, (i0 + K, t0 + 2 * K)).await;
    println!("egress of a1: internet +{} bytes, total +{} bytes for K = {K}", i1 - i0, t1 - t0);
    let r1 = resent(&g("a1").ns);
    assert!((K..=K + slack(K) + r1 - r0).contains(&(i1 - i0)), "internet egress grew by {} for K = {K}", i1 - i0);
    assert!((2 * K..=2 * K + slack(2 * K) + r1 - r0).contains(&(t1 - t0)), "total egress grew by {} for 2K", t1 - t0);

    // An agent restart reports the same counters again: they add nothing; what is sent
    // while it is down is counted once it is back.
    agent1.kill9();
    assert!(send_bytes(&g("a1").ns, PROVIDER_SERVER, 9000, K as usize), "K more while the agent is down");
    let _agent1 = agent(&lab, 1, d, &api).await;
    let (i2, t2) = grown_egress(&api, &a1, (i1 + K, t1 + K)).await;
    let (i2, t2) = settled_at_least(&api, &a1, (i2, t2)).await;
    let r2 = resent(&g("a1").ns);
    assert!((K..=K + slack(K) + r2 - r1).contains(&(i2 - i1)), "after a restart: internet +{} for K = {K}", i2 - i1);
    assert!((K..=K + slack(K) + r2 - r1).contains(&(t2 - t1)), "after a restart: total +{} for K = {K}", t2 - t1);

    // The port recreated (deleted by hand; the agent's next verifying apply makes it
    // again): its counter starts from zero under a new epoch, nothing counted twice.
    let dev = s(&g("a1").nic, "device");
    let (port_ns, port) = lab.nic_port(1, vpc["vni"].as_u64().unwrap(), &dev);
    sh(&["ip", "-n", &port_ns, "link", "del", &port]);
    let ns_a1 = lab.plug_guest(
        "a1",
        1,
        vpc["vni"].as_u64().unwrap(),
        &dev,
        &s(&g("a1").nic, "mac"),
        &format!("{}/24", s(&g("a1").nic, "ipv4")),
        &s(&sn, "gateway"),
    );
    let sent = settle(&true, || send_bytes(&ns_a1, PROVIDER_SERVER, 9000, K as usize));
    assert!(sent, "K bytes from the recreated port");
    let (i3, t3) = grown_egress(&api, &a1, (i2 + K, t2 + K)).await;
    let (i3, t3) = settled_at_least(&api, &a1, (i3, t3)).await;
    // (a1's namespace is new: its counter starts from zero)
    let r3 = resent(&ns_a1);
    assert!(
        (K..=K + slack(K) + 4 * slack(0) + r3).contains(&(i3 - i2)),
        "recreated: internet +{} for K = {K}",
        i3 - i2
    );
    assert!((K..=K + slack(K) + 4 * slack(0) + r3).contains(&(t3 - t2)), "recreated: total +{} for K = {K}", t3 - t2);

    // The invoice: a line per meter and class, each with the records it rates; the
    // reconciliation report has a matching row for every network resource metered.
    let price = |meter: &str, dimension: Option<&str>, unit: &str, per: i64, micros: i64| {
        json!({ "meter": meter, "dimension": dimension, "model": "flat", "pricing_unit": unit,
                "units_per_pricing_unit": per, "unit_price_micros": micros, "tiers": [],
                "min_seconds_per_start": 0, "rounding": "half_up" })
    };
    api.post(
        "/v1/price-books",
        json!({ "name": "net", "currency": "USD", "effective_from": "2020-01-01T00:00:00Z", "prices": [
            price("address_seconds", None, "hour", 3600, 5_000),
            price("egress_bytes", Some("internet"), "GB", 1_000_000_000, 90_000),
            price("egress_bytes", Some("all"), "GB", 1_000_000_000, 0),
        ] }),
    )
    .await;
    let inv = api.get(&format!("/v1/invoices/current?tenant_id={}", s(&t, "id"))).await;
    let lines = inv["lines"].as_array().cloned().unwrap_or_default();
    for (meter, dim) in [
        ("address_seconds", "snat"),
        ("address_seconds", "floating"),
        ("egress_bytes", "internet"),
        ("egress_bytes", "all"),
    ] {
        let line = lines.iter().find(|l| l["meter"] == meter && l["dimension"] == dim);
        let line = line.unwrap_or_else(|| panic!("no {meter}/{dim} line on {inv}"));
        assert!(!line["record_ids"].as_array().unwrap().is_empty(), "{meter}/{dim} names its records: {line}");
    }
    let rec = api.get(&format!("/v1/billing/reconciliation?tenant_id={}", s(&t, "id"))).await;
    let net_rows: Vec<&Value> = rec["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["meter"] == "address_seconds" || r["meter"] == "egress_bytes")
        .collect();
    assert!(net_rows.iter().any(|r| r["resource_id"] == fip["id"]), "the floating IP is reconciled: {rec}");
    assert!(net_rows.iter().any(|r| r["resource_id"] == g("a1").nic["id"] && r["dimension"] == "internet"), "{rec}");
    assert!(net_rows.iter().all(|r| r["matches"] == true), "metered = invoiced: {rec}");

    // 7. Clean up: nothing of the router is left on the hosts.
    api.post(&format!("/v1/floating-ips/{}/detach", s(&fip, "id")), json!({})).await;
    fip_state(&api, &fip, "detached").await;
    api.delete(&format!("/v1/floating-ips/{}", s(&fip, "id"))).await;
    let uplinks = |i: usize| {
        String::from_utf8_lossy(&in_ns(&lab.host(i), &["ip", "-o", "link", "show", "master", PROVIDER_BRIDGE]).stdout)
            .lines()
            .filter(|l| l.contains(": pu"))
            .count()
    };
    assert!(uplinks(1) > 0 && uplinks(2) > 0, "control: the uplinks exist while SNAT addresses do");
    drop(banners);
    api.delete(&format!("/v1/network-interfaces/{}", s(&g("a3").nic, "id"))).await;
    let gone = settle(&None, || {
        let out = in_ns(&g("a2").ns, &["busybox", "nslookup", "web3.prod.internal", &s(&sn, "gateway")]);
        out.status.success().then_some(())
    });
    assert_eq!(gone, None, "a deleted NIC's name is gone");
    for n in ["a1", "a2"] {
        api.delete(&format!("/v1/network-interfaces/{}", s(&g(n).nic, "id"))).await;
    }
    for i in 1..=2 {
        wait("the uplinks to go", Duration::from_secs(30), || (uplinks(i) == 0).then_some(()));
        let vp = lab.vpc_prefix(i);
        wait("the VPC namespace to go", Duration::from_secs(30), || {
            let list = String::from_utf8_lossy(&run(&["ip", "netns", "list"]).stdout).to_string();
            (!list.lines().any(|l| l.starts_with(&vp))).then_some(())
        });
    }
    // Every address went back: the pool can go.
    api.delete(&format!("/v1/ip-pools/{}", s(&pool, "id"))).await;
    let _ = &mut lab;
}
