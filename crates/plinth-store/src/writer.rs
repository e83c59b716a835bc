//! The write side of the store: where write transactions and single write statements run.
//!
//! PostgreSQL writes come from a pool (several transactions commit in parallel). SQLite has
//! one writer, and it is held outside sqlx's pool: a pool of one connection costs, besides
//! the queueing a mutex does too, a ping to the connection's worker thread every time the
//! connection goes back to the pool, and sqlx's `BEGIN`/`COMMIT` on SQLite wait for the
//! caller to acknowledge the answer before the worker goes on. On one writer every such
//! hand-off between threads is time during which no other write can run, so SQLite write
//! transactions here are plain `BEGIN IMMEDIATE` … `COMMIT` statements on a connection
//! behind an async mutex, and a transaction abandoned half way (an error, a cancelled
//! request) is rolled back before anyone else gets the connection.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// How long a writer waits for the connection before giving up (as the pool did).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where writes run.
#[derive(Clone)]
pub(crate) enum Writer {
    /// PostgreSQL: a pool.
    Pool(AnyPool),
    /// SQLite: the one write connection.
    Sqlite(Arc<Mutex<SqliteWriter>>),
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Writer::Pool(p) => f.debug_tuple("Pool").field(p).finish(),
            Writer::Sqlite(_) => f.write_str("Sqlite"),
        }
    }
}

/// The SQLite write connection and whether a transaction may be left open on it.
pub(crate) struct SqliteWriter {
    /// None once the store is closed.
    conn: Option<AnyConnection>,
    /// A transaction was begun and neither committed nor rolled back yet (or we cannot be
    /// sure): the next user rolls it back first.
    open: bool,
}

/// The SQLite writer, locked. Dropped while a transaction is open, it rolls that back
/// (in a task that keeps the lock until done).
pub(crate) struct SqliteGuard(Option<OwnedMutexGuard<SqliteWriter>>);

impl SqliteGuard {
    fn state(&mut self) -> &mut SqliteWriter {
        self.0.as_mut().expect("guard is held until drop")
    }

    /// Marks a transaction as begun (before sending its `BEGIN`) or ended.
    pub(crate) fn set_open(&mut self, open: bool) {
        self.state().open = open;
    }

    /// Rolls back whatever is open, now.
    pub(crate) async fn rollback(&mut self) {
        let w = self.state();
        if let Some(conn) = w.conn.as_mut() {
            // "no transaction is active" when it had ended after all: nothing to undo.
            let _ = conn.execute("ROLLBACK").await;
        }
        w.open = false;
    }
}

impl Drop for SqliteGuard {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else { return };
        if !guard.open {
            return;
        }
        // Roll back while still holding the lock, so the next writer finds a clean
        // connection. Without a runtime (shutting down), the next user rolls back instead.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut g = SqliteGuard(Some(guard));
                g.rollback().await;
            });
        }
    }
}

impl Deref for SqliteGuard {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.0.as_ref().and_then(|g| g.conn.as_ref()).expect("checked open on lock")
    }
}

impl DerefMut for SqliteGuard {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.state().conn.as_mut().expect("checked open on lock")
    }
}

/// A write connection for single statements (each its own transaction).
pub(crate) enum WriteConn {
    Pool(PoolConnection<Any>),
    Sqlite(SqliteGuard),
}

impl Deref for WriteConn {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteConn::Pool(c) => c,
            WriteConn::Sqlite(g) => g,
        }
    }
}

impl DerefMut for WriteConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteConn::Pool(c) => c,
            WriteConn::Sqlite(g) => g,
        }
    }
}

/// A write transaction. Dropped without [`WriteTx::commit`], it rolls back.
pub(crate) enum WriteTx {
    Pool(Transaction<'static, Any>),
    Sqlite(SqliteGuard),
}

impl WriteTx {
    /// Records that a `COMMIT` sent in a batch went through.
    pub(crate) fn committed(&mut self) {
        if let WriteTx::Sqlite(g) = self {
            g.set_open(false);
        }
    }

    /// Commits.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            WriteTx::Pool(tx) => tx.commit().await,
            WriteTx::Sqlite(mut g) => {
                // On failure the guard stays open and rolls back when dropped.
                g.execute("COMMIT").await?;
                g.set_open(false);
                Ok(())
            }
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            WriteTx::Pool(tx) => tx,
            WriteTx::Sqlite(g) => g,
        }
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            WriteTx::Pool(tx) => tx,
            WriteTx::Sqlite(g) => g,
        }
    }
}

impl Writer {
    /// Wraps the SQLite write connection.
    pub(crate) fn sqlite(conn: AnyConnection) -> Writer {
        Writer::Sqlite(Arc::new(Mutex::new(SqliteWriter { conn: Some(conn), open: false })))
    }

