//! Compute queries that are not plain CRUD: the scheduler's snapshot of hosts and their
//! claims, a host's desired state for its agent, heartbeats, saga logs, operation leases
//! and named leases for singleton background work.

use crate::error::StoreError;
use crate::resource::Val;
use crate::sql::{Sql, packed, unpack};
use crate::store::{Store, now_micros};
use crate::tx::Tx;
use plinth_api::{Allocation, Host, Instance, Operation};
use sqlx::Row;

fn decode<T: serde::de::DeserializeOwned>(table: &'static str, doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { table, source })
}

/// One entry of a saga's durable step log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaLogEntry {
    pub seq: i64,
    pub step: String,
    /// `do` or `undo`.
    pub direction: String,
    pub output: Option<String>,
}

/// An instance row that changed, as the change feed reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceChange {
    pub id: String,
    pub host_id: Option<String>,
    pub tenant_id: String,
    /// The row's `updated_at` (µs).
    pub at: i64,
}

impl Store {
    /// Every host and every allocation: what the scheduler's cache is built from.
    pub async fn scheduler_snapshot(&self) -> Result<(Vec<Host>, Vec<Allocation>), StoreError> {
        let mut hosts = Vec::new();
        for r in sqlx::query("SELECT doc FROM hosts ORDER BY id").fetch_all(&self.read).await? {
            hosts.push(decode("hosts", &r.try_get::<String, _>("doc")?)?);
        }
        let mut allocs = Vec::new();
        for r in sqlx::query("SELECT doc FROM allocations ORDER BY id").fetch_all(&self.read).await? {
            allocs.push(decode("allocations", &r.try_get::<String, _>("doc")?)?);
        }
        Ok((hosts, allocs))
    }

    /// One host and its allocations (outside any transaction).
    pub async fn host_with_allocations(&self, host_id: &str) -> Result<Option<(Host, Vec<Allocation>)>, StoreError> {
        let Some(row) = sqlx::query("SELECT doc FROM hosts WHERE id = $1")
            .bind(host_id.to_string())
            .fetch_optional(&self.read)
            .await?
        else {
            return Ok(None);
        };
        let host: Host = decode("hosts", &row.try_get::<String, _>("doc")?)?;
        let mut allocs = Vec::new();
        for r in sqlx::query("SELECT doc FROM allocations WHERE host_id = $1 ORDER BY id")
            .bind(host_id.to_string())
            .fetch_all(&self.read)
            .await?
        {
            allocs.push(decode("allocations", &r.try_get::<String, _>("doc")?)?);
        }
        Ok(Some((host, allocs)))
    }

