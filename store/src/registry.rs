//! The device registry's lifecycle: registration with MQTT credentials, updates (kind,
//! road segment, gateway), decommissioning, and paged listing.
//!
//! A device's MQTT password is stored as the broker's own hash (Mosquitto's `$7$`
//! PBKDF2-SHA512 format, computed by the caller) so the broker's password file is written
//! from [`Store::device_credentials`]. Devices that telemetry auto-registered have no
//! credentials until an admin registers them. Decommissioning keeps the device and its
//! history but removes its credentials; registering it again brings it back.

use sqlx::Row;
use telemetry::{DeviceId, EventTime, SegmentId};

use crate::pg::{et, ts};
use crate::{parse_device, parse_segment, Store, StoreError};

/// A device as the registry shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceDetail {
    pub id: DeviceId,
    pub kind: Option<String>,
    pub segment: Option<SegmentId>,
    pub registered_at: EventTime,
    pub decommissioned_at: Option<EventTime>,
    /// Whether MQTT credentials were issued (the password itself is never returned).
    pub has_credentials: bool,
    /// The gateway (itself a registered device) whose MQTT account publishes for this one.
    pub gateway: Option<DeviceId>,
}

/// Which devices to list: filters, then a page of `limit` devices with ids after `after`.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub kind: Option<String>,
    pub segment: Option<SegmentId>,
    pub include_decommissioned: bool,
    pub after: Option<DeviceId>,
    pub limit: usize,
}

/// A change to a device: `None` leaves a field as it is, `Some(None)` empties it.
#[derive(Debug, Clone, Default)]
pub struct DeviceUpdate {
    pub kind: Option<Option<String>>,
    pub segment: Option<Option<SegmentId>>,
    pub gateway: Option<Option<DeviceId>>,
}

/// A device as the map places it: its place among the in-service devices of its road
/// segment, in id order (`index` of `of`; both 0 without a segment).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacedDevice {
    pub id: DeviceId,
    pub kind: Option<String>,
    pub segment: Option<SegmentId>,
    pub index: u32,
    pub of: u32,
}

/// Most distinct device kinds [`Store::device_kinds`] returns.
pub const MAX_KINDS: usize = 1_000;

const PG_COLUMNS: &str = "id, kind, segment_id, registered_at, decommissioned_at, mqtt_password_hash IS NOT NULL AS has_credentials, gateway_id";
const SQLITE_COLUMNS: &str = "id, kind, segment_id, registered_at_ms, decommissioned_at_ms, mqtt_password_hash IS NOT NULL AS has_credentials, gateway_id";

fn pg_device(row: &sqlx::postgres::PgRow) -> Result<DeviceDetail, StoreError> {
    Ok(DeviceDetail {
        id: parse_device(row.try_get("id")?)?,
        kind: row.try_get("kind")?,
        segment: row.try_get::<Option<String>, _>("segment_id")?.map(parse_segment).transpose()?,
        registered_at: et(row.try_get("registered_at")?),
        decommissioned_at: row
            .try_get::<Option<time::OffsetDateTime>, _>("decommissioned_at")?
            .map(et),
        has_credentials: row.try_get("has_credentials")?,
        gateway: row.try_get::<Option<String>, _>("gateway_id")?.map(parse_device).transpose()?,
    })
}

fn sqlite_device(row: &sqlx::sqlite::SqliteRow) -> Result<DeviceDetail, StoreError> {
    Ok(DeviceDetail {
        id: parse_device(row.try_get("id")?)?,
        kind: row.try_get("kind")?,
        segment: row.try_get::<Option<String>, _>("segment_id")?.map(parse_segment).transpose()?,
        registered_at: EventTime(row.try_get("registered_at_ms")?),
        decommissioned_at: row.try_get::<Option<i64>, _>("decommissioned_at_ms")?.map(EventTime),
        has_credentials: row.try_get("has_credentials")?,
        gateway: row.try_get::<Option<String>, _>("gateway_id")?.map(parse_device).transpose()?,
    })
}

