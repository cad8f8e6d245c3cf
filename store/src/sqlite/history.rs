//! History queries on SQLite (see [`crate::history`]): raw readings, and the stored rows
//! of each piece of a stepped query, which the domain folds into the step (SQLite has no
//! aggregate for "the value at the latest time").

use sqlx::Row;
use telemetry::{EventTime, Partial};

use super::SqliteStore;
use crate::history::{
    point, HistoryPoint, HistoryQuery, HistorySubject, Piece, Resolution, SourceRow,
};
use crate::StoreError;

impl SqliteStore {
    /// The query's subject as a filter on `?5`, and the table holding `level` for it.
    fn history_source(
        q: &HistoryQuery,
        level: Resolution,
    ) -> (String, &'static str, Option<String>) {
        let by_segment =
            level.segment_table().filter(|_| !matches!(q.subject, HistorySubject::Device(_)));
        let (filter, subject): (&str, Option<String>) = match (&q.subject, by_segment) {
            (HistorySubject::Device(d), _) => ("AND device = ?5", Some(d.to_string())),
            (HistorySubject::Segment(s), Some(_)) => ("AND segment = ?5", Some(s.to_string())),
            (HistorySubject::Segment(s), None) => ("AND device IN (SELECT id FROM devices WHERE segment_id = ?5)", Some(s.to_string())),
            (HistorySubject::Segments(list), Some(_)) => ("AND segment IN (SELECT value FROM json_each(?5))", Some(json_list(list))),
            (HistorySubject::Segments(list), None) => {
                ("AND device IN (SELECT id FROM devices WHERE segment_id IN (SELECT value FROM json_each(?5)))", Some(json_list(list)))
            }
            (HistorySubject::City, _) => ("AND ?5 IS NULL", None),
        };
        (filter.to_owned(), by_segment.unwrap_or(level.table()), subject)
    }

    /// Raw readings of `[from, to)`, one point each.
    pub async fn history_raw(&self, q: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        let rows = self.raw_rows(q, q.from, q.to, Some(q.limit)).await?;
        Ok(rows.into_iter().map(|r| point(r.bucket, &r.partial)).collect())
    }

    async fn raw_rows(
        &self,
        q: &HistoryQuery,
        from: EventTime,
        to: EventTime,
        limit: Option<usize>,
    ) -> Result<Vec<SourceRow>, StoreError> {
        let (filter, _, subject) = Self::history_source(q, Resolution::Raw);
        let sql = format!(
            "SELECT time_ms, value FROM readings WHERE metric = ?1 AND time_ms >= ?2 AND time_ms < ?3 {filter}
             ORDER BY time_ms, device LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(from.millis())
            .bind(to.millis())
            .bind(limit.map_or(-1, |l| l as i64))
            .bind(subject.as_deref())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let t = EventTime(row.try_get("time_ms")?);
                Ok(SourceRow { bucket: t, partial: Partial::of(t, row.try_get("value")?) })
            })
            .collect()
    }

    /// One piece of a stepped query as stored; the caller folds the rows into the step
    /// (SQLite has no aggregate for "value at the latest time" next to min and max).
    pub async fn history_piece(
        &self,
        q: &HistoryQuery,
        piece: Piece,
        _step_ms: i64,
    ) -> Result<Vec<SourceRow>, StoreError> {
        if piece.level == Resolution::Raw {
            return self.raw_rows(q, piece.from, piece.to, None).await;
        }
        let (filter, table, subject) = Self::history_source(q, piece.level);
        let sql = format!(
            "SELECT bucket_ms, count, sum, min, max, last_value, last_time_ms FROM {table}
             WHERE metric = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 {filter}"
        );
        // ?4 (the limit) applies after folding; it is bound so that ?5 keeps its place.
        let rows = sqlx::query(&sql)
            .bind(q.metric.as_str())
            .bind(piece.from.millis())
            .bind(piece.to.millis())
            .bind(q.limit as i64)
            .bind(subject.as_deref())
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(SourceRow {
                    bucket: EventTime(row.try_get("bucket_ms")?),
                    partial: Partial {
                        count: row.try_get("count")?,
                        sum: row.try_get("sum")?,
                        min: row.try_get("min")?,
                        max: row.try_get("max")?,
                        last_value: row.try_get("last_value")?,
                        last_time: EventTime(row.try_get("last_time_ms")?),
                    },
                })
            })
            .collect()
    }
}

fn json_list(segments: &[telemetry::SegmentId]) -> String {
    serde_json::Value::from(segments.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string()
}
