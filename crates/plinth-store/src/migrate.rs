//! Schema migrations: numbered SQL files embedded in the binary, applied in order at start,
//! each in its own transaction together with its row in `schema_migrations`.

use crate::error::StoreError;
use crate::store::{Backend, Store, now_micros};
use sqlx::Row;

/// (version, name, SQL) of every migration, in order.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../migrations/0001_foundation.sql")),
    (2, "compute", include_str!("../migrations/0002_compute.sql")),
    (3, "images", include_str!("../migrations/0003_images.sql")),
    (4, "console", include_str!("../migrations/0004_console.sql")),
    (5, "billing", include_str!("../migrations/0005_billing.sql")),
    (6, "network", include_str!("../migrations/0006_network.sql")),
    (7, "vpc_data_version", include_str!("../migrations/0007_vpc_data_version.sql")),
    (8, "nic_indexes", include_str!("../migrations/0008_nic_indexes.sql")),
    (9, "ip_pools", include_str!("../migrations/0009_ip_pools.sql")),
    (10, "floating_ips", include_str!("../migrations/0010_floating_ips.sql")),
    (11, "external_access", include_str!("../migrations/0011_external_access.sql")),
    (12, "volumes", include_str!("../migrations/0012_volumes.sql")),
    (13, "volume_attachments", include_str!("../migrations/0013_volume_attachments.sql")),
    (14, "volume_snapshots", include_str!("../migrations/0014_volume_snapshots.sql")),
    (15, "group_filter_generation", include_str!("../migrations/0015_group_filter_generation.sql")),
    (16, "console_input", include_str!("../migrations/0016_console_input.sql")),
    (17, "console_sessions", include_str!("../migrations/0017_console_sessions.sql")),
    (18, "console_tickets", include_str!("../migrations/0018_console_tickets.sql")),
];

/// Splits a migration file into statements: `;` at the end of a line ends one.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

impl Store {
    /// Applies every migration not yet applied. Safe to run concurrently from several
    /// server replicas on PostgreSQL (an advisory lock serialises them) and safe to repeat.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *self.write.conn().await?)
        .await
        .or_else(|e| match &e {
            // Two replicas racing to create the table: the loser's CREATE fails on PG's catalog.
            sqlx::Error::Database(db) if db.is_unique_violation() => Ok(Default::default()),
            _ => Err(e),
        })?;
        for (version, name, sql) in MIGRATIONS {
            let mut tx = self.write.begin().await?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(7480001)").execute(&mut *tx).await?;
            }
            let done: i64 = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if done > 0 {
                continue;
            }
            for stmt in statements(sql) {
                sqlx::query(sqlx::AssertSqlSafe(stmt))
                    .execute(&mut *tx)
                    .await
                    .map_err(|source| StoreError::Migration { version: *version, source })?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(*version)
                .bind(*name)
                .bind(now_micros())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// The versions applied, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version").fetch_all(&self.read).await?;
        rows.iter().map(|r| r.try_get::<i64, _>("version").map_err(StoreError::from)).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_sequential_from_one() {
        for (i, (v, _, _)) in super::MIGRATIONS.iter().enumerate() {
            assert_eq!(*v, i as i64 + 1);
        }
    }

    #[test]
    fn splits_statements_at_line_ends() {
        let s = super::statements("-- c\nCREATE TABLE a (x TEXT);\nCREATE INDEX b\n ON a (x);\n");
        assert_eq!(s.len(), 2);
        assert!(s[1].contains("ON a (x);"));
    }
}
