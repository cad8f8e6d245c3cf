//! The stream's exported state: whole documents in `stream_state`, or in parts in
//! `stream_state_parts` (one row per part, so a checkpoint rewrites only the parts that
//! changed; [`StateSave`] writes a checkpoint's parts in one transaction, so a reader sees
//! all of them or none). The SQL is each backend's (`pg/stream_state.rs`,
//! `sqlite/stream_state.rs`).

use crate::{Store, StoreError};

/// A checkpoint of the stream's state being saved in parts under one key: the parts
/// written through it become visible together at [`StateSave::commit`]; dropped before,
/// none do. Opened by [`crate::Store::begin_state_save`].
pub enum StateSave {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl StateSave {
    /// Insert or replace `parts` (name, JSON text) under `key`.
    pub async fn put(&mut self, key: &str, parts: &[(String, String)]) -> Result<(), StoreError> {
        match self {
            Self::Postgres(tx) => crate::pg::stream_state::put_state_parts(tx, key, parts).await,
            Self::Sqlite(tx) => crate::sqlite::stream_state::put_state_parts(tx, key, parts).await,
        }
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(tx) => tx.commit().await?,
            Self::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

impl Store {
    /// Keep (replace) the stream's exported state under `key`.
    pub async fn save_stream_state(
        &self,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.save_stream_state(key, value).await)
    }

    pub async fn load_stream_state(
        &self,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        dispatch!(self, s => s.load_stream_state(key).await)
    }

    /// Begin saving a checkpoint in parts under `key` (see [`StateSave`]). `replace` first
    /// deletes every part saved under `key`, and a whole document saved there by
    /// [`Store::save_stream_state`].
    pub async fn begin_state_save(
        &self,
        key: &str,
        replace: bool,
    ) -> Result<StateSave, StoreError> {
        dispatch!(self, s => s.begin_state_save(key, replace).await)
    }

    /// Hand every part saved under `key` to `each` (name, JSON text), one row at a time;
    /// returns how many there were.
    pub async fn load_state_parts(
        &self,
        key: &str,
        each: impl FnMut(String, String) -> Result<(), StoreError> + Send,
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.load_state_parts(key, each).await)
    }
}
