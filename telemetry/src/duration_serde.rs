//! `std::time::Duration` as a humantime string in serde (`"90s"`, `"1h 30m"`), so config
//! files and rule definitions never carry bare `*_ms` numbers. The one definition for
//! every crate (server and edge-agent configs, alert rules): use
//! `#[serde(with = "telemetry::duration_serde")]`; [`option`] does the same for
//! `Option<Duration>`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// What [`serialize`] writes (humantime's format: `"0s"`, `"90s"` as `"1m 30s"`, `"8h"`,
/// `"1year 2months 3days 4h"`), as a JSON Schema pattern: documents that show a duration
/// SCCR wrote (the alert rules in force) use it.
pub const WRITTEN_PATTERN: &str = "^(0s|[0-9]+(years?|months?|days?|h|m|s|ms|us|ns)( [0-9]+(years?|months?|days?|h|m|s|ms|us|ns)){0,8})$";

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// What a duration is, in the words of every error about one (a wrong type included:
/// `invalid type: integer `30`, expected a duration like "30s", "5m" or "2h"`).
pub const EXPECTED: &str = r#"a duration like "30s", "5m" or "2h""#;

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Humantime;
    impl serde::de::Visitor<'_> for Humantime {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            humantime::parse_duration(text)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
        }
    }
    d.deserialize_str(Humantime)
}

/// `Option<Duration>`: absent or a humantime string.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        every: Duration,
        #[serde(default, with = "super::option")]
        grace: Option<Duration>,
    }

    #[test]
    fn durations_round_trip_as_humantime_strings() {
        let h = Holder { every: Duration::from_secs(90), grace: Some(Duration::from_millis(1500)) };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, r#"{"every":"1m 30s","grace":"1s 500ms"}"#);
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);
        let h: Holder = serde_json::from_str(r#"{"every":"5m"}"#).unwrap();
        assert_eq!(h, Holder { every: Duration::from_secs(300), grace: None });
    }

    #[test]
    fn a_bare_number_is_refused_with_an_example() {
        let err = serde_json::from_str::<Holder>(r#"{"every":"300"}"#).unwrap_err().to_string();
        assert!(err.contains(r#"string "300", expected a duration like "30s""#), "{err}");
        let err = serde_json::from_str::<Holder>(r#"{"every":300}"#).unwrap_err().to_string();
        assert!(err.contains(r#"integer `300`, expected a duration like "30s""#), "{err}");
    }
}
