//! Rollups on PostgreSQL (see [`crate::rollup`]): the minute fold of sealed minutes from
//! the live readings, the rollup merger's statement for late readings (both merge minute
//! partials into every level with the same statement tail), the fold of closed hours and
//! days into the stored real-time rollups (native mode), and the latest values.
//!
//! "Last by time" in SQL: `(max(ARRAY[epoch seconds, value]))[2]`. Arrays compare
//! element by element, so the maximum is the latest time and, on equal times, the larger
//! value (the tie rule of `telemetry::Partial::merge`). Unlike `array_agg(… ORDER BY …)`
//! it needs no sort, so grouping stays a hash aggregate. Epoch seconds with microseconds
//! are exact in a float8 for any time this system stores.
//!
//! Minutes are `date_bin('1 minute', time, 1970-01-01Z)`: UTC minutes, as
//! `date_trunc('minute', time)` in a UTC session, for every time this system stores (none
//! is before 1970), with integer arithmetic instead of a calendar conversion in the
//! session's time zone: 28 % less time grouping 2 million readings by minute and key.

use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use sqlx::{Executor, Row};
use telemetry::{EventTime, MetricId};
use time::OffsetDateTime;

use super::maintenance::partition_name;
use super::{et, ts, PgStore};
use crate::history::Resolution;
use crate::{parse_device, parse_metric, LatestValue, MergeOutcome, StorageMode, StoreError};

/// The rollup merger's source: take up to $1 committed batches off `rollup_pending` and
/// fold their (late) readings per minute into `m`. The levels are appended by
/// [`merge_statement`].
const MERGE_SOURCE: &str = r#"
WITH b AS (
    DELETE FROM rollup_pending WHERE batch IN (SELECT batch FROM rollup_pending ORDER BY batch LIMIT $1)
    RETURNING batch, min_time, max_time
), m AS (
    SELECT date_bin('1 minute', time, TIMESTAMPTZ '1970-01-01Z') AS bucket, device, metric, count(*)::int8 AS count, sum(value) AS sum,
           min(value) AS min, max(value) AS max,
           (max(ARRAY[date_part('epoch', time), value]))[2] AS last_value, max(time) AS last_time
    FROM readings
    WHERE batch = ANY(ARRAY(SELECT batch FROM b))
      AND time >= (SELECT min(min_time) FROM b) AND time <= (SELECT max(max_time) FROM b)
    GROUP BY 1, 2, 3
)"#;

/// The minute fold's source: the live (untagged) readings of `[$1, $2)`, a sealed range,
/// per minute into `m`.
const FOLD_SOURCE: &str = r#"
WITH m AS (
    SELECT date_bin('1 minute', time, TIMESTAMPTZ '1970-01-01Z') AS bucket, device, metric, count(*)::int8 AS count, sum(value) AS sum,
           min(value) AS min, max(value) AS max,
           (max(ARRAY[date_part('epoch', time), value]))[2] AS last_value, max(time) AS last_time
    FROM readings
    WHERE time >= $1 AND time < $2 AND batch IS NULL
    GROUP BY 1, 2, 3
)"#;

/// Moves `latest` forward from the minute partials `m`.
const MERGE_LATEST: &str = r#", lat AS (
    INSERT INTO latest AS l (device, metric, time, value)
    SELECT device, metric, max(last_time), (max(ARRAY[date_part('epoch', last_time), last_value]))[2] FROM m
    GROUP BY device, metric
    ON CONFLICT (device, metric) DO UPDATE SET time = excluded.time, value = excluded.value
        WHERE excluded.time > l.time OR (excluded.time = l.time AND excluded.value > l.value)
    RETURNING 1
)"#;

