//! The audit log: one append-only record per mutating request. Successful changes write
//! their record in the same transaction as the change; refusals are recorded on their own.

use crate::error::StoreError;
use crate::resource::Val;
use crate::sql::Sql;
use crate::store::{Store, now_micros};
use chrono::{TimeZone, Utc};
use plinth_api::{AuditFilter, AuditId, AuditRecord, Page, TenantId, TokenId, UserId};
use sqlx::{AnyConnection, Row};

/// Who is acting and as part of which request: passed to every mutating store call.
#[derive(Clone, Debug, Default)]
pub struct AuditEntry {
    pub actor_user_id: Option<String>,
    pub actor_token_id: Option<String>,
    /// e.g. `projects.create`.
    pub action: String,
    pub request_id: String,
}

/// The outcome part of a record.
pub(crate) struct Outcome<'a> {
    pub target: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub status: u16,
    pub error_code: Option<&'a str>,
}

/// Appends the `INSERT` of one audit record to `sql`'s values and returns its text, so it
/// can run on its own or in one batch with the change it records.
pub(crate) fn insert_sql(sql: &mut Sql, e: &AuditEntry, o: Outcome<'_>) -> String {
    let vals = [
        Val::text(AuditId::generate().0),
        Val::Int(Some(now_micros())),
        Val::opt_text(e.actor_user_id.as_deref()),
        Val::opt_text(e.actor_token_id.as_deref()),
        Val::text(e.action.as_str()),
        Val::opt_text(o.target),
        Val::opt_text(o.tenant),
        Val::Int(Some(o.status as i64)),
        Val::text(if o.status < 400 { "success" } else { "failure" }),
        Val::opt_text(o.error_code),
        Val::text(e.request_id.as_str()),
    ];
    let params: Vec<String> = vals.into_iter().map(|v| sql.arg(v)).collect();
    format!(
        "INSERT INTO audit_log (id, time, actor_user_id, actor_token_id, action, target, tenant_id, status, result, error_code, request_id) \
         VALUES ({})",
        params.join(", ")
    )
}

pub(crate) async fn write(tx: &mut AnyConnection, e: &AuditEntry, o: Outcome<'_>) -> Result<(), StoreError> {
    let mut sql = Sql::new("");
    sql.text = insert_sql(&mut sql, e, o);
    sql.query().execute(&mut *tx).await?;
    Ok(())
}

impl Store {
    /// Records a request that changed nothing (a refusal or failure).
    pub async fn record_audit(
        &self,
        entry: &AuditEntry,
        target: Option<&str>,
        tenant: Option<&str>,
        status: u16,
        error_code: Option<&str>,
    ) -> Result<(), StoreError> {
        // One statement: atomic on its own, no transaction around it needed.
        write(&mut *self.write.conn().await?, entry, Outcome { target, tenant, status, error_code }).await
    }

    /// Lists audit records, newest last. `tenant` None lists every tenant's (operators).
    pub async fn list_audit(
        &self,
        tenant: Option<&TenantId>,
        filter: &AuditFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<AuditRecord>, StoreError> {
        let mut sql = Sql::new(
            "SELECT id, time, actor_user_id, actor_token_id, action, target, tenant_id, status, result, error_code, request_id FROM audit_log WHERE 1=1",
        );
        if let Some(t) = tenant {
            sql.cond("tenant_id =", Val::text(t.as_str()));
        }
        for (col, v) in [("actor_user_id =", &filter.actor), ("target =", &filter.target), ("action =", &filter.action)]
        {
            if let Some(v) = v {
                sql.cond(col, Val::text(v));
            }
        }
        if let Some(c) = cursor {
            sql.cond("id >", Val::text(c));
        }
        if let Some(s) = filter.since {
            sql.cond("time >=", Val::Int(Some(s.timestamp_micros())));
        }
        if let Some(u) = filter.until {
            sql.cond("time <", Val::Int(Some(u.timestamp_micros())));
        }
        let p = sql.arg(Val::Int(Some(limit as i64 + 1)));
        sql.push(&format!(" ORDER BY id LIMIT {p}"));
        let q = sql.query();
        let rows = q.fetch_all(&self.read).await?;
        let mut items = Vec::with_capacity(rows.len());
        for r in rows.iter().take(limit as usize) {
            let time: i64 = r.try_get("time")?;
            let status: i64 = r.try_get("status")?;
            items.push(AuditRecord {
                id: AuditId(r.try_get("id")?),
                time: Utc.timestamp_micros(time).single().unwrap_or_default(),
                actor_user_id: r.try_get::<Option<String>, _>("actor_user_id")?.map(UserId),
                actor_token_id: r.try_get::<Option<String>, _>("actor_token_id")?.map(TokenId),
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                tenant_id: r.try_get::<Option<String>, _>("tenant_id")?.map(TenantId),
                status: status as u16,
                result: r.try_get("result")?,
                error_code: r.try_get("error_code")?,
                request_id: r.try_get("request_id")?,
            });
        }
        let next_cursor = (rows.len() > limit as usize).then(|| items.last().map(|i| i.id.0.clone())).flatten();
        Ok(Page { items, next_cursor })
    }
}
