//! Query-string parsing that names the parameter at fault and refuses unknown ones.

use std::collections::BTreeMap;

use telemetry::{DeviceId, EventTime, MetricId, SegmentId, TimeSpecError};

use crate::error::ApiError;

pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_param("query", format!("query string is malformed: {e}")))?;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if v.chars().any(char::is_control) || k.chars().any(char::is_control) {
                return Err(ApiError::bad_param(
                    &k.replace(char::is_control, "?"),
                    "parameters must not contain control characters",
                ));
            }
            if map.contains_key(&k) {
                return Err(ApiError::bad_param(
                    &k,
                    format!("parameter {k:?} is given more than once"),
                ));
            }
            map.insert(k, v);
        }
        Ok(Self { map })
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        self.map.remove(name)
    }

    pub fn required(&mut self, name: &str) -> Result<String, ApiError> {
        self.take(name)
            .ok_or_else(|| ApiError::bad_param(name, format!("parameter {name:?} is required")))
    }

    /// Fail on any parameter not taken.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.into_keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::bad_param(
                &k,
                format!("unknown parameter {:?}", k.chars().take(64).collect::<String>()),
            )),
        }
    }
}

/// A `true`/`false` parameter; absent is false.
pub fn boolean(name: &str, v: Option<&str>) -> Result<bool, ApiError> {
    match v {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_param(name, format!("{name} must be true or false"))),
    }
}

pub fn device(name: &str, v: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(v).map_err(|e| ApiError::bad_param(name, e.to_string()))
}

pub fn segment(name: &str, v: &str) -> Result<SegmentId, ApiError> {
    SegmentId::parse(v).map_err(|e| ApiError::bad_param(name, e.to_string()))
}

pub fn metric(name: &str, v: &str) -> Result<MetricId, ApiError> {
    v.parse().map_err(|e: telemetry::UnknownMetric| ApiError::bad_param(name, e.to_string()))
}

/// A time parameter in any form of [`EventTime::parse_spec`] (Unix ms, RFC 3339, a UTC
/// date, `now`, `now-7d`), relative times counted from `now`, which a handler reads once
/// so that `from=now-1h&to=now` spans exactly an hour. 400 for what is not a time; 422
/// for a relative time that lands outside 1970..=9999 (well formed, but not now). A space
/// is read as `+`: a query string turns an unescaped `+` (`now+1h`, `…T09:00:00+01:00`)
/// into one, and no time has a space otherwise.
pub fn time(name: &str, v: &str, now: EventTime) -> Result<EventTime, ApiError> {
    EventTime::parse_spec(&v.replace(' ', "+"), now).map_err(|e| match e {
        TimeSpecError::RelativeOutOfRange(_) => {
            ApiError::bad_combination(name, format!("{name}: {e}"))
        }
        _ => ApiError::bad_param(name, format!("{name}: {e}")),
    })
}

/// A whole number, also written with a zero fraction (`5.0`): JSON Schema's `integer`.
pub fn whole<T: std::str::FromStr>(v: &str) -> Option<T> {
    let digits = match v.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b == b'0') => w,
        _ => v,
    };
    digits.parse().ok()
}

pub fn limit(name: &str, v: &str, max: usize) -> Result<usize, ApiError> {
    match whole::<usize>(v) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_param(name, format!("{name} must be a whole number in 1..={max}"))),
    }
}

/// Whether `[min_lon, min_lat, max_lon, max_lat]` is a WGS84 box with min before max.
pub fn valid_bbox(b: [f64; 4]) -> bool {
    let [min_lon, min_lat, max_lon, max_lat] = b;
    b.iter().all(|v| v.is_finite())
        && (-180.0..=180.0).contains(&min_lon)
        && (-180.0..=180.0).contains(&max_lon)
        && (-90.0..=90.0).contains(&min_lat)
        && (-90.0..=90.0).contains(&max_lat)
        && min_lon <= max_lon
        && min_lat <= max_lat
}

pub const BBOX_RULE: &str =
    "bbox must be min_lon,min_lat,max_lon,max_lat in WGS84 degrees, min before max";

/// `min_lon,min_lat,max_lon,max_lat`.
pub fn bbox(name: &str, v: &str) -> Result<[f64; 4], ApiError> {
    let parts: Vec<f64> = v
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_param(name, BBOX_RULE))?;
    let b: [f64; 4] = parts.try_into().map_err(|_| ApiError::bad_param(name, BBOX_RULE))?;
    let [min_lon, min_lat, max_lon, max_lat] = b;
    if valid_bbox(b) {
        Ok(b)
    } else if valid_bbox([min_lon.min(max_lon), min_lat.min(max_lat), min_lon, min_lat])
        && valid_bbox([max_lon.min(min_lon), max_lat.min(min_lat), max_lon, max_lat])
    {
        // Every coordinate in range: only their order is wrong.
        Err(ApiError::bad_combination(name, BBOX_RULE))
    } else {
        Err(ApiError::bad_param(name, BBOX_RULE))
    }
}

/// The segments with a point inside the box.
pub fn segments_in_bbox(segments: &[telemetry::RoadSegment], b: [f64; 4]) -> Vec<SegmentId> {
    let [min_lon, min_lat, max_lon, max_lat] = b;
    segments
        .iter()
        .filter(|s| {
            s.coordinates.iter().any(|[lon, lat]| {
                (min_lon..=max_lon).contains(lon) && (min_lat..=max_lat).contains(lat)
            })
        })
        .map(|s| s.id.clone())
        .collect()
}
