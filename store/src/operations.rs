//! Road operations: incidents, roadworks, closures and planned events on the Road Cadastre
//! (docs/operations.md).
//!
//! Invariants kept here:
//! - **One definition of an operation**: [`Operation`] is what REST returns, the websocket
//!   pushes and the outbox event's `data` carries; the store keeps it whole (`body`) beside
//!   the columns lists filter on, written together by every change.
//! - **Lifecycle**: planned → active → ended; planned | active → cancelled
//!   ([`OperationStatus::can_become`]). Ended and cancelled are final: any change to a final
//!   operation fails with [`StoreError::OperationFinal`] and writes nothing.
//! - **Optimistic concurrency**: every change increments `version` and is written with
//!   `WHERE version = <the version read>`; a write that names a stale version fails with
//!   [`StoreError::OperationVersion`] and changes nothing, so a second writer never
//!   overwrites the first one's change unseen.
//! - **Audit trail and outbox with the change**: each change writes its
//!   `operation_changes` row (who, when, the action, each changed field's before and
//!   after) and its outbox event (`it.firenze.sccr.operation.*`, subject `operation/<id>`) in the
//!   transaction of the change.
//! - **Idempotent creation**: a creation with an idempotency key that its creator used
//!   before returns the operation created then ([`Created::Existing`]) when the request is
//!   the same (its digest), and [`Created::KeyReused`] otherwise; nothing is written twice.

use serde::{Deserialize, Serialize};
use telemetry::{EventTime, SegmentId};

use crate::outbox::OutboxEvent;
use crate::{Store, StoreError};

/// CloudEvents types of operation changes (subject: `operation/<id>`).
pub mod event_type {
    pub const CREATED: &str = "it.firenze.sccr.operation.created";
    pub const UPDATED: &str = "it.firenze.sccr.operation.updated";
    pub const STATUS_CHANGED: &str = "it.firenze.sccr.operation.status_changed";
    pub const NOTE_ADDED: &str = "it.firenze.sccr.operation.note_added";
}

/// Bounds of what one operation may hold.
pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 4_000;
pub const MAX_NOTE: usize = 2_000;
pub const MAX_NOTES: usize = 500;
pub const MAX_SEGMENTS: usize = 500;
pub const MAX_LINKED_ALERTS: usize = 200;
pub const MAX_AREA_POSITIONS: usize = 2_000;
pub const MAX_EXTERNAL_REF: usize = 128;
/// The most operations one list page holds.
pub const MAX_PAGE: usize = 500;

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($v),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }

            /// The accepted words, for messages: `a, b or c`.
            pub fn names() -> String {
                let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                match all.split_last() {
                    Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                    _ => all.join(""),
                }
            }

        }
    };
}

word_enum!(
    /// What an operation is.
    OperationKind {
        Incident = "incident", Roadworks = "roadworks", Closure = "closure", Event = "event",
    }
);
word_enum!(
    OperationSeverity {
        Minor = "minor", Moderate = "moderate", Major = "major", Critical = "critical",
    }
);
word_enum!(
    /// Where an operation is in its lifecycle.
    OperationStatus {
        Planned = "planned", Active = "active", Ended = "ended", Cancelled = "cancelled",
    }
);

impl OperationStatus {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Ended | Self::Cancelled)
    }

    /// The lifecycle: planned → active → ended; planned | active → cancelled.
    pub fn can_become(self, to: OperationStatus) -> bool {
        use OperationStatus::*;
        matches!((self, to), (Planned, Active) | (Active, Ended) | (Planned | Active, Cancelled))
    }
}

/// RFC 3339 (UTC, milliseconds) for the operation's times, as the contract shows them.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use telemetry::EventTime;

    pub fn serialize<S: Serializer>(t: &EventTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EventTime, D::Error> {
        let s = String::deserialize(d)?;
        EventTime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<EventTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&t.to_rfc3339()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EventTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| EventTime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// The planned window: both ends required, `from` before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedWindow {
    #[serde(with = "rfc3339")]
    pub from: EventTime,
    #[serde(with = "rfc3339")]
    pub to: EventTime,
}

/// What actually happened: set by the status moves (or given with them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ActualWindow {
    #[serde(with = "rfc3339::option")]
    pub from: Option<EventTime>,
    #[serde(with = "rfc3339::option")]
    pub to: Option<EventTime>,
}

