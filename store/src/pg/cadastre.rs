//! The cadastre import and area queries on PostgreSQL (see [`crate::cadastre`]).

use sqlx::Row;
use telemetry::cadastre::CadastreSegment;
use telemetry::{DeviceId, EventTime, RoadSegment, SegmentId};

use super::registry::{segment, SEGMENT_COLUMNS};
use super::{et, ts, PgStore};
use crate::cadastre::{bbox, plan, Applied, BoxRow, PositionRow, StoredSegment};
use crate::StoreError;

/// Rows per UNNEST statement.
const CHUNK: usize = 2_000;

/// The columns of a chunk of segments, as arrays for UNNEST.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    name: Vec<String>,
    kind: Vec<String>,
    coordinates: Vec<String>,
    length_m: Vec<f64>,
    lanes: Vec<i32>,
    speed_limit: Vec<f64>,
    free_flow: Vec<f64>,
    capacity: Vec<f64>,
    one_way: Vec<bool>,
    version: Vec<i32>,
    bbox: [Vec<f64>; 4],
}

impl Columns {
    fn push(&mut self, c: &CadastreSegment, version: i64) {
        let s = &c.segment;
        self.id.push(s.id.as_str().to_owned());
        self.name.push(s.name.clone());
        self.kind.push(s.kind.clone());
        self.coordinates.push(serde_json::to_string(&s.coordinates).unwrap_or_default());
        self.length_m.push(s.length_m);
        self.lanes.push(i32::try_from(s.lanes).unwrap_or(i32::MAX));
        self.speed_limit.push(s.speed_limit_kmh);
        self.free_flow.push(s.free_flow_kmh);
        self.capacity.push(s.capacity_vph);
        self.one_way.push(c.one_way);
        self.version.push(i32::try_from(version).unwrap_or(i32::MAX));
        for (col, v) in self.bbox.iter_mut().zip(bbox(&s.coordinates)) {
            col.push(v);
        }
    }
}

const UNNEST: &str = "UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::int4[], $7::float8[],
                             $8::float8[], $9::float8[], $10::bool[], $11::int4[], $12::float8[], $13::float8[],
                             $14::float8[], $15::float8[])
                      AS u(id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh, capacity_vph,
                           one_way, version, min_lon, min_lat, max_lon, max_lat)";

impl PgStore {
    pub(crate) async fn device_positions(&self) -> Result<Vec<PositionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, lon, lat, bearing_deg FROM devices
             WHERE lon IS NOT NULL AND lat IS NOT NULL AND decommissioned_at IS NULL ORDER BY id",
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
        let mut tx = self.pool.begin().await?;
        // One import at a time; readers and device writes go on.
        sqlx::query("LOCK TABLE road_segments IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT {SEGMENT_COLUMNS}, one_way, version, retired_at IS NOT NULL AS retired FROM road_segments"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let stored = rows
            .iter()
            .map(|r| {
                Ok(StoredSegment {
                    segment: segment(r)?,
                    one_way: r.try_get("one_way")?,
                    version: i64::from(r.try_get::<i32, _>("version")?),
                    retired: r.try_get("retired")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let p = plan(stored, segments);
        let at = ts(at);
        for chunk in p.insert.chunks(CHUNK) {
            let mut c = Columns::default();
            chunk.iter().for_each(|s| c.push(s, 1));
            bind(
                sqlx::query(&format!(
                    "INSERT INTO road_segments (id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh,
                        capacity_vph, one_way, version, min_lon, min_lat, max_lon, max_lat, valid_from)
                     SELECT id, name, kind, coordinates::jsonb, length_m, lanes, speed_limit_kmh, free_flow_kmh,
                        capacity_vph, one_way, version, min_lon, min_lat, max_lon, max_lat, $16 FROM {UNNEST}"
                )),
                c,
            )
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in p.update.chunks(CHUNK) {
            let mut c = Columns::default();
            chunk.iter().for_each(|(s, v)| c.push(s, *v));
            bind(
                sqlx::query(&format!(
                    "UPDATE road_segments s SET name = u.name, kind = u.kind, coordinates = u.coordinates::jsonb,
                        length_m = u.length_m, lanes = u.lanes, speed_limit_kmh = u.speed_limit_kmh,
                        free_flow_kmh = u.free_flow_kmh, capacity_vph = u.capacity_vph, one_way = u.one_way,
                        version = u.version, min_lon = u.min_lon, min_lat = u.min_lat, max_lon = u.max_lon,
                        max_lat = u.max_lat, valid_from = $16, retired_at = NULL
                     FROM {UNNEST} WHERE s.id = u.id"
                )),
                c,
            )
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE road_segments SET retired_at = $2 WHERE id = ANY($1)")
            .bind(&p.retire)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        let devices: Vec<&str> = links.iter().map(|(d, _)| d.as_str()).collect();
        let segs: Vec<&str> = links.iter().map(|(_, s)| s.as_str()).collect();
        let relinked = sqlx::query(
            "UPDATE devices d SET segment_id = u.seg FROM UNNEST($1::text[], $2::text[]) AS u(id, seg)
             WHERE d.id = u.id AND d.segment_id IS DISTINCT FROM u.seg",
        )
        .bind(&devices)
        .bind(&segs)
        .execute(&mut *tx)
        .await?
        .rows_affected();
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
             WHERE retired_at IS NULL AND min_lon <= $3 AND max_lon >= $1 AND min_lat <= $4 AND max_lat >= $2
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
            "SELECT id, min_lon, min_lat, max_lon, max_lat FROM road_segments WHERE id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn set_device_position(
        &self,
        id: &DeviceId,
        position: Option<[f64; 2]>,
        bearing_deg: Option<f64>,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE devices SET lon = $2, lat = $3, bearing_deg = $4 WHERE id = $1")
                .bind(id.as_str())
                .bind(position.map(|p| p[0]))
                .bind(position.map(|p| p[1]))
                .bind(position.and(bearing_deg))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(crate) async fn retired_segments(&self) -> Result<Vec<(String, EventTime)>, StoreError> {
        let rows: Vec<(String, time::OffsetDateTime)> = sqlx::query_as(
            "SELECT id, retired_at FROM road_segments WHERE retired_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, at)| (id, et(at))).collect())
    }

    pub(crate) async fn segment_version(
        &self,
        id: &SegmentId,
    ) -> Result<Option<(i64, EventTime)>, StoreError> {
        let row: Option<(i32, time::OffsetDateTime)> =
            sqlx::query_as("SELECT version, valid_from FROM road_segments WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(v, at)| (i64::from(v), et(at))))
    }
}

fn bind(
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    c: Columns,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let [min_lon, min_lat, max_lon, max_lat] = c.bbox;
    q.bind(c.id)
        .bind(c.name)
        .bind(c.kind)
        .bind(c.coordinates)
        .bind(c.length_m)
        .bind(c.lanes)
        .bind(c.speed_limit)
        .bind(c.free_flow)
        .bind(c.capacity)
        .bind(c.one_way)
        .bind(c.version)
        .bind(min_lon)
        .bind(min_lat)
        .bind(max_lon)
        .bind(max_lat)
}
