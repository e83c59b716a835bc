//! Credentials at rest: API token and host credential lookups (hashes only, never
//! secrets), role grants for a user, and the one-time operator bootstrap.

use crate::audit::{self, AuditEntry, Outcome};
use crate::crud::insert_tx;
use crate::error::StoreError;
use crate::resource::Val;
use crate::store::Store;
use plinth_api::{ApiToken, ProjectId, Role, RoleBinding, TenantId, User};
use plinth_domain::authz::Grant;
use sqlx::Row;

/// What authentication needs of a token.
#[derive(Clone, Debug)]
pub struct TokenRow {
    pub user_id: String,
    pub tenant_id: Option<String>,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn parse_role(s: &str) -> Option<Role> {
    match s {
        "operator" => Some(Role::Operator),
        "tenant-admin" => Some(Role::TenantAdmin),
        "member" => Some(Role::Member),
        "viewer" => Some(Role::Viewer),
        _ => None,
    }
}

impl Store {
    /// The token row and its user's grants, for authenticating a request: one query (the
    /// token LEFT JOINed to its user's role bindings), as it runs on every request.
    pub async fn token_for_auth(&self, token_id: &str) -> Result<Option<(TokenRow, Vec<Grant>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.user_id, t.tenant_id, t.secret_hash, t.expires_at, t.revoked_at, \
             b.role, b.tenant_id AS b_tenant, b.project_id AS b_project \
             FROM api_tokens t LEFT JOIN role_bindings b ON b.user_id = t.user_id WHERE t.id = $1",
        )
        .bind(token_id.to_string())
        .fetch_all(&self.read)
        .await?;
        let Some(r) = rows.first() else { return Ok(None) };
        let token = TokenRow {
            user_id: r.try_get("user_id")?,
            tenant_id: r.try_get("tenant_id")?,
            secret_hash: r.try_get("secret_hash")?,
            expires_at: r.try_get("expires_at")?,
            revoked_at: r.try_get("revoked_at")?,
        };
        let mut grants = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(role) = r.try_get::<Option<String>, _>("role")? else { continue };
            if let Some(role) = parse_role(&role) {
                grants.push(Grant {
                    role,
                    tenant_id: r.try_get::<Option<String>, _>("b_tenant")?.map(TenantId),
                    project_id: r.try_get::<Option<String>, _>("b_project")?.map(ProjectId),
                });
            }
        }
        Ok(Some((token, grants)))
    }

    /// The hex SHA-256 of a host's credential, if it has one.
    pub async fn host_credential_hash(&self, host_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT credential_hash FROM hosts WHERE id = $1")
            .bind(host_id.to_string())
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("credential_hash")?,
            None => None,
        })
    }

    /// Creates the first operator (user, binding, token) unless one was made before.
    /// Returns false when the platform was already bootstrapped; safe to race from several
    /// replicas (the `meta` key decides).
    pub async fn bootstrap_operator(
        &self,
        user: &User,
        binding: &RoleBinding,
        token: &ApiToken,
        secret_hash: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let claimed = sqlx::query("INSERT INTO meta (key, value) VALUES ('bootstrap', $1)")
            .bind(user.id.0.clone())
            .execute(&mut *tx)
            .await;
        match claimed {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        insert_tx(&mut tx, user, &[]).await?;
        insert_tx(&mut tx, binding, &[]).await?;
        insert_tx(&mut tx, token, &[("secret_hash", Val::text(secret_hash))]).await?;
        let entry =
            AuditEntry { action: "platform.bootstrap".into(), request_id: "bootstrap".into(), ..Default::default() };
        audit::write(
            &mut tx,
            &entry,
            Outcome { target: Some(user.id.as_str()), tenant: None, status: 201, error_code: None },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether the platform has its first operator.
    pub async fn is_bootstrapped(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'bootstrap'").fetch_optional(&self.read).await?;
        Ok(row.is_some())
    }
}
