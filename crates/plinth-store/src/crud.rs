//! Generic create/read/list/update/delete over [`Resource`] tables, with the caller's
//! [`Scope`] in every query, the generation check on every update, and the audit record
//! written in the same transaction as the change.

use crate::audit::{self, AuditEntry, Outcome};
use crate::error::StoreError;
use crate::resource::{Resource, Val};
use crate::sql::Sql;
use crate::store::Store;
use crate::writer::Writer;
use chrono::Utc;
use plinth_api::Page;
use plinth_domain::authz::Scope;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

/// Appends the scope's tenant (and project) filter for `T`'s table.
pub(crate) fn scope_filter<T: Resource>(sql: &mut Sql, scope: &Scope) {
    if let Some(tcol) = T::TENANT_COL {
        scope_cols(sql, scope, tcol, T::PROJECT_COL);
    }
}

/// Narrows a query on a tenant-owned table (`tcol`, and `pcol` when project-owned) to `scope`.
pub(crate) fn scope_cols(sql: &mut Sql, scope: &Scope, tcol: &str, pcol: Option<&str>) {
    match scope {
        Scope::Platform => {}
        Scope::Nothing => {
            sql.push(" AND 1=0");
        }
        Scope::Tenant { tenant_id, projects } => {
            sql.cond(&format!("{tcol} ="), Val::text(tenant_id.as_str()));
            if let (Some(list), Some(pcol)) = (projects, pcol) {
                if list.is_empty() {
                    sql.push(" AND 1=0");
                } else {
                    let ps: Vec<String> = list.iter().map(|p| sql.arg(Val::text(p.as_str()))).collect();
                    sql.push(&format!(" AND {pcol} IN ({})", ps.join(", ")));
                }
            }
        }
    }
}

fn decode<T: Resource>(doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { table: T::TABLE, source })
}

fn encode<T: Resource>(item: &T) -> String {
    // Serialising our own wire types cannot fail: they hold no maps with non-string keys.
    serde_json::to_string(item).unwrap_or_default()
}

