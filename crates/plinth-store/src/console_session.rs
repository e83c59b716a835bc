//! Web console sessions (a browser's login, made from an API token) and the serial
//! console tickets minted for them.
//!
//! Owns the `console_sessions` table: making a session (with its audit record), reading
//! one for authentication (with its token and the token's user's grants), refreshing its
//! last use, revoking it, and forgetting sessions past their absolute end; and the
//! `console_tickets` table: minting a ticket and redeeming it once. Only hashes of
//! secrets are stored.

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
        let Some(session) = self.console_session(id).await? else { return Ok(None) };
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

/// A serial console ticket as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleTicketRow {
    pub id: String,
    /// Hex SHA-256 of the ticket's secret.
    pub secret_hash: String,
    /// The session it was minted for.
    pub session_id: String,
    pub instance_id: String,
    pub read_only: bool,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

const TICKET_COLUMNS: &str = "id, secret_hash, session_id, instance_id, read_only, created_at, expires_at, used_at";

fn ticket_of(r: &sqlx::any::AnyRow) -> Result<ConsoleTicketRow, StoreError> {
    Ok(ConsoleTicketRow {
        id: r.try_get("id")?,
        secret_hash: r.try_get("secret_hash")?,
        session_id: r.try_get("session_id")?,
        instance_id: r.try_get("instance_id")?,
        read_only: r.try_get::<i64, _>("read_only")? != 0,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        used_at: r.try_get("used_at")?,
    })
}

impl Store {
    /// Stores a new ticket; first forgets tickets that expired before `forget_before` (µs).
    pub async fn console_ticket_create(&self, t: &ConsoleTicketRow, forget_before: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("DELETE FROM console_tickets WHERE 1=1");
        sql.cond("expires_at <", Val::Int(Some(forget_before)));
        tx.write_later(sql, "console_tickets", "console ticket").await?;
        let mut sql = Sql::new(format!("INSERT INTO console_tickets ({TICKET_COLUMNS}) VALUES ("));
        let args = [
            sql.arg(Val::text(t.id.as_str())),
            sql.arg(Val::text(t.secret_hash.as_str())),
            sql.arg(Val::text(t.session_id.as_str())),
            sql.arg(Val::text(t.instance_id.as_str())),
            sql.arg(Val::Int(Some(i64::from(t.read_only)))),
            sql.arg(Val::Int(Some(t.created_at))),
            sql.arg(Val::Int(Some(t.expires_at))),
            sql.arg(Val::Int(t.used_at)),
        ];
        sql.push(&args.join(", "));
        sql.push(")");
        tx.write_later(sql, "console_tickets", "console ticket").await?;
        tx.commit().await
    }

    /// Redeems a ticket at `now` (µs): the ticket as it was, marked used in the same
    /// transaction, so of two redemptions at once only one gets it. `None` when there is
    /// no such ticket or it was already used; the caller checks its secret and expiry.
    pub async fn console_ticket_take(&self, id: &str, now: i64) -> Result<Option<ConsoleTicketRow>, StoreError> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new(format!("SELECT {TICKET_COLUMNS} FROM console_tickets WHERE 1=1"));
        sql.cond("id =", Val::text(id));
        sql.push(tx.lock());
        let Some(t) = tx.fetch(sql).await?.first().map(ticket_of).transpose()? else { return Ok(None) };
        if t.used_at.is_some() {
            return Ok(None);
        }
        let mut sql = Sql::new("UPDATE console_tickets SET used_at = ");
        let p = sql.arg(Val::Int(Some(now)));
        sql.push(&p);
        sql.push(" WHERE 1=1");
        sql.cond("id =", Val::text(id));
        tx.write_later(sql, "console_tickets", "console ticket").await?;
        tx.commit().await?;
        Ok(Some(t))
    }

    /// A session by id, for checks that do not hold its secret (a ticket names it).
    pub async fn console_session(&self, id: &str) -> Result<Option<ConsoleSessionRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM console_sessions WHERE id = $1")))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?;
        row.as_ref().map(row_of).transpose()
    }
}