/// One level of the merge: `{name}` folds the finer level's CTE `{src}` into this level's
/// buckets, `{key}` is the column rows are kept per (`device`, or `segment` for segment
/// rollups).
const MERGE_FOLD: &str = r#", {name} AS (
    SELECT date_trunc('{unit}', bucket) AS bucket, {key}, metric, sum(count)::int8 AS count, sum(sum) AS sum,
           min(min) AS min, max(max) AS max,
           (max(ARRAY[date_part('epoch', last_time), last_value]))[2] AS last_value, max(last_time) AS last_time
    FROM {src} GROUP BY 1, 2, 3
)"#;

/// Adds partials (`excluded`) to a stored rollup row (`r`) with the same key.
const ON_CONFLICT_MERGE: &str = "ON CONFLICT ({key}, metric, bucket) DO UPDATE SET
        count = r.count + excluded.count,
        sum = r.sum + excluded.sum,
        min = least(r.min, excluded.min),
        max = greatest(r.max, excluded.max),
        last_value = CASE WHEN excluded.last_time > r.last_time
                            OR (excluded.last_time = r.last_time AND excluded.last_value > r.last_value)
                          THEN excluded.last_value ELSE r.last_value END,
        last_time = greatest(r.last_time, excluded.last_time)";

/// Merges the partials of CTE `{src}` (those passing `{filter}`) into `{table}`, in key
/// order (the index is walked once, left to right).
const MERGE_WRITE: &str = r#", {name}_w AS (
    INSERT INTO {table} AS r (bucket, {key}, metric, count, sum, min, max, last_value, last_time)
    SELECT * FROM {src}{filter} ORDER BY {key}, metric, bucket
    {conflict}
    RETURNING 1
)"#;

/// The minute partials with the segment each device is linked to now ('' for none).
const SEGMENT_SOURCE: &str = r#", sm AS (
    SELECT m.bucket, coalesce(d.segment_id, '') AS segment, m.metric, m.count, m.sum, m.min, m.max, m.last_value, m.last_time
    FROM m LEFT JOIN devices d ON d.id = m.device
)"#;

/// Native mode: the merge locks the marks of the real-time hourly and daily rollups
/// (migration 10) for the length of its transaction.
const MERGE_MARKS: &str = r#", mk AS (
    SELECT hour_mark, day_mark FROM rollup_marks FOR SHARE
)"#;

/// The statement that merges the minute partials of `source` (the merger's batches or the
/// fold's range) into the device levels this storage mode maintains itself, each with the
/// table it writes and the filter on its partials, the segment levels (always maintained
/// here) and `latest`. `batches` counts the batches taken.
fn merge_statement(source: &str, batches: &str, levels: &[(Resolution, &str, &str)]) -> String {
    let mut sql = source.to_owned();
    sql.push_str(MERGE_LATEST);
    if levels.iter().any(|(_, _, filter)| filter.contains("mk")) {
        sql.push_str(MERGE_MARKS);
    }
    let mut counts = Vec::new();
    // `m` is already per minute: the minute level writes it as it is.
    let mut level = |sql: &mut String,
                     name: &str,
                     unit: &str,
                     key: &str,
                     src: &str,
                     table: &str,
                     filter: &str| {
        let folded = if unit == "minute" && src == "m" {
            src
        } else {
            sql.push_str(
                &MERGE_FOLD
                    .replace("{name}", name)
                    .replace("{unit}", unit)
                    .replace("{key}", key)
                    .replace("{src}", src),
            );
            name
        };
        sql.push_str(
            &MERGE_WRITE
                .replace("{conflict}", ON_CONFLICT_MERGE)
                .replace("{name}", name)
                .replace("{key}", key)
                .replace("{src}", folded)
                .replace("{filter}", filter)
                .replace("{table}", table),
        );
        counts.push(format!("(SELECT count(*) FROM {name}_w)"));
        folded.to_owned()
    };
    let mut src = "m".to_owned();
    for &(l, table, filter) in levels {
        let (name, unit) = match l {
            Resolution::Minute => ("l1m", "minute"),
            Resolution::Hour => ("l1h", "hour"),
            Resolution::Day => ("l1d", "day"),
            Resolution::Raw => continue,
        };
        src = level(&mut sql, name, unit, "device", &src, table, filter);
    }
    sql.push_str(SEGMENT_SOURCE);
    let s1h = level(&mut sql, "s1h", "hour", "segment", "sm", "segment_rollup_1h", "");
    level(&mut sql, "s1d", "day", "segment", &s1h, "segment_rollup_1d", "");
    sql.push_str(&format!(
        "\nSELECT {batches}::int8 AS batches, coalesce((SELECT sum(count) FROM m), 0)::int8 AS readings, \
         ({})::int8 AS rollup_rows, (SELECT count(*) FROM lat) AS latest",
        counts.join(" + ")
    ));
    sql
}