/// A foreign-key violation means the segment or the gateway does not exist (PostgreSQL
/// names the constraint; SQLite does not, and the API checks the gateway first).
fn unknown_reference(
    e: sqlx::Error,
    segment: Option<&SegmentId>,
    gateway: Option<&DeviceId>,
) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        let code = db.code().unwrap_or_default();
        if code == "23503" || code == "787" {
            let on_gateway = db.constraint().map_or(segment.is_none(), |c| c.contains("gateway"));
            return match (on_gateway, gateway) {
                (true, Some(g)) => StoreError::UnknownGateway(g.as_str().to_owned()),
                _ => StoreError::UnknownSegment(
                    segment.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                ),
            };
        }
    }
    StoreError::Db(e)
}

impl Store {
    /// Register a device with its MQTT password hash. A device that exists without
    /// credentials (auto-registered by its telemetry) or decommissioned is taken over;
    /// an active device with credentials is a conflict.
    pub async fn register_device(
        &self,
        id: &DeviceId,
        kind: Option<&str>,
        segment: Option<&SegmentId>,
        gateway: Option<&DeviceId>,
        password_hash: &str,
        at: EventTime,
    ) -> Result<DeviceDetail, StoreError> {
        let row = match self {
            Store::Postgres(s) => sqlx::query(&format!(
                "INSERT INTO devices (id, kind, segment_id, registered_at, mqtt_password_hash, gateway_id) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, segment_id = excluded.segment_id, gateway_id = excluded.gateway_id,
                     mqtt_password_hash = excluded.mqtt_password_hash, decommissioned_at = NULL,
                     registered_at = CASE WHEN devices.decommissioned_at IS NULL THEN devices.registered_at ELSE excluded.registered_at END
                 WHERE devices.mqtt_password_hash IS NULL OR devices.decommissioned_at IS NOT NULL
                 RETURNING {PG_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(kind)
            .bind(segment.map(SegmentId::as_str))
            .bind(ts(at))
            .bind(password_hash)
            .bind(gateway.map(DeviceId::as_str))
            .fetch_optional(&s.pool)
            .await
            .map_err(|e| unknown_reference(e, segment, gateway))?
            .map(|r| pg_device(&r))
            .transpose()?,
            Store::Sqlite(s) => sqlx::query(&format!(
                "INSERT INTO devices (id, kind, segment_id, registered_at_ms, mqtt_password_hash, gateway_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, segment_id = excluded.segment_id, gateway_id = excluded.gateway_id,
                     mqtt_password_hash = excluded.mqtt_password_hash, decommissioned_at_ms = NULL,
                     registered_at_ms = CASE WHEN devices.decommissioned_at_ms IS NULL THEN devices.registered_at_ms ELSE excluded.registered_at_ms END
                 WHERE devices.mqtt_password_hash IS NULL OR devices.decommissioned_at_ms IS NOT NULL
                 RETURNING {SQLITE_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(kind)
            .bind(segment.map(SegmentId::as_str))
            .bind(at.millis())
            .bind(password_hash)
            .bind(gateway.map(DeviceId::as_str))
            .fetch_optional(&s.pool)
            .await
            .map_err(|e| unknown_reference(e, segment, gateway))?
            .map(|r| sqlite_device(&r))
            .transpose()?,
        };
        row.ok_or_else(|| StoreError::DeviceExists(id.as_str().to_owned()))
    }

    pub async fn device(&self, id: &DeviceId) -> Result<Option<DeviceDetail>, StoreError> {
        match self {
            Store::Postgres(s) => {
                sqlx::query(&format!("SELECT {PG_COLUMNS} FROM devices WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_optional(&s.pool)
                    .await?
                    .map(|r| pg_device(&r))
                    .transpose()
            }
            Store::Sqlite(s) => {
                sqlx::query(&format!("SELECT {SQLITE_COLUMNS} FROM devices WHERE id = ?"))
                    .bind(id.as_str())
                    .fetch_optional(&s.pool)
                    .await?
                    .map(|r| sqlite_device(&r))
                    .transpose()
            }
        }
    }

    /// A page of in-service (not decommissioned) devices in id order after `after`, each
    /// with its rank among the in-service devices of its segment. Ranks order ids
    /// bytewise on both backends, so a device sits at the same place on either.
    pub async fn placed_devices(
        &self,
        after: Option<&DeviceId>,
        limit: usize,
    ) -> Result<Vec<PlacedDevice>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.map(DeviceId::as_str);
        let place = |id: String,
                     kind: Option<String>,
                     segment: Option<String>,
                     index: i64,
                     of: i64|
         -> Result<PlacedDevice, StoreError> {
            let segment = segment.map(parse_segment).transpose()?;
            let (index, of) = if segment.is_some() {
                (u32::try_from(index).unwrap_or(u32::MAX), u32::try_from(of).unwrap_or(u32::MAX))
            } else {
                (0, 0)
            };
            Ok(PlacedDevice { id: parse_device(id)?, kind, segment, index, of })
        };
        match self {
            Store::Postgres(s) => sqlx::query(
                r#"SELECT id, kind, segment_id, k, n FROM (
                     SELECT id, kind, segment_id,
                            ROW_NUMBER() OVER (PARTITION BY segment_id ORDER BY id COLLATE "C") - 1 AS k,
                            COUNT(*) OVER (PARTITION BY segment_id) AS n
                     FROM devices WHERE decommissioned_at IS NULL) d
                   WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"#,
            )
            .bind(after)
            .bind(limit)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(|r| {
                place(
                    r.try_get("id")?,
                    r.try_get("kind")?,
                    r.try_get("segment_id")?,
                    r.try_get("k")?,
                    r.try_get("n")?,
                )
            })
            .collect(),
            Store::Sqlite(s) => sqlx::query(
                "SELECT id, kind, segment_id, k, n FROM (
                   SELECT id, kind, segment_id,
                          ROW_NUMBER() OVER (PARTITION BY segment_id ORDER BY id) - 1 AS k,
                          COUNT(*) OVER (PARTITION BY segment_id) AS n
                   FROM devices WHERE decommissioned_at_ms IS NULL)
                 WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(|r| {
                place(
                    r.try_get("id")?,
                    r.try_get("kind")?,
                    r.try_get("segment_id")?,
                    r.try_get("k")?,
                    r.try_get("n")?,
                )
            })
            .collect(),
        }
    }

    /// The kinds of the in-service devices, sorted, at most [`MAX_KINDS`].
    pub async fn device_kinds(&self) -> Result<Vec<String>, StoreError> {
        let limit = MAX_KINDS as i64;
        let rows: Vec<String> = match self {
            Store::Postgres(s) => {
                sqlx::query_scalar(
                    r#"SELECT DISTINCT kind COLLATE "C" AS kind FROM devices
                   WHERE kind IS NOT NULL AND decommissioned_at IS NULL ORDER BY 1 LIMIT $1"#,
                )
                .bind(limit)
                .fetch_all(&s.pool)
                .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_scalar(
                    "SELECT DISTINCT kind FROM devices
                 WHERE kind IS NOT NULL AND decommissioned_at_ms IS NULL ORDER BY 1 LIMIT ?1",
                )
                .bind(limit)
                .fetch_all(&s.pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// A page of devices in id order.
    pub async fn devices_page(&self, f: &DeviceFilter) -> Result<Vec<DeviceDetail>, StoreError> {
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        let after = f.after.as_ref().map(DeviceId::as_str);
        let segment = f.segment.as_ref().map(SegmentId::as_str);
        match self {
            Store::Postgres(s) => sqlx::query(&format!(
                "SELECT {PG_COLUMNS} FROM devices
                 WHERE ($1::text IS NULL OR id > $1) AND ($2::text IS NULL OR kind = $2)
                   AND ($3::text IS NULL OR segment_id = $3) AND ($4 OR decommissioned_at IS NULL)
                 ORDER BY id LIMIT $5"
            ))
            .bind(after)
            .bind(f.kind.as_deref())
            .bind(segment)
            .bind(f.include_decommissioned)
            .bind(limit)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(pg_device)
            .collect(),
            Store::Sqlite(s) => sqlx::query(&format!(
                "SELECT {SQLITE_COLUMNS} FROM devices
                 WHERE (?1 IS NULL OR id > ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR segment_id = ?3) AND (?4 OR decommissioned_at_ms IS NULL)
                 ORDER BY id LIMIT ?5"
            ))
            .bind(after)
            .bind(f.kind.as_deref())
            .bind(segment)
            .bind(f.include_decommissioned)
            .bind(limit)
            .fetch_all(&s.pool)
            .await?
            .iter()
            .map(sqlite_device)
            .collect(),
        }
    }

    /// Change a device's kind or segment; `None` when it does not exist.
    pub async fn update_device(
        &self,
        id: &DeviceId,
        u: &DeviceUpdate,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        let (set_kind, kind) = (u.kind.is_some(), u.kind.clone().flatten());
        let (set_segment, segment) = (u.segment.is_some(), u.segment.clone().flatten());
        let (set_gateway, gateway) = (u.gateway.is_some(), u.gateway.clone().flatten());
        match self {
            Store::Postgres(s) => sqlx::query(&format!(
                "UPDATE devices SET kind = CASE WHEN $2 THEN $3 ELSE kind END,
                     segment_id = CASE WHEN $4 THEN $5 ELSE segment_id END,
                     gateway_id = CASE WHEN $6 THEN $7 ELSE gateway_id END
                 WHERE id = $1 RETURNING {PG_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(set_kind)
            .bind(kind)
            .bind(set_segment)
            .bind(segment.as_ref().map(SegmentId::as_str))
            .bind(set_gateway)
            .bind(gateway.as_ref().map(DeviceId::as_str))
            .fetch_optional(&s.pool)
            .await
            .map_err(|e| unknown_reference(e, segment.as_ref(), gateway.as_ref()))?
            .map(|r| pg_device(&r))
            .transpose(),
            Store::Sqlite(s) => sqlx::query(&format!(
                "UPDATE devices SET kind = CASE WHEN ?2 THEN ?3 ELSE kind END,
                     segment_id = CASE WHEN ?4 THEN ?5 ELSE segment_id END,
                     gateway_id = CASE WHEN ?6 THEN ?7 ELSE gateway_id END
                 WHERE id = ?1 RETURNING {SQLITE_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(set_kind)
            .bind(kind)
            .bind(set_segment)
            .bind(segment.as_ref().map(SegmentId::as_str))
            .bind(set_gateway)
            .bind(gateway.as_ref().map(DeviceId::as_str))
            .fetch_optional(&s.pool)
            .await
            .map_err(|e| unknown_reference(e, segment.as_ref(), gateway.as_ref()))?
            .map(|r| sqlite_device(&r))
            .transpose(),
        }
    }

    /// Decommission a device: it keeps its history, loses its credentials. `None` when it
    /// does not exist; decommissioning twice keeps the first time.
    pub async fn decommission_device(
        &self,
        id: &DeviceId,
        at: EventTime,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        match self {
            Store::Postgres(s) => sqlx::query(&format!(
                "UPDATE devices SET decommissioned_at = coalesce(decommissioned_at, $2), mqtt_password_hash = NULL
                 WHERE id = $1 RETURNING {PG_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(ts(at))
            .fetch_optional(&s.pool)
            .await?
            .map(|r| pg_device(&r))
            .transpose(),
            Store::Sqlite(s) => sqlx::query(&format!(
                "UPDATE devices SET decommissioned_at_ms = coalesce(decommissioned_at_ms, ?2), mqtt_password_hash = NULL
                 WHERE id = ?1 RETURNING {SQLITE_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(at.millis())
            .fetch_optional(&s.pool)
            .await?
            .map(|r| sqlite_device(&r))
            .transpose(),
        }
    }

    /// Replace an active device's MQTT password hash; `None` when there is no such active device.
    pub async fn set_device_password(
        &self,
        id: &DeviceId,
        password_hash: &str,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        match self {
            Store::Postgres(s) => sqlx::query(&format!(
                "UPDATE devices SET mqtt_password_hash = $2 WHERE id = $1 AND decommissioned_at IS NULL RETURNING {PG_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(password_hash)
            .fetch_optional(&s.pool)
            .await?
            .map(|r| pg_device(&r))
            .transpose(),
            Store::Sqlite(s) => sqlx::query(&format!(
                "UPDATE devices SET mqtt_password_hash = ?2 WHERE id = ?1 AND decommissioned_at_ms IS NULL RETURNING {SQLITE_COLUMNS}"
            ))
            .bind(id.as_str())
            .bind(password_hash)
            .fetch_optional(&s.pool)
            .await?
            .map(|r| sqlite_device(&r))
            .transpose(),
        }
    }

    /// (gateway, device) of every active device reached through an active gateway, for the
    /// broker's ACL.
    pub async fn gateway_links(&self) -> Result<Vec<(DeviceId, DeviceId)>, StoreError> {
        let sql = match self {
            Store::Postgres(_) => {
                "SELECT d.gateway_id, d.id FROM devices d JOIN devices g ON g.id = d.gateway_id
                 WHERE d.decommissioned_at IS NULL AND g.decommissioned_at IS NULL ORDER BY d.gateway_id, d.id"
            }
            Store::Sqlite(_) => {
                "SELECT d.gateway_id, d.id FROM devices d JOIN devices g ON g.id = d.gateway_id
                 WHERE d.decommissioned_at_ms IS NULL AND g.decommissioned_at_ms IS NULL ORDER BY d.gateway_id, d.id"
            }
        };
        let pairs: Vec<(String, String)> = match self {
            Store::Postgres(s) => sqlx::query_as(sql).fetch_all(&s.pool).await?,
            Store::Sqlite(s) => sqlx::query_as(sql).fetch_all(&s.pool).await?,
        };
        pairs.into_iter().map(|(g, d)| Ok((parse_device(g)?, parse_device(d)?))).collect()
    }

    /// (device, password hash) of every active device with credentials, for the broker's
    /// password file.
    pub async fn device_credentials(&self) -> Result<Vec<(DeviceId, String)>, StoreError> {
        let sql = match self {
            Store::Postgres(_) => "SELECT id, mqtt_password_hash FROM devices WHERE mqtt_password_hash IS NOT NULL AND decommissioned_at IS NULL ORDER BY id",
            Store::Sqlite(_) => "SELECT id, mqtt_password_hash FROM devices WHERE mqtt_password_hash IS NOT NULL AND decommissioned_at_ms IS NULL ORDER BY id",
        };
        let pairs: Vec<(String, String)> = match self {
            Store::Postgres(s) => sqlx::query_as(sql).fetch_all(&s.pool).await?,
            Store::Sqlite(s) => sqlx::query_as(sql).fetch_all(&s.pool).await?,
        };
        pairs.into_iter().map(|(id, hash)| Ok((parse_device(id)?, hash))).collect()
    }

    /// The ids of `ids` that name no device of the registry, in the order given (a
    /// decommissioned device is known: its history stays): how a query tells a typo from
    /// a device with no readings.
    pub async fn unknown_devices(&self, ids: &[DeviceId]) -> Result<Vec<DeviceId>, StoreError> {
        let names: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
        let known = self.known_ids("devices", &names).await?;
        Ok(ids.iter().filter(|id| !known.contains(id.as_str())).cloned().collect())
    }

    /// The ids of `ids` that name no road segment, in the order given.
    pub async fn unknown_segments(&self, ids: &[SegmentId]) -> Result<Vec<SegmentId>, StoreError> {
        let names: Vec<&str> = ids.iter().map(SegmentId::as_str).collect();
        let known = self.known_ids("road_segments", &names).await?;
        Ok(ids.iter().filter(|id| !known.contains(id.as_str())).cloned().collect())
    }

    /// Which of `ids` are in `table`'s `id` column.
    async fn known_ids(
        &self,
        table: &'static str,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        let found: Vec<String> = match self {
            Store::Postgres(s) => {
                sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = ANY($1)"))
                    .bind(ids)
                    .fetch_all(&s.pool)
                    .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_scalar(&format!(
                    "SELECT id FROM {table} WHERE id IN (SELECT value FROM json_each(?))"
                ))
                .bind(serde_json::Value::from(ids.to_vec()).to_string())
                .fetch_all(&s.pool)
                .await?
            }
        };
        Ok(found.into_iter().collect())
    }
}
