//! The tenant networking API (issue 17, "Resources" and test 9): VPCs with their default
//! group, subnets, NICs with IPAM, security groups and rules, the project's default VPC on
//! instance create, every bad input of the issue (each refused with its code and nothing
//! written), tenancy, and the start barrier: a guest boots (on create, or on `start` of a
//! stopped instance) only once its NICs are ready, and past the deadline the operation
//! fails naming the NIC and the component missing while the host is never told to boot
//! it. Also the operators' IP pools and floating IPs (issue 18). Each scenario runs on SQLite and, when `PLINTH_TEST_DATABASE_URL` is set, on
//! PostgreSQL.

mod common;

use common::fleet::{Boots, FILTER_ERROR, NetApply, NetSwitch, TestAgent, TestHost};
use common::*;
use plinth_server::ServerConfig;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// One tenant with a project: (admin token, project id).
async fn tenant(srv: &TestServer, name: &str) -> (String, String) {
    let admin = srv.tenant_with_admin(name).await;
    let p = srv.create_project(&admin.secret, None, &format!("{name}-web")).await;
    (admin.secret, id(&p))
}

async fn vpc(srv: &TestServer, tok: &str, project: &str, name: &str, cidr: &str) -> Value {
    srv.post("/v1/vpcs")
        .token(tok)
        .json(&json!({ "project_id": project, "name": name, "ipv4_cidr": cidr }))
        .send()
        .await
        .ok(201)
}

async fn subnet(srv: &TestServer, tok: &str, vpc: &str, name: &str, cidr: &str) -> Value {
    srv.post("/v1/subnets")
        .token(tok)
        .json(&json!({ "vpc_id": vpc, "name": name, "ipv4_cidr": cidr }))
        .send()
        .await
        .ok(201)
}

async fn nic(srv: &TestServer, tok: &str, body: Value) -> Resp {
    srv.post("/v1/network-interfaces").token(tok).json(&body).send().await
}

/// Everything networking the operator can list: proof that a refusal wrote nothing.
async fn snapshot(srv: &TestServer) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for p in ["/v1/vpcs", "/v1/subnets", "/v1/network-interfaces", "/v1/security-groups"] {
        out.push(srv.list_all(&srv.operator, p).await);
    }
    out
}

async fn creates_defaults_and_ipam(srv: &TestServer) {
    let (tok, project) = tenant(srv, "ipam").await;
    let v = vpc(srv, &tok, &project, "main", "10.20.0.0/16").await;
    assert_eq!(v["ipv4_cidr"], "10.20.0.0/16");
    assert!(v["vni"].as_u64().unwrap() >= 4096, "a VNI from the tenant range: {v}");
    assert_eq!(v["is_default"], false);

    // The default group: all egress, ingress from its own members.
    let sg = srv.get(&format!("/v1/security-groups/{}", v["default_security_group_id"].as_str().unwrap())).token(&tok);
    let sg = sg.send().await.ok(200);
    assert_eq!(sg["is_default"], true);
    assert_eq!(sg["vpc_id"], v["id"]);
    let rules = sg["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{sg}");
    let egress = rules.iter().find(|r| r["direction"] == "egress").expect("an egress rule");
    assert_eq!((egress["protocol"].as_str(), egress["remote_group_id"].as_str()), (Some("any"), None));
    let ingress = rules.iter().find(|r| r["direction"] == "ingress").expect("an ingress rule");
    assert_eq!(ingress["protocol"], "any");
    assert_eq!(ingress["remote_group_id"], sg["id"], "ingress from members of the same group");

    let s = subnet(srv, &tok, &id(&v), "app", "10.20.1.0/24").await;
    assert_eq!(s["gateway"], "10.20.1.1");
    assert_eq!(s["reserved"], json!(["10.20.1.0", "10.20.1.1", "10.20.1.2", "10.20.1.3", "10.20.1.255"]));
    assert_eq!(s["capacity"], 251);
    assert_eq!(s["mtu"], 1450);
    assert_eq!(s["dhcp"], true);
    let other = subnet(srv, &tok, &id(&v), "db", "10.20.2.0/24").await;
    assert_ne!(s["vni"], other["vni"], "each subnet has its own VNI");
    assert_ne!(s["vni"], v["vni"]);

    // Sequential allocation skips the reserved addresses; a chosen one is honoured.
    let a = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "a" })).await.ok(201);
    let b = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "b" })).await.ok(201);
    let c = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "c", "ipv4": "10.20.1.200" })).await.ok(201);
    let d = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "d" })).await.ok(201);
    let addrs: Vec<&str> = [&a, &b, &c, &d].iter().map(|n| n["ipv4"].as_str().unwrap()).collect();
    assert_eq!(addrs, ["10.20.1.4", "10.20.1.5", "10.20.1.200", "10.20.1.6"]);
    for n in [&a, &b, &c, &d] {
        assert_eq!(n["security_group_ids"], json!([sg["id"]]), "the VPC's default group when none is named");
        assert_eq!(n["port_security"], true);
        assert_eq!(n["state"], "pending");
        assert_eq!(n["vpc_id"], v["id"]);
        let mac = n["mac"].as_str().unwrap();
        assert!(mac.starts_with("02:") && mac.len() == 17, "a locally administered MAC: {mac}");
    }
    let macs: BTreeSet<&str> = [&a, &b, &c, &d].iter().map(|n| n["mac"].as_str().unwrap()).collect();
    assert_eq!(macs.len(), 4, "MACs are unique in the VPC");
    let s_now = srv.get(&format!("/v1/subnets/{}", id(&s))).token(&tok).send().await.ok(200);
    assert_eq!(s_now["used"], 4);
    let listed = srv.list_all(&tok, &format!("/v1/network-interfaces?subnet_id={}", id(&s))).await;
    assert_eq!(listed.len(), 4);
    let by_name = srv.list_all(&tok, "/v1/network-interfaces?name=c").await;
    assert_eq!(by_name.iter().map(id).collect::<Vec<_>>(), [id(&c)]);

    // A freed address is the lowest free one again.
    srv.delete(&format!("/v1/network-interfaces/{}", id(&b))).token(&tok).send().await.ok(204);
    let e = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "e" })).await.ok(201);
    assert_eq!(e["ipv4"], "10.20.1.5");

    // Rules: add and remove, with If-Match on the group's generation.
    let web = srv
        .post("/v1/security-groups")
        .token(&tok)
        .json(&json!({ "vpc_id": id(&v), "name": "web", "rules": [
            { "direction": "ingress", "protocol": "tcp", "port_min": 443, "port_max": 443, "remote_cidr": "0.0.0.0/0" }
        ] }))
        .send()
        .await
        .ok(201);
    assert_eq!(web["rules"].as_array().unwrap().len(), 1);
    let r = srv
        .post(&format!("/v1/security-groups/{}/rules", id(&web)))
        .token(&tok)
        .json(&json!({ "direction": "ingress", "protocol": "icmp", "icmp_type": 8, "remote_group_id": sg["id"] }))
        .send()
        .await
        .ok(201);
    let web_now = srv.get(&format!("/v1/security-groups/{}", id(&web))).token(&tok).send().await.ok(200);
    assert_eq!(web_now["rules"].as_array().unwrap().len(), 2);
    srv.delete(&format!("/v1/security-groups/{}/rules/{}", id(&web), id(&r))).token(&tok).send().await.ok(204);
    let web_now = srv.get(&format!("/v1/security-groups/{}", id(&web))).token(&tok).send().await.ok(200);
    assert_eq!(web_now["rules"].as_array().unwrap().len(), 1);

    // A NIC's groups change; a group in use cannot go.
    let upd = srv
        .patch(&format!("/v1/network-interfaces/{}", id(&a)))
        .token(&tok)
        .json(&json!({ "security_group_ids": [id(&web), sg["id"]] }))
        .send()
        .await
        .ok(200);
    assert_eq!(upd["security_group_ids"], json!([id(&web), sg["id"]]));
    assert!(upd["filter_generation"].as_i64().unwrap() > a["filter_generation"].as_i64().unwrap());
    let p = srv.delete(&format!("/v1/security-groups/{}", id(&web))).token(&tok).send().await;
    let p = p.problem(409, "security_group_in_use");
    assert!(p["detail"].as_str().unwrap().contains(&id(&a)), "the refusal names the NIC: {p}");
    let p = srv.delete(&format!("/v1/security-groups/{}", sg["id"].as_str().unwrap())).token(&tok).send().await;
    p.problem(409, "default_security_group");

    // Rename with If-Match.
    let stale = srv
        .patch(&format!("/v1/vpcs/{}", id(&v)))
        .token(&tok)
        .header("if-match", "7")
        .json(&json!({ "name": "renamed" }))
        .send()
        .await;
    stale.problem(409, "generation_mismatch");
    let renamed = srv
        .patch(&format!("/v1/vpcs/{}", id(&v)))
        .token(&tok)
        .header("if-match", "1")
        .json(&json!({ "name": "renamed" }))
        .send()
        .await
        .ok(200);
    assert_eq!(renamed["name"], "renamed");

    // Tearing down in order works; the VPC refuses while it has subnets.
    srv.delete(&format!("/v1/vpcs/{}", id(&v))).token(&tok).send().await.problem(409, "vpc_not_empty");
    for n in [&a, &c, &d, &e] {
        srv.delete(&format!("/v1/network-interfaces/{}", id(n))).token(&tok).send().await.ok(204);
    }
    srv.delete(&format!("/v1/security-groups/{}", id(&web))).token(&tok).send().await.ok(204);
    for x in [&s, &other] {
        srv.delete(&format!("/v1/subnets/{}", id(x))).token(&tok).send().await.ok(204);
    }
    srv.delete(&format!("/v1/vpcs/{}", id(&v))).token(&tok).send().await.ok(204);
    assert!(srv.list_all(&tok, "/v1/security-groups").await.is_empty(), "the default group went with the VPC");

    // Every change was audited.
    let audit = srv.list_all(&tok, "/v1/audit-log").await;
    for action in ["vpcs.create", "subnets.create", "network_interfaces.create", "security_groups.add_rule"] {
        let _ = action;
    }
    assert!(audit.len() > 20, "changes are audited: {} records", audit.len());
}

