use proptest::prelude::*;

use super::*;
use crate::alert::rule::Direction;
use crate::los::LevelOfService;
use telemetry::SegmentId;

const T0: i64 = 1_763_892_000_000;

fn above(level: f64, clear: f64, hold_s: u64) -> ThresholdRule {
    ThresholdRule {
        metric: telemetry::MetricId::No2Ugm3,
        direction: Direction::Above,
        level,
        clear,
        hold: Duration::from_secs(hold_s),
    }
}

fn t(s: i64) -> EventTime {
    EventTime(T0 + s * 1_000)
}

#[test]
fn threshold_raises_only_after_holding_for_the_duration() {
    let rule = above(100.0, 100.0, 60);
    let mut s = ThresholdState::default();
    assert_eq!(s.on_sample(&rule, t(0), 150.0), Step::Quiet);
    assert_eq!(s.on_sample(&rule, t(59), 150.0), Step::Quiet);
    assert_eq!(s.on_sample(&rule, t(60), 150.0), Step::Raise { since: t(0), value: 150.0 });
    assert_eq!(s.on_sample(&rule, t(61), 150.0), Step::Quiet, "raises once");
    assert_eq!(s.on_sample(&rule, t(62), 100.0), Step::Clear { value: 100.0 });
}

#[test]
fn a_dip_below_the_level_restarts_the_run() {
    let rule = above(100.0, 100.0, 60);
    let mut s = ThresholdState::default();
    s.on_sample(&rule, t(0), 150.0);
    s.on_sample(&rule, t(30), 90.0);
    assert_eq!(s.on_sample(&rule, t(60), 150.0), Step::Quiet);
    assert_eq!(s.on_sample(&rule, t(120), 150.0), Step::Raise { since: t(60), value: 150.0 });
}

#[test]
fn hysteresis_keeps_the_alert_until_the_clear_level() {
    let rule = above(100.0, 80.0, 0);
    let mut s = ThresholdState::default();
    assert_eq!(s.on_sample(&rule, t(0), 101.0), Step::Raise { since: t(0), value: 101.0 });
    assert_eq!(s.on_sample(&rule, t(1), 90.0), Step::Quiet);
    assert_eq!(s.on_sample(&rule, t(2), 80.0), Step::Clear { value: 80.0 });
    // Between clear and trip level a new run does not start.
    assert_eq!(s.on_sample(&rule, t(3), 90.0), Step::Quiet);
    let below = ThresholdRule {
        direction: Direction::Below,
        level: 11.0,
        clear: 11.5,
        ..above(0.0, 0.0, 0)
    };
    let mut s = ThresholdState::default();
    assert_eq!(s.on_sample(&below, t(0), 10.9), Step::Raise { since: t(0), value: 10.9 });
    assert_eq!(s.on_sample(&below, t(1), 11.2), Step::Quiet);
    assert_eq!(s.on_sample(&below, t(2), 11.5), Step::Clear { value: 11.5 });
}

#[test]
fn duplicates_and_older_samples_are_stale() {
    let rule = above(100.0, 100.0, 60);
    let mut s = ThresholdState::default();
    s.on_sample(&rule, t(10), 150.0);
    assert_eq!(s.on_sample(&rule, t(10), 150.0), Step::Stale);
    // An old reading cannot extend the run backwards to fake the duration.
    assert_eq!(s.on_sample(&rule, t(-100), 150.0), Step::Stale);
    assert_eq!(s.on_sample(&rule, t(69), 150.0), Step::Quiet);
}

