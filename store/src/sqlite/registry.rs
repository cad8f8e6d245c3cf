//! Road segments and the device registry on SQLite (see [`crate::registry`]).

use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use telemetry::{DeviceId, EventTime, RoadSegment, SegmentId};

use super::SqliteStore;
use crate::registry::{DeviceDetail, DeviceFilter, DeviceUpdate, PlacedRow};
use crate::{parse_device, parse_segment, DeviceRecord, StoreError};

const COLUMNS: &str = "id, kind, segment_id, registered_at_ms, decommissioned_at_ms, mqtt_password_hash IS NOT NULL AS has_credentials, gateway_id, lon, lat, bearing_deg";

pub(super) const SEGMENT_COLUMNS: &str =
    "id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh, capacity_vph";

pub(super) fn segment(row: &SqliteRow) -> Result<RoadSegment, StoreError> {
    let text: String = row.try_get("coordinates")?;
    let coordinates = serde_json::from_str(&text)
        .map_err(|_| StoreError::Corrupt { what: "coordinates", value: text })?;
    Ok(RoadSegment {
        id: parse_segment(row.try_get("id")?)?,
        name: row.try_get("name")?,
        kind: row.try_get("kind")?,
        coordinates,
        length_m: row.try_get("length_m")?,
        lanes: row.try_get::<i64, _>("lanes")? as u32,
        speed_limit_kmh: row.try_get("speed_limit_kmh")?,
        free_flow_kmh: row.try_get("free_flow_kmh")?,
        capacity_vph: row.try_get("capacity_vph")?,
    })
}

fn device(row: &SqliteRow) -> Result<DeviceDetail, StoreError> {
    Ok(DeviceDetail {
        id: parse_device(row.try_get("id")?)?,
        kind: row.try_get("kind")?,
        segment: row.try_get::<Option<String>, _>("segment_id")?.map(parse_segment).transpose()?,
        registered_at: EventTime(row.try_get("registered_at_ms")?),
        decommissioned_at: row.try_get::<Option<i64>, _>("decommissioned_at_ms")?.map(EventTime),
        has_credentials: row.try_get("has_credentials")?,
        gateway: row.try_get::<Option<String>, _>("gateway_id")?.map(parse_device).transpose()?,
        position: match (
            row.try_get::<Option<f64>, _>("lon")?,
            row.try_get::<Option<f64>, _>("lat")?,
        ) {
            (Some(lon), Some(lat)) => Some([lon, lat]),
            _ => None,
        },
        bearing_deg: row.try_get("bearing_deg")?,
    })
}

impl SqliteStore {
    pub async fn upsert_segments(&self, segments: &[RoadSegment]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for s in segments {
            let coords = serde_json::to_string(&s.coordinates).unwrap_or_default();
            let [min_lon, min_lat, max_lon, max_lat] = crate::cadastre::bbox(&s.coordinates);
            sqlx::query(
                "INSERT INTO road_segments (id, name, kind, coordinates, length_m, lanes, speed_limit_kmh, free_flow_kmh, capacity_vph,
                                            min_lon, min_lat, max_lon, max_lat)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, kind = excluded.kind, coordinates = excluded.coordinates,
                   length_m = excluded.length_m, lanes = excluded.lanes, speed_limit_kmh = excluded.speed_limit_kmh,
                   free_flow_kmh = excluded.free_flow_kmh, capacity_vph = excluded.capacity_vph,
                   min_lon = excluded.min_lon, min_lat = excluded.min_lat, max_lon = excluded.max_lon, max_lat = excluded.max_lat",
            )
            .bind(s.id.as_str())
            .bind(&s.name)
            .bind(&s.kind)
            .bind(coords)
            .bind(s.length_m)
            .bind(i64::from(s.lanes))
            .bind(s.speed_limit_kmh)
            .bind(s.free_flow_kmh)
            .bind(s.capacity_vph)
            .bind(min_lon)
            .bind(min_lat)
            .bind(max_lon)
            .bind(max_lat)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The live (not retired) segments in id order.
    pub async fn segments(&self) -> Result<Vec<RoadSegment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM road_segments WHERE retired_at_ms IS NULL ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(segment).collect()
    }

