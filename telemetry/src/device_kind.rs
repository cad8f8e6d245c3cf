//! The kinds of field device SCCR knows, one closed set used wherever a kind is written:
//! device registration (`POST`/`PATCH /api/v1/devices`) and alert rule scopes
//! (`scope = { kind = "…" }`). A kind outside the set is refused naming the valid ones
//! (and the closest, for a typo), so a misspelt kind can neither be registered nor make a
//! rule that silently matches nothing.
//!
//! The set is what the field side has drivers for (the edge agent's `traffic_loop`,
//! `traffic_light`, `parking`, `air_quality`) plus `gateway`, a cabinet or edge agent that
//! carries other devices' traffic. A new kind of device is a change here (and in the
//! docs), like a new metric in the catalogue.

use std::fmt;
use std::str::FromStr;

/// A kind of field device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// An inductive loop (or radar) traffic detector: vehicle counts, speed, occupancy.
    TrafficLoop,
    /// A traffic-light controller: phase, cycle, faults.
    TrafficLight,
    /// A parking sensor or car park counter: free spaces, occupied.
    Parking,
    /// An air-quality station: NO2, PM10, PM2.5, O3, temperature, humidity.
    AirQuality,
    /// A cabinet or edge agent through which other devices are reached.
    Gateway,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 5] = [
        DeviceKind::TrafficLoop,
        DeviceKind::TrafficLight,
        DeviceKind::Parking,
        DeviceKind::AirQuality,
        DeviceKind::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TrafficLoop => "traffic_loop",
            Self::TrafficLight => "traffic_light",
            Self::Parking => "parking",
            Self::AirQuality => "air_quality",
            Self::Gateway => "gateway",
        }
    }

    /// The kinds' names, comma-separated, for error messages and documentation.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device kind that is not one of [`DeviceKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device kind {given:?}{}; the kinds are {}", crate::suggest::did_you_mean(*suggestion), DeviceKind::names())]
pub struct UnknownDeviceKind {
    /// What was given (at most 64 characters of it).
    pub given: String,
    /// The known kind closest to it, if one is close.
    pub suggestion: Option<&'static str>,
}

impl FromStr for DeviceKind {
    type Err = UnknownDeviceKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownDeviceKind {
            given: s.chars().take(64).collect(),
            suggestion: crate::suggest::closest(s, Self::ALL.map(Self::as_str)),
        })
    }
}

impl serde::Serialize for DeviceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DeviceKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_and_a_typo_is_refused_with_the_closest_kind() {
        for k in DeviceKind::ALL {
            assert_eq!(k.as_str().parse::<DeviceKind>().unwrap(), k);
        }
        let e = "air_qualty".parse::<DeviceKind>().unwrap_err();
        assert_eq!(e.suggestion, Some("air_quality"));
        assert_eq!(
            e.to_string(),
            "unknown device kind \"air_qualty\" (did you mean \"air_quality\"?); the kinds are \
             traffic_loop, traffic_light, parking, air_quality, gateway"
        );
        let e = "weather".parse::<DeviceKind>().unwrap_err();
        assert_eq!(e.suggestion, None);
        assert!(e.to_string().starts_with("unknown device kind \"weather\"; the kinds are"));
        assert!("Traffic_Loop".parse::<DeviceKind>().is_err(), "kinds are lower case");
    }
}