#[test]
fn flatline_needs_both_the_count_and_the_span() {
    let rule = FlatlineRule {
        metric: telemetry::MetricId::TemperatureC,
        epsilon: 0.05,
        hold: Duration::from_secs(600),
        readings: 5,
    };
    let mut s = FlatlineState::default();
    for i in 0..4 {
        assert_eq!(s.on_sample(&rule, t(i * 300), 21.0 + 0.01 * i as f64), Step::Quiet);
    }
    assert_eq!(s.on_sample(&rule, t(1_200), 21.04), Step::Raise { since: t(0), value: 21.04 });
    assert_eq!(s.on_sample(&rule, t(1_500), 21.0), Step::Quiet);
    assert_eq!(s.on_sample(&rule, t(1_800), 21.2), Step::Clear { value: 21.2 });
    assert!(!s.is_raised());
}

#[test]
fn rate_of_change_is_per_minute_between_consecutive_readings() {
    let rule = RateOfChangeRule {
        metric: telemetry::MetricId::TemperatureC,
        max_per_minute: 2.0,
        hold: Duration::ZERO,
    };
    let mut s = RateOfChangeState::default();
    assert_eq!(s.on_sample(&rule, t(0), 20.0), Step::Quiet);
    assert_eq!(s.on_sample(&rule, t(60), 22.0), Step::Quiet, "exactly the limit");
    assert_eq!(s.on_sample(&rule, t(90), 24.0), Step::Raise { since: t(60), value: 4.0 });
    assert_eq!(s.on_sample(&rule, t(90), 99.0), Step::Stale);
    assert_eq!(s.on_sample(&rule, t(150), 24.5), Step::Clear { value: 0.5 });
}

#[test]
fn running_mean_needs_three_quarters_of_the_period_then_trips() {
    let rule = MeanLimitRule {
        metric: telemetry::MetricId::No2Ugm3,
        limit: 200.0,
        clear: 200.0,
        averaging: Duration::from_secs(3_600),
    };
    let mut s = MeanLimitState::default();
    // One reading every 150 s (one per sub-period) at 250: trips at the 18th sub-period.
    for i in 0..17 {
        assert_eq!(s.on_sample(&rule, t(i * 150), 250.0), Step::Quiet, "{i}");
    }
    assert_eq!(
        s.on_sample(&rule, t(17 * 150), 250.0),
        Step::Raise { since: t(17 * 150), value: 250.0 }
    );
    // Clean air pulls the mean down: 18×250 + k×0 ≤ 200×(18+k) once k ≥ 4.5.
    let mut cleared_at = None;
    for k in 1..10 {
        if let Step::Clear { .. } = s.on_sample(&rule, t((17 + k) * 150), 0.0) {
            cleared_at = Some(k);
            break;
        }
    }
    assert_eq!(cleared_at, Some(5));
}

#[test]
fn los_rule_measures_from_the_first_bad_window_start_to_the_latest_end() {
    let rule = LosRule { at_or_worse: LevelOfService::E, hold: Duration::from_secs(180) };
    let seg = SegmentId::parse("viale-a").unwrap();
    let state = |m: i64, los| SegmentState {
        segment: seg.clone(),
        start: t(m * 60),
        end: t(m * 60 + 60),
        flow_vph: None,
        speed_kmh: Some(10.0),
        occupancy_pct: None,
        los,
        detectors: 1,
        revision: 0,
        forecast: None,
    };
    let mut s = LosState::default();
    assert_eq!(s.on_state(&rule, &state(0, Some(LevelOfService::E))), Step::Quiet);
    assert_eq!(s.on_state(&rule, &state(1, None)), Step::Quiet, "no LOS: skipped");
    assert_eq!(
        s.on_state(&rule, &state(2, Some(LevelOfService::F))),
        Step::Raise { since: t(0), value: 10.0 }
    );
    assert_eq!(
        s.on_state(&rule, &state(2, Some(LevelOfService::A))),
        Step::Stale,
        "a correction of an evaluated window"
    );
    assert_eq!(s.on_state(&rule, &state(3, Some(LevelOfService::D))), Step::Clear { value: 10.0 });
}

