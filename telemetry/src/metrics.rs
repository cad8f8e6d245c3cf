//! Metrics exposition, one way for every component.
//!
//! Components keep lock-free counters (atomics) on their hot paths and describe them once,
//! in a [`Collector`] (prometheus-client). The composition root (`sccr`) registers every
//! collector of the process in one [`Registry`] and `/metrics` encodes it as OpenMetrics
//! text, so names, help, units, label escaping and the `_total` suffix of counters follow
//! the crate's conventions instead of being written by hand. The helpers below are the
//! few shapes the collectors need; each takes the metric's name without its `_total` or
//! unit suffix (the encoder adds them).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::encoding::{EncodeMetric, NoLabelSet};
pub use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::metrics::MetricType;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::text::encode as encode_text;
pub use prometheus_client::encoding::DescriptorEncoder as Encoder;
pub use prometheus_client::registry::{Registry, Unit};

/// The media type of [`encode_text`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The OpenMetrics text of one collector under the `sccr` prefix (component tests).
pub fn exposition(collector: Box<dyn Collector>) -> String {
    let mut registry = Registry::with_prefix("sccr");
    registry.register_collector(collector);
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode_text(&mut text, &registry);
    text
}

/// A counter.
pub fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// A counter in a unit (seconds, bytes).
pub fn counter_in(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: &Unit,
    v: f64,
) -> fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, Some(unit), MetricType::Counter)?)
}

/// A gauge.
pub fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A gauge with a fractional value, in a unit where it has one.
pub fn gauge_f64(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A 0/1 gauge.
pub fn flag(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, on: bool) -> fmt::Result {
    gauge(e, name, help, i64::from(on))
}

/// A gauge with one label, one series per value of it.
pub fn gauge_by<'v>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'v str, i64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, n) in series {
        ConstGauge::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A counter with one label, one series per value of it.
pub fn counter_by<'v>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'v str, u64)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        ConstCounter::new(n).encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// A histogram from its non-cumulative bucket counts (`upper bounds`, then the count above
/// the last bound), sum and count.
pub fn histogram(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    h: &HistogramSnapshot,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

/// What a histogram holds at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound, observations in this bucket only), ending with `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Counts by a string key (a dead-letter reason, an error code), for counters that are
/// bumped from a few places and read at scrape time.
#[derive(Debug, Default)]
pub struct CountsBy(Mutex<BTreeMap<String, u64>>);

impl CountsBy {
    /// Counts for `keys`, each at zero, so that every series is exposed from the start
    /// (a rate over a series that appears only with its first event misses that event).
    pub fn with_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self(Mutex::new(keys.into_iter().map(|k| (k.to_owned(), 0)).collect()))
    }

    pub fn add(&self, key: &str, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(v) => *v += n,
            None => {
                map.insert(key.to_owned(), n);
            }
        }
    }

    pub fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    /// A copy of every (key, count), in key order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Encode as a counter with one label.
    pub fn encode(
        &self,
        e: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        label: &str,
    ) -> fmt::Result {
        let series = self.snapshot();
        counter_by(e, name, help, label, series.iter().map(|(k, v)| (k.as_str(), *v)))
    }
}