/// One entry of an operation's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationNote {
    #[serde(with = "rfc3339")]
    pub at: EventTime,
    /// The token's name.
    pub by: String,
    pub text: String,
}

/// An operation, as the API shows it (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub version: i64,
    pub kind: OperationKind,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub severity: OperationSeverity,
    pub status: OperationStatus,
    pub agency: String,
    pub segments: Vec<String>,
    /// The segments an operation given by a point or an area (and no segments) touches,
    /// resolved by the store when it is written ([`Store::place_operation`]): the segment
    /// nearest the point, the segments reaching into the area. Empty when `segments` is
    /// given. Not settable by clients.
    #[serde(default)]
    pub derived_segments: Vec<String>,
    pub point: Option<[f64; 2]>,
    /// A GeoJSON Polygon.
    pub area: Option<serde_json::Value>,
    pub closes_road: bool,
    pub planned: PlannedWindow,
    pub actual: ActualWindow,
    pub notes: Vec<OperationNote>,
    pub linked_alerts: Vec<i64>,
    pub external_ref: Option<String>,
    #[serde(with = "rfc3339")]
    pub created_at: EventTime,
    pub created_by: String,
    #[serde(with = "rfc3339")]
    pub updated_at: EventTime,
    pub updated_by: String,
}

/// A field that makes an operation invalid, and why.
pub fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError::OperationInvalid { field: field.to_owned(), message: message.into() }
}

fn check_text(field: &str, s: &str, max: usize, required: bool) -> Result<(), StoreError> {
    if required && s.trim().is_empty() {
        return Err(invalid(field, format!("{field} must not be empty")));
    }
    if s.chars().count() > max {
        return Err(invalid(field, format!("{field} must be at most {max} characters")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(())
}

fn check_position(field: &str, p: [f64; 2]) -> Result<(), StoreError> {
    let [lon, lat] = p;
    if !lon.is_finite()
        || !lat.is_finite()
        || !(-180.0..=180.0).contains(&lon)
        || !(-90.0..=90.0).contains(&lat)
    {
        return Err(invalid(
            field,
            format!("{field}: [{lon}, {lat}] is not a WGS84 [lon, lat] position"),
        ));
    }
    Ok(())
}

/// Whether the segments `a-b` and `c-d` cross (properly, or by touching away from shared
/// end points).
fn segments_cross(a: [f64; 2], b: [f64; 2], c: [f64; 2], d: [f64; 2]) -> bool {
    let orient = |p: [f64; 2], q: [f64; 2], r: [f64; 2]| {
        let v = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]);
        if v > 0.0 {
            1
        } else if v < 0.0 {
            -1
        } else {
            0
        }
    };
    let (o1, o2, o3, o4) = (orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b));
    o1 != 0 && o2 != 0 && o3 != 0 && o4 != 0 && o1 != o2 && o3 != o4
}

