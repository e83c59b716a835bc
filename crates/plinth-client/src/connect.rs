//! How a connection to a Plinth server is set up: the one place that builds the
//! `reqwest` client every Plinth caller uses (the CLI, the agent, the tests), and the TLS
//! trust behind it.
//!
//! TLS is rustls with the `ring` provider. A Plinth server serves HTTPS with a certificate
//! issued by its own private CA (made on first start) or by the operator's CA. A caller
//! trusts it in one of three ways:
//! - [`trusting`] a CA certificate it was given ([`Ca`]): the CLI profile's (written by
//!   `plinth up`), the agent's stored copy;
//! - [`fetch_pinned_ca`] on first contact, knowing only the CA's SHA-256 fingerprint (from
//!   a join token, the way `kubeadm join --discovery-token-ca-cert-hash` works): the
//!   server's chain is read, the CA with that fingerprint taken, and the serving
//!   certificate verified against it; the caller keeps the CA for later connections;
//! - [`builder`]: the system's roots (public servers: URL image imports, an operator's
//!   publicly signed certificate).
//!
//! [`describe`] turns a failed request into a sentence a user can act on (an untrusted
//! certificate, a name the certificate does not cover, TLS to a plain-HTTP server).

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The crypto provider of every Plinth TLS connection (client and server): `ring`, which
/// builds with a C compiler alone (aws-lc-rs needs more). rustls 0.23.48 deprecates it only
/// for lacking post-quantum key exchange.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why TLS could not be set up or a server not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A CA file or PEM text holds no usable certificate.
    #[error("{0}")]
    BadCa(String),
    /// The server URL cannot be used for pinning.
    #[error("{0}")]
    BadUrl(String),
    /// The server could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server's chain holds no CA with the pinned fingerprint.
    #[error(
        "refusing {url}: its certificate chain is signed by CA {presented}, but the join token pins CA {expected}. This is not the server the token was made for (or its CA changed); get a join token from this server (`plinth join-token create`)"
    )]
    PinMismatch {
        /// The server.
        url: String,
        /// The fingerprint the token carries.
        expected: Fingerprint,
        /// The fingerprint of the top of the chain the server presented.
        presented: Fingerprint,
    },
    /// The TLS handshake failed for another reason.
    #[error("TLS with {url} failed: {reason}")]
    Handshake {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A certificate's SHA-256 fingerprint (of its DER encoding), written `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// The 64 hex digits alone.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    /// `sha256:<64 hex>` or the 64 hex digits alone (`:` between bytes allowed).
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let hex_part = s.strip_prefix("sha256:").unwrap_or(s).replace(':', "");
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut out)
            .map_err(|_| format!("{s:?} is not a SHA-256 fingerprint (sha256:<64 hex digits>)"))?;
        Ok(Fingerprint(out))
    }
}

/// What `plinth agent --join-token` takes: the join secret and, when the server serves
/// HTTPS, its CA's fingerprint: `pjt_…@sha256:<64 hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The `pjt_…` secret sent at enrolment.
    pub secret: String,
    /// The server's CA, pinned on first contact.
    pub ca: Option<Fingerprint>,
}

impl JoinToken {
    /// The combined form, `secret@sha256:<hex>` (the secret alone without a CA).
    pub fn combined(secret: &str, ca: Option<&Fingerprint>) -> String {
        match ca {
            Some(f) => format!("{secret}@{f}"),
            None => secret.to_string(),
        }
    }

    /// Reads the combined form (or a bare secret).
    pub fn parse(s: &str) -> Result<JoinToken, String> {
        let s = s.trim();
        match s.split_once('@') {
            None => Ok(JoinToken { secret: s.to_string(), ca: None }),
            Some((secret, ca)) => Ok(JoinToken { secret: secret.to_string(), ca: Some(ca.parse()?) }),
        }
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken").field("secret", &"<redacted>").field("ca", &self.ca).finish()
    }
}

/// A CA certificate (or several) a client trusts, with its PEM text.
#[derive(Clone, Debug)]
pub struct Ca {
    certs: Vec<CertificateDer<'static>>,
    pem: String,
}

impl Ca {
    /// Reads every certificate of PEM text.
    pub fn from_pem(pem: &str) -> Result<Ca, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCa(format!("not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(TlsError::BadCa("no certificate in the PEM text".into()));
        }
        let ca = Ca { certs, pem: pem.to_string() };
        ca.roots()?;
        Ok(ca)
    }

    /// Reads a PEM file.
    pub fn from_file(path: &Path) -> Result<Ca, TlsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TlsError::BadCa(format!("cannot read the CA certificate {}: {e}", path.display())))?;
        Ca::from_pem(&text).map_err(|e| TlsError::BadCa(format!("{}: {e}", path.display())))
    }

    /// One DER certificate.
    pub fn from_der(der: CertificateDer<'static>) -> Ca {
        let pem = pem_of(&der);
        Ca { certs: vec![der], pem }
    }

    /// The PEM text.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The fingerprint of the first certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.certs[0])
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in &self.certs {
            roots.add(c.clone()).map_err(|e| TlsError::BadCa(format!("unusable CA certificate: {e}")))?;
        }
        Ok(roots)
    }
}