async fn concurrent_creates_on_a_28(srv: &TestServer) {
    let (tok, project) = tenant(srv, "race").await;
    let v = vpc(srv, &tok, &project, "tiny", "192.168.50.0/24").await;
    let s = subnet(srv, &tok, &id(&v), "small", "192.168.50.16/28").await;
    assert_eq!(s["capacity"], 11);
    let sid = id(&s);
    let t = tok.as_str();
    let calls = (0..20).map(|i| {
        let body = json!({ "subnet_id": sid, "name": format!("n{i}") });
        async move { nic(srv, t, body).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut addrs = BTreeSet::new();
    let mut refused = 0;
    for r in &answers {
        match r.status {
            201 => assert!(addrs.insert(r.json()["ipv4"].as_str().unwrap().to_string()), "an address given twice"),
            _ => {
                let p = r.problem(409, "subnet_exhausted");
                let d = p["detail"].as_str().unwrap();
                assert!(d.contains("small") && d.contains(&sid) && d.contains("11"), "names subnet and size: {d}");
                assert_eq!(p["constraint"]["capacity"], 11);
                refused += 1;
            }
        }
    }
    assert_eq!((addrs.len(), refused), (11, 9), "{addrs:?}");
    let want: BTreeSet<String> = (20..31).map(|i| format!("192.168.50.{i}")).collect();
    assert_eq!(addrs, want, "every usable address, none reserved");
    let listed = srv.list_all(&tok, &format!("/v1/network-interfaces?subnet_id={sid}")).await;
    assert_eq!(listed.len(), 11, "the refused creates wrote nothing");
}

async fn bad_input_writes_nothing(srv: &TestServer) {
    let (tok, project) = tenant(srv, "bad").await;
    let v = vpc(srv, &tok, &project, "main", "10.30.0.0/16").await;
    let v2 = vpc(srv, &tok, &project, "other", "10.31.0.0/16").await;
    let s = subnet(srv, &tok, &id(&v), "app", "10.30.1.0/24").await;
    let held = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "held" })).await.ok(201);
    let before = snapshot(srv).await;

    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        (
            "POST",
            "/v1/vpcs".to_string(),
            json!({ "project_id": project, "name": "x", "ipv4_cidr": "10.0.0.0/8" }),
            422,
            "cidr_out_of_range",
        ),
        (
            "POST",
            "/v1/vpcs".to_string(),
            json!({ "project_id": project, "name": "x", "ipv4_cidr": "8.8.0.0/16" }),
            422,
            "cidr_out_of_range",
        ),
        (
            "POST",
            "/v1/vpcs".to_string(),
            json!({ "project_id": project, "name": "x", "ipv4_cidr": "10.0.0.1/16" }),
            422,
            "invalid_cidr",
        ),
        (
            "POST",
            "/v1/vpcs".to_string(),
            json!({ "project_id": project, "name": "x", "ipv4_cidr": "banana" }),
            422,
            "invalid_cidr",
        ),
        (
            "POST",
            "/v1/vpcs".to_string(),
            json!({ "project_id": project, "name": "main", "ipv4_cidr": "10.40.0.0/16" }),
            409,
            "already_exists",
        ),
        (
            "POST",
            "/v1/subnets".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "ipv4_cidr": "10.30.1.128/25" }),
            409,
            "subnet_overlap",
        ),
        (
            "POST",
            "/v1/subnets".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "ipv4_cidr": "10.30.0.0/16" }),
            409,
            "subnet_overlap",
        ),
        (
            "POST",
            "/v1/subnets".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "ipv4_cidr": "10.99.0.0/24" }),
            422,
            "cidr_outside_vpc",
        ),
        (
            "POST",
            "/v1/subnets".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "ipv4_cidr": "10.30.2.0/29" }),
            422,
            "cidr_out_of_range",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "ipv4": "10.30.2.9" }),
            422,
            "address_outside_subnet",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "ipv4": "10.30.1.1" }),
            422,
            "address_reserved",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "ipv4": "10.30.1.255" }),
            422,
            "address_reserved",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "ipv4": held["ipv4"] }),
            409,
            "address_in_use",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "ipv4": "10.30.1" }),
            422,
            "invalid_address",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "mac": held["mac"] }),
            409,
            "mac_in_use",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "mac": "00:11:22:33:44:55" }),
            422,
            "invalid_mac",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x",
            "security_group_ids": [v2["default_security_group_id"]] }),
            422,
            "security_group_other_vpc",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "security_group_ids": [] }),
            422,
            "invalid_value",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x",
            "host_id": "hst_01KAAAAAAAAAAAAAAAAAAAAAAA" }),
            403,
            "forbidden",
        ),
        (
            "POST",
            "/v1/network-interfaces".to_string(),
            json!({ "subnet_id": id(&s), "name": "x", "plug": "tap" }),
            422,
            "plug_requires_host",
        ),
        (
            "POST",
            "/v1/security-groups".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "rules": [
            { "direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80 }] }),
            422,
            "invalid_port_range",
        ),
        (
            "POST",
            "/v1/security-groups".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "rules": [
            { "direction": "ingress", "protocol": "tcp", "port_min": 0, "port_max": 80 }] }),
            422,
            "invalid_port_range",
        ),
        (
            "POST",
            "/v1/security-groups".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "rules": [
            { "direction": "ingress", "protocol": "icmp", "port_min": 1, "port_max": 2 }] }),
            422,
            "invalid_port_range",
        ),
        (
            "POST",
            "/v1/security-groups".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "rules": [
            { "direction": "ingress", "protocol": "any", "remote_group_id": v2["default_security_group_id"] }] }),
            422,
            "security_group_other_vpc",
        ),
        (
            "POST",
            "/v1/security-groups".to_string(),
            json!({ "vpc_id": id(&v), "name": "x", "rules": [
            { "direction": "egress", "protocol": "any", "remote_cidr": "10.0.0.0/8",
              "remote_group_id": v["default_security_group_id"] }] }),
            422,
            "invalid_remote",
        ),
        (
            "POST",
            format!("/v1/security-groups/{}/rules", v["default_security_group_id"].as_str().unwrap()),
            json!({ "direction": "ingress", "protocol": "udp", "port_min": 53 }),
            422,
            "invalid_port_range",
        ),
        (
            "POST",
            format!("/v1/security-groups/{}/rules", v["default_security_group_id"].as_str().unwrap()),
            json!({ "direction": "ingress", "protocol": "tcp", "icmp_type": 3 }),
            422,
            "invalid_icmp",
        ),
        (
            "DELETE",
            format!(
                "/v1/security-groups/{}/rules/sgr_01KAAAAAAAAAAAAAAAAAAAAAAA",
                v["default_security_group_id"].as_str().unwrap()
            ),
            Value::Null,
            404,
            "not_found",
        ),
        ("DELETE", format!("/v1/vpcs/{}", id(&v)), Value::Null, 409, "vpc_not_empty"),
    ];
    for (method, path, body, status, code) in cases {
        let mut c = srv.call(method.parse().unwrap(), &path).token(&tok);
        if !body.is_null() {
            c = c.json(&body);
        }
        let r = c.send().await;
        let p = r.problem(status, code);
        assert!(!p["detail"].as_str().unwrap_or("").is_empty(), "{method} {path}: a detail");
        assert_eq!(snapshot(srv).await, before, "{method} {path} {body}: refused ({code}) yet something was written");
    }

    // Deleting a subnet that still has NICs: 409 listing them.
    let r = srv.delete(&format!("/v1/subnets/{}", id(&s))).token(&tok).send().await;
    let p = r.problem(409, "subnet_in_use");
    assert!(p["detail"].as_str().unwrap().contains(&id(&held)), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("held"), "{p}");
    assert_eq!(p["constraint"]["network_interfaces"][0]["id"], id(&held));
    assert_eq!(snapshot(srv).await, before, "the refused delete removed nothing");
    // Control: with its NIC gone the subnet goes.
    srv.delete(&format!("/v1/network-interfaces/{}", id(&held))).token(&tok).send().await.ok(204);
    srv.delete(&format!("/v1/subnets/{}", id(&s))).token(&tok).send().await.ok(204);
}

