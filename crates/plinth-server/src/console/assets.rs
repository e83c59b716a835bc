//! The console's static files, compiled into the binary: Plinth's one CSS file and the
//! vendored scripts (htmx and its SSE extension, xterm.js, uPlot). Each is served with its
//! type, a strong ETag (its SHA-256) and a short cache lifetime.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// (name, content type, bytes) of every asset: Plinth's own, then the vendored ones
/// (`assets/vendor/`: versions, checksums and licences there, refreshed by
/// `scripts/vendor-console`).
const FILES: &[(&str, &str, &[u8])] = &[
    ("plinth.css", CSS, include_bytes!("../../assets/plinth.css")),
    ("plinth-terminal.js", JS, include_bytes!("../../assets/plinth-terminal.js")),
    ("htmx.min.js", JS, include_bytes!("../../assets/vendor/htmx.min.js")),
    ("htmx-ext-sse.js", JS, include_bytes!("../../assets/vendor/htmx-ext-sse.js")),
    ("xterm.js", JS, include_bytes!("../../assets/vendor/xterm.js")),
    ("xterm.css", CSS, include_bytes!("../../assets/vendor/xterm.css")),
    ("xterm-addon-fit.js", JS, include_bytes!("../../assets/vendor/xterm-addon-fit.js")),
    ("uplot.min.js", JS, include_bytes!("../../assets/vendor/uplot.min.js")),
    ("uplot.min.css", CSS, include_bytes!("../../assets/vendor/uplot.min.css")),
];

static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| FILES.iter().map(|(_, _, body)| format!("\"{}\"", hex::encode(Sha256::digest(body)))).collect());

/// `GET /assets/{file}`.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = FILES.iter().position(|(name, _, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let (_, kind, body) = FILES[i];
    let etag = &ETAGS[i];
    let mut resp = if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, kind)], body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored files served are the ones `scripts/vendor-console` checked in: each
    /// matches its line of `SHA256SUMS`, and every line names a served file.
    #[test]
    fn vendored_assets_match_their_checksums() {
        let sums = include_str!("../../assets/vendor/SHA256SUMS");
        let mut listed = 0;
        for line in sums.lines().filter(|l| !l.trim().is_empty()) {
            let (sum, name) = line.split_once("  ").expect("sha256sum format");
            let (_, _, body) = FILES.iter().find(|(n, _, _)| *n == name).unwrap_or_else(|| panic!("{name} not served"));
            assert_eq!(hex::encode(Sha256::digest(body)), sum, "{name}");
            listed += 1;
        }
        assert_eq!(
            listed,
            FILES.len() - 2,
            "every vendored file is listed (plinth.css and plinth-terminal.js are ours)"
        );
    }
}
