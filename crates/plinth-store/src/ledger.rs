//! The usage ledger: reading a resource's open intervals and applying a
//! [`LedgerPlan`](plinth_domain::metering::LedgerPlan) inside the caller's transaction (so
//! usage moves with the transition that causes it), counter samples deduplicated by
//! source and sequence, and the queries rating and the usage API read.
//!
//! Records are never updated except to close an open interval (`end_at IS NULL` in the
//! `WHERE`, so a record is closed at most once); a unique index allows one open interval
//! per resource and meter.

use crate::crud::scope_cols;
use crate::error::StoreError;
use crate::resource::Val;
use crate::sql::{Sql, packed, unpack};
use crate::store::{Store, now_micros};
use crate::tx::Tx;
use plinth_api::{Meter, Page, ProjectId, TenantId, UsageRecord, UsageRecordId};
use plinth_domain::authz::Scope;
use plinth_domain::metering::{LedgerPlan, NewInterval, OpenInterval, at_micros};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

/// Whose usage a plan writes.
#[derive(Clone, Copy, Debug)]
pub struct LedgerOwner<'a> {
    pub tenant_id: &'a str,
    pub project_id: &'a str,
    pub resource_id: &'a str,
    pub resource_kind: &'a str,
}

/// One counter sample as the ledger takes it.
#[derive(Clone, Copy, Debug)]
pub struct CounterReading<'a> {
    /// Unique per counter; with `seq`, the deduplication key.
    pub source: &'a str,
    pub seq: i64,
    pub meter: Meter,
    pub dimension: &'a str,
    /// The counter's running total.
    pub value: i64,
    /// Sample time and its period's start (microseconds).
    pub at: i64,
    pub period_start: i64,
}

/// Filters of a usage listing.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub resource_id: Option<String>,
    pub meter: Option<Meter>,
    /// Records overlapping [from, to) (microseconds); open intervals overlap any later time.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

const COLS: &str = "id, tenant_id, project_id, resource_id, resource_kind, meter, dimension, start_at, end_at, \
                    multiplier, quantity, first_start, period_start, attributes, cause, created_at";

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt { table: "usage_records", source: e }
}

fn decode(r: &AnyRow) -> Result<UsageRecord, StoreError> {
    let meter: String = r.try_get("meter")?;
    let meter =
        Meter::parse(&meter).ok_or_else(|| corrupt(serde::de::Error::custom(format!("unknown meter {meter}"))))?;
    let attrs: String = r.try_get("attributes")?;
    let end: Option<i64> = r.try_get("end_at")?;
    Ok(UsageRecord {
        id: UsageRecordId(r.try_get("id")?),
        tenant_id: TenantId(r.try_get("tenant_id")?),
        project_id: ProjectId(r.try_get("project_id")?),
        resource_id: r.try_get("resource_id")?,
        resource_kind: r.try_get("resource_kind")?,
        meter,
        dimension: r.try_get("dimension")?,
        unit: meter.unit().to_string(),
        start_at: at_micros(r.try_get("start_at")?),
        end_at: end.map(at_micros),
        multiplier: r.try_get("multiplier")?,
        quantity_micros: r.try_get("quantity")?,
        first: r.try_get::<i64, _>("first_start")? != 0,
        period_start: at_micros(r.try_get("period_start")?),
        attributes: serde_json::from_str(&attrs).map_err(corrupt)?,
        cause: r.try_get("cause")?,
        created_at: at_micros(r.try_get("created_at")?),
    })
}

/// The row values of one record, in `COLS` order.
fn row_vals(r: &UsageRecord, dedup: Option<String>) -> Vec<Val> {
    use plinth_domain::metering::micros;
    vec![
        Val::text(r.id.as_str()),
        Val::text(r.tenant_id.as_str()),
        Val::text(r.project_id.as_str()),
        Val::text(&r.resource_id),
        Val::text(&r.resource_kind),
        Val::text(r.meter.as_str()),
        Val::text(&r.dimension),
        Val::Int(Some(micros(r.start_at))),
        Val::Int(r.end_at.map(micros)),
        Val::Int(Some(r.multiplier)),
        Val::Int(r.quantity_micros),
        Val::Int(Some(i64::from(r.first))),
        Val::Int(Some(micros(r.period_start))),
        Val::text(serde_json::to_string(&r.attributes).unwrap_or_else(|_| "{}".into())),
        Val::text(&r.cause),
        Val::Int(Some(micros(r.created_at))),
        Val::Text(dedup),
    ]
}

