//! `plinth server` and `plinth up`: start the control plane, bootstrap the first operator,
//! choose where image files live (`{data_dir}/blobs` for `plinth up`) and how HTTPS is
//! served (the server's own CA in `{data_dir}/tls` for `plinth up`, `--tls-dir` for
//! `plinth server`; an operator's `--tls-cert/--tls-key`; plain HTTP only on loopback with
//! `--insecure-http`), and stop cleanly on Ctrl-C or SIGTERM.

use crate::profile::{self, Profile};
use anyhow::{Context, Result, anyhow, bail};
use plinth_server::tls::Tls;
use plinth_store::Store;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How the server serves HTTPS (flags of `plinth server` and `plinth up`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Serve with this certificate chain (PEM: the serving certificate, any intermediates,
    /// then the CA that join tokens pin) instead of the server's own CA.
    #[arg(long, requires = "tls_key", env = "PLINTH_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", env = "PLINTH_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Another name or address the server's own certificate covers (repeatable), e.g. a
    /// DNS name or a NAT address agents dial. The listen address, the host name (and on a
    /// wildcard or loopback address, localhost and the machine's addresses) are covered.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Serve plain HTTP, without TLS: tokens and host credentials cross in clear. Refused
    /// unless the listen address is loopback (127.0.0.1, ::1).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_san"])]
    pub insecure_http: bool,
}

/// Where `plinth server` keeps files: image blobs and its own TLS CA.
pub struct ServerDirs<'a> {
    pub blob_dir: Option<&'a Path>,
    pub tls_dir: Option<&'a Path>,
}

/// The HTTPS setup for `addr` (None: plain HTTP, `--insecure-http` on loopback), with its
/// own CA in `dir` unless the operator gave a certificate.
fn tls_setup(args: &TlsArgs, dir: Option<&Path>, addr: SocketAddr) -> Result<Option<Tls>> {
    if args.insecure_http {
        if !addr.ip().is_loopback() {
            bail!(
                "--insecure-http is refused on {addr}: only a loopback address (127.0.0.1, ::1) may serve plain HTTP. \
                 Remove --insecure-http to serve HTTPS (the server makes its own CA)"
            );
        }
        eprintln!("WARNING: --insecure-http: serving plain HTTP on {addr}, without TLS.");
        eprintln!(
            "WARNING: tokens and host credentials cross the wire in clear; only clients on this machine can connect."
        );
        return Ok(None);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let tls = plinth_server::tls::from_files(cert, key).context("the TLS certificate (--tls-cert/--tls-key)")?;
        return Ok(Some(tls));
    }
    let dir = dir.ok_or_else(|| {
        anyhow!(
            "no place for the server's TLS CA: pass --tls-dir DIR (replicas share it), or --tls-cert/--tls-key, \
             or --insecure-http on a loopback address"
        )
    })?;
    let names = plinth_server::tls::names_for(addr, &args.tls_san);
    let tls = plinth_server::tls::load_or_create(dir, &names)
        .with_context(|| format!("setting up TLS in {}", dir.display()))?;
    Ok(Some(tls))
}

/// The URL clients on this machine dial: the listen address, with a wildcard replaced by
/// loopback (which the certificate covers).
fn local_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("{}://{}", if tls { "https" } else { "http" }, SocketAddr::new(ip, addr.port()))
}

/// What the server prints about its TLS.
fn print_tls(tls: &Tls) {
    match &tls.ca_file {
        Some(ca) => {
            let made = if tls.created_ca { "made now" } else { "kept from before" };
            eprintln!("  TLS: the server's own CA {} ({made}), fingerprint {}", ca.display(), tls.ca_sha256);
            eprintln!("  serving certificate for: {}", tls.names.join(", "));
            eprintln!(
                "  CLI elsewhere: plinth login --server URL --token plt_… --ca-cert <a copy of {}>",
                ca.display()
            );
        }
        None => eprintln!("  TLS: the given certificate; its chain's top CA has fingerprint {}", tls.ca_sha256),
    }
    eprintln!("  agents: `plinth join-token create` prints the --join-token that pins this CA");
}

