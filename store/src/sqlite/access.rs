//! API tokens and the audit log on SQLite (see [`crate::access`]).

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use telemetry::EventTime;

use super::SqliteStore;
use crate::access::{json_column, AuditEntry, AuditRecord, TokenRecord};
use crate::StoreError;

const TOKEN_COLUMNS: &str = "id, name, role, created_at_ms, revoked_at_ms";

fn token(row: &SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: EventTime(row.try_get("created_at_ms")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at_ms")?.map(EventTime),
    })
}

impl SqliteStore {
    pub(crate) async fn create_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<TokenRecord, StoreError> {
        let row = sqlx::query(&format!(
            "INSERT INTO api_tokens (name, role, digest, created_at_ms) VALUES (?, ?, ?, ?) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(name)
        .bind(role)
        .bind(digest)
        .bind(at.millis())
        .fetch_one(&self.writer)
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
        sqlx::query("INSERT INTO api_tokens (name, role, digest, created_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
            .bind(name)
            .bind(role)
            .bind(digest)
            .bind(at.millis())
            .execute(&self.writer)
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
            "UPDATE api_tokens SET revoked_at_ms = ? WHERE name = ? AND digest <> ? AND revoked_at_ms IS NULL",
        )
        .bind(at.millis())
        .bind(name)
        .bind(digest)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub(crate) async fn token_by_digest(
        &self,
        digest: &str,
    ) -> Result<Option<TokenRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE digest = ? AND revoked_at_ms IS NULL"
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
            "UPDATE api_tokens SET revoked_at_ms = coalesce(revoked_at_ms, ?2) WHERE id = ?1 RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id)
        .bind(at.millis())
        .fetch_optional(&self.writer)
        .await?
        .map(|r| token(&r))
        .transpose()
    }

    pub(crate) async fn audit(&self, e: &AuditEntry<'_>) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_log (at_ms, actor, role, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(e.at.millis())
            .bind(e.actor)
            .bind(e.role)
            .bind(e.action)
            .bind(e.target)
            .bind(e.detail.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub(crate) async fn audit_log(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, actor, role, action, target, detail FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: r.try_get("id")?,
                    at: EventTime(r.try_get("at_ms")?),
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