/// The rings of a GeoJSON Polygon, checked: closed rings of at least four positions within
/// WGS84, whose edges do not cross, at most [`MAX_AREA_POSITIONS`] positions in all.
pub fn polygon_rings(area: &serde_json::Value) -> Result<Vec<Vec<[f64; 2]>>, StoreError> {
    let bad = |m: String| invalid("area", m);
    let obj =
        area.as_object().ok_or_else(|| bad("area must be a GeoJSON Polygon object".into()))?;
    if obj.get("type").and_then(|t| t.as_str()) != Some("Polygon") {
        return Err(bad("area must be a GeoJSON object with \"type\": \"Polygon\"".into()));
    }
    let rings = obj
        .get("coordinates")
        .and_then(|c| c.as_array())
        .ok_or_else(|| bad("area.coordinates must be an array of linear rings".into()))?;
    if rings.is_empty() {
        return Err(bad("area.coordinates must hold at least the outer ring".into()));
    }
    let mut out = Vec::with_capacity(rings.len());
    let mut total = 0usize;
    for (i, ring) in rings.iter().enumerate() {
        let ring = ring
            .as_array()
            .ok_or_else(|| bad(format!("area ring {i} must be an array of positions")))?;
        total += ring.len();
        if total > MAX_AREA_POSITIONS {
            return Err(bad(format!("area holds more than {MAX_AREA_POSITIONS} positions")));
        }
        let mut positions = Vec::with_capacity(ring.len());
        for (j, p) in ring.iter().enumerate() {
            let pair = p
                .as_array()
                .filter(|a| a.len() == 2)
                .and_then(|a| Some([a[0].as_f64()?, a[1].as_f64()?]));
            let Some(pair) = pair else {
                return Err(bad(format!("area ring {i} position {j} must be [lon, lat]")));
            };
            check_position("area", pair)?;
            positions.push(pair);
        }
        if positions.len() < 4 {
            return Err(bad(format!("area ring {i} must have at least 4 positions")));
        }
        if positions.first() != positions.last() {
            return Err(bad(format!(
                "area ring {i} is not closed (its last position must repeat its first)"
            )));
        }
        let n = positions.len() - 1;
        for a in 0..n {
            for b in a + 1..n {
                let (p1, p2, q1, q2) =
                    (positions[a], positions[a + 1], positions[b], positions[b + 1]);
                if segments_cross(p1, p2, q1, q2) {
                    return Err(bad(format!("area ring {i} crosses itself (edges {a} and {b})")));
                }
            }
        }
        out.push(positions);
    }
    Ok(out)
}

impl Operation {
    /// The window lists select on, in ms: actual, else planned; an active operation
    /// without an actual end runs on.
    pub fn window(&self) -> (i64, i64) {
        let from = self.actual.from.unwrap_or(self.planned.from).millis();
        let to = match (self.actual.to, self.status) {
            (Some(t), _) => t.millis(),
            (None, OperationStatus::Active) => i64::MAX,
            (None, _) => self.planned.to.millis(),
        };
        (from, to)
    }

    /// The segments the operation affects: its own, else those derived from its point or
    /// area. What suppression, the segment look-up, the impact and the wall use.
    pub fn affected_segments(&self) -> &[String] {
        if self.segments.is_empty() {
            &self.derived_segments
        } else {
            &self.segments
        }
    }

    /// Whether the operation explains alerts on its segments and devices now: active, and
    /// closing the road or roadworks.
    pub fn suppresses_alerts(&self) -> bool {
        self.status == OperationStatus::Active
            && (self.closes_road || self.kind == OperationKind::Roadworks)
    }

