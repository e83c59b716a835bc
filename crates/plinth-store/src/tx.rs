//! [`Tx`]: a write transaction the server composes from typed steps (read for update,
//! insert, save with the generation check, audit) when one decision spans several
//! objects — a placement claim, a saga step, an observation and the event it causes.
//!
//! Every read still takes a [`Scope`], so tenancy holds inside composed transactions too.
//! Keep transactions short: on SQLite every writer waits for this one to commit.
//!
//! On SQLite, statements whose outcome nothing reads — the `BEGIN`, inserts, audit records,
//! log lines — are not sent one by one: they queue ([`Tx::write_later`]) and go in one
//! batch with the next statement that returns something, or with the `COMMIT`. sqlx hands
//! every query to the connection's own thread and waits for the answer, and on the one
//! SQLite writer that round trip is time no other write can use; a placement claim goes
//! from fifteen of them to five. (sqlx runs the statements of a multi-statement SQLite
//! query in turn, binding `$n` across all of them; it calls that behaviour deprecated, and
//! the tests that create instances fail if it goes.) A failure in the batch is reported
//! against the object whose table the database names. PostgreSQL runs each statement at
//! once.

use crate::audit::{self, AuditEntry, Outcome};
use crate::crud::{decode_doc, get_sql, insert_sql, save_tx, scope_filter};
use crate::error::StoreError;
use crate::resource::{Resource, Val};
use crate::sql::Sql;
use crate::store::{Backend, Store};
use crate::tally::{Pending, Tally};
use crate::writer::WriteTx;
use plinth_domain::authz::Scope;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::sync::Arc;

/// A write transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    pub(crate) inner: WriteTx,
    pub(crate) backend: Backend,
    pub(crate) anchor_day: u32,
    pub(crate) clock_offset: i64,
    /// SQLite: statements queued, not sent yet.
    pending: Batch,
    /// What this transaction wrote, added to `tally` when it commits.
    pub(crate) wrote: Pending,
    tally: Arc<Tally>,
    /// Hosts to wake once this transaction commits.
    pub(crate) wake: Vec<String>,
    waker: crate::store::HostWaker,
}

/// Statements queued on a SQLite transaction, and the tables they write (with the kind of
/// object each holds, for errors).
#[derive(Default)]
struct Batch {
    sql: Sql,
    writes: Vec<(&'static str, &'static str)>,
}

impl Batch {
    /// The error of a batch that failed: a constraint is reported against the queued write
    /// whose table the database names.
    fn error(&self, e: sqlx::Error) -> StoreError {
        let kind = match &e {
            sqlx::Error::Database(db) => {
                let msg = db.message();
                self.writes
                    .iter()
                    .find(|(table, _)| !table.is_empty() && msg.contains(&format!("{table}.")))
                    .map(|(_, kind)| *kind)
            }
            _ => None,
        };
        StoreError::from_write(kind.unwrap_or("object"), e)
    }
}

impl Store {
    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let mut pending = Batch::default();
        if self.backend == Backend::Sqlite {
            // IMMEDIATE: take the write lock at once, so a transaction that reads before it
            // writes cannot be refused at its first write by another process's writer.
            pending.sql.push("BEGIN IMMEDIATE");
        }
        Ok(Tx {
            inner: self.write.begin_batched().await?,
            backend: self.backend,
            anchor_day: self.anchor_day,
            clock_offset: self.clock_offset.load(std::sync::atomic::Ordering::Relaxed),
            pending,
            wrote: Pending::default(),
            tally: self.tally.clone(),
            wake: Vec::new(),
            waker: self.host_waker.clone(),
        })
    }
}

impl Tx {
    /// Day of the month billing periods start on.
    pub fn billing_anchor(&self) -> u32 {
        self.anchor_day
    }

