//! API tokens and the audit log on PostgreSQL (see [`crate::access`]).

use sqlx::postgres::PgRow;
use sqlx::Row;
use telemetry::EventTime;

use super::{et, ts, PgStore};
use crate::access::{json_column, AuditEntry, AuditRecord, TokenRecord};
use crate::StoreError;

const TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at";

fn token(row: &PgRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: et(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<time::OffsetDateTime>, _>("revoked_at")?.map(et),
    })
}

impl PgStore {
    pub(crate) async fn create_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, role, digest, created_at) VALUES ($1, $2, $3, $4) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(role)
        .bind(digest)
        .bind(ts(at))
        .fetch_one(&self.pool)
        .await?;
        token(&row)
    }

    pub(crate) async fn ensure_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_tokens (name, role, digest, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING")
            .bind(name)
            .bind(role)
            .bind(digest)
            .bind(ts(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revoke the live tokens called `name` other than `digest`; how many.
    pub(crate) async fn revoke_other_tokens(
        &self,
        name: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE api_tokens SET revoked_at = $3 WHERE name = $1 AND digest <> $2 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(digest)
        .bind(ts(at))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(crate) async fn token_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL"
        ))
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| token(&r))
        .transpose()
    }

    pub(crate) async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY id DESC"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token)
            .collect()
    }

    pub(crate) async fn revoke_token(
        &self,
        id: i64,
        at: EventTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(&format!(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id)
        .bind(ts(at))
        .fetch_optional(&self.pool)
        .await?
        .map(|r| token(&r))
        .transpose()
    }

    pub(crate) async fn audit(&self, e: &AuditEntry<'_>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (at, actor, role, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6::jsonb)")
            .bind(ts(e.at))
            .bind(e.actor)
            .bind(e.role)
            .bind(e.action)
            .bind(e.target)
            .bind(e.detail.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn audit_log(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, role, action, target, detail::text AS detail FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: et(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    role: r.try_get("role")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: json_column(r.try_get("detail")?)?,
                })
            })
            .collect()
    }
}
