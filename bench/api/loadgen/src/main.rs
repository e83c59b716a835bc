//! Load generator for `bench/api`: creates projects and hosts over HTTPS (HTTP without
//! `--ca-file`), then reads them back, with a fixed number of keep-alive HTTP/1.1
//! connections (one per worker, each with one TLS handshake), and prints requests/s and
//! p50/p99 latency per phase.
//!
//! Usage:
//!   loadgen --addr 127.0.0.1:PORT --token-file FILE --backend NAME [--ca-file CA.pem]
//!           [--writes 10000] [--reads 10000] [--concurrency 16] [--phase-timeout 120]
//!
//! Every loop is bounded by a request count and by a deadline. Only 127.0.0.1 is allowed.
//! Besides the human-readable lines it prints one machine-readable line per phase:
//!   RESULT backend=NAME phase=write|read requests=N errors=E rps=R p50_ms=X p99_ms=Y complete=true|false

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One request may take at most this long before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker gives up reconnecting after this many broken connections.
const MAX_RECONNECTS: u32 = 50;
/// Error responses shown in full (truncated body), per phase.
const ERROR_SAMPLES: usize = 5;

struct Args {
    addr: String,
    ca_file: Option<String>,
    token_file: String,
    backend: String,
    writes: usize,
    reads: usize,
    concurrency: usize,
    phase_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: String::new(),
        ca_file: None,
        token_file: String::new(),
        backend: "server".into(),
        writes: 10_000,
        reads: 10_000,
        concurrency: 16,
        phase_timeout: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |s: String| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = val()?,
            "--token-file" => a.token_file = val()?,
            "--ca-file" => a.ca_file = Some(val()?),
            "--backend" => a.backend = val()?,
            "--writes" => a.writes = num(val()?)?,
            "--reads" => a.reads = num(val()?)?,
            "--concurrency" => a.concurrency = num(val()?)?,
            "--phase-timeout" => a.phase_timeout = Duration::from_secs(num(val()?)? as u64),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !a.addr.starts_with("127.0.0.1:") {
        return Err("--addr must be 127.0.0.1:PORT".into());
    }
    if a.token_file.is_empty() {
        return Err("--token-file is required".into());
    }
    if a.concurrency == 0 || a.concurrency > 1024 {
        return Err("--concurrency must be 1..=1024".into());
    }
    if a.writes < 2 || a.writes > 1_000_000 || a.reads > 10_000_000 {
        return Err("--writes must be 2..=1000000 and --reads at most 10000000".into());
    }
    Ok(a)
}

/// TLS trusting only the server's CA (from `--ca-file`).
fn tls_connector(ca_file: &str) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca_file).map_err(|e| format!("{ca_file}: {e}"))? {
        roots.add(c.map_err(|e| format!("{ca_file}: {e}"))?).map_err(|e| format!("{ca_file}: {e}"))?;
    }
    #[allow(deprecated)] // ring: no post-quantum key exchange, as Plinth itself
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// One keep-alive HTTP/1.1 connection, reopened when it breaks.
struct Conn {
    addr: String,
    tls: Option<tokio_rustls::TlsConnector>,
    auth: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    reconnects: u32,
}

impl Conn {
    fn new(addr: &str, token: &str, tls: Option<tokio_rustls::TlsConnector>) -> Conn {
        Conn { addr: addr.to_string(), tls, auth: format!("Bearer {token}"), sender: None, reconnects: 0 }
    }

