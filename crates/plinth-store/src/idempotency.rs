//! Idempotency keys: the first response to a (caller, key) pair is kept for 24 hours and
//! replayed to retries with the same body; another body under the same key is refused.

use crate::error::StoreError;
use crate::store::{Store, now_micros};
use sqlx::Row;

/// How long a key is remembered.
pub const RETENTION_MICROS: i64 = 24 * 3600 * 1_000_000;
/// A reservation older than this whose request never finished may be taken over.
pub const STALE_MICROS: i64 = 60 * 1_000_000;

/// What to do with a request that carries an `Idempotency-Key`.
#[derive(Clone, Debug, PartialEq)]
pub enum IdempotencyState {
    /// First use: the key is now reserved for this request; run it and call `finish`.
    Proceed,
    /// Same key, same body, finished: answer with the stored response.
    Replay { status: u16, content_type: Option<String>, body: String },
    /// Same key, same body, still running elsewhere.
    InProgress,
    /// Same key, another body.
    Mismatch,
}

impl Store {
    /// Reserves `key` for `principal` and this request, or says how it was used before.
    pub async fn idempotency_begin(
        &self,
        principal: &str,
        key: &str,
        request_hash: &str,
    ) -> Result<IdempotencyState, StoreError> {
        let now = now_micros();
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now - RETENTION_MICROS)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT request_hash, status, content_type, body, created_at FROM idempotency_keys WHERE principal = $1 AND key = $2{}",
            self.for_update()
        )))
        .bind(principal.to_string())
        .bind(key.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let state = match row {
            None => {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (principal, key, request_hash, status, created_at) VALUES ($1, $2, $3, 0, $4)",
                )
                .bind(principal.to_string())
                .bind(key.to_string())
                .bind(request_hash.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => IdempotencyState::Proceed,
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() => IdempotencyState::InProgress,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(r) => {
                let stored: String = r.try_get("request_hash")?;
                let status: i64 = r.try_get("status")?;
                let created: i64 = r.try_get("created_at")?;
                if stored != request_hash {
                    IdempotencyState::Mismatch
                } else if status == 0 && now - created > STALE_MICROS {
                    sqlx::query("UPDATE idempotency_keys SET created_at = $1 WHERE principal = $2 AND key = $3")
                        .bind(now)
                        .bind(principal.to_string())
                        .bind(key.to_string())
                        .execute(&mut *tx)
                        .await?;
                    IdempotencyState::Proceed
                } else if status == 0 {
                    IdempotencyState::InProgress
                } else {
                    IdempotencyState::Replay {
                        status: status as u16,
                        content_type: r.try_get("content_type")?,
                        body: r.try_get::<Option<String>, _>("body")?.unwrap_or_default(),
                    }
                }
            }
        };
        tx.commit().await?;
        Ok(state)
    }

    /// Stores the response for a reserved key. A server error releases the key instead,
    /// so a retry runs the request again.
    pub async fn idempotency_finish(
        &self,
        principal: &str,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(), StoreError> {
        if status >= 500 {
            sqlx::query("DELETE FROM idempotency_keys WHERE principal = $1 AND key = $2")
                .bind(principal.to_string())
                .bind(key.to_string())
                .execute(&mut *self.write.conn().await?)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3 WHERE principal = $4 AND key = $5",
        )
        .bind(status as i64)
        .bind(content_type.map(str::to_string))
        .bind(body.to_string())
        .bind(principal.to_string())
        .bind(key.to_string())
        .execute(&mut *self.write.conn().await?)
        .await?;
        Ok(())
    }
}
