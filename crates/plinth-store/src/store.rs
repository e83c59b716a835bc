//! The [`Store`] handle: connection pools per backend, opening and readiness.

use crate::checkpoint::{self, Checkpointer};
use crate::error::StoreError;
use crate::tally::Tally;
use crate::writer::Writer;
use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
    /// Write transactions. On SQLite this is one connection, so writers queue in process
    /// instead of failing with `SQLITE_BUSY`.
    pub(crate) write: Writer,
    /// Reads. On SQLite, WAL lets these run beside the writer.
    pub(crate) read: AnyPool,
    /// Day of the month (1–28) billing periods start on, 00:00 UTC.
    pub(crate) anchor_day: u32,
    /// Microseconds added to the wall clock for lifecycle and metering times: zero, except
    /// where tests and demos move time on to cross a billing period.
    pub(crate) clock_offset: Arc<AtomicI64>,
    /// SQLite: the background WAL checkpoint (stopped with the last clone).
    pub(crate) checkpointer: Option<Arc<Checkpointer>>,
    /// What this process's committed transactions wrote (shared by every clone).
    pub(crate) tally: Arc<Tally>,
    /// Told, after a commit, each host whose desired state the transaction changed through
    /// the network data plane ([`Store::on_host_changed`]).
    pub(crate) host_waker: HostWaker,
}

/// The callback a server installs to wake a host's long-poll after a commit.
#[derive(Clone, Default)]
pub(crate) struct HostWaker(pub(crate) Arc<std::sync::OnceLock<WakeFn>>);

/// Wakes one host (by id).
pub(crate) type WakeFn = Box<dyn Fn(&str) + Send + Sync>;

impl std::fmt::Debug for HostWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "HostWaker(set)" } else { "HostWaker(unset)" })
    }
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
                    // An in-process SQLite connection cannot have been dropped by a peer: the
                    // ping before each acquire would only cost a hand-off to its worker thread.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| Box::pin(async move { sqlite_pragmas(conn).await }))
            };
            let mut conn = AnyConnection::connect(&url).await?;
            sqlite_pragmas(&mut conn).await?;
            checkpoint::configure_writer(&mut conn).await?;
            let write = Writer::sqlite(conn);
            let read = opts().max_connections(4).connect(&url).await?;
            let checkpointer = Some(Arc::new(Checkpointer::start(&url, write.clone()).await?));
            Store {
                backend: Backend::Sqlite,
                write,
                read,
                anchor_day: 1,
                clock_offset: Arc::default(),
                checkpointer,
                tally: Arc::default(),
                host_waker: HostWaker::default(),
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool =
                AnyPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
            Store {
                backend: Backend::Postgres,
                write: Writer::Pool(pool.clone()),
                read: pool,
                anchor_day: 1,
                clock_offset: Arc::default(),
                checkpointer: None,
                tally: Arc::default(),
                host_waker: HostWaker::default(),
            }
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

    /// The same store with billing periods starting on `day` (1–28) of each month.
    /// Installs what wakes a host's agent after a transaction changed its network (the
    /// server's signals). Only the first call counts.
    pub fn on_host_changed(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.host_waker.0.set(Box::new(f));
    }

    pub fn with_billing_anchor(mut self, day: u32) -> Store {
        self.anchor_day = day.clamp(1, 28);
        self
    }

    /// Day of the month billing periods start on.
    pub fn billing_anchor(&self) -> u32 {
        self.anchor_day
    }

    /// The time lifecycle transitions and usage are stamped with: the wall clock, plus
    /// whatever [`Store::advance_clock`] added.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::microseconds(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Moves this store's clock on by `by` (tests and demos that cross a billing period;
    /// shared by every clone of the store).
    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset.fetch_add(by.as_micros() as i64, Ordering::Relaxed);
    }

    /// Usage records this process has written (committed), by meter, since the store
    /// opened: the server's ledger counter.
    pub fn ledger_records_written(&self) -> Vec<(plinth_api::Meter, u64)> {
        self.tally.ledger()
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
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
        self.write.close().await;
        self.read.close().await;
    }
}
