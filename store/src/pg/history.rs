//! History queries on PostgreSQL (see [`crate::history`]): raw readings, and the pieces
//! of a stepped query aggregated by the server into the query's step (`date_bin`).

use sqlx::Row;
use telemetry::Partial;

use super::{et, ts, PgStore};
use crate::history::{HistoryPoint, HistoryQuery, HistorySubject, Piece, Resolution, SourceRow};
use crate::StoreError;

fn join(segments: &[telemetry::SegmentId]) -> String {
    segments.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

impl PgStore {
    /// The query's subject as a filter on `$5`, and the table holding `level` for it
    /// (segment tables hold hours and days per road segment).
    fn history_source(
        q: &HistoryQuery,
        level: Resolution,
    ) -> (String, &'static str, Option<String>) {
        let by_segment =
            level.segment_table().filter(|_| !matches!(q.subject, HistorySubject::Device(_)));
        let (filter, subject): (&str, Option<String>) = match (&q.subject, by_segment) {
            (HistorySubject::Device(d), _) => ("AND device = $5", Some(d.to_string())),
            (HistorySubject::Segment(s), Some(_)) => ("AND segment = $5", Some(s.to_string())),
            (HistorySubject::Segment(s), None) => ("AND device IN (SELECT id FROM devices WHERE segment_id = $5)", Some(s.to_string())),
            // Segment ids have no commas.
            (HistorySubject::Segments(list), Some(_)) => ("AND segment = ANY(string_to_array($5, ','))", Some(join(list))),
            (HistorySubject::Segments(list), None) => {
                ("AND device IN (SELECT id FROM devices WHERE segment_id = ANY(string_to_array($5, ',')))", Some(join(list)))
            }
            (HistorySubject::City, _) => ("AND $5::text IS NULL", None),
        };
        (filter.to_owned(), by_segment.unwrap_or(level.table()), subject)
    }

    /// Raw readings of `[from, to)`, one point each.
    pub async fn history_raw(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let (filter, _, subject) = Self::history_source(q, Resolution::Raw);
        let sql = format!(
            "SELECT time AS t, value FROM readings
             WHERE metric = $1 AND time >= $2 AND time < $3 {filter} ORDER BY time, device LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(ts(q.from))
            .bind(ts(q.to))
            .bind(q.limit as i64)
            .bind(subject)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let v: f64 = row.try_get("value")?;
                Ok(HistoryPoint {
                    time: et(row.try_get("t")?),
                    count: 1,
                    sum: v,
                    min: v,
                    max: v,
                    last: v,
                })
            })
            .collect()
    }

    /// One piece of a stepped query, aggregated into epoch-aligned buckets of `step_ms`.
    pub async fn history_piece(
        &self,
        q: &HistoryQuery,
        piece: Piece,
        step_ms: i64,
    ) -> Result<Vec<SourceRow>, StoreError> {
        let (filter, table, subject) = Self::history_source(q, piece.level);
        let bin =
            |col: &str| format!("date_bin(make_interval(secs => $6), {col}, timestamptz 'epoch')");
        let sql = match piece.level {
            Resolution::Raw => format!(
                "SELECT {t} AS t, count(*)::int8 AS count, sum(value) AS sum, min(value) AS min, max(value) AS max,
                        (max(ARRAY[date_part('epoch', time), value]))[2] AS last, max(time) AS last_time
                 FROM readings WHERE metric = $1 AND time >= $2 AND time < $3 {filter}
                 GROUP BY 1 ORDER BY 1 LIMIT $4",
                t = bin("time")
            ),
            _ => format!(
                "SELECT {t} AS t, sum(count)::int8 AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max,
                        (max(ARRAY[date_part('epoch', last_time), last_value]))[2] AS last, max(last_time) AS last_time
                 FROM {table} WHERE metric = $1 AND bucket >= $2 AND bucket < $3 {filter}
                 GROUP BY 1 ORDER BY 1 LIMIT $4",
                t = bin("bucket")
            ),
        };
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(ts(piece.from))
            .bind(ts(piece.to))
            .bind(q.limit as i64)
            .bind(subject)
            .bind(step_ms as f64 / 1_000.0)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SourceRow {
                    bucket: et(row.try_get("t")?),
                    partial: Partial {
                        count: row.try_get("count")?,
                        sum: row.try_get("sum")?,
                        min: row.try_get("min")?,
                        max: row.try_get("max")?,
                        last_value: row.try_get("last")?,
                        last_time: et(row.try_get("last_time")?),
                    },
                })
            })
            .collect()
    }
}
