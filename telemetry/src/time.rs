//! Event time: Unix milliseconds, parsed from integers or RFC 3339 strings.

use std::fmt;

/// A point in event time, Unix epoch milliseconds (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct EventTime(pub i64);

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("timestamp {0:?} is not RFC 3339")]
    NotRfc3339(String),
    #[error("timestamp {0} is not a whole number of milliseconds")]
    NotWhole(String),
    #[error("timestamp {0} is outside years 1970..=9999")]
    OutOfRange(String),
}

/// 9999-12-31T23:59:59.999Z
const MAX_MS: i64 = 253_402_300_799_999;

impl EventTime {
    pub fn from_millis(ms: i64) -> Result<Self, TimeError> {
        if (0..=MAX_MS).contains(&ms) {
            Ok(Self(ms))
        } else {
            Err(TimeError::OutOfRange(ms.to_string()))
        }
    }

    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeError> {
        let short = || s.chars().take(40).collect::<String>();
        let dt = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
            .map_err(|_| TimeError::NotRfc3339(short()))?;
        let ms = i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| TimeError::OutOfRange(short()))?;
        Self::from_millis(ms).map_err(|_| TimeError::OutOfRange(short()))
    }

    /// Unix milliseconds or RFC 3339: how times are written in queries, files and CLIs.
    pub fn parse_ms_or_rfc3339(s: &str) -> Result<Self, TimeError> {
        match s.parse::<i64>() {
            Ok(ms) => Self::from_millis(ms),
            Err(_) => Self::parse_rfc3339(s),
        }
    }

    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn to_offset_date_time(self) -> ::time::OffsetDateTime {
        // In range by construction (0..=MAX_MS), so this cannot fail for a parsed time.
        ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH)
    }

    pub fn from_offset_date_time(dt: ::time::OffsetDateTime) -> Self {
        Self((dt.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// Start of the tumbling window of `size_ms` that holds this time.
    pub fn floor(self, size_ms: i64) -> Self {
        Self(self.0 - self.0.rem_euclid(size_ms))
    }

    pub fn to_rfc3339(self) -> String {
        self.to_offset_date_time()
            .format(&::time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(
            EventTime::parse_rfc3339("2025-11-23T10:00:00.123Z"),
            Ok(EventTime(1_763_892_000_123))
        );
        assert_eq!(
            EventTime::parse_rfc3339("2025-11-23T11:00:00.123+01:00"),
            Ok(EventTime(1_763_892_000_123))
        );
        assert!(matches!(EventTime::parse_rfc3339("yesterday"), Err(TimeError::NotRfc3339(_))));
        assert!(matches!(
            EventTime::parse_rfc3339("1969-12-31T23:59:59Z"),
            Err(TimeError::OutOfRange(_))
        ));
    }

    #[test]
    fn millis_range_is_1970_to_9999() {
        assert!(EventTime::from_millis(-1).is_err());
        assert!(EventTime::from_millis(MAX_MS).is_ok());
        assert!(EventTime::from_millis(MAX_MS + 1).is_err());
        assert_eq!(EventTime(MAX_MS).to_rfc3339(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn floor_to_window() {
        assert_eq!(EventTime(1_763_892_000_123).floor(60_000), EventTime(1_763_892_000_000));
        assert_eq!(EventTime(60_000).floor(60_000), EventTime(60_000));
    }
}
