//! The Road Cadastre's versioned import and area queries over segments.
//!
//! An import replaces the set of live segments with a file's, in one transaction, and
//! keeps history: a segment whose attributes or geometry changed is updated and its
//! `version` raised with `valid_from` = the import's time; a segment missing from the
//! file is retired (`retired_at` set; its rollups, alerts and device history untouched;
//! it leaves the live map, the stream's registry and linking); an unchanged one is not
//! written; one retired earlier and present again comes back (a new version). Device
//! links are kept: only devices with a position are (re)linked, to the nearest live
//! segment ([`telemetry::cadastre::link`]); ambiguous matches are reported, not linked.
//!
//! Every segment row carries its bounding box (`min_lon` … `max_lat`), written with it,
//! so that an area query reads only the segments that may cross the area (an index on
//! the live rows' `min_lon, max_lon`), on both backends.

use std::collections::HashMap;

use serde::Serialize;
use telemetry::cadastre::link::{link, DevicePosition, LinkOutcome, LinkTarget};
use telemetry::cadastre::CadastreSegment;
use telemetry::{DeviceId, EventTime, RoadSegment, SegmentId};

use crate::{parse_device, Store, StoreError};

/// A segment as stored, for the import's comparison.
#[derive(Debug, Clone)]
pub(crate) struct StoredSegment {
    pub segment: RoadSegment,
    pub one_way: bool,
    pub version: i64,
    pub retired: bool,
}

/// What an import writes, decided from what is stored and what the file holds.
#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    /// New segments, version 1.
    pub insert: Vec<&'a CadastreSegment>,
    /// Changed (or retired and back) segments with their new version.
    pub update: Vec<(&'a CadastreSegment, i64)>,
    pub retire: Vec<String>,
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(1.0)
}

fn unchanged(old: &StoredSegment, new: &CadastreSegment) -> bool {
    let (a, b) = (&old.segment, &new.segment);
    old.one_way == new.one_way
        && a.name == b.name
        && a.kind == b.kind
        && a.lanes == b.lanes
        && same(a.length_m, b.length_m)
        && same(a.speed_limit_kmh, b.speed_limit_kmh)
        && same(a.free_flow_kmh, b.free_flow_kmh)
        && same(a.capacity_vph, b.capacity_vph)
        && a.coordinates.len() == b.coordinates.len()
        && a.coordinates
            .iter()
            .zip(&b.coordinates)
            .all(|(p, q)| same(p[0], q[0]) && same(p[1], q[1]))
}

/// Compare the stored segments with the file's (see the module doc).
pub(crate) fn plan<'a>(stored: Vec<StoredSegment>, new: &'a [CadastreSegment]) -> Plan<'a> {
    let mut stored: HashMap<String, StoredSegment> =
        stored.into_iter().map(|s| (s.segment.id.as_str().to_owned(), s)).collect();
    let mut p = Plan::default();
    for s in new {
        match stored.remove(s.segment.id.as_str()) {
            None => {
                p.insert.push(s);
                p.added += 1;
            }
            Some(old) if old.retired => {
                p.update.push((s, old.version + 1));
                p.added += 1;
            }
            Some(old) if unchanged(&old, s) => p.unchanged += 1,
            Some(old) => {
                p.update.push((s, old.version + 1));
                p.changed += 1;
            }
        }
    }
    p.retire = stored.into_iter().filter(|(_, s)| !s.retired).map(|(id, _)| id).collect();
    p.retire.sort();
    p
}

/// A segment's `[min_lon, min_lat, max_lon, max_lat]`.
pub(crate) fn bbox(coords: &[[f64; 2]]) -> [f64; 4] {
    coords.iter().fold(
        [f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY],
        |b, [lon, lat]| [b[0].min(*lon), b[1].min(*lat), b[2].max(*lon), b[3].max(*lat)],
    )
}

/// What an import did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportSummary {
    pub dry_run: bool,
    pub added: usize,
    pub changed: usize,
    pub retired: usize,
    pub unchanged: usize,
    /// Devices with a position linked to a segment (whether or not the link changed).
    pub devices_linked: usize,
    /// Of those, the devices whose segment changed.
    pub devices_relinked: usize,
    /// The ids of the retired segments.
    pub retired_ids: Vec<String>,
    /// Devices with two or more segments within 20 % of the best distance: not linked.
    pub ambiguous: Vec<LinkOutcome>,
    /// Devices with a position but no segment within the distance (their link is kept).
    pub unmatched: Vec<DeviceId>,
}