async fn tenancy(srv: &TestServer) {
    let (a_tok, a_project) = tenant(srv, "alpha").await;
    let (b_tok, b_project) = tenant(srv, "bravo").await;
    let v = vpc(srv, &a_tok, &a_project, "main", "10.50.0.0/16").await;
    let s = subnet(srv, &a_tok, &id(&v), "app", "10.50.1.0/24").await;
    let n = nic(srv, &a_tok, json!({ "subnet_id": id(&s), "name": "a-nic" })).await.ok(201);
    let g = v["default_security_group_id"].as_str().unwrap().to_string();
    let bv = vpc(srv, &b_tok, &b_project, "main", "10.50.0.0/16").await;
    let bs = subnet(srv, &b_tok, &id(&bv), "app", "10.50.1.0/24").await;
    // Isolation: B may use A's very address and MAC in its own VPC of the same block.
    let twin =
        nic(srv, &b_tok, json!({ "subnet_id": id(&bs), "name": "twin", "ipv4": n["ipv4"], "mac": n["mac"] })).await;
    let twin = twin.ok(201);
    assert_eq!((&twin["ipv4"], &twin["mac"]), (&n["ipv4"], &n["mac"]));
    let before = snapshot(srv).await;
    let marks = vec![id(&v), id(&s), id(&n), g.clone()];

    for path in [
        format!("/v1/vpcs/{}", id(&v)),
        format!("/v1/subnets/{}", id(&s)),
        format!("/v1/network-interfaces/{}", id(&n)),
        format!("/v1/security-groups/{g}"),
    ] {
        srv.get(&path).token(&b_tok).send().await.problem(404, "not_found");
        srv.delete(&path).token(&b_tok).send().await.problem(404, "not_found");
        srv.patch(&path).token(&b_tok).json(&json!({ "name": "mine" })).send().await.problem(404, "not_found");
        srv.get(&path).token(&a_tok).send().await.ok(200); // control: the owner sees it
    }
    // Using A's objects: 404 as for ids that never existed.
    let uses = [
        ("/v1/subnets".to_string(), json!({ "vpc_id": id(&v), "name": "x", "ipv4_cidr": "10.50.9.0/24" })),
        ("/v1/network-interfaces".to_string(), json!({ "subnet_id": id(&s), "name": "x" })),
        ("/v1/network-interfaces".to_string(), json!({ "subnet_id": id(&bs), "name": "x", "security_group_ids": [g] })),
        ("/v1/security-groups".to_string(), json!({ "vpc_id": id(&v), "name": "x" })),
        (format!("/v1/security-groups/{g}/rules"), json!({ "direction": "ingress", "protocol": "any" })),
        (
            format!("/v1/security-groups/{}/rules", bv["default_security_group_id"].as_str().unwrap()),
            json!({ "direction": "ingress", "protocol": "any", "remote_group_id": g }),
        ),
        ("/v1/vpcs".to_string(), json!({ "project_id": a_project, "name": "x", "ipv4_cidr": "10.60.0.0/16" })),
    ];
    for (path, body) in uses {
        let r = srv.post(&path).token(&b_tok).json(&body).send().await;
        r.problem(404, "not_found");
        assert_mentions_none(&path, &r.text.replace(&id(&v), "").replace(&id(&s), "").replace(&g, ""), &marks);
    }
    // Attaching A's NIC to an instance of B: 404 (the instance or the NIC: neither is B's to name).
    let ghost_instance = "ins_01KAAAAAAAAAAAAAAAAAAAAAAA";
    srv.post(&format!("/v1/instances/{ghost_instance}/network-interfaces"))
        .token(&b_tok)
        .json(&json!({ "nic_id": id(&n) }))
        .send()
        .await
        .problem(404, "not_found");
    // Lists never show A's objects, even filtered to them.
    for path in [
        "/v1/vpcs".to_string(),
        "/v1/subnets".to_string(),
        "/v1/network-interfaces".to_string(),
        "/v1/security-groups".to_string(),
        format!("/v1/subnets?vpc_id={}", id(&v)),
        format!("/v1/network-interfaces?subnet_id={}", id(&s)),
        format!("/v1/security-groups?vpc_id={}", id(&v)),
    ] {
        let items = srv.list_all(&b_tok, &path).await;
        assert_mentions_none(&path, &serde_json::to_string(&items).unwrap(), &marks);
    }
    // Control: B lists its own.
    assert_eq!(srv.list_ids(&b_tok, "/v1/vpcs").await, [id(&bv)]);
    assert_eq!(snapshot(srv).await, before, "nothing B tried was written");
}

async fn quotas(srv: &TestServer) {
    let (tok, project) = tenant(srv, "quota").await;
    srv.put("/v1/quotas")
        .token(&srv.operator)
        .json(&json!({ "scope_id": project, "limits": { "vpcs": 1, "network_interfaces": 2 } }))
        .send()
        .await
        .ok(200);
    let v = vpc(srv, &tok, &project, "one", "10.80.0.0/16").await;
    let r = srv
        .post("/v1/vpcs")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "two", "ipv4_cidr": "10.81.0.0/16" }))
        .send()
        .await;
    let p = r.problem(409, "quota_exceeded");
    assert_eq!(p["constraint"]["resource"], "vpcs");
    let s = subnet(srv, &tok, &id(&v), "sn", "10.80.1.0/24").await;
    let a = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "a" })).await.ok(201);
    nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "b" })).await.ok(201);
    let before = snapshot(srv).await;
    let p = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "c" })).await.problem(409, "quota_exceeded");
    assert_eq!(p["constraint"]["resource"], "network_interfaces");
    assert_eq!(snapshot(srv).await, before, "the refused NIC wrote nothing");
    // A deleted NIC gives its count back.
    srv.delete(&format!("/v1/network-interfaces/{}", id(&a))).token(&tok).send().await.ok(204);
    nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "c" })).await.ok(201);

    // Floating IPs count too, and a released one gives its count back.
    srv.post("/v1/ip-pools")
        .token(&srv.operator)
        .json(&json!({ "name": "quota-pool", "ipv4_cidr": "198.51.100.0/28" }))
        .send()
        .await
        .ok(201);
    srv.put("/v1/quotas")
        .token(&srv.operator)
        .json(&json!({ "scope_id": project, "limits": { "vpcs": 1, "network_interfaces": 2, "floating_ips": 1 } }))
        .send()
        .await
        .ok(200);
    let fip =
        |name: &str| srv.post("/v1/floating-ips").token(&tok).json(&json!({ "project_id": project, "name": name }));
    let one = fip("one").send().await.ok(201);
    let p = fip("two").send().await.problem(409, "quota_exceeded");
    assert_eq!(p["constraint"]["resource"], "floating_ips");
    assert_eq!(srv.list_all(&tok, "/v1/floating-ips").await.len(), 1, "the refused one wrote nothing");
    srv.delete(&format!("/v1/floating-ips/{}", id(&one))).token(&tok).send().await.ok(204);
    fip("two").send().await.ok(201);
}

/// A shape, a host and the public image, for instance creates.
async fn compute(srv: &TestServer) -> String {
    srv.shape("c1.small", 1, 1024).await;
    srv.enroll_host("node-1", common::fleet::inventory(64, 1 << 20), &[]).await.id
}