/// Serves over HTTPS with `tls`, else plain HTTP.
async fn serve(
    store: Store,
    config: plinth_server::ServerConfig,
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(t) => plinth_server::serve_tls(store, config, listener, t, shutdown).await,
        None => plinth_server::serve_with(store, config, listener, shutdown).await,
    }
}

/// The default data directory: `~/.local/share/plinth`.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("plinth")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("plinth: stopping (finishing requests in flight)");
}

async fn listen(addr: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

/// The blob directory of `plinth server`: as given, else beside an SQLite database file.
fn blob_dir_for(database_url: &str, given: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = given {
        return Some(d.to_path_buf());
    }
    let file = database_url.strip_prefix("sqlite://")?.split('?').next()?;
    let dir = Path::new(file).parent()?;
    (!file.is_empty() && !file.contains(":memory:")).then(|| dir.join("blobs"))
}

/// The TLS directory of `plinth server`: as given, else `tls/` beside an SQLite database
/// file, else beside the blob directory.
fn tls_dir_for(database_url: &str, blob_dir: Option<&Path>, given: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = given {
        return Some(d.to_path_buf());
    }
    let beside_db = database_url
        .strip_prefix("sqlite://")
        .and_then(|rest| rest.split('?').next())
        .filter(|f| !f.is_empty() && !f.contains(":memory:"))
        .and_then(|f| Path::new(f).parent().map(|d| d.join("tls")));
    beside_db.or_else(|| blob_dir.map(|b| b.parent().unwrap_or(Path::new(".")).join("tls")))
}

/// The key sealing volume keys: `PLINTH_VOLUME_KEK_FILE`, else `volume.kek` in `dir`
/// (made, 0600, on first start). None when neither is known.
fn volume_kek(dir: Option<&Path>) -> Result<Option<plinth_server::secrets::VolumeKek>> {
    let path = match std::env::var_os("PLINTH_VOLUME_KEK_FILE").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => match dir {
            Some(d) => d.join("volume.kek"),
            None => return Ok(None),
        },
    };
    let kek = plinth_server::secrets::VolumeKek::load_or_create(&path)
        .with_context(|| format!("the volume key-encryption key {}", path.display()))?;
    Ok(Some(kek))
}

