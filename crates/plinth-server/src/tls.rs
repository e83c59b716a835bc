//! HTTPS for the server: the private CA and serving certificate it makes for itself
//! (rcgen), an operator's own certificate, and the TLS listener `axum::serve` runs on.
//!
//! A TLS directory holds (the directory 0700, keys 0600):
//!
//! ```text
//! ca.pem       the CA certificate: what clients trust (CLI profile, agents pin its SHA-256)
//! ca.key       the CA's private key
//! server.pem   the serving certificate, then the CA (the chain the server presents)
//! server.key   the serving certificate's private key
//! ```
//!
//! On first start the CA and the serving certificate are made; later starts reuse both,
//! and only reissue the serving certificate (from the same CA, so its fingerprint holds)
//! when it does not cover the names asked for or expires within 30 days.
//!
//! The listener completes TLS handshakes concurrently, off the accept loop, and answers a
//! plain-HTTP request on the TLS port with a `400 https_required` problem instead of
//! silence.

use plinth_client::connect::{Fingerprint, provider};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a serving certificate is valid.
const SERVER_DAYS: i64 = 397;
/// A serving certificate closer than this to its end is reissued at start.
const RENEW_BEFORE_DAYS: i64 = 30;
/// Time a client has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key is unusable.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_path_buf(), source }
}

fn invalid(what: impl std::fmt::Display) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |e| TlsError::Invalid(format!("{what}: {e}"))
}

/// What the server serves with.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The rustls configuration of the listener.
    pub config: Arc<rustls::ServerConfig>,
    /// The SHA-256 of the CA at the top of the chain presented (what join tokens carry).
    pub ca_sha256: Fingerprint,
    /// The CA certificate file clients trust, when the server made its own.
    pub ca_file: Option<PathBuf>,
    /// Whether the CA was made by this start.
    pub created_ca: bool,
    /// The names the serving certificate covers.
    pub names: Vec<String>,
}

/// This machine's host name (as the kernel has it), if any.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty() && name != "(none)").then_some(name)
}

/// The addresses of this machine's network interfaces.
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = vec![];
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list freed below by freeifaddrs; each entry's
    // address is read according to its family.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                        // Link-local addresses need a zone to be dialled: not useful as names.
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// The names a serving certificate for `listen` covers: the listen address, this machine's
/// host name, `extra` (`--tls-san`), and 127.0.0.1, ::1 and localhost when listening on
/// loopback or on every address (then also every interface's address).
pub fn names_for(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let ip = listen.ip();
    let mut names: Vec<String> = vec![];
    let mut add = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    if !ip.is_unspecified() {
        add(ip.to_string());
    }
    if ip.is_loopback() || ip.is_unspecified() {
        add("127.0.0.1".into());
        add("::1".into());
        add("localhost".into());
    }
    if ip.is_unspecified() {
        for a in interface_addresses() {
            add(a.to_string());
        }
    }
    if let Some(h) = hostname() {
        if let Some((short, _)) = h.split_once('.') {
            add(short.to_string());
        }
        add(h);
    }
    for e in extra {
        add(e.trim().to_ascii_lowercase());
    }
    names
}

fn private_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Writes `contents` to a new temporary beside `path` (mode `mode`) and answers its path.
fn write_temp(path: &Path, contents: &str, mode: u32) -> Result<PathBuf, TlsError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    Ok(tmp)
}

