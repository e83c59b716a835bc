//! The CLI's HTTP client: bearer auth from the profile, JSON in and out, and refusals
//! turned into an error that prints the problem's code and detail.

use anyhow::{Result, anyhow};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// A refusal from the server.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status.as_u16(), self.detail)
    }
}

impl std::error::Error for Refused {}

/// A client bound to one server and token.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client of `base` as `token`, trusting `ca` (else the system's roots) for HTTPS.
    pub fn new(base: &str, token: &str, ca: Option<&plinth_client::connect::Ca>) -> Client {
        Client {
            http: plinth_client::connect::builder_for(ca).build().expect("the HTTP client builds"),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    fn request(&self, method: Method, path: &str, body: Option<&Value>) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req
    }

    /// Sends a request; answers the JSON body (Null for 204) or a [`Refused`] error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        self.finish(self.request(method, path, body).query(query)).await
    }

    /// Like [`Client::call`], with an optional `If-Match` generation.
    pub async fn call_with_if_match(
        &self,
        method: Method,
        path: &str,
        if_match: Option<i64>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut req = self.request(method, path, body);
        if let Some(g) = if_match {
            req = req.header("if-match", g.to_string());
        }
        self.finish(req).await
    }

    /// `PUT` of a file's `len` bytes, streamed from `file` as the body.
    pub async fn put_file(&self, path: &str, file: tokio::fs::File, len: u64) -> Result<Value> {
        let req = self
            .http
            .put(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::from(file));
        self.finish(req).await
    }

    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value> {
        self.call(Method::GET, path, query, None).await
    }

    /// `GET` of a text body (CSV exports); a refusal is a [`Refused`] error as for JSON.
    pub async fn get_text(&self, path: &str, query: &[(String, String)], accept: &str) -> Result<String> {
        let req = self.request(Method::GET, path, None).query(query).header(reqwest::header::ACCEPT, accept);
        self.finish_text(req).await
    }

    async fn finish(&self, req: RequestBuilder) -> Result<Value> {
        let text = self.finish_text(req).await?;
        if text.is_empty() { Ok(Value::Null) } else { Ok(serde_json::from_str(&text)?) }
    }

    async fn finish_text(&self, req: RequestBuilder) -> Result<String> {
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach {}: {}", self.base, plinth_client::connect::describe(&e)))?;
        let status = resp.status();
        let text = resp.text().await?;
        if status.is_success() {
            return Ok(text);
        }
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Err(Refused {
            status,
            code: problem["code"].as_str().unwrap_or("http_error").to_string(),
            detail: problem["detail"].as_str().map(str::to_string).unwrap_or(text),
        }
        .into())
    }
}
