//! TLS through the real binary: `plinth up` serves HTTPS with its own CA; an agent joins
//! with nothing but the join token (which pins the CA) and keeps the CA for later starts;
//! a join token pinning another CA is refused and enrols nothing; a CLI without the CA
//! gets a sentence saying what to do; the CA survives a restart; plain HTTP is refused
//! off loopback; and an agent in another network namespace joins over a veth pair.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `plinth up --no-demo` in `d` with the profile `d/profile.toml`; answers the process
/// and its URL.
fn up(d: &Path, listen: &str, run: u32) -> (Proc, String) {
    let profile = d.join("profile.toml");
    let log = d.join(format!("up-{run}.log"));
    let p = spawn(
        &["up", "--no-demo", "--data-dir", d.join("data").to_str().unwrap(), "--listen", listen],
        &profile,
        log.clone(),
        &[],
    );
    let url = wait_for("plinth up", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let rest = text.split("Plinth is up at ").nth(1)?;
        Some(rest.split_whitespace().next()?.to_string())
    });
    (p, url)
}

/// A new join token: (what the agent takes, the CA fingerprint).
fn join_token(profile: &Path) -> (String, String) {
    let jt = ok(profile, None, &["join-token", "create", "--description", "tls test"]);
    let ca = jt["ca_sha256"].as_str().expect("an HTTPS server's join token carries its CA").to_string();
    let combined = jt["agent_join_token"].as_str().unwrap().to_string();
    assert_eq!(combined, format!("{}@sha256:{ca}", jt["secret"].as_str().unwrap()));
    (combined, ca)
}

fn host_names(profile: &Path) -> Vec<String> {
    let hosts = ok(profile, None, &["host", "list"]);
    hosts["items"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap().to_string()).collect()
}

/// `plinth agent --runtime sim` of one host `name`, knowing only the server URL and the
/// join token (no profile: `PLINTH_CONFIG` names no file), run through `wrap` (e.g.
/// `ip netns exec NS`).
fn agent_cmd(wrap: &[&str], d: &Path, url: &str, join: Option<&str>, name: &str) -> Command {
    let mut c = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    c.args(["agent", "--runtime", "sim", "--sim-hosts", "1", "--sim-prefix", name, "--sim-delay-ms", "20"])
        .args(["--server", url, "--state-dir"])
        .arg(d.join(format!("agent-{name}")))
        .env("PLINTH_CONFIG", d.join("no-profile.toml"))
        .env_remove("PLINTH_TOKEN")
        .env_remove("PLINTH_CA_CERT");
    if let Some(j) = join {
        c.args(["--join-token", j]);
    }
    c
}

fn spawn_agent(mut c: Command, log: PathBuf) -> Proc {
    c.stdout(Stdio::from(std::fs::File::create(&log).unwrap()));
    c.stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()));
    Proc(c.spawn().expect("spawn plinth agent"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn fingerprint_of_pem(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).unwrap();
    plinth_client::connect::Ca::from_pem(&pem).unwrap().fingerprint().hex()
}

#[test]
fn agents_pin_the_ca_from_the_join_token_and_the_ca_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let profile = d.join("profile.toml");
    let (server, url) = up(d, "127.0.0.1:0", 1);
    assert!(url.starts_with("https://127.0.0.1:"), "plinth up serves HTTPS: {url}");
    let saved = std::fs::read_to_string(&profile).unwrap();
    assert!(saved.contains("ca_cert"), "the profile holds the CA: {saved}");
    let (join, ca) = join_token(&profile);
    assert_eq!(fingerprint_of_pem(&d.join("data/tls/ca.pem")), ca);

    // A join token pinning another CA: refused, naming both fingerprints; nothing enrols.
    let other = "ab".repeat(32);
    let forged = format!("{}@sha256:{other}", join.split('@').next().unwrap());
    let out = agent_cmd(&[], d, &url, Some(&forged), "forged").output().unwrap();
    assert!(!out.status.success(), "an agent pinning another CA must refuse: {}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("sha256:{ca}")) && said.contains(&format!("sha256:{other}")), "{said}");
    assert!(said.contains("refusing"), "{said}");
    assert!(!d.join("agent-forged/ca.pem").exists(), "no CA kept from a refused server");
    assert!(host_names(&profile).is_empty(), "the refused agent enrolled nothing");

    // The real token: the agent pins the CA, keeps it, and its host joins.
    let agent = spawn_agent(agent_cmd(&[], d, &url, Some(&join), "tls"), d.join("agent-1.log"));
    wait_for("the host to enrol over TLS", Duration::from_secs(60), || {
        host_names(&profile).contains(&"tls-0000".to_string()).then_some(())
    });
    assert_eq!(fingerprint_of_pem(&d.join("agent-tls/ca.pem")), ca, "the agent keeps the pinned CA");
    drop(agent);

    // A restart keeps the CA (and the serving certificate for the same names).
    let chain = std::fs::read(d.join("data/tls/server.pem")).unwrap();
    drop(server);
    let (_server, url2) = up(d, "127.0.0.1:0", 2);
    let (_, ca2) = join_token(&profile);
    assert_eq!(ca2, ca, "the CA survives a restart");
    assert_eq!(std::fs::read(d.join("data/tls/server.pem")).unwrap(), chain, "the serving certificate too");

    // The enrolled agent comes back with its stored credential and CA (no join token).
    let _agent = spawn_agent(agent_cmd(&[], d, &url2, None, "tls"), d.join("agent-2.log"));
    wait_for("the agent to reuse its credential over TLS", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(d.join("agent-2.log")).unwrap_or_default();
        log.contains("1/1 hosts ready (0 enrolled now, 1 reused)").then_some(())
    });
    assert_eq!(host_names(&profile), vec!["tls-0000".to_string()]);
}