    /// Allocations whose instance is gone or deleted: (allocation id, host id).
    pub async fn orphan_allocations(&self) -> Result<Vec<Allocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.doc AS doc FROM allocations a LEFT JOIN instances i ON i.id = a.instance_id \
             WHERE i.id IS NULL OR i.lifecycle = 'deleted' ORDER BY a.id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| decode("allocations", &r.try_get::<String, _>("doc")?)).collect()
    }

    /// Instances in `lifecycle` whose derived state is one of `states`: what reconcilers
    /// look at (filtered in SQL, as they run every few seconds).
    pub async fn instances_where(&self, lifecycle: &str, states: &[&str]) -> Result<Vec<Instance>, StoreError> {
        let mut sql = Sql::new("SELECT doc FROM instances WHERE lifecycle = ");
        let p = sql.arg(Val::text(lifecycle));
        sql.push(&p);
        let ps: Vec<String> = states.iter().map(|s| sql.arg(Val::text(*s))).collect();
        sql.push(&format!(" AND state IN ({}) ORDER BY id", ps.join(", ")));
        let rows = sql.query().fetch_all(&self.read).await?;
        rows.iter().map(|r| decode("instances", &r.try_get::<String, _>("doc")?)).collect()
    }

    /// Live instances (not deleted, deleting or failed) placed on retired hosts.
    pub async fn instances_on_retired_hosts(&self) -> Result<Vec<Instance>, StoreError> {
        let rows = sqlx::query(
            "SELECT i.doc AS doc FROM instances i JOIN hosts h ON h.id = i.host_id \
             WHERE h.state = 'retired' AND i.lifecycle IN ('active', 'busy', 'creating') ORDER BY i.id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| decode("instances", &r.try_get::<String, _>("doc")?)).collect()
    }

    /// What changed after `since` (microseconds): instances and operations, at most
    /// `limit` of each. The server's change feed turns these into wake-ups, so waiters
    /// need not poll, and into the web console's live updates.
    pub async fn changes_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<(Vec<InstanceChange>, Vec<(String, i64)>), StoreError> {
        // One row in all: the feed rereads a window of recent changes several times a
        // second, and on SQLite every row is a hand-off between threads.
        let sql = format!(
            "SELECT \
             (SELECT {} FROM (SELECT id, host_id, tenant_id, updated_at FROM instances \
               WHERE updated_at > $1 ORDER BY updated_at LIMIT $2) i) AS instances, \
             (SELECT {} FROM (SELECT id, updated_at FROM operations \
               WHERE updated_at > $1 ORDER BY updated_at LIMIT $2) o) AS operations",
            packed(self.backend, &["id", "COALESCE(host_id, '')", "tenant_id", "CAST(updated_at AS TEXT)"]),
            packed(self.backend, &["id", "CAST(updated_at AS TEXT)"]),
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(since).bind(limit).fetch_one(&self.read).await?;
        let (instances, operations): (Option<String>, Option<String>) =
            (row.try_get("instances")?, row.try_get("operations")?);
        let bad = |what: &str| StoreError::Corrupt {
            table: "instances/operations",
            source: serde::de::Error::custom(format!("change feed row: {what}")),
        };
        let at = |v: &str| v.parse::<i64>().map_err(|_| bad("updated_at"));
        let mut inst = Vec::new();
        for f in unpack(instances.as_deref()) {
            let [id, host, tenant, t] = f[..] else { return Err(bad("count")) };
            inst.push(InstanceChange {
                id: id.to_string(),
                host_id: Some(host.to_string()).filter(|h| !h.is_empty()),
                tenant_id: tenant.to_string(),
                at: at(t)?,
            });
        }
        let mut ops = Vec::new();
        for f in unpack(operations.as_deref()) {
            let [id, t] = f[..] else { return Err(bad("count")) };
            ops.push((id.to_string(), at(t)?));
        }
        Ok((inst, ops))
    }

    /// A host's lifecycle state (the column only), if the host exists.
    pub async fn host_state(&self, host_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state FROM hosts WHERE id = $1")
            .bind(host_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("state")?),
            None => None,
        })
    }

    /// A host's desired-state generation.
    pub async fn desired_generation(&self, host_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT desired_generation FROM hosts WHERE id = $1")
            .bind(host_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("desired_generation")?),
            None => None,
        })
    }

    /// The instances placed on a host that its agent must know of (every lifecycle but
    /// `deleted`), with their user data, and the host's desired generation.
    pub async fn host_instances(&self, host_id: &str) -> Result<(i64, Vec<(Instance, Option<String>)>), StoreError> {
        // One read transaction so the generation and the list agree.
        let mut conn = self.read.begin().await?;
        let g: i64 = sqlx::query("SELECT desired_generation FROM hosts WHERE id = $1")
            .bind(host_id.to_string())
            .fetch_one(&mut *conn)
            .await?
            .try_get("desired_generation")?;
        let rows = sqlx::query(
            "SELECT doc, user_data FROM instances WHERE host_id = $1 AND lifecycle <> 'deleted' ORDER BY id",
        )
        .bind(host_id.to_string())
        .fetch_all(&mut *conn)
        .await?;
        conn.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push((decode("instances", &r.try_get::<String, _>("doc")?)?, r.try_get("user_data")?));
        }
        Ok((g, out))
    }

    /// Ids of hosts in one of `states` whose last heartbeat (or, never having beaten, whose
    /// creation) is older than `cutoff_micros`. Filtered in SQL: it runs every few seconds.
    pub async fn silent_hosts(&self, states: &[&str], cutoff_micros: i64) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT id FROM hosts WHERE COALESCE(heartbeat_at, created_at) < ");
        let p = sql.arg(Val::Int(Some(cutoff_micros)));
        sql.push(&p);
        let ps: Vec<String> = states.iter().map(|s| sql.arg(Val::text(*s))).collect();
        sql.push(&format!(" AND state IN ({}) ORDER BY id", ps.join(", ")));
        let rows = sql.query().fetch_all(&self.read).await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Operations not yet final whose saga no live server holds: work to resume. A server
    /// is live while its own named lease (named by its owner id, [`Store::take_lease`]) is.
    pub async fn resumable_operations(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM operations o WHERE status IN ('pending', 'running') AND saga IS NOT NULL \
             AND (lease_owner IS NULL OR NOT EXISTS \
                 (SELECT 1 FROM leases l WHERE l.name = o.lease_owner AND l.expires_at >= $1)) ORDER BY id",
        )
        .bind(now_micros())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Takes the saga of an operation for the server `owner`; false when another live
    /// server holds it.
    pub async fn lease_operation(&self, op_id: &str, owner: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET lease_owner = $1 WHERE id = $2 AND (lease_owner IS NULL OR lease_owner = $1 \
             OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = operations.lease_owner AND l.expires_at >= $3))",
        )
        .bind(owner.to_string())
        .bind(op_id.to_string())
        .bind(now_micros())
        .execute(&mut *self.write.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// An operation with its saga state and whether cancellation was asked for; None when
    /// it does not exist or runs no saga.
    pub async fn operation_saga(&self, op_id: &str) -> Result<Option<(Operation, String, bool)>, StoreError> {
        let row = sqlx::query("SELECT doc, saga, cancel_requested FROM operations WHERE id = $1")
            .bind(op_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let Some(saga) = r.try_get::<Option<String>, _>("saga")? else { return Ok(None) };
        let op = decode("operations", &r.try_get::<String, _>("doc")?)?;
        Ok(Some((op, saga, r.try_get::<i64, _>("cancel_requested")? != 0)))
    }

    /// Asks a running operation to stop at its next safe point.
    pub async fn request_cancel(&self, op_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE operations SET cancel_requested = 1 WHERE id = $1")
            .bind(op_id.to_string())
            .execute(&mut *self.write.conn().await?)
            .await?;
        Ok(())
    }

    /// A saga's step log, in order.
    pub async fn saga_log(&self, op_id: &str) -> Result<Vec<SagaLogEntry>, StoreError> {
        let rows =
            sqlx::query("SELECT seq, step, direction, output FROM saga_log WHERE operation_id = $1 ORDER BY seq")
                .bind(op_id.to_string())
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(SagaLogEntry {
                    seq: r.try_get("seq")?,
                    step: r.try_get("step")?,
                    direction: r.try_get("direction")?,
                    output: r.try_get("output")?,
                })
            })
            .collect()
    }

    /// Forgets leases expired before `cutoff_micros`: a missing lease and an expired one
    /// mean the same, so this only keeps the table from growing with every server start.
    pub async fn forget_expired_leases(&self, cutoff_micros: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM leases WHERE expires_at < $1")
            .bind(cutoff_micros)
            .execute(&mut *self.write.conn().await?)
            .await?;
        Ok(done.rows_affected())
    }

    /// Takes or renews the named lease (singleton background work across replicas, and
    /// each server's own liveness, named by its owner id).
    pub async fn take_lease(&self, name: &str, owner: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let now = now_micros();
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT owner, expires_at FROM leases WHERE name = $1{}",
            self.for_update()
        )))
        .bind(name.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let ok = match row {
            None => sqlx::query("INSERT INTO leases (name, owner, expires_at) VALUES ($1, $2, $3)")
                .bind(name.to_string())
                .bind(owner.to_string())
                .bind(now + ttl_ms * 1000)
                .execute(&mut *tx)
                .await
                .is_ok(),
            Some(r) => {
                let held_by: String = r.try_get("owner")?;
                let expires: i64 = r.try_get("expires_at")?;
                if held_by == owner || expires < now {
                    sqlx::query("UPDATE leases SET owner = $1, expires_at = $2 WHERE name = $3")
                        .bind(owner.to_string())
                        .bind(now + ttl_ms * 1000)
                        .bind(name.to_string())
                        .execute(&mut *tx)
                        .await?;
                    true
                } else {
                    false
                }
            }
        };
        tx.commit().await?;
        Ok(ok)
    }
}

