//! Host enrolment: a join token (single-use unless made with `max_uses`) is exchanged for a host record and a per-host
//! credential, all in one transaction, so a token can never enrol more hosts than it allows.

use crate::audit::{self, AuditEntry, Outcome};
use crate::crud::{get_tx, insert_tx, save_tx};
use crate::error::StoreError;
use crate::resource::Val;
use crate::store::{Store, now_micros};
use chrono::Utc;
use plinth_api::{Host, HostJoinToken};
use plinth_domain::authz::Scope;
use sqlx::Row;

impl Store {
    /// Consumes join token `join_id` (whose stored hash must satisfy `verify`) and creates
    /// `host` with credential hash `credential_hash`. Refuses unknown, used and expired
    /// tokens, writing nothing but an audit record of the refusal.
    pub async fn enroll_host(
        &self,
        join_id: &str,
        verify: impl FnOnce(&str) -> bool + Send,
        mut host: Host,
        credential_hash: &str,
        audit_entry: &AuditEntry,
    ) -> Result<Host, StoreError> {
        let refused =
            |code: &'static str, detail: &str| StoreError::Refused { status: 401, code, detail: detail.into() };
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT secret_hash, expires_at FROM host_join_tokens WHERE id = $1{}",
            self.for_update()
        )))
        .bind(join_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Err(refused("invalid_join_token", "the join token is not valid")) };
        let hash: String = row.try_get("secret_hash")?;
        if !verify(&hash) {
            return Err(refused("invalid_join_token", "the join token is not valid"));
        }
        let mut token: HostJoinToken = get_tx(&mut tx, &Scope::Platform, join_id, "").await?;
        if token.uses >= token.max_uses {
            return Err(refused("join_token_used", "the join token was already used; make a new one"));
        }
        if row.try_get::<i64, _>("expires_at")? <= now_micros() {
            return Err(refused("join_token_expired", "the join token has expired; make a new one"));
        }
        if host.rack_id.is_none() {
            host.rack_id = token.rack_id.clone();
        }
        if let Some(rack) = &host.rack_id {
            let site = sqlx::query("SELECT site_id FROM racks WHERE id = $1")
                .bind(rack.0.clone())
                .fetch_optional(&mut *tx)
                .await?;
            host.site_id = match site {
                Some(r) => Some(plinth_api::SiteId(r.try_get("site_id")?)),
                None => None,
            };
        }
        insert_tx(&mut tx, &host, &[("credential_hash", Val::text(credential_hash))]).await?;
        token.uses += 1;
        token.used_at = Some(Utc::now());
        token.used_by_host_id = Some(host.id.clone());
        save_tx(&mut tx, &mut token, &[]).await?;
        audit::write(
            &mut tx,
            audit_entry,
            Outcome { target: Some(host.id.as_str()), tenant: None, status: 201, error_code: None },
        )
        .await?;
        tx.commit().await?;
        Ok(host)
    }
}