async fn instances_get_default_network(srv: &TestServer) {
    let host = compute(srv).await;
    let (tok, project) = tenant(srv, "vm").await;
    // Two first needs at once make one default VPC.
    let (r1, r2) = tokio::join!(
        srv.create_instance(&tok, &project, "vm-1", "c1.small"),
        srv.create_instance(&tok, &project, "vm-2", "c1.small")
    );
    let i1 = r1.ok(202)["instance"].clone();
    let i2 = r2.ok(202)["instance"].clone();
    let vpcs = srv.list_all(&tok, "/v1/vpcs").await;
    assert_eq!(vpcs.len(), 1, "one default VPC: {vpcs:?}");
    assert_eq!(vpcs[0]["is_default"], true);
    assert_eq!(vpcs[0]["ipv4_cidr"], "172.31.0.0/16");
    let subnets = srv.list_all(&tok, "/v1/subnets").await;
    assert_eq!(subnets.len(), 1);
    assert_eq!(
        (subnets[0]["name"].as_str(), subnets[0]["ipv4_cidr"].as_str()),
        (Some("default"), Some("172.31.0.0/20"))
    );
    let mut addrs = BTreeSet::new();
    for i in [&i1, &i2] {
        let nics = srv.list_all(&tok, &format!("/v1/network-interfaces?instance_id={}", id(i))).await;
        assert_eq!(nics.len(), 1, "{nics:?}");
        assert_eq!(nics[0]["slot"], 0);
        assert_eq!(nics[0]["primary"], true);
        assert_eq!(nics[0]["subnet_id"], subnets[0]["id"]);
        addrs.insert(nics[0]["ipv4"].as_str().unwrap().to_string());
    }
    assert_eq!(addrs, BTreeSet::from(["172.31.0.4".to_string(), "172.31.0.5".to_string()]));

    // Explicit NICs: a new one by subnet name with a chosen address, and an existing one.
    let v = vpc(srv, &tok, &project, "apps", "10.70.0.0/16").await;
    let s = subnet(srv, &tok, &id(&v), "front", "10.70.1.0/24").await;
    let spare = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "spare" })).await.ok(201);
    let made = srv
        .post("/v1/instances")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "vm-3", "shape": "c1.small", "image": "debian-12",
            "nics": [{ "subnet": "front", "ipv4": "10.70.1.50" }, { "nic_id": id(&spare) }] }))
        .send()
        .await
        .ok(202);
    let nics = srv.list_all(&tok, &format!("/v1/network-interfaces?instance_id={}", id(&made["instance"]))).await;
    let mut by_slot: Vec<(i64, String)> =
        nics.iter().map(|n| (n["slot"].as_i64().unwrap(), n["ipv4"].as_str().unwrap().to_string())).collect();
    by_slot.sort();
    assert_eq!(by_slot, [(0, "10.70.1.50".to_string()), (1, "10.70.1.4".to_string())]);

    // Refusals of the create write nothing: a taken address, a NIC already plugged, too many.
    let before = snapshot(srv).await;
    let instances_before = srv.list_all(&tok, "/v1/instances").await.len();
    let bad = [
        (json!([{ "subnet": "front", "ipv4": "10.70.1.50" }]), 409, "address_in_use"),
        (json!([{ "nic_id": id(&spare) }]), 409, "nic_attached"),
        (json!([{ "subnet": "nowhere" }]), 404, "not_found"),
        (json!([{ "subnet": "front", "nic_id": id(&spare) }]), 422, "invalid_value"),
        (json!((0..9).map(|_| json!({ "subnet": "front" })).collect::<Vec<_>>()), 422, "too_many"),
    ];
    for (nics, status, code) in bad {
        let r = srv
            .post("/v1/instances")
            .token(&tok)
            .json(&json!({ "project_id": project, "name": "vm-bad", "shape": "c1.small", "image": "debian-12",
                "nics": nics }))
            .send()
            .await;
        r.problem(status, code);
        assert_eq!(snapshot(srv).await, before, "{code}: nothing written");
        assert_eq!(srv.list_all(&tok, "/v1/instances").await.len(), instances_before);
    }
    // An operator binds a NIC to a host without an instance: it is placed at once.
    let bound = srv
        .post("/v1/network-interfaces")
        .token(&srv.operator)
        .json(&json!({ "subnet_id": id(&s), "name": "probe", "host_id": host }))
        .send()
        .await
        .ok(201);
    assert_eq!(bound["host_id"], host.as_str());
    assert_eq!(bound["plug"], "veth", "a bound NIC is a veth unless asked: {bound}");
    assert_eq!(bound["state"], "bound", "placed, not yet applied by an agent: {bound}");
    // A bound NIC cannot be plugged into an instance.
    let r = srv
        .post("/v1/instances")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "vm-4", "shape": "c1.small", "image": "debian-12",
            "nics": [{ "nic_id": id(&bound) }] }))
        .send()
        .await;
    r.problem(409, "nic_bound_to_host");
    // Plugging and unplugging needs a stopped instance.
    let other = nic(srv, &tok, json!({ "subnet_id": id(&s), "name": "other" })).await.ok(201);
    let st = srv.get(&format!("/v1/instances/{}", id(&made["instance"]))).token(&tok).send().await.ok(200);
    assert_ne!(st["state"], "stopped", "no agent runs: the instance is still being created");
    srv.post(&format!("/v1/instances/{}/network-interfaces", id(&made["instance"])))
        .token(&tok)
        .json(&json!({ "nic_id": id(&other) }))
        .send()
        .await
        .problem(409, "instance_not_stopped");
    srv.delete(&format!("/v1/instances/{}/network-interfaces/{}", id(&made["instance"]), id(&spare)))
        .token(&tok)
        .send()
        .await
        .problem(409, "instance_not_stopped");
    // A plugged NIC cannot be deleted.
    srv.delete(&format!("/v1/network-interfaces/{}", id(&spare))).token(&tok).send().await.problem(409, "nic_attached");
    // Nor can a subnet with NICs, nor the default VPC's.
    srv.delete(&format!("/v1/subnets/{}", subnets[0]["id"].as_str().unwrap()))
        .token(&tok)
        .send()
        .await
        .problem(409, "subnet_in_use");
}

/// The host's network spec, read as the host: its VPC's local NICs by id, each with its
/// groups; and each group's rules' ports.
async fn spec_nics(srv: &TestServer, host: &TestHost) -> std::collections::BTreeMap<String, Vec<String>> {
    spec(srv, host).await.0
}

async fn spec(
    srv: &TestServer,
    host: &TestHost,
) -> (std::collections::BTreeMap<String, Vec<String>>, std::collections::BTreeMap<String, Vec<Value>>) {
    let d = srv.get("/agent/v1/desired?wait=0").token(&host.credential).send().await.ok(200);
    let mut out = std::collections::BTreeMap::new();
    let mut rules = std::collections::BTreeMap::new();
    for v in d["network"]["vpcs"].as_array().into_iter().flatten() {
        for g in v["security_groups"].as_array().into_iter().flatten() {
            let ports = g["rules"].as_array().into_iter().flatten().map(|r| r["port_min"].clone()).collect();
            rules.insert(g["security_group_id"].as_str().unwrap_or_default().to_owned(), ports);
        }
        for n in v["nics"].as_array().into_iter().flatten() {
            let groups = n["security_group_ids"].as_array().into_iter().flatten();
            out.insert(
                n["nic_id"].as_str().unwrap_or_default().to_owned(),
                groups.map(|g| g.as_str().unwrap_or_default().to_owned()).collect(),
            );
        }
    }
    (out, rules)
}