/// Native mode: folds the `{unit}`s before `$1` from `{src}` into `{table}`, from the
/// level's mark (`$2`) on.
const FOLD_CLOSED: &str = r#"
INSERT INTO {table} AS r (bucket, device, metric, count, sum, min, max, last_value, last_time)
SELECT date_trunc('{unit}', bucket, 'UTC'), device, metric, sum(count)::int8, sum(sum), min(min), max(max),
       (max(ARRAY[date_part('epoch', last_time), last_value]))[2], max(last_time)
FROM {src} WHERE bucket >= $2 AND bucket < $1
GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
{conflict}"#;

fn fold_statement(unit: &str, src: &str, table: &str) -> String {
    FOLD_CLOSED
        .replace("{conflict}", &ON_CONFLICT_MERGE.replace("{key}", "device"))
        .replace("{unit}", unit)
        .replace("{src}", src)
        .replace("{table}", table)
}

/// Summarizes the new block ranges of the time index of the `readings` partitions from
/// the one named $1 on (partition names sort by day).
const SUMMARIZE_TIME_INDEX: &str = "
SELECT count(brin_summarize_new_values(i.indexrelid))
FROM pg_inherits h
JOIN pg_class p ON p.oid = h.inhrelid
JOIN pg_index i ON i.indrelid = h.inhrelid
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_am am ON am.oid = ic.relam
WHERE h.inhparent = 'readings'::regclass AND am.amname = 'brin' AND p.relname >= $1";

/// The settings of a merge's transaction (one round trip). No JIT: it compiles the long
/// statement again at every execution (0.9 s of CPU per fold once the estimated cost
/// passes `jit_above_cost`, for a statement that runs every few seconds).
const MERGE_SETTINGS: &str =
    "SET LOCAL synchronous_commit = off; SET LOCAL jit = off; SET LOCAL work_mem = '32MB'";

/// The settings of a fold's transaction: a merge's, more memory, and a pinned plan. The
/// fold reads the live partition, whose statistics always lag behind the minutes it
/// folds: the planner expects a handful of rows where there are millions, and picks a
/// sequential scan of the whole day's partition and a sort to group them (seen: 6.3 s,
/// 180 MB of temporary files, for a 15 s step of 2.5 million readings). Pinned instead:
/// the time index and a hash aggregate, whatever the statistics say, and no parallel
/// workers (background work: the least CPU, leaving the cores to the writers).
const FOLD_SETTINGS: &str = "SET LOCAL synchronous_commit = off; SET LOCAL jit = off; \
    SET LOCAL work_mem = '128MB'; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; \
    SET LOCAL max_parallel_workers_per_gather = 0";

/// The most minutes one fold transaction covers (after an outage, a backlog is folded in
/// bounded steps).
const FOLD_CHUNK_MS: i64 = 15 * 60_000;

fn outcome(row: &sqlx::postgres::PgRow) -> Result<MergeOutcome, StoreError> {
    Ok(MergeOutcome {
        batches: row.try_get::<i64, _>("batches")? as u64,
        readings: row.try_get::<i64, _>("readings")? as u64,
        rollup_rows: row.try_get::<i64, _>("rollup_rows")? as u64,
    })
}

