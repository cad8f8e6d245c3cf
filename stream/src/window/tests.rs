use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const T0: i64 = 1_763_892_000_000;

fn config(delay_s: u64, lateness_s: u64) -> StreamConfig {
    StreamConfig {
        window: Duration::from_secs(60),
        watermark_delay: Duration::from_secs(delay_s),
        allowed_lateness: Duration::from_secs(lateness_s),
        ..StreamConfig::default()
    }
}

fn reading(dev: &str, t: i64, v: f64) -> Reading {
    Reading {
        device: DeviceId::parse(dev).unwrap(),
        metric: MetricId::SpeedKmh,
        time: EventTime(t),
        value: v,
        seq: None,
    }
}

/// The final (highest revision) aggregate of each emitted window.
fn finals(results: &[WindowResult]) -> BTreeMap<(String, i64), (u32, Partial)> {
    let mut out: BTreeMap<(String, i64), (u32, Partial)> = BTreeMap::new();
    for r in results {
        let key = (r.device.to_string(), r.start.millis());
        match out.get(&key) {
            Some((rev, _)) if *rev >= r.revision => {}
            _ => {
                out.insert(key, (r.revision, r.aggregate));
            }
        }
    }
    out
}

fn brute(readings: &[&Reading]) -> BTreeMap<(String, i64), Partial> {
    let mut out: BTreeMap<(String, i64), Partial> = BTreeMap::new();
    for r in readings {
        let p = Partial::of(r.time, r.value);
        out.entry((r.device.to_string(), r.time.floor(60_000).millis()))
            .and_modify(|a| a.merge(&p))
            .or_insert(p);
    }
    out
}

#[test]
fn window_closes_when_the_watermark_passes_its_end() {
    let mut w = Windows::new(&config(5, 60));
    let mut out = Vec::new();
    w.add(&reading("a", T0 + 1_000, 10.0), &mut out);
    w.add(&reading("a", T0 + 59_000, 20.0), &mut out);
    w.add(&reading("a", T0 + 64_000, 30.0), &mut out); // watermark T0+59s: still open
    assert!(out.is_empty());
    w.add(&reading("a", T0 + 65_000, 40.0), &mut out); // watermark T0+60s: closes [T0, T0+60s)
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!((r.start, r.end, r.revision), (EventTime(T0), EventTime(T0 + 60_000), 0));
    assert_eq!(
        (
            r.aggregate.count,
            r.aggregate.sum,
            r.aggregate.min,
            r.aggregate.max,
            r.aggregate.last_value
        ),
        (2, 30.0, 10.0, 20.0, 20.0)
    );
}

#[test]
fn late_reading_within_lateness_re_emits_and_later_is_counted() {
    let mut w = Windows::new(&config(0, 30));
    let mut out = Vec::new();
    w.add(&reading("a", T0 + 1_000, 10.0), &mut out);
    w.add(&reading("a", T0 + 61_000, 1.0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(w.add(&reading("a", T0 + 2_000, 5.0), &mut out), Admission::Late);
    assert_eq!(out.len(), 2);
    assert_eq!((out[1].revision, out[1].aggregate.count, out[1].aggregate.sum), (1, 2, 15.0));
    w.add(&reading("a", T0 + 95_000, 1.0), &mut out); // watermark passes end + lateness
    assert_eq!(w.add(&reading("a", T0 + 3_000, 5.0), &mut out), Admission::TooLate);
    assert_eq!(w.too_late, 1);
}

#[test]
fn devices_have_their_own_watermarks() {
    let mut w = Windows::new(&config(5, 0));
    let mut out = Vec::new();
    w.add(&reading("fast", T0 + 3_600_000, 1.0), &mut out); // clock an hour ahead
    assert_eq!(w.add(&reading("slow", T0, 1.0), &mut out), Admission::Open);
    assert!(out.is_empty());
}

#[test]
fn tick_closes_windows_of_quiet_devices_and_flush_emits_the_rest() {
    let mut w = Windows::new(&config(5, 0));
    let mut out = Vec::new();
    w.add(&reading("a", T0 + 1_000, 1.0), &mut out);
    w.add(&reading("b", T0 + 70_000, 1.0), &mut out);
    w.tick(EventTime(T0 + 64_999), &mut out);
    assert!(out.is_empty());
    w.tick(EventTime(T0 + 65_000), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].device.as_str(), "a");
    w.flush(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].device.as_str(), "b");
    assert!(w.is_empty());
}

