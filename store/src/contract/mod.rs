//! The store contract: behaviour every backend must show, run against each of them (SQLite
//! in this crate's tests; PostgreSQL with native partitions, with each write method, and
//! TimescaleDB in the workspace's integration tests). Each function expects a freshly
//! migrated store and uses its own devices and metrics, so they can share one database.
//!
//! One file per domain: `readings` (dedupe, exact rollups, latest values, dead letters,
//! retention), `history` (levels, subjects, steps and gaps against a recount), `alerts`
//! (the lifecycle, alarm states, clears by key, listing), `registry` (segments, devices,
//! gateways, tokens), `cadastre` (versioned imports, device links, area queries),
//! `stream_state`, `operations`, `baselines` and `detector_health` (flag intervals, history
//! without flagged readings); [`run_all`] runs them all.

mod alerts;
mod baselines;
mod cadastre;
mod detector_health;
mod history;
mod operations;
mod readings;
mod registry;
mod stream_state;

use std::time::Duration;

use telemetry::{DeviceId, EventTime, MetricId, Reading, SegmentId, Seq};

use crate::history::DAY_MS;
use crate::{Batch, BatchOutcome, HistoryPoint, HistoryQuery, Resolution, Step, Store};

pub use alerts::{
    alarm_states_shelving_and_suppression_follow_the_table,
    alert_lifecycle_is_recorded_and_duplicate_raises_are_refused,
    alert_listing_filters_and_pages_by_cursor, automatic_clear_by_key_leaves_other_keys_open,
};
pub use baselines::baselines_learn_slots_without_holidays_and_closures;
pub use cadastre::cadastre_import_is_versioned_and_links_devices;
pub use detector_health::flagged_readings_are_left_out_of_history_exactly;
pub use history::{
    answers_count_readings_not_yet_rolled_up,
    automatic_resolution_and_subjects_agree_with_a_recount, gaps_are_filled_on_request,
    history_filters_and_limits, stepped_history_of_any_range_equals_a_recount,
};
pub use operations::{
    operation_lists_filter_and_page_by_cursor, operations_keep_versions_lifecycle_trail_and_events,
    point_and_area_operations_derive_their_segments,
};
pub use readings::{
    dead_letters_and_devices_are_kept, latest_is_newest_by_event_time,
    replayed_batch_changes_no_row_and_no_rollup, retention_drops_old_readings_and_rollups,
    rollups_are_exact_across_batches_and_late_readings,
};
pub use registry::{
    a_sole_token_revokes_the_others_of_its_name, devices_are_placed_in_id_order_on_their_segments,
    gateways_link_devices_until_either_is_decommissioned, segments_round_trip,
};
pub use stream_state::{
    stream_state_parts_commit_together_and_replace_on_request,
    stream_state_round_trips_and_is_overwritten,
};

const T0: i64 = 1_763_892_000_000; // 2025-11-23T10:00:00Z, a minute boundary

fn dev(s: &str) -> DeviceId {
    DeviceId::parse(s).expect("valid test id")
}

fn reading(d: &str, m: MetricId, t: i64, v: f64) -> Reading {
    Reading { device: dev(d), metric: m, time: EventTime(t), value: v, seq: Some(Seq(7)) }
}

fn batch(readings: Vec<Reading>) -> Batch {
    Batch { readings, ..Batch::default() }
}

async fn write(store: &Store, readings: Vec<Reading>) -> BatchOutcome {
    let out = store.write_batch(&batch(readings)).await.expect("write batch");
    store.catch_up_rollups().await.expect("merge rollups");
    out
}

/// The points of one device at one stored level over all of the test's time.
async fn level(store: &Store, d: &str, m: MetricId, r: Resolution) -> Vec<HistoryPoint> {
    let step = match r.bucket_ms() {
        Some(ms) => Step::Fixed(Duration::from_millis(ms as u64)),
        None => Step::Raw,
    };
    let q = HistoryQuery::device(
        dev(d),
        m,
        EventTime(T0 - 30 * DAY_MS),
        EventTime(T0 + 30 * DAY_MS),
        step,
    );
    let h = store.history(&q).await.expect("history");
    assert_eq!(h.resolution, r);
    h.points
}

fn summary(p: &HistoryPoint) -> (i64, f64, f64, f64, f64) {
    (p.count, p.sum, p.min, p.max, p.last)
}

fn seg(s: &str) -> SegmentId {
    SegmentId::parse(s).expect("valid test segment")
}

/// Run every contract check in turn.
pub async fn run_all(store: &Store) {
    replayed_batch_changes_no_row_and_no_rollup(store).await;
    rollups_are_exact_across_batches_and_late_readings(store).await;
    latest_is_newest_by_event_time(store).await;
    history_filters_and_limits(store).await;
    automatic_resolution_and_subjects_agree_with_a_recount(store).await;
    gaps_are_filled_on_request(store).await;
    stepped_history_of_any_range_equals_a_recount(store).await;
    answers_count_readings_not_yet_rolled_up(store).await;
    dead_letters_and_devices_are_kept(store).await;
    segments_round_trip(store).await;
    retention_drops_old_readings_and_rollups(store).await;
    alert_lifecycle_is_recorded_and_duplicate_raises_are_refused(store).await;
    automatic_clear_by_key_leaves_other_keys_open(store).await;
    alert_listing_filters_and_pages_by_cursor(store).await;
    alarm_states_shelving_and_suppression_follow_the_table(store).await;
    stream_state_round_trips_and_is_overwritten(store).await;
    stream_state_parts_commit_together_and_replace_on_request(store).await;
    gateways_link_devices_until_either_is_decommissioned(store).await;
    a_sole_token_revokes_the_others_of_its_name(store).await;
    devices_are_placed_in_id_order_on_their_segments(store).await;
    cadastre_import_is_versioned_and_links_devices(store).await;
    operations_keep_versions_lifecycle_trail_and_events(store).await;
    operation_lists_filter_and_page_by_cursor(store).await;
    point_and_area_operations_derive_their_segments(store).await;
    baselines_learn_slots_without_holidays_and_closures(store).await;
    flagged_readings_are_left_out_of_history_exactly(store).await;
}