impl PgStore {
    /// The merge statement of this storage mode, for the merger's batches or (`fold`) the
    /// minute fold's range. Built once: under TimescaleDB the hourly and daily levels are
    /// continuous aggregates over rollup_1m.
    fn merge_sql(&self, fold: bool) -> &'static str {
        const NATIVE_LEVELS: [(Resolution, &str, &str); 3] = [
            (Resolution::Minute, "rollup_1m", ""),
            // Buckets from the marks on are aggregated from rollup_1m when read.
            (Resolution::Hour, "rollup_1h_closed", " WHERE bucket < (SELECT hour_mark FROM mk)"),
            (Resolution::Day, "rollup_1d_closed", " WHERE bucket < (SELECT day_mark FROM mk)"),
        ];
        const TIMESCALE_LEVELS: [(Resolution, &str, &str); 1] =
            [(Resolution::Minute, "rollup_1m", "")];
        const BATCHES: &str = "(SELECT count(*) FROM b)";
        static MERGE_NATIVE: LazyLock<String> =
            LazyLock::new(|| merge_statement(MERGE_SOURCE, BATCHES, &NATIVE_LEVELS));
        static MERGE_TIMESCALE: LazyLock<String> =
            LazyLock::new(|| merge_statement(MERGE_SOURCE, BATCHES, &TIMESCALE_LEVELS));
        static FOLD_NATIVE: LazyLock<String> =
            LazyLock::new(|| merge_statement(FOLD_SOURCE, "0", &NATIVE_LEVELS));
        static FOLD_TIMESCALE: LazyLock<String> =
            LazyLock::new(|| merge_statement(FOLD_SOURCE, "0", &TIMESCALE_LEVELS));
        match (self.storage_mode(), fold) {
            (StorageMode::TimescaleDb, false) => &MERGE_TIMESCALE,
            (StorageMode::TimescaleDb, true) => &FOLD_TIMESCALE,
            (_, false) => &MERGE_NATIVE,
            (_, true) => &FOLD_NATIVE,
        }
    }

    /// Begins a merge or fold: lost in a crash, it is rolled back whole (its batches stay
    /// pending, its range unfolded) and done again, so it need not wait for its commit to
    /// reach the disk. Its hash aggregates and sorts hold one row per (key, bucket) of up
    /// to `max_batches` batches or of a fold's minutes (every key of the fleet): at 4 MB
    /// (the default) they spill to disk.
    async fn begin_merge(
        &self,
        fold: bool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        tx.execute(if fold { FOLD_SETTINGS } else { MERGE_SETTINGS }).await?;
        Ok(tx)
    }

    pub async fn merge_rollups(&self, max_batches: usize) -> Result<MergeOutcome, StoreError> {
        let mut tx = self.begin_merge(false).await?;
        let row =
            sqlx::query(self.merge_sql(false)).bind(max_batches as i64).fetch_one(&mut *tx).await?;
        tx.commit().await?;
        outcome(&row)
    }

    /// Seals the minutes before `until` (their live readings can no longer be written:
    /// see migration 14) and folds the sealed minutes not folded yet into the rollups and
    /// `latest`, at most 15 minutes per transaction. Cheap when nothing is to be sealed
    /// or folded (the marks are cached). Returns what was folded.
    pub async fn fold_minutes(&self, until: EventTime) -> Result<MergeOutcome, StoreError> {
        let mut total = MergeOutcome::default();
        if until.millis() > self.sealed_mark.load(Ordering::Relaxed) {
            // Waits for the batches in flight, which hold the row FOR SHARE.
            let sealed: OffsetDateTime = sqlx::query_scalar(
                "UPDATE minute_marks SET at = greatest(at, $1) WHERE name = 'sealed' RETURNING at",
            )
            .bind(ts(until))
            .fetch_one(&self.pool)
            .await?;
            self.sealed_mark.store(et(sealed).millis(), Ordering::Relaxed);
        }
        while self.folded_mark.load(Ordering::Relaxed) < self.sealed_mark.load(Ordering::Relaxed) {
            let mut tx = self.begin_merge(true).await?;
            // Taken FOR UPDATE: a concurrent fold waits, then starts where this one ended.
            let folded: OffsetDateTime =
                sqlx::query_scalar("SELECT at FROM minute_marks WHERE name = 'folded' FOR UPDATE")
                    .fetch_one(&mut *tx)
                    .await?;
            let sealed: OffsetDateTime =
                sqlx::query_scalar("SELECT at FROM minute_marks WHERE name = 'sealed'")
                    .fetch_one(&mut *tx)
                    .await?;
            let (folded, sealed) = (et(folded).millis(), et(sealed).millis());
            let to = sealed.min(folded + FOLD_CHUNK_MS);
            if to > folded {
                if self.storage_mode() == StorageMode::Native {
                    // The time index's new block ranges, so that the fold reads only the
                    // pages of its minutes (migration 15).
                    sqlx::query(SUMMARIZE_TIME_INDEX)
                        .bind(partition_name(folded.div_euclid(crate::history::DAY_MS))?)
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query(self.merge_sql(true))
                    .bind(ts(EventTime(folded)))
                    .bind(ts(EventTime(to)))
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("UPDATE minute_marks SET at = $1 WHERE name = 'folded'")
                    .bind(ts(EventTime(to)))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                let o = outcome(&row)?;
                total.readings += o.readings;
                total.rollup_rows += o.rollup_rows;
            } else {
                tx.commit().await?;
            }
            self.sealed_mark.fetch_max(sealed, Ordering::Relaxed);
            self.folded_mark.store(to.max(folded), Ordering::Relaxed);
        }
        Ok(total)
    }

    /// The end of the folded minutes as this process last read or moved it, without a
    /// query (`None` before its first fold). Another process's folds show from this one's
    /// next fold on.
    pub(crate) fn folded_mark(&self) -> Option<EventTime> {
        let at = self.folded_mark.load(Ordering::Relaxed);
        (at > 0).then_some(EventTime(at))
    }

    /// The end of the folded minutes: the rollups hold every live reading before it;
    /// readings from it on are read raw.
    pub(crate) async fn folded_until(&self) -> Result<Option<EventTime>, StoreError> {
        let at: OffsetDateTime =
            sqlx::query_scalar("SELECT at FROM minute_marks WHERE name = 'folded'")
                .fetch_one(&self.pool)
                .await?;
        Ok(Some(et(at)))
    }

    /// The newest reading not folded yet, if any (from the folded mark on, where the
    /// time index is selective).
    pub(crate) async fn newest_unfolded(&self) -> Result<Option<EventTime>, StoreError> {
        let at: Option<OffsetDateTime> = sqlx::query_scalar(
            "SELECT max(time) FROM readings WHERE time >= (SELECT at FROM minute_marks WHERE name = 'folded')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at.map(et))
    }

    /// Native mode: folds the hours that ended before `now` into rollup_1h_closed, and
    /// the days whose hours are all folded into rollup_1d_closed, moving the marks of the
    /// real-time rollups (migration 10), a day of hours per transaction. Cheap when there
    /// is nothing to fold (the hour mark is cached). Returns the rows written.
    pub async fn fold_closed_rollups(&self, now: EventTime) -> Result<u64, StoreError> {
        const HOUR_MS: i64 = 3_600_000;
        const DAY_MS: i64 = crate::history::DAY_MS;
        static HOURS: LazyLock<String> =
            LazyLock::new(|| fold_statement("hour", "rollup_1m", "rollup_1h_closed"));
        static DAYS: LazyLock<String> =
            LazyLock::new(|| fold_statement("day", "rollup_1h_closed", "rollup_1d_closed"));
        if self.storage_mode() != StorageMode::Native {
            return Ok(0);
        }
        let mut hour = now.millis().div_euclid(HOUR_MS) * HOUR_MS;
        if hour > self.hour_mark.load(Ordering::Relaxed) {
            // An hour is whole in rollup_1m once all its minutes are folded. The mark only
            // moves on: one this process saw past the hour needs no query.
            let known = self.folded_mark.load(Ordering::Relaxed);
            let folded = if known >= hour {
                known
            } else {
                self.folded_until().await?.map_or(hour, |t| t.millis())
            };
            hour = hour.min(folded.div_euclid(HOUR_MS) * HOUR_MS);
        }
        let mut rows = 0;
        while hour > self.hour_mark.load(Ordering::Relaxed) {
            let mut tx = self.pool.begin().await?;
            // Waits for the merges in flight (they hold the row FOR SHARE).
            let (hour_mark, day_mark): (OffsetDateTime, OffsetDateTime) =
                sqlx::query_as("SELECT hour_mark, day_mark FROM rollup_marks FOR UPDATE")
                    .fetch_one(&mut *tx)
                    .await?;
            let (hour_mark, day_mark) = (et(hour_mark).millis(), et(day_mark).millis());
            let hours_to = hour.min(hour_mark + DAY_MS).max(hour_mark);
            if hours_to > hour_mark {
                let done = sqlx::query(&HOURS)
                    .bind(ts(EventTime(hours_to)))
                    .bind(ts(EventTime(hour_mark)))
                    .execute(&mut *tx)
                    .await?;
                rows += done.rows_affected();
                sqlx::query("UPDATE rollup_marks SET hour_mark = $1")
                    .bind(ts(EventTime(hours_to)))
                    .execute(&mut *tx)
                    .await?;
            }
            // A day is folded once all its hours are.
            let days_to = hours_to.div_euclid(DAY_MS) * DAY_MS;
            if days_to > day_mark {
                let done = sqlx::query(&DAYS)
                    .bind(ts(EventTime(days_to)))
                    .bind(ts(EventTime(day_mark)))
                    .execute(&mut *tx)
                    .await?;
                rows += done.rows_affected();
                sqlx::query("UPDATE rollup_marks SET day_mark = $1")
                    .bind(ts(EventTime(days_to)))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.hour_mark.store(hours_to, Ordering::Relaxed);
            if hours_to > hour_mark {
                tracing::info!(rows, hour_mark = %ts(EventTime(hours_to)), "folded closed hours and days into the stored rollups");
            }
        }
        Ok(rows)
    }

    pub async fn latest(
        &self,
        device: Option<&telemetry::DeviceId>,
        metric: Option<MetricId>,
    ) -> Result<Vec<LatestValue>, StoreError> {
        // Filters written only when given: a plan for "any device" would not use the
        // key's index for one device.
        let filter = match (device.is_some(), metric.is_some()) {
            (true, true) => "device = $1 AND metric = $2",
            (true, false) => "device = $1 AND $2::text IS NULL",
            (false, true) => "$1::text IS NULL AND metric = $2",
            (false, false) => "$1::text IS NULL AND $2::text IS NULL",
        };
        // `latest` holds the folded and merged readings; the newer ones are read raw. The
        // latest time wins, and on equal times the larger value.
        let sql = format!(
            "SELECT DISTINCT ON (device, metric) device, metric, time, value FROM (
                 SELECT device, metric, time, value FROM latest WHERE {filter}
                 UNION ALL
                 SELECT device, metric, time, value FROM readings
                 WHERE time >= (SELECT at FROM minute_marks WHERE name = 'folded') AND {filter}
             ) v
             ORDER BY device, metric, time DESC, value DESC"
        );
        let rows = sqlx::query(&sql)
            .bind(device.map(|d| d.as_str()))
            .bind(metric.map(MetricId::as_str))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(LatestValue {
                    device: parse_device(row.try_get("device")?)?,
                    metric: parse_metric(row.try_get("metric")?)?,
                    time: et(row.try_get("time")?),
                    value: row.try_get("value")?,
                })
            })
            .collect()
    }
}