/// What a backend's import transaction reports back.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub retired_ids: Vec<String>,
    pub relinked: usize,
}

impl Plan<'_> {
    /// What applying the plan did, with the number of devices it relinked.
    pub(crate) fn applied(self, relinked: u64) -> Applied {
        Applied {
            added: self.added,
            changed: self.changed,
            unchanged: self.unchanged,
            retired_ids: self.retire,
            relinked: usize::try_from(relinked).unwrap_or(usize::MAX),
        }
    }
}

/// A device's position as stored: id, lon, lat, bearing.
pub(crate) type PositionRow = (String, f64, f64, Option<f64>);

/// A segment's id and bounding box as stored: min lon, min lat, max lon, max lat.
pub(crate) type BoxRow = (String, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

impl Store {
    /// Import a cadastre (see the module doc): one transaction, rolled back when `dry_run`.
    pub async fn import_cadastre(
        &self,
        segments: &[CadastreSegment],
        link_max_distance_m: f64,
        at: EventTime,
        dry_run: bool,
    ) -> Result<ImportSummary, StoreError> {
        let positions: Vec<DevicePosition> = dispatch!(self, s => s.device_positions().await)?
            .into_iter()
            .map(|(id, lon, lat, bearing_deg)| {
                Ok(DevicePosition { id: parse_device(id)?, lon, lat, bearing_deg })
            })
            .collect::<Result<_, StoreError>>()?;
        let targets: Vec<LinkTarget<'_>> = segments
            .iter()
            .map(|s| LinkTarget {
                id: &s.segment.id,
                coordinates: &s.segment.coordinates,
                one_way: s.one_way,
            })
            .collect();
        let outcomes = link(&positions, &targets, link_max_distance_m);
        let mut links: Vec<(&DeviceId, &SegmentId)> = Vec::new();
        let mut summary = ImportSummary { dry_run, ..ImportSummary::default() };
        for o in &outcomes {
            match o {
                LinkOutcome::Linked { device, segment, .. } => links.push((device, segment)),
                LinkOutcome::Ambiguous { .. } => summary.ambiguous.push(o.clone()),
                LinkOutcome::Unmatched { device } => summary.unmatched.push(device.clone()),
            }
        }
        let applied = dispatch!(self, s => s.import_cadastre(segments, &links, at, dry_run).await)?;
        summary.added = applied.added;
        summary.changed = applied.changed;
        summary.unchanged = applied.unchanged;
        summary.retired = applied.retired_ids.len();
        summary.retired_ids = applied.retired_ids;
        summary.devices_linked = links.len();
        summary.devices_relinked = applied.relinked;
        Ok(summary)
    }

    /// The live segments with their bounding box crossing `[min_lon, min_lat, max_lon,
    /// max_lat]`, in id order.
    pub async fn segments_in(&self, bbox: [f64; 4]) -> Result<Vec<RoadSegment>, StoreError> {
        dispatch!(self, s => s.segments_in(bbox).await)
    }

    /// Set or clear a device's position (WGS84) and bearing (degrees clockwise from
    /// north); `false` when the device does not exist.
    pub async fn set_device_position(
        &self,
        id: &DeviceId,
        position: Option<[f64; 2]>,
        bearing_deg: Option<f64>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.set_device_position(id, position, bearing_deg).await)
    }

    /// Every retired segment's id and retirement time, in id order.
    pub async fn retired_segments(&self) -> Result<Vec<(SegmentId, EventTime)>, StoreError> {
        let rows = dispatch!(self, s => s.retired_segments().await)?;
        rows.into_iter().map(|(id, at)| Ok((crate::parse_segment(id)?, at))).collect()
    }

    /// A segment's version and the time it took effect (retired ones included).
    pub async fn segment_version(
        &self,
        id: &SegmentId,
    ) -> Result<Option<(i64, EventTime)>, StoreError> {
        dispatch!(self, s => s.segment_version(id).await)
    }
}
