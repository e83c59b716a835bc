//! The lab's control side, shared by the tenant-network tests: a `plinth server` on the
//! lab's control address, `plinth agent`s inside host namespaces, and a small API client
//! with the waits those tests need (a NIC `ready`, a filter generation applied).
#![allow(dead_code)]

use super::netlab::*;
use super::{BIN, Proc, until};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The API as the operator.
pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Api {
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        self.ok(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.ok(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Value {
        self.ok(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) {
        self.ok(reqwest::Method::DELETE, path, None).await;
    }

    /// Adds a rule to group `sg`; returns its id.
    pub async fn rule(&self, sg: &Value, rule: Value) -> String {
        s(&self.post(&format!("/v1/security-groups/{}/rules", s(sg, "id")), rule).await, "id")
    }

    pub async fn unrule(&self, sg: &Value, rule_id: &str) {
        self.delete(&format!("/v1/security-groups/{}/rules/{rule_id}", s(sg, "id"))).await;
    }

    /// Sets a NIC's groups.
    pub async fn groups(&self, nic: &Value, groups: &[&Value]) {
        let ids: Vec<String> = groups.iter().map(|g| s(g, "id")).collect();
        self.patch(&format!("/v1/network-interfaces/{}", s(nic, "id")), json!({ "security_group_ids": ids })).await;
    }

    /// Waits until the NIC is `ready`; returns it.
    pub async fn ready(&self, nic: &Value) -> Value {
        let id = s(nic, "id");
        until(&format!("NIC {id} to be ready"), Duration::from_secs(60), || async {
            let n = self.get(&format!("/v1/network-interfaces/{id}")).await;
            assert_ne!(n["state"], "failed", "{n}");
            (n["state"] == "ready").then_some(n)
        })
        .await
    }

    /// Waits until every NIC's host has loaded the filter generation the API holds.
    pub async fn applied(&self, nics: &[&Value]) {
        let end = Instant::now() + Duration::from_secs(30);
        for nic in nics {
            let left = end.saturating_duration_since(Instant::now());
            until("the filter generation to be applied", left, || async {
                let n = self.get(&format!("/v1/network-interfaces/{}", s(nic, "id"))).await;
                (n["state"] == "ready" && n["filter_generation_applied"] == n["filter_generation"]).then_some(())
            })
            .await;
        }
    }
}

/// A `plinth server` listening on the lab's control address (SQLite in `d` unless
/// `database` is given; TLS and image files in `d`).
pub async fn server(lab: &NetLab, d: &Path, database: Option<String>) -> (Proc, Api) {
    let log = d.join("server.log");
    let db = database.unwrap_or_else(|| format!("sqlite://{}", d.join("plinth.db").display()));
    let p = Proc(
        Command::new(BIN)
            .args(["server", "--listen", &format!("{}:0", lab.server_ip()), "--operator-token-file"])
            .arg(d.join("operator-token"))
            .arg("--database-url")
            .arg(&db)
            .arg("--tls-dir")
            .arg(d.join("tls"))
            .env("PLINTH_BLOB_DIR", d.join("blobs"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("spawn plinth server"),
    );
    let prefix = format!("https://{}:", lab.server_ip());
    let url = wait("the server to listen", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.split_whitespace().find(|w| w.starts_with(&prefix)).map(str::to_string)
    });
    let token = wait("the operator token", Duration::from_secs(30), || {
        std::fs::read_to_string(d.join("operator-token")).ok().map(|s| s.trim().to_string())
    });
    let ca = plinth_client::connect::Ca::from_file(&d.join("tls/ca.pem")).expect("the server's CA");
    (p, Api { http: plinth_client::connect::trusting(&ca).build().unwrap(), url, token })
}

/// `plinth agent` inside host `i`'s network namespace (nsenter: `ip netns exec` would hide
/// the VPC namespaces it makes in a private mount namespace). Restarted with the same data
/// directory it reuses its credential.
pub async fn agent(lab: &NetLab, i: usize, d: &Path, api: &Api) -> Proc {
    let jt = api.post("/v1/host-join-tokens", json!({})).await;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join(format!("agent{i}.log"))).unwrap();
    let host = lab.host(i);
    Proc(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .args([BIN, "agent", "--server", &api.url, "--join-token"])
            .arg(jt["agent_join_token"].as_str().unwrap())
            .args(["--hostname", &format!("{}-h{i}", lab.prefix)])
            .arg("--data-dir")
            .arg(d.join(format!("agent{i}")))
            .args(["--underlay-ip", &lab.underlay(i), "--netns-prefix", &lab.vpc_prefix(i), "--poll-wait", "5"])
            .args(["--provider-bridge", PROVIDER_BRIDGE, "--counter-interval", "1", "--datapath", lab.datapath])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn plinth agent"),
    )
}

pub fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_string()
}

pub async fn wait_hosts(api: &Api, lab: &NetLab) -> Vec<String> {
    let start = Instant::now();
    loop {
        let hosts = api.get("/v1/hosts?limit=100").await;
        let mut ids = vec![];
        for i in 1..=lab.hosts {
            let name = format!("{}-h{i}", lab.prefix);
            if let Some(h) = hosts["items"].as_array().unwrap().iter().find(|h| h["name"] == name.as_str())
                && h["state"] == "available"
            {
                ids.push(s(h, "id"));
            }
        }
        if ids.len() == lab.hosts {
            return ids;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "hosts did not become available: {hosts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
