//! Images end to end over HTTP with the real `qemu-img`: uploads of raw and qcow2 disks
//! and of direct-boot kernels and initrds, the refusals that keep nothing (a digest
//! mismatch, a file over the limit), check failures that fail the image with their reason
//! (vmdk, a qcow2 with a backing file, a non-kernel), server-side imports by operators
//! (path, URL) and their refusal to tenants, tenancy of private images (also as an
//! instance's image), the agent's blob download, and blob collection that keeps what
//! live instances boot from.

mod common;

use common::fleet::{Boots, TestAgent, inventory};
use common::images::{fake_bzimage, fake_elf_kernel, raw_disk, sha256_hex};
use common::{TestServer, id};
use plinth_server::ServerConfig;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Makes a disk with `qemu-img create -q <opts> <dir/name> [size]` and returns its bytes.
fn qemu_img_create(dir: &Path, name: &str, opts: &[&str], size: Option<&str>) -> Vec<u8> {
    let path = dir.join(name);
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q"])
        .args(opts)
        .arg(&path)
        .args(size)
        .output()
        .expect("run qemu-img (install qemu-utils)");
    assert!(out.status.success(), "qemu-img create {opts:?}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(path).unwrap()
}

/// The blob files (and temporary files) of a test server.
fn blob_files(srv: &TestServer) -> Vec<String> {
    let dir = srv.dir.path().join("blobs/sha256");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn blob_path(srv: &TestServer, sha: &str) -> PathBuf {
    srv.dir.path().join("blobs/sha256").join(sha)
}

fn disk_body(project: Option<&str>, name: &str, source: Value) -> Value {
    let mut v = json!({ "name": name, "boot": "disk", "files": { "disk": source } });
    if let Some(p) = project {
        v["project_id"] = json!(p);
    }
    v
}

fn op_of(v: &Value) -> String {
    v["operation"]["id"].as_str().expect("operation id").to_string()
}

#[tokio::test]
async fn raw_and_qcow2_disks_are_uploaded_checked_and_stored_by_content() {
    let srv = TestServer::start().await;
    let (tok, project) = srv.tenant_project("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    // Larger than the 1 MiB limit of JSON bodies: uploads are not held to it.
    let raw = qemu_img_create(tmp.path(), "one.raw", &["-f", "raw"], Some("3M"));
    let qcow2 = qemu_img_create(tmp.path(), "two.qcow2", &["-f", "qcow2"], Some("2M"));

    // A raw disk: registered, uploaded with its digest declared, available.
    let body = disk_body(Some(&project), "plain", json!({ "sha256": sha256_hex(&raw) }));
    let img = srv.post("/v1/images").token(&tok).json(&body).send().await.ok(201);
    assert_eq!((img["status"].as_str(), img["pending"].clone()), (Some("importing"), json!(["disk"])), "{img}");
    assert!(img["id"].as_str().unwrap().starts_with("img_"));
    let v = srv.upload(&tok, &id(&img), "disk", raw.clone()).await.ok(200);
    assert_eq!(v["status"], "available", "{v}");
    assert_eq!(v["pending"], json!([]));
    let f = &v["files"][0];
    assert_eq!((f["role"].as_str(), f["format"].as_str()), (Some("disk"), Some("raw")), "{f}");
    assert_eq!(f["sha256"], sha256_hex(&raw).as_str());
    assert_eq!(f["size_bytes"], raw.len() as u64);
    assert_eq!(f["virtual_size_bytes"], 3 << 20);
    assert_eq!(std::fs::read(blob_path(&srv, &sha256_hex(&raw))).unwrap(), raw, "kept by content");

    // A qcow2 disk, no digest declared.
    let v = srv.disk_image(&tok, Some(&project), "cow", qcow2.clone()).await;
    let f = &v["files"][0];
    assert_eq!(f["format"], "qcow2", "{f}");
    assert_eq!(f["virtual_size_bytes"], 2 << 20);
    assert_eq!(f["size_bytes"], qcow2.len() as u64);
    assert_eq!(blob_files(&srv), {
        let mut b = vec![sha256_hex(&raw), sha256_hex(&qcow2)];
        b.sort();
        b
    });

    // Once available it takes no more files.
    let r = srv.upload(&tok, &id(&img), "disk", raw.clone()).await;
    r.problem(409, "file_not_pending");
    let r = srv.upload(&tok, &id(&img), "kernel", fake_bzimage()).await;
    r.problem(409, "file_not_pending");
    srv.upload(&tok, &id(&img), "rootfs", raw.clone()).await.problem(404, "not_found");

    // Reads, lists and filters.
    let listed = srv.list_ids(&tok, "/v1/images").await;
    assert_eq!(listed, vec![id(&img), id(&v)]);
    assert_eq!(srv.list_ids(&tok, "/v1/images?name=cow").await, vec![id(&v)]);
    assert_eq!(srv.list_ids(&tok, &format!("/v1/images?project_id={project}")).await.len(), 2);
    assert!(srv.list_ids(&tok, "/v1/images?status=failed").await.is_empty());
    assert!(srv.list_ids(&tok, "/v1/images?public=true").await.is_empty());
    let page = srv.get("/v1/images?limit=1").token(&tok).send().await.ok(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());

    // Names are unique per project.
    let dup = srv.post("/v1/images").token(&tok).json(&disk_body(Some(&project), "cow", json!({}))).send().await;
    dup.problem(409, "already_exists");

    // PATCH with If-Match.
    let path = format!("/v1/images/{}", id(&v));
    let g = v["generation"].as_i64().unwrap();
    let r = srv.patch(&path).token(&tok).header("if-match", "1").json(&json!({ "description": "old" })).send().await;
    assert!(g > 1, "uploads move the generation");
    r.problem(409, "generation_mismatch");
    let u = srv
        .patch(&path)
        .token(&tok)
        .header("if-match", &g.to_string())
        .json(&json!({ "description": "copy-on-write", "labels": { "os": "none" } }))
        .send()
        .await
        .ok(200);
    assert_eq!((u["description"].as_str(), u["labels"]["os"].as_str()), (Some("copy-on-write"), Some("none")));

    // Audited: the create, the upload and the change.
    for action in ["images.create", "images.files.replace", "images.update"] {
        let recs = srv.list_all(&srv.operator, &format!("/v1/audit-log?action={action}&target={}", id(&v))).await;
        assert!(!recs.is_empty(), "{action} is audited");
    }

    // Idempotent registration.
    let body = disk_body(Some(&project), "again", json!({}));
    let a = srv.post("/v1/images").token(&tok).header("idempotency-key", "k1").json(&body).send().await;
    let b = srv.post("/v1/images").token(&tok).header("idempotency-key", "k1").json(&body).send().await;
    assert_eq!(id(&a.ok(201)), id(&b.ok(201)));
    assert_eq!(b.header("idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn a_direct_boot_image_takes_a_kernel_an_initrd_and_a_command_line() {
    let srv = TestServer::start().await;
    let (tok, project) = srv.tenant_project("acme").await;
    let direct = |files: Value, cmdline: Option<&str>| {
        let mut v = json!({ "project_id": project, "name": "tiny", "boot": "direct", "files": files });
        if let Some(c) = cmdline {
            v["cmdline"] = json!(c);
        }
        v
    };
    // Refused shapes of the request.
    for (body, field) in [
        (direct(json!({ "kernel": {} }), None), "cmdline"),
        (direct(json!({ "kernel": {} }), Some("console=ttyS0\nrm -rf")), "cmdline"),
        (direct(json!({ "kernel": {} }), Some(&"x".repeat(2049))), "cmdline"),
        (direct(json!({ "initrd": {} }), Some("console=ttyS0")), "files.kernel"),
        (json!({ "project_id": project, "name": "d", "boot": "disk", "files": { "disk": {}, "kernel": {} } }), "files"),
        (disk_body(Some(&project), "Bad_Name", json!({})), "name"),
        (disk_body(Some(&project), "d", json!({ "sha256": "ABC" })), "files.disk.sha256"),
        (disk_body(Some(&project), "d", json!({ "url": "file:///etc/passwd" })), "files.disk.url"),
    ] {
        let r = srv.post("/v1/images").token(&tok).json(&body).send().await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.json()["constraint"]["field"], field, "{body}: {}", r.text);
    }

    let kernel = fake_bzimage();
    let initrd = b"070701 a cpio archive, or so it says".to_vec();
    let img = srv
        .post("/v1/images")
        .token(&tok)
        .json(&direct(json!({ "kernel": {}, "initrd": {} }), Some("console=ttyS0 quiet")))
        .send()
        .await
        .ok(201);
    assert_eq!(img["pending"], json!(["kernel", "initrd"]), "{img}");
    let v = srv.upload(&tok, &id(&img), "initrd", initrd.clone()).await.ok(200);
    assert_eq!((v["status"].as_str(), v["pending"].clone()), (Some("importing"), json!(["kernel"])), "{v}");
    let v = srv.upload(&tok, &id(&img), "kernel", kernel.clone()).await.ok(200);
    assert_eq!(v["status"], "available", "{v}");
    assert_eq!(v["cmdline"], "console=ttyS0 quiet");
    let roles: Vec<&str> = v["files"].as_array().unwrap().iter().map(|f| f["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["kernel", "initrd"]);
    assert!(v["files"].as_array().unwrap().iter().all(|f| f["format"] == "raw" && f["virtual_size_bytes"].is_null()));

    // An ELF kernel passes too; a file that is no kernel fails the image with the reason.
    let elf = srv
        .post("/v1/images")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "elf", "boot": "direct", "cmdline": "console=hvc0",
            "files": { "kernel": {} } }))
        .send()
        .await
        .ok(201);
    assert_eq!(srv.upload(&tok, &id(&elf), "kernel", fake_elf_kernel()).await.ok(200)["status"], "available");
    let bad = srv
        .post("/v1/images")
        .token(&tok)
        .json(&json!({ "project_id": project, "name": "notakernel", "boot": "direct", "cmdline": "x",
            "files": { "kernel": {} } }))
        .send()
        .await
        .ok(201);
    let before = blob_files(&srv);
    let p = srv.upload(&tok, &id(&bad), "kernel", b"#!/bin/sh\necho hi\n".to_vec()).await;
    p.problem(422, "image_check_failed");
    let got = srv.get(&format!("/v1/images/{}", id(&bad))).token(&tok).send().await.ok(200);
    assert_eq!(got["status"], "failed");
    assert!(got["failure"].as_str().unwrap().contains("kernel: the kernel is not a bzImage"), "{got}");
    assert_eq!(blob_files(&srv), before, "a refused file is not kept");
}

#[tokio::test]
async fn a_digest_mismatch_or_a_file_over_the_limit_is_refused_and_nothing_is_kept() {
    let config = ServerConfig { image_max_bytes: 1 << 20, ..ServerConfig::default() };
    let srv = TestServer::start_with(config).await;
    let (tok, project) = srv.tenant_project("acme").await;
    let good = raw_disk(512 * 1024);
    let img = srv
        .post("/v1/images")
        .token(&tok)
        .json(&disk_body(Some(&project), "small", json!({ "sha256": sha256_hex(&good) })))
        .send()
        .await
        .ok(201);
    let iid = id(&img);

    // Another file than declared.
    let mut other = good.clone();
    other[0] = 1;
    let p = srv.upload(&tok, &iid, "disk", other).await.problem(422, "sha256_mismatch");
    assert_eq!(p["constraint"]["expected"], sha256_hex(&good).as_str(), "{p}");
    assert!(blob_files(&srv).is_empty(), "nothing kept: {:?}", blob_files(&srv));

    // Over the limit, declared up front.
    let p = srv.upload(&tok, &iid, "disk", raw_disk((1 << 20) + 1)).await.problem(413, "payload_too_large");
    assert_eq!(p["constraint"]["limit"], 1 << 20, "{p}");
    // Over the limit, streamed without a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..24).map(|_| Ok(vec![7u8; 64 * 1024])).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = srv.put(&format!("/v1/images/{iid}/files/disk")).token(&tok).body(body).send().await;
    let p = r.problem(413, "payload_too_large");
    assert_eq!(p["constraint"]["rule"], "max-bytes");
    assert!(blob_files(&srv).is_empty(), "nothing kept: {:?}", blob_files(&srv));

    // The image still waits for its disk; the right file completes it.
    let v = srv.get(&format!("/v1/images/{iid}")).token(&tok).send().await.ok(200);
    assert_eq!((v["status"].as_str(), v["pending"].clone()), (Some("importing"), json!(["disk"])));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = good.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let r = srv.put(&format!("/v1/images/{iid}/files/disk")).token(&tok).body(body).send().await;
    assert_eq!(r.ok(200)["status"], "available");
    assert_eq!(blob_files(&srv), vec![sha256_hex(&good)]);
}

#[tokio::test]
async fn disks_that_fail_their_check_fail_the_image_with_the_reason() {
    let srv = TestServer::start().await;
    let (tok, project) = srv.tenant_project("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let vmdk = qemu_img_create(tmp.path(), "d.vmdk", &["-f", "vmdk"], Some("1M"));
    let base = tmp.path().join("base.raw");
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let backed =
        qemu_img_create(tmp.path(), "over.qcow2", &["-f", "qcow2", "-F", "raw", "-b", base.to_str().unwrap()], None);

    for (name, bytes, why) in [
        ("vm", vmdk, "disk: format vmdk is not supported"),
        ("backed", backed, "disk: a qcow2 with a backing file"),
        ("empty", vec![], "disk: the disk is empty"),
    ] {
        let img = srv.post("/v1/images").token(&tok).json(&disk_body(Some(&project), name, json!({}))).send().await;
        let img = img.ok(201);
        let p = srv.upload(&tok, &id(&img), "disk", bytes).await.problem(422, "image_check_failed");
        assert!(p["detail"].as_str().unwrap().contains(why), "{name}: {p}");
        let v = srv.get(&format!("/v1/images/{}", id(&img))).token(&tok).send().await.ok(200);
        assert_eq!(v["status"], "failed", "{v}");
        assert!(v["failure"].as_str().unwrap().starts_with(why), "{name}: {v}");
        assert_eq!(v["pending"], json!([]));
        srv.upload(&tok, &id(&img), "disk", raw_disk(4096)).await.problem(409, "file_not_pending");
    }
    assert!(blob_files(&srv).is_empty(), "no refused file is kept: {:?}", blob_files(&srv));
    let failed = srv.list_ids(&tok, "/v1/images?status=failed").await;
    assert_eq!(failed.len(), 3);
    // A failed image cannot back an instance.
    srv.enroll_host("h1", inventory(8, 16384), &[]).await;
    srv.shape("small", 1, 512).await;
    let body = json!({ "project_id": project, "name": "web", "shape": "small", "image": "vm" });
    let p = srv.post("/v1/instances").token(&tok).json(&body).send().await.problem(409, "image_not_available");
    assert_eq!(p["constraint"]["status"], "failed", "{p}");
}

#[tokio::test]
async fn operators_import_from_a_server_path_or_url_and_tenants_may_not() {
    let srv = TestServer::start().await;
    let op = srv.operator.clone();
    let (tok, project) = srv.tenant_project("acme").await;
    let tmp = tempfile::tempdir().unwrap();
    let disk = {
        let mut d = raw_disk(256 * 1024);
        d[..5].copy_from_slice(b"plain");
        d
    };
    let file = tmp.path().join("disk.raw");
    std::fs::write(&file, &disk).unwrap();

    // A tiny HTTP server to import from.
    let served = disk.clone();
    // `/slow.raw` answers only once the test opens this gate, so its import is in flight
    // for as long as the test needs.
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    let app = axum::Router::new()
        .route("/disk.raw", axum::routing::get(move || async move { served.clone() }))
        .route("/kernel", axum::routing::get(|| async { fake_bzimage() }))
        .route(
            "/slow.raw",
            axum::routing::get(move || {
                let held = held.clone();
                async move {
                    held.notified().await;
                    raw_disk(4096)
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Tenants: refused, whichever project.
    for source in [json!({ "path": file.to_str().unwrap() }), json!({ "url": format!("{web}/disk.raw") })] {
        let r = srv.post("/v1/images").token(&tok).json(&disk_body(Some(&project), "mine", source)).send().await;
        r.problem(403, "import_forbidden");
    }
    // Public images are for operators.
    srv.post("/v1/images").token(&tok).json(&disk_body(None, "mine", json!({}))).send().await.problem(403, "forbidden");

    let wait = |id: String| {
        let srv = &srv;
        let op = op.clone();
        async move {
            srv.wait_until(&op, &format!("/v1/images/{id}"), "import finished", |v| v["status"] != "importing").await
        }
    };
    // Operators: a path import, a URL import (declared digest), a direct-boot import.
    let body = disk_body(None, "from-path", json!({ "path": file.to_str().unwrap() }));
    let a = srv.post("/v1/images").token(&op).json(&body).send().await.ok(201);
    let body = disk_body(None, "from-url", json!({ "url": format!("{web}/disk.raw"), "sha256": sha256_hex(&disk) }));
    let b = srv.post("/v1/images").token(&op).json(&body).send().await.ok(201);
    let body = json!({ "name": "kernel-url", "boot": "direct", "cmdline": "console=ttyS0",
        "files": { "kernel": { "url": format!("{web}/kernel") } } });
    let c = srv.post("/v1/images").token(&op).json(&body).send().await.ok(201);
    for img in [&a, &b, &c] {
        let v = wait(id(img)).await;
        assert_eq!(v["status"], "available", "{v}");
    }
    let v = srv.get(&format!("/v1/images/{}", id(&a))).token(&tok).send().await.ok(200);
    assert_eq!(v["files"][0]["sha256"], sha256_hex(&disk).as_str(), "tenants see public images");
    assert!(!v.to_string().contains(file.to_str().unwrap()), "the server path is not shown: {v}");
    assert_eq!(blob_files(&srv), vec![sha256_hex(&disk), sha256_hex(&fake_bzimage())]);
    // A file the server imports is not uploaded.
    let body = disk_body(None, "slow", json!({ "url": format!("{web}/slow.raw") }));
    let d = srv.post("/v1/images").token(&op).json(&body).send().await.ok(201);
    let p = srv.upload(&op, &id(&d), "disk", raw_disk(4096)).await.problem(409, "file_not_pending");
    assert_eq!(p["constraint"]["rule"], "file-uploadable", "{p}");
    gate.notify_one();
    assert_eq!(wait(id(&d)).await["status"], "available");

    // Import failures carry their reason.
    for (name, source, why) in [
        ("missing", json!({ "path": "/nonexistent/disk.raw" }), "cannot read /nonexistent/disk.raw"),
        ("dir", json!({ "path": tmp.path().to_str().unwrap() }), "is not a regular file"),
        ("wrong-digest", json!({ "path": file.to_str().unwrap(), "sha256": "0".repeat(64) }), "not the declared"),
        ("not-found", json!({ "url": format!("{web}/nothing-here") }), "404"),
    ] {
        let img = srv.post("/v1/images").token(&op).json(&disk_body(None, name, source)).send().await.ok(201);
        let v = wait(id(&img)).await;
        assert_eq!(v["status"], "failed", "{v}");
        assert!(v["failure"].as_str().unwrap().contains(why), "{name}: {v}");
    }
    assert_eq!(blob_files(&srv).len(), 3, "failed imports keep nothing");
}

#[tokio::test]
async fn tenants_see_and_boot_only_their_own_and_public_images() {
    let srv = TestServer::start().await;
    srv.enroll_host("h1", inventory(16, 32768), &[]).await;
    srv.shape("small", 1, 512).await;
    let (a_tok, a_proj) = srv.tenant_project("alpha").await;
    let (b_tok, b_proj) = srv.tenant_project("bravo").await;
    let public = srv.public_image("debian-12").await;
    let mut disk = raw_disk(128 * 1024);
    disk[..5].copy_from_slice(b"alpha");
    let mine = srv.disk_image(&a_tok, Some(&a_proj), "secret", disk.clone()).await;
    let path = format!("/v1/images/{}", id(&mine));

    // B cannot see it, nor list it, nor boot from it by name or id.
    srv.get(&path).token(&b_tok).send().await.problem(404, "not_found");
    assert_eq!(srv.list_ids(&b_tok, "/v1/images").await, vec![id(&public)]);
    assert_eq!(srv.list_ids(&a_tok, "/v1/images").await, vec![id(&public), id(&mine)]);
    for reference in ["secret".to_string(), id(&mine)] {
        let body = json!({ "project_id": b_proj, "name": "sneaky", "shape": "small", "image": reference });
        let p = srv.post("/v1/instances").token(&b_tok).json(&body).send().await.problem(404, "image_not_found");
        assert!(!p.to_string().contains("alpha"), "{p}");
    }
    let none = srv.list_all(&srv.operator, "/v1/instances").await;
    assert!(none.is_empty(), "refused creates write nothing");

    // A boots from it; both boot from the public image.
    let body = json!({ "project_id": a_proj, "name": "web", "shape": "small", "image": "secret" });
    let v = srv.post("/v1/instances").token(&a_tok).json(&body).send().await.ok(202);
    let boot = &v["instance"]["boot"];
    assert_eq!(boot["image_id"], id(&mine).as_str(), "{v}");
    assert_eq!(boot["boot"], "disk");
    assert_eq!(boot["disk"], json!({ "sha256": sha256_hex(&disk), "size_bytes": disk.len(), "format": "raw" }));
    assert!(boot["kernel"].is_null() && boot["initrd"].is_null());
    for (tok, proj) in [(&a_tok, &a_proj), (&b_tok, &b_proj)] {
        let body = json!({ "project_id": proj, "name": "pub", "shape": "small", "image": "debian-12" });
        let v = srv.post("/v1/instances").token(tok).json(&body).send().await.ok(202);
        assert_eq!(v["instance"]["boot"]["image_id"], id(&public).as_str());
        let body = json!({ "project_id": proj, "name": "pub-by-id", "shape": "small", "image": id(&public) });
        srv.post("/v1/instances").token(tok).json(&body).send().await.ok(202);
    }
    // A project's own image of the same name as a public one wins.
    let own = srv.disk_image(&b_tok, Some(&b_proj), "debian-12", raw_disk(8192)).await;
    let body = json!({ "project_id": b_proj, "name": "own", "shape": "small", "image": "debian-12" });
    let v = srv.post("/v1/instances").token(&b_tok).json(&body).send().await.ok(202);
    assert_eq!(v["instance"]["boot"]["image_id"], id(&own).as_str());
    // An image still importing is not bootable; an unknown one does not exist.
    let pending = srv.post("/v1/images").token(&b_tok).json(&disk_body(Some(&b_proj), "later", json!({}))).send().await;
    pending.ok(201);
    let body = json!({ "project_id": b_proj, "name": "x", "shape": "small", "image": "later" });
    let p = srv.post("/v1/instances").token(&b_tok).json(&body).send().await.problem(409, "image_not_available");
    assert_eq!(p["constraint"]["status"], "importing");
    let body = json!({ "project_id": b_proj, "name": "x", "shape": "small", "image": "no-such-image" });
    srv.post("/v1/instances").token(&b_tok).json(&body).send().await.problem(404, "image_not_found");
    // A disk larger than the shape's.
    let tmp = tempfile::tempdir().unwrap();
    let big = qemu_img_create(tmp.path(), "big.qcow2", &["-f", "qcow2"], Some("20G"));
    srv.disk_image(&b_tok, Some(&b_proj), "big", big).await;
    let body = json!({ "project_id": b_proj, "name": "x", "shape": "small", "image": "big" });
    srv.post("/v1/instances").token(&b_tok).json(&body).send().await.problem(422, "image_too_large");
    // B cannot change or delete A's image, nor upload to it.
    srv.patch(&path).token(&b_tok).json(&json!({ "description": "x" })).send().await.problem(404, "not_found");
    srv.delete(&path).token(&b_tok).send().await.problem(404, "not_found");
    srv.upload(&b_tok, &id(&mine), "disk", raw_disk(512)).await.problem(404, "not_found");
    assert_eq!(srv.get(&path).token(&a_tok).send().await.ok(200)["generation"], mine["generation"]);
}

#[tokio::test]
async fn the_agent_fetches_the_blobs_of_its_instances_with_its_host_credential() {
    let srv = TestServer::start().await;
    let h1 = srv.enroll_host("h1", inventory(16, 32768), &[]).await;
    let h2 = srv.enroll_host("h2", inventory(16, 32768), &[]).await;
    srv.shape("small", 1, 512).await;
    let (tok, proj) = srv.tenant_project("acme").await;
    let public = srv.public_image("debian-12").await;
    let mut disk = raw_disk(300 * 1024);
    disk[1000..1010].copy_from_slice(b"0123456789");
    srv.disk_image(&tok, Some(&proj), "mine", disk.clone()).await;
    // Pack placement: the instance lands on one host; the other holds nothing.
    let v = srv
        .post("/v1/instances")
        .token(&tok)
        .json(&json!({ "project_id": proj, "name": "web", "shape": "small", "image": "mine" }))
        .send()
        .await
        .ok(202);
    let on = v["instance"]["host_id"].as_str().unwrap().to_string();
    let (here, other) = if on == h1.id { (&h1, &h2) } else { (&h2, &h1) };
    let sha = sha256_hex(&disk);
    let url = format!("/agent/v1/blobs/sha256/{sha}");

    let r = srv.client.get(format!("{}{url}", srv.base)).bearer_auth(&here.credential).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.content_length(), Some(disk.len() as u64));
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().to_vec(), disk, "the exact bytes");

    // Another host has no instance booting from it; no credential is no answer at all.
    srv.get(&url).token(&other.credential).send().await.problem(404, "blob_not_found");
    srv.get(&url).send().await.problem(401, "unauthenticated");
    srv.get(&url).token(&tok).send().await.problem(401, "unauthenticated");
    srv.get(&format!("/agent/v1/blobs/sha256/{}", "0".repeat(64)))
        .token(&here.credential)
        .send()
        .await
        .problem(404, "blob_not_found");
    srv.get("/agent/v1/blobs/sha256/..%2F..%2Fplinth.db")
        .token(&here.credential)
        .send()
        .await
        .problem(404, "blob_not_found");
    // Public images' blobs are for every host.
    let psha = public["files"][0]["sha256"].as_str().unwrap();
    let r = srv.get(&format!("/agent/v1/blobs/sha256/{psha}")).token(&other.credential).send().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text.len(), 64 * 1024);
}

#[tokio::test]
async fn deleted_images_keep_the_blobs_live_instances_boot_from_until_those_are_gone() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(16, 32768), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 1, 512).await;
    let (tok, proj) = srv.tenant_project("acme").await;
    let mut used_disk = raw_disk(64 * 1024);
    used_disk[0] = 1;
    let mut unused_disk = raw_disk(64 * 1024);
    unused_disk[0] = 2;
    let used = srv.disk_image(&tok, Some(&proj), "used", used_disk.clone()).await;
    let unused = srv.disk_image(&tok, Some(&proj), "unused", unused_disk.clone()).await;
    // Two images of the same content share one blob.
    let twin = srv.disk_image(&tok, Some(&proj), "twin", unused_disk.clone()).await;
    let (used_sha, unused_sha) = (sha256_hex(&used_disk), sha256_hex(&unused_disk));

    let v = srv
        .post("/v1/instances")
        .token(&tok)
        .json(&json!({ "project_id": proj, "name": "web", "shape": "small", "image": "used" }))
        .send()
        .await
        .ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&v)).await["status"], "succeeded");
    let iid = id(&v["instance"]);

    // The image goes; its blob stays while the instance lives, and the agent still gets it.
    srv.delete(&format!("/v1/images/{}", id(&used))).token(&tok).send().await.ok(204);
    srv.get(&format!("/v1/images/{}", id(&used))).token(&tok).send().await.problem(404, "not_found");
    assert!(blob_path(&srv, &used_sha).exists(), "a live instance boots from it");
    let r = srv.get(&format!("/agent/v1/blobs/sha256/{used_sha}")).token(&host.credential).send().await;
    assert_eq!(r.status, 200);
    // A shared blob stays while one image holds it; unused, it goes at once.
    srv.delete(&format!("/v1/images/{}", id(&unused))).token(&tok).send().await.ok(204);
    assert!(blob_path(&srv, &unused_sha).exists(), "its twin still holds it");
    srv.delete(&format!("/v1/images/{}", id(&twin))).token(&tok).send().await.ok(204);
    assert!(!blob_path(&srv, &unused_sha).exists(), "nothing holds it any more");
    let gc = srv.post("/v1/system/background-tasks/image_gc/run").token(&srv.operator).send().await.ok(200);
    assert_eq!(gc["blobs_removed"], 0, "{gc}");
    assert!(blob_path(&srv, &used_sha).exists());

    // The instance goes: the collector takes the blob.
    let d = srv.delete(&format!("/v1/instances/{iid}")).token(&tok).send().await.ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&d)).await["status"], "succeeded");
    let gc = srv.post("/v1/system/background-tasks/image_gc/run").token(&srv.operator).send().await.ok(200);
    assert_eq!(gc["blobs_removed"], 1, "{gc}");
    assert!(!blob_path(&srv, &used_sha).exists());
    assert!(blob_files(&srv).is_empty(), "{:?}", blob_files(&srv));
}

