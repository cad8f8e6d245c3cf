//! The stream's exported state on SQLite (see [`crate::stream_state`]): whole documents in
//! `stream_state`, parts in `stream_state_parts`, both JSON text.

use telemetry::EventTime;

use super::SqliteStore;
use crate::{StateSave, StoreError};

impl SqliteStore {
    pub async fn save_stream_state(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO stream_state (key, value, updated_at_ms) VALUES (?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(key)
        .bind(value.to_string())
        .bind(EventTime::now().millis())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn begin_state_save(
        &self,
        key: &str,
        replace: bool,
    ) -> Result<StateSave, StoreError> {
        let mut tx = self.writer.begin().await?;
        if replace {
            sqlx::query("DELETE FROM stream_state_parts WHERE key = ?")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM stream_state WHERE key = ?")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        Ok(StateSave::Sqlite(tx))
    }

    pub async fn load_state_parts(
        &self,
        key: &str,
        mut each: impl FnMut(String, String) -> Result<(), StoreError> + Send,
    ) -> Result<usize, StoreError> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query_as::<_, (String, String)>(
            "SELECT part, value FROM stream_state_parts WHERE key = ?",
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
            sqlx::query_scalar("SELECT value FROM stream_state WHERE key = ?")
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
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    key: &str,
    parts: &[(String, String)],
) -> Result<(), StoreError> {
    for (part, value) in parts {
        sqlx::query(
            "INSERT INTO stream_state_parts (key, part, value) VALUES (?, ?, ?)
             ON CONFLICT (key, part) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(part)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
