//! Metric catalogue (docs/mqtt-contract.md): every metric SCCR accepts, its unit, the SenML units
//! it may arrive in, and the range a plausible reading lies in; and how screens show it
//! (labels in Italian and English, the display unit, decimals, whether a chart's axis
//! starts at zero). `GET /api/v1/catalogue` serves this table, so no screen keeps a copy.

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

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Count => "count",
            MetricKind::Bool => "bool",
            MetricKind::Code => "code",
        }
    }

    /// The figure that sums up a bucket of this kind's readings on a chart: the mean of a
    /// level, the sum of counts, the last of a flag or a state.
    pub fn aggregate(self) -> Aggregate {
        match self {
            MetricKind::Gauge => Aggregate::Avg,
            MetricKind::Count => Aggregate::Sum,
            MetricKind::Bool | MetricKind::Code => Aggregate::Last,
        }
    }
}

/// How a bucket of readings is summed up for display (one of the history `agg` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Avg,
    Sum,
    Last,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Avg => "avg",
            Aggregate::Sum => "sum",
            Aggregate::Last => "last",
        }
    }
}

/// A name for people, in each language the screens speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub en: &'static str,
    pub it: &'static str,
}

/// The languages every [`Label`] has, in the screens' order of preference.
pub const LANGUAGES: [&str; 2] = ["it", "en"];

/// Catalogue entry of one metric.
#[derive(Debug)]
pub struct MetricSpec {
    pub id: MetricId,
    pub name: &'static str,
    /// Canonical unit of stored values (ASCII, SenML where SenML has one).
    pub unit: &'static str,
    /// The unit as screens print it, with its proper symbols (`µg/m³`, `°C`); empty for
    /// flags, states and bare counts.
    pub display_unit: &'static str,
    pub label: Label,
    /// Decimals a screen shows.
    pub decimals: u8,
    /// Whether a chart of it starts its axis at zero (false where the interesting range is
    /// far from zero, or below it).
    pub zero_based: bool,
    /// SenML units accepted on input, with the factor that converts to `unit`.
    pub senml_units: &'static [(&'static str, f64)],
    pub min: f64,
    pub max: f64,
    pub kind: MetricKind,
}

macro_rules! catalogue {
    ($( $variant:ident => $name:literal, $unit:literal, [$(($su:literal, $f:expr)),*], $min:expr, $max:expr, $kind:ident,
        $display:literal, $en:literal, $it:literal, $decimals:literal, $zero:literal; )*) => {
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
                display_unit: $display,
                label: Label { en: $en, it: $it },
                decimals: $decimals,
                zero_based: $zero,
            }),*
        ];

        impl MetricId {
            pub const ALL: &'static [MetricId] = &[$(MetricId::$variant),*];
        }
    };
}

// id => name, stored unit, [SenML units], min, max, kind,
//       display unit, English label, Italian label, decimals, axis from zero;
catalogue! {
    VehicleCount => "vehicle_count", "veh", [("count", 1.0), ("veh", 1.0)], 0.0, 10_000.0, Count,
        "veh", "Vehicles", "Veicoli", 0, true;
    SpeedKmh => "speed_kmh", "km/h", [("km/h", 1.0), ("m/s", 3.6)], 0.0, 250.0, Gauge,
        "km/h", "Speed", "Velocità", 0, true;
    OccupancyPct => "occupancy_pct", "%", [("%", 1.0), ("/", 100.0)], 0.0, 100.0, Gauge,
        "%", "Occupancy", "Occupazione", 1, true;
    HeadwayS => "headway_s", "s", [("s", 1.0)], 0.0, 3_600.0, Gauge,
        "s", "Headway", "Distanziamento", 1, true;
    Phase => "phase", "", [], 0.0, 15.0, Code,
        "", "Signal phase", "Fase semaforica", 0, false;
    Fault => "fault", "", [], 0.0, 1.0, Bool,
        "", "Fault", "Guasto", 0, true;
    CycleS => "cycle_s", "s", [("s", 1.0)], 0.0, 600.0, Gauge,
        "s", "Signal cycle", "Ciclo semaforico", 0, true;
    FreeSpaces => "free_spaces", "", [("count", 1.0)], 0.0, 10_000.0, Count,
        "", "Free spaces", "Posti liberi", 0, true;
    Occupied => "occupied", "", [], 0.0, 1.0, Bool,
        "", "Occupied", "Occupato", 0, true;
    No2Ugm3 => "no2_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 2_000.0, Gauge,
        "µg/m³", "NO₂", "NO₂", 0, true;
    Pm10Ugm3 => "pm10_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 2_000.0, Gauge,
        "µg/m³", "PM10", "PM10", 0, true;
    Pm25Ugm3 => "pm25_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 1_000.0, Gauge,
        "µg/m³", "PM2.5", "PM2,5", 0, true;
    O3Ugm3 => "o3_ugm3", "ug/m3", [("ug/m3", 1.0)], 0.0, 1_000.0, Gauge,
        "µg/m³", "O₃", "O₃", 0, true;
    TemperatureC => "temperature_c", "Cel", [("Cel", 1.0)], -40.0, 60.0, Gauge,
        "°C", "Temperature", "Temperatura", 1, false;
    HumidityPct => "humidity_pct", "%RH", [("%RH", 1.0)], 0.0, 100.0, Gauge,
        "% RH", "Humidity", "Umidità", 0, true;
    BatteryV => "battery_v", "V", [("V", 1.0)], 0.0, 60.0, Gauge,
        "V", "Battery", "Batteria", 2, false;
    RssiDbm => "rssi_dbm", "dBm", [("dBm", 1.0)], -150.0, 0.0, Gauge,
        "dBm", "Signal strength", "Intensità del segnale", 0, false;
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
    fn every_metric_has_labels_a_display_unit_and_sensible_display_figures() {
        for &m in MetricId::ALL {
            let s = m.spec();
            assert!(!s.label.en.trim().is_empty() && !s.label.it.trim().is_empty(), "{m}");
            assert!(s.decimals <= 3, "{m}");
            // A stored unit has a display unit, and only flags, states and bare counts lack one.
            assert_eq!(s.unit.is_empty(), s.display_unit.is_empty(), "{m}");
            assert!(s.unit.is_ascii(), "{m}");
            // Whole-number kinds show no decimals; an axis from zero needs a range from zero.
            if s.kind != MetricKind::Gauge {
                assert_eq!(s.decimals, 0, "{m}");
            }
            if s.zero_based {
                assert!(s.min >= 0.0, "{m}");
            }
        }
        let no2 = MetricId::No2Ugm3.spec();
        assert_eq!((no2.display_unit, no2.label.en), ("µg/m³", "NO₂"));
        assert_eq!(MetricId::TemperatureC.spec().display_unit, "°C");
        assert_eq!(MetricId::HumidityPct.spec().display_unit, "% RH");
        assert_eq!(MetricKind::Count.aggregate(), Aggregate::Sum);
        assert_eq!(MetricKind::Gauge.aggregate().as_str(), "avg");
        assert_eq!(MetricKind::Code.aggregate().as_str(), "last");
    }

    #[test]
    fn unknown_names_are_refused() {
        assert_eq!("speed".parse::<MetricId>(), Err(UnknownMetric("speed".into())));
        assert!("SPEED_KMH".parse::<MetricId>().is_err());
    }
}