    /// Every check that needs no database (segments' existence is the store's).
    pub fn validate(&self) -> Result<(), StoreError> {
        check_text("title", &self.title, MAX_TITLE, true)?;
        if let Some(d) = &self.description {
            check_text("description", d, MAX_DESCRIPTION, true)?;
        }
        let agency_ok = (1..=64).contains(&self.agency.len())
            && self
                .agency
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !agency_ok {
            return Err(invalid(
                "agency",
                "agency must be 1 to 64 characters of a-z, 0-9, _ and -",
            ));
        }
        if self.segments.len() > MAX_SEGMENTS {
            return Err(invalid("segments", format!("at most {MAX_SEGMENTS} segments")));
        }
        for s in &self.segments {
            SegmentId::parse(s).map_err(|e| invalid("segments", format!("{s:?}: {e}")))?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.segments.iter().find(|s| !seen.insert(s.as_str())) {
            return Err(invalid("segments", format!("segment {dup} is listed twice")));
        }
        if let Some(p) = self.point {
            check_position("point", p)?;
        }
        if let Some(a) = &self.area {
            polygon_rings(a)?;
        }
        if self.derived_segments.len() > MAX_SEGMENTS {
            return Err(invalid("area", format!("at most {MAX_SEGMENTS} derived segments")));
        }
        if self.segments.is_empty() && self.point.is_none() && self.area.is_none() {
            return Err(invalid("segments", "an operation needs segments, a point or an area"));
        }
        if self.planned.to <= self.planned.from {
            return Err(invalid("planned.to", "the planned window must end after it starts"));
        }
        if let (Some(from), Some(to)) = (self.actual.from, self.actual.to) {
            if to < from {
                return Err(invalid(
                    "actual.to",
                    "the actual window must not end before it starts",
                ));
            }
        }
        if self.notes.len() > MAX_NOTES {
            return Err(invalid("notes", format!("at most {MAX_NOTES} notes")));
        }
        for n in &self.notes {
            check_text("text", &n.text, MAX_NOTE, true)?;
        }
        if self.linked_alerts.len() > MAX_LINKED_ALERTS {
            return Err(invalid(
                "linked_alerts",
                format!("at most {MAX_LINKED_ALERTS} linked alerts"),
            ));
        }
        if self.linked_alerts.iter().any(|a| *a < 1) {
            return Err(invalid("linked_alerts", "alert ids are positive integers"));
        }
        if let Some(r) = &self.external_ref {
            check_text("external_ref", r, MAX_EXTERNAL_REF, true)?;
        }
        Ok(())
    }

    /// The bounding box of the point, the area and the given boxes (those of the
    /// operation's segments).
    pub(crate) fn bbox(&self, segment_boxes: &[[f64; 4]]) -> Option<[f64; 4]> {
        let mut positions: Vec<[f64; 2]> =
            segment_boxes.iter().flat_map(|b| [[b[0], b[1]], [b[2], b[3]]]).collect();
        positions.extend(self.point);
        if let Some(rings) = self.area.as_ref().and_then(|a| polygon_rings(a).ok()) {
            positions.extend(rings.into_iter().flatten());
        }
        positions.iter().fold(None, |b, p| {
            Some(match b {
                None => [p[0], p[1], p[0], p[1]],
                Some([a, b, c, d]) => {
                    [f64::min(a, p[0]), f64::min(b, p[1]), f64::max(c, p[0]), f64::max(d, p[1])]
                }
            })
        })
    }

    /// Each top-level field whose value differs from `before`'s: `{field: [before, after]}`
    /// (version and the update stamps left out).
    pub fn changes_from(&self, before: &Operation) -> serde_json::Value {
        let (a, b) = (serde_json::to_value(before), serde_json::to_value(self));
        let mut out = serde_json::Map::new();
        if let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) {
            for (k, after) in b {
                if matches!(k.as_str(), "version" | "updated_at" | "updated_by") {
                    continue;
                }
                let before = a.get(&k).cloned().unwrap_or(serde_json::Value::Null);
                if before != after {
                    out.insert(k, serde_json::json!([before, after]));
                }
            }
        }
        serde_json::Value::Object(out)
    }

    pub(crate) fn from_body(text: String) -> Result<Self, StoreError> {
        serde_json::from_str(&text).map_err(|_| StoreError::Corrupt {
            what: "operation",
            value: text.chars().take(80).collect(),
        })
    }
}

/// What a creation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// Stored now.
    New(Operation),
    /// The creator used this idempotency key for the same request before: that operation.
    Existing(Operation),
    /// The creator used this idempotency key for another request (the operation's id).
    KeyReused(String),
}

/// One entry of an operation's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationChange {
    pub version: i64,
    #[serde(with = "rfc3339")]
    pub at: EventTime,
    pub by: String,
    /// `created`, `updated`, `status_changed`, `note_added`.
    pub action: String,
    /// `{field: [before, after]}`; on creation, the whole operation.
    pub changes: serde_json::Value,
}