/// One multi-row INSERT of `rows` (each with its dedup key).
fn insert_sql(rows: &[(UsageRecord, Option<String>)]) -> Sql {
    let mut sql = Sql::new(format!("INSERT INTO usage_records ({COLS}, dedup_key) VALUES "));
    let mut tuples = Vec::with_capacity(rows.len());
    for (r, dedup) in rows {
        let ps: Vec<String> = row_vals(r, dedup.clone()).into_iter().map(|v| sql.arg(v)).collect();
        tuples.push(format!("({})", ps.join(", ")));
    }
    sql.push(&tuples.join(", "));
    sql
}

/// A record from a plan's new interval.
pub fn record_of(owner: &LedgerOwner, n: &NewInterval, cause: &str) -> UsageRecord {
    UsageRecord {
        id: UsageRecordId::generate(),
        tenant_id: TenantId(owner.tenant_id.to_string()),
        project_id: ProjectId(owner.project_id.to_string()),
        resource_id: owner.resource_id.to_string(),
        resource_kind: owner.resource_kind.to_string(),
        meter: n.meter,
        dimension: n.dimension.clone(),
        unit: n.meter.unit().to_string(),
        start_at: at_micros(n.start_at),
        end_at: n.end_at.map(at_micros),
        multiplier: n.multiplier,
        quantity_micros: n.quantity(),
        first: n.first,
        period_start: at_micros(n.period_start),
        attributes: n.attributes.clone(),
        cause: cause.to_string(),
        created_at: at_micros(now_micros()),
    }
}

impl Tx {
    /// A resource's open intervals, locked until commit.
    pub async fn open_intervals(&mut self, resource_id: &str) -> Result<Vec<OpenInterval>, StoreError> {
        let lock = self.lock();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, meter, dimension, multiplier, attributes, start_at, period_start, first_start \
             FROM usage_records WHERE resource_id = $1 AND end_at IS NULL ORDER BY id{lock}"
        )))
        .bind(resource_id.to_string())
        .fetch_all(self.conn().await?)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let meter: String = r.try_get("meter")?;
            let attrs: String = r.try_get("attributes")?;
            out.push(OpenInterval {
                id: r.try_get("id")?,
                meter: Meter::parse(&meter)
                    .ok_or_else(|| corrupt(serde::de::Error::custom(format!("unknown meter {meter}"))))?,
                dimension: r.try_get("dimension")?,
                multiplier: r.try_get("multiplier")?,
                attributes: serde_json::from_str::<BTreeMap<String, String>>(&attrs).map_err(corrupt)?,
                start_at: r.try_get("start_at")?,
                period_start: r.try_get("period_start")?,
                first: r.try_get::<i64, _>("first_start")? != 0,
            });
        }
        Ok(out)
    }

    /// Writes a plan: closes intervals (each at most once) and inserts the new records.
    pub async fn apply_ledger(
        &mut self,
        owner: &LedgerOwner<'_>,
        plan: &LedgerPlan,
        cause: &str,
    ) -> Result<(), StoreError> {
        for (id, end, quantity) in &plan.close {
            let done =
                sqlx::query("UPDATE usage_records SET end_at = $1, quantity = $2 WHERE id = $3 AND end_at IS NULL")
                    .bind(*end)
                    .bind(*quantity)
                    .bind(id.clone())
                    .execute(self.conn().await?)
                    .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Refused {
                    status: 409,
                    code: "ledger_conflict",
                    detail: format!("usage record {id} was closed by another writer"),
                });
            }
        }
        if !plan.insert.is_empty() {
            let rows: Vec<(UsageRecord, Option<String>)> =
                plan.insert.iter().map(|n| (record_of(owner, n, cause), None)).collect();
            self.write_later(insert_sql(&rows), "usage_records", "usage record").await?;
            for (r, _) in &rows {
                self.wrote.ledger(r.meter, 1);
            }
        }
        Ok(())
    }

    /// Records one counter sample: the delta since the source's last value (the whole
    /// value after a reset). False when this source and sequence number were seen before
    /// (or are older than the last one): nothing is written.
    pub async fn record_counter(
        &mut self,
        owner: &LedgerOwner<'_>,
        c: &CounterReading<'_>,
    ) -> Result<bool, StoreError> {
        let lock = self.lock();
        let last = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT last_seq, last_value FROM counter_sources WHERE source = $1{lock}"
        )))
        .bind(c.source.to_string())
        .fetch_optional(self.conn().await?)
        .await?;
        let last = match last {
            Some(r) => Some((r.try_get::<i64, _>("last_seq")?, r.try_get::<i64, _>("last_value")?)),
            None => None,
        };
        if last.is_some_and(|(s, _)| c.seq <= s) {
            return Ok(false);
        }
        let delta = plinth_domain::metering::counter_delta(last.map(|(_, v)| v), c.value);
        let now = now_micros();
        if last.is_some() {
            sqlx::query("UPDATE counter_sources SET last_seq = $1, last_value = $2, updated_at = $3 WHERE source = $4")
                .bind(c.seq)
                .bind(c.value)
                .bind(now)
                .bind(c.source.to_string())
                .execute(self.conn().await?)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO counter_sources (source, last_seq, last_value, updated_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(c.source.to_string())
            .bind(c.seq)
            .bind(c.value)
            .bind(now)
            .execute(self.conn().await?)
            .await?;
        }
        let rec = UsageRecord {
            id: UsageRecordId::generate(),
            tenant_id: TenantId(owner.tenant_id.to_string()),
            project_id: ProjectId(owner.project_id.to_string()),
            resource_id: owner.resource_id.to_string(),
            resource_kind: owner.resource_kind.to_string(),
            meter: c.meter,
            dimension: c.dimension.to_string(),
            unit: c.meter.unit().to_string(),
            start_at: at_micros(c.at),
            end_at: Some(at_micros(c.at)),
            multiplier: 1,
            quantity_micros: Some(delta.saturating_mul(1_000_000)),
            first: false,
            period_start: at_micros(c.period_start),
            attributes: BTreeMap::new(),
            cause: format!("counter:{}#{}", c.source, c.seq),
            created_at: at_micros(now),
        };
        let key = format!("counter:{}#{}", c.source, c.seq);
        insert_sql(&[(rec, Some(key))]).query().execute(self.conn().await?).await?;
        self.wrote.ledger(c.meter, 1);
        Ok(true)
    }
}

