//! Metric catalogue (docs/mqtt-contract.md): every metric SCCR accepts, its unit, the SenML units
//! it may arrive in, and the range a plausible reading lies in.

use std::fmt;
use std::str::FromStr;

/// What kind of quantity a metric is; decides how values are checked and aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A measured level (speed, concentration).
    Gauge,
    /// A count over the device's reporting interval (whole, non-negative).
    Count,
    /// 0 or 1 (SenML `vb`).
    Bool,
    /// A whole number naming a state (traffic-light phase).
    Code,
}

/// Catalogue entry of one metric.
#[derive(Debug)]
pub struct MetricSpec {
    pub id: MetricId,
    pub name: &'static str,
    /// Canonical unit of stored values.
    pub unit: &'static str,
    /// SenML units accepted on input, with the factor that converts to `unit`.
    pub senml_units: &'static [(&'static str, f64)],
    pub min: f64,
    pub max: f64,
    pub kind: MetricKind,
}

macro_rules! catalogue {
    ($( $variant:ident => $name:literal, $unit:literal, [$(($su:literal, $f:expr)),*], $min:expr, $max:expr, $kind:ident; )*) => {
        /// A known metric. Parsed from its name with [`MetricId::from_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MetricId { $($variant),* }

        static SPECS: &[MetricSpec] = &[
            $(MetricSpec {
                id: MetricId::$variant,
                name: $name,
                unit: $unit,
                senml_units: &[$(($su, $f)),*],
                min: $min,
                max: $max,
                kind: MetricKind::$kind,
            }),*
        ];

        impl MetricId {
            pub const ALL: &'static [MetricId] = &[$(MetricId::$variant),*];
        }
    };
}

catalogue! {
    VehicleCount => "vehicle_count", "veh", [("count", 1.0), ("veh", 1.0)], 0.0, 10_000.0, Count;
    SpeedKmh => "speed_kmh", "km/h", [("km/h", 1.0), ("m/s", 3.6)], 0.0, 250.0, Gauge;
    OccupancyPct => "occupancy_pct", "%", [("%", 1.0), ("/", 100.0)], 0.0, 100.0, Gauge;
    HeadwayS => "headway_s", "s", [("s", 1.0)], 0.0, 3_600.0, Gauge;
    Phase => "phase", "", [], 0.0, 15.0, Code;
    Fault => "fault", "", [], 0.0, 1.0, Bool;
    CycleS => "cycle_s", "s", [("s", 1.0)], 0.0, 600.0, Gauge;
    FreeSpaces => "free_spaces", "", [("count", 1.0)], 0.0, 10_000.0, Count;
    Occupied => "occupied", "", [], 0.0, 1.0, Bool;
    No2Ugm3 => "no2_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 2_000.0, Gauge;
    Pm10Ugm3 => "pm10_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 2_000.0, Gauge;
    Pm25Ugm3 => "pm25_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 1_000.0, Gauge;
    O3Ugm3 => "o3_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 1_000.0, Gauge;
    TemperatureC => "temperature_c", "Cel", [("Cel", 1.0)], -40.0, 60.0, Gauge;
    HumidityPct => "humidity_pct", "%RH", [("%RH", 1.0)], 0.0, 100.0, Gauge;
    BatteryV => "battery_v", "V", [("V", 1.0)], 0.0, 60.0, Gauge;
    RssiDbm => "rssi_dbm", "dBm", [("dBm", 1.0)], -150.0, 0.0, Gauge;
}

impl MetricId {
    pub fn spec(self) -> &'static MetricSpec {
        // SPECS is declared in variant order, so the discriminant indexes it.
        &SPECS[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }
}

/// A metric name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?}")]
pub struct UnknownMetric(pub String);

impl FromStr for MetricId {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SPECS
            .iter()
            .find(|spec| spec.name == s)
            .map(|spec| spec.id)
            .ok_or_else(|| UnknownMetric(s.chars().take(64).collect()))
    }
}

impl fmt::Display for MetricId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for MetricId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for MetricId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_indexed_by_discriminant() {
        for &m in MetricId::ALL {
            assert_eq!(m.spec().id, m);
            assert_eq!(m.as_str().parse::<MetricId>(), Ok(m));
            assert!(m.spec().min < m.spec().max, "{m}");
        }
        assert_eq!(MetricId::ALL.len(), 17);
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!("speed".parse::<MetricId>(), Err(UnknownMetric("speed".into())));
        assert!("SPEED_KMH".parse::<MetricId>().is_err());
    }
}
