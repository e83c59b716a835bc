//! Serial console logs shipped by agents: the last [`CONSOLE_KEEP`] bytes of each
//! instance's console, appended in order, and windows of it for users.
//!
//! Two offsets meet here. The agent's: a position in one log file on the host (`stream`),
//! acknowledged as `acked` so a restarted agent resumes where the server is. The users':
//! a position in the log as the server keeps it, which only grows; `base` is the users'
//! offset of the first byte still kept. Bytes that never arrived (the agent sent past what
//! the server has) leave a visible marker rather than a silent gap.

use crate::error::StoreError;
use crate::store::{Store, now_micros};
use sqlx::Row;

/// How much of each console is kept (the tail).
pub const CONSOLE_KEEP: usize = 1024 * 1024;

/// A window of a console log, in the users' offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleWindow {
    /// Offset of `data`'s first byte.
    pub offset: u64,
    /// Older bytes than asked for are gone.
    pub truncated: bool,
    pub data: String,
}

struct Row0 {
    stream: String,
    acked: i64,
    base: i64,
    data: String,
}

/// Drops whole characters from the front until at most `keep` bytes are left; answers how
/// many bytes were dropped.
fn trim_front(data: &mut String, keep: usize) -> usize {
    if data.len() <= keep {
        return 0;
    }
    let mut cut = data.len() - keep;
    while !data.is_char_boundary(cut) {
        cut += 1;
    }
    data.drain(..cut);
    cut
}

impl Store {
    /// Appends console bytes an agent read at `offset` of `stream` (`reset`: the stream
    /// restarted from 0 after a rotation). Bytes the server already has are skipped. An
    /// empty `bytes` only asks. Answers how far the server has `stream`.
    pub async fn console_append(
        &self,
        instance_id: &str,
        stream: &str,
        offset: u64,
        reset: bool,
        bytes: &[u8],
    ) -> Result<u64, StoreError> {
        if bytes.is_empty() {
            // Only asking: a read, without taking the writer.
            let row = sqlx::query("SELECT stream, acked FROM console_logs WHERE instance_id = $1")
                .bind(instance_id.to_string())
                .fetch_optional(&self.read)
                .await?;
            return Ok(match row {
                Some(r) if !reset && r.try_get::<String, _>("stream")? == stream => {
                    r.try_get::<i64, _>("acked")?.max(0) as u64
                }
                _ => 0,
            });
        }
        let mut tx = self.begin().await?;
        let lock = tx.lock();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT stream, acked, base, data FROM console_logs WHERE instance_id = $1{lock}"
        )))
        .bind(instance_id.to_string())
        .fetch_optional(tx.conn().await?)
        .await?
        .map(|r| -> Result<Row0, StoreError> {
            Ok(Row0 {
                stream: r.try_get("stream")?,
                acked: r.try_get("acked")?,
                base: r.try_get("base")?,
                data: r.try_get("data")?,
            })
        })
        .transpose()?;
        let exists = row.is_some();
        let mut cur = row.unwrap_or(Row0 { stream: stream.to_string(), acked: 0, base: 0, data: String::new() });
        let same_stream = cur.stream == stream;
        let acked = if same_stream && !reset { cur.acked.max(0) as u64 } else { 0 };
        let end = offset + bytes.len() as u64;
        if end <= acked {
            return Ok(acked);
        }
        let mut text = String::new();
        if !same_stream && exists || reset {
            text.push_str("\n[plinth: console log restarted]\n");
        }
        let skip = if offset >= acked {
            if offset > acked {
                text.push_str(&format!("\n[plinth: {} bytes of console output were not received]\n", offset - acked));
            }
            0
        } else {
            (acked - offset) as usize
        };
        text.push_str(&String::from_utf8_lossy(&bytes[skip..]));
        cur.data.push_str(&text);
        cur.base += trim_front(&mut cur.data, CONSOLE_KEEP) as i64;
        cur.stream = stream.to_string();
        cur.acked = end as i64;
        let sql = if exists {
            "UPDATE console_logs SET stream = $2, acked = $3, base = $4, data = $5, updated_at = $6 WHERE instance_id = $1"
        } else {
            "INSERT INTO console_logs (instance_id, stream, acked, base, data, updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
        };
        sqlx::query(sql)
            .bind(instance_id.to_string())
            .bind(cur.stream)
            .bind(cur.acked)
            .bind(cur.base)
            .bind(cur.data)
            .bind(now_micros())
            .execute(tx.conn().await?)
            .await?;
        tx.commit().await?;
        Ok(end)
    }

    /// Up to `limit` bytes of an instance's console from `offset` (default: the last
    /// `limit` bytes), and the offset after the whole log. `None`: nothing was shipped yet.
    pub async fn console_window(
        &self,
        instance_id: &str,
        offset: Option<u64>,
        limit: usize,
    ) -> Result<(ConsoleWindow, u64), StoreError> {
        let row = sqlx::query("SELECT base, data FROM console_logs WHERE instance_id = $1")
            .bind(instance_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        let (base, data): (u64, String) = match row {
            Some(r) => (r.try_get::<i64, _>("base")?.max(0) as u64, r.try_get("data")?),
            None => (0, String::new()),
        };
        let end = base + data.len() as u64;
        let want = offset.unwrap_or_else(|| end.saturating_sub(limit as u64)).min(end);
        let truncated = want < base;
        let mut from = (want.max(base) - base) as usize;
        while !data.is_char_boundary(from) {
            from += 1;
        }
        let mut to = (from + limit).min(data.len());
        while !data.is_char_boundary(to) {
            to -= 1;
        }
        let window = ConsoleWindow { offset: base + from as u64, truncated, data: data[from..to].to_string() };
        Ok((window, end))
    }
}

#[cfg(test)]
mod tests {
    use super::trim_front;

    #[test]
    fn trimming_keeps_whole_characters() {
        let mut s = "aé".repeat(4); // 12 bytes
        let cut = trim_front(&mut s, 5);
        assert!(s.len() <= 5 && s.is_char_boundary(0));
        assert_eq!(cut + s.len(), 12);
    }
}
