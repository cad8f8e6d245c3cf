//! The batch write on SQLite (see [`crate::writer`]): one `BEGIN IMMEDIATE` transaction
//! reads the raw retention horizon, registers new devices, inserts the readings one by one
//! (`ON CONFLICT DO NOTHING`), merges the readings really inserted into the rollups and
//! `latest` (`sqlite/rollup.rs`) and stores the dead letters.

use sqlx::Connection;
use telemetry::{DeviceId, EventTime};

use super::SqliteStore;
use crate::writer::refuse_too_old;
use crate::{Batch, BatchOutcome, StoreError};

impl SqliteStore {
    pub async fn write_batch(&self, batch: &Batch) -> Result<BatchOutcome, StoreError> {
        let mut conn = self.writer.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let refused = refuse_too_old(batch, raw_horizon(&mut tx).await?);
        let older_than_retention =
            refused.as_ref().map_or(0, |b| (batch.readings.len() - b.readings.len()) as u64);
        let batch = refused.as_ref().unwrap_or(batch);
        let now = EventTime::now().millis();
        for d in &batch.new_devices {
            sqlx::query("INSERT INTO devices (id, registered_at_ms) VALUES (?, ?) ON CONFLICT (id) DO NOTHING")
                .bind(d.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        let mut inserted = Vec::with_capacity(batch.readings.len());
        for r in &batch.readings {
            let res = sqlx::query(
                "INSERT INTO readings (time_ms, device, metric, value, seq) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(r.time.millis())
            .bind(r.device.as_str())
            .bind(r.metric.as_str())
            .bind(r.value)
            .bind(r.seq.map(|s| i64::try_from(s.0).unwrap_or(i64::MAX)))
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 1 {
                inserted.push(r);
            }
        }
        super::rollup::merge_inserted(&mut tx, &inserted).await?;
        for d in &batch.dead_letters {
            sqlx::query(
                "INSERT INTO dead_letters (received_at_ms, topic, device, reason, detail, payload, payload_size) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(d.received_at.millis())
            .bind(&d.topic)
            .bind(d.device.as_ref().map(DeviceId::as_str))
            .bind(&d.reason)
            .bind(&d.detail)
            .bind(&d.payload)
            .bind(d.payload_size as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(BatchOutcome {
            inserted: inserted.len() as u64,
            duplicates: (batch.readings.len() - inserted.len()) as u64,
            dead_letters: batch.dead_letters.len() as u64,
            older_than_retention,
        })
    }

    /// SQLite takes one writing transaction at a time: a second batch in flight would
    /// only wait for the lock or retry.
    pub(crate) fn parallel_writes(&self) -> bool {
        false
    }
}

/// The horizon of raw readings, read inside a write transaction.
async fn raw_horizon(conn: &mut sqlx::SqliteConnection) -> Result<Option<EventTime>, StoreError> {
    let t: Option<i64> =
        sqlx::query_scalar("SELECT horizon_ms FROM retention_horizons WHERE level = 'raw'")
            .fetch_optional(conn)
            .await?;
    Ok(t.map(EventTime))
}
