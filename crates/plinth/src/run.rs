//! `plinth server` and `plinth up`: start the control plane, bootstrap the first operator,
//! choose where image files live (`{data_dir}/blobs` for `plinth up`), and stop cleanly
//! on Ctrl-C or SIGTERM.

use crate::profile::{self, Profile};
use anyhow::{Context, Result};
use plinth_store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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

/// `plinth server`: the server alone, on any database (the HA form).
pub async fn server(
    database_url: &str,
    listen_addr: &str,
    token_file: Option<&Path>,
    blob_dir: Option<&Path>,
) -> Result<()> {
    let store = Store::open(database_url).await.context("opening the database")?;
    if let Some(token) = plinth_server::bootstrap(&store).await? {
        println!("Created the first operator. Its token, shown once:\n\n  {token}\n");
        if let Some(f) = token_file {
            profile::write_private(f, &format!("{token}\n"))?;
            println!("(also written to {})", f.display());
        }
    }
    let mut config = plinth_server::ServerConfig::from_env();
    config.blob_dir = blob_dir_for(database_url, blob_dir);
    if config.blob_dir.is_none() {
        eprintln!("plinth server: no blob directory (--blob-dir): images are unavailable");
    }
    let listener = listen(listen_addr).await?;
    eprintln!("plinth server listening on http://{}", listener.local_addr()?);
    plinth_server::serve_with(store, config, listener, shutdown_signal()).await?;
    Ok(())
}

/// `plinth up`: embedded SQLite in `data_dir`, server on `listen_addr`, CLI profile set up
/// on first start; with `demo`, a local agent, the test-guest image and a demo project.
pub async fn up(data_dir: &Path, listen_addr: &str, demo: bool) -> Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    // The database holds hashed secrets and BMC credentials: keep the directory private.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
    let db = data_dir.join("plinth.db");
    let store = Store::open(&format!("sqlite://{}", db.display())).await.context("opening the embedded database")?;
    let listener = listen(listen_addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    if let Some(token) = plinth_server::bootstrap(&store).await? {
        let token_path = data_dir.join("operator-token");
        profile::write_private(&token_path, &format!("{token}\n"))?;
        let profile_path = profile::path();
        profile::save(&profile_path, &Profile { server: url.clone(), token: token.clone() })?;
        println!("First start: created the operator. Its token, shown once:\n\n  {token}\n");
        println!(
            "Written to {} (0600); the CLI profile {} now points here.",
            token_path.display(),
            profile_path.display()
        );
    }
    println!("Plinth is up at {url} (data in {}). Ctrl-C stops it (VMs keep running).", data_dir.display());
    let mut config = plinth_server::ServerConfig::from_env();
    // Image files live with the rest of the data.
    config.blob_dir = Some(data_dir.join("blobs"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let mut server = tokio::spawn(plinth_server::serve_with(store, config, listener, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    // The local agent and the demo, through the API as the operator.
    let token_path = data_dir.join("operator-token");
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading the operator token from {}", token_path.display()))?;
    let mut agent = if demo {
        crate::up_local::start(data_dir, &url, token.trim(), stop_rx).await?
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
