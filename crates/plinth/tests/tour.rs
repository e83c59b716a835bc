//! The README's tour, end to end through the real binary: `plinth up` on an empty data
//! dir, then the CLI alone — create a tenant, a project, a tenant-admin token; as that
//! tenant see only its own objects; as the operator see the audit records of all of it;
//! stop with Ctrl-C and start again with everything kept.

mod common;

use common::{BIN, cli, ok as json};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Up {
    child: Child,
    log: PathBuf,
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn start(dir: &Path, profile: &Path, run: u32) -> Up {
    let log = dir.join(format!("up-{run}.log"));
    let child = Command::new(BIN)
        .args(["up", "--no-demo", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("PLINTH_CONFIG", profile)
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plinth up");
    wait_for("plinth up to say it is up", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("Plinth is up at")
    });
    Up { child, log }
}

fn stop(mut up: Up) {
    let status = Command::new("kill").arg("-INT").arg(up.child.id().to_string()).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(s) = up.child.try_wait().unwrap() {
            assert!(s.success(), "plinth up exits cleanly on Ctrl-C: {s}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "plinth up did not stop on Ctrl-C");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn tour_from_an_empty_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("profile.toml");
    let up = start(tmp.path(), &profile, 1);
    let first = std::fs::read_to_string(&up.log).unwrap();
    assert!(first.contains("created the operator"), "{first}");
    let token_file = tmp.path().join("data/operator-token");
    let operator_token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
    assert!(first.contains(&operator_token), "the token is printed once on first start");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&profile).unwrap().permissions().mode() & 0o777, 0o600);

    // The operator, through the profile `plinth up` wrote.
    let acme = json(&profile, None, &["tenant", "create", "acme", "--display-name", "Acme Corp"]);
    let acme_id = acme["id"].as_str().unwrap();
    let web = json(&profile, None, &["project", "create", "web", "--tenant", acme_id]);
    let alice = json(&profile, None, &["user", "create", "alice", "--tenant", acme_id]);
    let alice_id = alice["id"].as_str().unwrap();
    json(&profile, None, &["role-binding", "create", "--user", alice_id, "--role", "tenant-admin"]);
    let tok = json(&profile, None, &["token", "create", "alice-cli", "--user", alice_id]);
    let alice_token = tok["secret"].as_str().unwrap().to_string();
    assert!(alice_token.starts_with("plt_"));
    let other = json(&profile, None, &["tenant", "create", "globex"]);
    let secret_project =
        json(&profile, None, &["project", "create", "secret", "--tenant", other["id"].as_str().unwrap()]);

    // As the tenant-admin: only its own objects.
    let t = Some(alice_token.as_str());
    assert_eq!(ids(&json(&profile, t, &["tenant", "list"])), vec![acme_id.to_string()]);
    assert_eq!(ids(&json(&profile, t, &["project", "list"])), vec![web["id"].as_str().unwrap().to_string()]);
    let api = json(&profile, t, &["project", "create", "api"]);
    assert_eq!(api["tenant_id"], acme["id"], "a tenant user's project lands in its tenant");
    let peek = cli(&profile, t, &["project", "get", secret_project["id"].as_str().unwrap()]);
    assert!(!peek.status.success());
    let err = String::from_utf8_lossy(&peek.stderr);
    assert!(err.contains("not_found"), "{err}");
    let inv = cli(&profile, t, &["site", "list"]);
    assert!(!inv.status.success());
    assert!(String::from_utf8_lossy(&inv.stderr).contains("forbidden"));
    let table = cli(&profile, t, &["project", "list"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("NAME"), "tables by default");

    // As the operator: the audit records of all of it, including the tenant's refusals.
    let audit = json(&profile, None, &["audit", "list", "--limit", "1000"]);
    let actions: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap().to_string(), r["result"].as_str().unwrap().to_string()))
        .collect();
    for want in ["tenants.create", "projects.create", "users.create", "role-bindings.create", "tokens.create"] {
        assert!(actions.contains(&(want.to_string(), "success".to_string())), "{want} missing from {actions:?}");
    }
    let by_alice = audit["items"].as_array().unwrap().iter().filter(|r| r["actor_user_id"] == alice["id"]).count();
    assert_eq!(by_alice, 1, "alice's one change (project api) is audited under her");
    // The tenant-admin sees its tenant's records, none of globex's.
    let mine = json(&profile, t, &["audit", "list", "--limit", "1000"]);
    assert!(mine["items"].as_array().unwrap().iter().all(|r| r["tenant_id"] == acme["id"]));

    // Ctrl-C, then a restart keeps everything and makes no new operator.
    stop(up);
    let again = start(tmp.path(), &profile, 2);
    let second = std::fs::read_to_string(&again.log).unwrap();
    assert!(!second.contains("created the operator"), "{second}");
    // The listen port changed (port 0): point the profile's server at the new address.
    let url = second.split("Plinth is up at ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "plinth up serves HTTPS: {url}");
    let mut c = Command::new(BIN);
    let out =
        c.env("PLINTH_CONFIG", &profile).args(["login", "--server", url, "--token", &operator_token]).output().unwrap();
    assert!(out.status.success());
    let tenants = json(&profile, None, &["tenant", "list"]);
    assert_eq!(tenants["items"].as_array().unwrap().len(), 2);
    assert_eq!(ids(&json(&profile, t, &["project", "list"])).len(), 2, "alice's token survives the restart");
    stop(again);
}

#[test]
fn completions_are_generated() {
    let out = Command::new(BIN).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("plinth"));
}

#[test]
fn without_a_profile_the_cli_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cli(&tmp.path().join("none.toml"), None, &["tenant", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plinth up"));
}
