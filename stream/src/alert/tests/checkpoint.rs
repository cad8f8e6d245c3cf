//! Incremental checkpoints: what each writes, and that they assemble exactly the
//! exported state; the hot path's throughput.

use super::*;

use super::properties::{arb_ops, drive, engine_with_segments, MIXED};

/// What a store keeps of a key's checkpoints: the last head, the last book written and the
/// last version of every part, each through JSON as the sink saves them.
#[derive(Default)]
struct SavedParts {
    head: EngineHead,
    book: Option<BookRecord>,
    parts: BTreeMap<String, StatePart>,
}

impl SavedParts {
    /// Save a checkpoint; returns the names of the parts it wrote.
    fn save(&mut self, e: &mut AlertEngine, force_full: bool) -> (bool, bool, Vec<String>) {
        let (begin, parts) = e.checkpoint(force_full);
        let parts: Vec<StatePart> = parts.collect();
        if begin.full {
            self.parts.clear();
        }
        self.head = serde_json::from_str(&json(&begin.head)).unwrap();
        let wrote_book = begin.book.is_some();
        if let Some(book) = &begin.book {
            self.book = Some(serde_json::from_str(&json(book)).unwrap());
        }
        let mut names = Vec::new();
        for part in parts {
            let back: StatePart = serde_json::from_str(&json(&part)).unwrap();
            names.push(part.name());
            self.parts.insert(part.name(), back);
        }
        (begin.full, wrote_book, names)
    }

    fn assemble(&self) -> AlertEngineState {
        AlertEngineState::assemble(
            self.head.clone(),
            self.book.clone(),
            self.parts.values().cloned(),
        )
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap()
}

#[test]
fn a_checkpoint_after_a_change_to_one_subject_writes_only_that_subject() {
    let text = format!("{MIXED}\n[[rules]]\nid = \"jam\"\nseverity = \"warning\"\nlos = {{ at_or_worse = \"E\", for = \"2m\" }}\n");
    let mut e = AlertEngine::new(rules(&text));
    let mut out = Vec::new();
    for d in 0..3 {
        e.on_reading(&reading(&format!("aq-{d}"), MetricId::No2Ugm3, 1, 50.0), t(1), &mut out);
    }
    e.on_segment_state(&jam(0, LevelOfService::B), t(61), &mut out);
    let mut saved = SavedParts::default();
    let (full, book, names) = saved.save(&mut e, false);
    assert!(full && book, "the first checkpoint saves everything");
    let mut names = names;
    names.sort();
    assert_eq!(names, ["device/aq-0", "device/aq-1", "device/aq-2", "segment/viale-a"]);

    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, false, Vec::<String>::new()), "nothing changed");

    e.on_reading(&reading("aq-1", MetricId::No2Ugm3, 5, 60.0), t(5), &mut out);
    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, false, vec!["device/aq-1".to_owned()]));

    e.on_segment_state(&jam(1, LevelOfService::C), t(121), &mut out);
    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, false, vec!["segment/viale-a".to_owned()]));

    // A raise changes the book too; still only the raising device's part.
    e.on_reading(&reading("aq-2", MetricId::No2Ugm3, 10, 250.0), t(10), &mut out);
    e.on_reading(&reading("aq-2", MetricId::No2Ugm3, 50, 250.0), t(50), &mut out);
    let open: Vec<String> =
        e.open_alerts().filter(|a| a.active).map(|a| a.key.to_string()).collect();
    assert_eq!(open.len(), 1, "no2-high raised: {open:?}");
    let (full, book, names) = saved.save(&mut e, false);
    assert_eq!((full, book, names), (false, true, vec!["device/aq-2".to_owned()]));
    assert_eq!(saved.assemble(), e.export_state());

    // After a lost checkpoint the next one is full.
    let (full, _, names) = saved.save(&mut e, true);
    assert!(full);
    assert_eq!(names.len(), 4);
    assert_eq!(saved.assemble(), e.export_state());
}