#[test]
fn clients_without_the_ca_are_told_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_server, url) = up(d, "127.0.0.1:0", 1);
    let token = std::fs::read_to_string(d.join("data/operator-token")).unwrap().trim().to_string();

    // A profile with the server and token but no CA.
    let bare = d.join("bare.toml");
    std::fs::write(&bare, format!("server = \"{url}\"\ntoken = \"{token}\"\n")).unwrap();
    let out = cli(&bare, None, &["tenant", "list"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("certificate is not trusted") && said.contains("--ca-cert"), "{said}");
    assert!(!said.contains("InvalidCertificate"), "no rustls debug dump: {said}");

    // With the CA given, the same profile works; `plinth login --ca-cert` keeps it.
    let ca = d.join("data/tls/ca.pem");
    let out = cli(&bare, None, &["tenant", "list", "--ca-cert", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&bare, None, &["login", "--server", &url, "--token", &token, "--ca-cert", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&bare, None, &["tenant", "list"]);
    assert!(out.status.success(), "{}", text(&out));

    // Plain HTTP to the HTTPS port: a problem that says so, not a dropped connection.
    let plain = url.replace("https://", "http://");
    let out = cli(&bare, None, &["tenant", "list", "--server", &plain]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(said.contains("https_required") && said.contains("https://"), "{said}");
}

#[test]
fn plain_http_only_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("plinth.db").display());
    let out = Command::new(BIN)
        .args(["server", "--database-url", &db, "--listen", "0.0.0.0:0", "--insecure-http"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("--insecure-http is refused"), "{}", text(&out));
}

/// A network namespace with a veth pair to the host, removed on drop (even when the test
/// fails).
struct Netns {
    name: String,
    host_if: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out));
}

#[test]
fn an_agent_in_another_network_namespace_joins_with_only_the_join_token() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let have_ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    if !root || !have_ip {
        eprintln!(
            "SKIPPED: needs root and the `ip` tool (iproute2) to make a network namespace (root: {root}, ip: {have_ip})"
        );
        return;
    }
    let pid = std::process::id();
    // Addresses and names of this test process only (other tests may run at once).
    let net = format!("10.{}.{}", 200 + pid % 50, (pid / 50) % 250);
    let ns = Netns { name: format!("plinth-tls-{pid}"), host_if: format!("pth{}", pid % 1_000_000) };
    let peer_if = format!("ptn{}", pid % 1_000_000);
    ip(&["netns", "add", &ns.name]);
    ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &peer_if]);
    ip(&["link", "set", &peer_if, "netns", &ns.name]);
    ip(&["addr", "add", &format!("{net}.1/24"), "dev", &ns.host_if]);
    ip(&["link", "set", &ns.host_if, "up"]);
    ip(&["netns", "exec", &ns.name, "ip", "addr", "add", &format!("{net}.2/24"), "dev", &peer_if]);
    ip(&["netns", "exec", &ns.name, "ip", "link", "set", &peer_if, "up"]);
    ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);

    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let profile = d.join("profile.toml");
    let (_server, local) = up(d, &format!("{net}.1:0"), 1);
    let port = local.rsplit(':').next().unwrap().to_string();
    let url = format!("https://{net}.1:{port}");
    assert_eq!(local, url, "the server is dialled at its veth address");
    let (join, ca) = join_token(&profile);

    // The agent in the namespace: only the URL and the join token.
    let _agent = spawn_agent(
        agent_cmd(&["ip", "netns", "exec", &ns.name], d, &url, Some(&join), "netns"),
        d.join("agent-netns.log"),
    );
    wait_for("the namespaced host to enrol over TLS", Duration::from_secs(60), || {
        host_names(&profile).contains(&"netns-0000".to_string()).then_some(())
    });
    assert_eq!(fingerprint_of_pem(&d.join("agent-netns/ca.pem")), ca);
    let hosts: Value = ok(&profile, None, &["host", "list"]);
    let h = hosts["items"].as_array().unwrap().iter().find(|h| h["name"] == "netns-0000").unwrap().clone();
    wait_for("the namespaced host to be available", Duration::from_secs(60), || {
        let v = ok(&profile, None, &["host", "get", h["id"].as_str().unwrap()]);
        (v["state"] == "available").then_some(())
    });
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
