//! The [`Store`] handle: connection pools per backend, opening and readiness.

use crate::error::StoreError;
use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor};
use std::time::Duration;

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The one store API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) backend: Backend,
    /// Write transactions. On SQLite this pool has one connection, so writers queue in
    /// process instead of failing with `SQLITE_BUSY`.
    pub(crate) write: AnyPool,
    /// Reads. On SQLite, WAL lets these run beside the writer.
    pub(crate) read: AnyPool,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn sqlite_pragmas(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA journal_mode = WAL").await?;
    conn.execute("PRAGMA synchronous = NORMAL").await?;
    conn.execute("PRAGMA busy_timeout = 10000").await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    Ok(())
}

impl Store {
    /// Opens `url` (`sqlite:///path/plinth.db` or `postgres://…`) and runs migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("sqlite:") {
            let url = if url.contains('?') { url.to_string() } else { format!("{url}?mode=rwc") };
            let opts = || {
                AnyPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
            };
            let write = opts().max_connections(1).connect(&url).await?;
            let read = opts().max_connections(4).connect(&url).await?;
            Store { backend: Backend::Sqlite, write, read }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool =
                AnyPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
            Store { backend: Backend::Postgres, write: pool.clone(), read: pool }
        } else {
            return Err(StoreError::Refused {
                status: 400,
                code: "invalid_database_url",
                detail: format!("unsupported database url {url:?}: use sqlite:// or postgres://"),
            });
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Creates a fresh, empty PostgreSQL database `name` on the server of `admin_url` and
    /// returns its URL. Used by tests to give each test its own database.
    pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(admin_url).await?;
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await?;
        conn.close().await?;
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url, String::new()),
        };
        let base = match base.rfind('/') {
            Some(i) if i > "postgres://".len() => &base[..i],
            _ => base,
        };
        Ok(format!("{base}/{name}{query}"))
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose single writer already
    /// serialises write transactions.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}