/// `plinth server`: the server alone, on any database (the HA form).
pub async fn server(
    database_url: &str,
    listen_addr: &str,
    token_file: Option<&Path>,
    dirs: ServerDirs<'_>,
    tls_args: &TlsArgs,
) -> Result<()> {
    let listener = listen(listen_addr).await?;
    let addr = listener.local_addr()?;
    let mut config = plinth_server::ServerConfig::from_env();
    config.blob_dir = blob_dir_for(database_url, dirs.blob_dir);
    let tls_dir = tls_dir_for(database_url, config.blob_dir.as_deref(), dirs.tls_dir);
    let tls = tls_setup(tls_args, tls_dir.as_deref(), addr)?;
    config.ca_sha256 = tls.as_ref().map(|t| t.ca_sha256);
    // Volume keys are sealed with a key kept beside the TLS directory (replicas share it).
    config.volume_kek = volume_kek(tls_dir.as_deref().and_then(Path::parent))?;
    let store = Store::open(database_url).await.context("opening the database")?;
    if let Some(token) = plinth_server::bootstrap(&store).await? {
        println!("Created the first operator. Its token, shown once:\n\n  {token}\n");
        if let Some(f) = token_file {
            profile::write_private(f, &format!("{token}\n"))?;
            println!("(also written to {})", f.display());
        }
    }
    if config.blob_dir.is_none() {
        eprintln!("plinth server: no blob directory (--blob-dir): images are unavailable");
    }
    if config.volume_kek.is_none() {
        eprintln!(
            "plinth server: no volume key-encryption key (PLINTH_VOLUME_KEK_FILE): encrypted volumes are unavailable"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("plinth server listening on {scheme}://{addr}");
    if let Some(t) = &tls {
        print_tls(t);
    }
    serve(store, config, listener, tls.map(|t| t.config), shutdown_signal()).await?;
    Ok(())
}

/// `plinth up`: embedded SQLite in `data_dir`, server on `listen_addr`, CLI profile set up
/// on first start; with `demo` (`Some(the agent's provider bridge)`), a local agent, the
/// test-guest image and a demo project.
pub async fn up(data_dir: &Path, listen_addr: &str, demo: Option<Option<String>>, tls_args: &TlsArgs) -> Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    // The database holds hashed secrets and BMC credentials: keep the directory private.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    let listener = listen(listen_addr).await?;
    let addr = listener.local_addr()?;
    let tls = tls_setup(tls_args, Some(&data_dir.join("tls")), addr)?;
    let url = local_url(addr, tls.is_some());
    let ca_file = tls.as_ref().and_then(|t| t.ca_file.clone()).or_else(|| tls_args.tls_cert.clone());
    let db = data_dir.join("plinth.db");
    let store = Store::open(&format!("sqlite://{}", db.display())).await.context("opening the embedded database")?;
    let token_path = data_dir.join("operator-token");
    let profile_path = profile::path();
    if let Some(token) = plinth_server::bootstrap(&store).await? {
        profile::write_private(&token_path, &format!("{token}\n"))?;
        profile::save(&profile_path, &Profile { server: url.clone(), token: token.clone(), ca_cert: ca_file.clone() })?;
        println!("First start: created the operator. Its token, shown once:\n\n  {token}\n");
        println!(
            "Written to {} (0600); the CLI profile {} now points here.",
            token_path.display(),
            profile_path.display()
        );
    } else {
        follow_profile(&profile_path, &token_path, &url, ca_file.as_deref())?;
    }
    println!("Plinth is up at {url} (data in {}). Ctrl-C stops it (VMs keep running).", data_dir.display());
    println!("  Web console: {url}/ — log in with an API token (the operator's is in {}).", token_path.display());
    if let Some(t) = &tls {
        print_tls(t);
    }
    let mut config = plinth_server::ServerConfig::from_env();
    // Image files and the volume key-encryption key live with the rest of the data.
    config.blob_dir = Some(data_dir.join("blobs"));
    config.volume_kek = volume_kek(Some(data_dir))?;
    config.ca_sha256 = tls.as_ref().map(|t| t.ca_sha256);
    let ca = match &ca_file {
        Some(f) => Some(plinth_client::connect::Ca::from_file(f)?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(serve(store, config, listener, tls.map(|t| t.config), async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    // The local agent and the demo, through the API as the operator.
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading the operator token from {}", token_path.display()))?;
    let mut agent = if let Some(provider_bridge) = demo {
        crate::up_local::start(data_dir, &url, token.trim(), ca, provider_bridge, stop_rx).await?
    } else {
        println!("Try: plinth tenant list");
        tokio::spawn(async move {
            let mut stop = stop_rx;
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        })
    };
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        r = &mut server => r.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)),
        r = &mut agent => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.context("the local agent stopped")),
            Err(e) => Err(e.into()),
        },
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let _ = (&mut agent).await;
        let _ = (&mut server).await;
    })
    .await;
    outcome
}

/// On a later start, a CLI profile holding this data directory's operator token follows
/// the server: its URL (the port may have changed, or HTTP become HTTPS) and CA.
fn follow_profile(profile_path: &Path, token_path: &Path, url: &str, ca_file: Option<&Path>) -> Result<()> {
    let Ok(token) = std::fs::read_to_string(token_path) else { return Ok(()) };
    let Some(mut p) = profile::load(profile_path)? else { return Ok(()) };
    if p.token != token.trim() || (p.server == url && p.ca_cert.as_deref() == ca_file) {
        return Ok(());
    }
    p.server = url.to_string();
    p.ca_cert = ca_file.map(Path::to_path_buf);
    profile::save(profile_path, &p)?;
    println!("The CLI profile {} now points here ({url}).", profile_path.display());
    Ok(())
}
