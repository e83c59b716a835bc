//! The agent protocol client: one HTTP connection pool shared by every host in the
//! process ([`AgentClient`]), and per-host handles that carry the host's credential
//! ([`HostClient`]).
//!
//! Owns the `/agent/v1` calls and turns answers into typed results or a [`ClientError`]
//! that says whether retrying can help. It does not retry, back off or log: the runner
//! decides that.

use crate::runtime::{BlobSource, BoxFuture};
use plinth_api::{
    ConsoleAck, ConsoleChunkQuery, ConsoleInputBatch, ConsoleInputPoll, CounterAck, CounterSample, DesiredState,
    EnrollRequest, EnrollResponse, Heartbeat, HeartbeatAck, HostInventory, InstanceId, ObservedAck, ObservedReport,
    VolumeId, VolumeKey,
};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Time allowed for a blob download to make progress (each chunk).
const BLOB_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for an ordinary call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed beyond the long-poll's own wait.
const POLL_MARGIN: Duration = Duration::from_secs(20);
/// The longest long-poll the server accepts.
pub const MAX_POLL_WAIT_SECONDS: u64 = 60;

/// Why a protocol call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL cannot be used.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credential cannot be put in a header.
    #[error("the stored credential is not a valid header value")]
    BadCredential,
    /// 401: the credential (or join token) was refused. Retrying cannot help.
    #[error("credential refused (401 {code}): {detail}")]
    Unauthorized {
        /// The problem's code.
        code: String,
        /// The problem's detail.
        detail: String,
    },
    /// Another 4xx: the request was refused. Retrying the same request cannot help
    /// (except 408 and 429, see [`ClientError::is_retryable`]).
    #[error("refused ({status} {code}): {detail}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The problem's code.
        code: String,
        /// The problem's detail.
        detail: String,
    },
    /// 5xx: the server failed; worth retrying later.
    #[error("server error ({status} {code}): {detail}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The problem's code.
        code: String,
        /// The problem's detail.
        detail: String,
    },
    /// The server could not be reached or the connection broke; worth retrying later.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The server answered something this agent does not understand.
    #[error("unexpected answer ({status}): {reason}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// Why it could not be read.
        reason: String,
    },
}

impl ClientError {
    /// Whether the same call may succeed later (server errors, timeouts, connection
    /// failures, 408 and 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) | ClientError::Server { .. } => true,
            ClientError::Refused { status, .. } => *status == 408 || *status == 429,
            _ => false,
        }
    }

    /// Whether the server could not be reached at all (as opposed to answering an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Transport(_))
    }
}

fn transport(e: reqwest::Error) -> ClientError {
    ClientError::Transport(plinth_client::connect::describe(&e))
}

/// Turns a non-success answer into an error, reading `code` and `detail` from a
/// problem+json body when there is one.
fn problem(status: StatusCode, body: &[u8]) -> ClientError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(|v| v.as_str()).map(str::to_string);
    let code = field("code").unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
    let detail = field("detail").unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
    match status.as_u16() {
        401 => ClientError::Unauthorized { code, detail },
        s @ 400..=499 => ClientError::Refused { status: s, code, detail },
        s => ClientError::Server { status: s, code, detail },
    }
}

/// The answer's status and body.
async fn body(resp: reqwest::Response) -> Result<(StatusCode, Vec<u8>), ClientError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(transport)?;
    Ok((status, bytes.to_vec()))
}

async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let (status, bytes) = body(resp).await?;
    if !status.is_success() {
        return Err(problem(status, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { status: status.as_u16(), reason: e.to_string() })
}

async fn empty(resp: reqwest::Response) -> Result<(), ClientError> {
    let (status, bytes) = body(resp).await?;
    if !status.is_success() {
        return Err(problem(status, &bytes));
    }
    Ok(())
}

/// The protocol client for one server, shared by all hosts of the process (one
/// connection pool). Cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentClient {
    http: reqwest::Client,
    base: Arc<str>,
}

