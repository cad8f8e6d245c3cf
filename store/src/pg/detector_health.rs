//! Detector flag intervals on PostgreSQL (see [`crate::detector_health`]).

use sqlx::Row;
use telemetry::health::{FlagInterval, HealthFlag};
use telemetry::EventTime;

use super::{et, ts, PgStore};
use crate::detector_health::{flag_interval, FlagFilter};
use crate::StoreError;

impl PgStore {
    pub(crate) async fn open_flag(
        &self,
        device: &str,
        rule: &str,
        flag: &str,
        since: EventTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO detector_flags (device_id, rule_id, flag, from_time) VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_id, rule_id) WHERE to_time IS NULL DO NOTHING",
        )
        .bind(device)
        .bind(rule)
        .bind(flag)
        .bind(ts(since))
        .execute(&self.pool)
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
            "UPDATE detector_flags SET to_time = GREATEST($3, from_time)
             WHERE device_id = $1 AND rule_id = $2 AND to_time IS NULL",
        )
        .bind(device)
        .bind(rule)
        .bind(ts(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn flags(&self, f: &FlagFilter) -> Result<Vec<FlagInterval>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, rule_id, flag, from_time, to_time FROM detector_flags
             WHERE from_time < $2 AND (to_time IS NULL OR to_time > $1)
               AND ($3::text IS NULL OR device_id = $3) AND ($4::text IS NULL OR flag = $4)
               AND (NOT $5 OR to_time IS NULL)
             ORDER BY device_id, from_time, id",
        )
        .bind(ts(f.from))
        .bind(ts(f.to))
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
                    et(r.try_get("from_time")?),
                    r.try_get::<Option<time::OffsetDateTime>, _>("to_time")?.map(et),
                )
            })
            .collect()
    }
}
