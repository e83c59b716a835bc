//! Billing rows that are not plain resources: tenants' billing settings, invoice numbers,
//! and the checks that keep a finalized invoice immutable.

use crate::error::StoreError;
use crate::store::{Store, now_micros};
use crate::tx::Tx;
use plinth_api::BillingAccount;
use sqlx::Row;

impl Store {
    /// A tenant's billing settings, if set.
    pub async fn billing_account(&self, tenant_id: &str) -> Result<Option<BillingAccount>, StoreError> {
        let row = sqlx::query("SELECT doc FROM billing_accounts WHERE tenant_id = $1")
            .bind(tenant_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        match row {
            Some(r) => {
                let doc: String = r.try_get("doc")?;
                Ok(Some(
                    serde_json::from_str(&doc)
                        .map_err(|source| StoreError::Corrupt { table: "billing_accounts", source })?,
                ))
            }
            None => Ok(None),
        }
    }

    /// Sets a tenant's billing settings.
    pub async fn put_billing_account(&self, acct: &BillingAccount) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM billing_accounts WHERE tenant_id = $1")
            .bind(acct.tenant_id.to_string())
            .execute(tx.conn().await?)
            .await?;
        sqlx::query("INSERT INTO billing_accounts (tenant_id, doc, updated_at) VALUES ($1, $2, $3)")
            .bind(acct.tenant_id.to_string())
            .bind(serde_json::to_string(acct).unwrap_or_default())
            .bind(now_micros())
            .execute(tx.conn().await?)
            .await
            .map_err(|e| StoreError::from_write("billing account", e))?;
        tx.commit().await
    }
}

impl Tx {
    /// The next invoice number (1, 2, …), gap-free among committed transactions.
    pub async fn next_invoice_number(&mut self) -> Result<i64, StoreError> {
        let row = sqlx::query("UPDATE invoice_numbers SET next = next + 1 WHERE id = 1 RETURNING next")
            .fetch_one(self.conn().await?)
            .await?;
        Ok(row.try_get::<i64, _>("next")? - 1)
    }
}

fn decode_invoice(doc: &str) -> Result<plinth_api::Invoice, StoreError> {
    serde_json::from_str(doc).map_err(|source| StoreError::Corrupt { table: "invoices", source })
}

impl Store {
    /// Every invoice (not credit notes) of a period, any status, oldest first.
    pub async fn invoices_of_period(
        &self,
        tenant_id: Option<&str>,
        period_start: i64,
    ) -> Result<Vec<plinth_api::Invoice>, StoreError> {
        let rows = match tenant_id {
            Some(t) => sqlx::query(
                "SELECT doc FROM invoices WHERE tenant_id = $1 AND period_start = $2 AND kind = 'invoice' ORDER BY id",
            )
            .bind(t.to_string())
            .bind(period_start)
            .fetch_all(&self.read)
            .await?,
            None => {
                sqlx::query("SELECT doc FROM invoices WHERE period_start = $1 AND kind = 'invoice' ORDER BY id")
                    .bind(period_start)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        rows.iter().map(|r| decode_invoice(&r.try_get::<String, _>("doc")?)).collect()
    }
}

impl Tx {
    /// The live (draft or finalized) invoice of a tenant's period, locked.
    pub async fn live_invoice(
        &mut self,
        tenant_id: &str,
        period_start: i64,
    ) -> Result<Option<plinth_api::Invoice>, StoreError> {
        let lock = self.lock();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT doc FROM invoices WHERE tenant_id = $1 AND period_start = $2 AND kind = 'invoice' \
             AND status <> 'void'{lock}"
        )))
        .bind(tenant_id.to_string())
        .bind(period_start)
        .fetch_optional(self.conn().await?)
        .await?;
        match row {
            Some(r) => Ok(Some(decode_invoice(&r.try_get::<String, _>("doc")?)?)),
            None => Ok(None),
        }
    }

    /// Writes an invoice back, refusing (`409 invoice_finalized`) unless the stored row is
    /// still a draft — or a finalized one being voided. A finalized invoice never changes
    /// otherwise, whoever calls.
    pub async fn save_invoice(&mut self, inv: &mut plinth_api::Invoice) -> Result<(), StoreError> {
        let lock = self.lock();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT status, doc FROM invoices WHERE id = $1{lock}")))
            .bind(inv.id.to_string())
            .fetch_optional(self.conn().await?)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound { kind: "invoice", id: inv.id.to_string() });
        };
        let stored: String = row.try_get("status")?;
        let voiding = stored == "finalized" && inv.status == plinth_api::InvoiceStatus::Void && {
            // Voiding changes the status and its stamps, never what was billed.
            let old = decode_invoice(&row.try_get::<String, _>("doc")?)?;
            old.lines == inv.lines && old.total_micros == inv.total_micros && old.number == inv.number
        };
        if stored != "draft" && !voiding {
            return Err(StoreError::Refused {
                status: 409,
                code: "invoice_finalized",
                detail: format!("invoice {} is {stored}: it can no longer change (issue a credit note)", inv.id),
            });
        }
        self.save(inv).await
    }
}
