//! [`Tx`]: a write transaction the server composes from typed steps (read for update,
//! insert, save with the generation check, audit) when one decision spans several
//! objects — a placement claim, a saga step, an observation and the event it causes.
//!
//! Every read still takes a [`Scope`], so tenancy holds inside composed transactions too.
//! Keep transactions short: on SQLite every writer waits for this one to commit.

use crate::audit::{self, AuditEntry, Outcome};
use crate::crud::{get_tx, insert_tx, save_tx, scope_filter};
use crate::error::StoreError;
use crate::resource::{Resource, Val};
use crate::sql::Sql;
use crate::store::{Backend, Store};
use crate::writer::WriteTx;
use plinth_domain::authz::Scope;
use sqlx::Row;

/// A write transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    pub(crate) inner: WriteTx,
    pub(crate) backend: Backend,
    pub(crate) anchor_day: u32,
    pub(crate) clock_offset: i64,
}

impl Store {
    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            inner: self.write.begin().await?,
            backend: self.backend,
            anchor_day: self.anchor_day,
            clock_offset: self.clock_offset.load(std::sync::atomic::Ordering::Relaxed),
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

    pub(crate) fn lock(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Reads one object visible in `scope`, locked for update until commit.
    pub async fn get<T: Resource>(&mut self, scope: &Scope, id: &str) -> Result<T, StoreError> {
        let lock = self.lock();
        get_tx(&mut self.inner, scope, id, lock).await
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
        let rows = sql.query().fetch_all(&mut *self.inner).await?;
        rows.iter()
            .map(|r| {
                let doc: String = r.try_get("doc")?;
                serde_json::from_str(&doc).map_err(|source| StoreError::Corrupt { table: T::TABLE, source })
            })
            .collect()
    }

    /// Inserts a new object (with extra private columns).
    pub async fn insert<T: Resource>(&mut self, item: &T, extra: &[(&'static str, Val)]) -> Result<(), StoreError> {
        insert_tx(&mut self.inner, item, extra).await
    }

    /// Writes `item` back at generation + 1; refused if someone else moved it.
    pub async fn save<T: Resource>(&mut self, item: &mut T) -> Result<(), StoreError> {
        save_tx(&mut self.inner, item, &[]).await
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
        sql.query().execute(&mut *self.inner).await.map_err(|e| StoreError::from_write(T::KIND, e))?;
        Ok(())
    }

    /// Deletes one object by id (no dependents check: the caller owns the decision).
    pub async fn remove<T: Resource>(&mut self, id: &str) -> Result<bool, StoreError> {
        let mut sql = Sql::new(format!("DELETE FROM {} WHERE 1=1", T::TABLE));
        sql.cond("id =", Val::text(id));
        let done = sql.query().execute(&mut *self.inner).await.map_err(|e| StoreError::from_write(T::KIND, e))?;
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
        audit::write(&mut self.inner, entry, Outcome { target: Some(target), tenant, status, error_code: None }).await
    }

    /// Sets one private (non-document) column of a row, e.g. a host's heartbeat time.
    pub async fn set_column(&mut self, table: &str, id: &str, col: &str, value: Val) -> Result<(), StoreError> {
        let mut sql = Sql::new(format!("UPDATE {table} SET {col} = "));
        let p = sql.arg(value);
        sql.push(&p);
        sql.push(" WHERE 1=1");
        sql.cond("id =", Val::text(id));
        sql.query().execute(&mut *self.inner).await?;
        Ok(())
    }

    /// Bumps a host's desired-state generation (the agent's long-poll wakes on it).
    pub async fn bump_desired(&mut self, host_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE hosts SET desired_generation = desired_generation + 1 WHERE id = $1")
            .bind(host_id.to_string())
            .execute(&mut *self.inner)
            .await?;
        Ok(())
    }

    /// A host's lifecycle state (the column, without reading its document).
    pub async fn host_state(&mut self, host_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM hosts WHERE id = $1")
            .bind(host_id.to_string())
            .fetch_optional(&mut *self.inner)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("state")?),
            None => None,
        })
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.inner.commit().await?;
        Ok(())
    }
}