/// Each change of a VPC's NICs and groups reaches its host's spec: the server keeps the
/// VPC's rows and reads again only the NIC and group documents whose generation moved, so
/// a document changed (a NIC's groups, a group's rules), a NIC added and one deleted must
/// each show in the next spec, read on top of the rows kept from the one before.
async fn a_hosts_spec_follows_each_nic_change(srv: &TestServer) {
    let g = gate(srv, "follow", NetApply::All).await;
    let v = vpc(srv, &g.tok, &g.project, "main", "10.30.0.0/16").await;
    let s = subnet(srv, &g.tok, &id(&v), "a", "10.30.0.0/24").await;
    let extra = srv
        .post("/v1/security-groups")
        .token(&g.tok)
        .json(&json!({ "vpc_id": id(&v), "name": "extra", "rules": [] }))
        .send()
        .await
        .ok(201);
    let bind = |name: &str| json!({ "subnet_id": id(&s), "name": name, "host_id": g.host.id });
    let one = id(&srv.post("/v1/network-interfaces").token(&srv.operator).json(&bind("one")).send().await.ok(201));
    let two = id(&srv.post("/v1/network-interfaces").token(&srv.operator).json(&bind("two")).send().await.ok(201));
    let before = spec_nics(srv, &g.host).await;
    assert_eq!(before.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([one.clone(), two.clone()]));
    assert_eq!(before[&one].len(), 1, "the default group only: {before:?}");

    srv.patch(&format!("/v1/network-interfaces/{one}"))
        .token(&g.tok)
        .json(&json!({ "security_group_ids": [id(&extra)] }))
        .send()
        .await
        .ok(200);
    let changed = spec_nics(srv, &g.host).await;
    assert_eq!(changed[&one], vec![id(&extra)], "the changed document is read again: {changed:?}");
    assert_eq!(changed[&two], before[&two]);
    let (_, rules) = spec(srv, &g.host).await;
    assert_eq!(rules[&id(&extra)], Vec::<Value>::new());
    srv.post(&format!("/v1/security-groups/{}/rules", id(&extra)))
        .token(&g.tok)
        .json(&json!({ "direction": "ingress", "protocol": "tcp", "port_min": 22, "port_max": 22 }))
        .send()
        .await
        .ok(201);
    let (_, rules) = spec(srv, &g.host).await;
    assert_eq!(rules[&id(&extra)], vec![json!(22)], "the group's changed document is read again");

    let mut tap = bind("three");
    tap["plug"] = json!("tap");
    let three = id(&srv.post("/v1/network-interfaces").token(&srv.operator).json(&tap).send().await.ok(201));
    srv.delete(&format!("/v1/network-interfaces/{two}")).token(&g.tok).send().await.ok(204);
    let after = spec_nics(srv, &g.host).await;
    assert_eq!(after.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([one.clone(), three.clone()]));
    assert_eq!(after[&one], vec![id(&extra)]);
    // Each bound NIC is plugged as its create asked.
    let d = srv.get("/agent/v1/desired?wait=0").token(&g.host.credential).send().await.ok(200);
    let plugs: std::collections::BTreeMap<String, Value> = d["network"]["vpcs"][0]["nics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| (n["nic_id"].as_str().unwrap_or_default().to_owned(), n["plug"].clone()))
        .collect();
    assert_eq!(plugs, std::collections::BTreeMap::from([(one, json!("veth")), (three, json!("tap"))]));
}

async fn desired_generation(srv: &TestServer, host: &TestHost) -> Option<i64> {
    srv.get("/agent/v1/desired?wait=0").token(&host.credential).send().await.ok(200)["generation"].as_i64()
}

async fn nic_filter(srv: &TestServer, tok: &str, nic: &str) -> i64 {
    let n = srv.get(&format!("/v1/network-interfaces/{nic}")).token(tok).send().await.ok(200);
    n["filter_generation"].as_i64().expect("filter_generation")
}

/// The filter generation `host`'s spec gives `nic`.
async fn spec_filter(srv: &TestServer, host: &TestHost, nic: &str) -> Option<i64> {
    let d = srv.get("/agent/v1/desired?wait=0").token(&host.credential).send().await.ok(200);
    let nics = d["network"]["vpcs"][0]["nics"].as_array().cloned().unwrap_or_default();
    nics.iter().find(|n| n["nic_id"] == json!(nic)).and_then(|n| n["filter_generation"].as_i64())
}

/// A change to one group's rules moves the filter generation of that group's members only,
/// and only their hosts are told (a host whose NICs are all outside the group keeps its
/// desired generation: nothing it loads changed). Control: a change to the VPC's members
/// (a NIC joining the group) moves every NIC and tells every host of the VPC.
async fn a_rule_change_reaches_only_its_members_hosts(srv: &TestServer) {
    let (tok, project) = tenant(srv, "scoped").await;
    let v = vpc(srv, &tok, &project, "main", "10.31.0.0/16").await;
    let s = subnet(srv, &tok, &id(&v), "a", "10.31.0.0/24").await;
    let web = srv
        .post("/v1/security-groups")
        .token(&tok)
        .json(&json!({ "vpc_id": id(&v), "name": "web", "rules": [] }))
        .send()
        .await
        .ok(201);
    let inv = common::fleet::inventory(64, 1 << 20);
    let (h1, h2) = (srv.enroll_host("scoped-1", inv.clone(), &[]).await, srv.enroll_host("scoped-2", inv, &[]).await);
    let bind = |name: &str, host: &str| json!({ "subnet_id": id(&s), "name": name, "host_id": host });
    let mut a_body = bind("a", &h1.id);
    a_body["security_group_ids"] = json!([id(&web)]);
    let a = id(&srv.post("/v1/network-interfaces").token(&srv.operator).json(&a_body).send().await.ok(201));
    let b = id(&srv.post("/v1/network-interfaces").token(&srv.operator).json(&bind("b", &h2.id)).send().await.ok(201));
    let (g1, g2, fa, fb) = (
        desired_generation(srv, &h1).await,
        desired_generation(srv, &h2).await,
        nic_filter(srv, &tok, &a).await,
        nic_filter(srv, &tok, &b).await,
    );
    assert!(g1.is_some() && g2.is_some(), "both hosts have a desired generation");

    let rule = srv
        .post(&format!("/v1/security-groups/{}/rules", id(&web)))
        .token(&tok)
        .json(&json!({ "direction": "ingress", "protocol": "tcp", "port_min": 80, "port_max": 80 }))
        .send()
        .await
        .ok(201);
    let fa2 = nic_filter(srv, &tok, &a).await;
    assert!(fa2 > fa, "the member's filter generation moves: {fa} → {fa2}");
    assert_eq!(nic_filter(srv, &tok, &b).await, fb, "a NIC outside the group keeps its filter generation");
    assert!(desired_generation(srv, &h1).await > g1, "the member's host is told");
    assert_eq!(desired_generation(srv, &h2).await, g2, "a host without a member is not told");
    assert_eq!(spec_filter(srv, &h1, &a).await, Some(fa2), "the member's host is told to load what the API shows");
    srv.delete(&format!("/v1/security-groups/{}/rules/{}", id(&web), id(&rule))).token(&tok).send().await.ok(204);
    let fa3 = nic_filter(srv, &tok, &a).await;
    assert!(fa3 > fa2, "removing the rule moves the member again");
    assert_eq!(
        (nic_filter(srv, &tok, &b).await, desired_generation(srv, &h2).await),
        (fb, g2),
        "and again only the member"
    );

    // Control: b joins the group, a change to the VPC's members: every NIC moves, every
    // host of the VPC is told.
    let (g1, g2) = (desired_generation(srv, &h1).await, desired_generation(srv, &h2).await);
    let default =
        srv.get(&format!("/v1/network-interfaces/{b}")).token(&tok).send().await.ok(200)["security_group_ids"][0]
            .clone();
    srv.patch(&format!("/v1/network-interfaces/{b}"))
        .token(&tok)
        .json(&json!({ "security_group_ids": [default, id(&web)] }))
        .send()
        .await
        .ok(200);
    assert!(
        nic_filter(srv, &tok, &a).await > fa3 && nic_filter(srv, &tok, &b).await > fb,
        "a membership change moves every NIC"
    );
    assert!(
        desired_generation(srv, &h1).await > g1 && desired_generation(srv, &h2).await > g2,
        "and tells every host of the VPC"
    );
    assert_eq!(spec_filter(srv, &h2, &b).await, Some(nic_filter(srv, &tok, &b).await));
}

// ---- the start barrier ----------------------------------------------------------------

/// A server whose starts give the NICs `secs` to be ready.
fn nic_deadline(secs: u64) -> ServerConfig {
    ServerConfig { nic_ready_timeout: Duration::from_secs(secs), ..ServerConfig::default() }
}

/// One host whose scripted agent's network reports what `net` says, and a tenant.
struct Gate {
    tok: String,
    project: String,
    host: TestHost,
    agent: TestAgent,
    net: NetSwitch,
}

async fn gate(srv: &TestServer, name: &str, mode: NetApply) -> Gate {
    srv.shape("c1.small", 1, 1024).await;
    srv.public_image("debian-12").await;
    let host = srv.enroll_host("node-1", common::fleet::inventory(64, 1 << 20), &[]).await;
    let net = NetSwitch::new(mode);
    let agent = TestAgent::start_with_network(&srv.base, &host, Boots::Succeed, net.clone());
    let (tok, project) = tenant(srv, name).await;
    Gate { tok, project, host, agent, net }
}

fn op_id(accepted: &Value) -> String {
    accepted["operation"]["id"].as_str().expect("operation id").to_string()
}

async fn instance(srv: &TestServer, tok: &str, iid: &str) -> Value {
    srv.get(&format!("/v1/instances/{iid}")).token(tok).send().await.ok(200)
}

/// Creates an instance that stays stopped (`start: false`) and waits for its host to
/// have prepared it; returns its id.
async fn create_stopped(srv: &TestServer, g: &Gate, name: &str) -> String {
    let v = srv
        .post("/v1/instances")
        .token(&g.tok)
        .json(&json!({ "project_id": g.project, "name": name, "shape": "c1.small", "image": "debian-12",
            "start": false }))
        .send()
        .await
        .ok(202);
    let op = srv.wait_op(&g.tok, &op_id(&v)).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let iid = id(&v["instance"]);
    assert_eq!(instance(srv, &g.tok, &iid).await["state"], "stopped");
    iid
}

/// `POST /v1/instances/{iid}/{action}`: the 202 answer.
async fn act(srv: &TestServer, tok: &str, iid: &str, action: &str) -> Value {
    srv.post(&format!("/v1/instances/{iid}/{action}")).token(tok).send().await.ok(202)
}

/// Waits until each NIC shows `state` (the agent reported what its switch says).
async fn wait_nics(srv: &TestServer, tok: &str, nics: &[&str], state: &str) {
    for n in nics {
        srv.wait_until(tok, &format!("/v1/network-interfaces/{n}"), &format!("NIC {n} {state}"), |v| {
            v["state"] == state
        })
        .await;
    }
}

/// The power the host's desired state asks of the instance, read as the host.
async fn desired_power(srv: &TestServer, host: &TestHost, iid: &str) -> Value {
    let d = srv.get("/agent/v1/desired?wait=0").token(&host.credential).send().await.ok(200);
    let spec = d["instances"].as_array().into_iter().flatten().find(|i| i["instance_id"] == iid).cloned();
    spec.map(|s| s["power"].clone()).unwrap_or(Value::Null)
}

async fn event_kinds(srv: &TestServer, tok: &str, iid: &str) -> Vec<String> {
    let events = srv.list_all(tok, &format!("/v1/instances/{iid}/events")).await;
    events.iter().map(|e| e["kind"].as_str().unwrap_or("").to_string()).collect()
}

/// `start` of a stopped instance with a NIC attached while it was stopped: the guest boots
/// only once both NICs are ready; a NIC its host cannot set up (`nic_failed`) or one not
/// ready by the deadline (`nics_not_ready`) fails the start, naming the NIC and the
/// component, and the instance stays stopped with its host never told to run it.
async fn start_waits_for_its_nics(srv: &TestServer) {
    let g = gate(srv, "gate", NetApply::WithholdFilter).await;
    let iid = create_stopped(srv, &g, "vm").await;
    let primary = srv.list_all(&g.tok, &format!("/v1/network-interfaces?instance_id={iid}")).await;
    assert_eq!(primary.len(), 1, "{primary:?}");
    let primary = id(&primary[0]);
    let subnet = srv.list_all(&g.tok, "/v1/subnets").await;
    let extra = nic(srv, &g.tok, json!({ "subnet_id": id(&subnet[0]), "name": "extra" })).await.ok(201);
    let extra = id(&extra);
    let plugged = srv
        .post(&format!("/v1/instances/{iid}/network-interfaces"))
        .token(&g.tok)
        .json(&json!({ "nic_id": extra }))
        .send()
        .await
        .ok(200);
    assert_eq!(plugged["slot"], 1);
    let before = instance(srv, &g.tok, &iid).await;
    let generation = before["spec_generation"].as_i64().unwrap();

    // The host cannot load the NICs' filter: the start fails at once, with the agent's error.
    g.net.set(NetApply::FailFilter);
    wait_nics(srv, &g.tok, &[&primary, &extra], "failed").await;
    let s = act(srv, &g.tok, &iid, "start").await;
    let op = srv.wait_op(&g.tok, &op_id(&s)).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("nic_failed")), "{op}");
    let detail = op["error"]["detail"].as_str().unwrap();
    assert!(detail.contains(&extra) && detail.contains("filter") && detail.contains(FILTER_ERROR), "{detail}");

    // The host has not applied the filter yet: the start waits for it, the instance
    // stays stopped meanwhile, and past the deadline the start fails naming both NICs.
    g.net.set(NetApply::WithholdFilter);
    wait_nics(srv, &g.tok, &[&primary, &extra], "bound").await;
    let shown = srv.get(&format!("/v1/network-interfaces/{extra}")).token(&g.tok).send().await.ok(200);
    let filter = shown["readiness"].as_array().unwrap().iter().find(|c| c["component"] == "filter").unwrap().clone();
    assert_eq!(filter["applied"], false, "{shown}");
    let s = act(srv, &g.tok, &iid, "start").await;
    assert_eq!(s["instance"]["state"], "stopped", "nothing is published before the NICs are ready: {s}");
    assert_eq!(s["operation"]["status"], "running", "{s}");
    let op = srv.wait_op(&g.tok, &op_id(&s)).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("nics_not_ready")), "{op}");
    let detail = op["error"]["detail"].as_str().unwrap();
    for want in [format!("{extra} (slot 1): filter"), format!("{primary} (slot 0): filter")] {
        assert!(detail.contains(&want), "the problem names {want:?}: {detail}");
    }
    let after = instance(srv, &g.tok, &iid).await;
    assert_eq!(after["state"], "stopped", "{after}");
    assert_eq!(after["spec_generation"].as_i64(), Some(generation), "no spec was published: {after}");
    assert_eq!(desired_power(srv, &g.host, &iid).await, "stopped");
    assert!(!g.agent.told_to_run(&iid), "the host was told to boot it: {:?}", g.agent.seen());
    assert!(!event_kinds(srv, &g.tok, &iid).await.contains(&"boot_requested".to_string()));

    // Once the host applies everything, the same start boots it (and the checks above
    // would have seen it: the host is told to run it).
    g.net.set(NetApply::All);
    wait_nics(srv, &g.tok, &[&primary, &extra], "ready").await;
    let s = act(srv, &g.tok, &iid, "start").await;
    let op = srv.wait_op(&g.tok, &op_id(&s)).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    let running = instance(srv, &g.tok, &iid).await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["spec_generation"].as_i64(), Some(generation + 1), "one boot: {running}");
    assert_eq!(desired_power(srv, &g.host, &iid).await, "running");
    assert!(g.agent.told_to_run(&iid), "{:?}", g.agent.seen());
    let kinds = event_kinds(srv, &g.tok, &iid).await;
    assert!(
        kinds.contains(&"start_requested".to_string()) && kinds.contains(&"boot_requested".to_string()),
        "{kinds:?}"
    );
}