/// One row of the trail (`version`, `at_ms`, `by_name`, `action`, `changes` as JSON
/// text), as both backends read it.
pub(crate) fn change_from_row<'r, R>(r: &'r R) -> Result<OperationChange, StoreError>
where
    R: sqlx::Row,
    &'static str: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OperationChange {
        version: r.try_get("version")?,
        at: EventTime(r.try_get("at_ms")?),
        by: r.try_get("by_name")?,
        action: r.try_get("action")?,
        changes: crate::access::json_column(r.try_get("changes")?)?,
    })
}

/// A list's selection (see docs/operations.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperationFilter {
    /// Empty: planned and active.
    pub statuses: Vec<OperationStatus>,
    pub kind: Option<OperationKind>,
    pub agency: Option<String>,
    /// min lon, min lat, max lon, max lat.
    pub bbox: Option<[f64; 4]>,
    /// The window (actual, else planned) overlaps [from, to).
    pub from: Option<EventTime>,
    pub to: Option<EventTime>,
    /// Operations after this id (the previous page's `next_cursor`).
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationPage {
    pub operations: Vec<Operation>,
    pub next_cursor: Option<String>,
}

/// A row to write: the operation and its list columns.
pub(crate) struct OperationRow<'a> {
    pub op: &'a Operation,
    pub body: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub bbox: Option<[f64; 4]>,
}

/// The change's trail entry and event, written with it.
pub(crate) struct ChangeWrite {
    pub action: &'static str,
    pub changes: String,
    pub event: OutboxEvent,
}

/// What a change is called in the trail, and its event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Updated,
    StatusChanged,
    NoteAdded,
}

impl ChangeKind {
    fn action(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::StatusChanged => "status_changed",
            Self::NoteAdded => "note_added",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Self::Updated => event_type::UPDATED,
            Self::StatusChanged => event_type::STATUS_CHANGED,
            Self::NoteAdded => event_type::NOTE_ADDED,
        }
    }
}

fn event(op: &Operation, kind: &str) -> OutboxEvent {
    OutboxEvent {
        event_type: kind.to_owned(),
        subject: format!("operation/{}", op.id),
        time: op.updated_at,
        data: serde_json::to_value(op).unwrap_or_default(),
    }
}

/// How often a change without an expected version is retried after losing a race.
const RETRIES: usize = 32;

/// Operations: see the module doc. The SQL is each backend's (`pg/operations.rs`,
/// `sqlite/operations.rs`).
impl Store {
    /// The bounding boxes of the operation's own segments, read for those segments only;
    /// fails naming `segments` when one does not exist.
    async fn segment_boxes(&self, op: &Operation) -> Result<Vec<[f64; 4]>, StoreError> {
        if op.segments.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = op.segments.iter().map(String::as_str).collect();
        let rows = dispatch!(self, s => s.segment_boxes(&ids).await)?;
        let found: std::collections::HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let unknown: Vec<&str> = ids.iter().copied().filter(|id| !found.contains(id)).collect();
        if !unknown.is_empty() {
            return Err(invalid(
                "segments",
                format!("unknown road segment(s): {}", unknown.join(", ")),
            ));
        }
        Ok(rows.into_iter().filter_map(|(_, a, b, c, d)| Some([a?, b?, c?, d?])).collect())
    }

