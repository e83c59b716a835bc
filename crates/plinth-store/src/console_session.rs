//! Web console sessions: a browser's login, made from an API token.
//!
//! Owns the `console_sessions` table: making a session (with its audit record), reading
//! one for authentication (with its token and the token's user's grants), refreshing its
//! last use, revoking it, and forgetting sessions past their absolute end. Only the hash
//! of a session's secret is stored.

use crate::audit::AuditEntry;
use crate::auth::TokenRow;
use crate::error::StoreError;
use crate::resource::Val;
use crate::sql::Sql;
use crate::store::Store;
use plinth_domain::authz::Grant;
use sqlx::Row;

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSessionRow {
    pub id: String,
    /// Hex SHA-256 of the cookie's secret.
    pub secret_hash: String,
    /// The API token it was made from: the session acts as that token.
    pub token_id: String,
    pub user_id: String,
    pub created_at: i64,
    /// Last use, refreshed at most once a minute (µs).
    pub last_seen_at: i64,
    /// The absolute end (µs).
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str = "id, secret_hash, token_id, user_id, created_at, last_seen_at, expires_at, revoked_at";

fn row_of(r: &sqlx::any::AnyRow) -> Result<ConsoleSessionRow, StoreError> {
    Ok(ConsoleSessionRow {
        id: r.try_get("id")?,
        secret_hash: r.try_get("secret_hash")?,
        token_id: r.try_get("token_id")?,
        user_id: r.try_get("user_id")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

impl Store {
    /// Stores a new session, with the audit record of the login that made it (the target
    /// is the session's id) and, first, forgets every session whose absolute end is before
    /// `forget_before` (µs).
    pub async fn console_session_create(
        &self,
        s: &ConsoleSessionRow,
        tenant: Option<&str>,
        audit: &AuditEntry,
        forget_before: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("DELETE FROM console_sessions WHERE 1=1");
        sql.cond("expires_at <", Val::Int(Some(forget_before)));
        tx.write_later(sql, "console_sessions", "console session").await?;
        let mut sql = Sql::new(format!("INSERT INTO console_sessions ({COLUMNS}) VALUES ("));
        let args = [
            sql.arg(Val::text(s.id.as_str())),
            sql.arg(Val::text(s.secret_hash.as_str())),
            sql.arg(Val::text(s.token_id.as_str())),
            sql.arg(Val::text(s.user_id.as_str())),
            sql.arg(Val::Int(Some(s.created_at))),
            sql.arg(Val::Int(Some(s.last_seen_at))),
            sql.arg(Val::Int(Some(s.expires_at))),
            sql.arg(Val::Int(s.revoked_at)),
        ];
        sql.push(&args.join(", "));
        sql.push(")");
        tx.write_later(sql, "console_sessions", "console session").await?;
        tx.audit(audit, &s.id, tenant, 201).await?;
        tx.commit().await
    }

    /// A session with its token and the token's user's grants, for authenticating a
    /// browser's request; `None` when there is no such session or token.
    pub async fn console_session_for_auth(
        &self,
        id: &str,
    ) -> Result<Option<(ConsoleSessionRow, TokenRow, Vec<Grant>)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM console_sessions WHERE id = $1")))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let session = row_of(&row)?;
        Ok(self.token_for_auth(&session.token_id).await?.map(|(token, grants)| (session, token, grants)))
    }

    /// Records the session's use at `now` (µs) when its last recorded use is older than
    /// `older_than` (µs): one write a minute per session at most, not one per request.
    pub async fn console_session_touch(&self, id: &str, now: i64, older_than: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("UPDATE console_sessions SET last_seen_at = ");
        let p = sql.arg(Val::Int(Some(now)));
        sql.push(&p);
        sql.push(" WHERE 1=1");
        sql.cond("id =", Val::text(id));
        sql.cond("last_seen_at <", Val::Int(Some(older_than)));
        tx.write_later(sql, "console_sessions", "console session").await?;
        tx.commit().await
    }

    /// Revokes a session (logout) at `now` (µs), with the audit record of the logout.
    /// False when it was not found or already revoked.
    pub async fn console_session_revoke(
        &self,
        id: &str,
        now: i64,
        tenant: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new(format!("SELECT {COLUMNS} FROM console_sessions WHERE 1=1"));
        sql.cond("id =", Val::text(id));
        sql.push(" AND revoked_at IS NULL");
        if tx.fetch(sql).await?.is_empty() {
            return Ok(false);
        }
        let mut sql = Sql::new("UPDATE console_sessions SET revoked_at = ");
        let p = sql.arg(Val::Int(Some(now)));
        sql.push(&p);
        sql.push(" WHERE 1=1");
        sql.cond("id =", Val::text(id));
        tx.write_later(sql, "console_sessions", "console session").await?;
        tx.audit(audit, id, tenant, 200).await?;
        tx.commit().await?;
        Ok(true)
    }
}