impl Store {
    /// One page of usage records visible in `scope`, in id order.
    pub async fn usage_page(
        &self,
        scope: &Scope,
        f: &UsageFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<UsageRecord>, StoreError> {
        let mut sql = Sql::new(format!("SELECT {COLS} FROM usage_records WHERE 1=1"));
        scope_cols(&mut sql, scope, "tenant_id", Some("project_id"));
        if let Some(t) = &f.tenant_id {
            sql.cond("tenant_id =", Val::text(t));
        }
        if let Some(p) = &f.project_id {
            sql.cond("project_id =", Val::text(p));
        }
        if let Some(r) = &f.resource_id {
            sql.cond("resource_id =", Val::text(r));
        }
        if let Some(m) = f.meter {
            sql.cond("meter =", Val::text(m.as_str()));
        }
        if let Some(to) = f.to {
            sql.cond("start_at <", Val::Int(Some(to)));
        }
        if let Some(from) = f.from {
            let p = sql.arg(Val::Int(Some(from)));
            sql.push(&format!(" AND (end_at IS NULL OR end_at > {p} OR (end_at = start_at AND start_at >= {p}))"));
        }
        if let Some(c) = cursor {
            sql.cond("id >", Val::text(c));
        }
        let p = sql.arg(Val::Int(Some(limit as i64 + 1)));
        sql.push(&format!(" ORDER BY id LIMIT {p}"));
        let rows = sql.query().fetch_all(&self.read).await?;
        let more = rows.len() > limit as usize;
        let items: Vec<UsageRecord> = rows.iter().take(limit as usize).map(decode).collect::<Result<_, _>>()?;
        let next_cursor = if more { items.last().map(|i| i.id.to_string()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Every record of a tenant in the period starting at `period_start` (open ones too).
    pub async fn usage_in_period(&self, tenant_id: &str, period_start: i64) -> Result<Vec<UsageRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM usage_records WHERE tenant_id = $1 AND period_start = $2 ORDER BY id"
        )))
        .bind(tenant_id.to_string())
        .bind(period_start)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// A tenant's records of a period with only what rating and reconciliation read:
    /// `attributes` empty, `cause` blank, `created_at` = `start_at`. The invoice run reads
    /// every record of every tenant, so it skips decoding the rest.
    pub async fn usage_for_rating(&self, tenant_id: &str, period_start: i64) -> Result<Vec<UsageRecord>, StoreError> {
        // One row holding every record (fields split by U+001F, records by U+001E): on
        // SQLite each row is a hand-off between threads, and a tenant has thousands.
        let fields = [
            "id",
            "project_id",
            "resource_id",
            "resource_kind",
            "meter",
            "dimension",
            "CAST(start_at AS TEXT)",
            "COALESCE(CAST(end_at AS TEXT), '')",
            "CAST(multiplier AS TEXT)",
            "COALESCE(CAST(quantity AS TEXT), '')",
            "CAST(first_start AS TEXT)",
        ];
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} AS recs FROM usage_records WHERE tenant_id = $1 AND period_start = $2",
            packed(self.backend, &fields)
        )))
        .bind(tenant_id.to_string())
        .bind(period_start)
        .fetch_one(&self.read)
        .await?;
        let all: Option<String> = row.try_get("recs")?;
        let tenant = TenantId(tenant_id.to_string());
        let period = at_micros(period_start);
        let bad = |what: &str| corrupt(serde::de::Error::custom(format!("usage record field {what}")));
        let int = |s: &str, what: &str| s.parse::<i64>().map_err(|_| bad(what));
        let mut out = Vec::new();
        for f in unpack(all.as_deref()) {
            let [id, project, resource, kind, meter, dimension, start, end, mult, qty, first] = f[..] else {
                return Err(bad("count"));
            };
            let meter = Meter::parse(meter).ok_or_else(|| bad("meter"))?;
            let start = at_micros(int(start, "start_at")?);
            out.push(UsageRecord {
                id: UsageRecordId(id.to_string()),
                tenant_id: tenant.clone(),
                project_id: ProjectId(project.to_string()),
                resource_id: resource.to_string(),
                resource_kind: kind.to_string(),
                meter,
                dimension: dimension.to_string(),
                unit: meter.unit().to_string(),
                start_at: start,
                end_at: if end.is_empty() { None } else { Some(at_micros(int(end, "end_at")?)) },
                multiplier: int(mult, "multiplier")?,
                quantity_micros: if qty.is_empty() { None } else { Some(int(qty, "quantity")?) },
                first: first == "1",
                period_start: period,
                attributes: BTreeMap::new(),
                cause: String::new(),
                created_at: start,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every record of one resource, in start order.
    pub async fn usage_of_resource(&self, resource_id: &str) -> Result<Vec<UsageRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM usage_records WHERE resource_id = $1 ORDER BY start_at, id"
        )))
        .bind(resource_id.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Tenants with any record in the period starting at `period_start`.
    pub async fn tenants_with_usage(&self, period_start: i64) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT DISTINCT tenant_id FROM usage_records WHERE period_start = $1 ORDER BY tenant_id")
                .bind(period_start)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(|r| Ok(r.try_get("tenant_id")?)).collect()
    }

    /// Resources with an interval still open from a period before `period_start`:
    /// (resource id, tenant, project, kind). What the period cut-off splits.
    pub async fn open_before(&self, period_start: i64) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT resource_id, tenant_id, project_id, resource_kind FROM usage_records \
             WHERE end_at IS NULL AND period_start < $1 ORDER BY resource_id",
        )
        .bind(period_start)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("resource_id")?,
                    r.try_get("tenant_id")?,
                    r.try_get("project_id")?,
                    r.try_get("resource_kind")?,
                ))
            })
            .collect()
    }

    /// Appends finished records in bulk (benchmarks and imports), `batch` rows per statement,
    /// one transaction per statement.
    pub async fn insert_usage(&self, records: &[UsageRecord], batch: usize) -> Result<(), StoreError> {
        for chunk in records.chunks(batch.max(1)) {
            let rows: Vec<(UsageRecord, Option<String>)> = chunk.iter().map(|r| (r.clone(), None)).collect();
            let mut tx = self.write.begin().await?;
            insert_sql(&rows).query().execute(&mut *tx).await?;
            tx.commit().await?;
            let mut wrote = crate::tally::Pending::default();
            for r in chunk {
                wrote.ledger(r.meter, 1);
            }
            self.tally.add(&wrote);
        }
        Ok(())
    }
}