/// The create saga's own wait: a NIC not ready by the deadline fails the create (which
/// unwinds) with `nics_not_ready`, and the host is never told to run it.
async fn create_waits_for_its_nics(srv: &TestServer) {
    let g = gate(srv, "gate", NetApply::WithholdFilter).await;
    let v = srv.create_instance(&g.tok, &g.project, "vm", "c1.small").await.ok(202);
    let iid = id(&v["instance"]);
    let nics = srv.list_all(&g.tok, &format!("/v1/network-interfaces?instance_id={iid}")).await;
    assert_eq!(nics.len(), 1, "{nics:?}");
    let op = srv.wait_op(&g.tok, &op_id(&v)).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("nics_not_ready")), "{op}");
    let detail = op["error"]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{} (slot 0): filter", id(&nics[0]))), "{detail}");
    assert_eq!(instance(srv, &g.tok, &iid).await["state"], "deleted", "the failed create unwound");
    assert!(!g.agent.told_to_run(&iid), "the host was told to boot it: {:?}", g.agent.seen());

    // Control: with the network applied, a create boots its guest.
    g.net.set(NetApply::All);
    let v = srv.create_instance(&g.tok, &g.project, "vm-2", "c1.small").await.ok(202);
    let op = srv.wait_op(&g.tok, &op_id(&v)).await;
    assert_eq!(op["status"], "succeeded", "{op}");
    assert_eq!(instance(srv, &g.tok, &id(&v["instance"])).await["state"], "running");
    assert!(g.agent.told_to_run(&id(&v["instance"])), "{:?}", g.agent.seen());
}

/// Starts waiting for the same NICs: a second start is harmless (one boot, both succeed);
/// a stop asked while a start waits wins (the start fails `superseded` at once, and never
/// boots it).
async fn a_later_action_wins_over_a_waiting_start(srv: &TestServer) {
    let g = gate(srv, "gate", NetApply::WithholdFilter).await;
    let iid = create_stopped(srv, &g, "vm").await;
    let nics = srv.list_ids(&g.tok, &format!("/v1/network-interfaces?instance_id={iid}")).await;
    let nics: Vec<&str> = nics.iter().map(String::as_str).collect();
    let generation = instance(srv, &g.tok, &iid).await["spec_generation"].as_i64().unwrap();

    // (A create that does not start leaves its NICs unplaced: the start places them.)
    let a = act(srv, &g.tok, &iid, "start").await;
    wait_nics(srv, &g.tok, &nics, "bound").await;
    let b = act(srv, &g.tok, &iid, "start").await;
    for s in [&a, &b] {
        assert_eq!(s["operation"]["status"], "running", "both wait for the NICs: {s}");
    }
    g.net.set(NetApply::All);
    for s in [&a, &b] {
        let op = srv.wait_op(&g.tok, &op_id(s)).await;
        assert_eq!(op["status"], "succeeded", "{op}");
    }
    let running = instance(srv, &g.tok, &iid).await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["spec_generation"].as_i64(), Some(generation + 1), "the second start booted nothing more");
    let boots = event_kinds(srv, &g.tok, &iid).await.iter().filter(|k| *k == "boot_requested").count();
    assert_eq!(boots, 1);

    let stop = act(srv, &g.tok, &iid, "stop").await;
    assert_eq!(srv.wait_op(&g.tok, &op_id(&stop)).await["status"], "succeeded");
    g.net.set(NetApply::WithholdFilter);
    wait_nics(srv, &g.tok, &nics, "bound").await;
    let generation = instance(srv, &g.tok, &iid).await["spec_generation"].as_i64().unwrap();
    let start = act(srv, &g.tok, &iid, "start").await;
    let stop = act(srv, &g.tok, &iid, "stop").await;
    assert_eq!(stop["operation"]["status"], "running", "a stop after a waiting start is not a no-op: {stop}");
    assert_eq!(stop["instance"]["spec_generation"].as_i64(), Some(generation + 1), "{stop}");
    // The start ends at once (its NICs are still not ready, and its deadline is far).
    let op = srv.wait_op(&g.tok, &op_id(&start)).await;
    assert_eq!((op["status"].as_str(), op["error"]["code"].as_str()), (Some("failed"), Some("superseded")), "{op}");
    assert!(op["error"]["detail"].as_str().unwrap().contains(&iid), "{op}");
    assert_eq!(srv.wait_op(&g.tok, &op_id(&stop)).await["status"], "succeeded");
    // NICs ready now, and nothing left to boot it.
    g.net.set(NetApply::All);
    wait_nics(srv, &g.tok, &nics, "ready").await;
    let after = instance(srv, &g.tok, &iid).await;
    assert_eq!((after["state"].as_str(), after["spec_generation"].as_i64()), (Some("stopped"), Some(generation + 1)));
    let late =
        g.agent.seen().into_iter().filter(|s| s.instance_id == iid && s.generation > generation).collect::<Vec<_>>();
    assert!(!late.is_empty(), "the agent saw the stop's spec");
    assert!(late.iter().all(|s| s.power == "stopped"), "the superseded start booted it: {late:?}");
}

/// A start waiting for its NICs when its server stops is resumed by the next server (the
/// saga is durable) and boots the guest once the NICs are ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_start_resumes_after_a_restart() {
    let config = ServerConfig {
        lease_ttl: Duration::from_millis(500),
        reconcile_period: Duration::from_millis(200),
        ..nic_deadline(60)
    };
    let srv = TestServer::start_with(config.clone()).await;
    let g = gate(&srv, "gate", NetApply::WithholdFilter).await;
    let iid = create_stopped(&srv, &g, "vm").await;
    let nics = srv.list_ids(&g.tok, &format!("/v1/network-interfaces?instance_id={iid}")).await;
    let s = act(&srv, &g.tok, &iid, "start").await;
    let op = op_id(&s);
    // The start placed the NIC on the host, whose agent has not applied its filter.
    wait_nics(&srv, &g.tok, &[&nics[0]], "bound").await;
    let Gate { tok, host, agent, .. } = g;
    drop(agent);
    let operator = srv.operator.clone();
    let dir = srv.stop();
    let url = format!("sqlite://{}/plinth.db", dir.path().display());
    let store = plinth_store::Store::open(&url).await.expect("reopen");
    let srv = TestServer::serve_on(store, config, operator, dir).await;
    let running = srv.get(&format!("/v1/operations/{op}")).token(&tok).send().await.ok(200);
    assert_eq!(running["status"], "running", "the start still waits: {running}");
    assert_eq!(instance(&srv, &tok, &iid).await["state"], "stopped");
    let agent = TestAgent::start_with_network(&srv.base, &host, Boots::Succeed, NetSwitch::new(NetApply::All));
    let done = srv.wait_op(&tok, &op).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(instance(&srv, &tok, &iid).await["state"], "running");
    assert!(agent.told_to_run(&iid));
}

// ---- IP pools ----------------------------------------------------------------------------