    async fn connect(&mut self) -> Result<(), String> {
        if self.reconnects > MAX_RECONNECTS {
            return Err(format!("gave up after {MAX_RECONNECTS} reconnects"));
        }
        self.reconnects += 1;
        let stream = tokio::net::TcpStream::connect(&self.addr).await.map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        let sender = match &self.tls {
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("an IP address");
                let stream = tls.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        self.sender = Some(sender);
        Ok(())
    }

    async fn call(&mut self, method: Method, path: &str, body: Option<String>) -> Result<(StatusCode, Bytes), String> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.call_inner(method, path, body)).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(format!("timed out after {}s", REQUEST_TIMEOUT.as_secs()))
            }
        }
    }

    async fn call_inner(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        let sender = self.sender.as_mut().expect("connected");
        if let Err(e) = sender.ready().await {
            self.sender = None;
            return Err(format!("connection: {e}"));
        }
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.addr.as_str())
            .header(AUTHORIZATION, self.auth.as_str());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| format!("request: {e}"))?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("send: {e}"));
            }
        };
        let status = resp.status();
        match resp.into_body().collect().await {
            Ok(b) => Ok((status, b.to_bytes())),
            Err(e) => {
                self.sender = None;
                Err(format!("body: {e}"))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Project,
    Host,
}

/// What one worker saw in one phase.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: usize,
    samples: Vec<String>,
    created: Vec<(usize, Kind, String)>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.samples.len() < ERROR_SAMPLES {
            self.samples.push(what);
        }
    }
}

fn id_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

fn show(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    s.chars().take(300).collect()
}

/// The outcome of a phase, all workers together.
struct Outcome {
    tally: Tally,
    elapsed: Duration,
    planned: usize,
}

/// Runs `planned` requests over the workers' connections; `job(i)` gives the i-th request
/// and the status it must get.
async fn phase<F>(conns: Vec<Conn>, planned: usize, deadline: Instant, job: F) -> (Vec<Conn>, Outcome)
where
    F: Fn(usize) -> (Method, String, Option<String>, StatusCode, Option<Kind>) + Send + Sync + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for mut conn in conns {
        let next = next.clone();
        let job = job.clone();
        set.spawn(async move {
            let mut t = Tally { latencies_us: Vec::with_capacity(planned / 8 + 16), ..Tally::default() };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= planned || Instant::now() >= deadline {
                    break;
                }
                let (method, path, body, want, kind) = job(i);
                let t0 = Instant::now();
                let r = conn.call(method.clone(), &path, body).await;
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                match r {
                    Ok((status, b)) if status == want => {
                        t.latencies_us.push(us);
                        if let Some(k) = kind {
                            match id_of(&b) {
                                Some(id) => t.created.push((i, k, id)),
                                None => t.error(format!("{method} {path}: {status} without an id: {}", show(&b))),
                            }
                        }
                    }
                    Ok((status, b)) => t.error(format!("{method} {path}: {status} (wanted {want}): {}", show(&b))),
                    Err(e) => t.error(format!("{method} {path}: {e}")),
                }
                if conn.reconnects > MAX_RECONNECTS {
                    break;
                }
            }
            (conn, t)
        });
    }
    let mut conns = Vec::new();
    let mut all = Tally::default();
    while let Some(r) = set.join_next().await {
        let (conn, t) = r.expect("worker panicked");
        conns.push(conn);
        all.latencies_us.extend(t.latencies_us);
        all.errors += t.errors;
        for s in t.samples {
            if all.samples.len() < ERROR_SAMPLES {
                all.samples.push(s);
            }
        }
        all.created.extend(t.created);
    }
    let elapsed = start.elapsed();
    (conns, Outcome { tally: all, elapsed, planned })
}

/// Nearest-rank percentile of sorted `v`, in milliseconds.
fn pct_ms(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1] as f64 / 1000.0
}

fn report(backend: &str, name: &str, what: &str, o: &mut Outcome) -> bool {
    let t = &mut o.tally;
    t.latencies_us.sort_unstable();
    let ok = t.latencies_us.len();
    let done = ok + t.errors;
    let secs = o.elapsed.as_secs_f64();
    let rps = ok as f64 / secs;
    let (p50, p99) = (pct_ms(&t.latencies_us, 50.0), pct_ms(&t.latencies_us, 99.0));
    let complete = done >= o.planned;
    println!(
        "[{backend}] {name}: {ok} ok + {} errors of {} planned ({what}) in {secs:.2} s: {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms{}",
        t.errors,
        o.planned,
        if complete { "" } else { " — CUT SHORT by the phase deadline" }
    );
    for s in &t.samples {
        println!("[{backend}] {name} error: {s}");
    }
    println!(
        "RESULT backend={backend} phase={name} requests={ok} errors={} rps={rps:.1} p50_ms={p50:.3} p99_ms={p99:.3} complete={complete}",
        t.errors
    );
    complete && t.errors == 0
}

