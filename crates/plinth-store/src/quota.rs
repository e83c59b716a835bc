//! Quota limits and usage: usage moves by deltas inside the caller's transaction (the one
//! that claims or releases), and is checked against the limits there, so concurrent
//! creates can never pass a quota on either backend: the upsert locks the usage rows.

use crate::error::StoreError;
use crate::resource::Val;
use crate::sql::Sql;
use crate::store::{Backend, Store, now_micros};
use crate::tx::Tx;
use plinth_api::QuotaEntry;
use sqlx::Row;
use std::collections::BTreeMap;

impl Tx {
    /// Adds `deltas` to the usage of every scope in `scopes` (a tenant id and a project
    /// id) and refuses with [`StoreError::QuotaExceeded`] when a positive delta takes a
    /// scope past its limit. Two statements, whatever the number of resources (one batch on
    /// SQLite).
    pub async fn quota_charge(&mut self, scopes: &[&str], deltas: &[(String, i64)]) -> Result<(), StoreError> {
        let deltas: Vec<&(String, i64)> = deltas.iter().filter(|(_, d)| *d != 0).collect();
        if deltas.is_empty() || scopes.is_empty() {
            return Ok(());
        }
        let mut sql = Sql::new("INSERT INTO quota_usage (scope_id, resource, used) VALUES ");
        let mut tuples = Vec::new();
        for s in scopes {
            for (r, d) in &deltas {
                let (a, b, c) = (sql.arg(Val::text(*s)), sql.arg(Val::text(r)), sql.arg(Val::Int(Some(*d))));
                tuples.push(format!("({a}, {b}, {c})"));
            }
        }
        sql.push(&tuples.join(", "));
        sql.push(
            " ON CONFLICT (scope_id, resource) DO UPDATE SET used = quota_usage.used + excluded.used \
             RETURNING 'used' AS what, scope_id, resource, used AS amount",
        );
        let mut limits = Sql::new(
            "SELECT 'limit' AS what, scope_id, resource, max_value AS amount FROM quota_limits WHERE scope_id IN (",
        );
        let ps: Vec<String> = scopes.iter().map(|s| limits.arg(Val::text(*s))).collect();
        limits.push(&ps.join(", "));
        limits.push(") ORDER BY scope_id, resource");
        let rows = match self.backend {
            // One batch (with whatever the transaction queued before).
            Backend::Sqlite => {
                sql.append(&limits);
                self.fetch(sql).await?
            }
            Backend::Postgres => {
                let mut rows = self.fetch(sql).await?;
                rows.extend(self.fetch(limits).await?);
                rows
            }
        };
        let mut used: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut limit_rows = Vec::new();
        for r in rows {
            let key: (String, String) = (r.try_get("scope_id")?, r.try_get("resource")?);
            let amount: i64 = r.try_get("amount")?;
            if r.try_get::<String, _>("what")? == "used" {
                used.insert(key, amount);
            } else {
                limit_rows.push((key, amount));
            }
        }
        for ((scope, resource), limit) in limit_rows {
            let Some(d) = deltas.iter().find(|(n, _)| *n == resource).map(|(_, d)| *d) else { continue };
            let now = used.get(&(scope.clone(), resource.clone())).copied().unwrap_or(0);
            if d > 0 && now > limit {
                return Err(StoreError::QuotaExceeded { scope, resource, limit, used: now - d, requested: d });
            }
        }
        Ok(())
    }
}

impl Store {
    /// Limits and usage of the given scopes: every resource with a limit or any usage.
    pub async fn quota_entries(&self, scopes: &[String]) -> Result<Vec<QuotaEntry>, StoreError> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        let mut all: BTreeMap<(String, String), (Option<i64>, i64)> = BTreeMap::new();
        for (table, col) in [("quota_limits", "max_value"), ("quota_usage", "used")] {
            let mut sql = Sql::new(format!("SELECT scope_id, resource, {col} AS v FROM {table} WHERE scope_id IN ("));
            let ps: Vec<String> = scopes.iter().map(|s| sql.arg(Val::text(s))).collect();
            sql.push(&ps.join(", "));
            sql.push(")");
            for r in sql.query().fetch_all(&self.read).await? {
                let e = all.entry((r.try_get("scope_id")?, r.try_get("resource")?)).or_default();
                let v: i64 = r.try_get("v")?;
                if table == "quota_limits" {
                    e.0 = Some(v);
                } else {
                    e.1 = v;
                }
            }
        }
        Ok(all
            .into_iter()
            .map(|((scope_id, resource), (limit, used))| QuotaEntry {
                scope_id,
                resource,
                limit,
                used,
                available: limit.map(|l| (l - used).max(0)),
            })
            .collect())
    }

    /// Sets (Some) or removes (None) limits of one scope, in one transaction.
    pub async fn set_quota_limits(
        &self,
        scope_id: &str,
        limits: &BTreeMap<String, Option<i64>>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for (resource, limit) in limits {
            sqlx::query("DELETE FROM quota_limits WHERE scope_id = $1 AND resource = $2")
                .bind(scope_id.to_string())
                .bind(resource.clone())
                .execute(tx.conn().await?)
                .await?;
            if let Some(l) = limit {
                sqlx::query(
                    "INSERT INTO quota_limits (scope_id, resource, max_value, updated_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(scope_id.to_string())
                .bind(resource.clone())
                .bind(*l)
                .bind(now_micros())
                .execute(tx.conn().await?)
                .await?;
            }
        }
        tx.commit().await
    }
}