    /// Locks the SQLite writer, rolling back what an abandoned transaction left open.
    pub(crate) async fn lock_sqlite(m: &Arc<Mutex<SqliteWriter>>) -> Result<SqliteGuard, sqlx::Error> {
        let guard = tokio::time::timeout(ACQUIRE_TIMEOUT, m.clone().lock_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        if guard.conn.is_none() {
            return Err(sqlx::Error::PoolClosed);
        }
        let mut g = SqliteGuard(Some(guard));
        if g.state().open {
            g.rollback().await;
        }
        Ok(g)
    }

    /// A connection for one statement.
    pub(crate) async fn conn(&self) -> Result<WriteConn, sqlx::Error> {
        match self {
            Writer::Pool(p) => Ok(WriteConn::Pool(p.acquire().await?)),
            Writer::Sqlite(m) => Ok(WriteConn::Sqlite(Self::lock_sqlite(m).await?)),
        }
    }

    /// Begins a write transaction.
    pub(crate) async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        match self {
            Writer::Pool(p) => Ok(WriteTx::Pool(p.begin().await?)),
            Writer::Sqlite(m) => {
                let mut g = Self::lock_sqlite(m).await?;
                // Marked open first: if `BEGIN` is cancelled half way, the next user
                // rolls back whatever it did.
                g.set_open(true);
                // IMMEDIATE: take the write lock now, so a transaction that reads before it
                // writes cannot be refused at its first write by another process's writer.
                g.execute("BEGIN IMMEDIATE").await?;
                Ok(WriteTx::Sqlite(g))
            }
        }
    }

    /// Begins a write transaction whose SQLite `BEGIN IMMEDIATE` the caller sends itself, in
    /// one batch with its first statements (see `Tx`). The writer is locked and marked open
    /// from here on, so the transaction is rolled back if dropped whatever was sent.
    pub(crate) async fn begin_batched(&self) -> Result<WriteTx, sqlx::Error> {
        match self {
            Writer::Pool(_) => self.begin().await,
            Writer::Sqlite(m) => {
                let mut g = Self::lock_sqlite(m).await?;
                g.set_open(true);
                Ok(WriteTx::Sqlite(g))
            }
        }
    }

    /// Closes the pool or the connection.
    pub(crate) async fn close(&self) {
        match self {
            Writer::Pool(p) => p.close().await,
            Writer::Sqlite(m) => {
                let mut w = m.lock().await;
                if let Some(conn) = w.conn.take() {
                    let _ = conn.close().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{AuditEntry, Store, StoreError};
    use chrono::Utc;
    use plinth_api::{AuditFilter, Tenant, TenantId};
    use plinth_domain::authz::Scope;
    use std::collections::BTreeMap;

    fn tenant(name: &str) -> Tenant {
        let now = Utc::now();
        Tenant {
            id: TenantId::generate(),
            name: name.into(),
            display_name: name.into(),
            labels: BTreeMap::new(),
            generation: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// Lets other tasks run `n` times: cancels land at different points of a write.
    async fn yields(n: u64) {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    fn entry() -> AuditEntry {
        AuditEntry { action: "tenants.create".into(), request_id: "req_test".into(), ..Default::default() }
    }

    /// Requests cancelled at any point of their write (a client that hangs up) and a
    /// transaction dropped half way leave no transaction open on the SQLite writer and
    /// nothing half written: an object exists exactly when its audit record does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_writes_leave_the_sqlite_writer_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/plinth.db", dir.path().display())).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..200u64 {
            let t = tenant(&format!("t{i}"));
            ids.push(t.id.0.clone());
            let s = store.clone();
            let h = tokio::spawn(async move { s.insert(&t, &entry()).await });
            yields(i % 25).await;
            h.abort();
            let _ = h.await;
        }
        for i in 0..20u64 {
            let s = store.clone();
            let h = tokio::spawn(async move {
                let mut tx = s.begin().await?;
                tx.insert(&tenant(&format!("dropped{i}")), &[]).await?;
                yields(5).await;
                Ok::<_, StoreError>(tx)
            });
            yields(i).await;
            h.abort();
            // Finished or not, the transaction is dropped uncommitted.
            let _ = h.await;
        }

        let after = tenant("after");
        store.insert(&after, &entry()).await.expect("the writer is usable after abandoned writes");
        let _: Tenant = store.get(&Scope::Platform, after.id.as_str()).await.unwrap();
        for id in ids {
            let exists = store.get::<Tenant>(&Scope::Platform, &id).await.is_ok();
            let filter = AuditFilter { target: Some(id.clone()), ..Default::default() };
            let audited = !store.list_audit(None, &filter, 10, None).await.unwrap().items.is_empty();
            assert_eq!(exists, audited, "{id}: the object and its audit record are written together or not at all");
        }
        let page = store.list::<Tenant>(&Scope::Platform, &[], 1000, None).await.unwrap();
        assert!(page.items.iter().all(|t| !t.name.starts_with("dropped")), "a dropped transaction rolled back");
    }
}