async fn run(a: Args) -> Result<bool, String> {
    let token = std::fs::read_to_string(&a.token_file).map_err(|e| format!("{}: {e}", a.token_file))?;
    let token = token.trim().to_string();
    if !token.starts_with("plt_") {
        return Err(format!("{}: no plt_ token in it", a.token_file));
    }
    let started = Instant::now();
    let tls = a.ca_file.as_deref().map(tls_connector).transpose()?;

    // A tenant to hold the projects.
    let mut setup = Conn::new(&a.addr, &token, tls.clone());
    let tenant_name = format!("bench-{}", std::process::id());
    let (status, body) =
        setup.call(Method::POST, "/v1/tenants", Some(serde_json::json!({ "name": tenant_name }).to_string())).await?;
    if status != StatusCode::CREATED {
        return Err(format!("POST /v1/tenants: {status}: {}", show(&body)));
    }
    let tenant = id_of(&body).ok_or("POST /v1/tenants: no id in the answer")?;

    let conns: Vec<Conn> = (0..a.concurrency).map(|_| Conn::new(&a.addr, &token, tls.clone())).collect();

    // Warm-up (not measured): open the connections, touch the auth path.
    let warm = a.concurrency * 20;
    let path = format!("/v1/tenants/{tenant}");
    let deadline = Instant::now() + a.phase_timeout;
    let (conns, o) =
        phase(conns, warm, deadline, move |_| (Method::GET, path.clone(), None, StatusCode::OK, None)).await;
    if o.tally.errors > 0 {
        return Err(format!("warm-up: {} errors, e.g. {}", o.tally.errors, o.tally.samples.join("; ")));
    }

    // Write phase: even i creates project p-i in the tenant, odd i creates host h-i.
    let pid = std::process::id();
    let t = tenant.clone();
    let deadline = Instant::now() + a.phase_timeout;
    let (conns, mut w) = phase(conns, a.writes, deadline, move |i| {
        if i % 2 == 0 {
            let body = serde_json::json!({ "tenant_id": t, "name": format!("p-{pid}-{i}") }).to_string();
            (Method::POST, "/v1/projects".to_string(), Some(body), StatusCode::CREATED, Some(Kind::Project))
        } else {
            let body = serde_json::json!({ "name": format!("h-{pid}-{i}") }).to_string();
            (Method::POST, "/v1/hosts".to_string(), Some(body), StatusCode::CREATED, Some(Kind::Host))
        }
    })
    .await;
    let mut created = std::mem::take(&mut w.tally.created);
    created.sort_by_key(|c| c.0);
    let projects = created.iter().filter(|c| matches!(c.1, Kind::Project)).count();
    let what = format!("{projects} projects + {} hosts created", created.len() - projects);
    let mut good = report(&a.backend, "write", &what, &mut w);

    // Read phase: GET each created resource in turn (projects and hosts alternate).
    if a.reads > 0 {
        if created.is_empty() {
            return Err("nothing was created, nothing to read".into());
        }
        let paths: Arc<Vec<String>> = Arc::new(
            created
                .iter()
                .map(|(_, k, id)| match k {
                    Kind::Project => format!("/v1/projects/{id}"),
                    Kind::Host => format!("/v1/hosts/{id}"),
                })
                .collect(),
        );
        let deadline = Instant::now() + a.phase_timeout;
        let p = paths.clone();
        let (_conns, mut r) =
            phase(conns, a.reads, deadline, move |i| (Method::GET, p[i % p.len()].clone(), None, StatusCode::OK, None))
                .await;
        let what = format!("GETs of {} created projects and hosts", paths.len());
        good &= report(&a.backend, "read", &what, &mut r);
    }
    eprintln!("[{}] load generator done in {:.1} s", a.backend, started.elapsed().as_secs_f64());
    Ok(good)
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    // One thread: on a small machine the server needs the other cores.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(a)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}
