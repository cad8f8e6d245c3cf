//! Device affinity (`ingest.partitions`, docs/scale-out.md#device-affinity) through a real
//! Mosquitto and PostgreSQL.
//!
//! The same deterministic input (loop detectors on four road segments and two unlinked
//! ones, every 500 ms of event time, a slow phase that raises and later clears a device
//! threshold and a segment LOS alert) runs (a) through one `sccr serve --role ingest` with
//! `partitions = 3`, and (b) through three such replicas, one of which is SIGKILLed after
//! the alerts were raised and while the second half is being published. The survivors
//! take its partition over (its MQTT session's backlog, its alert engine checkpoint, its
//! open windows rebuilt from the store); restarted, it gets a partition back from a
//! survivor, which drains it first. Windows (final value per device, metric and
//! window, also against a recount of the input), segment states (final per segment and
//! window), alerts (the set of rule, subject and state; every device's offline alert
//! once the input ends), stored readings (each published
//! reading once) and rollups (a recount) must be equal.
//!
//! Windows and segment states are read from the live bus (`sccr/v1/live/events`), where
//! every ingest replica publishes what its stream cores emit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sccr_tests::{
    assert_rollups_match_raw, compact, http_get, metric, publish_all, stored_keys, telemetry_topic,
    test_segment, wait_for, wait_pipeline_ready, Broker, MqttProbe, Sccr, TempDir, TestDb,
};
use serde_json::Value;
use sqlx::PgPool;
use store::{DeviceRecord, Store, StoreOptions};
use telemetry::{DeviceId, EventTime, SegmentId};

const SEGMENTS: [&str; 4] = ["via-aff-0", "via-aff-1", "via-aff-2", "via-aff-3"];
const UNLINKED: [&str; 2] = ["loop-aff-x", "loop-aff-y"];
const STEP_MS: i64 = 500;
/// Steps of the first half (published before the kill) and in all.
const HALF: usize = 20;
const STEPS: usize = 48;
const WINDOW_MS: i64 = 2_000;

const CONFIG: &str = r#"
[ingest]
partitions = 3

[stream]
window = "2s"
watermark_delay = "200ms"
allowed_lateness = "120s"
state_save_interval = "1s"

[alerts]
air_quality_defaults = false

[[alerts.rules]]
id = "slow"
severity = "warning"
threshold = { metric = "speed_kmh", below = 15.0, clear = 20.0, for = "0s" }

[[alerts.rules]]
id = "congestion"
severity = "critical"
los = { at_or_worse = "E", for = "0s" }

[[alerts.rules]]
id = "offline"
severity = "warning"
offline = { interval = "1s", min_silence = "15s" }
"#;