/// Replaces `path` with `contents` (mode `mode`) atomically.
fn replace(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let tmp = write_temp(path, contents, mode)?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Creates `path` with `contents` unless it exists (then answers false).
fn create_new(path: &Path, contents: &str, mode: u32) -> Result<bool, TlsError> {
    let tmp = write_temp(path, contents, mode)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

/// Makes a CA in `dir` unless one is there (another replica may be making it at the same
/// moment: the first to link its files wins). Answers whether this call made it.
fn ensure_ca(dir: &Path) -> Result<bool, TlsError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() {
        return Ok(false);
    }
    let key = KeyPair::generate().map_err(invalid("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let label = hostname().unwrap_or_else(|| "plinth".into());
    params.distinguished_name.push(DnType::OrganizationName, "Plinth");
    params.distinguished_name.push(DnType::CommonName, format!("Plinth CA ({label})"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - days(1);
    params.not_after = now + days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(invalid("making the CA"))?;
    if !create_new(&key_path, &key.serialize_pem(), 0o600)? {
        // Another process is making it: wait for its certificate.
        for _ in 0..100 {
            if cert_path.exists() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return Err(TlsError::Invalid(format!(
            "{} exists without {}: remove it to make a new CA",
            key_path.display(),
            cert_path.display()
        )));
    }
    create_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(true)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = std::fs::read(path).map_err(io(path))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!("{}: no certificate", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = std::fs::read(path).map_err(io(path))?;
    PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| TlsError::Invalid(format!("{}: not a PEM private key: {e}", path.display())))
}

/// Whether the serving chain at `path` was issued by `ca`, covers `names` and is not
/// about to expire.
fn serving_cert_fits(path: &Path, ca: &CertificateDer<'_>, names: &[String]) -> bool {
    let Ok(chain) = read_certs(path) else { return false };
    if chain.len() < 2 || chain[1].as_ref() != ca.as_ref() {
        return false;
    }
    let Ok((_, leaf)) = x509_parser::parse_x509_certificate(&chain[0]) else { return false };
    let renew_at = time::OffsetDateTime::now_utc() + days(RENEW_BEFORE_DAYS);
    if leaf.validity().not_after.to_datetime() < renew_at {
        return false;
    }
    let Ok(Some(san)) = leaf.subject_alternative_name() else { return false };
    let covered: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|n| covered.contains(n))
}

/// Issues a serving certificate for `names` from the CA in `dir`.
fn issue_serving_cert(dir: &Path, names: &[String]) -> Result<(), TlsError> {
    let (ca_pem_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_pem = std::fs::read_to_string(&ca_pem_path).map_err(io(&ca_pem_path))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(invalid(ca_key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(invalid(ca_pem_path.display()))?;
    let key = KeyPair::generate().map_err(invalid("generating the serving key"))?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(invalid("the certificate's names"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "plinth".into()));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - days(1);
    params.not_after = now + days(SERVER_DAYS);
    let cert = params.signed_by(&key, &issuer).map_err(invalid("issuing the serving certificate"))?;
    // The key first: a crash between the two leaves a chain that does not match its key,
    // which the next start reissues (the chain's key is checked when loading).
    replace(&dir.join("server.key"), &key.serialize_pem(), 0o600)?;
    replace(&dir.join("server.pem"), &format!("{}{ca_pem}", cert.pem()), 0o644)
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Invalid(format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server's own CA and serving certificate in `dir`, made on first start and reused
/// after (the serving certificate reissued when it does not cover `names`).
pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Tls, TlsError> {
    private_dir(dir)?;
    let created_ca = ensure_ca(dir)?;
    let ca_path = dir.join("ca.pem");
    let ca = read_certs(&ca_path)?.remove(0);
    let (chain_path, key_path) = (dir.join("server.pem"), dir.join("server.key"));
    let mut fresh = false;
    if !serving_cert_fits(&chain_path, &ca, names) {
        issue_serving_cert(dir, names)?;
        fresh = true;
    }
    let config = match server_config(read_certs(&chain_path)?, read_key(&key_path)?) {
        Ok(c) => c,
        // A chain and key out of step (a crash between writing them): reissue once.
        Err(_) if !fresh => {
            issue_serving_cert(dir, names)?;
            server_config(read_certs(&chain_path)?, read_key(&key_path)?)?
        }
        Err(e) => return Err(e),
    };
    Ok(Tls { config, ca_sha256: Fingerprint::of(&ca), ca_file: Some(ca_path), created_ca, names: names.to_vec() })
}

/// An operator's own certificate chain (`cert`: the serving certificate first, then any
/// intermediates, then the CA agents pin) and key.
pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
    let chain = read_certs(cert)?;
    let top = Fingerprint::of(chain.last().expect("read_certs answers at least one"));
    let config = server_config(chain, read_key(key)?)?;
    Ok(Tls { config, ca_sha256: top, ca_file: None, created_ca: false, names: vec![] })
}

/// A listener of TLS connections over a TCP listener: handshakes run concurrently, each
/// with a deadline; plain HTTP gets a `400 https_required` answer.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `tcp` with `config`.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accept = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors or the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, stream)).await {
                        Ok(Ok(Some(tls))) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Ok(None)) => tracing::debug!(%peer, "plain HTTP on the TLS port: answered https_required"),
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, accept })
    }
}

/// The problem a plain-HTTP request on the TLS port gets.
const HTTPS_REQUIRED: &str = r#"{"type":"urn:plinth:problem:https_required","title":"HTTPS required","status":400,"code":"https_required","detail":"this server serves HTTPS only: use an https:// URL"}"#;

async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    // A TLS connection opens with a handshake record (content type 22).
    if stream.peek(&mut first).await? == 1 && first[0] != 22 {
        let mut stream = stream;
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{HTTPS_REQUIRED}",
            HTTPS_REQUIRED.len()
        );
        stream.write_all(answer.as_bytes()).await?;
        let _ = stream.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it does not, short of a panic): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_the_serving_cert_follows_the_names() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let first = load_or_create(&dir, &names).unwrap();
        assert!(first.created_ca);
        let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("server.key"), 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let leaf = std::fs::read(dir.join("server.pem")).unwrap();

        let again = load_or_create(&dir, &names).unwrap();
        assert!(!again.created_ca);
        assert_eq!(again.ca_sha256, first.ca_sha256, "the CA survives a restart");
        assert_eq!(std::fs::read(dir.join("server.pem")).unwrap(), leaf, "the serving certificate is reused");

        let more = vec!["127.0.0.1".to_string(), "10.0.0.7".to_string()];
        let moved = load_or_create(&dir, &more).unwrap();
        assert_eq!(moved.ca_sha256, first.ca_sha256, "a new name keeps the CA");
        assert_ne!(std::fs::read(dir.join("server.pem")).unwrap(), leaf, "and reissues the serving certificate");
        assert!(serving_cert_fits(&dir.join("server.pem"), &read_certs(&dir.join("ca.pem")).unwrap()[0], &more));
    }

    #[test]
    fn names_cover_loopback_and_wildcards() {
        let l = names_for("127.0.0.1:7480".parse().unwrap(), &["plinth.example".into()]);
        assert!(l.contains(&"127.0.0.1".to_string()) && l.contains(&"localhost".to_string()));
        assert!(l.contains(&"plinth.example".to_string()));
        let w = names_for("0.0.0.0:7480".parse().unwrap(), &[]);
        assert!(w.contains(&"127.0.0.1".to_string()) && !w.contains(&"0.0.0.0".to_string()));
        let one = names_for("198.51.100.1:7480".parse().unwrap(), &[]);
        assert_eq!(one[0], "198.51.100.1");
        assert!(!one.contains(&"localhost".to_string()));
    }
}
