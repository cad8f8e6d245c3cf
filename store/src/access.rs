//! Who may use the API, and what privileged users did.
//!
//! - **API tokens**: the store keeps a token's SHA-256 digest (hex), its name and its role,
//!   never the token itself; lookups go by digest. Roles are plain strings here (the API
//!   gives them meaning); the schema only admits `admin`, `operator`, `planner`, `device`.
//! - **Audit log**: one row per privileged action (token and device management, rule
//!   changes) and per alert acknowledgement or manual clear, with the actor, the action, its
//!   target and a JSON detail.

use sqlx::Row;
use telemetry::EventTime;

use crate::pg::{et, ts};
use crate::{Store, StoreError};

/// A stored API token (without the token).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: EventTime,
    pub revoked_at: Option<EventTime>,
}

/// One privileged action.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRecord {
    pub id: i64,
    pub at: EventTime,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

/// An action to record.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub at: EventTime,
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: serde_json::Value,
}

const PG_TOKEN_COLUMNS: &str = "id, name, role, created_at, revoked_at";
const SQLITE_TOKEN_COLUMNS: &str = "id, name, role, created_at_ms, revoked_at_ms";

fn pg_token(row: &sqlx::postgres::PgRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: et(row.try_get("created_at")?),
        revoked_at: row.try_get::<Option<time::OffsetDateTime>, _>("revoked_at")?.map(et),
    })
}

fn sqlite_token(row: &sqlx::sqlite::SqliteRow) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        created_at: EventTime(row.try_get("created_at_ms")?),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at_ms")?.map(EventTime),
    })
}

impl Store {
    /// Store a new token by its digest.
    pub async fn create_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<TokenRecord, StoreError> {
        match self {
            Store::Postgres(s) => {
                let row = sqlx::query(&format!(
                    "INSERT INTO api_tokens (name, role, digest, created_at) VALUES ($1, $2, $3, $4) RETURNING {PG_TOKEN_COLUMNS}"
                ))
                .bind(name)
                .bind(role)
                .bind(digest)
                .bind(ts(at))
                .fetch_one(&s.pool)
                .await?;
                pg_token(&row)
            }
            Store::Sqlite(s) => {
                let row = sqlx::query(&format!(
                    "INSERT INTO api_tokens (name, role, digest, created_at_ms) VALUES (?, ?, ?, ?) RETURNING {SQLITE_TOKEN_COLUMNS}"
                ))
                .bind(name)
                .bind(role)
                .bind(digest)
                .bind(at.millis())
                .fetch_one(&s.pool)
                .await?;
                sqlite_token(&row)
            }
        }
    }