/// A DER certificate as PEM text.
pub fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// A client builder trusting the system's roots (public servers).
pub fn builder() -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder();
    match rustls_platform_verifier::Verifier::new(provider()) {
        Ok(v) => b.tls_backend_preconfigured(client_config(Arc::new(v))),
        // No system roots: connections to https servers fail, and say so (describe()).
        Err(_) => b.tls_backend_preconfigured(client_config(Arc::new(NoRoots))),
    }
}

/// A client builder trusting `ca` only (a Plinth server's private CA, or an operator's).
/// Plain `http://` URLs still work (loopback servers run with `--insecure-http`).
pub fn trusting(ca: &Ca) -> reqwest::ClientBuilder {
    // `Ca`'s constructors checked its certificates, so the verifier builds.
    let verifier: Arc<dyn ServerCertVerifier> = match ca
        .roots()
        .ok()
        .and_then(|r| WebPkiServerVerifier::builder_with_provider(Arc::new(r), provider()).build().ok())
    {
        Some(v) => v,
        None => Arc::new(NoRoots),
    };
    reqwest::Client::builder().tls_backend_preconfigured(client_config(verifier))
}

/// A client builder for `ca` when given, else the system's roots.
pub fn builder_for(ca: Option<&Ca>) -> reqwest::ClientBuilder {
    match ca {
        Some(ca) => trusting(ca),
        None => builder(),
    }
}

/// Refuses every certificate (no system roots could be loaded).
#[derive(Debug)]
struct NoRoots;

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// What the pinning verifier saw.
#[derive(Debug, Default)]
struct Seen {
    /// The certificate with the pinned fingerprint, when the chain held it.
    ca: Option<CertificateDer<'static>>,
    /// The top of the chain presented, when none matched.
    mismatch: Option<Fingerprint>,
}

/// Accepts a server whose chain holds the CA with fingerprint `pin` and whose
/// certificate that CA verifies for the name dialled.
#[derive(Debug)]
struct PinVerifier {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain: Vec<&CertificateDer<'_>> = std::iter::once(end_entity).chain(intermediates).collect();
        let Some(ca) = chain.iter().find(|c| Fingerprint::of(c) == self.pin) else {
            let top = chain.last().map(|c| Fingerprint::of(c)).unwrap_or(Fingerprint([0; 32]));
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).mismatch = Some(top);
            return Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        };
        let ca = CertificateDer::from(ca.as_ref().to_vec());
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let ok = verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).ca = Some(ca);
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// First contact with an `https://` server known only by its CA's fingerprint: reads the
/// chain it presents, and answers the CA with fingerprint `pin` once the server's
/// certificate is verified against it (for the host of `url`). A chain without that CA is
/// refused ([`TlsError::PinMismatch`], naming both fingerprints).
pub async fn fetch_pinned_ca(url: &str, pin: &Fingerprint) -> Result<Ca, TlsError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| TlsError::BadUrl(format!("invalid server URL {url:?}: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(TlsError::BadUrl(format!(
            "the join token pins a CA, so the server URL must be https:// (got {url})"
        )));
    }
    let server_name: ServerName<'static> = match parsed.host() {
        Some(url::Host::Domain(d)) => {
            ServerName::try_from(d.to_string()).map_err(|e| TlsError::BadUrl(format!("invalid host in {url}: {e}")))?
        }
        Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
        Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
        None => return Err(TlsError::BadUrl(format!("no host in {url}"))),
    };
    let host = parsed.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let unreachable = |reason: String| TlsError::Unreachable { url: url.to_string(), reason };
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| unreachable("no answer within 10 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let verifier = Arc::new(PinVerifier { pin: *pin, provider: provider(), seen: Mutex::default() });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(verifier.clone())));
    let handshake = tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
        .await
        .map_err(|_| unreachable("no TLS handshake within 10 s".into()))?;
    let seen = std::mem::take(&mut *verifier.seen.lock().unwrap_or_else(|e| e.into_inner()));
    match (handshake, seen) {
        (_, Seen { mismatch: Some(presented), .. }) => {
            Err(TlsError::PinMismatch { url: url.to_string(), expected: *pin, presented })
        }
        (Ok(_), Seen { ca: Some(ca), .. }) => Ok(Ca::from_der(ca)),
        (Ok(_), Seen { ca: None, .. }) => {
            Err(TlsError::Handshake { url: url.to_string(), reason: "the server presented no certificate".into() })
        }
        (Err(e), _) => Err(TlsError::Handshake { url: url.to_string(), reason: explain_io(&e) }),
    }
}