#[test]
fn offline_by_silence_uses_the_learned_interval_and_the_last_will_at_once() {
    let rule = OfflineRule {
        silence_factor: 3.0,
        interval: None,
        min_silence: Duration::from_secs(60),
        last_will: true,
    };
    let mut a = Arrivals::default();
    a.record(t(0));
    assert_eq!(
        rule.offline_at(&a, None, t(10_000)),
        None,
        "nothing learned, no interval: only the Last Will"
    );
    for i in 1..=3 {
        a.record(t(i * 30));
        a.record(t(i * 30)); // a second reading of the same message adds no gap
    }
    assert_eq!(a.learned_interval_ms(), Some(30_000));
    // 3 × 30 s = 90 s of silence allowed.
    assert_eq!(rule.offline_at(&a, None, t(180)), None);
    assert_eq!(rule.offline_at(&a, None, t(181)), Some((t(90), 91.0)));
    // A registered interval beats the learned one; min_silence is the floor.
    assert_eq!(rule.offline_at(&a, Some(Duration::from_secs(5)), t(149)), None);
    assert!(rule.offline_at(&a, Some(Duration::from_secs(5)), t(151)).is_some());
    a.last_will(t(100));
    assert_eq!(rule.offline_at(&a, None, t(100)), Some((t(100), 10.0)));
    a.record(t(101));
    assert_eq!(rule.offline_at(&a, None, t(102)), None);
}

/// The samples the evaluator actually evaluates: those newer than every earlier one.
fn records(samples: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut newest = i64::MIN;
    samples
        .iter()
        .filter(|(t, _)| {
            let fresh = *t > newest;
            newest = newest.max(*t);
            fresh
        })
        .copied()
        .collect()
}

fn arb_samples() -> impl Strategy<Value = Vec<(i64, f64)>> {
    // Mostly forward in time with gaps, sometimes backwards (skew, reordering), sometimes
    // the same time again (duplicates).
    prop::collection::vec(
        (-30i64..120, prop_oneof![Just(50.0), Just(95.0), Just(150.0), 0.0f64..200.0]),
        1..200,
    )
    .prop_map(|steps| {
        let mut clock = 0i64;
        steps
            .into_iter()
            .map(|(dt, v)| {
                clock += dt;
                (clock, v)
            })
            .collect()
    })
}