impl AgentClient {
    /// A client for the server at `base` (`https://host:port`, or `http://` on loopback),
    /// sending `user_agent`, trusting `ca` for HTTPS (else the system's roots).
    pub fn new(
        base: &str,
        user_agent: &str,
        ca: Option<&plinth_client::connect::Ca>,
    ) -> Result<AgentClient, ClientError> {
        let base = base.trim_end_matches('/');
        let url = reqwest::Url::parse(base)
            .map_err(|e| ClientError::BadUrl { url: base.to_string(), reason: e.to_string() })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ClientError::BadUrl {
                url: base.to_string(),
                reason: "the scheme must be http or https".into(),
            });
        }
        let http = plinth_client::connect::builder_for(ca)
            .user_agent(user_agent)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ClientError::BadUrl { url: base.to_string(), reason: e.to_string() })?;
        Ok(AgentClient { http, base: base.into() })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `POST /agent/v1/enroll` (no credential yet: the join token is in the body).
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        let resp = self
            .http
            .post(self.url("/agent/v1/enroll"))
            .timeout(CALL_TIMEOUT)
            .json(req)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }

    /// A handle that authenticates as the host holding `credential` (`phc_…`).
    pub fn host(&self, credential: &str) -> Result<HostClient, ClientError> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {credential}")).map_err(|_| ClientError::BadCredential)?;
        auth.set_sensitive(true);
        Ok(HostClient { client: self.clone(), auth })
    }
}

/// The protocol calls of one enrolled host (its credential in every request). Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct HostClient {
    client: AgentClient,
    auth: HeaderValue,
}

impl HostClient {
    fn request(&self, method: reqwest::Method, path: &str, timeout: Duration) -> reqwest::RequestBuilder {
        self.client
            .http
            .request(method, self.client.url(path))
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(timeout)
    }

    /// `PUT /agent/v1/inventory` (204).
    pub async fn put_inventory(&self, inventory: &HostInventory) -> Result<(), ClientError> {
        let resp = self
            .request(reqwest::Method::PUT, "/agent/v1/inventory", CALL_TIMEOUT)
            .json(inventory)
            .send()
            .await
            .map_err(transport)?;
        empty(resp).await
    }

    /// `POST /agent/v1/heartbeat`.
    pub async fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatAck, ClientError> {
        let resp = self
            .request(reqwest::Method::POST, "/agent/v1/heartbeat", CALL_TIMEOUT)
            .json(hb)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }

    /// `GET /agent/v1/desired?after=G&wait=S`: answers as soon as the host's desired
    /// generation is above `after` (at once when `after` is `None`), else after `wait`
    /// seconds (at most 60) with the current state.
    pub async fn desired(&self, after: Option<i64>, wait: u64) -> Result<DesiredState, ClientError> {
        let wait = wait.min(MAX_POLL_WAIT_SECONDS);
        let mut query: Vec<(&str, String)> = vec![("wait", wait.to_string())];
        if let Some(a) = after {
            query.push(("after", a.to_string()));
        }
        let resp = self
            .request(reqwest::Method::GET, "/agent/v1/desired", Duration::from_secs(wait) + POLL_MARGIN)
            .query(&query)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }

    /// `POST /agent/v1/instances/{id}/console?stream=&offset=&reset=` with the console
    /// bytes that follow `offset` (empty: asks how far the server has the stream).
    pub async fn console(
        &self,
        id: &InstanceId,
        q: &ConsoleChunkQuery,
        data: Vec<u8>,
    ) -> Result<ConsoleAck, ClientError> {
        let resp = self
            .request(reqwest::Method::POST, &format!("/agent/v1/instances/{id}/console"), CALL_TIMEOUT)
            .query(q)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }

    /// `POST /agent/v1/console-input`: acknowledges what was written to the guests and
    /// answers the input waiting for them, waiting up to `poll.wait` seconds for some.
    pub async fn console_input(&self, poll: &ConsoleInputPoll) -> Result<ConsoleInputBatch, ClientError> {
        let wait = poll.wait.min(MAX_POLL_WAIT_SECONDS);
        let resp = self
            .request(reqwest::Method::POST, "/agent/v1/console-input", Duration::from_secs(wait) + POLL_MARGIN)
            .json(poll)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }

    /// `GET /agent/v1/blobs/sha256/{hex}`, written to `dest` as it arrives. The caller
    /// checks the digest.
    pub async fn fetch_blob(&self, sha256: &str, dest: &Path) -> Result<u64, ClientError> {
        let io = |e: std::io::Error| ClientError::Transport(format!("writing {}: {e}", dest.display()));
        let mut resp = self
            .client
            .http
            .get(self.client.url(&format!("/agent/v1/blobs/sha256/{sha256}")))
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            let (status, bytes) = body(resp).await?;
            return Err(problem(status, &bytes));
        }
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0u64;
        loop {
            let chunk = tokio::time::timeout(BLOB_CHUNK_TIMEOUT, resp.chunk())
                .await
                .map_err(|_| ClientError::Transport(format!("blob {sha256}: no data for 60 s")))?
                .map_err(transport)?;
            let Some(chunk) = chunk else { break };
            written += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(written)
    }

    /// `GET /agent/v1/volumes/{id}/key`: the key of a volume this host must make or open.
    /// The answer is never logged (its `Debug` hides the key).
    pub async fn volume_key(&self, id: &VolumeId) -> Result<VolumeKey, ClientError> {
        let resp = self
            .request(reqwest::Method::GET, &format!("/agent/v1/volumes/{id}/key"), CALL_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }

    /// `POST /agent/v1/observed`.
    pub async fn observed(&self, report: &ObservedReport) -> Result<ObservedAck, ClientError> {
        let resp = self
            .request(reqwest::Method::POST, "/agent/v1/observed", CALL_TIMEOUT)
            .json(report)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }
}

impl HostClient {
    /// `POST /agent/v1/counters`.
    pub async fn counters(&self, samples: &[CounterSample]) -> Result<CounterAck, ClientError> {
        let resp = self
            .request(reqwest::Method::POST, "/agent/v1/counters", CALL_TIMEOUT)
            .json(samples)
            .send()
            .await
            .map_err(transport)?;
        json(resp).await
    }
}

impl BlobSource for HostClient {
    fn fetch<'a>(&'a self, sha256: &'a str, dest: &'a Path) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.fetch_blob(sha256, dest).await.map(|_| ()).map_err(|e| e.to_string()) })
    }

    fn volume_key<'a>(&'a self, id: &'a VolumeId) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.volume_key(id).await.map(|k| k.key).map_err(|e| format!("volume {id}'s key: {e}")) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_classified() {
        let body = br#"{"type":"urn:plinth:problem:unauthenticated","title":"x","status":401,"code":"unauthenticated","detail":"bad credential","request_id":"r"}"#;
        match problem(StatusCode::UNAUTHORIZED, body) {
            ClientError::Unauthorized { code, detail } => {
                assert_eq!(code, "unauthenticated");
                assert_eq!(detail, "bad credential");
            }
            other => panic!("{other:?}"),
        }
        let e = problem(StatusCode::SERVICE_UNAVAILABLE, b"upstream down");
        assert!(e.is_retryable());
        assert!(matches!(&e, ClientError::Server { status: 503, detail, .. } if detail == "upstream down"));
        assert!(!problem(StatusCode::BAD_REQUEST, b"{}").is_retryable());
        assert!(problem(StatusCode::TOO_MANY_REQUESTS, b"").is_retryable());
        assert!(ClientError::Transport("refused".into()).is_unreachable());
    }

    #[test]
    fn urls_are_checked() {
        assert!(AgentClient::new("http://127.0.0.1:7480/", "t", None).is_ok());
        assert_eq!(
            AgentClient::new("http://127.0.0.1:7480/", "t", None).map(|c| c.base().to_string()).ok().as_deref(),
            Some("http://127.0.0.1:7480")
        );
        assert!(AgentClient::new("127.0.0.1:7480", "t", None).is_err());
        assert!(AgentClient::new("ftp://x", "t", None).is_err());
    }

    #[test]
    fn credentials_must_be_header_safe() {
        let c = AgentClient::new("http://127.0.0.1:1", "t", None).expect("client");
        assert!(c.host("phc_abc").is_ok());
        assert!(matches!(c.host("phc_\nabc"), Err(ClientError::BadCredential)));
    }
}