/// A lock-free latency histogram over fixed upper bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|le| secs <= *le).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = self.bounds.iter().copied().chain([f64::INFINITY]);
        HistogramSnapshot {
            buckets: bounds.zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed))).collect(),
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// The standard `process_*` metrics of the Prometheus client libraries (CPU seconds, resident
/// and virtual memory, threads, open and maximum file descriptors, start time), read from
/// `/proc/self` at each scrape; where there is no `/proc`, only the start time.
#[derive(Debug)]
pub struct ProcessCollector {
    start: f64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self { start }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (Linux's USER_HZ, 100 on every
/// architecture it supports).
const USER_HZ: f64 = 100.0;

/// The value of `key:` in `/proc/self/status` (the first number after it).
fn status_field(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim_start_matches(':').split_whitespace().next()?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let seconds = Unit::Seconds;
        let bytes = Unit::Bytes;
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces) in parentheses.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
            if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                let cpu = (utime + stime) / USER_HZ;
                counter_in(
                    &mut e,
                    "process_cpu",
                    "User and system CPU time spent.",
                    &seconds,
                    cpu,
                )?;
            }
            if let Some(vsize) = field(23) {
                gauge_f64(
                    &mut e,
                    "process_virtual_memory",
                    "Virtual memory size.",
                    Some(&bytes),
                    vsize,
                )?;
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(kib) = status_field(&status, "VmRSS") {
                let rss = kib * 1024.0;
                gauge_f64(
                    &mut e,
                    "process_resident_memory",
                    "Resident memory size.",
                    Some(&bytes),
                    rss,
                )?;
            }
            if let Some(n) = status_field(&status, "Threads") {
                gauge_f64(&mut e, "process_threads", "OS threads in the process.", None, n)?;
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let open = i64::try_from(dir.count()).unwrap_or(i64::MAX);
            gauge(&mut e, "process_open_fds", "Open file descriptors.", open)?;
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            let max = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| {
                l["Max open files".len()..].split_whitespace().next()?.parse::<i64>().ok()
            });
            if let Some(max) = max {
                gauge(&mut e, "process_max_fds", "Maximum open file descriptors.", max)?;
            }
        }
        gauge_f64(
            &mut e,
            "process_start_time",
            "Start time of the process since the Unix epoch.",
            Some(&seconds),
            self.start,
        )
    }
}

/// `<name>_info{version="…"} 1`: what is running (the binary's version and how it was
/// built).
#[derive(Debug)]
pub struct BuildInfo {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
}

impl Collector for BuildInfo {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        e.encode_descriptor(
            self.name,
            "What is running: version and build.",
            None,
            MetricType::Info,
        )?
        .encode_info(&labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Sample {
        hist: Option<Histogram>,
        reasons: CountsBy,
    }

    impl Collector for Sample {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            counter(&mut e, "messages", "Messages taken.", 3)?;
            gauge_f64(&mut e, "oldest_pending", "Age of the oldest.", Some(&Unit::Seconds), 0.5)?;
            flag(&mut e, "connected", "1 while up.", true)?;
            self.reasons.encode(&mut e, "dead_letters", "Refused, by reason.", "reason")?;
            if let Some(h) = &self.hist {
                histogram(&mut e, "commit", "Commit time.", Some(&Unit::Seconds), &h.snapshot())?;
            }
            Ok(())
        }
    }

    #[test]
    fn collectors_encode_as_openmetrics_with_the_crates_names() {
        let sample = Sample { hist: Some(Histogram::new(&[0.01, 0.1])), ..Sample::default() };
        sample.reasons.add("bad_json", 2);
        sample.reasons.add("bad \"quoted\"", 1);
        if let Some(h) = &sample.hist {
            h.observe(Duration::from_millis(5));
            h.observe(Duration::from_millis(50));
            h.observe(Duration::from_secs(1));
        }
        let mut registry = Registry::default();
        registry.sub_registry_with_prefix("sccr").register_collector(Box::new(sample));
        let mut text = String::new();
        encode_text(&mut text, &registry).unwrap();
        for line in [
            "# TYPE sccr_messages counter",
            "sccr_messages_total 3",
            "# TYPE sccr_oldest_pending_seconds gauge",
            "# UNIT sccr_oldest_pending_seconds seconds",
            "sccr_oldest_pending_seconds 0.5",
            "sccr_connected 1",
            "sccr_dead_letters_total{reason=\"bad_json\"} 2",
            "sccr_dead_letters_total{reason=\"bad \\\"quoted\\\"\"} 1",
            "sccr_commit_seconds_bucket{le=\"0.01\"} 1",
            "sccr_commit_seconds_bucket{le=\"0.1\"} 2",
            "sccr_commit_seconds_bucket{le=\"+Inf\"} 3",
            "sccr_commit_seconds_count 3",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
    }
}