    /// Make sure a token with this digest exists (a bootstrap token from the
    /// configuration); an existing one, even revoked, is left as it is.
    pub async fn ensure_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => {
                sqlx::query("INSERT INTO api_tokens (name, role, digest, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING")
                    .bind(name)
                    .bind(role)
                    .bind(digest)
                    .bind(ts(at))
                    .execute(&s.pool)
                    .await?;
            }
            Store::Sqlite(s) => {
                sqlx::query("INSERT INTO api_tokens (name, role, digest, created_at_ms) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
                    .bind(name)
                    .bind(role)
                    .bind(digest)
                    .bind(at.millis())
                    .execute(&s.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Make `digest` the one live token called `name`: store it as [`Store::ensure_token`]
    /// does, then revoke every other live token of that name (a rotated bootstrap token).
    /// Returns how many were revoked.
    pub async fn ensure_sole_token(
        &self,
        name: &str,
        role: &str,
        digest: &str,
        at: EventTime,
    ) -> Result<u64, StoreError> {
        self.ensure_token(name, role, digest, at).await?;
        let revoked = match self {
            Store::Postgres(s) => sqlx::query(
                "UPDATE api_tokens SET revoked_at = $3 WHERE name = $1 AND digest <> $2 AND revoked_at IS NULL",
            )
            .bind(name)
            .bind(digest)
            .bind(ts(at))
            .execute(&s.pool)
            .await?
            .rows_affected(),
            Store::Sqlite(s) => sqlx::query(
                "UPDATE api_tokens SET revoked_at_ms = ? WHERE name = ? AND digest <> ? AND revoked_at_ms IS NULL",
            )
            .bind(at.millis())
            .bind(name)
            .bind(digest)
            .execute(&s.pool)
            .await?
            .rows_affected(),
        };
        Ok(revoked)
    }

    /// The live (not revoked) token with this digest.
    pub async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self {
            Store::Postgres(s) => sqlx::query(&format!("SELECT {PG_TOKEN_COLUMNS} FROM api_tokens WHERE digest = $1 AND revoked_at IS NULL"))
                .bind(digest)
                .fetch_optional(&s.pool)
                .await?
                .map(|r| pg_token(&r))
                .transpose(),
            Store::Sqlite(s) => {
                sqlx::query(&format!("SELECT {SQLITE_TOKEN_COLUMNS} FROM api_tokens WHERE digest = ? AND revoked_at_ms IS NULL"))
                    .bind(digest)
                    .fetch_optional(&s.pool)
                    .await?
                    .map(|r| sqlite_token(&r))
                    .transpose()
            }
        }
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        match self {
            Store::Postgres(s) => {
                sqlx::query(&format!("SELECT {PG_TOKEN_COLUMNS} FROM api_tokens ORDER BY id DESC"))
                    .fetch_all(&s.pool)
                    .await?
                    .iter()
                    .map(pg_token)
                    .collect()
            }
            Store::Sqlite(s) => sqlx::query(&format!(
                "SELECT {SQLITE_TOKEN_COLUMNS} FROM api_tokens ORDER BY id DESC"
            ))
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(sqlite_token)
            .collect(),
        }
    }

    /// Revoke a token; `None` when no such token exists. Revoking twice keeps the first time.
    pub async fn revoke_token(
        &self,
        id: i64,
        at: EventTime,
    ) -> Result<Option<TokenRecord>, StoreError> {
        match self {
            Store::Postgres(s) => sqlx::query(&format!(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1 RETURNING {PG_TOKEN_COLUMNS}"
            ))
            .bind(id)
            .bind(ts(at))
            .fetch_optional(&s.pool)
            .await?
            .map(|r| pg_token(&r))
            .transpose(),
            Store::Sqlite(s) => sqlx::query(&format!(
                "UPDATE api_tokens SET revoked_at_ms = coalesce(revoked_at_ms, ?2) WHERE id = ?1 RETURNING {SQLITE_TOKEN_COLUMNS}"
            ))
            .bind(id)
            .bind(at.millis())
            .fetch_optional(&s.pool)
            .await?
            .map(|r| sqlite_token(&r))
            .transpose(),
        }
    }

    /// Record a privileged action.
    pub async fn audit(&self, e: &AuditEntry<'_>) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => {
                sqlx::query("INSERT INTO audit_log (at, actor, role, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6::jsonb)")
                    .bind(ts(e.at))
                    .bind(e.actor)
                    .bind(e.role)
                    .bind(e.action)
                    .bind(e.target)
                    .bind(e.detail.to_string())
                    .execute(&s.pool)
                    .await?;
            }
            Store::Sqlite(s) => {
                sqlx::query("INSERT INTO audit_log (at_ms, actor, role, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(e.at.millis())
                    .bind(e.actor)
                    .bind(e.role)
                    .bind(e.action)
                    .bind(e.target)
                    .bind(e.detail.to_string())
                    .execute(&s.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// The audit log, newest first, `limit` rows older than the entry `before_id`.
    pub async fn audit_log(
        &self,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let before = before_id.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Store::Postgres(s) => {
                let rows = sqlx::query(
                    "SELECT id, at, actor, role, action, target, detail::text AS detail FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&s.pool)
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
            Store::Sqlite(s) => {
                let rows = sqlx::query(
                    "SELECT id, at_ms, actor, role, action, target, detail FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&s.pool)
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
    }
}

fn json_column(text: String) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&text)
        .map_err(|_| StoreError::Corrupt { what: "audit detail", value: text })
}
