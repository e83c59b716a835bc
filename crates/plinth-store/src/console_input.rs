//! Console input waiting for a host's agent: text typed for an instance's serial console,
//! kept in order per instance until the agent acknowledges it wrote it to the guest.
//!
//! Owns the `console_input` table: adding input (bounded per instance), listing what waits
//! for a host, and forgetting what was acknowledged or waited too long.

use crate::error::StoreError;
use crate::resource::Val;
use crate::sql::Sql;
use crate::store::{Store, now_micros};
use crate::tx::Tx;
use sqlx::Row;

/// Input waiting for a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleInputRow {
    pub instance_id: String,
    pub seq: i64,
    pub data: String,
}

impl Tx {
    /// Adds input for an instance on `host_id`, after what already waits (its `seq` the
    /// instance's next, never one used before); `None` when it
    /// would put more than `max_waiting` bytes in wait for it. Input of any instance older
    /// than `stale_before` (µs) goes first: nobody waits for keystrokes that long, and a
    /// host that never came back would keep them. The caller holds the instance's row (so
    /// two inputs cannot take the same `seq`).
    pub async fn console_input_push(
        &mut self,
        instance_id: &str,
        host_id: &str,
        data: &str,
        max_waiting: u64,
        stale_before: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut sql = Sql::new("DELETE FROM console_input WHERE 1=1");
        sql.cond("created_at <", Val::Int(Some(stale_before)));
        self.write_later(sql, "console_input", "console input").await?;
        let mut sql = Sql::new("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes FROM console_input WHERE 1=1");
        sql.cond("instance_id =", Val::text(instance_id));
        let waiting: i64 = match self.fetch(sql).await?.first() {
            Some(r) => r.try_get("bytes")?,
            None => 0,
        };
        let bytes = data.len() as i64;
        if (waiting + bytes) as u64 > max_waiting {
            return Ok(None);
        }
        let mut sql = Sql::new("UPDATE instances SET console_input_seq = console_input_seq + 1 WHERE 1=1");
        sql.cond("id =", Val::text(instance_id));
        self.write_later(sql, "instances", "instance").await?;
        let mut sql = Sql::new("SELECT console_input_seq FROM instances WHERE 1=1");
        sql.cond("id =", Val::text(instance_id));
        let seq: i64 = match self.fetch(sql).await?.first() {
            Some(r) => r.try_get("console_input_seq")?,
            None => return Err(StoreError::NotFound { kind: "instance", id: instance_id.to_string() }),
        };
        let mut sql =
            Sql::new("INSERT INTO console_input (instance_id, seq, host_id, data, bytes, created_at) VALUES (");
        let args = [
            sql.arg(Val::text(instance_id)),
            sql.arg(Val::Int(Some(seq))),
            sql.arg(Val::text(host_id)),
            sql.arg(Val::text(data)),
            sql.arg(Val::Int(Some(bytes))),
            sql.arg(Val::Int(Some(now_micros()))),
        ];
        sql.push(&args.join(", "));
        sql.push(")");
        self.write_later(sql, "console_input", "console input").await?;
        Ok(Some(seq))
    }
}

impl Store {
    /// Up to `limit` inputs waiting for the host, in order per instance.
    pub async fn console_input_waiting(&self, host_id: &str, limit: i64) -> Result<Vec<ConsoleInputRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT instance_id, seq, data FROM console_input WHERE host_id = $1 ORDER BY instance_id, seq LIMIT $2",
        )
        .bind(host_id.to_string())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsoleInputRow {
                    instance_id: r.try_get("instance_id")?,
                    seq: r.try_get("seq")?,
                    data: r.try_get("data")?,
                })
            })
            .collect()
    }

    /// Forgets the host's input up to each acknowledged `(instance, seq)`.
    pub async fn console_input_forget(&self, host_id: &str, acked: &[(String, i64)]) -> Result<(), StoreError> {
        if acked.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (instance, seq) in acked {
            let mut sql = Sql::new("DELETE FROM console_input WHERE 1=1");
            sql.cond("host_id =", Val::text(host_id));
            sql.cond("instance_id =", Val::text(instance.as_str()));
            sql.cond("seq <=", Val::Int(Some(*seq)));
            tx.write_later(sql, "console_input", "console input").await?;
        }
        tx.commit().await
    }
}
