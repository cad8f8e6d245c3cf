//! The cadastre import and area queries on SQLite (see [`crate::cadastre`]).

use sqlx::Row;
use telemetry::cadastre::CadastreSegment;
use telemetry::{DeviceId, EventTime, RoadSegment, SegmentId};

use super::registry::{segment, SEGMENT_COLUMNS};
use super::SqliteStore;
use crate::cadastre::{bbox, plan, Applied, BoxRow, PositionRow, StoredSegment};
use crate::StoreError;

impl SqliteStore {
    pub(crate) async fn device_positions(&self) -> Result<Vec<PositionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, lon, lat, bearing_deg FROM devices
             WHERE lon IS NOT NULL AND lat IS NOT NULL AND decommissioned_at_ms IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn import_cadastre(
        &self,
        segments: &[CadastreSegment],
        links: &[(&DeviceId, &SegmentId)],
        at: EventTime,
        dry_run: bool,
    ) -> Result<Applied, StoreError> {
        // The one writer connection: imports and every other write queue here.
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(&format!(
            "SELECT {SEGMENT_COLUMNS}, one_way, version, retired_at_ms IS NOT NULL AS retired FROM road_segments"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows
            .iter()
            .map(|r| {
                Ok(StoredSegment {
                    segment: segment(r)?,
                    one_way: r.try_get("one_way")?,
                    version: r.try_get("version")?,
                    retired: r.try_get("retired")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let p = plan(stored, segments);
        let rows = p.insert.iter().map(|s| (*s, 1)).chain(p.update.iter().copied());
        for (c, version) in rows {
            let s = &c.segment;
            let [min_lon, min_lat, max_lon, max_lat] = bbox(&s.coordinates);
            sqlx::query(
                "INSERT INTO road_segments (id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh,
                    capacity_vph, one_way, version, min_lon, min_lat, max_lon, max_lat, valid_from_ms, retired_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind,
                    coordinates = excluded.coordinates, length_m = excluded.length_m, lanes = excluded.lanes,
                    speed_limit_kmh = excluded.speed_limit_kmh, free_flow_kmh = excluded.free_flow_kmh,
                    capacity_vph = excluded.capacity_vph, one_way = excluded.one_way, version = excluded.version,
                    min_lon = excluded.min_lon, min_lat = excluded.min_lat, max_lon = excluded.max_lon,
                    max_lat = excluded.max_lat, valid_from_ms = excluded.valid_from_ms, retired_at_ms = NULL",
            )
            .bind(s.id.as_str())
            .bind(&s.name)
            .bind(&s.kind)
            .bind(serde_json::to_string(&s.coordinates).unwrap_or_default())
            .bind(s.length_m)
            .bind(i64::from(s.lanes))
            .bind(s.speed_limit_kmh)
            .bind(s.free_flow_kmh)
            .bind(s.capacity_vph)
            .bind(c.one_way)
            .bind(version)
            .bind(min_lon)
            .bind(min_lat)
            .bind(max_lon)
            .bind(max_lat)
            .bind(at.0)
            .execute(&mut *tx)
            .await?;
        }
        for id in &p.retire {
            sqlx::query("UPDATE road_segments SET retired_at_ms = ? WHERE id = ?")
                .bind(at.0)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let mut relinked = 0;
        for (device, seg) in links {
            relinked += sqlx::query(
                "UPDATE devices SET segment_id = ? WHERE id = ? AND segment_id IS NOT ?",
            )
            .bind(seg.as_str())
            .bind(device.as_str())
            .bind(seg.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(p.applied(relinked))
    }

    pub(crate) async fn segments_in(&self, b: [f64; 4]) -> Result<Vec<RoadSegment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM road_segments
             WHERE retired_at_ms IS NULL AND min_lon <= ?3 AND max_lon >= ?1 AND min_lat <= ?4 AND max_lat >= ?2
             ORDER BY id"
        ))
        .bind(b[0])
        .bind(b[1])
        .bind(b[2])
        .bind(b[3])
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment).collect()
    }

    /// The bounding boxes of the segments among `ids` that exist (retired ones too).
    pub(crate) async fn segment_boxes(&self, ids: &[&str]) -> Result<Vec<BoxRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, min_lon, min_lat, max_lon, max_lat FROM road_segments
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::Value::from(ids.to_vec()).to_string())
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn set_device_position(
        &self,
        id: &DeviceId,
        position: Option<[f64; 2]>,
        bearing_deg: Option<f64>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE devices SET lon = ?, lat = ?, bearing_deg = ? WHERE id = ?")
            .bind(position.map(|p| p[0]))
            .bind(position.map(|p| p[1]))
            .bind(position.and(bearing_deg))
            .bind(id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn retired_segments(&self) -> Result<Vec<(String, EventTime)>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, retired_at_ms FROM road_segments WHERE retired_at_ms IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, at)| (id, EventTime(at))).collect())
    }

    pub(crate) async fn segment_version(
        &self,
        id: &SegmentId,
    ) -> Result<Option<(i64, EventTime)>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT version, valid_from_ms FROM road_segments WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(v, at)| (v, EventTime(at))))
    }
}
