//! The device registry's lifecycle: registration with MQTT credentials, updates (kind,
//! road segment, gateway), decommissioning, and paged listing.
//!
//! A device's MQTT password is stored as the broker's own hash (Mosquitto's `$7$`
//! PBKDF2-SHA512 format, computed by the caller) so the broker's password file is written
//! from [`Store::device_credentials`]. Devices that telemetry auto-registered have no
//! credentials until an admin registers them. Decommissioning keeps the device and its
//! history but removes its credentials; registering it again brings it back.
//!
//! Road segments and the plain device list that the stream's registry reads (devices
//! telemetry registered by itself, with their kind and segment) are kept here too.

use telemetry::{DeviceId, EventTime, RoadSegment, SegmentId};

use crate::{parse_device, parse_segment, DeviceRecord, Store, StoreError};

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
    /// Where it stands, `[lon, lat]` WGS84 (the cadastre import links it by this).
    pub position: Option<[f64; 2]>,
    /// The direction it faces, degrees clockwise from north (with a position only).
    pub bearing_deg: Option<f64>,
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

/// A foreign-key violation means the segment or the gateway does not exist (PostgreSQL
/// names the constraint; SQLite does not, and the API checks the gateway first).
fn unknown_reference(
    e: StoreError,
    segment: Option<&SegmentId>,
    gateway: Option<&DeviceId>,
) -> StoreError {
    if let StoreError::Db(sqlx::Error::Database(db)) = &e {
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
    e
}

/// A row of [`Store::placed_devices`] as the backends read it: id, kind, segment, the
/// device's rank in its segment and the segment's count of in-service devices.
pub(crate) type PlacedRow = (String, Option<String>, Option<String>, i64, i64);

fn place((id, kind, segment, index, of): PlacedRow) -> Result<PlacedDevice, StoreError> {
    let segment = segment.map(parse_segment).transpose()?;
    let (index, of) = if segment.is_some() {
        (u32::try_from(index).unwrap_or(u32::MAX), u32::try_from(of).unwrap_or(u32::MAX))
    } else {
        (0, 0)
    };
    Ok(PlacedDevice { id: parse_device(id)?, kind, segment, index, of })
}

/// Road segments and the device registry: see the module doc. The SQL is each backend's
/// (`pg/registry.rs`, `sqlite/registry.rs`).
impl Store {
    pub async fn upsert_segments(&self, segments: &[RoadSegment]) -> Result<(), StoreError> {
        dispatch!(self, s => s.upsert_segments(segments).await)
    }

    pub async fn segments(&self) -> Result<Vec<RoadSegment>, StoreError> {
        dispatch!(self, s => s.segments().await)
    }

    /// Register devices (or update their kind and segment).
    pub async fn upsert_devices(&self, devices: &[DeviceRecord]) -> Result<(), StoreError> {
        dispatch!(self, s => s.upsert_devices(devices).await)
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        dispatch!(self, s => s.devices().await)
    }

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
        let row = dispatch!(self, s => s.register_device(id, kind, segment, gateway, password_hash, at).await)
            .map_err(|e| unknown_reference(e, segment, gateway))?;
        row.ok_or_else(|| StoreError::DeviceExists(id.as_str().to_owned()))
    }

    pub async fn device(&self, id: &DeviceId) -> Result<Option<DeviceDetail>, StoreError> {
        dispatch!(self, s => s.device(id).await)
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
        let rows = dispatch!(self, s => s.placed_devices(after, limit).await)?;
        rows.into_iter().map(place).collect()
    }

    /// The kinds of the in-service devices, sorted, at most [`MAX_KINDS`].
    pub async fn device_kinds(&self) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.device_kinds(MAX_KINDS as i64).await)
    }

    /// A page of devices in id order.
    pub async fn devices_page(&self, f: &DeviceFilter) -> Result<Vec<DeviceDetail>, StoreError> {
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        dispatch!(self, s => s.devices_page(f, limit).await)
    }

    /// Change a device's kind or segment; `None` when it does not exist.
    pub async fn update_device(
        &self,
        id: &DeviceId,
        u: &DeviceUpdate,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        let segment = u.segment.as_ref().and_then(Option::as_ref);
        let gateway = u.gateway.as_ref().and_then(Option::as_ref);
        dispatch!(self, s => s.update_device(id, u).await)
            .map_err(|e| unknown_reference(e, segment, gateway))
    }

    /// Decommission a device: it keeps its history, loses its credentials. `None` when it
    /// does not exist; decommissioning twice keeps the first time.
    pub async fn decommission_device(
        &self,
        id: &DeviceId,
        at: EventTime,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        dispatch!(self, s => s.decommission_device(id, at).await)
    }

    /// Replace an active device's MQTT password hash; `None` when there is no such active device.
    pub async fn set_device_password(
        &self,
        id: &DeviceId,
        password_hash: &str,
    ) -> Result<Option<DeviceDetail>, StoreError> {
        dispatch!(self, s => s.set_device_password(id, password_hash).await)
    }

    /// (gateway, device) of every active device reached through an active gateway, for the
    /// broker's ACL.
    pub async fn gateway_links(&self) -> Result<Vec<(DeviceId, DeviceId)>, StoreError> {
        let pairs = dispatch!(self, s => s.gateway_links().await)?;
        pairs.into_iter().map(|(g, d)| Ok((parse_device(g)?, parse_device(d)?))).collect()
    }

    /// (device, password hash) of every active device with credentials, for the broker's
    /// password file.
    pub async fn device_credentials(&self) -> Result<Vec<(DeviceId, String)>, StoreError> {
        let pairs = dispatch!(self, s => s.device_credentials().await)?;
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
        let found = dispatch!(self, s => s.known_ids(table, ids).await)?;
        Ok(found.into_iter().collect())
    }
}