/// The `INSERT` of a new object (with extra private columns) and its values.
pub(crate) fn insert_sql<T: Resource>(item: &T, extra: &[(&'static str, Val)]) -> Sql {
    let mut cols = vec![
        ("id", Val::text(item.id())),
        ("generation", Val::Int(Some(item.generation()))),
        ("created_at", Val::Int(Some(item.created_at().timestamp_micros()))),
        ("updated_at", Val::Int(Some(item.created_at().timestamp_micros()))),
        ("doc", Val::Text(Some(encode(item)))),
    ];
    cols.extend(item.columns());
    cols.extend(extra.iter().cloned());
    let mut sql = Sql::new("");
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    let params: Vec<String> = cols.into_iter().map(|(_, v)| sql.arg(v)).collect();
    sql.text = format!("INSERT INTO {} ({}) VALUES ({})", T::TABLE, names.join(", "), params.join(", "));
    sql
}

pub(crate) async fn insert_tx<T: Resource>(
    tx: &mut AnyConnection,
    item: &T,
    extra: &[(&'static str, Val)],
) -> Result<(), StoreError> {
    insert_sql(item, extra).query().execute(&mut *tx).await.map_err(|e| StoreError::from_write(T::KIND, e))?;
    Ok(())
}

/// The query for one object by id, visible in `scope`, with `lock` appended.
pub(crate) fn get_sql<T: Resource>(scope: &Scope, id: &str, lock: &str) -> Sql {
    let mut sql = Sql::new(format!("SELECT doc FROM {} WHERE 1=1", T::TABLE));
    sql.cond("id =", Val::text(id));
    scope_filter::<T>(&mut sql, scope);
    sql.push(lock);
    sql
}

/// The object in a row's `doc` column.
pub(crate) fn decode_doc<T: Resource>(row: &AnyRow) -> Result<T, StoreError> {
    decode(&row.try_get::<String, _>("doc")?)
}

pub(crate) async fn get_tx<T: Resource>(
    tx: &mut AnyConnection,
    scope: &Scope,
    id: &str,
    lock: &str,
) -> Result<T, StoreError> {
    match get_sql::<T>(scope, id, lock).query().fetch_optional(&mut *tx).await? {
        Some(r) => decode_doc(&r),
        None => Err(StoreError::NotFound { kind: T::KIND, id: id.to_string() }),
    }
}

/// Writes `item` back with generation+1, checking nobody else moved it.
pub(crate) async fn save_tx<T: Resource>(
    tx: &mut AnyConnection,
    item: &mut T,
    extra: &[(&'static str, Val)],
) -> Result<(), StoreError> {
    let old = item.generation();
    // One instant for the document and the column, so a writer can name the version it
    // wrote (the change feed skips versions already announced).
    let now = Utc::now();
    item.set_meta(old + 1, now);
    let mut sql = Sql::new(format!("UPDATE {} SET ", T::TABLE));
    let mut sets = vec![
        ("generation", Val::Int(Some(old + 1))),
        ("updated_at", Val::Int(Some(now.timestamp_micros()))),
        ("doc", Val::Text(Some(encode(item)))),
    ];
    sets.extend(item.columns());
    sets.extend(extra.iter().cloned());
    let assigns: Vec<String> = sets.into_iter().map(|(n, v)| format!("{n} = {}", sql.arg(v))).collect();
    sql.push(&assigns.join(", "));
    sql.push(" WHERE 1=1");
    sql.cond("id =", Val::text(item.id()));
    sql.cond("generation =", Val::Int(Some(old)));
    let done = sql.query().execute(&mut *tx).await.map_err(|e| StoreError::from_write(T::KIND, e))?;
    if done.rows_affected() != 1 {
        return Err(StoreError::GenerationMismatch {
            kind: T::KIND,
            id: item.id().to_string(),
            expected: old,
            current: -1,
        });
    }
    Ok(())
}

impl Store {
    /// Inserts a new object and its audit record in one transaction.
    pub async fn insert<T: Resource>(&self, item: &T, audit: &AuditEntry) -> Result<(), StoreError> {
        self.insert_with(item, &[], audit).await
    }

    /// Inserts with extra private columns (secret hashes) that are not in the document.
    pub async fn insert_with<T: Resource>(
        &self,
        item: &T,
        extra: &[(&'static str, Val)],
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let tenant = item.tenant();
        let outcome = Outcome { target: Some(item.id()), tenant: tenant.as_deref(), status: 201, error_code: None };
        if let Writer::Sqlite(w) = &self.write {
            // The whole transaction in one batch: one hand-off to the writer's thread
            // instead of one per statement, on the connection every writer waits for.
            let mut sql = insert_sql(item, extra);
            let audit = audit::insert_sql(&mut sql, audit, outcome);
            sql.text = format!("BEGIN IMMEDIATE; {}; {audit}; COMMIT", sql.text);
            let mut g = Writer::lock_sqlite(w).await?;
            g.set_open(true);
            return match sql.query().execute(&mut *g).await {
                Ok(_) => {
                    g.set_open(false);
                    Ok(())
                }
                Err(e) => {
                    g.rollback().await;
                    Err(StoreError::from_write(T::KIND, e))
                }
            };
        }
        let mut tx = self.write.begin().await?;
        insert_tx(&mut tx, item, extra).await?;
        audit::write(&mut tx, audit, outcome).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads one object visible in `scope`.
    pub async fn get<T: Resource>(&self, scope: &Scope, id: &str) -> Result<T, StoreError> {
        let mut sql = Sql::new(format!("SELECT doc FROM {} WHERE 1=1", T::TABLE));
        sql.cond("id =", Val::text(id));
        scope_filter::<T>(&mut sql, scope);
        match sql.query().fetch_optional(&self.read).await? {
            Some(r) => decode(&r.try_get::<String, _>("doc")?),
            None => Err(StoreError::NotFound { kind: T::KIND, id: id.to_string() }),
        }
    }

    /// Like [`Store::get`], with `None` for an object that is not there.
    pub async fn find<T: Resource>(&self, scope: &Scope, id: &str) -> Result<Option<T>, StoreError> {
        match self.get(scope, id).await {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects visible in `scope`, in id order, after `cursor`. `filters` are
    /// (column, value) pairs; a column not in `T::FILTERS` is refused.
    pub async fn list<T: Resource>(
        &self,
        scope: &Scope,
        filters: &[(&str, String)],
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<T>, StoreError> {
        let mut sql = Sql::new(format!("SELECT id, doc FROM {} WHERE 1=1", T::TABLE));
        scope_filter::<T>(&mut sql, scope);
        for (col, v) in filters {
            let Some(col) = T::FILTERS.iter().find(|c| *c == col) else {
                return Err(StoreError::Refused {
                    status: 400,
                    code: "invalid_filter",
                    detail: format!("{} cannot be filtered by {col}", T::KIND),
                });
            };
            if *col == "labels" {
                // `key=value` matches one entry of the `,k=v,` label column.
                let escaped: String = v
                    .chars()
                    .flat_map(|c| if matches!(c, '%' | '_' | '\\') { vec!['\\', c] } else { vec![c] })
                    .collect();
                let p = sql.arg(Val::Text(Some(format!("%,{escaped},%"))));
                sql.push(&format!(" AND labels LIKE {p} ESCAPE '\\'"));
            } else {
                sql.cond(&format!("{col} ="), Val::text(v));
            }
        }
        if let Some(c) = cursor {
            sql.cond("id >", Val::text(c));
        }
        let p = sql.arg(Val::Int(Some(limit as i64 + 1)));
        sql.push(&format!(" ORDER BY id LIMIT {p}"));
        let rows = sql.query().fetch_all(&self.read).await?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        for r in rows.iter().take(limit as usize) {
            items.push(decode::<T>(&r.try_get::<String, _>("doc")?)?);
        }
        let next_cursor = if more { items.last().map(|i| i.id().to_string()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Every object [`Store::list`] would give, all pages (for server-side work over a
    /// whole kind: reports, billing, capacity).
    pub async fn list_all<T: Resource>(&self, scope: &Scope, filters: &[(&str, String)]) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.list::<T>(scope, filters, plinth_api::MAX_LIMIT, cursor.as_deref()).await?;
            out.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Read-modify-write of one object in one transaction. `if_match` refuses the change
    /// unless the object is at that generation; `change` may refuse too. The new generation
    /// is the old one plus one. `change` returns extra private columns to set.
    pub async fn update<T: Resource, F>(
        &self,
        scope: &Scope,
        id: &str,
        if_match: Option<i64>,
        audit: &AuditEntry,
        change: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(&mut T) -> Result<Vec<(&'static str, Val)>, StoreError> + Send,
    {
        let mut tx = self.write.begin().await?;
        let mut item: T = get_tx(&mut tx, scope, id, self.for_update()).await?;
        if let Some(expected) = if_match
            && expected != item.generation()
        {
            return Err(StoreError::GenerationMismatch {
                kind: T::KIND,
                id: id.to_string(),
                expected,
                current: item.generation(),
            });
        }
        let extra = change(&mut item)?;
        save_tx(&mut tx, &mut item, &extra).await?;
        let tenant = item.tenant();
        audit::write(
            &mut tx,
            audit,
            Outcome { target: Some(id), tenant: tenant.as_deref(), status: 200, error_code: None },
        )
        .await?;
        tx.commit().await?;
        Ok(item)
    }

    /// Deletes one object visible in `scope`, refusing while anything refers to it.
    pub async fn delete<T: Resource>(
        &self,
        scope: &Scope,
        id: &str,
        if_match: Option<i64>,
        audit: &AuditEntry,
    ) -> Result<T, StoreError> {
        let mut tx = self.write.begin().await?;
        let item: T = get_tx(&mut tx, scope, id, self.for_update()).await?;
        if let Some(expected) = if_match
            && expected != item.generation()
        {
            return Err(StoreError::GenerationMismatch {
                kind: T::KIND,
                id: id.to_string(),
                expected,
                current: item.generation(),
            });
        }
        for (table, col) in T::DEPENDENTS {
            let mut sql = Sql::new(format!("SELECT 1 AS x FROM {table} WHERE 1=1"));
            sql.cond(&format!("{col} ="), Val::text(id));
            sql.push(" LIMIT 1");
            if sql.query().fetch_optional(&mut *tx).await?.is_some() {
                return Err(StoreError::HasDependents { kind: T::KIND, id: id.to_string(), dependent: table });
            }
        }
        let mut sql = Sql::new(format!("DELETE FROM {} WHERE 1=1", T::TABLE));
        sql.cond("id =", Val::text(id));
        sql.query().execute(&mut *tx).await.map_err(|e| StoreError::from_write(T::KIND, e))?;
        let tenant = item.tenant();
        audit::write(
            &mut tx,
            audit,
            Outcome { target: Some(id), tenant: tenant.as_deref(), status: 204, error_code: None },
        )
        .await?;
        tx.commit().await?;
        Ok(item)
    }
}
