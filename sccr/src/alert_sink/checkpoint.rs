//! Saving the engine's checkpoints (begin with the head and the book, chunks of parts,
//! commit at the end; a failure asks for a full one), and sweeping the shelves that
//! expired in the store at each checkpoint's end.

use std::sync::atomic::Ordering;

use store::{AlertChange, StateSave, StoreError};
use stream::{AlertSinkItem, StatePart};
use telemetry::EventTime;

use super::AlertSink;

impl AlertSink {
    /// Take expired shelves off in the store, at every checkpoint's end: the engine expires
    /// the shelves it knows on its tick; this catches those of alerts it does not hold (its
    /// state lost, or shelved after its last checkpoint before a crash). Returns how many.
    pub(super) async fn sweep_shelves(&mut self, now: EventTime) -> usize {
        let expired = match self.store.expired_shelves(now).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for expired shelves");
                return 0;
            }
        };
        let mut done = 0;
        for id in expired {
            let note = Some("shelf expired");
            match self.store.change_alert(id, &AlertChange::Unshelve, None, note, now).await {
                Ok(record) => {
                    done += 1;
                    self.metrics.overlays.fetch_add(1, Ordering::Relaxed);
                    self.hub.publish_alert(record);
                }
                // Taken off meanwhile (by the engine or an operator), or cleared.
                Err(StoreError::AlertNotShelved(_) | StoreError::AlertTransition { .. }) => {}
                Err(e) => tracing::warn!(id, error = %e, "cannot take an expired shelf off"),
            }
        }
        done
    }

    /// Save a checkpoint item: begin opens the transaction (writing the head and the
    /// book), chunks add parts, end commits. A failure drops the transaction (nothing of
    /// this checkpoint is saved) and asks the stream for a full one next.
    pub(super) async fn checkpoint(&mut self, item: &AlertSinkItem) {
        let result = match item {
            AlertSinkItem::CheckpointBegin(begin) => {
                self.saving = None;
                if self.need_full && !begin.full {
                    self.checkpoint_lost.store(true, Ordering::Release);
                    tracing::warn!("alert engine checkpoint skipped: it builds on a lost one; the next one saves everything");
                    return;
                }
                self.begin_checkpoint(begin).await
            }
            AlertSinkItem::CheckpointParts(chunk) => {
                let Some(mut save) = self.saving.take() else { return };
                let result = self.put_parts(&mut save, &chunk.parts).await;
                self.saving = Some(save);
                result
            }
            AlertSinkItem::CheckpointEnd => {
                let Some(save) = self.saving.take() else { return };
                save.commit().await.map(|()| {
                    self.need_full = false;
                    self.metrics.state_saves.fetch_add(1, Ordering::Relaxed);
                })
            }
            AlertSinkItem::Output(_) | AlertSinkItem::Flags(_) => Ok(()),
        };
        if let Err(e) = result {
            self.checkpoint_failed(&e);
        }
    }

    pub(super) fn checkpoint_failed(&mut self, e: &StoreError) {
        self.saving = None;
        self.need_full = true;
        self.metrics.state_save_errors.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_lost.store(true, Ordering::Release);
        tracing::warn!(error = %e, "alert engine checkpoint not saved; the next one saves everything");
    }

    async fn begin_checkpoint(
        &mut self,
        begin: &stream::EngineCheckpoint,
    ) -> Result<(), StoreError> {
        let json = |what: &'static str, v: Result<String, serde_json::Error>| {
            v.map_err(|e| StoreError::Corrupt { what, value: e.to_string() })
        };
        let mut rows = vec![(
            "head".to_owned(),
            json("alert engine head", serde_json::to_string(&begin.head))?,
        )];
        if let Some(book) = &begin.book {
            rows.push(("book".to_owned(), json("alert engine book", serde_json::to_string(book))?));
        }
        let mut save = self.store.begin_state_save(&self.state_key, begin.full).await?;
        self.write_rows(&mut save, &rows).await?;
        self.saving = Some(save);
        Ok(())
    }

    async fn put_parts(&self, save: &mut StateSave, parts: &[StatePart]) -> Result<(), StoreError> {
        let rows = parts
            .iter()
            .map(|p| {
                serde_json::to_string(p).map(|json| (p.name(), json)).map_err(|e| {
                    StoreError::Corrupt { what: "alert engine state part", value: e.to_string() }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.write_rows(save, &rows).await
    }

    async fn write_rows(
        &self,
        save: &mut StateSave,
        rows: &[(String, String)],
    ) -> Result<(), StoreError> {
        save.put(&self.state_key, rows).await?;
        let bytes: usize = rows.iter().map(|(name, json)| name.len() + json.len()).sum();
        self.metrics.state_parts.fetch_add(rows.len() as u64, Ordering::Relaxed);
        self.metrics.state_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(())
    }
}