    /// The store's clock ([`Store::now`]).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::microseconds(self.clock_offset)
    }

    /// Runs a statement whose outcome nothing reads (no rows, no count): on SQLite it goes
    /// with the next statement sent; on PostgreSQL now. `table` (empty when not known) and
    /// `kind` name what it writes, for a constraint it breaks.
    pub(crate) async fn write_later(
        &mut self,
        sql: Sql,
        table: &'static str,
        kind: &'static str,
    ) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                self.pending.sql.append(&sql);
                self.pending.writes.push((table, kind));
            }
            Backend::Postgres => {
                sql.query().execute(&mut *self.inner).await.map_err(|e| StoreError::from_write(kind, e))?;
            }
        }
        Ok(())
    }

    /// The connection, for a statement of the caller's own: what is queued is sent first.
    pub(crate) async fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        if !self.pending.sql.text.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            batch.sql.query().execute(&mut *self.inner).await.map_err(|e| batch.error(e))?;
        }
        Ok(&mut self.inner)
    }

    /// Runs `sql` and returns its rows; what is queued goes in the same batch, before it.
    pub(crate) async fn fetch(&mut self, sql: Sql) -> Result<Vec<AnyRow>, StoreError> {
        if self.pending.sql.text.is_empty() {
            return Ok(sql.query().fetch_all(&mut *self.inner).await?);
        }
        let mut batch = std::mem::take(&mut self.pending);
        batch.sql.append(&sql);
        batch.sql.query().fetch_all(&mut *self.inner).await.map_err(|e| batch.error(e))
    }

    pub(crate) fn lock(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Reads one object visible in `scope`, locked for update until commit.
    pub async fn get<T: Resource>(&mut self, scope: &Scope, id: &str) -> Result<T, StoreError> {
        let sql = get_sql::<T>(scope, id, self.lock());
        match self.fetch(sql).await?.first() {
            Some(row) => decode_doc(row),
            None => Err(StoreError::NotFound { kind: T::KIND, id: id.to_string() }),
        }
    }

    /// Like [`Tx::get`], but None when absent.
    pub async fn find<T: Resource>(&mut self, scope: &Scope, id: &str) -> Result<Option<T>, StoreError> {
        match self.get(scope, id).await {
            Ok(t) => Ok(Some(t)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object visible in `scope` whose `col` equals `value` (`col` must be one of
    /// `T::FILTERS`), in id order, locked for update.
    pub async fn list_by<T: Resource>(&mut self, scope: &Scope, col: &str, value: &str) -> Result<Vec<T>, StoreError> {
        if !T::FILTERS.contains(&col) {
            return Err(StoreError::Refused {
                status: 400,
                code: "invalid_filter",
                detail: format!("{} cannot be filtered by {col}", T::KIND),
            });
        }
        let mut sql = Sql::new(format!("SELECT doc FROM {} WHERE 1=1", T::TABLE));
        sql.cond(&format!("{col} ="), Val::text(value));
        scope_filter::<T>(&mut sql, scope);
        sql.push(" ORDER BY id");
        sql.push(self.lock());
        let rows = self.fetch(sql).await?;
        rows.iter()
            .map(|r| {
                let doc: String = r.try_get("doc")?;
                serde_json::from_str(&doc).map_err(|source| StoreError::Corrupt { table: T::TABLE, source })
            })
            .collect()
    }

    /// Inserts a new object (with extra private columns).
    pub async fn insert<T: Resource>(&mut self, item: &T, extra: &[(&'static str, Val)]) -> Result<(), StoreError> {
        self.write_later(insert_sql(item, extra), T::TABLE, T::KIND).await
    }

    /// Writes `item` back at generation + 1; refused if someone else moved it.
    pub async fn save<T: Resource>(&mut self, item: &mut T) -> Result<(), StoreError> {
        save_tx(self.conn().await?, item, &[]).await
    }

    /// Rewrites `item`'s document and columns WITHOUT moving its generation: for facts
    /// reported by machines (a heartbeat time) that must not invalidate a user's If-Match.
    /// The row is read-modify-written under this transaction's lock, so nothing is lost.
    pub async fn save_quiet<T: Resource>(&mut self, item: &T) -> Result<(), StoreError> {
        let mut sql = Sql::new(format!("UPDATE {} SET ", T::TABLE));
        let mut sets = vec![("doc", Val::Text(Some(serde_json::to_string(item).unwrap_or_default())))];
        sets.extend(item.columns());
        let assigns: Vec<String> = sets.into_iter().map(|(n, v)| format!("{n} = {}", sql.arg(v))).collect();
        sql.push(&assigns.join(", "));
        sql.push(" WHERE 1=1");
        sql.cond("id =", Val::text(item.id()));
        self.write_later(sql, T::TABLE, T::KIND).await
    }

    /// Deletes one object by id (no dependents check: the caller owns the decision).
    pub async fn remove<T: Resource>(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut sql = Sql::new(format!("DELETE FROM {} WHERE 1=1", T::TABLE));
        sql.cond("id =", Val::text(id));
        let done = sql.query().execute(self.conn().await?).await.map_err(|e| StoreError::from_write(T::KIND, e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records the audit entry of the request this transaction serves.
    pub async fn audit(
        &mut self,
        entry: &AuditEntry,
        target: &str,
        tenant: Option<&str>,
        status: u16,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::default();
        sql.text =
            audit::insert_sql(&mut sql, entry, Outcome { target: Some(target), tenant, status, error_code: None });
        self.write_later(sql, "audit_log", "audit record").await
    }

    /// Sets one private (non-document) column of a row, e.g. a host's heartbeat time.
    pub async fn set_column(&mut self, table: &str, id: &str, col: &str, value: Val) -> Result<(), StoreError> {
        let mut sql = Sql::new(format!("UPDATE {table} SET {col} = "));
        let p = sql.arg(value);
        sql.push(&p);
        sql.push(" WHERE 1=1");
        sql.cond("id =", Val::text(id));
        self.write_later(sql, "", "row").await
    }

    /// Bumps a host's desired-state generation (the agent's long-poll wakes on it).
    pub async fn bump_desired(&mut self, host_id: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new("UPDATE hosts SET desired_generation = desired_generation + 1 WHERE 1=1");
        sql.cond("id =", Val::text(host_id));
        self.write_later(sql, "hosts", "host").await
    }

    /// A host's lifecycle state (the column, without reading its document).
    pub async fn host_state(&mut self, host_id: &str) -> Result<Option<String>, StoreError> {
        let mut sql = Sql::new("SELECT state FROM hosts WHERE 1=1");
        sql.cond("id =", Val::text(host_id));
        Ok(match self.fetch(sql).await?.first() {
            Some(r) => Some(r.try_get("state")?),
            None => None,
        })
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        let Tx { mut inner, pending, wrote, tally, wake, waker, .. } = self;
        let wake_all = move || {
            if let Some(f) = waker.0.get() {
                for h in &wake {
                    f(h);
                }
            }
        };
        if pending.writes.is_empty() {
            if pending.sql.text.is_empty() {
                inner.commit().await?;
            } else {
                // Only the `BEGIN` was queued: nothing was written, nothing to send.
                inner.committed();
            }
            tally.add(&wrote);
            wake_all();
            return Ok(());
        }
        let mut batch = pending;
        batch.sql.append(&Sql::new("COMMIT"));
        // On failure the transaction stays open and is rolled back when `inner` drops.
        batch.sql.query().execute(&mut *inner).await.map_err(|e| batch.error(e))?;
        inner.committed();
        tally.add(&wrote);
        wake_all();
        Ok(())
    }
}