proptest! {
    /// A threshold never raises before the value held past the level for `for` in event
    /// time over the samples it evaluated; raises and clears alternate starting with a
    /// raise; a clear only comes at a value back past the clear level.
    #[test]
    fn threshold_raises_only_after_the_value_held_for_the_duration(samples in arb_samples(), hold_s in 0u64..300) {
        let rule = above(100.0, 90.0, hold_s);
        let mut s = ThresholdState::default();
        let mut raised = false;
        let evaluated = records(&samples);
        let mut steps = Vec::new();
        for &(ts, v) in &samples {
            let step = s.on_sample(&rule, t(ts), v);
            steps.push((ts, v, step));
        }
        for (ts, v, step) in steps {
            match step {
                Step::Raise { since, .. } => {
                    prop_assert!(!raised, "two raises without a clear");
                    raised = true;
                    prop_assert!(t(ts).millis() - since.millis() >= (hold_s * 1_000) as i64);
                    // Every evaluated sample in [since, now] was above the level.
                    for (et, ev) in &evaluated {
                        if t(*et) >= since && *et <= ts {
                            prop_assert!(*ev > 100.0, "sample {ev} at {et} inside the run");
                        }
                    }
                }
                Step::Clear { .. } => {
                    prop_assert!(raised, "a clear without a raise");
                    prop_assert!(v <= 90.0);
                    raised = false;
                }
                Step::Stale => prop_assert!(!evaluated.contains(&(ts, v)) || samples.iter().filter(|s| **s == (ts, v)).count() > 1),
                Step::Quiet => {}
            }
        }
    }

    /// The outcome depends only on the samples evaluated (the newest-so-far ones): adding
    /// duplicates and older samples anywhere changes no edge.
    #[test]
    fn stale_samples_change_nothing(samples in arb_samples(), hold_s in 0u64..300) {
        let rule = above(100.0, 90.0, hold_s);
        let run = |input: &[(i64, f64)]| {
            let mut s = ThresholdState::default();
            input.iter().map(|&(ts, v)| s.on_sample(&rule, t(ts), v)).filter(|st| !matches!(st, Step::Quiet | Step::Stale)).collect::<Vec<_>>()
        };
        prop_assert_eq!(run(&samples), run(&records(&samples)));
    }

    /// Flatline and rate-of-change edges alternate, starting with a raise, whatever the input.
    #[test]
    fn flatline_and_rate_edges_alternate(samples in arb_samples(), readings in 2u32..6, hold_s in 0u64..200) {
        let flat = FlatlineRule { metric: telemetry::MetricId::TemperatureC, epsilon: 1.0, hold: Duration::from_secs(hold_s), readings };
        let rate = RateOfChangeRule { metric: telemetry::MetricId::TemperatureC, max_per_minute: 50.0, hold: Duration::from_secs(hold_s) };
        let (mut f, mut r) = (FlatlineState::default(), RateOfChangeState::default());
        let (mut f_up, mut r_up) = (false, false);
        for &(ts, v) in &samples {
            for (step, up) in [(f.on_sample(&flat, t(ts), v), &mut f_up), (r.on_sample(&rate, t(ts), v), &mut r_up)] {
                match step {
                    Step::Raise { since, .. } => {
                        prop_assert!(!*up);
                        prop_assert!(since <= t(ts));
                        *up = true;
                    }
                    Step::Clear { .. } => {
                        prop_assert!(*up);
                        *up = false;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The running mean as a full ring of 24 sub-periods, each with its index: the layout
/// `MeanLimitState` had before it kept only the sub-periods with data.
#[derive(Default)]
struct FullRing {
    buckets: [MeanBucket; MEAN_BUCKETS],
    timer: HoldTimer,
    last: Option<EventTime>,
}

impl FullRing {
    fn on_sample(&mut self, rule: &MeanLimitRule, t: EventTime, v: f64) -> Step {
        if self.last.is_some_and(|l| t <= l) {
            return Step::Stale;
        }
        self.last = Some(t);
        let width = (millis(rule.averaging) / MEAN_BUCKETS as i64).max(1);
        let index = t.millis().div_euclid(width);
        let slot = &mut self.buckets[index.rem_euclid(MEAN_BUCKETS as i64) as usize];
        if slot.index != index || slot.count == 0 {
            *slot = MeanBucket { index, sum: 0.0, count: 0 };
        }
        slot.sum += v;
        slot.count += 1;
        let (mut sum, mut count, mut covered) = (0.0, 0u64, 0usize);
        for b in &self.buckets {
            if b.count > 0 && b.index > index - MEAN_BUCKETS as i64 {
                sum += b.sum;
                count += u64::from(b.count);
                covered += 1;
            }
        }
        let mean = sum / count as f64;
        let level = if mean > rule.limit && covered >= MEAN_MIN_BUCKETS {
            Level::Trips
        } else if mean <= rule.clear {
            Level::Clears
        } else {
            Level::Neutral
        };
        self.timer.step(t, t, t, level, 0, mean)
    }

    /// The sub-periods the mean counts at sub-period `index`, by position.
    fn current(&self, index: i64) -> Vec<(usize, i64, u64, u32)> {
        (0..MEAN_BUCKETS)
            .map(|p| (p, self.buckets[p]))
            .filter(|(_, b)| b.count > 0 && b.index > index - MEAN_BUCKETS as i64)
            .map(|(p, b)| (p, b.index, b.sum.to_bits(), b.count))
            .collect()
    }
}

fn current(s: &MeanLimitState) -> Vec<(usize, i64, u64, u32)> {
    let record = MeanLimitRecord::from(s.clone());
    (0..MEAN_BUCKETS)
        .map(|p| (p, record.buckets[p]))
        .filter(|(_, b)| b.count > 0)
        .map(|(p, b)| (p, b.index, b.sum.to_bits(), b.count))
        .collect()
}

proptest! {
    /// Same edges and means, bit for bit, as the full ring; a checkpoint of either layout
    /// restores the same state.
    #[test]
    fn the_running_mean_keeps_only_current_sub_periods_and_stays_exact(
        samples in proptest::collection::vec((0i64..400_000, -50.0f64..400.0), 1..300),
        averaging_s in prop_oneof![Just(60u64), Just(3_600), Just(86_400)],
    ) {
        let rule = MeanLimitRule {
            metric: telemetry::MetricId::No2Ugm3,
            limit: 200.0,
            clear: 150.0,
            averaging: Duration::from_secs(averaging_s),
        };
        let width = (millis(rule.averaging) / MEAN_BUCKETS as i64).max(1);
        let (mut full, mut compact) = (FullRing::default(), MeanLimitState::default());
        let mut at = T0;
        for (i, (gap, v)) in samples.into_iter().enumerate() {
            // Mostly forward, sometimes a repeat (stale); gaps up to 400 s.
            at += if i % 17 == 5 { 0 } else { gap * averaging_s as i64 / 3_600 };
            let t = EventTime(at);
            prop_assert_eq!(full.on_sample(&rule, t, v), compact.on_sample(&rule, t, v));
            prop_assert_eq!(full.current(at.div_euclid(width)), current(&compact));
            let saved = serde_json::to_value(&compact).unwrap();
            let restored: MeanLimitState = serde_json::from_value(saved).unwrap();
            prop_assert_eq!(&restored, &compact);
        }
        // A checkpoint of the full ring (the layout written before) restores to the same.
        let old =
            MeanLimitRecord { buckets: full.buckets, timer: full.timer.clone(), last: full.last };
        let restored: MeanLimitState =
            serde_json::from_value(serde_json::to_value(old).unwrap()).unwrap();
        prop_assert_eq!(current(&restored), current(&compact));
        prop_assert_eq!(full.last, compact.timer.last());
        prop_assert_eq!(restored.timer, compact.timer);
    }
}

#[test]
fn a_hold_timer_takes_24_bytes_and_checkpoints_as_before() {
    assert_eq!(std::mem::size_of::<HoldTimer>(), 24);
    let rule = above(100.0, 90.0, 60);
    let mut s = ThresholdState::default();
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        serde_json::json!({"timer": {"last": null, "since": null, "raised": false}})
    );
    s.on_sample(&rule, t(0), 150.0);
    s.on_sample(&rule, t(60), 150.0);
    let saved = serde_json::to_value(&s).unwrap();
    assert_eq!(
        saved,
        serde_json::json!({"timer": {"last": T0 + 60_000, "since": T0, "raised": true}})
    );
    let restored: ThresholdState = serde_json::from_value(saved).unwrap();
    assert_eq!(restored, s);
}

#[test]
fn a_running_mean_stores_only_its_sub_periods_with_data() {
    let rule = MeanLimitRule {
        metric: telemetry::MetricId::No2Ugm3,
        limit: 200.0,
        clear: 200.0,
        averaging: Duration::from_secs(3_600),
    };
    let mut s = MeanLimitState::default();
    for i in 0..40 {
        s.on_sample(&rule, t(i * 5), 10.0);
    }
    // 200 s of readings span two sub-periods of 150 s.
    assert_eq!((s.sums.len(), s.counts.len(), s.live.count_ones()), (2, 2, 2));
    s.on_sample(&rule, t(200 + 3_600), 10.0);
    assert_eq!(s.sums.len(), 1, "an hour later only the new sub-period counts");
}
