//! Image fixtures: tiny disk and kernel files, uploads, and a public image for the tests
//! that create instances (instances must name an available image).

use super::{TestServer, id};
use serde_json::{Value, json};
use std::time::Duration;

/// A raw disk of `len` bytes (zeros: `qemu-img` reads it as raw).
pub fn raw_disk(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

/// A file that passes the kernel check: the x86 boot header's `HdrS` at 0x202.
pub fn fake_bzimage() -> Vec<u8> {
    let mut k = vec![0u8; 8192];
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k
}

/// A file that passes the kernel check as ELF.
pub fn fake_elf_kernel() -> Vec<u8> {
    let mut k = b"\x7fELF\x02\x01\x01".to_vec();
    k.resize(4096, 0);
    k
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl TestServer {
    /// `PUT /v1/images/{id}/files/{role}` with `bytes` as the body.
    pub async fn upload(&self, token: &str, image_id: &str, role: &str, bytes: Vec<u8>) -> super::Resp {
        self.put(&format!("/v1/images/{image_id}/files/{role}")).token(token).body(bytes).send().await
    }

    /// Registers a disk image named `name` (public when `project` is None: the token
    /// must be an operator's) and uploads `disk`; answers the image, available.
    pub async fn disk_image(&self, token: &str, project: Option<&str>, name: &str, disk: Vec<u8>) -> Value {
        let mut body = json!({ "name": name, "boot": "disk", "files": { "disk": {} } });
        if let Some(p) = project {
            body["project_id"] = json!(p);
        }
        let img = self.post("/v1/images").token(token).json(&body).send().await.ok(201);
        assert_eq!(img["status"], "importing", "{img}");
        assert_eq!(img["pending"], json!(["disk"]), "{img}");
        let v = self.upload(token, &id(&img), "disk", disk).await.ok(200);
        assert_eq!(v["status"], "available", "{v}");
        v
    }

    /// The public image `name` (a tiny raw disk), registered by the operator on first use.
    /// Safe to call from concurrent tasks.
    pub async fn public_image(&self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let found =
                self.get(&format!("/v1/images?public=true&name={name}")).token(&self.operator).send().await.ok(200);
            if let Some(img) = found["items"].as_array().and_then(|a| a.first()) {
                if img["status"] == "available" {
                    return img.clone();
                }
            } else {
                let body = json!({ "name": name, "boot": "disk", "files": { "disk": {} } });
                let r = self.post("/v1/images").token(&self.operator).json(&body).send().await;
                if r.status == 201 {
                    let v = self.upload(&self.operator, &id(&r.json()), "disk", raw_disk(64 * 1024)).await.ok(200);
                    assert_eq!(v["status"], "available", "{v}");
                    return v;
                }
                r.problem(409, "already_exists");
            }
            assert!(tokio::time::Instant::now() < deadline, "public image {name} not available after 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