fn explain_io(e: &std::io::Error) -> String {
    rustls_error(e).map(|r| explain_rustls(r, None)).unwrap_or_else(|| e.to_string())
}

/// The rustls error somewhere in `err`'s chain. rustls errors travel inside `io::Error`s
/// (nested ones, from hyper), whose `source()` skips the error they wrap: those are
/// opened with `get_ref()`.
fn rustls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn explain_rustls(r: &rustls::Error, host: Option<&str>) -> String {
    let host = host.unwrap_or("the server");
    match r {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature | CertificateError::Other(_),
        ) => format!(
            "the server's certificate is not trusted: {host} presents a certificate signed by a CA this client does not know. \
             For a Plinth server with its own CA, give its CA certificate (the server's {{data dir}}/tls/ca.pem, or the \
             --tls-dir's ca.pem): `plinth login --server URL --token … --ca-cert ca.pem`, or set PLINTH_CA_CERT=ca.pem"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "the server's certificate does not cover the name {host}: use a name or address it covers (see `plinth server`'s \
             startup lines), or restart the server with `--tls-san {host}`"
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            format!("the server's certificate has expired ({host}); restart the server to renew its certificate")
        }
        rustls::Error::InvalidMessage(_) => format!(
            "{host} does not speak TLS on this port (a server run with --insecure-http?): use an http:// URL for it"
        ),
        other => format!("TLS with {host} failed: {other}"),
    }
}

/// A sentence for a request that failed before any answer: names an untrusted
/// certificate (and how to trust it), a certificate for another name, TLS to a plain
/// HTTP server; else the error and its causes, joined.
pub fn describe(err: &reqwest::Error) -> String {
    let host = err.url().and_then(|u| u.host_str()).map(str::to_string);
    if let Some(r) = rustls_error(err) {
        return explain_rustls(r, host.as_deref());
    }

    let mut msg = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_and_print() {
        let f = Fingerprint::of(b"x");
        let s = f.to_string();
        assert!(s.starts_with("sha256:") && s.len() == 7 + 64);
        assert_eq!(s.parse::<Fingerprint>().unwrap(), f);
        assert_eq!(f.hex().to_uppercase().parse::<Fingerprint>().unwrap(), f);
        assert!("sha256:abc".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn join_tokens_carry_the_ca() {
        let f = Fingerprint::of(b"ca");
        let combined = JoinToken::combined("pjt_a_b", Some(&f));
        assert_eq!(JoinToken::parse(&combined).unwrap(), JoinToken { secret: "pjt_a_b".into(), ca: Some(f) });
        assert_eq!(JoinToken::parse("pjt_a_b").unwrap(), JoinToken { secret: "pjt_a_b".into(), ca: None });
        assert!(JoinToken::parse("pjt_a_b@sha256:zz").is_err());
        assert!(!format!("{:?}", JoinToken::parse(&combined).unwrap()).contains("pjt_a_b"));
    }

    /// A TLS server on loopback with a CA-issued certificate for 127.0.0.1, answering
    /// `HTTP/1.1 204` to every connection; answers (its port, the CA).
    async fn tls_server() -> (u16, Ca) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
        let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut buf = [0u8; 1024];
                    let _ = tls.read(&mut buf).await;
                    let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, Ca::from_der(ca_cert.der().clone()))
    }

    #[tokio::test]
    async fn an_untrusted_server_is_described_in_a_sentence() {
        let (port, ca) = tls_server().await;
        let url = format!("https://127.0.0.1:{port}/");
        let err = builder().build().unwrap().get(&url).send().await.unwrap_err();
        let said = describe(&err);
        assert!(said.contains("certificate is not trusted") && said.contains("--ca-cert"), "{said}");
        let ok = trusting(&ca).build().unwrap().get(&url).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 204);
    }

    #[tokio::test]
    async fn pinning_takes_the_ca_with_the_fingerprint_and_refuses_another() {
        let (port, ca) = tls_server().await;
        let url = format!("https://127.0.0.1:{port}");
        let got = fetch_pinned_ca(&url, &ca.fingerprint()).await.unwrap();
        assert_eq!(got.fingerprint(), ca.fingerprint());
        let other = Fingerprint([7; 32]);
        match fetch_pinned_ca(&url, &other).await {
            Err(e @ TlsError::PinMismatch { .. }) => {
                let said = e.to_string();
                assert!(said.contains(&other.to_string()) && said.contains(&ca.fingerprint().to_string()), "{said}");
            }
            other => panic!("{other:?}"),
        }
        assert!(fetch_pinned_ca(&format!("http://127.0.0.1:{port}"), &other).await.is_err());
    }

    #[test]
    fn pem_round_trips() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap().self_signed(&key).unwrap();
        let ca = Ca::from_der(cert.der().clone());
        let again = Ca::from_pem(ca.pem()).unwrap();
        assert_eq!(again.fingerprint(), Fingerprint::of(cert.der()));
        assert!(Ca::from_pem("nothing").is_err());
    }
}