fn devices() -> Vec<(String, Option<&'static str>)> {
    let mut out: Vec<(String, Option<&'static str>)> = SEGMENTS
        .iter()
        .flat_map(|s| {
            let n = s.rsplit('-').next().unwrap_or("0");
            ["a", "b"].map(|d| (format!("loop-aff-{n}{d}"), Some(*s)))
        })
        .collect();
    out.extend(UNLINKED.iter().map(|d| (d.to_string(), None)));
    out
}

/// Device `i`'s readings at `step`: speed, vehicle count, occupancy. Devices on even
/// segments and the first unlinked one crawl at 10 km/h from step 14 to 25 (raised
/// before the kill, cleared after it).
fn readings(i: usize, step: usize) -> [(&'static str, f64); 3] {
    let slow = (i < 2 || (4..6).contains(&i) || i == 8) && (14..26).contains(&step);
    let speed = if slow { 10.0 } else { 30.0 + ((i * 7 + step * 3) % 20) as f64 };
    [
        ("speed_kmh", speed),
        ("vehicle_count", ((i + step) % 5) as f64),
        ("occupancy_pct", 10.0 + (step % 7) as f64),
    ]
}

fn messages(base: i64, steps: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    let devices = devices();
    let mut out = Vec::new();
    for step in steps {
        for (i, (d, _)) in devices.iter().enumerate() {
            let t = base + step as i64 * STEP_MS;
            out.push((telemetry_topic(d), compact(step as u64 + 1, t, &readings(i, step))));
        }
    }
    out
}

/// (device, metric, window start - base) → (count, sum, min, max), recounted from the input.
type WindowKey = (String, String, i64);
type Agg = (i64, f64, f64, f64);

fn expected_windows(base: i64) -> BTreeMap<WindowKey, Agg> {
    let mut out: BTreeMap<WindowKey, Agg> = BTreeMap::new();
    for (i, (d, _)) in devices().iter().enumerate() {
        for step in 0..STEPS {
            let t = base + step as i64 * STEP_MS;
            let start = t.div_euclid(WINDOW_MS) * WINDOW_MS - base;
            for (m, v) in readings(i, step) {
                let e = out.entry((d.clone(), m.to_owned(), start)).or_insert((
                    0,
                    0.0,
                    f64::MAX,
                    f64::MIN,
                ));
                *e = (e.0 + 1, e.1 + v, e.2.min(v), e.3.max(v));
            }
        }
    }
    out
}

/// What the live bus carried: the last emission of every window and segment window.
#[derive(Default)]
struct Seen {
    windows: BTreeMap<WindowKey, Agg>,
    /// (segment, start - base) → (detectors, flow, speed, occupancy, los)
    segments: BTreeMap<(String, i64), Value>,
}

impl Seen {
    fn drain(&mut self, bus: &mut MqttProbe, base: i64) {
        while let Some((topic, payload)) = bus.try_next() {
            if topic != "sccr/v1/live/events" {
                continue;
            }
            let Ok(batch) = serde_json::from_slice::<Value>(&payload) else { continue };
            if batch["snapshot"] == true {
                continue;
            }
            for w in batch["windows"].as_array().into_iter().flatten() {
                let a = &w["aggregate"];
                let key = (
                    w["device"].as_str().unwrap_or_default().to_owned(),
                    w["metric"].as_str().unwrap_or_default().to_owned(),
                    w["start"].as_i64().unwrap_or_default() - base,
                );
                let agg = (
                    a["count"].as_i64().unwrap_or_default(),
                    a["sum"].as_f64().unwrap_or_default(),
                    a["min"].as_f64().unwrap_or_default(),
                    a["max"].as_f64().unwrap_or_default(),
                );
                self.windows.insert(key, agg);
            }
            for s in batch["segments"].as_array().into_iter().flatten() {
                let key = (
                    s["segment"].as_str().unwrap_or_default().to_owned(),
                    s["start"].as_i64().unwrap_or_default() - base,
                );
                let state = serde_json::json!({
                    "detectors": s["detectors"], "flow_vph": s["flow_vph"],
                    "speed_kmh": s["speed_kmh"], "occupancy_pct": s["occupancy_pct"], "los": s["los"],
                });
                self.segments.insert(key, state);
            }
        }
    }

    /// Windows of the test devices that differ from the recount (none once final).
    fn window_mismatches(&self, expected: &BTreeMap<WindowKey, Agg>) -> Vec<String> {
        expected
            .iter()
            .filter(|(k, e)| {
                !self.windows.get(*k).is_some_and(|s| {
                    s.0 == e.0 && (s.1 - e.1).abs() < 1e-9 && s.2 == e.2 && s.3 == e.3
                })
            })
            .map(|(k, e)| format!("{k:?}: expected {e:?}, last seen {:?}", self.windows.get(k)))
            .collect()
    }

    /// Segment windows of the input, each with both detectors in its last emission.
    fn segments_whole(&self) -> bool {
        let starts: BTreeSet<i64> =
            (0..STEPS).map(|s| (s as i64 * STEP_MS).div_euclid(WINDOW_MS) * WINDOW_MS).collect();
        SEGMENTS.iter().all(|seg| {
            starts.iter().all(|st| {
                self.segments.get(&(seg.to_string(), *st)).is_some_and(|s| s["detectors"] == 2)
            })
        })
    }

    fn test_segments(&self) -> BTreeMap<(String, i64), Value> {
        self.segments
            .iter()
            .filter(|((seg, start), _)| {
                SEGMENTS.contains(&seg.as_str()) && *start >= 0 && *start < STEPS as i64 * STEP_MS
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The alerts of the run: (rule, subject, state), and the (rule, subject) of those still
/// active (their condition holds; an ended one stays open as `returned` until
/// acknowledged).
async fn alert_set(
    pool: &PgPool,
) -> (BTreeSet<(String, String, String)>, BTreeSet<(String, String)>) {
    let rows: Vec<(String, String, String, bool)> =
        sqlx::query_as("SELECT rule, subject, state, active FROM alerts WHERE subject <> 'probe'")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let active = rows.iter().filter(|r| r.3).map(|r| (r.0.clone(), r.1.clone())).collect();
    (rows.into_iter().map(|(r, s, st, _)| (r, s, st)).collect(), active)
}

/// Once the input has ended: every device offline, and nothing else active.
fn all_offline(active: &BTreeSet<(String, String)>) -> bool {
    let want: BTreeSet<(String, String)> =
        devices().into_iter().map(|(d, _)| ("offline".to_owned(), d)).collect();
    *active == want
}

/// A broker and a database holding the segments and the devices.
async fn env() -> (Broker, TestDb, PgPool) {
    let broker = Broker::start().await.expect("mosquitto");
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    let segments: Vec<_> = SEGMENTS.iter().map(|s| test_segment(s)).collect();
    store.upsert_segments(&segments).await.expect("segments");
    let records: Vec<DeviceRecord> = devices()
        .into_iter()
        .map(|(d, s)| DeviceRecord {
            id: DeviceId::parse(&d).expect("device id"),
            kind: Some("traffic_loop".into()),
            segment: s.map(|s| SegmentId::parse(s).expect("segment id")),
            registered_at: EventTime::now(),
        })
        .collect();
    store.upsert_devices(&records).await.expect("devices");
    store.close().await;
    let pool = PgPool::connect(&db.url).await.expect("pool");
    (broker, db, pool)
}

async fn owned(port: u16) -> Option<Vec<u16>> {
    let (status, body) = http_get(port, "/readyz").await.ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(v["partitions"].as_array()?.iter().filter_map(|p| p.as_u64().map(|p| p as u16)).collect())
}

/// Wait until the replicas own one partition each (or the only one owns all three).
async fn wait_balanced(replicas: &[&Sccr]) {
    wait_for("every partition owned, balanced", Duration::from_secs(60), || async {
        let mut all = BTreeSet::new();
        for r in replicas {
            let mine = owned(r.api_port).await?;
            if mine.len() != 3 / replicas.len() {
                return None;
            }
            all.extend(mine);
        }
        (all.len() == 3).then_some(())
    })
    .await;
}

async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE device <> 'probe'")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

struct Outcome {
    segments: BTreeMap<(String, i64), Value>,
    alerts: BTreeSet<(String, String, String)>,
}

/// Run the input through `replicas` ingest replicas; with more than one, SIGKILL the owner
/// of `via-aff-0`'s partition half way and restart it. `expect`: run (a)'s outcome, whose
/// segment states run (b) must reach.
async fn run(replicas: usize, expect: Option<&Outcome>) -> Outcome {
    let (broker, db, pool) = env().await;
    let dir = TempDir::new("affinity").expect("tempdir");
    let mqtt = broker.port;
    let mut bus = MqttProbe::connect(mqtt, "affinity-bus", &["sccr/v1/live/events"])
        .await
        .expect("bus probe");
    let mut procs: Vec<Sccr> = (0..replicas)
        .map(|_| {
            Sccr::serve_role("ingest", mqtt, &db.url, &dir.path, Some(CONFIG), &[])
                .expect("ingest replica")
        })
        .collect();
    for p in &procs {
        p.wait_healthy().await;
    }
    wait_balanced(&procs.iter().collect::<Vec<_>>()).await;
    wait_pipeline_ready(mqtt, &pool).await;

    let now = EventTime::now().millis();
    let base = (now / 10_000 + 1) * 10_000;
    let expected = expected_windows(base);
    let mut seen = Seen::default();
    let per_step = devices().len() as i64 * 3;

    publish_all(mqtt, "affinity-pub-1", messages(base, 0..HALF)).await.expect("first half");
    wait_for("the first half stored", Duration::from_secs(60), || async {
        (stored_count(&pool).await >= per_step * HALF as i64).then_some(())
    })
    .await;
    // The slow phase raised the alerts of devices 0, 1, 4, 5, 8 and segments 0 and 2.
    wait_for("the slow phase's alerts raised", Duration::from_secs(60), || async {
        let (_, active) = alert_set(&pool).await;
        (active.iter().filter(|(rule, _)| rule != "offline").count() >= 7).then_some(())
    })
    .await;

    let victim = if replicas > 1 {
        let p = ingest::partition_of("via-aff-0", 3);
        let mut victim = None;
        for (i, r) in procs.iter().enumerate() {
            if owned(r.api_port).await.unwrap_or_default().contains(&p) {
                victim = Some(i);
            }
        }
        let v = victim.expect("an owner of via-aff-0's partition");
        // Its engine checkpointed the open alerts (two checkpoints after they were stored).
        let port = procs[v].api_port;
        let before = metric(port, "sccr_stream_checkpoints_total").await.unwrap_or(0.0);
        wait_for("the victim's alert engine checkpointed", Duration::from_secs(30), || async {
            metric(port, "sccr_stream_checkpoints_total").await.filter(|n| *n >= before + 2.0)
        })
        .await;
        Some(v)
    } else {
        None
    };

    // The second half, a step at a time; the victim dies after the first few steps.
    let second = tokio::spawn(async move {
        for step in HALF..STEPS {
            publish_all(mqtt, &format!("affinity-pub-{step}"), messages(base, step..step + 1))
                .await
                .expect("second half");
        }
    });
    if let Some(v) = victim {
        wait_for("a few steps of the second half stored", Duration::from_secs(60), || async {
            (stored_count(&pool).await >= per_step * (HALF as i64 + 4)).then_some(())
        })
        .await;
        procs[v].kill();
        let killed = std::time::Instant::now();
        let survivors: Vec<&Sccr> =
            procs.iter().enumerate().filter(|(i, _)| *i != v).map(|(_, p)| p).collect();
        wait_for("the victim's partition taken over", Duration::from_secs(60), || async {
            let mut all = BTreeSet::new();
            for s in &survivors {
                all.extend(owned(s.api_port).await?);
            }
            (all.len() == 3).then_some(())
        })
        .await;
        eprintln!("partitions owned again {:?} after the kill", killed.elapsed());
        // Restarted, it gets a partition back: a survivor drains one and hands it over.
        procs[v].restart().expect("restart");
        procs[v].wait_healthy().await;
        wait_balanced(&procs.iter().collect::<Vec<_>>()).await;
    }
    second.await.expect("publisher");

    // Nothing acknowledged lost, nothing twice.
    let published: BTreeSet<(String, String, i64)> = expected_readings(base);
    wait_for("every published reading stored", Duration::from_secs(60), || async {
        (stored_count(&pool).await >= published.len() as i64).then_some(())
    })
    .await;
    let stored = stored_keys(&pool, "probe").await.expect("stored keys");
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let stored: BTreeSet<_> = stored.into_keys().collect();
    assert_eq!(stored, published, "stored readings differ from the published ones");

    // Windows: the last emission of each equals the recount of the input.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        seen.drain(&mut bus, base);
        let missing = seen.window_mismatches(&expected);
        let segments_done = match expect {
            Some(a) => seen.test_segments() == a.segments,
            None => seen.segments_whole(),
        };
        let (alerts, active) = alert_set(&pool).await;
        if missing.is_empty() && segments_done && all_offline(&active) && alerts.len() >= 17 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let logs: Vec<String> = procs.iter().map(|p| p.log_text()).collect();
            panic!(
                "not final within the deadline: {} windows differ (first: {:?}); segments done: {segments_done}; active alerts: {active:?}\n{:#?}\nlogs:\n{}",
                missing.len(),
                missing.first(),
                expect.map(|a| diff(&a.segments, &seen.test_segments())),
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (alerts, _) = alert_set(&pool).await;
    assert_rollups_match_raw(&pool).await;
    if replicas > 1 {
        let (mut taken, mut foreign, mut rebuilt, mut redelivered) = (0.0, 0.0, 0.0, 0.0);
        let mut released = 0.0;
        for (i, p) in procs.iter().enumerate() {
            if Some(i) != victim {
                let m = |name: &'static str| metric(p.api_port, name);
                taken += m("sccr_ingest_partition_takeovers_total").await.unwrap_or(0.0);
                foreign += m("sccr_ingest_foreign_acked_total").await.unwrap_or(0.0);
                rebuilt += m("sccr_stream_rebuilt_readings_total").await.unwrap_or(0.0);
                redelivered += m("sccr_stream_redelivered_total").await.unwrap_or(0.0);
                released += m("sccr_ingest_partition_releases_total").await.unwrap_or(0.0);
            }
        }
        eprintln!(
            "survivors: {taken} partitions taken, {foreign} foreign messages acknowledged, \
             {rebuilt} readings rebuilt, {redelivered} redeliveries not windowed twice"
        );
        assert!(taken >= 3.0, "the survivors took their own and the victim's partition: {taken}");
        assert!(foreign > 0.0, "other partitions' messages were acknowledged unprocessed");
        assert!(rebuilt > 0.0, "the taker rebuilt the victim's open windows from the store");
        assert!(released >= 1.0, "a survivor handed a partition to the restarted replica");
    }
    for p in &mut procs {
        if p.pid().is_some() {
            let _ = p.terminate(Duration::from_secs(30));
        }
    }
    drop(db);
    Outcome { segments: seen.test_segments(), alerts }
}

fn diff(a: &BTreeMap<(String, i64), Value>, b: &BTreeMap<(String, i64), Value>) -> Vec<String> {
    let keys: BTreeSet<_> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(10)
        .map(|k| format!("{k:?}: single {:?}, replicas {:?}", a.get(k), b.get(k)))
        .collect()
}

fn expected_readings(base: i64) -> BTreeSet<(String, String, i64)> {
    let mut out = BTreeSet::new();
    for (i, (d, _)) in devices().iter().enumerate() {
        for step in 0..STEPS {
            for (m, _) in readings(i, step) {
                out.insert((d.clone(), m.to_owned(), base + step as i64 * STEP_MS));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_one_killed_give_the_windows_segments_and_alerts_of_one_process() {
    let single = run(1, None).await;
    assert!(
        single
            .alerts
            .iter()
            .any(|(rule, subject, _)| rule == "congestion" && subject == "via-aff-0"),
        "the slow phase congested via-aff-0: {:?}",
        single.alerts
    );
    let replicas = run(3, Some(&single)).await;
    assert_eq!(
        replicas.segments,
        single.segments,
        "{:#?}",
        diff(&single.segments, &replicas.segments)
    );
    assert_eq!(replicas.alerts, single.alerts, "alerts (rule, subject, state)");
}

/// Partition ownership: one holder at a time; a holder's closed connection frees its
/// partitions at once; the survey counts the replicas alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_lock_has_one_holder_and_is_free_once_its_connection_closes() {
    let db = TestDb::create().await.expect("database");
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("store");
    let mut a = store.partition_locks("g").await.expect("locks a");
    let mut b = store.partition_locks("g").await.expect("locks b");
    let mut other_group = store.partition_locks("h").await.expect("locks of another group");
    assert!(a.try_take(0).await.unwrap());
    assert!(a.try_take(2).await.unwrap());
    assert!(!b.try_take(0).await.unwrap(), "partition 0 is a's");
    assert!(b.try_take(1).await.unwrap());
    assert!(other_group.try_take(0).await.unwrap(), "groups do not share partitions");
    let (replicas, taken) = b.survey().await.unwrap();
    assert_eq!(replicas, 2, "a and b in group g");
    assert_eq!(taken, BTreeSet::from([0, 1, 2]));
    // Released: free at once.
    a.release(2).await.unwrap();
    assert_eq!(a.held(), &BTreeSet::from([0]));
    assert!(b.try_take(2).await.unwrap());
    // a's connection closes (as when its process dies): its partition is free, a is gone.
    // The server ends a's session a moment after the connection closes.
    a.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.survey().await.unwrap() != (1, BTreeSet::from([1, 2])) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a's locks still held: {:?}",
            b.survey().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.try_take(0).await.unwrap());
    assert_eq!(b.held(), &BTreeSet::from([0, 1, 2]));
    b.close().await;
    other_group.close().await;
    store.close().await;
}
