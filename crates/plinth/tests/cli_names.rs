//! The CLI takes names where it takes objects, and says what it could not find: through
//! the real binary against `plinth up` and a simulated host — a project created in a
//! tenant given by name, an instance by its project's name, `plinth usage --resource
//! <instance name>`, `not found` / `ambiguous: N matches`, a filter that matched nothing
//! named on stderr; and the script outputs: `-o json` is the server's document unchanged,
//! `-o yaml` the same document, `--field` one value a line.

mod common;

use common::{cli, ok, up_with_sim_fleet, wait_for};
use plinth_client::connect::Ca;
use plinth_client::{Client, Instances};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The profile's server, token and CA, for the typed client.
fn client(profile: &Path) -> Client {
    let t: toml::Table = toml::from_str(&std::fs::read_to_string(profile).unwrap()).unwrap();
    let ca = t.get("ca_cert").and_then(|c| c.as_str()).map(|p| Ca::from_file(Path::new(p)).expect("the profile's CA"));
    Client::new(t["server"].as_str().unwrap(), t["token"].as_str().unwrap(), ca.as_ref())
}

#[test]
fn names_resolve_and_script_outputs_keep_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_up, _fleet, profile) = up_with_sim_fleet(d, &[("PLINTH_RECONCILE_PERIOD_S", "0.5")], 1);
    let host = wait_for("an available sim host", Duration::from_secs(60), || {
        let v = ok(&profile, None, &["host", "list"]);
        v["items"].as_array().and_then(|a| a.first()).filter(|h| h["state"] == "available").cloned()
    });
    let host_name = host["name"].as_str().unwrap();

    // A tenant by name, a project by name.
    let acme = ok(&profile, None, &["tenant", "create", "acme"]);
    let web = ok(&profile, None, &["project", "create", "web", "--tenant", "acme"]);
    assert_eq!(web["tenant_id"], acme["id"], "--tenant acme is the tenant named acme: {web}");
    ok(&profile, None, &["shape", "create", "small", "--vcpus", "1", "--memory-mib", "256"]);
    let disk = d.join("tiny.raw");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
    ok(&profile, None, &["image", "create", "tiny", "--public", "--disk", disk.to_str().unwrap()]);
    let out = cli(
        &profile,
        None,
        &["instance", "create", "demo-vm", "--project", "web", "--shape", "small", "--image", "tiny", "--wait"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let vm = ok(&profile, None, &["instance", "get", "demo-vm"]);
    let vm_id = vm["id"].as_str().unwrap().to_string();
    assert_eq!(vm["project_id"], web["id"]);

    // `plinth usage --resource demo-vm`: the instance's records, not an empty table.
    let usage = wait_for("usage records of demo-vm", Duration::from_secs(30), || {
        let v = ok(&profile, None, &["usage", "--resource", "demo-vm"]);
        v["items"].as_array().filter(|a| !a.is_empty()).cloned()
    });
    assert!(usage.iter().all(|r| r["resource_id"] == vm_id.as_str()), "{usage:?}");
    // A filter that matches nothing says which, and is no error.
    let nobody = "ins_01jz8x3m5q2v7w9k4r6t8y0b1c";
    let out = cli(&profile, None, &["usage", "--resource", nobody]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("no usage records match resource={nobody}")), "{}", stderr(&out));
    let out = cli(&profile, None, &["instance", "list", "--state", "failed", "--project", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(said.contains("no instances match") && said.contains("state=failed"), "{said}");
    // A name that names nothing, or another kind's id.
    let out = cli(&profile, None, &["usage", "--resource", "no-such-vm"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found: no instance named \"no-such-vm\""), "{}", stderr(&out));
    let out = cli(&profile, None, &["invoice", "show", "current", "--tenant", "initech"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found: no tenant named \"initech\""), "{}", stderr(&out));
    let out = cli(&profile, None, &["project", "get", acme["id"].as_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a project id or name"), "{}", stderr(&out));
    // The current invoice of a tenant given by name.
    let inv = ok(&profile, None, &["invoice", "show", "current", "--tenant", "acme"]);
    assert_eq!(inv["tenant_id"], acme["id"], "{inv}");
    // Two projects named web (in two tenants): the operator must say which.
    ok(&profile, None, &["tenant", "create", "globex"]);
    ok(&profile, None, &["project", "create", "web", "--tenant", "globex"]);
    let out = cli(&profile, None, &["project", "get", "web"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ambiguous: 2 matches for project \"web\""), "{}", stderr(&out));

    // `-o json` is the server's document, every field of it.
    let raw = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { client(&profile).view::<Instances>(&vm_id).await.unwrap().raw().to_string() });
    let server: Value = serde_json::from_str(&raw).unwrap();
    let shown = ok(&profile, None, &["instance", "get", "demo-vm"]);
    assert_eq!(shown, server);
    // `-o yaml`: the same document.
    let out = cli(&profile, None, &["tenant", "get", "acme", "-o", "yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(yaml.contains("name: acme") && yaml.contains(&format!("id: {}", acme["id"].as_str().unwrap())), "{yaml}");
    // `--field`: one value, dotted paths, one line per item of a list.
    let out = cli(&profile, None, &["instance", "get", "demo-vm", "--field", "host_id"]);
    assert_eq!(stdout(&out).trim(), host["id"].as_str().unwrap());
    let out = cli(&profile, None, &["host", "get", host_name, "--field", "inventory.runtime"]);
    assert_eq!(stdout(&out), "sim\n", "{}", stderr(&out));
    let out = cli(&profile, None, &["project", "list", "--field", "name"]);
    assert_eq!(stdout(&out), "web\nweb\n");
    let out = cli(&profile, None, &["tenant", "get", "acme", "--field", "no_such_field"]);
    assert!(!out.status.success() && stderr(&out).contains("no field"), "{}", stderr(&out));
    // `plinth completion` is `plinth completions`.
    let out = cli(&profile, None, &["completion", "bash"]);
    assert!(out.status.success() && stdout(&out).contains("plinth"), "{}", stderr(&out));
}