impl Tx {
    /// Appends one entry to a saga's step log (one statement: the next sequence number is
    /// computed by the insert itself).
    pub async fn saga_append(
        &mut self,
        op_id: &str,
        step: &str,
        direction: &str,
        output: Option<String>,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new("INSERT INTO saga_log (operation_id, seq, step, direction, output, at) SELECT ");
        let id = sql.arg(Val::text(op_id));
        let rest = [Val::text(step), Val::text(direction), Val::Text(output), Val::Int(Some(now_micros()))];
        let rest: Vec<String> = rest.into_iter().map(|v| sql.arg(v)).collect();
        sql.push(&format!(
            "{id}, COALESCE(MAX(seq), 0) + 1, {} FROM saga_log WHERE operation_id = {id}",
            rest.join(", ")
        ));
        self.write_later(sql, "saga_log", "saga log entry").await
    }

    /// The allocations held on a host (locks the host row first on PostgreSQL so two
    /// claims on one host serialise).
    pub async fn host_for_claim(&mut self, host_id: &str) -> Result<Option<(Host, Vec<Allocation>)>, StoreError> {
        // The allocations come back as one row, not one per allocation: this runs inside
        // every claim, and on SQLite each row is a hand-off between threads.
        let allocations = format!("SELECT {} FROM allocations WHERE host_id = ", packed(self.backend, &["doc"]));
        let (host, docs) = match self.backend {
            crate::store::Backend::Sqlite => {
                // One statement: SQLite's single writer already keeps other claims out.
                let mut sql = Sql::new(format!("SELECT doc, ({allocations}"));
                let p = sql.arg(Val::text(host_id));
                sql.push(&format!("{p}) AS docs FROM hosts WHERE id = {p}"));
                let rows = self.fetch(sql).await?;
                let Some(row) = rows.first() else { return Ok(None) };
                (row.try_get::<String, _>("doc")?, row.try_get::<Option<String>, _>("docs")?)
            }
            crate::store::Backend::Postgres => {
                // The host row is locked first, so the allocations read next include those
                // of any claim that held the lock before.
                let row = sqlx::query("SELECT doc FROM hosts WHERE id = $1 FOR UPDATE")
                    .bind(host_id.to_string())
                    .fetch_optional(self.conn().await?)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let agg = sqlx::query(sqlx::AssertSqlSafe(format!("{allocations}$1")))
                    .bind(host_id.to_string())
                    .fetch_one(self.conn().await?)
                    .await?;
                (row.try_get::<String, _>("doc")?, agg.try_get::<Option<String>, _>(0)?)
            }
        };
        let host: Host = decode("hosts", &host)?;
        let mut allocs = Vec::new();
        for f in unpack(docs.as_deref()) {
            allocs.push(decode("allocations", f[0])?);
        }
        Ok(Some((host, allocs)))
    }

    /// Where the live members of a placement group run: (instance, host, rack). Locks the
    /// group row first so two claims into one group serialise.
    pub async fn group_members(&mut self, group_id: &str) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let lock = self.lock();
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT id FROM placement_groups WHERE id = $1{lock}")))
            .bind(group_id.to_string())
            .fetch_optional(self.conn().await?)
            .await?;
        let rows = sqlx::query(
            "SELECT i.id AS instance_id, i.host_id AS host_id, h.rack_id AS rack_id FROM instances i \
             JOIN hosts h ON h.id = i.host_id \
             WHERE i.placement_group_id = $1 AND i.lifecycle <> 'deleted' ORDER BY i.id",
        )
        .bind(group_id.to_string())
        .fetch_all(self.conn().await?)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("instance_id")?, r.try_get("host_id")?, r.try_get("rack_id")?))).collect()
    }

    /// Sets the cancel flag's and saga's columns of an operation.
    pub async fn set_saga(&mut self, op_id: &str, saga: Option<String>) -> Result<(), StoreError> {
        self.set_column("operations", op_id, "saga", Val::Text(saga)).await
    }
}