proptest! {
    /// Checkpoints taken anywhere in a stream of inputs, applied over what was saved
    /// before, assemble exactly the state `export_state` returns at that point; a rule
    /// change makes the next checkpoint full.
    #[test]
    fn checkpoints_assemble_exactly_the_exported_state(ops in arb_ops(), cuts in prop::collection::vec(0usize..250, 1..6), rule_change in 0usize..8) {
        let text = format!("{MIXED}\n[[rules]]\nid = \"jam\"\nseverity = \"warning\"\nlos = {{ at_or_worse = \"E\", for = \"2m\" }}\n");
        let mut e = engine_with_segments();
        let mut out = Vec::new();
        e.set_rules(rules(&text), t(0), &mut out);
        let mut saved = SavedParts::default();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(ops.len())).collect();
        cuts.sort_unstable();
        cuts.push(ops.len());
        let (mut from, mut clock) = (0, 0);
        for (i, cut) in cuts.into_iter().enumerate() {
            drive(&mut e, &ops[from..cut], &mut clock, &mut out);
            from = cut;
            let los = if i % 2 == 0 { LevelOfService::F } else { LevelOfService::A };
            e.on_segment_state(&jam(i as i64, los), t(clock), &mut out);
            if i == rule_change {
                e.set_rules(rules(MIXED), t(clock), &mut out);
            }
            let (full, _, _) = saved.save(&mut e, false);
            prop_assert!(full || i != rule_change, "a rule change makes the next checkpoint full");
            prop_assert_eq!(saved.assemble(), e.export_state());
        }
    }
}

/// Rough throughput of the hot path: 10,000 devices, 50 rules. Run with
/// `cargo test --release -p stream -- --ignored throughput --nocapture`.
#[test]
#[ignore]
fn throughput_of_on_reading_with_10k_devices_and_50_rules() {
    let mut text = String::from("air_quality_defaults = true\n");
    let metrics = [
        "vehicle_count",
        "speed_kmh",
        "occupancy_pct",
        "no2_ugm3",
        "pm10_ugm3",
        "pm25_ugm3",
        "o3_ugm3",
        "temperature_c",
        "humidity_pct",
        "battery_v",
    ];
    let mut n = 5; // the shipped air-quality rules
    for (i, m) in metrics.iter().enumerate() {
        for k in 0..3 {
            text += &format!("[[rules]]\nid = \"t-{i}-{k}\"\nseverity = \"info\"\nthreshold = {{ metric = \"{m}\", above = {}, for = \"1m\" }}\n", 5_000 + k);
            n += 1;
        }
        text += &format!("[[rules]]\nid = \"f-{i}\"\nseverity = \"info\"\nflatline = {{ metric = \"{m}\", readings = 1000 }}\n");
        n += 1;
    }
    for (i, m) in metrics.iter().take(4).enumerate() {
        text += &format!("[[rules]]\nid = \"r-{i}\"\nseverity = \"info\"\nrate_of_change = {{ metric = \"{m}\", max_per_minute = 100000.0 }}\n");
        n += 1;
    }
    text += "[[rules]]\nid = \"offline\"\nseverity = \"critical\"\noffline = {}\n";
    n += 1;
    assert_eq!(n, 50);
    let mut e = AlertEngine::new(rules(&text));
    assert_eq!(e.rules().len(), 50);
    let mut templates: Vec<Reading> = Vec::new();
    for d in 0..10_000 {
        let id = dev(&format!("dev-{d:05}"));
        let set: &[MetricId] = if d % 4 == 3 {
            &[
                MetricId::No2Ugm3,
                MetricId::Pm10Ugm3,
                MetricId::Pm25Ugm3,
                MetricId::O3Ugm3,
                MetricId::TemperatureC,
                MetricId::HumidityPct,
            ]
        } else {
            &[MetricId::VehicleCount, MetricId::SpeedKmh, MetricId::OccupancyPct]
        };
        for &metric in set {
            templates.push(Reading {
                device: id.clone(),
                metric,
                time: t(0),
                value: 0.0,
                seq: None,
            });
        }
    }
    let mut out = Vec::new();
    let rounds = 60;
    let start = std::time::Instant::now();
    let mut count = 0u64;
    for round in 0..rounds {
        let now = t(round * 30);
        for (i, r) in templates.iter_mut().enumerate() {
            r.time = now;
            r.value = ((i as i64 * 7 + round * 13) % 100) as f64;
            e.on_reading(r, now, &mut out);
            count += 1;
        }
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{count} readings, {} devices, {} rules: {:.2} s, {:.0} readings/s (includes first-seen setup)", 10_000, e.rules().len(), secs, count as f64 / secs);
}

#[test]
fn a_device_condition_takes_32_bytes() {
    assert_eq!(std::mem::size_of::<crate::alert::engine::DeviceCondition>(), 32);
}