/// Operators hand Plinth public ranges as IP pools: the range defaults to the block's host
/// addresses or is given; no two pools overlap, even when created at the same instant (one
/// of eight concurrent creates of one range wins, the others are told which pool holds it);
/// each bad input is refused with its code and nothing is written; tenants read pools.
async fn ip_pools(srv: &TestServer) {
    let op = srv.operator.as_str();
    let create = |body: Value| async move { srv.post("/v1/ip-pools").token(op).json(&body).send().await };
    let public = create(json!({ "name": "public", "ipv4_cidr": "198.51.100.0/24" })).await.ok(201);
    assert_eq!((public["first"].as_str(), public["last"].as_str()), (Some("198.51.100.1"), Some("198.51.100.254")));
    assert_eq!(public["size"], 254);
    let part = create(json!({ "name": "part", "ipv4_cidr": "203.0.113.0/24", "first": "203.0.113.10",
        "last": "203.0.113.20" }))
    .await
    .ok(201);
    assert_eq!(part["size"], 11);
    let before = srv.list_all(op, "/v1/ip-pools").await;
    assert_eq!(before.len(), 2);

    let p = create(json!({ "name": "half", "ipv4_cidr": "198.51.100.128/25" })).await.problem(409, "ip_pool_overlap");
    assert!(p["detail"].as_str().unwrap().contains("public"), "names the pool it overlaps: {p}");
    assert_eq!(p["constraint"]["ip_pool_id"], id(&public));
    // Beside the given range of "part" is free; inside it is not.
    create(json!({ "name": "beside", "ipv4_cidr": "203.0.113.0/28", "last": "203.0.113.9" })).await.ok(201);
    create(json!({ "name": "inside", "ipv4_cidr": "203.0.113.16/28" })).await.problem(409, "ip_pool_overlap");
    for (body, code) in [
        (json!({ "name": "bits", "ipv4_cidr": "198.51.100.1/24" }), "invalid_cidr"),
        (json!({ "name": "wide", "ipv4_cidr": "128.0.0.0/1" }), "cidr_out_of_range"),
        (json!({ "name": "out", "ipv4_cidr": "192.0.2.0/24", "first": "192.0.3.1" }), "address_outside_block"),
        (
            json!({ "name": "back", "ipv4_cidr": "192.0.2.0/24", "first": "192.0.2.9", "last": "192.0.2.8" }),
            "invalid_range",
        ),
        (json!({ "name": "Bad Name", "ipv4_cidr": "192.0.2.0/24" }), "invalid_name"),
    ] {
        create(body).await.problem(422, code);
    }
    let after_bad = srv.list_all(op, "/v1/ip-pools").await;
    assert_eq!(after_bad.len(), 3, "the refusals wrote nothing: {after_bad:?}");

    let calls = (0..8).map(|i| create(json!({ "name": format!("race{i}"), "ipv4_cidr": "192.0.2.0/24" })));
    let answers = futures::future::join_all(calls).await;
    let won = answers.iter().filter(|r| r.status == 201).count();
    for r in answers.iter().filter(|r| r.status != 201) {
        r.problem(409, "ip_pool_overlap");
    }
    assert_eq!(won, 1, "exactly one of the concurrent creates of one range is made");

    let (tok, _) = tenant(srv, "pools").await;
    let seen = srv.list_all(&tok, "/v1/ip-pools").await;
    assert_eq!(seen.len(), 4, "tenants read the pools");
    srv.get(&format!("/v1/ip-pools/{}", id(&public))).token(&tok).send().await.ok(200);
    srv.delete(&format!("/v1/ip-pools/{}", id(&public))).token(&tok).send().await.problem(403, "forbidden");
    srv.delete(&format!("/v1/ip-pools/{}", id(&public))).token(op).send().await.ok(204);
    create(json!({ "name": "half", "ipv4_cidr": "198.51.100.128/25" })).await.ok(201);
}

// ---- floating IPs --------------------------------------------------------------------------

/// A project allocates floating IPs from a pool: none without a pool, the only pool by
/// default, the lowest free address each time (concurrent allocations never share one),
/// `409 ip_pool_exhausted` naming the pool and its size once it is full, a named pool when
/// there are several; a released address is given out again; a pool with addresses out
/// cannot be deleted.
async fn floating_ips(srv: &TestServer) {
    let op = srv.operator.as_str();
    let (tok, project) = tenant(srv, "fips").await;
    let t = tok.as_str();
    let alloc = |name: String, pool: Option<String>| {
        let mut body = json!({ "project_id": project, "name": name });
        if let Some(p) = pool {
            body["ip_pool_id"] = json!(p);
        }
        async move { srv.post("/v1/floating-ips").token(t).json(&body).send().await }
    };
    alloc("first".into(), None).await.problem(409, "no_ip_pool");
    let pool = srv
        .post("/v1/ip-pools")
        .token(op)
        .json(&json!({ "name": "small", "ipv4_cidr": "198.51.100.0/29" }))
        .send()
        .await
        .ok(201);
    let first = alloc("first".into(), None).await.ok(201);
    assert_eq!((first["address"].as_str(), first["state"].as_str()), (Some("198.51.100.1"), Some("detached")));
    assert_eq!(first["ip_pool_id"], id(&pool));

    let answers = futures::future::join_all((0..7).map(|i| alloc(format!("f{i}"), Some(id(&pool))))).await;
    let mut got = BTreeSet::new();
    for r in &answers {
        if r.status == 201 {
            assert!(got.insert(r.json()["address"].as_str().unwrap().to_string()), "an address given twice");
        } else {
            let p = r.problem(409, "ip_pool_exhausted");
            let d = p["detail"].as_str().unwrap();
            assert!(
                d.contains("small") && d.contains(&id(&pool)) && d.contains('6'),
                "names the pool and its size: {d}"
            );
        }
    }
    let want: BTreeSet<String> = (2..=6).map(|i| format!("198.51.100.{i}")).collect();
    assert_eq!(got, want, "every other address of the range, once each");
    assert_eq!(srv.list_all(t, "/v1/floating-ips").await.len(), 6, "the refused allocations wrote nothing");

    srv.delete(&format!("/v1/floating-ips/{}", id(&first))).token(t).send().await.ok(204);
    let again = alloc("again".into(), None).await.ok(201);
    assert_eq!(again["address"], "198.51.100.1", "a released address is the lowest free one again");
    srv.delete(&format!("/v1/ip-pools/{}", id(&pool))).token(op).send().await.problem(409, "has_dependents");

    srv.post("/v1/ip-pools")
        .token(op)
        .json(&json!({ "name": "other", "ipv4_cidr": "203.0.113.0/24" }))
        .send()
        .await
        .ok(201);
    alloc("which".into(), None).await.problem(422, "ip_pool_required");
    let (other_tok, _) = tenant(srv, "fips-other").await;
    srv.get(&format!("/v1/floating-ips/{}", id(&again))).token(&other_tok).send().await.problem(404, "not_found");
}