#[tokio::test]
async fn a_rebuild_boots_from_the_new_image() {
    let srv = TestServer::start().await;
    let host = srv.enroll_host("h1", inventory(16, 32768), &[]).await;
    let _agent = TestAgent::start(&srv.base, &host, Boots::Succeed);
    srv.shape("small", 1, 512).await;
    let (tok, proj) = srv.tenant_project("acme").await;
    srv.public_image("debian-12").await;
    let mine = srv.disk_image(&tok, Some(&proj), "mine", raw_disk(4096)).await;
    let body = json!({ "project_id": proj, "name": "web", "shape": "small", "image": "debian-12", "start": false });
    let v = srv.post("/v1/instances").token(&tok).json(&body).send().await.ok(202);
    assert_eq!(srv.wait_op(&tok, &op_of(&v)).await["status"], "succeeded");
    let iid = id(&v["instance"]);
    let rb = format!("/v1/instances/{iid}/rebuild");
    srv.post(&rb).token(&tok).json(&json!({ "image": "nope" })).send().await.problem(404, "image_not_found");
    let r = srv.post(&rb).token(&tok).json(&json!({ "image": "mine" })).send().await.ok(202);
    assert_eq!(r["instance"]["boot"]["image_id"], id(&mine).as_str());
    assert_eq!(r["instance"]["image"], "mine");
    assert_eq!(srv.wait_op(&tok, &op_of(&r)).await["status"], "succeeded");
}

#[tokio::test]
async fn without_a_usable_blob_directory_images_are_unavailable() {
    let config = ServerConfig { blob_dir: Some("/dev/null/blobs".into()), ..ServerConfig::default() };
    let srv = TestServer::start_with(config).await;
    let r = srv.post("/v1/images").token(&srv.operator).json(&disk_body(None, "x", json!({}))).send().await;
    r.problem(503, "images_unavailable");
}
