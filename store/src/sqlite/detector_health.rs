//! Detector flag intervals on SQLite (see [`crate::detector_health`]).

use sqlx::Row;
use telemetry::health::{FlagInterval, HealthFlag};
use telemetry::EventTime;

use super::SqliteStore;
use crate::detector_health::{flag_interval, FlagFilter};
use crate::StoreError;

impl SqliteStore {
    pub(crate) async fn open_flag(
        &self,
        device: &str,
        rule: &str,
        flag: &str,
        since: EventTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO detector_flags (device_id, rule_id, flag, from_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (device_id, rule_id) WHERE to_ms IS NULL DO NOTHING",
        )
        .bind(device)
        .bind(rule)
        .bind(flag)
        .bind(since.millis())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn close_flag(
        &self,
        device: &str,
        rule: &str,
        at: EventTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE detector_flags SET to_ms = MAX(?3, from_ms)
             WHERE device_id = ?1 AND rule_id = ?2 AND to_ms IS NULL",
        )
        .bind(device)
        .bind(rule)
        .bind(at.millis())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn flags(&self, f: &FlagFilter) -> Result<Vec<FlagInterval>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, rule_id, flag, from_ms, to_ms FROM detector_flags
             WHERE from_ms < ?2 AND (to_ms IS NULL OR to_ms > ?1)
               AND (?3 IS NULL OR device_id = ?3) AND (?4 IS NULL OR flag = ?4)
               AND (NOT ?5 OR to_ms IS NULL)
             ORDER BY device_id, from_ms, id",
        )
        .bind(f.from.millis())
        .bind(f.to.millis())
        .bind(f.device.as_ref().map(|d| d.as_str()))
        .bind(f.flag.map(HealthFlag::as_str))
        .bind(f.open_only)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                flag_interval(
                    r.try_get("device_id")?,
                    r.try_get("rule_id")?,
                    r.try_get("flag")?,
                    EventTime(r.try_get("from_ms")?),
                    r.try_get::<Option<i64>, _>("to_ms")?.map(EventTime),
                )
            })
            .collect()
    }
}
