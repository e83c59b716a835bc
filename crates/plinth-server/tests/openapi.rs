//! The checked-in OpenAPI documents (`openapi/plinth.json`, `openapi/agent.json`) are
//! generated from code; these tests fail when they are stale. Regenerate with
//! `UPDATE_OPENAPI=1 cargo test -p plinth-server --test openapi`.

use std::path::PathBuf;
use utoipa::openapi::OpenApi;

fn check(file: &str, doc: OpenApi) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../openapi").join(file);
    let fresh = doc.to_pretty_json().expect("serialise") + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).expect("write document");
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == fresh,
        "{} is stale: run `UPDATE_OPENAPI=1 cargo test -p plinth-server --test openapi` and commit the result",
        path.display()
    );
}

/// Every operation has an id, one tag, a summary, and described responses.
fn lint(doc: &OpenApi) {
    let json = serde_json::to_value(doc).unwrap();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in json["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let where_ = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{where_} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert_eq!(op["tags"].as_array().map(Vec::len), Some(1), "{where_} needs exactly one tag");
            assert!(op["summary"].as_str().is_some_and(|s| !s.is_empty()), "{where_} has no summary");
            for (status, resp) in op["responses"].as_object().unwrap() {
                assert!(
                    resp["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{where_} {status} has no description"
                );
            }
            assert!(op["responses"].get("default").is_some(), "{where_} lacks the problem+json default response");
        }
    }
}

#[test]
fn public_document_is_current() {
    let doc = plinth_server::public_openapi();
    lint(&doc);
    check("plinth.json", doc);
}

#[test]
fn agent_document_is_current() {
    let doc = plinth_server::agent_openapi();
    lint(&doc);
    check("agent.json", doc);
}

#[test]
fn documents_are_separate() {
    let public = serde_json::to_value(plinth_server::public_openapi()).unwrap();
    let agent = serde_json::to_value(plinth_server::agent_openapi()).unwrap();
    assert!(public["paths"].as_object().unwrap().keys().all(|p| !p.starts_with("/agent/")));
    assert!(agent["paths"].as_object().unwrap().keys().all(|p| p.starts_with("/agent/")));
    for p in [
        "/v1/tenants",
        "/v1/projects",
        "/v1/users",
        "/v1/tokens",
        "/v1/audit-log",
        "/v1/sites",
        "/v1/racks",
        "/v1/hosts",
        "/v1/host-join-tokens",
        "/v1/shapes",
        "/v1/images",
        "/v1/images/{id}/files/{role}",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(public["paths"].get(p).is_some(), "{p} is missing from the public document");
    }
    assert!(agent["paths"].get("/agent/v1/enroll").is_some());
    assert!(agent["paths"].get("/agent/v1/blobs/sha256/{sha256}").is_some());
}
