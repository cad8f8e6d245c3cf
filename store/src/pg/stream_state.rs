//! The stream's exported state on PostgreSQL (see [`crate::stream_state`]): whole
//! documents in `stream_state`, parts in `stream_state_parts`, both `jsonb`.

use super::PgStore;
use crate::{StateSave, StoreError};

impl PgStore {
    pub async fn save_stream_state(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stream_state (key, value, updated_at) VALUES ($1, $2::jsonb, now())
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn begin_state_save(
        &self,
        key: &str,
        replace: bool,
    ) -> Result<StateSave, StoreError> {
        let mut tx = self.pool.begin().await?;
        if replace {
            sqlx::query("DELETE FROM stream_state_parts WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM stream_state WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        Ok(StateSave::Postgres(tx))
    }

    pub async fn load_state_parts(
        &self,
        key: &str,
        mut each: impl FnMut(String, String) -> Result<(), StoreError> + Send,
    ) -> Result<usize, StoreError> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query_as::<_, (String, String)>(
            "SELECT part, value::text FROM stream_state_parts WHERE key = $1",
        )
        .bind(key)
        .fetch(&self.pool);
        let mut n = 0;
        while let Some((part, value)) = rows.try_next().await? {
            each(part, value)?;
            n += 1;
        }
        Ok(n)
    }

    pub async fn load_stream_state(
        &self,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT value::text FROM stream_state WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|_| StoreError::Corrupt {
                what: "stream state",
                value: t.chars().take(80).collect(),
            })
        })
        .transpose()
    }
}

/// Insert or replace `parts` (name, JSON text) under `key` in the checkpoint's transaction.
pub(crate) async fn put_state_parts(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    key: &str,
    parts: &[(String, String)],
) -> Result<(), StoreError> {
    let (names, values): (Vec<&str>, Vec<&str>) =
        parts.iter().map(|(n, v)| (n.as_str(), v.as_str())).unzip();
    sqlx::query(
        "INSERT INTO stream_state_parts (key, part, value)
         SELECT $1, u.part, u.value::jsonb FROM UNNEST($2::text[], $3::text[]) AS u(part, value)
         ON CONFLICT (key, part) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(names)
    .bind(values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