    pub async fn upsert_devices(&self, devices: &[DeviceRecord]) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for d in devices {
            sqlx::query(
                "INSERT INTO devices (id, kind, segment_id, registered_at_ms) VALUES (?, ?, ?, ?)
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, segment_id = excluded.segment_id",
            )
            .bind(d.id.as_str())
            .bind(d.kind.as_deref())
            .bind(d.segment.as_ref().map(|s| s.as_str()))
            .bind(d.registered_at.millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT id, kind, segment_id, registered_at_ms FROM devices ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeviceRecord {
                    id: parse_device(row.try_get("id")?)?,
                    kind: row.try_get("kind")?,
                    segment: row
                        .try_get::<Option<String>, _>("segment_id")?
                        .map(parse_segment)
                        .transpose()?,
                    registered_at: EventTime(row.try_get("registered_at_ms")?),
                })
            })
            .collect()
    }

    /// Insert or take over the device; `None` when an active device with credentials
    /// holds the id.
    pub(crate) async fn register_device(
        &self,
        id: &DeviceId,
        kind: Option<&str>,
        segment: Option<&SegmentId>,
        gateway: Option<&DeviceId>,
        password_hash: &str,
        at: EventTime,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        sqlx::query(&format!(
            "INSERT INTO devices (id, kind, segment_id, registered_at_ms, mqtt_password_hash, gateway_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, segment_id = excluded.segment_id, gateway_id = excluded.gateway_id,
                 mqtt_password_hash = excluded.mqtt_password_hash, decommissioned_at_ms = NULL,
                 registered_at_ms = CASE WHEN devices.decommissioned_at_ms IS NULL THEN devices.registered_at_ms ELSE excluded.registered_at_ms END
             WHERE devices.mqtt_password_hash IS NULL OR devices.decommissioned_at_ms IS NOT NULL
             RETURNING {COLUMNS}"
        ))
        .bind(id.as_str())
        .bind(kind)
        .bind(segment.map(SegmentId::as_str))
        .bind(at.millis())
        .bind(password_hash)
        .bind(gateway.map(DeviceId::as_str))
        .fetch_optional(&self.writer)
        .await?
        .map(|r| device(&r))
        .transpose()
    }

    pub(crate) async fn device(&self, id: &DeviceId) -> Result<Option<DeviceDetail>, StoreError> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM devices WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(|r| device(&r))
            .transpose()
    }

    /// In-service devices after `after` with their rank in their segment; SQLite compares
    /// text bytewise.
    pub(crate) async fn placed_devices(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<PlacedRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, kind, segment_id, k, n FROM (
               SELECT id, kind, segment_id,
                      ROW_NUMBER() OVER (PARTITION BY segment_id ORDER BY id) - 1 AS k,
                      COUNT(*) OVER (PARTITION BY segment_id) AS n
               FROM devices WHERE decommissioned_at_ms IS NULL)
             WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn device_kinds(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT kind FROM devices
             WHERE kind IS NOT NULL AND decommissioned_at_ms IS NULL ORDER BY 1 LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn devices_page(
        &self,
        f: &DeviceFilter,
        limit: i64,
    ) -> Result<Vec<DeviceDetail>, StoreError> {
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM devices
             WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR kind = ?2)
               AND (?3 IS NULL OR segment_id = ?3) AND (?4 OR decommissioned_at_ms IS NULL)
             ORDER BY id LIMIT ?5"
        ))
        .bind(f.after.as_ref().map(DeviceId::as_str))
        .bind(f.kind.as_deref())
        .bind(f.segment.as_ref().map(SegmentId::as_str))
        .bind(f.include_decommissioned)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(device)
        .collect()
    }

    pub(crate) async fn update_device(
        &self,
        id: &DeviceId,
        u: &DeviceUpdate,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        sqlx::query(&format!(
            "UPDATE devices SET kind = CASE WHEN ?2 THEN ?3 ELSE kind END,
                 segment_id = CASE WHEN ?4 THEN ?5 ELSE segment_id END,
                 gateway_id = CASE WHEN ?6 THEN ?7 ELSE gateway_id END
             WHERE id = ?1 RETURNING {COLUMNS}"
        ))
        .bind(id.as_str())
        .bind(u.kind.is_some())
        .bind(u.kind.as_ref().and_then(|k| k.as_deref()))
        .bind(u.segment.is_some())
        .bind(u.segment.as_ref().and_then(|s| s.as_ref()).map(SegmentId::as_str))
        .bind(u.gateway.is_some())
        .bind(u.gateway.as_ref().and_then(|g| g.as_ref()).map(DeviceId::as_str))
        .fetch_optional(&self.writer)
        .await?
        .map(|r| device(&r))
        .transpose()
    }

    pub(crate) async fn decommission_device(
        &self,
        id: &DeviceId,
        at: EventTime,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        sqlx::query(&format!(
            "UPDATE devices SET decommissioned_at_ms = coalesce(decommissioned_at_ms, ?2), mqtt_password_hash = NULL
             WHERE id = ?1 RETURNING {COLUMNS}"
        ))
        .bind(id.as_str())
        .bind(at.millis())
        .fetch_optional(&self.writer)
        .await?
        .map(|r| device(&r))
        .transpose()
    }

    pub(crate) async fn set_device_password(
        &self,
        id: &DeviceId,
        password_hash: &str,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        sqlx::query(&format!(
            "UPDATE devices SET mqtt_password_hash = ?2 WHERE id = ?1 AND decommissioned_at_ms IS NULL RETURNING {COLUMNS}"
        ))
        .bind(id.as_str())
        .bind(password_hash)
        .fetch_optional(&self.writer)
        .await?
        .map(|r| device(&r))
        .transpose()
    }

    /// (gateway, device) ids of active devices behind active gateways.
    pub(crate) async fn gateway_links(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT d.gateway_id, d.id FROM devices d JOIN devices g ON g.id = d.gateway_id
             WHERE d.decommissioned_at_ms IS NULL AND g.decommissioned_at_ms IS NULL ORDER BY d.gateway_id, d.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// (device id, password hash) of active devices with credentials.
    pub(crate) async fn device_credentials(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, mqtt_password_hash FROM devices WHERE mqtt_password_hash IS NOT NULL AND decommissioned_at_ms IS NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Which of `ids` are in `table`'s `id` column.
    pub(crate) async fn known_ids(
        &self,
        table: &'static str,
        ids: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT id FROM {table} WHERE id IN (SELECT value FROM json_each(?))"
        ))
        .bind(serde_json::Value::from(ids.to_vec()).to_string())
        .fetch_all(&self.pool)
        .await?)
    }
}