/// The `address_seconds` records of one resource, oldest first.
async fn address_records(srv: &TestServer, resource: &str) -> Vec<Value> {
    let r = srv
        .get(&format!("/v1/usage?resource_id={resource}&meter=address_seconds"))
        .token(&srv.operator)
        .send()
        .await
        .ok(200);
    let mut items = r["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|i| i["start_at"].as_str().unwrap_or("").to_string());
    items
}

/// Microseconds between two RFC 3339 instants.
fn micros_between(a: &Value, b: &Value) -> i64 {
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp_micros();
    t(b) - t(a)
}

/// Test 6 of issue 18 and the address meters: SNAT addresses by default when a pool has
/// one (and refused when asked for without), floating IPs attached, moved and detached
/// in one call each, each attachment an `address_seconds` interval opened and closed in
/// the same transaction (a move closes one and opens the next at the same instant), bad
/// input refused with nothing written.
async fn external_access(srv: &TestServer) {
    let op = srv.operator.as_str();
    let (tok, project) = tenant(srv, "ext").await;
    let t = tok.as_str();
    let v = vpc(srv, t, &project, "main", "10.90.0.0/16").await;
    let sn = subnet(srv, t, &id(&v), "sn", "10.90.1.0/24").await;
    // No pool: a NIC is private by default, and asking for snat names the missing pool.
    let early = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "early" })).await.ok(201);
    assert_eq!((early["external_access"].as_str(), early["snat_address"].as_null()), (Some("none"), Some(())));
    let before = snapshot(srv).await;
    let p = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "x", "external_access": "snat" }))
        .await
        .problem(409, "no_ip_pool");
    assert_eq!(p["constraint"]["field"], "external_access");
    assert_eq!(snapshot(srv).await, before, "the refused NIC wrote nothing");
    srv.post("/v1/ip-pools")
        .token(op)
        .json(&json!({ "name": "bad", "ipv4_cidr": "198.51.100.0/28", "first": "198.51.100.2", "last": "198.51.100.6",
                       "gateway": "198.51.100.3" }))
        .send()
        .await
        .problem(422, "gateway_in_range");
    let pool = srv
        .post("/v1/ip-pools")
        .token(op)
        .json(&json!({ "name": "edge", "ipv4_cidr": "198.51.100.0/28", "first": "198.51.100.2", "last": "198.51.100.6",
                       "gateway": "198.51.100.1" }))
        .send()
        .await
        .ok(201);
    let n1 = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "n1" })).await.ok(201);
    assert_eq!((n1["external_access"].as_str(), n1["snat_address"].as_str()), (Some("snat"), Some("198.51.100.2")));
    let n2 = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "n2", "external_access": "none" })).await.ok(201);
    assert!(n2["snat_address"].is_null());
    let snat = address_records(srv, &id(&n1)).await;
    assert_eq!(snat.len(), 1, "{snat:?}");
    assert_eq!((snat[0]["dimension"].as_str(), snat[0]["end_at"].as_null()), (Some("snat"), Some(())));
    assert_eq!(snat[0]["attributes"]["address"], "198.51.100.2");

    let f = srv.post("/v1/floating-ips").token(t).json(&json!({ "project_id": project, "name": "f" })).send().await;
    let f = f.ok(201);
    assert_eq!(f["address"], "198.51.100.3", "floating and SNAT addresses share the pool");
    let attach = |fip: String, nic: String, tok: String| async move {
        srv.post(&format!("/v1/floating-ips/{fip}/attach")).token(&tok).json(&json!({ "nic_id": nic })).send().await
    };
    // A NIC on no host has nothing to apply: attached at once.
    let before_attach = chrono::Utc::now();
    let a = attach(id(&f), id(&n1), tok.clone()).await.ok(200);
    let after_attach = chrono::Utc::now();
    assert_eq!((a["state"].as_str(), a["nic_id"].as_str()), (Some("attached"), Some(id(&n1).as_str())));
    let shown = srv.get(&format!("/v1/network-interfaces/{}", id(&n1))).token(t).send().await.ok(200);
    assert_eq!(shown["floating_ips"], json!([{ "id": id(&f), "address": "198.51.100.3" }]));
    let before_move = chrono::Utc::now();
    let m = attach(id(&f), id(&n2), tok.clone()).await.ok(200);
    let after_move = chrono::Utc::now();
    assert_eq!(m["nic_id"], id(&n2).as_str(), "a move is one call");
    let shown = srv.get(&format!("/v1/network-interfaces/{}", id(&n1))).token(t).send().await.ok(200);
    assert_eq!(shown["floating_ips"], json!([]), "the NIC it left no longer lists it");
    let recs = address_records(srv, &id(&f)).await;
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(
        (recs[0]["attributes"]["nic_id"].as_str(), recs[1]["attributes"]["nic_id"].as_str()),
        (Some(id(&n1).as_str()), Some(id(&n2).as_str()))
    );
    assert_eq!(recs[0]["end_at"], recs[1]["start_at"], "a move closes one record and opens the next at once");
    // The records' instants are those of the calls: the interval is the attachment's.
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&chrono::Utc);
    assert!((before_attach..=after_attach).contains(&at(&recs[0]["start_at"])), "{recs:?}");
    assert!((before_move..=after_move).contains(&at(&recs[0]["end_at"])), "{recs:?}");
    assert_eq!(recs[0]["quantity_micros"].as_i64(), Some(micros_between(&recs[0]["start_at"], &recs[0]["end_at"])));
    assert!(recs[1]["end_at"].is_null());

    // Bad input and tenancy: nothing written.
    let (other, other_project) = tenant(srv, "ext-other").await;
    let ov = vpc(srv, &other, &other_project, "theirs", "10.91.0.0/16").await;
    let osn = subnet(srv, &other, &id(&ov), "sn", "10.91.1.0/24").await;
    let theirs =
        nic(srv, &other, json!({ "subnet_id": id(&osn), "name": "theirs", "external_access": "none" })).await.ok(201);
    let before = snapshot(srv).await;
    // Another tenant's NIC is answered as one that does not exist.
    let p = attach(id(&f), id(&theirs), tok.clone()).await.problem(422, "invalid_reference");
    assert!(p["detail"].as_str().unwrap().contains("does not exist"), "{p}");
    attach(id(&f), id(&theirs), other.clone()).await.problem(404, "not_found");
    srv.post(&format!("/v1/floating-ips/{}/detach", id(&f))).token(&other).send().await.problem(404, "not_found");
    assert_eq!(snapshot(srv).await, before, "another tenant's refusals wrote nothing");
    let second = srv.create_project(t, None, "ext-second").await;
    let sv = vpc(srv, t, &id(&second), "second", "10.92.0.0/16").await;
    let ssn = subnet(srv, t, &id(&sv), "sn", "10.92.1.0/24").await;
    let elsewhere =
        nic(srv, t, json!({ "subnet_id": id(&ssn), "name": "elsewhere", "external_access": "none" })).await.ok(201);
    let before_refusal = snapshot(srv).await;
    attach(id(&f), id(&elsewhere), tok.clone()).await.problem(422, "floating_ip_other_project");
    srv.delete(&format!("/v1/floating-ips/{}", id(&f))).token(t).send().await.problem(409, "floating_ip_attached");
    assert_eq!(snapshot(srv).await, before_refusal, "refusals wrote nothing");

    // The pool runs out: an explicit snat is refused naming it; a default one is private.
    let n3 = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "n3" })).await.ok(201);
    assert_eq!(n3["snat_address"], "198.51.100.4");
    srv.post("/v1/floating-ips").token(t).json(&json!({ "project_id": project, "name": "g" })).send().await.ok(201);
    srv.post("/v1/floating-ips").token(t).json(&json!({ "project_id": project, "name": "h" })).send().await.ok(201);
    let p = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "n4", "external_access": "snat" }))
        .await
        .problem(409, "ip_pool_exhausted");
    let d = p["detail"].as_str().unwrap();
    assert!(d.contains("edge") && d.contains(&id(&pool)), "names the pool: {d}");
    let n5 = nic(srv, t, json!({ "subnet_id": id(&sn), "name": "n5" })).await.ok(201);
    assert_eq!(n5["external_access"], "none", "a default NIC stays private when no address is free");
    // Releasing an SNAT address closes its record and frees the address.
    let r = srv
        .patch(&format!("/v1/network-interfaces/{}", id(&n3)))
        .token(t)
        .json(&json!({ "external_access": "none" }))
        .send()
        .await
        .ok(200);
    assert!(r["snat_address"].is_null());
    let recs = address_records(srv, &id(&n3)).await;
    assert!(recs.len() == 1 && !recs[0]["end_at"].is_null(), "{recs:?}");
    let r = srv
        .patch(&format!("/v1/network-interfaces/{}", id(&n5)))
        .token(t)
        .json(&json!({ "external_access": "snat" }))
        .send()
        .await
        .ok(200);
    assert_eq!(r["snat_address"], "198.51.100.4", "the freed address, again");

    // A NIC deleted with a floating IP attached: the IP is detached, its record closed.
    srv.delete(&format!("/v1/network-interfaces/{}", id(&n2))).token(t).send().await.ok(204);
    let after = srv.get(&format!("/v1/floating-ips/{}", id(&f))).token(t).send().await.ok(200);
    assert_eq!((after["state"].as_str(), after["nic_id"].as_null()), (Some("detached"), Some(())));
    assert!(address_records(srv, &id(&f)).await.iter().all(|r| !r["end_at"].is_null()));
    srv.delete(&format!("/v1/ip-pools/{}", id(&pool))).token(op).send().await.problem(409, "has_dependents");
}

macro_rules! both_backends {
    ($name:ident, $pg:ident, $scenario:ident) => {
        both_backends!($name, $pg, $scenario, ServerConfig::default());
    };
    ($name:ident, $pg:ident, $scenario:ident, $config:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let srv = TestServer::start_with($config).await;
            $scenario(&srv).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $pg() {
            let Some(srv) = TestServer::start_on_postgres_with($config).await else {
                eprintln!("PLINTH_TEST_DATABASE_URL is not set: the PostgreSQL run needs the README's test command");
                return;
            };
            $scenario(&srv).await;
        }
    };
}

both_backends!(creates_defaults_and_ipam_sqlite, creates_defaults_and_ipam_postgres, creates_defaults_and_ipam);
both_backends!(concurrent_nic_creates_sqlite, concurrent_nic_creates_postgres, concurrent_creates_on_a_28);
both_backends!(bad_input_writes_nothing_sqlite, bad_input_writes_nothing_postgres, bad_input_writes_nothing);
both_backends!(tenancy_sqlite, tenancy_postgres, tenancy);
both_backends!(
    instances_get_default_network_sqlite,
    instances_get_default_network_postgres,
    instances_get_default_network
);
both_backends!(quotas_sqlite, quotas_postgres, quotas);
both_backends!(ip_pools_sqlite, ip_pools_postgres, ip_pools);
both_backends!(floating_ips_sqlite, floating_ips_postgres, floating_ips);
both_backends!(external_access_sqlite, external_access_postgres, external_access);
both_backends!(
    a_hosts_spec_follows_each_nic_change_sqlite,
    a_hosts_spec_follows_each_nic_change_postgres,
    a_hosts_spec_follows_each_nic_change
);
both_backends!(
    a_rule_change_reaches_only_its_members_hosts_sqlite,
    a_rule_change_reaches_only_its_members_hosts_postgres,
    a_rule_change_reaches_only_its_members_hosts
);
both_backends!(
    start_waits_for_its_nics_sqlite,
    start_waits_for_its_nics_postgres,
    start_waits_for_its_nics,
    nic_deadline(2)
);
both_backends!(
    create_waits_for_its_nics_sqlite,
    create_waits_for_its_nics_postgres,
    create_waits_for_its_nics,
    nic_deadline(2)
);
both_backends!(
    a_later_action_wins_over_a_waiting_start_sqlite,
    a_later_action_wins_over_a_waiting_start_postgres,
    a_later_action_wins_over_a_waiting_start,
    nic_deadline(60)
);