#[test]
fn a_device_lagging_the_wall_clock_past_the_lateness_is_too_late_not_re_windowed() {
    let mut w = Windows::new(&config(5, 10));
    let mut out = Vec::new();
    // The device's clock lags: its readings for [T0, T0+60s) keep coming after the wall
    // clock sealed that window.
    w.add(&reading("lag", T0 + 1_000, 1.0), &mut out);
    w.tick(EventTime(T0 + 75_000), &mut out); // closes at end + delay, drops at + lateness
    assert_eq!(out.len(), 1);
    assert_eq!(w.add(&reading("lag", T0 + 2_000, 2.0), &mut out), Admission::TooLate);
    assert_eq!(out.len(), 1, "no second revision 0 holding only the late reading");
    assert_eq!(w.too_late, 1);
    // Within the lateness it is a correction with the whole aggregate.
    let mut w = Windows::new(&config(5, 10));
    let mut out = Vec::new();
    w.add(&reading("lag", T0 + 1_000, 1.0), &mut out);
    w.tick(EventTime(T0 + 74_999), &mut out);
    assert_eq!(w.add(&reading("lag", T0 + 2_000, 2.0), &mut out), Admission::Open);
    assert_eq!((out[1].revision, out[1].aggregate.count), (1, 2));
}

proptest! {
    /// Readings out of order by less than the watermark delay are never late, and the
    /// emitted windows equal a brute-force aggregation of all readings.
    #[test]
    fn bounded_disorder_gives_exact_windows(
        steps in prop::collection::vec((0u8..3, 0i64..20_000, 0i64..5_000, -100i32..100), 1..300),
    ) {
        let mut w = Windows::new(&config(5, 0));
        let mut out = Vec::new();
        let mut clock = [T0; 3];
        let mut all = Vec::new();
        for (dev, advance, back, v) in steps {
            let d = dev as usize;
            clock[d] += advance;
            // Up to 5 s behind the device's newest time: within the delay.
            let t = (clock[d] - back).max(T0);
            let r = reading(&format!("d{dev}"), t, f64::from(v));
            prop_assert_eq!(w.add(&r, &mut out), Admission::Open);
            all.push(r);
        }
        w.flush(&mut out);
        prop_assert!(out.iter().all(|r| r.revision == 0));
        let got: BTreeMap<_, _> = finals(&out).into_iter().map(|(k, (_, p))| (k, p)).collect();
        let refs: Vec<&Reading> = all.iter().collect();
        prop_assert_eq!(got, brute(&refs));
    }

    /// With arbitrary disorder, every reading is either windowed or counted too late, and the
    /// last revision of each window equals the aggregate of the readings admitted to it.
    #[test]
    fn arbitrary_disorder_is_exact_over_admitted_readings(
        times in prop::collection::vec((0i64..600_000, -100i32..100), 1..300),
        lateness in 0u64..120,
    ) {
        let mut w = Windows::new(&config(2, lateness));
        let mut out = Vec::new();
        let mut admitted = Vec::new();
        for (t, v) in &times {
            let r = reading("a", T0 + t, f64::from(*v));
            if w.add(&r, &mut out) != Admission::TooLate {
                admitted.push(r);
            }
        }
        w.flush(&mut out);
        prop_assert_eq!(admitted.len() as u64 + w.too_late, times.len() as u64);
        let got: BTreeMap<_, _> = finals(&out).into_iter().map(|(k, (_, p))| (k, p)).collect();
        let refs: Vec<&Reading> = admitted.iter().collect();
        prop_assert_eq!(got, brute(&refs));
    }
}

#[test]
fn a_held_window_takes_56_bytes() {
    assert_eq!(std::mem::size_of::<Window>(), 56);
}

#[test]
fn windows_of_several_metrics_stay_apart_and_ordered() {
    let mut w = Windows::new(&config(5, 60));
    let mut out = Vec::new();
    for (i, metric) in
        [MetricId::SpeedKmh, MetricId::VehicleCount, MetricId::OccupancyPct].into_iter().enumerate()
    {
        for k in 0..3 {
            let r = Reading { metric, ..reading("a", T0 + 1_000 * k, (i * 10) as f64 + k as f64) };
            w.add(&r, &mut out);
        }
    }
    assert_eq!(w.len(), 3);
    w.add(&reading("a", T0 + 70_000, 1.0), &mut out);
    let mut got: Vec<(MetricId, i64, f64)> =
        out.iter().map(|r| (r.metric, r.aggregate.count, r.aggregate.sum)).collect();
    got.sort_by_key(|g| g.0 as u8);
    let mut want = vec![
        (MetricId::SpeedKmh, 3, 3.0),
        (MetricId::VehicleCount, 3, 33.0),
        (MetricId::OccupancyPct, 3, 63.0),
    ];
    want.sort_by_key(|g| g.0 as u8);
    assert_eq!(got, want);
    assert!(out.windows(2).all(|p| p[0].metric < p[1].metric), "emitted in (start, metric) order");
}
