//! Reading the dead letters back: the newest, pages by id (newest first) and counts by
//! reason. A dead letter is written by the batch writer in its batch's transaction.

use telemetry::EventTime;

use crate::{DeadLetter, Store, StoreError};

/// Bytes of a payload shown in listings (the stored copy is already truncated).
const PREVIEW_BYTES: usize = 512;

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetterEntry {
    pub id: i64,
    pub received_at: EventTime,
    pub topic: String,
    pub device: Option<String>,
    pub reason: String,
    pub detail: String,
    pub payload_size: i64,
    /// The start of the payload as text (invalid UTF-8 replaced).
    pub payload_preview: String,
}

/// The start of a stored payload as text, as listings show it.
pub(crate) fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW_BYTES)]).into_owned()
}

/// Dead letters as stored by the batch writer (see [`crate::DeadLetter`]). The SQL is each
/// backend's (`pg/dead_letter_log.rs`, `sqlite/dead_letter_log.rs`).
impl Store {
    /// Newest dead letters first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        dispatch!(self, s => s.dead_letters(limit).await)
    }

    /// Dead letters newest first: `limit` of them older than `before_id`, of one reason if given.
    pub async fn dead_letter_page(
        &self,
        reason: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, StoreError> {
        let before = before_id.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.dead_letter_page(reason, before, limit).await)
    }

    /// (reason, count) of the dead letters received since `since` (all when `None`), most
    /// frequent first.
    pub async fn dead_letter_reasons(
        &self,
        since: Option<EventTime>,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let since = since.unwrap_or(EventTime(0));
        dispatch!(self, s => s.dead_letter_reasons(since).await)
    }
}