    async fn row<'a>(&self, op: &'a Operation) -> Result<OperationRow<'a>, StoreError> {
        op.validate()?;
        let boxes = self.segment_boxes(op).await?;
        let (from_ms, to_ms) = op.window();
        Ok(OperationRow {
            op,
            body: serde_json::to_string(op).unwrap_or_default(),
            from_ms,
            to_ms,
            bbox: op.bbox(&boxes),
        })
    }

    /// Resolve an operation given by a point or an area (and no segments) to the segments
    /// it touches, into [`Operation::derived_segments`]: for a point, the live segment
    /// nearest it within `max_distance_m` (the cadastre's device matching,
    /// [`telemetry::cadastre::link`]; where two or more lie within 20 % of the nearest
    /// distance, as at a junction, all of them); for an area, every live segment reaching
    /// into the polygon. An operation with segments has none derived. Fails naming `area`
    /// when the area touches more than [`MAX_SEGMENTS`] segments.
    pub async fn place_operation(
        &self,
        op: &mut Operation,
        max_distance_m: f64,
    ) -> Result<(), StoreError> {
        op.derived_segments.clear();
        if !op.segments.is_empty() {
            return Ok(());
        }
        let mut found: std::collections::BTreeSet<String> = Default::default();
        if let Some(rings) = op.area.as_ref().map(polygon_rings).transpose()? {
            if let Some(b) = op.bbox(&[]) {
                for s in self.segments_in(b).await? {
                    if telemetry::cadastre::geometry::line_meets_polygon(&s.coordinates, &rings) {
                        found.insert(s.id.as_str().to_owned());
                    }
                }
            }
            if found.len() > MAX_SEGMENTS {
                return Err(invalid(
                    "area",
                    format!(
                        "the area reaches into {} road segments; at most {MAX_SEGMENTS}",
                        found.len()
                    ),
                ));
            }
        } else if let Some([lon, lat]) = op.point {
            use telemetry::cadastre::link::{link, DevicePosition, LinkOutcome, LinkTarget};
            let (kx, ky) = telemetry::cadastre::geometry::metres_per_degree(lat);
            let (dx, dy) = (max_distance_m / kx, max_distance_m / ky);
            let near = self.segments_in([lon - dx, lat - dy, lon + dx, lat + dy]).await?;
            let targets: Vec<LinkTarget<'_>> = near
                .iter()
                .map(|s| LinkTarget { id: &s.id, coordinates: &s.coordinates, one_way: false })
                .collect();
            let id = telemetry::DeviceId::parse("operation-point")
                .map_err(|e| invalid("point", e.to_string()))?;
            let place = DevicePosition { id, lon, lat, bearing_deg: None };
            match link(&[place], &targets, max_distance_m).pop() {
                Some(LinkOutcome::Linked { segment, .. }) => {
                    found.insert(segment.as_str().to_owned());
                }
                Some(LinkOutcome::Ambiguous { candidates, .. }) => {
                    found.extend(candidates.into_iter().map(|c| c.segment.as_str().to_owned()));
                }
                _ => {}
            }
        }
        op.derived_segments = found.into_iter().collect();
        Ok(())
    }

    /// Store a new operation (version 1) with its trail entry and `created` event, or, for
    /// an idempotency key its creator used before, say what was stored then.
    /// `request_digest` identifies the request (same key and digest: the same operation).
    pub async fn create_operation(
        &self,
        op: &Operation,
        key: Option<&str>,
        request_digest: &str,
    ) -> Result<Created, StoreError> {
        let row = self.row(op).await?;
        let write = ChangeWrite {
            action: "created",
            changes: row.body.clone(),
            event: event(op, event_type::CREATED),
        };
        if dispatch!(self, s => s.insert_operation(&row, key, request_digest, &write).await)? {
            return Ok(Created::New(op.clone()));
        }
        let key = key.unwrap_or_default();
        match dispatch!(self, s => s.operation_by_key(&op.created_by, key).await)? {
            Some((existing, digest)) if digest.as_deref() == Some(request_digest) => {
                Ok(Created::Existing(existing))
            }
            Some((existing, _)) => Ok(Created::KeyReused(existing.id)),
            // Lost to a concurrent creation that was then rolled back: nothing stored.
            None => Err(invalid(
                "Idempotency-Key",
                "the key is in use by a request still in flight; retry",
            )),
        }
    }

    pub async fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        dispatch!(self, s => s.operation(id).await)
    }

    /// A page of operations in id (creation) order.
    pub async fn operations(&self, f: &OperationFilter) -> Result<OperationPage, StoreError> {
        let statuses = if f.statuses.is_empty() {
            ",planned,active,".to_owned()
        } else {
            format!(",{},", f.statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(","))
        };
        let limit = f.limit.clamp(1, MAX_PAGE);
        let mut ops = dispatch!(self, s => s.operations(f, &statuses, limit as i64 + 1).await)?;
        let next_cursor = if ops.len() > limit {
            ops.truncate(limit);
            ops.last().map(|o| o.id.clone())
        } else {
            None
        };
        Ok(OperationPage { operations: ops, next_cursor })
    }

    /// Operations in force or about to be: active, and planned ones starting before `until`.
    pub async fn current_operations(&self, until: EventTime) -> Result<Vec<Operation>, StoreError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .operations(&OperationFilter {
                    after: after.clone(),
                    limit: MAX_PAGE,
                    ..Default::default()
                })
                .await?;
            out.extend(
                page.operations.into_iter().filter(|o| {
                    o.status == OperationStatus::Active || o.window().0 < until.millis()
                }),
            );
            match page.next_cursor {
                Some(c) => after = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// The active operations that explain alerts ([`Operation::suppresses_alerts`]).
    pub async fn suppressing_operations(&self) -> Result<Vec<Operation>, StoreError> {
        let ops = self.current_operations(EventTime(i64::MIN)).await?;
        Ok(ops.into_iter().filter(Operation::suppresses_alerts).collect())
    }

    /// Change an operation: read it, check it is not final and (with `expected`) that its
    /// version is the one named, apply `change`, check the result, and write it with the
    /// next version, its trail entry and its event. Without `expected` a lost race is
    /// retried on the newer version; with it, it fails with
    /// [`StoreError::OperationVersion`].
    pub async fn change_operation<F>(
        &self,
        id: &str,
        expected: Option<i64>,
        by: &str,
        at: EventTime,
        kind: ChangeKind,
        mut change: F,
    ) -> Result<Operation, StoreError>
    where
        F: FnMut(&mut Operation) -> Result<(), StoreError>,
    {
        for _ in 0..RETRIES {
            let Some(before) = self.operation(id).await? else {
                return Err(StoreError::OperationNotFound(id.to_owned()));
            };
            if let Some(v) = expected {
                if v != before.version {
                    return Err(StoreError::OperationVersion {
                        id: id.to_owned(),
                        expected: v,
                        current: before.version,
                    });
                }
            }
            if before.status.is_final() {
                return Err(StoreError::OperationFinal {
                    id: id.to_owned(),
                    status: before.status.as_str(),
                });
            }
            let mut after = before.clone();
            change(&mut after)?;
            after.id = before.id.clone();
            after.created_at = before.created_at;
            after.created_by = before.created_by.clone();
            after.version = before.version + 1;
            after.updated_at = at;
            after.updated_by = by.to_owned();
            let row = self.row(&after).await?;
            let write = ChangeWrite {
                action: kind.action(),
                changes: after.changes_from(&before).to_string(),
                event: event(&after, kind.event_type()),
            };
            if dispatch!(self, s => s.update_operation(&row, before.version, &write).await)? {
                return Ok(after);
            }
            if expected.is_some() {
                let current = self.operation(id).await?.map_or(before.version, |o| o.version);
                return Err(StoreError::OperationVersion {
                    id: id.to_owned(),
                    expected: before.version,
                    current,
                });
            }
        }
        Err(StoreError::OperationVersion { id: id.to_owned(), expected: 0, current: 0 })
    }

    /// Move an operation along its lifecycle ([`OperationStatus::can_become`]; an illegal
    /// move fails with [`StoreError::OperationTransition`]). Becoming active sets the
    /// actual start, ending (or cancelling an active one) the actual end: `at`, else `now`.
    pub async fn move_operation(
        &self,
        id: &str,
        expected: Option<i64>,
        to: OperationStatus,
        at: Option<EventTime>,
        by: &str,
        now: EventTime,
    ) -> Result<Operation, StoreError> {
        let when = at.unwrap_or(now);
        self.change_operation(id, expected, by, now, ChangeKind::StatusChanged, |op| {
            if !op.status.can_become(to) {
                return Err(StoreError::OperationTransition {
                    id: op.id.clone(),
                    from: op.status.as_str(),
                    to: to.as_str(),
                });
            }
            match to {
                OperationStatus::Active => op.actual.from = Some(when),
                OperationStatus::Ended => op.actual.to = Some(when),
                OperationStatus::Cancelled if op.status == OperationStatus::Active => {
                    op.actual.to = Some(when)
                }
                _ => {}
            }
            op.status = to;
            Ok(())
        })
        .await
    }

    /// Add a note to an operation's timeline.
    pub async fn add_operation_note(
        &self,
        id: &str,
        by: &str,
        text: &str,
        now: EventTime,
    ) -> Result<Operation, StoreError> {
        check_text("text", text, MAX_NOTE, true)?;
        self.change_operation(id, None, by, now, ChangeKind::NoteAdded, |op| {
            if op.notes.len() >= MAX_NOTES {
                return Err(invalid(
                    "text",
                    format!("the operation holds {MAX_NOTES} notes already"),
                ));
            }
            op.notes.push(OperationNote { at: now, by: by.to_owned(), text: text.to_owned() });
            Ok(())
        })
        .await
    }

    /// An operation's audit trail, oldest first.
    pub async fn operation_changes(&self, id: &str) -> Result<Vec<OperationChange>, StoreError> {
        dispatch!(self, s => s.operation_changes(id).await)
    }

    /// Ids of planned and active operations that cover `segment`.
    pub async fn operations_on_segment(&self, segment: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, s => s.operations_on_segment(segment).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Operation {
        Operation {
            id: "op-1".into(),
            version: 1,
            kind: OperationKind::Roadworks,
            title: "Works".into(),
            description: None,
            severity: OperationSeverity::Moderate,
            status: OperationStatus::Planned,
            agency: "utilities".into(),
            segments: vec![],
            derived_segments: vec![],
            point: Some([11.25, 43.77]),
            area: None,
            closes_road: false,
            planned: PlannedWindow { from: EventTime(1_000), to: EventTime(2_000) },
            actual: ActualWindow::default(),
            notes: vec![],
            linked_alerts: vec![],
            external_ref: None,
            created_at: EventTime(0),
            created_by: "ada".into(),
            updated_at: EventTime(0),
            updated_by: "ada".into(),
        }
    }

    #[test]
    fn lifecycle_moves() {
        use OperationStatus::*;
        assert!(Planned.can_become(Active) && Active.can_become(Ended));
        assert!(Planned.can_become(Cancelled) && Active.can_become(Cancelled));
        assert!(
            !Planned.can_become(Ended)
                && !Ended.can_become(Active)
                && !Cancelled.can_become(Active)
        );
        assert!(!Active.can_become(Planned));
    }

    #[test]
    fn validation_names_the_field() {
        let field = |op: &Operation| match op.validate() {
            Err(StoreError::OperationInvalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut op = sample();
        op.planned.to = EventTime(500);
        assert_eq!(field(&op), "planned.to");
        let mut op = sample();
        op.point = Some([200.0, 1.0]);
        assert_eq!(field(&op), "point");
        let mut op = sample();
        op.area = Some(
            serde_json::json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}),
        );
        assert_eq!(field(&op), "area", "a bow tie crosses itself");
        op.area = Some(
            serde_json::json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}),
        );
        assert!(op.validate().is_ok());
        op.area = Some(
            serde_json::json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
        );
        assert_eq!(field(&op), "area", "open ring");
        let mut op = sample();
        op.agency = "Police!".into();
        assert_eq!(field(&op), "agency");
        let mut op = sample();
        op.title = "a\u{0}b".into();
        assert_eq!(field(&op), "title");
        let mut op = sample();
        op.point = None;
        assert_eq!(field(&op), "segments");
    }

    #[test]
    fn json_matches_the_contract() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["planned"]["from"], "1970-01-01T00:00:01Z");
        assert_eq!(v["actual"]["from"], serde_json::Value::Null);
        assert_eq!(v["kind"], "roadworks");
        let back: Operation = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
        let mut later = sample();
        later.title = "Other".into();
        later.version = 2;
        assert_eq!(later.changes_from(&sample()), serde_json::json!({"title": ["Works", "Other"]}));
    }
}
