//! Event time: Unix milliseconds, parsed from integers or RFC 3339 strings; and the one
//! reader of times as people write them in queries and on command lines
//! ([`EventTime::parse_spec`]: also dates and times relative to now).

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

/// The forms [`EventTime::parse_spec`] reads, for messages and documentation.
pub const TIME_FORMS: &str = "Unix milliseconds (1793491200000), RFC 3339 (2026-11-01T08:00:00Z), \
     a date (2026-11-01, meaning 00:00 UTC), now, or now minus or plus a whole number of \
     s, m, h, d or w (now-24h, now-7d, now-30m, now+1h; -7d is now-7d)";

/// A time in a query or on a command line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeSpecError {
    /// Not one of the accepted forms, or a calendar date that does not exist.
    #[error("{0:?} is not a time; use {TIME_FORMS}")]
    Unreadable(String),
    /// A well-formed time outside years 1970..=9999.
    #[error("{0:?} is outside years 1970..=9999")]
    OutOfRange(String),
    /// A well-formed relative time that lands outside years 1970..=9999 from now.
    #[error("{0:?} is outside years 1970..=9999 counted from now")]
    RelativeOutOfRange(String),
}

/// Milliseconds of one unit of a relative time.
fn unit_ms(unit: u8) -> Option<i64> {
    Some(match unit {
        b's' => 1_000,
        b'm' => 60_000,
        b'h' => 3_600_000,
        b'd' => 86_400_000,
        b'w' => 7 * 86_400_000,
        _ => return None,
    })
}

/// `<1 to 9 digits><unit>` in milliseconds.
fn span_ms(s: &str) -> Option<i64> {
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit_ms(*unit.as_bytes().first()?)?)
}

/// `YYYY-MM-DD`: 00:00 UTC of that day.
fn date_ms(s: &str) -> Option<Result<i64, ()>> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    let (y, m, d) = (s[..4].parse().ok()?, s[5..7].parse::<u8>().ok()?, s[8..].parse().ok()?);
    let date = ::time::Month::try_from(m)
        .ok()
        .and_then(|m| ::time::Date::from_calendar_date(y, m, d).ok());
    Some(date.map(|d| d.midnight().assume_utc().unix_timestamp() * 1_000).ok_or(()))
}

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

    /// A time as people write it in queries and on command lines, the one reader of every
    /// API time parameter and of `sccr export --from/--to`: Unix milliseconds, RFC 3339, a
    /// date `YYYY-MM-DD` (00:00 UTC: dates are UTC days, as the rollups and export
    /// partitions are), `now`, or a time relative to `now` as Grafana writes it: `now-24h`,
    /// `now-7d`, `now+1h`, and `-30m` for `now-30m` (a whole number of 1 to 9 digits and one
    /// unit of `s`, `m`, `h`, `d`, `w`; no months or years, whose length varies).
    pub fn parse_spec(s: &str, now: EventTime) -> Result<Self, TimeSpecError> {
        let short = || s.chars().take(40).collect::<String>();
        let relative = match s.strip_prefix("now") {
            Some("") => return Ok(now),
            Some(rest) => Some(rest),
            // `-7d`; a negative number of milliseconds is read below (and refused).
            None if s.starts_with('-') && s.ends_with(|c: char| c.is_ascii_alphabetic()) => Some(s),
            None => None,
        };
        if let Some(rest) = relative {
            let (sign, span) = match rest.as_bytes().first() {
                Some(b'-') => (-1, &rest[1..]),
                Some(b'+') => (1, &rest[1..]),
                _ => return Err(TimeSpecError::Unreadable(short())),
            };
            let ms = span_ms(span).ok_or_else(|| TimeSpecError::Unreadable(short()))?;
            return now
                .0
                .checked_add(sign * ms)
                .and_then(|t| Self::from_millis(t).ok())
                .ok_or_else(|| TimeSpecError::RelativeOutOfRange(short()));
        }
        if let Some(date) = date_ms(s) {
            return date.map_err(|_| TimeSpecError::Unreadable(short())).and_then(|ms| {
                Self::from_millis(ms).map_err(|_| TimeSpecError::OutOfRange(short()))
            });
        }
        match Self::parse_ms_or_rfc3339(s) {
            Ok(t) => Ok(t),
            Err(TimeError::OutOfRange(_)) => Err(TimeSpecError::OutOfRange(short())),
            Err(_) => Err(TimeSpecError::Unreadable(short())),
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
    fn time_specs_in_every_accepted_form() {
        let now = EventTime(1_793_491_200_000 + 8 * 3_600_000); // 2026-11-01T08:00:00Z
        let spec = |s: &str| EventTime::parse_spec(s, now);
        assert_eq!(spec("1793491200000"), Ok(EventTime(1_793_491_200_000)));
        assert_eq!(spec("2026-11-01T08:00:00Z"), Ok(now));
        assert_eq!(spec("2026-11-01T09:00:00+01:00"), Ok(now));
        assert_eq!(spec("2026-11-01"), Ok(EventTime(1_793_491_200_000)));
        assert_eq!(spec("2024-02-29"), Ok(EventTime(1_709_164_800_000)));
        assert_eq!(spec("now"), Ok(now));
        assert_eq!(spec("now-24h"), Ok(EventTime(now.0 - 86_400_000)));
        assert_eq!(spec("now-7d"), Ok(EventTime(now.0 - 7 * 86_400_000)));
        assert_eq!(spec("-7d"), spec("now-7d"));
        assert_eq!(spec("now-30m"), Ok(EventTime(now.0 - 1_800_000)));
        assert_eq!(spec("now+1h"), Ok(EventTime(now.0 + 3_600_000)));
        assert_eq!(spec("now-2w"), Ok(EventTime(now.0 - 14 * 86_400_000)));
        assert_eq!(spec("now-90s"), Ok(EventTime(now.0 - 90_000)));
    }

    #[test]
    fn bad_time_specs_name_the_accepted_forms() {
        let now = EventTime(1_793_491_200_000);
        for bad in [
            "yesterday",
            "",
            " now",
            "now ",
            "now-",
            "now-h",
            "now-7",
            "now-7y",
            "now-1M",
            "now*7d",
            "now-7dd",
            "now--7d",
            "+7d",
            "now-1.5h",
            "now-1234567890s",
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "26-11-01",
            "2026-11-01T25:00:00Z",
            "1e9",
        ] {
            let e = EventTime::parse_spec(bad, now).expect_err(bad);
            assert!(matches!(e, TimeSpecError::Unreadable(_)), "{bad:?}: {e:?}");
            let text = e.to_string();
            assert!(text.contains("RFC 3339") && text.contains("now-24h"), "{text}");
        }
        for far in ["now-999999999w", "now+999999999w", "-30000d"] {
            let e = EventTime::parse_spec(far, now);
            assert!(matches!(e, Err(TimeSpecError::RelativeOutOfRange(_))), "{far:?}: {e:?}");
        }
        for far in ["-62135596800001", "-7", "253402300800000"] {
            let e = EventTime::parse_spec(far, now);
            assert!(matches!(e, Err(TimeSpecError::OutOfRange(_))), "{far:?}: {e:?}");
        }
        assert!(matches!(
            EventTime::parse_spec("99999-01-01T00:00:00Z", now),
            Err(TimeSpecError::Unreadable(_))
        ));
    }

    #[test]
    fn floor_to_window() {
        assert_eq!(EventTime(1_763_892_000_123).floor(60_000), EventTime(1_763_892_000_000));
        assert_eq!(EventTime(60_000).floor(60_000), EventTime(60_000));
    }
}
