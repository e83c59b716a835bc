//! The `/v1` client: bearer auth, wire-typed bodies in, wire-typed answers out (each with
//! the document as the server sent it), refusals turned into [`Refused`] errors.
//!
//! The request helpers here are private to the crate: callers use the typed endpoints of
//! [`crate::resources`] and [`crate::v1`], so every path is paired with its wire types once.

use crate::error::{Error, Refused, Result};
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ops::Deref;

/// A typed answer and the document it was read from, byte for byte. Derefs to the value.
#[derive(Clone, Debug)]
pub struct Doc<T> {
    value: T,
    raw: String,
}

impl<T> Doc<T> {
    /// A document of `raw` text read (or composed) as `value`.
    pub fn new(value: T, raw: String) -> Doc<T> {
        Doc { value, raw }
    }
    /// The typed value.
    pub fn into_inner(self) -> T {
        self.value
    }
    /// The answer's body as the server sent it (empty for `204 No Content`).
    pub fn raw(&self) -> &str {
        &self.raw
    }
    /// A document with the same raw text and another typed view of it.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Doc<U> {
        Doc { value: f(self.value), raw: self.raw }
    }
}

impl<T> Deref for Doc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// A request body: none, or a wire type sent as JSON.
pub(crate) type Body<'a> = Option<&'a (dyn ErasedBody + Sync)>;

/// Object-safe `Serialize` for bodies (so one request path serves every body type).
pub(crate) trait ErasedBody {
    fn json(&self) -> serde_json::Result<Vec<u8>>;
}

impl<T: Serialize> ErasedBody for T {
    fn json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

/// Two query structs as one query (a page's and a list's filters).
#[derive(Serialize)]
pub(crate) struct Both<'a, A, B> {
    #[serde(flatten)]
    pub a: &'a A,
    #[serde(flatten)]
    pub b: &'a B,
}

/// A client bound to one server and token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client of `base` as `token`, trusting `ca` (else the system's roots) for HTTPS.
    pub fn new(base: &str, token: &str, ca: Option<&crate::connect::Ca>) -> Client {
        Client {
            http: crate::connect::builder_for(ca).build().expect("the HTTP client builds"),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.token)
    }

    /// Sends a request and reads its answer as `T` (`()` for `204 No Content`).
    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &(impl Serialize + ?Sized),
        body: Body<'_>,
        if_match: Option<i64>,
    ) -> Result<Doc<T>> {
        let mut req = self.request(method.clone(), path).query(query);
        if let Some(b) = body {
            let bytes = b.json().map_err(|source| Error::Decode { what: format!("{method} {path} (body)"), source })?;
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes);
        }
        if let Some(g) = if_match {
            req = req.header(reqwest::header::IF_MATCH, g.to_string());
        }
        let raw = self.finish(req).await?;
        decode(&method, path, raw)
    }

    /// `GET` with a query.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &(impl Serialize + ?Sized),
    ) -> Result<Doc<T>> {
        self.send(Method::GET, path, query, None, None).await
    }

    /// `POST` of a body.
    pub(crate) async fn post<T: DeserializeOwned>(&self, path: &str, body: &(dyn ErasedBody + Sync)) -> Result<Doc<T>> {
        self.send(Method::POST, path, &(), Some(body), None).await
    }

    /// `PUT` of a file's `len` bytes, streamed from `file` as the body.
    pub(crate) async fn put_file<T: DeserializeOwned>(
        &self,
        path: &str,
        file: tokio::fs::File,
        len: u64,
    ) -> Result<Doc<T>> {
        let req = self
            .request(Method::PUT, path)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::from(file));
        decode(&Method::PUT, path, self.finish(req).await?)
    }

    /// `GET` of a text body (CSV exports); a refusal is a [`Refused`] error as for JSON.
    pub(crate) async fn get_text(&self, path: &str, query: &(impl Serialize + ?Sized), accept: &str) -> Result<String> {
        self.finish(self.request(Method::GET, path).query(query).header(reqwest::header::ACCEPT, accept)).await
    }

    async fn finish(&self, req: RequestBuilder) -> Result<String> {
        let transport =
            |e: reqwest::Error| Error::Transport { base: self.base.clone(), reason: crate::connect::describe(&e) };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if status.is_success() {
            return Ok(text);
        }
        // Only the two fields a person needs; the rest of the problem may grow.
        #[derive(serde::Deserialize)]
        struct Problem {
            code: String,
            detail: String,
        }
        let (code, detail) = match serde_json::from_str::<Problem>(&text) {
            Ok(p) => (p.code, p.detail),
            Err(_) => ("http_error".to_string(), text),
        };
        Err(Refused { status, code, detail }.into())
    }
}

/// Reads an answer's text as `T`; an empty body reads as JSON `null` (for `()`).
fn decode<T: DeserializeOwned>(method: &Method, path: &str, raw: String) -> Result<Doc<T>> {
    let text = if raw.is_empty() { "null" } else { raw.as_str() };
    let value =
        serde_json::from_str(text).map_err(|source| Error::Decode { what: format!("{method} {path}"), source })?;
    Ok(Doc { value, raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_api::{InstanceFilter, InstanceState, PageParams};

    #[test]
    fn a_page_and_a_filter_make_one_query_without_unset_fields() {
        let page = PageParams { limit: Some(5), cursor: None };
        let filter =
            InstanceFilter { state: Some(InstanceState::Running), name: Some("a b".into()), ..Default::default() };
        let q = serde_urlencoded::to_string(Both { a: &page, b: &filter }).unwrap();
        assert_eq!(q, "limit=5&state=running&name=a+b");
        assert_eq!(serde_urlencoded::to_string(Both { a: &page, b: &() }).unwrap(), "limit=5");
    }
}
